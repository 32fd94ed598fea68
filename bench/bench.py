"""Ferry's benchmarks: figures, never pass/fail. Run through bench/run, which builds what
this needs and passes the paths in the environment:

  FERRY_CLI        the release `ferry` binary
  FERRY_LAMBDAS    the cargo-lambda target directory (release binaries and bootstrap.zip files)

1. One deployment, whole process: `ferry deploy REPO:TAG` (the deploy handler, its ledger
   writes included) against fabfuel's `ecs deploy` for the same image in the same emulator
   world (a Fargate service with a sidecar): CPU seconds, wall seconds, peak RSS; medians
   of RUNS interleaved runs, and Ferry's ratio to the peer measured in the same run.
2. Lambda footprint: per function binary, the time from process start to its first poll of
   the Lambda Runtime API (a local stub), peak RSS while it handles a burst of events, and
   the size of its bootstrap.zip.
3. and 4. Round trips and fan-out, and a concurrent burst: bench/sandbox_bench.py.
5. A bad image's exposure to production traffic, rolling against blue/green and canary: bench/sandbox_bench.py.

This machine is shared and noisy: read the ratios, not the absolute times.
"""

from __future__ import annotations

import http.server
import json
import os
import random
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import boto3

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(REPO / "sandbox"))
import ferry_sandbox  # noqa: E402  (its world's helpers; importing it starts nothing)
RUNS = int(os.environ.get("FERRY_BENCH_RUNS", "7"))
BURST = int(os.environ.get("FERRY_BENCH_BURST", "50"))
BURST_EVENTS = int(os.environ.get("FERRY_BENCH_BURST_EVENTS", "200"))
BURST_CONCURRENCY = int(os.environ.get("FERRY_BENCH_CONCURRENCY", "10"))
EXPOSURE_RUNS = 3  # each run is three deployment stories in the sandbox, ~20 s
REGION = "ap-southeast-1"
ACCOUNT = "123456789012"


