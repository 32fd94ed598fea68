"""The harness's STS: a role whose trust policy does not admit the caller is not assumed."""

from __future__ import annotations

import json

import boto3
import pytest
from botocore.exceptions import ClientError


def client(endpoint: str, service: str):
    return boto3.client(service, endpoint_url=endpoint, region_name="eu-west-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def trust(principal: str) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": principal}, "Action": "sts:AssumeRole"}]})


def test_only_a_role_trusting_the_callers_account_is_assumed(endpoint) -> None:
    iam, sts = client(endpoint, "iam"), client(endpoint, "sts")
    caller = sts.get_caller_identity()["Account"]
    trusting = iam.create_role(RoleName="trusting", AssumeRolePolicyDocument=trust(f"arn:aws:iam::{caller}:root"))
    other = iam.create_role(RoleName="elsewhere", AssumeRolePolicyDocument=trust("arn:aws:iam::999999999999:root"))
    assumed = sts.assume_role(RoleArn=trusting["Role"]["Arn"], RoleSessionName="ok")
    assert assumed["AssumedRoleUser"]["Arn"].endswith("assumed-role/trusting/ok")
    with pytest.raises(ClientError) as refused:
        sts.assume_role(RoleArn=other["Role"]["Arn"], RoleSessionName="no")
    assert refused.value.response["Error"]["Code"] == "AccessDenied"
    # A role that does not exist is still assumed, as moto does (the tests name roles they never create).
    sts.assume_role(RoleArn=f"arn:aws:iam::{caller}:role/never-created", RoleSessionName="ok")
