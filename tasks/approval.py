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

With ``approval.verify = "github"`` the form asks for proof instead of a name: the id of a run of
the approval workflow (``github_run``). :func:`verify_with_github` checks it with the worker's own
GitHub token (the run, its title, its time, its environment reviews) and records the reviewer's
mapped name; an answer without valid proof is refused like any invalid one and the run waits again.

Outside the run, :func:`pending` lists the runs waiting for an approval and :func:`answer` resumes
one through the API, exactly as the UI's Resume form does (``opcd pending``, ``opcd approve``,
``opcd reject``).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, cast
from uuid import UUID

import httpx
from prefect import pause_flow_run, suspend_flow_run
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName, FlowRunFilterState, FlowRunFilterStateType
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.context import FlowRunContext
from prefect.exceptions import FlowPauseTimeout, ObjectNotFound, PrefectHTTPStatusError
from prefect.input import RunInput
from prefect.logging import get_run_logger
from prefect.settings import PREFECT_UI_URL
from prefect.states import Running
from pydantic import Field, ValidationError, create_model, model_validator

from opcd.config import Approval as ApprovalSettings
from opcd.errors import InputError
from opcd.progress import State, report
from tasks.github import SECRET_BLOCK, GitHub, github_token
from tasks.ledger import parse_time

KEY_PREFIX = "approval"  # pause keys: approval-{environment}-{attempt}


def is_gate_key(key: str | None, environment: str) -> bool:
    """True when ``key`` is a pause key of ``environment``'s gate: ``approval-prod-3``, never ``approval-prod-eu-3``."""
    prefix = f"{KEY_PREFIX}-{environment}-"
    return bool(key and key.startswith(prefix) and key.removeprefix(prefix).isdigit())


class _ApprovalRules(RunInput):
    """The checks the Prefect server cannot make (its JSON schema has no cross-field rules)."""

    @model_validator(mode="after")
    def _rejection_has_reason(self) -> _ApprovalRules:
        if not getattr(self, "approved", True) and not str(getattr(self, "reason", "")).strip():
            raise ValueError("a rejection needs a reason: say why in the reason field")
        return self


def approval_form(approvers: list[str], verify: str = "none") -> type[RunInput]:
    """The ``Approval`` run input for these approvers: approved, approver (one of them), reason.

    With ``verify="github"``: approved, github_run (the proof), reason; the approver is whoever GitHub
    says reviewed that run (the names ride along in the schema as ``x-approvers``, for ``opcd pending``).
    """
    if verify == "github":
        proof: type[RunInput] = create_model(
            "Approval",
            __base__=_ApprovalRules,
            approved=(bool, Field(True, title="Approved", description="On: deploy. Off: reject (give a reason).")),
            github_run=(int | None, Field(
                None, gt=0, title="GitHub run",
                description="The id of the approval workflow's run that a required reviewer approved (its job "
                "fills it in). Without it the answer is refused.",
                json_schema_extra={"x-approvers": list(approvers)},
            )),
            reason=(str, Field("", title="Reason", description="Why: recorded in the ledger and sent to Slack.")),
        )  # fmt: skip
        return proof
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
    verified: str = ""  # how the approver's identity is known: "self-declared" or "verified by GitHub: …"

    def describe(self) -> str:
        if self.approver is None and not self.timed_out:
            return f"approval for {self.environment} not given: {self.reason}"
        if self.timed_out:
            return f"approval timed out after {duration_text(self.waited_seconds)}"
        verb = "approved" if self.approved else "rejected"
        return f"{verb} by {self.approver}" + (f": {self.reason}" if self.reason else "")


class Refused(Exception):
    """An answer the gate does not take (its text says why): the run waits again."""


@dataclass(frozen=True)
class Proof:
    """What GitHub says about an approval run: the decision, who (their opcd name), and how it is known."""

    approved: bool
    approver: str
    reason: str
    verified: str


def gate_opened(environment: str) -> datetime | None:
    """When this run first paused at ``environment``'s gate, as the Prefect server recorded it.

    Read from the run's state history, so a suspended run that starts again from the top still
    knows when its gate opened (the first pause; each refused answer pauses again under a new key).
    """
    ctx = FlowRunContext.get()
    if not (ctx and ctx.flow_run):
        return None
    with get_client(sync_client=True) as client:
        states = client.read_flow_run_states(ctx.flow_run.id)
    paused = [s for s in states if s.type == StateType.PAUSED]
    opened = [s.timestamp for s in paused if is_gate_key(s.state_details.pause_key, environment)]
    return min(opened) if opened else None


