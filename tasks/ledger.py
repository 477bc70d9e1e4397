"""The ledger: what ran where, kept in the artifact bucket and shown as a Prefect artifact.

``ledger/{environment}/{component}/{time}-{run}.json`` holds one record per outcome;
``ledger/{environment}/{component}/latest.json`` repeats the newest one, and ``live.json`` the
newest that put a version live (a deploy or rollback that succeeded).
"""

from __future__ import annotations

import getpass
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import field
from datetime import UTC, datetime
from typing import Any, Literal

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext
from prefect.logging import get_run_logger
from pydantic import ConfigDict, TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass

from opcd.aws import AwsTarget, error_code, target_for
from opcd.config import Config, where
from opcd.errors import ConfigError
from opcd.outcomes import Outcome, Stage
from tasks.analysis import markdown_table

PREFIX = "ledger"


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(value: Any) -> datetime | None:
    """A time as the ledger (:func:`now`) or Prefect's API writes it (ISO 8601, ``Z`` or an offset); None for
    anything else."""
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def seconds_between(started: Any, finished: Any) -> float | None:
    """How long from ``started`` to ``finished`` (times as :func:`parse_time` reads them), when both are known."""
    start, end = parse_time(started), parse_time(finished)
    return (end - start).total_seconds() if start and end else None


def actor() -> str:
    """Who started the run: ``OPCD_ACTOR`` (set by CI), else the local user."""
    try:
        return os.environ.get("OPCD_ACTOR") or getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


Action = Literal["deploy", "rollback", "build"]  # build: a release's build step that failed


@dataclass(config=ConfigDict(extra="ignore"))
class Record:
    """One ledger record: written by :func:`record_in_ledger`, read back by :func:`read_latest` and
    :func:`read_history` through the same model (fields it does not know, from other versions, are ignored)."""

    component: str
    environment: str
    action: Action
    outcome: Outcome
    version: str | None
    live_version: str | None = None
    live_lambda_version: str | None = None
    lambda_version: str | None = None
    previous_version: str | None = None
    previous_lambda_version: str | None = None
    reason: str | None = None
    step: Stage | None = None  # the step a run failed at before it changed anything
    git_sha: str | None = None
    sha256: str | None = None
    artifact: str | None = None  # built | reused
    rules: str | None = None  # what syncing EventBridge rules changed
    traffic: str | None = None  # the strategy that moved live (all-at-once, canary10-5m, ...)
    bake: dict[str, Any] | None = None  # steps, guard polls and how a canary/linear bake ended
    accepted_alarms: list[str] = field(default_factory=list)  # firing at the start, accepted by name
    repaired: str | None = None  # a split alias found at the start and moved back to its primary
    force: bool = False  # a rollback told to go to a version the ledger never saw live (--force)
    notify_failures: list[str] = field(default_factory=list)  # Slack messages that could not be delivered
    steps: list[str] = field(default_factory=list)  # the plan's steps the run ran, in order (its Step.action)
    # App Runner components: image identifiers (repository URI:tag) and the digests ECR gives them
    image: str | None = None  # what this run deployed
    image_digest: str | None = None
    previous_image: str | None = None  # what ran before: the rollback target
    live_image: str | None = None  # what runs at the end of the run
    live_image_digest: str | None = None
    # ECS components: task definition revisions (ARNs); the images above are the container's, by digest
    task_definition: str | None = None  # what this run deployed
    previous_task_definition: str | None = None  # what ran before: the rollback target
    live_task_definition: str | None = None  # what runs at the end of the run
    flow_run_id: str | None = None
    flow_run_name: str | None = None
    actor: str = field(default_factory=actor)
    started_at: str = field(default_factory=now)
    finished_at: str | None = None
    region: str | None = None  # the region of an environment of several regions (else None: not in the record)

    @property
    def where(self) -> str:
        """``prod``, or ``prod us-west-2`` in an environment of several regions."""
        return where(self.environment, self.region)

    def attach_flow_run(self) -> None:
        ctx = FlowRunContext.get()
        if ctx and ctx.flow_run:
            self.flow_run_id = str(ctx.flow_run.id)
            self.flow_run_name = ctx.flow_run.name


_log = logging.getLogger("opcd.ledger")
_RECORD = TypeAdapter(Record)


def ledger_prefix(environment: str, component: str, region: str | None = None) -> str:
    """``ledger/ENV/COMPONENT``; ``ledger/ENV/REGION/COMPONENT`` in an environment of several regions."""
    return f"{PREFIX}/{environment}/{region}/{component}" if region else f"{PREFIX}/{environment}/{component}"


