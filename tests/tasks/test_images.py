"""Image builds: the builder chosen, reproducible digests, clear errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from opcd.config import AppRunnerComponent
from opcd.errors import BuildFailed, InputError
from tasks import images
from tests.conftest import FRONTEND

HAS_BUILDAH = bool(shutil.which("buildah"))
COMPONENT = AppRunnerComponent(
    kind="apprunner", source="frontend", repository="r", build_contexts={"tools": "/usr/bin"}
)


def test_no_builder_names_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(images.shutil, "which", lambda name: None)
    with pytest.raises(InputError) as caught:
        images.choose_builder("auto")
    assert "no container builder found (docker buildx, buildah or podman)" in str(caught.value)
    assert "apt-get install buildah" in str(caught.value)
    with pytest.raises(InputError, match="builder 'podman' is not installed"):
        images.choose_builder("podman")


def test_a_docker_client_without_an_engine_is_passed_over(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(images.shutil, "which", lambda name: f"/usr/bin/{name}" if name != "podman" else None)
    monkeypatch.setattr(images, "_engine_answers", lambda: False)
    assert images.choose_builder("auto") == "buildah"
    with pytest.raises(InputError, match="no Docker engine with buildx answers"):
        images.choose_builder("docker")


def test_commands_per_builder(tmp_path: Path) -> None:
    contexts = {"tools": Path("/usr/bin")}
    docker = images.build_commands("docker", tmp_path, tmp_path / "Dockerfile", "opcd/web", tmp_path / "oci", "v1",
                                   contexts, tmp_path)  # fmt: skip
    assert len(docker) == 1 and docker[0][:3] == ["docker", "buildx", "build"]
    assert f"type=oci,dest={tmp_path / 'oci'},tar=false,name=opcd/web:v1,rewrite-timestamp=true" in docker[0]
    assert "--build-context" in docker[0] and "tools=/usr/bin" in docker[0]
    build, push = images.build_commands("podman", tmp_path, tmp_path / "Dockerfile", "opcd/web", tmp_path / "oci",
                                        "v1", contexts, tmp_path)  # fmt: skip
    assert build[0] == "podman" and "--timestamp" in build and "--isolation" not in build
    assert push[-2:] == ["opcd/web:v1", f"oci:{tmp_path / 'oci'}:v1"]


def test_image_tag_and_bad_layouts(tmp_path: Path) -> None:
    assert images.image_tag("2026-11-29_1") == "2026-11-29_1"  # a version is its own tag
    with pytest.raises(BuildFailed, match="wrote no OCI layout"):
        images.read_layout(tmp_path, "v1")
    blob = tmp_path / "blobs" / "sha256"
    blob.mkdir(parents=True)
    (blob / ("0" * 64)).write_text("{}")
    index = {
        "manifests": [{"digest": "sha256:" + "0" * 64, "annotations": {"org.opencontainers.image.ref.name": "v1"}}]
    }
    (tmp_path / "index.json").write_text(json.dumps(index))
    with pytest.raises(BuildFailed, match="manifest digest mismatch"):
        images.read_layout(tmp_path, "v1")


@pytest.mark.parametrize(
    ("tag", "version"),
    [("v2", "v2"), ("2026-11-29_1", "2026-11-29_1"), ("main.3f9c2e1", "main.3f9c2e1"), ("latest", None),
     ("v13\n", None), ("v\uff11\uff13", None), (None, None)],
)  # fmt: skip
def test_version_of_a_tag_is_the_tag_when_it_is_a_version(tag: str | None, version: str | None) -> None:
    assert images.version_of(tag) == version


def test_missing_dockerfile_or_context_is_bad_input(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no Dockerfile in"):
        images.build("frontend", "v1", COMPONENT, tmp_path, tmp_path, tmp_path / "out", tmp_path)
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    broken = COMPONENT.model_copy(update={"build_contexts": {"tools": "no/such/dir"}})
    with pytest.raises(InputError, match="build context 'tools' is .* not a directory"):
        images.build("frontend", "v1", broken, tmp_path, tmp_path, tmp_path / "out", tmp_path)


@pytest.mark.skipif(not HAS_BUILDAH, reason="needs buildah (make test installs it)")
def test_same_source_same_digest_and_a_change_changes_it(tmp_path: Path) -> None:
    source = tmp_path / "frontend"
    shutil.copytree(FRONTEND, source)
    cache = tmp_path / "cache"
    first = images.build("frontend", "v1", COMPONENT, source, tmp_path, tmp_path / "a", cache)
    again = images.build("frontend", "v1", COMPONENT, source, tmp_path, tmp_path / "b", tmp_path / "fresh-cache")
    assert first.builder == "buildah" and first.digest == again.digest and first.digest.startswith("sha256:")
    assert first.size > 500_000  # busybox is in it
    (source / "site" / "index.html").write_text("<h1>changed</h1>")
    changed = images.build("frontend", "v1", COMPONENT, source, tmp_path, tmp_path / "c", cache)
    assert changed.digest != first.digest


@pytest.mark.skipif(not HAS_BUILDAH, reason="needs buildah (make test installs it)")
def test_a_failing_build_shows_the_builders_words(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM scratch\nCOPY missing.txt /\n")
    plain = COMPONENT.model_copy(update={"build_contexts": {}})
    with pytest.raises(BuildFailed) as caught:
        images.build("frontend", "v1", plain, tmp_path, tmp_path, tmp_path / "out", tmp_path / "cache")
    assert "buildah failed to build frontend v1" in str(caught.value) and "missing.txt" in str(caught.value)
    assert "full log:" in str(caught.value)
