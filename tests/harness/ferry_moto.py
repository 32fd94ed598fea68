"""moto server for Ferry's integration tests, with the ECS behaviour Ferry relies on.

Ferry watches ECS deployments (rollout state, circuit breaker, rollback) and
one-off tasks (exit codes). moto emulates none of that faithfully: UpdateService
does not start a deployment, deploymentConfiguration is dropped on
CreateService, deployments never finish, and every container exits 0. This
script serves moto unchanged for all services, patches moto's ECS model classes
in place to fill those gaps, and adds control endpoints under /_ferry/ so tests
can drive what AWS would do on its own, no kinder than AWS: ECS fails and rolls back a
deployment only as the service's deploymentConfiguration says, autoscaling moves counts under a
rollout, DescribeServices can lag ECS's own events, and events can name a service by its old
short ARN. Concurrent DynamoDB writes conflict as on DynamoDB,
which cancels rather than queues them: a transaction meeting an item another request holds is
cancelled (TransactionCanceledException, reason TransactionConflict), a single-item write on an
item a transaction holds is refused (TransactionConflictException); a transaction repeated with
its idempotency token is not applied twice. ECR keeps the bytes of blobs uploaded with
InitiateLayerUpload/UploadLayerPart/CompleteLayerUpload, and GetDownloadUrlForLayer answers a URL
on this server that serves them (below). Faults (throttling, 5xx, timeouts, dropped
connections, lost answers) can be injected per action and caller. Control endpoints:

  POST /_ferry/ecs/exit-codes   {"exitCode": 1}  exit code of tasks started from now on
  POST /_ferry/ecs/complete     {"cluster", "service", "lag": n, "old_arn": false} -> the EventBridge event;
                                the PRIMARY deployment completes, but the next n (default 0) DescribeServices
                                answers for the service still show it as before (rollout IN_PROGRESS);
                                "old_arn": true names the service in resources[0] by its short ARN
                                arn:aws:ecs:REGION:ACCOUNT:service/NAME
  POST /_ferry/ecs/fail         {"cluster", "service", "cause": "circuit-breaker" | "alarm" | "hook", "alarms": [names],
                                "rollback": true, "old_arn": false}
                                -> {"events", "failedDeploymentId", "rollbackDeploymentId",
                                "rolledBackToDeploymentId"}; ECS fails the IN_PROGRESS PRIMARY deployment by
                                its circuit breaker (default) or by a deployment alarm gone into ALARM, only
                                if the service's deploymentConfiguration turned that method on (else 409),
                                and rolls back only if that method's "rollback" is on and an earlier
                                deployment is COMPLETED; "rollback": false: ECS's rollback has not started yet
  POST /_ferry/ecs/scale        {"cluster", "service", "desired": N, "running": M, "replace": k}
                                -> {"id", "desiredCount", "runningCount", "pendingCount", "rolloutState"} of
                                the PRIMARY deployment; autoscaling sets desiredCount without starting a
                                deployment, M running tasks (default: as before) lag N, and k running tasks
                                are being replaced (Spot interruption, failed health check): running drops by k
  POST /_ferry/ecs/hook-call    {"cluster", "service", "stage", "execution"} -> the payload ECS invokes a
                                lifecycle hook with at that stage of the PRIMARY deployment (its service revision,
                                traffic weights); every deployment has a service revision DescribeServiceRevisions
                                answers with its task definition
  GET  /_ferry/ecs/events       -> {"events"}: the events ECS emitted by itself in answer to an API call
                                (StopServiceDeployment's rollback), each once
  POST /_ferry/cloudwatch/alarm {"name", "state": "ALARM" | "OK" | "INSUFFICIENT_DATA", "at": RFC 3339 (default
                                now), "reason"} -> the "CloudWatch Alarm State Change" event; previousState is
                                the state this endpoint last gave the alarm (at first OK); the same state again
                                is no change (409); moto's alarm of that name, if any, takes the state
  GET  /_ferry/ec2/default-network               -> {"vpc", "subnets", "securityGroups"}
  GET  /_ferry/sns/published?topic=ARN           -> {"messages": [{"subject", "message", "attributes"}]}
  GET  /_ferry/events/published?source=S         -> {"events": [PutEvents entries with that Source]}
  GET  /_ferry/ecr-blob/ACCOUNT/REGION/REPOSITORY/DIGEST  -> the blob's bytes: the downloadUrl
                                                 GetDownloadUrlForLayer answers, in place of S3's
                                                 presigned URL (404 if no such blob)
  POST /_ferry/dynamodb/conflicts {"window": s, "rate": p}  either or both: how long a transaction
                                                 holds its items before it applies (default 0.01 s),
                                                 and the chance (0..1, default 0) that any transaction
                                                 or single-item write meets a conflict anyway
  GET  /_ferry/dynamodb/conflicts                -> {"window", "rate", "met": {"transactions": cancelled,
                                                 "writes": single-item writes refused}}
  POST /_ferry/reset                             reset moto and harness state (conflicts: defaults, met 0;
                                                 lagging answers and alarm states forgotten)

Every control endpoint takes optional "account" (default 123456789012) and
"region" (default us-east-1), in the JSON body or the query string; the DynamoDB
conflict settings and counts are the same for every account and region.

Usage: python3 tests/harness/ferry_moto.py --port PORT   (0 = any free port)
Prints "READY http://127.0.0.1:PORT" once it accepts requests, and exits on
SIGTERM/SIGINT or when stdin reaches EOF (so a test that drops the pipe never
leaves a server behind).
"""

import argparse
import copy
import functools
import hashlib
import io
import json
import logging
import math
import os
import random
import re
import signal
import socket
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import botocore.session
from botocore.parsers import JSONParser, RpcV2CBORParser
from botocore.serialize import RpcV2CBORSerializer
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from moto.cloudformation.models import Stack as CloudFormationStack
from moto.cloudwatch.models import cloudwatch_backends
from moto.core.exceptions import ServiceException
from moto.core.responses import ActionResult
from moto.core.utils import utcnow
from moto.dynamodb.exceptions import (
    ERROR_TYPE_PREFIX,
    DynamodbException,
    ResourceNotFoundException,
    TransactionCanceledException,
)
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.responses import DynamoHandler
from moto.ec2 import ec2_backends
from moto.ecr.models import ECRBackend, ecr_backends
from moto.ecr.responses import ECRResponse
from moto.ecs.exceptions import ClusterNotFoundException, InvalidParameterException, ServiceNotFoundException
from moto.ecs.models import Container, EC2ContainerServiceBackend, Service, Task, ecs_backends
from moto.ecs.responses import EC2ContainerServiceResponse
from moto.iam.models import iam_backends
from moto.moto_api._internal.models import moto_api_backend
from moto.sts.exceptions import STSClientError
from moto.sts.models import STSBackend
from moto.events.models import EventsBackend
from moto.sns.models import SNSBackend
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)

DEFAULT_ACCOUNT = "123456789012"
DEFAULT_REGION = "us-east-1"
DEFAULT_DEPLOYMENT_CONFIGURATION = {
    "deploymentCircuitBreaker": {"enable": False, "rollback": False},
    "maximumPercent": 200,
    "minimumHealthyPercent": 100,
}
# The reasons ECS gives in its deployment events ("Amazon ECS service deployment state change
# events", https://docs.aws.amazon.com/AmazonECS/latest/developerguide/ecs_service_deployment_events.html).
CIRCUIT_BREAKER_REASON = "ECS deployment circuit breaker: task failed to start."
CIRCUIT_BREAKER_ROLLBACK_REASON = "ECS deployment circuit breaker: rolling back to deploymentId {}."
# Not documented either: the reasons when a lifecycle hook failed a deployment, or
# StopServiceDeployment stopped it, and of the rollback that follows.
HOOK_REASON = "ECS deployment lifecycle hook failed."
HOOK_ROLLBACK_REASON = "ECS deployment lifecycle hook failed: rolling back to deploymentId {}."
STOP_REASON = "ECS deployment stopped by StopServiceDeployment."
STOP_ROLLBACK_REASON = "ECS deployment stopped: rolling back to deploymentId {}."
# Not documented: AWS gives no example of the reasons when an alarm failed the deployment, nor of
# the rollback that follows. Plausible texts; Ferry must not rely on any reason's wording.
ALARM_REASON = "ECS deployment alarms: {} in ALARM state."
ALARM_ROLLBACK_REASON = "ECS deployment alarms: rolling back to deploymentId {}."
ESSENTIAL_EXITED = "Essential container in task exited"

# (account, region) -> exit code for every container of tasks started afterwards.
EXIT_CODES: dict[tuple[str, str], int] = {}
# image digest -> exit code of tasks running that image (wins over EXIT_CODES); the
# sandbox uses it for "this image's migration fails".
EXIT_CODES_BY_DIGEST: dict[str, int] = {}
_rng = random.SystemRandom()
# topic ARN -> every message published to it, attributes included (moto's HTTP delivery
# to subscribers drops message attributes, and tests must see them).
PUBLISHED: dict[str, list[dict]] = {}


