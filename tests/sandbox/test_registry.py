"""The sandbox's ECR registry: credentials, unknown repositories, digests recorded in ECR, layers."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import shutil
import tarfile
from pathlib import Path
from typing import Any

import httpx
import pytest

from sandbox.apprunner import ImageUnavailable
from sandbox.registry import _apply_layer, auth_token, rewrite_ecr
from tests.conftest import Project
from tests.regions import client_in

needs_registry = pytest.mark.skipif(not shutil.which("docker-registry"), reason="needs docker-registry")
MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def login(project: Project, region: str | None = None) -> tuple[str, str, dict[str, str]]:
    ecr = client_in(project, "ecr", region) if region else project.client("ecr")
    data = ecr.get_authorization_token()["authorizationData"][0]
    repository = ecr.describe_repositories(repositoryNames=["outreachpass-frontend"])
    uri = repository["repositories"][0]["repositoryUri"]
    return data["proxyEndpoint"], uri, {"Authorization": f"Basic {data['authorizationToken']}"}


def tar_layer(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return gzip.compress(buffer.getvalue(), mtime=0)


def push_blob(client: httpx.Client, base: str, name: str, data: bytes) -> str:
    digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
    start = client.post(f"{base}/v2/{name}/blobs/uploads/")
    assert start.status_code == 202, start.text
    location = start.headers["Location"]
    done = client.put(f"{location}{'&' if '?' in location else '?'}digest={digest}", content=data)
    assert done.status_code == 201, done.text
    return digest


def push_image(project: Project, files: dict[str, bytes], tag: str, region: str | None = None) -> str:
    endpoint, uri, auth = login(project, region)
    name = uri.split("/", 1)[1]
    with httpx.Client(headers=auth, timeout=30) as client:
        layer = tar_layer(files)
        config = json.dumps({"config": {"WorkingDir": "/www", "ExposedPorts": {"8080/tcp": {}}}}).encode()
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": push_blob(client, endpoint, name, config), "size": len(config)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        "digest": push_blob(client, endpoint, name, layer), "size": len(layer)}],
        }).encode()  # fmt: skip
        answer = client.put(f"{endpoint}/v2/{name}/manifests/{tag}", content=manifest,
                            headers={"Content-Type": MANIFEST})  # fmt: skip
        assert answer.status_code == 201, answer.text
        return f"sha256:{hashlib.sha256(manifest).hexdigest()}"


def test_ecr_answers_name_the_sandbox_registry(project: Project) -> None:
    endpoint, uri, auth = login(project)
    assert endpoint.startswith("http://127.0.0.1:") and uri == f"{endpoint[7:]}/outreachpass-frontend"
    assert base64.b64decode(auth["Authorization"][6:]).startswith(b"AWS:")
    body = b'{"repositoryUri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/x", "p": "https://123456789012.dkr.ecr.us-east-1.amazonaws.com"}'  # noqa: E501
    assert json.loads(rewrite_ecr(body, "123456789012", "us-east-1", "127.0.0.1:5")) == {
        "repositoryUri": "127.0.0.1:5/x", "p": "http://127.0.0.1:5",
    }  # fmt: skip


@needs_registry
def test_credentials_are_required_and_unknown_repositories_refused(project: Project) -> None:
    endpoint, uri, auth = login(project)
    anonymous = httpx.get(f"{endpoint}/v2/", timeout=10)
    assert anonymous.status_code == 401 and anonymous.headers["WWW-Authenticate"].startswith("Basic")
    wrong = httpx.get(f"{endpoint}/v2/", headers={"Authorization": "Basic " + base64.b64encode(b"AWS:x").decode()})
    assert wrong.status_code == 401
    assert httpx.get(f"{endpoint}/v2/", headers=auth, timeout=10).status_code == 200
    unknown = httpx.get(f"{endpoint}/v2/nope/tags/list", headers=auth, timeout=10)
    assert unknown.status_code == 404 and unknown.json()["errors"][0]["code"] == "NAME_UNKNOWN"
    assert auth["Authorization"] == f"Basic {auth_token('123456789012')}"


@needs_registry
def test_a_push_is_recorded_in_ecr_with_its_digest_and_can_be_served(project: Project, sandbox: Any) -> None:
    digest = push_image(project, {"www/index.html": b"<h1>hi</h1>"}, "v1")
    details = project.client("ecr").describe_images(repositoryName="outreachpass-frontend")["imageDetails"]
    assert [(d["imageDigest"], d["imageTags"]) for d in details] == [(digest, ["v1"])]
    _endpoint, uri, _auth = login(project)
    served = sandbox.images.resolve(f"{uri}:v1", "ECR")
    assert served.digest == digest and served.port == "8080"
    assert (served.root / "index.html").read_bytes() == b"<h1>hi</h1>"
    assert sandbox.images.check(f"{uri}:v1", "ECR") is None
    assert "does not exist" in str(sandbox.images.check(uri.replace("outreachpass-frontend", "other") + ":v1", "ECR"))
    assert "Invalid image identifier" in str(sandbox.images.check("docker.io/library/nginx:1", "ECR"))
    with pytest.raises(ImageUnavailable, match="outreachpass-frontend:v9 not found in ECR"):
        sandbox.images.resolve(f"{uri}:v9", "ECR")


def test_layers_apply_whiteouts_and_stay_inside(tmp_path: Path) -> None:
    _apply_layer(tar_layer({"www/a.txt": b"a", "www/b.txt": b"b", "etc/x": b"x"}), "gzip", tmp_path)
    _apply_layer(tar_layer({"www/.wh.a.txt": b"", "etc/.wh..wh..opq": b""}), "gzip", tmp_path)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()) == ["www/b.txt"]
    with pytest.raises(tarfile.TarError):
        _apply_layer(tar_layer({"../escape.txt": b"no"}), "gzip", tmp_path / "www")
    assert not (tmp_path / "escape.txt").exists()
    (tmp_path / "keep.txt").write_text("outside the image")
    for whiteout in ("../.wh.keep.txt", "../.wh..wh..opq"):
        with pytest.raises(tarfile.TarError):
            _apply_layer(tar_layer({whiteout: b""}), "gzip", tmp_path / "www")
    assert (tmp_path / "keep.txt").read_text() == "outside the image"


@needs_registry
def test_each_region_has_its_own_repository_uri_and_images(project: Project, sandbox: Any) -> None:
    west = client_in(project, "ecr", "us-west-2")
    west.create_repository(repositoryName="outreachpass-frontend")
    endpoint, uri, auth = login(project, "us-west-2")
    east_uri = login(project)[1]
    assert uri == f"{endpoint[7:]}/us-west-2/outreachpass-frontend"
    assert east_uri == f"{endpoint[7:]}/outreachpass-frontend"
    digest = push_image(project, {"www/index.html": b"<h1>west</h1>"}, "v1", "us-west-2")
    details = west.describe_images(repositoryName="outreachpass-frontend")["imageDetails"]
    assert [(d["imageDigest"], d["imageTags"]) for d in details] == [(digest, ["v1"])]
    assert project.client("ecr").describe_images(repositoryName="outreachpass-frontend")["imageDetails"] == []
    served = sandbox.images.resolve(f"{uri}:v1", "ECR")
    assert served.digest == digest and (served.root / "index.html").read_bytes() == b"<h1>west</h1>"
    with pytest.raises(ImageUnavailable, match="not found in ECR"):  # us-east-1's repository has no image
        sandbox.images.resolve(f"{east_uri}:v1", "ECR")
    west.delete_repository(repositoryName="outreachpass-frontend", force=True)
    gone = httpx.get(f"{endpoint}/v2/us-west-2/outreachpass-frontend/tags/list", headers=auth, timeout=10)
    assert gone.status_code == 404 and gone.json()["errors"][0]["code"] == "NAME_UNKNOWN"
    body = b'{"u": "123456789012.dkr.ecr.us-west-2.amazonaws.com/x", "p": "https://123456789012.dkr.ecr.us-west-2.amazonaws.com"}'  # noqa: E501
    assert json.loads(rewrite_ecr(body, "123456789012", "us-west-2", "127.0.0.1:5", "us-east-1")) == {
        "u": "127.0.0.1:5/us-west-2/x", "p": "http://127.0.0.1:5",
    }  # fmt: skip
