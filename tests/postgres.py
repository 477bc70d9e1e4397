"""A real ``prefect server start`` on a throwaway PostgreSQL server (Debian's ``postgresql``), on loopback.

Used by the end-to-end tests (``tests/e2e/conftest.py``) and the benchmarks (``bench/``)::

    with postgres() as pg, prefect_server(home, PREFECT_API_DATABASE_CONNECTION_URL=pg.database("prefect")) as api:
        ...  # api: http://127.0.0.1:PORT/api; without the database setting, Prefect's SQLite file in home

``initdb`` makes a cluster in a new directory of the system's temporary directory; ``pg_ctl`` starts
it listening on 127.0.0.1 only (its socket in that 0700 directory; loopback connections need a random
per-cluster password), and stops it and removes the directory afterwards. PostgreSQL refuses to
run as root: as root, the cluster belongs to the unprivileged ``postgres`` user (made by the Debian
package), or ``nobody``. :func:`unavailable` says why none can run here (the tests skip saying it).
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

BIN = Path(sys.executable).parent

SUPERUSER = "opcd"  # the cluster's superuser (initdb -U): a random password on loopback
INSTALL_HINT = "install Debian's postgresql package (`make test` and `make bench` do, as root with apt)"
# A test's database need not survive a crash of the machine: no fsync (a benchmark keeps the defaults).
FAST = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")


def bindir() -> Path | None:
    """The directory of ``initdb``, ``pg_ctl`` and ``postgres``: Debian's newest version, else the PATH's."""
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3]))
    if versions:
        return Path(versions[-1]).parent
    found = shutil.which("pg_ctl")
    return Path(found).resolve().parent if found and shutil.which("initdb") else None


def run_as() -> str | None:
    """The unprivileged user to run PostgreSQL as when this process is root (``None``: this process's user)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    return None


def unavailable() -> str | None:
    """Why no PostgreSQL server can be started here; ``None`` when one can."""
    if bindir() is None:
        return f"PostgreSQL is not installed (no initdb/pg_ctl): {INSTALL_HINT}"
    if os.geteuid() == 0 and run_as() is None:
        return "PostgreSQL refuses to run as root, and there is no `postgres` or `nobody` user to run it as"
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Postgres:
    """A running cluster: its port, its directory (data, socket, log) and binaries."""

    port: int
    directory: Path
    bin: Path
    user: str | None
    password: str

    def database(self, name: str) -> str:
        """Create the database ``name``; its SQLAlchemy URL for Prefect (driver asyncpg)."""
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER, name)
        return f"postgresql+asyncpg://{SUPERUSER}:{self.password}@127.0.0.1:{self.port}/{name}"

    def sql(self, database: str, query: str) -> str:
        """``psql``'s unaligned output of one query (no header)."""
        return self._run(
            "psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER, "-d", database, "-XAtc", query
        )  # fmt: skip

    def _run(self, tool: str, *args: str) -> str:
        env = {**os.environ, "PGPASSWORD": self.password}
        proc = subprocess.run([str(self.bin / tool), *args], capture_output=True, text=True, check=False, env=env)
        if proc.returncode != 0:
            raise RuntimeError(f"{tool} failed: {proc.stderr.strip() or proc.stdout.strip()}")
        return proc.stdout


@contextmanager
def postgres(durable: bool = False) -> Iterator[Postgres]:
    """A new PostgreSQL cluster on a free loopback port, stopped and removed on exit.

    ``durable=False`` turns fsync off (tests); ``True`` keeps PostgreSQL's defaults (benchmarks).
    """
    reason = unavailable()
    if reason:
        raise RuntimeError(reason)
    bin_, user = bindir(), run_as()
    assert bin_ is not None
    directory = Path(tempfile.mkdtemp(prefix="opcd-postgres-"))
    data, log = directory / "data", directory / "postgres.log"
    # Loopback connections need the superuser's password (random, per cluster): other local users of a
    # shared machine cannot connect; the socket sits in this 0700 directory.
    password = secrets.token_urlsafe(24)
    password_file = directory / "password"
    password_file.write_text(password + "\n")
    password_file.chmod(0o600)
    if user is not None:  # everything below belongs to the user PostgreSQL runs as
        entry = pwd.getpwnam(user)
        os.chown(directory, entry.pw_uid, entry.pw_gid)
        os.chown(password_file, entry.pw_uid, entry.pw_gid)

    def as_user(*argv: str) -> None:
        proc = subprocess.run(
            argv, cwd=directory, user=user, capture_output=True, text=True, check=False,
            env={**os.environ, "LC_ALL": "C.UTF-8", "TZ": "UTC"},
        )  # fmt: skip
        if proc.returncode != 0:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{Path(argv[0]).name} failed: {proc.stderr.strip() or proc.stdout.strip()}\n{tail}")

    port = free_port()
    options = ["-p", str(port), "-k", str(directory), "-c", "listen_addresses=127.0.0.1"]
    if not durable:
        for setting in FAST:
            options += ["-c", setting]
    started = False
    try:
        as_user(str(bin_ / "initdb"), "-D", str(data), "-U", SUPERUSER, "--auth-local=trust",
                "--auth-host=scram-sha-256", f"--pwfile={password_file}", "-E", "UTF8", "--no-sync")  # fmt: skip
        as_user(str(bin_ / "pg_ctl"), "start", "-w", "-t", "120", "-D", str(data), "-l", str(log),
                "-o", " ".join(options))  # fmt: skip
        started = True
        yield Postgres(port, directory, bin_, user, password)
    finally:
        try:
            if started:
                as_user(str(bin_ / "pg_ctl"), "stop", "-w", "-t", "60", "-m", "fast", "-D", str(data))
        finally:
            shutil.rmtree(directory, ignore_errors=True)


def wait_until_healthy(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 180  # a guard against a hang, not a timing assertion
    while True:
        assert process.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, f"{url} did not answer"
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)


@contextmanager
def prefect_server(home: Path, **env: str) -> Iterator[str]:
    """``prefect server start`` on a port that is not 4200 (``PREFECT_UI_API_URL`` names its API); its API URL."""
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    environ = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_UI_API_URL": api, **env}
    log_path = home / "server.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env=environ, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        wait_until_healthy(f"{api}/health", server, log_path)
        yield api
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
