"""Failure paths through the sandbox: a failed smoke test, a circuit-breaker failure,
duplicate and out-of-order events."""

from __future__ import annotations

import json
import time

from ferry_sandbox import Sandbox

CONFIG = """\
[[environments]]
name = "staging"
rules = [{ glob = "staging-*" }]
targets = [{ region = "eu-west-1", cluster = "shop-staging" }]

[[services]]
repository = "shop/api"
name = "shop-{env}-api"
containers = ["api"]
health = { url = "https://api.{env}.shop.example/healthz", attempts = 2, interval_seconds = 1 }
"""


def pinned(sandbox: Sandbox, digest: str) -> str:
    return sandbox.image("shop/api", digest)


def deployed(sandbox: Sandbox, tag: str) -> str:
    digest = sandbox.push("shop/api", tag)
    sandbox.settle()
    (record,) = sandbox.deployments(digest=digest)
    assert record["state"] == "SUCCEEDED", record
    return digest


def slack_texts(sandbox: Sandbox) -> list[str]:
    return [m["body"]["text"] for m in sandbox.slack]


def test_a_failed_smoke_test_rolls_back_to_the_last_verified_image_and_says_so(world: Sandbox) -> None:
    world.load(CONFIG)
    t = world.target("shop-staging-api")
    good = deployed(world, "staging-00000001")
    bad = world.push("shop/api", "staging-00000002", health="unhealthy")
    world.settle()

    assert world.live_images(t)["api"] == pinned(world, good)
    (failed,) = world.deployments(digest=bad)
    assert failed["state"] == "ROLLED_BACK"
    assert "smoke test" in failed["reason"] and "HTTP 503" in failed["reason"]
    rollback = [r for r in world.deployments() if r.get("rolls_back") == failed["id"]]
    assert [(r["digest"], r["state"], r["origin"]) for r in rollback] == [(good, "SUCCEEDED", "rollback")]
    texts = slack_texts(world)
    assert sum("rolled back" in x for x in texts) == 1, texts
    paged = [json.loads(m["message"]) for m in world.sns_messages() if m["attributes"].get("status") == "ROLLED_BACK"]
    assert len(paged) == 1 and paged[0]["digest"] == bad, paged
    # The bad digest is quarantined: pushed again under another tag, it is not deployed.
    world.client("ecr").put_image(repositoryName="shop/api", imageTag="staging-00000003", imageManifest=json.dumps(
        json.loads(world.client("ecr").batch_get_image(repositoryName="shop/api", imageIds=[{"imageDigest": bad}])
                   ["images"][0]["imageManifest"])))
    world.settle()
    assert world.live_images(t)["api"] == pinned(world, good)
    assert {r["state"] for r in world.deployments(digest=bad, tag="staging-00000003")} == {"SKIPPED"}


def test_a_circuit_breaker_failure_is_rolled_back_once_by_ecs_and_not_again_by_ferry(world: Sandbox) -> None:
    world.load(CONFIG)
    t = world.target("shop-staging-api")
    good = deployed(world, "staging-00000001")
    good_revision = world.service(t)["taskDefinition"]
    crash = world.push("shop/api", "staging-00000002", health="crash")
    world.settle()

    arn = world.service(t)["serviceArn"]
    started = world.ecs_agent.started[arn]
    # Ferry's two deployments, then ECS's own rollback: no fourth deployment from Ferry.
    assert len(started) == 3, started
    assert started[-1] == good_revision
    assert world.live_images(t)["api"] == pinned(world, good)
    (failed,) = world.deployments(digest=crash)
    assert failed["state"] == "ROLLED_BACK", failed
    assert sum("rolled back" in x for x in slack_texts(world)) == 1, slack_texts(world)


def test_duplicate_and_out_of_order_events_deploy_each_image_once_and_never_go_backwards(world: Sandbox) -> None:
    world.load(CONFIG)
    t = world.target("shop-staging-api")
    world.duplicates = 1.0  # every event, ECR's and ECS's and Ferry's own, arrives twice
    world.hold = True
    older = world.push("shop/api", "staging-0000000a")
    time.sleep(1.1)  # ECR event times have a resolution of one second
    newer = world.push("shop/api", "staging-0000000b")
    time.sleep(0.2)  # both push events are held now
    assert world.release(lambda held: list(reversed(held))) == 2  # the newer push arrives first
    world.settle()

    assert world.live_images(t)["api"] == pinned(world, newer)
    (n,) = world.deployments(digest=newer)
    assert n["state"] == "SUCCEEDED"
    assert [r["state"] for r in world.deployments(digest=older)] == ["SKIPPED"]
    arn = world.service(t)["serviceArn"]
    assert len(world.ecs_agent.started[arn]) == 1, "one deployment started, although every event came twice"
    texts = slack_texts(world)
    assert sum("deployed:" in x for x in texts) == 1, texts
    # Every event was in fact delivered twice.
    pushes = [e for name, e in world.bus.delivered if name == "deploy"]
    assert len(pushes) == 4
