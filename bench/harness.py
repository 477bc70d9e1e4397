"""What the benchmarks share: a Prefect server on PostgreSQL or the embedded SQLite default, AWS call
counting, one process per database, and the tables.

Each benchmark runs itself once per database in a child process (``--database postgres|sqlite
--json``) pointed at that database's server: Prefect reads its settings (the API URL) once per
process, so the two servers cannot share one. The parent prints the table: per figure the median of the rounds and
their spread (min–max).

- ``postgres``: ``prefect server start`` on a PostgreSQL cluster of its own (Debian's
  ``postgresql``, PostgreSQL's default durability settings), both on free loopback ports, stopped
  and removed afterwards (``tests/postgres.py``, shared with the end-to-end tests);
- ``sqlite``: no ``PREFECT_API_URL``: Prefect's own default, the ephemeral server it starts for the
  process with its SQLite file in a temporary ``PREFECT_HOME`` (what ``opcd`` does without a server).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import botocore.session

ROOT = Path(__file__).resolve().parent.parent
DATABASES = ("postgres", "sqlite")


def bench_main(
    doc: str | None,
    script: Path,
    measure: Callable[[argparse.Namespace], dict[str, list[float]]],
    report: Callable[[dict[str, dict[str, Any]]], str],
    options: Callable[[argparse.ArgumentParser], None] | None = None,
) -> int:
    """A benchmark's command line: the parent runs a child per database and prints ``report`` of their
    figures; a child (``--json``) prints ``measure(args)``'s figures (``args.rounds`` rounds).
    ``options`` adds the benchmark's own options; the child gets them as given (``forward``)."""
    args = arguments(doc, rounds=3, options=options)
    if args.json:
        print(json.dumps(measure(args)))
        return 0
    results = run_children(script, args)
    print(report(results))
    for database, figures in results.items():
        print(f"{database}: {figures['server']}")
    print(load_note())
    return 0


def arguments(
    doc: str | None, rounds: int, options: Callable[[argparse.ArgumentParser], None] | None = None
) -> argparse.Namespace:
    """``--rounds N``; ``--database`` and ``--json``: one database, its raw figures as JSON (the child's side);
    ``forward``: the arguments a child gets besides those three."""
    parser = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=rounds, help=f"rounds per database (default {rounds})")
    parser.add_argument("--database", choices=DATABASES, help="only this database (default: each in turn)")
    parser.add_argument("--json", action="store_true", help="print the raw figures as JSON (one database)")
    if options:
        options(parser)
    args = parser.parse_args()
    args.forward, skip = [], False
    for arg in sys.argv[1:]:
        if skip or arg == "--json" or arg.startswith(("--database=", "--rounds=")):
            skip = False
            continue
        if arg in ("--database", "--rounds"):
            skip = True
            continue
        args.forward.append(arg)
    return args


def postgres_unavailable() -> str | None:
    from tests.postgres import unavailable

    return unavailable()


@contextmanager
def prefect_backend(database: str, work: Path) -> Iterator[tuple[dict[str, str | None], str]]:
    """A Prefect server on ``database`` for a child process: the environment that points it there
    (``None``: unset), and a description."""
    with ExitStack() as stack:
        home = work / "prefect-home"
        home.mkdir(parents=True, exist_ok=True)
        if database == "postgres":
            from tests.postgres import postgres, prefect_server

            cluster = stack.enter_context(postgres(durable=True))
            url = cluster.database("prefect")
            api = stack.enter_context(prefect_server(home, PREFECT_API_DATABASE_CONNECTION_URL=url))
            version = cluster.sql("prefect", "SHOW server_version").strip()
            yield {"PREFECT_HOME": str(home), "PREFECT_API_URL": api}, f"prefect server start on PostgreSQL {version}"
        else:
            # 20 s by default: too short on a loaded machine (the wait ends as soon as the server answers)
            yield {
                "PREFECT_HOME": str(home), "PREFECT_API_URL": None, "PREFECT_SERVER_ALLOW_EPHEMERAL_MODE": "true",
                "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "300",
            }, "Prefect's ephemeral server on SQLite (the embedded default)"  # fmt: skip


