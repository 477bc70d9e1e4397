"""``opcd history`` over ledger documents in the sandbox's bucket: one entry per run, newest first,
filters, the canary analysis's verdict when a record has one, bad input as one line."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import Project, one_line_error

BUCKET = "outreachpass-artifacts"
HEADER = ["WHEN", "WHAT", "COMPONENT", "ENV", "VERSION", "OUTCOME", "BY", "TOOK", "ANALYSIS", "RUN"]


def put(project: Project, key: str, document: dict[str, Any]) -> None:
    project.client("s3").put_object(Bucket=BUCKET, Key=key, Body=json.dumps(document).encode())


def record(env: str, component: str, outcome: str, version: str, run: str, start: str, end: str, **extra: Any) -> Any:
    return {
        "component": component, "environment": env, "action": extra.pop("action", "deploy"), "outcome": outcome,
        "version": version, "flow_run_id": run, "flow_run_name": f"deploy {version}", "actor": "alice",
        "started_at": start, "finished_at": end, **extra,
    }  # fmt: skip


@pytest.fixture
def ledger(project: Project) -> Project:
    """Two runs of the backend in prod (a canary: shifting, then deployed, with an analysis), a rollback, a
    worker deploy in dev whose record has no analysis, a release, copies (latest.json) and a stray file."""
    prod, dev = "ledger/prod/backend/", "ledger/dev/worker/"
    put(project, prod + "20260101T100010.000000Z-aaaaaaaa.json",
        record("prod", "backend", "shifting", "v2", "aaaaaaaa-1", "2026-01-01T10:00:00.000000Z",
               "2026-01-01T10:00:10.000000Z"))  # fmt: skip
    deployed = record(
        "prod", "backend", "deployed", "v2", "aaaaaaaa-1", "2026-01-01T10:00:11.000000Z", "2026-01-01T10:05:00.000000Z",
        analysis={"verdict": "pass", "metrics": []},
    )  # fmt: skip
    put(project, prod + "20260101T100500.000000Z-aaaaaaaa.json", deployed)
    put(project, prod + "latest.json", deployed)  # a copy: not listed twice
    put(project, prod + "20260102T090030.000000Z-bbbbbbbb.json",
        record("prod", "backend", "deployed", "v1", "bbbbbbbb-2", "2026-01-02T09:00:00.000000Z",
               "2026-01-02T09:00:30.000000Z", action="rollback", bake={"analysis": "fail"}))  # fmt: skip
    put(project, prod + "20260102T090031.000000Z-cccccccc.json", {"not": "a record"} | {"component": "backend"})
    project.client("s3").put_object(Bucket=BUCKET, Key=prod + "20260102T090032.000000Z-dddddddd.json", Body=b"{oops")
    put(project, dev + "20260101T090000.000000Z-eeeeeeee.json",
        record("dev", "worker", "failed", "v2", "eeeeeeee-3", "2026-01-01T08:59:00.000000Z",
               "2026-01-01T09:00:00.000000Z", reason="smoke check failed"))  # fmt: skip
    put(project, "ledger/releases/v2/20260101T100600.000000Z-ffffffff.json", {
        "version": "v2", "outcome": "released", "components": ["backend"], "environments": ["dev", "prod"],
        "actor": "bob", "seconds": 360.0, "flow_run_id": "ffffffff-4", "flow_run_name": "release v2", "detail": "ok",
    })  # fmt: skip
    return project


def history(project: Project, *args: str) -> list[dict[str, Any]]:
    code, out, err = project.cli("history", *args, "--json")
    assert code == 0, err
    entries: list[dict[str, Any]] = json.loads(out)
    return entries


def test_every_run_once_newest_first_with_its_analysis_when_it_has_one(ledger: Project) -> None:
    entries = history(ledger)
    assert [(e["kind"], e["component"], e["environment"], e["version"], e["outcome"], e["analysis"])
            for e in entries] == [
        ("rollback", "backend", "prod", "v1", "deployed", "fail"),
        ("release", "backend", "dev → prod", "v2", "released", None),
        ("deploy", "backend", "prod", "v2", "deployed", "pass"),  # its shifting record and its outcome: one run
        ("deploy", "worker", "dev", "v2", "failed", None),
    ]  # fmt: skip
    canary = entries[2]
    assert canary["started_at"] == "2026-01-01T10:00:00.000000Z" and canary["seconds"] == 300.0
    assert canary["by"] == "alice" and canary["flow_run_id"] == "aaaaaaaa-1"
    assert entries[1]["by"] == "bob" and entries[1]["seconds"] == 360.0
    assert entries[1]["started_at"] == "2026-01-01T10:00:00.000000Z"
    assert entries[3]["detail"] == "smoke check failed"


def test_filters_and_limit(ledger: Project) -> None:
    assert [e["kind"] for e in history(ledger, "worker")] == ["deploy"]  # the release did not include it
    assert [e["version"] for e in history(ledger, "backend", "--env", "prod")] == ["v1", "v2", "v2"]
    assert [e["kind"] for e in history(ledger, "--env", "dev")] == ["release", "deploy"]
    assert [e["kind"] for e in history(ledger, "--limit", "2")] == ["rollback", "release"]
    code, out, err = ledger.cli("history", "backend", "--env", "prod")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == HEADER
    assert lines[1].split()[:10] == ["2026-01-02", "09:00:30", "rollback", "backend", "prod", "v1", "deployed", "alice",
                                     "30", "s"]  # fmt: skip
    assert "5 min 0 s  pass" in lines[3]


def test_an_empty_ledger(project: Project) -> None:
    assert history(project) == []
    code, out, err = project.cli("history", "worker")
    assert code == 0 and out == "nothing recorded for worker in the ledger\n"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("payments",), "error: unknown component 'payments' — opcd.toml defines: backend, frontend, worker"),
        (("--env", "staging"), "error: unknown environment 'staging' — opcd.toml defines: dev, prod"),
        (("--limit", "0"), "error: --limit 0: expected 1 to 1000 — e.g. --limit 20"),
        (("--limit", "1001"), "error: --limit 1001: expected 1 to 1000 — e.g. --limit 20"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(project: Project, args: tuple[str, ...], expected: str) -> None:
    code, out, err = project.cli("history", *args)
    assert code == 2 and one_line_error(err).rstrip("\n") == expected and out == ""