class HarnessError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def new_deployment_id() -> str:
    return f"ecs-svc/{_rng.randint(10**18, 10**19 - 1)}"


def rfc3339(ts: datetime) -> str:
    if ts.tzinfo is not None:
        ts = ts.astimezone(timezone.utc).replace(tzinfo=None)
    return ts.strftime("%Y-%m-%dT%H:%M:%SZ")


def new_deployment(service: Service, task_definition_arn: str) -> dict:
    dep_id, now = new_deployment_id(), utcnow()
    return {
        "id": dep_id,
        "status": "PRIMARY",
        "taskDefinition": task_definition_arn,
        "desiredCount": service.desired_count,
        "pendingCount": 0,
        "runningCount": 0,
        "failedTasks": 0,
        "createdAt": now,
        "updatedAt": now,
        "launchType": service.launch_type,
        "platformVersion": service.platform_version,
        "platformFamily": "EC2" if service.launch_type == "EC2" else "FARGATE",
        "networkConfiguration": service.network_configuration or None,
        "rolloutState": "IN_PROGRESS",
        "rolloutStateReason": f"ECS deployment {dep_id} in progress.",
    }


def primary_of(service: Service) -> dict:
    for dep in service.deployments:
        if dep["status"] == "PRIMARY":
            return dep
    raise HarnessError(409, f"service {service.name} has no PRIMARY deployment")


# Every deployment UpdateService (or the circuit breaker) started: service ARN -> ids, in order.
ROLLOUTS: dict[str, list[str]] = {}


# Service revisions: one for every deployment ECS starts, holding what it deploys
# ("Amazon ECS service revisions", https://docs.aws.amazon.com/AmazonECS/latest/developerguide/service-revision.html;
# DescribeServiceRevisions, https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_DescribeServiceRevisions.html).
# ARN -> the revision as DescribeServiceRevisions answers it; deployment id -> its revision's ARN.
SERVICE_REVISIONS: dict[str, dict] = {}
REVISION_OF: dict[str, str] = {}


def new_revision(service: Service, deployment_id: str, task_definition_arn: str) -> str:
    """The service revision a deployment rolls out:
    arn:aws:ecs:REGION:ACCOUNT:service-revision/CLUSTER/SERVICE/ID."""
    cluster = service.cluster_arn.split("/")[-1]
    arn = (f"arn:aws:ecs:{service.region_name}:{service._account_id}:service-revision/"
           f"{cluster}/{service.name}/{uuid.uuid4().int % 10**19}")
    SERVICE_REVISIONS[arn] = {
        "serviceRevisionArn": arn,
        "serviceArn": service.arn,
        "clusterArn": service.cluster_arn,
        "taskDefinition": task_definition_arn,
        "launchType": service.launch_type,
        "createdAt": time.time(),
    }
    REVISION_OF[deployment_id] = arn
    return arn


def _describe_service_revisions(self):
    """DescribeServiceRevisions: up to 20 ARNs; an unknown one is a failure, not an error."""
    arns = self._get_param("serviceRevisionArns") or []
    if not 1 <= len(arns) <= 20:
        raise InvalidParameterException("serviceRevisionArns must name 1 to 20 service revisions")
    found = [SERVICE_REVISIONS[a] for a in arns if a in SERVICE_REVISIONS]
    failures = [{"arn": a, "reason": "MISSING"} for a in arns if a not in SERVICE_REVISIONS]
    return json.dumps({"serviceRevisions": found, "failures": failures})


# The deployments ECS started to roll a failed one back.
ROLLBACK_DEPLOYMENTS: set[str] = set()
# What ECS did by itself in answer to an API call (StopServiceDeployment): its events, in order,
# until a test takes them (GET /_ferry/ecs/events).
ECS_EVENTS: list[dict] = []


def service_deployment_arn(service: Service, deployment_id: str) -> str:
    cluster = service.cluster_arn.split("/")[-1]
    return (f"arn:aws:ecs:{service.region_name}:{service._account_id}:service-deployment/"
            f"{cluster}/{service.name}/{deployment_id.split('/')[-1]}")


def service_deployment_status(dep: dict) -> str:
    """A deployment's rollout as ListServiceDeployments names it
    (https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_ServiceDeploymentBrief.html)."""
    return {"IN_PROGRESS": "IN_PROGRESS", "COMPLETED": "SUCCESSFUL"}.get(dep["rolloutState"], "ROLLBACK_SUCCESSFUL")


def _list_service_deployments(self):
    """ListServiceDeployments of one service, filtered by status, newest first."""
    cluster, name = self._get_param("cluster", "default"), self._get_param("service").split("/")[-1]
    service = self.ecs_backend._get_service(cluster, name)
    wanted = self._get_param("status") or []
    briefs = [{
        "serviceDeploymentArn": service_deployment_arn(service, d["id"]),
        "serviceArn": service.arn,
        "clusterArn": service.cluster_arn,
        "targetServiceRevisionArn": REVISION_OF.get(d["id"]),
        "status": service_deployment_status(d),
    } for d in service.deployments]
    return json.dumps({"serviceDeployments": [b for b in briefs if not wanted or b["status"] in wanted]})


def _stop_service_deployment(self):
    """StopServiceDeployment: ROLLBACK fails the rollout in progress and rolls back to the last
    COMPLETED deployment, "even if you didn't configure the service deployment for the rollback
    option" (https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_StopServiceDeployment.html);
    ECS's events go to ECS_EVENTS."""
    arn = self._get_param("serviceDeploymentArn") or ""
    stop_type = self._get_param("stopType", "ROLLBACK")
    match = re.fullmatch(r"arn:aws:ecs:[^:]+:\d{12}:service-deployment/([^/]+)/([^/]+)/(.+)", arn)
    if not match:
        raise InvalidParameterException(f"{arn!r} is not a service deployment ARN")
    service = self.ecs_backend._get_service(match.group(1), match.group(2))
    dep = next((d for d in service.deployments if d["id"].split("/")[-1] == match.group(3)), None)
    if dep is None or dep["status"] != "PRIMARY" or dep["rolloutState"] != "IN_PROGRESS":
        raise InvalidParameterException(f"service deployment {arn} is not in progress")
    ECS_EVENTS.extend(fail_primary(service, STOP_REASON, STOP_ROLLBACK_REASON, stop_type == "ROLLBACK")["events"])
    return json.dumps({"serviceDeploymentArn": arn})


def take_ecs_events(params: dict) -> dict:
    events = list(ECS_EVENTS)
    ECS_EVENTS.clear()
    ROLLBACK_DEPLOYMENTS.clear()
    return {"events": events}


def start_deployment(service: Service, task_definition_arn: str, rollback: bool = False) -> dict:
    """Make a new PRIMARY deployment (ECS's `rollback` of a failed one, or not); the old PRIMARY
    stays on as ACTIVE."""
    now = utcnow()
    for dep in service.deployments:
        if dep["status"] == "PRIMARY":
            dep["status"], dep["updatedAt"] = "ACTIVE", now
    dep = new_deployment(service, task_definition_arn)
    if rollback:
        ROLLBACK_DEPLOYMENTS.add(dep["id"])
    new_revision(service, dep["id"], task_definition_arn)
    ROLLOUTS.setdefault(service.arn, []).append(dep["id"])
    service.deployments.insert(0, dep)
    service.task_definition = task_definition_arn
    return dep


# --- moto patches -------------------------------------------------------------

_orig_service_init = Service.__init__


def _service_init(self, *args, **kwargs):
    _orig_service_init(self, *args, **kwargs)
    # A service created from scratch reaches steady state at once.
    self.deployment_configuration = json.loads(json.dumps(DEFAULT_DEPLOYMENT_CONFIGURATION))
    self.running_count, self.pending_count = self.desired_count, 0
    for dep in self.deployments:
        dep["id"] = new_deployment_id()
        new_revision(self, dep["id"], dep["taskDefinition"])
        dep.update(
            rolloutState="COMPLETED",
            rolloutStateReason=f"ECS deployment {dep['id']} completed.",
            runningCount=self.desired_count,
            pendingCount=0,
        )


_orig_create_service_response = EC2ContainerServiceResponse.create_service


def _create_service_response(self):
    result = _orig_create_service_response(self)
    # moto's backend never sees deploymentConfiguration on CreateService; the
    # service is only serialised after we return, so amending it here is enough.
    passed = self._get_param("deploymentConfiguration")
    if passed:
        service = self.ecs_backend._get_service(
            self._get_param("cluster", "default"), self._get_param("serviceName")
        )
        service.deployment_configuration.update(passed)
    return result


_orig_update_service = EC2ContainerServiceBackend.update_service


