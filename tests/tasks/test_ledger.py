"""What the ledger says was live: the only versions a rollback may go to without --force."""

from __future__ import annotations

import json

from prefect import flow

from tests.conftest import Project


def test_a_rollback_that_failed_proves_nothing_live() -> None:
    from tasks.ledger import Record, seen_live

    rows = [
        {"action": "deploy", "outcome": "deployed", "previous_version": "v1", "live_version": "v2"},
        {"action": "deploy", "outcome": "rolled-back", "previous_version": "v2", "live_version": "v2"},
        {"action": "deploy", "outcome": "noop", "previous_version": "v2", "live_version": "v2"},
        # a rollback whose alias could not be read again: what it found live is not known to be live
        {"action": "rollback", "outcome": "rollback-failed", "previous_version": "v3-bad", "live_version": None},
        {"action": "deploy", "outcome": "failed", "previous_version": "v4-unverified", "live_version": None},
        {"action": "rollback", "outcome": "deployed", "previous_version": "v2", "live_version": "v1"},
    ]
    records = [Record(component="backend", environment="dev", version=None, **row) for row in rows]  # type: ignore[arg-type]
    assert seen_live(records) == ["v1", "v2"]


def test_a_record_reads_back_as_it_was_written(project: Project, prefect_server: None) -> None:
    """One model both ways: what record_in_ledger writes reads back as an equal Record, outcome an Outcome;
    a record from another opcd version (a field this one does not know) still reads."""
    from opcd.aws import target_for
    from opcd.config import load_config
    from opcd.outcomes import Outcome
    from tasks.ledger import Record, read_history, read_latest, record_in_ledger

    target = target_for(load_config(project.config_path))
    written = Record("backend", "dev", "deploy", Outcome.ROLLED_BACK, "v2", previous_version="v1", bake={"steps": []})
    flow(name="write-a-record")(lambda: record_in_ledger(target, "outreachpass-artifacts", written))()
    raw = project.ledger("dev", "backend")
    assert raw["outcome"] == "rolled-back"  # the string the ledger has always held
    project.client("s3").put_object(
        Bucket="outreachpass-artifacts", Key="ledger/dev/backend/20250101T000000.000000Z-older.json",
        Body=json.dumps({**raw, "finished_at": "2025-01-01", "from_a_later_version": 1}).encode(),
    )  # fmt: skip
    assert read_latest(target, "outreachpass-artifacts", "dev", "backend") == written
    older, again = read_history(target, "outreachpass-artifacts", "dev", "backend")
    assert again == written and older.outcome is Outcome.ROLLED_BACK and older.finished_at == "2025-01-01"
    assert read_latest(target, "outreachpass-artifacts", "dev", "backend", "live.json") is None
