"""Amazon ECS: deploy an image to a service as a new task definition revision, and follow ECS's deployment.

A deploy is :func:`register_revision` (the live task definition copied, only one container's image changed,
to ``repository@sha256:…``: never a mutable tag), :func:`start_deployment` (``UpdateService`` to it, with the
deployment configuration: ``ROLLING`` with the deployment circuit breaker and CloudWatch-alarm rollback, or
``BLUE_GREEN`` with a bake time) and :func:`follow_deployment` (``DescribeServiceDeployments`` until the service
deployment ends or the timeout passes). ECS rolling back on its own is a failed deploy
(:attr:`DeployOutcome.ROLLED_BACK`). :func:`roll_back` puts a given revision back and checks that it runs.
The plain functions take plain arguments; the Prefect tasks at the end wrap them for flows.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from opcd.aws import AwsTarget, error_code
from opcd.errors import DeployFailed, InputError, ResourceMissing
from opcd.progress import State, report
from opcd.traffic import human_duration

if TYPE_CHECKING:
    from types_boto3_ecs.type_defs import DeploymentConfigurationTypeDef

Strategy = Literal["rolling", "blue-green"]
ENDED = frozenset({"SUCCESSFUL", "STOPPED", "ROLLBACK_SUCCESSFUL", "ROLLBACK_FAILED"})
_PINNED = re.compile(r"^(?P<repository>[^@\s]+)@(?P<digest>sha256:[0-9a-f]{64})$")
_TAGGED = re.compile(r"^(?P<repository>[^@\s]+?)(?::(?P<tag>[\w][\w.-]{0,127}))?(?:@(?P<digest>sha256:[0-9a-f]{64}))?$")
_FIX_NAMES = "fix environments.ENV.ecs (cluster, service) in opcd.toml, or create the service (Terraform)"


class DeployOutcome(StrEnum):
    """How an ECS service deployment ended, as opcd reads it."""

    SUCCEEDED = "succeeded"  # SUCCESSFUL: the new revision runs and passed ECS's checks
    ROLLED_BACK = "rolled-back"  # ROLLBACK_SUCCESSFUL: ECS put the previous revision back (a failed deploy)
    FAILED = "failed"  # STOPPED or ROLLBACK_FAILED: nothing verified runs
    TIMED_OUT = "timed-out"  # still in progress when the timeout passed


@dataclass(frozen=True)
class LiveService:
    """What runs in an ECS service, as much as a deploy and ``opcd status`` need."""

    cluster: str
    service: str
    arn: str
    task_definition: str  # the service's task definition ARN (family:revision)
    family: str
    revision: int
    container: str
    image: str  # the container's image, as the task definition names it
    tag: str | None  # the image's tag, when it names one
    digest: str | None  # the image's digest, when it names one
    running: int
    desired: int
    rollout: str | None  # the PRIMARY deployment's rolloutState (COMPLETED, IN_PROGRESS, FAILED)


@dataclass(frozen=True)
class DeploymentResult:
    """The end of a service deployment: its outcome, ECS's status and reason, and what runs now."""

    outcome: DeployOutcome
    deployment_arn: str
    status: str  # ECS's ServiceDeploymentStatus (or the last one seen, when timed out)
    reason: str | None  # ECS's rollback reason / status reason, with the circuit breaker's or alarms' word
    task_definition: str  # what the service's taskDefinition is now

    @property
    def ok(self) -> bool:
        return self.outcome is DeployOutcome.SUCCEEDED


def pinned_image(image: str) -> str:
    """``image`` when it names an image by its digest (``repository@sha256:…``); an InputError for a tag."""
    if _PINNED.match(image):
        return image
    raise InputError(
        f"image {image!r} is not pinned to a digest: ECS would deploy whatever the tag names when tasks start",
        "give the image as REPOSITORY@sha256:<64 hex digits> (the digest the push reported)",
    )


def _parts(image: str) -> tuple[str | None, str | None]:
    match = _TAGGED.match(image)
    return (match["tag"], match["digest"]) if match else (None, None)


def _ecs_error(exc: Exception, what: str) -> Exception:
    code = error_code(exc)
    if code in ("ServiceNotFoundException", "ClusterNotFoundException"):
        return ResourceMissing(f"ECS {what}: {code}", _FIX_NAMES)
    return exc


