"""Where opcd's AWS calls go, and the one place boto3 clients are made.

Resolution order (the CLI prints the result on its first line):

1. ``AWS_ENDPOINT_URL`` is set → that endpoint (e.g. after ``eval "$(opcd sandbox env)"``).
2. ``AWS_PROFILE`` or ``AWS_ACCESS_KEY_ID`` is set → real AWS with those credentials.
3. ``.opcd/sandbox.json`` exists beside opcd.toml → the embedded sandbox; when it does not answer,
   an InputError (a stale file never silently means real AWS).
4. Otherwise → real AWS through boto3's default credential chain.

An environment with ``role_arn`` gets a target of its own whose calls use that role, assumed with
STS on top of the credentials above (:func:`target_for`); :func:`guarded_target` also refuses a
target whose account is not the environment's ``account_id`` — every change to an environment
starts there.

Product code only ever sees an endpoint URL and credentials; it never imports the sandbox. The
sandbox also publishes a map from public origins (``https://api.dev.example``) to its local
API Gateway stand-in, which :meth:`AwsTarget.resolve_url` applies to health URLs.
"""

from __future__ import annotations

import functools
import getpass
import json
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast, overload
from urllib.parse import urlsplit

import boto3
import botocore.loaders
import botocore.session
import httpx
from botocore.config import Config as BotoConfig
from botocore.credentials import AssumeRoleCredentialFetcher, CredentialProvider, DeferredRefreshableCredentials
from botocore.exceptions import NoCredentialsError

from opcd.errors import InputError
from opcd.iam import record_calls

if TYPE_CHECKING:
    from botocore.config import _RetryDict
    from types_boto3_apprunner.client import AppRunnerClient
    from types_boto3_cloudwatch.client import CloudWatchClient
    from types_boto3_ecr.client import ECRClient
    from types_boto3_ecs.client import ECSClient
    from types_boto3_events.client import EventBridgeClient
    from types_boto3_iam.client import IAMClient
    from types_boto3_lambda.client import LambdaClient
    from types_boto3_s3.client import S3Client
    from types_boto3_secretsmanager.client import SecretsManagerClient
    from types_boto3_ses.client import SESClient
    from types_boto3_sts.client import STSClient

    from opcd.config import Config

SANDBOX_FILE = "sandbox.json"
# The sandbox's ping: a refused connection means nothing listens (no retry); a server that accepts
# but does not answer (a loaded machine) gets these read timeouts in turn, about 10 s in all.
PING_TIMEOUTS = (2.0, 3.0, 5.0)

Credentials = tuple[str, str] | tuple[str, str, str]  # access key, secret key[, session token]


def _boto_config() -> BotoConfig:
    """5 attempts in standard retry mode, unless AWS_MAX_ATTEMPTS / AWS_RETRY_MODE say otherwise."""
    retries: dict[str, Any] = {"mode": os.environ.get("AWS_RETRY_MODE") or "standard"}
    if not os.environ.get("AWS_MAX_ATTEMPTS"):
        retries["total_max_attempts"] = 5  # botocore's "max_attempts" counts retries: it made 6
    return BotoConfig(retries=cast("_RetryDict", retries), connect_timeout=5)


