"""Where opcd's AWS calls go, and the one place boto3 clients are made.

Resolution order (the CLI prints the result on its first line):

1. ``AWS_ENDPOINT_URL`` is set → that endpoint (e.g. after ``eval "$(opcd sandbox env)"``).
2. ``AWS_PROFILE`` or ``AWS_ACCESS_KEY_ID`` is set → real AWS with those credentials.
3. ``.opcd/sandbox.json`` exists beside opcd.toml and its server answers → the embedded sandbox.
4. Otherwise → real AWS through boto3's default credential chain.

Product code only ever sees an endpoint URL and credentials; it never imports the sandbox. The
sandbox also publishes a map from public origins (``https://api.dev.example``) to its local
API Gateway stand-in, which :meth:`AwsTarget.resolve_url` applies to health URLs.
"""

from __future__ import annotations

import functools
import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import httpx
from botocore.config import Config as BotoConfig

SANDBOX_FILE = "sandbox.json"


def _boto_config() -> BotoConfig:
    """5 attempts in standard retry mode, unless AWS_MAX_ATTEMPTS / AWS_RETRY_MODE say otherwise."""
    retries: dict[str, Any] = {"mode": os.environ.get("AWS_RETRY_MODE") or "standard"}
    if not os.environ.get("AWS_MAX_ATTEMPTS"):
        retries["total_max_attempts"] = 5  # botocore's "max_attempts" counts retries: it made 6
    return BotoConfig(retries=retries, connect_timeout=5)


@dataclass(frozen=True)
class AwsTarget:
    """An AWS account (real or sandbox) that opcd talks to."""

    kind: str  # "sandbox" | "endpoint" | "aws"
    region: str
    endpoint_url: str | None = None
    credentials: tuple[str, str] | None = None
    gateway: dict[str, str] = field(default_factory=dict)
    endpoints: dict[str, str] = field(default_factory=dict)  # service → its own endpoint (App Runner's stand-in)

    def describe(self) -> str:
        if self.kind == "sandbox":
            return f"AWS target: embedded sandbox at {self.endpoint_url} ({self.region})"
        if self.kind == "endpoint":
            return f"AWS target: endpoint {self.endpoint_url} from AWS_ENDPOINT_URL ({self.region})"
        return f"AWS target: AWS ({self.region}, credentials from the default chain)"

    def client(self, service: str) -> Any:
        """A boto3 client for ``service``; clients are cached per target and thread-safe."""
        return _client(self, service)

    def resolve_url(self, url: str) -> str:
        """Map a public URL onto the sandbox's gateway when the sandbox publishes its origin."""
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        if origin in self.gateway:
            rest = url[len(origin) :]
            return self.gateway[origin].rstrip("/") + (rest or "/")
        return url

    def endpoint_for(self, service: str) -> str | None:
        """``AWS_ENDPOINT_URL_<SERVICE>`` when set (as boto3 reads it), else the target's own."""
        if self.endpoint_url is None:
            return None  # real AWS: boto3 applies AWS_ENDPOINT_URL_<SERVICE> itself
        specific = os.environ.get(f"AWS_ENDPOINT_URL_{service.upper().replace('-', '_')}")
        return specific or self.endpoints.get(service) or self.endpoint_url

    def __hash__(self) -> int:
        return hash(
            (self.kind, self.region, self.endpoint_url, self.credentials, tuple(sorted(self.endpoints.items())))
        )


_clients: dict[tuple[AwsTarget, str], Any] = {}
_lock = threading.Lock()
_sessions: dict[tuple[str, tuple[str, str] | None, str | None], boto3.Session] = {}


def new_client(
    service: str,
    region: str,
    credentials: tuple[str, str] | None = None,
    endpoint_url: str | None = None,
    config: BotoConfig | None = None,
) -> Any:
    """A new boto3 client, made from this process's one session per region, credentials and profile.

    A session reads each service's model (JSON, up to megabytes) the first time it makes a client
    of it: one session per target made every client pay that again. A boto3 session is not
    thread-safe, so clients are made under a lock; the clients themselves are.
    """
    key = (region, credentials, None if credentials else os.environ.get("AWS_PROFILE"))
    with _lock:
        session = _sessions.get(key)
        if session is None:
            access, secret = credentials or (None, None)
            session = boto3.Session(aws_access_key_id=access, aws_secret_access_key=secret, region_name=region)
            _sessions[key] = session
        return session.client(service, endpoint_url=endpoint_url, config=config)


def _client(target: AwsTarget, service: str) -> Any:
    key = (target, service)
    client = _clients.get(key)
    if client is None:
        endpoint = target.endpoint_for(service)
        client = new_client(service, target.region, target.credentials, endpoint, _boto_config())
        client = _clients.setdefault(key, client)  # two threads racing keep the same one
    return client


def sandbox_info(state_dir: Path) -> dict[str, Any] | None:
    """The running sandbox's published endpoints, or None when none is running."""
    path = state_dir / SANDBOX_FILE
    try:
        info: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    try:
        _http().get(f"{info['aws_endpoint_url']}/_opcd/ping").raise_for_status()
    except (httpx.HTTPError, KeyError):
        return None
    return info


@functools.cache
def _http() -> httpx.Client:
    """One HTTP client per process for the sandbox's ping: each new client builds a TLS context (~20 ms)."""
    return httpx.Client(timeout=2.0)


def resolve_target(state_dir: Path, region: str) -> AwsTarget:
    """Choose the AWS target for a project whose local state lives in ``state_dir``."""
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or region
    if endpoint := os.environ.get("AWS_ENDPOINT_URL"):
        info = sandbox_info(state_dir)
        ours = bool(info and info["aws_endpoint_url"] == endpoint)
        gateway = info.get("gateway", {}) if info and ours else {}
        endpoints = _service_endpoints(info) if info and ours else {}
        return AwsTarget("sandbox" if ours else "endpoint", region, endpoint, gateway=gateway, endpoints=endpoints)
    if os.environ.get("AWS_PROFILE") or os.environ.get("AWS_ACCESS_KEY_ID"):
        return AwsTarget("aws", region)
    if info := sandbox_info(state_dir):
        return AwsTarget(
            "sandbox",
            info.get("region", region),
            info["aws_endpoint_url"],
            credentials=("testing", "testing"),
            gateway=info.get("gateway", {}),
            endpoints=_service_endpoints(info),
        )
    return AwsTarget("aws", region)


def _service_endpoints(info: dict[str, Any]) -> dict[str, str]:
    return {"apprunner": info["apprunner_endpoint_url"]} if info.get("apprunner_endpoint_url") else {}


def error_code(exc: Exception) -> str:
    """The AWS error code of a botocore ClientError (``""`` for anything else)."""
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))
