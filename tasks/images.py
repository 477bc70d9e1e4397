"""Build a component's container image with the builder this machine has, into an OCI layout.

Builders, in the order ``builder = "auto"`` tries them: ``docker buildx`` (when a Docker engine
answers), ``buildah``, ``podman``. Every build is reproducible (timestamps fixed to the epoch), so
the same source gives the same image digest — which is what lets a push refuse a version tag that
already names another image. The result is an OCI image layout directory; :mod:`tasks.ecr` pushes
it with ``skopeo``, so the pushed manifest is byte for byte the one whose digest we computed.
Layer caching: buildah and podman keep their layer cache in ``<build cache>/containers``; buildx
uses its own cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from opcd.config import ImageComponent
from opcd.errors import BuildFailed, InputError
from opcd.progress import report
from opcd.versions import check_version, version_or_none

BUILDERS = ("docker", "buildah", "podman")
INSTALL_HINT = (
    "install one: Docker with buildx, or buildah (Debian: apt-get install buildah), or podman;"
    " or set components.<name>.builder"
)


@dataclass(frozen=True)
class Image:
    """A built image on local disk, as an OCI layout holding one manifest tagged ``tag``."""

    component: str
    version: str
    tag: str
    layout: Path
    digest: str  # sha256 of the manifest bytes: what ECR and App Runner will report
    size: int  # bytes of config + layers, compressed
    builder: str


def image_tag(version: str) -> str:
    """The image tag for a version: the version itself (a version's grammar is the image tag's)."""
    return check_version(version)


def version_of(tag: str | None) -> str | None:
    """The version an image tag stands for; None for a tag that is no version (``latest``, ``v1+x``)."""
    return version_or_none(tag)


def image_source_hash(comp: ImageComponent, source: Path) -> str:
    """sha256 of the build's own inputs: every file of the context (names and bytes) and the settings.

    Named build contexts outside the source (a host's ``/usr/bin``) are named, not hashed: when
    they change, the rebuilt image's digest tells.
    """
    digest = hashlib.sha256()
    settings = {"dockerfile": comp.dockerfile, "contexts": comp.build_contexts, "builder": comp.builder}
    digest.update(json.dumps(settings, sort_keys=True).encode() + b"\n")
    for root, dirs, names in os.walk(source):
        dirs[:] = sorted(d for d in dirs if d not in (".git", "node_modules", "__pycache__"))
        for name in sorted(names):
            path = Path(root) / name
            digest.update(path.relative_to(source).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _engine_answers() -> bool:
    try:
        proc = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, timeout=10)
        buildx = subprocess.run(["docker", "buildx", "version"], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0 and buildx.returncode == 0


def choose_builder(preferred: str = "auto") -> str:
    """The builder to use; InputError naming what to install when there is none."""
    if preferred != "auto":
        if not shutil.which(preferred):
            raise InputError(f"builder {preferred!r} is not installed", INSTALL_HINT)
        if preferred == "docker" and not _engine_answers():
            raise InputError("docker is installed but no Docker engine with buildx answers", INSTALL_HINT)
        return preferred
    if shutil.which("docker") and _engine_answers():
        return "docker"
    for name in ("buildah", "podman"):
        if shutil.which(name):
            return name
    raise InputError("no container builder found (docker buildx, buildah or podman)", INSTALL_HINT)


def storage_options(cache_dir: Path) -> list[str]:
    """buildah/podman storage under the build cache (vfs unless STORAGE_DRIVER says otherwise)."""
    base = cache_dir / "containers"
    driver = os.environ.get("STORAGE_DRIVER") or "vfs"
    return ["--root", str(base / "storage"), "--runroot", str(base / "run"), "--storage-driver", driver]


def build_commands(
    builder: str, context: Path, dockerfile: Path, name: str, layout: Path, tag: str,
    build_contexts: dict[str, Path], cache_dir: Path,
) -> list[list[str]]:  # fmt: skip
    """The command lines that build ``context`` into the OCI layout ``layout`` under ``tag``."""
    extra = [arg for key, path in sorted(build_contexts.items()) for arg in ("--build-context", f"{key}={path}")]
    if builder == "docker":
        return [[
            "docker", "buildx", "build", "--file", str(dockerfile), *extra, "--build-arg", "SOURCE_DATE_EPOCH=0",
            "--provenance=false", "--sbom=false",
            "--output", f"type=oci,dest={layout},tar=false,name={name}:{tag},rewrite-timestamp=true", str(context),
        ]]  # fmt: skip
    storage = storage_options(cache_dir)
    build = [
        builder, *storage, "build", "--file", str(dockerfile), *extra, "--layers", "--timestamp", "0",
        "--isolation", "chroot", "--tag", f"{name}:{tag}", str(context),
    ]  # fmt: skip
    if builder == "podman":
        build.remove("--isolation")
        build.remove("chroot")
    push = [builder, *storage, "push", "--quiet", f"{name}:{tag}", f"oci:{layout}:{tag}"]
    return [build, push]


def read_layout(layout: Path, tag: str) -> tuple[str, int]:
    """The manifest digest and image size of ``tag`` in an OCI layout."""
    try:
        index = json.loads((layout / "index.json").read_text())
    except (OSError, ValueError) as exc:
        raise BuildFailed(f"the builder wrote no OCI layout at {layout}: {exc}") from None
    for entry in index.get("manifests", []):
        annotations = entry.get("annotations") or {}
        if annotations.get("org.opencontainers.image.ref.name") in (tag, None) or len(index["manifests"]) == 1:
            digest = str(entry["digest"])
            manifest_bytes = (layout / "blobs" / "sha256" / digest.removeprefix("sha256:")).read_bytes()
            if f"sha256:{hashlib.sha256(manifest_bytes).hexdigest()}" != digest:
                raise BuildFailed(f"the OCI layout at {layout} is corrupt: manifest digest mismatch")
            manifest = json.loads(manifest_bytes)
            size = int(manifest["config"]["size"]) + sum(int(layer["size"]) for layer in manifest.get("layers", []))
            return digest, size
    raise BuildFailed(f"the OCI layout at {layout} has no image tagged {tag}")


def build(
    component: str, version: str, comp: ImageComponent, source: Path, root: Path, out_dir: Path, cache_dir: Path
) -> Image:
    """Build ``source`` (its Dockerfile) into ``out_dir/oci``; return the image and its digest."""
    dockerfile = source / comp.dockerfile
    if not dockerfile.is_file():
        raise InputError(f"{component}: no {comp.dockerfile} in {source}", "add one, or set components.*.dockerfile")
    contexts = {key: (root / path).resolve() for key, path in comp.build_contexts.items()}
    for key, path in contexts.items():
        if not path.is_dir():
            raise InputError(
                f"{component}: build context {key!r} is {path}, which is not a directory",
                f"fix components.{component}.build_contexts in opcd.toml",
            )
    builder = choose_builder(comp.builder)
    tag = image_tag(version)
    layout = out_dir / "oci"
    shutil.rmtree(layout, ignore_errors=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = f"opcd/{component}"
    log = out_dir / "build.log"
    with log.open("wb") as output:
        for command in build_commands(builder, source, dockerfile, name, layout, tag, contexts, cache_dir):
            proc = subprocess.run(command, stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            if proc.returncode != 0:
                lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
                why = " | ".join(lines[-3:]) or f"exit {proc.returncode}"
                raise BuildFailed(f"{builder} failed to build {component} {version}: {why}", f"full log: {log}")
    digest, size = read_layout(layout, tag)
    return Image(component, version, tag, layout, digest, size, builder)


@task(name="build-image", cache_policy=NO_CACHE)
def build_image(
    component: str, version: str, comp: ImageComponent, source: Path, root: Path, out_dir: Path, cache_dir: Path
) -> Image:
    logger = get_run_logger()
    logger.info("Building the %s image %s from %s/%s", component, version, source, comp.dockerfile)
    report("build", f"the {component} image {version} from {source.name}/{comp.dockerfile}")
    image = build(component, version, comp, source, root, out_dir, cache_dir)
    logger.info("Built %s:%s with %s: %s, %d bytes", component, image.tag, image.builder, image.digest, image.size)
    return image
