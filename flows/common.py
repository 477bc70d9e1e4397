"""What every flow shares: a run's outcome in words (Slack, ledger, artifact) and its failures before the first record.

:func:`finish` ends a deploy or rollback run (Lambda or App Runner): the Slack message, the ledger
record, the run's artifact. :class:`EarlySteps` reports a failure before a run's first record.
:func:`cause` and :func:`step_failure` turn any step's error into the one line the CLI prints.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Protocol

from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as AwsConnectionError
from prefect.logging import get_run_logger

from flows.plan.models import DeployPlan, RollbackPlan
from opcd.aws import AwsTarget, guarded_target, target_for
from opcd.config import Config, LambdaComponent, load_config
from opcd.errors import DeployFailed, InputError, OpcdError
from opcd.locks import environment_lock, limit_name
from opcd.logs import drop_empty_tracebacks
from opcd.outcomes import Outcome, Stage
from opcd.progress import State, report
from tasks.build import lambda_source_hash
from tasks.cloudwatch import AlarmGuard
from tasks.ecr import Repository, describe_repository
from tasks.events import emit, outcome_event
from tasks.images import image_source_hash, image_tag
from tasks.ledger import Action, Record, publish_run_artifact, record_in_ledger
from tasks.notify import Notifier
from tasks.s3_artifacts import artifact_key, check_bucket

drop_empty_tracebacks()  # in every process that runs a flow: the CLI's, a worker's

_LEVELS = {
    Outcome.DEPLOYED: "ok", Outcome.NOOP: "info", Outcome.FAILED: "fail", Outcome.ROLLED_BACK: "warn",
    Outcome.ROLLBACK_FAILED: "fail",
}  # fmt: skip


@dataclass(frozen=True)
class EnvironmentChecks:
    """What every change to one environment checks first: its account, its alarms, the artifact bucket."""

    target: AwsTarget
    alarms: AlarmGuard


def check_environment(
    config: Config,
    environment: str,
    accept_alarms: list[str] | None = None,
    accept_firing: bool = False,
    region: str | None = None,
) -> EnvironmentChecks:
    """The environment's target (account asked of STS), its alarm guard, and the bucket's existence;
    in its ``region`` (None: its first).

    An alarm of the environment that fires now refuses the change unless ``accept_alarms`` names it;
    ``accept_firing`` accepts whatever fires (a rollback is how an incident gets fixed).
    """
    target = guarded_target(config, environment, region)  # the environment's account, asked of STS
    alarms = config.alarm_names(environment, region)
    alarms_guard = AlarmGuard.preflight(target, alarms, accept_alarms or [], environment, accept_firing)
    check_bucket(target, config.bucket_for(environment, region))
    return EnvironmentChecks(target, alarms_guard)


def the_plan(
    config: Config,
    kind: str,
    request: tuple[str, str, str],
    accept_alarms: list[str] | None = None,
    planned: DeployPlan | None = None,
    region: str | None = None,
) -> tuple[DeployPlan, EnvironmentChecks | None]:
    """The deploy plan a run executes: the one it was given (for that component, environment and version),
    or, run without one (from the UI, a deployment), the plan built now as ``opcd deploy`` builds it — then
    with the environment's checks it made (account, alarms, bucket), which the run does not make again.

    A plan given is a run's parameter, which whoever may start a run can write: it is checked against
    opcd.toml (:func:`check_given_plan`) and refused when it names anything else. One made from another
    source tree than the run's (``opcd deploy --git-sha`` plans in the local checkout; the run builds the
    commit) is made again here, in the run's tree."""
    component, environment, version = request
    if planned is not None:
        if (planned.kind, planned.component, planned.environment, planned.version) != (kind, *request):
            raise InputError(
                f"the plan given deploys {planned.component} {planned.version} to {planned.environment}"
                f" ({planned.kind}), not {component} {version} to {environment}",
                "pass the plan of this deploy, or none (the run then makes it)",
            )
        check_given_plan(config, planned, accept_alarms)
        check_given_registry(config, planned)
        if made_from_another_tree(config, planned):
            get_run_logger().warning(
                "The plan given was made from another source tree than this run's: %s planned again here", component
            )
            planned = None
    if planned is None:
        from flows.plan.build import build_deploy_plan

        region = config.region_key(environment, region)
        checked = check_environment(config, environment, accept_alarms, region=region)
        made = build_deploy_plan(config, component, environment, version, accept_alarms, checked=checked, region=region)
        return made, checked
    return planned, None


