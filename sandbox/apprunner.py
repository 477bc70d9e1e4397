"""An AWS App Runner stand-in: App Runner's API and its service URLs, for the sandbox.

Neither moto nor LocalStack has App Runner, so the sandbox serves its own. :class:`AppRunnerStandIn` is a
WSGI app that

* speaks App Runner's wire protocol (AWS JSON 1.0: ``POST /`` with ``X-Amz-Target: AppRunner.<Operation>``)
  for ``CreateService``, ``DescribeService``, ``UpdateService``, ``StartDeployment``, ``ListOperations``,
  ``ListServices`` and ``DeleteService``, answering in the shapes of App Runner's service model, with the
  defaults App Runner fills in; errors carry ``x-amzn-ErrorType`` and ``__type`` so that botocore raises the
  modelled exception classes;
* moves services and operations through App Runner's states on a clock: an operation is ``PENDING``, then
  ``IN_PROGRESS``, then ``SUCCEEDED`` or ``FAILED``, or, when the new image of an update or deployment cannot
  be pulled or fails its health check, ``ROLLBACK_IN_PROGRESS`` then ``ROLLBACK_SUCCEEDED`` (the service keeps
  its previous image and configuration, as App Runner does). States advance lazily on each request; the
  durations are :class:`Timings`;
* serves each service's URL: ``/_services/NAME/PATH``, or any path with ``Host:`` the service's ServiceUrl;
* has a control API for demos and tests under ``/_opcd/`` (fault injection and timings).

Limits. It does not run images: at the end of a deployment it asks ``resolve_image`` for the image's files
and its service URL serves them as a static file server would (``index.html`` for a directory); the image's
entrypoint, start command, port, environment, secrets and instance role are recorded, never used. An image
without files (``ServedImage.root`` None, e.g. App Runner's public sample image) answers a placeholder JSON.
The TCP health check passes whenever the image can be pulled; the HTTP one checks that ``Path`` is a file of
the image. Only image sources (no ``CodeRepository``); no automatic deployments on push, pause/resume, tags
API, custom domains, VPC connectors or auto scaling configurations (services show the default one). Requests
are not authenticated. State lives in memory, for one region and account.
"""

from __future__ import annotations

import base64
import copy
import json
import logging
import math
import mimetypes
import re
import secrets
import string
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from werkzeug.wrappers import Request, Response

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

logger = logging.getLogger(__name__)

JSON = dict[str, Any]

CREATE_SERVICE, UPDATE_SERVICE, START_DEPLOYMENT, DELETE_SERVICE = (
    "CREATE_SERVICE", "UPDATE_SERVICE", "START_DEPLOYMENT", "DELETE_SERVICE",
)  # fmt: skip
ENDED = frozenset({"SUCCEEDED", "FAILED", "ROLLBACK_SUCCEEDED", "ROLLBACK_FAILED"})
FAULTS = ("health", "rollback")
SERVICE_QUOTA = 30  # App Runner's default quota of services per region
DEFAULT_PORT = "8080"
PLACEHOLDER = {"status": "ok", "version": "placeholder"}

_SERVICE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{3,39}")
_ROLE_ARN = re.compile(r"arn:(aws|aws-us-gov|aws-cn|aws-iso|aws-iso-b):iam::[0-9]{12}:role/[\w+=,.@/-]{1,1000}")
_AUTOSCALING_ARN = re.compile(
    r"arn:aws[\w-]*:apprunner:[a-z0-9-]+:[0-9]{12}:autoscalingconfiguration/(?P<name>[A-Za-z0-9][\w-]{3,31})"
    r"/(?P<revision>[0-9]+)(/[0-9a-f]+)?"
)
_ECR_ACCOUNT = re.compile(r"^(?P<account>[0-9]{12})\.dkr\.ecr\.")
_CPU = {"256": "256", "512": "512", "1024": "1024", "2048": "2048", "4096": "4096"}
_CPU.update({"0.25 vCPU": "256", "0.5 vCPU": "512", "1 vCPU": "1024", "2 vCPU": "2048", "4 vCPU": "4096"})
_MEMORY = {str(mb): str(mb) for mb in (512, 1024, 2048, 3072, 4096, 6144, 8192, 10240, 12288)}
_MEMORY.update({"0.5 GB": "512", **{f"{gb} GB": str(gb * 1024) for gb in (1, 2, 3, 4, 6, 8, 10, 12)}})
_HEALTH_DEFAULTS: JSON = {
    "Protocol": "TCP", "Path": "/", "Interval": 5, "Timeout": 2, "HealthyThreshold": 1, "UnhealthyThreshold": 5,
}  # fmt: skip
_HEALTH_INTEGERS = ("Interval", "Timeout", "HealthyThreshold", "UnhealthyThreshold")


