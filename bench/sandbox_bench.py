"""Benchmarks 3 and 4 (bench/bench.py prints them): the deploy function's release binary in
the local sandbox (sandbox/ferry_sandbox.py), its requests logged by the emulator.

3. Round trips: the AWS requests one push makes per target, how many of them are sequential
   on the path to UpdateService, and, with a delay in front of every request standing in
   for AWS's latency, how long a push fanning out to three regions takes next to one region.
4. Burst: push events for many services (a share of them delivered twice) handled by
   concurrent invocations: events per second, handler latency, and a check of the ledger
   that every accepted push deployed exactly once.
"""

from __future__ import annotations

import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "sandbox"))
import ferry_sandbox as fs  # noqa: E402  (puts tests/harness on the path)
import ferry_moto  # noqa: E402

REGIONS = ["eu-west-1", "us-east-1", "ap-southeast-1"]
LATENCY_MS = 20


def config(regions: list[str], services: int = 1) -> str:
    targets = ", ".join(f'{{ region = "{r}", cluster = "shop-staging" }}' for r in regions)
    text = f'[[environments]]\nname = "staging"\nrules = [{{ glob = "staging-*" }}]\ntargets = [{targets}]\n'
    for i in range(services):
        text += f'\n[[services]]\nrepository = "shop/svc{i:02d}"\nname = "svc{i:02d}"\ncontainers = ["app"]\n'
    return text


def deploy_only(sandbox: fs.Sandbox) -> None:
    """Only the deploy function runs: verify's requests would mix into the log."""
    for name in ("verify", "rollback"):
        sandbox.functions.pop(name).stop()


def push_and_time(sandbox: fs.Sandbox, tag: str) -> tuple[float, list[dict]]:
    """One push through the deploy function: its invocation time and the requests it made."""
    before = len(sandbox.results("deploy"))
    ferry_moto.REQUEST_LOG.clear()
    sandbox.push("shop/svc00", tag)
    sandbox.settle(quiet=0.1)
    (result,) = sandbox.results("deploy")[before:]
    assert result["ok"] and "Started" in str(result["body"]), result
    log = list(ferry_moto.REQUEST_LOG)
    # The push itself (ECR PutImage) came before the invocation.
    return result["seconds"], [r for r in log if not r["action"].startswith("ecr:")]


def chain_to(requests: list[dict], last: dict) -> list[dict]:
    """The longest chain of requests each starting after the one before ended, ending at `last`."""
    ordered = sorted(requests, key=lambda r: r["start"])
    best: dict[int, list[dict]] = {}
    for i, r in enumerate(ordered):
        before = [best[j] for j in range(i) if ordered[j]["end"] <= r["start"]]
        best[i] = max(before, key=len, default=[]) + [r]
        if r is last:
            return best[i]
    raise ValueError("not in the list")


def round_trips(bin_dir: Path, runs: int) -> dict:
    work = Path(tempfile.mkdtemp(prefix="ferry-bench-"))
    sandbox = fs.Sandbox(bin_dir, work)
    try:
        out: dict = {}
        # Requests per target, one region, no added latency (a warm function: its first
        # push also fetched the Slack secret and built its clients).
        sandbox.load(config(REGIONS[:1]))
        deploy_only(sandbox)
        push_and_time(sandbox, "staging-warm0000")
        ferry_moto.LOG_REQUESTS.set()
        _, log = push_and_time(sandbox, "staging-count000")
        update = next(r for r in log if r["action"] == "ecs:UpdateService")
        out["per_target"] = Counter(r["action"] for r in log)
        out["chain"] = [r["action"] for r in chain_to([r for r in log if r["end"] <= update["end"]], update)]

        # One region against three, every request delayed, interleaved runs.
        ferry_moto.LATENCY["seconds"] = LATENCY_MS / 1000
        updates = {}
        times: dict[int, list[float]] = {1: [], 3: []}
        for n in (1, 3):
            sandbox.load(config(REGIONS[:n]))
            deploy_only(sandbox)
            push_and_time(sandbox, f"staging-warm{n}000")
            for i in range(runs):
                seconds, log = push_and_time(sandbox, f"staging-r{n}{i:06d}")
                times[n].append(seconds)
                if i == 0:
                    updates[n] = Counter(r["region"] for r in log if r["action"] == "ecs:UpdateService")
        out["fanout"] = {n: statistics.median(t) for n, t in times.items()}
        out["updates_per_region"] = updates
        return out
    finally:
        ferry_moto.LATENCY["seconds"] = 0
        ferry_moto.LOG_REQUESTS.clear()
        sandbox.close()