@dataclass(frozen=True)
class AwsTarget:
    """An AWS account (real or sandbox) that opcd talks to."""

    kind: str  # "sandbox" | "endpoint" | "aws"
    region: str
    endpoint_url: str | None = None
    credentials: Credentials | None = None
    gateway: dict[str, str] = field(default_factory=dict)
    endpoints: dict[str, str] = field(default_factory=dict)  # service → its own endpoint (App Runner's stand-in)
    role: AssumedRole | None = None  # assumed with STS on top of the credentials above

    def describe(self) -> str:
        """``AWS target: …``; it names the account and identity once :meth:`identity` has asked STS."""
        if self.kind == "sandbox":
            where = f"embedded sandbox at {self.endpoint_url} ({self.region})"
        elif self.kind == "endpoint":
            where = f"endpoint {self.endpoint_url} from AWS_ENDPOINT_URL ({self.region})"
        else:
            where = f"AWS {self.region}"
        known = _identities.get(self)
        if known is not None:
            return f"AWS target: {where}, account {known.account} as {known.arn}"
        if self.role is not None:
            return f"AWS target: {where}, role {self.role.arn}"
        return f"AWS target: {where}" + (", credentials from the default chain" if self.kind == "aws" else "")

    @overload
    def client(self, service: Literal["apprunner"]) -> AppRunnerClient: ...
    @overload
    def client(self, service: Literal["cloudwatch"]) -> CloudWatchClient: ...
    @overload
    def client(self, service: Literal["ecr"]) -> ECRClient: ...
    @overload
    def client(self, service: Literal["ecs"]) -> ECSClient: ...
    @overload
    def client(self, service: Literal["events"]) -> EventBridgeClient: ...
    @overload
    def client(self, service: Literal["iam"]) -> IAMClient: ...
    @overload
    def client(self, service: Literal["lambda"]) -> LambdaClient: ...
    @overload
    def client(self, service: Literal["s3"]) -> S3Client: ...
    @overload
    def client(self, service: Literal["secretsmanager"]) -> SecretsManagerClient: ...
    @overload
    def client(self, service: Literal["ses"]) -> SESClient: ...
    @overload
    def client(self, service: Literal["sts"]) -> STSClient: ...
    def client(self, service: str) -> Any:
        """A boto3 client for ``service`` (typed by the types-boto3 stubs of the services opcd calls);
        clients are cached per target and thread-safe."""
        return _client(self, service)

    def identity(self) -> Identity:
        """Who this target's calls are made as (STS GetCallerIdentity, asked once per target and process)."""
        known = _identities.get(self)
        if known is None:
            answer = self.client("sts").get_caller_identity()
            known = _identities.setdefault(self, Identity(str(answer["Account"]), str(answer["Arn"])))
        return known

    def resolve_url(self, url: str) -> str:
        """Map a public URL onto the sandbox's gateway when the sandbox publishes its origin."""
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        if origin in self.gateway:
            rest = url[len(origin) :]
            return self.gateway[origin].rstrip("/") + (rest or "/")
        return url

    def endpoint_for(self, service: str) -> str | None:
        """Where ``service``'s calls go: None lets botocore choose (AWS, or ``AWS_ENDPOINT_URL_<SERVICE ID>``).

        botocore names a service's own variable after the service model's serviceId
        (``events`` → ``AWS_ENDPOINT_URL_EVENTBRIDGE``), and that variable wins over any global
        endpoint; so when it is set, botocore resolves it, as it would without opcd.
        """
        if self.endpoint_url is None or os.environ.get(endpoint_variable(service)):
            return None
        return self.endpoints.get(service) or self.endpoint_url

    def __hash__(self) -> int:
        return hash(
            (
                self.kind,
                self.region,
                self.endpoint_url,
                self.credentials,
                tuple(sorted(self.endpoints.items())),
                self.role,
            )
        )


@dataclass(frozen=True)
class AssumedRole:
    """An IAM role a target's calls are made as: ``arn`` assumed with STS as ``session_name``."""

    arn: str
    session_name: str


@dataclass(frozen=True)
class Identity:
    """STS GetCallerIdentity's answer: the account and the ARN of who calls."""

    account: str
    arn: str


_clients: dict[tuple[AwsTarget, str], Any] = {}
_identities: dict[AwsTarget, Identity] = {}
_lock = threading.RLock()
_sessions: dict[tuple[Any, ...], boto3.Session] = {}


@functools.cache
def endpoint_variable(service: str) -> str:
    """``AWS_ENDPOINT_URL_`` + the service model's serviceId, as botocore names it (``secretsmanager``
    → ``AWS_ENDPOINT_URL_SECRETS_MANAGER``); read from botocore's own model of the service."""
    model = _models().get_service_model(service)
    service_id: str = model.service_id.hyphenize()
    return "AWS_ENDPOINT_URL_" + service_id.replace("-", "_").upper()


@functools.cache
def _loader() -> Any:
    """One botocore loader for every session: each service model is read once per process."""
    return botocore.loaders.create_loader()


def _core() -> Any:
    core = botocore.session.Session()
    core.register_component("data_loader", _loader())
    return core


_models = functools.cache(_core)


def new_client(
    service: str,
    region: str,
    credentials: Credentials | None = None,
    endpoint_url: str | None = None,
    config: BotoConfig | None = None,
    role: AssumedRole | None = None,
    sts_endpoint: str | None = None,
) -> Any:
    """A new boto3 client, made from this process's one session per region, credentials and profile.

    A session reads each service's model (JSON, up to megabytes) the first time it makes a client
    of it: one session per target made every client pay that again. A boto3 session is not
    thread-safe, so clients are made under a lock; the clients themselves are. With ``role``, the
    session's credentials are that role's, assumed through STS (at ``sts_endpoint``, if not AWS's)
    when first used and refreshed by botocore before they expire.
    """
    with _lock:
        session = _session(region, credentials, role, sts_endpoint if role else None)
        # the service is any name here: AwsTarget.client's overloads type what callers get
        return session.client(cast(Any, service), endpoint_url=endpoint_url, config=config)


