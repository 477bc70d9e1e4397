"""The approval gate: a flow run pauses until a person on the environment's list approves or rejects.

In the flow, :func:`wait_for_approval` pauses the run with ``pause_flow_run(wait_for_input=…)``;
a run started from a deployment is suspended instead (``suspend_flow_run``): its process ends and
the worker is free, and on resume the run starts again from the top, reusing the persisted results
of the tasks it finished (the release's builds and deploys) and finding its answer under the same
pause key.
The form is an ``Approval`` run input whose ``approver`` is a ``Literal`` of the environment's
approvers: the Prefect server validates a resume against the form's JSON schema, so it refuses
anyone else (and the UI shows a dropdown). A rejection needs a reason; that rule lives in Python,
which the server does not run, so an answer breaking it is refused here and the run pauses again.
No answer before ``approval.timeout`` is its own outcome, "approval timed out after 24 h", which
counts as not approved (a suspended run is failed by the server instead: "The flow was paused
and never resumed").

Outside the run, :func:`pending` lists the runs waiting for an approval and :func:`answer` resumes
one through the API, exactly as the UI's Resume form does (``opcd pending``, ``opcd approve``,
``opcd reject``).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from typing import Any, Literal, cast
from uuid import UUID

from prefect import pause_flow_run, suspend_flow_run
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.context import FlowRunContext
from prefect.exceptions import FlowPauseTimeout, ObjectNotFound
from prefect.input import RunInput
from prefect.logging import get_run_logger
from prefect.states import Running
from pydantic import Field, ValidationError, create_model, model_validator

from opcd.config import Approval as ApprovalSettings
from opcd.errors import InputError

KEY_PREFIX = "approval"  # pause keys: approval-{environment}-{attempt}


class _ApprovalRules(RunInput):
    """The checks the Prefect server cannot make (its JSON schema has no cross-field rules)."""

    @model_validator(mode="after")
    def _rejection_has_reason(self) -> _ApprovalRules:
        if not getattr(self, "approved", True) and not str(getattr(self, "reason", "")).strip():
            raise ValueError("a rejection needs a reason: say why in the reason field")
        return self


def approval_form(approvers: list[str]) -> type[RunInput]:
    """The ``Approval`` run input for these approvers: approved, approver (one of them), reason."""
    names = cast(Any, Literal[tuple(approvers)])  # a Literal built at run time from opcd.toml
    form: type[RunInput] = create_model(
        "Approval",
        __base__=_ApprovalRules,
        approved=(bool, Field(True, title="Approved", description="On: deploy. Off: reject (give a reason).")),
        approver=(names, Field(title="Approver", description=f"Who answers: one of {', '.join(approvers)}.")),
        reason=(str, Field("", title="Reason", description="Why: recorded in the ledger and sent to Slack.")),
    )
    return form


@dataclass
class Decision:
    """How an approval gate ended."""

    environment: str
    approved: bool
    approver: str | None = None
    reason: str = ""
    timed_out: bool = False
    waited_seconds: float = 0.0
    refused: list[str] = field(default_factory=list)  # answers refused before this one

    def describe(self) -> str:
        if self.approver is None and not self.timed_out:
            return f"approval for {self.environment} not given: {self.reason}"
        if self.timed_out:
            return f"approval timed out after {duration_text(self.waited_seconds)}"
        verb = "approved" if self.approved else "rejected"
        return f"{verb} by {self.approver}" + (f": {self.reason}" if self.reason else "")


def _leave_paused_state(reason: str) -> bool:
    """After a pause timed out the run is still Paused on the server: mark it Running again.

    False when someone cancelled the run meanwhile (it stays cancelled).
    """
    ctx = FlowRunContext.get()
    if not (ctx and ctx.flow_run):
        return True
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(ctx.flow_run.id).state
        if state is None or not state.is_paused():  # cancelled meanwhile, or ended by the server
            return False
        client.set_flow_run_state(ctx.flow_run.id, Running(message=reason), force=True)
    return True


def started_from_deployment() -> bool:
    """True in a run a worker started from a deployment: such a run can be suspended."""
    ctx = FlowRunContext.get()
    return bool(ctx and ctx.flow_run and ctx.flow_run.deployment_id)


def used_pause_keys() -> set[str]:
    """The pause keys this run used before (a resumed run replays up to the last of them)."""
    ctx = FlowRunContext.get()
    return set(ctx.flow_run.empirical_policy.pause_keys or ()) if ctx and ctx.flow_run else set()


def replayed_gate(environments: list[str]) -> str | None:
    """The last environment whose gate this run was suspended at before: everything up to its answer
    is a replay of what the run did before it was suspended (its messages were sent then)."""
    used = used_pause_keys()
    gates = [e for e in environments if any(k.startswith(f"{KEY_PREFIX}-{e}-") for k in used)]
    return gates[-1] if gates else None


def wait_for_approval(environment: str, settings: ApprovalSettings, description: str) -> Decision:
    """Pause (or suspend, in a deployment's run) the current flow run until an approver answers."""
    logger = get_run_logger()
    form = approval_form(settings.approvers)
    started = time.monotonic()
    poll = max(1, round(settings.poll_interval))
    decision = Decision(environment, approved=False)
    attempt = 0
    while True:
        remaining = settings.timeout - (time.monotonic() - started)
        if remaining <= 0:
            break
        attempt += 1
        shown = description
        if decision.refused:
            shown = f"> **The last answer was refused:** {decision.refused[-1]}\n\n{description}"
        logger.info(
            "Waiting up to %s for the approval of %s by %s", duration_text(remaining), environment,
            " or ".join(settings.approvers),
        )  # fmt: skip
        key, timeout = f"{KEY_PREFIX}-{environment}-{attempt}", max(1, math.ceil(remaining))
        try:
            if started_from_deployment():  # the process ends here until someone answers
                answer: Any = suspend_flow_run(
                    wait_for_input=form.with_initial_data(description=shown, approved=True), timeout=timeout, key=key
                )
            else:
                answer = pause_flow_run(
                    wait_for_input=form.with_initial_data(description=shown, approved=True),
                    timeout=timeout, poll_interval=poll, key=key,
                )  # fmt: skip
        except FlowPauseTimeout:
            break
        except ValidationError as exc:
            problem = "; ".join(str(e.get("msg", e)).removeprefix("Value error, ") for e in exc.errors())
            decision.refused.append(problem)
            logger.warning("Approval answer refused (%s): waiting again", problem)
            continue
        decision.approved, decision.approver = bool(answer.approved), str(answer.approver)
        decision.reason = str(answer.reason or "").strip()
        decision.waited_seconds = time.monotonic() - started
        logger.info("%s %s", environment, decision.describe())
        return decision
    decision.timed_out, decision.waited_seconds = True, time.monotonic() - started
    if not _leave_paused_state(f"{environment}: {decision.describe()}"):
        decision.timed_out, decision.reason = False, "the run was cancelled (or ended) while it waited"
    logger.warning("%s: %s", environment, decision.describe())
    return decision


def duration_text(seconds: float) -> str:
    """``24 h``, ``1.5 h``, ``2.5 min``, ``45 s``."""
    if seconds >= 3600:
        return f"{seconds / 3600:.1f}".removesuffix(".0") + " h"
    return f"{seconds / 60:.1f}".removesuffix(".0") + " min" if seconds >= 120 else f"{seconds:.0f} s"


# --- outside the run: the CLI ---------------------------------------------------------------


@dataclass(frozen=True)
class Waiting:
    """A flow run paused at an approval gate."""

    run: FlowRun
    keyset: dict[str, str]
    environment: str
    approvers: list[str]
    description: str

    @property
    def ui_url(self) -> str | None:
        from prefect.settings import PREFECT_UI_URL

        ui = PREFECT_UI_URL.value()
        return f"{ui.rstrip('/')}/runs/flow-run/{self.run.id}" if ui else None

    @property
    def timeout_at(self) -> str:
        details = self.run.state.state_details if self.run.state else None
        deadline = details.pause_timeout if details else None
        return deadline.strftime("%Y-%m-%d %H:%M:%S UTC") if deadline else "-"


def _waiting(client: Any, run: FlowRun) -> Waiting | None:
    details = run.state.state_details if run.state else None
    keyset = details.run_input_keyset if details else None
    key = (details.pause_key or "") if details else ""
    if not (run.state and run.state.is_paused() and keyset and key.startswith(f"{KEY_PREFIX}-")):
        return None
    environment = key.removeprefix(f"{KEY_PREFIX}-").rsplit("-", 1)[0]
    try:
        schema = json.loads(client.read_flow_run_input(run.id, keyset["schema"]))
    except ObjectNotFound:  # the run paused a moment ago and has not saved its form yet
        return None
    field = schema.get("properties", {}).get("approver", {})
    approvers = list(field.get("enum") or ([field["const"]] if "const" in field else []))  # one name: a const
    try:
        description = str(json.loads(client.read_flow_run_input(run.id, keyset["description"])))
    except ObjectNotFound:
        description = ""
    return Waiting(run, dict(keyset), environment, approvers, description)


def pending() -> list[Waiting]:
    """Every flow run waiting for an approval, oldest first."""
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))
            )
        )
        found = [w for run in runs if (w := _waiting(client, run)) is not None]
    return sorted(found, key=lambda w: w.run.state.timestamp if w.run.state else 0)


