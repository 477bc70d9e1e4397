"""An Amazon ECS stand-in beside moto's ECS: service deployments, their lifecycle and the services' URLs.

moto 5.2.5 keeps clusters, task definitions and services, but a service never deploys anything: ``UpdateService``
changes the task definition at once, and ``ListServiceDeployments`` / ``DescribeServiceDeployments`` are not
implemented. :class:`EcsStandIn` sits in front of moto in the sandbox's WSGI app and

* answers ``UpdateService`` (moto validates and keeps the service; a new task definition, or
  ``forceNewDeployment``, starts a *service deployment*), ``DescribeServices`` (moto's answer with the
  deployment's view laid over it: ``taskDefinition``, ``deployments`` with ``rolloutState``, ``runningCount`` /
  ``pendingCount``, ``deploymentConfiguration``, ``currentServiceDeployment``), ``ListServiceDeployments`` and
  ``DescribeServiceDeployments``, in the shapes of botocore's ECS model; every other ECS call is moto's;
* moves a service deployment through ECS's states on a clock: ``PENDING``, ``IN_PROGRESS``, then ``SUCCESSFUL``;
  or, when the new tasks fail to start (the image cannot be pulled, or the ``circuit-breaker`` fault) and the
  deployment circuit breaker is on, ``ROLLBACK_IN_PROGRESS`` then ``ROLLBACK_SUCCESSFUL`` (rollback on) or
  ``STOPPED`` (rollback off; with the circuit breaker off the deployment stays ``IN_PROGRESS``, as ECS keeps
  retrying); when a watched CloudWatch alarm fires (the ``alarm`` fault; ``deploymentConfiguration.alarms``
  enabled), the same with the alarm named as triggered. ``ROLLING`` moves traffic when the new tasks are up;
  ``BLUE_GREEN`` shifts production traffic, then bakes ``bakeTimeInMinutes`` (the lifecycle stages are reported)
  before it ends. A newer deployment stops one in progress (``STOPPED``). Durations are :class:`Timings`;
* serves each service's URL, ``/_ecs/CLUSTER/SERVICE[@REGION]/PATH`` (default region: the sandbox's): the files of
  the image of the container the service's load balancer names (else the first container with a port mapping, else
  the first container) of the task definition that serves traffic, as the App Runner stand-in does
  (:func:`sandbox.apprunner.serve_image`); the ``health`` fault makes the new tasks answer 500 (on ``path`` when the
  fault names one, else everywhere), so opcd's own health check fails where ECS's succeeded;
* has a control API: ``/_opcd/ecs/faults`` (``{"service": NAME, "fail": "circuit-breaker" | "alarm" |
  "health" | "rollback", "path": "/health.json"?, "region": "us-west-2"?}``, taken by that service's next
  deployment, in ``region`` only when it names one, else in whichever region deploys it first; ``rollback``: the
  circuit breaker triggers and the rollback fails too, ``ROLLBACK_FAILED``, nothing serves) and
  ``/_opcd/ecs/timings``.

Regions: moto keeps each region's ECS apart; a request's region is its SigV4 credential scope's (unsigned: the
sandbox's region), and the stand-in keeps each service, its deployments and their ARNs in its own region.

Limits: no tasks run (``ListTasks``/``DescribeTasks`` are moto's and know nothing of deployments); one
account; ``LINEAR`` and ``CANARY`` strategies, lifecycle hooks and the blue/green load balancer
settings (alternate target group, listener rules) are not modelled; the alarm fault does not change the
alarm's state in CloudWatch. Requests are not authenticated.
"""

from __future__ import annotations

import copy
import io
import itertools
import json
import logging
import math
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

from moto.ecs.exceptions import ClusterNotFoundException, ServiceNotFoundException
from moto.ecs.models import ecs_backends
from werkzeug.wrappers import Request, Response

from sandbox.apprunner import (
    ImageResolver,
    ImageUnavailable,
    ServedImage,
    _json,
    _text,
    control_body,
    serve_image,
    timings_problem,
)  # fmt: skip

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

logger = logging.getLogger(__name__)

JSON = dict[str, Any]
TARGET_PREFIX = "AmazonEC2ContainerServiceV20141113."
OPERATIONS = (
    "CreateService", "UpdateService", "DescribeServices", "ListServiceDeployments", "DescribeServiceDeployments",
)  # fmt: skip
FAULTS = ("circuit-breaker", "alarm", "health", "rollback")
# the region of a signed request: its SigV4 credential scope, Credential=AKID/DATE/REGION/SERVICE/aws4_request
_SIGNED_REGION = re.compile(r"Credential=[^/]+/\d{8}/(?P<region>[a-z0-9-]+)/")
ENDED = frozenset({"SUCCESSFUL", "STOPPED", "ROLLBACK_SUCCESSFUL", "ROLLBACK_FAILED"})
STRATEGIES = ("ROLLING", "BLUE_GREEN")
_CONFIG_MEMBERS = {
    "deploymentCircuitBreaker", "maximumPercent", "minimumHealthyPercent", "alarms", "strategy",
    "bakeTimeInMinutes", "lifecycleHooks", "linearConfiguration", "canaryConfiguration", "earlySuccessCriteria",
}  # fmt: skip
_DEFAULT_CONFIG: JSON = {
    "deploymentCircuitBreaker": {"enable": False, "rollback": False},
    "maximumPercent": 200,
    "minimumHealthyPercent": 100,
    "strategy": "ROLLING",
}


