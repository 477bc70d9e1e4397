"""How a release grows with its number of components: N Lambda components through dev and prod.

    python bench/scale.py [--rounds N] [--sizes 1,5,15,30] [--parallel 30:30,5:1] [--database postgres|sqlite]

Per size N: an opcd.toml with N Lambda components generated from the example backend (its source,
handler, runtime, requirements and smoke check; without its migrations, which would share one
database per environment), each its own function in dev and in prod, approval off and traffic all at
once (no bake: neither is machine time), ``release.max_parallel`` at its default (8). Then the
``--parallel`` pairs N:P (N components, ``max_parallel = P``; default 30 unbounded and 5 one at a
time), to show what the setting does.
Each size runs in a process of its own (a fresh sandbox in it, the build cache shared by its rounds),
against one Prefect server on PostgreSQL (``bench/harness.py``; SQLite where PostgreSQL cannot run,
said so), releasing v1 to every component ``--rounds`` times on a sandbox reset and seeded each time.

Printed per size: the release's wall time (and without its builds), its AWS calls, its flow and task
runs (counted on the server), the process's peak memory (its resident set: the release and the
sandbox, which runs in-process; not the builds' and the Lambda handlers' child processes), and
wall(N) / (N × wall(1)): 1 means a release grows linearly; the issue's bound at N = 30 is 0.3.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
if __name__ == "__main__":  # run as the benchmark (not imported by its tests: their processes keep their settings)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

from bench.harness import (  # noqa: E402
    PREFECT_KINDS,
    AwsCalls,
    child_calls,
    child_environment,
    load_note,
    postgres_unavailable,
    prefect_backend,
    record_child_calls,
    spread,
    table,
)

SIZES = (1, 5, 15, 30)
BACKEND = ROOT / "examples" / "outreachpass" / "backend"


def scale_config(work: Path, n: int, max_parallel: int | None) -> Path:
    """opcd.toml with ``n`` Lambda components made from the example backend, dev and prod, no approval, no bake."""
    names = [f"fn{i:02d}" for i in range(1, n + 1)]
    lines = [
        "[project]", 'name = "outreachpass"', 'region = "us-east-1"', 'artifact_bucket = "outreachpass-artifacts"', "",
    ]  # fmt: skip
    for name in names:
        lines += [
            f"[components.{name}]", 'kind = "lambda"', f'source = "{BACKEND}"', 'handler = "app.handler"',
            'runtime = "python3.12"', 'requirements = "requirements.txt"',
            'smoke = [{ path = "/health", expect_status = 200 }]', "",
        ]  # fmt: skip
    if max_parallel is not None:
        lines += ["[release]", f"max_parallel = {max_parallel}", ""]
    for env in ("dev", "prod"):
        functions = ", ".join(f'{name} = "outreachpass-{name}-{env}"' for name in names)
        lines += [
            f"[environments.{env}]", "approval = false", f"functions = {{ {functions} }}",
            f'alarms = ["outreachpass-api-{env}-errors"]', "",
        ]  # fmt: skip
    (work / "opcd.toml").write_text("\n".join(lines))
    return work / "opcd.toml"


def one_size(n: int, max_parallel: int | None, rounds: int) -> dict[str, Any]:
    """``rounds`` releases of ``n`` components in this process: their figures."""
    from bench.release import fresh_sandbox, measured_release
    from opcd.config import load_config
    from sandbox.server import SandboxServer

    counter = AwsCalls()  # before any client is made
    work = Path(tempfile.mkdtemp(prefix=f"opcd-bench-scale-{n}-"))
    children = record_child_calls(work)
    config_file = scale_config(work, n, max_parallel)
    os.environ["OPCD_CONFIG"] = str(config_file)
    os.environ["OPCD_BUILD_CACHE"] = str(work / "cache")
    config = load_config(config_file)
    server = SandboxServer(work / "sandbox", config.project.region, 0).start()
    figures: dict[str, Any] = {"wall": [], "deploys": [], "calls": [], "flow runs": [], "task runs": [], "cpu": []}
    try:
        for _ in range(rounds):
            fresh_sandbox(server, config, work)
            child_calls(children)
            wall, builds, calls, flow_runs, task_runs, cpu = measured_release(config_file, counter)
            figures["cpu"].append(cpu)
            figures["wall"].append(wall)
            figures["deploys"].append(wall - builds)
            figures["calls"].append(calls + child_calls(children))
            figures["flow runs"].append(flow_runs)
            figures["task runs"].append(task_runs)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    kib = 1024  # ru_maxrss is in KiB on Linux
    figures["peak MiB"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / kib
    return figures


CPU_COLUMNS = ("machine", "release", "Prefect server + PostgreSQL", "sandbox Lambda", "builds")


def cpu_split(rounds: list[dict[str, float]]) -> str:
    """The machine's CPU seconds during the release and their split (:class:`bench.harness.CpuUse`), medians of the
    rounds; ``-`` when not measured."""
    if not rounds or not all(rounds):
        return "-"

    def median(*kinds: str) -> str:
        return f"{statistics.median(sum(r.get(k, 0.0) for k in kinds) for r in rounds):.1f}"

    return " / ".join([
        median("machine"), median("release"), median(*PREFECT_KINDS), median("sandbox Lambda"),
        median("builds"),
    ])  # fmt: skip


def report(results: list[dict[str, Any]], server: str) -> str:
    single = next((r for r in results if r["n"] == 1 and r["max_parallel"] is None), None)
    rows = []
    for r in sorted(results, key=lambda r: (r["max_parallel"] is not None, r["n"], r["max_parallel"] or 0)):
        f = r["figures"]
        if single:
            base = statistics.median(single["figures"]["wall"])
            growth = spread([w / (r["n"] * base) for w in f["wall"]])
            base_deploys = statistics.median(single["figures"]["deploys"])
            growth_deploys = spread([w / (r["n"] * base_deploys) for w in f["deploys"]])
        else:
            growth = growth_deploys = "-"
        rows.append([
            str(r["n"]), str(r["max_parallel"] or "8 (default)"), spread(f["wall"], "{:.1f}"),
            spread(f["deploys"], "{:.1f}"), f"{statistics.median(f['calls']):.0f}",
            f"{statistics.median(f['flow runs']):.0f} / {statistics.median(f['task runs']):.0f}",
            f"{f['peak MiB']:.0f}", growth, growth_deploys, cpu_split(f.get("cpu", [])),
        ])  # fmt: skip
    title = (
        f"Release of N Lambda components through dev and prod ({server}); median (min–max, n=rounds);"
        " bound: wall(30) / (30 × wall(1)) ≤ 0.3"
    )
    header = [
        "N", "max_parallel", "wall, s", "without builds, s", "AWS calls", "flow / task runs",
        "peak MiB", "wall / (N × wall(1))", "same without builds", "CPU-s: " + " / ".join(CPU_COLUMNS),
    ]  # fmt: skip
    return table(title, header, rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="releases per size (default 3)")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="component counts (default 1,5,15,30)")
    parser.add_argument(
        "--parallel", default="30:30,5:1",
        help="N:P pairs also run: N components with max_parallel P (default 30:30,5:1; P alone: at the largest N)",
    )  # fmt: skip
    parser.add_argument("--database", choices=("postgres", "sqlite"), help="default: postgres, else sqlite")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # a child: one size, its figures as JSON
    parser.add_argument("--max-parallel", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(one_size(args.one, args.max_parallel, args.rounds)))
        return 0

    sizes = [int(s) for s in args.sizes.split(",") if s]
    runs: list[tuple[int, int | None]] = [(n, None) for n in sizes]
    for pair in filter(None, args.parallel.split(",")):
        n, _, p = pair.rpartition(":")
        runs.append((int(n) if n else max(sizes), int(p)))
    database = args.database or ("sqlite" if postgres_unavailable() else "postgres")
    if database == "sqlite" and not args.database:
        print(f"scale.py: PostgreSQL skipped ({postgres_unavailable()}): SQLite instead", file=sys.stderr)
    results = []
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # killed: still stop the servers and remove their data
    with (
        tempfile.TemporaryDirectory(prefix="opcd-bench-scale-") as tmp,
        prefect_backend(database, Path(tmp)) as (
            changes,
            server,
        ),
    ):
        env = child_environment(changes)
        for n, max_parallel in runs:
            print(f"scale.py: {args.rounds} releases of {n} components (max_parallel {max_parallel or 'default'}) ...",
                  file=sys.stderr, flush=True)  # fmt: skip
            command = [sys.executable, str(Path(__file__)), "--one", str(n), "--rounds", str(args.rounds)]
            command += ["--max-parallel", str(max_parallel)] if max_parallel else []
            with (Path(tmp) / "log").open("w+") as log:
                proc = subprocess.run(command, stdout=subprocess.PIPE, stderr=log, text=True, cwd=ROOT, env=env)
                log.seek(0)
                errors = log.read()
            if proc.returncode != 0:
                raise SystemExit(f"scale.py: {n} components failed (exit {proc.returncode}): {errors[-3000:]}")
            figures = json.loads(proc.stdout.strip().splitlines()[-1])
            results.append({"n": n, "max_parallel": max_parallel, "figures": figures})
            print(f"scale.py: {json.dumps(results[-1])}", file=sys.stderr, flush=True)  # kept if a later size fails
    print(report(results, server))
    print(load_note())
    return 0


if __name__ == "__main__":
    sys.exit(main())
