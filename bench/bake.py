"""Bake benchmark: how fast an alarm during a canary puts all traffic back, and what a guard poll costs.

    python bench/bake.py [--trials N] [--poll SECONDS]

Against an in-process sandbox and a temporary Prefect server: deploys v1 of the backend to dev,
then N times deploys a new version by ``canary50-10m`` with guards polled every ``--poll``
seconds, and the moment another reader sees the alias split, sets the environment's alarm to
ALARM. Measured, in one run:

- reaction: from the alarm being set (once the split has baked 2.5 polls) to the alias read back
  with all traffic on the old version (expected: at most one poll interval plus one poll's work);
- poll cost: the time between two guard polls of the bake minus the sleep, next to the same calls
  (describe_alarms, one health GET, one smoke invoke) made by a plain boto3/httpx loop.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

import httpx  # noqa: E402

from opcd.aws import AwsTarget  # noqa: E402
from opcd.config import load_config  # noqa: E402
from sandbox.seed import seed  # noqa: E402
from sandbox.server import SandboxServer, write_info  # noqa: E402
from tasks.lambda_functions import http_event  # noqa: E402

FUNCTION, ALARM = "outreachpass-api-dev", "outreachpass-api-dev-errors"


def _stamp(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").timestamp()


def plain_poll(target: AwsTarget, health_url: str, smoke: object) -> float:
    """The guard calls of one poll, made directly: seconds taken."""
    start = time.perf_counter()
    target.client("cloudwatch").describe_alarms(AlarmNames=[ALARM])
    httpx.get(health_url, timeout=5)
    target.client("lambda").invoke(FunctionName=FUNCTION, Qualifier="live", Payload=json.dumps(smoke).encode())
    return time.perf_counter() - start


def watch(target: AwsTarget, delay: float, fired: list[float], restored: list[float]) -> None:
    """Once the alias has been split for ``delay`` seconds, set the alarm; note when the split is gone."""
    lam, cloudwatch = target.client("lambda"), target.client("cloudwatch")
    split_since: float | None = None
    deadline = time.monotonic() + 600
    while not restored and time.monotonic() < deadline:
        alias = lam.get_alias(FunctionName=FUNCTION, Name="live")
        split = bool((alias.get("RoutingConfig") or {}).get("AdditionalVersionWeights"))
        now = time.perf_counter()
        if split and split_since is None:
            split_since = now
        if split and not fired and split_since is not None and now - split_since >= delay:
            cloudwatch.set_alarm_state(AlarmName=ALARM, StateValue="ALARM", StateReason="bench")
            fired.append(time.perf_counter())
        elif fired and not split:
            restored.append(now)
        time.sleep(0.01)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=3, help="canary deploys rolled back by an alarm (default 3)")
    parser.add_argument("--poll", type=float, default=1.0, help="guard poll interval in seconds (default 1)")
    args = parser.parse_args()
    from prefect.testing.utilities import prefect_test_harness

    from flows.lambda_deploy import deploy_backend

    work = Path(tempfile.mkdtemp(prefix="opcd-bench-bake-"))
    # every path in opcd.toml (sources, sample events, the Terraform root) made absolute
    text = (ROOT / "opcd.toml").read_text().replace("examples/outreachpass/", f"{ROOT}/examples/outreachpass/")
    (work / "opcd.toml").write_text(text)
    config = load_config(work / "opcd.toml")
    server = SandboxServer(work / "sandbox", config.project.region, 0).start()
    try:
        gateway = seed(config, server.url, work / "sandbox")
        write_info(config.state_dir(), {
            "aws_endpoint_url": server.url, "region": "us-east-1", "pid": os.getpid(), "gateway": gateway,
        })  # fmt: skip
        target = AwsTarget(
            "sandbox", config.project.region, server.url, credentials=("testing", "testing"), gateway=gateway
        )
        health_url = target.resolve_url(config.environment("dev").health["backend"])
        cloudwatch = target.client("cloudwatch")
        with prefect_test_harness(server_startup_timeout=180):
            deploy_backend(environment="dev", version="v1", config_path=str(work / "opcd.toml"))
            bake = f'traffic = "canary50-10m"\nbake = {{ poll_interval = "{args.poll}s", smoke = true }}\n'
            canary = text.replace("[environments.dev]\n", "[environments.dev]\n" + bake)
            (work / "opcd.toml").write_text(canary)
            reactions, poll_costs = [], []
            for trial in range(args.trials):
                fired: list[float] = []
                restored: list[float] = []
                watcher = threading.Thread(target=watch, args=(target, 2.5 * args.poll, fired, restored), daemon=True)
                watcher.start()
                state = deploy_backend(
                    environment="dev", version=f"v{trial + 2}", config_path=str(work / "opcd.toml"), return_state=True
                )
                watcher.join(timeout=30)
                cloudwatch.set_alarm_state(AlarmName=ALARM, StateValue="OK", StateReason="bench reset")
                if not state.is_failed() or not restored:
                    print(f"trial {trial}: the canary was not rolled back ({state.name})", file=sys.stderr)
                    return 1
                reactions.append(restored[0] - fired[0])
                latest = json.loads(
                    target.client("s3")
                    .get_object(Bucket=config.project.artifact_bucket, Key="ledger/dev/backend/latest.json")["Body"]
                    .read()
                )
                ticks = [_stamp(t["at"]) for t in latest["bake"]["ticks"]]
                poll_costs += [b - a - args.poll for a, b in zip(ticks, ticks[1:], strict=False)]
        smoke = http_event(config.component("backend").smoke[0])
        plain = [plain_poll(target, health_url, smoke) for _ in range(20)]
    finally:
        server.stop()
    react = statistics.median(reactions)
    print(f"alarm → all traffic back on the old version: median {react:.2f} s over {len(reactions)} canaries"
          f" (max {max(reactions):.2f} s; poll {args.poll:g} s: {react / args.poll:.2f} intervals)")  # fmt: skip
    cost, base = statistics.median(poll_costs), statistics.median(plain)
    print(f"one guard poll (alarms, health, smoke): opcd {cost * 1000:.0f} ms, plain boto3/httpx"
              f" {base * 1000:.0f} ms — ratio {cost / base:.2f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
