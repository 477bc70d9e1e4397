"""The IAM policies of opcd's two roles, generated from opcd.toml (``opcd iam policy``).

- ``deploy``: the role of the deploy pool's workers and of whoever runs ``opcd deploy``,
  ``rollback``, ``release``: builds, deploys, shifts traffic, rolls back, writes the ledger.
- ``read``: the role of ``terraform-plan``, ``drift-check`` and ``pr-validation`` (and of
  ``opcd status`` and dry runs): reads what is live and the ledger; writes nothing, not even a
  saved plan (pull requests' code runs with it; a plan it could keep, terraform-apply would apply).
  The plan terraform-apply applies is made on the deploy pool (``terraform-plan`` with
  ``store=True``, which runs as ``deploy``).

Every statement is scoped to the names opcd.toml gives (functions, bucket prefixes, repository,
services, ``{project}-{env}-`` rules, alarms, secrets, sender). Neither role may write the bucket's
lifecycle rules (Terraform owns them: a rule could expire the ledger) or delete a ledger record.

The test suite proves the policies: with ``OPCD_RECORD_AWS_CALLS=DIR`` every client of opcd's
factory (:mod:`opcd.aws`) appends each call it makes to ``DIR``, with the role it was made as
(:func:`current_role`), and the tests check each call against these policies.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import sys
import threading
from collections.abc import Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal, TextIO

from opcd.config import Config, ImageComponent

Role = Literal["deploy", "read"]
ROLES: tuple[Role, ...] = ("deploy", "read")
# The flows whose workers hold the read-only role (their pool has no write credentials).
READ_FLOWS = frozenset({"terraform-plan", "drift-check", "pr-validation"})
RECORD_ENV = "OPCD_RECORD_AWS_CALLS"
PLANS_PREFIX = "terraform/plans"  # tasks.s3_artifacts keeps saved plans there
LEDGER_PREFIX = "ledger"
RESULTS_PREFIX = "prefect-results"  # tasks.results: a release's persisted task results, shared by the workers

# (role, opcd.toml, the flow run that declared it: None outside one)
_acting_as: ContextVar[tuple[Role, str | None, Any] | None] = ContextVar("opcd_iam_role", default=None)
_write_lock = threading.Lock()
_open: dict[Path, TextIO] = {}
_unrecorded: ContextVar[bool] = ContextVar("opcd_unrecorded", default=False)


@contextlib.contextmanager
def unrecorded() -> Iterator[None]:
    """Calls made in the block set a test's scene (resources Terraform would make): not the product's."""
    token = _unrecorded.set(True)
    try:
        yield
    finally:
        _unrecorded.reset(token)


def service_name(ref: str) -> str:
    """``arn:aws:apprunner:…:service/NAME/ID`` or ``NAME`` → ``NAME``."""
    return ref.split(":service/", 1)[1].split("/", 1)[0] if ref.startswith("arn:") else ref


def access_role(config: Config, component: str, environment: str) -> str:
    """The ECR access role (name or ARN) App Runner pulls ``component``'s images with in ``environment``:
    ``components.NAME.access_role`` (``{environment}`` replaced), else ``{service name}-ecr-access``."""
    configured = config.apprunner_component(component).access_role
    if configured:
        return configured.replace("{environment}", environment)
    return f"{service_name(config.service_ref(component, environment))}-ecr-access"


def _accounts(config: Config, account: str | None) -> dict[str, str]:
    """Each environment's account id: ``account`` when given, else ``environments.ENV.account_id``, else ``*``."""
    return {name: account or str(getattr(env, "account_id", None) or "*") for name, env in config.environments.items()}


def _places(config: Config) -> list[tuple[str, str]]:
    """(environment, region) of every region of every environment: the project's region for one that names none."""
    return [(env, where) for env in config.environments for where in config.regions(env)]


def _statement(sid: str, actions: list[str], resources: list[str], **extra: Any) -> dict[str, Any]:
    unique = list(dict.fromkeys(resources))
    return {"Sid": sid, "Effect": "Allow", "Action": sorted(actions), "Resource": unique, **extra}


