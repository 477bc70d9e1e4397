"""Shared fixtures: one Prefect test server and one sandbox per session, a fresh project per test.

The sandbox is the real one (moto's server, the invoke shim, the gateway) running in this
process; each test resets moto and seeds again, so tests never see each other's resources.
"""

from __future__ import annotations

import contextlib
import contextvars
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from xdist.scheduler import LoadGroupScheduling

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# The test server's background services that no test needs (no deployments, workers, automations
# or event feed here): each one writes to the server's SQLite and competes for its lock.
for _service in ("SCHEDULER", "LATE_RUNS", "FOREMAN", "TRIGGERS", "EVENT_PERSISTER", "CANCELLATION_CLEANUP"):
    os.environ.setdefault(f"PREFECT_SERVER_SERVICES_{_service}_ENABLED", "false")

ROOT = Path(__file__).resolve().parent.parent
# Terraform cannot download providers here: the tests run the stand-in that speaks its CLI.
TERRAFORM_STANDIN = ROOT / "tests" / "terraform_standin" / "terraform"
EXAMPLES = ROOT / "examples" / "outreachpass"
BACKEND = EXAMPLES / "backend"
WORKER = EXAMPLES / "worker"
FRONTEND = EXAMPLES / "frontend"

# Appended to the backend's app/__init__.py to make the broken versions the tests deploy.
RAISES_ON_IMPORT = """

if os.environ.get("AWS_LAMBDA_FUNCTION_NAME"):  # only in Lambda: migrations still import fine
    raise RuntimeError("v3 cannot import: settings module missing")
"""
UNHEALTHY_UNDER_TRAFFIC = """

_handler = handler


def handler(event, context):
    if event.get("rawPath") == "/health" and context.invoked_function_arn.endswith(":live"):
        return _response(500, {"status": "unhealthy"})
    return _handler(event, context)
"""


_CALLS_DIR_MADE = pytest.StashKey[bool]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--aws-policy-check", choices=("auto", "force", "off"), default="auto",
        help="check every AWS call the product made against opcd's IAM policies (tests/iam_proof.py): auto = when"
        " the whole suite ran; force = the calls of whatever ran (unused grants only listed); off = not recorded",
    )  # fmt: skip


# The layers (tests/README.md): each test is marked with one, from the servers its fixtures start.
LAYERS = {
    "unit": "in-process only: no sandbox, no Prefect server (moto's mock_aws, Stubber, local HTTP at most)",
    "integration": "the sandbox or a Prefect test server (fixtures sandbox, prefect_server, project, deployed)",
    "e2e": "a real `prefect server start` and workers (tests/e2e)",
}
SERVER_FIXTURES = {"sandbox", "prefect_server"}
# Directories whose tests start a sandbox or a Prefect server of their own, not through a fixture here.
SERVER_DIRECTORIES = {"flows", "sandbox", "deployments"}
_LAYER = pytest.StashKey[str]()


def layer_of(item: pytest.Item) -> str:
    """A layer marker the test carries (one that starts a server itself says so), else its fixtures' and place's."""
    marked = [layer for layer in LAYERS if item.get_closest_marker(layer)]
    if marked:
        return marked[-1]  # e2e over integration over unit
    parts = item.path.relative_to(ROOT).parts if item.path.is_relative_to(ROOT) else ()
    if parts[:2] == ("tests", "e2e"):
        return "e2e"
    if SERVER_FIXTURES & set(getattr(item, "fixturenames", ())) or (
        parts[:1] == ("tests",) and len(parts) > 2 and parts[1] in SERVER_DIRECTORIES
    ):
        return "integration"
    return "unit"


