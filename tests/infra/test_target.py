"""infra/target.yaml, Ferry's footprint in another account or region, agrees with Ferry's stack.

Run from the repository root: python3 -m pytest tests/infra -q

- The role Ferry assumes there grants exactly the ECS and iam:PassRole grants of Ferry's own
  function roles (what deploy, verify and rollback do to a target), scoped the same way, and
  trusts only Ferry's function roles in Ferry's account.
- The forwarding rules put every sample ECS deployment event and alarm entering ALARM on
  Ferry's bus, and nothing else; where they land, Ferry's own rules route them (test_template).
- The stack creates in the local AWS emulator.
"""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import iam  # noqa: E402
from test_template import FIXTURES, PARAMETERS, ROLES, as_list, template  # noqa: E402

TARGET = iam.INFRA / "target.yaml"
FERRY_ACCOUNT = "111111111111"
FERRY_ROLES = ",".join(f"arn:aws:iam::{FERRY_ACCOUNT}:role/ferry-{name}" for name in ROLES)
#: As a target account (the resolver's own account is 123456789012) in another region.
TARGET_PARAMETERS = {
    **PARAMETERS, "FerryAccountId": FERRY_ACCOUNT, "FerryRegion": "us-east-1", "FerryRoleArns": FERRY_ROLES,
}


def target() -> dict:
    return iam.load_template(TARGET)


def resolver(**parameters: str) -> iam.Resolver:
    return iam.Resolver(target(), {**TARGET_PARAMETERS, **parameters})


def ecs_statements(statements: list[dict]) -> dict[str, tuple]:
    """action -> (resources, condition) for the grants on a target's resources (ECS, its load
    balancers' health, its alarms, iam:PassRole)."""
    return {
        a: (sorted(as_list(s["Resource"])), json.dumps(s.get("Condition"), sort_keys=True))
        for s in statements for a in iam.actions_of(s)
        if a.startswith("ecs:")
        or a in ("iam:PassRole", "elasticloadbalancing:DescribeTargetHealth", "cloudwatch:DescribeAlarms")
    }


def test_the_role_grants_what_ferrys_functions_do_to_a_target_and_nothing_else() -> None:
    ferry: dict[str, tuple] = {}
    for role in ROLES.values():
        for action, grant in ecs_statements(iam.statements(iam.Resolver(template(), PARAMETERS), iam.role_policy_documents(template(), role))).items():
            assert ferry.setdefault(action, grant) == grant, f"{action} is scoped differently in Ferry's roles"
    granted = iam.statements(resolver(), iam.role_policy_documents(target(), "TargetRole"))
    assert ecs_statements(granted) == ferry
    assert {a for s in granted for a in iam.actions_of(s)} == set(ferry)


def test_only_ferrys_function_roles_may_assume_it() -> None:
    (trust,) = resolver().resolve(target()["Resources"]["TargetRole"]["Properties"]["AssumeRolePolicyDocument"])["Statement"]
    assert trust["Principal"] == {"AWS": f"arn:aws:iam::{FERRY_ACCOUNT}:root"}
    assert trust["Action"] == "sts:AssumeRole"
    assert trust["Condition"] == {"ArnEquals": {"aws:PrincipalArn": FERRY_ROLES.split(",")}}


@pytest.mark.parametrize("ferry_account,create,created", [
    (FERRY_ACCOUNT, "true", True),
    (FERRY_ACCOUNT, "false", False),  # the account's role exists: its other regions forward only
    ("123456789012", "true", False),  # Ferry's own account: its roles reach the clusters already
])
def test_the_role_is_created_in_other_accounts_once(ferry_account: str, create: str, created: bool) -> None:
    r = resolver(FerryAccountId=ferry_account, CreateRole=create)
    assert r.condition(target()["Resources"]["TargetRole"]["Condition"]) is created
    assert target()["Outputs"]["TargetRoleArn"]["Condition"] == target()["Resources"]["TargetRole"]["Condition"]


