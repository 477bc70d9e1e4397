"""The frontend on ECS in a prod of two regions (examples/outreachpass/opcd-ecs-regions.toml): the image built
once and copied to us-west-2's ECR (the same digest); us-east-1 deployed alone first, then us-west-2; a health
failure in us-west-2 rolls back both regions, us-east-1's previous revision live and verified."""

from __future__ import annotations

import shutil
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from sandbox.slack import SlackSink
from tests.conftest import Project, fresh_project, start_in_thread, wait_for_pending
from tests.flows.test_ecs_deploy import lay_out_ecs
from tests.flows.test_regions import history, ledger
from tests.regions import client_in

pytestmark = pytest.mark.skipif(
    not (shutil.which("buildah") and shutil.which("skopeo") and shutil.which("docker-registry")),
    reason="needs buildah, skopeo and docker-registry (make test installs them)",
)
REGIONS = ("us-east-1", "us-west-2")
REPOSITORY = "outreachpass-frontend"
SERVICE = "outreachpass-web-ecs-prod"


@pytest.fixture
def ecs_regions(tmp_path: Path, sandbox: Any, build_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Project:
    lay_out = partial(lay_out_ecs, example="opcd-ecs-regions.toml")  # bake = "5m": five sandbox seconds
    return fresh_project(tmp_path, sandbox, build_cache, monkeypatch, lay_out)


def revision(project: Project, region: str) -> str:
    ecs = client_in(project, "ecs", region)
    found = ecs.describe_services(cluster=f"outreachpass-prod-{region}", services=[SERVICE])["services"][0]
    return str(found["taskDefinition"])


def running_image(project: Project, region: str) -> str:
    definition = client_in(project, "ecs", region).describe_task_definition(taskDefinition=revision(project, region))
    (container,) = [c for c in definition["taskDefinition"]["containerDefinitions"] if c["name"] == "frontend"]
    return str(container["image"])


def ecr(project: Project, region: str) -> tuple[str, dict[str, str]]:
    """The repository's URI in ``region`` and its tags → digests."""
    client = client_in(project, "ecr", region)
    uri = client.describe_repositories(repositoryNames=[REPOSITORY])["repositories"][0]["repositoryUri"]
    details = client.describe_images(repositoryName=REPOSITORY)["imageDetails"]
    return uri, {tag: d["imageDigest"] for d in details for tag in d.get("imageTags", [])}


def page(project: Project, region: str, path: str) -> httpx.Response:
    from opcd.aws import resolve_target
    from opcd.config import load_config

    config = load_config(project.config_path)
    url = resolve_target(config.state_dir(), "us-east-1").resolve_url(f"https://{region}.outreachpass.example{path}")
    return httpx.get(url, timeout=30)


def release_frontend(project: Project, version: str) -> Any:
    """A release of the frontend's ``version`` through dev and, approved, prod; its final state."""
    from flows.release import release

    (project.root / "frontend" / "site" / "version.txt").write_text(version)
    run = start_in_thread(release, version=version, config_path=str(project.config_path), components=["frontend"])
    waiting = wait_for_pending(run)
    assert waiting["environment"] == "prod"
    code, out, err = project.cli("approve", waiting["id"], "--approver", "alice", "--reason", "dev is fine")
    assert code == 0, err
    return run.result(timeout=600)


def test_a_release_goes_region_by_region_with_one_image_and_a_failure_in_the_second_rolls_back_both(
    ecs_regions: Project, prefect_server: None, sink: SlackSink
) -> None:
    project = ecs_regions
    state = release_frontend(project, "v1")

    assert state.is_completed(), state
    east_uri, east_tags = ecr(project, "us-east-1")
    west_uri, west_tags = ecr(project, "us-west-2")
    digest = east_tags["v1"]
    assert west_tags == {"v1": digest, "latest": digest} and east_uri != west_uri  # the same image in each region
    for region, uri in (("us-east-1", east_uri), ("us-west-2", west_uri)):
        assert running_image(project, region) == f"{uri}@{digest}"  # each region's own repository, by digest
        record = ledger(project, region, "frontend")
        assert (record["outcome"], record["version"], record["region"]) == ("deployed", "v1", region)
        assert "build" not in record["steps"] and record["artifact"] == "reused"  # built once, by the release
        assert page(project, region, "/version.txt").text == "v1"
    east, west = (ledger(project, region, "frontend") for region in REGIONS)
    assert "copy" in west["steps"] and "copy" not in east["steps"]  # us-west-2's image copied from us-east-1's
    assert east["finished_at"] <= west["started_at"]  # us-east-1 alone first: it ended before us-west-2 began
    builds = [run for run in state.result()["builds"].values()]
    assert len(builds) == 1 and builds[0].startswith("built "), builds

    code, out, err = project.cli("status", "--env", "prod")
    assert code == 0, err
    rows = [line.split() for line in out.splitlines() if line.startswith("frontend")]
    assert sorted(r[:4] for r in rows) == [["frontend", "prod", region, "v1"] for region in REGIONS]

    # v2's new tasks answer 500 on /health.json in us-west-2 only, once they take traffic there
    east_before = revision(project, "us-east-1")
    fault = {"service": SERVICE, "fail": "health", "path": "/health.json", "region": "us-west-2"}
    httpx.post(f"{project.endpoint}/_opcd/ecs/faults", json=fault, timeout=30).raise_for_status()
    state = release_frontend(project, "v2")

    assert state.is_failed()
    west = ledger(project, "us-west-2", "frontend")  # rolled itself back after traffic moved
    assert (west["action"], west["outcome"], west["version"], west["live_version"]) == (
        "deploy", "rolled-back", "v2", "v1"
    )  # fmt: skip
    runs = [(r["action"], r["outcome"], r["version"]) for r in history(project, "us-east-1", "frontend")]
    assert runs[-2:] == [("deploy", "deployed", "v2"), ("rollback", "deployed", "v1")], runs
    assert revision(project, "us-east-1") == east_before  # the previous revision, verified healthy
    for region in REGIONS:
        assert page(project, region, "/version.txt").text == "v1", region
        assert page(project, region, "/health.json").status_code == 200, region
    assert ecr(project, "us-west-2")[1]["v2"] == ecr(project, "us-east-1")[1]["v2"]
    texts = sink.texts()
    assert any("us-west-2" in t and "ROLLED BACK" in t for t in texts), texts


def test_opcd_deploy_copies_the_first_regions_image_and_rollback_and_drift_act_per_region(
    ecs_regions: Project, prefect_server: None
) -> None:
    project = ecs_regions
    site = project.root / "frontend" / "site"
    for version in ("v1", "v2"):
        (site / "version.txt").write_text(version)
        code, out, err = project.cli("deploy", "frontend", "--env", "prod", "--version", version)
        assert code == 0, err
        assert f"deployed frontend {version} to prod us-east-1" in out and "to prod us-west-2" in out, out
        east, west = (ledger(project, region, "frontend") for region in REGIONS)
        assert "build" in east["steps"] and "build" not in west["steps"] and "copy" in west["steps"]  # built once
        assert ecr(project, "us-west-2")[1][version] == ecr(project, "us-east-1")[1][version] == east["image_digest"]

    code, out, err = project.cli("rollback", "frontend", "--env", "prod", "--region", "us-west-2")
    assert code == 0, err
    assert page(project, "us-west-2", "/version.txt").text == "v1"
    assert page(project, "us-east-1", "/version.txt").text == "v2"  # the other region untouched
    back = ledger(project, "us-west-2", "frontend")
    assert (back["action"], back["outcome"], back["live_version"], back["region"]) == (
        "rollback", "deployed", "v1", "us-west-2"
    )  # fmt: skip
    code, out, err = project.cli("status", "--env", "prod")
    assert code == 0, err
    rows = sorted(line.split()[:4] for line in out.splitlines() if line.startswith("frontend"))
    assert rows == [["frontend", "prod", "us-east-1", "v2"], ["frontend", "prod", "us-west-2", "v1"]], out
    # us-west-2's service moved behind opcd's back: drift names that region
    ecs = client_in(project, "ecs", "us-west-2")
    ecs.update_service(cluster="outreachpass-prod-us-west-2", service=SERVICE, taskDefinition=f"{SERVICE}:1")
    code, out, err = project.cli("drift", "--env", "prod", "--skip-terraform")
    assert "prod us-west-2" in out + err and "ECS service outreachpass-prod-us-west-2/" in out + err, out + err
    assert "ECS service outreachpass-prod-us-east-1/" not in out + err


def test_a_release_plan_refuses_a_tag_another_region_holds_for_another_image_before_any_change(
    ecs_regions: Project,
) -> None:
    from flows.plan.build import build_deploy_plan
    from flows.plan.models import ArtifactPlan
    from opcd.config import load_config
    from opcd.errors import VersionConflict
    from opcd.iam import acting_as
    from tests.sandbox.test_registry import push_image

    west = push_image(ecs_regions, {"www/version.txt": b"another build"}, "v1", "us-west-2")  # its digest
    east_uri = ecr(ecs_regions, "us-east-1")[0]
    config = load_config(ecs_regions.config_path)

    def plan(digest: str) -> Any:  # the release's image, pushed to us-east-1 as ``digest``: planned in us-west-2
        made = ArtifactPlan(location=f"{east_uri}:v1", build=False, reason="pushed", digest=digest, source_hash="s")
        with acting_as("deploy", str(ecs_regions.config_path)):
            return build_deploy_plan(config, "frontend", "prod", "v1", region="us-west-2", release_build=made)

    with pytest.raises(VersionConflict, match=f"frontend:v1 already exists in ECR as {west}; the release's image"):
        plan("sha256:" + "0" * 64)
    same = plan(west)  # that very image there already: used as it is, not copied
    assert [s.action for s in same.steps][:2] == ["reuse", "lock"] and same.artifact.copy_from is None
