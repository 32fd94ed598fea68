"""The harness's ECS and CloudWatch behaviours against boto3, the real SDK, with the harness served
in-process.

Run from the repository root: python3 -m pytest tests/harness -q

ECS fails a deployment only by a method the service turned on and rolls it back only when that
method's rollback is on and an earlier deployment is COMPLETED; autoscaling moves counts without a
deployment; DescribeServices can lag ECS's events; events can carry a service's old short ARN; and
alarms change state with CloudWatch's event, remembering the state they left.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ferry_moto  # noqa: E402
from ferry_moto import control  # noqa: E402

ACCOUNT, REGION = ferry_moto.DEFAULT_ACCOUNT, ferry_moto.DEFAULT_REGION
CLUSTER, SERVICE = "shop-staging", "shop-staging-api"
FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "events" / "cloudwatch-alarm-state-change.json"
BREAKER_ROLLBACK = {"deploymentCircuitBreaker": {"enable": True, "rollback": True}}


def client(endpoint: str, service: str, region: str = REGION):
    return boto3.client(service, endpoint_url=endpoint, region_name=region, aws_access_key_id="testing",
                        aws_secret_access_key="testing", config=Config(retries={"total_max_attempts": 1}))


class World:
    """A fresh emulator with one cluster, ready to create the service a test needs."""

    def __init__(self, endpoint: str):
        assert control(endpoint, "POST", "/_ferry/reset")[0] == 200
        self.endpoint = endpoint
        self.ecs = client(endpoint, "ecs")
        self.ecs.create_cluster(clusterName=CLUSTER)
        self.network = control(endpoint, "GET", "/_ferry/ec2/default-network")[1]

    def task_definition(self, image: str) -> str:
        return self.ecs.register_task_definition(
            family=SERVICE, networkMode="awsvpc", requiresCompatibilities=["FARGATE"], cpu="256", memory="512",
            containerDefinitions=[{"name": "api", "image": image, "essential": True}],
        )["taskDefinition"]["taskDefinitionArn"]

    def create(self, deployment_configuration: dict | None = None) -> str:
        """The service, steady on its first revision; returns its COMPLETED deployment's id."""
        kw = {"deploymentConfiguration": deployment_configuration} if deployment_configuration else {}
        self.ecs.create_service(
            cluster=CLUSTER, serviceName=SERVICE, taskDefinition=self.task_definition("shop/api:v1"), desiredCount=2,
            launchType="FARGATE", networkConfiguration={"awsvpcConfiguration": {
                "subnets": self.network["subnets"], "securityGroups": self.network["securityGroups"]}}, **kw)
        return self.primary()["id"]

    def deploy(self, image: str, deployment_configuration: dict | None = None) -> str:
        """UpdateService to a new revision; returns the new deployment's id."""
        kw = {"deploymentConfiguration": deployment_configuration} if deployment_configuration else {}
        self.ecs.update_service(cluster=CLUSTER, service=SERVICE, taskDefinition=self.task_definition(image), **kw)
        return self.primary()["id"]

    def describe(self) -> dict:
        return self.ecs.describe_services(cluster=CLUSTER, services=[SERVICE])["services"][0]

    def primary(self, service: dict | None = None) -> dict:
        return next(d for d in (service or self.describe())["deployments"] if d["status"] == "PRIMARY")

    def deployment(self, deployment_id: str) -> dict:
        return next(d for d in self.describe()["deployments"] if d["id"] == deployment_id)

    def control(self, path: str, body: dict | None = None, expect: int = 200) -> dict:
        status, answer = control(self.endpoint, "POST", path, {"cluster": CLUSTER, "service": SERVICE, **(body or {})})
        assert status == expect, answer
        return answer


@pytest.fixture
def world(endpoint) -> World:
    return World(endpoint)


def reasons(answer: dict) -> list[tuple[str, str]]:
    return [(e["detail"]["eventName"], e["detail"]["reason"]) for e in answer["events"]]


# --- ECS's own rollbacks, as the service's settings say -----------------------------------------

