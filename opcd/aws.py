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
        retries["max_attempts"] = 5
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

    def session(self) -> boto3.Session:
        if self.credentials:
            key, secret = self.credentials
            return boto3.Session(aws_access_key_id=key, aws_secret_access_key=secret, region_name=self.region)
        return boto3.Session(region_name=self.region)

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
_clients_lock = threading.Lock()


def _client(target: AwsTarget, service: str) -> Any:
    key = (target, service)
    with _clients_lock:
        if key not in _clients:
            endpoint = target.endpoint_for(service)
            _clients[key] = target.session().client(service, endpoint_url=endpoint, config=_boto_config())
        return _clients[key]


def sandbox_info(state_dir: Path) -> dict[str, Any] | None:
    """The running sandbox's published endpoints, or None when none is running."""
    path = state_dir / SANDBOX_FILE
    try:
        info: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    try:
        httpx.get(f"{info['aws_endpoint_url']}/_opcd/ping", timeout=2.0).raise_for_status()
    except (httpx.HTTPError, KeyError):
        return None
    return info


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
