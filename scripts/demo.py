"""``make demo``: a release of OutreachPass against the embedded sandbox, run as a user would run it.

It starts a Prefect server with its UI (unless PREFECT_API_URL points at one) and the sandbox,
then releases v1 of the backend, the worker and the frontend: built in parallel, deployed to dev
in parallel, an approval before prod, deployed to prod in parallel (the backend by canary). At
the approval it says how to approve: in the Prefect UI, or with `opcd approve`. Without a
terminal (or with DEMO_AUTO_APPROVE=1) it approves as alice after a short wait (DEMO_APPROVE_AFTER
seconds, default 5). Then it releases v2, whose backend is 80 ms slower and never fails: dev takes
it, and in prod's canary, under traffic from `opcd sandbox traffic`, the canary analysis finds it
slower than v1 on Lambda's metrics while the alarms stay OK, and rolls prod back (the frontend's v2 with it:
release.on_failure = rollback-all). Then v3, whose
backend fails its health check once it takes traffic: dev rolls it back by itself and the release
stops before prod. It ends with `opcd status`. Slack messages go to a local stand-in that prints
them; SES keeps the emails. Everything lives under .opcd/demo/ and is stopped at the end;
DEMO_KEEP=1 leaves the Prefect UI and the sandbox running to look around.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import boto3
import httpx

from sandbox.slack import SlackSink

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / ".opcd" / "demo"
BIN = Path(sys.executable).parent
SOURCE = ROOT / "examples" / "outreachpass" / "backend"
CANARY = "30s"  # prod's canary in the demo: long enough for the analysis to see both versions
TRAFFIC_RPS = "15"  # requests a second to prod's API while it bakes: 10% of them reach the new version


# Appended to the backend for v2: every request 80 ms slower (a query gone slow, say); nothing fails.
SLOWER_EVERYWHERE = """

import time as _time

_fast_handler = handler


def handler(event, context):
    _time.sleep(0.08)
    return _fast_handler(event, context)
"""

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


def pending(run: subprocess.Popen[bytes]) -> dict[str, Any]:
    """The release waiting for an approval (``opcd pending --json``), once it waits."""
    while True:
        if run.poll() is not None:
            sys.exit(f"demo: the release ended (exit {run.returncode}) before asking for an approval")
        out = subprocess.run([str(BIN / "opcd"), "pending", "--json"], cwd=DEMO, capture_output=True, check=False)
        waiting = json.loads(out.stdout or b"[]") if out.returncode == 0 else []
        if waiting:
            found: dict[str, Any] = waiting[0]
            return found
        time.sleep(1)


def approve_when_asked(run: subprocess.Popen[bytes]) -> None:
    """Tell the user how to approve; approve as alice ourselves when nobody is at a terminal."""
    waiting = pending(run)
    run_id = waiting["flow_run_id"]
    say(f"The release waits for an approval of {waiting['environment']} by {' or '.join(waiting['approvers'])}")
    print(f"  in the Prefect UI: {waiting['ui_url']}  (menu → Resume: pick your name, say why)")
    print(f"  or in a terminal:  opcd approve {run_id} --approver alice --reason 'dev looks good'")
    auto = os.environ.get("DEMO_AUTO_APPROVE") == "1" or not sys.stdin.isatty()
    if auto:
        delay = float(os.environ.get("DEMO_APPROVE_AFTER", "5"))
        print(f"  (no terminal or DEMO_AUTO_APPROVE=1: approving as alice in {delay:g} s)", flush=True)
        time.sleep(delay)
    else:
        answered = threading.Event()
        threading.Thread(target=lambda: (input("  ... or press Enter to approve as alice\n"), answered.set()),
                         daemon=True).start()  # fmt: skip
        while not answered.wait(1):
            out = subprocess.run([str(BIN / "opcd"), "pending", "--json"], cwd=DEMO, capture_output=True, check=False)
            if run_id not in out.stdout.decode():
                print("  answered (in the UI or another terminal)", flush=True)
                return
    opcd("approve", run_id, "--approver", "alice", "--reason", "demo: dev looks good")


def release(*args: str, expect: int = 0, approval: bool = True, traffic: str | None = None) -> None:
    """``opcd release ARGS`` in the background, answering its approval; check its exit code.

    ``traffic``: a URL that ``opcd sandbox traffic`` sends requests to from the approval on (prod's canary
    is judged on the metrics they make), stopped when the release ends.
    """
    print(f"$ opcd release {' '.join(args)}", flush=True)
    run = subprocess.Popen([str(BIN / "opcd"), "release", *args], cwd=DEMO)
    if approval:
        approve_when_asked(run)
    sender = None
    if traffic:
        command = ["sandbox", "traffic", traffic, "--rps", TRAFFIC_RPS, "--for", "3m"]
        print(f"$ opcd {' '.join(command)} &", flush=True)
        sender = subprocess.Popen([str(BIN / "opcd"), *command], cwd=DEMO)
    code = run.wait()
    if sender is not None:
        sender.terminate()
        sender.wait(timeout=30)
    if code != expect:
        sys.exit(f"demo: `opcd release {' '.join(args)}` exited {code}, expected {expect}")


def commit(message: str) -> str:
    """Commit the demo's project (its own git repository) and return the sha a release is built from."""
    git = ["git", "-c", "user.name=demo", "-c", "user.email=demo@example.org"]
    for args in (["init", "-q", "--initial-branch", "main"], ["add", "-A"], ["commit", "-q", "-m", message]):
        subprocess.run([*git, *args], cwd=DEMO, check=True, capture_output=True)
    sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=DEMO, check=True, capture_output=True, text=True)
    return sha.stdout.strip()


