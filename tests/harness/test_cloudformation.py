"""The harness's CloudFormation: parameters come back as DescribeStacks returns them on AWS."""

from __future__ import annotations

import json

import boto3


def test_a_comma_delimited_list_parameter_is_described_as_the_string_it_was_given(endpoint) -> None:
    cfn = boto3.client("cloudformation", endpoint_url=endpoint, region_name="eu-west-1",
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    template = {"Parameters": {"Names": {"Type": "CommaDelimitedList"},
                               "Empty": {"Type": "CommaDelimitedList", "Default": ""},
                               "Secret": {"Type": "String", "NoEcho": True}},
                "Resources": {"Queue": {"Type": "AWS::SQS::Queue"}}}
    cfn.create_stack(StackName="params", TemplateBody=json.dumps(template),
                     Parameters=[{"ParameterKey": "Names", "ParameterValue": "shop-staging,shop-production"},
                                 {"ParameterKey": "Secret", "ParameterValue": "hunter2"}])
    described = cfn.describe_stacks(StackName="params")["Stacks"][0]["Parameters"]
    values = {p["ParameterKey"]: p["ParameterValue"] for p in described}
    assert values == {"Names": "shop-staging,shop-production", "Empty": "", "Secret": "****"}
