"""The release: one version from commit to production.

Steps: choose the components (those asked for; else those whose source changed since the commit
live in the last environment; else all); check every environment's resources before anything
changes; build every component in parallel; then, environment by environment in order (``dev``,
``prod``): wait for an approval where ``opcd.toml`` asks for one, deploy every component there in
parallel (each one its ``deploy-*`` flow's body, with its own lock, blue/green and automatic
rollback; at most ``release.max_parallel`` at once), and stop before the next environment when
anything failed. One Slack thread (and SES
email for approvals and failures) follows it; the summary goes to the ledger, an artifact, Slack.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any
from uuid import UUID

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import INPUTS, RUN_ID, TASK_SOURCE
from prefect.client.schemas.objects import State as RunState
from prefect.context import FlowRunContext
from prefect.futures import PrefectFuture
from prefect.logging import get_run_logger
from prefect.states import Failed

from flows.common import (
    EarlySteps,
    EnvironmentChecks,
    cause,
    check_given_plan,
    check_given_registry,
    live_text,
    made_from_another_tree,
    step_failure,
)
from flows.components import bakes, deploy_body, deploy_flow
from flows.ecs_deploy import executing as ecs_build_plan
from flows.ecs_deploy import status_row
from flows.frontend_deploy import build_and_push
from flows.frontend_deploy import executing as image_build_plan
from flows.lambda_deploy import ensure_artifact
from flows.lambda_deploy import executing as lambda_build_plan
from flows.plan.build import build_release_plan, check_request
from flows.plan.models import ArtifactPlan, DeployPlan, ReleasePlan
from flows.rollback import rollback
from opcd.aws import AwsTarget, guarded_target, resolve_target, target_for
from opcd.config import AppRunnerComponent, Config, load_config, where
from opcd.errors import DeployFailed, InputError, OpcdError
from opcd.locks import release_lock
from opcd.outcomes import Outcome, ReleaseOutcome
from opcd.progress import State, about, report
from tasks.approval import Decision, duration_text, replayed_gate, wait_for_approval
from tasks.apprunner import find_service, read_service
from tasks.cloudwatch import AlarmGuard
from tasks.ecr import describe_repository
from tasks.events import APPROVAL_ANSWERED, APPROVAL_REQUESTED, emit
from tasks.git import commit_config
from tasks.images import version_of
from tasks.lambda_functions import read_live
from tasks.ledger import Action, Record, actor, read_latest, record_release, seconds_between
from tasks.loadtest import LoadResult, run_load_test
from tasks.notify import Emailer, Notifier, run_url
from tasks.results import shared_results

# Flow runs whose outcome the body already reported (the state hooks then stay quiet).
_REPORTED: set[UUID] = set()


@dataclass
class DeployResult:
    """One component's deploy to one environment, as the release saw it end."""

    component: str
    environment: str
    outcome: Outcome
    live: str  # what is live there now
    reason: str | None = None
    seconds: float | None = None
    flow_run_name: str | None = None
    # Deployed, then rolled back by the release because these components failed beside it (on_failure).
    rolled_back_because: str | None = None
    region: str | None = None  # in an environment of several regions: which one

    @property
    def label(self) -> str:
        """``backend``, or ``backend (us-west-2)`` in an environment of several regions."""
        return f"{self.component} ({self.region})" if self.region else self.component

    @property
    def failed(self) -> bool:
        """Its own deploy failed (not: it deployed and the release rolled it back with a failed sibling)."""
        return self.outcome.is_failure and self.rolled_back_because is None


def step_key(component: str, region: str | None) -> str:
    """A deploy's key among an environment's: the component, ``component@region`` with several regions."""
    return f"{component}@{region}" if region else component


def live_now(config: Config, target: AwsTarget, environment: str, component: str, region: str | None = None) -> str:
    """What runs now, read from AWS: ``v1 (Lambda version 3)`` or ``v1 (…:v1)``."""
    try:
        comp = config.component(component)
        if comp.kind == "ecs":
            row = status_row(config, target, environment, component, region)
            return f"{row['version'] or 'an image opcd did not push'} ({row['revision']}, {row['image']})"
        if isinstance(comp, AppRunnerComponent):
            service = read_service(target, find_service(target, config.service_ref(component, environment)))
            tag = describe_repository(target, comp.repository).tag_of(service.image)
            return f"{version_of(tag) or 'an image opcd did not push'} ({service.image})"
        live = read_live(target, config.function_name(component, environment, region))
    except Exception as exc:  # a summary must not fail for a read: say what is unknown
        return f"unknown ({type(exc).__name__}: {exc})"[:300]
    return f"{live.app_version or 'a version opcd did not deploy'} (Lambda version {live.lambda_version})"


# A release started from a deployment is suspended at its approval gate and, once answered, runs
# again from the top: the builds and deploys it finished come back from their persisted results
# (keyed by the run and the inputs) instead of running twice. The task's source too: a build and a
# deploy take the same inputs. Not config_path: given a git_sha, it names opcd.toml in the run's
# worktree of that commit, made again (maybe elsewhere) where the run resumes.
# Not plan either: a run given none makes it again when it resumes, and one version of one component
# is built, and deployed to one environment, once per run.
_ONCE_PER_RUN = RUN_ID + TASK_SOURCE + (INPUTS - "config_path" - "plan")


