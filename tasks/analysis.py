"""Canary analysis: the new Lambda version against the old one, on the metrics Lambda publishes for both.

While a canary or linear bake splits ``live`` between two versions, Lambda publishes each alias
invocation's ``Invocations``, ``Errors``, ``Throttles`` and ``Duration`` under the dimensions
``FunctionName``, ``Resource`` (``function:live``) and ``ExecutedVersion``: the two versions serve
the same minutes of the same traffic. Every poll of the bake reads both from CloudWatch
(``GetMetricData``, one period of ``analysis.period`` per value) and, once each version has served
``min_samples`` invocations, judges every configured metric:

- ``errors``, ``throttles``: the rate of the new version against the old one's, with a one-sided
  two-proportion z-test; it fails when the new rate is higher by more than ``max_error_increase``
  and the test is sure of it at ``confidence``;
- ``p50``, ``p99`` of ``Duration``: the per-period values of the new version against the old one's
  with a one-sided Mann-Whitney U test (normal approximation, ties and continuity corrected), as
  Kayenta compares a canary with its baseline; it fails when the median of the new values is more
  than ``max_latency_increase`` above the old one's and the test is sure of it.

A metric whose difference is beyond its threshold but not (yet) significant is inconclusive; so is
everything before both versions have their samples. The statistics are the few lines below (no
scipy); tests/tasks/test_analysis.py checks them against published values.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from opcd.aws import AwsTarget
from opcd.config import CanaryAnalysis
from tasks.lambda_functions import ALIAS

if TYPE_CHECKING:
    from types_boto3_cloudwatch.type_defs import DimensionTypeDef, MetricDataQueryTypeDef, MetricStatTypeDef

Verdict = Literal["pass", "fail", "inconclusive"]
NAMESPACE = "AWS/Lambda"
LATENCY = ("p50", "p99")
RATES = {"errors": "Errors", "throttles": "Throttles"}


def normal_sf(z: float) -> float:
    """P(Z >= z) for a standard normal Z."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def two_proportion_p(old_hits: int, old_total: int, new_hits: int, new_total: int) -> float:
    """One-sided p-value of "the new rate is higher than the old one" (pooled z-test, no continuity correction).

    1.0 when the pooled rate is 0 or 1 (no difference can show) or a side has no trials.
    """
    if old_total <= 0 or new_total <= 0:
        return 1.0
    pooled = (old_hits + new_hits) / (old_total + new_total)
    spread = math.sqrt(pooled * (1 - pooled) * (1 / old_total + 1 / new_total))
    if spread == 0:
        return 1.0
    z = (new_hits / new_total - old_hits / old_total) / spread
    return normal_sf(z)


def _ranks(values: Sequence[float]) -> tuple[list[float], list[int]]:
    """Average ranks (1-based) of ``values``, and the sizes of their groups of ties."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    ties: list[int] = []
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for k in range(start, end + 1):
            ranks[order[k]] = (start + end) / 2 + 1
        ties.append(end - start + 1)
        start = end + 1
    return ranks, ties


def mann_whitney_u(old: Sequence[float], new: Sequence[float]) -> tuple[float, float]:
    """``(U of new, one-sided p-value of "new tends to be larger")``: normal approximation, tie and
    continuity corrected (scipy's ``mannwhitneyu(new, old, alternative="greater", method="asymptotic")``)."""
    n_old, n_new = len(old), len(new)
    if not n_old or not n_new:
        return 0.0, 1.0
    ranks, ties = _ranks([*new, *old])
    u = sum(ranks[:n_new]) - n_new * (n_new + 1) / 2
    n = n_old + n_new
    tie_term = sum(t**3 - t for t in ties) / (n * (n - 1)) if n > 1 else 0.0
    variance = n_old * n_new / 12 * ((n + 1) - tie_term)
    if variance <= 0:
        return u, 1.0
    z = (u - n_old * n_new / 2 - 0.5) / math.sqrt(variance)
    return u, normal_sf(z)


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


@dataclass(frozen=True)
class Series:
    """What one version did in the window: sums, and the per-period values of Duration's percentiles (ms)."""

    version: str
    invocations: int = 0
    errors: int = 0
    throttles: int = 0
    p50: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)

    def hits(self, metric: str) -> tuple[int, int]:
        """``(events, trials)`` of a rate metric: errors per invocation, throttles per request."""
        if metric == "errors":
            return self.errors, self.invocations
        return self.throttles, self.invocations + self.throttles


