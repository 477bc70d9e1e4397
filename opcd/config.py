"""The delivery configuration, ``opcd.toml``, as typed pydantic models.

``load_config`` reads and validates the file; every problem is reported with its key path and
what was expected (``environments.prod.functions.backend: missing``), never a stack trace.
"""

from __future__ import annotations

import json
import math
import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from opcd.errors import ConfigError, InputError, UnknownName
from opcd.traffic import Strategy, parse_strategy

DEFAULT_CONFIG = "opcd.toml"
_DURATION = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h|d)\s*", re.ASCII)
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_NAME = r"^[a-z][a-z0-9-]{0,39}$"
# An AWS region's name: us-east-1, eu-central-2, ap-southeast-4, us-gov-west-1, cn-north-1.
_REGION = re.compile(r"[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-[0-9]{1,2}", re.ASCII)
REGION_PLACEHOLDER = "{region}"


def where(environment: str, region: str | None) -> str:
    """``prod``, or ``prod us-west-2`` for a region of an environment of several (``region``: its region key)."""
    return f"{environment} {region}" if region else environment


def deploy_command(component: str, environment: str, version: str, region: str | None = None) -> str:
    """The ``opcd deploy`` line that puts ``version`` live in ``environment`` (its ``region``: a region key)."""
    return f"opcd deploy {component} --env {environment}{f' --region {region}' if region else ''} --version {version}"