@task(name="build", task_run_name="build {component} {version}", cache_policy=_ONCE_PER_RUN, persist_result=True)
def build_component(
    component: str, version: str, git_sha: str | None, config_path: str | None, plan: DeployPlan
) -> dict[str, Any]:
    """Build the version once (or find it built from the same source) and keep it: S3 or ECR.

    ``plan``: the release plan's deploy to its first environment, carrying the build's artifact: where it goes and
    what was found there. Nothing checked again but the account. Returns ``{"text", "artifact"}``: the artifact as
    the deploys then use it (an ``ArtifactPlan``, as JSON). A failure names the step (build, push, upload).
    """
    config = load_config(config_path)
    early = EarlySteps("build", component, plan.environment, version, git_sha, config_path)
    # A build reads and writes the artifact bucket and ECR only: no alarm guards it.
    checked = EnvironmentChecks(guarded_target(config, plan.environment), AlarmGuard([]))
    made = "made once by the release, before its first environment"
    try:
        if plan.kind in ("apprunner", "ecs"):
            image_plan = (ecs_build_plan if plan.kind == "ecs" else image_build_plan)(config, plan, checked)
            identifier, digest, how = build_and_push(image_plan, version, git_sha, early, plan.artifact)
            artifact = plan.artifact.model_copy(update={"location": identifier, "build": False, "reason": made,
                                                        "digest": digest})  # fmt: skip
            report(how, f"{identifier} ({digest[:19]})", State.OK, component, "build")
            return {"text": f"{how} {identifier} ({digest[:19]})", "artifact": artifact.model_dump(mode="json")}
        lambda_plan = lambda_build_plan(config, plan, checked)
        built = ensure_artifact(lambda_plan, version, git_sha, early, plan.artifact)
    except Exception as exc:
        report(f"FAILED at {early.step}", cause(exc)[0], State.FAILED, component, "build")
        raise step_failure(component, early.step, exc) from exc
    how = "reused" if built.reused else "built"
    artifact = plan.artifact.model_copy(update={
        "build": False, "reason": made, "sha256": built.sha256_hex, "code_sha256": built.code_sha256,
        "size": built.size,
    })  # fmt: skip
    text = f"{how} s3://{lambda_plan.bucket}/{built.key} (sha256 {built.sha256_hex[:12]})"
    report(how, text.split(" ", 1)[1], State.OK, component, "build")
    return {"text": text, "artifact": artifact.model_dump(mode="json")}


@task(
    name="deploy", task_run_name="deploy {component} to {environment}", cache_policy=_ONCE_PER_RUN,
    persist_result=True,
)  # fmt: skip
def deploy_component(
    component: str,
    environment: str,
    version: str,
    git_sha: str | None,
    config_path: str | None,
    plan: DeployPlan | None = None,
    region: str | None = None,
) -> Any:
    """The component's deploy (quiet on Slack: the release reports): its deploy flow's body in this task,
    or that flow as a child run of its own when it bakes a traffic split. ``region``: the plan's (one of
    several; part of the task's inputs, so each region's deploy runs once per run).

    Returns the deploy's ledger record; when it failed, a Failed state carrying that record (so the
    task shows failed in the UI and the release still knows what is live).

    Decided from the numbers (``bench/flowcost.py``, ``bench/README.md``): a child flow run costs
    1.1-2.7 s of orchestration (its run, its tracking task run, its states: synchronous API calls;
    and Prefect joining its heartbeat thread, which sleeps in 1 s steps), a task run 12-144 ms. The
    body is the same either way — the component's lock, the ledger before and after the shift, the
    checks, the automatic rollback — and the ledger, the lock and the Slack links name the release's
    run instead. A child run pays for itself where something addresses the deploy by its own run:
    ``opcd promote|abort`` send their command to the run that bakes (one run per bake: two
    components baking in one release must not read each other's command); those minutes-long bakes
    also keep their own page and heartbeat.
    """
    config = load_config(config_path)
    if not bakes(config, component, environment):
        ctx = FlowRunContext.get()
        run = str(ctx.flow_run.id) if ctx and ctx.flow_run else None
        try:
            with about(component, environment):  # its progress lines name it, not the release's run
                return deploy_body(config, component)(
                    component, environment, version, git_sha, config_path, notify=False, planned=plan
                )
        except Exception as exc:
            return _failed(config, component, environment, version, str(exc), run, region=region)
    deploy, extra = deploy_flow(config, component)
    state = deploy(
        environment=environment, version=version, git_sha=git_sha, config_path=config_path, notify=False,
        plan=plan, return_state=True, **extra,
    )  # fmt: skip
    return _ended(state, config, component, environment, "deploy", version, region)


def _ended(
    state: RunState[Any],
    config: Config,
    component: str,
    environment: str,
    action: Action,
    version: str | None,
    region: str | None = None,
) -> Any:
    """A child run's result: its ledger record when it completed, else :func:`_failed` with its error."""
    if state.is_completed():
        return state.result()
    error = state.result(raise_on_failure=False)
    reason = str(error) if isinstance(error, BaseException) else str(state.message)
    run = str(state.state_details.flow_run_id)
    return _failed(config, component, environment, version, reason, run, action, region)


def _failed(
    config: Config,
    component: str,
    environment: str,
    version: str | None,
    reason: str,
    run: str | None,
    action: Action = "deploy",
    region: str | None = None,
) -> Any:
    """A Failed state carrying the failed run's last ledger record (written by ``run``), else an error record."""
    target = target_for(config, environment, region)  # the ledger as the environment's role reads and writes it
    bucket = config.bucket_for(environment, region)
    latest = read_latest(target, bucket, environment, component, region=region)
    if latest is None or run is None or latest.flow_run_id != run:
        latest = Record(component, environment, action, Outcome.ERROR, version, reason=reason, region=region)
    place = where(environment, region)
    what = f"{component} to {place}" if action == "deploy" else f"{action} {component} in {place}"
    return Failed(message=f"{what}: {latest.outcome}: {reason}", data=latest)


