"""CloudWatch alarms that guard a deploy."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from opcd.aws import AwsTarget
from opcd.errors import AlarmFiring, DeployFailed, InputError, ResourceMissing
from opcd.progress import report

if TYPE_CHECKING:
    from types_boto3_cloudwatch.type_defs import CompositeAlarmTypeDef, MetricAlarmTypeDef

# DescribeAlarms returns metric alarms alone unless asked
ALARM_TYPES: list[Literal["MetricAlarm", "CompositeAlarm"]] = ["MetricAlarm", "CompositeAlarm"]
NAMES_PER_CALL = 100  # the most AlarmNames one DescribeAlarms call takes


def describe_alarms(target: AwsTarget, names: list[str]) -> dict[str, MetricAlarmTypeDef | CompositeAlarmTypeDef]:
    """``{name: DescribeAlarms' entry}`` for each named alarm that exists, metric or composite."""
    found: dict[str, MetricAlarmTypeDef | CompositeAlarmTypeDef] = {}
    paginator = target.client("cloudwatch").get_paginator("describe_alarms")
    unique = list(dict.fromkeys(names))
    for start in range(0, len(unique), NAMES_PER_CALL):
        batch = unique[start : start + NAMES_PER_CALL]
        for page in paginator.paginate(AlarmNames=batch, AlarmTypes=ALARM_TYPES):
            for metric in page.get("MetricAlarms", []):
                found[metric["AlarmName"]] = metric
            for composite in page.get("CompositeAlarms", []):
                found[composite["AlarmName"]] = composite
    return found


def alarm_states(target: AwsTarget, names: list[str]) -> dict[str, tuple[str, str]]:
    """``{alarm: (state, reason)}`` for each named alarm; a missing alarm is an error."""
    if not names:
        return {}
    alarms = describe_alarms(target, names)
    found: dict[str, tuple[str, str]] = {
        name: (alarm["StateValue"], alarm.get("StateReason", "")) for name, alarm in alarms.items()
    }
    missing = [n for n in names if n not in found]
    if missing:
        raise ResourceMissing(
            f"CloudWatch alarm(s) {', '.join(missing)} do not exist in {target.region}",
            "create them (Terraform) or fix the environment's alarms in opcd.toml",
        )
    return found


def _describe(firing: dict[str, str]) -> str:
    return "; ".join(f"{n} ({reason})" if reason else n for n, reason in firing.items())


@dataclass
class AlarmGuard:
    """The environment's alarms, and which of them the person deploying accepted as already firing.

    An accepted alarm does not stop the deploy while it keeps firing; once it has been seen OK,
    it guards like any other (it cleared, so firing again is news).
    """

    names: list[str]
    accepted: set[str] = field(default_factory=set)
    cleared: set[str] = field(default_factory=set)

    @classmethod
    def preflight(
        cls, target: AwsTarget, names: list[str], accept: Iterable[str], environment: str, accept_firing: bool = False
    ) -> AlarmGuard:
        """Refuse when an alarm fires that ``accept`` does not name (``accept_firing``: none refused);
        remember the accepted ones."""
        accept = list(dict.fromkeys(accept))
        unknown = [a for a in accept if a not in names]
        if unknown:
            raise InputError(
                f"--accept-alarm {', '.join(unknown)}: not an alarm of environment {environment}",
                f"its alarms are: {', '.join(names) or 'none'}",
            )
        states = alarm_states(target, names)
        firing = {n: reason for n, (state, reason) in states.items() if state == "ALARM"}
        if accept_firing:
            accept += list(firing)
        refused = {n: r for n, r in firing.items() if n not in accept}
        if refused:
            flags = " ".join(f"--accept-alarm {n}" for n in refused)
            raise AlarmFiring(
                f"alarm firing in {environment}: {_describe(refused)}; a deploy now would be judged by it",
                f"if this deploy is the fix, accept it by name: {flags}",
            )
        return cls(names, accepted={n for n in accept if n in firing})

    def firing(self, target: AwsTarget) -> dict[str, str]:
        """Alarms that should stop the deploy now: ``{name: reason}``."""
        states = alarm_states(target, self.names)
        self.cleared |= {n for n, (state, _) in states.items() if state != "ALARM" and n in self.accepted}
        return {
            n: reason
            for n, (state, reason) in states.items()
            if state == "ALARM" and (n not in self.accepted or n in self.cleared)
        }

    def summary(self) -> str:
        held = sorted(self.accepted - self.cleared)
        return "OK" + (f" (accepted as firing: {', '.join(held)})" if held else "")


@task(name="check-alarms", cache_policy=NO_CACHE)
def check_alarms(target: AwsTarget, guard: AlarmGuard) -> list[str]:
    """Raise DeployFailed when a guarding alarm is in ALARM; return the names checked.

    No ``retries=``: it runs inside the shift's transaction, which a failed attempt rolls back;
    a retry that then passed would let the run go on as deployed with ``live`` rolled back.
    """
    report("alarms", ", ".join(guard.names) or "none configured")
    firing = guard.firing(target)
    if firing:
        raise DeployFailed(f"alarm firing: {_describe(firing)}")
    if guard.names:
        get_run_logger().info("Alarms %s: %s", guard.summary(), ", ".join(guard.names))
    return guard.names
