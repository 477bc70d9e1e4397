"""``opcd setup``'s work pools: what a run's job variables can no longer change on them.

Against the Prefect test server; the job configuration is rendered by Prefect's own code, as the
process worker does for each flow run (``ProcessJobConfiguration.resolve_for_flow_run``).
"""

from __future__ import annotations

import asyncio
import shlex
import sys
from typing import Any

import pytest

from deployments.setup import ensure_pool, job_template

EVIL = {"env": {"OPCD_REF": "evil", "GITHUB_API_URL": "http://127.0.0.1:9"}, "command": "sh -c 'echo evil'",
        "working_dir": "/tmp"}  # fmt: skip


def rendered(pool_name: str, job_variables: dict[str, Any]) -> Any:
    """The job configuration a process worker of ``pool_name`` prepares for a run given ``job_variables``."""
    from prefect.client.orchestration import get_client
    from prefect.workers.process import ProcessJobConfiguration

    async def render() -> Any:
        async with get_client() as client:
            flow_id = await client.create_flow_from_name("tiny")
            deployment_id = await client.create_deployment(
                flow_id, f"on-{pool_name}", work_pool_name=pool_name, entrypoint="flows/tiny.py:tiny"
            )
            run = await client.create_flow_run_from_deployment(deployment_id, job_variables=job_variables)
            pool = await client.read_work_pool(pool_name)
            return await ProcessJobConfiguration.resolve_for_flow_run(
                run, client=client, work_pool=pool, worker_name="worker"
            )

    return asyncio.run(render())


def test_a_runs_job_variables_set_no_environment_command_or_directory_on_opcds_pools(
    prefect_server: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.workers.process import ProcessWorker

    monkeypatch.setenv("OPCD_REF", "main")  # the worker's own
    with get_client(sync_client=True) as client:
        # a pool as `prefect work-pool create --type process` makes it (and a worker fills in): the run decides
        default = ProcessWorker.get_default_base_job_template()
        client.create_work_pool(WorkPoolCreate(name="opcd-setup-old", type="process", base_job_template=default))
        before = rendered("opcd-setup-old", EVIL)
        assert (before.env["OPCD_REF"], before.command, str(before.working_dir)) == ("evil", EVIL["command"], "/tmp")

        changes = [ensure_pool(client, "opcd-setup-old", dry_run=False) for _ in range(2)]
        assert [(c.action, c.detail) for c in changes] == [
            ("updated", "base job template: job variables env, command, working_dir fixed"), ("unchanged", ""),
        ]  # fmt: skip
        assert client.read_work_pool("opcd-setup-old").base_job_template == job_template()
        assert ensure_pool(client, "opcd-setup-new", dry_run=False).action == "created"
        assert ensure_pool(client, "opcd-setup-new", dry_run=False).action == "unchanged"

    for pool in ("opcd-setup-old", "opcd-setup-new"):
        after = rendered(pool, EVIL)
        assert after.env["OPCD_REF"] == "main" and after.env.get("GITHUB_API_URL") != "http://127.0.0.1:9"
        assert shlex.split(after.command) == [sys.executable, "-m", "prefect.engine"]  # Prefect's own
        assert after.working_dir is None  # a temporary directory per run
        assert after.stream_output is True and after.labels  # the rest of Prefect's template still applies
