"""The logger to use: the Prefect run's (its lines reach the run's log in the UI) inside a flow or
task run, else a plain ``logging`` logger (the CLI, a script)."""

from __future__ import annotations

import logging
from typing import Any

from prefect.exceptions import MissingContextError
from prefect.logging import get_run_logger


def run_logger(fallback: str) -> Any:
    """The current run's logger, or ``logging.getLogger(fallback)`` outside a run."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(fallback)


class NoEmptyTraceback(logging.Filter):
    """A record logged with ``exc_info=True`` while no exception is handled keeps its message, not ``NoneType: None``.

    Prefect's task engine logs so when a task *returns* a Failed state (the release's deploy task
    returns its child's Failed state, carrying the ledger record): ``logging`` would print the
    empty traceback ``NoneType: None`` under the line, on the console, in the log file and the UI.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[0] is None:
            record.exc_info = None
        return True


def drop_empty_tracebacks() -> None:
    """Put :class:`NoEmptyTraceback` on the loggers of Prefect's flow and task runs (once)."""
    for name in ("prefect.flow_runs", "prefect.task_runs"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, NoEmptyTraceback) for f in logger.filters):
            logger.addFilter(NoEmptyTraceback())
