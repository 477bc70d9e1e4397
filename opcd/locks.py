"""Locks on the Prefect server: Prefect global concurrency limits with one slot each.

- ``opcd-env-{environment}-{component}``: one change at a time to one component in one environment
  (a deploy or a rollback). Different components of an environment may change together: that is
  what a release does, in parallel.
- ``opcd-release-{environment}``: one release at a time per environment, held while the release
  deploys there (not while it waits for an approval), so two releases queue instead of interleaving.

A release takes its environment's locks together: the release slot and every component's (and
region's) slot it deploys there, in one request, before the first deploy starts, and keeps them until
the environment is done (its deploys, and the rollback of the others when one failed). What runs
inside that hold (the release's deploy and rollback tasks, in its context) finds its lock already
held and takes nothing. One atomic request instead of one per deploy: nothing changes there while
the release waits, and on SQLite the deploys no longer race to take their slots at once (the
embedded server answers such a burst with 503 "database is locked", which Prefect's client retries
after 2 s, then 4 s, then 8 s). The release waits for every deploy and rollback it started before it
leaves the hold, even when its own thread is interrupted (``flows.release.wait_all``). The request
waits without a limit, as a release always waited for another: a lock a killed holder left on a
server that never revokes it (the ephemeral one) keeps the release waiting, and saying who holds it.

``opcd setup`` creates the limits on a server; a run also creates its limit when it is missing,
because Prefect silently skips a limit that does not exist unless asked to be strict.

Who holds a lock: Prefect 3.9 keeps a lease's holder in the server's lease storage, which no API
route reads for a global limit (only the v1 tag limits list task-run holders). So each holder also
writes its own record, the Prefect Variable ``opcd-lock-holder-<lock>`` (flow run id and name, host,
pid, since when), on acquiring and clears it before releasing the slot. A run that waits for a lock
logs that record every few seconds. A record still there when the slot was acquired means the
previous holder never released: its lease expired because its process died (a live holder renews
it, and a holder whose renewal fails is interrupted by Prefect: a release, in its own thread,
then waits for the deploys it started, which go on to their end). That run, if Prefect still shows it
Running (and, when it ran on this host, its process is gone), is marked Crashed, naming the run
that found it dead.
"""

from __future__ import annotations

import contextvars
import os
import socket
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, VariableCreate, VariableUpdate
from prefect.client.schemas.objects import StateType
from prefect.concurrency.sync import concurrency
from prefect.context import FlowRunContext
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
from prefect.states import Crashed

from opcd.logs import run_logger


def limit_name(environment: str, component: str, region: str | None = None) -> str:
    """``opcd-env-ENV-COMPONENT``; ``opcd-env-ENV-REGION-COMPONENT`` in an environment of several regions."""
    return f"opcd-env-{environment}-{region}-{component}" if region else f"opcd-env-{environment}-{component}"


def release_limit_name(environment: str) -> str:
    return f"opcd-release-{environment}"


def ensure_limit(name: str) -> bool:
    """Create the one-slot limit ``name`` when missing; True when it was created."""
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
            return False
        except ObjectNotFound:
            pass
        try:
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
        except ObjectAlreadyExists:
            return False
        return True


# The slot is a lease the holder renews while it runs; a process that dies (killed mid-deploy)
# stops renewing, and the server frees the slot once the lease runs out. 60 s is the server's minimum.
LEASE_SECONDS = 60.0


WAIT_LOG_SECONDS = 5.0  # how often a waiting run says who holds the lock


@dataclass(frozen=True)
class Holder:
    """Who holds a lock: the flow run (when the lock is taken inside one), where, since when (UTC)."""

    flow_run_id: str | None
    flow_run_name: str | None
    host: str
    pid: int
    since: str

    @classmethod
    def me(cls) -> Holder:
        ctx = FlowRunContext.get()
        run = ctx.flow_run if ctx else None
        return cls(
            str(run.id) if run else None, run.name if run else None, socket.gethostname(), os.getpid(),
            datetime.now(UTC).isoformat(timespec="seconds"),
        )  # fmt: skip

    def same_run(self, other: Holder) -> bool:
        if self.flow_run_id or other.flow_run_id:
            return self.flow_run_id == other.flow_run_id
        return (self.host, self.pid) == (other.host, other.pid)

    def __str__(self) -> str:
        who = f"run {self.flow_run_name} ({self.flow_run_id})" if self.flow_run_id else "a process outside a run"
        return f"{who} on {self.host} pid {self.pid} since {self.since}"


def _variable(name: str) -> str:
    return f"opcd-lock-holder-{name}"


def read_holder(name: str) -> Holder | None:
    """The holder record of lock ``name``; None when there is none (free, or held by a holder without one)."""
    with get_client(sync_client=True) as client:
        variable = client.read_variable_by_name(_variable(name))
    try:
        return Holder(**variable.value) if variable and isinstance(variable.value, dict) else None
    except TypeError:
        return None


def _clear_holder(name: str, holder: Holder) -> None:
    if (current := read_holder(name)) is not None and current.same_run(holder):
        with get_client(sync_client=True) as client:
            client.delete_variable_by_name(_variable(name))


