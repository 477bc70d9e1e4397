"""``drift-check``: is what runs what opcd and Terraform say should run? Scheduled in prefect.yaml.

For each environment, in parallel: Terraform drift (a plan with ``-detailed-exitcode``; 2 means
the live resources differ from the configuration) and live-state drift against the ledger
(``tasks/drift.py``). Findings become one artifact and one Slack message; a clean check is silent.
The run ends Completed either way (``opcd drift`` exits 3 on drift); it ends Failed only when a
check could not run, since "no finding" must never stand for "not checked".
"""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.client.schemas.objects import State
from prefect.futures import PrefectFuture
from prefect.logging import get_run_logger
from prefect.states import Completed, Failed

from opcd.aws import resolve_target
from opcd.config import load_config
from tasks.drift import (
    Drift,
    check_alarms_exist,
    check_apprunner_services,
    check_ecs_services,
    check_event_rules,
    check_lambda_aliases,
    check_retention_rules,
    check_terraform_drift,
)
from tasks.notify import Notifier

EXIT_DRIFT = 3  # what `opcd drift` exits with when it finds drift


def report(findings: list[Drift], errors: list[str], checked: list[str], terraform: str) -> str:
    lines = [f"### Drift check of {', '.join(checked)}", "", f"Terraform: {terraform}", ""]
    if not findings:
        lines.append("**No drift**: every resource checked matches the ledger, opcd.toml and Terraform.")
    else:
        lines += [
            f"**{len(findings)} finding(s)**",
            "",
            "| environment | resource | problem | fix |",
            "|---|---|---|---|",
        ]
        lines += [f"| {f.environment} | `{f.resource}` | {f.problem} | {f.fix} |".replace("\n", " ") for f in findings]
    if errors:
        lines += ["", "**Checks that could not run** (their part is unknown, not clean):"]
        lines += [f"- {e}" for e in errors]
    return "\n".join(lines) + "\n"


@flow(name="drift-check", flow_run_name="drift check", log_prints=True)
def drift_check(
    environments: list[str] | None = None, terraform: bool = True, config_path: str | None = None
) -> dict[str, Any] | State:
    """Compare live AWS with the ledger, opcd.toml and Terraform; report what differs.

    Args:
        environments: which to check (default: all).
        terraform: also plan each environment for Terraform drift (needs the terraform binary).
        config_path: opcd.toml to use.
    """
    logger = get_run_logger()
    config = load_config(config_path)
    envs = config.ordered_environments(environments)
    target = resolve_target(config.state_dir(), config.project.region)
    checks: list[tuple[str, PrefectFuture[Any]]] = [("bucket retention", check_retention_rules.submit(config, target))]
    for env in envs:
        if config.region_key(env):  # several regions (Lambda and ECS): each region's aliases, services and alarms
            for region in config.regions(env):
                here = resolve_target(config.state_dir(), region, pinned=True)
                for regional in (check_lambda_aliases, check_event_rules, check_ecs_services, check_alarms_exist):
                    checks.append((f"{env} {region} {regional.name}", regional.submit(config, here, env, region)))
            continue
        for check in (
            check_lambda_aliases,
            check_event_rules,
            check_apprunner_services,
            check_ecs_services,
            check_alarms_exist,
        ):
            checks.append((f"{env} {check.name}", check.submit(config, target, env)))
    if not terraform:
        terraform_note = "not checked (terraform=false)"
    elif config.terraform is None:
        terraform_note = "not checked (opcd.toml has no [terraform])"
    else:
        terraform_note = f"planned {', '.join(envs)} in {config.terraform.root}"
        checks += [(f"{env} terraform plan", check_terraform_drift.submit(config, env)) for env in envs]
    findings: list[Drift] = []
    errors: list[str] = []
    for label, future in checks:
        future.wait()
        result = future.state.result(raise_on_failure=False)
        if isinstance(result, BaseException):
            errors.append(f"{label}: {result}")
            continue
        findings += result
    markdown = report(findings, errors, envs, terraform_note)
    create_markdown_artifact(key="drift-check", markdown=markdown, description="drift check")
    data = {
        "drift": bool(findings), "findings": [f.to_dict() for f in findings], "errors": errors,
        "environments": envs, "terraform": terraform_note,
    }  # fmt: skip
    for finding in findings:
        logger.warning("drift in %s: %s %s", finding.environment, finding.resource, finding.problem)
    if findings or errors:
        notifier = Notifier.from_config(config, "drift check")
        lines = [f"• {f.environment} `{f.resource}`: {f.problem}" for f in findings[:15]]
        lines += [f"• could not check: {e}" for e in errors[:5]]
        more = len(findings) - 15
        text = f"{len(findings)} finding(s) in {', '.join(envs)}" + (" and checks that failed" if errors else "")
        notifier.send(text + ":\n" + "\n".join(lines) + (f"\n… and {more} more" if more > 0 else ""), "warn")
        data["notify_failures"] = notifier.failures
    if errors:
        return Failed(message=f"{len(errors)} check(s) could not run: {errors[0]}", data=data)
    message = f"drift: {len(findings)} finding(s)" if findings else "no drift"
    logger.info("%s", message)
    return Completed(message=message, data=data)
