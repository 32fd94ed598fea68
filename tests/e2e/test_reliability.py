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
    ("rollback", "dynamodb:TransactWriteItems", "throttle"),  # the claim (FAILED -> ROLLING_BACK)
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


#: Timeouts and dropped connections: the request never reaches AWS, or (processed) it does
#: and only its answer is lost. Four times in a row (one more than the SDK's three attempts,
#: or Ferry's own three tries of an UpdateService that did not happen), so the invocation
#: fails and EventBridge's redelivery finishes the job; once for a lost UpdateService answer,
#: which the deploy function finds out from the service itself.
CONNECTION_FAULTS = [
    ("deploy", "dynamodb:TransactWriteItems", "timeout", False, 4),
    ("deploy", "dynamodb:TransactWriteItems", "drop", True, 4),  # the lock is taken; the answer is lost
    ("deploy", "ecs:DescribeServices", "drop", False, 4),
    ("deploy", "ecs:RegisterTaskDefinition", "drop", True, 4),  # a revision is registered; the answer is lost
    ("deploy", "ecs:UpdateService", "drop", False, 4),
    ("deploy", "ecs:UpdateService", "timeout", True, 1),  # the service is updated; the answer is lost
    ("verify", "dynamodb:Query", "drop", False, 4),
    ("verify", "ecs:DescribeServices", "timeout", False, 4),
    ("verify", "dynamodb:UpdateItem", "drop", True, 4),  # the verification is claimed; the answer is lost
    ("rollback", "dynamodb:Query", "timeout", False, 4),
    ("rollback", "ecs:DescribeServices", "drop", False, 4),
    ("rollback", "ecs:UpdateService", "timeout", True, 1),  # the service is rolled back; the answer is lost
    # After the claim: the rollback's record cannot be written; the claim is given back and
    # the redelivered trigger takes the rollback over at once.
    ("rollback", "dynamodb:UpdateItem", "drop", False, 3),
]


@pytest.mark.parametrize(("function", "action", "kind", "processed", "times"), CONNECTION_FAULTS, ids=lambda v: str(v))
def test_a_timeout_or_dropped_connection_on_any_call_ends_as_if_it_never_happened(
        world: Sandbox, function, action, kind, processed, times) -> None:
    world.load(CONFIG)
    t = world.target("shop-staging-api")
    world.inject(action, kind, times=times, function=function, processed=processed)
    good, bad = story(world)

    assert [f["action"] for f in world.injected()] == [action] * times, "the fault was injected"
    if times > 3:
        assert any(not r["ok"] for r in world.results(function)), "the invocation failed and was redelivered"
    assert world.live_images(t)["api"] == pinned(world, good)
    assert [r["state"] for r in world.deployments(digest=good) if r["origin"] == "ferry"] == ["SUCCEEDED"]
    assert [r["state"] for r in world.deployments(digest=bad)] == ["ROLLED_BACK"]
    assert not [m for m in world.sns_messages() if m["attributes"].get("status") == "ROLLBACK_FAILED"], "no page"
    assert sum("rolled back" in x for x in slack_texts(world)) == 1, slack_texts(world)
    assert sum("deployed:" in x for x in slack_texts(world)) == 1, slack_texts(world)
    every_update_is_on_record(world)


def test_a_write_repeated_after_its_answer_was_lost_counts_as_done(world: Sandbox) -> None:
    """The write that records the bad push ROLLED_BACK (verify's, when the rollback's rollout
    completes) takes effect and its answer is lost (the connection dropped); the SDK repeats
    it, and the repeat fails its condition against the write itself. It is done all the same:
    the team is told once."""
    world.load(CONFIG)
    t = world.target("shop-staging-api")
    world.inject("dynamodb:UpdateItem", "drop", times=1, function="verify", processed=True, match='"S":"ROLLED_BACK"')
    good, bad = story(world)

    assert [f["action"] for f in world.injected()] == ["dynamodb:UpdateItem"], "the fault was injected"
    assert world.live_images(t)["api"] == pinned(world, good)
    assert [r["state"] for r in world.deployments(digest=bad)] == ["ROLLED_BACK"]
    texts = slack_texts(world)
    for said in ("deployed:", "deployment failed:", "rolled back:"):
        assert sum(said in x for x in texts) == 1, (said, texts)
    every_update_is_on_record(world)


