"""A real ``prefect server start`` for the end-to-end tests: a free loopback port, its own home."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
