"""``opcd status`` (what is live where: its rows and its table) and ``opcd health``."""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from cli.common import print_target
from flows.ecs_deploy import status_row
from opcd.aws import resolve_target
from opcd.config import Config, HealthCheck, load_config
from opcd.errors import ConfigError, InputError
from opcd.outcomes import Outcome
from tasks.apprunner import find_service, read_service
from tasks.ecr import describe_repository, tag_digest
from tasks.eventbridge import describe_rules
from tasks.health import wait_healthy
from tasks.images import version_of
from tasks.lambda_functions import read_live
from tasks.ledger import read_latest


def status_rows(config: Config, target: Any, environment: str | None) -> list[dict[str, Any]]:
    envs = [environment] if environment else list(config.environments)
    rows = []
    for env_name in envs:
        env = config.environment(env_name)
        if len(config.regions(env_name)) > 1:  # Lambda and ECS components (App Runner is refused there)
            rows += [row for region in config.regions(env_name) for row in region_rows(config, env_name, region)]
            continue
        rows += lambda_rows(config, target, env_name)
        rows += [service_row(config, target, env_name, comp, ref) for comp, ref in env.services.items()]
        rows += [status_row(config, target, env_name, comp) for comp in env.ecs]
    return rows


def region_rows(config: Config, environment: str, region: str) -> list[dict[str, Any]]:
    """The rows of one region of an environment of several: each read in its region, from its ledger."""
    target = resolve_target(config.state_dir(), region, pinned=True)
    rows = lambda_rows(config, target, environment, region)
    rows += [status_row(config, target, environment, comp, region) for comp in config.environment(environment).ecs]
    return [{**row, "region": region} for row in rows]


def lambda_rows(config: Config, target: Any, env_name: str, region: str | None = None) -> list[dict[str, Any]]:
    """Each Lambda component's row in ``env_name`` (its ``region`` of several): live, the ledger's view, rules."""
    rows = []
    bucket = config.bucket_for(env_name, region)
    for comp in config.environment(env_name).functions:
        function = config.function_name(comp, env_name, region)
        live = read_live(target, function)
        latest = read_latest(target, bucket, env_name, comp, region=region)
        deployed = read_latest(target, bucket, env_name, comp, "live.json", region=region)
        recorded = deployed.live_lambda_version if deployed else None
        rows.append({
                "component": comp, "environment": env_name, "function": function,
                "version": live.app_version, "lambda_version": live.lambda_version,
                "split": live.weights or None,
                "deployed_at": deployed and deployed.finished_at, "flow_run": deployed and deployed.flow_run_name,
                "flow_run_id": deployed and deployed.flow_run_id, "last_outcome": latest and latest.outcome,
                "last_run": latest and latest.flow_run_name,
                "drift": bool(recorded and recorded != live.lambda_version),
                "rules": describe_rules(target, config.project.name, env_name, config.lambda_component(comp).rules),
            })  # fmt: skip
    return rows


def service_row(config: Config, target: Any, env_name: str, comp: str, ref: str) -> dict[str, Any]:
    """One App Runner component's row: the image it runs (tag and digest) and the ledger's view."""

    service = read_service(target, find_service(target, ref))
    repository = config.apprunner_component(comp).repository
    tag = describe_repository(target, repository).tag_of(service.image)
    digest = tag_digest(target, repository, tag) if tag else None
    latest = read_latest(target, config.project.artifact_bucket, env_name, comp)
    deployed = read_latest(target, config.project.artifact_bucket, env_name, comp, "live.json")
    recorded = deployed.live_image if deployed else None
    return {
        "component": comp, "environment": env_name, "service": service.name, "service_status": service.status,
        "version": version_of(tag), "image": service.image, "image_digest": digest, "lambda_version": None,
        "split": None,
        "deployed_at": deployed and deployed.finished_at, "flow_run": deployed and deployed.flow_run_name,
        "flow_run_id": deployed and deployed.flow_run_id, "last_outcome": latest and latest.outcome,
        "last_run": latest and latest.flow_run_name, "drift": bool(recorded and recorded != service.image), "rules": [],
    }  # fmt: skip


