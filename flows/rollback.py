"""``rollback``: one component in one environment back to the previous or a named version."""

from __future__ import annotations

from prefect import flow
from prefect.logging import get_run_logger

from flows.common import EarlySteps, finish
from flows.ecs_deploy import rollback_ecs
from flows.frontend_deploy import rollback_apprunner
from flows.lambda_deploy import Plan, plan_lambda_deploy, record_failure, shift_and_verify
from opcd.config import load_config
from opcd.errors import DeployFailed, InputError, ResourceMissing
from opcd.locks import environment_lock
from opcd.outcomes import Outcome
from opcd.versions import check_version
from tasks.events import DEPLOY_STARTED, emit
from tasks.lambda_functions import LiveVersion, app_version_of, list_versions, read_live_alias
from tasks.ledger import Record, read_history, seen_live
from tasks.notify import Notifier


def choose_version(
    plan: Plan, live: LiveVersion, to_version: str | None, to_lambda_version: str | None, force: bool = False
) -> tuple[str, str | None]:
    """The Lambda version (and its app version) to roll back to.

    A named target must be one the ledger saw live (:func:`seen_live`): a version whose deploy failed
    or was rolled back is known to be broken. ``force`` goes there anyway.
    """
    versions = list_versions(plan.target, plan.function)
    by_number = {v["Version"]: v for v in versions}
    history = read_history(plan.target, plan.bucket, plan.environment, plan.component, plan.region)
    where = f"{plan.component} in {plan.environment}"
    if to_lambda_version is not None:
        numbers = seen_live(history, "live_lambda_version", "previous_lambda_version")
        were_live = f"Lambda versions that were live: {', '.join(numbers) or 'none in the ledger'}"
        if to_lambda_version not in by_number:
            raise ResourceMissing(f"{plan.function} has no Lambda version {to_lambda_version}", were_live)
        if to_lambda_version not in numbers and not force:
            raise InputError(
                f"Lambda version {to_lambda_version} of {plan.function} was never live for {where}",
                f"{were_live}; --force goes to it anyway",
            )
        return to_lambda_version, app_version_of(by_number[to_lambda_version].get("Description", ""))
    if to_version is not None:
        check_version(to_version)
        apps = seen_live(history)
        were_live = f"versions that were live: {', '.join(apps) or 'none in the ledger'}"
        matches = [v["Version"] for v in versions if app_version_of(v.get("Description", "")) == to_version]
        if not matches:
            raise InputError(f"{plan.component} {to_version} was never deployed to {plan.function}", were_live)
        if to_version not in apps and not force:
            raise InputError(
                f"{plan.component} {to_version} was never live in {plan.environment}: the ledger has no deploy"
                " or rollback that left it live",
                f"{were_live}; --force goes to it anyway",
            )
        numbers = seen_live(history, "live_lambda_version", "previous_lambda_version")
        return ([n for n in matches if n in numbers] or matches)[-1], to_version
    for record in reversed(history):
        if (
            record.action == "deploy"
            and record.outcome is Outcome.DEPLOYED
            and record.live_lambda_version == live.lambda_version
        ):
            previous = record.previous_lambda_version
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
    force: bool = False,
    region: str | None = None,
) -> Record:
    """Point ``live`` back at an earlier version; verify health, else restore where it was.

    A named version must be one the ledger saw live; ``force`` goes to any (recorded). ``region``: one of the
    environment's regions (None: its first); its ledger and lock are that region's.
    """
    logger = get_run_logger()
    emit(DEPLOY_STARTED, component, environment, to_version, action="rollback", force=force)
    if to_version is not None and to_lambda_version is not None:
        raise InputError("give --to or --to-lambda-version, not both")
    kind = load_config(config_path).component(component).kind
    if kind in ("apprunner", "ecs"):
        if to_lambda_version is not None:
            what = "an App Runner service" if kind == "apprunner" else "an ECS service"
            raise InputError(f"{component} is {what}: it has no Lambda versions", "use --to VERSION")
        if kind == "ecs":
            return rollback_ecs(component, environment, to_version, config_path, force, region)
        return rollback_apprunner(component, environment, to_version, config_path, force)
    # An alarm firing now does not block a rollback (it is how incidents get fixed); it only stops
    # guarding until it has been seen OK.
    with EarlySteps.rollback(component, environment, to_version, config_path, region).reporting():
        plan = plan_lambda_deploy(component, environment, to_version, config_path, accept_firing=True, region=region)
    with environment_lock(environment, component, region=plan.region):
        live = read_live_alias(plan.target, plan.function)
        version, app_version = choose_version(plan, live, to_version, to_lambda_version, force)
        record = Record(
            component, environment, "rollback", Outcome.FAILED, app_version, lambda_version=version,
            previous_version=live.app_version, previous_lambda_version=live.lambda_version,
            live_version=live.app_version, live_lambda_version=live.lambda_version, force=force, region=plan.region,
        )  # fmt: skip
        if force:
            logger.warning("--force: going to %s (Lambda version %s) whether or not the ledger saw it live",
                           app_version, version)  # fmt: skip
        record.attach_flow_run()
        notifier = Notifier.from_config(plan.config, f"rollback {component} in {plan.where}")
        if version == live.lambda_version and not live.weights:
            logger.info("%s is already on %s (Lambda version %s): nothing to do", plan.function, app_version, version)
            record.outcome, record.reason = Outcome.NOOP, "already live"
            return finish(plan, record, notifier)
        logger.info(
            "Rolling %s back from Lambda version %s to %s (%s)",
            plan.function,
            live.lambda_version,
            version,
            app_version,
        )
        progress: dict[str, bool] = {}
        try:
            shift_and_verify(plan, version, app_version, live, progress=progress)
        except Exception as exc:
            record_failure(plan, record, live, progress, exc)
            if record.outcome == Outcome.FAILED:
                finish(plan, record, notifier)
                raise
            moved = f"moved live to {app_version} (Lambda version {version})"
            record.reason = f"{moved if record.live_lambda_version else 'live unknown'}: {record.reason}"
            finish(plan, record, notifier)
            raise DeployFailed(record.reason) from exc
        record.outcome = Outcome.DEPLOYED
        record.live_version, record.live_lambda_version = app_version, version
        return finish(plan, record, notifier)
