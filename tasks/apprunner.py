"""App Runner: point a service at an image and follow the operation that deploys it.

``UpdateService`` starts an asynchronous operation; :func:`follow_operation` polls
``ListOperations`` until it ends. ``SUCCEEDED`` means the new image passed App Runner's own health
check and serves; ``FAILED``, ``ROLLBACK_SUCCEEDED`` and ``ROLLBACK_FAILED`` are failed deploys
(App Runner rolling itself back is not a success). The ``update-service`` task carries an
``on_rollback`` hook that points the service back at the image it ran before, when a later step of
the deploy's transaction fails (our health or smoke checks after ``SUCCEEDED``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger
from prefect.transactions import Transaction, get_transaction

from opcd.aws import AwsTarget, error_code
from opcd.errors import DeployFailed, InputError, ResourceMissing
from opcd.progress import report
from opcd.traffic import human_duration

if TYPE_CHECKING:
    from types_boto3_apprunner.type_defs import SourceConfigurationTypeDef

ENDED = ("SUCCEEDED", "FAILED", "ROLLBACK_SUCCEEDED", "ROLLBACK_FAILED")


@dataclass(frozen=True)
class Service:
    """What ``DescribeService`` says about a service, as much as a deploy needs."""

    arn: str
    name: str
    url: str  # ServiceUrl: a host name, no scheme
    status: str
    image: str  # ImageRepository.ImageIdentifier
    source: dict[str, Any]  # the whole SourceConfiguration, to restore it as it was

    @property
    def https_url(self) -> str:
        return f"https://{self.url}"


def find_service(target: AwsTarget, ref: str) -> str:
    """The ARN of a service given as an ARN or a name; ResourceMissing when there is none."""
    client = target.client("apprunner")
    if ref.startswith("arn:"):
        read_service(target, ref)
        return ref
    token: str | None = None
    while True:
        page = client.list_services(NextToken=token) if token else client.list_services()
        for summary in page.get("ServiceSummaryList", []):
            if summary["ServiceName"] == ref and summary.get("Status") != "DELETED":
                return str(summary["ServiceArn"])
        token = page.get("NextToken")
        if not token:
            raise ResourceMissing(
                f"App Runner service {ref!r} does not exist in {target.region}",
                "create it (Terraform) or fix environments.*.services in opcd.toml",
            )


def read_service(target: AwsTarget, arn: str) -> Service:
    try:
        service = target.client("apprunner").describe_service(ServiceArn=arn)["Service"]
    except Exception as exc:
        if error_code(exc) == "ResourceNotFoundException":
            raise ResourceMissing(
                f"App Runner service {arn} does not exist", "fix environments.*.services in opcd.toml"
            ) from None
        raise
    source = service["SourceConfiguration"]
    image = source["ImageRepository"]["ImageIdentifier"] if "ImageRepository" in source else ""
    return Service(
        arn, service["ServiceName"], service.get("ServiceUrl", ""), service["Status"], image, dict(source),
    )  # fmt: skip


def repository_type_of(identifier: str) -> str:
    """``ECR_PUBLIC`` for an image of the public gallery, else ``ECR``."""
    return "ECR_PUBLIC" if identifier.startswith("public.ecr.aws/") else "ECR"


def start_update(target: AwsTarget, service: Service, identifier: str) -> str:
    """``UpdateService`` to ``identifier``, every other setting kept; the operation's id."""
    repository = dict(service.source.get("ImageRepository") or {})
    repository.update(ImageIdentifier=identifier, ImageRepositoryType=repository_type_of(identifier))
    source = {key: value for key, value in service.source.items() if key != "CodeRepository"}
    source["ImageRepository"] = repository
    try:
        answer = target.client("apprunner").update_service(
            ServiceArn=service.arn, SourceConfiguration=cast("SourceConfigurationTypeDef", source)
        )  # the service's own configuration, its image alone changed
    except Exception as exc:
        if error_code(exc) == "InvalidStateException":
            raise InputError(
                f"App Runner service {service.name} is busy: {exc}",
                "an operation is in progress; wait for it to end (opcd status) and deploy again",
            ) from None
        raise
    return str(answer["OperationId"])


def start_deployment(target: AwsTarget, arn: str) -> str:
    """``StartDeployment``: deploy the service's configured image again; the operation's id."""
    return str(target.client("apprunner").start_deployment(ServiceArn=arn)["OperationId"])


def latest_operation(target: AwsTarget, arn: str) -> dict[str, Any] | None:
    """The newest operation of a service (ListOperations lists newest first)."""
    page = target.client("apprunner").list_operations(ServiceArn=arn, MaxResults=1)
    found = page.get("OperationSummaryList") or []
    return dict(found[0]) if found else None


