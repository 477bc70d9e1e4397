"""Load tests: an environment's endpoints under a steady rate of requests, and how it compares.

:func:`measure` sends ``rate × duration`` GET requests (after ``warmup`` unmeasured ones), one
every ``1/rate`` seconds, each endpoint in turn, at most ``concurrency`` at once, over HTTP with
httpx: bounded in count (``MAX_LOAD_REQUESTS``) and in time (a request not started by
``duration + timeout`` is not sent and counts as an error: the endpoint could not keep up). Its
latencies are the successful requests' (2xx and 3xx), from sending to the whole answer read.

:func:`run_load_test` measures one component in one environment, judges the numbers against the
newest passing result in the ledger (p95 may grow by at most ``max_p95_regression`` of it, or by
``p95_noise``; errors by at most ``max_error_rate``) and keeps the result at
``ledger/load-tests/{environment}/{component}/{time}-{run}.json``.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
from prefect.context import FlowRunContext
from prefect.logging import get_run_logger

from opcd.aws import AwsTarget
from opcd.config import Config, LoadTest
from tasks.ledger import PREFIX, actor, now, read_documents

Verdict = Literal["pass", "fail"]


@dataclass
class Measurement:
    """What one load test saw: counts, latencies (milliseconds) and what went wrong."""

    requests: int  # measured requests asked for
    ok: int = 0
    errors: dict[str, int] = field(default_factory=dict)  # "HTTP 500", "ReadTimeout", "not sent in time" → count
    latencies_ms: list[float] = field(default_factory=list, repr=False)  # of the successful requests
    seconds: float = 0.0

    @property
    def failed(self) -> int:
        return sum(self.errors.values())

    @property
    def error_rate(self) -> float:
        return self.failed / self.requests if self.requests else 0.0

    def percentile(self, p: float) -> float | None:
        """The nearest-rank ``p``-th percentile of the successful requests' latencies (ms), or None."""
        if not self.latencies_ms:
            return None
        ordered = sorted(self.latencies_ms)
        return round(ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)], 1)


def _get(client: httpx.Client, url: str) -> tuple[float | None, str | None]:
    """(latency in ms, None) for an answer below 400; (None, what went wrong) otherwise."""
    start = time.perf_counter()
    try:
        response = client.get(url)
    except httpx.HTTPError as exc:
        return None, type(exc).__name__
    elapsed = (time.perf_counter() - start) * 1000
    return (elapsed, None) if response.status_code < 400 else (None, f"HTTP {response.status_code}")


def measure(urls: list[str], settings: LoadTest) -> Measurement:
    """Send the load test's requests to ``urls`` (in turn) and measure them (see the module's doc)."""
    total, interval = settings.requests, 1 / settings.rate
    result = Measurement(total)
    lock = threading.Lock()
    following = iter(range(total))
    limits = httpx.Limits(max_connections=settings.concurrency, max_keepalive_connections=settings.concurrency)
    with httpx.Client(timeout=settings.timeout, limits=limits, follow_redirects=False) as client:
        warm = [threading.Thread(target=_get, args=(client, urls[i % len(urls)])) for i in range(settings.warmup)]
        for i in range(0, len(warm), settings.concurrency):  # at most `concurrency` at once here too
            batch = warm[i : i + settings.concurrency]
            for thread in batch:
                thread.start()
            for thread in batch:
                thread.join()
        start = time.monotonic()
        last_start = start + settings.duration + settings.timeout

        def sender() -> None:
            while True:
                with lock:
                    index = next(following, None)
                if index is None:
                    return
                due = start + index * interval
                time.sleep(max(0.0, due - time.monotonic()))
                latency: float | None = None
                problem: str | None = "not sent in time (every connection busy)"
                if time.monotonic() <= last_start:
                    latency, problem = _get(client, urls[index % len(urls)])
                with lock:
                    if latency is not None:
                        result.ok += 1
                        result.latencies_ms.append(latency)
                    else:
                        result.errors[str(problem)] = result.errors.get(str(problem), 0) + 1

        senders = [threading.Thread(target=sender, daemon=True) for _ in range(min(settings.concurrency, total))]
        for thread in senders:
            thread.start()
        for thread in senders:
            thread.join()
        result.seconds = round(time.monotonic() - start, 2)
    return result


@dataclass
class LoadResult:
    """One component's load test in one environment, as the ledger keeps it."""

    component: str
    environment: str
    version: str
    origin: str  # the public origin requested (the health URL's)
    endpoints: list[str]
    requests: int
    errors: int
    error_rate: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    seconds: float
    rate: float  # asked for, requests a second
    concurrency: int
    problems: dict[str, int]  # what went wrong, and how often
    verdict: Verdict
    reason: str
    baseline: dict[str, Any] | None = None  # the passing result compared with: version, p95_ms, finished_at, run
    p95_change: float | None = None  # (p95 - baseline p95) / baseline p95
    flow_run_id: str | None = None
    flow_run_name: str | None = None
    actor: str = field(default_factory=actor)
    started_at: str = field(default_factory=now)
    finished_at: str | None = None

    def line(self) -> str:
        """``p50 4 ms, p95 9 ms, p99 12 ms, 0% errors (100 requests in 10 s); p95 was 8 ms (v1): +12%``."""
        numbers = ", ".join(f"{name} {_ms(value)}" for name, value in (
            ("p50", self.p50_ms), ("p95", self.p95_ms), ("p99", self.p99_ms)))  # fmt: skip
        text = f"{numbers}, {self.error_rate:.1%} errors ({self.requests} requests in {self.seconds:g} s)"
        if self.baseline:
            change = f": {self.p95_change:+.0%}" if self.p95_change is not None else ""
            text += f"; p95 was {_ms(self.baseline.get('p95_ms'))} ({self.baseline.get('version')}){change}"
        else:
            text += "; no earlier result to compare with"
        return text


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms" if value >= 10 else f"{value:.1f} ms"