def policy(config: Config, role: Role, account: str | None = None) -> dict[str, Any]:
    """The policy document of ``role`` for this configuration."""
    region, project, bucket = config.project.region, config.project.name, config.project.artifact_bucket
    accounts = _accounts(config, account)
    everywhere = sorted(set(accounts.values()))  # shared resources (bucket, repository) may sit in any of them
    read = role == "read"
    lambdas = [name for name, comp in config.components.items() if comp.kind == "lambda"]
    apprunners = [name for name, comp in config.components.items() if comp.kind == "apprunner"]
    containers = [comp for comp in config.components.values() if isinstance(comp, ImageComponent)]
    statements: list[dict[str, Any]] = []

    functions: list[str] = []
    rules: list[str] = []
    for env_name, where in _places(config):  # each environment's regions: its functions and rules in each
        arn = f"arn:aws:lambda:{where}:{accounts[env_name]}:function:"
        for component in lambdas:
            if component in config.environments[env_name].functions:
                function = config.function_name(component, env_name, where)
                functions += [arn + function, arn + function + ":*"]
        rules.append(f"arn:aws:events:{where}:{accounts[env_name]}:rule/{project}-{env_name}-*")
    if functions:
        actions = ["GetAlias", "GetFunctionConfiguration", "ListVersionsByFunction"]
        if not read:
            actions += ["AddPermission", "GetPolicy", "InvokeFunction", "PublishVersion", "RemovePermission",
                        "UpdateAlias", "UpdateFunctionCode"]  # fmt: skip
        statements.append(_statement("Functions", [f"lambda:{a}" for a in actions], functions))
        actions = ["DescribeRule", "ListTargetsByRule"]
        if not read:
            actions += ["DeleteRule", "ListTagsForResource", "PutRule", "PutTargets", "RemoveTargets", "TagResource"]
        statements.append(_statement("EventRules", [f"events:{a}" for a in actions], rules))
        if not read:  # finding the rules a component no longer has (ListRules has no resource-level scope)
            statements.append(_statement("ListEventRules", ["events:ListRules"], ["*"]))

    # The artifact buckets (the project's, and each region's when its name has {region}): each component's
    # artifacts (a release copies a build from one to another), the ledger, saved Terraform plans, the results.
    buckets = list(dict.fromkeys([bucket, *(config.bucket_for(env, where) for env, where in _places(config))]))
    objects = [f"arn:aws:s3:::{b}/{name}/*" for b in buckets for name in config.components]
    ledgers = [f"arn:aws:s3:::{b}/{LEDGER_PREFIX}/*" for b in buckets]
    plans = f"arn:aws:s3:::{bucket}/{PLANS_PREFIX}/*"
    results = f"arn:aws:s3:::{bucket}/{RESULTS_PREFIX}/*"
    statements.append(
        _statement(
            "ArtifactBucket", ["s3:GetLifecycleConfiguration", "s3:ListBucket"], [f"arn:aws:s3:::{b}" for b in buckets]
        )
    )
    if read:  # no write at all: a saved plan it could write, terraform-apply would apply with deploy credentials
        statements.append(_statement("ReadArtifactsAndLedger", ["s3:GetObject"], [*objects, *ledgers]))
    else:
        statements.append(
            _statement(
                "ArtifactsLedgerPlansResults", ["s3:GetObject", "s3:PutObject"], [*objects, *ledgers, plans, results]
            )
        )
    # Belt and braces against a broader policy beside this one: the ledger is never deleted or expired.
    statements.append({
        "Sid": "LedgerStays", "Effect": "Deny",
        "Action": ["s3:DeleteObject", "s3:DeleteObjectVersion", "s3:PutLifecycleConfiguration"],
        "Resource": [*(f"arn:aws:s3:::{b}" for b in buckets), *ledgers],
    })  # fmt: skip

    alarms = [
        f"arn:aws:cloudwatch:{where}:{accounts[env_name]}:alarm:{alarm}"
        for env_name, where in _places(config)
        for alarm in config.alarm_names(env_name, where)
    ]
    if alarms:
        statements.append(_statement("Alarms", ["cloudwatch:DescribeAlarms"], alarms))
    if not read and functions and any(env.bake.analysis for env in config.environments.values()):
        # canary analysis reads each version's metrics (GetMetricData has no resource-level scope)
        statements.append(_statement("CanaryAnalysis", ["cloudwatch:GetMetricData"], ["*"]))

    if containers:
        # in the project's region; an ECS component's also in each region of its environments (an image per region)
        ecs_regions = {where for env, where in _places(config) if config.environments[env].ecs}
        repositories = [
            f"arn:aws:ecr:{where}:{acct}:repository/{comp.repository}"
            for comp in containers
            for where in [region, *sorted(ecs_regions - {region} if comp.kind == "ecs" else set())]
            for acct in everywhere
        ]
        actions = ["DescribeImages", "DescribeRepositories"]
        if not read:  # skopeo pushes (and, from another region's repository, pulls) through the registry API
            actions += ["BatchCheckLayerAvailability", "BatchGetImage", "CompleteLayerUpload",
                        "GetDownloadUrlForLayer", "InitiateLayerUpload", "PutImage", "UploadLayerPart"]  # fmt: skip
            statements.append(_statement("RegistryLogin", ["ecr:GetAuthorizationToken"], ["*"]))
        statements.append(_statement("Repositories", [f"ecr:{a}" for a in actions], repositories))
    statements += _ecs_statements(config, accounts, read)
    if apprunners:
        services = []
        for env_name, env in config.environments.items():
            for name in apprunners:
                ref = env.services.get(name)
                if ref:
                    prefix = f"arn:aws:apprunner:{region}:{accounts[env_name]}:service/"
                    services.append(ref if ref.startswith("arn:") else f"{prefix}{ref}/*")
        actions = ["DescribeService"]
        if not read:  # StartDeployment: when App Runner's own rollback failed, the rollback deploys again
            actions += ["ListOperations", "StartDeployment", "UpdateService"]
        statements.append(_statement("Services", [f"apprunner:{a}" for a in actions], services))
        # a service named in opcd.toml (not by its ARN) is found by listing (no resource-level scope)
        statements.append(_statement("ListServices", ["apprunner:ListServices"], ["*"]))
        if not read:  # UpdateService sends the service's AuthenticationConfiguration.AccessRoleArn again
            roles = []
            for env_name, env in config.environments.items():
                for name in apprunners:
                    if name in env.services:
                        ref = access_role(config, name, env_name)
                        roles.append(ref if ref.startswith("arn:") else f"arn:aws:iam::{accounts[env_name]}:role/{ref}")
            statements.append(_statement(
                "PassAccessRoleToAppRunner", ["iam:PassRole"], roles,
                Condition={"StringEquals": {"iam:PassedToService": "apprunner.amazonaws.com"}},
            ))  # fmt: skip

    if not read:
        secrets = [  # a secret's ARN ends with six random characters
            f"arn:aws:secretsmanager:{where}:{accounts[env_name]}:secret:"
            f"{config.database_secret(env_name, where)}-??????"
            for env_name, where in _places(config)
            if config.environments[env_name].database_secret
        ]
        if secrets:  # a secret's ARN ends with six random characters
            statements.append(_statement("DatabaseSecrets", ["secretsmanager:GetSecretValue"], secrets))
        email = config.notifications.email
        if email is not None:  # SES authorizes the sender's address, or its domain when that is verified
            identities = [email.sender, email.sender.rpartition("@")[2]]
            statements.append(_statement("SendEmail", ["ses:SendEmail"], [
                f"arn:aws:ses:{region}:{acct}:identity/{identity}" for acct in everywhere for identity in identities
            ]))  # fmt: skip
    return {"Version": "2012-10-17", "Statement": statements}