def _by_name(client: Any, name: str) -> FlowRun | None:
    """The run named ``name``, preferring one that waits (a version released again has two)."""
    from prefect.client.schemas.filters import FlowRunFilterName

    runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[name])))
    paused = [r for r in runs if r.state and r.state.is_paused()] or runs
    if len(paused) > 1:
        raise InputError(f"{len(paused)} flow runs are named {name!r}", "give the run's id (opcd pending)")
    return paused[0] if paused else None


def find_waiting(run_id: str) -> Waiting:
    """The run ``run_id`` (a flow run id or its name), which must be waiting for an approval."""
    with get_client(sync_client=True) as client:
        run: FlowRun | None = None
        try:
            run = client.read_flow_run(UUID(run_id))
        except ValueError:  # not a UUID: a flow run name
            run = _by_name(client, run_id)
        except ObjectNotFound:
            run = None
        if run is None:
            raise InputError(f"no flow run {run_id!r} on {client.api_url}", "`opcd pending` lists the runs waiting")
        waiting = _waiting(client, run)
    if waiting is None:
        state = run.state.name if run.state else "no state"
        raise InputError(f"flow run {run.name} ({run.id}) is {state}, not waiting for an approval",
                         "`opcd pending` lists the runs waiting")  # fmt: skip
    return waiting