def describe_service(target: AwsTarget, cluster: str, service: str, container: str) -> LiveService:
    """The service's task definition revision, its ``container``'s image (tag, digest) and tasks running/desired."""
    client = target.client("ecs")
    try:
        answer = client.describe_services(cluster=cluster, services=[service])
    except Exception as exc:
        raise _ecs_error(exc, f"cluster {cluster!r}") from None
    found = [s for s in answer.get("services", []) if s.get("status") != "INACTIVE"]
    if not found:
        raise ResourceMissing(f"ECS service {service!r} does not exist in cluster {cluster!r}", _FIX_NAMES)
    live = found[0]
    arn = str(live["taskDefinition"])
    definition = client.describe_task_definition(taskDefinition=arn)["taskDefinition"]
    containers = {c["name"]: c for c in definition.get("containerDefinitions", [])}
    if container not in containers:
        raise InputError(
            f"task definition {arn.rpartition('/')[2]} has no container {container!r} (it has {', '.join(containers)})",
            "set components.NAME.container in opcd.toml to the container whose image opcd deploys",
        )
    image = str(containers[container]["image"])
    tag, digest = _parts(image)
    primary = next((d for d in live.get("deployments", []) if d.get("status") == "PRIMARY"), None)
    return LiveService(
        cluster, service, str(live["serviceArn"]), str(definition["taskDefinitionArn"]), str(definition["family"]),
        int(definition["revision"]), container, image, tag, digest, int(live.get("runningCount", 0)),
        int(live.get("desiredCount", 0)), primary.get("rolloutState") if primary else None,
    )  # fmt: skip


def register_revision(target: AwsTarget, live: LiveService, image: str) -> str:
    """A new revision of the live task definition, every setting copied, only ``live.container``'s image changed
    to ``image`` (pinned to its digest). Returns the new task definition's ARN."""
    image = pinned_image(image)
    client = target.client("ecs")
    answer = client.describe_task_definition(taskDefinition=live.task_definition, include=["TAGS"])
    definition = answer["taskDefinition"]
    accepted = client.meta.service_model.operation_model("RegisterTaskDefinition").input_shape
    request: dict[str, Any] = {key: value for key, value in definition.items() if accepted and key in accepted.members}
    request["containerDefinitions"] = [
        {**container, "image": image} if container["name"] == live.container else container
        for container in definition["containerDefinitions"]
    ]
    if answer.get("tags"):
        request["tags"] = answer["tags"]
    registered = client.register_task_definition(**request)["taskDefinition"]
    return str(registered["taskDefinitionArn"])


def deployment_configuration(
    strategy: Strategy, bake_seconds: float, alarms: list[str]
) -> DeploymentConfigurationTypeDef:
    """ECS's deploymentConfiguration: the circuit breaker with rollback, the alarms with rollback, and the
    strategy (blue/green bakes ``bake_seconds``, rounded up to whole minutes)."""
    config: DeploymentConfigurationTypeDef = {
        "deploymentCircuitBreaker": {"enable": True, "rollback": True},
        "alarms": {"alarmNames": list(alarms), "enable": bool(alarms), "rollback": bool(alarms)},
        "strategy": "ROLLING",
    }
    if strategy == "blue-green":
        config["strategy"] = "BLUE_GREEN"
        config["bakeTimeInMinutes"] = math.ceil(max(bake_seconds, 0) / 60)
    return config


def start_deployment(
    target: AwsTarget,
    cluster: str,
    service: str,
    task_definition: str,
    strategy: Strategy = "rolling",
    bake_seconds: float = 0,
    alarms: list[str] | None = None,
) -> str:
    """``UpdateService`` to ``task_definition`` with the deployment configuration; the service deployment's ARN."""
    client = target.client("ecs")
    before = _deployment_arns(target, cluster, service)
    configuration = deployment_configuration(strategy, bake_seconds, alarms or [])
    try:
        answer = client.update_service(
            cluster=cluster, service=service, taskDefinition=task_definition,
            deploymentConfiguration=configuration,
        )  # fmt: skip
    except Exception as exc:
        raise _ecs_error(exc, f"service {service!r} in cluster {cluster!r}") from None
    current = answer.get("service", {}).get("currentServiceDeployment")
    if current and current not in before:
        return str(current)
    for _ in range(50):  # ECS lists a new service deployment within moments of UpdateService
        fresh = [arn for arn in _deployment_arns(target, cluster, service) if arn not in before]
        if fresh:
            return fresh[0]
        time.sleep(0.2)
    raise DeployFailed(
        f"UpdateService of {service} started no service deployment that ListServiceDeployments shows",
        "look at the service's deployments in the ECS console; deploy again",
    )


