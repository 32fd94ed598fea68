"""CloudWatch as the AWS SDK for Rust calls it (Smithy RPC v2 CBOR), served by moto behind the
harness's CBOR front: what the SDK sends is what moto records, and moto's answer reaches the SDK
as CBOR, timestamps and all."""

from __future__ import annotations

import urllib.request

import boto3
import botocore.session
from botocore.parsers import RpcV2CBORParser
from botocore.serialize import RpcV2CBORSerializer

import ferry_moto


def cbor_call(endpoint: str, operation: str, params: dict) -> tuple[int, dict]:
    """`operation` sent as the Rust SDK sends it, and its answer read as the SDK reads it."""
    model = botocore.session.get_session().get_service_model("cloudwatch").operation_model(operation)
    request = RpcV2CBORSerializer().serialize_to_request(params, model)
    headers = {**request["headers"], "Authorization": (
        "AWS4-HMAC-SHA256 Credential=AKIDCBOR/20261205/eu-west-1/monitoring/aws4_request, "
        "SignedHeaders=host, Signature=0")}
    http = urllib.request.Request(endpoint + request["url_path"], data=request["body"], headers=headers, method="POST")
    try:
        with urllib.request.urlopen(http) as answer:
            status, body, content_type = answer.status, answer.read(), answer.headers["Content-Type"]
    except urllib.error.HTTPError as e:
        status, body, content_type = e.code, e.read(), e.headers["Content-Type"]
    assert content_type == "application/cbor", body
    parsed = RpcV2CBORParser().parse({"body": body, "headers": {}, "status_code": status},
                                     model.output_shape if status == 200 else None)
    return status, parsed


def test_alarms_are_created_and_described_in_cbor_and_carry_the_state_the_harness_gives(endpoint):
    status, _ = cbor_call(endpoint, "PutMetricAlarm", {
        "AlarmName": "shop-staging-api-5xx", "Namespace": "AWS/ApplicationELB", "MetricName": "HTTPCode_Target_5XX_Count",
        "Statistic": "Sum", "Period": 60, "EvaluationPeriods": 1, "Threshold": 0.0,
        "ComparisonOperator": "GreaterThanThreshold"})
    assert status == 200
    ferry_moto.control(endpoint, "POST", "/_ferry/cloudwatch/alarm", {
        "region": "eu-west-1", "name": "shop-staging-api-5xx", "state": "ALARM", "at": "2026-12-05T01:00:00Z"})

    status, described = cbor_call(endpoint, "DescribeAlarms", {
        "AlarmNames": ["shop-staging-api-5xx", "no-such-alarm"], "AlarmTypes": ["MetricAlarm", "CompositeAlarm"]})
    assert status == 200
    [alarm] = described["MetricAlarms"]
    assert (alarm["AlarmName"], alarm["StateValue"]) == ("shop-staging-api-5xx", "ALARM")
    assert alarm["StateUpdatedTimestamp"].isoformat().startswith("2026-12-05T01:00:00")
    # The same alarm through moto's own protocol: the front changed nothing on the way.
    boto = boto3.client("cloudwatch", endpoint_url=endpoint, region_name="eu-west-1",
                        aws_access_key_id="AKIDCBOR", aws_secret_access_key="x")
    assert boto.describe_alarms(AlarmNames=["shop-staging-api-5xx"])["MetricAlarms"][0]["StateValue"] == "ALARM"
