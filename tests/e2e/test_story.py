"""The demo's story on an ECS that behaves as AWS documents, not as a kind emulator would:
Service Auto Scaling moves desired and running counts around every rollout, tasks are
replaced, DescribeServices lags ECS's own COMPLETED events, and the service's alarm fires
both before a deployment started (a delayed event) and long after its window. Healthy
images must all end SUCCEEDED with none quarantined; the bad image is still rolled back."""

from __future__ import annotations

import random
import threading
from datetime import datetime, timedelta

from ferry_sandbox import Sandbox

ALARM = "shop-staging-api-5xx"
REGIONS = ("eu-west-1", "us-east-1")
CONFIG = f"""\
[[environments]]
name = "staging"
rules = [{{ glob = "staging-*" }}]
targets = [{{ region = "{REGIONS[0]}", cluster = "shop-staging" }}, {{ region = "{REGIONS[1]}", cluster = "shop-staging" }}]

[[services]]
repository = "shop/api"
name = "shop-{{env}}-api"
containers = ["api"]
health = {{ url = "https://api.{{env}}.{{region}}.shop.example/healthz", attempts = 3, interval_seconds = 1 }}
alarms = ["shop-{{env}}-api-5xx"]
alarm_window_minutes = 30
"""


class Churn:
    """Service Auto Scaling and task replacement on every target, all the time: desired count
    between 2 and 5, running lagging it, now and then a task stopped and being replaced."""

    def __init__(self, world: Sandbox, seed: int):
        self.world, self.rng, self.moves = world, random.Random(seed), 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "Churn":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()

    def _run(self) -> None:
        while not self.stop.wait(0.03):
            t = self.rng.choice(self.world.targets)
            desired = self.rng.randint(2, 5)
            running = self.rng.randint(1, desired)
            try:
                self.world.scale(t, desired, running=running, replace=self.rng.randint(0, 1))
                self.moves += 1
            except Exception:  # noqa: BLE001  (a service between deployments; the next move goes on)
                pass


def test_the_demo_story_with_autoscaling_churn_lagging_ecs_and_alarms_outside_the_window(world: Sandbox) -> None:
    world.load(CONFIG)
    world.ecs_agent.lag = 2  # two DescribeServices answers still show the rollout IN_PROGRESS after COMPLETED
    good, bad, quarantined = [], None, []

    def settle() -> None:
        world.settle()
        quarantined.append(world.quarantined())

    with Churn(world, seed=16) as churn:
        good.append(world.push("shop/api", "staging-00000001"))
        settle()
        # A transition from before the next deployment started, delivered late: it must not count.
        world.alarm(ALARM, "ALARM", datetime.now() - timedelta(hours=1), region=REGIONS[0])
        settle()
        world.alarm(ALARM, "OK", region=REGIONS[0])
        good.append(world.push("shop/api", "staging-00000002"))
        settle()
        (live,) = world.deployments(digest=good[1], region=REGIONS[0])
        assert live["state"] == "SUCCEEDED", live
        # A downstream outage 45 minutes after it went live: past the 30-minute window.
        went_live = datetime.fromisoformat(live["live_at"])
        world.alarm(ALARM, "ALARM", went_live + timedelta(minutes=45), region=REGIONS[0])
        settle()
        world.alarm(ALARM, "OK", went_live + timedelta(minutes=50), region=REGIONS[0])
        bad = world.push("shop/api", "staging-00000003", health="unhealthy")
        settle()
        good.append(world.push("shop/api", "staging-00000004"))
        settle()

    assert churn.moves > 20, f"the churn must really have moved the services ({churn.moves} moves)"
    pushed = {d: [(r["region"], r["state"]) for r in world.deployments(digest=d) if r["origin"] != "rollback"]
              for d in [*good, bad]}
    for digest in good:
        assert sorted(pushed[digest]) == [(r, "SUCCEEDED") for r in REGIONS], (digest, pushed)
    assert sorted(pushed[bad]) == [(r, "ROLLED_BACK") for r in REGIONS], pushed
    # A new digest lifts the quarantine of those before it, so it is looked at after each step.
    assert set().union(*quarantined) == {bad}, quarantined
    for t in world.targets:
        assert world.live_images(t)["api"] == world.image("shop/api", good[-1]), t
    # Ferry's own rollbacks: the bad image's, one per region, back to the image before it.
    rollbacks = world.deployments(origin="rollback")
    assert {r["rolls_back"] for r in rollbacks} == {r["id"] for r in world.deployments(digest=bad)}, rollbacks
    assert sorted((r["region"], r["digest"], r["state"]) for r in rollbacks) == [
        (region, good[1], "SUCCEEDED") for region in REGIONS], rollbacks
    texts = [m["body"]["text"] for m in world.slack]
    assert sum("not rolled back" in x for x in texts) == 1, texts
    assert sum("rolled back" in x and "not rolled back" not in x for x in texts) == 2, texts