@dataclass
class Timings:
    """How long ECS's phases last, in seconds. A deployment keeps the timings it started with."""

    pending: float = 0.5  # PENDING
    deploy: float = 2.0  # IN_PROGRESS until the new tasks are up and healthy (or fail)
    rollback: float = 1.0  # ROLLBACK_IN_PROGRESS
    minute: float = 1.0  # the sandbox's length of one of bakeTimeInMinutes' minutes


class _ApiError(Exception):
    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


def _invalid(message: str) -> _ApiError:
    return _ApiError("InvalidParameterException", message)


@dataclass(eq=False)
class _Revision:
    """A service revision: a task definition as one service runs it."""

    arn: str
    task_definition: str  # its ARN
    image: str  # the served container's image
    deployment_id: str  # the ``ecs-svc/…`` id of the Deployment that runs it
    created: float  # clock time
    served: ServedImage | None = None
    resolved: bool = False
    unhealthy: str | None = None  # the health fault: "" everywhere, else the one path answering 500


@dataclass(eq=False)
class _Service:
    arn: str
    name: str
    cluster: str
    cluster_arn: str
    region: str
    live: _Revision  # the revision production traffic reaches
    config: JSON  # deploymentConfiguration as ECS keeps it
    counter: itertools.count[int] = field(default_factory=lambda: itertools.count(1))


@dataclass(eq=False)
class _Deployment:
    seq: int
    arn: str
    service: _Service
    source: _Revision
    target: _Revision
    created: float
    timings: Timings
    config: JSON  # the deploymentConfiguration it runs with
    fault: JSON | None
    status: str = "PENDING"
    updated: float = 0.0
    finished: float | None = None
    claimed: bool = False
    decided: bool = False
    failure: str | None = None  # "circuit-breaker" | "alarm" | "superseded", once decided
    reason: str | None = None
    rollback_started: float | None = None

    @property
    def strategy(self) -> str:
        return str(self.config.get("strategy", "ROLLING"))

    @property
    def breaker(self) -> JSON:
        return dict(self.config.get("deploymentCircuitBreaker") or {"enable": False, "rollback": False})

    @property
    def alarms(self) -> JSON | None:
        alarms = self.config.get("alarms")
        return dict(alarms) if alarms and alarms.get("enable") else None

    @property
    def bake(self) -> float:
        minutes = self.config.get("bakeTimeInMinutes") or 0
        return float(minutes) * self.timings.minute if self.strategy == "BLUE_GREEN" else 0.0