# The modules whose tests share one server per test process, and their `xdist_group`: `--dist loadgroup`
# sends each group to one worker. pytest-xdist 3.8 names a test's group by appending "@group" to its
# node id, which pytest 9.2's structured node ids ignore (pytest-xdist issue #1386): the grouped tests
# went to any worker and each worker started the group's server. The scheduler below groups by module.
XDIST_GROUPS = {
    "tests/e2e/test_deployments.py": "prefect-deployments",
    "tests/e2e/test_approval_ui.py": "prefect-ui",
}
# Longest first, so that no long test starts last while the other workers have nothing left to do:
# the e2e layer (its groups first, as the scheduler sends the largest units first), then integration, then
# unit, whose longest modules go first (the secret scan of the checkout, the Lambda package builds with pip).
LAYER_ORDER = ("e2e", "integration", "unit")
LONGEST_UNIT_MODULES = ("tests/test_project.py", "tests/tasks/test_build.py")


def run_order(item: pytest.Item) -> tuple[int, bool]:
    layer = item.stash[_LAYER]
    return LAYER_ORDER.index(layer), not (layer == "unit" and item.nodeid.split("::", 1)[0] in LONGEST_UNIT_MODULES)


class LoadGroupByModule(LoadGroupScheduling):
    """``--dist loadgroup`` whose groups are :data:`XDIST_GROUPS`' modules (or an "@group" xdist could append)."""

    def _split_scope(self, nodeid: str) -> str:
        scope: str = super()._split_scope(nodeid)
        return scope if scope != nodeid else XDIST_GROUPS.get(nodeid.split("::", 1)[0], nodeid)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> LoadGroupByModule | None:
    return LoadGroupByModule(config, log) if config.getvalue("dist") == "loadgroup" else None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        item.stash[_LAYER] = layer = layer_of(item)
        if not item.get_closest_marker(layer):
            item.add_marker(layer)
        marker = item.get_closest_marker("xdist_group")
        group = (marker.args[0] if marker.args else marker.kwargs.get("name")) if marker else None
        expected = XDIST_GROUPS.get(item.nodeid.split("::", 1)[0])
        if group != expected:
            raise pytest.UsageError(
                f"{item.nodeid}: its xdist_group is {group!r}, tests/conftest.py's XDIST_GROUPS says {expected!r}"
                " — mark the module's tests and list the module there alike"
            )
    if hasattr(config, "workerinput"):  # an xdist worker: every worker sorts alike, the scheduler keeps the order
        items.sort(key=run_order)


@pytest.fixture(autouse=True)
def unit_reaches_no_prefect_server(request: pytest.FixtureRequest) -> Iterator[None]:
    """A unit test that reaches for a Prefect API fails at once, on a refused port, instead of
    starting an ephemeral server (7-14 s) behind its back: it belongs to the integration layer."""
    if request.node.stash.get(_LAYER, None) != "unit":
        yield
        return
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        yield


