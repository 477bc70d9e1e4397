"""The benchmarks' own logic, small: the scale benchmark's generated project and the tables' figures."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bench.harness import CPU_KINDS, CpuUse, cpu_kind
from bench.release import report as release_report
from bench.scale import report as scale_report
from bench.scale import scale_config
from opcd.config import load_config


def test_the_scale_benchmark_generates_n_lambda_components_in_dev_and_prod(tmp_path: Path) -> None:
    config = load_config(scale_config(tmp_path, 3, 2))
    assert list(config.components) == ["fn01", "fn02", "fn03"]
    assert {c.kind for c in config.components.values()} == {"lambda"}
    assert config.release.max_parallel == 2
    for env in ("dev", "prod"):
        assert config.environment(env).functions["fn03"] == f"outreachpass-fn03-{env}"
        assert not config.environment(env).approval and not config.environment(env).strategy("fn01").gradual
    assert load_config(scale_config(tmp_path, 1, None)).release.max_parallel == 8


def test_the_scale_table_divides_by_n_times_one_components_wall_time() -> None:
    def figures(wall: float) -> dict[str, object]:
        return {"wall": [wall], "deploys": [wall / 2], "calls": [10], "flow runs": [1], "task runs": [4],
                "peak MiB": 100.0}  # fmt: skip

    results = [{"n": 1, "max_parallel": None, "figures": figures(10.0)},
               {"n": 30, "max_parallel": None, "figures": figures(60.0)}]  # fmt: skip
    last = scale_report(results, "test").splitlines()[-1]
    assert "| 30 " in last and "0.20 (0.20–0.20, n=1)" in last


def test_the_release_table_has_the_five_figures_with_their_bounds() -> None:
    one = {
        "release s": [7.0], "builds s": [3.0], "script s": [10.0], "release calls": [90], "script calls": [60],
        "release child-process calls": [0], "flow runs": [5], "task runs": [80], "dry run s": [0.5],
        "deploy s": [5.0], "dry run calls": [7], "deploy calls": [29], "cost call": [1e-7], "cost task": [0.02],
        "cost child flow": [1.2], "cost component deploy": [0.1], "cost component deploy, child run": [1.3],
        "slow release s": [130.0], "slow script s": [140.0], "apprunner seconds": [60.0],
        "release cpu": [30.0], "release prefect cpu": [12.0], "script cpu": [9.0], "parallel script s": [6.0],
        "slow parallel script s": [126.0],
    }  # fmt: skip
    text = release_report({"postgres": one, "sqlite": {k: v for k, v in one.items() if not k.startswith("slow")}})
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ")}
    assert "0.70 (0.70–0.70, n=1)" in rows["1. release deploys / plain sequential script, wall time"]
    assert "1.50" in rows["2. AWS calls: release / script"]
    slow = rows["3. App Runner deploy 60.0 s: release / script, wall time"]
    assert "0.93" in slow and slow.rstrip(" |").endswith("-")  # not measured on SQLite
    assert (
        "0.60 (0.60–0.60, n=1)"
        in rows["the floor: the plain script, an environment's components in parallel / sequential"]
    )
    assert "0.90 (0.90–0.90, n=1)" in rows["the floor: the plain script in parallel / sequential"]
    assert "0.100" in rows["4. orchestration of one component's deploy, s (over an empty call)"]
    assert "7 / 29" in rows["AWS calls: dry run / deploy"]
    cpu = rows["the machine's CPU, s: release (builds included; of it Prefect's server and database) / script"]
    assert "30.0 (12.0) / 9.0" in cpu


def test_cpu_use_counts_this_process_and_a_child_by_kind() -> None:
    busy = "x = 0\nfor i in range(6_000_000): x += i"  # a fixed amount of work: CPU time, not wall time
    child_code = f"import json, sys\n{busy}\nprint('done', flush=True)\nsys.stdin.read()"  # a build's compile
    with CpuUse(interval=0.05).measuring() as cpu:
        exec(busy)  # noqa: S102 - this process: "release"
        child = subprocess.Popen([sys.executable, "-c", child_code], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert child.stdout is not None and child.stdout.readline() == b"done\n"  # its work done; it lives on
    assert child.stdin is not None
    child.stdin.close()  # read at the block's end while alive: all its CPU counted
    assert child.wait(30) == 0
    child.stdout.close()
    one = cpu["release"]
    assert one > 0.1
    assert cpu["builds"] > one / 3  # the same work in a child, seen while it ran
    assert cpu["machine"] >= cpu["release"] + cpu["builds"] - 0.05  # /proc rounds to clock ticks
    assert set(cpu) == {"machine", "release", "builds", "other"} | (set(cpu) & set(CPU_KINDS))


def test_processes_are_told_apart_by_their_command_line() -> None:
    assert cpu_kind(os.getpid(), "anything") == "release"
    assert cpu_kind(1, "/usr/bin/python3.12 -I /w/sandbox/_bootstrap.py /w/code app.handler 7") == "sandbox Lambda"
    assert cpu_kind(1, "/w/.venv/bin/python -m pip install --target /t -r requirements.txt") == "builds"
    assert cpu_kind(1, "postgres: prefect prefect 127.0.0.1(5432) idle") == "PostgreSQL"
    assert cpu_kind(1, "/w/.venv/bin/python /w/.venv/bin/prefect server start --port 4321") == "Prefect server"
    assert cpu_kind(1, "sleep 10") == "other"


def test_the_scale_table_splits_the_machine_s_cpu() -> None:
    cpu = {"machine": 100.0, "release": 40.0, "Prefect server": 20.0, "PostgreSQL": 5.0, "sandbox Lambda": 25.0,
           "builds": 1.0, "other": 9.0}  # fmt: skip
    figures = {"wall": [10.0], "deploys": [9.0], "calls": [10], "flow runs": [1], "task runs": [4], "peak MiB": 1.0,
               "cpu": [cpu]}  # fmt: skip
    text = scale_report([{"n": 1, "max_parallel": None, "figures": figures}], "test")
    assert "CPU-s: machine / release / Prefect server + PostgreSQL / sandbox Lambda / builds" in text
    assert text.splitlines()[-1].rstrip(" |").endswith("100.0 / 40.0 / 25.0 / 25.0 / 1.0")