def _update_service(self, service_properties):
    props = dict(service_properties)
    force = props.pop("force_new_deployment", False)  # moto's version only renames the id
    service = self._get_service(props.get("cluster", "default"), props["service"].split("/")[-1])
    old_td = service.task_definition
    old_config = dict(getattr(service, "deployment_configuration", None) or {})
    td_str = props.get("task_definition")
    new_config = props.get("deployment_configuration") or {}
    _orig_update_service(self, dict(props))  # it pops keys off what it is given

    service.deployment_configuration = {**old_config, **new_config}
    new_td = self.describe_task_definition(td_str).arn if td_str else old_td
    service.task_definition = new_td
    if service.deployments and (force or new_td != old_td):
        start_deployment(service, new_td)
        # moto counted every task as running when desiredCount was passed; the
        # new deployment has none yet, only the old one's tasks are running.
        service.running_count, service.pending_count = sum(
            d["runningCount"] for d in service.deployments
        ), 0
    elif service.deployments:
        primary = primary_of(service)
        primary["desiredCount"] = service.desired_count
        if primary["rolloutState"] == "COMPLETED":
            primary["runningCount"] = service.desired_count
    return service


_orig_task_init = Task.__init__


def _task_init(self, cluster, task_definition, *args, **kwargs):
    _orig_task_init(self, cluster, task_definition, *args, **kwargs)
    self._ferry_exit_code = EXIT_CODES.get((self._account_id, self.region_name), 0)
    for cdef in task_definition.container_definitions:
        digest = (cdef.get("image") or "").rpartition("@")[2]
        if digest in EXIT_CODES_BY_DIGEST:
            self._ferry_exit_code = EXIT_CODES_BY_DIGEST[digest]
    # moto models only the first container of the task definition.
    self.containers = []
    for cdef in task_definition.container_definitions:
        c = Container(task_definition)
        c.name, c.image = cdef.get("name"), cdef.get("image")
        c.cpu, c.memory = cdef.get("cpu", 0), cdef.get("memory")
        c.environment, c.command = cdef.get("environment"), cdef.get("command")
        c.exitCode = None  # AWS reports no exit code until the container stopped
        self.containers.append(c)


_orig_describe_tasks = EC2ContainerServiceBackend.describe_tasks


def _describe_tasks(self, cluster_str, tasks):
    result = _orig_describe_tasks(self, cluster_str, tasks)
    for task in result:
        status = task.last_status  # reading it applies moto's pending transition
        if status == "RUNNING":
            for c in task.containers:
                c.last_status = "RUNNING"
            continue
        # Past RUNNING the containers have exited, as on AWS while the task stops.
        task.desired_status = "STOPPED"
        for c in task.containers:
            c.last_status = "STOPPED"
            if c.exitCode is None:
                c.exitCode = getattr(task, "_ferry_exit_code", 0)
        if not task.stopped_reason:
            task.stopped_reason = ESSENTIAL_EXITED
            task.stop_code = "EssentialContainerExited"
        elif not getattr(task, "stop_code", None):
            task.stop_code = "UserInitiated"  # StopTask set the reason
        if status == "STOPPED" and getattr(task, "stopped_at", None) is None:
            task.stopped_at = utcnow()
    return result


_orig_task_requirements = EC2ContainerServiceBackend._calculate_task_resource_requirements


def _task_requirements(task_definition):
    # Fargate containers may leave memory to the task level; moto would then add
    # None to an int.
    memory_keys = ("memory", "memoryReservation", "Memory", "MemoryReservation")
    defs = [
        cd if any(k in cd for k in memory_keys) else {**cd, "memory": 0}
        for cd in task_definition.container_definitions
    ]
    return _orig_task_requirements(SimpleNamespace(container_definitions=defs))


# DescribeServices answers that lag ECS's own events, as /_ferry/ecs/complete's "lag" asks: the
# Amazon ECS API "follows an eventual consistency model ... the result of an API command you run
# that affects your Amazon ECS resources might not be immediately visible to all subsequent
# commands you run" (https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_RunTask.html).
# Service ARN -> {"left": DescribeServices answers still to lag, "deployment": the id of the
# deployment that completed, "before": the service as it was before}; dropped once a newer
# deployment is PRIMARY.
LAGGING: dict[str, dict] = {}
_LAG_LOCK = threading.Lock()

_orig_describe_services_response = EC2ContainerServiceResponse.describe_services


def _describe_services_response(self):
    result = _orig_describe_services_response(self)
    services = result.result["services"]
    with _LAG_LOCK:
        for i, service in enumerate(services):
            lag = LAGGING.get(service.arn)
            if lag is None:
                continue
            primary = next((d["id"] for d in service.deployments if d["status"] == "PRIMARY"), None)
            if primary == lag["deployment"]:
                services[i] = lag["before"]
                lag["left"] -= 1
            if lag["left"] <= 0 or primary != lag["deployment"]:
                del LAGGING[service.arn]
    return result


# --- DynamoDB: concurrent writes conflict as on DynamoDB ---------------------------
#
# DynamoDB queues no write behind a transaction: it cancels the request that meets an item
# another one holds ("Transaction conflict handling in DynamoDB",
# https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/transaction-apis.html#transaction-conflict-handling).
# - A PutItem, UpdateItem or DeleteItem on an item an ongoing TransactWriteItems holds fails with
#   TransactionConflictException (HTTP 400; "Operation was rejected because there is an ongoing
#   transaction for the item",
#   https://docs.aws.amazon.com/sdk-for-python/v1/reference/clients/dynamodb/errors/TransactionConflictException/).
# - A TransactWriteItems with an item another ongoing request holds fails with
#   TransactionCanceledException (https://docs.aws.amazon.com/botocore/latest/reference/services/dynamodb/client/exceptions/TransactionCanceledException.html),
#   whose CancellationReasons hold one entry per item in request order, "None" for an item that
#   caused nothing (https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_CancellationReason.html).
# Nothing of a cancelled transaction is applied. The harness models a transaction as holding its
# items for CONFLICTS["window"] seconds (its prepare phase) and then applying them; a single-item
# write holds its item while it is applied.

# moto's need, not a DynamoDB behaviour: moto applies a transaction by deep-copying the tables it
# touches and putting the copies back when it fails, so an item operation running meanwhile in
# another thread would break the copy or be undone by it. Every item operation holds this lock
# only while moto works on the tables, never across a transaction's window: it never turns a
# conflict into a wait. Under it a conditional write is atomic for its item.
_MOTO_LOCK = threading.RLock()

DEFAULT_CONFLICT_WINDOW = 0.01  # seconds: a transaction's prepare phase, short but never zero
# "window": how long a transaction holds its items before it applies; "rate" (0..1): the chance
# any write meets a conflict anyway, standing for a concurrent request no test can time.
CONFLICTS = {"window": DEFAULT_CONFLICT_WINDOW, "rate": 0.0}
MET = {"transactions": 0, "writes": 0}  # transactions cancelled, single-item writes refused
# Items in flight, by (account, region, table, key): those transactions hold, and those single
# writes are applying (how many of them). _IN_FLIGHT_LOCK guards these and MET, and is held only
# to read or change them.
HELD: set[tuple] = set()
WRITING: dict[tuple, int] = {}
_IN_FLIGHT_LOCK = threading.Lock()
# DynamoDB's message for a held item: a refused write's, and a cancelled transaction's reason's.
CONFLICT_MESSAGE = "Transaction is ongoing for the item"


class TransactionConflictException(DynamodbException):
    """moto has no such error; DynamoDB's shape: {"__type": "...#TransactionConflictException", "message"}."""

    error_type = ERROR_TYPE_PREFIX + "TransactionConflictException"

    def __init__(self) -> None:
        super().__init__(self.error_type, CONFLICT_MESSAGE)


def _locked(method):
    def locked(*args, **kwargs):
        with _MOTO_LOCK:
            return method(*args, **kwargs)

    return locked


for _name in ("put_item", "get_item", "query", "scan", "delete_item", "update_item"):
    setattr(DynamoDBBackend, _name, _locked(getattr(DynamoDBBackend, _name)))


def item_key(backend: DynamoDBBackend, table_name: str, request: dict) -> tuple[str, dict]:
    """The table and key of the item a write names: its Key, or its Item's key attributes."""
    try:
        table = backend.get_table(table_name)
    except ResourceNotFoundException:
        return table_name, request.get("Key") or {}  # moto answers for the missing table
    attrs = request.get("Key") or request.get("Item") or {}
    return table.name, {a: attrs.get(a) for a in (table.hash_key_attr, table.range_key_attr) if a}


def in_flight_id(backend: DynamoDBBackend, table: str, key: dict) -> tuple:
    return backend.account_id, backend.region_name, table, json.dumps(key, sort_keys=True)


def meets_conflict_anyway() -> bool:
    return _rng.random() < CONFLICTS["rate"]


# Every value the "state" attribute of an item took, in order, while LOG_STATES is set:
# (table, pk, sk) -> [state, ...]; tests check each history against the state machine.
STATE_LOG: dict[tuple[str, ...], list[str]] = {}
LOG_STATES = threading.Event()