def pytest_configure(config: pytest.Config) -> None:
    """The controller (or a run without xdist) chooses where every process records its AWS calls."""
    from opcd.iam import RECORD_ENV

    for layer, meaning in LAYERS.items():
        config.addinivalue_line("markers", f"{layer}: {meaning}")
    if hasattr(config, "workerinput") or config.getoption("aws_policy_check") == "off":
        return
    if not os.environ.get(RECORD_ENV):  # workers and the e2e tests' workers inherit it
        os.environ[RECORD_ENV] = tempfile.mkdtemp(prefix="opcd-aws-calls-")
        config.stash[_CALLS_DIR_MADE] = True


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    from opcd.config import load_config
    from opcd.iam import RECORD_ENV, ROLES, policy
    from tests.iam_proof import check, load, policies_of_configs, ran_whole_suite

    config = session.config
    mode, directory = config.getoption("aws_policy_check"), os.environ.get(RECORD_ENV)
    if hasattr(config, "workerinput") or mode == "off" or not directory:
        return
    whole = ran_whole_suite(config, session)
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    made = config.stash.get(_CALLS_DIR_MADE, False)
    if not whole and mode != "force":
        if made:
            shutil.rmtree(directory, ignore_errors=True)
        return

    def generate(path: str) -> dict[str, Any]:  # the sandbox's ARNs carry moto's account
        config = load_config(path)
        return {role: policy(config, role, account="*") for role in ROLES}

    shipped = generate(str(ROOT / "opcd.toml"))
    calls, own = load(Path(directory)), policies_of_configs(shipped, generate)
    problems = check(calls, shipped, unused=whole, policies_of=own)
    if reporter is not None:
        reporter.ensure_newline()
        reporter.write_sep("=", f"{len(calls)} AWS calls checked against opcd's IAM policies", red=bool(problems))
        for problem in problems:
            reporter.write_line(f"IAM: {problem}")
        if not whole:
            for problem in check(calls, shipped, policies_of=own)[len(problems) :]:
                reporter.write_line(f"IAM (not failing: part of the suite ran): {problem}")
    if problems:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        if reporter is not None:
            reporter.write_line(f"IAM: the recorded calls are in {directory}")
    elif made:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[None]:
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from sandbox.apprunner import Timings
    from sandbox.ecs import Timings as EcsTimings
    from sandbox.server import SandboxServer

    server = SandboxServer(tmp_path_factory.mktemp("sandbox"), "us-east-1", 0).start()
    server.apprunner.timings = Timings(pending=0.05, deploy=0.2, rollback=0.1)  # App Runner's minutes, shrunk
    server.ecs.timings = EcsTimings(pending=0.05, deploy=0.2, rollback=0.1, minute=0.1)  # ECS's too
    yield server
    server.stop()


@pytest.fixture(scope="session")
def build_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("build-cache")


@dataclass
class Project:
    """A project directory with opcd.toml, a copy of the example backend and a seeded sandbox."""

    root: Path
    endpoint: str
    apprunner: str = ""  # the App Runner stand-in
    _clients: dict[tuple[str, str], Any] = field(default_factory=dict, repr=False)

    @property
    def config_path(self) -> Path:
        return self.root / "opcd.toml"

    @property
    def source(self) -> Path:
        return self.root / "src" / "backend"

    @property
    def worker(self) -> Path:
        return self.root / "src" / "worker"

    def client(self, service: str, endpoint: str | None = None) -> Any:
        """A boto3 client of the sandbox, made once per service (tests poll the alias every 20 ms)."""
        from opcd.aws import new_client

        endpoint = endpoint or self.endpoint
        if (service, endpoint) not in self._clients:
            made = new_client(service, "us-east-1", ("testing", "testing"), endpoint)
            self._clients.setdefault((service, endpoint), made)
        return self._clients[(service, endpoint)]

    def client_for(self, service: str) -> Any:
        """A client of a service that has its own endpoint in the sandbox (App Runner)."""
        return self.client(service, self.apprunner)

    def ledger(self, environment: str, component: str, name: str = "latest.json") -> dict[str, Any]:
        body = self.client("s3").get_object(
            Bucket="outreachpass-artifacts", Key=f"ledger/{environment}/{component}/{name}"
        )
        record: dict[str, Any] = json.loads(body["Body"].read())
        return record

    def cli(self, *args: str) -> tuple[int, str, str]:
        """Run ``opcd --config <project> ARGS`` in this process; return (exit code, stdout, stderr)."""
        from cli.main import main

        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["--config", str(self.config_path), *args])
        return code, out.getvalue(), err.getvalue()

    def run(self, *args: str) -> tuple[int, str, str]:
        """Run ``opcd --config <project> ARGS`` in a new process, as a user does: its real stderr,
        Prefect's console log included. The sandbox and Slack stand-in of the tests serve it."""
        from prefect.settings import PREFECT_API_URL

        env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value())}
        done = subprocess.run(
            [sys.executable, "-m", "cli", "--config", str(self.config_path), *args],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=False,
        )  # fmt: skip
        return done.returncode, done.stdout, done.stderr

    def faults(self, *faults: dict[str, Any]) -> list[dict[str, Any]]:
        """Add the sandbox's faults (none given: none added); the faults still pending."""
        for fault in faults:
            httpx.post(f"{self.endpoint}/_opcd/faults", json=fault, timeout=10).raise_for_status()
        pending: list[dict[str, Any]] = httpx.get(f"{self.endpoint}/_opcd/faults", timeout=10).json()["faults"]
        return pending

    def live(self, function: str = "outreachpass-api-dev") -> str:
        return str(self.client("lambda").get_alias(FunctionName=function, Name="live")["FunctionVersion"])

    def description(self, version: str, function: str = "outreachpass-api-dev") -> str:
        conf = self.client("lambda").get_function_configuration(FunctionName=function, Qualifier=version)
        return str(conf.get("Description", ""))

    def health(self, env: str = "dev") -> httpx.Response:
        function = f"outreachpass-api-{env}"
        return httpx.get(f"{self.endpoint}/_gateway/{function}/health", timeout=30)

    def write_source(self, extra: str = "") -> None:
        """Write the backend's source again, with ``extra`` appended to its handler module."""
        shutil.rmtree(self.source, ignore_errors=True)
        shutil.copytree(BACKEND, self.source, ignore=shutil.ignore_patterns("__pycache__", "tests"))
        if extra:
            with (self.source / "app" / "__init__.py").open("a") as init:
                init.write(extra)

    def write_worker(self, extra: str = "") -> None:
        shutil.rmtree(self.worker, ignore_errors=True)
        shutil.copytree(WORKER, self.worker, ignore=shutil.ignore_patterns("__pycache__", "tests"))
        if extra:
            with (self.worker / "worker.py").open("a") as module:
                module.write(extra)

    def set_config(self, old: str, new: str) -> None:
        text = self.config_path.read_text()
        assert old in text, old
        self.config_path.write_text(text.replace(old, new))