def ecs_services(config: Config) -> list[tuple[str, str, str, str, str]]:
    """(environment, region, component, cluster, service) of every ECS service: ``environments.ENV.ecs.COMPONENT``
    in each of the environment's regions, {region} in the names replaced."""
    return [
        (env_name, where, component, ref.cluster, ref.service)
        for env_name, where in _places(config)
        for component in config.environments[env_name].ecs
        for ref in [config.ecs_service(component, env_name, where)]
    ]


def _ecs_statements(config: Config, accounts: dict[str, str], read: bool) -> list[dict[str, Any]]:
    """ECS: the services and their deployments; task definitions (no resource-level scope: ``*``); the deploy
    role registers revisions (tagged as the live one), updates the services and passes the task and execution
    roles, which Terraform names ``{service}-task`` and ``{service}-execution``, to ECS's tasks only."""
    found = ecs_services(config)
    if not found:
        return []
    prefix = {(env, where): f"arn:aws:ecs:{where}:{accounts[env]}:" for env, where, *_ in found}
    services = [f"{prefix[env, where]}service/{cluster}/{service}" for env, where, _, cluster, service in found]
    deployments = [
        f"{prefix[env, where]}service-deployment/{cluster}/{service}/*" for env, where, _, cluster, service in found
    ]
    actions = ["DescribeServices", "ListServiceDeployments"] + ([] if read else ["UpdateService"])
    statements = [
        _statement("EcsServices", [f"ecs:{a}" for a in actions], services),
        _statement("EcsServiceDeployments", ["ecs:DescribeServiceDeployments"], deployments),
        _statement(
            "EcsTaskDefinitions",
            ["ecs:DescribeTaskDefinition"] + ([] if read else ["ecs:RegisterTaskDefinition"]),
            ["*"],
        ),  # fmt: skip
    ]
    if not read:
        statements.append(_statement(
            "EcsTagNewRevisions", ["ecs:TagResource"],
            sorted({f"{prefix[env, where]}task-definition/*" for env, where, *_ in found}),
            Condition={"StringEquals": {"ecs:CreateAction": "RegisterTaskDefinition"}},
        ))  # fmt: skip
        roles = [
            f"arn:aws:iam::{accounts[env]}:role/{service}-{kind}"
            for env, _, _, _, service in found
            for kind in ("task", "execution")
        ]
        statements.append(_statement(
            "PassTaskRolesToEcs", ["iam:PassRole"], roles,
            Condition={"StringEquals": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}},
        ))  # fmt: skip
    return statements


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2) + "\n"


