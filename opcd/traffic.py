"""Traffic strategies: how ``live`` moves from the old version to the new one.

``all-at-once``; ``canaryP-D``: P% to the new version for D, then all; ``linearP-D``: P% more
every D until all. D is a duration (``5m``, ``90s``, ``1h``), so ``canary10-5m`` and
``linear10-1m`` read as CodeDeploy's presets do. Weights go on the ``live`` alias's
``RoutingConfig.AdditionalVersionWeights`` (AWS accepts 0.0–1.0 there and moto anything, so a
split step is checked here: 1–99%; the last step moves the alias's primary version instead).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_STRATEGY = re.compile(
    r"(?P<kind>canary|linear)(?P<percent>[0-9]+)-(?P<amount>[0-9]+(?:\.[0-9]+)?)(?P<unit>ms|s|m|h)", re.ASCII
)
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
EXAMPLES = "all-at-once, canaryP-Dm or linearP-Dm (e.g. canary10-5m, linear10-1m)"


@dataclass(frozen=True)
class Step:
    """One position of the split: ``percent`` of traffic on the new version, held for ``bake`` seconds."""

    percent: int
    bake: float


@dataclass(frozen=True)
class Strategy:
    name: str
    kind: str  # all-at-once | canary | linear
    percent: int = 100
    interval: float = 0.0

    @property
    def gradual(self) -> bool:
        return self.kind != "all-at-once"

    def steps(self) -> list[Step]:
        """The split positions before all traffic moves; the final 100% is not a step of the bake."""
        if self.kind == "canary":
            return [Step(self.percent, self.interval)]
        if self.kind == "linear":
            return [Step(p, self.interval) for p in range(self.percent, 100, self.percent)]
        return []

    @property
    def total_bake(self) -> float:
        return sum(step.bake for step in self.steps())

    def describe(self) -> str:
        if self.kind == "all-at-once":
            return "all at once"
        points = " → ".join(f"{s.percent}%" for s in self.steps())
        return f"{self.name}: {points} → 100%, {human_duration(self.interval)} per step"


def human_duration(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g}m"
    return f"{seconds:g}s"


def parse_strategy(value: str) -> Strategy:
    """``"canary10-5m"`` → Strategy; ValueError with what is allowed otherwise."""
    if value == "all-at-once":
        return Strategy(value, "all-at-once")
    match = _STRATEGY.fullmatch(value)
    if not match:
        raise ValueError(f"{value!r} is not a traffic strategy: use {EXAMPLES}")
    percent = int(match["percent"])
    if not 1 <= percent <= 99:
        raise ValueError(
            f"{value!r}: the percentage must be 1–99 (every strategy ends at 100%);"
            " for everything at once use 'all-at-once'"
        )
    interval = float(match["amount"]) * _UNITS[match["unit"]]
    if interval <= 0:
        raise ValueError(f"{value!r}: the bake time must be more than 0")
    if interval > 24 * 3600:
        raise ValueError(f"{value!r}: a bake step longer than 24h is not supported")
    return Strategy(value, match["kind"], percent, interval)