def check_given_plan(config: Config, planned: DeployPlan, accept_alarms: list[str] | None) -> None:
    """InputError unless the plan changes only what opcd.toml names: its function or service, its artifact's
    place (the bucket's key, the configured repository and the version's tag; the registry is checked where
    the run reads the repository), and alarms accepted only when the request named them."""
    component, environment, version = planned.component, planned.environment, planned.version
    wrong: list[str] = []
    region = planned.region
    if region != config.region_key(environment, region):  # UnknownName for a region the environment lacks
        wrong.append(f"region {region}, not one of {', '.join(config.regions(environment))}")
    if planned.kind == "lambda":
        function = config.function_name(component, environment, region)
        if {planned.resource, planned.resource_id} != {function}:
            wrong.append(f"function {planned.resource_id}, not {function}")
        location = f"s3://{config.bucket_for(environment, region)}/{artifact_key(component, version)}"
        if planned.artifact.location != location:
            wrong.append(f"artifact {planned.artifact.location}, not {location}")
        source = planned.artifact.copy_from
        if source is not None and source not in release_locations(config, component, version):
            wrong.append(f"a copy from {source}, not from an artifact bucket of opcd.toml")
    else:
        if planned.kind == "apprunner":
            ref = config.service_ref(component, environment)
            named = (
                planned.resource_id == ref
                if ref.startswith("arn:")
                else planned.resource == ref and f":service/{ref}/" in planned.resource_id
            )
            if not named:
                wrong.append(f"service {planned.resource_id}, not {ref}")
        elif planned.resource != (service := config.ecs_service(component, environment, region).service):
            wrong.append(f"service {planned.resource}, not {service}")
        repository = config.image_component(component).repository
        for image in filter(None, (planned.artifact.location, planned.artifact.copy_from)):
            uri, _, tag = image.rpartition(":")  # a copy from another region's repository: of the same name
            if not uri.endswith("/" + repository) or tag != image_tag(version):
                wrong.append(f"image {image}, not {repository}:{image_tag(version)}")
    extra = sorted(set(planned.accepted_alarms) - set(accept_alarms or []))
    if extra:
        wrong.append(f"alarms accepted that the request does not accept: {', '.join(extra)}")
    if wrong:
        raise InputError(
            f"the plan given for {component} in {environment} does not match opcd.toml: {'; '.join(wrong)}",
            "pass the plan `opcd deploy` makes, or none (the run then makes it)",
        )


def release_locations(config: Config, component: str, version: str) -> set[str]:
    """Where the version's Lambda package may be kept: the key in each region's artifact bucket."""
    buckets = {config.bucket_for(env, region) for env in config.environments for region in config.regions(env)}
    return {f"s3://{bucket}/{artifact_key(component, version)}" for bucket in buckets}


def made_from_another_tree(config: Config, planned: DeployPlan) -> bool:
    """Whether the plan's artifact decision was made from other source than this run's tree holds."""
    if planned.artifact.source_hash is None:
        return False
    comp = config.component(planned.component)
    source = config.source_dir(planned.component)
    hashed = lambda_source_hash(comp, source) if isinstance(comp, LambdaComponent) else image_source_hash(comp, source)
    return hashed != planned.artifact.source_hash


def check_given_registry(config: Config, planned: DeployPlan) -> None:
    """For an image's plan given as a parameter: :func:`check_given_image` against the repository ECR reports
    (one read: a plan this run builds itself took its registry from that same answer)."""
    if planned.kind != "lambda":
        name = config.image_component(planned.component).repository
        check_given_image(planned, describe_repository(target_for(config, planned.environment, planned.region), name))


def check_given_image(planned: DeployPlan, repository: Repository) -> None:
    """InputError unless the plan's image is the version's tag in ``repository`` as ECR reports it (its registry
    too: a plan is a run's parameter, and an image from elsewhere would run unreviewed code)."""
    expected = repository.identifier(image_tag(planned.version))
    if planned.artifact.location != expected:
        raise InputError(
            f"the plan given deploys the image {planned.artifact.location}, not {expected}",
            "pass the plan `opcd deploy` makes, or none (the run then makes it)",
        )


