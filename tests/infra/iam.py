"""What AWS actions Ferry's code calls, and what its CloudFormation templates grant.

Two halves, compared by test_template.py:

- The code: every AWS SDK operation the Rust sources call, found statically. An
  operation of crate `aws-sdk-<svc>` is one of the directories under that crate's
  `src/operation/` (the version Cargo.lock pins, in the local cargo registry); a call is
  `.<operation>()` in a file that names the crate's `Client`, or `<Operation>InputBuilder`
  sent with `send_with`. `AssumeRoleProvider` calls sts:AssumeRole. Each call maps to the
  IAM action that authorises it.
- The templates: the statements of each function's IAM role, with CloudFormation's
  intrinsic functions resolved for given parameter values (or forced condition values).

Nothing here runs cargo: the registry sources are read as files.
"""

from __future__ import annotations

import itertools
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import yaml

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"

# ---------------------------------------------------------------------------------------
# The code
# ---------------------------------------------------------------------------------------

#: IAM service prefix of each SDK crate (`aws-sdk-<key>`); an unlisted crate uses its own suffix.
#: test_template.py checks each against the SigV4 signing name the crate declares.
IAM_PREFIX = {
    "ecs": "ecs",
    "dynamodb": "dynamodb",
    "sns": "sns",
    "secretsmanager": "secretsmanager",
    "sts": "sts",
    "ecr": "ecr",
    "eventbridge": "events",
    "elasticloadbalancingv2": "elasticloadbalancing",
}

#: Crates whose SigV4 signing name is not their IAM prefix: CloudWatch signs as "monitoring"
#: (https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazoncloudwatch.html).
SIGNED_AS = {"cloudwatch": "monitoring"}

#: A DynamoDB transaction is authorised per contained item, by the item's own action.
TRANSACT_WRITE_ITEM_ACTIONS = {
    "update": "dynamodb:UpdateItem",
    "put": "dynamodb:PutItem",
    "delete": "dynamodb:DeleteItem",
    "condition_check": "dynamodb:ConditionCheckItem",
}

#: Actions AWS checks in addition to the one named by the operation (its "dependent actions"
#: as Ferry calls them): RegisterTaskDefinition copies tags (ecs:TagResource, with
#: ecs:CreateAction) and names task and execution roles (iam:PassRole); RunTask passes them;
#: Publish to a topic encrypted with a customer managed key (infra/template.yaml's) makes SNS
#: use the key as the publisher.
IMPLIED = {
    "ecs:RegisterTaskDefinition": {"ecs:TagResource", "iam:PassRole"},
    "ecs:RunTask": {"iam:PassRole"},
    "sns:Publish": {"kms:GenerateDataKey", "kms:Decrypt"},
}

#: What the Lambda service itself does with every function's role: write its logs.
RUNTIME_LOGS = {"logs:CreateLogStream", "logs:PutLogEvents"}


@dataclass(frozen=True)
class Call:
    """One place in the code that makes an AWS request."""

    action: str
    file: str
    line: int
    via: str

    def __str__(self) -> str:
        return f"{self.action} ({self.file}:{self.line}, {self.via})"


def locked_sdk_crates(lock: Path = REPO / "Cargo.lock") -> dict[str, str]:
    """`aws-sdk-<svc>` crates in Cargo.lock: svc -> version."""
    crates: dict[str, str] = {}
    for block in lock.read_text().split("[[package]]"):
        name = re.search(r'^name = "aws-sdk-([a-z0-9]+)"$', block, re.M)
        version = re.search(r'^version = "([^"]+)"$', block, re.M)
        if name and version:
            if name.group(1) in crates and crates[name.group(1)] != version.group(1):
                raise ValueError(f"Cargo.lock has two versions of aws-sdk-{name.group(1)}")
            crates[name.group(1)] = version.group(1)
    return crates


def registry_sources() -> list[Path]:
    cargo_home = Path(os.environ.get("CARGO_HOME", Path.home() / ".cargo"))
    return sorted((cargo_home / "registry" / "src").glob("*"))


def sdk_crate_dir(svc: str, version: str) -> Path:
    """The source of `aws-sdk-<svc>` at `version` in the local cargo registry."""
    for src in registry_sources():
        crate = src / f"aws-sdk-{svc}-{version}"
        if (crate / "src" / "operation").is_dir():
            return crate
    raise FileNotFoundError(
        f"aws-sdk-{svc} {version} is not in the cargo registry ({registry_sources()}): "
        "fetch the workspace's dependencies first (cargo fetch)"
    )


