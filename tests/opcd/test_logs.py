"""The run loggers' records as ``logging`` formats them."""

from __future__ import annotations

import logging
import sys

import flows.common  # noqa: F401 - importing a flow module puts the filter on Prefect's run loggers


def formatted(logger: logging.Logger, message: str) -> str:
    """A record made as ``logger.error(message, exc_info=True)`` makes it here, filtered by the logger."""
    record = logger.makeRecord(logger.name, logging.ERROR, __file__, 1, message, (), sys.exc_info())
    assert logger.filter(record)
    return logging.Formatter("%(levelname)s %(message)s").format(record)


def test_a_task_that_returns_a_failed_state_logs_no_empty_traceback() -> None:
    """Prefect's task engine logs ``exc_info=True`` for a task that returned a Failed state, while no
    exception is handled: unfiltered, ``logging`` prints ``NoneType: None`` under the line."""
    for name in ("prefect.task_runs", "prefect.flow_runs"):
        logger = logging.getLogger(name)
        text = formatted(logger, "Task run failed with state: Failed(message='backend to dev: rolled-back')")
        assert text == "ERROR Task run failed with state: Failed(message='backend to dev: rolled-back')"
        try:
            raise RuntimeError("a real one")
        except RuntimeError:
            assert "RuntimeError: a real one" in formatted(logger, "Task run failed with exception")
