"""The pipeline examples (examples/github-actions/) keep their promise.

Run from the repository root: python3 -m pytest tests/infra -q

Each workflow builds and pushes one image tag, with OIDC, and does nothing else (no ECS,
no stored keys, only pinned actions). The tag it pushes comes from the workflow itself: its
`id: tag` step is run with representative values, and the tag and repository it yields must
reach the intended environment and services under that model's ferry-<model>.toml, matched
the way the core's rules module matches (re-implemented below, small). The README shows the same
[[environments]] blocks and the OIDC subjects the role admits.
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "github-actions"
README = EXAMPLES / "README.md"

SHA = "0123abcd" + "4567" * 8  # a full 40-hex commit; its first 8 are 0123abcd
RUN_NUMBER = "42"
REGISTRY = "123456789012.dkr.ecr.eu-west-1.amazonaws.com"
GITHUB_REPO = "acme/shop"  # the repository the README's trust policy names

ECR_PUSH_ACTIONS = {
    "ecr:GetAuthorizationToken", "ecr:BatchCheckLayerAvailability", "ecr:InitiateLayerUpload",
    "ecr:UploadLayerPart", "ecr:CompleteLayerUpload", "ecr:PutImage", "ecr:BatchGetImage",
}


@dataclass(frozen=True)
class Scenario:
    event: str  # GITHUB_EVENT_NAME
    ref: str  # GITHUB_REF
    tag: str | None  # the image tag expected; None: the tag step must refuse the ref
    environment: str | None = None  # where Ferry must send it


#: model -> what each trigger must produce. The tags are also derived from the workflow
#: (its tag step is run); these are the expectations they are checked against.
SCENARIOS = {
    "branch-prefixed": [
        Scenario("push", "refs/heads/main", "staging-0123abcd", "staging"),
        Scenario("push", "refs/heads/production", "prod-0123abcd", "production"),
        Scenario("workflow_dispatch", "refs/heads/main", "prod-0123abcd", "production"),
        Scenario("workflow_dispatch", "refs/heads/feature", None),
    ],
    "release-tags": [
        Scenario("push", "refs/tags/v0.1.0-rc.1", "v0.1.0-rc.1", "staging"),
        Scenario("push", "refs/tags/v1.2.3", "v1.2.3", "production"),
        Scenario("push", "refs/tags/v1.2.3-beta.1", None),
    ],
    "build-numbers": [
        Scenario("push", "refs/heads/main", "v42", "staging"),
        Scenario("push", "refs/heads/feature", None),
    ],
    "moving-tag": [
        Scenario("push", "refs/heads/main", "latest", "staging"),
        Scenario("push", "refs/tags/v1.2.3", "v1.2.3", "production"),
        Scenario("push", "refs/tags/v1.2.3-rc.1", None),
    ],
}
MODELS = sorted(SCENARIOS)


def workflow_path(model: str) -> Path:
    return EXAMPLES / f"{model}.yml"


@functools.cache
def workflow(model: str) -> dict:
    return yaml.safe_load(workflow_path(model).read_text())


@functools.cache
def config(model: str) -> dict:
    return tomllib.loads((EXAMPLES / f"ferry-{model}.toml").read_text())


def triggers(wf: dict) -> dict:
    on = wf.get("on", wf.get(True))  # YAML 1.1 reads a bare `on` key as true
    return {on: {}} if isinstance(on, str) else {e: (f or {}) for e, f in on.items()}


def jobs(model: str) -> dict[str, dict]:
    return workflow(model)["jobs"]


def steps_using(job: dict, action: str) -> list[dict]:
    return [s for s in job["steps"] if s.get("uses", "").split("@")[0] == action]


def run_scripts(model: str) -> list[str]:
    return [s["run"] for job in jobs(model).values() for s in job["steps"] if "run" in s]


# --- Ferry's tag rules, as shared/core/src/rules.rs matches them ----------------------------

SEMVER = re.compile(
    r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*)(?:\.(?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*))*))?"
    r"(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?"
)


def glob_regex(pattern: str) -> str:
    """Ferry's glob (`*` any run, `?` one character) as a regex; also IAM's StringLike."""
    return "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)


def rule_matches(rule: dict, tag: str) -> bool:
    if not 1 <= len(tag) <= 128:
        return False
    if "glob" in rule:
        return re.fullmatch(glob_regex(rule["glob"]), tag, re.DOTALL) is not None
    if "regex" in rule:
        return re.fullmatch(f"(?:{rule['regex']})", tag) is not None
    version = SEMVER.fullmatch(tag.removeprefix("v"))
    if version is None:
        return False
    pre = version.group(4)
    if rule["semver"] == "any":
        return True
    if rule["semver"] == "final":
        return pre is None
    label = rule.get("pre")  # "prerelease"
    return pre is not None and (label is None or re.fullmatch(re.escape(label) + r"\d*", pre.split(".")[0]) is not None)


def environment_for(cfg: dict, tag: str) -> str | None:
    """The first environment, in the order written, with a rule matching the whole tag."""
    return next((e["name"] for e in cfg["environments"] if any(rule_matches(r, tag) for r in e["rules"])), None)


@pytest.mark.parametrize(
    ("rule", "tag", "expected"),
    [
        ({"glob": "staging-*"}, "staging-1a2b3c4d", True),
        ({"glob": "staging-*"}, "xstaging-1", False),
        ({"glob": "latest"}, "latest2", False),
        ({"glob": "v?.*"}, "v10.2", False),
        ({"regex": "prod-[0-9a-f]{8}"}, "prod-1a2b3c4d-hotfix", False),
        ({"regex": "v[0-9]+|build-[0-9]+"}, "v12x", False),
        ({"semver": "final"}, "1.2.3", True),
        ({"semver": "final"}, "v1.2.3-rc.1", False),
        ({"semver": "final"}, "v1.2", False),
        ({"semver": "prerelease", "pre": "rc"}, "v0.1.0-rc1", True),
        ({"semver": "prerelease", "pre": "rc"}, "v0.1.0-beta.1", False),
        ({"semver": "prerelease"}, "v0.1.0-beta.1", True),
        ({"semver": "any"}, "v123", False),
        ({"glob": "*"}, "a" * 129, False),
    ],
)
def test_the_rule_matching_here_agrees_with_rules_rs(rule: dict, tag: str, expected: bool) -> None:
    # A sample of shared/core/src/rules.rs's own cases: this copy must not drift from it.
    assert rule_matches(rule, tag) is expected


# --- each workflow: OIDC, pinned actions, nothing but a push ---------------------------


@pytest.mark.parametrize("model", MODELS)
def test_every_workflow_parses_and_has_its_config(model: str) -> None:
    wf = workflow(model)
    assert wf.get("name") and triggers(wf) and jobs(model), model
    cfg = config(model)
    assert cfg["environments"] and cfg["services"], f"ferry-{model}.toml"


def test_every_workflow_and_config_is_a_model_here() -> None:
    assert {p.stem for p in EXAMPLES.glob("*.yml")} | {p.stem for p in EXAMPLES.glob("*.yaml")} == set(MODELS)
    assert {p.stem.removeprefix("ferry-") for p in EXAMPLES.glob("ferry-*.toml")} == set(MODELS)


@pytest.mark.parametrize("model", MODELS)
def test_jobs_get_an_oidc_token_and_read_the_code_only(model: str) -> None:
    for name, job in jobs(model).items():
        permissions = job.get("permissions", workflow(model).get("permissions"))
        assert permissions == {"id-token": "write", "contents": "read"}, f"{model}: job {name}"


@pytest.mark.parametrize("model", MODELS)
def test_aws_credentials_come_from_role_to_assume_only(model: str) -> None:
    text = workflow_path(model).read_text()
    for name, job in jobs(model).items():
        (login,) = steps_using(job, "aws-actions/configure-aws-credentials")
        inputs = login.get("with", {})
        assert inputs.get("role-to-assume"), f"{model}: job {name}"
        assert not {"aws-access-key-id", "aws-secret-access-key", "aws-session-token"} & set(inputs), f"{model}: job {name}"
    assert not re.search(r"AWS_ACCESS_KEY_ID|AWS_SECRET_ACCESS_KEY|AWS_SESSION_TOKEN|secrets\.", text), model


@pytest.mark.parametrize("model", MODELS)
def test_every_action_is_pinned_to_a_commit(model: str) -> None:
    for job in jobs(model).values():
        for step in job["steps"]:
            if "uses" in step:
                assert re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}", step["uses"]), f"{model}: {step['uses']}"


@pytest.mark.parametrize("model", MODELS)
def test_nothing_but_an_ecr_push_no_ecs(model: str) -> None:
    text = workflow_path(model).read_text().lower()
    for forbidden in ("aws ecs", "amazon-ecs-", "ecs-deploy", "task-definition", "update-service", "ecs-cli", "copilot"):
        assert forbidden not in text, f"{model} mentions {forbidden!r}: Ferry deploys, not the pipeline"
    for name, job in jobs(model).items():
        assert not any("ecs" in s.get("uses", "").lower() for s in job["steps"]), f"{model}: job {name}"
    for script in run_scripts(model):
        for command in re.findall(r"(?:^|[\s;|&(])aws\s+([a-z0-9-]+)", script):
            assert command == "ecr", f"{model}: `aws {command}` in a run step; only `aws ecr` belongs here"


# --- the tag each workflow pushes, and where Ferry sends it ----------------------------


def filter_regex(pattern: str) -> str:
    """A GitHub Actions branch/tag filter pattern as a regex (no `!` patterns here)."""
    assert not pattern.startswith("!"), pattern
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i:end + 1], end + 1
        else:
            out, i = out + (pattern[i] if pattern[i] in "+?" else re.escape(pattern[i])), i + 1
    return out


def triggered(wf: dict, event: str, ref: str) -> bool:
    on = triggers(wf)
    if event not in on:
        return False
    if event != "push":
        return True
    kind, name = ("branches", ref.removeprefix("refs/heads/")) if ref.startswith("refs/heads/") else ("tags", ref.removeprefix("refs/tags/"))
    assert not {"branches-ignore", "tags-ignore"} & set(on["push"]), "not modelled here"
    if not {"branches", "tags"} & set(on["push"]):
        return True
    return any(re.fullmatch(filter_regex(p), name) for p in on["push"].get(kind, []))


def tag_step(job: dict) -> dict:
    (step,) = [s for s in job["steps"] if s.get("id") == "tag"]
    return step


def run_tag_step(model: str, job: dict, scenario: Scenario, tmp_path: Path) -> str | None:
    """Runs the job's `id: tag` step as the runner would (bash -e); the IMAGE_TAG it sets."""
    script = tag_step(job)["run"]
    assert "${{" not in script, f"{model}: the tag step reads GitHub's variables from its environment only"
    github_env = tmp_path / "github_env"
    github_env.write_text("")
    env = {
        "PATH": os.environ["PATH"],
        "GITHUB_ENV": str(github_env),
        "GITHUB_EVENT_NAME": scenario.event,
        "GITHUB_REF": scenario.ref,
        "GITHUB_REF_NAME": scenario.ref.split("/", 2)[2],
        "GITHUB_REF_TYPE": "tag" if scenario.ref.startswith("refs/tags/") else "branch",
        "GITHUB_SHA": SHA,
        "GITHUB_RUN_NUMBER": RUN_NUMBER,
    }
    done = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
                          env=env, capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        return None
    values = dict(line.split("=", 1) for line in github_env.read_text().splitlines() if "=" in line)
    return values.get("IMAGE_TAG")


