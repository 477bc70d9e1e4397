"""The release's load test: after dev's deploys, before prod's approval, against the sandbox's gateway."""

from __future__ import annotations

import json
from typing import Any

from sandbox.slack import SlackSink
from tests.cli.test_history import HEADER
from tests.conftest import Project, wait_for_pending
from tests.flows.test_release import sent_email, start_release

# Appended to the backend's handler module: the same answers, 0.6 s later (slower, not failing).
SLOWER = """

import time as _time

_handler = handler


def handler(event, context):
    _time.sleep(0.6)
    return _handler(event, context)
"""
# 20 requests at 10/s, 2 at once; p95 may grow by 50%, and by 300 ms (less is this machine's noise).
LOAD_TEST = (
    'load_test = { rate = 10, duration = "2s", concurrency = 2, warmup = 2, max_p95_regression = 0.5,'
    ' p95_noise = "300ms" }\n'
)


def with_load_test(project: Project) -> None:
    smoke = 'smoke = [{ path = "/health", expect_status = 200 }]\n'  # the backend's
    project.set_config(smoke, smoke + LOAD_TEST)


def release_to_dev(project: Project, version: str) -> dict[str, Any]:
    """A release of the backend to dev only: its load test result becomes the one to compare with."""
    state = start_release(project, version, components=["backend"], environments=["dev"]).result(timeout=300)
    assert state.is_completed(), state
    summary: dict[str, Any] = state.result()
    return summary


def load_tests(project: Project) -> list[dict[str, Any]]:
    s3 = project.client("s3")
    listed = s3.list_objects_v2(Bucket="outreachpass-artifacts", Prefix="ledger/load-tests/dev/backend/")
    keys = sorted(o["Key"] for o in listed.get("Contents", []))
    return [json.loads(s3.get_object(Bucket="outreachpass-artifacts", Key=k)["Body"].read()) for k in keys]


def test_a_slower_version_fails_the_release_before_anyone_is_asked_to_approve(
    project: Project, prefect_server: None, sink: SlackSink
) -> None:
    with_load_test(project)
    first = release_to_dev(project, "v1")
    assert first["load_tests"]["dev"]["backend"].startswith("PASS: p50 ")

    project.write_source(SLOWER)
    state = start_release(project, "v2", components=["backend"]).result(timeout=300)

    assert state.is_failed()
    message = str(state.message)
    assert "release v2: dev load test failed (backend: FAIL: p50 " in message and "prod untouched" in message
    v1, v2 = load_tests(project)
    assert (v1["version"], v1["verdict"], v1["baseline"]) == ("v1", "pass", None)
    assert (v2["version"], v2["verdict"], v2["baseline"]["version"]) == ("v2", "fail", "v1")
    assert v2["requests"] == 20 and v2["errors"] == 0 and v2["p95_ms"] - v1["p95_ms"] > 300
    assert v2["reason"].startswith("p95 ") and "(v1); at most +50%" in v2["reason"]
    assert project.live("outreachpass-api-prod") == "1"  # prod untouched
    texts = sink.texts()
    assert not [t for t in texts if "approval requested" in t]  # nobody was asked
    assert any(t.startswith("release v2: dev: load test FAILED (backend) in ") for t in texts)
    assert texts[-1].startswith("release v2: failed: dev load test failed (backend: FAIL: p50")
    assert "[opcd] release v2 failed" in [m.subject for m in sent_email()]
    listed = project.client("s3").list_objects_v2(Bucket="outreachpass-artifacts", Prefix="ledger/releases/v2/")
    (key,) = [o["Key"] for o in listed["Contents"]]
    summary = json.loads(project.client("s3").get_object(Bucket="outreachpass-artifacts", Key=key)["Body"].read())
    assert summary["outcome"] == "failed" and summary["load_tests"]["dev"]["backend"].startswith("FAIL: ")


def test_an_equal_version_passes_and_its_numbers_reach_the_approval_and_the_history(
    project: Project, prefect_server: None, sink: SlackSink
) -> None:
    with_load_test(project)
    release_to_dev(project, "v1")
    release = start_release(project, "v2", components=["backend"])
    waiting = wait_for_pending(release)

    description = waiting["description"]
    assert "Load test in dev:\n- **backend**: PASS: p50 " in description, description
    assert "% errors (20 requests in " in description and "; p95 was " in description and "(v1): " in description
    approval = next(m for m in sink.messages if "approval requested for prod" in m["text"])
    fields = [f["text"] for f in approval["blocks"][1]["fields"]]
    assert any(f.startswith("*Load test (dev)*\nbackend: PASS: p50 ") for f in fields), fields
    assert any(f"opcd approve {waiting['id']} --approver" in f for f in fields), fields  # the run's id, not RUN
    (button,) = [b for b in approval["blocks"] if b["type"] == "actions"][0]["elements"]
    assert button["url"] == waiting["url"] and button["text"]["text"] == "Prefect run release v2"

    code, out, err = project.cli("reject", waiting["id"], "--approver", "bob", "--reason", "not today")
    assert code == 0, err
    assert release.result(timeout=120).is_failed()
    assert [t["verdict"] for t in load_tests(project)] == ["pass", "pass"]

    # what the test did, newest first: the releases, their load tests and the deploys to dev
    code, out, err = project.cli("history", "--json")
    assert code == 0, err
    entries = json.loads(out)
    assert [(e["kind"], e["component"], e["environment"], e["version"], e["outcome"]) for e in entries] == [
        ("release", "backend", "dev → prod", "v2", "rejected"),
        ("load-test", "backend", "dev", "v2", "pass"),
        ("deploy", "backend", "dev", "v2", "deployed"),
        ("release", "backend", "dev", "v1", "released"),
        ("load-test", "backend", "dev", "v1", "pass"),
        ("deploy", "backend", "dev", "v1", "deployed"),
    ]
    assert entries[0]["url"] == waiting["url"] and entries[0]["flow_run_name"] == "release v2"
    for entry in entries:
        assert entry["by"] == "root" and entry["seconds"] > 0 and entry["url"].endswith(f"/{entry['flow_run_id']}")
        assert entry["analysis"] is None  # no canary analysis in dev
    code, out, err = project.cli("history", "backend", "--env", "prod", "--json")
    assert code == 0 and [e["version"] for e in json.loads(out)] == ["v2"]  # the release that went for prod
    code, out, err = project.cli("history", "--limit", "1")
    assert code == 0, err
    header, row = out.splitlines()
    assert header.split() == HEADER
    assert " release " in row and " rejected " in row and row.endswith(waiting["url"])


def test_the_dry_run_says_which_components_are_load_tested(project: Project) -> None:
    with_load_test(project)
    code, out, err = project.cli("release", "--version", "v1", "--dry-run")
    assert code == 0, err
    lines = out.splitlines()
    dev = next(i for i, line in enumerate(lines) if line.startswith("dev ("))
    prod = next(i for i, line in enumerate(lines) if line.startswith("prod ("))
    tested = [i for i, line in enumerate(lines) if "load test" in line]
    assert [lines[i] for i in tested] == ["  then a load test of backend, judged against its last passing result"]
    assert dev < tested[0] < prod  # after dev's deploys, before prod's approval
