"""EventBridge rules whose one target is a function's ``live`` alias (never ``$LATEST``).

A rule is named ``{project}-{environment}-{rule}`` and tagged ``opcd:project``,
``opcd:environment`` and ``opcd:component``. Syncing is idempotent; it removes only rules that
carry all three of this component's tags and that the configuration no longer names.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from opcd.aws import AwsTarget, error_code
from opcd.config import EventRule
from opcd.progress import report

if TYPE_CHECKING:
    from types_boto3_events.type_defs import TargetTypeDef

TARGET_ID = "opcd-live"


def aws_rule_name(project: str, environment: str, rule: str) -> str:
    return f"{project}-{environment}-{rule}"


def statement_id(rule_name: str) -> str:
    return f"opcd-{rule_name}"[:100]


@dataclass
class RuleChanges:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = [f"{k} {', '.join(v)}" for k, v in vars(self).items() if v]
        return "; ".join(parts) or "no rules"


def _tags(project: str, environment: str, component: str) -> dict[str, str]:
    return {"opcd:project": project, "opcd:environment": environment, "opcd:component": component}


def _pattern(text: str | None) -> Any:
    return json.loads(text) if text else None


def _policy_statements(lam: Any, function: str) -> dict[str, dict[str, Any]]:
    try:
        policy = json.loads(lam.get_policy(FunctionName=function, Qualifier="live")["Policy"])
    except Exception as exc:
        if error_code(exc) == "ResourceNotFoundException":
            return {}
        raise
    return {s["Sid"]: s for s in policy.get("Statement", [])}


def _sync_one(
    target: AwsTarget, rule: EventRule, name: str, alias_arn: str, function: str, tags: dict[str, str],
    statements: dict[str, dict[str, Any]],
) -> str:  # fmt: skip
    """Create or update one rule, its target and its permission; return what happened."""
    events, lam = target.client("events"), target.client("lambda")
    wanted: dict[str, Any] = {"Name": name, "State": "ENABLED" if rule.enabled else "DISABLED"}
    wanted["Description"] = f"opcd: {tags['opcd:component']} in {tags['opcd:environment']}"
    if rule.schedule:
        wanted["ScheduleExpression"] = rule.schedule
    else:
        wanted["EventPattern"] = json.dumps(rule.event_pattern, sort_keys=True)
    try:
        current = events.describe_rule(Name=name)
    except Exception as exc:
        if error_code(exc) != "ResourceNotFoundException":
            raise
        current = None
    outcome = "unchanged"
    if current is None:
        arn = events.put_rule(**wanted, Tags=[{"Key": k, "Value": v} for k, v in tags.items()])["RuleArn"]
        outcome = "created"
    else:
        arn = current["Arn"]
        same = (
            current.get("ScheduleExpression") == wanted.get("ScheduleExpression")
            and _pattern(current.get("EventPattern")) == _pattern(wanted.get("EventPattern"))
            and current.get("State") == wanted["State"]
        )
        if not same:
            events.put_rule(**wanted)
            outcome = "updated"
    desired_target: TargetTypeDef = {"Id": TARGET_ID, "Arn": alias_arn}
    if rule.input is not None:
        desired_target["Input"] = json.dumps(rule.input, sort_keys=True)
    targets = events.list_targets_by_rule(Rule=name)["Targets"]
    if [{k: t.get(k) for k in desired_target} for t in targets] != [desired_target] or len(targets) != 1:
        extra = [t["Id"] for t in targets if t["Id"] != TARGET_ID]
        if extra:
            events.remove_targets(Rule=name, Ids=extra)
        events.put_targets(Rule=name, Targets=[desired_target])
        outcome = "updated" if outcome == "unchanged" else outcome
    sid = statement_id(name)
    statement = statements.get(sid)
    source = (statement or {}).get("Condition", {}).get("ArnLike", {}).get("AWS:SourceArn")
    if source != arn:
        if statement:
            lam.remove_permission(FunctionName=function, Qualifier="live", StatementId=sid)
        lam.add_permission(
            FunctionName=function, Qualifier="live", StatementId=sid, Action="lambda:InvokeFunction",
            Principal="events.amazonaws.com", SourceArn=arn,
        )  # fmt: skip
        outcome = "updated" if outcome == "unchanged" else outcome
    return outcome


@task(name="sync-event-rules", cache_policy=NO_CACHE)
def sync_event_rules(
    target: AwsTarget, project: str, environment: str, component: str, function: str, alias_arn: str,
    rules: list[EventRule],
) -> RuleChanges:  # fmt: skip
    """Make EventBridge match ``rules`` for this component; report what changed."""
    logger = get_run_logger()
    report("rules", f"EventBridge: {', '.join(r.name for r in rules) or 'none configured'}")
    events, lam = target.client("events"), target.client("lambda")
    tags = _tags(project, environment, component)
    statements = _policy_statements(lam, function)
    changes = RuleChanges()
    wanted = {aws_rule_name(project, environment, r.name): r for r in rules}
    for name, rule in wanted.items():
        getattr(changes, _sync_one(target, rule, name, alias_arn, function, tags, statements)).append(name)
    prefix = aws_rule_name(project, environment, "")
    for page in events.get_paginator("list_rules").paginate(NamePrefix=prefix):
        for existing in page["Rules"]:
            if existing["Name"] in wanted:
                continue
            found = events.list_tags_for_resource(ResourceARN=existing["Arn"])["Tags"]
            if {t["Key"]: t["Value"] for t in found if t["Key"] in tags} != tags:
                continue  # not created by opcd for this component: never touched
            name = existing["Name"]
            ids = [t["Id"] for t in events.list_targets_by_rule(Rule=name)["Targets"]]
            if ids:
                events.remove_targets(Rule=name, Ids=ids)
            events.delete_rule(Name=name)
            if statement_id(name) in statements:
                lam.remove_permission(FunctionName=function, Qualifier="live", StatementId=statement_id(name))
            changes.removed.append(name)
    if changes.created or changes.updated or changes.removed:
        logger.info("EventBridge rules: %s", changes.summary())
    else:
        logger.info("EventBridge rules: nothing to change (%s)", ", ".join(changes.unchanged) or "none configured")
    return changes


def describe_rules(target: AwsTarget, project: str, environment: str, rules: list[EventRule]) -> list[dict[str, Any]]:
    """What EventBridge holds for the configured rules (for ``opcd status``)."""
    events = target.client("events")
    found = []
    for rule in rules:
        name = aws_rule_name(project, environment, rule.name)
        try:
            info = events.describe_rule(Name=name)
            targets = [t["Arn"] for t in events.list_targets_by_rule(Rule=name)["Targets"]]
        except Exception as exc:
            if error_code(exc) != "ResourceNotFoundException":
                raise
            found.append({"name": name, "state": "MISSING", "trigger": rule.schedule or "event pattern", "targets": []})
            continue
        trigger = info.get("ScheduleExpression") or "event pattern"
        found.append({"name": name, "state": info.get("State"), "trigger": trigger, "targets": targets})
    return found