def copy_examples(root: Path) -> None:
    for example in (BACKEND, WORKER, FRONTEND):
        shutil.copytree(example, root / "src" / example.name, ignore=shutil.ignore_patterns("__pycache__", "tests"))


def project_config() -> str:
    """The project's opcd.toml with its examples under ``src/``."""
    text = (ROOT / "opcd.toml").read_text().replace("examples/outreachpass/", "src/")
    # fast health checks for tests: 2 consecutive answers, 0.1 s apart
    text = re.sub(
        r"health_check = \{[^}]*\}", 'health_check = { successes = 2, attempts = 4, interval = "0.1s" }', text
    )
    # prod's canary and linear bakes shrunk from minutes to a fraction of a second
    text, count = re.subn(r'traffic = \{ backend = "canary10-5m", worker = "linear50-2m" \}',
                          'traffic = { backend = "canary10-0.2s", worker = "linear50-0.2s" }', text)  # fmt: skip
    text, polls = re.subn(r"bake = \{ poll_interval = \"15s\"", 'bake = { poll_interval = "0.1s"', text)
    # App Runner's operation followed every 0.05 s instead of 10 s
    text, follows = re.subn(r'operation = \{ timeout = "20m", poll_interval = "10s" \}',
                            'operation = { timeout = "60s", poll_interval = "0.05s" }', text)  # fmt: skip
    # prod's approval waits 120 s at most and is polled every second
    gate = 'approval = { approvers = ["alice", "bob"], timeout = "120s", poll_interval = "1s" }'
    text, gates = re.subn(r'approval = \{ approvers = \["alice", "bob"\], timeout = "24h" \}', gate, text)
    text, binaries = re.subn(r'binary = "terraform"', f'binary = "{TERRAFORM_STANDIN}"', text)
    assert count == polls == follows == gates == binaries == 1, "opcd.toml changed: update project_config()"
    return text


