"""The flows as Prefect deployments, for real: ``prefect server start``, ``opcd setup``, ``prefect worker start``.

The runs are started with the exact ``prefect deployment run … --watch`` commands of the GitHub
Actions workflows (rendered with a push's values), against the sandbox. Each run clones the flow
code (prefect.yaml's ``git_clone`` step) from a repository holding this working tree. A release
suspends at the prod approval and gives its worker back; ``opcd approve`` resumes it and it
finishes without building or deploying to dev again. Two releases started together run one after
the other. A worker whose checkout is one commit behind releases the commit it is given.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.commits import built_from, checkout_behind, commit, committed, git
from tests.conftest import ROOT, Project
from tests.e2e.conftest import BIN, prefect_server, wait_for_approval_wait
from tests.postgres import Postgres, unavailable
from tests.workflows import Command, deployment_commands, render

WORKFLOWS = ROOT / ".github" / "workflows"


pytestmark = [
    pytest.mark.skipif(not shutil.which("bash"), reason="the workflow steps run under bash"),
    pytest.mark.xdist_group("prefect-deployments"),  # one test process: one server, one `opcd setup`
]


@pytest.fixture(scope="session")  # once per test process, even if other modules run between
def api(tmp_path_factory: pytest.TempPathFactory, prefect_database: Callable[[str], dict[str, str]]) -> Iterator[str]:
    """A real server on PostgreSQL, prepared by `opcd setup` from the checkout (its opcd.toml, its prefect.yaml)."""
    # a queued run tries again for its slot after 1 s (30 s by default): the test waits less, nothing else changes
    home = tmp_path_factory.mktemp("prefect-deployments")
    database = prefect_database("deployments")
    # the events are kept and automations act on them here, as on a team's server (tests/conftest.py turns both off)
    services = {f"PREFECT_SERVER_SERVICES_{name}_ENABLED": "true" for name in ("EVENT_PERSISTER", "TRIGGERS")}
    with prefect_server(
        home, PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS="1", **services, **database
    ) as url:
        env = {**os.environ, "PREFECT_API_URL": url}
        env.pop("OPCD_CONFIG", None)
        first = run([str(BIN / "opcd"), "setup"], env)
        assert first.returncode == 0, first.stdout + first.stderr
        fixed = "(type process, job variables env, command, working_dir fixed)"
        for line in (f"created    work pool          opcd-deploy  {fixed}",
                     f"created    work pool          opcd-checks  {fixed}",
                     "created    concurrency limit  opcd-release-prod  (1 slot)",
                     "created    result storage     s3-bucket/opcd-results  (s3://outreachpass-artifacts/prefect-results/)",
                     "created    deployment         release/release",
                     "created    deployment         drift-check/drift-check",
                     "created    automation         opcd-prod-rolled-back  "
                     "(prod rolled back → drift-check)"):  # fmt: skip
            assert line in first.stdout, first.stdout
        yield url


@pytest.fixture(scope="session")
def code(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The repository the workers clone the flow code from: this working tree (tracked and new files), committed."""
    repository = tmp_path_factory.mktemp("opcd-code")
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT, capture_output=True,
        check=True,
    ).stdout  # fmt: skip
    for name in filter(None, listed.decode().split("\0")):
        if (ROOT / name).is_file():  # not a file deleted in the working tree
            (repository / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, repository / name)
    git(repository, "init", "-q")
    commit(repository, "the code under test")
    return repository


def environ(api: str, project: Project, code: Path, **extra: str) -> dict[str, str]:
    """What the worker and the CLIs get: the server, the flow code's repository, the project's opcd.toml."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "AWS_"))}
    return {
        **env, "PREFECT_API_URL": api, "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "OPCD_REPOSITORY": str(code), "OPCD_CONFIG": str(project.config_path), **extra,
        "PATH": f"{BIN}:{env['PATH']}",  # the runner's `pip install prefect` puts prefect on its PATH
        "PREFECT_WORKER_QUERY_SECONDS": "1",  # the worker looks for runs every second (default 10)
    }  # fmt: skip


def run(command: list[str], env: dict[str, str], cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, check=False, timeout=600)


@contextmanager
def worker(env: dict[str, str], log: Path, limit: int, pool: str = "opcd-deploy") -> Iterator[subprocess.Popen[bytes]]:
    """``prefect worker start`` for a pool (the deploy pool's), running at most ``limit`` flow runs at once."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(BIN / "prefect"), "worker", "start", "--pool", pool, "--limit", str(limit),
             "--prefetch-seconds", "1"],
            env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        yield process
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:  # a busy machine: a worker that is slow to stop is stopped
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