def signing_name(svc: str, version: str) -> str:
    """The SigV4 signing name `aws-sdk-<svc>` declares (`events` for EventBridge): the
    service's IAM prefix, save for a few services this project does not use."""
    names = {
        m.group(1)
        for f in (sdk_crate_dir(svc, version) / "src").rglob("*.rs")
        for m in re.finditer(r'SigningName::from_static\(\s*"([^"]+)"', f.read_text())
    }
    if len(names) != 1:
        raise ValueError(f"aws-sdk-{svc} {version}: expected one SigningName, found {sorted(names)}")
    return names.pop()


def sdk_operations(svc: str, version: str) -> dict[str, str]:
    """The operations of `aws-sdk-<svc>` at `version`: snake_case method -> API name."""
    operation_dir = sdk_crate_dir(svc, version) / "src" / "operation"
    operations = {}
    for d in sorted(p for p in operation_dir.iterdir() if p.is_dir()):
        module = operation_dir / f"{d.name}.rs"
        # The API name as the SDK sends it, e.g. GetSMSAttributes for get_sms_attributes.
        found = re.search(r'Metadata::new\(\s*"([A-Za-z0-9]+)"', module.read_text()) if module.exists() else None
        operations[d.name] = found.group(1) if found else "".join(w.capitalize() for w in d.name.split("_"))
    if not operations:
        raise ValueError(f"no operations under {operation_dir}")
    return operations


def strip_comments_and_strings(source: str) -> str:
    """`source` with comments and string/char literal contents blanked (newlines kept), so
    neither a comment nor a string can look like a call."""
    out = list(source)
    i, n = 0, len(source)

    def blank(a: int, b: int) -> None:
        for k in range(a, b):
            if out[k] != "\n":
                out[k] = " "

    while i < n:
        c = source[i]
        if source.startswith("//", i):
            end = source.find("\n", i)
            end = n if end < 0 else end
            blank(i, end)
            i = end
        elif source.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if source.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif source.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            blank(i, j)
            i = j
        elif (m := re.compile(r'b?r(#*)"').match(source, i)) and (i == 0 or not (source[i - 1].isalnum() or source[i - 1] == "_")):
            close = '"' + m.group(1)
            end = source.find(close, m.end())
            end = n if end < 0 else end + len(close)
            blank(m.end(), max(m.end(), end - len(close)))
            i = end
        elif c == '"':
            j = i + 1
            while j < n and source[j] != '"':
                j += 2 if source[j] == "\\" else 1
            blank(i + 1, min(j, n))
            i = j + 1
        elif c == "'" and (m := re.compile(r"'(\\(x[0-9a-fA-F]{2}|u\{[0-9a-fA-F]+\}|.)|[^\\'])'").match(source, i)):
            blank(i + 1, m.end() - 1)
            i = m.end()
        else:
            i += 1
    return "".join(out)


def rust_sources(repo: Path = REPO) -> list[Path]:
    """The libraries' and the functions' sources (not tests, not the test harness)."""
    return sorted([*(repo / "shared").glob("**/src/**/*.rs"), *(repo / "functions").glob("*/src/**/*.rs")])


FLUENT_CALL = re.compile(r"\.\s*([a-z][a-z0-9_]*)\s*\(\s*\)")
INPUT_BUILDER = re.compile(r"\b([A-Z][A-Za-z0-9]*)InputBuilder\b")
TRANSACT_WRITE_ITEM = re.compile(r"\bTransactWriteItem::builder\(\s*\)\s*\.\s*(?:set_)?([a-z_]+)\s*\(")


