"""Load tests against a real local HTTP server; results kept in and read back from the ledger (moto)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from opcd.aws import AwsTarget
from opcd.config import LoadTest
from tasks.loadtest import LoadResult, Measurement, judge, last_passing, measure, record_load_test
from tests.http_answers import serving


class Server:
    """Answers every GET after ``delay`` seconds with ``status`` (``/fail`` answers 500); counts requests."""

    def __init__(self) -> None:
        self.delay, self.status = 0.0, 200
        self.paths: list[str] = []
        self.busy = self.most_busy = 0
        self.lock = threading.Lock()


@pytest.fixture
def server() -> Iterator[tuple[str, Server]]:
    state = Server()

    def answer(path: str) -> tuple[int, bytes]:
        with state.lock:
            state.paths.append(path)
            state.busy += 1
            state.most_busy = max(state.most_busy, state.busy)
        time.sleep(state.delay)
        with state.lock:
            state.busy -= 1
        return 500 if path == "/fail" else state.status, b'{"status": "ok"}'

    with serving(answer) as base:
        yield base, state


def test_it_sends_rate_times_duration_requests_to_each_endpoint_in_turn(server: tuple[str, Server]) -> None:
    base, state = server
    settings = LoadTest(endpoints=["/health", "/passes"], rate=50, duration=0.4, concurrency=3, warmup=2)
    m = measure([base + "/health", base + "/passes"], settings)

    assert m.requests == settings.requests == 20 and m.ok == 20 and m.failed == 0 and m.error_rate == 0
    assert len(state.paths) == 2 + 20  # the warm-up's, then the measured ones
    assert state.paths[2:].count("/health") == state.paths[2:].count("/passes") == 10
    assert state.most_busy <= 3  # never more at once than `concurrency`
    p50, p95, p99 = m.percentile(50), m.percentile(95), m.percentile(99)
    assert p50 is not None and p95 is not None and p99 is not None and 0 < p50 <= p95 <= p99


def test_latency_is_measured_to_the_whole_answer(server: tuple[str, Server]) -> None:
    base, state = server
    state.delay = 0.2
    m = measure([base + "/"], LoadTest(rate=20, duration=0.2, concurrency=4, warmup=0))
    assert m.ok == 4 and min(m.latencies_ms) >= 200  # a lower bound: the server's own delay


def test_error_answers_and_timeouts_are_errors(server: tuple[str, Server]) -> None:
    base, state = server
    m = measure([base + "/fail", base + "/ok"], LoadTest(rate=40, duration=0.2, concurrency=2, warmup=0))
    assert m.errors == {"HTTP 500": 4} and m.ok == 4 and m.error_rate == 0.5

    state.delay = 0.5  # over the request's time limit
    m = measure([base + "/"], LoadTest(rate=10, duration=0.1, timeout=0.1, warmup=0))
    assert m.errors == {"ReadTimeout": 1} and m.percentile(95) is None


def test_requests_the_endpoint_cannot_keep_up_with_are_not_sent_and_count_as_errors(
    server: tuple[str, Server],
) -> None:
    base, state = server
    state.delay = 0.3  # one connection, 0.3 s each: 10 requests at 100/s cannot start within 0.1 + 0.35 s
    m = measure([base + "/"], LoadTest(rate=100, duration=0.1, concurrency=1, timeout=0.35, warmup=0))
    not_sent = m.errors.get("not sent in time (every connection busy)", 0)
    assert m.requests == 10 and not_sent >= 1 and m.ok + m.failed == 10
    assert len(state.paths) == 10 - not_sent  # what was not sent never reached the server


def test_percentiles_are_nearest_rank() -> None:
    m = Measurement(100, ok=100, latencies_ms=[float(i) for i in range(100, 0, -1)])
    assert (m.percentile(50), m.percentile(95), m.percentile(99), m.percentile(100)) == (50, 95, 99, 100)
    assert Measurement(1, latencies_ms=[7.0]).percentile(95) == 7


def test_the_verdict() -> None:
    settings = LoadTest(max_p95_regression=0.2, p95_noise=0.01, max_error_rate=0.05)

    def m(p95: float, errors: int = 0) -> Measurement:
        return Measurement(100, ok=100 - errors, errors={"HTTP 500": errors} if errors else {}, latencies_ms=[p95])

    baseline = {"version": "v1", "p95_ms": 100.0}
    assert judge(m(100), settings, None)[:2] == ("pass", "no earlier result to compare with")
    assert judge(m(119), settings, baseline)[0] == "pass"
    verdict, why, change = judge(m(130), settings, baseline)
    assert verdict == "fail" and why == "p95 130 ms is +30% on 100 ms (v1); at most +20%" and change == 0.3
    # a big relative change on a fast endpoint is noise unless it is also more than p95_noise
    assert judge(m(3), settings, {"version": "v1", "p95_ms": 1.0})[0] == "pass"
    assert judge(m(12), settings, {"version": "v1", "p95_ms": 1.0})[0] == "fail"
    verdict, why, _ = judge(m(50, errors=6), settings, baseline)
    assert verdict == "fail" and why == "6.0% of requests failed (HTTP 500: 6); at most 5.0%"


def result(verdict: str, p95: float, version: str, finished: str) -> LoadResult:
    return LoadResult(
        "backend", "dev", version, "https://api.dev.example", ["/health"], 10, 0, 0.0, 1.0, p95, p95, 1.0, 10.0, 2,
        {}, verdict, "why", finished_at=finished,  # type: ignore[arg-type]
    )  # fmt: skip


def test_the_baseline_is_the_newest_passing_result(moto_target: AwsTarget) -> None:
    bucket = "outreachpass-artifacts"
    moto_target.client("s3").create_bucket(Bucket=bucket)
    assert last_passing(moto_target, bucket, "dev", "backend") is None
    for verdict, p95, version, finished in (
        ("pass", 10.0, "v1", "2026-01-01T10:00:00.000000Z"),
        ("pass", 12.0, "v2", "2026-01-02T10:00:00.000000Z"),
        ("fail", 90.0, "v3", "2026-01-03T10:00:00.000000Z"),  # a failing one never becomes the baseline
    ):
        key = record_load_test(moto_target, bucket, result(verdict, p95, version, finished))
        assert key.startswith("ledger/load-tests/dev/backend/20260")
    found: dict[str, Any] | None = last_passing(moto_target, bucket, "dev", "backend")
    assert found is not None and found["version"] == "v2" and found["p95_ms"] == 12.0
    assert last_passing(moto_target, bucket, "prod", "backend") is None
    body = moto_target.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    assert json.loads(body)["verdict"] == "fail"


def test_a_load_test_in_an_environment_of_several_regions_requests_its_first_region(moto_target: AwsTarget) -> None:
    from opcd.config import parse_config
    from tasks.loadtest import urls_of
    from tests.opcd.test_config import ROOT, base, two_regions

    config = parse_config(two_regions(base()), ROOT)  # prod's health URL: https://api.{region}.outreachpass.example

    assert urls_of(config, moto_target, "backend", "prod", ["/a"]) == ["https://api.us-east-1.outreachpass.example/a"]