#: The sample events forwarded to Ferry's bus: what verify and rollback act on.
FORWARDED = {
    "ecs-deployment-in-progress.json", "ecs-deployment-completed.json", "ecs-deployment-failed.json",
    "ecs-deployment-circuit-breaker-rollback.json", "cloudwatch-alarm-state-change.json",
}


def forwarding_rules(r: iam.Resolver) -> dict[str, dict]:
    return {
        logical: r.resolve(resource["Properties"]) for logical, resource in target()["Resources"].items()
        if resource["Type"] == "AWS::Events::Rule" and r.condition(resource["Condition"])
    }


def test_ecs_deployment_events_and_alarms_are_forwarded_to_ferrys_bus() -> None:
    from moto.events.models import EventPattern

    rules = forwarding_rules(resolver())
    assert rules, "no forwarding rule"
    events = {p.name: json.loads(p.read_text()) for p in FIXTURES.glob("*.json")}
    forwarded = {
        name for name, event in events.items()
        if any(EventPattern.load(json.dumps(rule["EventPattern"])).matches_event(event) for rule in rules.values())
    }
    assert forwarded == FORWARDED
    alarm = events["cloudwatch-alarm-state-change.json"]
    ok = {**alarm, "detail": {**alarm["detail"], "state": {**alarm["detail"]["state"], "value": "OK"}}}
    assert not any(EventPattern.load(json.dumps(rule["EventPattern"])).matches_event(ok) for rule in rules.values())
    bus = f"arn:aws:events:us-east-1:{FERRY_ACCOUNT}:event-bus/default"
    for rule in rules.values():
        assert rule["EventBusName"] == "default"
        (to,) = rule["Targets"]
        assert (to["Arn"], to["RoleArn"]) == (bus, "<ForwardingRole.Arn>")
    (put,) = iam.statements(resolver(), iam.role_policy_documents(target(), "ForwardingRole"))
    assert (iam.actions_of(put), put["Resource"]) == (["events:PutEvents"], bus)


def test_nothing_is_forwarded_from_ferrys_own_account_and_region_to_itself() -> None:
    assert forwarding_rules(resolver(FerryAccountId="123456789012", FerryRegion="eu-west-1")) == {}
    assert forwarding_rules(resolver(FerryAccountId="123456789012", FerryRegion="us-east-1"))  # another region


@pytest.mark.filterwarnings("ignore:Tried to parse AWS::")
def test_the_stack_creates_in_the_emulator(monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in {"AWS_DEFAULT_REGION": "eu-west-1", "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}.items():
        monkeypatch.setenv(k, v)
    import boto3
    from moto import mock_aws

    with mock_aws():
        cfn, iam_client = boto3.client("cloudformation"), boto3.client("iam")
        parameters = {k: TARGET_PARAMETERS[k] for k in target()["Parameters"] if k in TARGET_PARAMETERS}
        cfn.create_stack(
            StackName="ferry-target", TemplateBody=TARGET.read_text(), Capabilities=["CAPABILITY_NAMED_IAM"],
            Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
        )
        assert cfn.describe_stacks(StackName="ferry-target")["Stacks"][0]["StackStatus"] == "CREATE_COMPLETE"
        created = {r["LogicalResourceId"] for r in cfn.list_stack_resources(StackName="ferry-target")["StackResourceSummaries"]}
        assert created >= {"TargetRole", "ForwardingRole", "ForwardEcsDeployments", "ForwardAlarms"}
        (policy,) = iam_client.list_role_policies(RoleName="ferry-target")["PolicyNames"]
        document = iam_client.get_role_policy(RoleName="ferry-target", PolicyName=policy)["PolicyDocument"]
        if isinstance(document, str):
            document = ast.literal_eval(document)  # moto 5.2.5 answers with the document's Python repr
        actions = {a for s in as_list(document["Statement"]) for a in as_list(s["Action"])}
        assert actions == iam.granted(target(), "TargetRole", TARGET_PARAMETERS)
