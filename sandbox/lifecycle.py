"""ECS's blue/green, linear and canary deployments, as the sandbox plays them.

A service whose deploymentConfiguration.strategy is BLUE_GREEN, LINEAR or CANARY does not roll
tasks over: ECS starts green beside blue and walks the lifecycle stages in order, invoking the
service's lifecycle hooks at each stage they name
("Lifecycle hooks for Amazon ECS service deployments",
https://docs.aws.amazon.com/AmazonECS/latest/developerguide/deployment-lifecycle-hooks.html):

  PRE_SCALE_UP → POST_SCALE_UP → TEST_TRAFFIC_SHIFT → POST_TEST_TRAFFIC_SHIFT
  → (PRE_PRODUCTION_TRAFFIC_SHIFT → PRODUCTION_TRAFFIC_SHIFT) per traffic step
  → POST_PRODUCTION_TRAFFIC_SHIFT → bake time → COMPLETED

A hook is a Lambda invoked synchronously with the stage's payload; SUCCEEDED goes on, FAILED
(or an error, or no valid hookStatus) rolls back to blue at once, IN_PROGRESS is invoked again
after callBackDelay seconds (default 30)
(https://docs.aws.amazon.com/AmazonECS/latest/developerguide/lambda-lifecycle-hooks.html).
Production traffic moves at PRODUCTION_TRAFFIC_SHIFT: all at once (BLUE_GREEN), in steps of
linearConfiguration.stepPercent each baked stepBakeTimeInMinutes (LINEAR), or
canaryConfiguration.canaryPercent baked canaryBakeTimeInMinutes then the rest (CANARY)
(https://docs.aws.amazon.com/AmazonECS/latest/developerguide/deployment-type-blue-green.html,
https://docs.aws.amazon.com/AmazonECS/latest/developerguide/canary-deployment.html,
https://docs.aws.amazon.com/AmazonECS/latest/developerguide/linear-deployment.html); blue stays
up for bakeTimeInMinutes after, then the deployment completes. Every change of the production
weights is kept (`Lifecycle.traffic`), so a test can prove how much traffic green ever took.

Not played: the load balancer itself (the sandbox's health URLs answer from the images instead),
RECONCILE_SERVICE, hook timeouts (ECS's default is 24 hours), and hooks during ECS's rollback.
"""

from __future__ import annotations

import threading
import time
import uuid

import ferry_moto  # noqa: E402  (tests/harness, on the path the sandbox sets)

STAGES = ("PRE_SCALE_UP", "POST_SCALE_UP", "TEST_TRAFFIC_SHIFT", "POST_TEST_TRAFFIC_SHIFT",
          "PRE_PRODUCTION_TRAFFIC_SHIFT", "PRODUCTION_TRAFFIC_SHIFT", "POST_PRODUCTION_TRAFFIC_SHIFT")
#: The stages whose payload carries traffic weights (empty at the others).
SHIFTING = ("TEST_TRAFFIC_SHIFT", "PRE_PRODUCTION_TRAFFIC_SHIFT", "PRODUCTION_TRAFFIC_SHIFT")
#: Sandbox seconds per second ECS waits (callBackDelay, bake times): ECS's minutes become moments.
TIME_SCALE = 0.01
#: At most this many invocations of one hook at one stage before the sandbox gives up on it.
MAX_CALLS = 100


def strategy_of(service) -> str:
    return ((getattr(service, "deployment_configuration", None) or {}).get("strategy") or "ROLLING").upper()


