"""Slack notifications through a local sink speaking Slack's webhook and Web API protocols."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from opcd.config import SlackSettings
from sandbox.slack import SlackSink
from tasks.notify import Notifier

WEBHOOK_SECRET_PART = "sandbox-webhook-token"


@pytest.fixture
def sink(monkeypatch: pytest.MonkeyPatch) -> Iterator[SlackSink]:
    for var in ("OPCD_SLACK_WEBHOOK_URL", "OPCD_SLACK_BOT_TOKEN", "OPCD_SLACK_API_URL"):
        monkeypatch.delenv(var, raising=False)
    server = SlackSink().start()
    yield server
    server.stop()


def test_webhook_message_is_block_kit_with_facts(sink: SlackSink, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPCD_SLACK_WEBHOOK_URL", sink.webhook_url)
    notifier = Notifier(SlackSettings(channel="#deploys"), "backend v2 → prod")

    assert notifier.send("deploy done: v2 is live", "ok", {"Live now": "v2 (Lambda version 4)"})

    [message] = sink.messages
    assert message["path"] == "/webhook/T0SANDBOX/B0SANDBOX/sandbox-webhook-token"
    assert message["text"] == "backend v2 → prod: deploy done: v2 is live"
    assert message["blocks"][0]["text"]["text"] == ":white_check_mark: *backend v2 → prod*: deploy done: v2 is live"
    assert message["blocks"][1]["fields"] == [{"type": "mrkdwn", "text": "*Live now*\nv2 (Lambda version 4)"}]
    assert notifier.sent == 1 and notifier.failures == []


def test_webhook_500_and_429_are_retried(sink: SlackSink, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPCD_SLACK_WEBHOOK_URL", sink.webhook_url)
    sink.fail_next = [500, 429]
    notifier = Notifier(None, "worker v3 → dev")

    assert notifier.send("deploy started")

    assert sink.requests == 3 and sink.texts() == ["worker v3 → dev: deploy started"]


def test_a_message_that_keeps_failing_is_recorded_not_raised(
    sink: SlackSink, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OPCD_SLACK_WEBHOOK_URL", sink.webhook_url)
    sink.fail_next = [500] * 10
    notifier = Notifier(None, "backend v2 → prod")

    assert notifier.send("deploy done") is False

    assert sink.requests == 4  # the first try and three retries
    assert notifier.failures == [
        "Slack message 'backend v2 → prod: deploy done' not delivered: webhook answered HTTP 500: internal_error"
    ]
    assert "not delivered" in caplog.text and WEBHOOK_SECRET_PART not in caplog.text  # the URL is a secret


def test_bot_token_threads_a_runs_messages_under_the_first(sink: SlackSink, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPCD_SLACK_BOT_TOKEN", "xoxb-test-token")
    monkeypatch.setenv("OPCD_SLACK_API_URL", sink.api_url)
    notifier = Notifier(SlackSettings(channel="#deploys"), "backend v2 → prod")

    notifier.send("deploy started")
    notifier.send("bake step 1/1: 10%")

    first, second = sink.messages
    assert first["path"] == second["path"] == "/api/chat.postMessage"
    assert first["auth"] == "Bearer xoxb-test-token" and first["channel"] == "#deploys"
    assert "thread_ts" not in first and second["thread_ts"] == "1700000000.000000"
    assert notifier.destination == "Slack #deploys (bot token)"


def test_without_slack_messages_stay_in_the_log(sink: SlackSink) -> None:
    notifier = Notifier(SlackSettings(channel="#deploys"), "backend v2 → dev")
    assert notifier.send("deploy started") and sink.requests == 0
    assert notifier.destination == "the run log only (Slack not configured)"


def test_a_message_sent_in_a_run_has_a_button_to_the_run(sink: SlackSink, monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace
    from uuid import uuid4

    from prefect.settings import PREFECT_UI_URL, temporary_settings
    from slack_sdk.models.blocks import Block

    import tasks.notify

    run = SimpleNamespace(id=uuid4(), name="release v2-" + "x" * 80)  # a name longer than a button may say
    monkeypatch.setattr(tasks.notify.FlowRunContext, "get", staticmethod(lambda: SimpleNamespace(flow_run=run)))
    monkeypatch.setenv("OPCD_SLACK_WEBHOOK_URL", sink.webhook_url)
    with temporary_settings({PREFECT_UI_URL: "http://prefect.example/"}):
        assert Notifier(SlackSettings(), "release v2").send("approval requested for prod", "warn")

    [message] = sink.messages
    actions = message["blocks"][-1]
    [button] = actions["elements"]
    assert button["url"] == f"http://prefect.example/runs/flow-run/{run.id}"
    assert button["text"]["text"] == f"Prefect run {run.name}"[:75]
    parsed = Block.parse(actions)  # Slack's Block Kit model (slack_sdk): an actions block with a link button
    assert parsed is not None and parsed.type == "actions"
    parsed.validate_json()  # raises on what Slack refuses (a button's text over 75 characters, say)


def test_outside_a_run_there_is_no_button(sink: SlackSink, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPCD_SLACK_WEBHOOK_URL", sink.webhook_url)
    assert Notifier(SlackSettings(), "backend v2 → dev").send("done", "ok")
    assert [b["type"] for b in sink.messages[0]["blocks"]] == ["section"]