class EcsStandIn:
    """ECS's service deployments in front of moto's ECS, as a WSGI app. See the module's docstring."""

    def __init__(
        self,
        region: str,
        account_id: str,
        moto: Callable[..., Iterable[bytes]],
        resolve_image: ImageResolver,
        timings: Timings | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.region, self.account_id = region, account_id
        self.timings = timings or Timings()
        self.base_url = ""  # where the sandbox serves it, e.g. "http://127.0.0.1:PORT"
        self._moto = moto
        self._resolve = resolve_image
        self._clock = clock
        self._epoch = time.time() - clock()
        self._lock = threading.Lock()
        self._services: dict[str, _Service] = {}
        self._deployments: list[_Deployment] = []
        self._faults: dict[tuple[str, str | None], JSON] = {}  # (service, region or None: any) → fault
        self._seq = 0
        self._generation = 0

    # ------------------------------------------------------------------ public

    def local_url(self, cluster: str, service: str, region: str | None = None) -> str:
        where = f"@{region}" if region and region != self.region else ""
        return f"{self.base_url}/_ecs/{cluster}/{service}{where}"

    def handles(self, environ: WSGIEnvironment) -> bool:
        path = environ.get("PATH_INFO", "")
        if path.startswith(("/_ecs/", "/_opcd/ecs/")):
            return True
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        return target.startswith(TARGET_PREFIX) and target[len(TARGET_PREFIX) :] in OPERATIONS

    def reset(self) -> None:
        """Forget every service's deployments and faults (timings stay); moto forgets the rest itself."""
        with self._lock:
            self._services.clear()
            self._deployments.clear()
            self._faults.clear()
            self._generation += 1

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        request = Request(environ)
        try:
            self._tick()
            response = self._route(request, environ)
        except Exception as exc:  # a bug here must not take the server thread down
            logger.exception("ECS stand-in failed on %s %s", request.method, request.path)
            response = _error_response(_ApiError("ServerException", repr(exc), 500))
        return response(environ, start_response)

    # ------------------------------------------------------------------ routing

    def _route(self, request: Request, environ: WSGIEnvironment) -> Response:
        path = request.path
        if path.startswith("/_ecs/"):
            cluster, _, rest = path[len("/_ecs/") :].partition("/")
            name, _, rest = rest.partition("/")
            name, _, region = name.partition("@")
            return self._serve(region or self.region, cluster, name, "/" + rest, request.method)
        if path.startswith("/_opcd/ecs/"):
            return self._control(request)
        operation = request.headers.get("X-Amz-Target", "")[len(TARGET_PREFIX) :]
        signed = _SIGNED_REGION.search(request.headers.get("Authorization", ""))
        region = signed["region"] if signed else self.region
        raw = request.get_data()
        try:
            body = json.loads(raw or b"{}")
            if not isinstance(body, dict):
                raise ValueError("not an object")
        except ValueError as exc:
            return _error_response(_ApiError("SerializationException", f"the body is not a JSON object: {exc}"))
        try:
            if operation == "CreateService":
                return self._create_service(region, environ, raw, body)
            if operation == "UpdateService":
                return self._update_service(region, environ, raw, body)
            if operation == "DescribeServices":
                return self._describe_services(region, environ, raw)
            if operation == "ListServiceDeployments":
                return _answer(self._list_service_deployments(region, body))
            return _answer(self._describe_service_deployments(body))
        except _ApiError as exc:
            return _error_response(exc)

    def _forward(self, environ: WSGIEnvironment, raw: bytes) -> tuple[int, bytes]:
        """moto's answer to the request (its body read already): (HTTP status, body)."""
        captured: list[Any] = []

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], None]:
            captured[:] = [status, headers]
            return lambda data: None

        inner = dict(environ)
        inner["wsgi.input"], inner["CONTENT_LENGTH"] = io.BytesIO(raw), str(len(raw))
        body = b"".join(self._moto(inner, capture))
        return int(str(captured[0]).split()[0]), body

    # ------------------------------------------------------------------ moto's side

    def _backend(self, region: str) -> Any:
        return ecs_backends[self.account_id][region]

    def _tracked(self, region: str, moto_service: Any) -> _Service:
        """The stand-in's record of a moto service of ``region``, made when first seen (lock held)."""
        tracked = self._services.get(moto_service.arn)
        if tracked is None:
            definition = self._backend(region).describe_task_definition(moto_service.task_definition)
            tracked = _Service(
                moto_service.arn, moto_service.name, moto_service.cluster_name, moto_service.cluster_arn, region,
                None,  # type: ignore[arg-type]  # set just below: the revision names the service
                _merge_config(copy.deepcopy(_DEFAULT_CONFIG), _moto_config(moto_service)),
            )  # fmt: skip
            tracked.live = self._revision(tracked, definition, moto_service, self._clock() - 1e6)
            self._services[moto_service.arn] = tracked
        return tracked

    def _revision(self, service: _Service, definition: Any, moto_service: Any, at: float) -> _Revision:
        number = next(service.counter)
        return _Revision(
            f"arn:aws:ecs:{service.region}:{self.account_id}:service-revision/{service.cluster}/{service.name}/"
            f"{number:019d}",
            definition.arn, _served_image(definition, moto_service), f"ecs-svc/{uuid.uuid4().int % 10**19:019d}", at,
        )  # fmt: skip

    def _moto_service(self, region: str, cluster: str, name: str) -> Any:
        try:
            return self._backend(region)._get_service(cluster, name)
        except ClusterNotFoundException:
            raise _ApiError("ClusterNotFoundException", f"Cluster not found: {cluster}") from None
        except ServiceNotFoundException:
            raise _ApiError("ServiceNotFoundException", f"Service not found: {name}") from None

    # ------------------------------------------------------------------ operations

    def _create_service(self, region: str, environ: WSGIEnvironment, raw: bytes, body: JSON) -> Response:
        """moto's CreateService; the stand-in keeps the deploymentConfiguration (moto forgets it)."""
        given = body.get("deploymentConfiguration")
        if given is not None:
            _check_config(given)
        with self._lock:
            status, answer = self._forward(environ, raw)
            if status != 200:
                return Response(answer, status, content_type="application/x-amz-json-1.1")
            service = json.loads(answer)["service"]
            moto_service = self._moto_service(region, str(body.get("cluster") or "default"), service["serviceName"])
            self._services.pop(moto_service.arn, None)  # a service created again under its old name
            if moto_service.task_definition is None:
                return _answer({"service": service})
            moto_service.deployment_configuration = given or {}
            return _answer({"service": self._overlay(region, service, moto_service)})

    def _update_service(self, region: str, environ: WSGIEnvironment, raw: bytes, body: JSON) -> Response:
        cluster = str(body.get("cluster") or "default")
        name = str(body.get("service") or "")
        given = body.get("deploymentConfiguration")
        if given is not None:
            _check_config(given)
        with self._lock:
            moto_service = self._moto_service(region, cluster, name)
            tracked = self._tracked(region, moto_service)
            latest = self._latest(tracked)  # a failed deployment without rollback left its revision the service's
            stuck = (
                latest.target.task_definition if latest and latest.status in ("STOPPED", "ROLLBACK_FAILED") else None
            )
            before = self._running(tracked) or stuck or tracked.live.task_definition
            status, answer = self._forward(environ, raw)  # moto validates and keeps the service
            if status != 200:
                return Response(answer, status, content_type="application/x-amz-json-1.1")
            if given is not None:
                tracked.config = _merge_config(tracked.config, given)
            definition = self._backend(region).describe_task_definition(moto_service.task_definition)
            moto_service.task_definition = definition.arn  # moto keeps what it was given ("family:1")
            if definition.arn != before or body.get("forceNewDeployment"):
                self._start(tracked, definition, moto_service)
            service = json.loads(answer)["service"]
            return _answer({"service": self._overlay(region, service, moto_service)})

    def _running(self, service: _Service) -> str | None:
        """The task definition of the service's deployment in progress, if one is."""
        current = self._latest(service)
        return current.target.task_definition if current and current.status not in ENDED else None

    def _start(self, service: _Service, definition: Any, moto_service: Any) -> _Deployment:
        now = self._clock()
        for older in self._deployments:
            if older.service is service and older.status not in ENDED:
                older.failure, older.reason = "superseded", "Service deployment stopped: a newer one started."
                self._finish(older, "STOPPED", now)
        source = service.live
        target = self._revision(service, definition, moto_service, now)
        self._seq += 1
        deployment = _Deployment(
            self._seq,
            f"arn:aws:ecs:{service.region}:{self.account_id}:service-deployment/{service.cluster}/{service.name}/"
            f"{uuid.uuid4().hex[:22]}",
            service, source, target, now, replace(self.timings), copy.deepcopy(service.config),
            self._faults.pop((service.name, service.region), None) or self._faults.pop((service.name, None), None),
            updated=now,
        )  # fmt: skip
        self._deployments.append(deployment)
        logger.info("ECS deployment of %s: %s → %s", service.name, source.task_definition, target.task_definition)
        return deployment

    def _describe_services(self, region: str, environ: WSGIEnvironment, raw: bytes) -> Response:
        status, answer = self._forward(environ, raw)
        if status != 200:
            return Response(answer, status, content_type="application/x-amz-json-1.1")
        result = json.loads(answer)
        with self._lock:
            for service in result.get("services", []):
                cluster = service["clusterArn"].rpartition("/")[2]
                moto_service = self._moto_service(region, cluster, service["serviceName"])
                if moto_service.task_definition:
                    self._overlay(region, service, moto_service)
        return _answer(result)

    def _list_service_deployments(self, region: str, body: JSON) -> JSON:
        if not isinstance(body.get("service"), str):
            raise _invalid("service is required")
        cluster, name = str(body.get("cluster") or "default"), body["service"].rpartition("/")[2]
        statuses = body.get("status")
        limit = body.get("maxResults", 20)
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 100:
            raise _invalid(f"maxResults must be an integer from 1 to 100, not {limit!r}")
        created = body.get("createdAt") or {}
        token = body.get("nextToken")
        with self._lock:
            tracked = self._tracked(region, self._moto_service(region, cluster, name))
            found = [d for d in reversed(self._deployments) if d.service is tracked]
            if statuses:
                found = [d for d in found if d.status in statuses]
            if "after" in created:
                found = [d for d in found if self._wall(d.created) >= float(created["after"])]
            if "before" in created:
                found = [d for d in found if self._wall(d.created) <= float(created["before"])]
            if token is not None:
                try:
                    position = int(str(token))
                except ValueError:
                    raise _invalid(f"nextToken {token!r} is invalid") from None
                found = [d for d in found if d.seq < position]
            page = found[:limit]
            answer: JSON = {"serviceDeployments": [self._brief(d) for d in page]}
            if len(found) > len(page):
                answer["nextToken"] = str(page[-1].seq)
            return answer

    def _describe_service_deployments(self, body: JSON) -> JSON:
        arns = body.get("serviceDeploymentArns")
        if not isinstance(arns, list) or not 1 <= len(arns) <= 20:
            raise _invalid("serviceDeploymentArns must list 1 to 20 service deployment ARNs")
        with self._lock:
            known = {d.arn: d for d in self._deployments}
            return {
                "serviceDeployments": [self._full(known[arn]) for arn in arns if arn in known],
                "failures": [{"arn": arn, "reason": "MISSING"} for arn in arns if arn not in known],
            }

    # ------------------------------------------------------------------ the clock

    def _tick(self) -> None:
        """Advance every deployment to where the clock says; pull the images of those due (outside the lock)."""
        while True:
            with self._lock:
                due = self._advance()
                generation = self._generation
            if not due:
                return
            outcomes = [(d, *self._decide(d)) for d in due]
            with self._lock:
                if generation != self._generation:
                    return
                for deployment, served, failure, reason in outcomes:
                    deployment.target.served, deployment.target.resolved = served, served is not None
                    deployment.decided, deployment.failure, deployment.reason = True, failure, reason

    def _decide(self, deployment: _Deployment) -> tuple[ServedImage | None, str | None, str | None]:
        """(the target's image, what fails: "circuit-breaker" | "alarm" | None, why)."""
        fault = (deployment.fault or {}).get("fail")
        image = deployment.target.image
        try:
            served = self._resolve(image, "ECR_PUBLIC" if image.startswith("public.ecr.aws/") else "ECR")
        except ImageUnavailable as exc:
            return None, "circuit-breaker", f"tasks failed to start: CannotPullContainerError: {image}: {exc}"
        except Exception as exc:  # a bug in the resolver must not leave the deployment in progress for ever
            logger.exception("pulling %s failed", image)
            return None, "circuit-breaker", f"tasks failed to start: CannotPullContainerError: {exc!r}"
        if fault in ("circuit-breaker", "rollback"):
            return None, "circuit-breaker", "tasks failed to start: essential container exited (fault injected)"
        if fault == "alarm" and deployment.alarms is not None:
            return served, "alarm", f"CloudWatch alarm {deployment.alarms['alarmNames'][0]} is in ALARM"
        return served, None, None

    def _advance(self) -> list[_Deployment]:
        now = self._clock()
        due: list[_Deployment] = []
        for d in self._deployments:
            if d.status in ENDED:
                continue
            pending_end = d.created + d.timings.pending
            deploy_end = pending_end + d.timings.deploy
            if now < pending_end:
                continue
            if not d.decided:
                self._set(d, "IN_PROGRESS", pending_end)
                if now >= deploy_end and not d.claimed:
                    d.claimed = True
                    due.append(d)
                continue
            if d.failure is None:
                if d.fault and d.fault.get("fail") == "health":
                    d.target.unhealthy = str(d.fault.get("path") or "")
                d.service.live = d.target  # traffic moves to the new tasks
                if now >= deploy_end + d.bake:
                    self._finish(d, "SUCCESSFUL", deploy_end + d.bake)
                continue
            monitor = d.breaker if d.failure == "circuit-breaker" else (d.alarms or {})
            if d.failure == "alarm":
                d.service.live = d.target  # the alarm fired under the new tasks' traffic
            if not monitor.get("enable"):
                continue  # nothing watches: ECS keeps starting tasks that fail
            if not monitor.get("rollback"):
                self._finish(d, "STOPPED", deploy_end)
                continue
            d.rollback_started = deploy_end
            self._set(d, "ROLLBACK_IN_PROGRESS", deploy_end)
            if now >= deploy_end + d.timings.rollback:
                if d.fault and d.fault.get("fail") == "rollback":  # the previous revision's tasks fail too
                    d.reason = f"{d.reason}; the rollback's tasks failed to start too"
                    d.source.served, d.source.resolved = None, True
                    self._finish(d, "ROLLBACK_FAILED", deploy_end + d.timings.rollback)
                    continue
                d.service.live = d.source
                self._finish(d, "ROLLBACK_SUCCESSFUL", deploy_end + d.timings.rollback)
        return due

    def _set(self, d: _Deployment, status: str, at: float) -> None:
        if d.status != status:
            d.status, d.updated = status, at

    def _finish(self, d: _Deployment, status: str, at: float) -> None:
        self._set(d, status, at)
        d.finished = at
        if status == "STOPPED" and d.failure == "circuit-breaker":
            d.service.live = d.source
        logger.info("ECS deployment of %s: %s%s", d.service.name, status, f" ({d.reason})" if d.reason else "")

    def _latest(self, service: _Service) -> _Deployment | None:
        return next((d for d in reversed(self._deployments) if d.service is service), None)

    def _wall(self, at: float) -> float:
        return round(at + self._epoch, 3)

    # ------------------------------------------------------------------ answers

    def _stage(self, d: _Deployment) -> str | None:
        if d.strategy != "BLUE_GREEN":
            return None
        if d.status == "PENDING":
            return "RECONCILE_SERVICE"
        if d.status == "IN_PROGRESS":
            return "BAKE_TIME" if d.decided and d.failure is None else "SCALE_UP"
        return "CLEAN_UP" if d.status in ENDED else "PRODUCTION_TRAFFIC_SHIFT"

    def _counts(self, d: _Deployment, desired: int) -> tuple[int, int]:
        """(tasks running of the target revision, of the source revision)."""
        if d.status == "PENDING":
            return 0, desired
        if d.status == "SUCCESSFUL":
            return desired, 0
        if d.status == "ROLLBACK_SUCCESSFUL" or d.failure == "superseded":
            return 0, desired
        if d.failure == "circuit-breaker":
            return 0, desired
        if d.decided:  # up, baking or alarmed
            return desired, (desired if d.strategy == "BLUE_GREEN" or d.status != "STOPPED" else 0)
        elapsed = self._clock() - d.created - d.timings.pending
        return min(desired, int(desired * elapsed / max(d.timings.deploy, 1e-9))), desired

    def _overlay(self, region: str, service: JSON, moto_service: Any) -> JSON:
        """moto's Service as ECS would describe it with its deployments (lock held)."""
        tracked = self._tracked(region, moto_service)
        desired = int(moto_service.desired_count)
        d = self._latest(tracked)
        platform = {k: service[k] for k in ("launchType",) if k in service}
        platform["platformFamily"] = "EC2" if service.get("launchType") == "EC2" else "FARGATE"

        def deployment(revision: _Revision, status: str, rollout: str, running: int, reason: str) -> JSON:
            return {
                "id": revision.deployment_id, "status": status, "taskDefinition": revision.task_definition,
                "desiredCount": desired if status == "PRIMARY" else running, "pendingCount": 0 if status != "PRIMARY"
                else max(desired - running, 0), "runningCount": running,
                "failedTasks": (d.breaker.get("enable") and _threshold(desired) or 1)
                if d is not None and d.failure == "circuit-breaker" and revision is d.target else 0,
                "createdAt": self._wall(revision.created),
                "updatedAt": self._wall(d.updated if d else revision.created),
                **platform, "rolloutState": rollout, "rolloutStateReason": reason,
            }  # fmt: skip

        if d is None:
            deployments = [deployment(tracked.live, "PRIMARY", "COMPLETED", desired, "ECS deployment completed.")]
        else:
            new, old = self._counts(d, desired)
            failed = f"ECS deployment failed: {d.reason}" if d.reason else "ECS deployment stopped."
            if d.status in ("PENDING", "IN_PROGRESS"):
                deployments = [
                    deployment(d.target, "PRIMARY", "IN_PROGRESS", new, "ECS deployment in progress."),
                    deployment(d.source, "ACTIVE", "COMPLETED", old, "ECS deployment completed."),
                ]
            elif d.status == "SUCCESSFUL":
                deployments = [deployment(d.target, "PRIMARY", "COMPLETED", desired, "ECS deployment completed.")]
            elif d.status == "ROLLBACK_IN_PROGRESS":
                deployments = [
                    deployment(d.source, "PRIMARY", "IN_PROGRESS", desired, "ECS deployment rolling back."),
                    deployment(d.target, "ACTIVE", "FAILED", new, failed),
                ]
            elif d.status == "ROLLBACK_SUCCESSFUL":
                deployments = [deployment(d.source, "PRIMARY", "COMPLETED", desired, "ECS deployment completed.")]
            else:  # STOPPED without rollback: the failed revision stays the service's task definition
                deployments = [
                    deployment(d.target, "PRIMARY", "FAILED", new, failed),
                    deployment(d.source, "ACTIVE", "COMPLETED", old, "ECS deployment completed."),
                ]
                deployments = [x for x in deployments if x["status"] == "PRIMARY" or x["runningCount"]]
        primary = deployments[0]
        service.update(
            taskDefinition=primary["taskDefinition"],
            deployments=deployments,
            desiredCount=desired,
            runningCount=sum(x["runningCount"] for x in deployments),
            pendingCount=primary["pendingCount"],
            deploymentConfiguration=copy.deepcopy(tracked.config),
        )
        if d is not None:
            service["currentServiceDeployment"] = d.arn
        return service

    def _revision_summary(self, revision: _Revision, running: int, requested: int) -> JSON:
        return {
            "arn": revision.arn, "requestedTaskCount": requested, "runningTaskCount": running,
            "pendingTaskCount": max(requested - running, 0),
        }  # fmt: skip

    def _brief(self, d: _Deployment) -> JSON:
        answer: JSON = {
            "serviceDeploymentArn": d.arn, "serviceArn": d.service.arn, "clusterArn": d.service.cluster_arn,
            "createdAt": self._wall(d.created), "targetServiceRevisionArn": d.target.arn, "status": d.status,
        }  # fmt: skip
        if d.status != "PENDING":
            answer["startedAt"] = self._wall(d.created + d.timings.pending)
        if d.finished is not None:
            answer["finishedAt"] = self._wall(d.finished)
        if d.reason:
            answer["statusReason"] = d.reason
        return answer

    def _full(self, d: _Deployment) -> JSON:
        desired = int(self._moto_desired(d.service))
        new, old = self._counts(d, desired)
        answer: JSON = {
            "serviceDeploymentArn": d.arn, "serviceArn": d.service.arn, "clusterArn": d.service.cluster_arn,
            "createdAt": self._wall(d.created), "updatedAt": self._wall(d.updated),
            "sourceServiceRevisions": [self._revision_summary(d.source, old, old)],
            "targetServiceRevision": self._revision_summary(d.target, new, desired),
            "status": d.status, "deploymentConfiguration": copy.deepcopy(d.config),
        }  # fmt: skip
        if d.status != "PENDING":
            answer["startedAt"] = self._wall(d.created + d.timings.pending)
        if d.finished is not None:
            answer["stoppedAt" if d.status == "STOPPED" else "finishedAt"] = self._wall(d.finished)
        if d.reason:
            answer["statusReason"] = d.reason
        if stage := self._stage(d):
            answer["lifecycleStage"] = stage
        if d.rollback_started is not None:
            answer["rollback"] = {
                "reason": f"Service deployment rolled back because {_because(d)}.",
                "startedAt": self._wall(d.rollback_started),
                "serviceRevisionArn": d.source.arn,
            }
        breaker = d.breaker
        answer["deploymentCircuitBreaker"] = {
            "status": "DISABLED" if not breaker.get("enable") else "TRIGGERED" if d.failure == "circuit-breaker"
            else "MONITORING_COMPLETE" if d.status in ENDED else "MONITORING",
            "failureCount": _threshold(desired) if d.failure == "circuit-breaker" and d.decided else 0,
            "threshold": _threshold(desired),
        }  # fmt: skip
        alarms = d.config.get("alarms") or {}
        watched = d.alarms is not None
        triggered = watched and d.failure == "alarm"
        answer["alarms"] = {
            "status": "DISABLED" if not watched else "TRIGGERED" if triggered
            else "MONITORING_COMPLETE" if d.status in ENDED else "MONITORING",
            "alarmNames": list(alarms.get("alarmNames") or []),
            "triggeredAlarmNames": list(alarms.get("alarmNames") or [])[:1] if triggered else [],
        }  # fmt: skip
        return answer

    def _moto_desired(self, service: _Service) -> int:
        try:
            return int(self._backend(service.region)._get_service(service.cluster, service.name).desired_count)
        except Exception:
            return 0

    # ------------------------------------------------------------------ service URLs

    def _serve(self, region: str, cluster: str, name: str, path: str, method: str) -> Response:
        with self._lock:
            try:
                tracked = self._tracked(region, self._moto_service(region, cluster, name))
            except (_ApiError, KeyError):
                return _text(404, f"no ECS service {name!r} in cluster {cluster!r} in {region}")
            live = tracked.live
            resolved, served, unhealthy = live.resolved, live.served, live.unhealthy
        if not resolved:  # the service's first revision: pulled when first asked for
            image = live.image
            try:
                served = self._resolve(image, "ECR_PUBLIC" if image.startswith("public.ecr.aws/") else "ECR")
            except ImageUnavailable as exc:
                return _text(503, f"Service Unavailable: ECS service {name} has no running task ({exc})")
            with self._lock:
                live.served, live.resolved = served, True
        if served is None:
            return _text(503, f"Service Unavailable: ECS service {name} has no running task")
        if unhealthy is not None and (unhealthy == "" or path == unhealthy):
            return Response(json.dumps({"status": "unhealthy"}), 500, content_type="application/json")
        return serve_image(served, path, method)

    # ------------------------------------------------------------------ control

    def _control(self, request: Request) -> Response:
        path, method = request.path, request.method
        body = control_body(request, "/_opcd/ecs")
        if isinstance(body, Response):
            return body
        with self._lock:
            if path.endswith("/timings"):
                if method == "POST":
                    if problem := timings_problem(body, ("pending", "deploy", "rollback", "minute")):
                        return _json(400, {"error": problem})
                    self.timings = replace(self.timings, **{k: float(v) for k, v in body.items()})
                return _json(200, asdict(self.timings))
            if method == "POST":
                if problem := _fault_problem(body):
                    return _json(400, {"error": problem})
                self._faults[body["service"], body.get("region")] = dict(body)
            elif method == "DELETE":
                self._faults.clear()
            return _json(200, {"faults": list(self._faults.values())})


