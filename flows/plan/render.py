"""Renderers: a plan as the text ``--dry-run`` prints, and as the JSON ``--dry-run --json`` prints.

Both show the plan object itself, step by step, so what is shown is what a run executes.
"""

from __future__ import annotations

from flows.plan.models import ApprovalGate, Check, DeployPlan, ReleasePlan, RollbackPlan, Step
from opcd.config import where
from opcd.traffic import human_duration

DRY_RUN_END = "no changes made (dry run)"
_SHARED = ("account", "alarms", "bucket")  # checked once per environment of a release


def render_json(plan: DeployPlan | RollbackPlan | ReleasePlan) -> str:
    """The plan as JSON; :func:`flows.plan.models.parse_plan` reads it back to an equal plan."""
    return plan.model_dump_json(indent=2)


def render_text(plan: DeployPlan | RollbackPlan | ReleasePlan, dry_run: bool = True) -> str:
    """The plan in lines: what runs now, what was checked, each step in order."""
    if isinstance(plan, DeployPlan):
        lines = _deploy(plan, "dry run: " if dry_run else "plan: ")
    elif isinstance(plan, RollbackPlan):
        lines = _rollback(plan, "dry run: " if dry_run else "plan: ")
    else:
        lines = _release(plan, dry_run)
    return "\n".join([*lines, *([DRY_RUN_END] if dry_run else [])])


def _deploy(plan: DeployPlan, prefix: str) -> list[str]:
    return [
        plan.target.description,
        f"{prefix}deploy {plan.component} {plan.version} to {where(plan.environment, plan.region)} ({plan.resource})",
        *_deploy_body(plan, "  ", plan.checks),
    ]


def _deploy_body(plan: DeployPlan, indent: str, checks: tuple[Check, ...] = ()) -> list[str]:
    lines = [
        f"{indent}live now: {plan.live.describe()}" + (f", service {plan.live.status}" if plan.live.status else ""),
        f"{indent}artifact: {'build' if plan.artifact.build else 'reuse'} {plan.artifact.location}"
        f" ({plan.artifact.reason})",
    ]
    if plan.shift is not None:
        lines.append(f"{indent}traffic: {plan.shift.description}")
    lines += _checks_and_steps(checks, plan.notes, plan.steps, indent)
    if plan.noop:
        lines.append(f"{indent}nothing to do: that version is already live")
    return lines


def _rollback(plan: RollbackPlan, prefix: str) -> list[str]:
    moved = f"{plan.resource}:live" if plan.kind == "lambda" else plan.resource
    lines = [
        plan.target.description,
        f"{prefix}rollback {plan.component} in {where(plan.environment, plan.region)}: would move {moved}"
        f" from {plan.live.describe()} to {plan.to.describe()}",
    ]
    if plan.force:
        lines.append("  --force: a target the ledger never saw live (recorded)")
    lines += _checks_and_steps(plan.checks, (), plan.steps, "  ")
    if plan.noop:
        lines.append("  nothing to do: that version is already live")
    return lines


def _checks_and_steps(
    checks: tuple[Check, ...], notes: tuple[str, ...], steps: tuple[Step, ...], indent: str
) -> list[str]:
    lines = [f"{indent}checked: {c.name}: {c.result}" for c in checks]
    lines += [f"{indent}note: {n}" for n in notes]
    lines += [f"{indent}{n}. {s.text}" for n, s in enumerate(steps, 1)]
    return lines


def _gate(gate: ApprovalGate | None) -> str:
    if gate is None:
        return "no approval"
    return f"approval by {' or '.join(gate.approvers)} first, waits at most {human_duration(gate.timeout)}"


def _release(plan: ReleasePlan, dry_run: bool) -> list[str]:
    lines = [
        f"{'dry run: ' if dry_run else 'plan: '}release {plan.version}"
        + (" — nothing will be changed" if dry_run else ""),
        f"components: {', '.join(plan.components) or 'none'} ({plan.why})",
    ]
    if not plan.components:
        return lines
    policy = {
        "rollback-all": "roll back, verified, every component the release changed there",
        "keep": "keep the components that deployed; stop before the next environment",
    }[plan.on_failure]
    lines.append(f"a failure in an environment: {policy} ({plan.on_failure})")
    first = plan.stages[0].environment if plan.stages else "-"
    lines.append(f"build, once, before {first}:")
    for build in plan.builds:
        lines += [f"  {build.component}: {step.text}" for step in build.steps]
    for stage in plan.stages:
        waves = (
            f"in {stage.regions[0]} first, then in {', '.join(stage.regions[1:])} in parallel" if stage.regions else ""
        )
        lines.append(f"{stage.environment} ({_gate(stage.approval)}), {waves or 'in parallel'}:")
        if stage.deploys:
            lines += [f"  checked: {c.name}: {c.result}" for c in stage.deploys[0].checks if c.name in _SHARED]
        for deploy in stage.deploys:
            lines.append(
                f"  {deploy.component} → {plan.version} ({deploy.environment} {deploy.region}: {deploy.resource}):"
                if deploy.region
                else f"  {deploy.component} → {plan.version} ({deploy.resource}):"
            )
            lines += _deploy_body(deploy, "    ")
        if stage.load_tests:
            lines.append(f"  then a load test of {', '.join(stage.load_tests)}, judged against its last passing result")
    return lines
