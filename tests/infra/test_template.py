"""The infrastructure (infra/*.yaml) agrees with the code.

Run from the repository root: python3 -m pytest tests/infra -q

- Every AWS action the code calls is granted to a function's role, and every grant is
  an action the code calls (or one AWS checks with it, or Lambda's own logging and
  dead-letter delivery): found statically in the Rust sources (iam.py).
- Per function (deploy, verify, rollback), its own role grants exactly what the Rust integration
  tests saw that function do (tests/.recorded-actions/<function>.json or <function>/*.json;
  another directory with FERRY_RECORDED_ACTIONS).
- Grants are scoped (resources, conditions), cfn-lint reports nothing, the template wires
  each function the way the code reads its environment, each sample event reaches the
  right function and no other, and the stack creates in the local AWS emulator.
"""

from __future__ import annotations

import ast
import functools
import io
import json
import os
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path
from unittest import mock

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import iam  # noqa: E402

REPO = iam.REPO
TEMPLATE = iam.INFRA / "template.yaml"

#: Parameter values the checks resolve the templates with.
PARAMETERS = {
    "EcsClusterNames": "shop-staging,shop-production",
    "TaskRoleArns": "arn:aws:iam::123456789012:role/shop-api-task,arn:aws:iam::123456789012:role/shop-api-execution",
}
TARGET_ROLE = "arn:aws:iam::210987654321:role/ferry-target"

#: Actions the library calls that no function's role grants yet (action -> reason), for code
#: written ahead of the function that uses it. When a role grants one of these, remove it
#: here: the check is exact.
NOT_YET_GRANTED: dict[str, str] = {}

#: Each function (its binary without `ferry-`) and the role it runs as.
ROLES = {"deploy": "DeployFunctionRole", "verify": "VerifyFunctionRole", "rollback": "RollbackFunctionRole",
         "approve": "ApproveFunctionRole"}

#: The only actions allowed on Resource "*": AWS supports no resource-level permission for them.
# ListTasks names no container instance when listing a cluster's tasks by startedBy: "*" with
# the ecs:cluster condition is what scopes it (https://github.com/aws/aws-cdk/pull/3199,
# https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonelasticcontainerservice.html).
STAR_RESOURCE_ONLY = {
    "ecs:DescribeTaskDefinition",
    "ecs:RegisterTaskDefinition",
    "ecs:ListTasks",
    "elasticloadbalancing:DescribeTargetHealth",
    # Composite alarms are described only to a grant on "*" (API_DescribeAlarms.html).
    "cloudwatch:DescribeAlarms",
}

RUN_RUST_TESTS = "run the Rust integration tests first (cargo nextest run -p ferry-tests, or tests/run)"


@functools.cache
def template() -> dict:
    return iam.load_template(TEMPLATE)


@functools.cache
def calls() -> tuple[iam.Call, ...]:
    return tuple(iam.code_calls())


def code_actions() -> set[str]:
    return {c.action for c in calls()}


def all_templates() -> list[Path]:
    found = iam.templates()
    assert TEMPLATE in found, f"{TEMPLATE} is not recognised as a template"
    return found


def deployed_functions() -> list[tuple[str, str]]:
    """(logical id, function name) of every function in the template."""
    return [(logical, iam.function_name(resource)) for logical, resource in iam.functions(template()).items()]


def asynchronous_functions() -> list[tuple[str, str]]:
    """The functions EventBridge invokes (asynchronously); the approve function answers its
    function URL synchronously instead (Slack waits for the answer: nothing to retry or keep)."""
    return [(logical, name) for logical, name in deployed_functions()
            if "FunctionUrlConfig" not in template()["Resources"][logical]["Properties"]]


def function_logical_id(name: str) -> str:
    (logical,) = [logical for logical, n in deployed_functions() if n == name]
    return logical


def function(name: str) -> dict:
    return template()["Resources"][function_logical_id(name)]


def function_sources(name: str) -> list[Path]:
    """The Rust sources of the crate that builds `ferry-<name>`."""
    for toml in (REPO / "functions").glob("*/Cargo.toml"):
        if f"ferry-{name}" in re.findall(r'\[\[bin\]\]\s*name\s*=\s*"([^"]+)"', toml.read_text()):
            return sorted((toml.parent / "src").rglob("*.rs"))
    raise AssertionError(f"no crate under functions/ builds ferry-{name}")


def statements(parameters: dict[str, str], role: str) -> list[dict]:
    resolver = iam.Resolver(template(), parameters)
    return iam.statements(resolver, iam.role_policy_documents(template(), role))


def granting(action: str, parameters: dict[str, str], role: str) -> list[dict]:
    return [s for s in statements(parameters, role) if action in iam.actions_of(s)]


def code_constant(path: str, name: str) -> str:
    """The value of a `&str` const in the Rust sources."""
    found = re.search(rf'\b{name}: &str = "([^"]*)";', (REPO / path).read_text())
    assert found, f"no const {name} in {path}"
    return found.group(1)


def as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def where(action: str) -> str:
    sites = [str(c) for c in calls() if c.action == action]
    return "; ".join(sites) if sites else "implied or runtime"


# --- cfn-lint --------------------------------------------------------------------------


@pytest.mark.parametrize("path", all_templates(), ids=lambda p: str(p.relative_to(REPO)))
def test_cfn_lint_reports_nothing(path: Path) -> None:
    # The informational checks too: nothing is skipped. A rule may only be silenced in the
    # template itself (Metadata cfn-lint ignore_checks), with a comment saying why.
    lint = subprocess.run(
        [sys.executable, "-c", "import sys; from cfnlint.runner import main; sys.exit(main())",
         "--include-checks", "I", "--", str(path)],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )
    assert (lint.returncode, lint.stdout + lint.stderr) == (0, ""), f"cfn-lint {path}:\n{lint.stdout}{lint.stderr}"


# --- the static scan itself ------------------------------------------------------------


