"""The benchmarks' own logic, small: the scale benchmark's generated project and the tables' figures."""

from __future__ import annotations

from pathlib import Path

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
    }  # fmt: skip
    text = release_report({"postgres": one, "sqlite": {k: v for k, v in one.items() if not k.startswith("slow")}})
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ")}
    assert "0.70 (0.70–0.70, n=1)" in rows["1. release deploys / plain sequential script, wall time"]
    assert "1.50" in rows["2. AWS calls: release / script"]
    slow = rows["3. App Runner deploy 60.0 s: release / script, wall time"]
    assert "0.93" in slow and slow.rstrip(" |").endswith("-")  # not measured on SQLite
    assert "0.100" in rows["4. orchestration of one component's deploy, s (over an empty call)"]
    assert "7 / 29" in rows["AWS calls: dry run / deploy"]
