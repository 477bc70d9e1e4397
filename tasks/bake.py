"""Gradual traffic shifting: split ``live`` between two versions and bake under guards.

Each step of a canary or linear strategy puts ``percent`` of ``live``'s traffic on the new version
(``RoutingConfig.AdditionalVersionWeights``, the old version stays the alias's primary), reads the
alias back to check the weights, then bakes: every ``poll_interval`` it checks the guards (the
environment's alarms, one request to the health URL, optionally the smoke checks on the new
version) and the run's bake command (``opcd promote`` / ``opcd abort``). A failing guard or an
abort raises DeployFailed from the bake task; the transaction then runs the rollback hooks of the
split tasks that completed before it, which move all traffic back to the primary version.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import httpx
from prefect import task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect.input.actions import read_flow_run_input
from prefect.logging import get_run_logger
from prefect.transactions import Transaction, get_transaction

from opcd.aws import AwsTarget
from opcd.config import CanaryAnalysis, HealthCheck, SmokeCheck
from opcd.errors import DeployFailed
from opcd.outcomes import BakeEnd
from opcd.progress import report
from opcd.traffic import Step, Strategy, human_duration
from tasks.analysis import Analysis, analyse
from tasks.cloudwatch import AlarmGuard
from tasks.events import BAKE_STEP, emit
from tasks.health import probe
from tasks.lambda_functions import ALIAS, move_alias, read_weights, run_smoke_checks
from tasks.ledger import now
from tasks.notify import Notifier

COMMAND_KEY = "opcd-bake-command"
ACTIONS = ("promote", "abort")


@dataclass
class Guards:
    """What is checked on every poll of a bake."""

    alarms: AlarmGuard
    health_url: str | None = None  # the URL requested (the sandbox's gateway for a public URL)
    health_public: str | None = None
    health: HealthCheck = field(default_factory=HealthCheck)
    smoke: list[SmokeCheck] = field(default_factory=list)
    analysis: CanaryAnalysis | None = None  # the new version against the old one on CloudWatch's metrics


@dataclass
class Tick:
    at: str
    percent: int
    guards: dict[str, str]
    ok: bool


@dataclass
class BakeLog:
    """What a bake did, step by step; kept in the ledger record and the run's artifact."""

    strategy: str
    new_version: str
    primary: str
    steps: list[dict[str, Any]] = field(default_factory=list)
    ticks: list[Tick] = field(default_factory=list)
    ended: BakeEnd = BakeEnd.RUNNING
    detail: str | None = None
    analysis: dict[str, Any] | None = None  # the last canary analysis: verdict, reason, comparison table

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def set_split(target: AwsTarget, function: str, primary: str, new_version: str, percent: int) -> dict[str, float]:
    """``percent`` of ``live`` on ``new_version``, the rest on ``primary``; checked by reading back."""
    weight = round(percent / 100, 4)
    if not 0 < weight < 1:  # AWS refuses these; moto would not: check here
        raise ValueError(f"a split weight must be between 0 and 1 (exclusive), got {weight}")
    target.client("lambda").update_alias(
        FunctionName=function,
        Name=ALIAS,
        FunctionVersion=primary,
        RoutingConfig={"AdditionalVersionWeights": {new_version: weight}},
    )
    version, weights = read_weights(target, function)
    if version != primary or weights != {new_version: weight}:
        raise DeployFailed(
            f"{function}:{ALIAS} reads back as version {version} with weights {weights},"
            f" expected {primary} with {{{new_version}: {weight}}}"
        )
    return weights


def read_command(flow_run_id: UUID | None) -> dict[str, Any] | None:
    """The ``promote`` or ``abort`` sent to this run, if any."""
    if flow_run_id is None:
        return None
    try:
        value = read_flow_run_input(COMMAND_KEY, flow_run_id=flow_run_id)
    except Exception as exc:  # the Prefect API hiccuped: the guards still run, the next poll reads again
        get_run_logger().warning("Could not read the bake command this poll (%s)", type(exc).__name__)
        return None
    if isinstance(value, dict) and value.get("action") in ACTIONS:
        return value
    return None


def check_guards(target: AwsTarget, function: str, new_version: str, guards: Guards) -> tuple[dict[str, str], str]:
    """One poll of every guard: ``({guard: state}, failure reason or "")``."""
    states: dict[str, str] = {}
    failures: list[str] = []
    if guards.alarms.names:
        firing = guards.alarms.firing(target)
        if firing:
            states["alarms"] = "ALARM: " + ", ".join(firing)
            failures.append("alarm firing: " + "; ".join(f"{n} ({r})" if r else n for n, r in firing.items()))
        else:
            states["alarms"] = guards.alarms.summary()
    if guards.health_url:
        with httpx.Client(follow_redirects=True, headers={"user-agent": "opcd-bake"}) as client:
            result = probe(client, guards.health_url, guards.health.timeout)
        states["health"] = ("ok, " if result.ok else "FAILED, ") + result.detail
        if not result.ok:
            failures.append(f"health {guards.health_public}: {result.detail}")
    if guards.smoke:
        try:
            run_smoke_checks(target, function, new_version, guards.smoke)
            states["smoke"] = "ok"
        except DeployFailed as exc:
            states["smoke"] = "FAILED"
            failures.append(f"smoke on version {new_version}: {exc}")
    return states, "; ".join(failures)


