"""What the ledger says was live: the only versions a rollback may go to without --force."""

from __future__ import annotations

import json

import pytest
from prefect import flow

from opcd.aws import AwsTarget
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


def test_a_record_this_opcd_cannot_read_is_refused_as_latest_and_skipped_in_history(
    moto_target: AwsTarget, caplog: pytest.LogCaptureFixture
) -> None:
    """An outcome this version does not know (a newer opcd's, or a hand edit): the latest record is refused
    in one line (nothing guesses what it says), an old one is left out of the history with a warning."""
    from opcd.errors import ConfigError
    from tasks.ledger import read_history, read_latest

    s3 = moto_target.client("s3")
    s3.create_bucket(Bucket="ledger-test")
    good = {"component": "backend", "environment": "dev", "action": "deploy", "outcome": "deployed", "version": "v1"}
    bad = {**good, "outcome": "paused-by-a-newer-opcd", "version": "v2"}
    s3.put_object(
        Bucket="ledger-test", Key="ledger/dev/backend/20260101T000000Z-a.json", Body=json.dumps(good).encode()
    )
    s3.put_object(Bucket="ledger-test", Key="ledger/dev/backend/20260102T000000Z-b.json", Body=json.dumps(bad).encode())
    s3.put_object(Bucket="ledger-test", Key="ledger/dev/backend/latest.json", Body=json.dumps(bad).encode())
    with pytest.raises(ConfigError) as refused:
        read_latest(moto_target, "ledger-test", "dev", "backend")
    assert str(refused.value).startswith(
        "ledger record s3://ledger-test/ledger/dev/backend/latest.json cannot be read: outcome:"
    )
    assert "\n" not in str(refused.value)
    with caplog.at_level("WARNING", logger="opcd.ledger"):
        assert [r.version for r in read_history(moto_target, "ledger-test", "dev", "backend")] == ["v1"]
    assert "20260102T000000Z-b.json skipped" in caplog.text


def test_the_runs_artifact_carries_the_canary_analysis_table() -> None:
    from opcd.config import CanaryAnalysis
    from opcd.outcomes import Outcome
    from tasks.analysis import Series, judge
    from tasks.ledger import Record, markdown

    analysis = judge(
        CanaryAnalysis(metrics=["errors"], min_samples=10),
        Series("2", invocations=100, errors=1),
        Series("3", invocations=20, errors=12),
    )
    bake = {"steps": [], "analysis": {**analysis.as_dict(), "after_seconds": 12.4}}
    text = markdown(Record("backend", "prod", "deploy", Outcome.ROLLED_BACK, "v2", bake=bake))
    assert "\n### Canary analysis: fail\n\nversion 3 is worse than version 2: errors 1.00% (1/100) → 60.00%" in text
    assert "| metric | old (version 2) | new (version 3) | change | p-value | verdict |" in text
    assert "| errors | 1.00% (1/100) | 60.00% (12/20) | +59.00 pts | 0.0000 | FAIL |" in text
    assert "Canary analysis" not in markdown(Record("backend", "prod", "deploy", Outcome.DEPLOYED, "v2"))


def test_a_regions_records_go_under_its_region_and_one_regions_stay_where_they_were(
    moto_target: AwsTarget, run_log: pytest.LogCaptureFixture
) -> None:
    from opcd.locks import limit_name
    from opcd.outcomes import Outcome
    from tasks.ledger import Record, read_history, read_latest, record_in_ledger

    s3 = moto_target.client("s3")
    s3.create_bucket(Bucket="ledger")
    west = Record("backend", "prod", "deploy", Outcome.DEPLOYED, "v1", region="us-west-2")
    alone = Record("backend", "dev", "deploy", Outcome.DEPLOYED, "v1")
    record_in_ledger.fn(moto_target, "ledger", west)
    record_in_ledger.fn(moto_target, "ledger", alone)

    keys = {o["Key"].rsplit("/", 1)[0] for o in s3.list_objects_v2(Bucket="ledger")["Contents"]}
    assert keys == {"ledger/prod/us-west-2/backend", "ledger/dev/backend"}
    assert read_latest(moto_target, "ledger", "prod", "backend", region="us-west-2") == west
    assert read_latest(moto_target, "ledger", "prod", "backend") is None  # another region's is not the environment's
    assert [r.region for r in read_history(moto_target, "ledger", "prod", "backend", "us-west-2")] == ["us-west-2"]
    document = json.loads(s3.get_object(Bucket="ledger", Key="ledger/dev/backend/latest.json")["Body"].read())
    assert "region" not in document  # one region: the record as it always was
    assert (west.where, alone.where) == ("prod us-west-2", "dev")
    assert limit_name("prod", "backend", "us-west-2") == "opcd-env-prod-us-west-2-backend"
    assert limit_name("dev", "backend") == "opcd-env-dev-backend"
