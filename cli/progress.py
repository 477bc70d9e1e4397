"""What ``opcd deploy``, ``rollback`` and ``release`` print while their flow runs in this process.

First what will run; then one line per step as it changes, per component and environment: a table
redrawn in place in a terminal, plain lines when the output is not a terminal, in CI (``CI`` set:
GitHub Actions and the others) or with ``TERM=dumb``; then a summary. Prefect's full log goes to
the Prefect UI and to a log file whose path is printed; ``-v`` puts it back on the console (the
steps are plain lines then, between its lines). The steps come through :mod:`opcd.progress`.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from prefect.logging.formatters import PrefectFormatter
from prefect.logging.handlers import PrefectConsoleHandler

from opcd import progress
from opcd.config import Config
from opcd.progress import State, Step

# As Prefect's console shows its records (its logging.yml), with the date: a file outlives the day.
_PREFIX = "%(asctime)s.%(msecs)03d | %(levelname)-7s | "
_DATES = "%Y-%m-%d %H:%M:%S"
_MARKS = {
    State.PENDING: " ", State.RUNNING: ">", State.WAITING: "?", State.OK: "+", State.WARN: "!", State.FAILED: "x",
}  # fmt: skip
_COLOURS = {State.PENDING: "2", State.WAITING: "33", State.OK: "32", State.WARN: "33", State.FAILED: "31"}
_ENDED = (State.OK, State.WARN, State.FAILED)


def live_terminal(stream: TextIO) -> bool:
    """A table redrawn in place: a terminal, not CI (``CI`` is set by GitHub Actions and the others), not ``dumb``."""
    try:
        tty = stream.isatty()
    except ValueError:  # closed
        return False
    return tty and not os.environ.get("CI") and os.environ.get("TERM", "") != "dumb"


def took(seconds: float) -> str:
    return f"{seconds:.1f}s" if seconds < 60 else f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


@dataclass
class Row:
    """One component in one environment (or its ``build``, or an environment's ``approval``)."""

    component: str
    environment: str
    step: str = "-"
    detail: str = ""
    state: State = State.PENDING
    started: float | None = None
    ended: float | None = None

    def took(self, now: float) -> str:
        if self.started is None:
            return ""
        return took((self.ended or now) - self.started)


class Display:
    """The steps as they change: plain lines, or (``live``) a table redrawn in place.

    Thread-safe: the steps come from the flow's task threads; a ticker thread redraws a live table
    every second so the running rows' times move.
    """

    def __init__(self, stream: TextIO, rows: list[tuple[str, str]], live: bool) -> None:
        self.stream, self.live = stream, live
        self.rows: dict[tuple[str, str], Row] = {key: Row(*key) for key in rows}
        self.start = time.monotonic()
        self._lock = threading.RLock()
        self._drawn = 0  # lines of the table on screen now
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        if live:
            self._ticker = threading.Thread(target=self._tick, name="opcd-progress", daemon=True)
            self._ticker.start()

    # -- what comes in

    def step(self, step: Step) -> None:
        with self._lock:
            key = (step.component, step.environment)
            row = self.rows.setdefault(key, Row(*key))
            changed = (row.step, row.state) != (step.name, step.state)
            row.step, row.detail, row.state = step.name, step.detail, step.state
            if row.started is None or row.ended is not None and step.state not in _ENDED:
                row.started = step.at  # a row that ended and starts again (a rollback after a deploy)
            row.ended = step.at if step.state in _ENDED else None
            if self.live and changed and step.state is State.WAITING:  # how to answer: not cut to the screen's width
                self._clear()
                self._write(f"{row.component} {row.environment}: {row.step}: {row.detail}\n")
            if self.live:
                self._draw()
            elif changed:
                self._write(self._plain(row, step.at) + "\n")

    def note(self, text: str) -> None:
        """A line of its own (a warning): above the table, or between the plain lines."""
        with self._lock:
            if self.live:
                self._clear()
                self._write(text + "\n")
                self._draw()
            else:
                self._write(f"{took(time.monotonic() - self.start):>7}  {text}\n")

    def close(self) -> None:
        """Stop redrawing; the live table stays on screen as the summary, plain output gets one."""
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(timeout=5)
        with self._lock:
            if self.live:
                self._draw()
            elif any(r.state is not State.PENDING for r in self.rows.values()):
                self._write("summary:\n" + "".join(f"  {line}\n" for line in self.table()))

    # -- what goes out

    def _widths(self) -> tuple[int, int, int]:
        rows = self.rows.values()
        return (
            max(len(r.component) for r in rows),
            max(len(r.environment) for r in rows),
            max([14, *(len(r.step) for r in rows)]),
        )

    def _plain(self, row: Row, at: float) -> str:
        c, e, s = self._widths()
        where = f"{row.component:<{c}}  {row.environment:<{e}}"
        return f"{took(at - self.start):>7}  {where}  {row.step:<{s}}  {row.detail}".rstrip()

    def table(self) -> list[str]:
        """One line per row: mark, component, environment, step, time, detail."""
        now = time.monotonic()
        c, e, s = self._widths()
        return [
            f"{_MARKS[r.state]} {r.component:<{c}}  {r.environment:<{e}}  {r.step:<{s}}  {r.took(now):>7}  {r.detail}"
            .rstrip()
            for r in self.rows.values()
        ]  # fmt: skip

    def _draw(self) -> None:
        size = shutil.get_terminal_size()
        lines = self.table()
        if len(lines) >= size.lines:  # taller than the screen: it cannot be redrawn in place
            self.live = False
            return
        out = [f"\x1b[{self._drawn}F"] if self._drawn else []
        for line, row in zip(lines, self.rows.values(), strict=True):
            line = line if len(line) <= size.columns - 1 else line[: size.columns - 2] + "…"
            colour = _COLOURS.get(row.state)
            out.append("\x1b[2K" + (f"\x1b[{colour}m{line}\x1b[0m" if colour else line) + "\n")
        self._drawn = len(lines)
        self._write("".join(out))

    def _clear(self) -> None:
        if self._drawn:
            self._write(f"\x1b[{self._drawn}F\x1b[J")
            self._drawn = 0

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()

    def _tick(self) -> None:
        while not self._stop.wait(1.0):
            with self._lock:
                if self.live and any(r.state in (State.RUNNING, State.WAITING) for r in self.rows.values()):
                    self._draw()


class WarningsAsNotes(logging.Handler):
    """A run's warnings (a smoke check that failed, a rollback starting) as notes under their row's name."""

    def __init__(self, display: Display) -> None:
        super().__init__(logging.WARNING)
        self.display = display

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno != logging.WARNING:  # errors end in the row's outcome and the error line
            return
        try:
            found = progress.subject()
            where = f"{found[0]} {found[1]}: " if found else ""
            self.display.note(f"{where}warning: {record.getMessage()}")
        except Exception:
            self.handleError(record)


def log_path(config: Config, command: str) -> Path:
    """``.opcd/logs/<command>-<UTC time>-<pid>.log`` beside opcd.toml."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return config.state_dir() / "logs" / f"{command}-{stamp}-{os.getpid()}.log"


def shown_path(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


@contextmanager
def showing_progress(
    config: Config, command: str, rows: list[tuple[str, str]], verbose: bool = False, stream: TextIO | None = None
) -> Iterator[Display]:
    """While the block runs the command's flow: its steps on ``stream``, Prefect's log in a file.

    Without ``verbose`` Prefect's console handler is taken off the root logger for the block (and put
    back after); the file gets every record the console would have, and the full tracebacks.
    """
    stream = stream or sys.stdout
    path = log_path(config, command)
    path.parent.mkdir(parents=True, exist_ok=True)
    file = logging.FileHandler(path, encoding="utf-8")
    file.setFormatter(PrefectFormatter(
        _PREFIX + "%(name)s - %(message)s", _DATES,
        flow_run_fmt=_PREFIX + "Flow run %(flow_run_name)r - %(message)s",
        task_run_fmt=_PREFIX + "Task run %(task_run_name)r - %(message)s",
    ))  # fmt: skip
    root = logging.getLogger()
    consoles: list[logging.Handler] = [h for h in root.handlers if isinstance(h, PrefectConsoleHandler)]
    consoles = [] if verbose else consoles
    print(f"log: {shown_path(path)}" + ("" if verbose else " (-v shows it here)"), file=stream, flush=True)
    display = Display(stream, rows, live=not verbose and live_terminal(stream))
    notes = WarningsAsNotes(display)
    for handler in consoles:
        root.removeHandler(handler)
    root.addHandler(file)
    if not verbose:
        root.addHandler(notes)
    try:
        with progress.listening(display.step):
            yield display
    finally:
        display.close()
        root.removeHandler(file)
        root.removeHandler(notes)
        file.close()
        for handler in consoles:
            root.addHandler(handler)
