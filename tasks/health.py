"""HTTP health checks: N consecutive healthy answers, each with a timeout."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from opcd import progress
from opcd.config import HealthCheck, SmokeCheck
from opcd.errors import DeployFailed


@dataclass
class Probe:
    ok: bool
    status: int | None
    detail: str
    version: str | None = None
    elapsed_ms: float = 0.0


@dataclass
class HealthReport:
    url: str
    healthy: bool
    probes: list[Probe] = field(default_factory=list)

    @property
    def versions(self) -> list[str]:
        return [p.version for p in self.probes if p.version]

    def summary(self) -> str:
        last = self.probes[-1] if self.probes else None
        good = sum(p.ok for p in self.probes)
        state = "healthy" if self.healthy else "UNHEALTHY"
        return f"{self.url}: {state} ({good}/{len(self.probes)} ok; last: {last.detail if last else 'none'})"


def probe(client: httpx.Client, url: str, timeout: float) -> Probe:
    start = time.perf_counter()
    try:
        answer = client.get(url, timeout=timeout)
    except httpx.HTTPError as exc:
        elapsed = (time.perf_counter() - start) * 1000
        return Probe(False, None, f"{type(exc).__name__}: {exc}"[:200], elapsed_ms=elapsed)
    elapsed = (time.perf_counter() - start) * 1000
    version = None
    try:
        body = answer.json()
        if isinstance(body, dict) and body.get("version") is not None:
            version = str(body["version"])
    except ValueError:
        pass
    ok = 200 <= answer.status_code < 300
    return Probe(ok, answer.status_code, f"HTTP {answer.status_code} in {elapsed:.0f} ms", version, elapsed)


def wait_healthy(
    url: str,
    settings: HealthCheck,
    expect_version: str | None = None,
    sleep: Callable[[float], None] = time.sleep,
    on_probe: Callable[[Probe], None] | None = None,
) -> HealthReport:
    """Probe until ``settings.successes`` consecutive healthy answers or ``attempts`` run out.

    With ``expect_version``, an answer that names another version does not count as healthy.
    """
    report = HealthReport(url, healthy=False)
    streak = 0
    with httpx.Client(follow_redirects=True, headers={"user-agent": "opcd-health"}) as client:
        for attempt in range(settings.attempts):
            result = probe(client, url, settings.timeout)
            if result.ok and expect_version and result.version and result.version != expect_version:
                result.ok = False
                result.detail += f", serves version {result.version}, expected {expect_version}"
            report.probes.append(result)
            if on_probe:
                on_probe(result)
            streak = streak + 1 if result.ok else 0
            if streak >= settings.successes:
                report.healthy = True
                return report
            if settings.attempts - attempt - 1 < settings.successes - streak:
                return report  # not enough attempts left to reach the streak
            sleep(settings.interval)
    return report


@task(name="check-health", cache_policy=NO_CACHE)
def check_health(url: str, public_url: str, settings: HealthCheck, expect_version: str | None = None) -> HealthReport:
    """Post-traffic health check of ``public_url`` (requested at ``url``); raise when unhealthy."""
    logger = get_run_logger()
    progress.report("health", f"{public_url} ({settings.successes} consecutive)")
    report = wait_healthy(
        url, settings, expect_version, on_probe=lambda p: logger.info("Health %s: %s", public_url, p.detail)
    )
    report.url = public_url
    if not report.healthy:
        raise DeployFailed(f"post-traffic health check failed: {report.summary()}")
    logger.info("Health %s: healthy (%d consecutive)", public_url, settings.successes)
    return report


def run_http_smoke(base_url: str, public_base: str, checks: list[SmokeCheck], timeout: float) -> list[str]:
    """Each smoke check as an HTTP request to ``base_url``; the failures, described."""
    failures = []
    with httpx.Client(follow_redirects=True, headers={"user-agent": "opcd-smoke"}) as client:
        for check in checks:
            url = base_url.rstrip("/") + check.path
            try:
                answer = client.request(check.method, url, timeout=timeout)
            except httpx.HTTPError as exc:
                failures.append(f"{check.method} {public_base}{check.path}: {type(exc).__name__}: {exc}"[:300])
                continue
            if answer.status_code != check.expect_status:
                got = f"HTTP {answer.status_code}, expected {check.expect_status}"
                failures.append(f"{check.method} {public_base}{check.path}: {got}")
            elif check.body_contains and check.body_contains not in answer.text:
                failures.append(f"{check.method} {public_base}{check.path}: body lacks {check.body_contains!r}")
    return failures


@task(name="smoke-http", cache_policy=NO_CACHE)
def http_smoke_checks(base_url: str, public_base: str, checks: list[SmokeCheck], timeout: float = 5.0) -> None:
    """The component's smoke checks against its service URL; raise when one fails."""
    logger = get_run_logger()
    progress.report("smoke", ", ".join(f"{c.method} {public_base}{c.path}" for c in checks))
    failures = run_http_smoke(base_url, public_base, checks, timeout)
    if failures:
        raise DeployFailed("smoke check failed: " + "; ".join(failures))
    for check in checks:
        logger.info("Smoke %s %s%s: %d as expected", check.method, public_base, check.path, check.expect_status)