def checks_of(config: Config, planned: DeployPlan | RollbackPlan) -> EnvironmentChecks:
    """The environment's target and alarm guard for a run of ``planned``: what the plan checked is not read again
    (the resource, the bucket, the artifact), except the account (asked of STS once per process and target) and
    the alarms: their states change over time, and a deploy refuses one firing when it starts unless the request
    accepted it by name (a rollback accepts what fires: it is how an incident is fixed)."""
    environment, region = planned.environment, planned.region
    target = guarded_target(config, environment, region)
    accepted = list(planned.accepted_alarms) if isinstance(planned, DeployPlan) else []
    firing_ok = isinstance(planned, RollbackPlan)
    alarms = config.alarm_names(environment, region)
    return EnvironmentChecks(target, AlarmGuard.preflight(target, alarms, accepted, environment, firing_ok))


class LedgerPlan(Protocol):
    """What recording an outcome needs of a deploy's plan (Lambda or App Runner)."""

    @property
    def target(self) -> AwsTarget: ...

    @property
    def bucket(self) -> str: ...


def live_text(record: Record) -> str:
    """What is live at the end of a run, in one phrase."""
    version = record.live_version or "a version opcd did not deploy"
    if record.image or record.live_image:
        return f"{version} ({record.live_image}{', ' + record.live_image_digest if record.live_image_digest else ''})"
    return f"{version} (Lambda version {record.live_lambda_version})"


def notify_outcome(notifier: Notifier, record: Record) -> None:
    live = live_text(record)
    texts = {
        Outcome.DEPLOYED: f"{record.action} done: {record.version} is live",
        Outcome.NOOP: f"nothing to do: {record.version} was already live",
        Outcome.FAILED: f"{record.action} FAILED before traffic moved; live untouched on {live}",
        Outcome.ROLLED_BACK: f"{record.action} FAILED after traffic moved and was ROLLED BACK; live on {live}",
        Outcome.ROLLBACK_FAILED: f"{record.action} FAILED and the ROLLBACK FAILED: live on {live}. Act now.",
    }
    level = _LEVELS.get(record.outcome, "info")
    if record.action == "rollback" and record.outcome == Outcome.ROLLED_BACK:  # the target itself failed
        to = record.version or "the target"
        texts[Outcome.ROLLED_BACK] = (
            f"rollback FAILED: traffic moved to {to}, which failed its checks, and moved back; live on {live}, verified"
        )
        level = "fail"
    text = texts.get(record.outcome, f"{record.action} ended {record.outcome}; live on {live}")
    facts = {"Live now": live, "By": record.actor}
    if record.force:
        facts["Forced"] = "--force: a target the ledger may never have seen live"
    if record.reason and record.outcome != Outcome.DEPLOYED:
        facts["Why"] = record.reason[:500]
    if record.traffic and record.traffic != "all-at-once":
        facts["Traffic"] = record.traffic
    if record.accepted_alarms:
        facts["Accepted alarms"] = ", ".join(record.accepted_alarms)
    if record.repaired:
        facts["Repaired first"] = record.repaired
    notifier.send(text, level, facts)


# How a run's outcome shows as its row's last step: (step, state).
_SHOWN = {
    Outcome.DEPLOYED: ("deployed", State.OK), Outcome.NOOP: ("already live", State.OK),
    Outcome.FAILED: ("FAILED", State.FAILED), Outcome.ROLLED_BACK: ("ROLLED BACK", State.FAILED),
    Outcome.ROLLBACK_FAILED: ("ROLLBACK FAILED", State.FAILED),
}  # fmt: skip


def report_outcome(record: Record) -> None:
    """The run's outcome as its row's last step (a rollback that went where asked: ``rolled back``)."""
    name, state = _SHOWN.get(record.outcome, (str(record.outcome), State.FAILED))
    if record.action == "rollback" and record.outcome is Outcome.DEPLOYED:
        name, state = "rolled back", State.WARN
    reason = f"; {record.reason}" if record.reason and record.outcome.is_failure else ""
    report(name, f"live: {live_text(record)}{reason}", state, record.component, record.environment)


# The plan's steps (flows.plan.models.Action) a run has run so far, in order: its record's ``steps``.
_RAN: ContextVar[list[str] | None] = ContextVar("opcd_steps_ran", default=None)


@contextmanager
def running_steps() -> Iterator[list[str]]:
    """Keep, for the block (one deploy or rollback run), each step :func:`ran` reports."""
    steps: list[str] = []
    token = _RAN.set(steps)
    try:
        yield steps
    finally:
        _RAN.reset(token)