def _log_while_waiting(names: list[str], logger: Any, acquired: threading.Event) -> None:
    """Every WAIT_LOG_SECONDS until ``acquired``: who holds the locks ``names`` (the first time after 1 s)."""
    interval = min(1.0, WAIT_LOG_SECONDS)
    what = f"lock {names[0]}" if len(names) == 1 else f"locks {', '.join(names)}"
    while not acquired.wait(interval):
        interval = WAIT_LOG_SECONDS
        try:
            holders = {name: read_holder(name) for name in names}
        except Exception as exc:  # the server busy: say so, try again at the next interval
            logger.info("Waiting for %s (its holder could not be read: %s)", what, exc)
            continue
        if acquired.is_set():
            continue
        known = {name: holder for name, holder in holders.items() if holder is not None}
        if len(names) > 1 and known:
            detail = "; ".join(f"{name} held by {holder}" for name, holder in known.items())
        else:
            detail = f"held by {next(iter(known.values()), 'a holder that left no record')}"
        logger.info("Waiting for %s: %s", what, detail)


def _take_over(name: str, me: Holder, logger: Any) -> None:
    """Just acquired: write this holder's record (one request when none is there, the usual case). A record
    left behind is a dead holder's: mark its run Crashed if still Running, then replace the record."""
    value: Any = asdict(me)
    with get_client(sync_client=True) as client:
        try:
            client.create_variable(VariableCreate(name=_variable(name), value=value, tags=["opcd-lock"]))
            return
        except ObjectAlreadyExists:
            pass
    dead = read_holder(name)
    if dead is not None and not dead.same_run(me):
        logger.warning("Lock %s was never released by %s: its lease expired (the holder died)", name, dead)
        if dead.flow_run_id:
            _mark_crashed(name, dead, me, logger)
    with get_client(sync_client=True) as client:
        client.update_variable(VariableUpdate(name=_variable(name), value=value))


def _mark_crashed(name: str, dead: Holder, me: Holder, logger: Any) -> None:
    finder = f"run {me.flow_run_name} ({me.flow_run_id})" if me.flow_run_id else f"pid {me.pid} on {me.host}"
    message = f"lock {name}'s lease expired: found dead by {finder}"
    if dead.host == socket.gethostname() and _alive(dead.pid):
        logger.warning("Not marking run %s Crashed: its process %d still runs here", dead.flow_run_id, dead.pid)
        return
    with get_client(sync_client=True) as client:
        try:
            run = client.read_flow_run(UUID(str(dead.flow_run_id)))
        except (ObjectNotFound, ValueError):
            return
        if run.state is None or run.state.type != StateType.RUNNING:
            return  # ended, or never started: nothing to correct
        client.set_flow_run_state(run.id, Crashed(message=message), force=True)
    logger.warning("Marked run %s (%s) Crashed: %s", dead.flow_run_name, dead.flow_run_id, message)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


# The locks this context holds (set by :func:`_hold`): Prefect runs a flow's tasks and child flows in
# copies of its context, so they see what the run that started them holds; no other run does.
_HELD: contextvars.ContextVar[frozenset[str]] = contextvars.ContextVar("opcd_locks_held", default=frozenset())


@contextmanager
def _hold(names: list[str], timeout: float | None) -> Iterator[None]:
    """Hold the slots ``names`` together (one atomic request) for the block; those this context already
    holds are not taken again."""
    names = [name for name in dict.fromkeys(names) if name not in _HELD.get()]
    if not names:
        yield
        return
    for name in names:
        ensure_limit(name)
    logger = run_logger("opcd.locks")
    acquired = threading.Event()
    context = contextvars.copy_context()  # the run's Prefect settings and client, in the logging thread too
    waiting = threading.Thread(target=context.run, args=(_log_while_waiting, names, logger, acquired), daemon=True)
    waiting.start()
    try:
        with concurrency(names, occupy=1, timeout_seconds=timeout, strict=True, lease_duration=LEASE_SECONDS):
            acquired.set()
            me = Holder.me()
            token = _HELD.set(_HELD.get() | frozenset(names))
            try:
                for name in names:
                    try:
                        _take_over(name, me, logger)
                    except Exception as exc:  # bookkeeping only: the lock is held and the change may go on
                        logger.warning("Lock %s: the holder record could not be checked or written: %s", name, exc)
                yield
            finally:  # the record goes before the slot: a record outlives its slot only when its holder died
                _HELD.reset(token)
                for name in names:
                    try:
                        _clear_holder(name, me)
                    except Exception as exc:
                        logger.warning("Lock %s: the holder record could not be cleared: %s", name, exc)
    finally:
        acquired.set()
        waiting.join()


@contextmanager
def environment_lock(
    environment: str, component: str, timeout: float | None = 3600.0, region: str | None = None
) -> Iterator[None]:
    """Hold ``component``'s slot in ``environment`` (its ``region``, in one of several) for the block (waits for
    another change to it); nothing to take when a release running this holds it already."""
    with _hold([limit_name(environment, component, region)], timeout):
        yield


@contextmanager
def release_lock(
    environment: str, components: Iterable[tuple[str, str | None]] = (), timeout: float | None = None
) -> Iterator[None]:
    """Hold the environment's release slot and the slots of ``components`` there ((component, region)
    pairs; region None in an environment of one) for the block, all taken together (waits for another
    release there, and for any change to one of those components)."""
    names = [release_limit_name(environment), *(limit_name(environment, c, r) for c, r in components)]
    with _hold(names, timeout):
        yield