def parse_duration(value: Any) -> float:
    """``"24h"`` → 86400.0; plain numbers are seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as '30s', '5m' or '24h'")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.fullmatch(value)):
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    else:
        raise ValueError(f"expected a duration such as '30s', '5m' or '24h', got {value!r}")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Project(_Model):
    name: str = Field(description="Name of the project, used in tags and messages.")
    region: str = Field(default="us-east-1", description="AWS region of every resource.")
    artifact_bucket: str = Field(
        description="S3 bucket that keeps built artifacts and the ledger; {region} in it is replaced by each"
        " region's name (a Lambda function takes its code from a bucket of its own region)."
    )
    artifact_retention_days: int = Field(
        default=30, ge=1, le=3650, description="Days before built artifacts expire (the bucket's lifecycle rule)."
    )
    repository: str | None = Field(
        default=None,
        description="Git repository (URL, or path relative to opcd.toml) a flow fetches its git_sha from;"
        " default: the checkout's origin, else the checkout itself.",
    )
    release_branch: str = Field(
        default="main",
        pattern=r"^[A-Za-z0-9._/-]+$",
        description="Branch of reviewed commits: a deploy given a git_sha refuses a commit not on it.",
    )


class Migrations(_Model):
    command: str = Field(description="Command run from the built package, e.g. python -m app.migrate")
    timeout: Duration = Field(default=300.0, description="Time limit of the migration command.")


class SmokeCheck(_Model):
    """One pre-traffic invoke of the new version with an HTTP API (v2) event."""

    path: str = Field(pattern=r"^/", description="Path of the request, e.g. /health.")
    method: Literal["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD"] = Field(
        default="GET", description="HTTP method of the request."
    )
    expect_status: int = Field(default=200, ge=100, le=599, description="Status code the answer must have.")
    body_contains: str | None = Field(default=None, description="Text the answer's body must contain.")


_RATE = re.compile(r"rate\((1 (minute|hour|day)|([2-9]|[1-9][0-9]+) (minutes|hours|days))\)", re.ASCII)
_CRON = re.compile(r"cron\(([A-Za-z0-9*?,/#-]+ ){5}[A-Za-z0-9*?,/#-]+\)", re.ASCII)


def _check_pattern(node: Any, path: str) -> None:
    """EventBridge patterns: objects whose leaves are arrays of values or matchers."""
    if not isinstance(node, dict) or not node:
        raise ValueError(f"event_pattern{path}: expected a non-empty table")
    for key, value in node.items():
        if isinstance(value, dict):
            _check_pattern(value, f"{path}.{key}")
        elif not isinstance(value, list) or not value:
            raise ValueError(f'event_pattern{path}.{key}: expected a non-empty array, e.g. ["value"]')


class EventRule(_Model):
    """An EventBridge rule whose one target is the component's ``live`` alias."""

    name: str = Field(
        pattern=r"^[A-Za-z0-9._-]{1,40}$", description="Name of the rule; in AWS {project}-{environment}-{name}."
    )
    schedule: str | None = Field(default=None, description="rate(5 minutes) or cron(0 3 * * ? *)")
    event_pattern: dict[str, Any] | None = Field(
        default=None, description='Event pattern, e.g. { source = ["…"] } (instead of a schedule).'
    )
    input: dict[str, Any] | None = Field(default=None, description="Constant JSON the target receives.")
    enabled: bool = Field(default=True, description="false: the rule exists but delivers nothing.")

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str | None) -> str | None:
        if value is not None and not (_RATE.fullmatch(value) or _CRON.fullmatch(value)):
            raise ValueError(
                f"{value!r} is not a schedule expression: use rate(5 minutes) or cron(0 3 * * ? *) (6 fields)"
            )
        return value

    @field_validator("event_pattern")
    @classmethod
    def _pattern(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            _check_pattern(value, "")
        return value

    @model_validator(mode="after")
    def _one_trigger(self) -> EventRule:
        if (self.schedule is None) == (self.event_pattern is None):
            raise ValueError(f"rule {self.name!r}: give exactly one of schedule or event_pattern")
        return self


class OperationWait(_Model):
    """How an App Runner deployment is followed: ListOperations every ``poll_interval`` until ``timeout``."""

    timeout: Duration = Field(default=1200.0, description="Give up following the operation after this long.")
    poll_interval: Duration = Field(default=10.0, description="Seconds between ListOperations calls.")

    @field_validator("poll_interval", "timeout")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be more than 0")
        return value


MAX_LOAD_REQUESTS = 10_000  # a load test's bound: rate × duration


class LoadTest(_Model):
    """A load test a release runs against the first environment after its deploys, before the next
    environment's approval: GET each endpoint in turn at ``rate`` requests a second for ``duration``,
    at most ``concurrency`` at once; p50/p95/p99 and the error rate are recorded in the ledger and
    compared with the last passing result there."""

    endpoints: list[Annotated[str, Field(pattern=r"^/[!-~]*$")]] = Field(
        default=["/health"], min_length=1, max_length=20,
        description="Paths requested (GET), in turn, at the origin of the environment's health URL of the component.",
    )  # fmt: skip
    rate: float = Field(default=10.0, gt=0, le=200, description="Requests a second.")
    duration: Duration = Field(default=10.0, description="How long requests are sent (at most 5 minutes).")
    concurrency: int = Field(default=4, ge=1, le=64, description="At most this many requests at once.")
    timeout: Duration = Field(default=5.0, description="Time limit of one request (a request over it is an error).")
    warmup: int = Field(default=4, ge=0, le=100, description="Requests sent first and not measured.")
    max_p95_regression: float = Field(
        default=0.2, ge=0, le=10,
        description="Fail the release when p95 grew by more than this fraction of the last passing p95 (0.2: 20%).",
    )  # fmt: skip
    p95_noise: Duration = Field(
        default=0.01,
        description="A p95 growth is a regression only when also more than this (a few ms are noise when fast).",
    )
    max_error_rate: float = Field(
        default=0.01, ge=0, le=1, description="Fail the release when more than this fraction of requests fail."
    )

    @field_validator("duration", "timeout")
    @classmethod
    def _bounded(cls, value: float) -> float:
        if not 0 < value <= 300:
            raise ValueError("must be more than 0 and at most 5 minutes")
        return value

    @model_validator(mode="after")
    def _bounded_count(self) -> LoadTest:
        if self.rate * self.duration > MAX_LOAD_REQUESTS:
            raise ValueError(
                f"rate × duration is {self.rate * self.duration:g} requests; at most {MAX_LOAD_REQUESTS} (lower one)"
            )
        return self

    @property
    def requests(self) -> int:
        """How many measured requests the test sends: rate × duration, at least one."""
        return max(1, round(self.rate * self.duration))


class _ComponentBase(_Model):
    source: str = Field(description="Directory of the component's source, relative to opcd.toml.")
    smoke: list[SmokeCheck] = Field(
        default_factory=list, description="Requests the new version must answer as expected before traffic moves."
    )
    load_test: LoadTest | None = Field(
        default=None, description="A load test a release runs after the first environment's deploys (none: no test)."
    )


class LambdaComponent(_ComponentBase):
    """A Lambda function deployed blue/green behind its ``live`` alias."""

    kind: Literal["lambda"] = Field(description="lambda: a Lambda function behind its live alias.")
    handler: str = Field(
        pattern=r"^[A-Za-z_][A-Za-z0-9_.]*\.[A-Za-z_][A-Za-z0-9_]*$", description="module.function, e.g. app.handler."
    )
    runtime: Literal["python3.11", "python3.12", "python3.13"] = Field(
        default="python3.12", description="Lambda runtime the package is built for."
    )
    architecture: Literal["x86_64"] = Field(default="x86_64", description="Lambda architecture.")
    requirements: str = Field(default="requirements.txt", description="Requirements file, relative to source.")
    migrations: Migrations | None = Field(
        default=None, description="Database migrations run from the built package before traffic moves."
    )
    sample_event: str | None = Field(default=None, description="JSON event file, relative to opcd.toml.")
    sample_expect: dict[str, Any] | None = Field(
        default=None, description="Keys and values the sample event's response must contain."
    )
    rules: list[EventRule] = Field(default_factory=list, description="EventBridge rules targeting the live alias.")


class ImageComponent(_ComponentBase):
    """What every container-image component has: its ECR repository and how its image is built."""

    repository: str = Field(description="ECR repository of the component's images.")
    dockerfile: str = Field(default="Dockerfile", description="Dockerfile, relative to source.")
    build_contexts: dict[str, str] = Field(
        default_factory=dict, description="Named build contexts (COPY --from=NAME), directories relative to opcd.toml."
    )
    builder: Literal["auto", "docker", "buildah", "podman"] = Field(
        default="auto", description="Image builder; auto: the first of docker, buildah, podman found."
    )


class AppRunnerComponent(ImageComponent):
    """A container image deployed to an App Runner service."""

    kind: Literal["apprunner"] = Field(description="apprunner: an image on an App Runner service.")
    access_role: str | None = Field(
        default=None,
        description="The ECR access role of its service (name or ARN; {environment} replaced): {service}-ecr-access.",
    )
    operation: OperationWait = Field(
        default=OperationWait(), description="How App Runner's deployment operation is followed."
    )


class EcsComponent(ImageComponent):
    """A container image deployed to an ECS service (a new task definition revision per deploy)."""

    kind: Literal["ecs"] = Field(description="ecs: an image on an ECS service.")
    container: str | None = Field(
        default=None,
        description="Container of the task definition whose image changes; default: the component's name.",
    )
    operation: OperationWait = Field(default=OperationWait(), description="How ECS's service deployment is followed.")


Component = Annotated[Union[LambdaComponent, AppRunnerComponent, EcsComponent], Field(discriminator="kind")]  # noqa: UP007
COMPONENT_KINDS = ("lambda", "apprunner", "ecs")


_GITHUB_LOGIN = r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})$"