def pushed_images(model: str, job: dict, image_tag: str) -> list[tuple[str, str]]:
    """(repository, tag) of every image the job's build-push step pushes, matrix expanded."""
    (build,) = steps_using(job, "docker/build-push-action")
    assert build["with"].get("push") is True, model
    refs = [r.strip() for r in re.split(r"[\n,]", str(build["with"]["tags"])) if r.strip()]  # the input's list syntax
    assert len(refs) == 1, f"{model}: one tag per push, so one environment per push"
    env = {**workflow(model).get("env", {}), **job.get("env", {}), "IMAGE_TAG": image_tag}
    matrix = job.get("strategy", {}).get("matrix", {})
    rows = matrix.get("include") or [{}]
    assert set(matrix) <= {"include"}, f"{model}: only `include` matrices are expanded here"
    contexts = {"env": env, "steps.ecr.outputs": {"registry": REGISTRY}}
    images = []
    for row in rows:
        contexts["matrix"] = row

        def value(m: re.Match) -> str:
            scope, _, key = m.group(1).rpartition(".")
            assert scope in contexts and key in contexts[scope], f"{model}: cannot resolve {m.group(0)}"
            return str(contexts[scope][key])

        image = re.sub(r"\$\{\{\s*([\w.-]+)\s*\}\}", value, refs[0])
        registry, _, rest = image.partition("/")
        repository, _, tag = rest.rpartition(":")
        assert registry == REGISTRY, f"{model}: {image} is not pushed to the registry ECR login gave"
        images.append((repository, tag))
    return images


