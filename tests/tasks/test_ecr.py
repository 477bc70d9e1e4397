"""ECR (moto in this process) and the push through skopeo (a stand-in script on PATH that records its call)."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from opcd.aws import AwsTarget
from opcd.errors import DeployFailed, InputError, ResourceMissing, VersionConflict
from tasks.ecr import Repository, check_tag_free, copy_image, describe_repository, push_image, tag_digest, verify_tag
from tasks.images import Image
from tests.tasks.conftest import logged

MANIFEST = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "config": {}, "layers": []})  # fmt: skip
OTHER = "sha256:" + "0" * 64


@pytest.fixture
def repository(moto_target: AwsTarget) -> Repository:
    moto_target.client("ecr").create_repository(repositoryName="op/frontend")
    return describe_repository(moto_target, "op/frontend")


def image(tmp_path: Path, digest: str = OTHER, tag: str = "v1") -> Image:
    return Image("frontend", tag, tag, tmp_path / "layout", digest, 1234, "buildah")


def put(target: AwsTarget, tag: str) -> str:
    """Put the manifest under ``tag``; the digest ECR (moto) gives it."""
    answer = target.client("ecr").put_image(repositoryName="op/frontend", imageManifest=MANIFEST, imageTag=tag)
    return str(answer["image"]["imageId"]["imageDigest"])


def test_a_repository_is_described_by_its_uri(repository: Repository) -> None:
    assert repository.uri == "123456789012.dkr.ecr.us-east-1.amazonaws.com/op/frontend"
    assert repository.host == "123456789012.dkr.ecr.us-east-1.amazonaws.com"
    assert repository.tag_of(repository.identifier("v2")) == "v2"
    assert repository.tag_of("elsewhere.example/op/frontend:v2") is None


def test_a_missing_repository_says_how_to_fix_it(moto_target: AwsTarget) -> None:
    with pytest.raises(ResourceMissing) as caught:
        describe_repository(moto_target, "nope")
    assert str(caught.value) == (
        "ECR repository 'nope' does not exist in us-east-1 — create it (Terraform) or fix components.*.repository"
        " in opcd.toml"
    )


def test_a_version_tag_names_one_image_for_ever(moto_target: AwsTarget, repository: Repository, tmp_path: Path) -> None:
    assert tag_digest(moto_target, "op/frontend", "v1") is None
    assert check_tag_free(moto_target, repository, image(tmp_path)) is False
    digest = put(moto_target, "v1")
    assert tag_digest(moto_target, "op/frontend", "v1") == digest != OTHER
    assert check_tag_free(moto_target, repository, image(tmp_path, digest)) is True  # the very image: not pushed
    with pytest.raises(VersionConflict) as caught:
        check_tag_free(moto_target, repository, image(tmp_path, OTHER))
    assert str(caught.value) == (
        f"op/frontend:v1 already exists in ECR as {digest}; this build is {OTHER}"
        " — a version names one image: pick a new version for changed source"
    )


def test_a_tag_read_back_with_another_digest_fails_the_push(moto_target: AwsTarget, repository: Repository) -> None:
    digest = put(moto_target, "latest")
    verify_tag(moto_target, repository, "latest", digest)
    with pytest.raises(DeployFailed) as caught:
        verify_tag(moto_target, repository, "latest", OTHER)
    assert str(caught.value) == f"ECR reports op/frontend:latest as {digest}, expected {OTHER} after the push"


def test_an_image_already_pushed_is_not_pushed_again(
    moto_target: AwsTarget, repository: Repository, tmp_path: Path, run_log: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setenv("PATH", str(tmp_path))  # no skopeo: it must not be needed
    digest = put(moto_target, "v1")
    assert push_image.fn(moto_target, image(tmp_path, digest), repository) is False
    assert logged(run_log) == [f"{repository.uri}:v1 is already in ECR as {digest}: not pushed again"]


def test_without_skopeo_the_push_says_how_to_install_it(
    moto_target: AwsTarget, repository: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(InputError) as caught:
        copy_image(moto_target, image(tmp_path), repository, ["v1"])
    assert str(caught.value) == "skopeo is not installed; opcd pushes images with it — Debian: apt-get install skopeo"


FAKE_SKOPEO = """#!/bin/sh
# records its arguments and the auth file it was given, then fails as a refused push does
out="$RECORD"
printf '%s\\n' "$@" > "$out/argv"
while [ $# -gt 0 ]; do
  if [ "$1" = --authfile ]; then cp "$2" "$out/auth.json"; stat -c %a "$2" > "$out/mode"; echo "$2" > "$out/path"; fi
  shift
done
echo 'time="..." level=info msg="trying"' >&2
echo 'Error: writing blob: unauthorized: authentication required' >&2
exit 1
"""


def test_a_refused_push_fails_with_skopeos_last_words_and_the_token_never_on_a_command_line(
    moto_target: AwsTarget, repository: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir, record = tmp_path / "bin", tmp_path / "record"
    bin_dir.mkdir()
    record.mkdir()
    skopeo = bin_dir / "skopeo"
    skopeo.write_text(FAKE_SKOPEO)
    skopeo.chmod(skopeo.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("RECORD", str(record))
    with pytest.raises(DeployFailed) as caught:
        copy_image(moto_target, image(tmp_path), repository, ["v1"])
    assert str(caught.value) == (
        f'pushing {repository.uri}:v1 failed: time="..." level=info msg="trying" | Error: writing blob:'
        " unauthorized: authentication required — check the repository and your ECR permissions"
        " (ecr:InitiateLayerUpload, ecr:PutImage …)"
    )
    argv = (record / "argv").read_text().splitlines()
    assert argv[-2:] == [f"oci:{tmp_path / 'layout'}:v1", f"docker://{repository.uri}:v1"]
    auth: dict[str, Any] = json.loads((record / "auth.json").read_text())
    [(host, entry)] = auth["auths"].items()
    token = entry["auth"]
    assert base64.b64decode(token).startswith(b"AWS:")  # GetAuthorizationToken's user:password
    assert token not in "\n".join(argv)
    assert (record / "mode").read_text().strip() == "600"
    assert not Path((record / "path").read_text().strip()).exists()  # deleted afterwards


def test_a_copy_from_another_region_refuses_a_source_tag_that_names_another_image(
    moto_target: AwsTarget, repository: Repository, run_log: pytest.LogCaptureFixture
) -> None:
    from dataclasses import replace

    from tasks.ecr import copy_from_region

    west = replace(moto_target, region="us-west-2")
    west.client("ecr").create_repository(repositoryName="op/frontend")
    there = describe_repository(west, "op/frontend")
    moved = put(moto_target, "v1")  # us-east-1's v1 is another image than the build's (OTHER)

    with pytest.raises(VersionConflict, match=f"frontend:v1 is {moved} in us-east-1, not the build's {OTHER}"):
        copy_from_region.fn(west, lambda: moto_target, repository.identifier("v1"), there, "v1", OTHER)
    assert tag_digest(west, "op/frontend", "v1") is None  # nothing copied
