"""Canary analysis: its statistics against published values, its verdicts, and a bake judged by it on the
sandbox's CloudWatch (metrics put as Lambda publishes them, alarms OK)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from opcd.aws import AwsTarget
from opcd.config import CanaryAnalysis
from opcd.errors import DeployFailed
from opcd.iam import unrecorded
from opcd.traffic import Step, Strategy
from tasks.analysis import Series, judge, mann_whitney_u, median, read_series, two_proportion_p
from tasks.bake import Bake, Guards
from tasks.cloudwatch import AlarmGuard
from tests.conftest import Project
from tests.tasks.conftest import logged

FUNCTION = "outreachpass-api-prod"  # as the sandbox seeds it from opcd.toml, with its alarm, OK
ALARM = "outreachpass-api-prod-errors"
SETTINGS = CanaryAnalysis(period=1, min_samples=50)


# --- the statistics, against values published for them -------------------------------------------------


def test_two_proportions_as_r_prop_test_without_continuity_correction() -> None:
    # R: prop.test(c(20, 10), c(100, 100), correct = FALSE) → X-squared = 3.9216, p-value = 0.04767 (two-sided)
    assert two_proportion_p(10, 100, 20, 100) == pytest.approx(0.04767 / 2, abs=1e-5)
    assert two_proportion_p(20, 100, 10, 100) == pytest.approx(1 - 0.04767 / 2, abs=1e-5)  # the new one is better
    assert two_proportion_p(0, 500, 0, 50) == 1.0 and two_proportion_p(0, 0, 3, 10) == 1.0


def test_mann_whitney_u_as_scipys_asymptotic_example() -> None:
    # scipy.stats.mannwhitneyu docs: males vs females, method="asymptotic" → U = 17, p = 0.11134688653314041
    # (two-sided, continuity corrected); the one-sided "greater" p-value is half of it.
    males, females = [19, 22, 16, 29, 24], [20, 11, 17, 12]
    u, p = mann_whitney_u(females, males)
    assert u == 17 and p == pytest.approx(0.11134688653314041 / 2, rel=1e-9)


def test_mann_whitney_u_with_ties_and_without_difference() -> None:
    # by hand: ranks of [2, 2, 3 | 1, 2, 3] → U(new) = 5.5, tie-corrected variance 2.25 * (7 - 30/30) ... p = 0.5
    u, p = mann_whitney_u([1.0, 2.0, 3.0], [2.0, 2.0, 3.0])
    assert u == 5.5 and 0.3 < p < 0.7
    assert mann_whitney_u([5.0] * 4, [5.0] * 4) == (8.0, 1.0)  # all tied: nothing can show
    assert mann_whitney_u([], [1.0]) == (0.0, 1.0)
    assert median([3.0, 1.0, 2.0]) == 2.0 and median([4.0, 1.0, 2.0, 3.0]) == 2.5


# --- verdicts on series ---------------------------------------------------------------------------------


def latencies(periods: int, factor: float = 1.0, shift: int = 0) -> list[float]:
    """Per-period p50s around 100 ms (80-119), spread deterministically; ``factor`` makes them slower."""
    return [round((100 + ((i * 7 + shift) % 40) - 20) * factor, 1) for i in range(periods)]


def test_a_slower_version_fails_on_latency_and_the_reason_has_the_numbers() -> None:
    old = Series("1", invocations=900, errors=1, p50=latencies(30), p99=latencies(30, 2.0))
    new = Series("2", invocations=100, errors=0, p50=latencies(30, 1.3), p99=latencies(30, 2.6))
    result = judge(SETTINGS, old, new)
    assert result.verdict == "fail"
    verdicts = {r.metric: r.verdict for r in result.results}
    assert verdicts == {"errors": "pass", "throttles": "pass", "p50 ms": "fail", "p99 ms": "fail"}
    assert result.reason.startswith(
        "version 2 is worse than version 1: p50 ms 99.0 (30 periods) → 128.7 (30 periods) (+30%, p="
    )
    assert result.rows()[0] == ["metric", "old (version 1)", "new (version 2)", "change", "p-value", "verdict"]
    assert "FAIL" in result.table() and result.markdown().startswith("| metric | old (version 1) |")


def test_an_equal_version_passes() -> None:
    old = Series("1", invocations=900, errors=3, p50=latencies(30), p99=latencies(30, 2.0))
    new = Series("2", invocations=100, errors=0, p50=latencies(30, shift=3), p99=latencies(30, 2.0, shift=5))
    result = judge(SETTINGS, old, new)
    assert (
        result.verdict == "pass"
        and result.reason == "version 2 is no worse than version 1 (errors, throttles, p50 ms, p99 ms)"
    )


def test_more_errors_fail_once_significant_and_beyond_the_allowed_increase() -> None:
    old = Series("1", invocations=1000, errors=20)
    settings = CanaryAnalysis(metrics=["errors"], min_samples=50)
    assert judge(settings, old, Series("2", invocations=200, errors=40)).verdict == "fail"  # 2% → 20%
    assert judge(settings, old, Series("2", invocations=200, errors=5)).verdict == "pass"  # +0.5 points: allowed
    unsure = judge(settings, old, Series("2", invocations=100, errors=4))  # +2 points, p = 0.096: not sure at 95%
    assert unsure.verdict == "inconclusive" and unsure.reason == "not significant yet: errors +2.00 pts"
    assert judge(settings.model_copy(update={"confidence": 0.9}), old, unsure.new).verdict == "fail"


def test_too_few_invocations_is_inconclusive_and_says_how_many() -> None:
    result = judge(SETTINGS, Series("1", invocations=400), Series("2", invocations=12, p50=[500.0]))
    assert result.verdict == "inconclusive" and result.results == []
    assert result.reason == "too few invocations to judge (version 2 12/50)"


# --- a bake judged on the sandbox's CloudWatch --------------------------------------------------------------


@pytest.fixture(autouse=True)
def _run_log(run_log: pytest.LogCaptureFixture) -> None:
    """The bake logs to its run logger: captured here (no run)."""


def target_of(project: Project) -> AwsTarget:
    return AwsTarget("sandbox", "us-east-1", project.endpoint, credentials=("testing", "testing"))


def publish(target: AwsTarget, start: datetime, version: str, per_second: int, durations: list[float]) -> None:
    """What Lambda publishes for ``version`` through ``live``: each second from ``start``, ``per_second``
    invocations taking about ``durations[second]`` ms (a spread of ±2 ms around it)."""
    from sandbox.server import lambda_metrics

    data: list[Any] = []
    for second, duration in enumerate(durations):
        for k in range(per_second):
            for point in lambda_metrics(FUNCTION, "live", version, duration + (k % 5) - 2, False):
                if len(point["Dimensions"]) == 3:  # under ExecutedVersion: what the analysis reads
                    data.append({**point, "Timestamp": start + timedelta(seconds=second, milliseconds=10 * k)})
    cloudwatch = target.client("cloudwatch")
    with unrecorded():  # the test's scene, not the product's calls
        for first in range(0, len(data), 1000):
            cloudwatch.put_metric_data(Namespace="AWS/Lambda", MetricData=data[first : first + 1000])


@pytest.fixture
def prod(project: Project) -> AwsTarget:
    """The sandbox seeded from opcd.toml: prod's backend function and its error alarm, OK."""
    return target_of(project)


