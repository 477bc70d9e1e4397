"""CloudWatch alarms that guard a deploy."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from opcd.aws import AwsTarget
from opcd.errors import DeployFailed, ResourceMissing


def alarm_states(target: AwsTarget, names: list[str]) -> dict[str, tuple[str, str]]:
    """``{alarm: (state, reason)}`` for each named alarm; a missing alarm is an error."""
    if not names:
        return {}
    cw = target.client("cloudwatch")
    found: dict[str, tuple[str, str]] = {}
    for page in cw.get_paginator("describe_alarms").paginate(AlarmNames=names):
        for alarm in page["MetricAlarms"] + page.get("CompositeAlarms", []):
            found[alarm["AlarmName"]] = (alarm["StateValue"], alarm.get("StateReason", ""))
    missing = [n for n in names if n not in found]
    if missing:
        raise ResourceMissing(
            f"CloudWatch alarm(s) {', '.join(missing)} do not exist in {target.region}",
            "create them (Terraform) or fix the environment's alarms in opcd.toml",
        )
    return found


@task(name="check-alarms", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[1, 3])
def check_alarms(target: AwsTarget, names: list[str]) -> list[str]:
    """Raise DeployFailed when any named alarm is in ALARM; return the names checked."""
    states = alarm_states(target, names)
    firing = {n: reason for n, (state, reason) in states.items() if state == "ALARM"}
    if firing:
        detail = "; ".join(f"{n} ({reason})" if reason else n for n, reason in firing.items())
        raise DeployFailed(f"alarm firing: {detail}")
    if names:
        get_run_logger().info("Alarms OK: %s", ", ".join(names))
    return names
