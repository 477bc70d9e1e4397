"""tests/postgres.py: a PostgreSQL cluster of its own, as an unprivileged user, gone afterwards."""

from __future__ import annotations

import os
import socket
import subprocess

import pytest

from tests.postgres import postgres, unavailable

pytestmark = pytest.mark.skipif(unavailable() is not None, reason=str(unavailable()))


def test_a_cluster_serves_its_databases_on_loopback_and_leaves_nothing() -> None:
    with postgres() as pg:
        url = pg.database("prefect")
        assert url == f"postgresql+asyncpg://opcd:{pg.password}@127.0.0.1:{pg.port}/prefect"
        # without the password, loopback is refused (another user of the machine cannot get in)
        env = {k: v for k, v in os.environ.items() if k != "PGPASSWORD"}
        refused = subprocess.run(
            [str(pg.bin / "psql"), "-h", "127.0.0.1", "-p", str(pg.port), "-U", "opcd", "-w", "-XAtc", "SELECT 1",
             "prefect"], capture_output=True, text=True, env=env, check=False,
        )  # fmt: skip
        assert refused.returncode != 0 and "password" in refused.stderr
        assert pg.sql("prefect", "SELECT current_database(), current_setting('listen_addresses')").split() == [
            "prefect|127.0.0.1"
        ]
        assert pg.sql("prefect", "SHOW fsync").strip() == "off"  # a test's database need not survive a crash
        data = pg.directory / "data"
        assert data.is_dir()
        if os.geteuid() == 0:  # PostgreSQL refuses root: the cluster belongs to an unprivileged user
            assert data.stat().st_uid != 0
    assert not pg.directory.exists()
    with socket.socket() as sock, pytest.raises(ConnectionRefusedError):
        sock.connect(("127.0.0.1", pg.port))


def test_a_durable_cluster_keeps_postgres_defaults() -> None:
    with postgres(durable=True) as pg:
        assert pg.sql("postgres", "SHOW fsync").strip() == "on"