def test_the_scan_finds_each_form_of_call_and_nothing_else(tmp_path: Path) -> None:
    ops = {
        "ecs": {"update_service": "UpdateService", "register_task_definition": "RegisterTaskDefinition", "list_tasks": "ListTasks"},
        "dynamodb": {"transact_write_items": "TransactWriteItems", "put_item": "PutItem"},
        "sns": {"publish": "Publish"},
    }
    (tmp_path / "a.rs").write_text(
        "use aws_sdk_ecs::Client;\n"
        "use aws_sdk_ecs::operation::register_task_definition::builders::RegisterTaskDefinitionInputBuilder;\n"
        "async fn f(c: &Client) {\n"
        "    c.update_service()\n        .send().await;\n"
        "    RegisterTaskDefinitionInputBuilder::default().send_with(c).await;\n"
        "    // c.list_tasks() in a comment\n"
        "    let s = \"c.list_tasks()\"; /* c.list_tasks() */\n"
        "    let p = AssumeRoleProvider::builder(\"r\");\n"
        "}\n"
    )
    (tmp_path / "b.rs").write_text(
        "use aws_sdk_dynamodb::{types::TransactWriteItem, Client};\n"
        "fn g(c: &Client) { c.transact_write_items(); TransactWriteItem::builder().put(p).build(); TransactWriteItem::builder()\n  .update(u); }\n"
    )
    # Names no SDK client: a port method of the same name is not an AWS call.
    (tmp_path / "c.rs").write_text("fn h(e: &impl Ecs) { e.update_service(); x.publish(); }\n")
    # A client held in a field, of a crate whose IAM prefix is not its name (EventBridge: events).
    (tmp_path / "d.rs").write_text(
        "struct Bus { client: aws_sdk_eventbridge::Client }\n"
        "impl Bus { async fn f(&self) { self.client\n    .put_events().entries(e).send().await; } }\n"
    )
    ops["eventbridge"] = {"put_events": "PutEvents", "put_rule": "PutRule"}
    found = iam.scan(sorted(tmp_path.glob("*.rs")), ops, tmp_path)
    assert sorted((c.action, c.file, c.line) for c in found) == [
        ("dynamodb:PutItem", "b.rs", 2),
        ("dynamodb:UpdateItem", "b.rs", 2),
        ("ecs:RegisterTaskDefinition", "a.rs", 2),
        ("ecs:RegisterTaskDefinition", "a.rs", 6),
        ("ecs:UpdateService", "a.rs", 4),
        ("events:PutEvents", "d.rs", 3),
        ("sts:AssumeRole", "a.rs", 9),
    ]


def test_the_scan_knows_each_sdk_crate_of_the_lock_file() -> None:
    crates = iam.locked_sdk_crates()
    assert {"ecs", "dynamodb", "sns", "secretsmanager", "eventbridge"} <= set(crates), crates
    for svc, version in crates.items():
        ops = iam.sdk_operations(svc, version)
        assert len(ops) > 10, (svc, version, ops)
        # The IAM prefix the scan gives the crate's calls is the service's signing name (save
        # for the few that sign otherwise).
        signed_as = iam.SIGNED_AS.get(svc, iam.IAM_PREFIX.get(svc, svc))
        assert signed_as == iam.signing_name(svc, version), f"IAM_PREFIX[{svc!r}]"
    assert iam.sdk_operations("ecs", crates["ecs"])["update_service"] == "UpdateService"
    assert iam.sdk_operations("eventbridge", crates["eventbridge"])["put_events"] == "PutEvents"


def test_the_scan_sees_the_failure_announcement() -> None:
    sites = {c.file for c in calls() if c.action == "events:PutEvents"}
    assert sites == {"shared/src/adapters/eventbridge.rs"}, sites
    assert not [c for c in calls() if c.action.startswith("eventbridge:")]


# --- code <-> grants -------------------------------------------------------------------


def test_every_action_the_code_calls_is_granted() -> None:
    granted = set()
    for logical, _ in deployed_functions():
        for _, actions in iam.grant_variants(template(), iam.role_of(template(), logical), PARAMETERS):
            granted |= actions
    missing = (code_actions() | iam.implied(code_actions())) - granted
    unexplained = {a: where(a) for a in sorted(missing - set(NOT_YET_GRANTED))}
    assert not unexplained, f"the code calls actions no role grants: {unexplained}"
    stale = set(NOT_YET_GRANTED) - missing
    assert not stale, f"now granted (or no longer called): remove from NOT_YET_GRANTED: {sorted(stale)}"


@pytest.mark.parametrize("logical,name", deployed_functions())
def test_every_grant_is_an_action_the_code_calls(logical: str, name: str) -> None:
    role = iam.role_of(template(), logical)
    allowed = code_actions() | iam.implied(code_actions()) | iam.runtime_actions(template(), logical)
    for conditions, actions in iam.grant_variants(template(), role, PARAMETERS):
        extra = actions - allowed
        assert not extra, f"{role} (conditions {conditions}) grants actions no code calls: {sorted(extra)}"


@pytest.mark.parametrize("logical,name", deployed_functions())
def test_the_role_grants_exactly_what_the_function_was_seen_doing(logical: str, name: str) -> None:
    recorded = iam.recorded_actions(name)
    if recorded is None:
        pytest.fail(
            f"no record of the {name} function's AWS calls ({iam.recorded_dir()}/{name}/<test>.json "
            f"or {iam.recorded_dir()}/{name}.json): {RUN_RUST_TESTS}"
        )
    unseen = recorded - code_actions()
    sdk_names = {svc: iam.IAM_PREFIX[svc] for svc in iam.IAM_PREFIX if iam.IAM_PREFIX[svc] != svc}
    misnamed = {a: f"{sdk_names[a.split(':')[0]]}:{a.split(':')[1]}" for a in unseen if a.split(":")[0] in sdk_names}
    assert not misnamed, f"the records name SDK services, not IAM prefixes: {misnamed} (fix the recorder's iam_action)"
    assert not unseen, f"the integration tests saw {name} call {sorted(unseen)}, which the static scan did not find"
    expected = recorded | iam.implied(recorded) | iam.runtime_actions(template(), logical)
    role = iam.role_of(template(), logical)
    variants = iam.grant_variants(template(), role, PARAMETERS)
    if any(actions == expected for _, actions in variants):
        return
    conditions, actions = min(variants, key=lambda v: len(v[1] ^ expected))
    pytest.fail(
        f"{role} does not grant exactly what {name} does (closest: conditions {conditions}):\n"
        f"  granted, never called: {sorted(actions - expected)}\n"
        f"  called, not granted:   {sorted(expected - actions)}"
    )


def policy_documents(node):
    """Every IAM policy document in a template (anything with a Statement)."""
    if isinstance(node, dict):
        if "Statement" in node:
            yield node
        for v in node.values():
            yield from policy_documents(v)
    elif isinstance(node, list):
        for v in node:
            yield from policy_documents(v)


@pytest.mark.parametrize("path", all_templates(), ids=lambda p: str(p.relative_to(REPO)))
def test_no_policy_grants_a_wildcard_action(path: Path) -> None:
    found = list(policy_documents(iam.load_template(path)))
    assert found, "no policy documents found"
    for doc in found:
        for s in policy_documents_statements(doc):
            for key in ("Action", "NotAction"):
                for action in as_list(s.get(key, [])):
                    assert isinstance(action, str), f"{key} must be literal: {s}"
                    assert "*" not in action and "?" not in action, f"wildcard {key} {action!r} in {s}"


def policy_documents_statements(doc: dict):
    for s in as_list(doc["Statement"]):
        if isinstance(s, dict) and "Fn::If" in s:
            yield from (b for b in s["Fn::If"][1:] if isinstance(b, dict) and "Ref" not in b)
        else:
            yield s


