"""Migrations run for real: a package unpacked once, its command in a new process, the secret kept out of logs."""

from __future__ import annotations

import io
import logging
import zipfile
from pathlib import Path

import pytest
from pydantic import SecretStr

from opcd.errors import DeployFailed
from tasks.migrations import run_migrations, unpack
from tests.tasks.conftest import logged

URL = SecretStr("postgresql://app:s3cret-pw@db.internal/app")
MIGRATE = """
import os, sys
url = os.environ["DATABASE_URL"]
print("connecting to", url)
print("applied 0002_add_events")
if os.environ.get("MIGRATE_FAIL") or "fail" in sys.argv:
    print("error: relation users already exists on", url, file=sys.stderr)
    sys.exit(3)
"""


def package(script: str = MIGRATE) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("migrate.py", script)
    return buffer.getvalue()


def run(tmp_path: Path, command: str = "python migrate.py", data: bytes | None = None, timeout: float = 120) -> str:
    last: str = run_migrations.fn(data or package(), command, "python3.11", URL, timeout, tmp_path / "cache")
    return last


def test_the_command_runs_in_the_package_with_the_database_url_and_logs_no_secret(
    tmp_path: Path, run_log: pytest.LogCaptureFixture
) -> None:
    assert run(tmp_path) == "applied 0002_add_events"
    lines = logged(run_log)
    assert lines == [
        "Running migrations: python migrate.py",
        "migrate | connecting to ***",
        "migrate | applied 0002_add_events",
    ]
    assert "s3cret-pw" not in "\n".join(lines)


def test_a_failing_migration_fails_the_deploy_with_its_last_line_masked(
    tmp_path: Path, run_log: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(DeployFailed) as caught:
        run(tmp_path, "python migrate.py fail")
    assert str(caught.value) == (
        "migrations failed: error: relation users already exists on ***"
        " — live was not touched; fix the migration and deploy again"
    )
    assert "s3cret-pw" not in "\n".join(r.getMessage() for r in run_log.records)


def test_a_migration_that_hangs_is_stopped_at_its_timeout(tmp_path: Path, run_log: pytest.LogCaptureFixture) -> None:
    with pytest.raises(DeployFailed) as caught:
        run(tmp_path, "python -c 'import time; time.sleep(60)'", timeout=0.5)
    assert str(caught.value) == "migrations did not finish within 0s"
    assert logged(run_log, logging.INFO) == ["Running migrations: python -c 'import time; time.sleep(60)'"]


def test_a_package_is_unpacked_once_per_content(tmp_path: Path) -> None:
    first = unpack(package(), tmp_path)
    (first / "marker").write_text("kept")
    assert unpack(package(), tmp_path) == first and (first / "marker").read_text() == "kept"
    other = unpack(package("print('other')\n"), tmp_path)
    assert other != first and (other / "migrate.py").read_text() == "print('other')\n"
