"""Locks on the real Prefect test server: a waiting run says who holds the lock and since when; a
holder killed with SIGKILL is found dead once its lease expires, and its run is marked Crashed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from prefect import flow, task
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import StateType
from prefect.context import FlowRunContext
from prefect.events.worker import EventsWorker
from prefect.logging.handlers import APILogWorker
from prefect.settings import PREFECT_API_URL, temporary_settings

from opcd import locks
from opcd.locks import environment_lock, limit_name, read_holder, release_limit_name, release_lock
from tests.conftest import start_in_thread
from tests.e2e.conftest import prefect_server as real_prefect_server

ROOT = Path(__file__).resolve().parent.parent.parent


def wait_until(check: object, what: str) -> None:
    deadline = time.monotonic() + 300  # a guard against a hang, not a timing assertion
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.1)


def run_id() -> str:
    ctx = FlowRunContext.get()
    assert ctx is not None and ctx.flow_run is not None
    return str(ctx.flow_run.id)


def test_a_waiting_run_logs_who_holds_the_lock_and_since_when(
    prefect_server: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(locks, "WAIT_LOG_SECONDS", 0.2)
    component = f"locks-{uuid.uuid4().hex[:8]}"
    name = limit_name("dev", component)
    held, release = threading.Event(), threading.Event()

    @flow(name="lock-first", flow_run_name="first-holder")
    def first() -> str:
        with environment_lock("dev", component):
            held.set()
            release.wait(300)
        return run_id()

    @flow(name="lock-second", flow_run_name="second-holder")
    def second() -> str:
        with environment_lock("dev", component):
            return run_id()

    one = start_in_thread(first)
    wait_until(held.is_set, "the first run holds the lock")
    holder = read_holder(name)
    assert holder is not None and holder.flow_run_name == "first-holder"
    two = start_in_thread(second)
    line = f"Waiting for lock {name}: held by run first-holder ({holder.flow_run_id}) on "
    wait_until(lambda: line in caplog.text, "the second run logs the holder")
    assert f" since {holder.since}" in caplog.text.split(line, 1)[1].splitlines()[0]
    release.set()
    first_id, second_id = one.result().result(), two.result().result()
    assert first_id == holder.flow_run_id and second_id != first_id
    assert read_holder(name) is None  # released: the record went with the slot
    assert "was never released" not in caplog.text  # a holder that released is never taken for dead


def test_a_release_takes_its_environments_locks_in_one_request_and_its_deploys_take_none(
    prefect_server: None,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    lock_requests: list[list[str]],
) -> None:
    requests = lock_requests
    monkeypatch.setattr(locks, "WAIT_LOG_SECONDS", 0.2)
    environment = f"locks-{uuid.uuid4().hex[:8]}"
    names = [release_limit_name(environment), limit_name(environment, "api"), limit_name(environment, "web")]
    held, finish, order = threading.Event(), threading.Event(), []
    first_holds, first_ends = threading.Event(), threading.Event()

    @task
    def deploy(component: str) -> str | None:  # a task of the release: in a copy of its context
        with environment_lock(environment, component, timeout=60):  # fails, not hangs, if it must wait
            holder = read_holder(limit_name(environment, component))
            return holder.flow_run_name if holder else None

    @flow(name="lock-release", flow_run_name="the-release")
    def release() -> list[str | None]:
        with release_lock(environment, [("api", None), ("web", None)]):
            order.append("release holds")
            holders = [deploy.submit(component).result() for component in ("api", "web")]
            held.set()
            finish.wait(300)
            order.append("release done")
        return holders

    @flow(name="lock-deploy", flow_run_name="first-deploy")
    def first() -> None:
        with environment_lock(environment, "web"):
            order.append("a deploy holds web")
            first_holds.set()
            first_ends.wait(300)

    @flow(name="lock-deploy", flow_run_name="next-deploy")
    def standalone() -> None:
        with environment_lock(environment, "web"):
            order.append("a deploy holds web")

    zero = start_in_thread(first)
    wait_until(first_holds.is_set, "a deploy holds web")
    one = start_in_thread(release)
    waiting = f"Waiting for locks {', '.join(names)}: {names[2]} held by run first-deploy ("
    wait_until(lambda: waiting in caplog.text, "the release waits for the deploy, saying who holds web")
    first_ends.set()
    zero.result().result()
    wait_until(held.is_set, "the release holds its environment")
    assert requests == [[names[2]], names]  # one request for the release's three, none from its deploys
    assert [(h.flow_run_name if (h := read_holder(name)) else None) for name in names] == ["the-release"] * 3
    two = start_in_thread(standalone)
    wait_until(lambda: f"Waiting for lock {names[2]}: held by run the-release (" in caplog.text, "the deploy waits")
    finish.set()
    assert one.result().result() == ["the-release", "the-release"]  # what each deploy found: the release's hold
    two.result().result()
    assert order == ["a deploy holds web", "release holds", "release done", "a deploy holds web"]
    assert requests == [[names[2]], names, [names[2]]]
    assert all(read_holder(name) is None for name in names)


HOLDER = """
import time
from prefect import flow
from opcd.locks import environment_lock

