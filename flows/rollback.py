"""``rollback``: one component in one environment back to the previous or a named version."""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.logging import get_run_logger

from flows.frontend_deploy import rollback_apprunner
from flows.lambda_deploy import EarlySteps, Plan, finish, plan_lambda_deploy, shift_and_verify
from opcd.config import load_config
from opcd.errors import InputError, ResourceMissing
from opcd.locks import environment_lock
from opcd.versions import check_version
from tasks.lambda_functions import LiveVersion, app_version_of, list_versions, read_live, read_live_alias
from tasks.ledger import Record, read_history
from tasks.notify import Notifier


def choose_version(
    plan: Plan, live: LiveVersion, to_version: str | None, to_lambda_version: str | None
) -> tuple[str, str | None]:
    """The Lambda version (and its app version) to roll back to."""
    versions = list_versions(plan.target, plan.function)
    by_number = {v["Version"]: v for v in versions}
    if to_lambda_version is not None:
        if to_lambda_version not in by_number:
            raise ResourceMissing(
                f"{plan.function} has no Lambda version {to_lambda_version}",
                f"published versions: {', '.join(by_number) or 'none'}",
            )
        return to_lambda_version, app_version_of(by_number[to_lambda_version].get("Description", ""))
    if to_version is not None:
        check_version(to_version)
        matches = [v for v in versions if app_version_of(v.get("Description", "")) == to_version]
        if not matches:
            known = sorted({a for v in versions if (a := app_version_of(v.get("Description", "")))})
            raise InputError(
                f"{plan.component} {to_version} was never deployed to {plan.function}",
                f"deployed versions: {', '.join(known) or 'none'}",
            )
        return matches[-1]["Version"], to_version
    for record in reversed(read_history(plan.target, plan.bucket, plan.environment, plan.component)):
        if (
            record.get("action") == "deploy"
            and record.get("outcome") == "deployed"
            and record.get("live_lambda_version") == live.lambda_version
        ):
            previous = record.get("previous_lambda_version")
            if previous and previous in by_number:
                return previous, app_version_of(by_number[previous].get("Description", ""))
    raise InputError(
        f"the ledger does not say what was live before Lambda version {live.lambda_version} of {plan.function}",
        "name the target with --to VERSION or --to-lambda-version N",
    )


@flow(name="rollback", flow_run_name="rollback {component} in {environment}", log_prints=True)
def rollback(
    component: str,
    environment: str,
    to_version: str | None = None,
    to_lambda_version: str | None = None,
    config_path: str | None = None,
) -> dict[str, Any]:
    """Point ``live`` back at an earlier version; verify health, else restore where it was."""
    logger = get_run_logger()
    if to_version is not None and to_lambda_version is not None:
        raise InputError("give --to or --to-lambda-version, not both")
    if load_config(config_path).component(component).kind == "apprunner":
        if to_lambda_version is not None:
            raise InputError(f"{component} is an App Runner service: it has no Lambda versions", "use --to VERSION")
        return rollback_apprunner(component, environment, to_version, config_path)
    # An alarm firing now does not block a rollback (it is how incidents get fixed); it only stops
    # guarding until it has been seen OK.
    with EarlySteps.rollback(component, environment, to_version, config_path).reporting():
        plan = plan_lambda_deploy(component, environment, to_version, config_path, accept_firing=True)
    with environment_lock(environment, component):
        live = read_live_alias(plan.target, plan.function)
        version, app_version = choose_version(plan, live, to_version, to_lambda_version)
        record = Record(
            component, environment, "rollback", "failed", app_version, lambda_version=version,
            previous_version=live.app_version, previous_lambda_version=live.lambda_version,
            live_version=live.app_version, live_lambda_version=live.lambda_version,
        )  # fmt: skip
        record.attach_flow_run()
        notifier = Notifier.from_config(plan.config, f"rollback {component} in {environment}")
        if version == live.lambda_version and not live.weights:
            logger.info("%s is already on %s (Lambda version %s): nothing to do", plan.function, app_version, version)
            record.outcome, record.reason = "noop", "already live"
            return finish(plan, record, notifier)
        logger.info(
            "Rolling %s back from Lambda version %s to %s (%s)",
            plan.function,
            live.lambda_version,
            version,
            app_version,
        )
        try:
            shift_and_verify(plan, version, app_version, live)
        except Exception as exc:
            after = read_live(plan.target, plan.function)
            record.live_version, record.live_lambda_version = after.app_version, after.lambda_version
            record.outcome, record.reason = "failed", str(exc)
            finish(plan, record, notifier)
            raise
        record.outcome = "deployed"
        record.live_version, record.live_lambda_version = app_version, version
        return finish(plan, record, notifier)
