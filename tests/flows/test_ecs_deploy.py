"""The frontend on ECS end to end (examples/outreachpass/opcd-ecs.toml): a real image build (buildah), a
real push (skopeo) to the sandbox's registry behind ECR, a task definition revision with the image's
digest, the sandbox's ECS service deployments (rolling in dev, blue/green in prod), our checks, our
rollback; and a release through dev and prod with the approval."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest

from sandbox.slack import SlackSink
from tests.conftest import EXAMPLES, Project, error_lines, fresh_project, start_in_thread, wait_for_pending

pytestmark = pytest.mark.skipif(
    not (shutil.which("buildah") and shutil.which("skopeo") and shutil.which("docker-registry")),
    reason="needs buildah, skopeo and docker-registry (make test installs them)",
)
REPOSITORY = "outreachpass-frontend"
SERVICES = {
    "dev": ("outreachpass-dev", "outreachpass-web-ecs-dev"),
    "prod": ("outreachpass-prod", "outreachpass-web-ecs-prod"),
}  # noqa: E501
HEALTH = {"dev": "https://dev.outreachpass.example", "prod": "https://outreachpass.example"}


def ecs_config(example: str = "opcd-ecs.toml") -> str:
    """examples/outreachpass/opcd-ecs.toml (or another ``example`` of the frontend on ECS) with the waits of a
    test: checks and polls shrunk."""
    text = (EXAMPLES / example).read_text()
    text, checks = re.subn(
        r"health_check = \{[^}]*\}", 'health_check = { successes = 2, attempts = 4, interval = "0.1s" }', text
    )
    shrunk = {
        'operation = { timeout = "20m", poll_interval = "10s" }': 'operation = { timeout = "60s", poll_interval = "0.05s" }',  # noqa: E501
        'approval = { approvers = ["alice", "bob"], timeout = "24h" }':
            'approval = { approvers = ["alice", "bob"], timeout = "120s", poll_interval = "1s" }',
        'traffic = { backend = "canary10-5m", worker = "linear50-2m" }':
            'traffic = { backend = "canary10-0.2s", worker = "linear50-0.2s" }',
        'bake = { poll_interval = "15s"': 'bake = { poll_interval = "0.1s"',
    }  # fmt: skip
    for old, new in shrunk.items():
        assert old in text, f"{example} changed: update ecs_config() ({old})"
        text = text.replace(old, new)
    assert checks == 1
    return text


def lay_out_ecs(root: Path, example: str = "opcd-ecs.toml") -> None:
    """examples/outreachpass as it is, with opcd-ecs.toml (or ``example``, shrunk) as its opcd.toml."""
    for component in ("backend", "worker", "frontend"):
        shutil.copytree(EXAMPLES / component, root / component, ignore=shutil.ignore_patterns("__pycache__", "tests"))
    (root / "opcd.toml").write_text(ecs_config(example))


@pytest.fixture
def ecs(tmp_path: Path, sandbox: Any, build_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Project:
    """A project laid out as examples/outreachpass with opcd-ecs.toml as its opcd.toml, seeded."""
    return fresh_project(tmp_path, sandbox, build_cache, monkeypatch, lay_out_ecs)


def site(project: Project) -> Path:
    return project.root / "frontend" / "site"


def service(project: Project, env: str = "dev") -> dict[str, Any]:
    cluster, name = SERVICES[env]
    found: dict[str, Any] = project.client("ecs").describe_services(cluster=cluster, services=[name])["services"][0]
    return found


def running_image(project: Project, env: str = "dev") -> str:
    """The frontend container's image in the revision the service runs."""
    definition = project.client("ecs").describe_task_definition(taskDefinition=service(project, env)["taskDefinition"])
    (container,) = [c for c in definition["taskDefinition"]["containerDefinitions"] if c["name"] == "frontend"]
    return str(container["image"])


