"""A real ``prefect server start`` for the end-to-end tests: a free loopback port, its own home, on PostgreSQL.

The servers keep their state in a PostgreSQL cluster of this test process (``tests/postgres.py``), one
database each, as a team's server would; where PostgreSQL cannot run, on Prefect's default SQLite
file in their home (``test_the_servers_run_on_postgres`` is then skipped, saying why).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.postgres import BIN, Postgres, postgres, prefect_server, unavailable

__all__ = ["BIN", "prefect_server", "wait_for_approval_wait"]


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[Postgres | None]:
    """This test process's PostgreSQL cluster; ``None`` where none can run (:func:`tests.postgres.unavailable`)."""
    if unavailable():
        yield None
        return
    with postgres() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def prefect_database(postgres_cluster: Postgres | None) -> Callable[[str], dict[str, str]]:
    """A new database ``name`` for one Prefect server: the environment that points the server at it.

    Empty where PostgreSQL cannot run: the server keeps Prefect's default SQLite file in its home.
    """

    def database(name: str) -> dict[str, str]:
        if postgres_cluster is None:
            return {}
        return {"PREFECT_API_DATABASE_CONNECTION_URL": postgres_cluster.database(name)}

    return database


def wait_for_approval_wait(api: str, watched: subprocess.Popen[bytes], log: Path) -> None:
    """Until a flow run is paused (or suspended) on the server at ``api``; ``watched`` must not end first.

    Polled through the REST API, which costs nothing: a CLI started every half second would start
    Python and import Prefect each time.
    """
    deadline = time.monotonic() + 300  # a guard against a hang, not a timing assertion
    body = {"flow_runs": {"state": {"type": {"any_": ["PAUSED"]}}}, "limit": 1}
    while time.monotonic() < deadline:
        assert watched.poll() is None, log.read_text()[-3000:]
        if httpx.post(f"{api}/flow_runs/filter", json=body, timeout=30).json():
            return
        time.sleep(0.5)
    raise AssertionError("no run ever waited for an approval")