def start_emulator() -> tuple[subprocess.Popen, str]:
    harness = subprocess.Popen(
        [sys.executable, str(REPO / "tests/harness/ferry_moto.py"), "--port", "0"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    ready = harness.stdout.readline().strip()
    assert ready.startswith("READY "), ready
    return harness, ready.removeprefix("READY ")


def control(endpoint: str, path: str) -> dict:
    import urllib.request

    with urllib.request.urlopen(f"{endpoint}{path}") as r:
        return json.loads(r.read())


class World:
    """A Fargate service (app container + proxy sidecar), its ECR repository and Ferry's ledger."""

    def __init__(self, endpoint: str) -> None:
        kw = dict(endpoint_url=endpoint, region_name=REGION, aws_access_key_id="testing", aws_secret_access_key="testing")
        self.ecr, self.ecs, self.ddb = boto3.client("ecr", **kw), boto3.client("ecs", **kw), boto3.client("dynamodb", **kw)
        self.repository, self.cluster, self.service, self.table = "shop/api", "shop-staging", "shop-staging-api", "ferry-ledger"
        self.ecr.create_repository(repositoryName=self.repository)
        self.ecs.create_cluster(clusterName=self.cluster)
        image = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/{self.repository}:staging-00000000"
        td = self.ecs.register_task_definition(
            family="shop-api", networkMode="awsvpc", requiresCompatibilities=["FARGATE"], cpu="512", memory="1024",
            executionRoleArn=f"arn:aws:iam::{ACCOUNT}:role/shop-execution",
            containerDefinitions=[
                {"name": "api", "image": image, "essential": True, "portMappings": [{"containerPort": 8080}],
                 "environment": [{"name": "MODE", "value": "staging"}]},
                {"name": "proxy", "image": "public.ecr.aws/envoy/envoy:v1.30.1", "essential": True},
            ],
        )["taskDefinition"]["taskDefinitionArn"]
        network = control(endpoint, f"/_ferry/ec2/default-network?region={REGION}")
        self.ecs.create_service(
            cluster=self.cluster, serviceName=self.service, taskDefinition=td, desiredCount=2, launchType="FARGATE",
            networkConfiguration={"awsvpcConfiguration": {"subnets": network["subnets"], "securityGroups": network["securityGroups"]}},
        )
        ferry_sandbox.create_ledger_table(self.ddb, self.table)
        self.config = REPO / "bench" / "ferry.toml"
        self.config.write_text(
            "[[environments]]\nname = \"staging\"\nrules = [{ glob = \"staging-*\" }]\n"
            f"targets = [{{ region = \"{REGION}\", cluster = \"{self.cluster}\" }}]\n\n"
            f"[[services]]\nrepository = \"{self.repository}\"\nname = \"shop-{{env}}-api\"\ncontainers = [\"api\"]\n"
        )

    def push(self, tag: str) -> str:
        out = self.ecr.put_image(repositoryName=self.repository, imageManifest=ferry_sandbox.new_manifest(), imageTag=tag)
        return out["image"]["imageId"]["imageDigest"]

    def live_image(self) -> str:
        service = self.ecs.describe_services(cluster=self.cluster, services=[self.service])["services"][0]
        td = self.ecs.describe_task_definition(taskDefinition=service["taskDefinition"])["taskDefinition"]
        return next(c["image"] for c in td["containerDefinitions"] if c["name"] == "api")


# Peak RSS through GNU time, not os.wait4 from here: Linux counts the RSS a process had when
# it was forked in its peak, and this Python process (boto3 loaded) is larger than the tools
# measured. CPU from os.wait4 on GNU time (which includes the child it waited for), for
# microseconds where GNU time prints hundredths; its own share is a millisecond or so.
TIME = ["/usr/bin/time", "--format", "%M"]


def peak_rss(report: Path) -> float:
    return int(report.read_text().strip().splitlines()[-1]) / 1024


def measure(argv: list[str], env: dict) -> dict:
    """Wall and CPU seconds, and peak RSS (MiB), of one process run to its end."""
    report = REPO / "bench" / ".time"
    start = time.perf_counter()
    proc = subprocess.Popen([*TIME, "--output", str(report), *argv], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{argv[0]} failed: {proc.stderr.read().decode()}")
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "rss": peak_rss(report)}


def one_deployment(endpoint: str) -> dict:
    world = World(endpoint)
    env = {**os.environ, "AWS_ENDPOINT_URL": endpoint, "AWS_REGION": REGION, "AWS_DEFAULT_REGION": REGION,
           "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "NO_COLOR": "1"}
    ecs_deploy = str(Path(sys.executable).parent / "ecs")
    runs: dict[str, list[dict]] = {"ferry": [], "ecs-deploy": []}
    for i in range(RUNS):
        for tool in random.sample(list(runs), 2):  # interleaved, in random order
            tag = f"staging-{i:04d}{len(runs[tool]):04d}" + ("a" if tool == "ferry" else "b")
            digest = world.push(tag)
            image = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/{world.repository}@{digest}"
            if tool == "ferry":
                argv = [os.environ["FERRY_CLI"], "--config", str(world.config), "--table", world.table,
                        "deploy", f"{world.repository}:{tag}"]
            else:
                argv = [ecs_deploy, "deploy", world.cluster, world.service, "--image", "api", image, "--timeout", "-1"]
            runs[tool].append(measure(argv, env))
            assert world.live_image() == image, f"{tool} did not deploy {image}"
    return {tool: {k: statistics.median(r[k] for r in rs) for k in ("wall", "cpu", "rss")} for tool, rs in runs.items()}


class RuntimeStub(http.server.BaseHTTPRequestHandler):
    """The part of the Lambda Runtime API a function's runtime loop uses."""

    events: list[dict] = []
    first_poll: float | None = None
    done = threading.Event()

    def do_GET(self) -> None:  # noqa: N802
        cls = type(self)
        if cls.first_poll is None:
            cls.first_poll = time.perf_counter()
        if not cls.events:
            cls.done.set()
            time.sleep(30)  # the next invocation never comes; the process is stopped first
            return
        event = json.dumps(cls.events.pop()).encode()
        self.send_response(200)
        self.send_header("Lambda-Runtime-Aws-Request-Id", f"req-{len(cls.events)}")
        self.send_header("Lambda-Runtime-Deadline-Ms", str(int(time.time() * 1000) + 60_000))
        self.send_header("Lambda-Runtime-Invoked-Function-Arn", f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:ferry")
        self.send_header("Content-Length", str(len(event)))
        self.end_headers()
        self.wfile.write(event)

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(202)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def push_event(world: World, i: int) -> dict:
    tag = f"staging-burst{i:03d}"
    return {"version": "0", "id": f"burst-{i}", "detail-type": "ECR Image Action", "source": "aws.ecr", "account": ACCOUNT,
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + i)), "region": REGION, "resources": [],
            "detail": {"result": "SUCCESS", "repository-name": world.repository, "image-digest": world.push(tag),
                       "action-type": "PUSH", "image-tag": tag}}


def footprint(endpoint: str, function: str, events: list[dict], world: World) -> dict:
    RuntimeStub.events, RuntimeStub.first_poll = list(reversed(events)), None
    RuntimeStub.done = threading.Event()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RuntimeStub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    binary = Path(os.environ["FERRY_LAMBDAS"]) / "x86_64-unknown-linux-gnu" / "release" / function
    env = {**os.environ, "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{server.server_address[1]}", "AWS_ENDPOINT_URL": endpoint,
           "AWS_REGION": REGION, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_LAMBDA_FUNCTION_NAME": function, "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128", "AWS_LAMBDA_FUNCTION_VERSION": "1",
           "FERRY_CONFIG": str(world.config), "FERRY_TABLE": world.table, "RUST_LOG": "warn"}
    report = REPO / "bench" / ".time"
    start = time.perf_counter()
    proc = subprocess.Popen([*TIME, "--output", str(report), str(binary)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    RuntimeStub.done.wait(120)
    init = (RuntimeStub.first_poll or time.perf_counter()) - start
    (function_pid,) = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    os.kill(int(function_pid), 15)  # GNU time reports on its child, killed or not
    proc.wait()
    server.shutdown()
    zip_size = (Path(os.environ["FERRY_LAMBDAS"]) / "lambda" / function / "bootstrap.zip").stat().st_size
    return {"init_ms": init * 1000, "rss": peak_rss(report), "zip_mb": zip_size / 1e6}


def main() -> None:
    harness, endpoint = start_emulator()
    try:
        print(f"1. One deployment, whole process (median of {RUNS} interleaved runs each)\n")
        d = one_deployment(endpoint)
        f, p = d["ferry"], d["ecs-deploy"]
        print("| tool | CPU s | wall s | peak RSS MiB |\n|---|---|---|---|")
        for name, r in (("ferry deploy (with its ledger)", f), ("ecs deploy (fabfuel/ecs-deploy)", p)):
            print(f"| {name} | {r['cpu']:.3f} | {r['wall']:.3f} | {r['rss']:.1f} |")
        print(f"| **Ferry / ecs-deploy** | **{f['cpu'] / p['cpu']:.2f}** | **{f['wall'] / p['wall']:.2f}** | **{f['rss'] / p['rss']:.2f}** |\n")

        print(f"2. Lambda footprint (burst of {BURST} events per function, handled in turn)\n")
        print("| function | init to first poll ms | peak RSS MiB | bootstrap.zip MB |\n|---|---|---|---|")
        harness2, endpoint2 = start_emulator()
        try:
            world = World(endpoint2)
            sample = lambda name: json.loads((REPO / "tests/fixtures/events" / name).read_text())  # noqa: E731
            # deploy: pushes of new digests, each a real deployment (register, update, ledger);
            # verify and rollback: ECS and alarm events for services they do not know.
            bursts = {
                "ferry-deploy": lambda run: [push_event(world, run * BURST + i) for i in range(BURST)],
                "ferry-verify": lambda run: [sample("ecs-deployment-in-progress.json")] * BURST,
                "ferry-rollback": lambda run: [sample("cloudwatch-alarm-state-change.json")] * BURST,
            }
            for function, events in bursts.items():
                inits, rss = [], []
                for run in range(3):
                    r = footprint(endpoint2, function, events(run), world)
                    inits.append(r["init_ms"])
                    rss.append(r["rss"])
                print(f"| {function} | {statistics.median(inits):.1f} | {max(rss):.1f} | {r['zip_mb']:.1f} |")
        finally:
            harness2.terminate()
    finally:
        harness.terminate()

    import sandbox_bench

    bins = Path(os.environ["FERRY_LAMBDAS"]) / "x86_64-unknown-linux-gnu" / "release"
    print(f"\n3. Round trips: one push, the deploy function in the sandbox (median of {RUNS} runs)\n")
    r = sandbox_bench.round_trips(bins, RUNS)
    print("| measure | value |\n|---|---|")
    print("| requests per target | " + ", ".join(f"{a} ×{n}" for a, n in sorted(r["per_target"].items())) + " |")
    print(f"| sequential up to UpdateService | {len(r['chain'])}: {' → '.join(r['chain'])} |")
    one, three = r["fanout"][1], r["fanout"][3]
    print(f"| push to 1 region, {sandbox_bench.LATENCY_MS} ms added per request | {one * 1000:.0f} ms |")
    print(f"| push to 3 regions, {sandbox_bench.LATENCY_MS} ms added per request | {three * 1000:.0f} ms "
          f"(**{three / one:.2f}×**; UpdateService per region: {dict(r['updates_per_region'][3])}) |")

    b = sandbox_bench.burst(bins, BURST_EVENTS, 50, 0.2, BURST_CONCURRENCY)
    print(f"\n4. Burst: {b['events']} push events for 50 services ({b['events'] - b['unique']} of them delivered twice), "
          f"{BURST_CONCURRENCY} concurrent function instances\n")
    print("| events/s | p50 ms | p99 ms | errors | dead letters |\n|---|---|---|---|---|")
    print(f"| {b['rate']:.1f} | {b['p50'] * 1000:.0f} | {b['p99'] * 1000:.0f} | {b['errors']} | {b['dead']} |\n")
    print(f"Ledger: {b['unique']} distinct pushes → {b['records']} records ({dict(b['states'])}); "
          f"{b['doubled']} recorded twice, {b['missing']} missing; {b['started']} deployments started "
          f"and {b['updates']} UpdateService calls seen by ECS; DynamoDB conflicts met and absorbed: "
          f"{b['conflicts']['transactions']} transactions cancelled, {b['conflicts']['writes']} writes refused.")

    print(f"\n5. A bad image's production traffic, by the service's strategy (sandbox seconds, median of {EXPOSURE_RUNS})\n")
    print("| strategy | bad image | ended | most production traffic | exposure %·s | verdict → previous revision serving all |")
    print("|---|---|---|---|---|---|")
    runs = [sandbox_bench.exposure(bins) for _ in range(EXPOSURE_RUNS)]
    for case in zip(*runs):
        e, mid = case[0], lambda key: statistics.median(c[key] for c in case)
        states = "/".join(sorted({c["state"] for c in case}))
        print(f"| {e['strategy']} | {e['image']} | {states} | {mid('peak'):g}% | {mid('exposure'):.1f} | {mid('to_blue'):.2f} s |")


if __name__ == "__main__":
    main()