def verify_with_github(
    environment: str, settings: ApprovalSettings, flow_run_id: str, opened: datetime | None,
    github_run: int | None, approved: bool, reason: str,
) -> Proof:  # fmt: skip
    """Check an answer's proof with GitHub's REST API; raise Refused saying what is wrong.

    The run ``github_run`` must be a ``workflow_dispatch`` run of ``.github/workflows/{settings.workflow}``
    in ``settings.repository``, titled exactly ``opcd {approve|reject} {flow run id} for {environment}``
    (approve.yml's run-name), created after the gate opened, and reviewed for the GitHub environment
    ``{environment}-approval`` by a reviewer whose login opcd.toml maps to an approver. A reviewer's
    rejection is a rejection. GitHub is asked at ``settings.github_api`` (opcd.toml), never at an address
    from the environment: a flow run can set its own environment variables, and this check sends the
    worker's token and trusts the answer.
    """
    repo, workflow = str(settings.repository), f".github/workflows/{settings.workflow}"
    if not github_run:
        raise Refused(
            f"{environment} is approved in GitHub: this answer names no approval run (a self-declared answer, from"
            f" the form or `opcd approve` without --github-run, is not taken); run the {settings.workflow} workflow"
            f" of {repo} with flow run {flow_run_id}"
        )
    token = github_token()
    if not token:
        raise Refused(
            f"cannot check GitHub run {github_run}: the worker has no GitHub token (GITHUB_TOKEN, or the Secret"
            f" block {SECRET_BLOCK!r}, with actions: read on {repo})"
        )
    client = GitHub(token, api_url=settings.github_api)
    try:
        run = client.workflow_run(repo, github_run)
        reviews = client.run_approvals(repo, github_run)
    except InputError as exc:
        raise Refused(f"GitHub run {github_run} of {repo} could not be checked: {exc}") from None
    except httpx.HTTPError as exc:
        raise Refused(f"GitHub run {github_run} of {repo} could not be checked ({type(exc).__name__}: {exc})") from None
    finally:
        client.close()
    where = f"run {github_run} of {repo}"
    owner = str((run.get("repository") or {}).get("full_name", ""))
    head = str((run.get("head_repository") or {}).get("full_name", owner))
    if owner.lower() != repo.lower() or head.lower() != repo.lower():
        raise Refused(f"GitHub run {github_run} belongs to {owner or 'no repository'}, not to {repo}")
    if run.get("path") != workflow or run.get("event") != "workflow_dispatch":
        raise Refused(f"{where} is a {run.get('event')} run of {run.get('path')}, not a run of {workflow}")
    title = str(run.get("display_title", ""))
    titles = {f"opcd {word} {flow_run_id} for {environment}": word == "approve" for word in ("approve", "reject")}
    if title not in titles:
        raise Refused(f"{where} is titled {title!r}: it is not `opcd approve|reject {flow_run_id} for {environment}`")
    created = parse_time(run.get("created_at"))
    # GitHub's times are whole seconds: a run of the very second the gate opened is after it
    if opened is None or created is None or created < opened.replace(microsecond=0):
        raise Refused(
            f"{where} was started at {run.get('created_at')}, before this approval was asked for"
            f" ({opened:%Y-%m-%d %H:%M:%S} UTC): start a new run"
            if opened
            else f"{where}: no time to check against"
        )
    github_environment = f"{environment}-approval"
    ours = [r for r in reviews if any(e.get("name") == github_environment for e in r.get("environments") or [])]
    known = [
        (r, name) for r in ours if r.get("state") in ("approved", "rejected")
        and (name := settings.approver_of(str((r.get("user") or {}).get("login", ""))))
    ]  # fmt: skip
    if not known:
        logins = sorted({str((r.get("user") or {}).get("login")) for r in ours})
        if logins:
            raise Refused(
                f"{where} was reviewed for {github_environment} by {', '.join(logins)}: not an approver of"
                f" {environment} in opcd.toml"
            )
        raise Refused(f"nobody approved {where} for the GitHub environment {github_environment}")
    review, name = next(((r, n) for r, n in known if r["state"] == "rejected"), known[0])  # a rejection wins
    login, comment = review["user"]["login"], str(review.get("comment") or "").strip()
    if review["state"] == "rejected":
        verified = f"verified by GitHub: {login} rejected run {github_run} of {repo}"
        return Proof(False, name, comment or reason or "rejected in GitHub's review", verified)  # the reviewer's why
    if titles[title] != approved:
        word = "approve" if approved else "reject"
        raise Refused(f"{where} is titled {title!r}: {login} approved that, not this answer ({word})")
    return Proof(approved, name, reason or comment, f"verified by GitHub: {login} approved run {github_run} of {repo}")


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
    gates = [e for e in environments if any(is_gate_key(k, e) for k in used)]
    return gates[-1] if gates else None