def _log_states(backend, writes: list[tuple[str, dict]]) -> None:
    """Called under _MOTO_LOCK right after `writes` were applied."""
    for table, key in writes:
        item = backend.get_item(table, key)
        state = item.attrs.get("state") if item else None
        if state is None:
            continue
        history = STATE_LOG.setdefault((table, *(str(next(iter(v.values()))) for v in key.values())), [])
        if not history or history[-1] != state.value:
            history.append(state.value)


def _transact_write_items(self, transact_items):
    writes = [item_key(self, op.get("TableName", ""), op) for item in transact_items for op in item.values()]
    ids = [in_flight_id(self, table, key) for table, key in writes]
    with _IN_FLIGHT_LOCK:
        held = [i in HELD or i in WRITING for i in ids]
        if ids and not any(held) and meets_conflict_anyway():
            held[_rng.randrange(len(ids))] = True
        if any(held):
            MET["transactions"] += 1
            raise TransactionCanceledException(
                [("TransactionConflict", CONFLICT_MESSAGE, None) if h else (None, None, None) for h in held])
        HELD.update(ids)
    try:
        time.sleep(CONFLICTS["window"])  # outside every lock: others meet these items meanwhile
        with _MOTO_LOCK:
            _orig_transact_write_items(self, transact_items)
            if LOG_STATES.is_set():
                _log_states(self, writes)
    finally:
        with _IN_FLIGHT_LOCK:
            HELD.difference_update(ids)


def _single_write(write):
    """A PutItem, UpdateItem or DeleteItem request: refused while a transaction holds its item;
    holds the item itself while it is applied."""

    @functools.wraps(write)
    def guarded(self):
        backend = self.dynamodb_backend
        table, key = item_key(backend, self.body.get("TableName", ""), self.body)
        held = in_flight_id(backend, table, key)
        with _IN_FLIGHT_LOCK:
            if held in HELD or meets_conflict_anyway():
                MET["writes"] += 1
                raise TransactionConflictException()
            WRITING[held] = WRITING.get(held, 0) + 1
        try:
            with _MOTO_LOCK:
                result = write(self)
                if LOG_STATES.is_set():
                    _log_states(backend, [(table, key)])
                return result
        finally:
            with _IN_FLIGHT_LOCK:
                left = WRITING.pop(held, 1) - 1
                if left:
                    WRITING[held] = left

    return guarded


_orig_transact_write_items = DynamoDBBackend.transact_write_items
DynamoDBBackend.transact_write_items = _transact_write_items
for _name in ("put_item", "update_item", "delete_item"):
    setattr(DynamoHandler, _name, _single_write(getattr(DynamoHandler, _name)))

Service.__init__ = _service_init
EC2ContainerServiceResponse.create_service = _create_service_response
EC2ContainerServiceResponse.describe_services = _describe_services_response
EC2ContainerServiceBackend.update_service = _update_service
EC2ContainerServiceResponse.describe_service_revisions = _describe_service_revisions
EC2ContainerServiceResponse.list_service_deployments = _list_service_deployments
EC2ContainerServiceResponse.stop_service_deployment = _stop_service_deployment
Task.__init__ = _task_init
EC2ContainerServiceBackend.describe_tasks = _describe_tasks
EC2ContainerServiceBackend._calculate_task_resource_requirements = staticmethod(_task_requirements)


# --- CloudFormation: parameters as DescribeStacks returns them ---------------------
# A CommaDelimitedList parameter's ParameterValue is the string it was given ("a,b"), not
# moto 5.2.5's Python repr of the parsed list
# (https://docs.aws.amazon.com/AWSCloudFormation/latest/APIReference/API_Parameter.html).
def _parameter_list(self) -> list[dict]:
    hidden = self.resource_map.no_echo_parameter_keys
    return [{"ParameterKey": k,
             "ParameterValue": "****" if k in hidden else ",".join(v) if isinstance(v, list) else v}
            for k, v in self.resource_map.resolved_parameters.items()]


CloudFormationStack.parameter_list = property(_parameter_list)


# --- STS: a role's trust policy decides who may assume it --------------------------
# AssumeRole is refused (AccessDenied) unless the role's trust policy allows the caller
# (https://docs.aws.amazon.com/IAM/latest/UserGuide/id_roles_manage-assume.html). moto issues
# credentials for any role; the harness refuses a role that exists in its account and trusts
# neither the caller's account nor everyone. A role that does not exist is still assumed, as in
# moto: the tests and the sandbox name roles they never create.
class AssumeRoleDenied(STSClientError):
    def __init__(self, caller: str, role_arn: str):
        super().__init__("AccessDenied", f"User: arn:aws:iam::{caller}:root is not authorized to perform: "
                                         f"sts:AssumeRole on resource: {role_arn}")


def _trusts(role, caller: str) -> bool:
    document = role.assume_role_policy_document
    document = json.loads(document) if isinstance(document, str) else document
    statements = document.get("Statement", [])
    for statement in statements if isinstance(statements, list) else [statements]:
        if statement.get("Effect") != "Allow":
            continue
        principal = statement.get("Principal", {})
        allowed = principal.get("AWS", []) if isinstance(principal, dict) else [principal]
        for p in allowed if isinstance(allowed, list) else [allowed]:
            if p in ("*", caller, f"arn:aws:iam::{caller}:root") or p.startswith(f"arn:aws:iam::{caller}:"):
                return True
    return False


_moto_assume_role = STSBackend.assume_role


def _assume_role(self, region_name, role_session_name, role_arn, *args, **kwargs):
    account = role_arn.split(":")[4] if role_arn.count(":") >= 5 else ""
    try:
        role = iam_backends[account]["global"].get_role_by_arn(role_arn)
    except Exception:  # noqa: BLE001 - moto raises its own not-found error: no such role
        role = None
    if role is not None and not _trusts(role, self.account_id):
        raise AssumeRoleDenied(self.account_id, role_arn)
    return _moto_assume_role(self, region_name, role_session_name, role_arn, *args, **kwargs)


STSBackend.assume_role = _assume_role


# --- ECR: layers keep their bytes, and GetDownloadUrlForLayer serves them ------------
# moto 5.2.5 records an uploaded layer's size only, and has no GetDownloadUrlForLayer. The
# harness keeps each layer's bytes (config blobs too) on its moto repository, so a reset or
# DeleteRepository forgets them; refuses an upload whose bytes do not have the digest given
# (InvalidLayerException, https://docs.aws.amazon.com/AmazonECR/latest/APIReference/API_CompleteLayerUpload.html);
# and GetDownloadUrlForLayer answers a URL on the harness itself in place of S3's presigned one.
BLOB_PATH = "/_ferry/ecr-blob/"
_moto_complete_layer_upload = ECRBackend.complete_layer_upload


class EcrError(ServiceException):
    """An ECR error by its code, in ECR's shape (moto's ECR raises none of these)."""


def _complete_layer_upload(self, repository_name, upload_id, layer_digests, registry_id=None):
    repository = self._get_repository(repository_name, registry_id)
    upload = repository.uploads.get(upload_id)
    blob = bytes(upload.layer_parts) if upload else b""
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    if upload and digest not in (layer_digests or []):
        raise EcrError("InvalidLayerException", "The layer digest calculation performed by Amazon ECR upon "
                       f"receipt of the image layer does not match the digest specified: {digest}")
    done = _moto_complete_layer_upload(self, repository_name, upload_id, layer_digests, registry_id)
    repository._ferry_blobs = {**getattr(repository, "_ferry_blobs", {}), done["layerDigest"]: blob}
    return done


def referenced_digests(repository) -> set[str]:
    """The blobs the repository's image manifests name: their configs and layers."""
    digests = set()
    for image in repository.images:
        manifest = json.loads(image.image_manifest)
        digests.update(d.get("digest") for d in [manifest.get("config", {}), *manifest.get("layers", [])])
    return digests


# A digest never uploaded is LayersNotFoundException; one uploaded but named by no image's manifest
# is LayerInaccessibleException ("You can only get URLs for image layers that are referenced in an
# image", https://docs.aws.amazon.com/AmazonECR/latest/APIReference/API_GetDownloadUrlForLayer.html).
def _get_download_url_for_layer(self):
    name, digest = self._get_param("repositoryName"), self._get_param("layerDigest")
    repository = self.ecr_backend._get_repository(name, self._get_param("registryId"))
    if digest not in getattr(repository, "_ferry_blobs", {}):
        raise EcrError("LayersNotFoundException", "The specified layers could not be found, or the specified "
                       f"layer is not valid for this repository: {digest}")
    if digest not in referenced_digests(repository):
        raise EcrError("LayerInaccessibleException", "The specified layer is not available because it is not "
                       f"associated with an image: {digest}")
    host = urllib.parse.urlsplit(self.uri)
    url = f"{host.scheme}://{host.netloc}{BLOB_PATH}{self.current_account}/{self.region}/{name}/{digest}"
    return ActionResult({"downloadUrl": url, "layerDigest": digest})