def tags(project: Project) -> dict[str, str]:
    details = project.client("ecr").describe_images(repositoryName=REPOSITORY)["imageDetails"]
    return {tag: d["imageDigest"] for d in details for tag in d.get("imageTags", [])}


def page(project: Project, path: str = "/", env: str = "dev") -> httpx.Response:
    from opcd.aws import resolve_target
    from opcd.config import load_config

    config = load_config(project.config_path)
    url = resolve_target(config.state_dir(), config.project.region).resolve_url(HEALTH[env] + path)
    return httpx.get(url, timeout=30)


def deploy(project: Project, version: str, *extra: str, env: str = "dev") -> tuple[int, str, str]:
    return project.cli("deploy", "frontend", "--env", env, "--version", version, *extra)


def deployments(project: Project, env: str = "dev") -> list[dict[str, Any]]:
    """The service's deployments, newest first, as DescribeServiceDeployments reports them."""
    cluster, name = SERVICES[env]
    client = project.client("ecs")
    arns = [d["serviceDeploymentArn"] for d in client.list_service_deployments(cluster=cluster, service=name)[
        "serviceDeployments"]]  # fmt: skip
    found: list[dict[str, Any]] = client.describe_service_deployments(serviceDeploymentArns=arns)["serviceDeployments"]
    return sorted(found, key=lambda d: d["createdAt"], reverse=True)


@pytest.fixture
def frontend_v2(ecs: Project, prefect_server: None) -> Project:
    for version in ("v1", "v2"):
        (site(ecs) / "version.txt").write_text(version)
        code, out, err = deploy(ecs, version)
        assert code == 0, err
    return ecs


def test_v1_then_v2_runs_v2_by_its_digest_in_a_new_revision(frontend_v2: Project) -> None:
    project = frontend_v2
    found = tags(project)
    assert set(found) == {"v1", "v2", "latest"} and found["latest"] == found["v2"] != found["v1"]
    uri = project.client("ecr").describe_repositories(repositoryNames=[REPOSITORY])["repositories"][0]["repositoryUri"]
    assert running_image(project) == f"{uri}@{found['v2']}"  # the digest, never a tag
    assert page(project, "/version.txt").text == "v2"
    latest = project.ledger("dev", "frontend")
    revision = service(project)["taskDefinition"]
    assert (latest["outcome"], latest["live_version"], latest["live_task_definition"]) == ("deployed", "v2", revision)
    assert latest["previous_version"] == "v1" and latest["previous_task_definition"] != revision
    assert latest["traffic"] == "ECS rolling"
    # status: the revision, its image's tag and digest, tasks running/desired
    code, out, err = project.cli("status", "--env", "dev", "--json")
    row = next(r for r in json.loads(out) if r["component"] == "frontend")
    assert (row["version"], row["image_digest"], row["revision"]) == ("v2", found["v2"], revision.rpartition("/")[2])
    assert row["running"] == row["desired"] >= 1 and row["drift"] is False
    code, out, err = project.cli("status", "--env", "dev")
    line = next(ln for ln in out.splitlines() if ln.startswith("frontend"))
    assert line.split()[:4] == ["frontend", "dev", "v2", revision.rpartition("/")[2]]
    assert f"{row['running']}/{row['desired']} running" in line
    # deploying v2 again changes nothing
    code, out, err = deploy(project, "v2")
    assert code == 0 and "already live" in out
    # prod (blue/green): the very image tested in dev, no rebuild
    code, out, err = deploy(project, "v2", env="prod")
    assert code == 0, err
    assert running_image(project, "prod") == f"{uri}@{found['v2']}" and tags(project) == found
    assert project.ledger("prod", "frontend")["artifact"] == "reused"
    assert project.ledger("prod", "frontend")["traffic"].startswith("ECS blue-green")


