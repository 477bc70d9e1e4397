"""Database migrations, run from the built package with the database URL from Secrets Manager.

Migrations must stay backward compatible with the release before them: a rollback moves code,
not schema.
"""

from __future__ import annotations

import hashlib
import io
import os
import shlex
import subprocess
import tempfile
import zipfile
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger
from pydantic import SecretStr

from opcd.errors import DeployFailed
from opcd.progress import report
from opcd.pythons import find_python
from tasks.build import publish


def unpack(package: bytes, cache_dir: Path) -> Path:
    """Unpack a package once per sha256 (its bytecode is then compiled once too)."""
    target = cache_dir / "unpacked" / hashlib.sha256(package).hexdigest()
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".unpack-"))
        zipfile.ZipFile(io.BytesIO(package)).extractall(tmp)
        publish(tmp, target)  # another run may have unpacked it meanwhile
    return target


def migration_process(
    package: bytes, command: str, runtime: str, database_url: str, cache_dir: Path
) -> tuple[list[str], Path, dict[str, str]]:
    """How ``command`` runs: its argv (``python`` is the runtime's Python), the unpacked package to run it in,
    and its environment (``PYTHONPATH`` the package, ``DATABASE_URL`` set)."""
    argv = shlex.split(command)
    if argv and argv[0] in ("python", "python3", runtime):
        argv[0] = find_python(runtime)
    work = unpack(package, cache_dir)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(work), "DATABASE_URL": database_url}
    return argv, work, env


@task(name="run-migrations", cache_policy=NO_CACHE)
def run_migrations(
    package: bytes, command: str, runtime: str, database_url: SecretStr, timeout: float, cache_dir: Path
) -> str:
    """Run ``command`` inside the unpacked package with ``DATABASE_URL`` set; return its last line."""
    logger = get_run_logger()
    secret = database_url.get_secret_value()
    argv, work, env = migration_process(package, command, runtime, secret, cache_dir)
    logger.info("Running migrations: %s", command)
    report("migrations", command)
    try:
        proc = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise DeployFailed(f"migrations did not finish within {timeout:.0f}s") from exc
    output = (proc.stdout + proc.stderr).strip()
    if secret:
        output = output.replace(secret, "***")
    for line in output.splitlines()[-20:]:
        logger.info("migrate | %s", line)
    last = output.splitlines()[-1] if output else f"exit {proc.returncode}"
    if proc.returncode != 0:
        raise DeployFailed(
            f"migrations failed: {last}"[:300], "live was not touched; fix the migration and deploy again"
        )
    return last
