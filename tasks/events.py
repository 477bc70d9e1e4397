"""Prefect events: what a deploy, a rollback, a bake and an approval say happened, for automations.

Every event goes through :func:`emit`, from inside a flow run (outside one there is no run to relate
it to, and nothing is sent). Its names:

- ``opcd.deploy.started``: a deploy or a rollback run starts (``payload.action`` says which);
- ``opcd.deploy.succeeded``: a deploy ended deployed, or found its version already live;
- ``opcd.deploy.failed``: a deploy or rollback failed (before traffic moved, or its rollback failed);
- ``opcd.deploy.rolled-back``: a deploy failed after traffic moved and was moved back, or a
  rollback run moved ``live`` back to an older version;
- ``opcd.bake.step``: a canary or linear bake put a step's share of traffic on the new version;
- ``opcd.approval.requested`` and ``opcd.approval.answered``: a release's gate opens, and its
  answer (approved, rejected, timed out) arrives.

The event's resource is ``opcd.deploy.COMPONENT.ENVIRONMENT`` with the labels ``opcd.component``,
``opcd.environment`` and ``opcd.version`` (an approval's is ``opcd.approval.ENVIRONMENT``, its
``opcd.component`` the release's components joined by commas); its related resources are the
component(s), the environment, the version and the flow run (and its deployment). The payload
holds only what the ledger and Slack already show (outcome, step, what is live, the reason, an
approver's name): never a secret, never a credential.
"""

from __future__ import annotations

import logging
from typing import Any

from prefect.context import FlowRunContext
from prefect.events import Event, emit_event

DEPLOY_STARTED = "opcd.deploy.started"
DEPLOY_SUCCEEDED = "opcd.deploy.succeeded"
DEPLOY_FAILED = "opcd.deploy.failed"
DEPLOY_ROLLED_BACK = "opcd.deploy.rolled-back"
BAKE_STEP = "opcd.bake.step"
APPROVAL_REQUESTED = "opcd.approval.requested"
APPROVAL_ANSWERED = "opcd.approval.answered"
NAMES = (
    DEPLOY_STARTED, DEPLOY_SUCCEEDED, DEPLOY_FAILED, DEPLOY_ROLLED_BACK, BAKE_STEP, APPROVAL_REQUESTED,
    APPROVAL_ANSWERED,
)  # fmt: skip

PAYLOAD_TEXT = 300  # a reason longer than this is cut: an event is a notice, the ledger has the rest

_log = logging.getLogger("opcd.events")
Scalar = str | int | float | bool | None


def _resource(kind: str, name: str, role: str) -> dict[str, str]:
    return {"prefect.resource.id": f"opcd.{kind}.{name}", "prefect.resource.name": name, "prefect.resource.role": role}


def _run_resources(ctx: FlowRunContext) -> list[dict[str, str]]:
    run = ctx.flow_run
    if run is None:
        return []
    related = [{"prefect.resource.id": f"prefect.flow-run.{run.id}", "prefect.resource.name": run.name,
                "prefect.resource.role": "flow-run"}]  # fmt: skip
    if run.deployment_id:
        related.append({"prefect.resource.id": f"prefect.deployment.{run.deployment_id}",
                        "prefect.resource.role": "deployment"})  # fmt: skip
    return related


def _plain(payload: dict[str, Any]) -> dict[str, Scalar]:
    """Only plain values (text cut to :data:`PAYLOAD_TEXT`): no object, whatever it holds, is sent."""
    plain: dict[str, Scalar] = {}
    for key, value in payload.items():
        if isinstance(value, str):
            plain[key] = value[:PAYLOAD_TEXT]
        elif value is None or isinstance(value, bool | int | float):
            plain[key] = value
        else:
            plain[key] = str(value)[:PAYLOAD_TEXT]
    return plain


def emit(
    event: str, component: str | list[str], environment: str, version: str | None, **payload: Scalar | Any
) -> Event | None:
    """Send ``event`` about ``component`` (a release's gate: its components) in ``environment`` at ``version``.

    None outside a flow run.

    Never raises: an event that cannot be sent is logged, and the deploy goes on.
    """
    if event not in NAMES:
        raise ValueError(f"not an opcd event: {event}")
    ctx = FlowRunContext.get()
    if ctx is None:
        return None
    components = [component] if isinstance(component, str) else component
    names = ",".join(components)
    kind = "approval" if event.startswith("opcd.approval.") else "deploy"
    subject = environment if kind == "approval" else f"{names}.{environment}"
    resource = {
        "prefect.resource.id": f"opcd.{kind}.{subject}",
        "prefect.resource.name": f"{', '.join(components)} in {environment}",
        "opcd.component": names, "opcd.environment": environment, "opcd.version": version or "",
    }  # fmt: skip
    related = [_resource("component", name, "component") for name in components]
    related.append(_resource("environment", environment, "environment"))
    if version:
        related.append(_resource("version", version, "version"))
    try:
        return emit_event(event, resource, related=related + _run_resources(ctx), payload=_plain(payload))
    except Exception as exc:  # an event is a notice: it never stops a deploy
        _log.warning("event %s not sent: %s: %s", event, type(exc).__name__, exc)
        return None


def outcome_event(action: str, outcome: str) -> str:
    """The event that says how a deploy or rollback run (a ledger record's ``action``) ended."""
    if outcome in ("deployed", "noop"):
        return DEPLOY_ROLLED_BACK if action == "rollback" else DEPLOY_SUCCEEDED
    if outcome == "rolled-back" and action != "rollback":  # a rollback's own target failing is its failure
        return DEPLOY_ROLLED_BACK
    return DEPLOY_FAILED