def test_the_circuit_breaker_rolls_back_to_the_last_completed_deployment_when_its_rollback_is_on(world) -> None:
    good = world.create(BREAKER_ROLLBACK)
    good_revision = world.describe()["taskDefinition"]
    bad = world.deploy("shop/api:v2")

    failed = world.control("/_ferry/ecs/fail")
    assert reasons(failed) == [
        ("SERVICE_DEPLOYMENT_FAILED", "ECS deployment circuit breaker: task failed to start."),
        ("SERVICE_DEPLOYMENT_IN_PROGRESS", f"ECS deployment circuit breaker: rolling back to deploymentId {good}."),
    ]
    assert (failed["failedDeploymentId"], failed["rolledBackToDeploymentId"]) == (bad, good)
    primary = world.primary()
    assert primary["id"] == failed["rollbackDeploymentId"] == failed["events"][1]["detail"]["deploymentId"]
    assert (primary["taskDefinition"], primary["rolloutState"]) == (good_revision, "IN_PROGRESS")
    assert world.deployment(bad)["rolloutState"] == "FAILED"


def test_a_circuit_breaker_without_rollback_fails_the_deployment_and_nothing_rolls_back(world) -> None:
    world.create({"deploymentCircuitBreaker": {"enable": True, "rollback": False}})
    bad = world.deploy("shop/api:v2")
    bad_revision = world.describe()["taskDefinition"]

    failed = world.control("/_ferry/ecs/fail")
    assert [name for name, _ in reasons(failed)] == ["SERVICE_DEPLOYMENT_FAILED"]
    assert failed["rollbackDeploymentId"] is None
    primary = world.primary()
    assert (primary["id"], primary["rolloutState"], primary["taskDefinition"]) == (bad, "FAILED", bad_revision)


def test_ecs_fails_no_deployment_by_a_method_the_service_has_off(world) -> None:
    world.create()  # CreateService's defaults: no circuit breaker, no alarms
    bad = world.deploy("shop/api:v2")
    world.control("/_ferry/ecs/fail", expect=409)
    world.control("/_ferry/ecs/fail", {"cause": "alarm", "alarms": ["shop-staging-api-5xx"]}, expect=409)
    assert (world.primary()["id"], world.primary()["rolloutState"]) == (bad, "IN_PROGRESS")


def test_an_alarm_fails_a_deployment_only_if_ecs_watches_it_and_rolls_back_only_with_the_alarms_rollback(world) -> None:
    good = world.create({"deploymentCircuitBreaker": {"enable": True, "rollback": True},
                         "alarms": {"alarmNames": ["shop-staging-api-5xx"], "enable": True, "rollback": False}})
    first_bad = world.deploy("shop/api:v2")
    world.control("/_ferry/ecs/fail", {"cause": "alarm", "alarms": ["shop-staging-api-latency"]}, expect=409)
    assert world.primary()["rolloutState"] == "IN_PROGRESS"

    # The alarm failed it, and the alarms' rollback is off: the circuit breaker's rollback does not count.
    failed = world.control("/_ferry/ecs/fail", {"cause": "alarm", "alarms": ["shop-staging-api-5xx"]})
    assert [name for name, _ in reasons(failed)] == ["SERVICE_DEPLOYMENT_FAILED"]
    assert "shop-staging-api-5xx" in failed["events"][0]["detail"]["reason"]
    assert (world.primary()["id"], world.primary()["rolloutState"]) == (first_bad, "FAILED")

    second_bad = world.deploy("shop/api:v3", {"deploymentCircuitBreaker": {"enable": True, "rollback": False},
                                              "alarms": {"alarmNames": ["shop-staging-api-5xx"], "enable": True,
                                                         "rollback": True}})
    failed = world.control("/_ferry/ecs/fail", {"cause": "alarm",
                                                "alarms": ["shop-staging-api-latency", "shop-staging-api-5xx"]})
    assert [name for name, _ in reasons(failed)] == ["SERVICE_DEPLOYMENT_FAILED", "SERVICE_DEPLOYMENT_IN_PROGRESS"]
    assert (failed["failedDeploymentId"], failed["rolledBackToDeploymentId"]) == (second_bad, good)
    assert world.primary()["id"] == failed["rollbackDeploymentId"]


