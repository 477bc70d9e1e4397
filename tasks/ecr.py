"""ECR: the repository of a component's images; push a built image under its version and ``latest``.

A version tag names one image for ever: pushing another digest under an existing version tag is
refused before anything is sent. ``latest`` moves to each newly pushed version. Pushes go through
``skopeo`` with the credentials of ``GetAuthorizationToken``, written to a private auth file that
is deleted afterwards (never on a command line, never logged). Afterwards ``DescribeImages`` must
report the digest we computed for both tags.

An image already pushed to another region's repository is copied from there, registry to registry
(``skopeo copy --preserve-digests``, each registry's own credentials), and ``DescribeImages`` here
must then report the digest it has there: the same image in every region, built once.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from opcd.aws import AwsTarget, error_code
from opcd.errors import DeployFailed, InputError, ResourceMissing, VersionConflict
from opcd.progress import report
from tasks.images import Image

LATEST = "latest"


@dataclass(frozen=True)
class Repository:
    name: str
    uri: str  # host/name, as ECR reports it

    @property
    def host(self) -> str:
        return self.uri.split("/", 1)[0]

    def identifier(self, tag: str) -> str:
        return f"{self.uri}:{tag}"

    def tag_of(self, identifier: str) -> str | None:
        """``uri:v2`` → ``v2``; None for an image of another repository."""
        prefix = self.uri + ":"
        return identifier[len(prefix) :] if identifier.startswith(prefix) else None


def describe_repository(target: AwsTarget, name: str) -> Repository:
    ecr = target.client("ecr")
    try:
        answer = ecr.describe_repositories(repositoryNames=[name])["repositories"][0]
    except Exception as exc:
        if error_code(exc) == "RepositoryNotFoundException":
            raise ResourceMissing(
                f"ECR repository {name!r} does not exist in {target.region}",
                "create it (Terraform) or fix components.*.repository in opcd.toml",
            ) from None
        raise
    return Repository(name, str(answer["repositoryUri"]))


def tag_digest(target: AwsTarget, repository: str, tag: str) -> str | None:
    """The digest ECR has under ``tag``, or None."""
    try:
        details = target.client("ecr").describe_images(repositoryName=repository, imageIds=[{"imageTag": tag}])
    except Exception as exc:
        if error_code(exc) == "ImageNotFoundException":
            return None
        raise
    images = details.get("imageDetails") or []
    return str(images[0]["imageDigest"]) if images else None


def check_tag_free(target: AwsTarget, repository: Repository, image: Image) -> bool:
    """True when ``image.tag`` already holds this very image; VersionConflict when it holds another."""
    existing = tag_digest(target, repository.name, image.tag)
    if existing is None:
        return False
    if existing != image.digest:
        raise VersionConflict(
            f"{repository.name}:{image.tag} already exists in ECR as {existing}; this build is {image.digest}",
            "a version names one image: pick a new version for changed source",
        )
    return True


def _skopeo() -> str:
    path = shutil.which("skopeo")
    if path is None:
        raise InputError("skopeo is not installed; opcd pushes images with it", "Debian: apt-get install skopeo")
    return path


def _login(target: AwsTarget) -> tuple[dict[str, Any], bool]:
    """A registry auth file's content for ECR, and whether the registry speaks plain HTTP."""
    data = target.client("ecr").get_authorization_token()["authorizationData"][0]
    endpoint = str(data["proxyEndpoint"])
    host = endpoint.split("://", 1)[-1].rstrip("/")
    return {"auths": {host: {"auth": data["authorizationToken"]}}}, endpoint.startswith("http://")


def copy_image(target: AwsTarget, image: Image, repository: Repository, tags: list[str]) -> None:
    """``skopeo copy`` the OCI layout to ``repository`` under each tag, digests preserved."""
    _skopeo_copy(target, f"oci:{image.layout}:{image.tag}", repository, tags)