def write_version(source: Path, broken: bool = False, slower: bool = False) -> None:
    """Make the demo's copy of the backend; ``broken`` fails /health once it takes traffic, ``slower``
    answers every request 80 ms later."""
    shutil.rmtree(source, ignore_errors=True)
    shutil.copytree(SOURCE, source, ignore=shutil.ignore_patterns("__pycache__", "tests"))
    with (source / "app" / "__init__.py").open("a") as init:
        init.write(BROKEN_UNDER_TRAFFIC if broken else "")
        init.write(SLOWER_EVERYWHERE if slower else "")


def show_analysis(info: dict[str, Any]) -> None:
    """What prod's canary analysis found, from the ledger record of the backend's last deploy there."""
    s3 = boto3.client(
        "s3", endpoint_url=info["aws_endpoint_url"], region_name=info["region"],
        aws_access_key_id="testing", aws_secret_access_key="testing",
    )  # fmt: skip
    body = s3.get_object(Bucket="outreachpass-artifacts", Key="ledger/prod/backend/latest.json")["Body"].read()
    record = json.loads(body)
    analysis = (record.get("bake") or {}).get("analysis") or {}
    alarms = {t["guards"].get("alarms") for t in (record.get("bake") or {}).get("ticks", [])}
    print(f"  prod backend: {record['outcome']}, live on {record.get('live_version')}; alarms during the bake: "
          f"{', '.join(sorted(a for a in alarms if a)) or 'none'}")  # fmt: skip
    print(f"  canary analysis {analysis.get('after_seconds')} s into the canary: {analysis.get('verdict')}")
    for row in analysis.get("table") or []:
        print("    " + "  ".join(f"{cell:<22}" for cell in row).rstrip())


