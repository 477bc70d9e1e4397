"""``terraform-plan`` and ``terraform-apply``: infrastructure changes reviewed, then applied as reviewed.

terraform-plan: each environment planned in parallel; each plan summarised from its JSON (what is
added, changed, destroyed, with addresses, destroys first); the summary published as an artifact
and as the pull request's one Terraform comment (edited in place on the next push). With
``store=True`` (the ``terraform-plan-for-apply`` deployment, on the deploy pool) the saved plan files
are kept in the artifact bucket under the plan id (the commit's sha) for terraform-apply, and the run
acts as the deploy role; otherwise (the ``terraform-plan`` deployment on the checks pool, and always
for a pull request) the plan is only shown: nothing is written, and Terraform reads the state
without taking its lock (``-lock=false``), as a read-only role must. Pull requests' code runs with
the read-only role: were it allowed to keep a plan, terraform-apply would apply it.

terraform-apply: for each environment in opcd.toml's order — without an approval gate, apply the
reviewed saved plan itself (Terraform refuses it if the state moved since); behind a gate, wait for
an approver, plan again, refuse if the new plan differs from the reviewed one, else apply it.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import nullcontext
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.client.schemas.objects import State
from prefect.logging import get_run_logger
from prefect.runtime import flow_run
from prefect.states import Failed

from opcd.aws import AwsTarget, guarded_target, resolve_target
from opcd.config import Config, load_config
from opcd.errors import ConfigError, InputError
from opcd.iam import acting_as
from opcd.versions import check_git_sha
from tasks.approval import replayed_gate, wait_for_approval
from tasks.git import commit_config
from tasks.github import report_to_github
from tasks.notify import Notifier, run_url
from tasks.results import shared_results
from tasks.s3_artifacts import load_plan, store_plan
from tasks.terraform import PlanSummary, apply_terraform, comment_body, plan_terraform

MARKER = "<!-- opcd:terraform-plan -->"


def _config(config_path: str | None) -> Config:
    config = load_config(config_path)
    if config.terraform is None:
        raise ConfigError("opcd.toml has no [terraform] table", 'add [terraform] with root = "path/to/the/root/module"')
    return config


def _request(
    config_path: str | None, git_sha: str | None, environments: list[str] | None
) -> tuple[Config, str, list[str], AwsTarget]:
    """Checked before anything runs: the config (with [terraform]), the plan id, the environments, AWS."""
    config = _config(config_path)
    plan_id = plan_id_of(git_sha)
    envs = config.ordered_environments(environments)
    return config, plan_id, envs, resolve_target(config.state_dir(), config.project.region)


def plan_id_of(git_sha: str | None) -> str:
    """Where a plan is kept: the commit's sha, or ``latest`` for a plan of a checkout without one."""
    if git_sha is None:
        return "latest"
    return check_git_sha(git_sha)


def _plan_name() -> str:
    sha = flow_run.parameters.get("git_sha")
    pr = flow_run.parameters.get("pull_request")
    return f"terraform plan {sha[:12] if sha else 'checkout'}{f' (PR #{pr})' if pr else ''}"


@flow(name="terraform-plan", flow_run_name=_plan_name, log_prints=True)
def terraform_plan(
    environments: list[str] | None = None,
    pull_request: int | None = None,
    repository: str | None = None,
    git_sha: str | None = None,
    config_path: str | None = None,
    store: bool = True,
) -> dict[str, Any]:
    """Plan every environment in parallel; publish the summary; with ``store``, keep the plans for terraform-apply.

    Args:
        environments: which to plan (default: all in opcd.toml).
        pull_request: the PR to comment on (with ``repository`` or ``GITHUB_REPOSITORY``); a pull
            request's plan is never stored, whatever ``store`` says.
        repository: owner/name on GitHub.
        git_sha: the commit planned; names the saved plans that terraform-apply applies.
        config_path: opcd.toml to use.
        store: keep the saved plans in the artifact bucket for terraform-apply (needs the deploy
            role: the run acts as it). False: the plan is only shown, made without the state lock.
    """
    logger = get_run_logger()
    stores = store and pull_request is None
    if store and not stores:
        logger.info("A pull request's plan is only shown, never stored (store ignored): terraform-apply applies"
                    " only plans made with deploy credentials")  # fmt: skip
    with acting_as("deploy", config_path) if stores else nullcontext():  # storing needs the deploy role
        config, plan_id, envs, target = _request(config_path, git_sha, environments)
        with (
            tempfile.TemporaryDirectory(prefix="opcd-plans-") as work,
            commit_config(config_path, git_sha, release=stores) as (path, _),  # deploy credentials: main's commits only
        ):
            config = _config(path)  # the trusted opcd.toml; the commit's module (a pull request's head)
            futures = [plan_terraform.submit(config, env, work, lock=stores) for env in envs]
            planned = [f.result() for f in futures]
            for (plan_file, summary), env in zip(planned, envs, strict=True):
                if stores:
                    store_plan(target, config.project.artifact_bucket, plan_id, env, plan_file, summary.to_dict())
    if not stores:
        logger.info("Plan %s shown, not stored: terraform-apply cannot apply it", plan_id)
    summaries = [summary for _, summary in planned]
    body = comment_body(MARKER, summaries, git_sha, run_url())
    create_markdown_artifact(key="terraform-plan", markdown=body, description=f"Terraform plan {plan_id}")
    comment = "not asked (no pull_request)"
    repo = repository or os.environ.get("GITHUB_REPOSITORY")
    if pull_request is not None:
        if not repo:
            raise InputError("pull_request given without a repository", "pass repository=owner/name")
        comment = report_to_github(repo, pull_request, None, [], body, MARKER, run_url())
    for summary in summaries:
        logger.info("%s: %s", summary.environment, summary.counts())
    return {"plan_id": plan_id, "plans": [s.to_dict() for s in summaries], "comment": comment, "stored": stores}