def _document(record: Record) -> bytes:
    data = _RECORD.dump_python(record, mode="json")
    if data["region"] is None:  # an environment of one region: its records as they always were
        del data["region"]
    return json.dumps(data, indent=2, sort_keys=True).encode()


@task(name="record-in-ledger", cache_policy=NO_CACHE, retries=3, retry_delay_seconds=[1, 3, 10])
def record_in_ledger(target: AwsTarget, bucket: str, record: Record, latest: bool = True) -> str:
    """The record under its own key; also as ``latest.json`` unless ``latest`` is False (a run that
    does not hold the component's lock leaves ``latest.json`` to the run that does)."""
    record.finished_at = record.finished_at or now()
    s3 = target.client("s3")
    body = _document(record)
    stamp = record.finished_at.replace(":", "").replace("-", "")
    prefix = ledger_prefix(record.environment, record.component, record.region)
    key = f"{prefix}/{stamp}-{(record.flow_run_id or 'local')[:8]}.json"
    s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/json")
    put_live = record.outcome is Outcome.DEPLOYED
    for name in ("latest.json", "live.json") if put_live else ("latest.json",) if latest else ():
        s3.put_object(
            Bucket=bucket, Key=f"{prefix}/{name}", Body=body,
            ContentType="application/json",
        )  # fmt: skip
    get_run_logger().info("Ledger: %s %s %s → %s", record.where, record.component, record.action, record.outcome)
    return key


def live_record(
    config: Config, environment: str, component: str, region: str | None = None, target: AwsTarget | None = None
) -> Record | None:
    """The ledger's ``live.json`` of ``component`` in ``environment`` (its ``region``: a region key), read as the
    environment's role (``target``: that target, already made)."""
    target = target or target_for(config, environment, region)
    return read_latest(target, config.bucket_for(environment, region), environment, component, "live.json", region)


def read_latest(
    target: AwsTarget,
    bucket: str,
    environment: str,
    component: str,
    name: str = "latest.json",
    region: str | None = None,
) -> Record | None:
    """The newest record (``live.json``: the newest that put a version live), or None."""
    key = f"{ledger_prefix(environment, component, region)}/{name}"
    try:
        body = target.client("s3").get_object(Bucket=bucket, Key=key)
    except Exception as exc:
        if error_code(exc) in ("NoSuchKey", "NoSuchBucket", "404"):
            return None
        raise
    try:
        return _RECORD.validate_json(body["Body"].read())
    except ValidationError as exc:  # refuse to guess what a record this opcd cannot read says
        raise ConfigError(
            f"ledger record s3://{bucket}/{key} cannot be read: {_first_error(exc)}",
            "it was written by another version of opcd or edited by hand: upgrade opcd, or move the record aside",
        ) from None


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    return f"{'.'.join(str(p) for p in error['loc']) or 'record'}: {error['msg']}"


def read_history(
    target: AwsTarget, bucket: str, environment: str, component: str, region: str | None = None
) -> list[Record]:
    """Every record for one component in one environment (its ``region``, in one of several), oldest first."""
    s3 = target.client("s3")
    keys: list[str] = []
    try:
        for page in s3.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=ledger_prefix(environment, component, region) + "/"
        ):
            keys += [
                o["Key"] for o in page.get("Contents", []) if not o["Key"].endswith(("/latest.json", "/live.json"))
            ]
    except Exception as exc:
        if error_code(exc) == "NoSuchBucket":
            return []
        raise
    records = []
    for key in sorted(keys):
        try:
            records.append(_RECORD.validate_json(s3.get_object(Bucket=bucket, Key=key)["Body"].read()))
        except ValidationError as exc:  # one unreadable record leaves the others usable; it counts as not seen
            _log.warning("ledger record s3://%s/%s skipped, it cannot be read: %s", bucket, key, _first_error(exc))
    return records


_COPIES = ("/latest.json", "/live.json")