@contextlib.contextmanager
def acting_as(role: Role, config: str | None = None) -> Iterator[None]:
    """AWS calls made inside belong to ``role`` (the CLI's read-only commands are ``read``), for ``config``.

    Entered inside a flow run, it is that run's own declaration and outranks the flow's name: a
    ``terraform-plan`` that stores the plan terraform-apply applies runs as ``deploy``.
    """
    prefect_context = sys.modules.get("prefect.context")  # not imported: no flow run (and a command starts fast)
    context = prefect_context.FlowRunContext.get() if prefect_context is not None else None
    run = context.flow_run.id if context is not None and context.flow_run is not None else None
    token = _acting_as.set((role, config, run))
    try:
        yield
    finally:
        _acting_as.reset(token)


def current_role() -> Role:
    """The role a run declared for itself; else ``read`` inside a read-only flow's run or command; else ``deploy``."""
    # Imported here: the CLI imports this module for every command, and Prefect costs 3.5 s of CPU at
    # start-up that `opcd --help`, `config check` and `iam` never use (1.3 s without it, 4.8 s with).
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    acting = _acting_as.get()
    run = context.flow_run.id if context is not None and context.flow_run is not None else None
    if acting is not None and run is not None and acting[2] == run:
        return acting[0]
    if context is not None and context.flow is not None and context.flow.name in READ_FLOWS:
        return "read"
    return acting[0] if acting else "deploy"


def _config_in_use(context: Any) -> str | None:
    """The opcd.toml a call is made for, when known: its flow run's ``config_path``, else the command's."""
    parameters = context.flow_run.parameters if context is not None and context.flow_run is not None else {}
    acting = _acting_as.get()
    path = parameters.get("config_path") or (acting[1] if acting else None)
    return str(Path(path).resolve()) if path else None


def record_calls(client: Any, directory: str) -> None:
    """Append every call ``client`` makes (service, operation, parameters, role) to a file in ``directory``."""
    path = Path(directory) / f"calls-{os.getpid()}.jsonl"
    service = client.meta.service_model.service_name

    def before_parameter_build(params: dict[str, Any], model: Any, **_: Any) -> None:
        from prefect.context import FlowRunContext  # here, not at the top: see current_role

        if _unrecorded.get():
            return
        context = FlowRunContext.get()
        line = json.dumps({
            "service": service, "operation": model.name, "params": params, "region": client.meta.region_name,
            "role": current_role(), "flow": context.flow.name if context and context.flow else None,
            "config": _config_in_use(context),
            "test": os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" (", 1)[0] or None,
        }, default=lambda value: f"<{type(value).__name__}>")  # fmt: skip
        with _write_lock:
            out = _open.get(path)
            if out is None:  # opened once per process: an open per call costs more than the call's own work
                out = _open[path] = path.open("a", encoding="utf-8")
                atexit.register(out.close)
            out.write(line + "\n")
            out.flush()

    # before-parameter-build sees the operation's own parameters (before-call sees the HTTP request)
    client.meta.events.register("before-parameter-build", before_parameter_build)