def ran(action: str) -> None:
    """The run executes the plan's step ``action`` now (a ``Step.action``); its record lists it in ``steps``."""
    steps = _RAN.get()
    if steps is not None:
        steps.append(action)


def finish(plan: LedgerPlan, record: Record, notifier: Notifier | None = None) -> Record:
    ran("record")
    report_outcome(record)
    record.steps = list(_RAN.get() or [])
    if notifier is not None:
        notify_outcome(notifier, record)
        record.notify_failures = list(notifier.failures)
    record_in_ledger(plan.target, plan.bucket, record)
    publish_run_artifact(record)
    emit_outcome(record)
    return record


def emit_outcome(record: Record) -> None:
    """The event of how a deploy or rollback ended (``tasks/events.py``), from its ledger record."""
    emit(
        outcome_event(record.action, record.outcome), record.component, record.environment, record.version,
        action=record.action, outcome=record.outcome, step=record.step, live_version=record.live_version,
        reason=record.reason,
    )  # fmt: skip


class RunPlan(LedgerPlan, Protocol):
    """A deploy's plan (Lambda or App Runner), as a failure before its first record needs it."""

    @property
    def config(self) -> Config: ...


# How long a run that failed before it took its lock waits for the lock to write ``latest.json``.
LOCK_WAIT = 5.0
_THROTTLED = {"Throttling", "ThrottlingException", "SlowDown", "RequestLimitExceeded", "TooManyRequestsException"}


def cause(exc: BaseException) -> tuple[str, str | None]:
    """(what went wrong, how to fix it) for an error of any step, AWS's answers in words."""
    if isinstance(exc, OpcdError):
        return exc.message, exc.hint
    if isinstance(exc, ClientError):
        error, meta = exc.response.get("Error", {}), exc.response.get("ResponseMetadata", {})
        status, attempts = meta.get("HTTPStatusCode") or 0, meta.get("RetryAttempts", 0) + 1
        what = f"AWS {exc.operation_name} answered {status} {error.get('Code')}: {error.get('Message')}"
        what += f" ({attempts} attempts)" if attempts > 1 else ""
        if status >= 500 or error.get("Code") in _THROTTLED:
            return what, "AWS is unavailable or throttling: try again in a few minutes"
        return what, "AWS refused the request: see its answer in the run's log (Prefect UI)"
    if isinstance(exc, AwsConnectionError | HTTPClientError):
        return f"AWS did not answer: {exc}", "is the sandbox (`opcd sandbox up`) or the network up? try again then"
    return f"{type(exc).__name__}: {exc}", "the traceback is in the run's log (Prefect UI)"


def step_failure(subject: str, step: Stage, exc: BaseException, detail: str = "") -> OpcdError:
    """``exc`` as the one-line error of ``subject`` that failed at ``step`` (bad input stays InputError)."""
    what, hint = cause(exc)
    kind = InputError if isinstance(exc, InputError) else DeployFailed
    return kind(f"{subject} failed at {step}: {what}{detail}", hint)


