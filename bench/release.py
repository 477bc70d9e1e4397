"""The release benchmark: the issue's five figures in one table, each the median of the rounds with its spread.

    python bench/release.py [--rounds N] [--database postgres|sqlite] [--apprunner-seconds S] [--quick]

Against an in-process sandbox (moto, the App Runner stand-in, the ECR registry), with Prefect on
PostgreSQL and on the embedded SQLite default (``bench/harness.py``: one process each), per round:

1. ``release`` of v1 (the example project's backend, worker and frontend to dev then prod; prod's
   approval and canary switched off: neither is machine time), every AWS API call it makes counted
   (botocore's ``before-call`` event in this process; calls of child processes recorded by opcd.aws
   and counted too), its flow and task runs counted on the server; then the plain script (below) on
   the sandbox reset and seeded again: figures 1 (wall time) and 2 (AWS calls); then the same script
   with an environment's components in parallel, on a sandbox seeded again: the floor of figures 1 and 3;
2. ``opcd deploy backend --env prod --version v2 --dry-run``, then the same without
   ``--dry-run`` (v2's artifact built and deployed to dev first, not measured): wall time and AWS
   calls of each, through the CLI in this process: figure 5;
3. on PostgreSQL only (the figure is about the graph, not the database), the release and the script
   again with App Runner's deployment made realistically slow: the stand-in's operation lasting
   ``--apprunner-seconds`` (default 60; 0 or ``--quick`` leaves it out) IN_PROGRESS: figure 3.

After the rounds, ``bench/flowcost.py``'s loops in the same process: what one component's deploy
costs in orchestration as the release runs it, against an empty Python call (figure 4).

The plain script does the same deploys one after another with plain boto3 and httpx — update, wait,
publish, smoke-invoke, move the alias, health-check, the worker's rule, UpdateService followed to
SUCCEEDED, health and smoke — from the artifacts the release built (it builds nothing). The
release's wall time is taken without its build phase (the builds run first, in parallel; the script
builds nothing). The parallel script makes the same calls, an environment's components in threads as
the release deploys them, with nothing around them: no Prefect, plan, lock, ledger, check before a
change or verification after it. Its ratio to the sequential script is the lowest figures 1 and 3 can
reach with these deploys, dev before prod.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
if __name__ == "__main__":  # run as the benchmark (not imported by its tests: their processes keep their settings)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

import httpx  # noqa: E402

from bench.flowcost import unit_costs  # noqa: E402
from bench.harness import PREFECT_KINDS, AwsCalls, CpuUse, bench_main, child_calls, record_child_calls, spread, table  # noqa: E402
from opcd.aws import AwsTarget, resolve_target  # noqa: E402
from opcd.config import Config, load_config  # noqa: E402
from sandbox.seed import seed  # noqa: E402
from sandbox.server import SandboxServer, write_info  # noqa: E402
from tasks.health import wait_healthy  # noqa: E402
from tasks.lambda_functions import http_event  # noqa: E402
from tasks.migrations import migration_process  # noqa: E402


def plain_release(config: Config, target: AwsTarget, version: str, state: Path, parallel: bool = False) -> float:
    """The release's deploys with plain boto3/httpx, one environment after another: seconds (artifact uploads
    not counted). ``parallel``: an environment's components at once, one thread each, as the release runs
    them — the same calls with nothing around them (no Prefect, plan, lock, ledger or checks): the floor
    of any orchestration of these deploys."""
    bucket = config.project.artifact_bucket
    for component, comp in config.components.items():  # the uploads the release's builds made
        if comp.kind == "lambda":
            body = (state / "build" / component / version / "lambda.zip").read_bytes()
            target.client("s3").put_object(Bucket=bucket, Key=f"{component}/{version}/lambda.zip", Body=body)
    for service in ("lambda", "events", "cloudwatch"):  # made before the clock, as the script always did
        target.client(service)
    apprunner = target.client("apprunner")
    services = {s["ServiceName"]: s["ServiceArn"] for s in apprunner.list_services()["ServiceSummaryList"]}
    start = time.perf_counter()
    for env_name in config.environments:
        deploys = [
            functools.partial(plain_deploy, config, target, version, state, services, env_name, component)
            for component in config.components
        ]
        if parallel:
            with ThreadPoolExecutor(max_workers=len(deploys)) as pool:
                for future in [pool.submit(deploy) for deploy in deploys]:
                    future.result()
        else:
            for deploy in deploys:
                deploy()
    return time.perf_counter() - start


def plain_deploy(
    config: Config, target: AwsTarget, version: str, state: Path, services: dict[str, str], env_name: str,
    component: str,
) -> None:  # fmt: skip
    """One component's deploy as the plain script makes it: each step the deploys of the example project run,
    once, without opcd's checks: update and publish, the backend's migrations, the smoke and sample
    invocations, the rules, the alias, health; App Runner's UpdateService followed to SUCCEEDED, health,
    smoke; the alarms read once."""
    bucket, env, comp = config.project.artifact_bucket, config.environments[env_name], config.components[component]
    lam, events = target.client("lambda"), target.client("events")
    apprunner, cloudwatch = target.client("apprunner"), target.client("cloudwatch")
    if comp.kind == "apprunner":
        arn = services[env.services[component]]
        service = apprunner.describe_service(ServiceArn=arn)["Service"]
        source = service["SourceConfiguration"]
        uri = target.client("ecr").describe_repositories(repositoryNames=[str(comp.repository)])
        image = f"{uri['repositories'][0]['repositoryUri']}:{version}"
        source["ImageRepository"] = {
            **source["ImageRepository"], "ImageIdentifier": image, "ImageRepositoryType": "ECR",
        }  # fmt: skip
        source.pop("CodeRepository", None)
        operation = apprunner.update_service(ServiceArn=arn, SourceConfiguration=source)["OperationId"]
        while True:
            ops = apprunner.list_operations(ServiceArn=arn)["OperationSummaryList"]
            status = next(o["Status"] for o in ops if o["Id"] == operation)
            if status != "IN_PROGRESS" and status != "PENDING":
                break
            time.sleep(comp.operation.poll_interval)
        url = apprunner.describe_service(ServiceArn=arn)["Service"]["ServiceUrl"]
        wait_healthy(target.resolve_url(env.health[component]), env.health_check)
        for check in comp.smoke:
            httpx.get(target.resolve_url(f"https://{url}") + check.path, timeout=5)
    else:
        function = env.functions[component]
        lam.get_alias(FunctionName=function, Name="live")
        lam.update_function_code(FunctionName=function, S3Bucket=bucket, S3Key=f"{component}/{version}/lambda.zip")
        while lam.get_function_configuration(FunctionName=function)["LastUpdateStatus"] == "InProgress":
            time.sleep(0.1)
        new = lam.publish_version(FunctionName=function, Description=f"plain {component} {version}")["Version"]
        if comp.migrations:  # as the deploy: from the unpacked package, the database URL from Secrets Manager
            secret = target.client("secretsmanager").get_secret_value(SecretId=config.database_secret(env_name))
            argv, work, environ = migration_process(
                (state / "build" / component / version / "lambda.zip").read_bytes(), comp.migrations.command,
                comp.runtime, secret["SecretString"], state / "plain-migrate",
            )  # fmt: skip
            subprocess.run(
                argv, cwd=work, env=environ, check=True, capture_output=True, timeout=comp.migrations.timeout
            )
        events_to_send = [http_event(check) for check in comp.smoke]
        if comp.sample_event:
            events_to_send.append(json.loads((config.root / comp.sample_event).read_text()))
        for event in events_to_send:
            lam.invoke(FunctionName=function, Qualifier=new, Payload=json.dumps(event).encode())
        live = lam.get_alias(FunctionName=function, Name="live")["AliasArn"]
        for rule in comp.rules:
            name = f"{config.project.name}-{env_name}-{rule.name}"
            events.put_rule(Name=name, ScheduleExpression=str(rule.schedule), State="ENABLED")
            events.put_targets(Rule=name, Targets=[{"Id": "live", "Arn": live}])
        lam.update_alias(FunctionName=function, Name="live", FunctionVersion=new)
        if component in env.health:
            wait_healthy(target.resolve_url(env.health[component]), env.health_check)
        if comp.sample_event:
            sample = json.dumps(events_to_send[-1]).encode()
            lam.invoke(FunctionName=function, Qualifier="live", Payload=sample)
    if env.alarms:
        cloudwatch.describe_alarms(AlarmNames=env.alarms)


LAMBDA_TIMEOUT = 120


def bench_config(work: Path) -> Path:
    """opcd.toml for the benchmark: the example's sources, no approval, no gradual traffic, quick polls."""
    text = (ROOT / "opcd.toml").read_text().replace("examples/outreachpass/", f"{ROOT}/examples/outreachpass/")
    text = text.replace('approval = { approvers = ["alice", "bob"], timeout = "24h" }', "approval = false")
    text = text.replace('traffic = { backend = "canary10-5m", worker = "linear50-2m" }', "")
    text = text.replace(
        'operation = { timeout = "20m", poll_interval = "10s" }', 'operation = { poll_interval = "0.5s" }'
    )
    (work / "opcd.toml").write_text(text)
    return work / "opcd.toml"


