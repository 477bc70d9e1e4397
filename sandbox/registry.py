"""The sandbox's container registry: ECR's registry endpoint, which moto does not have.

moto keeps ECR's API (repositories, ``DescribeImages``, ``GetAuthorizationToken``) but has no
registry to push to or pull from. The sandbox pairs it with Debian's ``docker-registry`` (the
CNCF distribution registry) started on loopback, behind :class:`RegistryProxy`, which acts as
ECR's registry host does:

* it asks for HTTP Basic credentials and accepts only those ``GetAuthorizationToken`` hands out;
* it refuses repositories that do not exist in ECR (``NAME_UNKNOWN``, as ECR does);
* every manifest pushed under a tag is recorded in moto's ECR with ``PutImage`` and the real
  digest, so ``DescribeImages`` tells the truth about what the registry holds.

The sandbox rewrites ECR's answers (``repositoryUri``, ``proxyEndpoint``) to point at the proxy: product code
only ever sees a repository URI and credentials. Regions: each region's ECR is moto's own, and one proxy
serves them all; a repository of another region than the sandbox's has the region as the first part of its
path, ``127.0.0.1:PORT/us-west-2/NAME`` (real ECR: another host, ``….dkr.ecr.us-west-2.…/NAME``), so each
region keeps its own images (in its own part of the registry) and its own ``DescribeImages``.
:class:`ImageStore` is the pull side for the App Runner stand-in: it resolves an image identifier through ECR,
pulls the manifest, config and layers from the registry and unpacks them, so a service URL serves the deployed
image's files.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import io
import json
import re
import shutil
import socket
import subprocess
import tarfile
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import httpx
from moto.ecr.exceptions import ImageAlreadyExistsException
from moto.ecr.models import ecr_backends

from sandbox.apprunner import ImageUnavailable, ServedImage

StartResponse = Callable[..., Any]
_MANIFEST_PUT = re.compile(r"^/v2/(?P<name>.+)/manifests/(?P<reference>[^/]+)$")
_REPOSITORY = re.compile(r"^/v2/(?P<name>.+?)/(blobs|manifests|tags)/")
_HOP_BY_HOP = {"connection", "transfer-encoding", "keep-alive", "content-encoding", "content-length"}
MANIFEST_TYPES = (
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
PUBLIC_PLACEHOLDER = "public.ecr.aws/aws-containers/hello-app-runner:latest"


_REGION_PART = re.compile(r"^(?P<region>[a-z]{2}(?:-[a-z]+)+-\d)/(?P<name>.+)$")


def ecr_backend(account_id: str, region: str) -> Any:
    return ecr_backends[account_id][region]


def in_region(path_name: str, default: str) -> tuple[str, str]:
    """A repository's name as the registry sees it → (its region, its name in that region's ECR):
    ``us-west-2/web`` → ``("us-west-2", "web")``; ``web`` → ``(default, "web")``."""
    match = _REGION_PART.match(path_name)
    return (match["region"], match["name"]) if match else (default, path_name)


def auth_token(account_id: str) -> str:
    """The ``authorizationToken`` moto's ``GetAuthorizationToken`` hands out for ``account_id``."""
    return base64.b64encode(f"AWS:{account_id}-auth-token".encode()).decode()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LocalRegistry:
    """Debian's ``docker-registry`` on 127.0.0.1, storing under ``work_dir``; absent when not installed."""

    def __init__(self, work_dir: Path, binary: str | None = None) -> None:
        self.binary = binary or shutil.which("docker-registry")
        self.work_dir = work_dir
        self.url: str | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def missing(self) -> str | None:
        if self.binary is None:
            return "the sandbox has no registry: install Debian's docker-registry (apt-get install docker-registry)"
        return None

    def start(self, timeout: float = 30.0) -> None:
        if self.binary is None:
            return
        port = _free_port()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        config = self.work_dir / "config.yml"
        config.write_text(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.work_dir / 'data'}\n  delete:\n    enabled: true\n"
            f"http:\n  addr: 127.0.0.1:{port}\n"
        )
        with (self.work_dir / "registry.log").open("wb") as log:
            self._proc = subprocess.Popen(
                [self.binary, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/v2/", timeout=1.0).status_code == 200:
                    self.url = url
                    return
            except httpx.HTTPError:
                pass
            if self._proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        tail = (self.work_dir / "registry.log").read_text(errors="replace")[-300:]
        raise RuntimeError(f"docker-registry did not start: {tail}")

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        self._proc = None


class RegistryProxy:
    """WSGI: ECR's registry host in front of the local registry (auth, repository check, PutImage)."""

    def __init__(self, registry: LocalRegistry, account_id: str, region: str) -> None:
        self.registry = registry
        self.account_id = account_id
        self.region = region
        self._client = httpx.Client(timeout=60.0)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if self.registry.missing or self.registry.url is None:
            return _registry_error(start_response, 503, "UNAVAILABLE", self.registry.missing or "registry is down")
        if not self._authorized(environ.get("HTTP_AUTHORIZATION", "")):
            start_response(
                "401 Unauthorized",
                [
                    ("Content-Type", "application/json"),
                    ("WWW-Authenticate", 'Basic realm="ECR (opcd sandbox)"'),
                    ("Docker-Distribution-Api-Version", "registry/2.0"),
                ],
            )
            body = {"errors": [{"code": "UNAUTHORIZED", "message": "use the credentials of GetAuthorizationToken"}]}
            return [json.dumps(body).encode()]
        path = environ.get("PATH_INFO", "")
        if (match := _REPOSITORY.match(path)) and not self._exists(*in_region(match["name"], self.region)):
            message = f"The repository with name '{match['name']}' does not exist in the registry with id"
            return _registry_error(start_response, 404, "NAME_UNKNOWN", f"{message} '{self.account_id}'")
        return self._forward(environ, start_response, path)

    def close(self) -> None:
        self._client.close()

    def _authorized(self, header: str) -> bool:
        scheme, _, value = header.partition(" ")
        return scheme.lower() == "basic" and value.strip() == auth_token(self.account_id)

    def _exists(self, region: str, name: str) -> bool:
        """Whether ECR of ``region`` has the repository ``name``."""
        return name in ecr_backend(self.account_id, region).repositories

    def _forward(self, environ: dict[str, Any], start_response: StartResponse, path: str) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        headers = {
            key[5:].replace("_", "-").title(): value
            for key, value in environ.items()
            if key.startswith("HTTP_")
            and key not in ("HTTP_AUTHORIZATION", "HTTP_CONNECTION", "HTTP_TRANSFER_ENCODING")
        }
        if environ.get("CONTENT_TYPE"):
            headers["Content-Type"] = environ["CONTENT_TYPE"]
        body = _read_body(environ)
        query = environ.get("QUERY_STRING", "")
        url = f"{self.registry.url}{path}" + (f"?{query}" if query else "")
        try:
            answer = self._client.request(method, url, headers=headers, content=body)
        except httpx.HTTPError as exc:
            return _registry_error(start_response, 503, "UNAVAILABLE", f"the registry did not answer: {exc}")
        if method == "PUT" and answer.status_code == 201 and (match := _MANIFEST_PUT.match(path)):
            try:
                self._record(match["name"], match["reference"], body, headers.get("Content-Type"), answer)
            except Exception as exc:  # ECR would not have taken it either: say so, as a registry does
                return _registry_error(start_response, 400, "MANIFEST_INVALID", f"ECR refused the image: {exc}")
        out = [(k, v) for k, v in answer.headers.items() if k.lower() not in _HOP_BY_HOP]
        content = answer.content
        length = answer.headers.get("content-length") if method == "HEAD" else str(len(content))
        if length is not None:
            out.append(("Content-Length", length))
        start_response(f"{answer.status_code} {answer.reason_phrase}", out)
        return [b"" if method == "HEAD" else content]

    def _record(
        self, name: str, reference: str, manifest: bytes, media_type: str | None, answer: httpx.Response
    ) -> None:
        """A tagged manifest push becomes an image in moto's ECR, under the registry's digest."""
        if reference.startswith("sha256:"):
            return  # pushed by digest: nothing to tag
        digest = answer.headers.get("Docker-Content-Digest") or f"sha256:{hashlib.sha256(manifest).hexdigest()}"
        region, name = in_region(name, self.region)
        with contextlib.suppress(ImageAlreadyExistsException):  # the same manifest again under the same tag
            ecr_backend(self.account_id, region).put_image(name, manifest.decode(), reference, media_type, digest)


def _read_body(environ: dict[str, Any]) -> bytes:
    stream = environ["wsgi.input"]
    if environ.get("CONTENT_LENGTH"):
        data: bytes = stream.read(int(environ["CONTENT_LENGTH"]))
        return data
    if environ.get("wsgi.input_terminated"):  # chunked upload, de-chunked by the server
        return bytes(stream.read())
    return b""


def _registry_error(start_response: StartResponse, status: int, code: str, message: str) -> list[bytes]:
    start_response(
        f"{status} X", [("Content-Type", "application/json"), ("Docker-Distribution-Api-Version", "registry/2.0")]
    )
    return [json.dumps({"errors": [{"code": code, "message": message}]}).encode()]


def rewrite_ecr(body: bytes, account_id: str, region: str, registry_host: str, default: str | None = None) -> bytes:
    """ECR's answers name the proxy: repository URIs and the registry endpoint; a repository of ``region`` other
    than the sandbox's (``default``) is ``registry_host/REGION/NAME``."""
    real = f"{account_id}.dkr.ecr.{region}.amazonaws.com"
    text = body.decode().replace(f"https://{real}", f"http://{registry_host}")
    if default is not None and region != default:
        text = text.replace(f"{real}/", f"{registry_host}/{region}/")
    return text.replace(real, registry_host).encode()


class ImageStore:
    """Resolve an App Runner image identifier through ECR and unpack the image from the registry."""

    def __init__(self, work_dir: Path, registry: LocalRegistry, account_id: str, region: str) -> None:
        self.work_dir = work_dir
        self.registry = registry
        self.account_id = account_id
        self.region = region
        self.registry_host = ""  # host:port of the proxy, set once it listens
        self._lock = threading.Lock()

    def _parse(self, identifier: str) -> tuple[str, str, str] | None:
        """``host/repository:tag`` (or ``@sha256:…``) → (host, repository, reference)."""
        match = re.match(r"^(?P<host>[^/]+)/(?P<name>[a-z0-9._/-]+?)(?::(?P<tag>[\w.-]+)|@(?P<digest>sha256:\w+))?$",
                         identifier)  # fmt: skip
        if not match:
            return None
        return match["host"], match["name"], match["tag"] or match["digest"] or "latest"

    def check(self, identifier: str, repository_type: str) -> str | None:
        """Why App Runner would refuse this identifier at UpdateService time, or None."""
        if repository_type == "ECR_PUBLIC":
            return None if identifier.startswith("public.ecr.aws/") else f"{identifier} is not a public ECR image"
        parsed = self._parse(identifier)
        real = f"{self.account_id}.dkr.ecr.{self.region}.amazonaws.com"
        if parsed is None or parsed[0] not in (self.registry_host, real):
            return f"Invalid image identifier {identifier!r}: expected {self.registry_host or real}/REPOSITORY:TAG"
        if parsed[1] not in ecr_backend(self.account_id, self.region).repositories:
            return f"The ECR repository {parsed[1]!r} does not exist"
        return None

    def resolve(self, identifier: str, repository_type: str) -> ServedImage:
        if repository_type == "ECR_PUBLIC":
            return ServedImage(identifier, None, None)  # cannot be pulled here: the stand-in's placeholder
        parsed = self._parse(identifier)
        if parsed is None:
            raise ImageUnavailable(f"cannot parse image identifier {identifier!r}")
        _host, name, reference = parsed
        region, ecr_name = in_region(name, self.region)
        digest = self._digest(region, ecr_name, reference)
        root = self.work_dir / digest.replace(":", "-")
        with self._lock:
            if not (root / "config.json").exists():
                self._unpack(name, digest, root)
        config = json.loads((root / "config.json").read_text()).get("config") or {}
        workdir = str(config.get("WorkingDir") or "/").lstrip("/")
        ports = sorted(config.get("ExposedPorts") or {})
        return ServedImage(identifier, digest, root / "rootfs" / workdir, ports[0].split("/")[0] if ports else None)

    def _digest(self, region: str, name: str, reference: str) -> str:
        backend = ecr_backend(self.account_id, region)
        repository = backend.repositories.get(name)
        if repository is None:
            raise ImageUnavailable(f"repository {name} does not exist")
        for image in repository.images:
            if reference == image.get_image_digest() or reference in (image.image_tags or []):
                return str(image.get_image_digest())
        raise ImageUnavailable(f"{name}:{reference} not found in ECR")

    def _unpack(self, name: str, digest: str, root: Path) -> None:
        if self.registry.url is None:
            raise ImageUnavailable(self.registry.missing or "the registry is down")
        base = f"{self.registry.url}/v2/{name}"
        with httpx.Client(timeout=60.0) as client:
            answer = client.get(f"{base}/manifests/{digest}", headers={"Accept": ", ".join(MANIFEST_TYPES)})
            if answer.status_code != 200:
                raise ImageUnavailable(f"{name}@{digest}: the registry answered {answer.status_code}")
            manifest = answer.json()
            staging = root.with_name(root.name + ".partial")
            shutil.rmtree(staging, ignore_errors=True)
            (staging / "rootfs").mkdir(parents=True)
            for layer in manifest.get("layers", []):
                blob = client.get(f"{base}/blobs/{layer['digest']}")
                blob.raise_for_status()
                _apply_layer(blob.content, layer.get("mediaType", ""), staging / "rootfs")
            config = client.get(f"{base}/blobs/{manifest['config']['digest']}")
            config.raise_for_status()
            (staging / "config.json").write_bytes(config.content)
        shutil.rmtree(root, ignore_errors=True)
        staging.rename(root)


def _apply_layer(data: bytes, media_type: str, rootfs: Path) -> None:
    """Unpack one layer over ``rootfs``: whiteouts delete, everything stays inside ``rootfs``."""
    if media_type.endswith("gzip") or data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    top = rootfs.resolve()
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        members = []
        for member in archive.getmembers():
            path = Path(member.name)
            if path.name.startswith(".wh."):
                parent = (top / path.parent).resolve()
                if parent != top and top not in parent.parents:
                    raise tarfile.OutsideDestinationError(member, str(parent))
                victim = parent / path.name[4:]
                if path.name == ".wh..wh..opq":
                    for child in list(parent.iterdir()) if parent.is_dir() else []:
                        if child.is_dir() and not child.is_symlink():
                            shutil.rmtree(child)
                        else:
                            child.unlink()
                elif victim.is_dir() and not victim.is_symlink():
                    shutil.rmtree(victim, ignore_errors=True)
                else:
                    victim.unlink(missing_ok=True)
                continue
            members.append(member)
        archive.extractall(rootfs, members=members, filter="data")