def _skopeo_copy(
    target: AwsTarget, source: str, repository: Repository, tags: list[str], source_target: AwsTarget | None = None
) -> None:
    """``skopeo copy SOURCE`` to ``repository`` under each tag, digests preserved; ``source_target``: the AWS of
    a ``docker://`` source (its registry's credentials beside the destination's)."""
    skopeo = _skopeo()
    auth, insecure = _login(target)
    source_insecure = False
    if source_target is not None:
        theirs, source_insecure = _login(source_target)
        auth["auths"] = {**theirs["auths"], **auth["auths"]}
    with tempfile.TemporaryDirectory(prefix="opcd-ecr-") as tmp:
        authfile = Path(tmp) / "auth.json"
        authfile.touch(mode=0o600)
        authfile.write_text(json.dumps(auth))
        for tag in tags:
            command = [
                skopeo, "copy", "--quiet", "--retry-times", "3", "--preserve-digests", "--authfile", str(authfile),
                *(["--dest-tls-verify=false"] if insecure else []),
                *(["--src-tls-verify=false"] if source_insecure else []),
                source, f"docker://{repository.identifier(tag)}",
            ]  # fmt: skip
            proc = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "HOME": tmp})
            if proc.returncode != 0:
                lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
                raise DeployFailed(
                    f"pushing {repository.identifier(tag)} failed: {' | '.join(lines[-2:]) or proc.returncode}",
                    "check the repository and your ECR permissions (ecr:InitiateLayerUpload, ecr:PutImage …)",
                )


def verify_tag(target: AwsTarget, repository: Repository, tag: str, digest: str) -> None:
    found = tag_digest(target, repository.name, tag)
    if found != digest:
        raise DeployFailed(f"ECR reports {repository.name}:{tag} as {found}, expected {digest} after the push")


@task(name="push-image", cache_policy=NO_CACHE)
def push_image(target: AwsTarget, image: Image, repository: Repository) -> bool:
    """Push ``image`` as ``:{version}`` and move ``:latest``; False when the version was already there."""
    logger = get_run_logger()
    if check_tag_free(target, repository, image):
        logger.info("%s is already in ECR as %s: not pushed again", repository.identifier(image.tag), image.digest)
        return False
    logger.info("Pushing %s (%s, %d bytes)", repository.identifier(image.tag), image.digest, image.size)
    report("push", f"{repository.identifier(image.tag)} ({image.size} bytes)")
    copy_image(target, image, repository, [image.tag])
    verify_tag(target, repository, image.tag, image.digest)
    logger.info("Moving %s to %s", repository.identifier(LATEST), image.digest)
    copy_image(target, image, repository, [LATEST])
    verify_tag(target, repository, LATEST, image.digest)
    return True


@task(name="copy-image", cache_policy=NO_CACHE)
def copy_from_region(
    target: AwsTarget, find_source: Callable[[], AwsTarget], source: str, repository: Repository, tag: str, digest: str
) -> bool:
    """The image ``digest`` of ``source`` (``uri:tag`` of another region's repository; ``find_source``: that
    region's AWS, asked only when a copy is needed) in ``repository`` as ``:tag`` and ``:latest``, registry to
    registry; ECR must report ``digest`` for both after. False when the tag held that digest already;
    VersionConflict when it holds another, or when the source's tag no longer names ``digest``."""
    logger = get_run_logger()
    existing = tag_digest(target, repository.name, tag)
    if existing == digest:
        logger.info("%s is already in ECR as %s: not copied again", repository.identifier(tag), digest)
        return False
    if existing is not None:
        raise VersionConflict(
            f"{repository.name}:{tag} already exists in ECR in {target.region} as {existing}; the build is {digest}",
            "a version names one image: pick a new version for changed source",
        )
    source_target = find_source()
    if (named := tag_digest(source_target, repository.name, tag)) != digest:  # a version's tag never moves
        raise VersionConflict(
            f"{source} is {named or 'gone'} in {source_target.region}, not the build's {digest}: nothing was copied",
            "a version names one image: deploy the version again from its build, or pick a new version",
        )
    logger.info("Copying %s to %s (%s)", source, repository.identifier(tag), digest)
    report("copy", f"{source} → {repository.identifier(tag)}")
    pinned = f"docker://{source.rpartition(':')[0]}@{digest}"  # by its digest: the build's image, whatever the tag
    _skopeo_copy(target, pinned, repository, [tag], source_target)
    verify_tag(target, repository, tag, digest)
    _skopeo_copy(target, pinned, repository, [LATEST], source_target)
    verify_tag(target, repository, LATEST, digest)
    return True