def all_scenarios() -> list[tuple[str, Scenario]]:
    return [(model, s) for model in MODELS for s in SCENARIOS[model]]


def scenario_id(value: str | Scenario) -> str:
    return value if isinstance(value, str) else f"{value.event}:{value.ref}"


@pytest.mark.parametrize(("model", "scenario"), all_scenarios(), ids=scenario_id)
def test_each_trigger_pushes_the_tag_its_environment_takes(model: str, scenario: Scenario, tmp_path: Path) -> None:
    cfg = config(model)
    for name, job in jobs(model).items():
        image_tag = run_tag_step(model, job, scenario, tmp_path)
        assert image_tag == scenario.tag, f"{model}: job {name} on {scenario.event} {scenario.ref}"
        if scenario.tag is None:
            continue  # the job stops before it logs in
        assert triggered(workflow(model), scenario.event, scenario.ref), f"{model} does not run on {scenario.event} {scenario.ref}"
        for repository, tag in pushed_images(model, job, image_tag):
            assert tag == scenario.tag
            assert environment_for(cfg, tag) == scenario.environment, f"{model}: {repository}:{tag}"
            feeds = [s["name"] for s in cfg["services"]
                     if s["repository"] == repository and scenario.environment in s.get("environments", [scenario.environment])]
            assert feeds, f"{model}: no service in ferry-{model}.toml takes {repository} in {scenario.environment}"