# ---------------------------------------------------------------------- module helpers


def _threshold(desired: int) -> int:
    """The circuit breaker's failure threshold: half the desired count, at least 3, at most 200 (ECS's rule)."""
    return min(max(3, math.ceil(desired / 2)), 200)


def _because(d: _Deployment) -> str:
    if d.failure == "alarm":
        return f"the CloudWatch alarm {(d.alarms or {}).get('alarmNames', ['?'])[0]} went into ALARM"
    return "the deployment circuit breaker was triggered: tasks failed to start"


def _served_image(definition: Any, moto_service: Any) -> str:
    """The image of the container whose port the service's traffic reaches."""
    containers = list(definition.container_definitions)
    named = {c.get("name"): c for c in containers}
    for balancer in getattr(moto_service, "load_balancers", None) or []:
        if balancer.get("containerName") in named:
            return str(named[balancer["containerName"]]["image"])
    chosen = next((c for c in containers if c.get("portMappings")), containers[0] if containers else {})
    return str(chosen.get("image", ""))


def _moto_config(moto_service: Any) -> JSON:
    config = getattr(moto_service, "deployment_configuration", None)
    return dict(config) if isinstance(config, dict) else {}


def _check_config(given: Any) -> None:
    if not isinstance(given, dict):
        raise _invalid("deploymentConfiguration must be an object")
    if unknown := sorted(set(given) - _CONFIG_MEMBERS):
        raise _invalid(f"deploymentConfiguration has unknown members: {', '.join(unknown)}")
    strategy = given.get("strategy", "ROLLING")
    if strategy not in STRATEGIES:
        raise _invalid(f"deploymentConfiguration.strategy {strategy!r}: the sandbox models ROLLING and BLUE_GREEN")
    bake = given.get("bakeTimeInMinutes")
    if bake is not None and (isinstance(bake, bool) or not isinstance(bake, int) or not 0 <= bake <= 1440):
        raise _invalid(f"bakeTimeInMinutes must be an integer from 0 to 1440, not {bake!r}")
    breaker = given.get("deploymentCircuitBreaker")
    flags = ("enable", "rollback")
    if breaker is not None and not (isinstance(breaker, dict) and all(isinstance(breaker.get(f), bool) for f in flags)):
        raise _invalid("deploymentCircuitBreaker needs enable and rollback, both booleans")
    alarms = given.get("alarms")
    if alarms is not None:
        names = alarms.get("alarmNames") if isinstance(alarms, dict) else None
        if not (
            isinstance(names, list) and all(isinstance(n, str) for n in names)
            and isinstance(alarms.get("enable"), bool) and isinstance(alarms.get("rollback"), bool)
        ):  # fmt: skip
            raise _invalid("alarms needs alarmNames (a list of names), enable and rollback (booleans)")
        if alarms["enable"] and not names:
            raise _invalid("alarms.enable needs at least one name in alarmNames")