def test_a_failed_rollback_is_not_rolled_back_again(world) -> None:
    world.create(BREAKER_ROLLBACK)
    world.deploy("shop/api:v2")
    rollback = world.control("/_ferry/ecs/fail")["rollbackDeploymentId"]
    assert rollback is not None

    # The deployment rolled back to is IN_PROGRESS again, so no COMPLETED one is left.
    again = world.control("/_ferry/ecs/fail")
    assert again["failedDeploymentId"] == rollback
    assert [name for name, _ in reasons(again)] == ["SERVICE_DEPLOYMENT_FAILED"]
    assert (world.primary()["id"], world.primary()["rolloutState"]) == (rollback, "FAILED")
    world.control("/_ferry/ecs/fail", expect=409)  # a FAILED deployment fails no more


def test_rollback_false_holds_back_the_rollback_the_settings_call_for(world) -> None:
    world.create(BREAKER_ROLLBACK)
    bad = world.deploy("shop/api:v2")
    failed = world.control("/_ferry/ecs/fail", {"rollback": False})
    assert [name for name, _ in reasons(failed)] == ["SERVICE_DEPLOYMENT_FAILED"]
    assert (world.primary()["id"], world.primary()["rolloutState"]) == (bad, "FAILED")


# --- autoscaling churn ---------------------------------------------------------------------------

def test_autoscaling_moves_the_counts_under_a_rollout_without_starting_a_deployment(world) -> None:
    world.create(BREAKER_ROLLBACK)
    rolling = world.deploy("shop/api:v2")
    before = world.describe()
    arn = before["serviceArn"]
    rollouts = list(ferry_moto.ROLLOUTS[arn])

    scaled = world.control("/_ferry/ecs/scale", {"desired": 4})
    after = world.describe()
    assert after["desiredCount"] == 4
    assert [d["id"] for d in after["deployments"]] == [d["id"] for d in before["deployments"]]
    assert ferry_moto.ROLLOUTS[arn] == rollouts, "no deployment started"
    assert after["taskDefinition"] == before["taskDefinition"]
    primary = world.primary(after)
    assert (primary["id"], primary["rolloutState"]) == (rolling, "IN_PROGRESS")
    assert (primary["desiredCount"], primary["runningCount"]) == (4, 0), "running lags desired"
    assert scaled["desiredCount"] == 4 and scaled["id"] == rolling

    world.control("/_ferry/ecs/scale", {"running": 3})
    primary = world.primary()
    assert (primary["desiredCount"], primary["runningCount"], primary["pendingCount"]) == (4, 3, 1)

    # A Fargate Spot interruption: two running tasks stop and are being replaced.
    world.control("/_ferry/ecs/scale", {"replace": 2})
    service = world.describe()
    primary = world.primary(service)
    assert (primary["desiredCount"], primary["runningCount"], primary["pendingCount"]) == (4, 1, 3)
    assert service["runningCount"] == sum(d["runningCount"] for d in service["deployments"])
    world.control("/_ferry/ecs/scale", {"replace": 2}, expect=400)
    assert ferry_moto.ROLLOUTS[arn] == rollouts


def test_scaling_a_steady_service_leaves_its_deployment_completed(world) -> None:
    steady = world.create()
    world.control("/_ferry/ecs/scale", {"desired": 1, "running": 2})
    primary = world.primary()
    assert (primary["id"], primary["rolloutState"]) == (steady, "COMPLETED")
    assert (primary["desiredCount"], primary["runningCount"]) == (1, 2)


# --- DescribeServices lagging ECS's events; old short ARNs -----------------------------------------

def test_describe_services_can_lag_the_completion_event(world) -> None:
    world.create(BREAKER_ROLLBACK)
    rolling = world.deploy("shop/api:v2")
    event = world.control("/_ferry/ecs/complete", {"lag": 2})
    assert (event["detail"]["eventName"], event["detail"]["deploymentId"]) == ("SERVICE_DEPLOYMENT_COMPLETED", rolling)

    for _ in range(2):
        service = world.describe()
        assert (world.primary(service)["id"], world.primary(service)["rolloutState"]) == (rolling, "IN_PROGRESS")
        assert len(service["deployments"]) == 2, "the old deployment still shows too"
    service = world.describe()
    assert world.primary(service)["rolloutState"] == "COMPLETED"
    assert len(service["deployments"]) == 1


def test_a_completion_without_lag_shows_at_once(world) -> None:
    world.create()
    world.deploy("shop/api:v2")
    world.control("/_ferry/ecs/complete")
    assert world.primary()["rolloutState"] == "COMPLETED"


