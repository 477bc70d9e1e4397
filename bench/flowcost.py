"""What Prefect's orchestration costs per run: a child flow run, a task run and an empty Python call.

    python bench/flowcost.py [--rounds N]

Per round: N empty Python calls, N runs of an empty task, and N // 3 runs of an empty child flow
(sync, as opcd's deploy flows are), each loop in a parent flow of its own and timed inside it.
Measured on a Prefect server on PostgreSQL and on the embedded SQLite default (``bench/harness.py``),
each in its own process. Printed: the cost of one of each, in milliseconds, median of the rounds
and spread.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import bench_main, spread, table  # noqa: E402

CALLS = 15


def nothing(i: int) -> int:
    return i


def unit_costs(rounds: int, n: int = CALLS) -> dict[str, list[float]]:
    """Seconds per empty Python call, task run and child flow run on this process's Prefect server, per round.

    Each loop is timed inside its parent flow: the parent's own run is not in the figure.
    """
    from prefect import flow, task

    empty_task = task(name="bench-nothing")(nothing)

    @flow(name="bench-child")
    def child() -> None:
        return None

    runs: dict[str, Callable[[int], object]] = {"call": nothing, "task": empty_task, "child flow": lambda _: child()}

    @flow(name="bench-loop")
    def loop(kind: str, count: int) -> float:
        one, start = runs[kind], time.perf_counter()
        for i in range(count):
            one(i)
        return time.perf_counter() - start

    loop("task", 1), loop("child flow", 1)  # warm up: the flows are registered, the client and server are warm
    figures: dict[str, list[float]] = {kind: [] for kind in runs}
    for _ in range(rounds):
        for kind in runs:
            count = n // 3 if kind == "child flow" else n
            figures[kind].append(loop(kind, count) / count)
    return figures


def report(results: dict[str, dict[str, Any]]) -> str:
    rows = []
    for database, figures in results.items():
        ms = {kind: [seconds * 1000 for seconds in figures[kind]] for kind in ("call", "task", "child flow")}
        rows.append([database, spread(ms["child flow"], "{:.0f}"), spread(ms["task"], "{:.1f}"),
                     spread(ms["call"], "{:.5f}")])  # fmt: skip
    return table(f"Orchestration cost of one run, ms (flow/task: {CALLS // 3}/{CALLS} runs a round)",
                 ["Prefect server", "child flow run", "task run", "empty Python call"], rows)  # fmt: skip


if __name__ == "__main__":
    sys.exit(bench_main(__doc__, Path(__file__), unit_costs, report))