def scan(files: Iterable[Path], operations: dict[str, dict[str, str]], root: Path = REPO) -> list[Call]:
    """Every AWS call in `files`, given each SDK crate's operations (svc -> method -> API name)."""
    calls: list[Call] = []
    for path in files:
        code = strip_comments_and_strings(path.read_text())
        rel = str(path.relative_to(root)) if path.is_relative_to(root) else str(path)

        def line(pos: int) -> int:
            return code.count("\n", 0, pos) + 1

        for svc, ops in operations.items():
            prefix = IAM_PREFIX.get(svc, svc)
            crate = f"aws_sdk_{svc}"
            names_its_client = re.search(rf"\b{crate}::Client\b", code) or re.search(
                rf"\buse\s+{crate}::\{{[^}}]*\bClient\b", code
            )
            if names_its_client:
                for m in FLUENT_CALL.finditer(code):
                    if m.group(1) in ops:
                        calls.append(Call(f"{prefix}:{ops[m.group(1)]}", rel, line(m.start(1)), f".{m.group(1)}()"))
            if re.search(rf"\b{crate}::", code) and ".send_with(" in code.replace(" ", ""):
                for m in INPUT_BUILDER.finditer(code):
                    if m.group(1) in ops.values():
                        calls.append(Call(f"{prefix}:{m.group(1)}", rel, line(m.start()), f"{m.group(0)} + send_with"))
        for m in re.finditer(r"\bAssumeRoleProvider\b", code):
            calls.append(Call("sts:AssumeRole", rel, line(m.start()), "AssumeRoleProvider"))
    return expand_transactions(calls, files, root)


def expand_transactions(calls: list[Call], files: Iterable[Path], root: Path) -> list[Call]:
    """Replaces dynamodb:TransactWriteItems by the actions of the items the code puts in
    transactions, and TransactGetItems by GetItem: IAM authorises a transaction per item."""
    items: list[Call] = []
    if any(c.action == "dynamodb:TransactWriteItems" for c in calls):
        for path in files:
            code = strip_comments_and_strings(path.read_text())
            rel = str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
            for m in TRANSACT_WRITE_ITEM.finditer(code):
                if m.group(1) not in TRANSACT_WRITE_ITEM_ACTIONS:
                    raise ValueError(f"{rel}: TransactWriteItem::builder().{m.group(1)}(...) is not a known transaction item")
                line = code.count("\n", 0, m.start()) + 1
                items.append(Call(TRANSACT_WRITE_ITEM_ACTIONS[m.group(1)], rel, line, "TransactWriteItem::builder() item"))
        if not items:
            raise ValueError("the code calls TransactWriteItems but builds no TransactWriteItem this scan recognises")
    out: list[Call] = []
    for c in calls:
        if c.action == "dynamodb:TransactWriteItems":
            out += [Call(i.action, i.file, i.line, f"{i.via}, sent by {c.file}:{c.line}") for i in items]
        elif c.action == "dynamodb:TransactGetItems":
            out.append(Call("dynamodb:GetItem", c.file, c.line, f"{c.via} (per item)"))
        else:
            out.append(c)
    return out


def code_calls(repo: Path = REPO) -> list[Call]:
    """Every AWS call in Ferry's library and functions."""
    operations = {svc: sdk_operations(svc, version) for svc, version in locked_sdk_crates(repo / "Cargo.lock").items()}
    return scan(rust_sources(repo), operations, repo)


def implied(actions: Iterable[str]) -> set[str]:
    return set().union(*(IMPLIED.get(a, set()) for a in actions))


# ---------------------------------------------------------------------------------------
# Runtime records (written by the Rust integration tests)
# ---------------------------------------------------------------------------------------


def recorded_dir() -> Path:
    path = Path(os.environ.get("FERRY_RECORDED_ACTIONS", REPO / "tests" / ".recorded-actions"))
    return path if path.is_absolute() else REPO / path


def recorded_actions(function: str, root: Path | None = None) -> set[str] | None:
    """The actions the integration tests saw `function` make: `<root>/<function>.json` and
    every `<root>/<function>/*.json`, each a JSON list of IAM actions. None without a record."""
    root = root or recorded_dir()
    files = [root / f"{function}.json"] if (root / f"{function}.json").is_file() else []
    files += sorted((root / function).glob("*.json")) if (root / function).is_dir() else []
    if not files:
        return None
    actions: set[str] = set()
    for f in files:
        data = json.loads(f.read_text())
        if not isinstance(data, list) or not all(isinstance(a, str) and re.fullmatch(r"[a-z0-9-]+:[A-Za-z0-9]+", a) for a in data):
            raise ValueError(f"{f}: expected a JSON list of IAM actions such as \"ecs:UpdateService\", got {data!r}")
        actions |= set(data)
    return actions


# ---------------------------------------------------------------------------------------
# The templates
# ---------------------------------------------------------------------------------------