# --- scope: resources and conditions ---------------------------------------------------


def test_each_function_runs_as_a_role_of_its_own() -> None:
    assert {name: iam.role_of(template(), logical) for logical, name in deployed_functions()} == ROLES


@pytest.mark.parametrize("role", ROLES.values())
def test_only_actions_without_resource_level_permissions_use_resource_star(role: str) -> None:
    for s in statements({**PARAMETERS, "TargetRoleArns": TARGET_ROLE}, role):
        if "*" in as_list(s["Resource"]):
            assert set(iam.actions_of(s)) <= STAR_RESOURCE_ONLY, f'Resource "*" for {s}'


def only_statement(action: str, parameters: dict[str, str] = PARAMETERS, role: str = ROLES["deploy"]) -> dict:
    found = granting(action, parameters, role)
    assert len(found) == 1, f"{role}: {action} should be granted by one statement: {found}"
    return found[0]


def test_ecs_grants_are_limited_to_the_configured_clusters() -> None:
    clusters = PARAMETERS["EcsClusterNames"].split(",")
    services = [f"arn:*:ecs:*:*:service/{c}/*" for c in clusters]
    for action in ("ecs:DescribeServices", "ecs:UpdateService"):
        assert as_list(only_statement(action)["Resource"]) == services
    assert as_list(only_statement("ecs:DescribeServices", role=ROLES["verify"])["Resource"]) == services
    assert as_list(only_statement("ecs:DescribeTasks")["Resource"]) == [f"arn:*:ecs:*:*:task/{c}/*" for c in clusters]
    run = only_statement("ecs:RunTask")
    assert run["Resource"] == "arn:aws:ecs:*:123456789012:task-definition/*"
    (operator, keys), = run["Condition"].items()
    assert operator in ("ArnEquals", "ArnLike")
    assert keys == {"ecs:cluster": [f"arn:*:ecs:*:*:cluster/{c}" for c in clusters]}
    tag = only_statement("ecs:TagResource")
    assert tag["Resource"] == "arn:aws:ecs:*:123456789012:task-definition/*"
    assert tag["Condition"] == {"StringEquals": {"ecs:CreateAction": "RegisterTaskDefinition"}}


def test_only_the_task_roles_are_passed_and_only_to_ecs_tasks() -> None:
    s = only_statement("iam:PassRole")
    assert as_list(s["Resource"]) == PARAMETERS["TaskRoleArns"].split(",")
    assert s["Condition"] == {"StringEquals": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}}


@pytest.mark.parametrize("role", ROLES.values())
def test_target_roles_are_assumable_only_when_given(role: str) -> None:
    assert granting("sts:AssumeRole", PARAMETERS, role) == []
    assert granting("sts:AssumeRole", {**PARAMETERS, "TargetRoleArns": ""}, role) == []
    two = f"{TARGET_ROLE},arn:aws:iam::333333333333:role/ferry-target"
    if role == ROLES["approve"]:
        # It reaches no target: its decisions are carried out by the deploy function.
        assert granting("sts:AssumeRole", {**PARAMETERS, "TargetRoleArns": two}, role) == []
        return
    s, = granting("sts:AssumeRole", {**PARAMETERS, "TargetRoleArns": two}, role)
    assert as_list(s["Resource"]) == two.split(",")
    assert "Condition" not in s


def test_verify_runs_in_the_given_subnets_only_when_given_and_only_it_manages_network_interfaces() -> None:
    resolver = iam.Resolver(template(), PARAMETERS)
    verify = template()["Resources"]["VerifyFunction"]["Properties"]
    assert resolver.resolve(verify["VpcConfig"]) is iam.NO_VALUE, "outside any VPC by default"
    assert all(granting("ec2:CreateNetworkInterface", PARAMETERS, role) == [] for role in ROLES.values())
    vpc = {**PARAMETERS, "VerifySubnetIds": "subnet-1,subnet-2", "VerifySecurityGroupIds": "sg-1"}
    resolved = iam.Resolver(template(), vpc).resolve(verify["VpcConfig"])
    assert resolved == {"SubnetIds": ["subnet-1", "subnet-2"], "SecurityGroupIds": ["sg-1"]}
    s, = granting("ec2:CreateNetworkInterface", vpc, ROLES["verify"])
    assert set(iam.actions_of(s)) == iam.LAMBDA_VPC_ACTIONS
    assert granting("ec2:CreateNetworkInterface", vpc, ROLES["deploy"]) == []
    assert granting("ec2:CreateNetworkInterface", vpc, ROLES["rollback"]) == []


def stack_resources(prefix: str) -> dict[str, str]:
    """What each grant to the resources of this stack names, for the function `prefix`."""
    log_group = f"arn:aws:logs:eu-west-1:123456789012:log-group:<{prefix}LogGroup>:*"
    return {
        "dynamodb:UpdateItem": "<LedgerTable.Arn>",
        "sns:Publish": "<NotificationTopic>",
        "secretsmanager:GetSecretValue": "<SlackWebhooksSecret>",
        "sqs:SendMessage": f"<{prefix}DeadLetterQueue.Arn>",
        "logs:CreateLogStream": log_group,
        "logs:PutLogEvents": log_group,
    }


@pytest.mark.parametrize("name,expected", [
    ("deploy", stack_resources("Deploy")),
    ("verify", {**stack_resources("Verify"), "dynamodb:GetItem": "<LedgerTable.Arn>"}),
    ("rollback", {**stack_resources("Rollback"), "dynamodb:GetItem": "<LedgerTable.Arn>"}),
    ("approve", {"dynamodb:GetItem": "<LedgerTable.Arn>", "dynamodb:UpdateItem": "<LedgerTable.Arn>",
                 "secretsmanager:GetSecretValue": "<SlackSigningSecret>",
                 **{a: "arn:aws:logs:eu-west-1:123456789012:log-group:<ApproveLogGroup>:*"
                    for a in ("logs:CreateLogStream", "logs:PutLogEvents")}}),
], ids=["deploy", "verify", "rollback", "approve"])
def test_the_stack_resources_are_granted_one_by_one(name: str, expected: dict[str, str]) -> None:
    for action, resource in expected.items():
        s = only_statement(action, role=ROLES[name])
        assert s["Resource"] == resource, action
        assert "Condition" not in s, action