@task(
    name="load-test", task_run_name="load test {component} in {environment}", cache_policy=_ONCE_PER_RUN,
    persist_result=True,
)  # fmt: skip
def load_test_component(component: str, environment: str, version: str, config_path: str | None) -> LoadResult:
    """The component's load test there, judged against the ledger's last passing one and recorded (once per run)."""
    config = load_config(config_path)
    return run_load_test(config, target_for(config, environment), component, environment, version)


def load_test_lines(results: dict[str, LoadResult | str]) -> dict[str, str]:
    """Component → its load test in one line (a string: the test could not run, and why)."""
    return {
        c: f"{r.verdict.upper()}: {r.line()}" + ("" if r.verdict == "pass" else f"; {r.reason}")
        if isinstance(r, LoadResult) else f"ERROR: {r}"
        for c, r in results.items()
    }  # fmt: skip


@task(
    name="rollback", task_run_name="roll {component} back in {environment}", cache_policy=_ONCE_PER_RUN,
    persist_result=True,
)  # fmt: skip
def rollback_component(component: str, environment: str, config_path: str | None, region: str | None = None) -> Any:
    """The ``rollback`` flow as a child run: ``component`` back to what was live before the release's deploy
    (in ``region``, one of the environment's several).

    Returns the child's ledger record (its outcome ``deployed``: the rollback went where it was
    asked and proved healthy); when the child failed, a Failed state carrying its last record.
    """
    state = rollback(
        component=component, environment=environment, config_path=config_path, region=region, return_state=True
    )
    return _ended(state, load_config(config_path), component, environment, "rollback", None, region)


def _rolled_back_text(steps: dict[str, DeployResult]) -> str:
    """``; rolled back with it: frontend (live v1 …)``: what the release took back beside a failure."""
    undone = [s for s in steps.values() if s.rolled_back_because]
    if not undone:
        return ""
    went = "; ".join(
        f"{s.label} ({'live' if s.outcome is Outcome.ROLLED_BACK else 'ROLLBACK FAILED, live'} {s.live})"
        for s in undone
    )
    return f"; rolled back with it: {went}"


def bounded(start: Callable[[str], PrefectFuture[Any]], names: list[str], limit: int) -> dict[str, PrefectFuture[Any]]:
    """``start(name)`` for each name, at most ``limit`` of them unfinished at once (the next starts when one ends).

    When a start raises, every one already started is waited for before the error goes on: the caller holds
    the environment's lock, which must not be let go while a deploy still runs.
    """
    slots = threading.BoundedSemaphore(limit)
    futures: dict[str, PrefectFuture[Any]] = {}
    try:
        for name in names:
            slots.acquire()
            futures[name] = future = start(name)
            future.add_done_callback(lambda _: slots.release())
    except BaseException:
        wait_all(futures.values())
        raise
    return futures


def wait_all(futures: Iterable[PrefectFuture[Any]]) -> None:
    """Wait until every one of ``futures`` has ended, even when this thread is interrupted while it waits
    (Ctrl-C, a cancellation's SIGTERM, a lost lease): the caller holds the environment's locks for them,
    which must not be let go while a deploy or a rollback still runs. A second interrupt ends the wait."""
    pending = list(futures)
    try:
        for future in pending:
            future.wait()
    except BaseException:
        for future in pending:
            future.wait()
        raise


def step_of(
    config: Config,
    target: AwsTarget,
    component: str,
    environment: str,
    future: PrefectFuture[Any],
    region: str | None = None,
) -> DeployResult:
    """How one deploy ended: the child run's ledger record, or its error when it recorded none."""
    state = future.state
    record = state.result(raise_on_failure=False)
    if not isinstance(record, Record) or record.outcome is Outcome.ERROR:
        reason = str(record.reason) if isinstance(record, Record) else str(record or state.message)
        live = live_now(config, target, environment, component, region)
        return DeployResult(component, environment, Outcome.ERROR, live, reason, region=region)
    outcome: Outcome = record.outcome
    why = record.reason
    if not state.is_completed() and not outcome.is_failure:
        # The child failed after its last ledger record (e.g. still "shifting"): never a success.
        outcome, why = Outcome.ERROR, f"{record.reason or state.message} (ledger says {record.outcome})"
    return DeployResult(
        component, environment, outcome, live_text(record),
        None if outcome in (Outcome.DEPLOYED, Outcome.NOOP) else why,
        seconds_between(record.started_at, record.finished_at), record.flow_run_name, region=region,
    )  # fmt: skip


