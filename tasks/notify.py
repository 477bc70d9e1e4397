"""Notifications: Slack (Block Kit, through an incoming webhook or a bot token) and email (SES).

Where the message goes, first match wins:

- ``OPCD_SLACK_BOT_TOKEN`` (or the Prefect Secret block ``notifications.slack.token_secret``) with
  ``notifications.slack.channel``: ``chat.postMessage``; a run's messages thread under its first;
- ``OPCD_SLACK_WEBHOOK_URL`` (or the Prefect Secret block ``notifications.slack.webhook_secret``):
  an incoming webhook (no threads: Slack webhooks cannot reply);
- neither: messages go to the run's log only.

Rate limits (429, honouring Retry-After), 5xx answers and connection errors are retried. A message
that still fails is logged and kept in ``Notifier.failures`` (the ledger records them); it never
fails or blocks a deploy. Tokens and webhook URLs are secrets: they are never logged.

Email goes through SES (``notifications.email``: a verified sender and its recipients), for what
needs a person: approval requests and failures. It fails the same soft way as Slack.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from prefect.blocks.system import Secret
from prefect.context import FlowRunContext
from prefect.logging import get_run_logger
from prefect.settings import PREFECT_UI_URL
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)
from slack_sdk.http_retry.builtin_interval_calculators import BackoffRetryIntervalCalculator
from slack_sdk.webhook import WebhookClient

from opcd.aws import AwsTarget, error_code
from opcd.config import Config, EmailSettings, SlackSettings

_ICONS = {"info": ":large_blue_circle:", "ok": ":white_check_mark:", "warn": ":warning:", "fail": ":x:"}


def _logger() -> Any:
    try:
        return get_run_logger()
    except Exception:  # outside a run (the CLI): the module's logger
        return logging.getLogger("opcd.notify")


def _retry_handlers() -> list[Any]:
    backoff = BackoffRetryIntervalCalculator(backoff_factor=0.5)
    return [
        RateLimitErrorRetryHandler(max_retry_count=3),
        ServerErrorRetryHandler(max_retry_count=3, interval_calculator=backoff),
        ConnectionErrorRetryHandler(max_retry_count=2, interval_calculator=backoff),
    ]


def _secret(block: str | None) -> str | None:
    """The value of a Prefect Secret block, or None when it is not set or not there."""
    if not block:
        return None
    try:
        value = Secret.load(block).get()  # type: ignore[union-attr]
    except Exception as exc:  # a missing block means "not configured", said once below
        _logger().warning("Slack: Prefect Secret block %r not readable (%s)", block, type(exc).__name__)
        return None
    return str(value) if value else None


def flow_run_url(flow_run_id: str) -> str | None:
    """A flow run's page in the Prefect UI, when the UI's URL (``PREFECT_UI_URL``) is known."""
    ui = PREFECT_UI_URL.value()
    return f"{ui.rstrip('/')}/runs/flow-run/{flow_run_id}" if ui else None


def run_url() -> str | None:
    """The current flow run's page in the Prefect UI, when the UI's URL is known."""

    ctx = FlowRunContext.get()
    return flow_run_url(str(ctx.flow_run.id)) if ctx and ctx.flow_run else None


def run_button() -> dict[str, Any] | None:
    """A Slack button that opens the current flow run in the Prefect UI, when the UI's URL is known."""

    url, ctx = run_url(), FlowRunContext.get()
    if not (url and ctx and ctx.flow_run):
        return None
    text = {"type": "plain_text", "text": f"Prefect run {ctx.flow_run.name}"[:75]}  # Slack's limit for a button
    return {"type": "button", "text": text, "url": url, "action_id": "open-prefect-run"}


