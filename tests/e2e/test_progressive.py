"""Progressive delivery through the sandbox: ECS's blue/green and canary deployments with Ferry's
verify function as the services' lifecycle hook. A broken image never takes production traffic
(blue/green), or at most the canary's share of it (canary)."""

from __future__ import annotations

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
alarms = ["shop-{env}-api-5xx"]
health = { url = "https://api.{env}.shop.example/healthz", test_url = "https://test.api.{env}.shop.example/healthz", attempts = 3, interval_seconds = 2 }
"""


def revision_of(world: Sandbox, t, digest: str) -> str:
    """The service revision that rolled `digest` out."""
    import ferry_moto

    service = world.client("ecs", t.region, t.account)
    for arn, revision in ferry_moto.SERVICE_REVISIONS.items():
        images = service.describe_task_definition(taskDefinition=revision["taskDefinition"])["taskDefinition"]
        if any(c["image"].endswith(digest) for c in images["containerDefinitions"]) and f"/{t.service}/" in arn:
            return arn
    raise LookupError(digest)


def test_blue_green_lets_a_good_image_through_and_keeps_a_bad_one_from_all_production_traffic(world: Sandbox) -> None:
    world.load(CONFIG)
    t = world.target("shop-staging-api")
    world.blue_green(t, stages=("PRE_SCALE_UP", "POST_TEST_TRAFFIC_SHIFT"))

    good = world.push("shop/api", "staging-00000001")
    world.settle()
    (record,) = world.deployments(digest=good)
    assert record["state"] == "SUCCEEDED", record
    assert world.live_images(t)["api"] == world.image("shop/api", good)
    hooks = {k.removeprefix("hook_"): v["status"]["S"] for k, v in record.items() if k.startswith("hook_")}
    assert hooks == {"PRE_SCALE_UP": "SUCCEEDED", "POST_TEST_TRAFFIC_SHIFT": "SUCCEEDED"}, record
    peak, _ = world.traffic.exposure(world.service(t)["serviceArn"], revision_of(world, t, good))
    assert peak == 100, "green took all production traffic once its test route passed"

    slack_before = len(world.slack)
    bad = world.push("shop/api", "staging-00000002", health="unhealthy")
    world.settle()
    (failed,) = world.deployments(digest=bad)
    assert failed["state"] == "ROLLED_BACK", failed
    assert "POST_TEST_TRAFFIC_SHIFT" in failed["reason"] and "HTTP 503" in failed["reason"], failed
    assert bad in world.quarantined()
    assert world.live_images(t)["api"] == world.image("shop/api", good), "blue serves on"
    peak, exposure = world.traffic.exposure(world.service(t)["serviceArn"], revision_of(world, t, bad))
    assert (peak, exposure) == (0, 0), "the bad revision never took production traffic"
    told = [m["body"]["text"] for m in world.slack[slack_before:]]
    assert sum("rolled back" in x for x in told) == 1, told
    answers = [r["body"] for r in world.results("verify") if "lifecycleStage" in r["event"]]
    assert {"hookStatus": "IN_PROGRESS", "callBackDelay": 2} in answers and {"hookStatus": "FAILED"} in answers


def test_a_bad_canary_is_rolled_back_after_at_most_its_share_of_production_traffic(world: Sandbox) -> None:
    world.load(CONFIG)
    t = world.target("shop-staging-api")
    world.blue_green(t, "CANARY", canary=(10, 5), bake_minutes=1)
    good = world.push("shop/api", "staging-00000001")
    world.settle()
    assert world.deployments(digest=good)[0]["state"] == "SUCCEEDED"

    # Healthy on its test route, failing real users: its alarm goes off once the canary serves.
    bad = world.push("shop/api", "staging-00000002", health="alarming")
    world.settle()
    (failed,) = world.deployments(digest=bad)
    assert failed["state"] == "ROLLED_BACK", failed
    assert failed["reason"].startswith("alarm shop-staging-api-5xx"), failed
    assert bad in world.quarantined()
    assert world.live_images(t)["api"] == world.image("shop/api", good)
    peak, _ = world.traffic.exposure(world.service(t)["serviceArn"], revision_of(world, t, bad))
    assert 0 < peak <= 10, f"the canary's share at most, got {peak}%"
    stopped = [r for r in world.results("rollback") if "EcsRollingBack" in str(r["body"])]
    assert stopped, "Ferry stopped the rollout; ECS moved traffic back"