@pytest.mark.parametrize("function", ["verify", "rollback"])
def test_verify_and_rollback_query_the_table_and_only_the_index_they_use(function: str) -> None:
    index = code_constant("shared/src/adapters/dynamodb/mod.rs", "ECS_DEPLOYMENT_INDEX")
    s = only_statement("dynamodb:Query", role=ROLES[function])
    # history: the table; by_ecs_deployment (an ECS event's deployment): the GSI, which IAM
    # authorises on its own ARN.
    assert as_list(s["Resource"]) == ["<LedgerTable.Arn>", f"<LedgerTable.Arn>/index/{index}"]
    assert "Condition" not in s
    module = REPO / "shared" / "src" / function
    sources = [module.with_suffix(".rs")] if module.with_suffix(".rs").exists() else sorted(module.glob("*.rs"))
    assert "by_ecs_deployment" in "".join(f.read_text() for f in sources)
    assert granting("dynamodb:Query", PARAMETERS, ROLES["deploy"]) == []


def test_only_verify_and_approve_announce() -> None:
    announcing = [name for name, role in ROLES.items() if granting("events:PutEvents", PARAMETERS, role)]
    assert announcing == ["verify", "approve"]


@pytest.mark.parametrize("function", ["verify", "approve"])
@pytest.mark.parametrize("bus", ["default", "ferry-events"])
def test_announcements_go_on_the_configured_bus_only_and_only_as_ferry(bus: str, function: str) -> None:
    source = code_constant("shared/core/src/event/mod.rs", "EVENT_SOURCE")
    s = only_statement("events:PutEvents", {**PARAMETERS, "EventBusName": bus}, ROLES[function])
    assert s["Resource"] == f"arn:aws:events:eu-west-1:123456789012:event-bus/{bus}"
    # events:source holds one value per entry of the request: every one must be Ferry's.
    assert s["Condition"] == {"ForAllValues:StringEquals": {"events:source": source}, "Null": {"events:source": "false"}}
    assert iam.actions_of(s) == ["events:PutEvents"]


# --- the functions' wiring ------------------------------------------------------------


def deploy_function() -> dict:
    return function("deploy")


@pytest.mark.parametrize("logical,name", deployed_functions())
def test_the_function_gets_every_setting_the_code_reads(logical: str, name: str) -> None:
    code = (REPO / "functions" / "runtime" / "src" / "lib.rs").read_text()
    read = set(re.findall(r'\bvar\("(FERRY_[A-Z_]+)"\)', code))
    assert read >= {"FERRY_CONFIG", "FERRY_TABLE", "FERRY_EVENT_BUS"}, "FERRY_* variables in functions/runtime/src/lib.rs"
    # Each setting matters to a function whose code uses what it configures: the bus to one
    # that puts events on it, the notification settings to one that notifies, the signing
    # secret to the one that checks Slack's signatures.
    sources = "".join(iam.strip_comments_and_strings(f.read_text()) for f in function_sources(name))
    uses = {"FERRY_EVENT_BUS": "event_bus", "FERRY_TOPIC_ARN": "notifiers", "FERRY_SLACK_SECRET": "notifiers",
            "FERRY_SLACK_SIGNING_SECRET": "signing_secret"}
    # The sandbox's stand-in for Slack's response URLs; on AWS, Slack's own.
    sandbox_only = {"FERRY_SLACK_RESPONSE_ORIGIN"}
    expected = {v for v in read - sandbox_only if v not in uses or uses[v] in sources}
    variables = template()["Resources"][logical]["Properties"]["Environment"]["Variables"]
    assert set(variables) == expected
    assert variables["FERRY_CONFIG"] == "/opt/ferry.toml"
    assert variables["FERRY_TABLE"] == {"Ref": "LedgerTable"}
    if "FERRY_TOPIC_ARN" in expected:
        assert variables["FERRY_TOPIC_ARN"] == {"Ref": "NotificationTopic"}
        assert variables["FERRY_SLACK_SECRET"] == {"Ref": "SlackWebhooksSecret"}  # Ref of a secret is its ARN
    if "FERRY_SLACK_SIGNING_SECRET" in expected:
        assert variables["FERRY_SLACK_SIGNING_SECRET"] == {"Ref": "SlackSigningSecret"}
    uses_bus = "FERRY_EVENT_BUS" in expected
    if uses_bus:
        assert variables["FERRY_EVENT_BUS"] == {"Ref": "EventBusName"}
        default = re.search(r'var\("FERRY_EVENT_BUS"\)\.unwrap_or_else\(\|\| "([^"]+)"', code).group(1)
        assert template()["Parameters"]["EventBusName"]["Default"] == default


@pytest.mark.parametrize("logical,name", deployed_functions())
def test_the_config_ships_as_a_layer_holding_only_ferry_toml(logical: str, name: str) -> None:
    props = template()["Resources"][logical]["Properties"]
    layer = template()["Resources"]["ConfigLayer"]
    assert layer["Type"] == "AWS::Serverless::LayerVersion"
    assert props["Layers"] == [{"Ref": "ConfigLayer"}]
    content = (TEMPLATE.parent / layer["Properties"]["ContentUri"]).resolve()
    # Everything in the layer's directory ships: nothing but the config may be there.
    assert sorted(p.name for p in content.iterdir()) == ["ferry.toml"]


def test_the_example_config_is_the_documented_one() -> None:
    config = tomllib.loads((iam.INFRA / "config" / "ferry.toml").read_text())
    assert [e["name"] for e in config["environments"]] == ["staging", "production"]
    (api,) = config["services"]
    assert (api["repository"], api["name"], api["containers"]) == ("shop/api", "shop-{env}-api", ["api"])
    clusters = {t["cluster"] for e in config["environments"] for t in e["targets"]}
    assert all("role_arn" not in t for e in config["environments"] for t in e["targets"]), "same-account example"
    assert clusters == {"shop-staging", "shop-production"}


@pytest.mark.parametrize("logical,name", deployed_functions())
def test_the_function_builds_its_binary_from_the_workspace(logical: str, name: str) -> None:
    fn = template()["Resources"][logical]
    assert (fn["Metadata"]["BuildMethod"], fn["Metadata"]["BuildProperties"]) == ("rust-cargolambda", {"Binary": f"ferry-{name}"})
    root = (TEMPLATE.parent / fn["Properties"]["CodeUri"]).resolve()
    assert root == REPO and "[workspace]" in (root / "Cargo.toml").read_text()
    props = fn["Properties"]
    assert (props["Runtime"], props["Handler"], props["MemorySize"]) == ("provided.al2023", "bootstrap", 128)
    assert props["Architectures"] == [{"Ref": "Architecture"}]
    assert template()["Parameters"]["Architecture"]["AllowedValues"] == ["arm64", "x86_64"]
    assert template()["Parameters"]["Architecture"]["Default"] == "arm64"


def test_every_function_binary_of_the_workspace_is_deployed_and_only_those() -> None:
    binaries = {
        m for toml in (REPO / "functions").glob("*/Cargo.toml")
        for m in re.findall(r'\[\[bin\]\]\s*name\s*=\s*"([^"]+)"', toml.read_text())
    }
    built = {r["Metadata"]["BuildProperties"]["Binary"] for r in iam.functions(template()).values()}
    assert built == binaries
    assert {f"ferry-{name}" for name in ROLES} == binaries


