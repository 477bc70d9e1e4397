"""Release benchmark: the release flow next to a plain sequential boto3 script doing the same deploys.

    python bench/release.py

Against an in-process sandbox (moto, the App Runner stand-in, the ECR registry) and a temporary
Prefect server, measured in one run:

1. ``release`` of v1 (backend, worker, frontend to dev then prod; prod's approval and canary
   switched off: neither is machine time), every AWS API call it makes counted;
2. the plain script, after the sandbox is reset and seeded again: the same deploys one after
   another with plain boto3 and httpx — update, wait, publish, smoke-invoke, move the alias,
   health-check, the worker's rule, UpdateService followed to SUCCEEDED, health and smoke —
   from the artifacts the release built (it builds nothing), counting its AWS calls too;
3. Prefect's cost per run here: an empty task, and an empty subflow.

Printed: the release's wall time without its build phase next to the plain script's (the ratio),
the builds, and the orchestration overhead: the release's task and flow runs times their
measured unit cost.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

from collections.abc import Callable  # noqa: E402

import botocore.client  # noqa: E402
import httpx  # noqa: E402

from opcd.aws import AwsTarget, resolve_target  # noqa: E402
from opcd.config import Config, load_config  # noqa: E402
from sandbox.seed import seed  # noqa: E402
from sandbox.server import SandboxServer, write_info  # noqa: E402
from tasks.health import wait_healthy  # noqa: E402
from tasks.lambda_functions import http_event  # noqa: E402


class Recorder:
    """Counts every botocore API call this process makes while ``on``."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.on = False
        self._lock = threading.Lock()

    def install(self) -> None:
        recorder, original = self, botocore.client.BaseClient._make_api_call

        def make_api_call(client: Any, operation: str, params: dict[str, Any]) -> Any:
            if recorder.on:
                with recorder._lock:
                    recorder.calls.append(f"{client.meta.service_model.service_name}.{operation}")
            return original(client, operation, params)

        botocore.client.BaseClient._make_api_call = make_api_call  # type: ignore[method-assign]


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


def unit_costs(n: int = 30, rounds: int = 3) -> tuple[float, float]:
    """Seconds per empty task run and per empty subflow run on this Prefect server (medians of ``rounds``)."""
    import statistics

    from prefect import flow, task

    @task
    def nothing(i: int) -> int:
        return i

    @flow(name="bench-child")
    def child() -> None:
        return None

    @flow(name="bench-tasks")
    def tasks_flow(count: int) -> None:
        for i in range(count):
            nothing(i)

    @flow(name="bench-subflows")
    def subflows_flow(count: int) -> None:
        for _ in range(count):
            child()

    def timed(fn: Callable[[int], None], count: int) -> float:
        start = time.perf_counter()
        fn(count)
        return time.perf_counter() - start

    timed(tasks_flow, 1)  # warm up
    per_task, per_flow = [], []
    for _ in range(rounds):
        base = timed(tasks_flow, 0)
        per_task.append((timed(tasks_flow, n) - base) / n)
        per_flow.append((timed(subflows_flow, n // 3) - base) / (n // 3))
    return statistics.median(per_task), statistics.median(per_flow)


def main() -> int:
    from prefect.client.orchestration import get_client
    from prefect.testing.utilities import prefect_test_harness

    from flows.release import release

    work = Path(tempfile.mkdtemp(prefix="opcd-bench-release-"))
    text = (ROOT / "opcd.toml").read_text().replace("examples/outreachpass/", f"{ROOT}/examples/outreachpass/")
    text = text.replace('approval = { approvers = ["alice", "bob"], timeout = "24h" }', "approval = false")
    text = text.replace('traffic = { backend = "canary10-5m", worker = "linear50-2m" }', "")
    text = text.replace(
        'operation = { timeout = "20m", poll_interval = "10s" }', 'operation = { poll_interval = "0.5s" }'
    )
    (work / "opcd.toml").write_text(text)
    config = load_config(work / "opcd.toml")
    os.environ["OPCD_BUILD_CACHE"] = str(work / "cache")
    server = SandboxServer(work / "sandbox", config.project.region, 0).start()
    recorder = Recorder()
    recorder.install()
    try:
        gateway = seed(config, server.url, work / "sandbox", server.apprunner_url)
        write_info(config.state_dir(), {**server.info(), "region": "us-east-1", "pid": os.getpid(), "gateway": gateway})
        with prefect_test_harness(server_startup_timeout=180):
            per_task, per_flow = unit_costs()
            with get_client(sync_client=True) as client:
                flows_before, tasks_before = len(client.read_flow_runs()), len(client.read_task_runs())
            recorder.on = True
            start = time.perf_counter()
            state = release(version="v1", config_path=str(work / "opcd.toml"), return_state=True)
            wall = time.perf_counter() - start
            recorder.on = False
            if not state.is_completed():
                print(f"the release did not complete: {state.message}", file=sys.stderr)
                return 1
            summary = state.result()
            with get_client(sync_client=True) as client:
                flow_runs = len(client.read_flow_runs()) - flows_before
                task_runs = len(client.read_task_runs()) - tasks_before
        release_calls = len(recorder.calls)
        httpx.post(f"{server.url}/moto-api/reset", timeout=30).raise_for_status()
        httpx.delete(f"{server.url}/_opcd/faults", timeout=30).raise_for_status()
        gateway = seed(config, server.url, work / "sandbox", server.apprunner_url)
        write_info(config.state_dir(), {**server.info(), "region": "us-east-1", "pid": os.getpid(), "gateway": gateway})
        target = resolve_target(config.state_dir(), config.project.region)
        recorder.calls.clear()
        recorder.on = True
        plain = plain_release(config, target, "v1", config.state_dir())
        recorder.on = False
        plain_calls = len(recorder.calls)
    finally:
        server.stop()
    overhead = task_runs * per_task + flow_runs * per_flow
    builds = summary["build_seconds"]
    deploys = wall - builds
    print(f"release v1 (3 components, dev then prod, no approval wait): {wall:.1f} s wall, of which builds"
          f" {builds:.1f} s (in parallel) and deploys {deploys:.1f} s; {release_calls} AWS calls")  # fmt: skip
    print(f"plain sequential boto3/httpx script, the same deploys from those builds: {plain:.1f} s;"
          f" {plain_calls} AWS calls")  # fmt: skip
    print(f"ratio release deploys / plain script: {deploys / plain:.2f}")
    share = overhead / wall
    print(f"orchestration overhead: {task_runs} task runs x {per_task * 1000:.1f} ms + {flow_runs} flow runs x"
          f" {per_flow * 1000:.0f} ms = {overhead:.1f} s ({share:.0%} of the release's wall time)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
