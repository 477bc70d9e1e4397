"""The progress channel: the steps a run takes, as they happen, for whoever watches in this process.

Flows and tasks say which step of which component in which environment runs now (``report``); the
``opcd`` command, when it runs the flow in its own process, listens (``listening``) and shows one
line per step (``cli/progress.py``). Nobody listens on a worker: there ``report`` costs one check,
and the run's Prefect log is what tells its story.

A report names its component and environment, or takes them from where it is made: a block run
``about(component, environment)`` (a deploy's body run inside a release's task), else the flow run
it is made in: its ``environment`` parameter, and its ``component`` parameter or, for the flows
named after their component (``deploy-backend``), that name.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from enum import StrEnum

from prefect.context import FlowRunContext


class State(StrEnum):
    """How a step stands: the display colours and marks it by this."""

    PENDING = "pending"  # not started
    RUNNING = "running"
    WAITING = "waiting"  # for an approval, a lock
    OK = "ok"  # the row's last step: done
    WARN = "warn"  # done, not as asked (rolled back on purpose, nothing to do)
    FAILED = "failed"


@dataclass(frozen=True)
class Step:
    """One step of one row (a component in an environment; ``environment`` "build" for its build)."""

    component: str
    environment: str
    name: str  # publish, smoke, shift 10%, deployed …
    detail: str = ""
    state: State = State.RUNNING
    at: float = 0.0  # time.monotonic() when reported


Listener = Callable[[Step], None]
_listeners: list[Listener] = []
_lock = threading.Lock()


@contextmanager
def listening(listener: Listener) -> Iterator[None]:
    """Call ``listener`` with every step reported in this process while the block runs."""
    with _lock:
        _listeners.append(listener)
    try:
        yield
    finally:
        with _lock:
            _listeners.remove(listener)


# Set by ``about``; Prefect copies the context into the tasks a block submits, so they see it too.
_about: ContextVar[tuple[str, str] | None] = ContextVar("opcd_progress_about", default=None)


@contextmanager
def about(component: str, environment: str) -> Iterator[None]:
    """Reports made in the block (and the tasks it submits) are about ``component`` in ``environment``."""
    token = _about.set((component, environment))
    try:
        yield
    finally:
        _about.reset(token)


def subject() -> tuple[str, str] | None:
    """(component, environment) the code runs for: ``about``'s, else its flow run's when it names them."""
    if (given := _about.get()) is not None:
        return given
    ctx = FlowRunContext.get()
    run = ctx.flow_run if ctx else None
    if run is None:
        return None
    params = run.parameters or {}
    component = params.get("component")
    if component is None and ctx is not None and ctx.flow is not None and ctx.flow.name.startswith("deploy-"):
        component = ctx.flow.name.removeprefix("deploy-")
    environment = params.get("environment")
    if isinstance(component, str) and isinstance(environment, str):
        return component, environment
    return None


def report(
    name: str,
    detail: str = "",
    state: State = State.RUNNING,
    component: str | None = None,
    environment: str | None = None,
) -> None:
    """Say that a step starts (or how a row ended). Never fails the run: a listener's error is dropped."""
    if not _listeners:
        return
    if component is None or environment is None:
        found = subject()
        if found is None:
            return
        component, environment = component or found[0], environment or found[1]
    step = Step(component, environment, name, detail, state, time.monotonic())
    with _lock:
        listeners = list(_listeners)
    for listener in listeners:
        try:
            listener(step)
        except Exception:  # noqa: S112 - showing progress must never break a deploy
            continue