def _approval_text(plan_id: str, summary: PlanSummary, done: list[str]) -> str:
    lines = [
        f"**Terraform apply to {summary.environment}** of plan `{plan_id[:12]}`", "",
        summary.markdown(), "",
        "The plan is made again after your answer; it is applied only if it is still the one above.",
    ]  # fmt: skip
    if done:
        lines += ["", "Already applied: " + ", ".join(done)]
    return "\n".join(lines)


@flow(name="terraform-apply", flow_run_name="terraform apply {git_sha}", log_prints=True)
def terraform_apply(
    git_sha: str, environments: list[str] | None = None, config_path: str | None = None
) -> dict[str, Any] | State:
    """Apply the reviewed plans of ``git_sha``: dev first, then each gated environment after approval.

    Args:
        git_sha: the commit whose plans terraform-plan saved (the plan id).
        environments: which to apply (default: all), always in opcd.toml's order.
        config_path: opcd.toml to use.
    """
    logger = get_run_logger()
    config, plan_id, envs, target = _request(config_path, git_sha, environments)
    for env in envs:  # each environment's account, asked of STS before any of them changes
        guarded_target(config, env)
    bucket = config.project.artifact_bucket
    notifier = Notifier.from_config(config, f"terraform apply {plan_id[:12]}")
    replaying_until = replayed_gate(envs)  # resumed after a suspension: said before, not said again
    notifier.muted = replaying_until is not None
    results: dict[str, str] = {}
    with (
        tempfile.TemporaryDirectory(prefix="opcd-apply-") as work,
        commit_config(config_path, git_sha) as (path, _),
        shared_results(path),  # on `opcd setup`'s server, a resumed run finds what it applied on any worker
    ):
        config = _config(path)  # the trusted opcd.toml; that commit's module (its backends, its lock file)
        reviewed = {env: load_plan(target, bucket, plan_id, env, work) for env in envs}  # all present, first
        notifier.send(f"started: {' → '.join(envs)}", "info")
        env = envs[0]
        try:
            for env in envs:
                plan_file, saved = reviewed[env]
                summary = PlanSummary(**saved)
                gate = config.environment(env).approval
                if gate:
                    text = _approval_text(plan_id, summary, [e for e, r in results.items() if r])
                    notifier.send(f"{env} waits for approval by {' or '.join(gate.approvers)}", "warn")
                    decision = wait_for_approval(env, gate, text)
                    if env == replaying_until:
                        notifier.muted = False
                    notifier.send(f"{env} {decision.describe()}", "ok" if decision.approved else "fail")
                    if not decision.approved:
                        results[env] = f"not applied: {decision.describe()}"
                        return Failed(message=f"{env} {decision.describe()}", data={"plan_id": plan_id, **results})
                elif not summary.has_changes:
                    results[env] = "no changes"
                    logger.info("%s: the reviewed plan has no changes", env)
                    continue
                # behind a gate, planned again after the answer and applied only if still the reviewed plan
                done = apply_terraform(config, env, plan_file, plan_id, summary.fingerprint, bool(gate), work)
                results[env] = f"{done}: {summary.counts()}" if done == "applied" else done
                notifier.send(f"{env}: {results[env]}", "ok")
        except Exception as exc:
            notifier.muted = False  # a failure is always news
            results[env] = f"failed: {exc}"
            notifier.send(f"{env}: {results[env]}; later environments untouched", "fail")
            logger.error("%s", results[env])
            return Failed(message=f"{env}: {exc}", data={"plan_id": plan_id, **results})
    create_markdown_artifact(
        key="terraform-apply",
        markdown="\n".join(
            [f"### Terraform apply of `{plan_id[:12]}`", ""] + [f"- {e}: {r}" for e, r in results.items()]
        ),
        description=f"terraform apply {plan_id}",
    )
    notifier.send("finished: " + "; ".join(f"{e} {r}" for e, r in results.items()), "ok")
    return {"plan_id": plan_id, **results}