class _CfnLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short-form tags, turned into their long forms."""


def _short_form(tag: str):
    def construct(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
        if isinstance(node, yaml.ScalarNode):
            value: Any = loader.construct_scalar(node)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)
        if tag == "Ref":
            return {"Ref": value}
        if tag == "Condition":
            return {"Condition": value}
        if tag == "GetAtt" and isinstance(value, str):
            value = value.split(".", 1)
        return {f"Fn::{tag}": value}

    return construct


for _tag in ["Ref", "Condition", "GetAtt", "Sub", "Join", "Split", "Select", "If", "Not", "Equals", "And", "Or",
             "FindInMap", "Base64", "Cidr", "GetAZs", "ImportValue", "Transform", "Length", "ToJsonString"]:
    _CfnLoader.add_constructor(f"!{_tag}", _short_form(_tag))


def load_template(path: Path) -> dict:
    return yaml.load(path.read_text(), Loader=_CfnLoader)  # noqa: S506 - a SafeLoader subclass


def templates(infra: Path = INFRA) -> list[Path]:
    """Every CloudFormation template under infra/ (YAML or JSON with a Resources section)."""
    found = []
    for path in sorted(infra.rglob("*")):
        if path.suffix in (".yaml", ".yml", ".json", ".template") and ".aws-sam" not in path.parts:
            text = path.read_text()
            if re.search(r"^\s*\"?Resources\"?\s*:", text, re.M) and ("AWSTemplateFormatVersion" in text or "Transform" in text):
                found.append(path)
    return found


class Unresolvable(ValueError):
    pass


NO_VALUE = object()


class Resolver:
    """Evaluates intrinsic functions for given parameter values. Conditions are evaluated
    from the parameters unless forced. References to resources resolve to placeholders such
    as `<LedgerTable>` and `<LedgerTable.Arn>`."""

    PSEUDO = {
        "AWS::Partition": "aws",
        "AWS::AccountId": "123456789012",
        "AWS::Region": "eu-west-1",
        "AWS::StackName": "ferry",
        "AWS::URLSuffix": "amazonaws.com",
    }

    def __init__(self, template: dict, parameters: dict[str, str] | None = None, conditions: dict[str, bool] | None = None):
        self.template = template
        self.forced = dict(conditions or {})
        self.parameters: dict[str, Any] = {}
        for name, spec in (template.get("Parameters") or {}).items():
            raw = (parameters or {}).get(name, spec.get("Default"))
            if raw is None:
                self.parameters[name] = None  # no value: resolving a use of it fails
                continue
            raw = str(raw)
            self.parameters[name] = raw.split(",") if spec["Type"] == "CommaDelimitedList" or spec["Type"].startswith("List<") else raw

    def condition(self, name: str) -> bool:
        if name in self.forced:
            return self.forced[name]
        return bool(self.resolve(self.template["Conditions"][name]))

    def resolve(self, node: Any) -> Any:
        if isinstance(node, list):
            return [v for v in (self.resolve(x) for x in node) if v is not NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            (key, arg), = node.items()
            if key == "Ref":
                if arg == "AWS::NoValue":
                    return NO_VALUE
                if arg in self.PSEUDO:
                    return self.PSEUDO[arg]
                if arg in self.parameters:
                    if self.parameters[arg] is None:
                        raise Unresolvable(f"parameter {arg} has no value")
                    return self.parameters[arg]
                return f"<{arg}>"
            if key == "Fn::GetAtt":
                resource, attribute = arg if isinstance(arg, list) else arg.split(".", 1)
                return f"<{resource}.{attribute}>"
            if key == "Fn::If":
                name, yes, no = arg
                return self.resolve(yes if self.condition(name) else no)
            if key == "Condition" and isinstance(arg, str):
                return self.condition(arg)
            if key == "Fn::Equals":
                a, b = self.resolve(arg)
                return a == b
            if key == "Fn::Not":
                return not self.resolve(arg[0])
            if key == "Fn::And":
                return all(self.resolve(arg))
            if key == "Fn::Or":
                return any(self.resolve(arg))
            if key == "Fn::Join":
                delimiter, values = arg
                values = self.resolve(values)
                return delimiter.join(str(v) for v in values)
            if key == "Fn::Split":
                delimiter, value = arg
                return str(self.resolve(value)).split(delimiter)
            if key == "Fn::Select":
                index, values = self.resolve(arg)
                return values[int(index)]
            if key == "Fn::Sub":
                text, variables = (arg, {}) if isinstance(arg, str) else (arg[0], self.resolve(arg[1]))

                def sub(m: re.Match) -> str:
                    name = m.group(1)
                    if name.startswith("!"):
                        return "${" + name[1:] + "}"
                    if name in variables:
                        return str(variables[name])
                    value = self.resolve({"Fn::GetAtt": name.split(".", 1)} if "." in name else {"Ref": name})
                    if isinstance(value, list):
                        raise Unresolvable(f"Fn::Sub of the list {name}")
                    return str(value)

                return re.sub(r"\$\{([^}]+)\}", sub, text)
            if key.startswith("Fn::"):
                raise Unresolvable(f"{key} is not supported by this resolver")
        return {k: v for k, v in ((k, self.resolve(v)) for k, v in node.items()) if v is not NO_VALUE}


def conditions_used(node: Any) -> set[str]:
    """Names of the conditions that `node`'s Fn::If functions depend on."""
    found: set[str] = set()
    if isinstance(node, list):
        for x in node:
            found |= conditions_used(x)
    elif isinstance(node, dict):
        for k, v in node.items():
            if k == "Fn::If":
                found.add(v[0])
            found |= conditions_used(v)
    return found


