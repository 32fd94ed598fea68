"""Ferry's local sandbox: Ferry's three functions, as built for Lambda, in a local AWS world.

One Python process holds the world; the functions are the release binaries, each run the
way Lambda runs it (a process polling the Lambda Runtime API for its next event):

- AWS: moto with Ferry's test harness (tests/harness/ferry_moto.py), served in-process on a
  loopback port. ECS deployments start on UpdateService and are finished by EcsAgent below,
  which plays ECS: it completes a rollout, or trips the circuit breaker (and rolls back) when
  the image is one that crashes, and emits the "ECS Deployment State Change" events AWS would.
- ECR: every PutImage emits the "ECR Image Action" push event, as ECR does (pushes from "CI"
  here and from `ferry promote` alike).
- EventBridge: Bus delivers each event to the functions whose rules in infra/template.yaml
  match it (the rules are read from the template itself), as an asynchronous invocation:
  an error is retried twice, then the event is kept aside (the dead-letter queue).
- Lambda: Function serves the Runtime API to one or more processes of a function binary.
- The world outside AWS: Slack webhooks (recorded) and the services' health URLs, which
  answer from the image each service is running (an image marked unhealthy fails).

    sandbox = Sandbox(bin_dir)                # release binaries: ferry-deploy, -verify, -rollback, ferry
    sandbox.load(config_text)                 # clusters, services, repositories, ledger, functions
    digest = sandbox.push("shop/api", "staging-1a2b3c4d", health="unhealthy")
    sandbox.settle()                          # until no event, invocation or rollout is pending
    sandbox.deployments()                     # the ledger's records
"""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import os
import random
import re
import subprocess
import sys
import threading
import time
import tomllib
import urllib.parse
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "harness"))
sys.path.insert(0, str(REPO / "tests" / "infra"))

import boto3  # noqa: E402
import ferry_moto  # noqa: E402  (patches moto's ECS on import)
import iam  # noqa: E402
from lifecycle import Lifecycle, Traffic, strategy_of  # noqa: E402
from moto.ecr.models import ECRBackend  # noqa: E402
from moto.ecs.models import ecs_backends  # noqa: E402
from moto.events.models import EventPattern, EventsBackend  # noqa: E402

HOME_ACCOUNT = "123456789012"
SIDECAR_IMAGE = "public.ecr.aws/envoy/envoy:v1.30.1"
#: How long ECS takes to roll a deployment out here (real ECS: minutes).
ROLLOUT_SECONDS = 0.4
#: Lambda's asynchronous invocation: two retries of a failed event (real: after 1 and 2 minutes).
RETRY_DELAYS = (0.5, 1.0)
#: The template's function timeouts are long; the lease Ferry takes on a target is derived
#: from the deadline, so the sandbox gives each invocation this long.
INVOCATION_SECONDS = 120
#: Each AWS request's limit in the functions (FERRY_AWS_TIMEOUT_SECONDS; 10 s on AWS): short,
#: so that the fault tests' timeouts do not take long.
AWS_TIMEOUT_SECONDS = 2


def now_rfc3339() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def caller(function: str) -> str:
    """The access key id a function signs its requests with in the sandbox."""
    return f"FERRY{function.upper()}"


def account_of(role_arn: str | None) -> str:
    return role_arn.split(":")[4] if role_arn else HOME_ACCOUNT


@dataclass(frozen=True)
class Target:
    environment: str
    account: str
    region: str
    cluster: str
    service: str
    role_arn: str | None
    containers: tuple[str, ...]


def health_url(url: str, t: Target) -> str:
    """A health URL with its placeholders filled in for one target, as Ferry fills them."""
    for name, value in (("env", t.environment), ("region", t.region), ("cluster", t.cluster),
                        ("account", t.account), ("service", t.service)):
        url = url.replace("{" + name + "}", value)
    return url


@dataclass
class Record:
    """One line of the sandbox's timeline."""

    at: float
    kind: str  # push, event, invoke, ecs, slack, sns
    text: str
    data: dict = field(default_factory=dict)


def create_ledger_table(ddb, name: str) -> None:
    """Ferry's ledger table, as infra/template.yaml defines it (keys and the GSI)."""
    attr = lambda n: {"AttributeName": n, "AttributeType": "S"}  # noqa: E731
    ddb.create_table(
        TableName=name, BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[attr("pk"), attr("sk"), attr("ecs_deployment_id")],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        GlobalSecondaryIndexes=[{"IndexName": "by-ecs-deployment",
                                 "KeySchema": [{"AttributeName": "ecs_deployment_id", "KeyType": "HASH"}],
                                 "Projection": {"ProjectionType": "ALL"}}],
    )


def new_manifest() -> str:
    """The manifest of an image never pushed before (moto derives the digest from the
    layers: a fresh layer, a fresh image)."""
    return json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 7023,
                   "digest": "sha256:" + "%064x" % random.getrandbits(256)},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": 32654,
                    "digest": "sha256:" + "%064x" % random.getrandbits(256)}],
    })


# --- Lambda ------------------------------------------------------------------------------


class QuietServer(http.server.ThreadingHTTPServer):
    """A local server whose clients may go away mid-request (a stopped function process)."""

    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        pass