def answer(waiting: Waiting, approved: bool, approver: str, reason: str) -> None:
    """Resume a waiting run with an answer, through the API as the UI's Resume form does.

    The server checks the answer against the form's schema: an approver not on the list is refused
    there (the run stays paused) and reported here as an InputError.
    """
    if not approved and not reason.strip():
        raise InputError("a rejection needs a reason", 'add --reason "…"')
    if waiting.approvers and approver not in waiting.approvers:
        raise InputError(
            f"{approver!r} may not approve {waiting.environment}: approvers are {', '.join(waiting.approvers)}",
            "answer as one of them (environments.ENV.approval.approvers in opcd.toml); the run is still waiting",
        )
    with get_client(sync_client=True) as client:
        result = client.resume_flow_run(
            waiting.run.id, run_input={"approved": approved, "approver": approver, "reason": reason}
        )
    if result.status.value != "ACCEPT":
        why = getattr(result.details, "reason", None) or result.status.value
        with get_client(sync_client=True) as client:
            now = client.read_flow_run(waiting.run.id).state
        if now is not None and now.is_paused():
            raise InputError(
                f"the Prefect server refused the answer: {why}", "the run is still waiting; fix the answer"
            )
        raise InputError(f"the Prefect server refused the answer: {why}",
                         f"the run is {now.name if now else 'gone'}, no longer waiting")  # fmt: skip