class Notifier:
    """Sends a run's messages to one Slack destination; remembers what failed."""

    def __init__(self, settings: SlackSettings | None, title: str, enabled: bool = True) -> None:
        self.title = title
        self.failures: list[str] = []
        self.sent = 0
        self.muted = False  # a resumed run replaying what it did (and said) before its suspension
        self._thread_ts: str | None = None
        self._channel = settings.channel if settings else None
        self._client: WebClient | None = None
        self._webhook: WebhookClient | None = None
        if not enabled:
            return
        token = os.environ.get("OPCD_SLACK_BOT_TOKEN") or (_secret(settings.token_secret) if settings else None)
        webhook = os.environ.get("OPCD_SLACK_WEBHOOK_URL")
        if token and self._channel:
            base = os.environ.get("OPCD_SLACK_API_URL", WebClient.BASE_URL)
            self._client = WebClient(token=token, base_url=base, timeout=10, retry_handlers=_retry_handlers())
        elif webhook or (settings and settings.webhook_secret):
            url = webhook or _secret(settings.webhook_secret if settings else None)
            if url:
                self._webhook = WebhookClient(url, timeout=10, retry_handlers=_retry_handlers())

    @classmethod
    def from_config(cls, config: Config, title: str, enabled: bool = True) -> Notifier:
        """The run's notifier; ``enabled=False`` keeps it quiet (a release reports for its deploys)."""
        return cls(config.notifications.slack, title, enabled)

    @property
    def destination(self) -> str:
        if self._client:
            return f"Slack {self._channel} (bot token)"
        return "Slack (incoming webhook)" if self._webhook else "the run log only (Slack not configured)"

    def blocks(self, text: str, level: str, facts: dict[str, str] | None) -> list[dict[str, Any]]:
        blocks: list[dict[str, Any]] = [
            {"type": "section", "text": {"type": "mrkdwn", "text": f"{_ICONS.get(level, '')} *{self.title}*: {text}"}}
        ]
        if facts:
            blocks.append({
                "type": "section",
                "fields": [{"type": "mrkdwn", "text": f"*{k}*\n{v}"} for k, v in list(facts.items())[:10]],
            })  # fmt: skip
        button = run_button()
        if button:
            blocks.append({"type": "actions", "elements": [button]})
        return blocks

    def send(self, text: str, level: str = "info", facts: dict[str, str] | None = None) -> bool:
        """Post one message; True when Slack took it (or no Slack is configured)."""
        fallback = f"{self.title}: {text}"
        if self.muted:
            _logger().info("Slack: %r was sent before the run was suspended; not again", fallback[:80])
            return True
        if not (self._client or self._webhook):
            return True
        blocks = self.blocks(text, level, facts)
        try:
            if self._client:
                answer = self._client.chat_postMessage(
                    channel=str(self._channel), text=fallback, blocks=blocks, thread_ts=self._thread_ts
                )
                if self._thread_ts is None:
                    self._thread_ts = answer.get("ts")
            elif self._webhook:
                response = self._webhook.send(text=fallback, blocks=blocks)
                if response.status_code != 200:  # a webhook's failure is an answer, not an exception
                    raise RuntimeError(f"webhook answered HTTP {response.status_code}: {response.body[:100]}")
        except (SlackApiError, RuntimeError, OSError) as exc:
            reason = exc.response.get("error") if isinstance(exc, SlackApiError) else str(exc)
            failure = f"Slack message {fallback[:60]!r} not delivered: {reason}"
            self.failures.append(failure)
            _logger().warning("%s (the deploy goes on)", failure)
            return False
        self.sent += 1
        return True


class Emailer:
    """Sends plain-text email through SES to ``notifications.email.to``; remembers what failed."""

    def __init__(self, settings: EmailSettings | None, target: AwsTarget | None) -> None:
        self.settings, self.target = settings, target
        self.failures: list[str] = []
        self.sent: list[str] = []  # SES message ids
        self.muted = False  # see Notifier.muted

    @classmethod
    def from_config(cls, config: Config, target: AwsTarget) -> Emailer:
        return cls(config.notifications.email, target)

    @property
    def configured(self) -> bool:
        return self.settings is not None and self.target is not None

    def send(self, subject: str, body: str) -> bool:
        """One email to every recipient; True when SES took it (or no email is configured)."""
        if self.settings is None or self.target is None or self.muted:
            return True
        try:
            answer = self.target.client("ses").send_email(
                Source=self.settings.sender,
                Destination={"ToAddresses": list(self.settings.to)},
                Message={
                    "Subject": {"Data": subject[:200], "Charset": "UTF-8"},
                    "Body": {"Text": {"Data": body, "Charset": "UTF-8"}},
                },
            )
        except Exception as exc:  # botocore's errors and connection failures alike: never fail the deploy
            failure = f"email {subject[:60]!r} not sent: {error_code(exc) or type(exc).__name__}: {exc}"[:300]
            self.failures.append(failure)
            _logger().warning("%s (the deploy goes on)", failure)
            return False
        self.sent.append(str(answer.get("MessageId")))
        _logger().info("Email %r sent to %s", subject[:80], ", ".join(self.settings.to))
        return True
