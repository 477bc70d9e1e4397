"""prefect.yaml names real flows with parameters they accept."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def test_every_deployment_points_at_a_flow_with_its_parameters() -> None:
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    names = set()
    for deployment in spec["deployments"]:
        path, _, attr = deployment["entrypoint"].partition(":")
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        flow = getattr(module, attr)
        accepted = inspect.signature(flow.fn).parameters
        assert set(deployment.get("parameters", {})) <= set(accepted)
        names.add(f"{flow.name}/{deployment['name']}")  # as `prefect deployment run` names it
        # `prefect deploy --name FLOW/DEPLOYMENT` (opcd setup) finds a deployment by its entrypoint's function
        # name, FLOW with "-" as "_": a flow named otherwise cannot be deployed by name
        assert flow.name.replace("-", "_") == attr, f"{deployment['name']}: flow {flow.name!r} is defined as {attr}"
    assert names == {
        "release/release", "deploy-backend/deploy-backend", "deploy-worker/deploy-worker",
        "deploy-frontend/deploy-frontend", "deploy-ecs/deploy-ecs", "rollback/rollback",
        "terraform-plan/terraform-plan",
        "terraform-plan/terraform-plan-for-apply", "terraform-apply/terraform-apply",
        "pr-validation/pr-validation", "drift-check/drift-check",
    }  # fmt: skip


def test_releases_queue_and_drift_is_checked_every_six_hours_in_utc() -> None:
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    by_name = {d["name"]: d for d in spec["deployments"]}
    assert by_name["release"]["concurrency_limit"] == {"limit": 1, "collision_strategy": "ENQUEUE"}
    (schedule,) = by_name["drift-check"]["schedules"]
    assert schedule == {"cron": "0 */6 * * *", "timezone": "UTC", "active": True}


CHECKS = {"pr-validation", "terraform-plan", "drift-check"}  # no write credentials on their workers


def test_what_changes_aws_runs_on_the_deploy_pool_and_pull_requests_code_never_does() -> None:
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    pools = {d["name"]: d["work_pool"]["name"] for d in spec["deployments"]}
    assert {name for name, pool in pools.items() if pool == "opcd-checks"} == CHECKS
    assert {name for name, pool in pools.items() if pool == "opcd-deploy"} == set(pools) - CHECKS
    assert set(pools.values()) == {"opcd-deploy", "opcd-checks"}
    by_name = {d["name"]: d for d in spec["deployments"]}
    assert all(
        d["work_pool"] is by_name["release"]["work_pool"] for d in spec["deployments"] if d["name"] not in CHECKS
    )


def test_the_flow_code_is_cloned_from_the_repository_at_a_ref_on_every_run() -> None:
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    assert spec["pull"] == [{"prefect.deployments.steps.git_clone": {
        "repository": "{{ $OPCD_REPOSITORY }}", "branch": "{{ $OPCD_REF }}",
    }}]  # fmt: skip
    assert all("pull" not in d for d in spec["deployments"])  # no deployment runs from elsewhere


def test_only_the_deploy_pool_keeps_the_plan_terraform_apply_applies() -> None:
    """A plan kept by the checks pool (pull requests' code, read-only role) could be applied with deploy credentials."""
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    plans = {d["name"]: d for d in spec["deployments"] if d["entrypoint"] == "flows/terraform.py:terraform_plan"}
    assert set(plans) == {"terraform-plan", "terraform-plan-for-apply"}
    shown, kept = plans["terraform-plan"], plans["terraform-plan-for-apply"]
    assert (shown["work_pool"]["name"], shown["parameters"]) == ("opcd-checks", {"store": False})
    assert (kept["work_pool"]["name"], kept["parameters"]) == ("opcd-deploy", {"store": True})
    # whatever flow runs on the checks pool, none is set up to store (pinned false, not left to the default)
    for deployment in spec["deployments"]:
        path, _, attr = deployment["entrypoint"].partition(":")
        flow = getattr(importlib.import_module(path.removesuffix(".py").replace("/", ".")), attr)
        if deployment["work_pool"]["name"] == "opcd-checks" and "store" in inspect.signature(flow.fn).parameters:
            assert deployment.get("parameters", {}).get("store") is False, deployment["name"]