@pytest.mark.parametrize("model", MODELS)
def test_the_step_that_names_the_tag_runs_before_the_push(model: str) -> None:
    for name, job in jobs(model).items():
        ids = [s.get("id") or s.get("uses", "").split("@")[0] for s in job["steps"]]
        assert ids.index("tag") < ids.index("docker/build-push-action"), f"{model}: job {name}"


def test_production_takes_nothing_the_build_numbers_workflow_pushes() -> None:
    # Production is reached only by promoting the digest staging proved.
    cfg = config("build-numbers")
    for n in (1, 42, 100000):
        assert environment_for(cfg, f"v{n}") == "staging"
    assert environment_for(cfg, "prod-v42") == "production"


# --- the README says the same ----------------------------------------------------------


def environment_blocks(toml_text: str) -> list[str]:
    """Each [[environments]] table of a config, as written."""
    blocks = re.split(r"(?m)^(?=\[\[)", toml_text)
    return [b.strip() for b in blocks if b.startswith("[[environments]]")]


@pytest.mark.parametrize("model", MODELS)
def test_the_readme_shows_each_configs_environments_verbatim(model: str) -> None:
    readme = README.read_text()
    for block in environment_blocks((EXAMPLES / f"ferry-{model}.toml").read_text()):
        assert block in readme, f"README.md does not show ferry-{model}.toml's:\n{block}"


def readme_json() -> list[dict]:
    return [json.loads(b) for b in re.findall(r"```json\n(.*?)```", README.read_text(), re.DOTALL)]


def oidc_subjects(model: str) -> list[str]:
    (row,) = [line for line in README.read_text().splitlines() if line.startswith(f"| `{model}.yml` |")]
    return re.findall(r"`(repo:[^`]+)`", row)


@pytest.mark.parametrize(("model", "scenario"), [(m, s) for m, s in all_scenarios() if s.tag], ids=scenario_id)
def test_the_roles_trust_policy_admits_each_trigger(model: str, scenario: Scenario) -> None:
    subject = f"repo:{GITHUB_REPO}:ref:{scenario.ref}"
    patterns = oidc_subjects(model)
    assert patterns and all(p.startswith(f"repo:{GITHUB_REPO}:") for p in patterns), model
    assert any(re.fullmatch(glob_regex(p), subject) for p in patterns), f"{model}: {subject} vs {patterns}"
    assert not any(re.fullmatch(glob_regex(p), f"repo:{GITHUB_REPO}:pull_request") for p in patterns), model


def test_the_readmes_policies_trust_github_oidc_and_grant_only_ecr_push() -> None:
    documents = readme_json()
    (trust,) = [d for d in documents if "sts:AssumeRoleWithWebIdentity" in json.dumps(d)]
    (statement,) = trust["Statement"]
    assert statement["Principal"]["Federated"].endswith(":oidc-provider/token.actions.githubusercontent.com")
    assert statement["Condition"]["StringEquals"] == {"token.actions.githubusercontent.com:aud": "sts.amazonaws.com"}
    assert statement["Condition"]["StringLike"]["token.actions.githubusercontent.com:sub"] == oidc_subjects("branch-prefixed")

    (policy,) = [d for d in documents if "ecr:PutImage" in json.dumps(d)]
    granted: set[str] = set()
    for s in policy["Statement"]:
        actions = set(s["Action"] if isinstance(s["Action"], list) else [s["Action"]])
        resources = s["Resource"] if isinstance(s["Resource"], list) else [s["Resource"]]
        assert s["Effect"] == "Allow" and not {"NotAction", "NotResource"} & set(s), s
        if actions == {"ecr:GetAuthorizationToken"}:
            assert resources == ["*"]
        else:
            assert "ecr:GetAuthorizationToken" not in actions
            assert all(re.fullmatch(r"arn:aws:ecr:[a-z0-9-]+:\d{12}:repository/[a-z0-9._/-]+", r) for r in resources), resources
        granted |= actions
    assert granted == ECR_PUSH_ACTIONS