class Traffic:
    """Production traffic weights per service revision over time, for every service."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.log: dict[str, list[tuple[float, dict[str, float]]]] = {}  # service ARN -> (time, weights)

    def set(self, service_arn: str, weights: dict[str, float]) -> None:
        with self.lock:
            self.log.setdefault(service_arn, []).append((time.perf_counter(), dict(weights)))

    def of(self, service_arn: str) -> list[tuple[float, dict[str, float]]]:
        with self.lock:
            return list(self.log.get(service_arn, []))

    def exposure(self, service_arn: str, revision: str, until: float | None = None) -> tuple[float, float]:
        """The most production traffic `revision` took (percent) and its exposure, percent ×
        sandbox seconds, up to `until` (default now)."""
        entries = self.of(service_arn)
        end = until if until is not None else time.perf_counter()
        peak, area = 0.0, 0.0
        for i, (at, weights) in enumerate(entries):
            weight = weights.get(revision, 0.0)
            nxt = entries[i + 1][0] if i + 1 < len(entries) else end
            peak, area = max(peak, weight), area + weight * max(0.0, nxt - at)
        return peak, area


class Lifecycle(threading.Thread):
    """One blue/green, linear or canary deployment, from green's start to COMPLETED or to the
    rollback a hook's FAILED (or a stop) caused."""

    def __init__(self, sandbox, account: str, region: str, service, dep: dict, on_done) -> None:
        super().__init__(daemon=True)
        self.sandbox, self.account, self.region, self.service, self.dep = sandbox, account, region, service, dep
        self.on_done = on_done
        self.config = service.deployment_configuration or {}
        self.green = ferry_moto.REVISION_OF.get(dep["id"])
        blue = next((d for d in service.deployments if d["status"] == "ACTIVE"), None)
        self.blue = blue and ferry_moto.REVISION_OF.get(blue["id"])
        self.weights = {r: w for r, w in ((self.blue, 100.0), (self.green, 0.0)) if r}
        self.ended = False

    def run(self) -> None:
        try:
            self._run()
        except Exception as exc:  # noqa: BLE001  (the timeline says what went wrong)
            self.sandbox._record("ecs", f"{self.service.name}: lifecycle stopped: {exc!r}")
        finally:
            self.on_done(self.dep["id"])

    def say(self, text: str) -> None:
        self.sandbox._record("ecs", f"{self.service.name} ({self.region}): {text}")

    def shift(self, green_percent: float) -> None:
        if self.blue:
            self.weights[self.blue] = 100.0 - green_percent
        self.weights[self.green] = green_percent
        self.sandbox.traffic.set(self.service.arn, self.weights)
        self.say(f"production traffic: green {green_percent:g}%")

    def stopped(self) -> bool:
        """Whether the deployment is no longer rolling out (stopped, or failed by an alarm)."""
        if self.dep["status"] == "PRIMARY" and self.dep["rolloutState"] == "IN_PROGRESS":
            return False
        if self.ended:
            return True
        self.ended = True
        if self.weights.get(self.green):
            self.shift(0.0)  # ECS routes production traffic back to blue first
        self.say(f"deployment {self.dep['id'][-6:]} {self.dep['rolloutState']}: the lifecycle ends")
        return True

    def wait(self, seconds: float) -> bool:
        """Sleep `seconds` of ECS's time, watching for a stop and for green misbehaving under
        production traffic; False if the deployment stopped meanwhile."""
        end = time.monotonic() + seconds * TIME_SCALE
        while time.monotonic() < end:
            if self.stopped():
                return False
            if self.weights.get(self.green):
                self.sandbox.green_serves(self.account, self.region, self.service, self.dep)
            time.sleep(0.01)
        return not self.stopped()

    def _run(self) -> None:
        strategy = strategy_of(self.service)
        self.sandbox.traffic.set(self.service.arn, self.weights)
        self.say(f"{strategy} deployment {self.dep['id'][-6:]} starts green beside blue")
        for stage in STAGES:
            if self.stopped():
                return
            if stage == "PRE_PRODUCTION_TRAFFIC_SHIFT":
                if not self.production_shift(strategy):
                    return
            elif stage != "PRODUCTION_TRAFFIC_SHIFT" and not self.hooks(stage):
                return
        if not self.wait(60 * float(self.config.get("bakeTimeInMinutes") or 0)):
            return
        with self.sandbox.ecs_agent.acting:
            if self.stopped():
                return
            event = ferry_moto.complete({"account": self.account, "region": self.region,
                                         "cluster": self.service.cluster_name, "service": self.service.name})
        self.say(f"deployment {self.dep['id'][-6:]} completed after the bake time; blue stops")
        self.sandbox.put_event(event)

    def production_shift(self, strategy: str) -> bool:
        """PRE_PRODUCTION_TRAFFIC_SHIFT and PRODUCTION_TRAFFIC_SHIFT, once per traffic step,
        each step baked; False if a hook failed or the deployment stopped."""
        if strategy == "CANARY":
            canary = self.config.get("canaryConfiguration") or {}
            steps = [(float(canary.get("canaryPercent", 10)), float(canary.get("canaryBakeTimeInMinutes", 0)))]
        elif strategy == "LINEAR":
            linear = self.config.get("linearConfiguration") or {}
            step = float(linear.get("stepPercent", 10))
            steps = [(min(100.0, step * n), float(linear.get("stepBakeTimeInMinutes", 0)))
                     for n in range(1, int(100 // step) + 1)]
        else:
            steps = []
        steps = [(p, b) for p, b in steps if p < 100] + [(100.0, 0.0)]
        for percent, bake in steps:
            if not self.hooks("PRE_PRODUCTION_TRAFFIC_SHIFT"):
                return False
            self.shift(percent)
            if not self.hooks("PRODUCTION_TRAFFIC_SHIFT") or not self.wait(60 * bake):
                return False
        return not self.stopped()

    def hooks(self, stage: str) -> bool:
        """Every hook of the service at `stage`, each until it decides; False if one FAILED
        (ECS then rolls back) or the deployment stopped meanwhile."""
        for hook in self.config.get("lifecycleHooks") or []:
            if stage not in (hook.get("lifecycleStages") or []):
                continue
            function = hook.get("hookTargetArn", "").rpartition(":function:")[2].removeprefix("ferry-")
            execution = str(uuid.uuid4())
            for _ in range(MAX_CALLS):
                if self.stopped():
                    return False
                result = self.sandbox.functions[function].invoke_sync(self.payload(stage, execution))
                body = result["body"] if result["ok"] and isinstance(result["body"], dict) else {}
                status = body.get("hookStatus")
                if status == "SUCCEEDED":
                    self.say(f"{stage}: hook ferry-{function} SUCCEEDED")
                    break
                if status == "IN_PROGRESS":
                    if not self.wait(float(body.get("callBackDelay", 30))):
                        return False
                    continue
                self.say(f"{stage}: hook ferry-{function} answered {status or result['body']!r}: rolling back")
                return self.fail()
            else:
                self.say(f"{stage}: hook ferry-{function} never decided: rolling back")
                return self.fail()
        return True

    def fail(self) -> bool:
        with self.sandbox.ecs_agent.acting:
            if self.stopped():
                return False
            params = {"account": self.account, "region": self.region, "cluster": self.service.cluster_name,
                      "service": self.service.name, "cause": "hook"}
            result = ferry_moto.fail(params)
            self.ended = True
            if self.weights.get(self.green):
                self.shift(0.0)
        for event in result["events"]:
            self.sandbox.put_event(event)
        return False

    def payload(self, stage: str, execution: str) -> dict:
        shifting = stage in SHIFTING
        test_weights = {r: 100 if r == self.green else 0 for r in self.weights} if shifting else {}
        return {
            "executionId": execution,
            "lifecycleStage": stage,
            "resourceArn": ferry_moto.service_deployment_arn(self.service, self.dep["id"]),
            "executionDetails": {
                "serviceArn": self.service.arn,
                "targetServiceRevisionArn": self.green,
                "testTrafficWeights": test_weights,
                "productionTrafficWeights": dict(self.weights) if shifting else {},
            },
        }
