"""Release benchmark: the release flow next to a plain sequential boto3 script doing the same deploys.

    python bench/release.py [--rounds N] [--database postgres|sqlite]

Against an in-process sandbox (moto, the App Runner stand-in, the ECR registry), with Prefect on
PostgreSQL and on the embedded SQLite default (``bench/harness.py``: one process each), per round:

1. ``release`` of v1 (backend, worker, frontend to dev then prod; prod's approval and canary
   switched off: neither is machine time), every AWS API call it makes counted (botocore's
   ``before-call`` event in this process; calls of child processes recorded by opcd.aws and
   counted too), its flow and task runs counted on the server;
2. ``opcd deploy backend --env prod --version v2 --dry-run``, then the same without
   ``--dry-run`` (v2's artifact built and deployed to dev first, not measured): wall time and AWS
   calls of each, through the CLI in this process;
3. the plain script, after the sandbox is reset and seeded again: the same deploys as 1. one after
   another with plain boto3 and httpx — update, wait, publish, smoke-invoke, move the alias,
   health-check, the worker's rule, UpdateService followed to SUCCEEDED, health and smoke —
   from the artifacts the release built (it builds nothing), counting its AWS calls too.

The sandbox is reset and seeded before each release. Printed: the release's wall time without its
build phase over the plain script's (the ratio), the AWS calls of each and their ratio, the
release's flow and task runs, and the dry run against the deploy; each the median of the rounds
with its spread.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

import httpx  # noqa: E402

from bench.harness import AwsCalls, bench_main, child_calls, record_child_calls, spread, table  # noqa: E402
from opcd.aws import AwsTarget, resolve_target  # noqa: E402
from opcd.config import Config, load_config  # noqa: E402
from sandbox.seed import seed  # noqa: E402
from sandbox.server import SandboxServer, write_info  # noqa: E402
from tasks.health import wait_healthy  # noqa: E402
from tasks.lambda_functions import http_event  # noqa: E402


def plain_release(config: Config, target: AwsTarget, version: str, state: Path) -> float:
    """The release's deploys, sequential, with plain boto3/httpx: seconds (artifact uploads not counted)."""
    bucket = config.project.artifact_bucket
    lam, events = target.client("lambda"), target.client("events")
    apprunner, cloudwatch = target.client("apprunner"), target.client("cloudwatch")
    for component, comp in config.components.items():  # the uploads the release's builds made
        if comp.kind == "lambda":
            body = (state / "build" / component / version / "lambda.zip").read_bytes()
            target.client("s3").put_object(Bucket=bucket, Key=f"{component}/{version}/lambda.zip", Body=body)
    services = {s["ServiceName"]: s["ServiceArn"] for s in apprunner.list_services()["ServiceSummaryList"]}
    start = time.perf_counter()
    for env_name, env in config.environments.items():
        for component, comp in config.components.items():
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
                lam.update_function_code(
                    FunctionName=function, S3Bucket=bucket, S3Key=f"{component}/{version}/lambda.zip"
                )
                while lam.get_function_configuration(FunctionName=function)["LastUpdateStatus"] == "InProgress":
                    time.sleep(0.1)
                new = lam.publish_version(FunctionName=function, Description=f"plain {component} {version}")["Version"]
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
    return time.perf_counter() - start


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


def fresh_sandbox(server: SandboxServer, config: Config, work: Path) -> None:
    """The sandbox as `opcd sandbox up` leaves it: reset, faults cleared, seeded; its address where opcd reads it."""
    httpx.post(f"{server.url}/moto-api/reset", timeout=30).raise_for_status()
    httpx.delete(f"{server.url}/_opcd/faults", timeout=30).raise_for_status()
    gateway = seed(config, server.url, work / "sandbox", server.apprunner_url)
    write_info(config.state_dir(), {**server.info(), "region": "us-east-1", "pid": os.getpid(), "gateway": gateway})
    # The seed's 15 s function timeout: on a loaded machine the example's handlers can start slower than that.
    lam = resolve_target(config.state_dir(), config.project.region).client("lambda")
    for env in config.environments.values():
        for function in env.functions.values():
            lam.update_function_configuration(FunctionName=function, Timeout=LAMBDA_TIMEOUT)


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