def ecr_blob(request: Request) -> Response:
    """GET of a URL GetDownloadUrlForLayer answered: the blob's bytes, as S3 serves them."""
    blob = None
    try:
        account, region, *name, digest = request.path[len(BLOB_PATH):].split("/")
        repository = ecr_backends[account][region].repositories.get("/".join(name))
        blob = getattr(repository, "_ferry_blobs", {}).get(digest)
    except (ValueError, KeyError):
        pass
    if blob is None:
        return Response("NoSuchKey", status=404, mimetype="text/plain")
    return Response(blob, mimetype="application/octet-stream")


ECRBackend.complete_layer_upload = _complete_layer_upload
ECRResponse.get_download_url_for_layer = _get_download_url_for_layer


# --- control endpoints ---------------------------------------------------------

def deployment_event(service: Service, name: str, deployment_id: str, reason: str, old_arn: bool = False) -> dict:
    """An "ECS Deployment State Change" event. With `old_arn` it names the service by the short ARN
    services created before 2021 still have, arn:aws:ecs:REGION:ACCOUNT:service/NAME, with no
    cluster in it (https://docs.aws.amazon.com/AmazonECS/latest/developerguide/service-arn-migration.html)."""
    now = rfc3339(utcnow())
    arn = f"arn:aws:ecs:{service.region_name}:{service._account_id}:service/{service.name}" if old_arn else service.arn
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "ECS Deployment State Change",
        "source": "aws.ecs",
        "account": service._account_id,
        "time": now,
        "region": service.region_name,
        "resources": [arn],
        "detail": {
            "eventType": "ERROR" if name == "SERVICE_DEPLOYMENT_FAILED" else "INFO",
            "eventName": name,
            "deploymentId": deployment_id,
            "updatedAt": now,
            "reason": reason,
        },
    }


def find_service(params: dict) -> Service:
    for key in ("cluster", "service"):
        if not params.get(key):
            raise HarnessError(400, f"missing '{key}'")
    backend = ecs_backends[params["account"]][params["region"]]
    try:
        return backend._get_service(params["cluster"], params["service"].split("/")[-1])
    except (ClusterNotFoundException, ServiceNotFoundException):
        raise HarnessError(404, f"service {params['service']} not found in cluster {params['cluster']}")


def flag(params: dict, name: str, default: bool = False) -> bool:
    value = params.get(name, default)
    if not isinstance(value, bool):
        raise HarnessError(400, f"'{name}' must be true or false")
    return value


def count(params: dict, name: str, default: int) -> int:
    value = params.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise HarnessError(400, f"'{name}' must be an integer, 0 or more")
    return value


def complete(params: dict) -> dict:
    """The PRIMARY deployment reaches steady state. With "lag": n, the next n DescribeServices
    answers for the service still show it as before (rollout IN_PROGRESS): see LAGGING."""
    service = find_service(params)
    lag, old_arn = count(params, "lag", 0), flag(params, "old_arn")
    dep = primary_of(service)
    if lag:
        before = copy.copy(service)
        before.deployments = copy.deepcopy(service.deployments)
        with _LAG_LOCK:
            LAGGING[service.arn] = {"left": lag, "deployment": dep["id"], "before": before}
    dep.update(
        rolloutState="COMPLETED",
        rolloutStateReason=f"ECS deployment {dep['id']} completed.",
        runningCount=service.desired_count,
        desiredCount=service.desired_count,
        pendingCount=0,
        updatedAt=utcnow(),
    )
    service.deployments = [dep]
    service.running_count, service.pending_count = service.desired_count, 0
    return deployment_event(
        service, "SERVICE_DEPLOYMENT_COMPLETED", dep["id"], f"ECS deployment {dep['id']} completed.", old_arn
    )


def fail(params: dict) -> dict:
    """ECS fails the PRIMARY deployment, by one of its two methods
    (https://docs.aws.amazon.com/AmazonECS/latest/developerguide/deployment-failure-detection.html):
    the circuit breaker ("cause": "circuit-breaker", the default) or a deployment alarm gone into
    ALARM ("cause": "alarm", "alarms": [names]). ECS uses only a method the service turned on in its
    deploymentConfiguration (deploymentCircuitBreaker.enable; alarms.enable, with the alarm among
    alarms.alarmNames), and fails only a deployment IN_PROGRESS; anything else is refused (409).

    Events in the order AWS emits them (see the fixtures in shared/events):
    SERVICE_DEPLOYMENT_FAILED for the failed deployment, then, when ECS rolls back,
    SERVICE_DEPLOYMENT_IN_PROGRESS for the new rollback deployment, whose reason names the
    deployment rolled back to. "A rollback occurs when you use the rollback option for the method
    that initiated the deployment failure"
    (https://docs.aws.amazon.com/AmazonECS/latest/developerguide/deployment-alarm-failure.html):
    deploymentCircuitBreaker.rollback or alarms.rollback. ECS rolls back to "the most recent
    deployment that is in a COMPLETED state"; that one "changes from a COMPLETED to IN_PROGRESS"
    and "is not eligible for another rollback until it reaches a COMPLETED state"; without such a
    deployment there is no rollback
    (https://docs.aws.amazon.com/AmazonECS/latest/developerguide/deployment-circuit-breaker.html).
    "rollback": false holds ECS's rollback back: it has not started (yet).
    """
    service = find_service(params)
    config = service.deployment_configuration or {}
    cause, old_arn = params.get("cause", "circuit-breaker"), flag(params, "old_arn")
    allowed = flag(params, "rollback", True)
    if cause == "circuit-breaker":
        method = config.get("deploymentCircuitBreaker") or {}
        if not method.get("enable"):
            raise HarnessError(409, f"service {service.name}'s circuit breaker is off: ECS fails no deployment")
        reason, rollback_reason = CIRCUIT_BREAKER_REASON, CIRCUIT_BREAKER_ROLLBACK_REASON
    elif cause == "alarm":
        alarms = params.get("alarms")
        if not isinstance(alarms, list) or not alarms or not all(isinstance(a, str) and a for a in alarms):
            raise HarnessError(400, "'alarms' must be a list of alarm names")
        method = config.get("alarms") or {}
        watched = [a for a in alarms if a in (method.get("alarmNames") or [])]
        if not method.get("enable") or not watched:
            raise HarnessError(409, f"ECS watches none of {alarms} for service {service.name}: they fail no deployment")
        reason, rollback_reason = ALARM_REASON.format(", ".join(watched)), ALARM_ROLLBACK_REASON
    elif cause == "hook":
        # A lifecycle hook answered FAILED (or failed): a blue/green, linear or canary service
        # "rolls back to the last successful deployment", blue still running
        # (https://docs.aws.amazon.com/AmazonECS/latest/developerguide/lambda-lifecycle-hooks.html).
        if config.get("strategy", "ROLLING") == "ROLLING":
            raise HarnessError(409, f"service {service.name} deploys ROLLING: it calls no lifecycle hook Ferry gates")
        method, reason, rollback_reason = {"rollback": True}, HOOK_REASON, HOOK_ROLLBACK_REASON
    else:
        raise HarnessError(400, "'cause' must be \"circuit-breaker\", \"alarm\" or \"hook\"")
    return fail_primary(service, reason, rollback_reason, method.get("rollback") and allowed, old_arn)


def fail_primary(service: Service, reason: str, rollback_reason: str, roll_back: bool, old_arn: bool = False) -> dict:
    """The IN_PROGRESS PRIMARY deployment FAILED, and (`roll_back`) ECS's rollback to the last
    COMPLETED one started; see `fail`."""
    failed = primary_of(service)
    if failed["rolloutState"] != "IN_PROGRESS":
        raise HarnessError(409, f"deployment {failed['id']} is {failed['rolloutState']}, not IN_PROGRESS")
    now = utcnow()
    failed.update(rolloutState="FAILED", rolloutStateReason=reason, updatedAt=now)
    events = [deployment_event(service, "SERVICE_DEPLOYMENT_FAILED", failed["id"], reason, old_arn)]
    target = next(
        (d for d in service.deployments if d["status"] == "ACTIVE" and d["rolloutState"] == "COMPLETED"),
        None,
    )
    rollback = None
    if roll_back and target is not None:
        rollback = start_deployment(service, target["taskDefinition"], rollback=True)
        target.update(rolloutState="IN_PROGRESS", rolloutStateReason=f"ECS deployment {target['id']} in progress.",
                      updatedAt=now)
        events.append(deployment_event(
            service, "SERVICE_DEPLOYMENT_IN_PROGRESS", rollback["id"], rollback_reason.format(target["id"]), old_arn
        ))
    return {
        "events": events,
        "failedDeploymentId": failed["id"],
        "rollbackDeploymentId": rollback and rollback["id"],
        "rolledBackToDeploymentId": rollback and target["id"],
    }


