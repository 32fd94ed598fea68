"""A storm: a thousand deployment events at once, shuffled, 30% of them delivered twice,
through the sandbox (the release binaries, several processes of each function). Ferry's
invariants, counted: no double effect, no record moved backwards, no regression to an older
image. Prints its figures (pytest -s shows them); docs/benchmarks.md has a run's.
"""

from __future__ import annotations

import json
import random
import re
import time
from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone

import ferry_moto
from conftest import REPO
from ferry_sandbox import Sandbox

SERVICES = 20
PUSHES = 700
EVENTS = 1000
DUPLICATES = 0.3
CONCURRENCY = 8
#: One push in ten is of an image whose health URL fails: verified FAILED, rolled back.
UNHEALTHY = 10
#: Besides the transactions that really overlap, this share of every DynamoDB write meets a
#: concurrent transaction (cancelled or refused, as DynamoDB does): Ferry must absorb them all.
CONFLICT_RATE = 0.1

OPEN = {"PENDING", "HELD", "AWAITING_APPROVAL", "IN_PROGRESS", "VERIFYING", "ROLLING_BACK"}


def storm_config(services: int) -> str:
    return "".join(
        [
            '[[environments]]\nname = "staging"\nrules = [{ glob = "staging-*" }]\n'
            'targets = [{ region = "eu-west-1", cluster = "shop-staging" }]\n',
            *(
                f'\n[[services]]\nrepository = "shop/svc{n:02d}"\nname = "svc{n:02d}-{{env}}"\ncontainers = ["app"]\n'
                f'health = {{ url = "https://svc{n:02d}.{{env}}.shop.example/healthz", attempts = 1 }}\n'
                for n in range(services)
            ),
        ]
    )


def state_machine() -> dict[str, set[str]]:
    """`State::next` of shared/core/src/model.rs: the states each state may move to."""
    source = (REPO / "shared" / "core" / "src" / "model.rs").read_text()
    body = source[source.index("pub fn next(self)"):source.index("pub fn can_become")]
    words = {"InProgress": "IN_PROGRESS", "RollingBack": "ROLLING_BACK", "RolledBack": "ROLLED_BACK",
             "RollbackFailed": "ROLLBACK_FAILED", "AwaitingApproval": "AWAITING_APPROVAL"}
    name = lambda w: words.get(w, w.upper())  # noqa: E731
    allowed: dict[str, set[str]] = {}
    for froms, tos in re.findall(r"((?:\w+\s*\|\s*)*\w+)\s*=>\s*&\[([^\]]*)\]", body):
        for f in re.split(r"\s*\|\s*", froms):
            allowed[name(f)] = {name(t) for t in re.findall(r"\w+", tos)}
    assert set(allowed) == {"PENDING", "HELD", "AWAITING_APPROVAL", "IN_PROGRESS", "VERIFYING", "SUCCEEDED", "FAILED",
                            "ROLLING_BACK", "ROLLED_BACK", "ROLLBACK_FAILED", "SUPERSEDED", "SKIPPED", "REJECTED"}, allowed
    return allowed