def main() -> int:
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    shutil.rmtree(DEMO, ignore_errors=True)
    DEMO.mkdir(parents=True)
    config = (ROOT / "opcd.toml").read_text()
    config = config.replace("examples/outreachpass/", "src/")
    # prod's canary and linear bakes take minutes; the demo's take 30 s and 6 s, guards polled every 2 s
    config = config.replace('backend = "canary10-5m"', f'backend = "canary10-{CANARY}"')
    config = config.replace('worker = "linear50-2m"', 'worker = "linear50-6s"')
    config = config.replace('bake = { poll_interval = "15s"', 'bake = { poll_interval = "2s"')
    # prod's canary analysis: one value a second per version, judged from 10 invocations of each
    config = config.replace("analysis = { min_samples = 50,", 'analysis = { min_samples = 10, period = "1s",')
    # App Runner deploys take minutes; the sandbox's take about 3 s, followed every second
    config = config.replace('poll_interval = "10s" }', 'poll_interval = "1s" }')
    # an answer to the approval is noticed within a second (prod polls every 5 s by default)
    config = config.replace('timeout = "24h" }', 'timeout = "24h", poll_interval = "1s" }')
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
        for name in ("worker", "frontend", "terraform"):
            shutil.copytree(ROOT / "examples" / "outreachpass" / name, DEMO / "src" / name,
                            ignore=shutil.ignore_patterns("__pycache__", "tests", "test", ".bootstrap"))  # fmt: skip
        (DEMO / ".gitignore").write_text(".opcd/\n")
        opcd("sandbox", "up", "--detach", "--port", "0")
        opcd("status", "--env", "dev")

        say("Release v1: build all three in parallel, deploy to dev in parallel, approval, then prod")
        release("--version", "v1", "--git-sha", commit("v1"))
        opcd("health", "https://api.outreachpass.example/health", "--successes", "2", "--expect-version", "v1")

        info = json.loads((DEMO / ".opcd" / "sandbox.json").read_text())
        passes = info["gateway"]["https://api.outreachpass.example"] + "/passes"
        print('$ curl -X POST https://api.outreachpass.example/passes -d \'{"email": ..., "event": "launch"}\'')
        for email in ("ada@example.org", "grace@example.org"):
            answer = httpx.post(passes, json={"email": email, "event": "launch"}, timeout=30)
            print(f"  {answer.status_code} {answer.text}")
        say("Fire the worker's nightly rule in prod as EventBridge would (moto never delivers to Lambda)")
        opcd("sandbox", "fire-rule", "nightly-digest", "--env", "prod")

        say(
            "Release v2, whose backend answers 80 ms slower and never fails: dev takes it (no canary there);"
            " in prod's canary the analysis compares v2 with v1 on Lambda's metrics and rolls back, alarms OK"
        )
        write_version(DEMO / "src" / "backend", slower=True)
        (DEMO / "src" / "frontend" / "site" / "version.txt").write_text("v2\n")
        # the worker did not change since the commit live in prod: the release leaves it out by itself
        release("--version", "v2", "--git-sha", commit("v2: backend and frontend"), expect=1,
                traffic="https://api.outreachpass.example/health")  # fmt: skip
        show_analysis(info)
        opcd("health", "https://api.outreachpass.example/health", "--successes", "2", "--expect-version", "v1")

        say("Release v3, whose backend fails /health once it takes traffic: rolled back in dev, prod untouched")
        write_version(DEMO / "src" / "backend", broken=True)
        release("--version", "v3", "--git-sha", commit("v3: backend"), expect=1, approval=False)
        opcd("health", "https://api.dev.outreachpass.example/health", "--successes", "2", "--expect-version", "v2")

        say("What is live where")
        opcd("status")
        print(
            "\ndemo finished: v1 of all three is live in prod (approved by alice; the backend went by canary)."
            " v2 changed the backend and the frontend only, so the release took those two. The backend's v2"
            " was 80 ms slower but healthy: dev took it; in prod's canary the analysis found it slower than v1"
            " on Lambda's own metrics while every alarm stayed OK, and rolled prod back to v1, the frontend"
            " with it (release.on_failure = rollback-all: an environment is never left half-released). v3's backend"
            " failed its health check under traffic in dev and was rolled back to v2 by itself, so it never"
            " reached prod."
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