def fresh_sandbox(server: SandboxServer, config: Config, work: Path) -> AwsTarget:
    """The sandbox as `opcd sandbox up` leaves it: reset, faults cleared, seeded; its address where opcd reads it.
    Returns the target it now is (its gateway names the services seeding made)."""
    httpx.post(f"{server.url}/moto-api/reset", timeout=30).raise_for_status()
    httpx.delete(f"{server.url}/_opcd/faults", timeout=30).raise_for_status()
    gateway = seed(config, server.url, work / "sandbox", server.apprunner_url)
    write_info(config.state_dir(), {**server.info(), "region": "us-east-1", "pid": os.getpid(), "gateway": gateway})
    # The seed's 15 s function timeout: on a loaded machine the example's handlers can start slower than that.
    target = resolve_target(config.state_dir(), config.project.region)
    for env in config.environments.values():
        for function in env.functions.values():
            target.client("lambda").update_function_configuration(FunctionName=function, Timeout=LAMBDA_TIMEOUT)
    return target


def cli(*argv: str) -> None:
    """``opcd ARGV`` in this process, its output kept (shown if it fails)."""
    from cli.main import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = main(list(argv))
    if code != 0:
        raise RuntimeError(f"opcd {' '.join(argv)} exited {code}: {out.getvalue()[-2000:]}")