class Approver(_Model):
    """One approver: the name opcd records and, for ``verify = "github"``, their GitHub login."""

    name: str = Field(min_length=1, description="The approver's name, as answers, messages and the ledger show it.")
    github: str | None = Field(default=None, pattern=_GITHUB_LOGIN, description="GitHub login of the approver.")


def _approvers(value: Any) -> Any:
    """``["alice"]`` or ``[{ name = "alice", github = "alice-gh" }]`` (or both mixed): Approver entries."""
    if isinstance(value, list):
        return [{"name": item} if isinstance(item, str) else item for item in value]
    return value


class Approval(_Model):
    """An approval gate. ``verify = "none"``: the approver is who the answer says (self-declared).
    ``verify = "github"``: the answer must name a run of ``workflow`` in ``repository`` that a required
    reviewer of the GitHub environment ``{environment}-approval`` approved; the flow checks it with GitHub."""

    people: Annotated[list[Approver], BeforeValidator(_approvers)] = Field(
        min_length=1, alias="approvers",
        description='Who may answer: names ("alice"), or tables { name = "alice", github = "alice-gh" }.',
    )  # fmt: skip
    timeout: Duration = Field(default=86400.0, description="How long the gate waits for an answer.")
    poll_interval: Duration = Field(default=5.0, description="How often the paused run checks for an answer.")
    verify: Literal["none", "github"] = Field(default="none", description="How an approver's identity is checked.")
    repository: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$", description="owner/name of the approval workflow."
    )
    workflow: str = Field(
        default="approve.yml", pattern=r"^[A-Za-z0-9_.-]+\.ya?ml$",
        description="File name of the approval workflow under .github/workflows/.",
    )  # fmt: skip
    github_api: str = Field(
        default="https://api.github.com", pattern=r"^https?://[^\s/]+(/\S*)?$",
        description="GitHub's REST API that approvals are verified with (GitHub Enterprise: https://HOST/api/v3);"
        " from here only, never from the environment, which a flow run can set.",
    )  # fmt: skip

    @property
    def approvers(self) -> list[str]:
        """The approvers' names, as answers, messages and the ledger show them."""
        return [p.name for p in self.people]

    def approver_of(self, login: str) -> str | None:
        """The name of the approver whose GitHub login is ``login`` (logins ignore case), else None."""
        return next((p.name for p in self.people if p.github and p.github.lower() == login.lower()), None)

    @model_validator(mode="after")
    def _github_needs(self) -> Approval:
        names = self.approvers
        for dup in sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"approver {dup!r} appears twice")
        if self.verify == "github":
            missing = [p.name for p in self.people if not p.github]
            if missing:
                raise ValueError(
                    f'verify = "github" needs each approver\'s GitHub login: {", ".join(missing)} has none'
                    ' (write approvers = [{ name = "alice", github = "alice-gh" }])'
                )
            if not self.repository:
                raise ValueError('verify = "github" needs repository = "owner/name" (where the approval workflow runs)')
        return self


class HealthCheck(_Model):
    """How a post-traffic health URL is judged healthy."""

    successes: int = Field(default=3, ge=1, le=100, description="Consecutive 2xx answers needed.")
    attempts: int = Field(default=10, ge=1, le=1000, description="Requests before giving up.")
    interval: Duration = Field(default=1.0, description="Time between two requests.")
    timeout: Duration = Field(default=5.0, description="Time limit of one request.")


AnalysisMetric = Literal["errors", "throttles", "p50", "p99"]


class CanaryAnalysis(_Model):
    """Canary analysis: the new and the old Lambda version compared on CloudWatch's metrics while they share
    ``live`` (``ExecutedVersion``), every poll of a canary or linear bake. A failing metric rolls back."""

    metrics: list[AnalysisMetric] = Field(
        default=["errors", "throttles", "p50", "p99"], min_length=1,
        description="What is judged: errors and throttles (rates, two-proportion test), p50 and p99 of Duration"
        " (Mann-Whitney U on per-period values, plus max_latency_increase).",
    )  # fmt: skip
    min_samples: int = Field(
        default=50, ge=1, description="Invocations each version needs before anything is judged (else inconclusive)."
    )
    period: Duration = Field(
        default=60.0, description="CloudWatch period of the values read (1, 5, 10, 30 s or a multiple of 60 s)."
    )
    confidence: float = Field(
        default=0.95, gt=0.5, lt=1.0, description="How sure a difference must be to fail a metric (1 - p-value)."
    )
    max_error_increase: float = Field(
        default=0.01, ge=0.0, le=1.0,
        description="Error or throttle rate the new version may have above the old one (0.01: one point).",
    )  # fmt: skip
    max_latency_increase: float = Field(
        default=0.2, ge=0.0, description="Relative latency increase tolerated (0.2: the new version 20% slower)."
    )
    on_inconclusive: Literal["pass", "fail"] = Field(
        default="pass",
        description="What an inconclusive verdict at the end of the bake does (too little traffic to judge).",
    )

    @field_validator("period")
    @classmethod
    def _period(cls, value: float) -> float:
        if value not in (1, 5, 10, 30) and (value < 60 or value % 60):
            raise ValueError(f"period must be 1s, 5s, 10s, 30s or a multiple of 60s (CloudWatch's), got {value:g}s")
        return value

    @field_validator("metrics")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError(f"metrics lists a metric twice: {value}")
        return value


