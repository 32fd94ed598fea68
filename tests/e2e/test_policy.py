"""Release policy through the sandbox, with the release binaries: an environment ordered by
version skips an older release pushed later; a push during a freeze is held, ECS untouched,
and deployed by the scheduled reconciliation once the freeze is over."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

from ferry_sandbox import Sandbox
from test_failures import pinned, slack_texts

CONFIG = """\
[[environments]]
name = "production"
order = "semver"
rules = [{{ semver = ">=1, <2" }}]
targets = [{{ region = "eu-west-1", cluster = "shop-production" }}]
freeze = [{freeze}]

[[services]]
repository = "shop/api"
name = "shop-{{env}}-api"
containers = ["api"]
health = {{ url = "https://api.{{env}}.shop.example/healthz", attempts = 2, interval_seconds = 1 }}
"""


def window(start: datetime, end: datetime) -> str:
    at = "%Y-%m-%dT%H:%M:%S"
    return f'{{ from = "{start.strftime(at)}", to = "{end.strftime(at)}", reason = "year-end freeze" }}'


def test_by_version_a_hotfix_of_an_older_line_pushed_later_is_skipped_and_said(world: Sandbox) -> None:
    world.load(CONFIG.format(freeze=""))
    t = world.target("shop-production-api")
    minor = world.push("shop/api", "v1.3.0")
    world.settle()
    time.sleep(1.1)  # ECR keeps push times to the second: the hotfix is the later push
    hotfix = world.push("shop/api", "v1.2.4")
    world.settle()

    assert world.live_images(t)["api"] == pinned(world, minor)
    (skipped,) = world.deployments(digest=hotfix)
    assert skipped["state"] == "SKIPPED" and "version v1.3.0 was already accepted" in skipped["reason"], skipped
    said = [x for x in slack_texts(world) if "v1.2.4" in x]
    assert len(said) == 1 and "push skipped" in said[0], said
    assert [r["state"] for r in world.deployments(digest=minor)] == ["SUCCEEDED"]


def test_a_push_during_a_freeze_is_held_and_deployed_when_the_freeze_is_over(world: Sandbox) -> None:
    now = datetime.now(timezone.utc).replace(microsecond=0)
    end = now + timedelta(seconds=12)
    world.load(CONFIG.format(freeze=window(now - timedelta(minutes=1), end)))
    t = world.target("shop-production-api")
    before = world.live_images(t)["api"]
    arn = world.service(t)["serviceArn"]
    updates = len(world.ecs_agent.started[arn])

    first = world.push("shop/api", "v1.3.0")
    world.settle()
    time.sleep(1.1)
    newest = world.push("shop/api", "v1.3.1")
    world.settle()
    assert world.live_images(t)["api"] == before, "nothing deployed during the freeze"
    assert len(world.ecs_agent.started[arn]) == updates, "ECS untouched"
    (held,) = world.deployments(digest=newest)
    assert held["state"] == "HELD" and "year-end freeze" in held["reason"], held
    assert [r["state"] for r in world.deployments(digest=first)] == ["SUPERSEDED"]
    assert sum("push held" in x for x in slack_texts(world)) == 2, slack_texts(world)

    # The schedule fires during the freeze: still held.
    world.tick()
    world.settle()
    assert len(world.ecs_agent.started[arn]) == updates
    check = world.ferry("check").stdout
    assert "FROZEN now until" in check and "year-end freeze" in check, check

    # After it: the newest held push is deployed and verified, the superseded one never.
    time.sleep(max(0.0, (end - datetime.now(timezone.utc)).total_seconds()) + 0.5)
    world.tick()
    world.settle()
    assert world.live_images(t)["api"] == pinned(world, newest)
    assert [r["state"] for r in world.deployments(digest=newest)] == ["SUCCEEDED"]
    assert [r["state"] for r in world.deployments(digest=first)] == ["SUPERSEDED"]
    assert len(world.ecs_agent.started[arn]) == updates + 1


def test_an_operator_deploys_through_a_freeze_and_the_record_says_who_and_why(world: Sandbox) -> None:
    now = datetime.now(timezone.utc).replace(microsecond=0)
    world.load(CONFIG.format(freeze=window(now - timedelta(minutes=1), now + timedelta(hours=1))))
    t = world.target("shop-production-api")
    digest = world.push("shop/api", "v1.4.0")
    world.settle()
    assert [r["state"] for r in world.deployments(digest=digest)] == ["HELD"]

    refused = world.ferry("deploy", "shop/api:v1.4.0", "--override-freeze", check=False)
    assert refused.returncode == 2 and "--reason" in refused.stderr, refused.stderr
    world.ferry("deploy", "shop/api:v1.4.0", "--override-freeze", "--reason", "fix for INC-231")
    world.settle()
    assert world.live_images(t)["api"] == pinned(world, digest)
    # The held push itself is deployed (one record), naming the operator's AWS principal and why.
    (record,) = world.deployments(digest=digest)
    assert (record["state"], record["event_id"].startswith("ferry-replay-")) == ("SUCCEEDED", False), record
    assert record["freeze_override"].startswith("arn:aws:") and record["freeze_override"].endswith(
        "(ferry CLI): fix for INC-231"), record


APPROVAL = 'approval = {{ approvers = ["U0LEAD0001", "U0LEAD0002"], required = 1 }}\n'


def test_a_production_push_waits_for_a_signed_approval_from_a_listed_approver(world: Sandbox) -> None:
    world.load(CONFIG.format(freeze="").replace('order = "semver"\n', APPROVAL.format()))
    t = world.target("shop-production-api")
    before = world.live_images(t)["api"]
    arn = world.service(t)["serviceArn"]
    digest = world.push("shop/api", "v1.3.0")
    world.settle()
    (waiting,) = world.deployments(digest=digest)
    assert waiting["state"] == "AWAITING_APPROVAL", waiting
    assert world.live_images(t)["api"] == before and not world.ecs_agent.started[arn], "ECS untouched"
    (asked,) = [m["body"] for m in world.slack if "awaiting approval" in m["body"]["text"]]
    buttons = [e for b in asked["blocks"] if b["type"] == "actions" for e in b["elements"]]
    assert [b["action_id"] for b in buttons] == ["ferry_approve", "ferry_reject"], asked

    # Nothing but a click Slack signed, by a listed approver, counts.
    assert world.click(waiting, "U0LEAD0001", signed=False)[0] == 401
    assert world.click(waiting, "U0LEAD0001", secret="guessed")[0] == 401
    assert world.click(waiting, "U0LEAD0001", age=400)[0] == 401
    assert world.click(waiting, "U0INTERN01")[0] == 403
    world.settle()
    assert [r["state"] for r in world.deployments(digest=digest)] == ["AWAITING_APPROVAL"]
    assert not world.ecs_agent.started[arn]

    status, said = world.click(waiting, "U0LEAD0002")
    assert (status, said.startswith("Approved")) == (200, True), said  # as the reply to the click says it
    assert "already decided" in world.click(waiting, "U0LEAD0001")[1], "one approval was enough"
    world.settle()
    assert world.live_images(t)["api"] == pinned(world, digest)
    (record,) = world.deployments(digest=digest)
    assert (record["state"], record["approval"]) == ("SUCCEEDED", "approved by U0LEAD0002"), record
    assert len(world.ecs_agent.started[arn]) == 1, "deployed once"


def test_a_rejected_push_never_deploys_and_the_rejection_is_said(world: Sandbox) -> None:
    world.load(CONFIG.format(freeze="").replace('order = "semver"\n', APPROVAL.format()))
    t = world.target("shop-production-api")
    before = world.live_images(t)["api"]
    digest = world.push("shop/api", "v1.3.0")
    world.settle()
    (waiting,) = world.deployments(digest=digest)
    status, said = world.click(waiting, "U0LEAD0001", "reject")
    assert (status, said.startswith("Rejected")) == (200, True), said
    assert world.click(waiting, "U0LEAD0002")[1].endswith("already decided (REJECTED).")
    world.settle()
    assert world.live_images(t)["api"] == before
    (record,) = world.deployments(digest=digest)
    assert (record["state"], record["reason"]) == ("REJECTED", "rejected by U0LEAD0001"), record
    assert sum("push rejected" in x for x in slack_texts(world)) == 1, slack_texts(world)
