"""What the ledger says was live: the only versions a rollback may go to without --force."""

from __future__ import annotations


def test_a_rollback_that_failed_proves_nothing_live() -> None:
    from tasks.ledger import seen_live

    records = [
        {"action": "deploy", "outcome": "deployed", "previous_version": "v1", "live_version": "v2"},
        {"action": "deploy", "outcome": "rolled-back", "previous_version": "v2", "live_version": "v2"},
        {"action": "deploy", "outcome": "noop", "previous_version": "v2", "live_version": "v2"},
        # a rollback whose alias could not be read again: what it found live is not known to be live
        {"action": "rollback", "outcome": "rollback-failed", "previous_version": "v3-bad", "live_version": None},
        {"action": "deploy", "outcome": "failed", "previous_version": "v4-unverified", "live_version": None},
        {"action": "rollback", "outcome": "deployed", "previous_version": "v2", "live_version": "v1"},
    ]
    assert seen_live(records) == ["v1", "v2"]
