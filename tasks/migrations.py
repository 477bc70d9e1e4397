"""Database migrations, run from the built package with the database URL from Secrets Manager.

Migrations must stay backward compatible with the release before them: a rollback moves code,
not schema.
"""

from __future__ import annotations

import io
import os
import shlex
import subprocess
import tempfile
import zipfile

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger
from pydantic import SecretStr

from opcd.errors import DeployFailed
from opcd.pythons import find_python


@task(name="run-migrations", cache_policy=NO_CACHE)
def run_migrations(package: bytes, command: str, runtime: str, database_url: SecretStr, timeout: float) -> str:
    """Unpack the package, run ``command`` in it with ``DATABASE_URL`` set; return its last line."""
    logger = get_run_logger()
    argv = shlex.split(command)
    if argv and argv[0] in ("python", "python3", runtime):
        argv[0] = find_python(runtime)
    secret = database_url.get_secret_value()
    with tempfile.TemporaryDirectory(prefix="opcd-migrate-") as work:
        zipfile.ZipFile(io.BytesIO(package)).extractall(work)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": work,
            "PYTHONDONTWRITEBYTECODE": "1",
            "DATABASE_URL": secret,
        }
        logger.info("Running migrations: %s", command)
        try:
            proc = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired as exc:
            raise DeployFailed(f"migrations did not finish within {timeout:.0f}s") from exc
    output = (proc.stdout + proc.stderr).replace(secret, "***") if secret else proc.stdout + proc.stderr
    for line in output.strip().splitlines()[-20:]:
        logger.info("migrate | %s", line)
    if proc.returncode != 0:
        last = output.strip().splitlines()[-1] if output.strip() else f"exit {proc.returncode}"
        raise DeployFailed(
            f"migrations failed: {last}"[:300], "live was not touched; fix the migration and deploy again"
        )
    return output.strip().splitlines()[-1] if output.strip() else "migrations done"