@dataclass(frozen=True)
class ServedImage:
    """What a service URL serves once an image is deployed."""

    identifier: str  # the ImageIdentifier it was resolved from
    digest: str | None  # image manifest digest ("sha256:…"), None when unknown
    root: Path | None  # directory whose files the service URL serves; None → placeholder page
    port: str | None = None  # the image's exposed port, informational


class ImageUnavailable(Exception):
    """The image cannot be pulled (no such tag, registry down). str(exc) says why."""


ImageResolver = Callable[[str, str], ServedImage]
"""(image_identifier, image_repository_type "ECR"|"ECR_PUBLIC") → ServedImage; raises ImageUnavailable."""
IdentifierCheck = Callable[[str, str], str | None]
"""(identifier, repository_type) → None if acceptable, else the InvalidRequestException message."""


@dataclass
class Timings:
    """How long App Runner's phases last, in seconds. An operation keeps the timings it started with."""

    pending: float = 0.5  # seconds an operation stays PENDING
    deploy: float = 2.0  # seconds IN_PROGRESS before the new image goes live (or fails)
    rollback: float = 1.0  # seconds ROLLBACK_IN_PROGRESS


class _ApiError(Exception):
    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


def _invalid(message: str) -> _ApiError:
    return _ApiError("InvalidRequestException", message)


class _Outside(Exception):
    """A path that resolves outside the image's root."""


@dataclass(eq=False)
class _Service:
    seq: int
    name: str
    service_id: str
    arn: str
    url: str
    created: float  # epoch seconds, as every time below
    updated: float
    status: str
    config: JSON  # the Service members that describe its configuration
    tags: list[JSON]
    served: ServedImage | None = None  # None: nothing answers (503)
    deleted: float | None = None


@dataclass(eq=False)
class _Operation:
    seq: int
    id: str
    type: str
    service: _Service
    started: float  # on the stand-in's clock (monotonic)
    timings: Timings
    config: JSON | None  # the configuration being deployed; None for a deletion
    previous: JSON | None  # what a failed deploy goes back to
    rebuild: bool  # the service had failed to create: there is nothing to roll back to
    fault: str | None
    status: str = "PENDING"
    updated: float = 0.0  # clock time of the last status change
    ended: float | None = None
    claimed: bool = False  # a request is deciding the deploy's outcome
    decided: bool = False
    image: ServedImage | None = None
    failure: str | None = None  # why the deploy failed, once decided


