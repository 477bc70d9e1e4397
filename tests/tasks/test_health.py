"""Health checks against a real local HTTP server."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from opcd.config import HealthCheck
from tasks.health import wait_healthy
from tests.http_answers import serving


class Script:
    """What the server answers, one entry per request (the last one repeats)."""

    def __init__(self) -> None:
        self.answers: list[tuple[int, str, float]] = [(200, "v1", 0.0)]
        self.count = 0


@pytest.fixture
def server() -> Iterator[tuple[str, Script]]:
    script = Script()

    def answer(path: str) -> tuple[int, bytes]:
        status, version, delay = script.answers[min(script.count, len(script.answers) - 1)]
        script.count += 1
        time.sleep(delay)
        return status, json.dumps({"version": version}).encode()

    with serving(answer) as base:
        yield f"{base}/health", script


def no_sleep(_: float) -> None:
    pass


def test_consecutive_successes(server: tuple[str, Script]) -> None:
    url, script = server
    script.answers = [(200, "v1", 0), (503, "v1", 0), (200, "v1", 0), (200, "v1", 0), (200, "v1", 0)]
    report = wait_healthy(url, HealthCheck(successes=3, attempts=10), sleep=no_sleep)
    assert report.healthy and len(report.probes) == 5 and report.versions[-1] == "v1"


def test_gives_up_when_the_streak_cannot_be_reached(server: tuple[str, Script]) -> None:
    url, script = server
    script.answers = [(500, "v1", 0)]
    report = wait_healthy(url, HealthCheck(successes=3, attempts=10), sleep=no_sleep)
    assert not report.healthy and len(report.probes) == 8
    assert "UNHEALTHY (0/8 ok; last: HTTP 500" in report.summary()


def test_timeout_counts_as_a_failure(server: tuple[str, Script]) -> None:
    url, script = server
    script.answers = [(200, "v1", 0.5)]
    report = wait_healthy(url, HealthCheck(successes=1, attempts=1, timeout=0.05), sleep=no_sleep)
    assert not report.healthy and "ReadTimeout" in report.probes[0].detail


def test_wrong_version_is_not_healthy(server: tuple[str, Script]) -> None:
    url, script = server
    report = wait_healthy(url, HealthCheck(successes=1, attempts=1), expect_version="v2", sleep=no_sleep)
    assert not report.healthy and "serves version v1, expected v2" in report.probes[0].detail


def test_connection_refused() -> None:
    report = wait_healthy("http://127.0.0.1:9/health", HealthCheck(successes=1, attempts=2), sleep=no_sleep)
    assert not report.healthy and "ConnectError" in report.probes[0].detail