def test_events_can_name_the_service_by_its_old_short_arn(world) -> None:
    world.create(BREAKER_ROLLBACK)
    short = f"arn:aws:ecs:{REGION}:{ACCOUNT}:service/{SERVICE}"
    world.deploy("shop/api:v2")
    failed = world.control("/_ferry/ecs/fail", {"old_arn": True})
    assert [e["resources"] for e in failed["events"]] == [[short], [short]]
    completed = world.control("/_ferry/ecs/complete", {"old_arn": True})
    assert completed["resources"] == [short]

    world.deploy("shop/api:v3")
    assert world.control("/_ferry/ecs/complete")["resources"] == [world.describe()["serviceArn"]]
    assert world.describe()["serviceArn"] != short


# --- CloudWatch alarm state changes --------------------------------------------------------------

def shape(value):
    """The keys of every object, nested; arrays and values by their type."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    return type(value).__name__


def alarm(endpoint: str, body: dict, expect: int = 200) -> dict:
    status, answer = control(endpoint, "POST", "/_ferry/cloudwatch/alarm", body)
    assert status == expect, answer
    return answer


def test_an_alarm_state_change_is_cloudwatchs_event_and_remembers_the_state_it_left(world) -> None:
    name = "shop-staging-api-5xx"
    event = alarm(world.endpoint, {"name": name, "state": "ALARM", "at": "2026-11-16T02:10:00Z"})
    assert shape(event) == shape(json.loads(FIXTURE.read_text()))
    assert (event["source"], event["detail-type"]) == ("aws.cloudwatch", "CloudWatch Alarm State Change")
    assert (event["account"], event["region"], event["time"]) == (ACCOUNT, REGION, "2026-11-16T02:10:00Z")
    assert event["resources"] == [f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:{name}"]
    assert (event["detail"]["state"]["value"], event["detail"]["state"]["timestamp"]) == (
        "ALARM", "2026-11-16T02:10:00.000+0000")
    first_previous = event["detail"]["previousState"]
    assert first_previous["value"] == "OK" and first_previous["timestamp"] < "2026-11-16T02:10:00.000+0000"

    back = alarm(world.endpoint, {"name": name, "state": "OK", "at": "2026-11-16T03:25:30.250+01:00",
                                  "reason": "Threshold Crossed: back under"})
    assert back["detail"]["previousState"] == event["detail"]["state"]
    assert back["detail"]["state"] == {"value": "OK", "reason": "Threshold Crossed: back under",
                                       "timestamp": "2026-11-16T02:25:30.250+0000"}

    alarm(world.endpoint, {"name": name, "state": "OK"}, expect=409)  # no change, no event
    alarm(world.endpoint, {"name": name, "state": "ALARM", "at": "2026-11-16T01:00:00Z"}, expect=400)
    alarm(world.endpoint, {"name": name, "state": "RED"}, expect=400)
    # Each account and region has its own alarms; the reset forgets them.
    other = alarm(world.endpoint, {"name": name, "state": "ALARM", "region": "eu-west-1"})
    assert (other["region"], other["detail"]["previousState"]["value"]) == ("eu-west-1", "OK")
    assert control(world.endpoint, "POST", "/_ferry/reset")[0] == 200
    assert alarm(world.endpoint, {"name": name, "state": "ALARM"})["detail"]["previousState"]["value"] == "OK"


def test_an_alarm_state_change_sets_the_state_of_cloudwatchs_alarm_of_that_name(world) -> None:
    cloudwatch = client(world.endpoint, "cloudwatch")
    name = "shop-staging-api-5xx"
    cloudwatch.put_metric_alarm(
        AlarmName=name, AlarmDescription="5xx responses from shop-staging-api", Namespace="AWS/ApplicationELB",
        MetricName="HTTPCode_Target_5XX_Count", Statistic="Sum", Period=60, EvaluationPeriods=1, Threshold=5.0,
        ComparisonOperator="GreaterThanThreshold")

    event = alarm(world.endpoint, {"name": name, "state": "ALARM", "at": "2026-11-16T02:10:00Z"})
    assert event["detail"]["configuration"]["description"] == "5xx responses from shop-staging-api"
    described = cloudwatch.describe_alarms(AlarmNames=[name])["MetricAlarms"][0]
    assert (described["StateValue"], described["StateReason"]) == ("ALARM", event["detail"]["state"]["reason"])
    assert described["StateUpdatedTimestamp"].isoformat().startswith("2026-11-16T02:10:00")


# --- Service revisions and lifecycle hook calls --------------------------------------------------


def test_every_deployment_has_a_service_revision_a_hook_call_names_with_its_traffic(world) -> None:
    world.create()
    blue = world.describe()["taskDefinition"]
    world.deploy("shop/api:v2")
    green = world.describe()["taskDefinition"]
    call = world.control("/_ferry/ecs/hook-call", {"stage": "POST_TEST_TRAFFIC_SHIFT", "execution": "x1"})
    assert (call["executionId"], call["lifecycleStage"]) == ("x1", "POST_TEST_TRAFFIC_SHIFT")
    details = call["executionDetails"]
    assert details["serviceArn"] == world.describe()["serviceArn"]
    revision = details["targetServiceRevisionArn"]
    assert f":service-revision/{CLUSTER}/{SERVICE}/" in revision
    assert details["testTrafficWeights"] == {} and details["productionTrafficWeights"] == {}, "none after a shift"
    shifting = world.control("/_ferry/ecs/hook-call", {"stage": "TEST_TRAFFIC_SHIFT"})["executionDetails"]
    assert shifting["testTrafficWeights"][revision] == 100 and shifting["productionTrafficWeights"][revision] == 0
    [blue_revision] = [r for r in shifting["productionTrafficWeights"] if r != revision]
    answer = world.ecs.describe_service_revisions(serviceRevisionArns=[revision, blue_revision, revision + "0"])
    assert {r["serviceRevisionArn"]: r["taskDefinition"] for r in answer["serviceRevisions"]} == {
        revision: green, blue_revision: blue}
    assert answer["failures"] == [{"arn": revision + "0", "reason": "MISSING"}]
    later = world.control("/_ferry/ecs/hook-call", {"stage": "PRODUCTION_TRAFFIC_SHIFT"})
    assert later["executionDetails"]["productionTrafficWeights"] == {revision: 100, blue_revision: 0}


def test_stopping_a_rollout_in_progress_rolls_it_back_and_reports_it_as_ecs_does(world) -> None:
    first = world.create()
    rollout = world.deploy("shop/api:v2")
    [brief] = world.ecs.list_service_deployments(cluster=CLUSTER, service=SERVICE, status=["IN_PROGRESS"])[
        "serviceDeployments"]
    assert brief["targetServiceRevisionArn"] in ferry_moto.SERVICE_REVISIONS
    world.ecs.stop_service_deployment(serviceDeploymentArn=brief["serviceDeploymentArn"], stopType="ROLLBACK")
    events = control(world.endpoint, "GET", "/_ferry/ecs/events")[1]["events"]
    assert [(e["detail"]["eventName"], e["detail"]["deploymentId"] == rollout) for e in events] == [
        ("SERVICE_DEPLOYMENT_FAILED", True), ("SERVICE_DEPLOYMENT_IN_PROGRESS", False)]
    assert first in events[1]["detail"]["reason"]
    assert world.deployment(rollout)["rolloutState"] == "FAILED"
    assert control(world.endpoint, "GET", "/_ferry/ecs/events")[1]["events"] == [], "each event once"
    with pytest.raises(world.ecs.exceptions.InvalidParameterException):
        world.ecs.stop_service_deployment(serviceDeploymentArn=brief["serviceDeploymentArn"], stopType="ROLLBACK")


def test_a_hook_fails_only_a_blue_green_rollout_and_ecs_always_rolls_it_back(world) -> None:
    world.create()
    world.deploy("shop/api:v2")
    world.control("/_ferry/ecs/fail", {"cause": "hook"}, expect=409)
    world.ecs.update_service(cluster=CLUSTER, service=SERVICE, deploymentConfiguration={"strategy": "BLUE_GREEN"})
    world.deploy("shop/api:v3")
    answer = world.control("/_ferry/ecs/fail", {"cause": "hook"})
    assert answer["rollbackDeploymentId"], "blue/green rolls back by itself"
