"""Faults, races and secrets, through the sandbox (the release binaries, the template's rules)."""

from __future__ import annotations

import random
import time
from datetime import datetime, timedelta, timezone

import ferry_moto
import pytest
from ferry_sandbox import Sandbox
from test_failures import CONFIG, deployed, pinned, slack_texts


def story(world: Sandbox) -> tuple[str, str]:
    """A good push, proven; a bad push, rolled back. Returns their digests."""
    good = world.push("shop/api", "staging-00000001")
    world.settle()
    bad = world.push("shop/api", "staging-00000002", health="unhealthy")
    world.settle()
    return good, bad


def every_update_is_on_record(world: Sandbox) -> None:
    """Never a service updated without a ledger record saying so."""
    t = world.target("shop-staging-api")
    updated = world.ecs_agent.started[world.service(t)["serviceArn"]]
    recorded = {r.get("task_definition") for r in world.deployments() if r["state"] not in ("SKIPPED", "PENDING")}
    assert set(updated) <= recorded, (updated, recorded)


#: A transient fault on each kind of call of each function, one more time than the SDK's own
#: three attempts: the invocation fails and EventBridge's redelivery must finish the job.
FAULTS = [
    ("deploy", "dynamodb:TransactWriteItems", "throttle"),
    ("deploy", "ecs:DescribeServices", "error"),
    ("deploy", "ecs:DescribeTaskDefinition", "throttle"),
    ("deploy", "ecs:RegisterTaskDefinition", "error"),
    ("deploy", "ecs:UpdateService", "throttle"),
    ("verify", "dynamodb:Query", "error"),
    ("verify", "ecs:DescribeServices", "throttle"),
    ("verify", "dynamodb:UpdateItem", "error"),
    ("verify", "events:PutEvents", "throttle"),
    ("rollback", "dynamodb:Query", "throttle"),
    ("rollback", "ecs:DescribeServices", "error"),
]


@pytest.mark.parametrize(("function", "action", "kind"), FAULTS, ids=lambda v: str(v))
def test_a_transient_fault_on_any_call_ends_as_if_it_never_happened(world: Sandbox, function, action, kind) -> None:
    world.load(CONFIG)
    t = world.target("shop-staging-api")
    world.inject(action, kind, times=4, function=function)
    good, bad = story(world)

    assert [f["action"] for f in world.injected()] == [action] * 4, "the fault was injected"
    assert any(not r["ok"] for r in world.results(function)), "the invocation failed and was redelivered"
    assert world.live_images(t)["api"] == pinned(world, good)
    assert [r["state"] for r in world.deployments(digest=good) if r["origin"] == "ferry"] == ["SUCCEEDED"]
    assert [r["state"] for r in world.deployments(digest=bad)] == ["ROLLED_BACK"]
    assert sum("rolled back" in x for x in slack_texts(world)) == 1, slack_texts(world)
    assert sum("deployed:" in x for x in slack_texts(world)) == 1, slack_texts(world)
    every_update_is_on_record(world)


def test_a_rollback_whose_update_keeps_failing_ends_rollback_failed_and_pages(world: Sandbox) -> None:
    world.load(CONFIG)
    t = world.target("shop-staging-api")
    world.inject("ecs:UpdateService", "error", times=3, function="rollback")  # all of the SDK's attempts
    good, bad = story(world)

    assert [f["action"] for f in world.injected()] == ["ecs:UpdateService"] * 3
    (failed,) = world.deployments(digest=bad)
    assert failed["state"] == "ROLLBACK_FAILED", failed
    assert "UpdateService" in failed["reason"], failed
    pages = [m for m in world.sns_messages() if m["attributes"].get("status") == "ROLLBACK_FAILED"]
    assert [m["attributes"].get("severity") for m in pages] == ["critical"], pages
    assert world.live_images(t)["api"] == pinned(world, bad), "the record says what is live: the bad image"
    every_update_is_on_record(world)