def _deployment_arns(target: AwsTarget, cluster: str, service: str) -> list[str]:
    """The service's deployments, newest first (the first page)."""
    try:
        page = target.client("ecs").list_service_deployments(cluster=cluster, service=service)
    except Exception as exc:
        raise _ecs_error(exc, f"service {service!r} in cluster {cluster!r}") from None
    return [str(d["serviceDeploymentArn"]) for d in page.get("serviceDeployments", [])]


def describe_deployment(target: AwsTarget, arn: str) -> dict[str, Any]:
    answer = target.client("ecs").describe_service_deployments(serviceDeploymentArns=[arn])
    found = answer.get("serviceDeployments") or []
    if not found:
        raise ResourceMissing(f"ECS service deployment {arn} does not exist", "it may have expired; deploy again")
    return dict(found[0])


def _reason(deployment: dict[str, Any]) -> str | None:
    """ECS's own words on why a deployment failed: the rollback's reason, the status reason, what triggered."""
    words = [deployment.get("rollback", {}).get("reason"), deployment.get("statusReason")]
    breaker = deployment.get("deploymentCircuitBreaker") or {}
    if breaker.get("status") == "TRIGGERED":
        words.append(f"circuit breaker triggered ({breaker.get('failureCount', '?')} failed tasks)")
    triggered = (deployment.get("alarms") or {}).get("triggeredAlarmNames") or []
    if triggered:
        words.append(f"alarms in ALARM: {', '.join(triggered)}")
    said = list(dict.fromkeys(w for w in words if w))
    return "; ".join(said) or None


def follow_deployment(
    target: AwsTarget,
    cluster: str,
    service: str,
    deployment_arn: str,
    timeout: float,
    poll_interval: float,
    say: Callable[[str], None] = lambda line: None,
    sleep: Callable[[float], None] = time.sleep,
) -> DeploymentResult:
    """Poll the service deployment until it ends or ``timeout`` seconds pass; how it ended."""
    started = time.monotonic()
    last, said = None, 0.0
    short = deployment_arn.rpartition("/")[2][:8]
    while True:
        deployment = describe_deployment(target, deployment_arn)
        status = str(deployment["status"])
        elapsed = time.monotonic() - started
        stage = f" ({deployment['lifecycleStage']})" if deployment.get("lifecycleStage") else ""
        if (status, stage) != last or elapsed - said >= 60:  # every change, and a sign of life each minute
            left = max(timeout - elapsed, 0)
            say(f"ECS deployment {short} of {service}: {status}{stage} after {elapsed:.0f}s ({left:.0f}s left)")
            last, said = (status, stage), elapsed
        if status in ENDED or elapsed >= timeout:
            break
        sleep(min(poll_interval, max(timeout - elapsed, 0.0)))
    outcome = {
        "SUCCESSFUL": DeployOutcome.SUCCEEDED, "ROLLBACK_SUCCESSFUL": DeployOutcome.ROLLED_BACK,
        "STOPPED": DeployOutcome.FAILED, "ROLLBACK_FAILED": DeployOutcome.FAILED,
    }.get(status, DeployOutcome.TIMED_OUT)  # fmt: skip
    reason = _reason(deployment)
    if outcome is DeployOutcome.TIMED_OUT:
        reason = f"still {status} after {human_duration(timeout)}" + (f": {reason}" if reason else "")
    answer = target.client("ecs").describe_services(cluster=cluster, services=[service])
    now = str(answer["services"][0]["taskDefinition"]) if answer.get("services") else ""
    return DeploymentResult(outcome, deployment_arn, status, reason, now)