class BakeSettings(_Model):
    """The guards watched while a canary or linear shift bakes."""

    poll_interval: Duration = Field(default=10.0, description="Seconds between guard checks (alarms, health).")
    smoke: bool = Field(default=False, description="Also invoke the new version with the smoke checks each poll.")
    analysis: CanaryAnalysis | None = Field(
        default=None, description="Canary analysis of Lambda bakes (new vs old version on CloudWatch); none: off."
    )

    @field_validator("poll_interval")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("poll_interval must be more than 0")
        return value


def _traffic(value: Any) -> Any:
    """A strategy, or a table of component = strategy; each one checked."""
    if isinstance(value, str):
        parse_strategy(value)
    elif isinstance(value, dict):
        for component, strategy in value.items():
            if not isinstance(strategy, str):
                raise ValueError(f"{component}: expected a strategy string, got {strategy!r}")
            try:
                parse_strategy(strategy)
            except ValueError as exc:
                raise ValueError(f"{component}: {exc}") from None
    else:
        raise ValueError(f"expected a strategy string or a table of component = strategy, got {value!r}")
    return value


_ACCOUNT_ID = re.compile(r"[0-9]{12}")
_ROLE_ARN = re.compile(r"arn:aws(-cn|-us-gov|-iso|-iso-b)?:iam::(?P<account>[0-9]{12}):role/[\w+=,.@/-]{1,512}")


