"""``make demo``: the backend pipeline against the embedded sandbox, run as a user would run it.

It starts a Prefect server (unless PREFECT_API_URL points at one) and the sandbox, then deploys
v1 and v2 of the example backend to dev, then a v3 whose /health fails once it takes traffic (it
is rolled back by itself), deploys the worker with its EventBridge rule and fires the rule,
deploys the frontend image to App Runner (v1, then a v2 without its health page, rolled back),
deploys v2 to prod by canary and then a v4 whose alarm fires mid-canary (rolled back at the next
guard poll), and shows `opcd status`. Slack messages go to a local stand-in that prints them.
Everything lives under .opcd/demo/ and is stopped at the end; DEMO_KEEP=1 leaves the Prefect UI
and the sandbox running to look around.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import httpx

from opcd.sandbox.slack import SlackSink

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / ".opcd" / "demo"
BIN = Path(sys.executable).parent
SOURCE = ROOT / "examples" / "outreachpass" / "backend"


# Appended to the backend for v3: /health fails only when called through the live alias.
BROKEN_UNDER_TRAFFIC = """

_handler = handler


def handler(event, context):
    if event.get("rawPath") == "/health" and context.invoked_function_arn.endswith(":live"):
        return _response(500, {"status": "unhealthy", "error": "database pool exhausted"})
    return _handler(event, context)
"""


def say(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def opcd(*args: str, expect: int = 0) -> None:
    print(f"$ opcd {' '.join(args)}", flush=True)
    code = subprocess.call([str(BIN / "opcd"), *args], cwd=DEMO)
    if code != expect:
        sys.exit(f"demo: `opcd {' '.join(args)}` exited {code}, expected {expect}")


def start_prefect(env: dict[str, str]) -> subprocess.Popen[bytes] | None:
    if os.environ.get("PREFECT_API_URL"):
        print(f"using the Prefect server at {os.environ['PREFECT_API_URL']}")
        return None
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env.update(PREFECT_API_URL=api, PREFECT_UI_API_URL=api, PREFECT_HOME=str(DEMO / "prefect"))
    log = (DEMO / "prefect-server.log").open("wb")
    server = subprocess.Popen(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    started = time.monotonic()
    while time.monotonic() - started < 180:
        try:
            if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                print(f"Prefect server and UI at http://127.0.0.1:{port} (ready in {time.monotonic() - started:.0f}s)")
                return server
        except httpx.HTTPError:
            pass
        if server.poll() is not None:
            sys.exit(f"demo: the Prefect server exited; see {DEMO / 'prefect-server.log'}")
        time.sleep(1)
    sys.exit("demo: the Prefect server did not answer within 180s")


@contextlib.contextmanager
def alarm_when_split(endpoint: str, function: str, alarm: str) -> Iterator[None]:
    """While the block runs, set ``alarm`` to ALARM as soon as ``function``'s live alias is split."""
    creds = {"region_name": "us-east-1", "aws_access_key_id": "demo", "aws_secret_access_key": "demo"}
    lam = boto3.client("lambda", endpoint_url=endpoint, **creds)
    cloudwatch = boto3.client("cloudwatch", endpoint_url=endpoint, **creds)
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.1):
            routing = lam.get_alias(FunctionName=function, Name="live").get("RoutingConfig") or {}
            if routing.get("AdditionalVersionWeights"):
                print(f"  [demo] {function}:live is split: setting {alarm} to ALARM", flush=True)
                cloudwatch.set_alarm_state(AlarmName=alarm, StateValue="ALARM", StateReason="5xx above 1% (demo)")
                return

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(timeout=10)
        cloudwatch.set_alarm_state(AlarmName=alarm, StateValue="OK", StateReason="recovered (demo)")


def write_version(source: Path, broken: bool = False) -> None:
    """Make the demo's copy of the backend; ``broken`` fails /health once it takes traffic."""
    shutil.rmtree(source, ignore_errors=True)
    shutil.copytree(SOURCE, source, ignore=shutil.ignore_patterns("__pycache__", "tests"))
    if broken:
        with (source / "app" / "__init__.py").open("a") as init:
            init.write(BROKEN_UNDER_TRAFFIC)