def _took(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    return f"{seconds:.0f} s" if seconds < 90 else f"{int(seconds // 60)} min {int(seconds % 60)} s"


def _step_text(step: DeployResult) -> str:
    text = {
        Outcome.DEPLOYED: f"deployed in {_took(step.seconds)}",
        Outcome.NOOP: "already live: nothing to do",
        Outcome.FAILED: "FAILED before traffic moved",
        Outcome.ROLLED_BACK: "FAILED after traffic moved: ROLLED BACK",
        Outcome.ROLLBACK_FAILED: "FAILED and the ROLLBACK FAILED: act now",
        Outcome.ERROR: "FAILED",
    }.get(step.outcome, step.outcome)
    if step.rolled_back_because:
        text = ("deployed, then ROLLED BACK" if step.outcome is Outcome.ROLLED_BACK
                else "deployed, then its ROLLBACK FAILED: act now")  # fmt: skip
    return f"{text}; live: {step.live}" + (f"\n_{step.reason[:300]}_" if step.reason else "")


def approval_description(
    version: str,
    git_sha: str | None,
    environment: str,
    components: list[str],
    live: dict[str, str],
    done: dict[str, dict[str, DeployResult]],
    decision_timeout: float,
    approvers: list[str],
) -> str:
    """The markdown the Resume form shows: what will be deployed, what is live, earlier results.

    A list, not a table: the form is narrow, and a table's last columns would be cut off there.
    """
    lines = [
        f"### Release {version} to **{environment}**",
        "",
        (f"Commit `{git_sha}`, " if git_sha else "No commit recorded; ") + f"started by {actor()}.",
        "",
    ]
    for c in components:
        lines.append(f"- **{c}** → {version}")
        lines.append(f"  - live in {environment} now: {live[c]}")
        lines += [f"  - {e}: {_step_text(done[e][c]).splitlines()[0]}" for e in done if c in done[e]]
    return "\n".join([
        *lines,
        "",
        f"Approvers: {', '.join(approvers)}. Unanswered after {duration_text(decision_timeout)}, the release"
        " ends there (timed out): nothing is deployed to " + environment + ".",
        "",
        "**Approve**: leave *Approved* on, pick your name, say why. "
        "**Reject**: switch *Approved* off, pick your name, say why: nothing is deployed to " + environment + ".",
    ])  # fmt: skip


def _facts(steps: dict[str, DeployResult]) -> dict[str, str]:
    return {name: _step_text(step) for name, step in steps.items()}


def _release_key(version: str) -> str:
    return "release-" + re.sub(r"[^a-z0-9-]+", "-", version.lower()).strip("-")


def summary_markdown(summary: dict[str, Any]) -> str:
    envs = list(summary["environments"])
    lines = [
        f"## Release {summary['version']}: {summary['outcome']}",
        "",
        f"{summary['detail']}",
        "",
        "| Component | " + " | ".join(envs) + " |",
        "|---|" + "---|" * len(envs),
    ]
    for component in summary["components"]:
        cells = []
        for env in envs:
            done = [DeployResult(**s) for s in summary["steps"].get(env, {}).values() if s["component"] == component]
            texts = [(f"{s.region}: " if s.region else "") + _step_text(s).replace("\n", " ") for s in done]
            cells.append("; ".join(texts).replace("|", "/") if done else "not deployed")
        lines.append(f"| {component} | " + " | ".join(cells) + " |")
    for decision in summary["approvals"]:
        lines.append("")
        identity = f" ({decision['verified']})" if decision.get("verified") else ""
        lines.append(f"Approval for {decision['environment']}: {Decision(**decision).describe()}{identity}")
    for env, tests in (summary.get("load_tests") or {}).items():
        lines += ["", f"Load test in {env}:", *(f"- {c}: {text}" for c, text in tests.items())]
    lines += ["", f"Took {_took(summary['seconds'])} (builds {_took(summary['build_seconds'])})."]
    return "\n".join(lines)


class Release:
    """The state of one release run: what it chose, what happened, and where it reports."""

    def __init__(
        self, config: Config, config_path: str | None, version: str, git_sha: str | None, environments: list[str]
    ) -> None:
        self.config, self.config_path, self.version, self.git_sha = config, config_path, version, git_sha
        self.environments = environments
        self.target = resolve_target(config.state_dir(), config.project.region)  # the worker's own: email
        self._targets: dict[tuple[str, str | None], AwsTarget] = {}
        self.notifier = Notifier.from_config(config, f"release {version}")
        self.emailer = Emailer.from_config(config, self.target)
        self.components: list[str] = []
        self.steps: dict[str, dict[str, DeployResult]] = {}
        self.approvals: list[Decision] = []
        self.started = time.monotonic()
        self.build_seconds = 0.0
        self.builds: dict[str, str] = {}
        self.load_tests: dict[str, dict[str, str]] = {}  # environment → component → its load test in one line
        self.plan: ReleasePlan | None = None  # built once, before anything changes
        self.artifacts: dict[str, ArtifactPlan] = {}  # what each component's build made, as its deploys use it
        # Resumed after a suspension: up to the answer at this gate, the run repeats what it did
        # before, and its messages went out then; they are not sent twice.
        self.replaying_until = replayed_gate(environments)
        self.notifier.muted = self.emailer.muted = self.replaying_until is not None

    def target_of(self, environment: str, region: str | None = None) -> AwsTarget:
        """``environment``'s target (its ``role_arn``; its ``region``, None: its first): its AWS, and the ledger
        as its deploys write it."""
        if (environment, region) not in self._targets:
            self._targets[environment, region] = target_for(self.config, environment, region)
        return self._targets[environment, region]

    def summary(self, outcome: ReleaseOutcome, detail: str) -> dict[str, Any]:
        ctx = FlowRunContext.get()
        return {
            "version": self.version, "git_sha": self.git_sha, "outcome": outcome, "detail": detail,
            "components": self.components, "environments": self.environments, "builds": self.builds,
            "steps": {e: {c: asdict(s) for c, s in steps.items()} for e, steps in self.steps.items()},
            "approvals": [asdict(d) for d in self.approvals], "actor": actor(),
            "seconds": round(time.monotonic() - self.started, 1), "build_seconds": round(self.build_seconds, 1),
            "notify_failures": self.notifier.failures + self.emailer.failures,
            "flow_run_id": str(ctx.flow_run.id) if ctx and ctx.flow_run else None,
            "flow_run_name": ctx.flow_run.name if ctx and ctx.flow_run else None, "load_tests": self.load_tests,
        }  # fmt: skip

    def finish(self, outcome: ReleaseOutcome, detail: str) -> dict[str, Any]:
        """Summary to Slack, the ledger and an artifact; email when it did not succeed."""
        summary = self.summary(outcome, detail)
        self.notifier.muted = self.emailer.muted = False  # how a run ends is always news, replayed or not
        facts = {"Took": f"{_took(summary['seconds'])} (builds {_took(self.build_seconds)})"}
        for component in self.components:
            facts[component] = "; ".join(
                f"{where(env, s.region)}: {s.outcome}, live {s.live}"
                for env in self.environments for s in self.steps.get(env, {}).values() if s.component == component
            ) or "not deployed"  # fmt: skip
        level = "fail" if outcome.is_failure else "ok"
        self.notifier.send(f"{outcome}: {detail}", level, facts)
        ctx = FlowRunContext.get()
        if ctx and ctx.flow_run and outcome.is_failure:
            _REPORTED.add(ctx.flow_run.id)  # the state hook then does not announce the failure again
        if outcome.is_failure:
            self.emailer.send(f"[opcd] release {self.version} {outcome}", summary_markdown(summary) + self._link())
        summary["notify_failures"] = self.notifier.failures + self.emailer.failures
        try:
            last = self.target_of(self.environments[-1])  # the release's record, as its last environment's role
            record_release(last, self.config.project.artifact_bucket, self.version, summary)
            create_markdown_artifact(
                key=_release_key(self.version), markdown=summary_markdown(summary),
                description=f"release {self.version}: {outcome}",
            )  # fmt: skip
        except Exception as exc:  # the outcome stands; the record is what failed
            get_run_logger().error("Could not record the release's summary: %s: %s", type(exc).__name__, exc)
        return summary

    def _link(self) -> str:
        url = run_url()
        return f"\n\nThe run in the Prefect UI: {url}\n" if url else ""

    def deploy_plan(self, component: str, environment: str, region: str | None = None) -> DeployPlan:
        """The release plan's deploy of ``component`` to ``environment`` (its ``region``), with the artifact its
        build made (another region's bucket: copied from the build's, ``copy_from``)."""
        assert self.plan is not None
        plan = self.plan.deploy(component, environment, region)
        made = self.artifacts.get(component)
        if made is None:
            return plan
        here, built = plan.artifact.location, made.copy_from or made.location
        made = made.model_copy(update={"location": here, "copy_from": built if built != here else None})
        return plan.model_copy(update={"artifact": made})

    def build_plan(self, component: str) -> DeployPlan:
        """The first environment's deploy, carrying what the build of ``component`` makes (or found made)."""
        assert self.plan is not None
        build = next(b for b in self.plan.builds if b.component == component)
        return self.plan.deploy(component, self.environments[0]).model_copy(update={"artifact": build.artifact})

    def build(self) -> None:
        logger = get_run_logger()
        start = time.monotonic()
        futures = bounded(
            lambda c: build_component.submit(c, self.version, self.git_sha, self.config_path, self.build_plan(c)),
            self.components, self.config.release.max_parallel,
        )  # fmt: skip
        errors: list[str] = []
        hints: list[str] = []
        for component, future in futures.items():
            future.wait()
            if future.state.is_completed():
                built = future.state.result()
                self.builds[component] = built["text"]
                self.artifacts[component] = ArtifactPlan.model_validate(built["artifact"])
                logger.info("%s: %s", component, self.builds[component])
            else:
                error = future.state.result(raise_on_failure=False)
                what, hint = cause(error) if isinstance(error, BaseException) else (f"{component}: {error}", None)
                errors.append(what)
                hints += [hint] if hint and hint not in hints else []
        self.build_seconds = time.monotonic() - start
        if errors:
            detail = "build failed, nothing deployed: " + "; ".join(errors)
            self.finish(ReleaseOutcome.FAILED, detail)
            raise DeployFailed(f"release {self.version}: {detail}", "; ".join(hints) or "fix it and release again")

    def approve(self, environment: str) -> None:
        settings = self.config.environment(environment).approval
        if not settings:
            return
        live = {  # an environment of several regions: what each region runs
            c: "; ".join(
                (f"{r}: " if r else "") + live_now(self.config, self.target_of(environment, r), environment, c, r)
                for r in self.config.region_keys(environment)
            )
            for c in self.components
        }
        description = approval_description(
            self.version, self.git_sha, environment, self.components, live, self.steps, settings.timeout,
            settings.approvers,
        )  # fmt: skip
        description += self._load_test_text()
        run_id = FlowRunContext.get().flow_run.id  # type: ignore[union-attr]
        how = f"Resume the run in the Prefect UI, or `opcd approve {run_id} --approver NAME --reason …`"
        command = f"Or from a terminal: opcd approve {run_id} --approver NAME --reason '…'"
        if settings.verify == "github":  # the approver is the GitHub reviewer of an approval run, checked
            how = command = (
                f"In GitHub: run the {settings.workflow} workflow of {settings.repository} with flow run {run_id};"
                f" a required reviewer of the environment {environment}-approval approves it (a name given in the"
                " UI or `opcd approve` without that run is refused)"
            )
            description += f"\n\n**Verified by GitHub**: {how}."
        self.notifier.send(
            f"approval requested for {environment}: {', '.join(self.components)} {self.version}",
            "warn",
            {"Approvers": ", ".join(settings.approvers), "Live now": "\n".join(f"{c}: {v}" for c, v in live.items()),
             "How": how, **self._load_test_facts()},
        )  # fmt: skip
        self.emailer.send(
            f"[opcd] approval needed: release {self.version} to {environment}",
            description + self._link() + f"\n{command}\n",
        )
        if self.replaying_until is None:  # a gate replayed after a suspension was announced before it
            emit(APPROVAL_REQUESTED, self.components, environment, self.version, approvers=",".join(settings.approvers))
        decision = wait_for_approval(environment, settings, description)
        if environment == self.replaying_until:  # the answer that resumed the run: news from here on
            self.notifier.muted = self.emailer.muted = False
            self.replaying_until = None
        if self.replaying_until is None:
            answer = {k: getattr(decision, k) for k in ("approved", "approver", "reason", "timed_out", "verified")}
            emit(APPROVAL_ANSWERED, self.components, environment, self.version, **answer)
        self.approvals.append(decision)
        identity = {"Identity": decision.verified} if decision.verified else None
        if decision.approved:
            self.notifier.send(f"{environment} {decision.describe()}", "ok", identity)
            return
        if decision.timed_out:  # its own outcome; like a rejection, nothing is deployed there
            detail = f"{environment}: {decision.describe()}; nothing deployed there"
            self.notifier.send(detail, "fail", identity)
            self.finish(ReleaseOutcome.TIMED_OUT, detail)
            raise DeployFailed(f"release {self.version}: {detail}")
        self.notifier.send(f"{environment} {decision.describe()}; nothing deployed there", "fail", identity)
        detail = f"{decision.describe()}; {environment} untouched"
        self.finish(ReleaseOutcome.REJECTED, detail)
        raise DeployFailed(f"release {self.version} to {environment}: {detail}")

    def waves(self, environment: str) -> list[list[str | None]]:
        """The environment's deploys in waves: its first region alone, then the rest together (one region: one
        wave, no region named)."""
        stage = next((st for st in self.plan.stages if st.environment == environment), None) if self.plan else None
        regions: list[str | None] = list(stage.regions) if stage and stage.regions else [None]
        return [regions[:1], regions[1:]] if len(regions) > 1 else [regions]

    def deploy(self, environment: str) -> None:
        logger = get_run_logger()
        steps: dict[str, DeployResult] = {}
        untouched: list[str] = []
        waves = self.waves(environment)
        # every lock of the environment's deploys, with the release's, in one request: see opcd.locks
        changes = [(component, region) for wave in waves for region in wave for component in self.components]
        with release_lock(environment, changes):
            for number, wave in enumerate(waves):
                if untouched or any(s.failed for s in steps.values()):  # a region failed: no further wave
                    untouched += [str(region) for region in wave]
                    continue
                place = f"{environment} {', '.join(map(str, wave))}" if wave != [None] else environment
                how = "alone first" if number == 0 and len(waves) > 1 else "in parallel"
                logger.info("Deploying %s %s to %s (%s)", ", ".join(self.components), self.version, place, how)
                steps.update(self.deploy_wave(environment, wave))
            self.roll_back_the_others(environment, steps)
        self.steps[environment] = steps
        failed = [s for s in steps.values() if s.failed]
        if failed:
            text = f"{environment}: {len(failed)} of {len(steps)} FAILED ({', '.join(s.label for s in failed)})"
        else:
            text = f"{environment}: {len(steps)} of {len(steps)} deployed"
        text += f"; not deployed to {', '.join(untouched)}" if untouched else ""
        self.notifier.send(text, "fail" if failed else "ok", _facts(steps))
        for step in steps.values():
            if step.outcome in (Outcome.ROLLED_BACK, Outcome.ROLLBACK_FAILED):
                rolled_back = step.outcome is Outcome.ROLLED_BACK
                self.notifier.send(
                    f"{step.component} in {where(environment, step.region)} was"
                    f" {'ROLLED BACK' if rolled_back else 'NOT rolled back (rollback failed)'}: live now {step.live}",
                    "warn" if rolled_back else "fail",
                    {"Why": (step.reason or "-")[:500]},
                )
        if failed:
            later = [*untouched, *self.environments[self.environments.index(environment) + 1 :]]
            ended = "; ".join(f"{s.label}: {s.outcome}, live {s.live}" for s in failed)
            detail = f"{environment} failed ({ended})" + _rolled_back_text(steps)
            detail += f"; {', '.join(later)} untouched" if later else ""
            self.finish(ReleaseOutcome.FAILED, detail)
            raise DeployFailed(f"release {self.version}: {detail}")

    def deploy_wave(self, environment: str, wave: list[str | None]) -> dict[str, DeployResult]:
        """Every component's deploy to each region of ``wave`` (None: the environment's one), in parallel
        (``release.max_parallel`` at once; the next starts as one ends); how each ended, by :func:`step_key`."""
        slots = {step_key(c, region): (c, region) for region in wave for c in self.components}

        def start(key: str) -> PrefectFuture[Any]:
            component, region = slots[key]
            plan = self.deploy_plan(component, environment, region)
            return deploy_component.submit(
                component, environment, self.version, self.git_sha, self.config_path, plan, region
            )

        futures = bounded(start, list(slots), self.config.release.max_parallel)
        wait_all(futures.values())  # every deploy ends before any result is read (or the locks released)
        steps = {}
        for key, future in futures.items():
            component, region = slots[key]
            target = self.target_of(environment, region)
            steps[key] = step_of(self.config, target, component, environment, future, region)
        return steps

    def load_test(self, environment: str) -> None:
        """After the first environment's deploys: each component's ``load_test``, one after the other (so
        they do not slow each other down); any failing one ends the release before the next approval."""
        stage = next((st for st in self.plan.stages if st.environment == environment), None) if self.plan else None
        tested = list(stage.load_tests) if stage else []  # the plan's: what the dry run showed is what runs
        if not tested:
            return
        start = time.monotonic()
        results: dict[str, LoadResult | str] = {}
        for component in tested:
            future = load_test_component.submit(component, environment, self.version, self.config_path)
            future.wait()
            if future.state.is_completed():
                results[component] = future.state.result()
            else:
                error = future.state.result(raise_on_failure=False)
                results[component] = cause(error)[0] if isinstance(error, BaseException) else str(error)
        self.load_tests[environment] = lines = load_test_lines(results)
        failed = [c for c, r in results.items() if not (isinstance(r, LoadResult) and r.verdict == "pass")]
        took = f"{time.monotonic() - start:.0f} s"
        text = f"{environment}: load test {'FAILED' if failed else 'passed'} ({', '.join(failed or tested)}) in {took}"
        self.notifier.send(text, "fail" if failed else "ok", lines)
        if failed:
            later = self.environments[self.environments.index(environment) + 1 :]
            detail = f"{environment} load test failed ({'; '.join(f'{c}: {lines[c]}' for c in failed)})" + (
                f"; {', '.join(later)} untouched" if later else ""
            )
            self.finish(ReleaseOutcome.FAILED, detail)
            raise DeployFailed(
                f"release {self.version}: {detail}",
                f"{environment} keeps {self.version} (`opcd rollback COMPONENT --env {environment}` goes back);"
                " fix the regression and release again",
            )

    def _load_test_text(self) -> str:
        """The load tests' numbers for the approval form (markdown), or nothing."""
        return "".join(
            f"\n\nLoad test in {env}:\n" + "\n".join(f"- **{c}**: {text}" for c, text in tests.items())
            for env, tests in self.load_tests.items()
        )

    def _load_test_facts(self) -> dict[str, str]:
        return {
            f"Load test ({env})": "\n".join(f"{c}: {text}" for c, text in tests.items())[:1900]
            for env, tests in self.load_tests.items()
        }

    def roll_back_the_others(self, environment: str, steps: dict[str, DeployResult]) -> None:
        """An environment is never left half-released: when a deploy failed there, every other component
        this release changed there (outcome ``deployed``) goes back to what was live before it, through
        the ``rollback`` flow (health-checked, recorded in the ledger), in parallel. ``release.on_failure
        = "keep"`` leaves the other components on the new version, never a failed component's other regions.
        ``steps`` then says how each ended.
        """
        for step in steps.values():
            if step.outcome is Outcome.ERROR:  # a run that recorded no outcome of its own: shown here
                report("FAILED", step.reason or "", State.FAILED, step.component, environment)
        failed = [s.label for s in steps.values() if s.failed]
        changed = [key for key, s in steps.items() if s.outcome is Outcome.DEPLOYED]
        on_failure = self.plan.on_failure if self.plan else self.config.release.on_failure
        if on_failure != "rollback-all":  # "keep" keeps the other components; a failed one's other regions go back
            failing = {s.component for s in steps.values() if s.failed}
            changed = [key for key in changed if steps[key].component in failing]
        if not failed or not changed:
            return
        because = ", ".join(failed)
        get_run_logger().warning(
            "%s failed in %s: rolling back %s too (release.on_failure = rollback-all)",
            because, environment, ", ".join(steps[key].label for key in changed),
        )  # fmt: skip
        futures = {}
        for key in changed:  # every component and region the release changed there, in parallel
            step = steps[key]
            report("roll back", f"{because} failed beside it (release.on_failure = rollback-all)", State.WARN,
                   step.component, environment)  # fmt: skip
            futures[key] = rollback_component.submit(step.component, environment, self.config_path, step.region)
        wait_all(futures.values())
        for key, future in futures.items():
            step = steps[key]
            target = self.target_of(environment, step.region)
            back = step_of(self.config, target, step.component, environment, future, step.region)
            went_back = back.outcome in (Outcome.DEPLOYED, Outcome.NOOP)
            why = f"rolled back by the release: {because} failed in {environment} (release.on_failure = rollback-all)"
            steps[key] = DeployResult(
                step.component, environment, Outcome.ROLLED_BACK if went_back else Outcome.ROLLBACK_FAILED, back.live,
                why if went_back else f"{why}; the rollback FAILED: {back.reason}", step.seconds,
                back.flow_run_name or step.flow_run_name, rolled_back_because=because, region=step.region,
            )  # fmt: skip


def _forget(flow: Any, flow_run: Any, state: Any) -> None:
    _REPORTED.discard(flow_run.id)


def _notify_state(flow: Any, flow_run: Any, state: Any) -> None:
    """State hook: say so on Slack when a release ends without the body reporting it (crash, cancel)."""
    if flow_run.id in _REPORTED:
        _REPORTED.discard(flow_run.id)
        return
    params = flow_run.parameters or {}
    try:
        config = load_config(params.get("config_path"))
    except OpcdError:
        return
    notifier = Notifier.from_config(config, f"release {params.get('version')}")
    message = (state.message or state.name)[:300]
    notifier.send(f"run {flow_run.name} ended {state.name}: {message}. What is live now: `opcd status`", "fail")


@flow(
    name="release",
    flow_run_name="release {version}",
    log_prints=True,
    on_failure=[_notify_state],
    on_crashed=[_notify_state],
    on_cancellation=[_notify_state],
    on_completion=[_forget],
    persist_result=True,
)
def release(
    version: str,
    git_sha: str | None = None,
    components: list[str] | None = None,
    environments: list[str] | None = None,
    config_path: str | None = None,
    plan: ReleasePlan | None = None,
) -> dict[str, Any]:
    """Release a version: build in parallel, deploy to each environment in parallel, approval where asked.

    Args:
        version: the version to release (v2, 1.4.0, a commit sha).
        git_sha: the commit to build (fetched into a worktree of its own, whatever the worker's checkout
            holds); also picks the components that changed.
        components: the components to release (default: those changed since prod's live commit, or all).
        environments: where to (default: all); always in opcd.toml's order (dev before prod). Leaving
            out an earlier one promotes the version it runs, which must then be live there.
        config_path: opcd.toml to use.
        plan: the release's plan (``opcd release`` makes it; ``--dry-run --json`` shows it), for this version;
            without one the run makes it first, as ``opcd release`` does. Each build and deploy gets its part.
    """
    with commit_config(config_path, git_sha) as (config_path, git_sha):  # given a commit: its tree, fetched
        with shared_results(config_path):  # on `opcd setup`'s server: any worker resumes it (tasks/results.py)
            return _release(version, git_sha, components, environments, config_path, plan)


def checked_release_plan(
    config: Config, plan: ReleasePlan, components: list[str] | None, environments: list[str] | None
) -> ReleasePlan:
    """A release plan given as the run's parameter, checked as the run would have made it: the components and
    environments the parameters name, the promotion rule (``check_request``: a version skipping an earlier
    environment must be live there), every deploy against opcd.toml (``check_given_plan``). Made again in the
    run's tree when it was made from another one (``opcd release --git-sha`` plans in the local checkout)."""
    envs = [stage.environment for stage in plan.stages]
    wrong = []
    if components and list(plan.components) != list(dict.fromkeys(components)):
        wrong.append(f"components {', '.join(plan.components)}, not {', '.join(components)}")
    if environments and envs != config.ordered_environments(environments):
        wrong.append(f"environments {', '.join(envs)}, not {', '.join(environments)}")
    if wrong:
        raise InputError(
            f"the plan given does not match the run's parameters: {'; '.join(wrong)}",
            "pass the plan `opcd release` makes, or none (the run then makes it)",
        )
    for stage in plan.stages:  # every region of the environment, in opcd.toml's order (the first is the canary)
        keys = config.region_keys(stage.environment)  # [None]: one region
        regions = tuple(k for k in keys if k)
        expected = sorted(((c, r) for c in plan.components for r in keys), key=str)
        if stage.regions != regions or sorted(((d.component, d.region) for d in stage.deploys), key=str) != expected:
            wrong.append(f"{stage.environment}'s deploys are not one per component and region of {', '.join(regions)}")
    if wrong:
        raise InputError(
            f"the plan given does not match opcd.toml: {'; '.join(wrong)}",
            "pass the plan `opcd release` makes, or none (the run then makes it)",
        )
    if plan.components:
        check_request(config, plan.version, plan.git_sha, list(plan.components), envs)
    deploys = [deploy for stage in plan.stages for deploy in stage.deploys]
    for deploy in deploys:
        check_given_plan(config, deploy, None)
    for build in plan.builds:  # where each build pushes its image: the registry ECR reports
        check_given_registry(
            config, plan.deploy(build.component, envs[0]).model_copy(update={"artifact": build.artifact})
        )
    if any(made_from_another_tree(config, deploy) for deploy in deploys):
        get_run_logger().warning("The plan given was made from another source tree than this run's: planned again")
        return build_release_plan(
            config, plan.version, plan.git_sha, list(plan.components) or None, envs or None, plan.on_failure
        )
    return plan


def _release(
    version: str,
    git_sha: str | None,
    components: list[str] | None,
    environments: list[str] | None,
    config_path: str | None,
    plan: ReleasePlan | None = None,
) -> dict[str, Any]:
    logger = get_run_logger()
    config = load_config(config_path)
    if plan is None:  # every check before anything changes: components, environments, each deploy's resources
        plan = build_release_plan(config, version, git_sha, components, environments, config.release.on_failure)
    elif (plan.version, plan.git_sha) != (version, git_sha):
        raise InputError(
            f"the plan given releases {plan.version} ({plan.git_sha or 'no commit'}), not {version}"
            f" ({git_sha or 'no commit'})", "pass the plan of this release, or none (the run then makes it)",
        )  # fmt: skip
    else:
        plan = checked_release_plan(config, plan, components, environments)
    envs = [stage.environment for stage in plan.stages] or config.ordered_environments(environments)
    run = Release(config, config_path, version, git_sha, envs)
    run.plan, run.components, why = plan, list(plan.components), plan.why
    logger.info("Components: %s (%s)", ", ".join(run.components) or "none", why)
    if not run.components:
        return run.finish(ReleaseOutcome.RELEASED, f"nothing to release: {why}")
    run.notifier.send(
        f"started by {actor()}: {', '.join(run.components)} → {' → '.join(envs)}", "info",
        {"Commit": git_sha or "-", "Why these": why},
    )  # fmt: skip
    run.build()
    for environment in envs:
        run.approve(environment)
        run.deploy(environment)
        run.load_test(environment)
    return run.finish(ReleaseOutcome.RELEASED, f"{', '.join(run.components)} {version} live in {', '.join(envs)}")