def write_terraform_root(root: Path, resources: dict[str, Any] | None = None, **extra: Any) -> None:
    """A root module for the Terraform stand-in: its configuration, each environment's backend and var file."""
    for folder in ("backends", "environments"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    (root / "standin.json").write_text(json.dumps({"resources": resources or {}, **extra}))
    for env in ("dev", "prod"):
        (root / "backends" / f"{env}.hcl").write_text(f'path = "{root.parent / "terraform-state" / env}.tfstate"\n')
        (root / "environments" / f"{env}.tfvars").write_text(f'environment = "{env}"\n')


def forget_assumed_roles() -> None:
    """After moto's reset: the process's assumed-role sessions hold keys moto no longer knows.

    moto answers GetCallerIdentity for an unknown key as its default user, so a role session kept
    from an earlier test would silently act as the base identity. Real AWS keeps issued keys valid.
    """
    import opcd.aws

    with opcd.aws._lock:
        for key in [k for k in opcd.aws._sessions if len(k) > 3]:  # (region, credentials, profile, role, sts)
            del opcd.aws._sessions[key]
        for target, service in [k for k in opcd.aws._clients if k[0].role is not None]:
            opcd.aws._clients.pop((target, service), None)
        for target in [t for t in opcd.aws._identities if t.role is not None]:
            opcd.aws._identities.pop(target, None)


def fresh_project(
    root: Path, sandbox: Any, build_cache: Path, monkeypatch: pytest.MonkeyPatch, lay_out: Callable[[Path], None]
) -> Project:
    """The sandbox reset, ``lay_out(root)`` writing the project's files (its opcd.toml), the sandbox seeded for it."""
    from opcd.config import load_config
    from sandbox.seed import seed
    from sandbox.server import write_info

    for var in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "OPCD_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("OPCD_BUILD_CACHE", str(build_cache))
    httpx.post(f"{sandbox.url}/moto-api/reset", timeout=30).raise_for_status()
    forget_assumed_roles()
    httpx.delete(f"{sandbox.url}/_opcd/faults", timeout=30).raise_for_status()
    project = Project(root, sandbox.url, sandbox.apprunner_url)
    lay_out(root)
    config = load_config(project.config_path)
    data = root / "data"
    data.mkdir()
    gateway = seed(config, sandbox.url, data, sandbox.apprunner_url)
    write_info(config.state_dir(), {
        **sandbox.info(), "region": "us-east-1", "pid": os.getpid(), "gateway": gateway,
    })  # fmt: skip
    return project


def one_line_error(err: str) -> str:
    """What a refused command printed on stderr: exactly one ``error:`` line."""
    assert err.startswith("error: "), err
    assert err.count("\n") == 1, f"expected one line, got: {err!r}"
    return err


def _lay_out_project(root: Path) -> None:
    copy_examples(root)
    write_terraform_root(root / "src" / "terraform")  # nothing to change: no Terraform drift
    (root / "opcd.toml").write_text(project_config())


@pytest.fixture
def project(tmp_path: Path, sandbox: Any, build_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Project:
    return fresh_project(tmp_path, sandbox, build_cache, monkeypatch, _lay_out_project)


def error_lines(stderr: str) -> list[str]:
    """The ``error:`` lines a command printed; what it printed must hold no traceback."""
    assert "Traceback" not in stderr, stderr
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def alias(project: Project) -> tuple[str, dict[str, float]]:
    answer = project.client("lambda").get_alias(FunctionName="outreachpass-api-dev", Name="live")
    weights = (answer.get("RoutingConfig") or {}).get("AdditionalVersionWeights") or {}
    return answer["FunctionVersion"], weights


class AliasWatcher:
    """Reads the ``live`` alias from another thread while a deploy runs; records each state it saw.

    ``when_split`` runs once, the first time the alias is seen split between two versions;
    ``when_moved`` once, the first time it is seen on another primary version than at the start.
    """

    def __init__(
        self,
        project: Project,
        when_split: Callable[[], None] | None = None,
        when_moved: Callable[[], None] | None = None,
    ) -> None:
        self.project, self.when_split, self.when_moved = project, when_split, when_moved
        self.seen: list[tuple[str, dict[str, float]]] = []
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        context = contextvars.copy_context()  # the Prefect test server's settings live in a ContextVar
        self._thread = threading.Thread(target=context.run, args=(self._watch,), daemon=True)

    def _watch(self) -> None:
        fired = False
        while not self._stop.is_set():
            state = alias(self.project)
            if not self.seen or self.seen[-1] != state:
                self.seen.append(state)
            split, moved = bool(state[1]), state[0] != self.seen[0][0]
            action = (self.when_split if split else None) or (self.when_moved if moved else None)
            if action and not fired:
                fired = True
                try:
                    action()
                except BaseException as exc:  # raised again when the watcher stops
                    self.errors.append(exc)
            time.sleep(0.02)

    def __enter__(self) -> AliasWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        if self.errors:
            raise self.errors[0]


@pytest.fixture
def deployed(project: Project, prefect_server: None) -> Project:
    """A project with v1 then v2 of the backend deployed to dev."""
    for version in ("v1", "v2"):
        code, out, err = project.cli("deploy", "backend", "--env", "dev", "--version", version)
        assert code == 0, err
    return project


@pytest.fixture
def sink(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A local Slack that records every message; the runs post to it through an incoming webhook."""
    from sandbox.slack import SlackSink

    for var in ("OPCD_SLACK_BOT_TOKEN", "OPCD_SLACK_API_URL"):
        monkeypatch.delenv(var, raising=False)
    server = SlackSink().start()
    monkeypatch.setenv("OPCD_SLACK_WEBHOOK_URL", server.webhook_url)
    yield server
    server.stop()


@pytest.fixture
def lock_requests(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The names of every lock request this process makes from here on (one list per request), each still
    made for real on the Prefect server."""
    from opcd import locks

    requests: list[list[str]] = []
    real = locks.concurrency

    def recorded(names: list[str], *args: Any, **kwargs: Any) -> Any:
        requests.append(list(names))
        return real(names, *args, **kwargs)

    monkeypatch.setattr(locks, "concurrency", recorded)
    return requests


@pytest.fixture(autouse=True)
def no_run_left_waiting(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test that failed half-way leaves its run paused: cancel it so the next test cannot see it."""
    yield
    if "prefect_server" not in request.fixturenames:
        return
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelled

    from tasks.approval import pending

    with get_client(sync_client=True) as client:
        for waiting in pending():
            client.set_flow_run_state(waiting.run.id, Cancelled(message="left waiting by a test"), force=True)


def start_in_thread(flow: Callable[..., Any], **params: Any) -> Future[Any]:
    """Run a flow in another thread (it blocks at an approval); its final state comes back."""
    context = contextvars.copy_context()  # the Prefect test server's settings live in a ContextVar
    pool = ThreadPoolExecutor(max_workers=1)
    future = pool.submit(context.run, flow, return_state=True, **params)
    pool.shutdown(wait=False)
    return future


def wait_for_pending(run: Future[Any]) -> dict[str, Any]:
    """The approval that ``run`` waits for, once it waits: id, environment, approvers, description, url."""
    from prefect.context import SyncClientContext

    from tasks.approval import pending

    deadline = time.monotonic() + 240  # a guard against a hang, not a timing assertion
    with SyncClientContext.get_or_create():  # one client for every poll (a new one builds a TLS context)
        while time.monotonic() < deadline:
            assert not run.done(), f"the run ended without waiting: {run.result()}"
            found = pending()
            if found:
                w = found[0]
                return {"id": str(w.run.id), "environment": w.environment, "approvers": w.approvers,
                        "description": w.description, "url": w.ui_url}  # fmt: skip
            time.sleep(0.3)
    raise AssertionError("no run waited for an approval")