def judge(m: Measurement, settings: LoadTest, baseline: dict[str, Any] | None) -> tuple[Verdict, str, float | None]:
    """(verdict, why, p95's relative change): errors over ``max_error_rate`` or p95 grown past both bounds fail."""
    p95 = m.percentile(95)
    if m.error_rate > settings.max_error_rate:
        what = ", ".join(f"{k}: {n}" for k, n in Counter(m.errors).most_common(3))
        return "fail", f"{m.error_rate:.1%} of requests failed ({what}); at most {settings.max_error_rate:.1%}", None
    before = baseline.get("p95_ms") if baseline else None
    if p95 is None or not before:
        return "pass", "no earlier result to compare with" if p95 is not None else "no request answered", None
    change = (p95 - before) / before
    limit, noise_ms = settings.max_p95_regression, settings.p95_noise * 1000
    if change > limit and p95 - before > noise_ms:
        was = baseline.get("version") if baseline else "?"
        return "fail", f"p95 {_ms(p95)} is {change:+.0%} on {_ms(before)} ({was}); at most {limit:+.0%}", change
    return "pass", f"p95 {change:+.0%} on the last passing result (at most {limit:+.0%})", change


def prefix(environment: str, component: str) -> str:
    """Where the component's load test results in the environment are kept."""
    return f"{PREFIX}/load-tests/{environment}/{component}/"


def last_passing(target: AwsTarget, bucket: str, environment: str, component: str) -> dict[str, Any] | None:
    """The newest passing load test result of the component in the environment, or None."""
    for _, record in read_documents(target, bucket, prefix(environment, component)):
        if record.get("verdict") == "pass" and record.get("p95_ms"):
            return record
    return None


def record_load_test(target: AwsTarget, bucket: str, result: LoadResult) -> str:
    """Keep the result in the ledger; its key."""
    result.finished_at = result.finished_at or now()
    stamp = result.finished_at.replace(":", "").replace("-", "")
    key = f"{prefix(result.environment, result.component)}{stamp}-{(result.flow_run_id or 'local')[:8]}.json"
    body = json.dumps(asdict(result), indent=2, sort_keys=True).encode()
    target.client("s3").put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/json")
    return key


def origin_of(config: Config, component: str, environment: str) -> str:
    """The origin of the component's health URL in ``environment`` (several regions: the first's, the canary)."""
    health = urlsplit(config.health_url(component, environment) or "")
    return f"{health.scheme}://{health.netloc}"


def urls_of(config: Config, target: AwsTarget, component: str, environment: str, endpoints: list[str]) -> list[str]:
    """Each endpoint at the origin of the component's health URL there (the sandbox's gateway when it serves it)."""
    return [target.resolve_url(origin_of(config, component, environment) + path) for path in endpoints]


def run_load_test(config: Config, target: AwsTarget, component: str, environment: str, version: str) -> LoadResult:
    """Measure ``component`` in ``environment``, judge it against the ledger's last passing result, record it."""
    settings = config.component(component).load_test
    if settings is None:
        raise ValueError(f"{component} has no load_test in opcd.toml")
    logger = get_run_logger()
    bucket = config.project.artifact_bucket
    baseline = last_passing(target, bucket, environment, component)
    origin = origin_of(config, component, environment)
    started = now()
    logger.info(
        "Load test of %s in %s: %d requests at %g/s, %d at once, to %s", component, environment, settings.requests,
        settings.rate, settings.concurrency, ", ".join(settings.endpoints),
    )  # fmt: skip
    m = measure(urls_of(config, target, component, environment, settings.endpoints), settings)
    verdict, reason, change = judge(m, settings, baseline)
    ctx = FlowRunContext.get()
    result = LoadResult(
        component, environment, version, origin, list(settings.endpoints), m.requests,
        m.failed, round(m.error_rate, 4), m.percentile(50), m.percentile(95), m.percentile(99), m.seconds,
        settings.rate, settings.concurrency, dict(m.errors), verdict, reason,
        {k: baseline.get(k) for k in ("version", "p95_ms", "finished_at", "flow_run_name")} if baseline else None,
        None if change is None else round(change, 4),
        str(ctx.flow_run.id) if ctx and ctx.flow_run else None, ctx.flow_run.name if ctx and ctx.flow_run else None,
        started_at=started,
    )  # fmt: skip
    record_load_test(target, bucket, result)
    logger.info("Load test of %s in %s: %s: %s (%s)", component, environment, verdict, result.line(), reason)
    return result