@dataclass(frozen=True)
class MetricResult:
    metric: str
    old: str
    new: str
    change: str
    p_value: float | None
    verdict: Verdict


@dataclass(frozen=True)
class Analysis:
    """One judgement of the new version against the old one, with the numbers behind it."""

    verdict: Verdict
    reason: str
    old: Series
    new: Series
    results: list[MetricResult] = field(default_factory=list)

    def rows(self) -> list[list[str]]:
        """The comparison table: a header, the invocations, then one row per metric judged."""
        old, new = f"old (version {self.old.version})", f"new (version {self.new.version})"
        header = ["metric", old, new, "change", "p-value", "verdict"]
        rows = [header, ["invocations", str(self.old.invocations), str(self.new.invocations), "", "", ""]]
        for r in self.results:
            p_value = "" if r.p_value is None else f"{r.p_value:.4f}"
            rows.append(
                [r.metric, r.old, r.new, r.change, p_value, r.verdict.upper() if r.verdict == "fail" else r.verdict]
            )
        return rows

    def table(self) -> str:
        """The table as aligned plain text (the run log, Slack's code block)."""
        rows = self.rows()
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows)

    def markdown(self) -> str:
        """The table in Markdown (the bake's progress artifact)."""
        return markdown_table(self.rows())

    def summary(self) -> str:
        return f"{self.verdict}: {self.reason}"

    def as_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "reason": self.reason, "table": self.rows(),
                "old": asdict(self.old), "new": asdict(self.new)}  # fmt: skip


def markdown_table(rows: list[list[str]]) -> str:
    """A header row and data rows as a Markdown table."""
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    return "\n".join(lines + ["| " + " | ".join(str(c).replace("|", "/") for c in row) + " |" for row in rows[1:]])


def _rate(hits: int, total: int) -> str:
    return f"{100 * hits / total:.2f}% ({hits}/{total})" if total else "- (0)"


def judge_rate(metric: str, settings: CanaryAnalysis, old: Series, new: Series) -> MetricResult:
    old_hits, old_total = old.hits(metric)
    new_hits, new_total = new.hits(metric)
    old_rate = old_hits / old_total if old_total else 0.0
    new_rate = new_hits / new_total if new_total else 0.0
    increase = new_rate - old_rate
    p_value = two_proportion_p(old_hits, old_total, new_hits, new_total)
    verdict: Verdict = "pass"
    if increase > settings.max_error_increase:
        verdict = "fail" if p_value < 1 - settings.confidence else "inconclusive"
    change = f"{100 * increase:+.2f} pts"
    return MetricResult(metric, _rate(old_hits, old_total), _rate(new_hits, new_total), change, p_value, verdict)


def judge_latency(metric: str, settings: CanaryAnalysis, old: Series, new: Series) -> MetricResult:
    old_values, new_values = getattr(old, metric), getattr(new, metric)
    if not old_values or not new_values:
        return MetricResult(f"{metric} ms", "-", "-", "", None, "inconclusive")
    old_median, new_median = median(old_values), median(new_values)
    increase = new_median / old_median - 1 if old_median > 0 else (0.0 if new_median <= 0 else math.inf)
    _, p_value = mann_whitney_u(old_values, new_values)
    verdict: Verdict = "pass"
    if increase > settings.max_latency_increase:
        verdict = "fail" if p_value < 1 - settings.confidence else "inconclusive"
    old_text, new_text = (f"{median(v):.1f} ({len(v)} periods)" for v in (old_values, new_values))
    return MetricResult(f"{metric} ms", old_text, new_text, f"{100 * increase:+.0f}%", p_value, verdict)