def test_the_timeout_leaves_room_for_the_longest_migration() -> None:
    config = (REPO / "shared" / "core" / "src" / "config" / "mod.rs").read_text()
    longest = int(re.search(r"MAX_MIGRATION_SECONDS: u64 = (\d+);", config).group(1))
    timeout = deploy_function()["Properties"]["Timeout"]
    assert timeout == 900 and timeout >= longest + 120


def test_verify_has_time_for_the_longest_smoke_test_and_ends_before_its_claim_lapses() -> None:
    config = (REPO / "shared" / "core" / "src" / "config" / "mod.rs").read_text()
    smoke = int(re.search(r"MAX_SMOKE_SECONDS: u64 = (\d+);", config).group(1))
    verify = (REPO / "shared" / "src" / "verify" / "mod.rs").read_text()
    factors = re.search(r"claim: Duration::from_secs\(\s*(\d+(?:\s*\*\s*\d+)*)\s*\)", verify).group(1)
    claim = 1
    for factor in factors.split("*"):
        claim *= int(factor)
    timeout = function("verify")["Properties"]["Timeout"]
    assert timeout == 300 and smoke + 60 <= timeout < claim, (smoke, timeout, claim)


def test_rollback_has_time_for_its_worst_case_of_retried_calls_and_ends_before_its_claim_lapses() -> None:
    # It puts the revision back and returns (verify records ROLLED_BACK from ECS's events),
    # but each of its ~12 sequential AWS calls may take the SDK's 3 attempts of 10 s.
    timeout = function("rollback")["Properties"]["Timeout"]
    aws = (REPO / "shared" / "src" / "adapters" / "aws.rs").read_text()
    attempt = int(re.search(r"REQUEST_TIMEOUT: Duration = Duration::from_secs\((\d+)\);", aws).group(1))
    rollback = (REPO / "shared" / "src" / "rollback" / "mod.rs").read_text()
    claim = 60 * int(re.search(r"claim: Duration::from_secs\((\d+) \* 60\)", rollback).group(1))
    lock_wait = 60 * int(re.search(r"lock_wait: Duration::from_secs\((\d+) \* 60\)", rollback).group(1))
    assert lock_wait + 12 * 3 * attempt <= timeout < claim, (lock_wait, timeout, claim)
    slack = (REPO / "shared" / "src" / "adapters" / "slack.rs").read_text()
    budget = int(re.search(r"SLACK_BUDGET: Duration = Duration::from_secs\((\d+)\);", slack).group(1))
    assert budget * 4 <= 60, "a failure's notifications (each within its budget) take a fraction of a minute"


@pytest.mark.parametrize("logical,name", asynchronous_functions())
def test_failed_invocations_are_retried_twice_then_kept(logical: str, name: str) -> None:
    props = template()["Resources"][logical]["Properties"]
    invoke = props["EventInvokeConfig"]
    assert invoke["MaximumRetryAttempts"] == 2
    queue_id = f"{logical.removesuffix('Function')}DeadLetterQueue"
    assert invoke["DestinationConfig"]["OnFailure"] == {"Type": "SQS", "Destination": {"Fn::GetAtt": [queue_id, "Arn"]}}
    queue = template()["Resources"][queue_id]
    assert queue["Type"] == "AWS::SQS::Queue"
    # The AWS managed key: its policy lets SQS use it for the account's principals, so Lambda
    # delivers with the role's sqs:SendMessage alone.
    assert queue["Properties"]["KmsMasterKeyId"] == "alias/aws/sqs"


@pytest.mark.parametrize("logical,name", deployed_functions())
def test_logs_are_json_with_retention(logical: str, name: str) -> None:
    logging = template()["Resources"][logical]["Properties"]["LoggingConfig"]
    group_id = f"{logical.removesuffix('Function')}LogGroup"
    assert logging["LogFormat"] == "JSON"
    assert logging["LogGroup"] == {"Ref": group_id}
    group = template()["Resources"][group_id]["Properties"]
    assert group["RetentionInDays"] == {"Ref": "LogRetentionDays"}
    assert group["LogGroupName"] == {"Fn::Sub": f"/aws/lambda/${{AWS::StackName}}-{name}"}
    assert template()["Parameters"]["LogRetentionDays"]["Default"] == 30


def test_the_ledger_table_is_the_one_the_adapter_uses() -> None:
    code = "".join(f.read_text() for f in sorted((REPO / "shared" / "src" / "adapters" / "dynamodb").glob("*.rs")))
    index = re.search(r'ECS_DEPLOYMENT_INDEX: &str = "([^"]+)"', code).group(1)
    table = template()["Resources"]["LedgerTable"]
    props = table["Properties"]
    assert (table["DeletionPolicy"], table["UpdateReplacePolicy"]) == ("Retain", "Retain")
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert props["KeySchema"] == [{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}]
    assert '("pk".to_string()' in code and '("sk".to_string()' in code
    (gsi,) = props["GlobalSecondaryIndexes"]
    assert gsi["IndexName"] == index
    (key,) = gsi["KeySchema"]
    assert key["KeyType"] == "HASH" and f'key_condition_expression("{key["AttributeName"]} = ' in code
    assert gsi["Projection"] == {"ProjectionType": "ALL"}
    types = {a["AttributeName"]: a["AttributeType"] for a in props["AttributeDefinitions"]}
    assert types == {"pk": "S", "sk": "S", key["AttributeName"]: "S"}
    ttl = props["TimeToLiveSpecification"]
    assert ttl["Enabled"] is True and f'e.set("{ttl["AttributeName"]}", n(' in code
    assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert props["SSESpecification"]["SSEEnabled"] is True
    assert props["DeletionProtectionEnabled"] is True


def test_notifications_are_encrypted_and_the_secret_holds_no_webhook() -> None:
    resources = template()["Resources"]
    assert resources["NotificationTopic"]["Properties"]["KmsMasterKeyId"] == {"Ref": "NotificationKey"}
    key = resources["NotificationKey"]["Properties"]
    assert key["EnableKeyRotation"] is True
    by_sid = {s["Sid"]: s for s in key["KeyPolicy"]["Statement"]}
    # CloudWatch may use the key (the alarms publish); the account's principals only through SNS.
    assert by_sid["AlarmsPublish"]["Principal"] == {"Service": "cloudwatch.amazonaws.com"}
    assert by_sid["AccountPublishes"]["Condition"] == {"StringEquals": {"kms:ViaService": {"Fn::Sub": "sns.${AWS::Region}.amazonaws.com"}}}
    for name, role in ROLES.items():
        if name == "approve":
            assert granting("kms:GenerateDataKey", PARAMETERS, role) == [], "it notifies nobody"
            continue
        s = only_statement("kms:GenerateDataKey", role=role)
        assert (iam.actions_of(s), s["Resource"]) == (["kms:GenerateDataKey", "kms:Decrypt"], "<NotificationKey.Arn>"), name
        assert s["Condition"] == {"StringEquals": {"kms:ViaService": "sns.eu-west-1.amazonaws.com"}}, name
    assert resources["NotificationEmailSubscription"]["Condition"] == "HasNotificationEmail"
    assert json.loads(resources["SlackWebhooksSecret"]["Properties"]["SecretString"]) == {"default": ""}