class AwsCalls:
    """Counts every AWS API call made while ``on``: botocore's ``before-call`` event, on every client.

    Each botocore client this process makes gets the hook (``Session.create_client`` is wrapped), so
    clients made by boto3, opcd.aws or any library are counted alike. Calls made in child processes
    are counted by :func:`child_calls`.
    """

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.on = False
        self._lock = threading.Lock()
        original = botocore.session.Session.create_client
        counter = self

        def create_client(session: Any, *args: Any, **kwargs: Any) -> Any:
            client = original(session, *args, **kwargs)
            client.meta.events.register("before-call", counter._count)
            return client

        botocore.session.Session.create_client = create_client  # type: ignore[method-assign]

    def _count(self, model: Any, **_: Any) -> None:
        if self.on:
            with self._lock:
                self.calls.append(f"{model.service_model.service_name}.{model.name}")

    @contextmanager
    def counting(self) -> Iterator[list[str]]:
        """The calls made inside the block (the list fills as they are made)."""
        with self._lock:
            self.calls = []
        self.on = True
        try:
            yield self.calls
        finally:
            self.on = False


def record_child_calls(work: Path) -> Path:
    """Have child processes record their AWS calls (opcd.aws's recorder, inherited through the environment)."""
    directory = work / "aws-calls"
    directory.mkdir(exist_ok=True)
    os.environ["OPCD_RECORD_AWS_CALLS"] = str(directory)
    return directory


def child_calls(directory: Path) -> int:
    """AWS calls recorded by processes other than this one (then forgotten)."""
    own = f"calls-{os.getpid()}.jsonl"
    count = 0
    for path in directory.glob("calls-*.jsonl"):
        if path.name != own:
            count += sum(1 for _ in path.open(encoding="utf-8"))
            path.unlink()
    return count