def wait_for_approval(environment: str, settings: ApprovalSettings, description: str) -> Decision:
    """Pause (or suspend, in a deployment's run) the current flow run until an approver answers."""
    logger = get_run_logger()
    form = approval_form(settings.approvers, settings.verify)
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
        ctx = FlowRunContext.get()
        how = f"opcd approve {ctx.flow_run.id} --approver NAME --reason '…'" if ctx and ctx.flow_run else "opcd pending"
        report("waiting", f"{' or '.join(settings.approvers)}: {how}, or Resume in the Prefect UI", State.WAITING,
               "approval", environment)  # fmt: skip
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
        if settings.verify == "github":
            ctx = FlowRunContext.get()
            run_id = str(ctx.flow_run.id) if ctx and ctx.flow_run else ""
            try:
                proof = verify_with_github(
                    environment, settings, run_id, gate_opened(environment), answer.github_run,
                    bool(answer.approved), str(answer.reason or "").strip(),
                )  # fmt: skip
            except Refused as exc:
                decision.refused.append(str(exc))
                logger.warning("Approval answer refused (%s): waiting again", exc)
                continue
            decision.approved, decision.approver, decision.reason = proof.approved, proof.approver, proof.reason
            decision.verified = proof.verified
        else:
            decision.approved, decision.approver = bool(answer.approved), str(answer.approver)
            decision.reason, decision.verified = str(answer.reason or "").strip(), "self-declared"
        decision.waited_seconds = time.monotonic() - started
        logger.info("%s %s", environment, decision.describe())
        shown_as = State.OK if decision.approved else State.FAILED
        report("approved" if decision.approved else "rejected", decision.describe(), shown_as, "approval", environment)
        return decision
    decision.timed_out, decision.waited_seconds = True, time.monotonic() - started
    if not _leave_paused_state(f"{environment}: {decision.describe()}"):
        decision.timed_out, decision.reason = False, "the run was cancelled (or ended) while it waited"
    logger.warning("%s: %s", environment, decision.describe())
    report("no answer", decision.describe(), State.FAILED, "approval", environment)
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
    verify: str = "none"  # "github": the answer must carry the id of an approved GitHub run

    @property
    def ui_url(self) -> str | None:

        ui = PREFECT_UI_URL.value()
        return f"{ui.rstrip('/')}/runs/flow-run/{self.run.id}" if ui else None

    @property
    def timeout_at(self) -> str:
        details = self.run.state.state_details if self.run.state else None
        deadline = details.pause_timeout if details else None
        return deadline.strftime("%Y-%m-%d %H:%M:%S UTC") if deadline else "-"


def _read_input(client: Any, run_id: UUID, key: str) -> Any:
    """A run input's value, or None when the run has not saved it yet (the server answers 404)."""
    try:
        return json.loads(client.read_flow_run_input(run_id, key))
    except ObjectNotFound:
        return None
    except PrefectHTTPStatusError as exc:  # what read_flow_run_input raises on a 404
        if exc.response.status_code == 404:
            return None
        raise


def _waiting(client: Any, run: FlowRun) -> Waiting | None:
    details = run.state.state_details if run.state else None
    keyset = details.run_input_keyset if details else None
    key = (details.pause_key or "") if details else ""
    if not (run.state and run.state.is_paused() and keyset and key.startswith(f"{KEY_PREFIX}-")):
        return None
    environment = key.removeprefix(f"{KEY_PREFIX}-").rsplit("-", 1)[0]
    schema, description = (_read_input(client, run.id, keyset[name]) for name in ("schema", "description"))
    if schema is None or description is None:  # the run paused a moment ago and has not saved its form yet
        return None
    field = schema.get("properties", {}).get("approver", {})
    approvers = list(field.get("enum") or ([field["const"]] if "const" in field else []))  # one name: a const
    proof = schema.get("properties", {}).get("github_run")
    if proof is not None:  # verify = "github": the names ride along with the proof's field
        approvers = list(proof.get("x-approvers") or [])
    verify = "github" if proof is not None else "none"
    return Waiting(run, dict(keyset), environment, approvers, str(description), verify)


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


def answer(waiting: Waiting, approved: bool, approver: str | None, reason: str, github_run: int | None = None) -> None:
    """Resume a waiting run with an answer, through the API as the UI's Resume form does.

    The server checks the answer against the form's schema: an approver not on the list is refused
    there (the run stays paused) and reported here as an InputError. A gate verified by GitHub takes
    the id of an approved run of the approval workflow instead of a name (the run checks it).
    """
    if not approved and not reason.strip():
        raise InputError("a rejection needs a reason", 'add --reason "…"')
    run_input: dict[str, Any] = {"approved": approved, "reason": reason}
    if waiting.verify == "github":
        if github_run is None:
            raise InputError(
                f"{waiting.environment} is approved in GitHub, not by a name given here",
                "run the approval workflow (.github/workflows/approve.yml) with this flow run's id: a required"
                " reviewer approves it and its job answers with --github-run; the run is still waiting",
            )
        run_input["github_run"] = github_run
    elif github_run is not None:
        raise InputError(
            f'{waiting.environment}\'s approvals are self-declared (approval.verify = "none"): --github-run is'
            " not checked there",
            "answer with --approver NAME",
        )
    elif not approver:
        raise InputError("--approver missing", f"answer as one of {', '.join(waiting.approvers)}")
    elif waiting.approvers and approver not in waiting.approvers:
        raise InputError(
            f"{approver!r} may not approve {waiting.environment}: approvers are {', '.join(waiting.approvers)}",
            "answer as one of them (environments.ENV.approval.approvers in opcd.toml); the run is still waiting",
        )
    else:
        run_input["approver"] = approver
    with get_client(sync_client=True) as client:
        result = client.resume_flow_run(waiting.run.id, run_input=run_input)
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