def main() -> int:
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    shutil.rmtree(DEMO, ignore_errors=True)
    DEMO.mkdir(parents=True)
    config = (ROOT / "opcd.toml").read_text()
    config = config.replace("examples/outreachpass/", "src/")
    # prod's canary bakes 5 minutes; the demo's bakes 6 s under guards polled every 2 s
    config = config.replace('backend = "canary10-5m"', 'backend = "canary10-6s"')
    config = config.replace('bake = { poll_interval = "15s"', 'bake = { poll_interval = "2s"')
    # App Runner deploys take minutes; the sandbox's take about 3 s, followed every second
    config = config.replace('poll_interval = "10s" }', 'poll_interval = "1s" }')
    (DEMO / "opcd.toml").write_text(config)
    slack = SlackSink(echo=True).start()  # stands in for Slack: prints each message
    os.environ["OPCD_SLACK_WEBHOOK_URL"] = slack.webhook_url
    env = dict(os.environ)
    say("Prefect server")
    server = start_prefect(env)
    os.environ.update(env)
    try:
        say("Embedded AWS sandbox (moto + Lambda invoke shim + API gateway)")
        write_version(DEMO / "src" / "backend")
        for name in ("worker", "frontend"):
            shutil.copytree(ROOT / "examples" / "outreachpass" / name, DEMO / "src" / name,
                            ignore=shutil.ignore_patterns("__pycache__", "tests", "test"))  # fmt: skip
        opcd("sandbox", "up", "--detach", "--port", "0")
        opcd("status", "--env", "dev")

        say("Deploy v1 of the backend to dev")
        opcd("deploy", "backend", "--env", "dev", "--version", "v1", "--git-sha", "1111111")

        say("Deploy v2 (same source, new version): blue/green behind the live alias")
        opcd("deploy", "backend", "--env", "dev", "--version", "v2", "--git-sha", "2222222")
        opcd("health", "https://api.dev.outreachpass.example/health", "--successes", "2")

        say("Deploy v3, whose /health fails once it takes traffic: it is rolled back by itself")
        write_version(DEMO / "src" / "backend", broken=True)
        opcd("deploy", "backend", "--env", "dev", "--version", "v3", "--git-sha", "3333333", expect=1)
        opcd("health", "https://api.dev.outreachpass.example/health", "--successes", "2", "--expect-version", "v2")

        say("Deploy the worker: Lambda plus its EventBridge rule on the live alias, tested with a sample event")
        opcd("deploy", "worker", "--env", "dev", "--version", "v1", "--git-sha", "1111111")
        info = json.loads((DEMO / ".opcd" / "sandbox.json").read_text())
        passes = info["gateway"]["https://api.dev.outreachpass.example"] + "/passes"
        print('$ curl -X POST https://api.dev.outreachpass.example/passes -d \'{"email": ..., "event": "launch"}\'')
        for email in ("ada@example.org", "grace@example.org"):
            answer = httpx.post(passes, json={"email": email, "event": "launch"}, timeout=30)
            print(f"  {answer.status_code} {answer.text}")
        say("Fire the worker's rule as EventBridge would (moto never delivers to Lambda)")
        opcd("sandbox", "fire-rule", "nightly-digest")

        say("Deploy the frontend v1 to dev: image built (buildah), pushed to ECR (:v1, :latest), App Runner deploy")
        opcd("deploy", "frontend", "--env", "dev", "--version", "v1", "--git-sha", "1111111")
        opcd("health", "https://dev.outreachpass.example/health.json", "--successes", "2")

        say("Deploy frontend v2, whose site lost its health page: App Runner succeeds, our check fails, rollback")
        (DEMO / "src" / "frontend" / "site" / "health.json").unlink()
        opcd("deploy", "frontend", "--env", "dev", "--version", "v2", "--git-sha", "2222222", expect=1)
        opcd("health", "https://dev.outreachpass.example/health.json", "--successes", "2")

        say("Deploy v2 to prod by canary: 10% for 6 s, watched by alarms, health and smoke, then all")
        write_version(DEMO / "src" / "backend")  # v2's source again (v3's broken one is still there)
        opcd("deploy", "backend", "--env", "prod", "--version", "v2", "--git-sha", "2222222")

        say("Deploy v4 to prod; mid-canary its errors alarm fires, and the next guard poll rolls it back")
        with alarm_when_split(info["aws_endpoint_url"], "outreachpass-api-prod", "outreachpass-api-prod-errors"):
            opcd("deploy", "backend", "--env", "prod", "--version", "v4", "--git-sha", "4444444", expect=1)

        say("What is live where")
        opcd("status")
        print(
            "\ndemo finished: backend v2 is live in dev (v3 was rolled back by itself) and in prod (v4's canary"
            " was rolled back when its alarm fired); worker v1 runs from its rule; frontend v1 serves dev"
            " (v2 lacked its health page and was rolled back)."
        )
        if os.environ.get("DEMO_KEEP"):
            print(f"DEMO_KEEP is set: the sandbox and Prefect ({env.get('PREFECT_API_URL')}) keep running.")
            return 0
    finally:
        slack.stop()
        if not os.environ.get("DEMO_KEEP"):
            subprocess.call([str(BIN / "opcd"), "sandbox", "down"], cwd=DEMO, stdout=subprocess.DEVNULL)
            if server is not None:
                os.killpg(server.pid, signal.SIGTERM)
                server.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