def _session(
    region: str, credentials: Credentials | None, role: AssumedRole | None, sts_endpoint: str | None
) -> boto3.Session:
    key: tuple[Any, ...] = (region, credentials, None if credentials else os.environ.get("AWS_PROFILE"))
    if role is not None:
        key += (role, sts_endpoint)
    session = _sessions.get(key)
    if session is None:
        if role is None:
            access, secret, token = (*credentials, None)[:3] if credentials else (None, None, None)
            session = boto3.Session(
                aws_access_key_id=access,
                aws_secret_access_key=secret,
                aws_session_token=token,
                region_name=region,
                botocore_session=_core(),
            )
        else:
            source = _session(region, credentials, None, None)
            core = _core()
            core.get_component("credential_provider").insert_before("env", _RoleProvider(source, role, sts_endpoint))
            session = boto3.Session(botocore_session=core, region_name=region)
        _sessions[key] = session
    return session


class _RoleProvider(CredentialProvider):
    """The role's credentials, assumed from ``source``'s: botocore's own fetcher and refresh."""

    METHOD = "opcd-assume-role"

    def __init__(self, source: boto3.Session, role: AssumedRole, sts_endpoint: str | None) -> None:
        super().__init__()
        self.source, self.role, self.sts_endpoint = source, role, sts_endpoint

    def load(self) -> Any:
        source_credentials = self.source.get_credentials()
        if source_credentials is None:
            raise NoCredentialsError()
        fetcher = AssumeRoleCredentialFetcher(
            client_creator=self._sts_client,
            source_credentials=source_credentials,
            role_arn=self.role.arn,
            extra_args={"RoleSessionName": self.role.session_name},
        )
        return DeferredRefreshableCredentials(refresh_using=fetcher.fetch_credentials, method=self.METHOD)

    def _sts_client(self, service: str, **credentials: Any) -> Any:
        with _lock:  # a refresh runs in whichever thread needs the credentials; sessions are not thread-safe
            return self.source.client(
                cast(Any, service), endpoint_url=self.sts_endpoint, config=_boto_config(), **credentials
            )


def _client(target: AwsTarget, service: str) -> Any:
    key = (target, service)
    client = _clients.get(key)
    if client is None:
        endpoint = target.endpoint_for(service)
        sts = target.endpoint_for("sts") if target.role else None
        client = new_client(service, target.region, target.credentials, endpoint, _boto_config(), target.role, sts)
        if directory := os.environ.get("OPCD_RECORD_AWS_CALLS"):  # the tests prove the IAM policy (opcd/iam.py)
            record_calls(client, directory)
        client = _clients.setdefault(key, client)  # two threads racing keep the same one
    return client


