"""``make demo``: a release of OutreachPass against the embedded sandbox, run as a user would run it.

It starts a Prefect server with its UI (unless PREFECT_API_URL points at one) and the sandbox,
then releases v1 of the backend, the worker and the frontend: built in parallel, deployed to dev
in parallel, an approval before prod, deployed to prod in parallel (the backend by canary). At
the approval it says how to approve: in the Prefect UI, or with `opcd approve`. Without a
terminal (or with DEMO_AUTO_APPROVE=1) it approves as alice after a short wait (DEMO_APPROVE_AFTER
seconds, default 5). Then it releases v2, whose backend fails its health check once it takes
traffic: dev rolls the backend back by itself, the release rolls the frontend's v2 back with it
(release.on_failure = rollback-all) and stops before prod. It ends with
`opcd status`. Slack messages go to a local stand-in that prints them; SES keeps the emails.
Everything lives under .opcd/demo/ and is stopped at the end; DEMO_KEEP=1 leaves the Prefect UI
and the sandbox running to look around.
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

import httpx

from sandbox.slack import SlackSink

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


def release(*args: str, expect: int = 0, approval: bool = True) -> None:
    """``opcd release ARGS`` in the background, answering its approval; check its exit code."""
    print(f"$ opcd release {' '.join(args)}", flush=True)
    run = subprocess.Popen([str(BIN / "opcd"), "release", *args], cwd=DEMO)
    if approval:
        approve_when_asked(run)
    code = run.wait()
    if code != expect:
        sys.exit(f"demo: `opcd release {' '.join(args)}` exited {code}, expected {expect}")


def commit(message: str) -> str:
    """Commit the demo's project (its own git repository) and return the sha a release is built from."""
    git = ["git", "-c", "user.name=demo", "-c", "user.email=demo@example.org"]
    for args in (["init", "-q", "--initial-branch", "main"], ["add", "-A"], ["commit", "-q", "-m", message]):
        subprocess.run([*git, *args], cwd=DEMO, check=True, capture_output=True)
    sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=DEMO, check=True, capture_output=True, text=True)
    return sha.stdout.strip()


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
    # prod's canary and linear bakes take minutes; the demo's take 6 s, guards polled every 2 s
    config = config.replace('backend = "canary10-5m"', 'backend = "canary10-6s"')
    config = config.replace('worker = "linear50-2m"', 'worker = "linear50-6s"')
    config = config.replace('bake = { poll_interval = "15s"', 'bake = { poll_interval = "2s"')
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

        say("Release v2, whose backend fails /health once it takes traffic: dev back on v1, prod untouched")
        write_version(DEMO / "src" / "backend", broken=True)
        (DEMO / "src" / "frontend" / "site" / "version.txt").write_text("v2\n")
        # the worker did not change since the commit live in prod: the release leaves it out by itself
        release("--version", "v2", "--git-sha", commit("v2: backend and frontend"), expect=1, approval=False)
        opcd("health", "https://api.dev.outreachpass.example/health", "--successes", "2", "--expect-version", "v1")

        say("What is live where")
        opcd("status")
        print(
            "\ndemo finished: v1 of all three is live in prod (approved by alice; the backend went by canary)."
            " v2 changed the backend and the frontend only, so the release took those two. In dev the"
            " backend's v2 failed its health check under traffic and was rolled back to v1 by itself; the"
            " release then rolled the frontend's v2 back to v1 too (release.on_failure = rollback-all: dev"
            " is never left half-released), and v2 never reached prod."
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