def burst(bin_dir: Path, events: int, services: int, duplicates: float, concurrency: int,
          conflict_rate: float = 0.1) -> dict:
    """`events` push events for `services` services, `duplicates` of them a second delivery
    of an earlier one, shuffled, handled by `concurrency` function processes; besides the
    DynamoDB transactions that really overlap, `conflict_rate` of all writes meet a conflict."""
    work = Path(tempfile.mkdtemp(prefix="ferry-bench-"))
    sandbox = fs.Sandbox(bin_dir, work)
    try:
        sandbox.load(config(REGIONS[:1], services), concurrency=concurrency)
        sandbox.set_conflicts(rate=conflict_rate)
        deploy_only(sandbox)
        sandbox.hold = True  # collect the pushes' events, then deliver them all at once
        unique = events - int(events * duplicates)
        for i in range(unique):
            sandbox.push(f"shop/svc{i % services:02d}", f"staging-{i:08x}")
        while len(sandbox.held) < unique:
            time.sleep(0.05)
        with sandbox.lock:
            held = list(sandbox.held)
        extra = random.choices(held, k=events - unique)
        start = time.perf_counter()
        sandbox.release(lambda h: random.sample(h + extra, len(h) + len(extra)))
        sandbox.settle(timeout=600, quiet=0.2)
        elapsed = time.perf_counter() - start
        results = sandbox.results("deploy")
        latencies = sorted(r["seconds"] for r in results)
        records = sandbox.deployments()
        per_event = Counter((r["event_id"], r["service"]) for r in records)
        started = [r for r in records if r["state"] not in ("SKIPPED", "PENDING")]
        updates = sum(len(v) for v in sandbox.ecs_agent.started.values())
        return {
            "events": len(results), "seconds": elapsed, "rate": len(results) / elapsed,
            "p50": latencies[len(latencies) // 2], "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
            "errors": sum(not r["ok"] for r in results), "dead": len(sandbox.dead_letters()),
            "unique": unique, "records": len(records), "doubled": sum(c > 1 for c in per_event.values()),
            "missing": unique - len(per_event), "started": len(started), "updates": updates,
            "states": Counter(r["state"] for r in records), "conflicts": sandbox.conflicts_met(),
        }
    finally:
        sandbox.close()


EXPOSURE_CONFIG = """\
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


def exposure(bin_dir: Path) -> list[dict]:
    """5. A bad image's exposure to production traffic, by strategy: the largest share of
    production traffic its revision took, share × seconds, and the time from Ferry's verdict
    (the smoke test's FAILED, the hook's FAILED, the alarm acted on) to the previous revision
    serving everything again. Sandbox seconds: ECS's rollouts take 0.4 s here, its waits (bake
    times, callBackDelay) 1/100 of theirs, the smoke test's intervals are real."""
    work = Path(tempfile.mkdtemp(prefix="ferry-bench-"))
    sandbox = fs.Sandbox(bin_dir, work)
    cases = [("ROLLING", "unhealthy", {}), ("BLUE_GREEN", "unhealthy", {}),
             ("CANARY", "alarming", {"canary": (10, 5)})]
    rows = []
    try:
        for strategy, health, kw in cases:
            sandbox.load(EXPOSURE_CONFIG)
            t = sandbox.target("shop-staging-api")
            if strategy != "ROLLING":
                sandbox.blue_green(t, strategy, **kw)
            sandbox.push("shop/api", "staging-00000001")
            sandbox.settle()
            bad = sandbox.push("shop/api", "staging-00000002", health=health)
            sandbox.settle()
            arn = sandbox.service(t)["serviceArn"]
            revisions = [a for a, r in ferry_moto.SERVICE_REVISIONS.items() if f"/{t.service}/" in a
                         and any(i.endswith(bad) for i in sandbox.images_of(t.account, t.region, r["taskDefinition"]))]
            verdicts = [r["finished"] for f in ("verify", "rollback") for r in sandbox.results(f) if _verdict(r)]
            verdict = min(verdicts)
            log = sandbox.traffic.of(arn)
            peak = max((w.get(r, 0) for _, w in log for r in revisions), default=0)
            area = sum(sandbox.traffic.exposure(arn, r)[1] for r in revisions)
            cleared = next((at for at, w in log if at >= verdict and all(not w.get(r) for r in revisions)
                            and any(v == 100 for v in w.values())), verdict)
            (record,) = sandbox.deployments(digest=bad)
            rows.append({"strategy": strategy, "image": health, "state": record["state"], "peak": peak,
                         "exposure": area, "to_blue": max(0.0, cleared - verdict) if peak else 0.0})
        return rows
    finally:
        sandbox.close()


def _verdict(result: dict) -> bool:
    """Whether an invocation gave Ferry's verdict on the bad image."""
    body = result["body"] if isinstance(result["body"], dict) else {}
    outcomes = [body] + [o for o in body.get("outcomes", []) if isinstance(o, dict)]
    return body.get("hookStatus") == "FAILED" or any(
        o.get("outcome") in ("Failed", "RollingBack", "EcsRollingBack") for o in outcomes)