@pytest.mark.parametrize("logical,name", deployed_functions())
def test_a_failing_function_and_a_kept_event_alert_the_topic(logical: str, name: str) -> None:
    resources = template()["Resources"]
    prefix = logical.removesuffix("Function")
    errors = resources[f"{prefix}ErrorsAlarm"]["Properties"]
    assert (errors["Namespace"], errors["MetricName"]) == ("AWS/Lambda", "Errors")
    assert errors["Dimensions"] == [{"Name": "FunctionName", "Value": {"Ref": logical}}]
    alarms = [errors]
    if (logical, name) in asynchronous_functions():
        kept = resources[f"{prefix}DeadLetterAlarm"]["Properties"]
        assert (kept["Namespace"], kept["MetricName"]) == ("AWS/SQS", "ApproximateNumberOfMessagesVisible")
        assert kept["Dimensions"] == [{"Name": "QueueName", "Value": {"Fn::GetAtt": [f"{prefix}DeadLetterQueue", "QueueName"]}}]
        alarms.append(kept)
    for alarm in alarms:
        # One occurrence is enough, and no data (no invocation, an empty queue) is not an alarm.
        assert (alarm["Threshold"], alarm["ComparisonOperator"]) == (1, "GreaterThanOrEqualToThreshold")
        assert (alarm["EvaluationPeriods"], alarm["TreatMissingData"]) == (1, "notBreaching")
        assert alarm["AlarmActions"] == [{"Ref": "NotificationTopic"}]


@pytest.mark.parametrize("accounts,principals", [("", None), ("210987654321", ["210987654321"]),
                                                 ("210987654321,333333333333", ["210987654321", "333333333333"])])
def test_the_bus_takes_forwarded_events_only_from_the_listed_accounts(accounts: str, principals) -> None:
    resolver = iam.Resolver(template(), {**PARAMETERS, "ForwardingAccountIds": accounts})
    policy = template()["Resources"]["ForwardedEventsPolicy"]
    if principals is None:
        assert not resolver.condition(policy["Condition"])
        return
    assert resolver.condition(policy["Condition"])
    statement = resolver.resolve(policy["Properties"]["Statement"])
    assert statement == {
        "Effect": "Allow", "Principal": {"AWS": principals}, "Action": "events:PutEvents",
        "Resource": "arn:aws:events:eu-west-1:123456789012:event-bus/default",
    }


# --- the rules -------------------------------------------------------------------------

FIXTURES = REPO / "tests" / "fixtures" / "events"

#: Where each sample event (all from AWS services, on the default bus) must go: to these
#: functions and no other. ECS's failure goes to both: verify records it, rollback acts on it
#: (one rollback per failure, whichever trigger comes first).
ROUTES = {
    "ecr-push-staging.json": {"deploy"},
    "ecr-push-failed.json": set(),
    "ecr-delete.json": set(),
    "ecs-deployment-in-progress.json": {"verify"},
    "ecs-deployment-completed.json": {"verify"},
    "ecs-deployment-failed.json": {"verify", "rollback"},
    "ecs-deployment-circuit-breaker-rollback.json": {"verify"},
    "ecs-service-action-placement-failure.json": set(),
    "cloudwatch-alarm-state-change.json": {"rollback"},
}


def push_pattern(prefixes: str) -> dict:
    pattern = deploy_function()["Properties"]["Events"]["EcrPush"]["Properties"]["Pattern"]
    resolved = iam.Resolver(template(), {**PARAMETERS, "EcrRepositoryPrefixes": prefixes}).resolve(pattern)
    return json.loads(resolved) if isinstance(resolved, str) else resolved


def rule_patterns(prefixes: str, bus: str = "default") -> dict[str, list[tuple[str, dict]]]:
    """Every function's EventBridge rules, resolved: function name -> (bus, pattern)."""
    return iam.event_rules(template(), {**PARAMETERS, "EcrRepositoryPrefixes": prefixes, "EventBusName": bus})


def reached(event: dict, bus: str, prefixes: str = "", configured_bus: str = "default") -> set[str]:
    """The functions whose rules deliver `event` when it is put on `bus`."""
    from moto.events.models import EventPattern

    return {
        name for name, rules in rule_patterns(prefixes, configured_bus).items()
        if any(on == bus and EventPattern.load(json.dumps(p)).matches_event(event) for on, p in rules)
    }


@pytest.mark.parametrize("prefixes", ["", "shop/"])
def test_each_sample_event_reaches_the_right_function_and_no_other(prefixes: str) -> None:
    events = {p.name: json.loads(p.read_text()) for p in FIXTURES.glob("*.json")}
    assert set(events) == set(ROUTES), "every sample event must say where it goes (ROUTES)"
    assert set(rule_patterns(prefixes)) == set(ROLES) - {"approve"}, "every function but approve (a URL) has a rule"
    # AWS services publish on the default bus only.
    assert {fixture: reached(event, "default", prefixes) for fixture, event in events.items()} == ROUTES


def ferry_event(detail_type: str) -> dict:
    """An event as Ferry puts it (EventBridgeBus, or `ferry rollback`): its source and detail-type."""
    return {
        "version": "0", "id": "e1", "detail-type": detail_type,
        "source": code_constant("shared/core/src/event/mod.rs", "EVENT_SOURCE"),
        "account": "123456789012", "time": "2026-11-16T02:10:00Z", "region": "eu-west-1", "resources": [],
        "detail": {"deployment": "d1", "environment": "staging", "service": "shop-staging-api"},
    }


@pytest.mark.parametrize("bus", ["default", "ferry-events"])
def test_ferrys_own_events_reach_rollback_on_the_configured_bus_only(bus: str) -> None:
    failed = ferry_event(code_constant("shared/core/src/event/mod.rs", "DEPLOYMENT_FAILED"))
    requested = ferry_event(code_constant("shared/core/src/event/mod.rs", "ROLLBACK_REQUESTED"))
    for event in (failed, requested):
        assert reached(event, bus, configured_bus=bus) == {"rollback"}
        if bus != "default":
            assert reached(event, "default", configured_bus=bus) == set()
    # Anyone else's event with Ferry's detail-type reaches nothing.
    assert reached({**failed, "source": "shop.ci"}, bus, configured_bus=bus) == set()