def run_counts() -> tuple[int, int]:
    """Flow runs and task runs on the server so far."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.count_flow_runs(), int(client.request("POST", "/task_runs/count", json={}).json())


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--apprunner-seconds",
        type=float,
        default=60.0,
        help="how long App Runner's deployment lasts in figure 3 (default 60; 0: leave figure 3 out)",
    )
    parser.add_argument("--quick", action="store_true", help="leave figure 3 (the slow App Runner) out")  # fmt: skip


def measured_release(config_file: Path, counter: AwsCalls) -> tuple[float, float, int, int, int, dict[str, float]]:
    """Release v1 of every component: (wall time, its builds' time, AWS calls in this process, flow runs, task runs,
    the machine's CPU seconds by kind of process (:class:`bench.harness.CpuUse`))."""
    from flows.release import release

    flows_before, tasks_before = run_counts()
    with CpuUse().measuring() as cpu, counter.counting() as calls:
        start = time.perf_counter()
        state = release(version="v1", config_path=str(config_file), return_state=True)
        wall = time.perf_counter() - start
    if not state.is_completed():
        raise RuntimeError(f"the release did not complete: {state.message}")
    flows_after, tasks_after = run_counts()
    builds = state.result()["build_seconds"]
    return wall, builds, len(calls), flows_after - flows_before, tasks_after - tasks_before, cpu


def release_round(
    server: SandboxServer,
    config: Config,
    config_file: Path,
    work: Path,
    counter: AwsCalls,
    children: Path,
    add: Any,
    slow: float = 0.0,
) -> None:
    """One release of v1 and the plain script doing the same deploys, each on a fresh sandbox; ``slow``:
    App Runner's deployments last that long (not its seeding)."""
    prefix = "slow " if slow else ""

    def seeded() -> AwsTarget:
        if slow:  # services created at the default pace: seeding waits for them
            apprunner_timings(server, deploy=2.0)
        target = fresh_sandbox(server, config, work)
        if slow:
            apprunner_timings(server, deploy=slow)
        return target

    seeded()
    wall, builds, calls, flow_runs, task_runs, cpu = measured_release(config_file, counter)
    add(f"{prefix}release s", wall - builds), add(f"{prefix}builds s", builds)
    add(f"{prefix}release calls", calls), add(f"{prefix}release child-process calls", child_calls(children))
    add(f"{prefix}flow runs", flow_runs), add(f"{prefix}task runs", task_runs)
    if cpu:
        add(f"{prefix}release cpu", cpu["machine"])
        add(f"{prefix}release prefect cpu", sum(cpu.get(kind, 0.0) for kind in PREFECT_KINDS))
    target = seeded()
    with CpuUse().measuring() as cpu, counter.counting() as calls:
        add(f"{prefix}script s", plain_release(config, target, "v1", config.state_dir()))
    add(f"{prefix}script calls", len(calls) + child_calls(children))
    if cpu:
        add(f"{prefix}script cpu", cpu["machine"])
    target = seeded()  # new App Runner services: new URLs, so a new gateway
    add(f"{prefix}parallel script s", plain_release(config, target, "v1", config.state_dir(), parallel=True))


def apprunner_timings(server: SandboxServer, **timings: float) -> None:
    """The stand-in's App Runner durations (``deploy``: seconds IN_PROGRESS) for the operations started next."""
    httpx.post(f"{server.apprunner_url}/_opcd/apprunner/timings", json=timings, timeout=30).raise_for_status()


def rounds_of(args: argparse.Namespace) -> dict[str, list[float]]:
    """The figures of ``args.rounds`` rounds, against a sandbox of this process and the Prefect server of its
    environment."""
    counter = AwsCalls()  # before any client is made
    work = Path(tempfile.mkdtemp(prefix="opcd-bench-release-"))
    children = record_child_calls(work)
    config_file = bench_config(work)
    os.environ["OPCD_CONFIG"] = str(config_file)
    config = load_config(config_file)
    os.environ["OPCD_BUILD_CACHE"] = str(work / "cache")
    server = SandboxServer(work / "sandbox", config.project.region, 0).start()
    slow = 0.0 if args.quick or args.database != "postgres" else args.apprunner_seconds
    figures: dict[str, list[float]] = {}

    def add(name: str, value: float) -> None:
        figures.setdefault(name, []).append(value)

    try:
        for _ in range(args.rounds):
            release_round(server, config, config_file, work, counter, children, add)

            cli("deploy", "backend", "--env", "dev", "--version", "v2")  # builds v2's artifact: not measured
            child_calls(children)
            for name, extra in (("dry run", ["--dry-run"]), ("deploy", [])):
                with counter.counting() as calls:
                    start = time.perf_counter()
                    cli("deploy", "backend", "--env", "prod", "--version", "v2", *extra)
                    add(f"{name} s", time.perf_counter() - start)
                add(f"{name} calls", len(calls) + child_calls(children))

            if slow:
                try:
                    release_round(server, config, config_file, work, counter, children, add, slow)
                finally:
                    apprunner_timings(server, deploy=2.0)
        for kind, values in unit_costs(args.rounds).items():
            figures[f"cost {kind}"] = values
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    if slow:
        figures["apprunner seconds"] = [slow]
    return figures


def ratios(figures: dict[str, list[float]], top: str, bottom: str) -> list[float]:
    return [a / b for a, b in zip(figures[top], figures[bottom], strict=True)]


def median(values: list[float], fmt: str = "{:.0f}") -> str:
    return fmt.format(statistics.median(values)) if values else "-"


def report(results: dict[str, dict[str, Any]]) -> str:
    """One table: a row per figure, a column per database."""
    databases = list(results)

    def row(figure: str, bound: str, cell: Any) -> list[str]:
        return [figure, bound, *(cell(results[d]) if results[d] else "-" for d in databases)]

    def calls(f: dict[str, list[float]], prefix: str = "") -> list[float]:
        own, other = f[f"{prefix}release calls"], f[f"{prefix}release child-process calls"]
        return [a + b for a, b in zip(own, other, strict=True)]

    def per_component(f: dict[str, list[float]], kind: str) -> list[float]:
        return [a - b for a, b in zip(f[f"cost {kind}"], f["cost call"], strict=True)]

    def slow(cell: Any) -> Any:
        return lambda f: cell(f) if "slow release s" in f else "-"

    seconds = next((f["apprunner seconds"][0] for f in results.values() if "apprunner seconds" in f), None)
    rows = [
        row("1. release deploys / plain sequential script, wall time", "≤ 0.7 pg, ≤ 1.3 sqlite",
            lambda f: spread(ratios(f, "release s", "script s"))),
        row("   release deploys, s (builds excluded)", "", lambda f: spread(f["release s"], "{:.1f}")),
        row("   release builds, s (in parallel, not in the ratio)", "", lambda f: spread(f["builds s"], "{:.1f}")),
        row("   plain sequential script, s", "", lambda f: spread(f["script s"], "{:.1f}")),
        row("   the floor: the plain script, an environment's components in parallel / sequential", "",
            lambda f: spread(ratios(f, "parallel script s", "script s"))),
        row("   the machine's CPU, s: release (builds included; of it Prefect's server and database) / script", "",
            lambda f: (f"{median(f['release cpu'], '{:.1f}')} ({median(f['release prefect cpu'], '{:.1f}')})"
                       f" / {median(f['script cpu'], '{:.1f}')}") if f.get("release cpu") else "-"),
        row("2. AWS calls: release / script", "≤ 1.5",
            lambda f: spread([a / b for a, b in zip(calls(f), f["script calls"], strict=True)])),
        row("   AWS calls: release (in child processes) / script", "",
            lambda f: f"{median(calls(f))} ({median(f['release child-process calls'])}) / {median(f['script calls'])}"),
        row("   flow runs / task runs of one release", "",
            lambda f: f"{median(f['flow runs'])} / {median(f['task runs'])}"),
        row(f"3. App Runner deploy {seconds or '-'} s: release / script, wall time", "≤ 0.5",
            slow(lambda f: spread(ratios(f, "slow release s", "slow script s")))),
        row("   release deploys, s / script, s", "",
            slow(lambda f: f"{median(f['slow release s'], '{:.1f}')} / {median(f['slow script s'], '{:.1f}')}")),
        row("   the floor: the plain script in parallel / sequential", "",
            slow(lambda f: spread(ratios(f, "slow parallel script s", "slow script s")))),
        row("4. orchestration of one component's deploy, s (over an empty call)", "≤ 0.25",
            lambda f: spread(per_component(f, "component deploy"), "{:.3f}")),
        row("   one that bakes a split (its own child flow run, as all did before)", "",
            lambda f: spread(per_component(f, "component deploy, child run"), "{:.3f}")),
        row("   a child flow run / a task run, s", "",
            lambda f: f"{median(f['cost child flow'], '{:.3f}')} / {median(f['cost task'], '{:.3f}')}"),
        row("   an empty Python call, µs", "", lambda f: spread([c * 1e6 for c in f["cost call"]], "{:.2f}")),
        row("5. deploy --dry-run of one component, s", "", lambda f: spread(f["dry run s"], "{:.1f}")),
        row("   its real deploy, s", "", lambda f: spread(f["deploy s"], "{:.1f}")),
        row("   AWS calls: dry run / deploy", "",
            lambda f: f"{median(f['dry run calls'])} / {median(f['deploy calls'])}"),
    ]  # fmt: skip
    return table(
        "Release of the example project (backend, worker, frontend; dev then prod) against a plain sequential"
        " boto3 script; median (min–max, n=rounds)",
        ["figure", "bound", *databases], rows,
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(bench_main(__doc__, Path(__file__), rounds_of, report, options))