def _runs_on(row: dict[str, Any]) -> str:
    """Lambda version number, or the image digest (short) and the service's status when not RUNNING."""
    if row.get("image") is None:
        return str(row["lambda_version"])
    if row.get("revision"):  # ECS: the task definition revision and its tasks
        busy = "" if row["service_status"] == "RUNNING" else f", {row['service_status']}"
        return f"{row['revision']} ({row['running']}/{row['desired']} running{busy})"
    digest = (row["image_digest"] or "-")[:19]
    return digest + ("" if row["service_status"] == "RUNNING" else f" ({row['service_status']})")


def _split_text(row: dict[str, Any]) -> str:
    """``25% on 3`` and what it means: a bake in progress, or a shift that died."""
    parts = ", ".join(f"{w * 100:g}% on {v}" for v, w in row["split"].items())
    running = row["last_outcome"] is Outcome.SHIFTING
    why = "a bake is running, or its run died" if running else "a shift died or someone split it"
    return f"{parts} ({why}; the next deploy moves it back to {row['lambda_version']} first)"


def cmd_status(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if args.environment:
        config.environment(args.environment)
    if args.json:
        target = resolve_target(config.state_dir(), config.project.region)
        print(json.dumps(status_rows(config, target, args.environment), indent=2))
        return 0
    target = print_target(config)
    rows = status_rows(config, target, args.environment)
    regional = any(r.get("region") for r in rows)  # a REGION column when an environment has several
    header = ("COMPONENT", "ENV", *("REGION",) * regional, "LIVE", "REVISION", "DEPLOYED AT", "BY RUN", "LAST RUN")
    table = [header] + [
        (
            r["component"], r["environment"], *(r.get("region") or "-",) * regional, r["version"] or "-", _runs_on(r),
            (r["deployed_at"] or "-")[:19], r["flow_run"] or "-",
            (f"{r['last_run']}: {r['last_outcome']}" if r["last_outcome"] else "-")
            + (" DRIFT: ledger disagrees with live" if r["drift"] else "")
            + (" SPLIT: " + _split_text(r) if r["split"] else ""),
        )
        for r in rows
    ]  # fmt: skip
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    print("  ".join(str(cell).ljust(width) for cell, width in zip(header, widths, strict=True)).rstrip())
    for row, data in zip(table[1:], rows, strict=True):
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
        if data.get("image"):
            print(f"    image {data['image']}  {data['image_digest'] or ''}".rstrip())
        for rule in data["rules"]:
            targets = ", ".join(t.rsplit(":", 1)[-1] for t in rule["targets"]) or "no target"
            print(f"    rule {rule['name']}  {rule['trigger']}  {rule['state']}  → {targets}")
    return 0


def cmd_health(args: argparse.Namespace) -> int:
    url = args.url
    with contextlib.suppress(ConfigError):  # without an opcd.toml the URL is checked as given
        config = load_config(args.config)
        url = resolve_target(config.state_dir(), config.project.region).resolve_url(url)
    try:
        settings = HealthCheck(
            successes=args.successes, attempts=args.attempts, interval=args.interval, timeout=args.timeout
        )
    except ValidationError as exc:
        problem = exc.errors()[0]
        raise InputError(f"--{problem['loc'][0]}: {problem['msg']}", "see `opcd health --help`") from None
    if url != args.url:
        print(f"checking {args.url} (served by the sandbox at {url})")
    report = wait_healthy(
        url,
        settings,
        args.expect_version,
        on_probe=lambda p: print(f"  {'ok  ' if p.ok else 'FAIL'} {p.detail}", flush=True),
    )
    report.url = args.url
    print(report.summary())
    return 0 if report.healthy else 1


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {"status": cmd_status, "health": cmd_health}