def rounds_of(rounds: int) -> dict[str, list[float]]:
    """The figures of ``rounds`` rounds, against a sandbox of this process and the Prefect server of its environment."""
    from flows.release import release

    counter = AwsCalls()  # before any client is made
    work = Path(tempfile.mkdtemp(prefix="opcd-bench-release-"))
    children = record_child_calls(work)
    config_file = bench_config(work)
    os.environ["OPCD_CONFIG"] = str(config_file)
    config = load_config(config_file)
    os.environ["OPCD_BUILD_CACHE"] = str(work / "cache")
    server = SandboxServer(work / "sandbox", config.project.region, 0).start()
    figures: dict[str, list[float]] = {}

    def add(name: str, value: float) -> None:
        figures.setdefault(name, []).append(value)

    try:
        for _ in range(rounds):
            fresh_sandbox(server, config, work)
            flows_before, tasks_before = run_counts()
            with counter.counting() as calls:
                start = time.perf_counter()
                state = release(version="v1", config_path=str(config_file), return_state=True)
                wall = time.perf_counter() - start
            if not state.is_completed():
                raise RuntimeError(f"the release did not complete: {state.message}")
            flows_after, tasks_after = run_counts()
            builds = state.result()["build_seconds"]
            add("release s", wall - builds), add("builds s", builds), add("release calls", len(calls))
            add("release child-process calls", child_calls(children))
            add("flow runs", flows_after - flows_before), add("task runs", tasks_after - tasks_before)

            cli("deploy", "backend", "--env", "dev", "--version", "v2")  # builds v2's artifact: not measured
            child_calls(children)
            for name, extra in (("dry run", ["--dry-run"]), ("deploy", [])):
                with counter.counting() as calls:
                    start = time.perf_counter()
                    cli("deploy", "backend", "--env", "prod", "--version", "v2", *extra)
                    add(f"{name} s", time.perf_counter() - start)
                add(f"{name} calls", len(calls) + child_calls(children))

            fresh_sandbox(server, config, work)
            target = resolve_target(config.state_dir(), config.project.region)
            with counter.counting() as calls:
                add("script s", plain_release(config, target, "v1", config.state_dir()))
            add("script calls", len(calls) + child_calls(children))
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    return figures


def ratios(figures: dict[str, list[float]], top: str, bottom: str) -> list[float]:
    return [a / b for a, b in zip(figures[top], figures[bottom], strict=True)]


def report(results: dict[str, dict[str, Any]]) -> str:
    rows = []
    for database, f in results.items():
        calls = [a + b for a, b in zip(f["release calls"], f["release child-process calls"], strict=True)]
        rows += [
            [database, "release deploys / plain script, wall time", spread(ratios(f, "release s", "script s"))],
            [database, "release deploys, s (builds excluded)", spread(f["release s"], "{:.1f}")],
            [database, "release builds, s (in parallel, not in the ratio)", spread(f["builds s"], "{:.1f}")],
            [database, "plain sequential script, s", spread(f["script s"], "{:.1f}")],
            [database, "AWS calls: release / script", spread([a / b for a, b in zip(calls, f["script calls"],
                                                                                     strict=True)])],
            [database, "AWS calls of the release (of which in child processes)",
             f"{statistics.median(calls):.0f} ({statistics.median(f['release child-process calls']):.0f})"],
            [database, "AWS calls of the script", f"{statistics.median(f['script calls']):.0f}"],
            [database, "flow runs / task runs of one release",
             f"{statistics.median(f['flow runs']):.0f} / {statistics.median(f['task runs']):.0f}"],
            [database, "deploy --dry-run of one component, s", spread(f["dry run s"], "{:.1f}")],
            [database, "its real deploy, s", spread(f["deploy s"], "{:.1f}")],
            [database, "dry run / deploy, wall time", spread(ratios(f, "dry run s", "deploy s"))],
            [database, "AWS calls: dry run / deploy",
             f"{statistics.median(f['dry run calls']):.0f} / {statistics.median(f['deploy calls']):.0f}"],
        ]  # fmt: skip
    return table("Release v1 (3 components, dev then prod) against a plain sequential boto3 script; "
                 "median (min–max) of the rounds", ["Prefect", "figure", "value"], rows)  # fmt: skip


if __name__ == "__main__":
    sys.exit(bench_main(__doc__, Path(__file__), rounds_of, report))
