"""``opcd history``: every deploy, rollback, release and load test the ledger keeps, newest first.

Read from the artifact bucket as each environment's role reads it: ``ledger/{env}/{component}/``
(one entry per run: a run's ``shifting`` record and its outcome are one entry),
``ledger/releases/`` and ``ledger/load-tests/{env}/{component}/``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

from opcd.aws import AwsTarget, target_for
from opcd.config import Config, load_config, where
from opcd.errors import InputError
from tasks.ledger import PREFIX, ledger_prefix, parse_time, read_documents, seconds_between
from tasks.notify import flow_run_url

MAX_LIMIT = 1000


def _stamp(key: str) -> str | None:
    """The time a ledger key names (``…/20260130T031500.123456Z-abcd1234.json``), ISO 8601."""
    stamp = key.rsplit("/", 1)[-1].split("-", 1)[0]
    try:
        return datetime.strptime(stamp, "%Y%m%dT%H%M%S.%fZ").strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    except ValueError:
        return None


def _seconds(started: Any, finished: Any) -> float | None:
    seconds = seconds_between(started, finished)
    return None if seconds is None else round(seconds, 1)


def analysis_verdict(record: dict[str, Any]) -> str | None:
    """The canary analysis's verdict a record carries (``analysis``, or its bake's), if any."""
    found = record.get("analysis") or (record.get("bake") or {}).get("analysis")
    if isinstance(found, dict):
        found = found.get("verdict") or found.get("result") or found.get("outcome")
    return str(found) if found else None


def _entry(kind: str, key: str, record: dict[str, Any], **fields: Any) -> dict[str, Any]:
    run, environment = record.get("flow_run_id"), record.get("environment")
    if isinstance(environment, str):  # an environment of several regions: its region too (``prod us-west-2``)
        environment = where(environment, record.get("region"))
    entry = {
        "when": record.get("finished_at") or _stamp(key), "started_at": record.get("started_at"), "kind": kind,
        "component": record.get("component"), "environment": environment,
        "version": record.get("version"), "outcome": record.get("outcome"), "by": record.get("actor"),
        "seconds": _seconds(record.get("started_at"), record.get("finished_at")),
        "flow_run_id": run, "flow_run_name": record.get("flow_run_name"),
        "url": flow_run_url(str(run)) if run else None, "analysis": analysis_verdict(record),
        "detail": record.get("reason"), "key": key,
    }  # fmt: skip
    return {**entry, **fields}


def _runs(documents: Iterator[tuple[str, dict[str, Any]]], limit: int) -> list[dict[str, Any]]:
    """One entry per run (newest first) from one component's records in one environment, at most ``limit``."""
    entries: list[dict[str, Any]] = []
    for key, record in documents:
        last = entries[-1] if entries else None
        run, action = record.get("flow_run_id"), record.get("action")
        if action not in ("deploy", "rollback", "build") or not record.get("outcome"):
            continue  # not a record of a run (written by hand, or by something else)
        if last and run and last["flow_run_id"] == run and last["kind"] == action:  # the same run's earlier record
            last["started_at"] = record.get("started_at") or last["started_at"]
            last["seconds"] = _seconds(last["started_at"], last["when"])
            continue
        if len(entries) == limit:
            break
        entries.append(_entry(str(action), key, record))
    return entries


def _load_tests(documents: Iterator[tuple[str, dict[str, Any]]], limit: int) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    for key, record in documents:
        if len(entries) == limit:
            break
        line = f"p50 {record.get('p50_ms')} ms, p95 {record.get('p95_ms')} ms, p99 {record.get('p99_ms')} ms"
        detail = f"{line}, {record.get('error_rate', 0):.1%} errors: {record.get('reason')}"
        entries.append(_entry("load-test", key, record, outcome=record.get("verdict"), detail=detail))
    return entries


def _releases(
    targets: list[AwsTarget], bucket: str, environment: str | None, component: str | None, limit: int
) -> list[dict[str, Any]]:
    """The releases that went to ``environment`` and included ``component`` (when given), newest first."""
    entries: list[dict[str, Any]] = []
    seen: set[str] = set()
    for target in dict.fromkeys(targets):  # a release is kept as the role of its last environment
        found = 0
        for key, summary in read_documents(target, bucket, f"{PREFIX}/releases/"):
            if found == limit:
                break
            if key in seen:
                continue
            seen.add(key)
            if (component and component not in summary.get("components", [])) or (
                environment and environment not in summary.get("environments", [])
            ):
                continue
            found += 1
            when, seconds = _stamp(key), summary.get("seconds")
            end = parse_time(when)
            started = end - timedelta(seconds=float(seconds)) if end and seconds is not None else None
            entries.append(_entry("release", key, summary, **{
                "when": when, "started_at": started.strftime("%Y-%m-%dT%H:%M:%S.%fZ") if started else None,
                "component": ", ".join(summary.get("components", [])) or "-",
                "environment": " → ".join(summary.get("environments", [])), "seconds": seconds,
                "detail": summary.get("detail"),
            }))  # fmt: skip
    return entries


def history_entries(config: Config, component: str | None, environment: str | None, limit: int) -> list[dict[str, Any]]:
    """The newest ``limit`` entries (deploys, rollbacks, builds, releases, load tests), newest first."""
    if component:
        config.component(component)
    if environment:
        config.environment(environment)
    if not 1 <= limit <= MAX_LIMIT:
        raise InputError(f"--limit {limit}: expected 1 to {MAX_LIMIT}", "e.g. --limit 20")
    bucket = config.project.artifact_bucket
    envs = [environment] if environment else list(config.environments)
    components = [component] if component else list(config.components)
    targets = [target_for(config, env) for env in envs]
    entries = _releases(targets, bucket, environment, component, limit)
    for env, target in zip(envs, targets, strict=True):
        for name in components:
            entries += _load_tests(read_documents(target, bucket, f"{PREFIX}/load-tests/{env}/{name}/"), limit)
            for key in config.region_keys(env):  # each region's runs, from its own bucket (several: by region)
                runs = read_documents(
                    target_for(config, env, key), config.bucket_for(env, key), ledger_prefix(env, name, key) + "/"
                )  # fmt: skip
                entries += _runs(runs, limit)
    entries.sort(key=lambda e: str(e["when"] or ""), reverse=True)
    return entries[:limit]


def _took(seconds: Any) -> str:
    if seconds is None:
        return "-"
    seconds = float(seconds)
    return f"{seconds:.0f} s" if seconds < 90 else f"{int(seconds // 60)} min {int(seconds % 60)} s"


def cmd_history(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    entries = history_entries(config, args.component, args.environment, args.limit)
    if args.json:
        print(json.dumps(entries, indent=2))
        return 0
    if not entries:
        print("nothing recorded" + (f" for {args.component}" if args.component else "") + " in the ledger")
        return 0
    header = ("WHEN", "WHAT", "COMPONENT", "ENV", "VERSION", "OUTCOME", "BY", "TOOK", "ANALYSIS", "RUN")
    table = [header] + [
        (
            str(e["when"] or "-")[:19].replace("T", " "), e["kind"], e["component"] or "-", e["environment"] or "-",
            e["version"] or "-", e["outcome"] or "-", e["by"] or "-", _took(e["seconds"]), e["analysis"] or "-",
            e["url"] or e["flow_run_name"] or "-",
        )
        for e in entries
    ]  # fmt: skip
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {"history": cmd_history}