def scale(params: dict) -> dict:
    """Service Auto Scaling sets the service's desired count, and nothing else: no deployment
    starts ("Automatic scaling is the ability to increase or decrease the desired count of tasks in
    your Amazon ECS service automatically",
    https://docs.aws.amazon.com/AmazonECS/latest/developerguide/service-auto-scaling.html), not even
    while one is in progress, during which scale-out goes on
    (https://docs.aws.amazon.com/AmazonECS/latest/developerguide/troubleshoot-service-auto-scaling.html).
    The PRIMARY deployment's tasks follow only as they start: "running" (default: as many as ran
    before) lags "desired". "replace": k of its running tasks stop and are being replaced, as after
    a Fargate Spot interruption
    (https://docs.aws.amazon.com/AmazonECS/latest/developerguide/fargate-capacity-providers.html)
    or a failed health check
    (https://docs.aws.amazon.com/AmazonECS/latest/developerguide/ecs_services.html)."""
    service = find_service(params)
    primary = primary_of(service)
    desired = count(params, "desired", service.desired_count)
    running = count(params, "running", primary["runningCount"])
    replace = count(params, "replace", 0)
    if replace > running:
        raise HarnessError(400, f"cannot replace {replace} of {running} running tasks")
    service.desired_count = desired
    primary.update(desiredCount=desired, runningCount=running - replace,
                   pendingCount=max(desired - (running - replace), 0), updatedAt=utcnow())
    service.running_count = sum(d["runningCount"] for d in service.deployments)
    service.pending_count = sum(d["pendingCount"] for d in service.deployments)
    return {key: primary[key] for key in ("id", "desiredCount", "runningCount", "pendingCount", "rolloutState")}


# --- CloudWatch alarms ------------------------------------------------------------

# (account, region) -> alarm name -> the state /_ferry/cloudwatch/alarm last gave it:
# {"value", "reason", "timestamp" (naive UTC)}.
ALARMS: dict[tuple[str, str], dict[str, dict]] = {}
_ALARM_LOCK = threading.Lock()
ALARM_STATES = ("OK", "ALARM", "INSUFFICIENT_DATA")


def alarm_timestamp(at: datetime) -> str:
    """A time as CloudWatch writes it in alarm events: 2026-11-16T02:10:00.000+0000."""
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}+0000"


def alarm_reason(state: str, at: datetime) -> str:
    datapoint = (at - timedelta(minutes=1)).strftime("%d/%m/%y %H:%M:%S")
    return {
        "ALARM": f"Threshold Crossed: 1 datapoint [1.0 ({datapoint})] was greater than the threshold (0.0).",
        "OK": f"Threshold Crossed: 1 datapoint [0.0 ({datapoint})] was not greater than the threshold (0.0).",
        "INSUFFICIENT_DATA": "Insufficient Data: 1 datapoint was unknown.",
    }[state]


def alarm_state(state: dict) -> dict:
    return {"value": state["value"], "reason": state["reason"], "timestamp": alarm_timestamp(state["timestamp"])}


def parse_time(value) -> datetime:
    """An RFC 3339 time, as naive UTC (moto's way)."""
    try:
        at = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        raise HarnessError(400, "'at' must be an RFC 3339 time, such as 2026-11-16T02:10:00Z")
    return at.astimezone(timezone.utc).replace(tzinfo=None) if at.tzinfo else at


def alarm(params: dict) -> dict:
    """An alarm changes state at "at": the "CloudWatch Alarm State Change" event, which CloudWatch
    sends to EventBridge whenever an alarm changes state
    (https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/cloudwatch-and-eventbridge.html),
    so a "change" to the state the alarm is in sends none (409). The previous state is the one this
    endpoint last gave the alarm (at first OK, five minutes before "at"). The alarm of that name in
    moto's CloudWatch, if there is one, takes the state too (SetAlarmState)."""
    name, state, reason = params.get("name"), params.get("state"), params.get("reason")
    if not isinstance(name, str) or not name:
        raise HarnessError(400, "missing 'name'")
    if state not in ALARM_STATES:
        raise HarnessError(400, f"'state' must be one of {', '.join(ALARM_STATES)}")
    if reason is not None and not isinstance(reason, str):
        raise HarnessError(400, "'reason' must be a string")
    at = parse_time(params["at"]) if "at" in params else utcnow()
    account, region = params["account"], params["region"]
    backend = cloudwatch_backends[account][region]
    with _ALARM_LOCK:
        known = ALARMS.setdefault((account, region), {})
        earlier = at - timedelta(minutes=5)
        previous = known.get(name) or {"value": "OK", "reason": alarm_reason("OK", earlier), "timestamp": earlier}
        if previous["value"] == state:
            raise HarnessError(409, f"alarm {name} is already {state}: CloudWatch sends no state change event")
        if at < previous["timestamp"]:
            raise HarnessError(400, f"'at' is before {name}'s last change, {alarm_timestamp(previous['timestamp'])}")
        current = {"value": state, "reason": reason or alarm_reason(state, at), "timestamp": at}
        known[name] = current
    cloudwatch_alarm = backend.alarms.get(name)
    if cloudwatch_alarm is not None:
        backend.set_alarm_state(name, current["reason"], None, state)
        cloudwatch_alarm.state_updated_timestamp = at
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "CloudWatch Alarm State Change",
        "source": "aws.cloudwatch",
        "account": account,
        "time": rfc3339(at),
        "region": region,
        "resources": [f"arn:aws:cloudwatch:{region}:{account}:alarm:{name}"],
        "detail": {
            "alarmName": name,
            "state": alarm_state(current),
            "previousState": alarm_state(previous),
            "configuration": {
                "description": (cloudwatch_alarm and cloudwatch_alarm.description) or "",
                "metrics": [],
            },
        },
    }


# --- Smithy RPC v2 CBOR ---------------------------------------------------------------

# The AWS SDK for Rust calls CloudWatch in Smithy RPC v2 CBOR
# (https://smithy.io/2.0/additional-specs/protocols/smithy-rpc-v2.html: POST
# /service/{prefix}/operation/{Operation}, header smithy-protocol: rpc-v2-cbor, CBOR bodies,
# timestamps as tag 1); moto serves CloudWatch's JSON protocol (the one botocore picks). The
# front translates the request to JSON for moto and moto's answer back to CBOR, by botocore's
# model of the operation.
CBOR_PATH = re.compile(r"^/service/([A-Za-z0-9]+)/operation/([A-Za-z0-9]+)$")
CBOR_SERVICES = {"GraniteServiceVersion20100801": "cloudwatch"}


@functools.lru_cache(maxsize=None)
def cbor_operation(prefix: str, operation: str):
    return botocore.session.get_session().get_service_model(CBOR_SERVICES[prefix]).operation_model(operation)


def _cbor_text(text: str) -> bytes:
    data = text.encode()
    head = bytes([0x60 | len(data)]) if len(data) < 24 else bytes([0x79]) + len(data).to_bytes(2, "big")
    return head + data


def cbor_front(environ, start_response, moto_app):
    prefix, operation = CBOR_PATH.match(environ["PATH_INFO"]).groups()
    model = cbor_operation(prefix, operation)
    body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    parser = RpcV2CBORParser()
    params = parser.parse_data_item(parser.get_peekable_stream_from_bytes(body)) if body else {}
    request = json.dumps(params, default=str).encode()
    inner = {k: v for k, v in environ.items() if k != "HTTP_SMITHY_PROTOCOL"}
    inner.update({"PATH_INFO": "/", "HTTP_X_AMZ_TARGET": f"{prefix}.{operation}", "CONTENT_TYPE": "application/x-amz-json-1.0",
                  "CONTENT_LENGTH": str(len(request)), "wsgi.input": io.BytesIO(request)})
    answer: dict = {}
    raw = b"".join(moto_app(inner, lambda status, headers, exc_info=None: answer.update(status=status)))
    if answer["status"].startswith("200") and model.output_shape is None:
        out = b""  # an operation without output answers an empty body
    elif answer["status"].startswith("200"):
        parsed = JSONParser().parse({"body": raw, "headers": {}, "status_code": 200}, model.output_shape)
        parsed.pop("ResponseMetadata", None)
        out = bytearray()
        RpcV2CBORSerializer()._serialize_data_item(out, parsed, model.output_shape)
    else:  # the error's type and message, as an RPC v2 CBOR error body
        error = json.loads(raw or b"{}") if raw.strip().startswith(b"{") else {}
        out = b"\xa2" + _cbor_text("__type") + _cbor_text(str(error.get("__type", ""))) + _cbor_text("message") \
            + _cbor_text(str(error.get("message", error.get("Message", ""))))
    start_response(answer["status"], [("Content-Type", "application/cbor"), ("smithy-protocol", "rpc-v2-cbor"),
                                      ("Content-Length", str(len(out)))])
    return [bytes(out)]


_sns_publish = SNSBackend.publish