def condition_assignments(names: Iterable[str]) -> list[dict[str, bool]]:
    names = sorted(set(names))
    return [dict(zip(names, values)) for values in itertools.product([False, True], repeat=len(names))]


def functions(template: dict) -> dict[str, dict]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] in ("AWS::Serverless::Function", "AWS::Lambda::Function")}


def function_name(resource: dict) -> str:
    """The function's name in the workspace: its binary (`ferry-deploy`) without `ferry-`."""
    binary = ((resource.get("Metadata") or {}).get("BuildProperties") or {}).get("Binary")
    if not binary:
        raise ValueError("a function without Metadata.BuildProperties.Binary")
    return binary.removeprefix("ferry-")


def event_rules(template: dict, parameters: dict[str, str]) -> dict[str, list[tuple[str, dict]]]:
    """Every function's EventBridge rules, resolved: function name -> [(bus, pattern)].

    Used by the routing checks and by the sandbox's local event bus, so both deliver events
    the way the deployed rules would."""
    raw_rules = [k for k, v in template["Resources"].items() if v["Type"] == "AWS::Events::Rule"]
    assert not raw_rules, f"rules outside the functions' Events are not routed: {raw_rules}"
    resolver = Resolver(template, parameters)
    rules: dict[str, list[tuple[str, dict]]] = {}
    for logical, resource in functions(template).items():
        for event_id, event in (resource["Properties"].get("Events") or {}).items():
            if event["Type"] == "Schedule":
                continue  # see schedules()
            assert event["Type"] == "EventBridgeRule", f"{logical}.{event_id}: {event['Type']} is not routed"
            on = resolver.resolve(event["Properties"].get("EventBusName", "default"))
            pattern = resolver.resolve(event["Properties"]["Pattern"])
            rules.setdefault(function_name(resource), []).append((on, json.loads(pattern) if isinstance(pattern, str) else pattern))
    return rules


def schedules(template: dict, parameters: dict[str, str]) -> dict[str, list[str]]:
    """Every function's EventBridge schedules (rules that send EventBridge's own "Scheduled
    Event" on a schedule), resolved: function name -> [schedule expression]."""
    resolver = Resolver(template, parameters)
    found: dict[str, list[str]] = {}
    for resource in functions(template).values():
        for event in (resource["Properties"].get("Events") or {}).values():
            if event["Type"] == "Schedule":
                found.setdefault(function_name(resource), []).append(resolver.resolve(event["Properties"]["Schedule"]))
    return found


def schedule_events(template: dict, parameters: dict[str, str]) -> list[tuple[str, str, bool, dict | None]]:
    """Every function's schedule rules, resolved: (function name, expression, enabled, the
    constant input the rule sends instead of EventBridge's "Scheduled Event", if any)."""
    resolver = Resolver(template, parameters)
    found = []
    for resource in functions(template).values():
        for event in (resource["Properties"].get("Events") or {}).values():
            if event["Type"] != "Schedule":
                continue
            p = event["Properties"]
            enabled = resolver.resolve(p.get("State", "ENABLED")) == "ENABLED" and p.get("Enabled", True) is not False
            given = p.get("Input")
            found.append((function_name(resource), resolver.resolve(p["Schedule"]), enabled,
                          json.loads(resolver.resolve(given)) if given is not None else None))
    return found