def operation(target: AwsTarget, arn: str, operation_id: str) -> dict[str, Any] | None:
    client = target.client("apprunner")
    token: str | None = None
    while True:
        page = client.list_operations(ServiceArn=arn, MaxResults=20, **({"NextToken": token} if token else {}))
        for summary in page.get("OperationSummaryList", []):
            if summary.get("Id") == operation_id:
                return dict(summary)
        token = page.get("NextToken")
        if not token:
            return None


def follow_operation(
    target: AwsTarget,
    arn: str,
    operation_id: str,
    what: str,
    timeout: float,
    poll_interval: float,
    say: Callable[[str], None],
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """Poll the operation until it ends; its final status. DeployFailed when it outlasts ``timeout``."""
    started = time.monotonic()
    last, said = None, 0.0
    while True:
        found = operation(target, arn, operation_id)
        status = str(found["Status"]) if found else "NOT_LISTED_YET"
        elapsed = time.monotonic() - started
        if status != last or elapsed - said >= 60:  # every change, and a sign of life each minute
            left = max(timeout - elapsed, 0)
            say(f"App Runner {what} (operation {operation_id[:8]}): {status} after {elapsed:.0f}s ({left:.0f}s left)")
            last, said = status, elapsed
        if status in ENDED:
            return status
        if elapsed >= timeout:
            raise DeployFailed(
                f"App Runner {what} did not end within {human_duration(timeout)} (still {status})",
                "it may still finish: watch `opcd status`; raise components.*.operation.timeout if deploys are slow",
            )
        sleep(min(poll_interval, max(timeout - elapsed, 0.0)))


@task(name="update-service", task_run_name="point {service.name} at {identifier}", cache_policy=NO_CACHE)
def update_service(target: AwsTarget, service: Service, identifier: str, timeout: float, poll_interval: float) -> str:
    """Start the deployment of ``identifier``; rolled back to ``service``'s image when the transaction fails."""
    txn = get_transaction()
    if txn is not None:
        txn.set("target", target)
        txn.set("previous", service)
        txn.set("timeout", timeout)
        txn.set("poll_interval", poll_interval)
    report("update service", f"{service.name} → {identifier}")
    operation_id = start_update(target, service, identifier)
    if txn is not None:
        txn.set("operation_id", operation_id)
    get_run_logger().info("UpdateService %s → %s: operation %s", service.name, identifier, operation_id)
    return operation_id


@task(name="follow-operation", task_run_name="follow {what}", cache_policy=NO_CACHE)
def wait_for_operation(
    target: AwsTarget, arn: str, operation_id: str, what: str, timeout: float, poll_interval: float
) -> str:
    logger = get_run_logger()
    report("follow", what)
    return follow_operation(target, arn, operation_id, what, timeout, poll_interval, logger.info)


@update_service.on_rollback
def _restore_image(txn: Transaction) -> None:
    """Point the service back at the image it ran before and follow that deployment. Idempotent."""
    target, previous = txn.get("target"), txn.get("previous")
    timeout, poll = txn.get("timeout"), txn.get("poll_interval")
    logger = get_run_logger()
    try:
        now = read_service(target, previous.arn)
        if now.status == "OPERATION_IN_PROGRESS" and (running := latest_operation(target, previous.arn)):
            # our deployment outlasted its wait: let it end, then put the previous image back
            follow_operation(
                target, previous.arn, str(running["Id"]), f"{running.get('Type', 'operation')} still running",
                timeout, poll, logger.info,
            )  # fmt: skip
            now = read_service(target, previous.arn)
        ours = operation(target, previous.arn, txn.get("operation_id", ""))
        broken = bool(ours and ours.get("Status") == "ROLLBACK_FAILED")  # App Runner's own rollback failed
        if now.image == previous.image and now.status == "RUNNING" and not broken:
            logger.info("Rollback: %s already runs %s (App Runner rolled back itself)", previous.name, previous.image)
            return
        logger.warning("Rolling back: %s → %s (was %s, %s)", previous.name, previous.image, now.image, now.status)
        if now.image == previous.image:  # App Runner's own rollback failed: deploy that image again
            operation_id = start_deployment(target, previous.arn)
        else:
            operation_id = start_update(target, previous, previous.image)
        status = follow_operation(
            target, previous.arn, operation_id, f"rollback of {previous.name}", timeout, poll, logger.info
        )
        if status != "SUCCEEDED":
            raise DeployFailed(f"the rollback operation ended {status}")
    except Exception as exc:  # a hook's exception is swallowed by Prefect: say it loudly, verify later
        logger.error("Rollback of %s to %s FAILED: %s", previous.name, previous.image, exc)
        txn.set("rollback_error", str(exc))