def workflow_command(workflow: str, deployment: str) -> Command:
    (found,) = [c for c in deployment_commands(WORKFLOWS / workflow) if f"'{deployment}'" in c.script]
    return found


def start(command: Command, context: dict[str, str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """The workflow step's script under bash, as the runner would run it (the job's status is its exit code)."""
    script, step_env = render(command, context)
    with log.open("wb") as out:
        return subprocess.Popen(
            ["bash", "-eo", "pipefail", "-c", script], env={**env, **step_env}, cwd=ROOT, stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip


def pending(api: str, env: dict[str, str], watching: subprocess.Popen[bytes], log: Path) -> dict[str, Any]:
    """The run waiting for an approval, as `opcd pending --json` lists it once it waits."""
    wait_for_approval_wait(api, watching, log)
    for _ in range(20):  # the run's form is saved a moment after it pauses
        out = run([str(BIN / "opcd"), "pending", "--json"], env)
        assert out.returncode == 0, out.stderr
        found: list[dict[str, Any]] = json.loads(out.stdout)
        if found:
            return found[0]
        time.sleep(0.5)
    raise AssertionError(f"`opcd pending` lists no run: {out.stdout}")


def flow_run(api: str, run_id: str) -> dict[str, Any]:
    answer: dict[str, Any] = httpx.get(f"{api}/flow_runs/{run_id}", timeout=30).json()
    return answer


def state_names(api: str, run_id: str) -> list[str]:
    states = httpx.get(f"{api}/flow_run_states/", params={"flow_run_id": run_id}, timeout=30).json()
    return [s["name"] for s in sorted(states, key=lambda s: s["timestamp"])]


def task_runs(api: str, run_id: str) -> list[dict[str, Any]]:
    body = {"flow_runs": {"id": {"any_": [run_id]}}, "limit": 200}
    answer: list[dict[str, Any]] = httpx.post(f"{api}/task_runs/filter", json=body, timeout=30).json()
    return answer


def ledger(project: Project, environment: str, component: str) -> list[dict[str, Any]]:
    s3 = project.client("s3")
    keys = s3.list_objects_v2(Bucket="outreachpass-artifacts", Prefix=f"ledger/{environment}/{component}/")
    records = []
    for item in keys.get("Contents", []):
        if not item["Key"].endswith(("/latest.json", "/live.json")):
            records.append(json.loads(s3.get_object(Bucket="outreachpass-artifacts", Key=item["Key"])["Body"].read()))
    # a deploy records "shifting" before it moves traffic, then how it ended: keep the endings
    return sorted((r for r in records if r["outcome"] != "shifting"), key=lambda r: r["started_at"])


def push(api: str, components: list[str], version: str = "", sha: str = "4d3c2b1a" * 5) -> dict[str, str]:
    """The values the main workflow's release step gets on a push (of ``sha``) that changed ``components``."""
    return {
        "github.sha": sha, "github.event.inputs.version": version,
        "needs.changes.outputs.components": json.dumps(components),
        "secrets.PREFECT_API_URL": api, "secrets.PREFECT_API_KEY": "",
    }  # fmt: skip


def test_the_server_keeps_its_state_in_postgres(api: str, postgres_cluster: Postgres | None) -> None:
    if postgres_cluster is None:
        pytest.skip(f"the Prefect server of these tests ran on SQLite: {unavailable()}")
    names = postgres_cluster.sql("deployments", "SELECT name FROM deployment").split()
    assert {"release", "drift-check", "deploy-backend"} <= set(names), names


def test_setup_again_changes_nothing(api: str) -> None:
    env = {**os.environ, "PREFECT_API_URL": api}
    env.pop("OPCD_CONFIG", None)
    again = run([str(BIN / "opcd"), "setup"], env)
    assert again.returncode == 0, again.stderr
    lines = again.stdout.splitlines()
    assert lines[-1].startswith("changed 0 of "), again.stdout
    assert not [line for line in lines[1:-1] if not line.startswith(("unchanged", "missing"))], again.stdout


def test_a_release_suspends_frees_the_worker_and_resumes_without_redoing_anything(
    api: str, project: Project, code: Path, tmp_path: Path
) -> None:
    project.set_config('timeout = "120s"', 'timeout = "1h"')  # the approval waits as long as the machine is slow
    sha = committed(project)  # the merged commit: on main, which is all a release takes
    env = environ(api, project, code, OPCD_BUILD_CACHE=os.environ["OPCD_BUILD_CACHE"])
    release_log = tmp_path / "release.log"
    with worker(env, tmp_path / "worker.log", limit=1):
        # when: the push's release job runs
        push_values = push(api, ["worker"], sha=sha)
        release = start(workflow_command("main.yml", "release/release"), push_values, env, release_log)
        waiting = pending(api, env, release, release_log)
        run_id = waiting["flow_run_id"]

        # then: suspended at prod's gate, and the worker (one run at a time) runs another deployment
        # meanwhile, to its end: a run that fails, which makes its job fail (exit 1)
        assert flow_run(api, run_id)["state"]["name"] == "Suspended"
        failing = run([str(BIN / "prefect"), "deployment", "run", "deploy-worker/deploy-worker", "--param",
                       'version="v1"', "--param", 'environment="staging"', "--watch"], env)  # fmt: skip
        assert failing.returncode == 1, failing.stdout[-2000:] + failing.stderr[-2000:]
        assert release.poll() is None  # the job still mirrors the waiting run

        # when: an approver answers; then: the job ends with the run, exit 0
        approve = run([str(BIN / "opcd"), "approve", run_id, "--approver", "alice", "--reason", "e2e"], env)
        assert approve.returncode == 0, approve.stderr
        assert release.wait(timeout=600) == 0, release_log.read_text()[-3000:]

    # nothing ran twice: the resumed run took its build and dev deploy from their persisted results
    names = state_names(api, run_id)
    assert "Suspended" in names and names[-1] == "Completed", names
    assert [(r["outcome"], r["version"]) for r in ledger(project, "dev", "worker")] == [("deployed", sha[:12])]
    assert [r["outcome"] for r in ledger(project, "prod", "worker")] == ["deployed"]
    cached = {t["name"]: t["state"]["name"] for t in task_runs(api, run_id) if t["state"]["name"] == "Cached"}
    assert set(cached) >= {f"build worker {sha[:12]}", "deploy worker to dev"}, cached


def test_two_releases_to_one_environment_queue(api: str, project: Project, code: Path, tmp_path: Path) -> None:
    env = environ(api, project, code, OPCD_BUILD_CACHE=os.environ["OPCD_BUILD_CACHE"])
    # The worker would run both at once (limit 3): only the release deployment's limit queues them.
    with worker(env, tmp_path / "worker.log", limit=3):
        jobs = {
            version: subprocess.Popen(
                [
                    str(BIN / "prefect"),
                    "deployment",
                    "run",
                    "release/release",
                    "--param",
                    f'version="{version}"',
                    "--param",
                    'components=["worker"]',
                    "--param",
                    'environments=["dev"]',
                    "--watch",
                ],
                env=env,
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )  # fmt: skip
            for version in ("v2", "v3")
        }
        outputs = {version: job.communicate(timeout=600)[0] for version, job in jobs.items()}
    for version, job in jobs.items():
        assert job.returncode == 0, outputs[version][-3000:]
    run_ids = [re.search(r"UUID: ([0-9a-f-]{36})", out).group(1) for out in outputs.values()]  # type: ignore[union-attr]
    waited = [names for run_id in run_ids if "AwaitingConcurrencySlot" in (names := state_names(api, run_id))]
    assert len(waited) == 1, [state_names(api, run_id) for run_id in run_ids]  # the second waited, then ran
    first, second = ledger(project, "dev", "worker")
    assert {first["version"], second["version"]} == {"v2", "v3"}
    assert first["finished_at"] < second["started_at"], (first, second)  # never deploying at the same time


def test_a_worker_one_commit_behind_releases_the_commit_it_is_given(
    api: str, project: Project, code: Path, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # given: a worker whose checkout (its opcd.toml, its sources) is at A; main is at B, which changed the worker
    checkout = tmp_path_factory.mktemp("worker") / "checkout"
    first, second = checkout_behind(project, checkout)
    env = environ(api, project, code, OPCD_CONFIG=str(checkout / "opcd.toml"),
                  OPCD_BUILD_CACHE=os.environ["OPCD_BUILD_CACHE"])  # fmt: skip

    # when: B is released to dev (no approval there: the cheapest release)
    with worker(env, tmp_path / "worker.log", limit=1):
        done = run([str(BIN / "prefect"), "deployment", "run", "release/release", "--param", f'version="{second[:12]}"',
                    "--param", f'git_sha="{second}"', "--param", 'components=["worker"]', "--param",
                    'environments=["dev"]', "--watch"], env)  # fmt: skip

    # then: B's source was built and deployed, and the ledger names B
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert built_from(project, "worker", second[:12]) == (second, True)
    assert [(r["outcome"], r["git_sha"]) for r in ledger(project, "dev", "worker")] == [("deployed", second)]
    assert git(checkout, "rev-parse", "HEAD") == first  # the worker's checkout untouched, no worktree left
    assert not list((checkout / ".opcd" / "commits").iterdir())


# The worker's handler fails a call through its live alias (the sample event a deploy sends there).
FAILS_THROUGH_LIVE = """

_handler = handler


def handler(event, context):
    if context.invoked_function_arn.endswith(":live"):
        raise RuntimeError("digest query failed")
    return _handler(event, context)
"""


def aws_calls(directory: Path) -> list[dict[str, Any]]:
    """The AWS calls the flow runs of one worker made (opcd's factory records them: opcd/iam.py)."""
    return [json.loads(line) for path in sorted(directory.glob("*.jsonl")) for line in path.read_text().splitlines()]


def changes_to(calls: list[dict[str, Any]], function: str) -> list[str]:
    """The calls that changed a Lambda function (its code, its versions, its alias)."""
    changing = {"UpdateFunctionCode", "PublishVersion", "UpdateAlias"}
    return [c["operation"] for c in calls if c["operation"] in changing and c["params"]["FunctionName"] == function]


def s3_keys(calls: list[dict[str, Any]], operation: str) -> list[str]:
    return [c["params"]["Key"] for c in calls if c["service"] == "s3" and c["operation"] == operation]


def opcd_events(api: str, since: str, expected: set[str]) -> list[dict[str, Any]]:
    """The opcd.* events the server kept since ``since``, once all of ``expected`` are there (kept in batches)."""
    body = {"filter": {"event": {"prefix": ["opcd."]}, "occurred": {"since": since}, "order": "ASC"}, "limit": 50}
    deadline = time.monotonic() + 120  # a guard against a hang, not a timing assertion
    while True:
        events: list[dict[str, Any]] = httpx.post(f"{api}/events/filter", json=body, timeout=30).json()["events"]
        if expected <= {e["event"] for e in events} or time.monotonic() > deadline:
            return events
        time.sleep(1)


def related(event: dict[str, Any], role: str) -> list[str]:
    return [r["prefect.resource.id"] for r in event["related"] if r.get("prefect.resource.role") == role]


def test_two_workers_one_release_resumed_on_the_other_worker_redoes_nothing_and_every_step_is_an_event(
    api: str, project: Project, code: Path, tmp_path: Path
) -> None:
    from opcd.config import load_config
    from opcd.iam import RECORD_ENV
    from tasks.events import NAMES

    started_at = time.monotonic()
    # the server shares this clock; to the microsecond: an event the test before emitted a second ago is not this one's
    since = datetime.now(UTC).isoformat(timespec="microseconds")
    project.set_config('timeout = "120s"', 'timeout = "1h"')  # the approval waits as long as the machine is slow
    config = load_config(project.config_path)
    sha = committed(project)
    calls = {name: tmp_path / f"aws-calls-{name}" for name in ("a", "b")}  # each worker's flow runs' AWS calls
    env = {}
    for name, directory in calls.items():
        directory.mkdir()
        # each worker its own disk, as on two machines: Prefect's local results are not shared
        env[name] = environ(api, project, code, OPCD_BUILD_CACHE=os.environ["OPCD_BUILD_CACHE"],
                            OPCD_RECORD_AWS_CALLS=str(directory),
                            PREFECT_RESULTS_LOCAL_STORAGE_PATH=str(tmp_path / f"results-{name}"))  # fmt: skip
    release_log = tmp_path / "release.log"

    # given: worker a takes the release; it builds, deploys dev and suspends at prod's gate; then a stops
    with worker(env["a"], tmp_path / "worker-a.log", limit=1):
        release = start(workflow_command("main.yml", "release/release"), push(api, ["worker"], sha=sha), env["a"],
                        release_log)  # fmt: skip
        run_id = pending(api, env["a"], release, release_log)["flow_run_id"]
    assert flow_run(api, run_id)["state"]["name"] == "Suspended"

    # when: the approval comes while only worker b runs: b resumes the release and finishes prod
    with worker(env["b"], tmp_path / "worker-b.log", limit=1):
        approve = run([str(BIN / "opcd"), "approve", run_id, "--approver", "alice", "--reason", "e2e"], env["b"])
        assert approve.returncode == 0, approve.stderr
        assert release.wait(timeout=600) == 0, release_log.read_text()[-3000:]
        b = aws_calls(calls["b"])  # the resumed release's (b runs more below)
        # and then: a worker that fails its sample event through live, deployed to prod (rolled back by
        # itself), and a deploy that fails before anything changes
        project.write_worker(FAILS_THROUGH_LIVE)
        rolled = run([str(BIN / "prefect"), "deployment", "run", "deploy-worker/deploy-worker", "--param",
                      'version="v-bad"', "--param", 'environment="prod"', "--watch"], env["b"])  # fmt: skip
        assert rolled.returncode == 1, rolled.stdout[-3000:] + rolled.stderr[-2000:]
        failing = run([str(BIN / "prefect"), "deployment", "run", "deploy-worker/deploy-worker", "--param",
                       'version="v1"', "--param", 'environment="staging"', "--watch"], env["b"])  # fmt: skip
        assert failing.returncode == 1, failing.stdout[-2000:] + failing.stderr[-2000:]

    # then: a built and deployed dev, b did neither: the ledger and each worker's AWS calls say so
    dev, prod = config.function_name("worker", "dev"), config.function_name("worker", "prod")
    assert [(r["outcome"], r["version"]) for r in ledger(project, "dev", "worker")] == [("deployed", sha[:12])]
    assert [(r["outcome"], r["version"]) for r in ledger(project, "prod", "worker")] == [
        ("deployed", sha[:12]), ("rolled-back", "v-bad"),
    ]  # fmt: skip
    a = aws_calls(calls["a"])
    assert "PublishVersion" in changes_to(a, dev) and changes_to(a, prod) == []
    assert changes_to(b, dev) == [] and "PublishVersion" in changes_to(b, prod)
    artifacts = [key for key in s3_keys(a, "PutObject") if key.startswith("worker/")]
    assert artifacts and not [key for key in s3_keys(b, "PutObject") if key.startswith("worker/")]
    # the results a wrote in the artifact bucket are what b read back
    written = {key for key in s3_keys(a, "PutObject") if key.startswith("prefect-results/")}
    read = {key for op in ("GetObject", "HeadObject") for key in s3_keys(b, op) if key.startswith("prefect-results/")}
    assert written and written & read, (written, read)
    cached = {t["name"] for t in task_runs(api, run_id) if t["state"]["name"] == "Cached"}
    assert cached >= {f"build worker {sha[:12]}", "deploy worker to dev"}, cached

    # every opcd event, read back from the server; the gate's once each, though the release ran twice
    events = opcd_events(api, since, set(NAMES))
    seen = [(e["event"], e["resource"]["opcd.environment"]) for e in events]
    assert set(NAMES) <= {name for name, _ in seen}, seen
    assert seen.count(("opcd.approval.requested", "prod")) == seen.count(("opcd.approval.answered", "prod")) == 1
    assert seen.count(("opcd.deploy.started", "dev")) == seen.count(("opcd.deploy.succeeded", "dev")) == 1, seen
    assert ("opcd.deploy.rolled-back", "prod") in seen and ("opcd.deploy.failed", "staging") in seen
    for event in events:
        assert related(event, "flow-run") and related(event, "environment"), event
        assert event["resource"]["opcd.component"] in ("worker",), event
    answered = next(e for e in events if e["event"] == "opcd.approval.answered")
    assert (answered["payload"]["approved"], answered["payload"]["approver"]) == (True, "alice")
    assert related(answered, "flow-run") == [f"prefect.flow-run.{run_id}"]
    assert related(answered, "version") == [f"opcd.version.{sha[:12]}"]
    bake = [e for e in events if e["event"] == "opcd.bake.step"]
    assert bake and {e["resource"]["opcd.environment"] for e in bake} == {"prod"}
    assert "testing" not in json.dumps(events)  # no credential: the sandbox's keys are testing/testing
    print(json.dumps(answered, indent=2))

    # the automation opcd setup installed: the rolled-back prod deploy started a drift check
    (drift,) = httpx.post(f"{api}/deployments/filter", json={"deployments": {"name": {"any_": ["drift-check"]}}},
                          timeout=30).json()  # fmt: skip
    body = {"flow_runs": {"deployment_id": {"any_": [drift["id"]]}}}
    deadline = time.monotonic() + 120  # a guard against a hang, not a timing assertion
    while not (runs := httpx.post(f"{api}/flow_runs/filter", json=body, timeout=30).json()):
        assert time.monotonic() < deadline, "the automation started no drift-check run"
        time.sleep(1)
    assert len(runs) == 1, runs

    # the proof of the IAM policies covers what the workers did (the shared results' calls too)
    if record := os.environ.get(RECORD_ENV):
        with (Path(record) / f"calls-e2e-two-workers-{os.getpid()}.jsonl").open("a") as out:
            out.writelines(json.dumps(call) + "\n" for call in a + b)
    print(f"two workers, one release: {time.monotonic() - started_at:.0f} s")