def read_documents(target: AwsTarget, bucket: str, prefix: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(key, JSON document) of every ledger document under ``prefix``, newest first, read as they are used.

    Keys name the time a document was written (``…/{time}-{run}.json``), so the newest come first;
    ``latest.json`` and ``live.json`` (copies) are left out, and so is a document that is not JSON.
    Every field is kept, also those this version's :class:`Record` does not know.
    """
    s3 = target.client("s3")
    keys: list[str] = []
    try:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            keys += [o["Key"] for o in page.get("Contents", []) if not o["Key"].endswith(_COPIES)]
    except Exception as exc:
        if error_code(exc) == "NoSuchBucket":
            return
        raise
    for key in sorted(keys, key=lambda k: k.rsplit("/", 1)[-1], reverse=True):
        try:
            document = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        except ValueError:
            _log.warning("ledger document s3://%s/%s skipped: not JSON", bucket, key)
            continue
        if isinstance(document, dict):
            yield key, document


LiveField = Literal["live_version", "live_lambda_version", "live_image", "live_task_definition"]
PreviousField = Literal["previous_version", "previous_lambda_version", "previous_image", "previous_task_definition"]


def seen_live(
    records: list[Record], live: LiveField = "live_version", previous: PreviousField = "previous_version"
) -> list[str]:
    """What these records saw live, oldest first: ``previous`` of each deploy or rollback that read it
    live and ended knowing it (deployed, noop, rolled-back: not rollback-failed, whose live state is
    unknown) and ``live`` of each deploy or rollback that put it live. Use ``live_lambda_version``
    and ``previous_lambda_version`` for Lambda versions, ``live_image`` and ``previous_image`` for images.
    """
    seen: dict[str, None] = {}
    for record in (r for r in records if r.action in ("deploy", "rollback")):
        if record.outcome.saw_previous_live and (value := getattr(record, previous)):
            seen[str(value)] = None
        if record.outcome is Outcome.DEPLOYED and (value := getattr(record, live)):
            seen[str(value)] = None
    return list(seen)


def _bake_line(bake: dict[str, Any] | None) -> str:
    if not bake:
        return "-"
    steps = " → ".join(f"{s['percent']}%" for s in bake.get("steps", []))
    detail = f" ({bake['detail']})" if bake.get("detail") else ""
    return f"{steps or 'no step'}: {bake.get('ended')}{detail}, {len(bake.get('ticks', []))} guard polls"


def markdown(record: Record) -> str:
    if record.image or record.live_image:
        live = f"{record.live_version or '?'} ({record.live_image or '?'}, {record.live_image_digest or '?'})"
        previous = f"{record.previous_version or '?'} ({record.previous_image or '?'})"
    else:
        live = f"{record.live_version or '?'} (Lambda version {record.live_lambda_version or '?'})"
        previous = f"{record.previous_version or '?'} (Lambda version {record.previous_lambda_version or '?'})"
    rows = [
        ("Outcome", record.outcome), ("Action", record.action), ("Version", record.version or "-"),
        ("Live now", live), ("Previous", previous),
        ("Reason", record.reason or "-"), ("Traffic", record.traffic or "-"),
        ("Bake", _bake_line(record.bake)), ("Accepted alarms", ", ".join(record.accepted_alarms) or "-"),
        ("Repaired", record.repaired or "-"),
        ("Git sha", record.git_sha or "-"), ("sha256", record.sha256 or record.image_digest or "-"),
        ("Actor", record.actor), ("Started", record.started_at), ("Finished", record.finished_at or "-"),
    ]  # fmt: skip
    table = "\n".join(f"| {k} | {str(v).replace('|', '/')} |" for k, v in rows)
    return (
        f"## {record.action} {record.component} → {record.environment}: {record.outcome}\n\n| | |\n|---|---|\n{table}\n"
        + _analysis_table(record.bake)
    )


def _analysis_table(bake: dict[str, Any] | None) -> str:
    """The bake's last canary analysis: its verdict and the comparison table (tasks.analysis)."""
    analysis = (bake or {}).get("analysis")
    if not analysis:
        return ""
    rows = analysis.get("table") or []
    lines = [f"\n### Canary analysis: {analysis.get('verdict')}\n\n{analysis.get('reason', '')}\n"]
    return "\n".join(lines + [markdown_table(rows)] * bool(rows)) + "\n"


@task(name="publish-run-artifact", cache_policy=NO_CACHE)
def publish_run_artifact(record: Record) -> None:
    create_markdown_artifact(
        key=f"{record.action}-{record.component}-{record.where.replace(' ', '-')}",  # prod-us-west-2: one per region
        markdown=markdown(record),
        description=f"{record.action} {record.component} to {record.where}: {record.outcome}",
    )


@task(name="record-release", cache_policy=NO_CACHE, retries=3, retry_delay_seconds=[1, 3, 10])
def record_release(target: AwsTarget, bucket: str, version: str, summary: dict[str, Any]) -> str:
    """Keep a release's summary (approvals with who and why, outcomes) at ``ledger/releases/{version}/``."""
    stamp = now().replace(":", "").replace("-", "")
    run = str(summary.get("flow_run_id") or "local")[:8]
    key = f"{PREFIX}/releases/{version}/{stamp}-{run}.json"
    body = json.dumps(summary, indent=2, sort_keys=True, default=str).encode()
    target.client("s3").put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/json")
    get_run_logger().info("Ledger: release %s → %s", version, summary.get("outcome"))
    return key