def judge(settings: CanaryAnalysis, old: Series, new: Series) -> Analysis:
    """Every configured metric judged, once both versions served ``min_samples`` invocations."""
    short = [s for s in (old, new) if s.invocations < settings.min_samples]
    if short:
        waiting = ", ".join(f"version {s.version} {s.invocations}/{settings.min_samples}" for s in short)
        return Analysis("inconclusive", f"too few invocations to judge ({waiting})", old, new)
    results = [
        judge_latency(m, settings, old, new) if m in LATENCY else judge_rate(m, settings, old, new)
        for m in settings.metrics
    ]
    failed = [r for r in results if r.verdict == "fail"]
    unsure = [r for r in results if r.verdict == "inconclusive"]
    if failed:
        words = "; ".join(f"{r.metric} {r.old} → {r.new} ({r.change}, p={r.p_value:.4f})" for r in failed)
        return Analysis(
            "fail", f"version {new.version} is worse than version {old.version}: {words}", old, new, results
        )
    if unsure:
        words = ", ".join(f"{r.metric} {r.change or 'no data'}" for r in unsure)
        return Analysis("inconclusive", f"not significant yet: {words}", old, new, results)
    names = ", ".join(r.metric for r in results)
    return Analysis(
        "pass", f"version {new.version} is no worse than version {old.version} ({names})", old, new, results
    )


def _query(qid: str, function: str, version: str, metric: str, stat: str, period: int) -> MetricDataQueryTypeDef:
    dimensions: list[DimensionTypeDef] = [
        {"Name": "FunctionName", "Value": function},
        {"Name": "Resource", "Value": f"{function}:{ALIAS}"},
        {"Name": "ExecutedVersion", "Value": version},
    ]
    stat_of: MetricStatTypeDef = {
        "Metric": {"Namespace": NAMESPACE, "MetricName": metric, "Dimensions": dimensions},
        "Period": period,
        "Stat": stat,
    }
    return {"Id": qid, "MetricStat": stat_of}


def window(start: datetime, now: datetime, period: float) -> tuple[datetime, datetime]:
    """``start`` down and ``now`` up to the period's boundaries: the window GetMetricData reads."""
    step = int(period)
    first = int(start.timestamp()) // step * step
    last = (int(now.timestamp()) // step + 1) * step
    return datetime.fromtimestamp(first, UTC), datetime.fromtimestamp(last, UTC)


def read_series(
    target: AwsTarget, function: str, versions: Sequence[str], settings: CanaryAnalysis, start: datetime,
    now: datetime | None = None,
) -> dict[str, Series]:  # fmt: skip
    """Each version's :class:`Series` through ``live`` since ``start`` (one GetMetricData, paginated)."""
    period = int(settings.period)
    wanted = [("invocations", "Invocations", "Sum")]
    wanted += [(m, RATES[m], "Sum") for m in settings.metrics if m in RATES]
    wanted += [(m, "Duration", m) for m in settings.metrics if m in LATENCY]
    queries = [
        _query(f"v{i}_{name}", function, version, metric, stat, period)
        for i, version in enumerate(versions)
        for name, metric, stat in wanted
    ]
    first, last = window(start, now or datetime.now(UTC), settings.period)
    values: dict[str, list[float]] = {q["Id"]: [] for q in queries}
    paginator = target.client("cloudwatch").get_paginator("get_metric_data")
    for page in paginator.paginate(MetricDataQueries=queries, StartTime=first, EndTime=last):
        for result in page["MetricDataResults"]:
            values[result["Id"]] += [float(v) for v in result.get("Values", [])]
    found: dict[str, Series] = {}
    for i, version in enumerate(versions):
        mine = {name: values[f"v{i}_{name}"] for name, _, _ in wanted}
        found[version] = Series(
            version,
            invocations=round(sum(mine["invocations"])),
            errors=round(sum(mine.get("errors", []))),
            throttles=round(sum(mine.get("throttles", []))),
            p50=mine.get("p50", []),
            p99=mine.get("p99", []),
        )
    return found


def analyse(
    target: AwsTarget, function: str, old: str, new: str, settings: CanaryAnalysis, start: datetime,
    now: datetime | None = None,
) -> Analysis:  # fmt: skip
    """Read both versions' metrics since ``start`` and judge the new one."""
    series = read_series(target, function, [old, new], settings, start, now)
    return judge(settings, series[old], series[new])