def _record_publish(self, message, arn=None, *args, **kwargs):
    message_id = _sns_publish(self, message, arn, *args, **kwargs)
    attributes = kwargs.get("message_attributes") or {}
    PUBLISHED.setdefault(arn or "", []).append({
        "subject": kwargs.get("subject"),
        "message": message,
        "attributes": {k: v.get("Value", v.get("StringValue")) for k, v in attributes.items()},
    })
    return message_id


SNSBackend.publish = _record_publish

# Every PutEvents entry, so tests can see what a function put on a bus.
PUT_EVENTS: list[dict] = []
_put_events = EventsBackend.put_events


def _record_put_events(self, events):
    PUT_EVENTS.extend(dict(e, account=self.account_id, region=self.region_name) for e in events)
    return _put_events(self, events)


EventsBackend.put_events = _record_put_events


def put_events_published(params: dict) -> dict:
    return {"events": [e for e in PUT_EVENTS if e.get("Source") == params.get("source")]}


def published(params: dict) -> dict:
    return {"messages": PUBLISHED.get(params.get("topic", ""), [])}


def set_exit_code(params: dict) -> dict:
    code = params.get("exitCode")
    if not isinstance(code, int) or isinstance(code, bool):
        raise HarnessError(400, "'exitCode' must be an integer")
    EXIT_CODES[(params["account"], params["region"])] = code
    return {"exitCode": code}


def default_network(params: dict) -> dict:
    ec2 = ec2_backends[params["account"]][params["region"]]
    vpc = ec2.get_default_vpc()
    if vpc is None:
        raise HarnessError(404, "no default VPC")
    subnets = ec2.describe_subnets(filters={"vpc-id": [vpc.id]})
    return {
        "vpc": vpc.id,
        "subnets": [s.id for s in subnets],
        "securityGroups": [ec2.get_default_security_group(vpc.id).id],
    }


def conflicts(params: dict) -> dict:
    with _IN_FLIGHT_LOCK:
        return {"window": CONFLICTS["window"], "rate": CONFLICTS["rate"], "met": dict(MET)}


def set_conflicts(params: dict) -> dict:
    limits = {"window": "a number of seconds, 0 or more", "rate": "a number from 0 to 1"}
    changes = {name: params[name] for name in limits if name in params}
    for name, value in changes.items():
        number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not number or value < 0 or (name == "rate" and value > 1):
            raise HarnessError(400, f"'{name}' must be {limits[name]}")
    with _IN_FLIGHT_LOCK:
        CONFLICTS.update({name: float(value) for name, value in changes.items()})
    return conflicts(params)


def hook_call(params: dict) -> dict:
    """What ECS sends a lifecycle hook Lambda at `stage` (default POST_TEST_TRAFFIC_SHIFT) of the
    service's PRIMARY deployment: green (its revision) takes all test traffic after
    TEST_TRAFFIC_SHIFT, no production traffic before PRODUCTION_TRAFFIC_SHIFT
    ("Lifecycle hooks for Amazon ECS service deployments", payloads:
    https://docs.aws.amazon.com/AmazonECS/latest/developerguide/deployment-lifecycle-hooks.html)."""
    service = find_service(params)
    stage = params.get("stage", "POST_TEST_TRAFFIC_SHIFT")
    green = REVISION_OF.get(primary_of(service)["id"])
    blue = next((REVISION_OF.get(d["id"]) for d in service.deployments if d["status"] == "ACTIVE"), None)
    if green is None:
        raise HarnessError(409, f"service {service.name} has no deployment with a service revision")
    # The weights are given at the traffic-shift stages only, empty at the others (the payloads
    # of https://docs.aws.amazon.com/AmazonECS/latest/developerguide/lambda-lifecycle-hooks.html).
    shifting = stage in ("TEST_TRAFFIC_SHIFT", "PRE_PRODUCTION_TRAFFIC_SHIFT", "PRODUCTION_TRAFFIC_SHIFT")
    produced = stage == "PRODUCTION_TRAFFIC_SHIFT"
    weights = lambda on: {**({blue: 0 if on else 100} if blue else {}), green: 100 if on else 0} if shifting else {}
    cluster = service.cluster_arn.split("/")[-1]
    return {
        "executionId": params.get("execution", str(uuid.uuid4())),
        "lifecycleStage": stage,
        "resourceArn": (f"arn:aws:ecs:{service.region_name}:{service._account_id}:service-deployment/"
                        f"{cluster}/{service.name}/{primary_of(service)['id'].split('/')[-1]}"),
        "executionDetails": {
            "serviceArn": service.arn,
            "targetServiceRevisionArn": green,
            "testTrafficWeights": weights(True),
            "productionTrafficWeights": weights(produced),
        },
    }


def reset(params: dict) -> dict:
    moto_api_backend.reset()
    EXIT_CODES.clear()
    EXIT_CODES_BY_DIGEST.clear()
    FAULTS.clear()
    INJECTED.clear()
    with _TRANSACTION_LOCK:
        TRANSACTIONS.clear()
    with _IN_FLIGHT_LOCK:
        CONFLICTS.update(window=DEFAULT_CONFLICT_WINDOW, rate=0.0)
        MET.update(transactions=0, writes=0)
    STATE_LOG.clear()
    ROLLOUTS.clear()
    SERVICE_REVISIONS.clear()
    ECS_EVENTS.clear()
    REVISION_OF.clear()
    with _LAG_LOCK:
        LAGGING.clear()
    with _ALARM_LOCK:
        ALARMS.clear()
    PUBLISHED.clear()
    PUT_EVENTS.clear()
    return {"status": "ok"}


ROUTES = {
    ("POST", "/_ferry/ecs/exit-codes"): set_exit_code,
    ("POST", "/_ferry/ecs/complete"): complete,
    ("POST", "/_ferry/ecs/fail"): fail,
    ("POST", "/_ferry/ecs/scale"): scale,
    ("POST", "/_ferry/ecs/hook-call"): hook_call,
    ("GET", "/_ferry/ecs/events"): take_ecs_events,
    ("POST", "/_ferry/cloudwatch/alarm"): alarm,
    ("GET", "/_ferry/ec2/default-network"): default_network,
    ("GET", "/_ferry/sns/published"): published,
    ("GET", "/_ferry/events/published"): put_events_published,
    ("POST", "/_ferry/dynamodb/conflicts"): set_conflicts,
    ("GET", "/_ferry/dynamodb/conflicts"): conflicts,
    ("POST", "/_ferry/reset"): reset,
}


def control_app(environ, start_response):
    request = Request(environ)
    if request.path.startswith(BLOB_PATH):
        return ecr_blob(request)(environ, start_response)
    try:
        handler = ROUTES.get((request.method, request.path))
        if handler is None:
            raise HarnessError(404, f"no harness endpoint {request.method} {request.path}")
        params = dict(request.args.items())
        if request.get_data():
            body = json.loads(request.get_data())
            if not isinstance(body, dict):
                raise HarnessError(400, "JSON body must be an object")
            params.update(body)
        params.setdefault("account", DEFAULT_ACCOUNT)
        params.setdefault("region", DEFAULT_REGION)
        status, payload = 200, handler(params)
    except HarnessError as exc:
        status, payload = exc.status, {"error": str(exc)}
    except json.JSONDecodeError as exc:
        status, payload = 400, {"error": f"invalid JSON: {exc}"}
    response = Response(json.dumps(payload), status=status, mimetype="application/json")
    return response(environ, start_response)


# Every AWS request served, when REQUEST_LOG is on: {"action", "region", "start", "end"}
# (time.perf_counter()), for counting round trips. LATENCY is added in front of each one,
# to stand in for the network between a function and AWS.
REQUEST_LOG: list[dict] = []
LOG_REQUESTS = threading.Event()
LATENCY = {"seconds": 0.0}


# Faults to inject: {"action": "ecs:UpdateService", "caller": access key id or None for
# anyone, "times": how many requests fail, "kind": one of
#   "throttle"  ThrottlingException (HTTP 400)
#   "error"     InternalFailure (HTTP 500)
#   "timeout"   no answer: the connection is held `seconds` (default 60), then closed
#   "drop"      the connection is closed at once, unanswered
# "processed": true to let the request take effect before the timeout or drop (the
# answer is what is lost), and "match": a text the request's body must hold (else any)}.
FAULTS: list[dict] = []
INJECTED: list[dict] = []  # every fault injected: {"action", "kind", "caller"}


def fault_response(environ, start_response, kind: str):
    """The error AWS answers with: throttling (HTTP 400) or an internal error (HTTP 500),
    in the protocol the caller speaks (JSON for x-amz-target callers, XML for query ones)."""
    code, status, message = {
        "throttle": ("ThrottlingException", "400 Bad Request", "Rate exceeded"),
        "error": ("InternalFailure", "500 Internal Server Error", "We encountered an internal error. Please try again."),
    }[kind]
    if environ.get("HTTP_X_AMZ_TARGET"):
        body = json.dumps({"__type": code, "message": message}).encode()
        content_type = "application/x-amz-json-1.1"
    else:
        code = "Throttling" if kind == "throttle" else code
        body = (f"<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error>"
                f"<RequestId>{uuid.uuid4()}</RequestId></ErrorResponse>").encode()
        content_type = "text/xml"
    start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(body))),
                            ("x-amzn-RequestId", str(uuid.uuid4()))])
    return [body]