@pytest.mark.parametrize("killed_at", ["ecs:RegisterTaskDefinition", "ecs:UpdateService"])
def test_a_deploy_killed_by_its_timeout_is_completed_by_the_redelivered_event(world: Sandbox, killed_at: str) -> None:
    """Lambda stops an invocation at its timeout, wherever it is. Here the deploy function
    hangs on a request (its answer never comes) until its timeout, once: before the service
    was updated (its new revision registered), or after (the update went through)."""
    world.load(CONFIG, timeouts={"deploy": 12})
    t = world.target("shop-staging-api")
    world.inject(killed_at, "timeout", times=1, function="deploy", processed=True, seconds=60)
    # Each request's own limit is longer than the invocation's: the invocation dies first.
    world.stop_functions()
    world.start_functions(timeouts={"deploy": 12}, env={"FERRY_AWS_TIMEOUT_SECONDS": "30"})
    good = world.push("shop/api", "staging-00000001")
    world.settle(timeout=90)

    assert world.functions["deploy"].timed_out == 1, "the first invocation was killed at its timeout"
    assert world.live_images(t)["api"] == pinned(world, good)
    (record,) = world.deployments(digest=good)
    assert (record["origin"], record["state"]) == ("ferry", "SUCCEEDED"), record
    assert len(world.ecs_agent.started[world.service(t)["serviceArn"]]) == 1, "one rollout"
    assert sum("deployed:" in x for x in slack_texts(world)) == 1, slack_texts(world)
    every_update_is_on_record(world)


@pytest.mark.parametrize("processed", [False, True], ids=["before-the-update", "after-the-update"])
def test_a_rollback_killed_by_its_timeout_is_completed_by_the_redelivered_trigger(world: Sandbox, processed) -> None:
    """The rollback function hangs on its UpdateService until its timeout, once: before the
    service was pointed back at the good revision, or after. The stopped invocation's claim
    lapses 5 s after its deadline; its redelivered trigger waits for that, takes the rollback
    over, and finishes it (or finds the update made and recorded)."""
    world.load(CONFIG, timeouts={"rollback": 12})
    t = world.target("shop-staging-api")
    world.inject("ecs:UpdateService", "timeout", times=1, function="rollback", processed=processed, seconds=60)
    world.stop_functions()
    world.start_functions(timeouts={"rollback": 12}, env={"FERRY_AWS_TIMEOUT_SECONDS": "30"})
    good, bad = story(world)
    world.settle(timeout=90)

    assert world.functions["rollback"].timed_out == 1, "the first invocation was killed at its timeout"
    assert world.live_images(t)["api"] == pinned(world, good), "the good image is back"
    assert [r["state"] for r in world.deployments(digest=bad)] == ["ROLLED_BACK"]
    (rollback,) = [r for r in world.deployments() if r["origin"] == "rollback"]
    assert rollback["state"] == "SUCCEEDED", rollback
    started = world.ecs_agent.started[world.service(t)["serviceArn"]]
    assert len(started) == 3, f"the good push, the bad one, one rollback: {started}"
    assert not [m for m in world.sns_messages() if m["attributes"].get("status") == "ROLLBACK_FAILED"], "no page"
    assert sum("rolled back" in x for x in slack_texts(world)) == 1, slack_texts(world)
    assert not world.functions["rollback"].dead_letters
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
    # Every DynamoDB write also meets a concurrent transaction one time in ten: absorbed.
    world.set_conflicts(rate=0.1)
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
    assert world.conflicts_met()["transactions"] > 0 and not world.dead_letters(), "contention absorbed"


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