def test_our_health_check_failing_rolls_back_to_the_previous_revision(frontend_v2: Project, sink: SlackSink) -> None:
    project = frontend_v2
    before = service(project)["taskDefinition"]
    (site(project) / "health.json").unlink()  # ECS's own checks pass; ours does not
    code, out, err = deploy(project, "v3")
    assert code == 1
    (line,) = error_lines(err)
    assert "failed after it went live" in line and "post-traffic health check failed" in line
    assert "v2 (" in line and "is live, verified healthy" in line
    assert service(project)["taskDefinition"] == before and page(project, "/health.json").status_code == 200
    latest = project.ledger("dev", "frontend")
    assert (latest["outcome"], latest["live_version"], latest["live_task_definition"]) == ("rolled-back", "v2", before)
    assert [d["status"] for d in deployments(project)[:2]] == ["SUCCESSFUL", "SUCCESSFUL"]  # v3, then back to v2
    assert any("ROLLED BACK" in t for t in sink.texts())


def test_ecs_rolling_back_on_its_own_is_a_failed_deploy_with_its_reason(frontend_v2: Project, sink: SlackSink) -> None:
    project = frontend_v2
    before = service(project)["taskDefinition"]
    fault = {"service": "outreachpass-web-ecs-dev", "fail": "circuit-breaker"}
    httpx.post(f"{project.endpoint}/_opcd/ecs/faults", json=fault, timeout=10).raise_for_status()
    (site(project) / "version.txt").write_text("v3")
    code, out, err = deploy(project, "v3")
    assert code == 1
    (line,) = error_lines(err)
    assert "ECS could not deploy it and rolled the service back itself" in line
    assert "circuit breaker" in line.lower() and "v2 (" in line and "is live, verified healthy" in line
    newest = deployments(project)[0]
    assert newest["status"] == "ROLLBACK_SUCCESSFUL"
    assert service(project)["taskDefinition"] == before and page(project, "/version.txt").text == "v2"
    latest = project.ledger("dev", "frontend")
    assert (latest["outcome"], latest["live_version"]) == ("failed", "v2")
    assert "circuit breaker" in latest["reason"].lower()
    assert any("FAILED before traffic moved" in t for t in sink.texts())
    # ECS's own rollback fails too (nothing serves): opcd puts v2's revision back itself and verifies it
    fault = {"service": "outreachpass-web-ecs-dev", "fail": "rollback"}
    httpx.post(f"{project.endpoint}/_opcd/ecs/faults", json=fault, timeout=10).raise_for_status()
    code, out, err = deploy(project, "v3")
    assert code == 1
    (line,) = error_lines(err)
    assert "ECS's service deployment ended ROLLBACK_FAILED" in line and "is live, verified healthy" in line
    assert service(project)["taskDefinition"] == before and page(project, "/version.txt").text == "v2"
    assert project.ledger("dev", "frontend")["outcome"] == "rolled-back"


def test_rollback_goes_to_the_previous_revision(frontend_v2: Project) -> None:
    project = frontend_v2
    v2 = service(project)["taskDefinition"]
    v1 = project.ledger("dev", "frontend")["previous_task_definition"]
    code, out, err = project.cli("rollback", "frontend", "--env", "dev", "--dry-run")
    assert code == 0, err
    assert f"from v2 ({v2.rpartition('/')[2]}" in out and f" to v1 ({v1.rpartition('/')[2]}" in out
    assert service(project)["taskDefinition"] == v2
    code, out, err = project.cli("rollback", "frontend", "--env", "dev")
    assert code == 0, err
    assert service(project)["taskDefinition"] == v1 and page(project, "/version.txt").text == "v1"
    assert out.splitlines()[-1].startswith("rolled back frontend in dev to v1")
    code, out, err = project.cli("rollback", "frontend", "--env", "dev", "--to", "v2")
    assert code == 0, err
    assert service(project)["taskDefinition"] == v2  # the revision seen live, not a new one
    code, out, err = project.cli("rollback", "frontend", "--env", "dev", "--to", "v7")
    assert code == 2 and f"{REPOSITORY}:v7 is not in ECR" in err
    code, out, err = project.cli("rollback", "frontend", "--env", "dev", "--to-lambda-version", "3")
    assert code == 2 and "is an ECS service: it has no Lambda versions" in err