def role_of(template: dict, function: str) -> str:
    """The logical id of the AWS::IAM::Role the function runs as."""
    role = template["Resources"][function]["Properties"].get("Role")
    if not (isinstance(role, dict) and "Fn::GetAtt" in role):
        raise ValueError(f"{function} must run as a role of this template (Role: !GetAtt <Role>.Arn), got {role!r}")
    target = role["Fn::GetAtt"]
    logical = (target if isinstance(target, list) else target.split("."))[0]
    if template["Resources"].get(logical, {}).get("Type") != "AWS::IAM::Role":
        raise ValueError(f"{function}'s role {logical} is not an AWS::IAM::Role of this template")
    return logical


def role_policy_documents(template: dict, role: str) -> list[Any]:
    """The unresolved policy documents attached to `role`: inline ones, and those of
    AWS::IAM::Policy / RolePolicy / ManagedPolicy resources naming it."""
    resources = template["Resources"]
    props = resources[role].get("Properties", {})
    if props.get("ManagedPolicyArns"):
        raise ValueError(f"{role} attaches managed policies, whose grants this check cannot see: {props['ManagedPolicyArns']}")
    docs = [p["PolicyDocument"] for p in props.get("Policies") or []]
    for name, resource in resources.items():
        rprops = resource.get("Properties") or {}
        if resource["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy") and {"Ref": role} in (rprops.get("Roles") or []):
            docs.append({"Fn::If": [resource["Condition"], rprops["PolicyDocument"], {"Ref": "AWS::NoValue"}]} if "Condition" in resource else rprops["PolicyDocument"])
        if resource["Type"] == "AWS::IAM::RolePolicy" and rprops.get("RoleName") == {"Ref": role}:
            docs.append(rprops["PolicyDocument"])
    return docs


def statements(resolver: Resolver, documents: list[Any]) -> list[dict]:
    """The resolved Allow statements of `documents`."""
    out = []
    for doc in documents:
        doc = resolver.resolve(doc)
        if doc is NO_VALUE or not doc:
            continue
        statement = doc["Statement"]
        for s in statement if isinstance(statement, list) else [statement]:
            if s.get("Effect") != "Allow" or "NotAction" in s or "NotResource" in s:
                raise ValueError(f"only Allow statements with Action and Resource are supported here: {s}")
            out.append(s)
    return out


def actions_of(statement: dict) -> list[str]:
    action = statement["Action"]
    actions = action if isinstance(action, list) else [action]
    if not all(isinstance(a, str) for a in actions):
        raise ValueError(f"an Action must be literal: {statement}")
    return actions


def granted(template: dict, role: str, parameters: dict[str, str] | None = None, conditions: dict[str, bool] | None = None) -> set[str]:
    resolver = Resolver(template, parameters, conditions)
    return {a for s in statements(resolver, role_policy_documents(template, role)) for a in actions_of(s)}


def grant_variants(template: dict, role: str, parameters: dict[str, str]) -> list[tuple[dict[str, bool], set[str]]]:
    """The role's granted actions under every combination of the conditions its policies use."""
    names = conditions_used(role_policy_documents(template, role))
    return [(c, granted(template, role, parameters, c)) for c in condition_assignments(names)]


# What Lambda does with a function's role to attach it to a VPC
# (https://docs.aws.amazon.com/lambda/latest/dg/configuration-vpc.html).
LAMBDA_VPC_ACTIONS = {
    "ec2:CreateNetworkInterface",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DeleteNetworkInterface",
    "ec2:AssignPrivateIpAddresses",
    "ec2:UnassignPrivateIpAddresses",
}


def runtime_actions(template: dict, function: str) -> set[str]:
    """What Lambda does with the function's role besides running its code: write its logs,
    and deliver a failed asynchronous event to an SQS (or SNS) on-failure destination or
    dead-letter queue."""
    props = template["Resources"][function]["Properties"]
    actions = set(RUNTIME_LOGS)
    if props.get("VpcConfig"):
        actions |= LAMBDA_VPC_ACTIONS
    targets = []
    on_failure = ((props.get("EventInvokeConfig") or {}).get("DestinationConfig") or {}).get("OnFailure")
    if on_failure:
        targets.append(on_failure.get("Type") or "")
    if props.get("DeadLetterQueue"):
        targets.append(props["DeadLetterQueue"].get("Type") or "")
    for kind in targets:
        if kind == "SQS":
            actions.add("sqs:SendMessage")
        elif kind == "SNS":
            actions.add("sns:Publish")
        else:
            raise ValueError(f"{function}: on-failure destination type {kind!r} is not modelled here")
    return actions
