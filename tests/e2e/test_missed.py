"""Missed and unwelcome events through the sandbox: a push whose ECR event never came is
found by the scheduled reconciliation; events from accounts Ferry does not know change nothing."""

from __future__ import annotations

import json
import time

from ferry_sandbox import HOME_ACCOUNT, Sandbox
from test_failures import CONFIG, deployed, pinned, slack_texts


def test_a_push_whose_event_never_came_is_deployed_by_the_scheduled_reconciliation(world: Sandbox) -> None:
    world.load(CONFIG)
    t = world.target("shop-staging-api")
    first = deployed(world, "staging-00000001")
    time.sleep(1.1)  # ECR keeps push times to the second
    lost = world.push("shop/api", "staging-00000002", announced=False)
    world.settle()
    assert world.live_images(t)["api"] == pinned(world, first), "nothing happened: the event was lost"
    assert not world.deployments(digest=lost)

    # The operator's dry run sees it, and changes nothing.
    dry = json.loads(world.ferry("reconcile", "--dry-run", "--output", "json").stdout)
    assert [(r["tag"], r["digest"], r["finding"], r["detail"]) for r in dry] == [
        ("staging-00000002", lost, "missed", "would deploy it")]
    assert not world.deployments(digest=lost)

    # The schedule fires (infra/template.yaml's ReconcileSchedule): deployed, verified, told.
    assert sorted(world.tick()) == ["deploy", "verify"], "the reconciliation and the sweep"
    world.settle()
    assert world.live_images(t)["api"] == pinned(world, lost)
    (record,) = world.deployments(digest=lost)
    assert (record["state"], record["origin"]) == ("SUCCEEDED", "ferry"), record
    assert record["event_id"].startswith("ferry-replay-"), record
    assert sum("deployed: shop/api:staging-00000002" in x for x in slack_texts(world)) == 1, slack_texts(world)

    # Later runs find nothing more to do.
    updates = len(world.ecs_agent.started[world.service(t)["serviceArn"]])
    world.tick()
    world.settle()
    assert len(world.ecs_agent.started[world.service(t)["serviceArn"]]) == updates
    assert len(world.deployments()) == 2
    (result,) = [r for r in world.results("deploy") if r["event"].get("source") == "aws.events"][-1:]
    assert result["ok"] and "Reconciled" in str(result["body"]), result


def test_events_from_an_account_ferry_does_not_know_change_nothing(world: Sandbox) -> None:
    world.load(CONFIG)
    t = world.target("shop-staging-api")
    good = deployed(world, "staging-00000001")
    (record,) = world.deployments(digest=good)
    messages = len(world.sns_messages())
    # Another account's events reach Ferry's bus (a forwarding rule, a permissive bus policy):
    # an alarm and an ECS failure naming the same service, a "Rollback Requested", a push.
    stranger = "999999999999"
    arn = world.service(t)["serviceArn"].replace(HOME_ACCOUNT, stranger)
    events = [
        {"source": "aws.cloudwatch", "detail-type": "CloudWatch Alarm State Change",
         "detail": {"alarmName": "shop-staging-api-5xx", "state": {"value": "ALARM", "reason": "spoofed"}}},
        {"source": "aws.ecs", "detail-type": "ECS Deployment State Change", "resources": [arn],
         "detail": {"eventName": "SERVICE_DEPLOYMENT_FAILED", "deploymentId": record["ecs_deployment_id"],
                    "reason": "spoofed"}},
        {"source": "ferry", "detail-type": "Rollback Requested",
         "detail": {"environment": "staging", "service": "shop-staging-api", "requested_by": "mallory"}},
        {"source": "aws.ecr", "detail-type": "ECR Image Action",
         "detail": {"result": "SUCCESS", "action-type": "PUSH", "repository-name": "shop/api",
                    "image-tag": "staging-00000002", "image-digest": "sha256:" + "e" * 64}},
    ]
    for e in events:
        world.put_event({"version": "0", "id": f"stranger-{e['detail-type']}", "account": stranger,
                         "time": "2026-12-02T00:00:00Z", "region": world.region, "resources": [], **e})
    world.settle()

    assert world.live_images(t)["api"] == pinned(world, good)
    assert [(r["digest"], r["state"]) for r in world.deployments()] == [(good, "SUCCEEDED")]
    outcomes = [str(r["body"]) for f in ("deploy", "verify", "rollback") for r in world.results(f)
                if r["event"]["id"].startswith("stranger-")]
    assert len(outcomes) == 5 and all("Rejected" in o for o in outcomes), outcomes
    logs = "".join(world.functions[f].log_path.read_text() for f in ("deploy", "verify", "rollback"))
    assert logs.count("event rejected") >= 5 and stranger in logs
    assert len(world.sns_messages()) == messages, "no message"


def test_the_weekly_digest_fires_only_when_the_stack_turns_it_on_and_reaches_slack(world: Sandbox) -> None:
    world.load(CONFIG)
    deployed(world, "staging-00000001")
    posted = len(world.slack)
    assert sorted(world.tick()) == ["deploy", "verify"], "off by default: reconciliation and sweep only"
    assert not [m for m in world.slack[posted:] if "weekly delivery" in m["body"].get("text", "")]

    # WeeklyDigest=true: the rule's constant input reaches the verify binary, which posts the digest.
    world.bus.parameters["WeeklyDigest"] = "true"
    try:
        assert sorted(world.tick()) == ["deploy", "verify", "verify"]
        world.settle()
    finally:
        del world.bus.parameters["WeeklyDigest"]  # the sandbox outlives the test
    (digest,) = [m for m in world.slack[posted:] if "weekly delivery" in m["body"].get("text", "")]
    blocks = digest["body"]["blocks"]
    assert blocks[0]["text"]["text"] == "📊 Ferry weekly delivery"
    assert blocks[2]["text"]["text"] == "*staging*", "the configured environment"