@flow(name="lock-holder", flow_run_name="killed-holder")
def hold() -> None:
    with environment_lock("dev", {component!r}):
        print("holding", flush=True)
        time.sleep(600)

hold()
"""


@contextmanager
def sent_before_it_stops() -> Iterator[None]:
    """On leaving: this process's logs and events for the server sent while it still runs (else they are
    retried against a stopped server until the test session's end waits for them)."""
    try:
        yield
    finally:
        APILogWorker.drain_all()
        EventsWorker.drain_all()


@pytest.mark.e2e  # a real `prefect server start`, as the end-to-end tests run
def test_a_killed_holder_is_found_dead_and_its_run_marked_crashed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A real `prefect server start`: an ephemeral server (the test harness) never revokes an expired
    # lease (Prefect runs its lease repossessor only in a real server). Two of the server's settings
    # make the wait the lease itself: its repossessor looks for expired leases every second (default 15 s)
    # and a waiting client asks again within a second (its Retry-After capped at 1 s, default 30 s).
    component = f"locks-{uuid.uuid4().hex[:8]}"
    name = limit_name("dev", component)
    server_settings = {
        "PREFECT_SERVER_SERVICES_REPOSSESSOR_LOOP_SECONDS": "1",
        "PREFECT_SERVER_CONCURRENCY_MAXIMUM_CONCURRENCY_SLOT_WAIT_SECONDS": "1",
    }
    with (
        real_prefect_server(tmp_path, **server_settings) as api,
        temporary_settings({PREFECT_API_URL: api}),
        sent_before_it_stops(),
    ):
        env = {**os.environ, "PREFECT_API_URL": api, "PYTHONPATH": str(ROOT)}
        with subprocess.Popen(
            [sys.executable, "-c", HOLDER.format(component=component)], cwd=ROOT, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        ) as proc:  # fmt: skip
            try:
                assert proc.stdout is not None and proc.stdout.readline() == "holding\n"
                dead = read_holder(name)
                assert dead is not None and dead.flow_run_name == "killed-holder" and dead.pid == proc.pid
            finally:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
        assert dead.flow_run_id is not None
        with get_client(sync_client=True) as client:
            state = client.read_flow_run(uuid.UUID(dead.flow_run_id)).state
        assert state is not None and state.type == StateType.RUNNING  # Prefect cannot tell it died

        @flow(name="lock-next", flow_run_name="next-holder")
        def next_holder() -> str:
            with environment_lock("dev", component):
                return run_id()

        finder = next_holder(return_state=True).result()  # waits for the lease to expire (60 s)

        assert f"Waiting for lock {name}: held by run killed-holder ({dead.flow_run_id}) on " in caplog.text
        message = f"lock {name}'s lease expired: found dead by run next-holder ({finder})"
        with get_client(sync_client=True) as client:
            state = client.read_flow_run(uuid.UUID(dead.flow_run_id)).state
        assert state is not None and state.type == StateType.CRASHED and state.message == message
        assert f"Lock {name} was never released by run killed-holder ({dead.flow_run_id})" in caplog.text
        assert read_holder(name) is None