def child_environment(changes: dict[str, str | None]) -> dict[str, str]:
    """This process's environment with ``changes`` (``None``: unset), for a benchmark's child process."""
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_LOGGING_LEVEL": "WARNING"}
    for name, value in changes.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def run_children(script: Path, args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """``script`` once per database (or only ``args.database``) in a child process: its JSON, per database."""
    results: dict[str, dict[str, Any]] = {}
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # killed: still stop the servers and remove their data
    for database in [args.database] if args.database else DATABASES:
        reason = postgres_unavailable() if database == "postgres" else None
        if reason:
            print(f"{script.name}: PostgreSQL skipped: {reason}", file=sys.stderr)
            continue
        print(f"{script.name}: {args.rounds} rounds on {database} ...", file=sys.stderr, flush=True)
        with tempfile.TemporaryDirectory(prefix=f"opcd-bench-{database}-") as tmp, tempfile.TemporaryFile("w+") as out:
            with prefect_backend(database, Path(tmp)) as (changes, server):
                env = child_environment(changes)
                with (Path(tmp) / "log").open("w+") as log:  # Prefect's and the sandbox's warnings
                    proc = subprocess.run(
                        [sys.executable, str(script), *args.forward, "--database", database,
                         "--rounds", str(args.rounds), "--json"],
                        stdout=out, stderr=log, check=False, cwd=ROOT, env=env,
                    )  # fmt: skip
                    log.seek(0)
                    errors = log.read()
            out.seek(0)
            text = out.read()
        if proc.returncode != 0:
            raise SystemExit(f"{script.name} on {database} failed (exit {proc.returncode}): {(errors + text)[-3000:]}")
        results[database] = {**json.loads(text.strip().splitlines()[-1]), "server": server}
    return results


CPU_KINDS = ("release", "Prefect server", "PostgreSQL", "sandbox Lambda", "builds", "other")
PREFECT_KINDS = ("Prefect server", "PostgreSQL")  # Prefect's share: its server and its database


def cpu_kind(pid: int, command: str) -> str:
    """What a process is, for :class:`CpuUse`: this process (the release and the in-process sandbox's
    threads), the sandbox's Lambda handler processes (what AWS runs, not the releaser), the builds'
    pip and compile processes, the Prefect server, PostgreSQL, or other."""
    if pid == os.getpid():
        return "release"
    if "sandbox/_bootstrap.py" in command:
        return "sandbox Lambda"
    if " -m pip " in command or "import json, sys" in command:
        return "builds"
    if "postgres" in command:
        return "PostgreSQL"
    if "prefect" in command and "server" in command:
        return "Prefect server"
    return "other"


class CpuUse:
    """CPU seconds spent on the machine while ``on``, by kind of process (:func:`cpu_kind`).

    The machine's total comes from ``/proc/stat``; each process's share from ``/proc/PID/stat``, read every
    ``interval`` seconds: a process that exits loses what it spent after its last reading (all of it when it
    lived less than ``interval``), counted in ``other`` (the machine's total less every process seen). The
    sampling runs in this process, counted as "release".
    Linux only; elsewhere every figure is empty.
    """

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self.tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    def _machine(self) -> float:
        user, nice, system, _idle, _iowait, irq, softirq = (
            int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]
        )
        return (user + nice + system + irq + softirq) / self.tick  # guest time is already in user and nice

    def _processes(self) -> dict[tuple[int, int], tuple[str, float]]:
        """Each process, by (pid, start time: a pid used again is another process): its kind and CPU seconds."""
        seen: dict[tuple[int, int], tuple[str, float]] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
                command = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                key = (int(entry), int(fields[19]))
            except (OSError, IndexError, ValueError):
                continue
            seen[key] = (cpu_kind(int(entry), command), (int(fields[11]) + int(fields[12])) / self.tick)
        return seen

    @contextmanager
    def measuring(self) -> Iterator[dict[str, float]]:
        """Yields a dict filled, when the block ends, with CPU seconds per kind and the ``machine``'s."""
        result: dict[str, float] = {}
        if not Path("/proc/stat").exists():
            yield result
            return
        start, machine = self._processes(), self._machine()
        last = dict(start)
        done = threading.Event()

        def keep(seen: dict[tuple[int, int], tuple[str, float]]) -> None:
            for key, (kind, seconds) in seen.items():
                known = last.get(key)
                if known and kind == "other":  # an exited process's cmdline is empty: it keeps the kind it had
                    kind = known[0]
                last[key] = (kind, max(seconds, known[1] if known else 0.0))

        def sample() -> None:
            while not done.wait(self.interval):
                keep(self._processes())

        sampler = threading.Thread(target=sample, name="cpu-use", daemon=True)
        sampler.start()
        try:
            yield result
        finally:
            done.set()
            sampler.join()
            keep(self._processes())
            result["machine"] = self._machine() - machine
            for key, (kind, seconds) in last.items():
                result[kind] = result.get(kind, 0.0) + seconds - start.get(key, (kind, 0.0))[1]
            result["other"] = result["machine"] - sum(v for k, v in result.items() if k not in ("machine", "other"))


def spread(values: Sequence[float], fmt: str = "{:.2f}") -> str:
    """``median (min–max, n=N)``."""
    if not values:
        return "-"
    median = statistics.median(values)
    return f"{fmt.format(median)} ({fmt.format(min(values))}–{fmt.format(max(values))}, n={len(values)})"


def table(title: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table (Markdown-compatible)."""
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([title, "", line(header), rule, *(line(row) for row in rows)])


def load_note() -> str:
    """The machine's state while measuring: the figures are only comparable within one run."""
    one, five, _ = os.getloadavg()
    return f"machine: {os.cpu_count()} cores, load average {one:.1f} (1 min) / {five:.1f} (5 min) at the end"
