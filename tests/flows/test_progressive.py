"""Canary and linear traffic shifting against the sandbox, with bake times shrunk by configuration."""

from __future__ import annotations

import contextvars
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from sandbox.slack import SlackSink
from tests.conftest import ROOT, AliasWatcher, Project, alias

ALARM = "outreachpass-api-dev-errors"


def set_traffic(project: Project, strategy: str, poll: str = "0.1s") -> None:
    """Give the dev environment a traffic strategy and a fast guard poll."""
    text = re.sub(r"\[environments\.dev\]\n(traffic = .*\nbake = .*\n)?", "[environments.dev]\n",
                  project.config_path.read_text())  # fmt: skip
    lines = f'traffic = "{strategy}"\nbake = {{ poll_interval = "{poll}" }}\n'
    project.config_path.write_text(text.replace("[environments.dev]\n", "[environments.dev]\n" + lines))


def ledger(project: Project) -> dict[str, Any]:
    body = (
        project.client("s3")
        .get_object(Bucket="outreachpass-artifacts", Key="ledger/dev/backend/latest.json")["Body"]
        .read()
    )
    record: dict[str, Any] = json.loads(body)
    return record


@pytest.fixture
def on_v1(project: Project, prefect_server: None) -> Iterator[Project]:
    code, out, err = project.cli("deploy", "backend", "--env", "dev", "--version", "v1")
    assert code == 0, err
    yield project