def read_sandbox_file(state_dir: Path) -> dict[str, Any] | None:
    """``.opcd/sandbox.json`` as the sandbox wrote it (None: no file), without asking the sandbox."""
    try:
        info: dict[str, Any] = json.loads((state_dir / SANDBOX_FILE).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise InputError(
            f"{state_dir / SANDBOX_FILE} cannot be read: {exc}", "remove it, or start the sandbox again"
        ) from None
    if not isinstance(info, dict) or not isinstance(info.get("aws_endpoint_url"), str):
        raise InputError(
            f"{state_dir / SANDBOX_FILE} names no aws_endpoint_url", "remove it, or start the sandbox again"
        )
    return info


def sandbox_info(state_dir: Path) -> dict[str, Any] | None:
    """The running sandbox's published endpoints; None when there is no sandbox file.

    A file whose sandbox does not answer is an InputError: it means a sandbox was meant, and
    falling through to real AWS with whatever credentials the machine holds would be an accident.
    """
    info = read_sandbox_file(state_dir)
    if info is None:
        return None
    url = info["aws_endpoint_url"]
    if not ping(url):
        raise InputError(
            f"the sandbox in {state_dir / SANDBOX_FILE} does not answer at {url}",
            f"start it (`opcd sandbox up --detach`) or remove {state_dir / SANDBOX_FILE} to use AWS",
        )
    return info


def ping(url: str) -> bool:
    """Whether the sandbox at ``url`` answers its ping: up to ``PING_TIMEOUTS`` tries, none after a refusal."""
    for timeout in PING_TIMEOUTS:
        try:
            return _http().get(f"{url}/_opcd/ping", timeout=timeout).status_code == 200
        except httpx.ConnectError:
            return False  # refused in about a millisecond: nothing listens there
        except httpx.TimeoutException:
            continue  # it listens but does not answer yet (a loaded machine)
        except httpx.HTTPError:
            return False
    return False


@functools.cache
def _http() -> httpx.Client:
    """One HTTP client per process for the sandbox's ping: each new client builds a TLS context (~20 ms)."""
    return httpx.Client(timeout=PING_TIMEOUTS[0])


def resolve_target(state_dir: Path, region: str, role: AssumedRole | None = None, pinned: bool = False) -> AwsTarget:
    """Choose the AWS target for a project whose local state lives in ``state_dir``; ``role``: its calls' role.

    ``pinned``: ``region`` is the one opcd.toml names for these calls (an environment's ``regions``): neither
    ``AWS_REGION`` nor the sandbox's own region replaces it.
    """
    if not pinned:
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or region
    if endpoint := os.environ.get("AWS_ENDPOINT_URL"):
        info = read_sandbox_file(state_dir)  # the user chose the endpoint: a stale file only decides the name
        ours = bool(info and info["aws_endpoint_url"] == endpoint)
        gateway = info.get("gateway", {}) if info and ours else {}
        endpoints = _service_endpoints(info) if info and ours else {}
        kind = "sandbox" if ours else "endpoint"
        return AwsTarget(kind, region, endpoint, gateway=gateway, endpoints=endpoints, role=role)
    if os.environ.get("AWS_PROFILE") or os.environ.get("AWS_ACCESS_KEY_ID"):
        return AwsTarget("aws", region, role=role)
    if info := sandbox_info(state_dir):
        return AwsTarget(
            "sandbox",
            region if pinned else info.get("region", region),
            info["aws_endpoint_url"],
            credentials=("testing", "testing"),
            gateway=info.get("gateway", {}),
            endpoints=_service_endpoints(info),
            role=role,
        )
    return AwsTarget("aws", region, role=role)


def target_for(config: Config, environment: str | None = None, region: str | None = None) -> AwsTarget:
    """The AWS target of ``environment``: the project's, as the role its ``role_arn`` names when set.

    ``region``: one of the environment's ``regions`` (None: its first). An environment that names its regions
    gets that region whatever ``AWS_REGION`` says; one that does not keeps the project's (or ``AWS_REGION``).
    """
    role_arn = config.environment(environment).role_arn if environment else None
    role = AssumedRole(role_arn, _session_name(environment)) if role_arn and environment else None
    if environment is None or not config.environment(environment).regions:
        return resolve_target(config.state_dir(), config.project.region, role)
    config.region_key(environment, region)  # UnknownName for a region the environment does not have
    return resolve_target(config.state_dir(), region or config.regions(environment)[0], role, pinned=True)


def guarded_target(config: Config, environment: str, region: str | None = None) -> AwsTarget:
    """``environment``'s target, once STS says who its calls are made as (logged with the target).

    Called before anything in ``environment`` changes. With ``account_id`` set, an InputError
    (exit 2) when the credentials (or the assumed role) belong to another account, or when STS
    cannot say who they are; without it, who they are is only reported.
    """
    target = target_for(config, environment, region)
    expected = config.environment(environment).account_id
    fix = f"use {environment}'s credentials/role or fix environments.{environment}.account_id"
    try:
        who = target.identity()
    except Exception as exc:  # no credentials, a role that cannot be assumed, STS unreachable
        if expected is None:
            return target  # nothing to compare: the first call that needs credentials says what is wrong
        raise InputError(f"cannot tell which AWS account {environment} would change: {exc}", fix) from exc
    if expected is not None and who.account != expected:
        raise InputError(f"AWS account {who.account} ({who.arn}) is not {environment}'s account {expected}", fix)
    return target


def _session_name(environment: str) -> str:
    """``opcd-<env>-<user>``, within STS's RoleSessionName alphabet and 64 characters."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):
        user = "unknown"
    return re.sub(r"[^\w+=,.@-]", "-", f"opcd-{environment}-{user}")[:64]


def _service_endpoints(info: dict[str, Any]) -> dict[str, str]:
    return {"apprunner": info["apprunner_endpoint_url"]} if info.get("apprunner_endpoint_url") else {}


def error_code(exc: Exception) -> str:
    """The AWS error code of a botocore ClientError (``""`` for anything else)."""
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))
