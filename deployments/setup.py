"""``opcd setup``: make the Prefect server at ``PREFECT_API_URL`` ready to run the opcd flows.

In order, each step creating what is missing and updating what differs, and saying which:

1. the work pools of ``prefect.yaml``, ``opcd-deploy`` and ``opcd-checks`` (type ``process``; a pool
   of another type is left as it is), with a base job template that takes no environment, command
   or working directory from a run or a deployment (:func:`job_template`): a pool's template that
   differs is updated;
2. one global concurrency limit with one slot per lock (``opcd/locks.py``): each component in each
   environment, and each environment's release slot;
3. the Prefect Secret blocks that ``opcd.toml`` names (Slack's webhook or token): the value comes
   from the environment variable ``OPCD_SECRET_<BLOCK>`` (the block name in capitals, ``-`` as
   ``_``); a block that exists and has no such variable is kept; values are never printed;
4. the shared result storage: a prefect-aws ``S3Bucket`` block, ``opcd-results``, on the artifact
   bucket under ``prefect-results/`` (bucket and prefix only, no credentials): a release or a
   terraform-apply resumed on another worker finds its builds and deploys there (``tasks/results.py``);
5. the deployments of ``prefect.yaml``: each one the server lacks, or holds differently (entrypoint,
   parameters and their schema, pool, pull steps, schedules, concurrency, tags, description), is
   deployed with ``prefect deploy``; the others are left alone;
6. the example automation, ``opcd-prod-rolled-back``: when a prod deploy is rolled back (the event
   ``opcd.deploy.rolled-back``, ``tasks/events.py``), it starts a ``drift-check`` run, which compares
   what is live with the ledger and says so on Slack (:func:`automation`).

Running it twice changes nothing the second time.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import yaml
from prefect.blocks.system import Secret
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import (
    GlobalConcurrencyLimitCreate,
    GlobalConcurrencyLimitUpdate,
    WorkPoolCreate,
    WorkPoolUpdate,
)
from prefect.events.actions import RunDeployment
from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
from prefect.exceptions import ObjectNotFound
from prefect.flows import load_flow_from_entrypoint
from prefect.utilities.callables import parameter_schema
from prefect.workers.process import ProcessWorker
from prefect_aws.s3 import S3Bucket

from opcd.config import Config
from opcd.errors import ConfigError, InputError
from opcd.locks import limit_name, release_limit_name
from tasks.events import DEPLOY_ROLLED_BACK
from tasks.results import BLOCK, PREFIX, block_for

POOL_TYPE = "process"
WORKER_VARIABLES = ("OPCD_REPOSITORY", "OPCD_REF")  # what the pull step reads on the worker
FIXED = ("env", "command", "working_dir")  # job variables a run may not set on opcd's pools


@dataclass(frozen=True)
class Change:
    kind: str  # work pool | concurrency limit | secret block | result storage | deployment | automation
    name: str
    action: str  # created | updated | unchanged | missing
    detail: str = ""

    def line(self) -> str:
        return f"{self.action:<9}  {self.kind:<17}  {self.name}" + (f"  ({self.detail})" if self.detail else "")


def read_spec(prefect_yaml: Path) -> dict[str, Any]:
    try:
        spec: dict[str, Any] = yaml.safe_load(prefect_yaml.read_text())
    except FileNotFoundError:
        raise InputError(
            f"{prefect_yaml} not found", "run opcd setup from the checkout, or pass --prefect-file"
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{prefect_yaml}: not valid YAML: {exc}") from exc
    if not isinstance(spec, dict) or not spec.get("deployments"):
        raise ConfigError(
            f"{prefect_yaml} declares no deployments", "see docs/operating.md (Running on a Prefect server)"
        )
    return spec


def pool_names(spec: dict[str, Any]) -> list[str]:
    return sorted({d["work_pool"]["name"] for d in spec["deployments"] if d.get("work_pool")})


def lock_names(config: Config) -> list[str]:
    names = []
    for env in config.environments:
        names.append(release_limit_name(env))
        names += [limit_name(env, component) for component in config.components]
    return names


def secret_blocks(config: Config) -> list[str]:
    slack = config.notifications.slack
    return [name for name in ((slack.webhook_secret, slack.token_secret) if slack else ()) if name]


def secret_variable(block: str) -> str:
    return "OPCD_SECRET_" + block.upper().replace("-", "_")


# --- each step ------------------------------------------------------------------------------------


def job_template() -> dict[str, Any]:
    """Prefect's process worker base job template, without what a run could set: env, command, working_dir.

    Anyone who may start a run may give it job variables (``prefect deployment run --job-variable``):
    ``env`` could change ``OPCD_REPOSITORY``/``OPCD_REF`` (other code, run with the pool's credentials)
    or ``GITHUB_TOKEN``, ``command`` could run anything, ``working_dir`` could pick the directory. Here
    ``command`` and ``working_dir`` are fixed to null (Prefect's engine command, a temporary directory)
    and ``env`` is left out of ``job_configuration``: a dict there, even ``{}``, is merged with a run's
    ``env`` by the worker (``BaseJobConfiguration.from_template_and_values``), while without it the flow
    run's process gets the worker's own environment and Prefect's run variables only. The three are
    dropped from ``variables`` too, so the UI offers none of them; the worker ignores them if given.
    """

    template: dict[str, Any] = copy.deepcopy(ProcessWorker.get_default_base_job_template())
    configuration, variables = template["job_configuration"], template["variables"]["properties"]
    for key in FIXED:
        configuration.pop(key, None)
        variables.pop(key, None)
    configuration.update(command=None, working_dir=None)
    return template


def ensure_pool(client: Any, name: str, dry_run: bool) -> Change:
    wanted = job_template()
    try:
        pool = client.read_work_pool(name)
    except ObjectNotFound:
        if not dry_run:
            client.create_work_pool(WorkPoolCreate(name=name, type=POOL_TYPE, base_job_template=wanted))
        return Change("work pool", name, "created", f"type {POOL_TYPE}, job variables {', '.join(FIXED)} fixed")
    if pool.type != POOL_TYPE:
        return Change("work pool", name, "unchanged", f"type {pool.type}, kept as it is")
    if pool.base_job_template == wanted:
        return Change("work pool", name, "unchanged")
    if not dry_run:
        client.update_work_pool(name, WorkPoolUpdate(base_job_template=wanted))
    return Change("work pool", name, "updated", f"base job template: job variables {', '.join(FIXED)} fixed")


def ensure_lock(client: Any, name: str, dry_run: bool) -> Change:
    try:
        limit = client.read_global_concurrency_limit_by_name(name)
    except ObjectNotFound:
        if not dry_run:
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
        return Change("concurrency limit", name, "created", "1 slot")
    if limit.limit == 1 and limit.active:
        return Change("concurrency limit", name, "unchanged")
    if not dry_run:
        client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(limit=1, active=True))
    return Change("concurrency limit", name, "updated", f"was {limit.limit} slot(s), active={limit.active}")


def ensure_secret(name: str, dry_run: bool) -> Change:

    variable = secret_variable(name)
    value = os.environ.get(variable)
    try:
        current: Any = Secret.load(name)
    except ValueError:  # Prefect's "Unable to find block document named …"
        current = None
    if value is None:
        if current is None:
            return Change("secret block", name, "missing", f"set {variable} and run opcd setup again")
        return Change("secret block", name, "unchanged")
    if current is not None and current.get() == value:
        return Change("secret block", name, "unchanged")
    if not dry_run:
        Secret(value=value).save(name, overwrite=True)  # type: ignore[arg-type]
    return Change("secret block", name, "created" if current is None else "updated", f"from {variable}")


def ensure_result_storage(config: Config, dry_run: bool) -> Change:
    """The S3Bucket block of the release's task results: the artifact bucket, ``prefect-results/``."""
    wanted = block_for(config.project.artifact_bucket)
    name, where = f"s3-bucket/{BLOCK}", f"s3://{wanted.bucket_name}/{PREFIX}/"
    try:
        current: Any = S3Bucket.load(BLOCK)
    except ValueError:  # Prefect's "Unable to find block document named …"
        current = None
    if current is not None and (current.bucket_name, current.bucket_folder) == (wanted.bucket_name, PREFIX):
        return Change("result storage", name, "unchanged")
    if not dry_run:
        wanted.save(BLOCK, overwrite=True)
    was = f"; was s3://{current.bucket_name}/{current.bucket_folder}/" if current is not None else ""
    return Change("result storage", name, "created" if current is None else "updated", where + was)


AUTOMATION = "opcd-prod-rolled-back"


def automation(drift_check: UUID) -> AutomationCore:
    """The example automation: a prod deploy rolled back starts a drift check (docs/operating.md shows others)."""
    return AutomationCore(
        name=AUTOMATION,
        description="A deploy to prod was rolled back: compare what is live with the ledger (drift-check).",
        enabled=True,
        trigger=EventTrigger(
            expect={DEPLOY_ROLLED_BACK}, match={"prefect.resource.id": "opcd.deploy.*", "opcd.environment": "prod"},
            posture=Posture.Reactive, threshold=1, within=timedelta(0),
        ),
        actions=[RunDeployment(source="selected", deployment_id=drift_check, parameters={}, job_variables={})],
    )  # fmt: skip


def _automation_fields(automation: Any) -> dict[str, Any]:
    """What an automation does, to compare: its trigger's id is made anew by each model."""
    fields: dict[str, Any] = automation.model_dump(
        mode="json", include={"name", "description", "enabled", "trigger", "actions"}
    )
    fields["trigger"].pop("id", None)
    return fields


def ensure_automation(client: Any, dry_run: bool) -> Change:
    """:func:`automation`, created or put back as it should be; ``missing`` until drift-check is deployed."""
    try:
        drift_check = client.read_deployment_by_name("drift-check/drift-check").id
    except ObjectNotFound:
        return Change("automation", AUTOMATION, "missing", "deploy drift-check/drift-check first")
    wanted = automation(drift_check)
    found = client.read_automations_by_name(AUTOMATION)
    if found and _automation_fields(found[0]) == _automation_fields(wanted):
        return Change("automation", AUTOMATION, "unchanged")
    if not dry_run:
        if found:
            client.update_automation(found[0].id, wanted)
        else:
            client.create_automation(wanted)
    return Change("automation", AUTOMATION, "updated" if found else "created", "prod rolled back → drift-check")


def _schedules(spec: list[dict[str, Any]] | None) -> list[tuple[Any, ...]]:
    return sorted((s.get("cron"), s.get("interval"), s.get("timezone"), s.get("active", True)) for s in spec or [])


def _parameter_schema(root: Path, entrypoint: str) -> dict[str, Any]:

    flow: Any = load_flow_from_entrypoint(str(root / entrypoint))
    schema: dict[str, Any] = parameter_schema(flow).model_dump_for_openapi()
    return _without_empty_definitions(schema)


def _without_empty_definitions(schema: dict[str, Any] | None) -> dict[str, Any]:
    """The server drops an empty ``definitions``; compare without it."""
    schema = dict(schema or {})
    if not schema.get("definitions"):
        schema.pop("definitions", None)
    return schema


def differences(wanted: dict[str, Any], pull: list[Any], server: Any, schema: dict[str, Any]) -> list[str]:
    """What the server's deployment holds differently from ``prefect.yaml`` (empty: the same)."""
    concurrency = wanted.get("concurrency_limit") or {}
    held_limit = server.global_concurrency_limit.limit if server.global_concurrency_limit else None
    options = server.concurrency_options
    held_strategy = options.collision_strategy.value if options and options.collision_strategy else None
    pairs = {
        "entrypoint": (wanted["entrypoint"], server.entrypoint),
        "description": ((wanted.get("description") or "").strip(), (server.description or "").strip()),
        "tags": (sorted(wanted.get("tags") or []), sorted(server.tags or [])),
        "parameters": (wanted.get("parameters") or {}, server.parameters or {}),
        "parameter schema": (schema, _without_empty_definitions(server.parameter_openapi_schema)),
        "work pool": (wanted["work_pool"]["name"], server.work_pool_name),
        "work queue": (wanted["work_pool"].get("work_queue_name") or "default", server.work_queue_name),
        "pull steps": (wanted.get("pull", pull), server.pull_steps or []),
        "schedules": (
            _schedules(wanted.get("schedules")),
            _schedules(
                [
                    {
                        "cron": getattr(s.schedule, "cron", None),
                        "interval": _seconds(getattr(s.schedule, "interval", None)),
                        "timezone": getattr(s.schedule, "timezone", None),
                        "active": s.active,
                    }
                    for s in server.schedules
                ]
            ),
        ),  # fmt: skip
        "concurrency": (
            (concurrency.get("limit"), concurrency.get("collision_strategy") if concurrency else None),
            (held_limit, held_strategy if held_limit else None),
        ),
    }
    return [name for name, (want, have) in pairs.items() if want != have]


def _seconds(interval: Any) -> Any:
    return interval.total_seconds() if interval is not None else None


def plan_deployments(client: Any, spec: dict[str, Any], root: Path) -> list[Change]:
    changes = []
    pull = spec.get("pull") or []
    for wanted in spec["deployments"]:
        flow_name = _flow_name(root, wanted["entrypoint"])
        full = f"{flow_name}/{wanted['name']}"
        try:
            server = client.read_deployment_by_name(full)
        except ObjectNotFound:
            changes.append(Change("deployment", full, "created"))
            continue
        changed = differences(wanted, pull, server, _parameter_schema(root, wanted["entrypoint"]))
        changes.append(Change("deployment", full, "updated" if changed else "unchanged", ", ".join(changed)))
    return changes


def _flow_name(root: Path, entrypoint: str) -> str:

    return str(load_flow_from_entrypoint(str(root / entrypoint)).name)


def deploy(prefect_yaml: Path, names: list[str]) -> None:
    """``prefect deploy`` the named deployments (flow/deployment), from the checkout."""
    command = [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--prefect-file", str(prefect_yaml)]
    for name in names:
        command += ["--name", name]
    # The pull step's {{ $OPCD_REPOSITORY }} and {{ $OPCD_REF }} are each worker's: never this machine's.
    env = {k: v for k, v in os.environ.items() if k not in WORKER_VARIABLES}
    result = subprocess.run(command, cwd=prefect_yaml.parent, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = " | ".join((result.stdout + result.stderr).strip().splitlines()[-5:])
        raise InputError(f"prefect deploy failed: {tail}", "fix prefect.yaml, or see `prefect deploy --help`")


def setup(config: Config, prefect_yaml: Path, dry_run: bool = False, say: Any = print) -> list[Change]:
    """Every step in order; each change is said as it is made. Returns them all."""
    spec = read_spec(prefect_yaml)
    root = prefect_yaml.parent.resolve()
    changes: list[Change] = []

    def note(change: Change) -> None:
        changes.append(change)
        say(change.line())

    with get_client(sync_client=True) as client:
        say(f"Prefect server: {client.api_url}")
        for name in pool_names(spec):
            note(ensure_pool(client, name, dry_run))
        for name in lock_names(config):
            note(ensure_lock(client, name, dry_run))
        for name in secret_blocks(config):
            note(ensure_secret(name, dry_run))
        note(ensure_result_storage(config, dry_run))
        planned = plan_deployments(client, spec, root)
    todo = [c.name for c in planned if c.action != "unchanged"]
    if todo and not dry_run:
        deploy(prefect_yaml, todo)
    for change in planned:
        note(change)
    with get_client(sync_client=True) as client:
        note(ensure_automation(client, dry_run))
    return changes