def _left(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


@dataclass
class Bake:
    """One bake of ``new_version`` against ``primary`` on ``function``'s ``live`` alias."""

    target: AwsTarget
    function: str
    primary: str
    new_version: str
    strategy: Strategy
    guards: Guards
    poll_interval: float
    flow_run_id: UUID | None = None
    artifact_key: str | None = None
    notifier: Notifier | None = None
    subject: tuple[str, str, str | None] | None = None  # component, environment, version: its events'
    sleep: Callable[[float], None] = time.sleep
    started: datetime | None = None  # when traffic first reached the new version: the analysis reads from there
    log: BakeLog = field(init=False)
    _progress: UUID | None = field(default=None, init=False)
    _elapsed: float = field(default=0.0, init=False)
    _verdict: str | None = field(default=None, init=False)
    _table: str = field(default="", init=False)

    def __post_init__(self) -> None:
        self.log = BakeLog(self.strategy.name, self.new_version, self.primary)

    def run(self) -> BakeEnd:
        """Every step of the strategy; returns how it ended (``completed`` or ``promoted``)."""
        steps = self.strategy.steps()
        for number, step in enumerate(steps, 1):
            split_traffic(self, step, number, len(steps))
            outcome = bake_step(self, step, number, len(steps))
            if outcome is BakeEnd.PROMOTED:
                self.log.ended = BakeEnd.PROMOTED
                return BakeEnd.PROMOTED
        self.log.ended = BakeEnd.COMPLETED
        return BakeEnd.COMPLETED

    def _report(self, step: Step, number: int, total: int, remaining: float, states: dict[str, str]) -> None:
        guard_text = "; ".join(f"{k} {v}" for k, v in states.items()) or "no guards configured"
        report(
            f"bake {number}/{total}",
            f"{step.percent}% on version {self.new_version}, {_left(remaining)} left; {guard_text}",
        )
        get_run_logger().info(
            "Bake step %d/%d: %d%% of %s:%s on version %s (primary %s), %s left in step; %s",
            number, total, step.percent, self.function, ALIAS, self.new_version, self.primary,
            _left(remaining), guard_text,
        )  # fmt: skip
        if self.artifact_key:
            done = min(100.0, 100.0 * self._elapsed / max(self.strategy.total_bake, 0.001))
            description = f"{self.strategy.describe()} — step {number}/{total} at {step.percent}%: {guard_text}"
            description += f"\n\n{self._table}" if self._table else ""
            try:
                if self._progress is None:
                    created = create_progress_artifact(done, key=self.artifact_key, description=description)
                    self._progress = created if isinstance(created, UUID) else None
                else:
                    update_progress_artifact(self._progress, done, description=description)
            except Exception as exc:  # progress display must never stop or fail a bake
                get_run_logger().debug("progress artifact not updated: %s", exc)

    def guard_names(self) -> list[str]:
        names = ["alarms"] * bool(self.guards.alarms.names) + ["health"] * bool(self.guards.health_url)
        return names + ["smoke"] * bool(self.guards.smoke) + ["canary analysis"] * bool(self.guards.analysis)

    def split(self, step: Step, number: int, total: int) -> dict[str, float]:
        """Put ``step.percent`` of ``live`` on the new version; say so in the log and Slack."""
        report(f"shift {step.percent}%", f"{self.function}:{ALIAS}: {step.percent}% on version {self.new_version}")
        weights = set_split(self.target, self.function, self.primary, self.new_version, step.percent)
        self.started = self.started or datetime.now(UTC)
        self.log.steps.append({"percent": step.percent, "at": now(), "observed": weights})
        get_run_logger().info(
            "Traffic: %s:%s now %d%% on version %s, %d%% on %s (read back: %s)",
            self.function, ALIAS, step.percent, self.new_version, 100 - step.percent, self.primary, weights,
        )  # fmt: skip
        if self.subject:
            emit(BAKE_STEP, *self.subject, step=number, steps=total, percent=step.percent, on=self.new_version)
        if self.notifier:
            watched = ", ".join(self.guard_names()) or "no guards"
            self.notifier.send(
                f"bake step {number}/{total}: {step.percent}% of live on Lambda version {self.new_version},"
                f" {100 - step.percent}% on {self.primary}; baking {human_duration(step.bake)} under {watched}"
            )
        return weights

    def bake(self, step: Step, number: int, total: int) -> str:
        """Hold ``step`` for its bake time under the guards; ``baked`` or ``promoted``, else raise."""
        deadline = time.monotonic() + step.bake
        while True:
            started = time.monotonic()
            command = read_command(self.flow_run_id)
            if command:
                by, reason = command.get("by", "someone"), command.get("reason") or "no reason given"
                self.log.detail = f"{command['action']} by {by}: {reason}"
                if command["action"] == "abort":
                    self.log.ended = BakeEnd.ABORTED
                    raise DeployFailed(f"bake aborted by {by} at {step.percent}% ({reason})")
                get_run_logger().info("Bake promoted by %s at %d%% (%s): moving all traffic", by, step.percent, reason)
                return BakeEnd.PROMOTED
            states, failure = check_guards(self.target, self.function, self.new_version, self.guards)
            remaining = deadline - time.monotonic()
            if self.guards.analysis is not None:
                states["analysis"], judged = self.analyse(final=remaining <= 0 and number == total)
                failure = "; ".join(f for f in (failure, judged) if f)
            self.log.ticks.append(Tick(now(), step.percent, states, not failure))
            if failure:
                self.log.ended, self.log.detail = BakeEnd.GUARD_FAILED, failure
                raise DeployFailed(f"bake guard failed at {step.percent}%: {failure}")
            self._report(step, number, total, remaining, states)
            if remaining <= 0:
                return "baked"
            pause = min(self.poll_interval, remaining)
            self.sleep(pause)
            self._elapsed += time.monotonic() - started

    def analyse(self, final: bool) -> tuple[str, str]:
        """One canary analysis: ``(state, failure or "")``. A failing verdict fails the bake; an inconclusive
        one at the end follows ``on_inconclusive``; CloudWatch unreadable this poll is inconclusive."""
        settings = self.guards.analysis
        assert settings is not None
        self.started = self.started or datetime.now(UTC)
        try:
            result = analyse(self.target, self.function, self.primary, self.new_version, settings, self.started)
        except Exception as exc:  # a CloudWatch hiccup judges nothing; the next poll reads again
            get_run_logger().warning("Canary analysis could not read CloudWatch this poll: %s", exc)
            if final and settings.on_inconclusive == "fail":
                return "unreadable", f"canary analysis: CloudWatch unreadable at the end of the bake ({exc})"
            return "unreadable", ""
        after = (datetime.now(UTC) - self.started).total_seconds()
        self.log.analysis = {**result.as_dict(), "after_seconds": round(after, 1), "at": now()}
        self._table = result.markdown() if result.results else ""
        if result.verdict != self._verdict:
            self.said(result, after)
        if result.verdict == "fail":
            return result.summary(), f"canary analysis failed {after:.0f}s into the bake: {result.reason}"
        if final and result.verdict == "inconclusive":
            self.log.analysis["on_inconclusive"] = settings.on_inconclusive
            if settings.on_inconclusive == "fail":
                return (
                    result.summary(),
                    f"canary analysis inconclusive at the end of the bake ({result.reason})"
                    " and analysis.on_inconclusive is fail",
                )
            get_run_logger().warning(
                "Canary analysis inconclusive at the end of the bake (%s): passing, as analysis.on_inconclusive says",
                result.reason,
            )
        return result.summary(), ""

    def said(self, result: Analysis, after: float) -> None:
        """A new verdict: its table in the run log and, once judged, in Slack."""
        self._verdict = result.verdict
        text = f"canary analysis {after:.0f}s into the bake: {result.summary()}"
        table = f"\n{result.table()}" if result.results else ""  # no table before anything is judged
        level = logging.WARNING if result.verdict == "fail" else logging.INFO
        get_run_logger().log(level, "%s%s", text[0].upper() + text[1:], table)
        if self.notifier and result.results:
            self.notifier.send(f"{text}\n```{result.table()}```", "fail" if result.verdict == "fail" else "info")


@task(name="split-traffic", task_run_name="split {step.percent}%", cache_policy=NO_CACHE)
def split_traffic(bake: Bake, step: Step, number: int, total: int) -> dict[str, float]:
    """Move ``live`` to the step's split. Rolled back (all traffic to the primary) when the transaction fails."""
    txn = get_transaction()
    if txn is not None:
        txn.set("target", bake.target)
        txn.set("function", bake.function)
        txn.set("previous", bake.primary)
    return bake.split(step, number, total)


@task(name="bake-step", task_run_name="bake {number}/{total}: {step.percent}%", cache_policy=NO_CACHE)
def bake_step(bake: Bake, step: Step, number: int, total: int) -> str:
    """Hold the split under the guards; raise DeployFailed when one fails or the bake is aborted."""
    return bake.bake(step, number, total)


@split_traffic.on_rollback
def _restore_primary(txn: Transaction) -> None:
    """All of ``live`` back on the primary version (no weights). Idempotent; records its own failure."""
    target, function, primary = txn.get("target"), txn.get("function"), txn.get("previous")
    logger = get_run_logger()
    try:
        version, weights = read_weights(target, function)
        if version == primary and not weights:
            return  # an earlier step's hook already did it
        logger.warning("Rolling back: %s:%s → all traffic on version %s (was %s %s)", function, ALIAS, primary,
                       version, weights)  # fmt: skip
        move_alias(target, function, primary)
    except Exception as exc:  # a hook's exception is swallowed by Prefect: say it loudly
        logger.error("Rollback of %s:%s to version %s FAILED: %s", function, ALIAS, primary, exc)
        txn.set("rollback_error", str(exc))
