"""promote/abort find the running bake and refuse clearly when there is none (no deploy needed)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from prefect import flow

from opcd.config import load_config
from opcd.errors import DeployFailed
from tests.conftest import Project


@flow(name="stand-in-bake")
def _stand_in() -> None:
    """Only its runs are used: flow runs created through the API, never executed."""


def write_latest(project: Project, **fields: Any) -> None:
    record = {"component": "backend", "environment": "dev", "action": "deploy", "version": "v9", **fields}
    project.client("s3").put_object(
        Bucket="outreachpass-artifacts", Key="ledger/dev/backend/latest.json", Body=json.dumps(record).encode()
    )


def flow_run(state: str) -> str:
    from prefect.client.orchestration import get_client
    from prefect.states import Pending, Running

    with get_client(sync_client=True) as client:
        run = client.create_flow_run(_stand_in, name="backend v9 to dev", state=Pending())
        if state == "running":
            client.set_flow_run_state(run.id, Running(), force=True)
    return str(run.id)


def test_no_bake_without_a_shifting_record(project: Project, prefect_server: None) -> None:
    code, out, err = project.cli("abort", "backend", "--env", "dev")
    assert code == 2 and "no bake is running for backend in dev (it has no run recorded)" in err

    write_latest(project, outcome="shifting", flow_run_id=flow_run("running"), traffic="all-at-once")
    code, out, err = project.cli("promote", "backend", "--env", "dev")
    assert code == 2 and "moves traffic all at once: there is no bake" in err


def test_a_run_that_is_not_running_is_refused(project: Project, prefect_server: None) -> None:
    write_latest(project, outcome="shifting", flow_run_id=flow_run("pending"), traffic="canary10-5m")
    code, out, err = project.cli("promote", "backend", "--env", "dev")
    assert code == 2 and "(backend v9 to dev) is Pending, not running" in err

    write_latest(project, outcome="shifting", flow_run_id="00000000-0000-4000-8000-000000000000", traffic="canary10-5m")
    code, out, err = project.cli("abort", "backend", "--env", "dev")
    assert code == 2 and "is not on this Prefect API — point PREFECT_API_URL" in err


def test_one_command_per_bake(project: Project, prefect_server: None) -> None:
    from opcd import control
    from opcd.aws import resolve_target

    run_id = flow_run("running")
    write_latest(
        project, outcome="shifting", flow_run_id=run_id, traffic="canary10-5m", lambda_version="3",
        previous_lambda_version="2", version="v9",
    )  # fmt: skip
    config = load_config(project.config_path)
    target = resolve_target(config.state_dir(), "us-east-1")
    bake = control.find_running_bake(config, target, "backend", "dev")
    assert control.bake_facts(bake)["new_version"] == "3" and bake.primary == "2"

    code, out, err = project.cli("promote", "backend", "--env", "dev", "--reason", "fine", "--no-wait")
    assert code == 0 and "sent promote to backend v9 to dev" in out
    code, out, err = project.cli("abort", "backend", "--env", "dev", "--no-wait")
    assert code == 2 and "backend v9 to dev already received promote from" in err

    # the alias never reaches version 3 here: following it ends with a clear error, not a hang
    with pytest.raises(DeployFailed, match="did not move to version 3 within 0s"):
        control.wait_for_alias(target, bake.function, "3", timeout=0, sleep=lambda s: None)