def test_notifications_that_keep_failing_are_recorded_and_never_repeat_a_deployment(world: Sandbox) -> None:
    world.load(CONFIG)
    t = world.target("shop-staging-api")
    world.inject("sns:Publish", "error", times=1000)
    good = deployed(world, "staging-00000001")
    assert world.injected(), "SNS was failing"
    assert world.live_images(t)["api"] == pinned(world, good)
    (record,) = world.deployments(digest=good)
    assert "sns" in record.get("notify_error", "").lower(), record
    assert len(world.ecs_agent.started[world.service(t)["serviceArn"]]) == 1
    assert all(r["ok"] for f in ("deploy", "verify") for r in world.results(f)), "a notification failure fails nothing"


def test_concurrent_pushes_to_one_target_never_interleave_and_the_newest_ends_live(world: Sandbox) -> None:
    world.load(CONFIG, concurrency=8)
    t = world.target("shop-staging-api")
    world.hold = True
    digests = [world.push("shop/api", f"staging-{i:08x}") for i in range(50)]
    while len(world.held) < len(digests):
        time.sleep(0.02)
    # The pushes happened a second apart; their events arrive all at once, in any order.
    first = datetime.now(timezone.utc)
    for event, _ in world.held:
        pushed = digests.index(event["detail"]["image-digest"])
        event["time"] = (first + timedelta(seconds=pushed)).strftime("%Y-%m-%dT%H:%M:%SZ")
    ferry_moto.REQUEST_LOG.clear()
    ferry_moto.LOG_REQUESTS.set()
    try:
        world.release(lambda held: random.sample(held, len(held)))
        world.settle(timeout=180)
    finally:
        ferry_moto.LOG_REQUESTS.clear()

    writes = [r["action"] for r in sorted(ferry_moto.REQUEST_LOG, key=lambda r: r["start"])
              if r["action"] in ("ecs:RegisterTaskDefinition", "ecs:UpdateService") and r["region"] == t.region]
    started = [r for r in world.deployments() if r["state"] not in ("SKIPPED",)]
    assert writes == ["ecs:RegisterTaskDefinition", "ecs:UpdateService"] * len(started), writes
    assert world.live_images(t)["api"] == pinned(world, digests[-1])
    records = world.deployments()
    assert len(records) == len(digests) and len({r["digest"] for r in records}) == len(digests), "one record per push"
    newest = [r for r in records if r["digest"] == digests[-1]]
    assert [r["state"] for r in newest] == ["SUCCEEDED"]
    for r in records:
        if r["digest"] != digests[-1]:
            # Taken over by a newer push, refused as older than one taken, or (when its
            # rollout finished before the next push started) proven and then replaced.
            assert r["state"] in ("SUPERSEDED", "SKIPPED", "SUCCEEDED"), (digests.index(r["digest"]), r["state"], r.get("reason"))
            assert r["state"] == "SUCCEEDED" or r.get("reason"), r
    # Never backwards: the services were updated to pushes in the order they were pushed.
    order = {r["task_definition"]: digests.index(r["digest"]) for r in records if r.get("task_definition")}
    updated = [order[td] for td in world.ecs_agent.started[world.service(t)["serviceArn"]]]
    assert updated == sorted(set(updated)), updated
    every_update_is_on_record(world)


def test_no_log_and_no_record_ever_shows_the_slack_webhook(world: Sandbox) -> None:
    world.load(CONFIG)
    world.inject("ecs:UpdateService", "error", times=4, function="deploy")  # error paths log too
    story(world)
    history = world.ferry("history", "--output", "json").stdout
    logs = {name: f.log_path.read_text() for name, f in world.functions.items()}
    assert "Deployment Failed" in logs["verify"] or "FAILED" in logs["verify"].upper(), "the logs are not empty"
    assert world.slack, "the webhooks were used"
    everything = {**logs, "history": history, "ledger": repr(world.deployments()), "sns": repr(world.sns_messages())}
    for where, text in everything.items():
        assert world.webhook_token not in text, f"the webhook's token is in {where}"
        for url in world.webhooks.values():
            assert url not in text, f"a webhook URL is in {where}"
