"""tasks/events.py without a server: which event a ledger record's outcome is, and what a payload may hold.

The events themselves, sent by real runs and read back from a real server: tests/e2e/test_deployments.py.
"""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from opcd.outcomes import Outcome
from tasks.events import (
    DEPLOY_FAILED,
    DEPLOY_ROLLED_BACK,
    DEPLOY_SUCCEEDED,
    NAMES,
    PAYLOAD_TEXT,
    _plain,
    emit,
    outcome_event,
)


@pytest.mark.parametrize(
    ("action", "outcome", "event"),
    [
        ("deploy", Outcome.DEPLOYED, DEPLOY_SUCCEEDED),
        ("deploy", Outcome.NOOP, DEPLOY_SUCCEEDED),
        ("deploy", Outcome.FAILED, DEPLOY_FAILED),
        ("deploy", Outcome.ROLLED_BACK, DEPLOY_ROLLED_BACK),
        ("deploy", Outcome.ROLLBACK_FAILED, DEPLOY_FAILED),
        ("rollback", Outcome.DEPLOYED, DEPLOY_ROLLED_BACK),  # live moved back: what a rollback is for
        ("rollback", Outcome.NOOP, DEPLOY_ROLLED_BACK),
        ("rollback", Outcome.ROLLED_BACK, DEPLOY_FAILED),  # its target failed its checks and it went back
        ("rollback", Outcome.FAILED, DEPLOY_FAILED),
    ],
)
def test_a_records_outcome_is_one_event(action: str, outcome: Outcome, event: str) -> None:
    assert outcome_event(action, outcome) == event


def test_the_names_are_the_contracts() -> None:
    assert set(NAMES) == {
        "opcd.deploy.started", "opcd.deploy.succeeded", "opcd.deploy.failed", "opcd.deploy.rolled-back",
        "opcd.bake.step", "opcd.approval.requested", "opcd.approval.answered",
    }  # fmt: skip


def test_outside_a_flow_run_nothing_is_sent_and_a_name_not_opcds_is_refused() -> None:
    assert emit(DEPLOY_SUCCEEDED, "backend", "dev", "v1", outcome="deployed") is None
    with pytest.raises(ValueError, match="not an opcd event: opcd.deploy.exploded"):
        emit("opcd.deploy.exploded", "backend", "dev", "v1")


def test_a_payload_holds_plain_values_only_text_cut_and_no_secret() -> None:
    plain = _plain({
        "approved": True, "percent": 10, "live_version": None, "reason": "x" * 1000,
        "token": SecretStr("made-up"), "outcome": Outcome.ROLLED_BACK,
    })  # fmt: skip
    assert plain["approved"] is True and plain["percent"] == 10 and plain["live_version"] is None
    assert plain["reason"] == "x" * PAYLOAD_TEXT
    assert plain["token"] == "**********"  # SecretStr's own text, never the value
    assert plain["outcome"] == "rolled-back"