def _account_id(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        raise ValueError(f'write the account as a string of 12 digits: account_id = "{value:012d}"')
    if not (isinstance(value, str) and _ACCOUNT_ID.fullmatch(value)):
        raise ValueError(f"expected an AWS account id of 12 digits, e.g. '123456789012', got {value!r}")
    return value


def _role_arn(value: Any) -> Any:
    if not (isinstance(value, str) and _ROLE_ARN.fullmatch(value)):
        raise ValueError(f"expected an IAM role ARN, e.g. 'arn:aws:iam::123456789012:role/opcd-deploy', got {value!r}")
    return value


# An ECS cluster's or service's name, {region} allowed in it (each region's name replaces it).
_ECS_NAME = r"^(?:[A-Za-z0-9_-]|\{region\}){1,255}$"


class EcsService(_Model):
    """The ECS service an ``ecs`` component runs as in one environment."""

    cluster: str = Field(
        pattern=_ECS_NAME, description="ECS cluster name (not an ARN); {region} in it is replaced by each region's."
    )
    service: str = Field(
        pattern=_ECS_NAME,
        description="ECS service name in that cluster (not an ARN); {region} in it is replaced by each region's.",
    )
    strategy: Literal["rolling", "blue-green"] = Field(
        default="rolling",
        description="rolling: ECS's rolling deployment (circuit breaker, alarm rollback); blue-green: ECS's own.",
    )
    bake: Duration = Field(default=0.0, description="blue-green's bake time (bakeTimeInMinutes, rounded up).")
    alarms: list[str] | None = Field(
        default=None,
        description="Alarms ECS watches during its deployment and rolls back on (default: the environment's).",
    )

    @property
    def bake_minutes(self) -> int:
        """``bake`` as ECS's ``bakeTimeInMinutes``: whole minutes, rounded up."""
        return math.ceil(self.bake / 60)


class Environment(_Model):
    approval: Literal[False] | Approval = Field(
        default=False, description="false, or the approval gate a release waits at before deploying here."
    )
    account_id: Annotated[str, BeforeValidator(_account_id)] | None = Field(
        default=None, description="The AWS account of this environment; opcd refuses to change any other."
    )
    role_arn: Annotated[str, BeforeValidator(_role_arn)] | None = Field(
        default=None, description="IAM role assumed (STS AssumeRole) for every AWS call made for this environment."
    )
    regions: list[str] | None = Field(
        default=None,
        description="The AWS regions of this environment, deployed in this order: the first alone, then the rest"
        " in parallel (default: [project.region]). {region} in the names of its functions, services, alarms,"
        " secrets, health URLs and the artifact bucket is replaced by each region's name.",
    )
    functions: dict[str, str] = Field(default_factory=dict, description="Component → Lambda function name.")
    services: dict[str, str] = Field(default_factory=dict, description="Component → App Runner service name or ARN.")
    ecs: dict[str, EcsService] = Field(
        default_factory=dict, description="Component → its ECS cluster, service and deployment strategy."
    )
    health: dict[str, str] = Field(default_factory=dict, description="Component → public health URL.")
    health_check: HealthCheck = Field(default=HealthCheck(), description="How a health URL is judged healthy.")
    alarms: list[str] = Field(
        default_factory=list,
        description="CloudWatch alarms that must not fire before the deploy (unless accepted), during the bake,"
        " or after the shift.",
    )
    database_secret: str | None = Field(
        default=None, description="Secrets Manager secret holding the database URL (migrations)."
    )
    traffic: Annotated[str | dict[str, str], BeforeValidator(_traffic)] = Field(
        default="all-at-once",
        description="One strategy for every Lambda component, or a table of component = strategy.",
    )
    bake: BakeSettings = Field(
        default=BakeSettings(), description="The guards watched while a canary or linear shift bakes."
    )

    @model_validator(mode="after")
    def _role_in_account(self) -> Environment:
        role = _ROLE_ARN.fullmatch(self.role_arn) if self.role_arn else None
        if role and self.account_id and role["account"] != self.account_id:
            raise ValueError(
                f"role_arn is a role of account {role['account']}, not of account_id {self.account_id}: fix one of them"
            )
        return self

    @field_validator("regions")
    @classmethod
    def _regions(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return value
        if not value:
            raise ValueError('name at least one region, e.g. ["us-east-1"] (or leave it out)')
        for region in value:
            if not _REGION.fullmatch(region):
                raise ValueError(f"{region!r} is not an AWS region's name, e.g. 'us-west-2'")
        for dup in sorted({r for r in value if value.count(r) > 1}):
            raise ValueError(f"{dup!r} appears twice")
        return value

    @field_validator("health")
    @classmethod
    def _urls(cls, value: dict[str, str]) -> dict[str, str]:
        for name, url in value.items():
            if not re.fullmatch(r"https?://[!-.0-~]+(/[!-~]*)?", url, re.ASCII):  # printable ASCII
                raise ValueError(f"health.{name}: expected an http(s) URL, got {url!r}")
        return value

    def strategy(self, component: str) -> Strategy:
        """The traffic strategy of ``component`` here (components a table leaves out: all-at-once)."""
        if isinstance(self.traffic, str):
            return parse_strategy(self.traffic)
        return parse_strategy(self.traffic.get(component, "all-at-once"))


class SlackSettings(_Model):
    webhook_secret: str | None = Field(default=None, description="Prefect Secret block with an incoming webhook URL.")
    token_secret: str | None = Field(default=None, description="Prefect Secret block with a bot token (xoxb-…).")
    channel: str | None = Field(default=None, description="Channel for the bot token's messages, e.g. #deploys.")


class EmailSettings(_Model):
    sender: str = Field(description="An SES-verified identity the emails come from.")
    to: list[str] = Field(min_length=1, description="Who gets approval requests and failed or rejected releases.")


class Notifications(_Model):
    slack: SlackSettings | None = Field(default=None, description="Slack messages of deploys and releases.")
    email: EmailSettings | None = Field(
        default=None, description="SES email for approval requests and failed or rejected releases."
    )


class Validation(_Model):
    """The checks of a pull request (``pr-validation``, ``opcd validate``)."""

    coverage_floor: int = Field(default=80, ge=0, le=100, description="Minimum test coverage (%) per component.")
    timeout: Duration = Field(default=600.0, description="Time limit of each check unless `timeouts` says.")
    node: list[str] = Field(default_factory=list, description="Directories with a package.json (npm test, lint).")
    terraform: str | None = Field(default=None, description="Directory of the Terraform root module.")
    secrets_baseline: str = Field(default=".secrets.baseline", description="detect-secrets baseline, if present.")
    skip: list[str] = Field(default_factory=list, description="Checks not to run.")
    optional: list[str] = Field(default_factory=list, description="Checks reported but never failing the PR.")
    commands: dict[str, str] = Field(default_factory=dict, description="Extra checks: name = command line.")
    timeouts: dict[str, Duration] = Field(
        default_factory=dict, description="Time limits of single checks: name = duration."
    )


class TerraformSettings(_Model):
    """The Terraform root module that ``terraform-plan``, ``terraform-apply`` and ``drift-check`` run."""

    root: str = Field(description="Directory of the root module, relative to opcd.toml.")
    binary: str = Field(default="terraform", description="terraform or tofu, found on PATH (or a path).")
    backend_config: str = Field(
        default="backends/{environment}.hcl",
        description="Per-environment -backend-config file, relative to root; {environment} is replaced.",
    )
    var_file: str | None = Field(
        default="environments/{environment}.tfvars",
        description="Per-environment -var-file, relative to root; {environment} is replaced.",
    )
    timeout: Duration = Field(default=1800.0, description="Time limit of one terraform command.")
    lock_timeout: Duration = Field(default=300.0, description="How long terraform waits for the state lock.")

    def backend_file(self, environment: str) -> str:
        return self.backend_config.replace("{environment}", environment)

    def var_file_for(self, environment: str) -> str | None:
        return self.var_file.replace("{environment}", environment) if self.var_file else None


class ReleaseSettings(_Model):
    """How a release runs an environment's deploys."""

    on_failure: Literal["rollback-all", "keep"] = Field(
        default="rollback-all",
        description=(
            "When a component's deploy fails in an environment: rollback-all rolls back, verified, every other"
            " component the release changed there; keep leaves them on the new version."
        ),
    )
    max_parallel: int = Field(
        default=8,
        ge=1,
        le=64,
        description=(
            "At most this many component deploys at once in one environment (and builds at once); the next"
            " starts as one ends. Each deploy is a thread and a few Prefect API calls at a time in the release's"
            " process: raise it for many small components, lower it on a small worker or a busy Prefect server."
        ),
    )


class Config(_Model):
    project: Project = Field(description="The project and where its artifacts live.")
    components: dict[Annotated[str, Field(pattern=_NAME)], Component] = Field(
        description="What is deployed: component name → a lambda, apprunner or ecs component."
    )
    environments: dict[Annotated[str, Field(pattern=_NAME)], Environment] = Field(
        description="Where it is delivered, in release order: environment name → what runs there and how."
    )
    notifications: Notifications = Field(default=Notifications(), description="Who hears about deploys.")
    validation: Validation = Field(default=Validation(), description="The checks of a pull request.")
    terraform: TerraformSettings | None = Field(
        default=None, description="The Terraform root module of the infrastructure."
    )
    release: ReleaseSettings = Field(default=ReleaseSettings(), description="How a release runs its deploys.")

    # Where the file was read from; relative paths in it are relative to this directory.
    root: Path = Field(default=Path("."), exclude=True, description="Directory opcd.toml was read from (not a key).")
    # project.artifact_bucket as opcd.toml writes it, {region} kept (project.artifact_bucket: project.region's)
    _bucket_template: str | None = PrivateAttr(default=None)

    def regions(self, environment: str) -> list[str]:
        """The regions of ``environment``, in deploy order: ``regions``, else ``[project.region]``."""
        return list(self.environment(environment).regions or [self.project.region])

    def region_key(self, environment: str, region: str | None = None) -> str | None:
        """``region`` as plans, ledger paths and locks name it: None in an environment of one region (its
        names and paths stay as they were), else the region (default: the first). UnknownName for another."""
        regions = self.regions(environment)
        if region is not None and region not in regions:
            raise UnknownName(
                f"environment {environment!r} has no region {region!r}", f"its regions: {', '.join(regions)}"
            )
        return None if len(regions) == 1 else region or regions[0]

    def region_keys(self, environment: str, region: str | None = None) -> list[str | None]:
        """:meth:`region_key` of ``region`` alone, else of each of ``environment``'s regions in deploy order
        (``[None]`` in an environment of one region)."""
        return [self.region_key(environment, r) for r in ([region] if region else self.regions(environment))]

    def in_region(self, name: str, environment: str | None = None, region: str | None = None) -> str:
        """``name`` with {region} replaced: by ``region``, else ``environment``'s first, else project.region."""
        if REGION_PLACEHOLDER not in name:
            return name
        where = region or (self.regions(environment)[0] if environment else self.project.region)
        return name.replace(REGION_PLACEHOLDER, where)

    def bucket_for(self, environment: str | None = None, region: str | None = None) -> str:
        """The artifact bucket of ``region`` (default: ``environment``'s first region, else project.region)."""
        return self.in_region(self._bucket_template or self.project.artifact_bucket, environment, region)

    def alarm_names(self, environment: str, region: str | None = None) -> list[str]:
        """``environment``'s alarms in ``region`` (default: its first)."""
        return [self.in_region(a, environment, region) for a in self.environment(environment).alarms]

    def health_url(self, component: str, environment: str, region: str | None = None) -> str | None:
        """``component``'s health URL in ``environment``'s ``region`` (default: its first), if it has one."""
        url = self.environment(environment).health.get(component)
        return self.in_region(url, environment, region) if url else None

    def component(self, name: str) -> Component:
        if name not in self.components:
            raise UnknownName(
                f"unknown component {name!r}",
                f"opcd.toml defines: {', '.join(sorted(self.components)) or 'none'}",
            )
        return self.components[name]

    def lambda_component(self, name: str) -> LambdaComponent:
        """``name``'s settings when it is a Lambda component; InputError (exit 2) for any other kind."""
        return _of_kind(name, self.component(name), LambdaComponent, "a Lambda")

    def apprunner_component(self, name: str) -> AppRunnerComponent:
        """``name``'s settings when it is an App Runner component; InputError (exit 2) for any other kind."""
        return _of_kind(name, self.component(name), AppRunnerComponent, "an App Runner service")

    def image_component(self, name: str) -> ImageComponent:
        """``name``'s settings when it is a container image (App Runner, ECS); InputError (exit 2) otherwise."""
        return _of_kind(name, self.component(name), ImageComponent, "a container image")

    def ecs_component(self, name: str) -> EcsComponent:
        """``name``'s settings when it is an ECS component; InputError (exit 2) for any other kind."""
        return _of_kind(name, self.component(name), EcsComponent, "an ECS service")

    def ecs_container(self, name: str) -> str:
        """The container of ECS component ``name`` whose image a deploy changes (default: the component's name)."""
        return self.ecs_component(name).container or name

    def environment(self, name: str) -> Environment:
        if name not in self.environments:
            raise UnknownName(
                f"unknown environment {name!r}",
                f"opcd.toml defines: {', '.join(sorted(self.environments)) or 'none'}",
            )
        return self.environments[name]

    def ordered_environments(self, requested: list[str] | None) -> list[str]:
        """The environments asked for (all when none), each checked, in opcd.toml's order."""
        for name in requested or []:
            self.environment(name)
        return [e for e in self.environments if not requested or e in requested]

    def _runs_as(self, table: str, component: str, environment: str, what: str) -> str:
        self.component(component)
        entries: dict[str, str] = getattr(self.environment(environment), table)
        if component not in entries:
            raise ConfigError(
                f"environments.{environment}.{table}.{component}: missing",
                f"name the {what} of this component in opcd.toml",
            )
        return entries[component]

    def function_name(self, component: str, environment: str, region: str | None = None) -> str:
        """The Lambda function that ``component`` runs as in ``environment`` (its ``region``; default: the first)."""
        function = self._runs_as("functions", component, environment, "Lambda function")
        return self.in_region(function, environment, region)

    def service_ref(self, component: str, environment: str, region: str | None = None) -> str:
        """The App Runner service (a name or an ARN) that ``component`` runs as in ``environment``."""
        ref = self._runs_as("services", component, environment, "App Runner service (its name or ARN)")
        return self.in_region(ref, environment, region)

    def ecs_service(self, component: str, environment: str, region: str | None = None) -> EcsService:
        """The ECS cluster and service that ``component`` runs as in ``environment`` (its ``region``; default: the
        first), {region} in their names and alarms replaced."""
        self.component(component)
        entries = self.environment(environment).ecs
        if component not in entries:
            raise ConfigError(
                f"environments.{environment}.ecs.{component}: missing",
                "name the ECS cluster and service of this component in opcd.toml",
            )
        ref = entries[component]
        named = {"cluster": self.in_region(ref.cluster, environment, region)}
        named["service"] = self.in_region(ref.service, environment, region)
        alarms = None if ref.alarms is None else [self.in_region(a, environment, region) for a in ref.alarms]
        return ref.model_copy(update={**named, "alarms": alarms})

    def database_secret(self, environment: str, region: str | None = None) -> str:
        """The Secrets Manager secret of ``environment``'s database URL (migrations need it)."""
        secret = self.environment(environment).database_secret
        if secret is None:
            raise ConfigError(
                f"environments.{environment}.database_secret: missing (a component has migrations)",
                "name the Secrets Manager secret holding the database URL in opcd.toml",
            )
        return self.in_region(secret, environment, region)

    def migrates(self, environment: str, region: str | None = None) -> bool:
        """Whether a deploy to ``region`` of ``environment`` runs the migrations. One region, or a database of each
        region's own ({region} in database_secret): yes. A database the regions share (no {region}: the same
        secret, replicated to each region) is migrated by the first region's deploy alone, which goes first and
        alone; the later regions, deployed together, would otherwise migrate it at the same time."""
        secret = self.environment(environment).database_secret
        first = self.regions(environment)[0]
        return region is None or region == first or (secret is not None and REGION_PLACEHOLDER in secret)

    def source_dir(self, component: str) -> Path:
        return (self.root / self.component(component).source).resolve()

    def state_dir(self) -> Path:
        """Where opcd keeps local state (the sandbox's endpoints): ``.opcd`` beside opcd.toml."""
        return self.root / ".opcd"

    def build_cache_dir(self) -> Path:
        """Installed dependencies, reused across builds: ``$OPCD_BUILD_CACHE`` or ``.opcd/build-cache``."""
        return Path(os.environ.get("OPCD_BUILD_CACHE") or self.state_dir() / "build-cache")


_K = TypeVar("_K", bound=BaseModel)


def _of_kind(name: str, component: Component, kind: type[_K], what: str) -> _K:
    if not isinstance(component, kind):
        raise InputError(f"component {name!r} is a {component.kind} component, not {what}")
    return component


def _render_path(loc: list[Any], data: Any) -> str:
    """``components.worker.rules.0.schedule`` → ``components.worker.rules[nightly-digest].schedule``."""
    parts: list[str] = []
    node = data
    for part in loc:
        if isinstance(part, int):
            item = node[part] if isinstance(node, list) and part < len(node) else None
            label = item.get("name") if isinstance(item, dict) else None
            parts[-1] += f"[{label if label else part}]"
        else:
            parts.append(str(part))
        node = node[part] if isinstance(node, dict | list) and _has(node, part) else None
    return ".".join(parts) or "(top level)"


def _has(node: dict[str, Any] | list[Any], part: Any) -> bool:
    return part in node if isinstance(node, dict) else isinstance(part, int) and part < len(node)


def _problems_from(exc: ValidationError, data: dict[str, Any]) -> list[str]:
    problems = []
    for err in exc.errors():
        loc = [p for p in err["loc"] if not str(p).startswith("function-after")]
        # pydantic puts the union member name in the path ("approval.Approval.approvers"); drop it
        loc = [p for p in loc if p not in ("Approval", "literal[False]", "bool")]
        if loc[:1] == ["components"] and len(loc) > 2 and loc[2] in COMPONENT_KINDS:
            del loc[2]  # the discriminated union's tag ("components.web.ecs.repository")
        path = _render_path(loc, data)
        kind = err["type"]
        if kind == "union_tag_not_found":
            path, message = _render_path([*loc, "kind"], data), "missing"
        elif kind == "union_tag_invalid":
            path = _render_path([*loc, "kind"], data)
            message = f"Input should be {', '.join(repr(k) for k in COMPONENT_KINDS[:-1])} or {COMPONENT_KINDS[-1]!r}"
        elif kind == "missing":
            message = "missing"
        elif kind == "extra_forbidden":
            message = "unknown key (check its spelling against the keys in docs/config.md)"
        else:
            message = err["msg"].removeprefix("Value error, ")
        problems.append(f"{path}: {message}")
    return sorted(set(problems))


# where each kind names what it runs as, per environment
_TABLES = {"lambda": "functions", "apprunner": "services", "ecs": "ecs"}


def _cross_checks(config: Config) -> list[str]:
    problems = []
    for cname, comp in config.components.items():
        if not (config.root / comp.source).is_dir():
            problems.append(f"components.{cname}.source: directory {comp.source!r} does not exist")
        if not isinstance(comp, LambdaComponent):
            continue
        if comp.sample_event:
            try:
                json.loads((config.root / comp.sample_event).read_text())
            except OSError:
                problems.append(f"components.{cname}.sample_event: file {comp.sample_event!r} does not exist")
            except ValueError as exc:
                problems.append(f"components.{cname}.sample_event: not JSON ({exc})")
        names = [r.name for r in comp.rules]
        for dup in sorted({n for n in names if names.count(n) > 1}):
            problems.append(f"components.{cname}.rules: rule name {dup!r} appears twice")
    for ename, env in config.environments.items():
        for cname, comp in config.components.items():
            table = _TABLES[comp.kind]
            if cname not in getattr(env, table):
                problems.append(f"environments.{ename}.{table}.{cname}: missing")
        for table in ("functions", "services", "ecs", "health"):
            for cname in getattr(env, table):
                if cname not in config.components:
                    problems.append(f"environments.{ename}.{table}.{cname}: no component {cname!r} in [components]")
        if isinstance(env.traffic, dict):
            for cname in env.traffic:
                if cname not in config.components:
                    problems.append(f"environments.{ename}.traffic.{cname}: no component {cname!r} in [components]")
        for cname, comp in config.components.items():
            if isinstance(env.traffic, dict) and comp.kind != "lambda" and env.strategy(cname).gradual:
                what, how = ("an App Runner", "App Runner") if comp.kind == "apprunner" else ("an ECS", "ECS")
                problems.append(
                    f"environments.{ename}.traffic: {cname} is {what} service; only Lambda components"
                    f" shift gradually (leave it out of the table: {how} rolls out on its own)"
                )
        for cname, comp in config.components.items():  # the load test runs in the first environment
            if comp.load_test and ename == next(iter(config.environments)) and cname not in env.health:
                problems.append(
                    f"environments.{ename}.health.{cname}: missing (components.{cname}.load_test requests its origin)"
                )
        if env.regions and len(env.regions) > 1:
            problems += _region_checks(config, ename)
        elif env.regions and env.regions != [config.project.region]:
            problems += _bucket_check(config, ename, f"{ename} is in {env.regions[0]}, not project.region")
        migrations = any(isinstance(c, LambdaComponent) and c.migrations for c in config.components.values())
        if migrations and env.database_secret is None:
            problems.append(f"environments.{ename}.database_secret: missing (a component has migrations)")
    if config.terraform:
        problems += _terraform_checks(config, config.terraform)
    return problems


def _region_checks(config: Config, environment: str) -> list[str]:
    """An environment of several regions: Lambda and ECS components (not App Runner), each region's own artifact
    bucket (its packages, its ledger), a health URL per region."""
    problems = [
        f"environments.{environment}.regions: {name} is an App Runner component, and App Runner services are not"
        " deployed to several regions (App Runner takes no new customers since 30 April 2026): make it an ECS"
        f' component (kind = "ecs", environments.{environment}.ecs.{name}) for a service in several regions, or'
        f" give {environment} one region"
        for name, comp in config.components.items()
        if comp.kind == "apprunner"
    ]
    problems += _bucket_check(config, environment, f"{environment} has several regions")
    for component, url in config.environments[environment].health.items():  # each region checked, not one of them
        if REGION_PLACEHOLDER not in url:
            problems.append(
                f"environments.{environment}.health.{component}: {environment} has several regions, and one URL for"
                " all would check whichever region answers it: put {region} in it (e.g. https://api.{region}.example/)"
            )
    return problems


def _bucket_check(config: Config, environment: str, why: str) -> list[str]:
    """An environment outside project.region: its Lambda functions take their code from a bucket of their region."""
    if REGION_PLACEHOLDER in config.project.artifact_bucket:
        return []
    if not any(comp.kind == "lambda" for comp in config.components.values()):
        return []
    return [
        f"project.artifact_bucket: {why}, and a Lambda function takes its code from a bucket of its own region:"
        ' put {region} in the name (e.g. "outreachpass-artifacts-{region}")'
    ]


def _terraform_checks(config: Config, settings: TerraformSettings) -> list[str]:
    root = config.root / settings.root
    if not root.is_dir():
        return [f"terraform.root: directory {settings.root!r} does not exist"]
    problems = []
    for ename in config.environments:
        for key, name in (("backend_config", settings.backend_file(ename)), ("var_file", settings.var_file_for(ename))):
            if name is not None and not (root / name).is_file():
                problems.append(f"terraform.{key}: {ename}'s file {settings.root}/{name} does not exist")
    return problems


def parse_config(data: dict[str, Any], root: Path) -> Config:
    """Validate an already-parsed TOML document; raise ConfigError listing every problem."""
    try:
        config = Config.model_validate({**data, "root": root})
    except ValidationError as exc:
        problems = _problems_from(exc, data)
    else:
        problems = _cross_checks(config)
        if not problems:
            return _home_bucket(config)
    raise ConfigError(
        "invalid opcd.toml:\n  " + "\n  ".join(problems),
        "fix the keys above; `opcd config check` shows them again",
    )


def _home_bucket(config: Config) -> Config:
    """project.artifact_bucket with {region} replaced by project.region (the project's own: ledger, releases);
    the name as written stays behind :meth:`Config.bucket_for`, which fills in any other region."""
    template = config.project.artifact_bucket
    if REGION_PLACEHOLDER not in template:
        return config
    bucket = template.replace(REGION_PLACEHOLDER, config.project.region)
    home = config.project.model_copy(update={"artifact_bucket": bucket})
    filled = config.model_copy(update={"project": home})
    filled._bucket_template = template
    return filled


def config_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    """``--config``, else ``OPCD_CONFIG``, else ``./opcd.toml``."""
    return Path(explicit or os.environ.get("OPCD_CONFIG") or DEFAULT_CONFIG)


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    file = config_path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"config file {str(file)!r} not found",
            "run opcd from the project's root, or pass --config PATH / set OPCD_CONFIG",
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read {str(file)!r}: {exc.strerror}") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: not valid TOML: {exc}", "fix the syntax at that line") from exc
    return parse_config(data, file.resolve().parent)
