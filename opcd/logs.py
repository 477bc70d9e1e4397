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