class Slack:
    """Stands in for the deploy's Notifier: keeps what would be posted."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    def send(self, text: str, level: str = "info", facts: dict[str, str] | None = None) -> bool:
        self.sent.append((text, level))
        return True


def canary(target: AwsTarget, settings: CanaryAnalysis, started: datetime, slack: Slack | None = None) -> Bake:
    strategy = Strategy("canary10-0s", "canary", 10, 0.0)
    guards = Guards(AlarmGuard([ALARM]), analysis=settings)
    return Bake(
        target, FUNCTION, "1", "2", strategy, guards, 0.01, sleep=lambda _: None, started=started,
        notifier=slack,  # type: ignore[arg-type]
    )  # fmt: skip


def last_minute() -> datetime:
    return datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=45)


def test_a_version_30_percent_slower_fails_the_bake_while_the_alarms_are_ok(
    prod: AwsTarget, run_log: pytest.LogCaptureFixture
) -> None:
    started = last_minute()
    publish(prod, started, "1", 9, latencies(40))
    publish(prod, started, "2", 2, latencies(40, 1.3))
    slack = Slack()
    bake = canary(prod, SETTINGS, started, slack)

    with pytest.raises(DeployFailed) as caught:
        bake.bake(Step(10, 0.0), 1, 1)

    assert "canary analysis failed" in str(caught.value) and "p50 ms" in str(caught.value)
    [tick] = bake.log.ticks
    assert tick.guards["alarms"] == "OK" and tick.guards["analysis"].startswith(
        "fail: version 2 is worse than version 1"
    )
    analysis = bake.log.analysis
    assert analysis is not None and analysis["verdict"] == "fail"
    assert analysis["old"]["invocations"] == 360 and analysis["new"]["invocations"] == 80
    rows = {row[0]: row for row in analysis["table"]}
    assert rows["p50 ms"][3] == "+28%" and rows["p50 ms"][5] == "FAIL" and rows["errors"][5] == "pass"
    assert bake.log.ended == "guard-failed"
    [warning] = logged(run_log, logging.WARNING)
    lines = warning.splitlines()  # the verdict, then the table
    assert lines[0].startswith("Canary analysis ") and lines[1].split() == ["metric", "old", "(version", "1)", "new",
        "(version", "2)", "change", "p-value", "verdict"]  # fmt: skip
    assert any(line.startswith("p50 ms") and line.endswith("FAIL") for line in lines[2:])
    [(text, level)] = slack.sent  # Slack gets the verdict with the table in a code block
    assert level == "fail" and text.startswith("canary analysis ") and "\n```metric " in text and "FAIL" in text


def test_an_equal_version_passes_the_bake(prod: AwsTarget) -> None:
    started = last_minute()
    publish(prod, started, "1", 9, latencies(40))
    publish(prod, started, "2", 2, latencies(40, shift=11))
    bake = canary(prod, SETTINGS, started)

    assert bake.bake(Step(10, 0.0), 1, 1) == "baked"

    assert bake.log.analysis is not None and bake.log.analysis["verdict"] == "pass"
    assert bake.log.ticks[0].ok and bake.log.ticks[0].guards["alarms"] == "OK"


@pytest.mark.parametrize("on_inconclusive", ["pass", "fail"])
def test_too_few_samples_is_inconclusive_and_the_end_of_the_bake_follows_the_setting(
    prod: AwsTarget, on_inconclusive: str, run_log: pytest.LogCaptureFixture
) -> None:
    started = last_minute()
    publish(prod, started, "1", 9, latencies(10))
    publish(prod, started, "2", 1, latencies(10, 3.0))  # 10 invocations, far slower: still too few to judge
    settings = SETTINGS.model_copy(update={"on_inconclusive": on_inconclusive})
    bake = canary(prod, settings, started)

    if on_inconclusive == "fail":
        with pytest.raises(DeployFailed) as caught:
            bake.bake(Step(10, 0.0), 1, 1)
        assert str(caught.value) == (
            "bake guard failed at 10%: canary analysis inconclusive at the end of the bake (too few invocations"
            " to judge (version 2 10/50)) and analysis.on_inconclusive is fail"
        )
    else:
        assert bake.bake(Step(10, 0.0), 1, 1) == "baked"
        assert logged(run_log, logging.WARNING) == [
            "Canary analysis inconclusive at the end of the bake (too few invocations to judge (version 2 10/50)):"
            " passing, as analysis.on_inconclusive says"
        ]
    assert bake.log.analysis is not None and bake.log.analysis["verdict"] == "inconclusive"
    assert bake.log.analysis["on_inconclusive"] == on_inconclusive


def test_inconclusive_mid_bake_goes_on(prod: AwsTarget) -> None:
    bake = canary(prod, SETTINGS.model_copy(update={"on_inconclusive": "fail"}), last_minute())
    state, failure = bake.analyse(final=False)
    assert failure == "" and state == "inconclusive: too few invocations to judge (version 1 0/50, version 2 0/50)"


def test_reading_asks_for_each_version_under_lambdas_dimensions(prod: AwsTarget) -> None:
    started = last_minute()
    publish(prod, started, "1", 3, latencies(5))
    series = read_series(prod, FUNCTION, ["1", "2"], SETTINGS, started)
    assert series["1"].invocations == 15 and len(series["1"].p50) == 5 and series["2"] == Series("2")