@pytest.mark.parametrize("bus", ["default", "ferry-events"])
def test_approvers_decisions_reach_deploy_on_the_configured_bus_only(bus: str) -> None:
    for constant in ("DEPLOYMENT_APPROVED", "DEPLOYMENT_REJECTED"):
        decided = ferry_event(code_constant("shared/core/src/event/mod.rs", constant))
        assert reached(decided, bus, configured_bus=bus) == {"deploy"}, constant
        if bus != "default":
            assert reached(decided, "default", configured_bus=bus) == set()
        assert reached({**decided, "source": "shop.ci"}, bus, configured_bus=bus) == set()


def test_the_approval_url_is_public_and_only_through_the_url() -> None:
    approve = function("approve")["Properties"]
    assert approve["FunctionUrlConfig"] == {"AuthType": "NONE"}
    assert "Events" not in approve and "EventInvokeConfig" not in approve
    # What SAM makes of FunctionUrlConfig: the two grants a public URL needs
    # (https://docs.aws.amazon.com/lambda/latest/dg/urls-auth.html), the second only through the URL.
    granted = sorted(
        (r["Properties"]["Action"], r["Properties"].get("FunctionUrlAuthType"), r["Properties"].get("InvokedViaFunctionUrl"))
        for r in sam_transformed()["Resources"].values()
        if r["Type"] == "AWS::Lambda::Permission" and r["Properties"]["FunctionName"] == {"Ref": "ApproveFunction"}
    )
    assert granted == [("lambda:InvokeFunction", None, True), ("lambda:InvokeFunctionUrl", "NONE", None)]
    assert template()["Outputs"]["ApproveFunctionUrl"]["Value"] == {"Fn::GetAtt": ["ApproveFunctionUrl", "FunctionUrl"]}
    # No ECS, no other account: it records and announces only.
    granted = {a for _, actions in iam.grant_variants(template(), ROLES["approve"], {**PARAMETERS, "TargetRoleArns": TARGET_ROLE})
               for a in actions}
    assert not {a for a in granted if a.startswith(("ecs:", "sts:", "iam:"))}, granted


def test_only_alarms_entering_alarm_reach_rollback() -> None:
    alarm = json.loads((FIXTURES / "cloudwatch-alarm-state-change.json").read_text())
    assert reached(alarm, "default") == {"rollback"}
    for state in ("OK", "INSUFFICIENT_DATA"):
        back = {**alarm, "detail": {**alarm["detail"], "state": {**alarm["detail"]["state"], "value": state}}}
        assert reached(back, "default") == set(), state


@pytest.mark.parametrize("prefixes,delivered", [
    ("", True),
    ("shop/", True),
    ("billing/,shop/a", True),
    ("billing/", False),
])
def test_the_rule_delivers_successful_pushes_only(prefixes: str, delivered: bool) -> None:
    from moto.events.models import EventPattern

    pattern = EventPattern.load(json.dumps(push_pattern(prefixes)))
    events = {p.name: json.loads(p.read_text()) for p in FIXTURES.glob("*.json")}
    assert "ecr-push-staging.json" in events
    matched = {name for name, event in events.items() if pattern.matches_event(event)}
    assert matched == ({"ecr-push-staging.json"} if delivered else set())


def test_deploy_and_verify_run_on_the_reconciliation_schedule_a_parameter() -> None:
    every, weekly = "rate(15 minutes)", "cron(0 8 ? * MON *)"
    assert iam.schedules(template(), PARAMETERS) == {"deploy": [every], "verify": [every, weekly]}
    hourly = "cron(0 * * * ? *)"
    assert iam.schedules(template(), {**PARAMETERS, "ReconcileSchedule": hourly}) == {"deploy": [hourly], "verify": [hourly, weekly]}
    # What the schedule sends: EventBridge's own "Scheduled Event", which the deploy function
    # takes as its reconciliation and verify as its sweep (SCHEDULED_SOURCE and
    # SCHEDULED_EVENT in shared/core/src/event/mod.rs).
    event = next(v for v in deploy_function()["Properties"]["Events"].values() if v["Type"] == "Schedule")
    assert "Input" not in event["Properties"] and "InputPath" not in event["Properties"], "delivered as is"
    assert (code_constant("shared/core/src/event/mod.rs", "SCHEDULED_SOURCE"), code_constant("shared/core/src/event/mod.rs", "SCHEDULED_EVENT")) == ("aws.events", "Scheduled Event")
    scheduled = {"version": "0", "id": "s", "detail-type": "Scheduled Event", "source": "aws.events",
                 "account": "123456789012", "time": "2026-11-16T02:00:00Z", "region": "eu-west-1", "resources": [], "detail": {}}
    assert reached(scheduled, "default") == set(), "no event rule takes the schedule's events: only its own target does"


@pytest.mark.parametrize("on, state", [("false", "DISABLED"), ("true", "ENABLED")])
def test_the_weekly_digest_is_verifys_own_schedule_off_unless_asked_for(on: str, state: str) -> None:
    events = function("verify")["Properties"]["Events"]
    digest = events["WeeklyDigest"]["Properties"]
    resolver = iam.Resolver(template(), {**PARAMETERS, "WeeklyDigest": on})
    assert resolver.resolve(digest["State"]) == state
    assert template()["Parameters"]["WeeklyDigest"]["Default"] == "false"
    # Its constant input is what the verify function takes for the digest (parse_verify_event).
    sent = json.loads(resolver.resolve(digest["Input"]))
    event = "shared/core/src/event/mod.rs"
    assert sent == {"source": code_constant(event, "EVENT_SOURCE"), "detail-type": code_constant(event, "WEEKLY_DIGEST"),
                    "account": "123456789012"}
    # SAM makes it a rule of its own, on the schedule given, in the state the parameter says.
    (rule,) = [r for r in sam_transformed()["Resources"].values()
               if r["Type"] == "AWS::Events::Rule" and r["Properties"].get("Description", "").startswith("Ferry posts")]
    assert rule["Properties"]["ScheduleExpression"] == {"Ref": "WeeklyDigestSchedule"}
    assert rule["Properties"]["State"] == {"Fn::If": ["SendsWeeklyDigest", "ENABLED", "DISABLED"]}
    # What it reads and where it posts are the verify role's grants already (the ledger's Query,
    # the Slack secret, the topic): the recorded digest test holds the role to them.


def test_reconciliation_reads_only_this_accounts_image_lists() -> None:
    (statement,) = granting("ecr:DescribeImages", PARAMETERS, ROLES["deploy"])
    assert iam.actions_of(statement) == ["ecr:DescribeImages"]
    assert as_list(statement["Resource"]) == ["arn:aws:ecr:eu-west-1:123456789012:repository/*"]
    assert not [r for r in ROLES.values() if r != ROLES["deploy"] and granting("ecr:DescribeImages", PARAMETERS, r)]