def deploy_image(
    target: AwsTarget,
    cluster: str,
    service: str,
    container: str,
    image: str,
    strategy: Strategy = "rolling",
    bake_seconds: float = 0,
    alarms: list[str] | None = None,
    timeout: float = 1200,
    poll_interval: float = 10,
    say: Callable[[str], None] = lambda line: None,
) -> tuple[LiveService, DeploymentResult]:
    """Register a revision with ``container`` running ``image`` (by digest), deploy it and follow the deployment.

    Returns what ran before (the rollback target) and how the deployment ended. An image given by tag is
    refused before anything changes.
    """
    image = pinned_image(image)
    live = describe_service(target, cluster, service, container)
    revision = register_revision(target, live, image)
    say(f"registered {revision.rpartition('/')[2]} ({container} → {image}); {service} runs {live.family}:"
        f"{live.revision}")  # fmt: skip
    arn = start_deployment(target, cluster, service, revision, strategy, bake_seconds, alarms)
    return live, follow_deployment(target, cluster, service, arn, timeout, poll_interval, say)


def roll_back(
    target: AwsTarget,
    cluster: str,
    service: str,
    task_definition: str,
    timeout: float,
    poll_interval: float,
    strategy: Strategy = "rolling",
    say: Callable[[str], None] = lambda line: None,
) -> DeploymentResult:
    """Put ``task_definition`` back in the service and verify it runs: the deployment SUCCESSFUL, the service's
    task definition that one, every desired task running. DeployFailed (with what runs) otherwise.

    No alarms watch a rollback (the alarms that fired may still be in ALARM); the circuit breaker does.
    """
    client = target.client("ecs")
    answer = client.describe_services(cluster=cluster, services=[service])
    current = answer["services"][0] if answer.get("services") else {}
    if current.get("taskDefinition") == task_definition and current.get("runningCount") == current.get("desiredCount"):
        say(f"{service} already runs {task_definition.rpartition('/')[2]}: nothing to roll back")
        return DeploymentResult(DeployOutcome.SUCCEEDED, "", "SUCCESSFUL", None, task_definition)
    arn = start_deployment(target, cluster, service, task_definition, strategy, 0, [])
    result = follow_deployment(target, cluster, service, arn, timeout, poll_interval, say)
    after = client.describe_services(cluster=cluster, services=[service])["services"][0]
    runs = (after["taskDefinition"], after.get("runningCount"), after.get("desiredCount"))
    if not result.ok or runs[0] != task_definition or runs[1] != runs[2]:
        raise DeployFailed(
            f"ROLLBACK NOT VERIFIED: {service} runs {str(runs[0]).rpartition('/')[2]} ({runs[1]}/{runs[2]} tasks)"
            f" after the rollback deployment ended {result.status}" + (f": {result.reason}" if result.reason else ""),
            f"roll back by hand: aws ecs update-service --cluster {cluster} --service {service}"
            f" --task-definition {task_definition}",
        )
    return result


# ---------------------------------------------------------------------- Prefect tasks


@task(name="ecs-read-service", task_run_name="read {service}", cache_policy=NO_CACHE)
def read_service(target: AwsTarget, cluster: str, service: str, container: str) -> LiveService:
    return describe_service(target, cluster, service, container)


@task(name="ecs-deploy", task_run_name="deploy {image} to {service}", cache_policy=NO_CACHE)
def deploy(
    target: AwsTarget,
    cluster: str,
    service: str,
    container: str,
    image: str,
    strategy: Strategy,
    bake_seconds: float,
    alarms: list[str],
    timeout: float,
    poll_interval: float,
) -> tuple[LiveService, DeploymentResult]:
    logger = get_run_logger()
    report("update service", f"{service} → {image} ({strategy})")
    return deploy_image(
        target, cluster, service, container, image, strategy, bake_seconds, alarms, timeout, poll_interval,
        logger.info,
    )  # fmt: skip


@task(name="ecs-rollback", task_run_name="roll {service} back to {task_definition}", cache_policy=NO_CACHE)
def rollback(
    target: AwsTarget,
    cluster: str,
    service: str,
    task_definition: str,
    timeout: float,
    poll_interval: float,
    strategy: Strategy = "rolling",
) -> DeploymentResult:
    """Back to ``task_definition`` with the service's own strategy (a blue/green service stays blue/green,
    baking nothing: the revision it goes back to ran before)."""
    logger = get_run_logger()
    report("roll back", f"{service} → {task_definition}", State.WARN)
    return roll_back(target, cluster, service, task_definition, timeout, poll_interval, strategy, say=logger.info)