def _merge_config(current: JSON, given: JSON) -> JSON:
    merged = {**copy.deepcopy(current), **copy.deepcopy(given)}
    if merged.get("strategy") != "BLUE_GREEN":
        merged.pop("bakeTimeInMinutes", None)
    return merged


def _fault_problem(body: JSON) -> str | None:
    if not {"service", "fail"} <= set(body) <= {"service", "fail", "path", "region"}:
        kinds = " | ".join(f'"{kind}"' for kind in FAULTS)
        return f'a fault is {{"service": "<service name>", "fail": {kinds}, "path"?, "region"?}}'
    region = body.get("region", "us-east-1")
    if not (isinstance(region, str) and re.fullmatch(r"[a-z]{2}(-[a-z]+)+-\d", region)):
        return f'"region" names an AWS region, e.g. "us-west-2", not {body["region"]!r}'
    if body["fail"] not in FAULTS:
        return f'"fail" must be one of {", ".join(FAULTS)}, not {body["fail"]!r}'
    if "path" in body and (body["fail"] != "health" or not str(body["path"]).startswith("/")):
        return '"path" goes with the health fault only, and starts with "/"'
    return None


def _answer(result: JSON) -> Response:
    return Response(
        json.dumps(result), 200, content_type="application/x-amz-json-1.1",
        headers={"x-amzn-RequestId": str(uuid.uuid4())},
    )  # fmt: skip


def _error_response(error: _ApiError) -> Response:
    return Response(
        json.dumps({"__type": error.code, "message": error.message}), error.status,
        content_type="application/x-amz-json-1.1",
        headers={"x-amzn-ErrorType": error.code, "x-amzn-RequestId": str(uuid.uuid4())},
    )  # fmt: skip