def test_a_thousand_shuffled_and_duplicated_events_cause_no_double_effect_no_backward_step_no_regression(
        world: Sandbox) -> None:
    world.load(storm_config(SERVICES), concurrency=CONCURRENCY)
    world.set_conflicts(rate=CONFLICT_RATE)
    world.hold = True
    pushes: list[tuple[str, str]] = []  # (service, digest), in push order
    for i in range(PUSHES):
        n = i % SERVICES
        unhealthy = (i // SERVICES + n) % UNHEALTHY == 3  # spread over the services and over time
        digest = world.push(f"shop/svc{n:02d}", f"staging-{i:08x}", health="unhealthy" if unhealthy else "healthy")
        pushes.append((f"svc{n:02d}-staging", digest))
    while len(world.held) < PUSHES:
        time.sleep(0.05)
    index = {digest: i for i, (_, digest) in enumerate(pushes)}
    first = datetime.now(timezone.utc) - timedelta(seconds=PUSHES)
    for event, _ in world.held:  # a second apart, in push order, the last one just now
        event["time"] = (first + timedelta(seconds=index[event["detail"]["image-digest"]])).strftime("%Y-%m-%dT%H:%M:%SZ")
    # 30% of the events delivered twice: the pushes' here, ECS's and Ferry's own by the bus.
    with world.lock:
        again = random.choices(world.held, k=EVENTS - PUSHES)
    ferry_moto.STATE_LOG.clear()
    ferry_moto.LOG_STATES.set()
    try:
        started = datetime.now(timezone.utc)
        world.release(lambda held: random.sample(held + again, len(held) + len(again)))
        world.duplicates = DUPLICATES  # from now on: ECS's events and Ferry's own
        world.settle(timeout=1200, quiet=1.0)
        seconds = (datetime.now(timezone.utc) - started).total_seconds()
    finally:
        ferry_moto.LOG_STATES.clear()

    records = world.deployments()
    ferry = [r for r in records if r["origin"] == "ferry"]
    deploy_events = [r for r in world.results("deploy") if r["event"].get("source") == "aws.ecr" and r["attempt"] == 1]

    # No double effect: one record per push, one rollout per deployment started, one message each.
    assert len(deploy_events) == EVENTS, len(deploy_events)
    per_push = Counter(r["event_id"] for r in ferry)
    assert len(per_push) == PUSHES and max(per_push.values()) == 1, "one record per push"
    by_service = defaultdict(list)
    for r in records:
        by_service[r["service"]].append(r)
    on_record = Counter(r["ecs_deployment_id"] for r in records if r.get("ecs_deployment_id"))
    rollouts = 0
    for service, rs in by_service.items():
        started_ids = ferry_moto.ROLLOUTS.get(world.service(world.target(service))["serviceArn"], [])
        rollouts += len(started_ids)
        # Every rollout is on record, once (Ferry's, its rollbacks, ECS's own).
        doubled = [(r["id"], r["state"], r["origin"]) for r in rs if on_record.get(r.get("ecs_deployment_id"), 0) > 1]
        assert [on_record[i] for i in started_ids] == [1] * len(started_ids), f"{service}: {doubled}"
        # No regression: the rollouts Ferry started went to pushes in push order only.
        ours = {r["ecs_deployment_id"]: index[r["digest"]] for r in rs if r["origin"] == "ferry" and r.get("ecs_deployment_id")}
        order = [ours[i] for i in started_ids if i in ours]
        assert order == sorted(order), f"{service}: an older push replaced a newer one: {order}"
    assert set(on_record) <= {i for ids in ferry_moto.ROLLOUTS.values() for i in ids}, "a record of a rollout that never was"
    # (A failure with no known-good revision to go back to gets a second message, from the
    # rollback function, saying so: the same headline, another message.)
    messages = Counter(json.dumps(m["body"], sort_keys=True) for m in world.slack)
    twice = [m for m, c in messages.items() if c > 1]
    assert not twice, "a message sent twice"

    # No record moved backwards: every state history is a path of the state machine.
    allowed = state_machine()
    steps = 0
    for key, history in ferry_moto.STATE_LOG.items():
        for a, b in zip(history, history[1:]):
            assert b in allowed[a], f"{key}: {a} -> {b} in {history}"
            steps += 1

    # Settled: nothing left open; each service runs its newest verified push.
    still_open = [(r["service"], r["tag"], r["state"], r["origin"], r.get("ecs_deployment_id"), r.get("reason"))
                  for r in records if r["state"] in OPEN]
    assert not still_open, still_open
    for service, rs in by_service.items():
        succeeded = [r for r in rs if r["origin"] == "ferry" and r["state"] == "SUCCEEDED"]
        if succeeded:
            newest = max(succeeded, key=lambda r: index[r["digest"]])
            story = [(index.get(r["digest"]), r["state"], r["origin"], r.get("ecs_deployment_id"), r.get("reason"))
                     for r in sorted(rs, key=lambda r: (r["created_at"], r["id"]))]
            assert world.live_images(world.target(service))["app"] == world.image(
                newest["repository"], newest["digest"]), f"{service}: not on its newest verified push: {story}"
            assert not [r for r in rs if r["origin"] == "ferry" and r["state"] in ("SUCCEEDED", "IN_PROGRESS")
                        and index[r["digest"]] > index[newest["digest"]]]

    dead = world.dead_letters()
    assert not dead, f"{len(dead)} events dead-lettered"
    conflicts = world.conflicts_met()
    assert conflicts["transactions"] > 0 and conflicts["writes"] > 0, conflicts

    states = Counter(r["state"] for r in ferry)
    assert states["ROLLED_BACK"] > 0 and states["SUCCEEDED"] > 0, states
    print(f"\nstorm: {EVENTS} push events ({PUSHES} pushes, {EVENTS - PUSHES} delivered twice) for {SERVICES} services, "
          f"{len(world.bus.delivered)} deliveries to the functions in all, {CONCURRENCY} processes per function, "
          f"{seconds:.0f} s; records {dict(states)}; {rollouts} rollouts, each on record once; "
          f"{steps} state changes, none backwards; 0 regressions; 0 dead letters; DynamoDB conflicts met and "
          f"absorbed: {conflicts['transactions']} transactions cancelled, {conflicts['writes']} writes refused")