class Function:
    """A Lambda function: `concurrency` processes of its binary, each polling a Runtime API of
    its own. As on Lambda, an invocation still running at its deadline is stopped: the process
    is killed ("Task timed out"), the invocation fails (and is retried), and a fresh process
    takes the slot."""

    def __init__(self, sandbox: "Sandbox", name: str, binary: Path, env: dict, concurrency: int = 1,
                 timeout: float = INVOCATION_SECONDS):
        self.sandbox, self.name, self.binary, self.timeout = sandbox, name, binary, timeout
        self.cond = threading.Condition()
        self.queue: list[dict] = []  # invocations waiting for a process
        self.in_flight: dict[str, dict] = {}
        self.scheduled = 0  # retries waiting for their delay
        self.results: list[dict] = []  # every finished invocation, in order
        self.dead_letters: list[dict] = []
        self.timed_out = 0
        self.stopping = False
        self.env = {**env, "AWS_LAMBDA_FUNCTION_NAME": f"ferry-{name}"}
        self.log_path = sandbox.workdir / f"ferry-{name}.log"
        self.slots = [self._serve(slot) for slot in range(concurrency)]
        self.processes = [self._start(slot) for slot in range(concurrency)]
        threading.Thread(target=self._watch_deadlines, daemon=True).start()

    def _serve(self, slot: int) -> QuietServer:
        """The Runtime API of the process in `slot`."""
        function, sandbox, name = self, self.sandbox, self.name

        class RuntimeApi(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802  /2018-06-01/runtime/invocation/next
                invocation = function._next(slot)
                if invocation is None:
                    self.send_response(410)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = json.dumps(invocation["event"]).encode()
                self.send_response(200)
                self.send_header("Lambda-Runtime-Aws-Request-Id", invocation["id"])
                self.send_header("Lambda-Runtime-Deadline-Ms", str(int(invocation["deadline"] * 1000)))
                self.send_header(
                    "Lambda-Runtime-Invoked-Function-Arn",
                    f"arn:aws:lambda:{sandbox.region}:{HOME_ACCOUNT}:function:ferry-{name}",
                )
                self.send_header("Lambda-Runtime-Trace-Id", f"Root=1-{uuid.uuid4().hex[:8]}-{uuid.uuid4().hex[:24]}")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:  # noqa: N802  .../{id}/response, .../{id}/error, init/error
                payload = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                parts = self.path.strip("/").split("/")
                self.send_response(202)
                self.send_header("Content-Length", "0")
                self.end_headers()
                if parts[-2:] == ["init", "error"]:
                    function._init_error(payload)
                elif len(parts) >= 5 and parts[2] == "invocation":
                    function._finish(parts[3], parts[4] == "response", payload)

            def log_message(self, *args) -> None:
                pass

        server = QuietServer(("127.0.0.1", 0), RuntimeApi)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server

    def _start(self, slot: int) -> subprocess.Popen:
        env = {**self.env, "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{self.slots[slot].server_address[1]}"}
        with self.log_path.open("ab") as log:
            return subprocess.Popen([str(self.binary)], env=env, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT)

    def _watch_deadlines(self) -> None:
        while not self.stopping:
            time.sleep(0.05)
            now = time.time()
            with self.cond:
                late = [i for i in self.in_flight.values() if i["deadline"] <= now]
            for invocation in late:
                self._time_out(invocation)

    def _time_out(self, invocation: dict) -> None:
        """Lambda's timeout: the execution environment is stopped mid-invocation, which fails."""
        slot = invocation["slot"]
        with self.cond:
            if invocation["id"] not in self.in_flight or self.stopping:
                return
            self.timed_out += 1
            process = self.processes[slot]
            process.kill()
            process.wait()
            self.processes[slot] = self._start(slot)
        self._finish(invocation["id"], False, json.dumps(
            {"errorType": "Sandbox.Timedout", "errorMessage": f"Task timed out after {self.timeout:.2f} seconds"}).encode())

    def invoke(self, event: dict, attempt: int = 1) -> None:
        """An asynchronous invocation (EventBridge invokes functions this way)."""
        with self.cond:
            self.queue.append({"id": str(uuid.uuid4()), "event": event, "attempt": attempt, "started": None})
            self.cond.notify_all()

    def invoke_sync(self, event: dict, timeout: float = 60) -> dict:
        """A synchronous invocation (RequestResponse: ECS invokes lifecycle hooks this way):
        the result, as `results` keeps it; never retried, never dead-lettered."""
        done = threading.Event()
        with self.cond:
            self.queue.append({"id": str(uuid.uuid4()), "event": event, "attempt": 1, "started": None,
                               "sync": done})
            self.cond.notify_all()
        if not done.wait(timeout):
            raise TimeoutError(f"ferry-{self.name} did not answer in {timeout} s")
        return done.result

    def _next(self, slot: int) -> dict | None:
        with self.cond:
            while not self.queue and not self.stopping:
                self.cond.wait(0.5)
            if self.stopping:
                return None
            invocation = self.queue.pop(0)
            invocation.update(started=time.perf_counter(), deadline=time.time() + self.timeout, slot=slot)
            self.in_flight[invocation["id"]] = invocation
            return invocation

    def _finish(self, request_id: str, ok: bool, payload: bytes) -> None:
        with self.cond:
            invocation = self.in_flight.pop(request_id, None)
            if invocation is None:
                return
            try:
                body = json.loads(payload) if payload else None
            except json.JSONDecodeError:
                body = payload.decode(errors="replace")
            result = {"function": self.name, "event": invocation["event"], "attempt": invocation["attempt"],
                      "ok": ok, "body": body, "seconds": time.perf_counter() - invocation["started"],
                      "finished": time.perf_counter()}
            self.results.append(result)
            if "sync" in invocation:
                invocation["sync"].result = result
                invocation["sync"].set()
                self.cond.notify_all()
                sync = True
            else:
                sync = False
            retry = not sync and not ok and invocation["attempt"] <= len(RETRY_DELAYS)
            if retry:
                self.scheduled += 1
            elif not ok and not sync:
                self.dead_letters.append(result)
            self.cond.notify_all()
        self.sandbox._on_invocation(result)
        if retry:
            delay = RETRY_DELAYS[invocation["attempt"] - 1]
            threading.Timer(delay, self._retry, (invocation,)).start()

    def _retry(self, invocation: dict) -> None:
        with self.cond:
            self.scheduled -= 1
            self.queue.append({**invocation, "id": str(uuid.uuid4()), "attempt": invocation["attempt"] + 1})
            self.cond.notify_all()

    def _init_error(self, payload: bytes) -> None:
        self.sandbox._record("invoke", f"ferry-{self.name} failed to start: {payload.decode(errors='replace')}")

    def busy(self) -> bool:
        with self.cond:
            return bool(self.queue or self.in_flight or self.scheduled)

    def stop(self) -> None:
        with self.cond:
            self.stopping = True
            self.cond.notify_all()
        with self.cond:
            processes = list(self.processes)
        for p in processes:
            p.terminate()
        for p in processes:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
        for server in self.slots:
            server.shutdown()
            server.server_close()


# --- EventBridge -----------------------------------------------------------------------


class Bus:
    """Delivers events the way infra/template.yaml's rules would (read from the template)."""

    def __init__(self, sandbox: "Sandbox", parameters: dict[str, str]):
        self.sandbox = sandbox
        template = iam.load_template(REPO / "infra" / "template.yaml")
        sandbox.template, self.parameters = template, parameters
        self.rules = {
            name: [(bus, EventPattern.load(json.dumps(pattern))) for bus, pattern in rules]
            for name, rules in iam.event_rules(template, parameters).items()
        }
        self.delivered: list[tuple[str, dict]] = []  # (function, event)

    def routes(self, event: dict, bus: str = "default") -> list[str]:
        return sorted(name for name, rules in self.rules.items()
                      if any(on == bus and pattern.matches_event(event) for on, pattern in rules))

    def put(self, event: dict, bus: str = "default") -> list[str]:
        names = self.routes(event, bus)
        self.sandbox._on_event(event, names)
        for name in names:
            self.delivered.append((name, event))
            function = self.sandbox.functions.get(name)
            if function is not None:
                function.invoke(event)
        return names


# --- ECS -------------------------------------------------------------------------------


class EcsAgent:
    """Plays ECS: finishes every deployment UpdateService starts, as its images decide."""

    def __init__(self, sandbox: "Sandbox"):
        self.sandbox = sandbox
        self.seen: set[str] = set()
        self.started: dict[str, list[str]] = defaultdict(list)  # service ARN -> task definitions deployed, in order
        self.rolling: dict[str, float] = {}  # deployment id -> when its rollout ends
        self.stop_flag = threading.Event()
        self.lock = threading.Lock()
        self.acting = threading.Lock()  # held while ECS ends a rollout (the ticker, or an alarm)
        self.lag = 0  # DescribeServices answers that still show a rollout IN_PROGRESS after its COMPLETED event
        threading.Thread(target=self._run, daemon=True).start()

    @staticmethod
    def services():
        """(account, region, service) of every ECS service in the emulator."""
        for account, per_region in list(dict.items(ecs_backends)):
            for region, backend in list(dict.items(per_region)):
                for service in list(backend.services.values()):
                    yield account, region, service

    def _run(self) -> None:
        while not self.stop_flag.wait(0.05):
            try:
                self.tick()
            except Exception as exc:  # noqa: BLE001  (moto state mid-change; look again next tick)
                self.sandbox._record("ecs", f"agent: {exc!r}")

    def busy(self) -> bool:
        with self.lock:
            return bool(self.rolling)

    def tick(self) -> None:
        # What ECS did in answer to Ferry's calls (StopServiceDeployment) reaches the bus.
        while ferry_moto.ECS_EVENTS:
            self.sandbox.put_event(ferry_moto.ECS_EVENTS.pop(0))
        now = time.monotonic()
        primaries = set()
        for account, region, service in self.services():
            for dep in list(service.deployments):
                if dep["status"] != "PRIMARY" or dep.get("rolloutState") != "IN_PROGRESS":
                    continue
                primaries.add(dep["id"])
                staged = strategy_of(service) != "ROLLING" and dep["id"] not in ferry_moto.ROLLBACK_DEPLOYMENTS
                with self.lock:
                    started = dep["id"] not in self.seen
                    if started:
                        self.seen.add(dep["id"])
                        self.started[service.arn].append(dep["taskDefinition"])
                        self.rolling[dep["id"]] = float("inf") if staged else now + ROLLOUT_SECONDS
                    elif self.rolling.get(dep["id"], now + 1) > now:
                        continue
                    else:
                        del self.rolling[dep["id"]]
                if started:
                    self.sandbox.put_event(ferry_moto.deployment_event(
                        service, "SERVICE_DEPLOYMENT_IN_PROGRESS", dep["id"], f"ECS deployment {dep['id']} in progress."))
                    if staged:
                        Lifecycle(self.sandbox, account, region, service, dep, self.lifecycle_done).start()
                    elif strategy_of(service) != "ROLLING":  # ECS's rollback: blue, still running, takes it all back
                        self.serve(service, dep, 100.0)
                    else:  # a rolling update: old and new tasks serve side by side until it ends
                        crashes = any(self.sandbox.behaviour(i) == "crash"
                                      for i in self.sandbox.images_of(account, region, dep["taskDefinition"]))
                        self.serve(service, dep, 0.0 if crashes else 50.0)
                else:
                    with self.acting:
                        self.finish(account, region, service, dep)
        with self.lock:  # a deployment replaced before its rollout ended never finishes
            for gone in set(self.rolling) - primaries:
                if self.rolling[gone] != float("inf"):  # a lifecycle ends by itself
                    del self.rolling[gone]

    def serve(self, service, dep: dict, percent: float) -> None:
        """A rolling deployment takes `percent` of production traffic; the one before, the rest."""
        new = ferry_moto.REVISION_OF.get(dep["id"])
        before = next((d for d in service.deployments if d["status"] == "ACTIVE"), None)
        old = before and ferry_moto.REVISION_OF.get(before["id"])
        self.sandbox.traffic.set(service.arn, {r: w for r, w in ((old, 100 - percent), (new, percent)) if r})

    def lifecycle_done(self, deployment_id: str) -> None:
        with self.lock:
            self.rolling.pop(deployment_id, None)

    def finish(self, account: str, region: str, service, dep: dict) -> None:
        if dep["status"] != "PRIMARY" or dep["rolloutState"] != "IN_PROGRESS":
            return  # an alarm failed it meanwhile
        params = {"account": account, "region": region, "cluster": service.cluster_name, "service": service.name}
        images = self.sandbox.images_of(account, region, dep["taskDefinition"])
        crashing = [i for i in images if self.sandbox.behaviour(i) == "crash"]
        self.serve(service, dep, 0.0 if crashing else 100.0)  # a task that never starts serves nothing
        if crashing:
            self.fail(params, f"{service.name}: tasks of {short(crashing[0])} fail to start; "
                              "the circuit breaker stops the deployment")
        else:
            event = ferry_moto.complete({**params, "lag": self.lag})
            self.sandbox._record("ecs", f"{service.name} ({region}): deployment {dep['id'][-6:]} completed, "
                                        f"{service.desired_count} tasks running")
            self.sandbox.put_event(event)

    def fail(self, params: dict, what: str) -> None:
        """ECS fails the service's rollout (ferry_moto.fail, `params` saying by which method) and
        rolls it back, if the service's deploymentConfiguration says so. With that method off, ECS
        fails nothing: the rollout stays IN_PROGRESS (ECS keeps trying)."""
        try:
            result = ferry_moto.fail(params)
        except ferry_moto.HarnessError as err:
            self.sandbox._record("ecs", f"{params['service']}: {err}")
            return
        self.sandbox._record("ecs", what + (" and rolls back" if result["rollbackDeploymentId"] else ""))
        for event in result["events"]:
            self.sandbox.put_event(event)

    def alarm(self, account: str, region: str, name: str) -> None:
        """An alarm went into ALARM: ECS fails the rollout in progress of every service whose
        deployment alarms it watches name it."""
        for service in list(ecs_backends[account][region].services.values()):
            watched = (getattr(service, "deployment_configuration", None) or {}).get("alarms") or {}
            if not watched.get("enable") or name not in (watched.get("alarmNames") or []):
                continue
            with self.acting:
                if any(d["status"] == "PRIMARY" and d["rolloutState"] == "IN_PROGRESS" for d in service.deployments):
                    self.fail({"account": account, "region": region, "cluster": service.cluster_name,
                               "service": service.name, "cause": "alarm", "alarms": [name]},
                              f"{service.name}: alarm {name} is in ALARM; ECS stops the deployment")


def short(image_or_digest: str) -> str:
    digest = image_or_digest.rpartition("@")[2]
    return digest.removeprefix("sha256:")[:12] if digest.startswith("sha256:") else image_or_digest


# --- the sandbox -------------------------------------------------------------------------


class Sandbox:
    def __init__(self, bin_dir: Path, workdir: Path, region: str = "eu-west-1",
                 on_record: Callable[[Record], None] | None = None):
        self.bin_dir, self.workdir, self.region = Path(bin_dir), Path(workdir), region
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.on_record = on_record
        self.timeline: list[Record] = []
        self.started = time.perf_counter()
        self.functions: dict[str, Function] = {}
        self.slack: list[dict] = []  # {"route", "body"}
        self.slack_replies: list[dict] = []  # what the approve function posted to a click's response_url
        self.behaviours: dict[str, str] = {}  # digest -> healthy | unhealthy | crash
        self.health_targets: dict[str, list[Target]] = {}  # health URL -> the targets behind it
        self.test_targets: dict[str, list[Target]] = {}  # test route URL -> the targets whose green it reaches
        self.traffic = Traffic()  # production traffic weights of blue/green, linear and canary services
        self.alarmed: set[str] = set()  # deployments whose green raised its service's alarm
        self.health_override: dict[str, int] = {}
        self.events_seen = 0
        self.pending = 0  # calls scheduled with later()
        self.duplicates = 0.0  # the share of events delivered twice (1.0: every one)
        self.hold = False  # keep events in `held` until release()
        self.held: list[tuple[dict, str]] = []
        self.unannounced: set[tuple[str, str]] = set()  # (repository, tag) pushes whose event is lost
        self.lock = threading.Lock()
        self.server = ferry_moto.start_server(0)
        self.endpoint = f"http://127.0.0.1:{self.server.server_port}"
        self.web = self._start_web()
        self.web_url = f"http://127.0.0.1:{self.web.server_address[1]}"
        self._patch_moto()
        self.bus = Bus(self, {"EventBusName": "default", "EcrRepositoryPrefixes": "",
                              "EcsClusterNames": "", "TaskRoleArns": ""})
        self.ecs_agent = EcsAgent(self)

    # -- AWS clients ------------------------------------------------------------------
    def client(self, service: str, region: str | None = None, account: str = HOME_ACCOUNT):
        kw = {"endpoint_url": self.endpoint, "region_name": region or self.region}
        if account == HOME_ACCOUNT:
            kw.update(aws_access_key_id="testing", aws_secret_access_key="testing")
        else:
            creds = boto3.client("sts", endpoint_url=self.endpoint, region_name=region or self.region,
                                 aws_access_key_id="testing", aws_secret_access_key="testing").assume_role(
                RoleArn=f"arn:aws:iam::{account}:role/sandbox-admin", RoleSessionName="sandbox")["Credentials"]
            kw.update(aws_access_key_id=creds["AccessKeyId"], aws_secret_access_key=creds["SecretAccessKey"],
                      aws_session_token=creds["SessionToken"])
        return boto3.client(service, **kw)

    def aws_env(self) -> dict:
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_REGION": self.region, "AWS_DEFAULT_REGION": self.region,
                "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_EC2_METADATA_DISABLED": "true"}

    # -- moto hooks: ECR push events and Ferry's own PutEvents onto the local bus --------
    def _patch_moto(self) -> None:
        sandbox = self
        if getattr(ECRBackend.put_image, "_sandbox", None) is None:
            original_put_image = ECRBackend.put_image

            def put_image(backend, repository_name, image_manifest, image_tag, *args, **kwargs):
                image = original_put_image(backend, repository_name, image_manifest, image_tag, *args, **kwargs)
                hook = put_image._sandbox
                if hook is not None:
                    hook._ecr_pushed(backend, repository_name, image.get_image_digest(), image_tag)
                return image

            original_put_events = EventsBackend.put_events

            def put_events(backend, events):
                result = original_put_events(backend, events)
                hook = put_image._sandbox
                if hook is not None:
                    for entry in events:
                        hook._bus_entry(backend, entry)
                return result

            ECRBackend.put_image = put_image
            EventsBackend.put_events = put_events
        ECRBackend.put_image._sandbox = sandbox

    def _ecr_pushed(self, backend, repository: str, digest: str, tag: str) -> None:
        with self.lock:
            lost = (repository, tag) in self.unannounced
            self.unannounced.discard((repository, tag))
        if lost:
            self._record("push", f"ECR never sends the push event of {repository}:{tag} (best-effort delivery)")
            return
        event = {"version": "0", "id": str(uuid.uuid4()), "detail-type": "ECR Image Action", "source": "aws.ecr",
                 "account": backend.account_id, "time": now_rfc3339(), "region": backend.region_name, "resources": [],
                 "detail": {"result": "SUCCESS", "repository-name": repository, "image-digest": digest,
                            "action-type": "PUSH", "image-tag": tag}}
        # ECR emits the event once the push is done; deliver it after PutImage has answered.
        self.later(0.05, self.put_event, event)

    def _bus_entry(self, backend, entry: dict) -> None:
        bus = (entry.get("EventBusName") or "default").rpartition("/")[2]
        detail = entry.get("Detail") or "{}"
        event = {"version": "0", "id": str(uuid.uuid4()), "detail-type": entry.get("DetailType"),
                 "source": entry.get("Source"), "account": backend.account_id, "time": now_rfc3339(),
                 "region": backend.region_name, "resources": entry.get("Resources") or [],
                 "detail": json.loads(detail)}
        self.later(0.01, self.put_event, event, bus)

    def later(self, delay: float, fn: Callable, *args) -> None:
        """Run fn(*args) after `delay` seconds; the sandbox is busy until it has run."""
        with self.lock:
            self.pending += 1

        def run() -> None:
            try:
                fn(*args)
            finally:
                with self.lock:
                    self.pending -= 1

        threading.Timer(delay, run).start()

    def put_event(self, event: dict, bus: str = "default") -> list[str]:
        """An event reaches the bus. EventBridge delivers at least once: that share of
        events (`duplicates`) is delivered a second time, shortly after. With `hold` set,
        events wait in `held` until `release()`."""
        with self.lock:
            self.events_seen += 1
            if self.hold:
                self.held.append((event, bus))
                return []
        if random.random() < self.duplicates:
            self.later(random.uniform(0.01, 0.2), self.bus.put, event, bus)
        return self.bus.put(event, bus)

    def release(self, order: Callable[[list], list] = lambda held: held) -> int:
        """Deliver the held events, in the order `order` gives them; stop holding."""
        with self.lock:
            held, self.held, self.hold = order(self.held), [], False
        for event, bus in held:
            self.put_event(event, bus)
        return len(held)

    # -- Slack and health URLs ----------------------------------------------------------
    def _start_web(self):
        sandbox = self

        class Web(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self, status: int, body: bytes = b"") -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path.startswith("/slack/"):
                    message = json.loads(body)
                    sandbox.slack.append({"route": self.path.split("/")[2], "body": message})
                    sandbox._record("slack", message.get("text", ""), message)
                    return self._answer(200, b"ok")
                if self.path == "/slack-response":
                    reply = json.loads(body)
                    sandbox.slack_replies.append(reply)
                    sandbox._record("slack", f"(to the clicker only) {reply.get('text', '')}", reply)
                    return self._answer(200, b"ok")
                self._answer(404)

            def do_GET(self) -> None:  # noqa: N802
                if self.path.startswith("/health/"):
                    url = "https://" + self.path.removeprefix("/health/")
                    status = sandbox.health_of(url)
                    return self._answer(status, b"ok" if status < 400 else b"unhealthy: 5xx from the app")
                self._answer(404)

            def log_message(self, *args) -> None:
                pass

        web = QuietServer(("127.0.0.1", 0), Web)
        threading.Thread(target=web.serve_forever, daemon=True).start()
        return web

    def health_of(self, url: str) -> int:
        if url in self.health_override:
            return self.health_override[url]
        # A test route reaches green: the revision the service's PRIMARY deployment rolls out.
        for t in self.test_targets.get(url, []):
            if any(self.behaviour(i) == "unhealthy" for i in self.live_images(t).values()):
                return 503
        for t in self.health_targets.get(url, []):
            for image in self.live_images(t).values():
                if self.behaviour(image) == "unhealthy":
                    return 503
        return 200

    def set_health(self, url: str, status: int | None) -> None:
        """Make a health URL answer `status` whatever runs behind it (None: as the images say)."""
        if status is None:
            self.health_override.pop(url, None)
        else:
            self.health_override[url] = status

    def behaviour(self, image: str) -> str:
        return self.behaviours.get(image.rpartition("@")[2], "healthy")

    # -- the world ----------------------------------------------------------------------
    def load(self, config_text: str, *, slack_routes: tuple[str, ...] = (), concurrency: int = 1,
             timeouts: dict[str, float] | None = None) -> Path:
        """A fresh world for this config: Ferry's table, topic and secret, the ECR
        repositories, and for every target a cluster whose services (each container the
        config names, plus a proxy sidecar) run an initial image; then the three functions."""
        self.stop_functions()
        ferry_moto.reset({})
        self.slack.clear()
        self.behaviours.clear()
        self.health_override.clear()
        self.ecs_agent.seen.clear()
        self.ecs_agent.lag = 0
        self.ecs_agent.started.clear()
        self.duplicates, self.hold, self.held = 0.0, False, []
        self.bus.delivered.clear()
        config = tomllib.loads(config_text)
        self.config = config
        self.config_path = self.workdir / "ferry.toml"
        self.config_path.write_text(re.sub(r'(url\s*=\s*")https?://', rf"\g<1>{self.web_url}/health/", config_text))

        ddb = self.client("dynamodb")
        self.table = "ferry-ledger"
        create_ledger_table(ddb, self.table)
        self.topic = self.client("sns").create_topic(Name="ferry-notifications")["TopicArn"]
        routes = {"default", *slack_routes, *(s["notify"] for s in config["services"] if "notify" in s)}
        # Webhook URLs carry a secret token, as Slack's do; it must never show up anywhere.
        self.webhook_token = uuid.uuid4().hex
        self.webhooks = {r: f"{self.web_url}/slack/{r}/T0FERRY/B0FERRY/{self.webhook_token}" for r in sorted(routes)}
        self.secret = self.client("secretsmanager").create_secret(
            Name="ferry/slack-webhooks", SecretString=json.dumps(self.webhooks))["ARN"]
        # The Slack app's signing secret: the approve function checks every click against it.
        self.signing_secret = uuid.uuid4().hex
        self.signing_secret_arn = self.client("secretsmanager").create_secret(
            Name="ferry/slack-signing", SecretString=self.signing_secret)["ARN"]
        ecr = self.client("ecr")
        for repository in sorted({s["repository"] for s in config["services"]}):
            ecr.create_repository(repositoryName=repository)

        self.targets: list[Target] = []
        self.health_targets = {}
        self.test_targets = {}
        self.traffic = Traffic()
        self.alarmed = set()
        for env in config["environments"]:
            for spec in env["targets"]:
                account = account_of(spec.get("role_arn"))
                ecs = self.client("ecs", spec["region"], account)
                network = ferry_moto.default_network({"account": account, "region": spec["region"]})
                ecs.create_cluster(clusterName=spec["cluster"])
                for svc in config["services"]:
                    if env["name"] not in svc.get("environments", [env["name"]]):
                        continue
                    name = svc["name"].replace("{env}", env["name"])
                    t = Target(env["name"], account, spec["region"], spec["cluster"], name, spec.get("role_arn"),
                               tuple(svc["containers"]))
                    self._create_service(ecs, t, svc["repository"], network)
                    self.targets.append(t)
                    if "health" in svc:
                        self.health_targets.setdefault(health_url(svc["health"]["url"], t), []).append(t)
                    if "test_url" in svc.get("health", {}):
                        self.test_targets.setdefault(health_url(svc["health"]["test_url"], t), []).append(t)
        self.start_functions(concurrency, timeouts or {})
        return self.config_path

    def _create_service(self, ecs, t: Target, repository: str, network: dict) -> None:
        image = self.image(repository, "initial")
        containers = [
            {"name": c, "image": image, "essential": True, "portMappings": [{"containerPort": 8080 + i}],
             "environment": [{"name": "ENVIRONMENT", "value": t.environment}],
             "secrets": [{"name": "DATABASE_URL",
                          "valueFrom": f"arn:aws:ssm:{t.region}:{t.account}:parameter/{t.service}/database-url"}]}
            for i, c in enumerate(t.containers)
        ]
        containers.append({"name": "proxy", "image": SIDECAR_IMAGE, "essential": True,
                           "portMappings": [{"containerPort": 9901}]})
        td = ecs.register_task_definition(
            family=t.service, networkMode="awsvpc", requiresCompatibilities=["FARGATE"], cpu="512", memory="1024",
            executionRoleArn=f"arn:aws:iam::{t.account}:role/{t.service}-execution",
            taskRoleArn=f"arn:aws:iam::{t.account}:role/{t.service}-task",
            containerDefinitions=containers, tags=[{"key": "team", "value": "shop"}],
        )["taskDefinition"]["taskDefinitionArn"]
        ecs.create_service(
            cluster=t.cluster, serviceName=t.service, taskDefinition=td, desiredCount=2, launchType="FARGATE",
            networkConfiguration={"awsvpcConfiguration": {"subnets": network["subnets"],
                                                          "securityGroups": network["securityGroups"]}},
        )

    def function_env(self) -> dict:
        return {**os.environ, **self.aws_env(), "FERRY_CONFIG": str(self.config_path), "FERRY_TABLE": self.table,
                "FERRY_TOPIC_ARN": self.topic, "FERRY_SLACK_SECRET": self.secret, "FERRY_EVENT_BUS": "default",
                "FERRY_SLACK_SIGNING_SECRET": self.signing_secret_arn,
                "FERRY_SLACK_RESPONSE_ORIGIN": f"{self.web_url}/",
                "FERRY_ACCOUNT": HOME_ACCOUNT, "FERRY_AWS_TIMEOUT_SECONDS": str(AWS_TIMEOUT_SECONDS),
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128", "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
                "RUST_LOG": os.environ.get("FERRY_SANDBOX_LOG", "info")}

    def start_functions(self, concurrency: int = 1, timeouts: dict[str, float] | None = None,
                        env: dict[str, str] | None = None) -> None:
        env = {**self.function_env(), **(env or {})}
        for name in ("deploy", "verify", "rollback", "approve"):
            # An access key of its own, so the emulator can tell the functions apart (faults).
            self.functions[name] = Function(self, name, self.bin_dir / f"ferry-{name}",
                                            {**env, "AWS_ACCESS_KEY_ID": caller(name)}, concurrency,
                                            (timeouts or {}).get(name, INVOCATION_SECONDS))

    def inject(self, action: str, kind: str, times: int, function: str | None = None, *,
               processed: bool = False, seconds: float = 60, match: str = "") -> None:
        """The next `times` requests for `action` (`ecs:UpdateService`) from `function` (or
        anyone), whose body holds `match`, fail: kind "throttle" (ThrottlingException), "error"
        (HTTP 500), "timeout" (no answer for `seconds`, or until the caller gives up) or "drop"
        (the connection closed unanswered). With `processed`, the request takes effect and
        only its answer is lost."""
        ferry_moto.FAULTS.append({"action": action, "kind": kind, "times": times, "processed": processed,
                                  "seconds": seconds, "match": match,
                                  "caller": caller(function) if function else None})

    def injected(self) -> list[dict]:
        return list(ferry_moto.INJECTED)

    def set_conflicts(self, *, window: float | None = None, rate: float | None = None) -> None:
        """DynamoDB's conflicts between concurrent writes: how long a transaction holds its items
        before it applies (`window`, seconds), and the chance (`rate`, 0..1) that any transaction
        or single-item write meets a conflict anyway. load() restores the defaults."""
        ferry_moto.set_conflicts({k: v for k, v in (("window", window), ("rate", rate)) if v is not None})

    def conflicts_met(self) -> dict[str, int]:
        """{"transactions": cancelled by a conflict, "writes": single-item writes refused} since load()."""
        return ferry_moto.conflicts({})["met"]

    def stop_functions(self) -> None:
        for f in self.functions.values():
            f.stop()
        self.functions.clear()

    def close(self) -> None:
        self.stop_functions()
        self.ecs_agent.stop_flag.set()
        ECRBackend.put_image._sandbox = None
        self.web.shutdown()
        self.server.shutdown()

    # -- acting in the world ------------------------------------------------------------
    def push(self, repository: str, tag: str, *, health: str = "healthy", migration_exit: int | None = None,
             announced: bool = True) -> str:
        """CI pushes an image: `health` says how it behaves once running (healthy, unhealthy:
        its health URL and test route fail, crash: its tasks never start, alarming: healthy on
        its test route but sets its service's alarm off under production traffic); `migration_exit` is the exit
        code of a migration task run from it; `announced=False` loses its push event (ECR
        sends them best-effort). Returns the image digest."""
        if not announced:
            with self.lock:
                self.unannounced.add((repository, tag))
        # The image's behaviour is known before ECR announces it (the event follows PutImage).
        image = self.client("ecr").put_image(repositoryName=repository, imageManifest=new_manifest(),
                                             imageTag=tag)["image"]
        digest = image["imageId"]["imageDigest"]
        self.behaviours[digest] = health
        if migration_exit is not None:
            ferry_moto.EXIT_CODES_BY_DIGEST[digest] = migration_exit
        self._record("push", f"CI pushes {repository}:{tag} ({short(digest)})"
                             + ("" if health == "healthy" else f" — an image that is {health}"))
        return digest

    def blue_green(self, t: Target, strategy: str = "BLUE_GREEN", *, stages: tuple[str, ...] = ("POST_TEST_TRAFFIC_SHIFT",),
                   bake_minutes: float = 1, canary: tuple[float, float] | None = None,
                   linear: tuple[float, float] | None = None) -> None:
        """The team switches a target's service to `strategy` with Ferry's verify function as its
        lifecycle hook at `stages` (the stack's LifecycleHookTargetArn and LifecycleHookRoleArn):
        `canary` is (canaryPercent, canaryBakeTimeInMinutes), `linear` (stepPercent,
        stepBakeTimeInMinutes)."""
        configuration: dict = {
            "strategy": strategy, "bakeTimeInMinutes": bake_minutes,
            "lifecycleHooks": [{"hookTargetArn": f"arn:aws:lambda:{self.region}:{HOME_ACCOUNT}:function:ferry-verify",
                                "roleArn": f"arn:aws:iam::{HOME_ACCOUNT}:role/ferry-lifecycle-hook",
                                "lifecycleStages": list(stages)}],
        }
        if canary:
            configuration["canaryConfiguration"] = {"canaryPercent": canary[0], "canaryBakeTimeInMinutes": canary[1]}
        if linear:
            configuration["linearConfiguration"] = {"stepPercent": linear[0], "stepBakeTimeInMinutes": linear[1]}
        self.client("ecs", t.region, t.account).update_service(cluster=t.cluster, service=t.service,
                                                              deploymentConfiguration=configuration)
        self._record("ecs", f"{t.service} ({t.region}) now deploys {strategy}, Ferry's hook at {', '.join(stages)}")

    def green_serves(self, account: str, region: str, service, dep: dict) -> None:
        """Green takes production traffic: an image that is "alarming" (healthy on its test route,
        failing real users) sets off its service's first configured alarm, once per deployment."""
        images = self.images_of(account, region, dep["taskDefinition"])
        if dep["id"] in self.alarmed or not any(self.behaviour(i) == "alarming" for i in images):
            return
        self.alarmed.add(dep["id"])
        t = next(t for t in self.targets if (t.account, t.region, t.service) == (account, region, service.name))
        svc = next(s for s in self.config["services"] if s["name"].replace("{env}", t.environment) == t.service)
        names = [a.replace("{env}", t.environment) for a in svc.get("alarms", [])]
        if names:
            self.alarm(names[0], "ALARM", reason=f"5xx from {short(images[0])} under production traffic",
                       account=account, region=region)

    def scale(self, t: Target, desired: int | None = None, *, running: int | None = None, replace: int = 0) -> dict:
        """Autoscaling churn on a target's service: its desired count becomes `desired`, and no
        deployment starts; `running` of the PRIMARY deployment's tasks run (default: as many as
        before, so running lags desired); `replace` running tasks stop and are being replaced (a
        Fargate Spot interruption, a failed health check). Returns the PRIMARY deployment's
        {"id", "desiredCount", "runningCount", "pendingCount", "rolloutState"}."""
        params = {"account": t.account, "region": t.region, "cluster": t.cluster, "service": t.service,
                  "replace": replace}
        params.update({k: v for k, v in (("desired", desired), ("running", running)) if v is not None})
        counts = ferry_moto.scale(params)
        self._record("ecs", f"{t.service} ({t.region}): autoscaling: {counts['desiredCount']} desired, "
                            f"{counts['runningCount']} running" + (f", {replace} being replaced" if replace else ""),
                     counts)
        return counts

    def alarm(self, name: str, state: str, at: datetime | str | None = None, *, reason: str | None = None,
              account: str = HOME_ACCOUNT, region: str | None = None) -> dict:
        """A CloudWatch alarm changes `state` (ALARM, OK, INSUFFICIENT_DATA) at `at` (default now):
        its "CloudWatch Alarm State Change" event, as the harness builds it, goes on the bus, and
        moto's alarm of that name, if any, takes the state. Into ALARM, it also fails the rollout in
        progress of every service whose deployment alarms name it, as ECS does (rolling back if the
        service says so). Returns the event."""
        params = {"account": account, "region": region or self.region, "name": name, "state": state}
        if isinstance(at, datetime):
            params["at"] = (at if at.tzinfo else at.replace(tzinfo=timezone.utc)).isoformat()
        elif at is not None:
            params["at"] = at
        if reason is not None:
            params["reason"] = reason
        event = ferry_moto.alarm(params)
        self.put_event(event)
        if state == "ALARM":
            self.ecs_agent.alarm(account, params["region"], name)
        return event

    def click(self, record: dict, user: str, action: str = "approve", *, secret: str | None = None,
              signed: bool = True, age: float = 0) -> tuple[int, str]:
        """A Slack user's click on the Approve (or Reject) button of `record`'s message: Slack's
        interactivity request (a form-encoded `payload`, signed with the app's signing secret, or
        `secret`, `age` seconds ago) as the approve function's URL receives it (payload format
        2.0: lower-case headers). Returns the URL's status and the text the clicker sees: the
        reply the function posted to the click's response_url ("" if it posted none)."""
        target = f"{record.get('account') or '-'}/{record['region']}/{record['cluster']}/{record['service']}"
        payload = {"type": "block_actions", "user": {"id": user, "username": user.lower()},
                   "actions": [{"type": "button", "action_id": f"ferry_{action}", "value": f"{record['id']} {target}"}],
                   "response_url": f"{self.web_url}/slack-response"}
        body = urllib.parse.urlencode({"payload": json.dumps(payload)})
        timestamp = str(int(time.time() - age))
        headers = {"content-type": "application/x-www-form-urlencoded", "x-slack-request-timestamp": timestamp}
        if signed:
            key = (secret or self.signing_secret).encode()
            digest = hmac.new(key, f"v0:{timestamp}:{body}".encode(), hashlib.sha256).hexdigest()
            headers["x-slack-signature"] = f"v0={digest}"
        event = {"version": "2.0", "routeKey": "$default", "rawPath": "/", "rawQueryString": "", "headers": headers,
                 "requestContext": {"http": {"method": "POST", "path": "/", "sourceIp": "3.3.3.3"}},
                 "body": body, "isBase64Encoded": False}
        self._record("event", f"Slack click {action} by {user} → ferry-approve (function URL)", {"event": event})
        replies = len(self.slack_replies)
        answer = self.functions["approve"].invoke_sync(event)["body"]
        said = [r.get("text", "") for r in self.slack_replies[replies:]]
        return answer["statusCode"], said[-1] if said else ""

    def tick(self) -> list[str]:
        """The template's enabled schedules fire once: each scheduled function gets EventBridge's
        "Scheduled Event", or the rule's constant input, as its rule would send it. Returns the
        functions invoked."""
        invoked = []
        for name, expression, enabled, given in iam.schedule_events(self.template, self.bus.parameters):
            if not enabled:
                continue
            event = given or {"version": "0", "id": str(uuid.uuid4()), "detail-type": "Scheduled Event",
                              "source": "aws.events", "account": HOME_ACCOUNT, "time": now_rfc3339(),
                              "region": self.region, "detail": {},
                              "resources": [f"arn:aws:events:{self.region}:{HOME_ACCOUNT}:rule/ferry-{name}-schedule"]}
            self._record("event", f"schedule {expression} → ferry-{name}", {"event": event, "routed": [name]})
            with self.lock:
                self.events_seen += 1
            self.functions[name].invoke(event)
            invoked.append(name)
        return invoked

    def image(self, repository: str, ref: str) -> str:
        """An image of Ferry's ECR repository by digest (pinned, as Ferry deploys) or tag."""
        return f"{HOME_ACCOUNT}.dkr.ecr.{self.region}.amazonaws.com/{repository}{'@' if ref.startswith('sha256:') else ':'}{ref}"

    def ferry(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """The operator's CLI, against this sandbox."""
        env = {**os.environ, **self.aws_env(), "FERRY_CONFIG": str(self.config_path), "FERRY_TABLE": self.table,
               "NO_COLOR": "1"}
        proc = subprocess.run([str(self.bin_dir / "ferry"), "--poll-seconds", "0.2", *args], env=env,
                              capture_output=True, text=True, timeout=120)
        if check and proc.returncode != 0:
            raise RuntimeError(f"ferry {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
        return proc

    # -- waiting ------------------------------------------------------------------------
    def busy(self) -> bool:
        with self.lock:
            if self.pending:
                return True
        return any(f.busy() for f in self.functions.values()) or self.ecs_agent.busy()

    def settle(self, timeout: float = 60, quiet: float = 0.3) -> None:
        """Wait until nothing is in flight: no invocation, retry or rollout pending, and no
        new event for `quiet` seconds."""
        deadline = time.monotonic() + timeout
        calm_since, seen = None, -1
        while time.monotonic() < deadline:
            with self.lock:
                events = self.events_seen
            if self.busy() or events != seen:
                calm_since, seen = None, events
            elif calm_since is None:
                calm_since = time.monotonic()
            elif time.monotonic() - calm_since >= quiet:
                return
            time.sleep(0.05)
        raise TimeoutError(f"the sandbox did not settle in {timeout:.0f} s: "
                           + ", ".join(f"{n}: {len(f.queue)} queued, {len(f.in_flight)} running"
                                       for n, f in self.functions.items()))

    # -- looking at the world -----------------------------------------------------------
    def deployments(self, **where: str) -> list[dict]:
        """The ledger's deployment records (oldest first), optionally filtered by attributes."""
        items, kw = [], {"TableName": self.table}
        ddb = self.client("dynamodb")
        while True:
            page = ddb.scan(**kw)
            items += page["Items"]
            if "LastEvaluatedKey" not in page:
                break
            kw["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        records = [{k: next(iter(v.values())) for k, v in item.items()} for item in items]
        records = [r for r in records if r.get("kind") == "deployment"
                   and all(r.get(k) == v for k, v in where.items())]
        return sorted(records, key=lambda r: (r["created_at"], r["id"]))

    def quarantined(self) -> set[str]:
        """Every digest the ledger holds quarantined, on any target."""
        items = self.client("dynamodb").scan(TableName=self.table, FilterExpression="sk = :h",
                                             ExpressionAttributeValues={":h": {"S": "HEAD"}})["Items"]
        return {d for item in items for d in item.get("quarantine", {}).get("SS", [])}

    def service(self, t: Target) -> dict:
        return self.client("ecs", t.region, t.account).describe_services(
            cluster=t.cluster, services=[t.service])["services"][0]

    def task_definition(self, t: Target, arn: str) -> dict:
        return self.client("ecs", t.region, t.account).describe_task_definition(taskDefinition=arn)["taskDefinition"]

    def live_images(self, t: Target) -> dict[str, str]:
        """Container name -> image of the service's PRIMARY deployment."""
        backend = ecs_backends[t.account][t.region]
        service = backend._get_service(t.cluster, t.service)
        primary = next(d for d in service.deployments if d["status"] == "PRIMARY")
        return {c["name"]: c["image"] for c in backend.describe_task_definition(primary["taskDefinition"]).container_definitions}

    def tasks(self, t: Target) -> list[dict]:
        """One-off tasks run in the target's cluster (migrations): their revision and command."""
        backend = ecs_backends[t.account][t.region]
        return [
            {"task_definition": task.task_definition_arn, "started_by": task.started_by,
             "command": next((o.get("command") for o in task.overrides.get("containerOverrides", []) if "command" in o), None)}
            for task in backend.tasks.get(t.cluster, {}).values()
        ]

    def images_of(self, account: str, region: str, task_definition: str) -> list[str]:
        td = ecs_backends[account][region].describe_task_definition(task_definition)
        return [c.get("image", "") for c in td.container_definitions]

    def target(self, service: str, environment: str | None = None, region: str | None = None) -> Target:
        found = [t for t in self.targets if t.service == service and environment in (None, t.environment)
                 and region in (None, t.region)]
        if len(found) != 1:
            raise LookupError(f"{len(found)} targets named {service} ({environment}, {region})")
        return found[0]

    def sns_messages(self) -> list[dict]:
        return ferry_moto.published({"topic": self.topic})["messages"]

    def dead_letters(self) -> list[dict]:
        return [d for f in self.functions.values() for d in f.dead_letters]

    def results(self, function: str) -> list[dict]:
        return list(self.functions[function].results)

    # -- the timeline -------------------------------------------------------------------
    def _record(self, kind: str, text: str, data: dict | None = None) -> None:
        record = Record(time.perf_counter() - self.started, kind, text, data or {})
        with self.lock:
            self.timeline.append(record)
        if self.on_record:
            self.on_record(record)

    def _on_event(self, event: dict, routed: list[str]) -> None:
        detail = event.get("detail") or {}
        what = detail.get("eventName") or detail.get("image-tag") or ""
        self._record("event", f"{event.get('source')} {event.get('detail-type')} {what} → "
                              + (", ".join(f"ferry-{n}" for n in routed) or "no rule matches"),
                     {"event": event, "routed": routed})

    def _on_invocation(self, result: dict) -> None:
        body = result["body"]
        text = outcome_of(body) if result["ok"] else f"error (attempt {result['attempt']}): {body}"
        self._record("invoke", f"ferry-{result['function']}: {text}", result)


def outcome_of(body) -> str:
    """The handler's outcome, by name: deploy and verify answer `{"outcome": "Succeeded", "detail": ...}`,
    rollback `{"outcomes": [{"outcome": "RollingBack", "detail": ...}, ...]}`."""
    if isinstance(body, dict) and "outcome" in body:
        return str(body["outcome"])
    if isinstance(body, dict) and isinstance(body.get("outcomes"), list):
        return ", ".join(str(o.get("outcome")) for o in body["outcomes"] if isinstance(o, dict)) or "nothing"
    return json.dumps(body)
