"""What Prefect's orchestration costs per run: a child flow run, a task run, an empty Python call, and
one component's deploy as the release runs it.

    python bench/flowcost.py [--rounds N]

Per round: 15 empty Python calls, 15 runs of an empty task, 5 runs of an empty (sync) child flow, and
5 component deploys each way the release runs one, through its ``deploy`` task
(``flows.release.deploy_component``, its cache policy, its persisted result, its opcd.toml loaded)
with an empty deploy: the deploy's body in the task (every deploy that does not bake), and the deploy
flow as a child run (a Lambda deploy baking a canary or linear split; as every deploy ran before).
Each loop runs in a parent flow of its own and is timed inside it (the parent's own run is not
counted). Measured on a Prefect server on PostgreSQL and on the embedded SQLite default
(``bench/harness.py``), each in its own process. Printed: the cost of one of each, in milliseconds,
median of the rounds and spread.
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
KINDS = ("call", "task", "child flow", "component deploy", "component deploy, child run")


def nothing(i: int) -> int:
    return i


def unit_costs(rounds: int, n: int = CALLS) -> dict[str, list[float]]:
    """Seconds per empty Python call, task run, child flow run and component deploy (the release's
    ``deploy`` task running an empty deploy flow) on this process's Prefect server, per round.

    Each loop is timed inside its parent flow: the parent's own run is not in the figure.
    """
    from prefect import flow, task

    import flows.release

    empty_task = task(name="bench-nothing")(nothing)

    @flow(name="bench-child")
    def child() -> None:
        return None

    @flow(name="bench-deploy", flow_run_name="bench deploy {version} to {environment}")
    def empty_deploy(
        environment: str,
        version: str,
        git_sha: str | None = None,
        config_path: str | None = None,
        notify: bool = True,
        plan: object = None,  # the deploy flows' parameters, as the release passes them
    ) -> None:
        return None

    def empty_body(component: str, environment: str, version: str, *args: object, **kwargs: object) -> None:
        return None

    saved = flows.release.deploy_flow, flows.release.deploy_body
    flows.release.deploy_flow = lambda config, component: (empty_deploy, {})  # the deploy does nothing
    flows.release.deploy_body = lambda config, component: empty_body
    config = str(ROOT / "opcd.toml")  # prod bakes the backend (a canary): its own child run; dev does not

    def deploy(environment: str) -> Callable[[int], object]:
        return lambda i: flows.release.deploy_component("backend", environment, f"v{time.time_ns()}", None, config)

    runs: dict[str, Callable[[int], object]] = {
        "call": nothing, "task": empty_task, "child flow": lambda _: child(), "component deploy": deploy("dev"),
        "component deploy, child run": deploy("prod"),
    }  # fmt: skip

    @flow(name="bench-loop")
    def loop(kind: str, count: int) -> float:
        one, start = runs[kind], time.perf_counter()
        for i in range(count):
            one(i)
        return time.perf_counter() - start

    figures: dict[str, list[float]] = {kind: [] for kind in runs}
    try:
        for kind in runs:  # warm up: the flows are registered, the client and server are warm
            loop(kind, 1)
        for _ in range(rounds):
            for kind in runs:
                count = n if kind in ("call", "task") else n // 3
                figures[kind].append(loop(kind, count) / count)
    finally:
        flows.release.deploy_flow, flows.release.deploy_body = saved
    return figures


def report(results: dict[str, dict[str, Any]]) -> str:
    rows = []
    for database, figures in results.items():
        ms = {kind: [seconds * 1000 for seconds in figures[kind]] for kind in KINDS}
        rows.append([database, spread(ms["component deploy"], "{:.0f}"),
                     spread(ms["component deploy, child run"], "{:.0f}"), spread(ms["child flow"], "{:.0f}"),
                     spread(ms["task"], "{:.1f}"), spread(ms["call"], "{:.5f}")])  # fmt: skip
    return table(
        f"Orchestration cost of one run, ms (flow/task: {CALLS // 3}/{CALLS} runs a round)",
        ["Prefect server", "component deploy (release)", "one that bakes (child run)", "child flow run", "task run",
         "empty Python call"], rows,
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(bench_main(__doc__, Path(__file__), lambda args: unit_costs(args.rounds), report))