class AppRunnerStandIn:
    """App Runner's API, service URLs and a control API, as one WSGI app. See the module's docstring."""

    def __init__(
        self,
        region: str,
        account_id: str,
        resolve_image: ImageResolver,
        check_identifier: IdentifierCheck | None = None,
        timings: Timings | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.region = region
        self.account_id = account_id
        self.timings = timings or Timings()
        self.base_url = ""  # set by whoever serves it, e.g. "http://127.0.0.1:PORT"
        self._resolve = resolve_image
        self._check = check_identifier
        self._clock = clock
        self._epoch = time.time() - clock()  # clock time + _epoch = epoch seconds
        self._lock = threading.Lock()
        self._services: list[_Service] = []
        self._operations: list[_Operation] = []
        self._faults: dict[str, str] = {}
        self._seq = 0
        self._generation = 0
        self._autoscaling_id = uuid.uuid4().hex
        self._api: dict[str, Callable[[JSON], JSON]] = {
            "CreateService": self._create_service,
            "DescribeService": self._describe_service,
            "UpdateService": self._update_service,
            "StartDeployment": self._start_deployment,
            "DeleteService": self._delete_service,
            "ListServices": self._list_services,
            "ListOperations": self._list_operations,
        }

    # ------------------------------------------------------------------ public

    def local_url(self, service_name: str) -> str:
        return f"{self.base_url}/_services/{service_name}"

    def reset(self) -> None:
        """Forget every service, operation and fault (timings stay)."""
        with self._lock:
            self._services.clear()
            self._operations.clear()
            self._faults.clear()
            self._generation += 1

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        request = Request(environ)
        try:
            self._tick()
            response = self._route(request)
        except Exception as exc:  # a bug here must not take the server thread down
            logger.exception("App Runner stand-in failed on %s %s", request.method, request.path)
            response = _error_response(_ApiError("InternalServiceErrorException", repr(exc), 500))
        return response(environ, start_response)

    # ------------------------------------------------------------------ routing

    def _route(self, request: Request) -> Response:
        host = request.host.lower()
        host = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        with self._lock:
            by_host = next((s for s in reversed(self._services) if s.url == host), None)
        if by_host is not None:
            return self._serve(by_host, request.path, request.method)
        path = request.path
        if path == "/_services" or path.startswith("/_services/"):
            name, _, rest = path[len("/_services/") :].partition("/")
            with self._lock:
                named = [s for s in self._services if s.name == name]
                live = [s for s in named if s.status != "DELETED"]
                service = (live or named)[-1] if named else None
            if service is None:
                return _text(404, f"no App Runner service named {name!r}")
            return self._serve(service, "/" + rest, request.method)
        if path.startswith("/_opcd/"):
            return self._control(request)
        if request.method == "POST" and "X-Amz-Target" in request.headers:
            return self._call_api(request)
        return _json(404, {"error": f"nothing at {request.method} {path}"})

    def _call_api(self, request: Request) -> Response:
        prefix, _, operation = request.headers.get("X-Amz-Target", "").partition(".")
        handler = self._api.get(operation) if prefix == "AppRunner" else None
        if handler is None:
            message = f"the sandbox's App Runner does not implement {request.headers.get('X-Amz-Target')!r}"
            return _error_response(_ApiError("UnknownOperationException", message))
        try:
            body = json.loads(request.get_data() or b"{}")
        except ValueError as exc:
            return _error_response(_ApiError("SerializationException", f"the body is not JSON: {exc}"))
        if not isinstance(body, dict):
            return _error_response(_ApiError("SerializationException", "the body must be a JSON object"))
        try:
            result = handler(body)
        except _ApiError as exc:
            return _error_response(exc)
        return Response(
            json.dumps(result), 200, content_type="application/x-amz-json-1.0",
            headers={"x-amzn-RequestId": str(uuid.uuid4())},
        )  # fmt: skip

    # ------------------------------------------------------------------ the clock

    def _tick(self) -> None:
        """Advance every operation to where the clock says it is; decide deploys that are due.

        Deciding a deploy pulls an image (slow): it runs outside the lock, so other requests keep being answered
        and see the operation still IN_PROGRESS meanwhile.
        """
        while True:
            with self._lock:
                due = self._advance()
                generation = self._generation
            if not due:
                return
            outcomes = [(op, *self._decide(op)) for op in due]
            with self._lock:
                if generation != self._generation:
                    return  # reset meanwhile: these operations are forgotten
                for op, image, failure in outcomes:
                    op.decided, op.image, op.failure = True, image, failure

    def _advance(self) -> list[_Operation]:
        now = self._clock()
        due: list[_Operation] = []
        for op in self._operations:
            if op.status in ENDED:
                continue
            pending_end = op.started + op.timings.pending
            deploy_end = pending_end + op.timings.deploy
            if now < pending_end:
                continue
            if not op.decided:
                self._set(op, "IN_PROGRESS", pending_end)
                if now >= deploy_end and not op.claimed:
                    op.claimed = True
                    due.append(op)
            elif op.failure is None:
                self._finish(op, "SUCCEEDED", deploy_end)
            elif op.type in (CREATE_SERVICE, DELETE_SERVICE) or op.rebuild:
                self._finish(op, "FAILED", deploy_end)
            else:
                self._set(op, "ROLLBACK_IN_PROGRESS", deploy_end)
                rollback_end = deploy_end + op.timings.rollback
                if now >= rollback_end:
                    self._finish(
                        op, "ROLLBACK_FAILED" if op.fault == "rollback" else "ROLLBACK_SUCCEEDED", rollback_end
                    )
        return due

    def _decide(self, op: _Operation) -> tuple[ServedImage | None, str | None]:
        """(the image that goes live, None) or (None, why the deploy failed)."""
        if op.config is None:
            return None, None
        if op.fault is not None:
            return None, f"the health check failed (fault {op.fault!r} injected)"
        repository = op.config["SourceConfiguration"]["ImageRepository"]
        identifier, repository_type = repository["ImageIdentifier"], repository["ImageRepositoryType"]
        try:
            image = self._resolve(identifier, repository_type)
            health = op.config["HealthCheckConfiguration"]
            if health["Protocol"] == "HTTP" and image.root is not None and not _serves(image.root, health["Path"]):
                return None, f"the HTTP health check failed: GET {health['Path']} did not answer 200"
        except ImageUnavailable as exc:
            return None, f"image {identifier} cannot be pulled: {exc}"
        except Exception as exc:  # a bug in the resolver must not leave the operation in progress for ever
            logger.exception("deploying %s failed", identifier)
            return None, f"image {identifier} cannot be pulled: {exc!r}"
        return image, None

    def _set(self, op: _Operation, status: str, at: float) -> None:
        if op.status != status:
            op.status, op.updated = status, at

    def _finish(self, op: _Operation, status: str, at: float) -> None:
        self._set(op, status, at)
        op.ended = at
        service = op.service
        service.updated = self._wall(at)
        if op.type == DELETE_SERVICE:
            service.status, service.deleted, service.served = "DELETED", self._wall(at), None
            self._faults.pop(service.name, None)
        elif status == "SUCCEEDED":
            service.status, service.served = "RUNNING", op.image
        elif status == "FAILED":
            service.status, service.served = "CREATE_FAILED", None
        else:  # ROLLBACK_*: the previous configuration is back; a failed rollback leaves nothing serving
            assert op.previous is not None
            service.status, service.config = "RUNNING", copy.deepcopy(op.previous)
            if status == "ROLLBACK_FAILED":
                service.served = None
        logger.info(
            "App Runner %s of %s: %s%s", op.type, service.name, status, f" ({op.failure})" if op.failure else ""
        )

    def _wall(self, at: float) -> float:
        return round(at + self._epoch, 3)

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _start(
        self, service: _Service, type_: str, config: JSON | None, previous: JSON | None = None, fault: str | None = None
    ) -> _Operation:
        now = self._clock()
        op = _Operation(
            self._next_seq(), str(uuid.uuid4()), type_, service, now, replace(self.timings), copy.deepcopy(config),
            copy.deepcopy(previous), service.status == "CREATE_FAILED" and type_ != DELETE_SERVICE, fault,
            updated=now,
        )  # fmt: skip
        self._operations.append(op)
        service.status, service.updated = "OPERATION_IN_PROGRESS", self._wall(now)
        if config is not None:
            service.config = copy.deepcopy(config)
        return op

    # ------------------------------------------------------------------ operations

    def _create_service(self, body: JSON) -> JSON:
        name = body.get("ServiceName")
        if not isinstance(name, str) or not _SERVICE_NAME.fullmatch(name):
            raise _invalid(f"ServiceName {name!r} is invalid: 4 to 40 letters, digits, '-' or '_', starting alnum")
        source = body.get("SourceConfiguration")
        if source is None:
            raise _invalid("SourceConfiguration is required")
        config: JSON = {
            "SourceConfiguration": self._source(source, None),
            "InstanceConfiguration": _instance(body.get("InstanceConfiguration"), {"Cpu": "1024", "Memory": "2048"}),
            "HealthCheckConfiguration": _health(body.get("HealthCheckConfiguration"), _HEALTH_DEFAULTS),
            "AutoScalingConfigurationSummary": self._autoscaling(body.get("AutoScalingConfigurationArn")),
            "NetworkConfiguration": _network(body.get("NetworkConfiguration"), None),
            "ObservabilityConfiguration": _observability(body.get("ObservabilityConfiguration")),
        }
        if "EncryptionConfiguration" in body:
            encryption = _members(body["EncryptionConfiguration"], "EncryptionConfiguration", {"KmsKey"})
            if not isinstance(encryption.get("KmsKey"), str):
                raise _invalid("EncryptionConfiguration.KmsKey is required")
            config["EncryptionConfiguration"] = encryption
        tags = _tags(body.get("Tags"))
        with self._lock:
            live = [s for s in self._services if s.status != "DELETED"]
            if any(s.name == name for s in live):
                raise _invalid(f"Service with the provided name already exists: {name}")
            if len(live) >= SERVICE_QUOTA:
                message = f"You have reached the maximum number of services ({SERVICE_QUOTA}) in {self.region}"
                raise _ApiError("ServiceQuotaExceededException", message)
            service_id = uuid.uuid4().hex
            urls = {s.url for s in self._services}
            while (url := f"{_subdomain()}.{self.region}.awsapprunner.com") in urls:
                pass
            now = self._wall(self._clock())
            service = _Service(
                self._next_seq(), name, service_id,
                f"arn:aws:apprunner:{self.region}:{self.account_id}:service/{name}/{service_id}",
                url, now, now, "OPERATION_IN_PROGRESS", config, tags,
            )  # fmt: skip
            self._services.append(service)
            op = self._start(service, CREATE_SERVICE, config)
            return {"Service": self._describe(service), "OperationId": op.id}

    def _describe_service(self, body: JSON) -> JSON:
        with self._lock:
            return {"Service": self._describe(self._get(body))}

    def _update_service(self, body: JSON) -> JSON:
        with self._lock:
            service = self._get(body)
            self._require(service, "update the service", ("RUNNING", "CREATE_FAILED"))
            previous = service.config
            config = copy.deepcopy(previous)
            if "SourceConfiguration" in body:
                config["SourceConfiguration"] = self._source(
                    body["SourceConfiguration"], previous["SourceConfiguration"]
                )
            if "InstanceConfiguration" in body:
                config["InstanceConfiguration"] = _instance(
                    body["InstanceConfiguration"], previous["InstanceConfiguration"]
                )
            if "HealthCheckConfiguration" in body:
                config["HealthCheckConfiguration"] = _health(
                    body["HealthCheckConfiguration"], previous["HealthCheckConfiguration"]
                )
            if "NetworkConfiguration" in body:
                config["NetworkConfiguration"] = _network(
                    body["NetworkConfiguration"], previous["NetworkConfiguration"]
                )
            if "ObservabilityConfiguration" in body:
                config["ObservabilityConfiguration"] = _observability(body["ObservabilityConfiguration"])
            if "AutoScalingConfigurationArn" in body:
                config["AutoScalingConfigurationSummary"] = self._autoscaling(body["AutoScalingConfigurationArn"])
            fault = None if service.status == "CREATE_FAILED" else self._faults.pop(service.name, None)
            op = self._start(service, UPDATE_SERVICE, config, previous, fault)
            return {"Service": self._describe(service), "OperationId": op.id}

    def _start_deployment(self, body: JSON) -> JSON:
        with self._lock:
            service = self._get(body)
            self._require(service, "start a deployment", ("RUNNING",))
            op = self._start(
                service, START_DEPLOYMENT, service.config, service.config, self._faults.pop(service.name, None)
            )
            return {"OperationId": op.id}

    def _delete_service(self, body: JSON) -> JSON:
        with self._lock:
            service = self._get(body)
            self._require(service, "delete the service", ("RUNNING", "CREATE_FAILED"))
            op = self._start(service, DELETE_SERVICE, None)
            return {"Service": self._describe(service), "OperationId": op.id}

    def _list_services(self, body: JSON) -> JSON:
        limit, after = _page(body, "services")
        with self._lock:
            found = [s for s in self._services if s.status != "DELETED" and s.seq > after]
            page = found[:limit] if limit else found
            answer: JSON = {"ServiceSummaryList": [self._summary(s) for s in page]}
            if len(found) > len(page):
                answer["NextToken"] = _token("services", page[-1].seq)
            return answer

    def _list_operations(self, body: JSON) -> JSON:
        limit, before = _page(body, "operations")
        with self._lock:
            service = self._get(body)
            found = [op for op in reversed(self._operations) if op.service is service]
            if before:
                found = [op for op in found if op.seq < before]
            page = found[:limit] if limit else found
            answer: JSON = {"OperationSummaryList": [self._operation(op) for op in page]}
            if len(found) > len(page):
                answer["NextToken"] = _token("operations", page[-1].seq)
            return answer

    # ------------------------------------------------------------------ helpers of the operations

    def _get(self, body: JSON) -> _Service:
        arn = body.get("ServiceArn")
        if not isinstance(arn, str) or not arn.startswith("arn:"):
            raise _invalid(f"ServiceArn {arn!r} is not an ARN")
        for service in self._services:
            if service.arn == arn:
                return service
        raise _ApiError("ResourceNotFoundException", f"Service with the provided ARN doesn't exist: {arn}")

    def _require(self, service: _Service, action: str, allowed: tuple[str, ...]) -> None:
        if service.status not in allowed:
            raise _ApiError(
                "InvalidStateException",
                f"You can't {action} while the service is in {service.status} state. "
                f"Service status must be {' or '.join(allowed)}.",
            )

    def _source(self, raw: Any, current: JSON | None) -> JSON:
        """A SourceConfiguration as App Runner keeps it: the members given replace the current ones."""
        given = _members(
            raw, "SourceConfiguration",
            {"CodeRepository", "ImageRepository", "AutoDeploymentsEnabled", "AuthenticationConfiguration"},
        )  # fmt: skip
        if "CodeRepository" in given:
            raise _invalid("the sandbox's App Runner deploys images only: use ImageRepository, not CodeRepository")
        source = {**copy.deepcopy(current or {}), **copy.deepcopy(given)}
        if "ImageRepository" not in source:
            raise _invalid("SourceConfiguration must have an ImageRepository")
        repository = _members(
            source["ImageRepository"],
            "ImageRepository",
            {"ImageIdentifier", "ImageRepositoryType", "ImageConfiguration"},
        )
        identifier, repository_type = repository.get("ImageIdentifier"), repository.get("ImageRepositoryType")
        if not isinstance(identifier, str) or not 1 <= len(identifier) <= 1024:
            raise _invalid("ImageRepository.ImageIdentifier is required: 1 to 1024 characters")
        if repository_type not in ("ECR", "ECR_PUBLIC"):
            raise _invalid(f"ImageRepository.ImageRepositoryType must be ECR or ECR_PUBLIC, not {repository_type!r}")
        image = _members(
            repository.get("ImageConfiguration", {}), "ImageConfiguration",
            {"RuntimeEnvironmentVariables", "StartCommand", "Port", "RuntimeEnvironmentSecrets"},
        )  # fmt: skip
        for key in ("RuntimeEnvironmentVariables", "RuntimeEnvironmentSecrets"):
            values = image.get(key, {})
            if not isinstance(values, dict) or not all(isinstance(v, str) for v in values.values()):
                raise _invalid(f"ImageConfiguration.{key} must map names to strings")
        for key in ("StartCommand", "Port"):
            if not isinstance(image.get(key, ""), str):
                raise _invalid(f"ImageConfiguration.{key} must be a string")
        image.setdefault("Port", DEFAULT_PORT)
        repository["ImageConfiguration"] = image
        source["ImageRepository"] = repository
        if "AuthenticationConfiguration" in source:
            auth = _members(source["AuthenticationConfiguration"], "AuthenticationConfiguration",
                            {"AccessRoleArn", "ConnectionArn"})  # fmt: skip
            role = auth.get("AccessRoleArn")
            if role is not None and (not isinstance(role, str) or not _ROLE_ARN.fullmatch(role)):
                raise _invalid(f"AuthenticationConfiguration.AccessRoleArn {role!r} is not an IAM role ARN")
            source["AuthenticationConfiguration"] = auth
        if repository_type == "ECR" and not (source.get("AuthenticationConfiguration") or {}).get("AccessRoleArn"):
            raise _invalid(
                "AuthenticationConfiguration.AccessRoleArn is required for an image in a private ECR repository "
                "(ImageRepositoryType ECR): App Runner pulls the image with that role"
            )
        if "AutoDeploymentsEnabled" not in source:
            match = _ECR_ACCOUNT.match(identifier)
            same_account = match is None or match["account"] == self.account_id
            source["AutoDeploymentsEnabled"] = repository_type == "ECR" and same_account
        elif not isinstance(source["AutoDeploymentsEnabled"], bool):
            raise _invalid("SourceConfiguration.AutoDeploymentsEnabled must be a boolean")
        if self._check is not None and (problem := self._check(identifier, repository_type)):
            raise _invalid(problem)
        return source

    def _autoscaling(self, arn: Any) -> JSON:
        if arn is None:
            arn = (
                f"arn:aws:apprunner:{self.region}:{self.account_id}:autoscalingconfiguration/DefaultConfiguration/1/"
                f"{self._autoscaling_id}"
            )
        match = _AUTOSCALING_ARN.fullmatch(arn) if isinstance(arn, str) else None
        if match is None:
            raise _invalid(f"AutoScalingConfigurationArn {arn!r} is not an auto scaling configuration ARN")
        return {
            "AutoScalingConfigurationArn": arn,
            "AutoScalingConfigurationName": match["name"],
            "AutoScalingConfigurationRevision": int(match["revision"]),
            "Status": "ACTIVE",
            "CreatedAt": self._wall(0.0),
            "HasAssociatedService": True,
            "IsDefault": match["name"] == "DefaultConfiguration",
        }

    def _describe(self, service: _Service) -> JSON:
        answer: JSON = {
            "ServiceName": service.name,
            "ServiceId": service.service_id,
            "ServiceArn": service.arn,
            "ServiceUrl": service.url,
            "CreatedAt": service.created,
            "UpdatedAt": service.updated,
            "Status": service.status,
            **copy.deepcopy(service.config),
        }
        if service.deleted is not None:
            answer["DeletedAt"] = service.deleted
        return answer

    def _summary(self, service: _Service) -> JSON:
        return {
            "ServiceName": service.name,
            "ServiceId": service.service_id,
            "ServiceArn": service.arn,
            "ServiceUrl": service.url,
            "CreatedAt": service.created,
            "UpdatedAt": service.updated,
            "Status": service.status,
        }

    def _operation(self, op: _Operation) -> JSON:
        answer: JSON = {
            "Id": op.id,
            "Type": op.type,
            "Status": op.status,
            "TargetArn": op.service.arn,
            "StartedAt": self._wall(op.started),
            "UpdatedAt": self._wall(op.updated),
        }
        if op.ended is not None:
            answer["EndedAt"] = self._wall(op.ended)
        return answer

    # ------------------------------------------------------------------ service URLs

    def _serve(self, service: _Service, path: str, method: str) -> Response:
        with self._lock:
            status, served = service.status, service.served
        if status in ("CREATE_FAILED", "DELETED") or served is None:
            return _text(503, f"Service Unavailable: App Runner service {service.name} is {status}, serving nothing")
        return serve_image(served, path, method)

    # ------------------------------------------------------------------ control

    def _control(self, request: Request) -> Response:
        path, method = request.path, request.method
        if path == "/_opcd/ping":
            return _json(200, {"ok": True})
        body = control_body(request, "/_opcd/apprunner")
        if isinstance(body, Response):
            return body
        with self._lock:
            if path.endswith("/timings"):
                if method == "POST":
                    if problem := timings_problem(body, ("pending", "deploy", "rollback")):
                        return _json(400, {"error": problem})
                    self.timings = replace(self.timings, **{k: float(v) for k, v in body.items()})
                return _json(200, asdict(self.timings))
            if method == "POST":
                if problem := self._fault_problem(body):
                    return _json(400, {"error": problem})
                self._faults[body["service"]] = body["fail"]
            elif method == "DELETE":
                self._faults.clear()
            return _json(200, {"faults": [{"service": s, "fail": f} for s, f in self._faults.items()]})

    def _fault_problem(self, body: JSON) -> str | None:
        if set(body) != {"service", "fail"}:
            return 'a fault is {"service": "<ServiceName>", "fail": "health" | "rollback"}'
        if body["fail"] not in FAULTS:
            return f'"fail" must be "health" or "rollback", not {body["fail"]!r}'
        if not any(s.name == body["service"] and s.status != "DELETED" for s in self._services):
            return f"no App Runner service named {body['service']!r}"
        return None


# ---------------------------------------------------------------------- module helpers


def serve_image(served: ServedImage, path: str, method: str) -> Response:
    """Answer ``method path`` from the image's files, as a static file server would (``index.html`` for a
    directory); an image without files answers the placeholder JSON. Shared with the ECS stand-in."""
    if method not in ("GET", "HEAD"):
        return _text(405, f"the sandbox serves the image's files: {method} is not allowed")
    headers = {"X-Sandbox-Image-Digest": served.digest} if served.digest else {}
    if served.root is None:
        return Response(json.dumps(PLACEHOLDER), 200, headers=headers, content_type="application/json")
    try:
        found = _find_file(served.root, path)
    except _Outside:
        return _text(403, f"{path} is outside the image's files")
    if found is None:
        return _text(404, f"{path} not found in {served.identifier}", headers)
    content_type = mimetypes.guess_type(found.name)[0] or "application/octet-stream"
    if content_type.startswith("text/"):
        content_type += "; charset=utf-8"
    return Response(found.read_bytes(), 200, headers=headers, content_type=content_type)


def _members(raw: Any, what: str, allowed: set[str]) -> JSON:
    """A copy of the structure ``raw``, refused when it is no object or has members the model does not."""
    if not isinstance(raw, dict):
        raise _invalid(f"{what} must be an object")
    if unknown := sorted(set(raw) - allowed):
        raise _invalid(f"{what} has unknown members: {', '.join(unknown)}")
    return copy.deepcopy(raw)


def _instance(raw: Any, current: JSON) -> JSON:
    given = _members({} if raw is None else raw, "InstanceConfiguration", {"Cpu", "Memory", "InstanceRoleArn"})
    instance = {**current, **given}
    if instance["Cpu"] not in _CPU:
        raise _invalid(f"InstanceConfiguration.Cpu {instance['Cpu']!r} is not one of {', '.join(_CPU)}")
    if instance["Memory"] not in _MEMORY:
        raise _invalid(f"InstanceConfiguration.Memory {instance['Memory']!r} is not one of {', '.join(_MEMORY)}")
    instance["Cpu"], instance["Memory"] = _CPU[instance["Cpu"]], _MEMORY[instance["Memory"]]
    role = instance.get("InstanceRoleArn")
    if role is not None and (not isinstance(role, str) or not _ROLE_ARN.fullmatch(role)):
        raise _invalid(f"InstanceConfiguration.InstanceRoleArn {role!r} is not an IAM role ARN")
    return instance


def _health(raw: Any, current: JSON) -> JSON:
    health = {**current, **_members({} if raw is None else raw, "HealthCheckConfiguration", set(_HEALTH_DEFAULTS))}
    if health["Protocol"] not in ("TCP", "HTTP"):
        raise _invalid(f"HealthCheckConfiguration.Protocol must be TCP or HTTP, not {health['Protocol']!r}")
    if not isinstance(health["Path"], str) or not health["Path"]:
        raise _invalid("HealthCheckConfiguration.Path must be a non-empty string")
    for key in _HEALTH_INTEGERS:
        value = health[key]
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 20:
            raise _invalid(f"HealthCheckConfiguration.{key} must be an integer from 1 to 20, not {value!r}")
    return health


def _network(raw: Any, current: JSON | None) -> JSON:
    network: JSON = current or {
        "EgressConfiguration": {"EgressType": "DEFAULT"},
        "IngressConfiguration": {"IsPubliclyAccessible": True},
        "IpAddressType": "IPV4",
    }
    if raw is None:
        return copy.deepcopy(network)
    given = _members(raw, "NetworkConfiguration", {"EgressConfiguration", "IngressConfiguration", "IpAddressType"})
    network = {**copy.deepcopy(network), **given}
    egress = _members(network["EgressConfiguration"], "EgressConfiguration", {"EgressType", "VpcConnectorArn"})
    if egress.get("EgressType", "DEFAULT") not in ("DEFAULT", "VPC"):
        raise _invalid(f"EgressConfiguration.EgressType must be DEFAULT or VPC, not {egress['EgressType']!r}")
    egress.setdefault("EgressType", "DEFAULT")
    if egress["EgressType"] == "VPC" and not isinstance(egress.get("VpcConnectorArn"), str):
        raise _invalid("EgressConfiguration.VpcConnectorArn is required when EgressType is VPC")
    ingress = _members(network["IngressConfiguration"], "IngressConfiguration", {"IsPubliclyAccessible"})
    if not isinstance(ingress.setdefault("IsPubliclyAccessible", True), bool):
        raise _invalid("IngressConfiguration.IsPubliclyAccessible must be a boolean")
    if network["IpAddressType"] not in ("IPV4", "DUAL_STACK"):
        raise _invalid(
            f"NetworkConfiguration.IpAddressType must be IPV4 or DUAL_STACK, not {network['IpAddressType']!r}"
        )
    network["EgressConfiguration"], network["IngressConfiguration"] = egress, ingress
    return network


def _observability(raw: Any) -> JSON:
    if raw is None:
        return {"ObservabilityEnabled": False}
    observability = _members(
        raw, "ObservabilityConfiguration", {"ObservabilityEnabled", "ObservabilityConfigurationArn"}
    )
    if not isinstance(observability.get("ObservabilityEnabled"), bool):
        raise _invalid("ObservabilityConfiguration.ObservabilityEnabled is required: a boolean")
    return observability


def _tags(raw: Any) -> list[JSON]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise _invalid("Tags must be a list")
    tags = [_members(tag, "Tag", {"Key", "Value"}) for tag in raw]
    for tag in tags:
        key = tag.get("Key")
        if not isinstance(key, str) or not 1 <= len(key) <= 128 or key.startswith("aws:"):
            raise _invalid(f"Tag key {key!r} is invalid: 1 to 128 characters, not starting with 'aws:'")
        if not isinstance(tag.get("Value", ""), str):
            raise _invalid(f"Tag {key!r} has a value that is not a string")
    return tags


def _page(body: JSON, kind: str) -> tuple[int | None, int]:
    """(MaxResults or None for all, the position NextToken says to continue from, 0 at the start)."""
    limit = body.get("MaxResults")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 20):
        raise _invalid(f"MaxResults must be an integer from 1 to 20, not {limit!r}")
    token = body.get("NextToken")
    if token is None:
        return limit, 0
    try:
        token_kind, _, position = base64.urlsafe_b64decode(str(token).encode()).decode().partition(":")
        if token_kind != kind:
            raise ValueError(token_kind)
        return limit, int(position)
    except ValueError:
        raise _invalid(f"NextToken {token!r} is invalid") from None