@pytest.mark.parametrize("logical,name", deployed_functions())
def test_each_function_knows_its_own_account(logical: str, name: str) -> None:
    variables = template()["Resources"][logical]["Properties"]["Environment"]["Variables"]
    assert variables["FERRY_ACCOUNT"] == {"Ref": "AWS::AccountId"}


def test_the_prefix_filter_only_adds_the_repository_condition() -> None:
    # The two branches of the rule's pattern (plain, and JSON text with prefixes) must not drift.
    filtered = push_pattern("shop/,billing/")
    assert filtered["detail"].pop("repository-name") == [{"prefix": "shop/"}, {"prefix": "billing/"}]
    assert filtered == push_pattern("")


# --- the emulator ----------------------------------------------------------------------


def sam_transformed() -> dict:
    """The template as SAM's transform makes it plain CloudFormation (offline; the code from S3)."""
    from samtranslator.translator.transform import transform
    from samtranslator.yaml_helper import yaml_parse

    class NoManagedPolicies:
        def load(self) -> dict:
            return {}

    sam = yaml_parse(TEMPLATE.read_text())
    for logical, _ in deployed_functions():
        sam["Resources"][logical]["Properties"]["CodeUri"] = "s3://ferry-artifacts/function.zip"
    sam["Resources"]["ConfigLayer"]["Properties"]["ContentUri"] = "s3://ferry-artifacts/config.zip"
    # The transform resolves pseudo parameters from a boto3 session's region.
    with mock.patch.dict(os.environ, {"AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION", "eu-west-1")}):
        return transform(sam, {}, NoManagedPolicies())


# moto's CloudFormation skips what it cannot create (the secret, the async invoke config, the alarms).
@pytest.mark.filterwarnings("ignore:Tried to parse AWS::")
def test_the_stack_creates_in_the_emulator_with_the_grants_checked_here(monkeypatch: pytest.MonkeyPatch) -> None:
    """The SAM template, transformed offline, creates a stack in moto; the role it creates
    grants what the checks above resolved (so the resolver reads the template right)."""
    for k, v in {"AWS_DEFAULT_REGION": "eu-west-1", "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}.items():
        monkeypatch.setenv(k, v)
    import boto3
    from moto import mock_aws

    plain = sam_transformed()
    # moto 5.2.5's CloudFormation has no AWS::Lambda::Url (cfn-lint checks it above): created
    # without it and the output naming it.
    for logical in [k for k, r in plain["Resources"].items() if r["Type"] == "AWS::Lambda::Url"]:
        del plain["Resources"][logical]
        plain["Outputs"] = {k: v for k, v in plain["Outputs"].items() if logical not in json.dumps(v)}

    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("bootstrap", "#!/bin/sh\n")
    with mock_aws():
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="ferry-artifacts", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        for key in ("function.zip", "config.zip"):
            s3.put_object(Bucket="ferry-artifacts", Key=key, Body=archive.getvalue())
        cfn, iam_client = boto3.client("cloudformation"), boto3.client("iam")
        for name, targets in (("ferry-one-account", ""), ("ferry-cross-account", TARGET_ROLE)):
            parameters = {**PARAMETERS, "TargetRoleArns": targets}
            cfn.create_stack(
                StackName=name, TemplateBody=json.dumps(plain), Capabilities=["CAPABILITY_IAM"],
                Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
            )
            assert cfn.describe_stacks(StackName=name)["Stacks"][0]["StackStatus"] == "CREATE_COMPLETE"
            created = {r["LogicalResourceId"]: r for r in cfn.list_stack_resources(StackName=name)["StackResourceSummaries"]}
            expected = ["LedgerTable", "NotificationTopic", "NotificationKey", *ROLES.values()]
            for logical, name in deployed_functions():
                prefix = logical.removesuffix("Function")
                expected += [logical, f"{prefix}LogGroup"]
                if (logical, name) in asynchronous_functions():
                    expected.append(f"{prefix}DeadLetterQueue")
            for logical in expected:
                assert created[logical]["ResourceStatus"] == "CREATE_COMPLETE", logical
            for role_id in ROLES.values():
                role = created[role_id]["PhysicalResourceId"]
                actions = set()
                for policy in iam_client.list_role_policies(RoleName=role)["PolicyNames"]:
                    document = iam_client.get_role_policy(RoleName=role, PolicyName=policy)["PolicyDocument"]
                    if isinstance(document, str):
                        # moto 5.2.5 answers with the document's Python repr, and keeps an
                        # AWS::NoValue statement as None (CloudFormation drops it).
                        document = ast.literal_eval(document)
                    actions |= {a for s in as_list(document["Statement"]) if s is not None for a in as_list(s["Action"])}
                assert actions == iam.granted(template(), role_id, parameters), (name, role_id)


# --- the operators' policy --------------------------------------------------------------


def cli_actions() -> set[str]:
    """What the ferry CLI's own code calls (its commands; the handlers it runs are the functions')."""
    operations = {svc: iam.sdk_operations(svc, v) for svc, v in iam.locked_sdk_crates(REPO / "Cargo.lock").items()}
    calls = iam.scan(sorted((REPO / "cli" / "src").rglob("*.rs")), operations, REPO)
    # GetCallerIdentity needs no permission (https://docs.aws.amazon.com/STS/latest/APIReference/API_GetCallerIdentity.html).
    return {c.action for c in calls} - {"sts:GetCallerIdentity"}


@pytest.mark.parametrize("targets", ["", TARGET_ROLE])
def test_the_operator_policy_grants_what_the_cli_calls_and_only_what_ferrys_code_calls(targets: str) -> None:
    policy = template()["Resources"]["OperatorPolicy"]
    assert policy["Condition"] == "CreatesOperatorPolicy" and "Roles" not in policy["Properties"], "attached by the team"
    parameters = {**PARAMETERS, "TargetRoleArns": targets, "CreateOperatorPolicy": "true"}
    resolver = iam.Resolver(template(), parameters)
    granted = {a for s in iam.statements(resolver, [policy["Properties"]["PolicyDocument"]]) for a in iam.actions_of(s)}
    needed = cli_actions() - ({"sts:AssumeRole"} if not targets else set())
    assert needed <= granted, f"the CLI calls actions the operator policy lacks: {sorted(needed - granted)}"
    # The rest is what the library the CLI runs reads and writes (the ledger, the bus).
    extra = granted - cli_actions() - code_actions()
    assert not extra, f"grants no code calls: {sorted(extra)}"
    assert ("sts:AssumeRole" in granted) == bool(targets), "target roles only when there are some"
    assert resolver.resolve(template()["Conditions"]["CreatesOperatorPolicy"]) is True
    assert iam.Resolver(template(), PARAMETERS).condition("CreatesOperatorPolicy") is False, "off by default"