def test_linear25_reaches_all_traffic_in_four_steps(on_v1: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    project = on_v1
    old = project.live()
    set_traffic(project, "linear25-0.3s")
    sink = SlackSink().start()
    monkeypatch.setenv("OPCD_SLACK_WEBHOOK_URL", sink.webhook_url)

    try:
        with AliasWatcher(project) as watcher:
            code, out, err = project.cli("deploy", "backend", "--env", "dev", "--version", "v2")
    finally:
        sink.stop()

    assert code == 0, err
    new = project.live()
    assert new != old
    assert alias(project) == (new, {})
    # what another reader saw: three splits with the old version as primary, then all on the new one
    assert watcher.seen[0] == (old, {})
    assert watcher.seen[1:] == [(old, {new: 0.25}), (old, {new: 0.5}), (old, {new: 0.75}), (new, {})]
    record = ledger(project)
    assert record["outcome"] == "deployed" and record["traffic"] == "linear25-0.3s"
    bake = record["bake"]
    assert [s["observed"] for s in bake["steps"]] == [{new: 0.25}, {new: 0.5}, {new: 0.75}]
    assert bake["ended"] == "completed"
    assert all(t["ok"] for t in bake["ticks"]) and {t["percent"] for t in bake["ticks"]} == {25, 50, 75}
    assert all(t["guards"]["alarms"] == "OK" and t["guards"]["health"].startswith("ok") for t in bake["ticks"])
    assert project.health().json()["version"] == "v2"
    # one Slack message per step, between the start and the result
    texts = [t.removeprefix("backend v2 → dev: ") for t in sink.texts()]
    assert texts[0].startswith("deploy started by ") and "linear25-0.3s: 25% → 50% → 75% → 100%" in texts[0]
    assert [t.split(":")[0] for t in texts[1:4]] == ["bake step 1/3", "bake step 2/3", "bake step 3/3"]
    assert f"75% of live on Lambda version {new}, 25% on {old}; baking 0.3s under alarms, health" in texts[3]
    assert texts[4:] == ["deploy done: v2 is live"]
    assert record["notify_failures"] == []


def test_an_alarm_during_the_bake_rolls_back_at_the_next_poll(on_v1: Project, caplog: pytest.LogCaptureFixture) -> None:
    project = on_v1
    old = project.live()
    set_traffic(project, "canary50-60s", poll="0.2s")
    cloudwatch = project.client("cloudwatch")

    def fire() -> None:
        cloudwatch.set_alarm_state(AlarmName=ALARM, StateValue="ALARM", StateReason="5xx over 1% for 1 minute")

    with AliasWatcher(project, when_split=fire):
        code, out, err = project.cli("deploy", "backend", "--env", "dev", "--version", "v2")

    assert code == 1
    assert f"bake guard failed at 50%: alarm firing: {ALARM} (5xx over 1% for 1 minute)" in err
    assert "rolled back to v1" in err and "verified" in err
    assert alias(project) == (old, {})  # all traffic on the old version, no weight left behind
    assert "Rolling back: outreachpass-api-dev:live → all traffic on version" in caplog.text  # by the hook,
    assert "moving it back once more" not in caplog.text  # not by the verification's second attempt
    record = ledger(project)
    assert record["outcome"] == "rolled-back" and record["live_version"] == "v1"
    ticks = record["bake"]["ticks"]
    # the first poll that saw the alarm was the last one: rollback within one poll interval
    assert ticks[-1]["guards"]["alarms"] == f"ALARM: {ALARM}" and not ticks[-1]["ok"]
    assert all(t["ok"] for t in ticks[:-1])
    assert record["bake"]["ended"] == "guard-failed"


def test_a_firing_alarm_refuses_the_deploy_unless_accepted_by_name(on_v1: Project) -> None:
    project = on_v1
    before = project.live()
    project.client("cloudwatch").set_alarm_state(AlarmName=ALARM, StateValue="ALARM", StateReason="errors high")

    code, out, err = project.cli("deploy", "backend", "--env", "dev", "--version", "v2")
    assert code == 2
    assert f"alarm firing in dev: {ALARM} (errors high)" in err
    assert f"--accept-alarm {ALARM}" in err
    assert project.live() == before

    code, out, err = project.cli("deploy", "backend", "--env", "dev", "--version", "v2", "--accept-alarm", "nope")
    assert code == 2 and "--accept-alarm nope: not an alarm of environment dev" in err

    code, out, err = project.cli("deploy", "backend", "--env", "dev", "--version", "v2", "--accept-alarm", ALARM)
    assert code == 0, err
    record = ledger(project)
    assert record["outcome"] == "deployed" and record["accepted_alarms"] == [ALARM]
    assert project.health().json()["version"] == "v2"


def _in_thread(fn: Callable[[], Any]) -> Callable[[], None]:
    """Run ``fn`` on its own thread (so the watcher keeps watching), keeping its result."""
    results: list[Any] = []

    def start() -> None:
        context = contextvars.copy_context()
        thread = threading.Thread(target=lambda: results.append(context.run(fn)), daemon=True)
        thread.start()
        start.thread = thread  # type: ignore[attr-defined]

    start.results = results  # type: ignore[attr-defined]
    return start


def test_promote_and_abort_act_on_a_running_bake(on_v1: Project) -> None:
    from cli.main import main

    project = on_v1
    set_traffic(project, "canary10-60s")
    v1 = project.live()
    config = str(project.config_path)

    promote = _in_thread(lambda: main(["--config", config, "promote", "backend", "--env", "dev", "--reason", "ok"]))
    with AliasWatcher(project, when_split=promote):
        code, out, err = project.cli("deploy", "backend", "--env", "dev", "--version", "v2")
    assert code == 0, err
    promote.thread.join(timeout=60)  # type: ignore[attr-defined]
    assert promote.results == [0]  # type: ignore[attr-defined]
    v2 = project.live()
    assert v2 != v1 and alias(project) == (v2, {})
    record = ledger(project)
    assert record["bake"]["ended"] == "promoted" and "promote by" in record["bake"]["detail"]

    abort = _in_thread(lambda: main(["--config", config, "abort", "backend", "--env", "dev", "--reason", "p99"]))
    with AliasWatcher(project, when_split=abort):
        code, out, err = project.cli("deploy", "backend", "--env", "dev", "--version", "v3")
    assert code == 1
    assert "bake aborted by" in err and "(p99)" in err and "rolled back to v2" in err
    abort.thread.join(timeout=60)  # type: ignore[attr-defined]
    assert abort.results == [0]  # type: ignore[attr-defined]
    assert alias(project) == (v2, {})
    assert ledger(project)["bake"]["ended"] == "aborted"

    # nothing bakes now: both commands say so and change nothing
    code, out, err = project.cli("promote", "backend", "--env", "dev")
    assert code == 2 and "no bake is running for backend in dev (its last run ended rolled-back)" in err


def test_a_deploy_killed_mid_canary_is_repaired_by_the_next_deploy(on_v1: Project) -> None:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    project = on_v1
    v1 = project.live()
    set_traffic(project, "canary30-10m", poll="0.5s")
    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value()), "OPCD_CONFIG": str(project.config_path)}
    deploy = subprocess.Popen(
        [sys.executable, "-m", "cli", "deploy", "backend", "--env", "dev", "--version", "v2"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 180  # a guard against a hang, not a timing assertion
        while not alias(project)[1]:
            assert deploy.poll() is None, deploy.stderr.read().decode() if deploy.stderr else ""
            assert time.monotonic() < deadline, "the deploy never split the alias"
            time.sleep(0.05)
    finally:
        os.killpg(deploy.pid, signal.SIGKILL)
        deploy.wait()
        assert deploy.stderr is not None
        deploy.stderr.close()
    primary, split = alias(project)
    assert primary == v1 and list(split.values()) == [0.3]

    code, out, err = project.cli("status", "--env", "dev")
    assert code == 0 and "SPLIT: 30% on" in out

    # The killed run's lock lease would run out on the server after 60 s; free it now instead.
    with get_client(sync_client=True) as client:
        client.delete_global_concurrency_limit_by_name("opcd-env-dev-backend")
    set_traffic(project, "all-at-once")
    code, out, err = project.cli("deploy", "backend", "--env", "dev", "--version", "v2")

    assert code == 0, err
    record = ledger(project)
    assert record["repaired"].startswith("live was split: 30% on version")
    assert f"moved all traffic back to the primary version {v1}" in record["repaired"]
    assert record["previous_lambda_version"] == v1
    assert alias(project)[1] == {} and project.health().json()["version"] == "v2"