def _token(kind: str, position: int) -> str:
    return base64.urlsafe_b64encode(f"{kind}:{position}".encode()).decode()


def _subdomain() -> str:
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(10))


def _find_file(root: Path, path: str) -> Path | None:
    """The file of the image that ``path`` names (``index.html`` for a directory), or None.

    Raises _Outside when the path resolves outside ``root`` (``..``, or a symlink pointing out).
    """
    relative = path.split("?", 1)[0].lstrip("/")
    try:
        base = root.resolve()
        target = (base / relative).resolve()
        if target.is_dir():
            target = (target / "index.html").resolve()
    except (OSError, ValueError, RuntimeError):  # a NUL byte, a name too long, a symlink loop
        return None
    if not target.is_relative_to(base):
        raise _Outside(path)
    return target if target.is_file() else None


def _serves(root: Path, path: str) -> bool:
    try:
        return _find_file(root, path) is not None
    except _Outside:
        return False


def control_body(request: Request, base: str) -> JSON | Response:
    """The JSON object a request to ``BASE/faults`` (GET, POST, DELETE) or ``BASE/timings`` (GET, POST) carries
    (``{}`` but for a POST), or the error answer: no such endpoint, method not allowed, not a JSON object."""
    path, method = request.path, request.method
    if path not in (f"{base}/faults", f"{base}/timings"):
        return _json(404, {"error": f"no control endpoint {path}"})
    allowed = ("GET", "POST", "DELETE") if path.endswith("/faults") else ("GET", "POST")
    if method not in allowed:
        return _json(405, {"error": f"{path} accepts {', '.join(allowed)}"})
    if method != "POST":
        return {}
    try:
        body = json.loads(request.get_data() or b"null")
    except ValueError:
        body = None
    return body if isinstance(body, dict) else _json(400, {"error": "the body must be a JSON object"})


def timings_problem(body: JSON, known: tuple[str, ...]) -> str | None:
    if unknown := sorted(set(body) - set(known)):
        return f"unknown timings: {', '.join(unknown)} (known: {', '.join(known)})"
    for key, value in body.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
            return f"{key} must be a non-negative number of seconds, not {value!r}"
    return None


def _json(status: int, data: Any) -> Response:
    return Response(json.dumps(data), status, content_type="application/json")


def _text(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response(message + "\n", status, headers=headers, content_type="text/plain; charset=utf-8")


def _error_response(error: _ApiError) -> Response:
    return Response(
        json.dumps({"__type": error.code, "Message": error.message}), error.status,
        content_type="application/x-amz-json-1.0",
        headers={"x-amzn-ErrorType": error.code, "x-amzn-RequestId": str(uuid.uuid4())},
    )  # fmt: skip