def test_drift_knows_the_ecs_service(frontend_v2: Project) -> None:
    from opcd.aws import resolve_target
    from opcd.config import load_config
    from opcd.iam import acting_as
    from tasks.drift import check_ecs_services

    project = frontend_v2
    config = load_config(project.config_path)
    target = resolve_target(config.state_dir(), config.project.region)
    with acting_as("read", str(project.config_path)):  # as the drift-check flow reads: the read role
        assert check_ecs_services.fn(config, target, "dev") == []
    v1 = project.ledger("dev", "frontend")["previous_task_definition"]
    cluster, name = SERVICES["dev"]
    project.client("ecs").update_service(cluster=cluster, service=name, taskDefinition=v1)  # by hand, not by opcd
    with acting_as("read", str(project.config_path)):
        findings = [f for f in check_ecs_services.fn(config, target, "dev") if "the ledger says" in f.problem]
    assert len(findings) == 1 and findings[0].resource == f"ECS service {cluster}/{name}"
    assert findings[0].fix.startswith("opcd rollback frontend --env dev --to v2")


def test_bad_input_is_refused_before_anything_changes(ecs: Project) -> None:
    code, out, err = deploy(ecs, "v1..x")
    assert code == 2 and "'v1..x' is not a version" in err
    code, out, err = deploy(ecs, "v1", "--dry-run")
    assert code == 0, err
    assert "register a new revision of" in out and "no changes made" in out and tags(ecs) == {}


def start_release(project: Project, version: str, **params: Any) -> Any:
    from flows.release import release

    return start_in_thread(release, version=version, config_path=str(project.config_path), **params)


def approve(project: Project, version: str) -> dict[str, Any]:
    """Start a release of the frontend, approve prod when it asks; the summary."""
    run = start_release(project, version, components=["frontend"])
    waiting = wait_for_pending(run)
    assert waiting["environment"] == "prod"
    code, out, err = project.cli("approve", waiting["id"], "--approver", "alice", "--reason", "dev looks good")
    assert code == 0, err
    state = run.result(timeout=300)
    assert state.is_completed(), state
    summary: dict[str, Any] = state.result()
    return summary


def test_a_release_deploys_to_ecs_in_dev_and_prod_and_a_failing_dev_rolls_back(
    ecs: Project, prefect_server: None, sink: SlackSink
) -> None:
    project = ecs
    (site(project) / "version.txt").write_text("v1")
    summary = approve(project, "v1")
    assert summary["outcome"] == "released"
    digest = tags(project)["v1"]
    for env in ("dev", "prod"):
        assert running_image(project, env).endswith(f"@{digest}")
        assert project.ledger(env, "frontend")["outcome"] == "deployed"
        assert page(project, "/version.txt", env).text == "v1"
    assert project.ledger("prod", "frontend")["artifact"] == "reused"  # built once
    # v2 fails opcd's health check in dev: rolled back there by opcd, prod never asked
    (site(project) / "version.txt").write_text("v2")
    (site(project) / "health.json").unlink()
    dev_before, prod_before = service(project)["taskDefinition"], service(project, "prod")["taskDefinition"]
    state = start_release(project, "v2", components=["frontend"]).result(timeout=300)
    assert state.is_failed()
    record = project.ledger("dev", "frontend")
    assert (record["outcome"], record["live_version"]) == ("rolled-back", "v1")
    assert service(project)["taskDefinition"] == dev_before and page(project, "/version.txt").text == "v1"
    assert service(project, "prod")["taskDefinition"] == prod_before
    texts = sink.texts()
    assert any(t.startswith("release v2: frontend in dev was ROLLED BACK") for t in texts), texts
    assert any("prod untouched" in t for t in texts), texts