def injected_fault(action: str, caller: str, body: str) -> dict | None:
    """The fault to answer `action` from `caller` with, if one is due."""
    with _FAULT_LOCK:
        for fault in FAULTS:
            if (fault["action"] == action and fault.get("caller") in (None, caller) and fault["times"] > 0
                    and fault.get("match", "") in body):
                fault["times"] -= 1
                INJECTED.append({"action": action, "kind": fault["kind"], "caller": caller})
                return fault
    return None


def lose_connection(environ, start_response, fault: dict, answer=None):
    """No answer: hold the connection for a timeout (until the client gives up, or the
    fault's `seconds`), then close it. `answer`, the request's own response when it was
    processed, is consumed and thrown away."""
    if answer is not None:
        for _ in answer:
            pass
    if fault["kind"] == "timeout":
        connection = environ.get("werkzeug.socket")
        deadline = time.monotonic() + float(fault.get("seconds", 60))
        while time.monotonic() < deadline:
            try:  # the client closing its end ends the wait
                if connection is None or connection.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b"":
                    break
            except BlockingIOError:
                pass
            except OSError:
                break
            time.sleep(0.05)
    connection = environ.get("werkzeug.socket")
    if connection is not None:
        try:
            connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
    start_response("500 Internal Server Error", [("Content-Length", "0")])
    return []


# DynamoDB's idempotent transactions: a TransactWriteItems repeated with the ClientRequestToken
# (the SDK sends one, the same on each of its attempts) of one that succeeded, within 10 minutes
# of its completion, is not applied again: its first answer is given
# (https://docs.aws.amazon.com/sdk-for-kotlin/api/latest/dynamodb/aws.sdk.kotlin.services.dynamodb.model/-transact-write-items-request/client-request-token.html).
# Repeated while the first is still running, it gets TransactionInProgressException, "The
# transaction with the given request token is already in progress"
# (https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_TransactWriteItems.html,
# https://docs.aws.amazon.com/botocore/latest/reference/services/dynamodb/client/exceptions/TransactionInProgressException.html).
# A cancelled one is not remembered. moto ignores the token.
# token -> {"body": the request, "answer": (status, headers, body) once it succeeded, else None,
# "at": when it completed}; an entry is replaced whole, never changed in place.
TRANSACTIONS: dict[str, dict] = {}
_TRANSACTION_LOCK = threading.Lock()  # guards TRANSACTIONS only: never held while moto runs
IDEMPOTENCY_SECONDS = 600


def dynamodb_error(start_response, code: str, message: str):
    """An HTTP 400 error in DynamoDB's JSON protocol, which the SDKs parse by its __type."""
    body = json.dumps({"__type": ERROR_TYPE_PREFIX + code, "message": message}).encode()
    start_response("400 Bad Request", [("Content-Type", "application/x-amz-json-1.0"),
                                       ("Content-Length", str(len(body))), ("x-amzn-ErrorType", code),
                                       ("x-amzn-RequestId", str(uuid.uuid4()))])
    return [body]


def idempotent_transaction(environ, start_response, moto_app):
    body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    environ["wsgi.input"] = io.BytesIO(body)
    try:
        token = json.loads(body).get("ClientRequestToken")
    except (ValueError, AttributeError):
        token = None
    if not token:
        return moto_app(environ, start_response)
    with _TRANSACTION_LOCK:
        now = time.monotonic()
        for old, entry in list(TRANSACTIONS.items()):
            if entry["answer"] and now - entry["at"] > IDEMPOTENCY_SECONDS:
                del TRANSACTIONS[old]
        seen = TRANSACTIONS.get(token)
        if seen is None:
            TRANSACTIONS[token] = {"body": body, "answer": None, "at": None}
    if seen is not None:
        if seen["body"] != body:
            return dynamodb_error(start_response, "IdempotentParameterMismatchException",
                                  "the request's parameters differ from an earlier one with its token")
        if seen["answer"] is None:
            return dynamodb_error(start_response, "TransactionInProgressException",
                                  "The transaction with the given request token is already in progress.")
        status, headers, answer = seen["answer"]
        start_response(status, headers)
        return [answer]

    captured = {}

    def capture(status, headers, exc_info=None):
        captured.update(status=status, headers=headers)
        return lambda data: None

    answer = None
    try:
        answer = b"".join(moto_app(environ, capture))
    finally:
        with _TRANSACTION_LOCK:
            if answer is not None and captured["status"].startswith("200"):
                TRANSACTIONS[token] = {"body": body, "answer": (captured["status"], captured["headers"], answer),
                                       "at": time.monotonic()}
            else:
                TRANSACTIONS.pop(token, None)
    start_response(captured["status"], captured["headers"])
    return [answer]


_FAULT_LOCK = threading.Lock()


def signer(environ) -> tuple[str, str, str]:
    """(access key id, region, service) from a request's SigV4 credential scope."""
    credential = re.search(r"Credential=([^/]+)/\d+/([^/]+)/([^/]+)/", environ.get("HTTP_AUTHORIZATION", ""))
    return credential.groups() if credential else ("?", "?", "?")


def action_of(environ, service: str) -> str:
    """`ecs:UpdateService` from a request's X-Amz-Target (JSON protocols), path (RPC v2 CBOR) or
    Action (query)."""
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    if cbor := CBOR_PATH.match(environ.get("PATH_INFO", "")):
        return f"{service}:{cbor.group(2)}"
    if target:
        return f"{service}:{target.rpartition('.')[2]}"
    match = re.search(r"(?:^|&)Action=([A-Za-z]+)", f"{environ.get('QUERY_STRING', '')}&{environ.get('ferry.body', '')}")
    return f"{service}:{match.group(1) if match else environ.get('REQUEST_METHOD', '?') + ' ' + environ.get('PATH_INFO', '')}"


def make_app():
    moto_app = DomainDispatcherApplication(create_backend_app)

    def serve(environ, start_response):
        if environ.get("HTTP_SMITHY_PROTOCOL") == "rpc-v2-cbor" and CBOR_PATH.match(environ.get("PATH_INFO", "")):
            return cbor_front(environ, start_response, moto_app)
        if environ.get("HTTP_X_AMZ_TARGET") == "DynamoDB_20120810.TransactWriteItems":
            return idempotent_transaction(environ, start_response, moto_app)
        return moto_app(environ, start_response)

    def app(environ, start_response):
        if environ.get("PATH_INFO", "").startswith("/_ferry/"):
            return control_app(environ, start_response)
        if not LOG_REQUESTS.is_set() and not LATENCY["seconds"] and not FAULTS:
            return serve(environ, start_response)
        start = time.perf_counter()
        if LATENCY["seconds"]:
            time.sleep(LATENCY["seconds"])
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length)
        environ["ferry.body"] = body.decode(errors="replace")
        environ["wsgi.input"] = io.BytesIO(body)
        caller, region, service = signer(environ)
        action = action_of(environ, service)
        fault = injected_fault(action, caller, environ["ferry.body"]) if FAULTS else None
        if fault and fault["kind"] in ("throttle", "error"):
            return fault_response(environ, start_response, fault["kind"])
        if fault and not fault.get("processed"):
            return lose_connection(environ, start_response, fault)
        if fault:
            return lose_connection(environ, start_response, fault, serve(environ, lambda *_: None))
        response = serve(environ, start_response)
        if LOG_REQUESTS.is_set():
            REQUEST_LOG.append({"action": action, "region": region, "start": start, "end": time.perf_counter()})
        return response

    return app


def start_server(port: int = 0):
    """Serve the patched moto and the control endpoints on 127.0.0.1:port from a thread of
    this process (the sandbox runs it in-process this way); returns the werkzeug server."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no per-request lines on stderr
    server = make_server("127.0.0.1", port, make_app(), threaded=True, request_handler=MotoRequestHandler)
    os.environ["MOTO_PORT"] = str(server.server_port)  # moto builds some URLs (SQS, S3) from it
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def control(endpoint: str, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    """A request to a served harness's control endpoint (`/_ferry/...`): status and JSON answer."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(endpoint + path, data=data, method=method)
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument(
        "--ignore-stdin", action="store_true", help="do not exit at EOF on stdin (manual runs)"
    )
    args = parser.parse_args()
    server = start_server(args.port)
    port = server.server_port

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    if not args.ignore_stdin:
        def watch_stdin():
            while sys.stdin.buffer.read1(65536):
                pass
            stop.set()
        threading.Thread(target=watch_stdin, daemon=True).start()

    print(f"READY http://127.0.0.1:{port}", flush=True)
    stop.wait()
    server.shutdown()
    server.server_close()
    os._exit(0)  # request threads are daemons; don't wait on anything moto started


if __name__ == "__main__":
    main()