class EarlySteps:
    """A run before its first ledger record: the step it is at, and its plan once it has one.

    A failure there changed nothing live; :meth:`failed` still posts it to Slack, records it in
    the ledger (when AWS answers) and turns it into the one line the CLI prints.
    """

    def __init__(
        self,
        action: Action,
        component: str,
        environment: str,
        version: str | None,
        git_sha: str | None = None,
        config_path: str | None = None,
        notify: bool = True,
        subject: str | None = None,
        region: str | None = None,
    ) -> None:
        self.action, self.component, self.environment, self.version = action, component, environment, version
        self.git_sha, self.config_path, self.notify = git_sha, config_path, notify
        self.subject = subject or f"{action} {component} {version} to {environment}"  # the error line's
        self.title = subject or f"{component} {version} → {environment}"  # the Slack message's
        self.step = Stage.PLAN
        self.plan: RunPlan | None = None
        self.read_live: Callable[[Record], object] | None = None
        # the run's region (None: the environment's first), the plan's once there is one; as ledger paths
        # and locks name it (None in an environment of one region) once a failure is recorded
        self.region: str | None = region

    @property
    def step(self) -> Stage:
        return self._step

    @step.setter
    def step(self, stage: Stage) -> None:
        """The run is at ``stage`` now: a release's build shows each stage on its ``build`` row; a
        deploy its plan (its own build and upload show as the tasks that do them: a reused artifact has none)."""
        self._step = stage
        if self.action == "build":
            report(str(stage), "", State.RUNNING, self.component, "build")
        elif stage is Stage.PLAN:
            what = f"{self.action} {self.version or ''}".rstrip()
            report(str(stage), what, State.RUNNING, self.component, self.environment)

    @classmethod
    def rollback(
        cls,
        component: str,
        environment: str,
        to_version: str | None,
        config_path: str | None,
        region: str | None = None,
    ) -> EarlySteps:
        subject = f"rollback {component} in {environment}"
        return cls(
            "rollback", component, environment, to_version, config_path=config_path, subject=subject, region=region
        )

    @contextmanager
    def reporting(self) -> Iterator[None]:
        """A failure in the block is reported (:meth:`failed`) and raised as its one-line error."""
        try:
            yield
        except Exception as exc:
            raise self.failed(exc) from exc

    def planned(self, plan: RunPlan, read_live: Callable[[Record], object]) -> None:
        """Remember the plan, and how to read what is live into a record."""
        self.plan, self.read_live = plan, read_live
        self.region = getattr(plan, "region", None)

    def failed(self, exc: Exception) -> OpcdError:
        """Report a failure of the current step (Slack, ledger, the run's artifact); the error to raise."""
        what = cause(exc)[0]
        get_run_logger().error("%s failed at %s: %s", self.subject, self.step, what)
        row = "build" if self.action == "build" else self.environment
        report(f"FAILED at {self.step}", what, State.FAILED, self.component, row)
        config = self.plan.config if self.plan else _config_or_none(self.config_path)
        if self.plan is None and config is not None:  # failed before its plan: the region the run was asked for
            try:
                self.region = config.region_key(self.environment, self.region)
            except OpcdError:  # an environment or region opcd.toml lacks: the failure being reported says so
                pass
        record = Record(
            self.component, self.environment, self.action, Outcome.FAILED, self.version, git_sha=self.git_sha,
            step=self.step, reason=f"failed at {self.step}: {what}", region=self.region,
        )  # fmt: skip
        record.attach_flow_run()
        live = self._live(record)
        notifier = Notifier(config.notifications.slack if config else None, self.title, self.notify)
        notify_outcome(notifier, record)
        record.notify_failures = list(notifier.failures)
        detail = "; nothing changed, live untouched" + (f" on {live}" if live else "")
        if (unrecorded := self._record(config, record)) is not None:
            detail += f"; the ledger record could not be written either ({unrecorded})"
        if self.action != "build":  # a release's build is no deploy: the release reports it
            emit_outcome(record)
        return step_failure(self.subject, self.step, exc, detail)

    def _live(self, record: Record) -> str | None:
        """Read what is live into ``record``; its text, or None when it cannot be read."""
        if self.read_live is None:
            return None
        try:
            self.read_live(record)
        except Exception as exc:
            get_run_logger().warning("Could not read what is live now: %s", cause(exc)[0])
            return None
        return live_text(record)

    def _record(self, config: Config | None, record: Record) -> str | None:
        """The record in the ledger (``latest.json`` too when the lock is free); None, or why it is not there."""
        logger = get_run_logger()
        if config is None:
            return "opcd.toml could not be read"
        # boto retries a blip; a run that has failed does not retry for a minute more to say so
        ledger = record_in_ledger.with_options(retries=0)
        held = False
        try:
            target = self.plan.target if self.plan else target_for(config, self.environment, self.region)
            bucket = config.bucket_for(self.environment, self.region)
            try:
                with environment_lock(self.environment, self.component, timeout=LOCK_WAIT, region=self.region):
                    held = True
                    ledger(target, bucket, record)
            except Exception as exc:
                if held:
                    raise
                busy = limit_name(self.environment, self.component, self.region)
                logger.info("%s is busy (%s): latest.json stays the running change's", busy, type(exc).__name__)
                ledger(target, bucket, record, latest=False)
            publish_run_artifact(record)
        except Exception as exc:
            problem = cause(exc)[0]
            logger.error("The ledger record of this failure could not be written: %s", problem)
            return problem
        return None


def _config_or_none(config_path: str | None) -> Config | None:
    try:
        return load_config(config_path)
    except OpcdError:
        return None
