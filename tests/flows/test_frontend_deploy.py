"""The frontend pipeline end to end: a real image build (buildah), a real push (skopeo) to the
sandbox's registry behind ECR, the App Runner stand-in deploying it, our checks, our rollback."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest

from sandbox.slack import SlackSink
from tests.conftest import Project

pytestmark = pytest.mark.skipif(
    not (shutil.which("buildah") and shutil.which("skopeo") and shutil.which("docker-registry")),
    reason="needs buildah, skopeo and docker-registry (make test installs them)",
)
REPOSITORY = "outreachpass-frontend"


def site(project: Project) -> Path:
    return project.root / "src" / "frontend" / "site"


def service(project: Project, env: str = "dev") -> dict[str, Any]:
    client = project.client_for("apprunner")
    for summary in client.list_services()["ServiceSummaryList"]:
        if summary["ServiceName"] == f"outreachpass-web-{env}":
            found: dict[str, Any] = client.describe_service(ServiceArn=summary["ServiceArn"])["Service"]
            return found
    raise AssertionError(f"no service for {env}")


def image(project: Project, env: str = "dev") -> str:
    return str(service(project, env)["SourceConfiguration"]["ImageRepository"]["ImageIdentifier"])


def tags(project: Project) -> dict[str, str]:
    details = project.client("ecr").describe_images(repositoryName=REPOSITORY)["imageDetails"]
    return {tag: d["imageDigest"] for d in details for tag in d.get("imageTags", [])}


def page(project: Project, path: str = "/", env: str = "dev") -> httpx.Response:
    return httpx.get(f"{project.apprunner}/_services/outreachpass-web-{env}{path}", timeout=30)


def deploy(project: Project, version: str, *extra: str) -> tuple[int, str, str]:
    return project.cli("deploy", "frontend", "--env", "dev", "--version", version, *extra)


@pytest.fixture
def frontend_v2(project: Project, prefect_server: None) -> Project:
    for version in ("v1", "v2"):
        (site(project) / "version.txt").write_text(version)
        code, out, err = deploy(project, version)
        assert code == 0, err
    return project


def test_v1_then_v2_runs_v2_with_both_tags_and_latest_in_ecr(frontend_v2: Project) -> None:
    project = frontend_v2
    assert image(project).endswith(f"/{REPOSITORY}:v2")
    found = tags(project)
    assert set(found) == {"v1", "v2", "latest"}
    assert found["latest"] == found["v2"] != found["v1"]
    assert project.ledger("dev", "frontend", "live.json")["live_image_digest"] == found["v2"]  # the digest ECR has
    # the service URL serves the deployed image's files
    assert page(project, "/version.txt").text == "v2"
    assert "OutreachPass" in page(project).text
    assert page(project).headers["X-Sandbox-Image-Digest"] == found["v2"]
    # status shows the tag and the digest
    code, out, err = project.cli("status", "--env", "dev", "--json")
    row = next(r for r in json.loads(out) if r["component"] == "frontend")
    assert (row["version"], row["image_digest"], row["service_status"]) == ("v2", found["v2"], "RUNNING")
    code, out, err = project.cli("status", "--env", "dev")
    line = next(ln for ln in out.splitlines() if ln.startswith("frontend"))
    assert line.split()[:4] == ["frontend", "dev", "v2", found["v2"][:19]]
    # deploying v2 again changes nothing
    code, out, err = deploy(project, "v2")
    assert code == 0 and "already live" in out
    # promoting v2 to prod deploys the very image tested in dev: no rebuild, same digest
    code, out, err = project.cli("deploy", "frontend", "--env", "prod", "--version", "v2")
    assert code == 0, err
    assert image(project, "prod").endswith(":v2") and tags(project) == found
    assert project.ledger("prod", "frontend")["artifact"] == "reused"
    assert project.ledger("prod", "frontend")["live_image_digest"] == found["v2"]
    assert project.ledger("dev", "frontend", "live.json")["artifact"] == "built"


def test_app_runner_health_failure_rolls_itself_back_and_the_run_fails(frontend_v2: Project) -> None:
    project = frontend_v2
    fault = {"service": "outreachpass-web-dev", "fail": "health"}
    httpx.post(f"{project.apprunner}/_opcd/apprunner/faults", json=fault, timeout=10).raise_for_status()
    (site(project) / "version.txt").write_text("v3")
    code, out, err = deploy(project, "v3")
    assert code == 1
    assert "App Runner could not deploy it and rolled the service back itself" in err
    assert "v2 (" in err and "is live, verified healthy" in err
    assert image(project).endswith(":v2") and page(project, "/version.txt").text == "v2"
    operations = project.client_for("apprunner").list_operations(ServiceArn=service(project)["ServiceArn"])
    assert operations["OperationSummaryList"][0]["Status"] == "ROLLBACK_SUCCEEDED"
    latest = project.ledger("dev", "frontend")
    assert (latest["outcome"], latest["live_version"]) == ("failed", "v2")
    # App Runner's own rollback fails: the service is broken, opcd deploys v2 again and verifies it
    fault = {"service": "outreachpass-web-dev", "fail": "rollback"}
    httpx.post(f"{project.apprunner}/_opcd/apprunner/faults", json=fault, timeout=10).raise_for_status()
    code, out, err = deploy(project, "v3")
    assert code == 1
    assert "its own rollback FAILED" in err and "v2 (" in err and "is live, verified healthy" in err
    assert image(project).endswith(":v2") and page(project, "/version.txt").text == "v2"
    assert project.ledger("dev", "frontend")["outcome"] == "rolled-back"


def test_our_health_check_failing_after_success_rolls_back_to_v2(frontend_v2: Project) -> None:
    project = frontend_v2
    (site(project) / "health.json").unlink()  # App Runner's TCP check passes; ours does not
    code, out, err = deploy(project, "v3")
    assert code == 1
    assert "failed after it went live" in err and "post-traffic health check failed" in err
    assert "v2 (" in err and "verified healthy" in err
    assert image(project).endswith(":v2") and page(project, "/health.json").status_code == 200
    statuses = [
        o["Status"]
        for o in project.client_for("apprunner").list_operations(ServiceArn=service(project)["ServiceArn"])[
            "OperationSummaryList"
        ]
    ]
    assert statuses[:2] == ["SUCCEEDED", "SUCCEEDED"]  # v3 went live, then our rollback to v2
    latest = project.ledger("dev", "frontend")
    assert (latest["outcome"], latest["live_version"], latest["previous_version"]) == ("rolled-back", "v2", "v2")
    assert tags(project)["latest"] == tags(project)["v3"]  # latest names the newest push, not what runs


def test_a_different_image_under_an_existing_version_tag_is_refused(frontend_v2: Project) -> None:
    project = frontend_v2
    before = tags(project)
    (site(project) / "index.html").write_text("<h1>OutreachPass, changed</h1>")
    code, out, err = deploy(project, "v1")
    assert code == 2
    assert err.startswith(f"error: deploy frontend v1 to dev failed at push: {REPOSITORY}:v1 already exists in ECR as"
                          f" {before['v1']}; this build is sha256:")  # fmt: skip
    assert "pick a new version" in err
    assert tags(project) == before and image(project).endswith(":v2")


def test_rollback_goes_to_the_previous_image_and_dry_run_changes_nothing(frontend_v2: Project) -> None:
    project = frontend_v2
    code, out, err = project.cli("rollback", "frontend", "--env", "dev", "--dry-run")
    assert code == 0, err
    assert "would move outreachpass-web-dev from v2 (" in out and " to v1 (" in out and image(project).endswith(":v2")
    code, out, err = project.cli("rollback", "frontend", "--env", "dev")
    assert code == 0, err
    assert out.splitlines()[-1].startswith("rolled back frontend in dev to v1")
    assert image(project).endswith(":v1") and page(project, "/version.txt").text == "v1"
    code, out, err = project.cli("rollback", "frontend", "--env", "dev", "--to", "v7")
    assert code == 2 and f"{REPOSITORY}:v7 is not in ECR" in err
    # a second rollback goes further back, to what ran before v1 (AWS's sample image), never forward
    # to v2; the sample image fails the smoke check (no "OutreachPass"), so v1 is put back
    code, out, err = project.cli("rollback", "frontend", "--env", "dev", "--dry-run")
    assert "to an image opcd did not push (public.ecr.aws/aws-containers/hello-app-runner:latest)" in out
    code, out, err = project.cli("rollback", "frontend", "--env", "dev")
    assert code == 1
    assert err.startswith("error: public.ecr.aws/aws-containers/hello-app-runner:latest failed after it went live")
    assert "body lacks 'OutreachPass'" in err and "v1 (" in err and "is live, verified healthy" in err
    assert image(project).endswith(":v1")


def test_a_busy_service_refuses_before_anything_is_built_or_pushed(project: Project, prefect_server: None) -> None:
    timings = f"{project.apprunner}/_opcd/apprunner/timings"
    before = httpx.get(timings, timeout=10).json()
    httpx.post(timings, json={"deploy": 60}, timeout=10).raise_for_status()  # this deployment outlasts the test
    try:
        project.client_for("apprunner").start_deployment(ServiceArn=service(project)["ServiceArn"])
        code, out, err = deploy(project, "v1")
    finally:
        httpx.post(timings, json=before, timeout=10).raise_for_status()
    assert code == 2 and "outreachpass-web-dev is OPERATION_IN_PROGRESS, not RUNNING: nothing was changed" in err
    assert tags(project) == {}


def test_dry_run_names_the_plan_and_pushes_nothing(project: Project) -> None:
    code, out, err = deploy(project, "v1", "--dry-run")
    assert code == 0, err
    assert "live now: an image opcd did not push (public.ecr.aws/aws-containers/hello-app-runner:latest)" in out
    assert "with buildah" in out and "push " in out and "no changes made" in out
    assert tags(project) == {}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["deploy", "frontend", "--env", "dev", "--version", "v1..x"], "'v1..x' is not a version"),
        (["rollback", "frontend", "--env", "dev", "--to-lambda-version", "3"], "it has no Lambda versions"),
        (["promote", "frontend", "--env", "dev"], "is an App Runner service: it has no bake"),
    ],
)
def test_bad_input_is_refused(project: Project, args: list[str], message: str) -> None:
    code, out, err = project.cli(*args)
    assert code == 2 and message in err
    assert image(project).startswith("public.ecr.aws/")


def test_missing_service_or_repository_is_named(project: Project) -> None:
    project.set_config('services = { frontend = "outreachpass-web-dev" }', 'services = { frontend = "web-typo" }')
    code, out, err = deploy(project, "v1")
    assert code == 2 and "App Runner service 'web-typo' does not exist" in err
    project.set_config('services = { frontend = "web-typo" }', 'services = { frontend = "outreachpass-web-dev" }')
    project.client("ecr").delete_repository(repositoryName=REPOSITORY, force=True)
    code, out, err = deploy(project, "v1")
    assert code == 2 and f"ECR repository '{REPOSITORY}' does not exist" in err


def test_rollback_goes_only_to_an_image_that_was_live_unless_forced(frontend_v2: Project, sink: SlackSink) -> None:
    project = frontend_v2
    (site(project) / "health.json").unlink()  # v3 goes live, fails our health check, and is taken back
    assert deploy(project, "v3")[0] == 1 and image(project).endswith(":v2")
    code, out, err = project.cli("rollback", "frontend", "--env", "dev", "--to", "v3")
    assert code == 2
    assert err.startswith("error: frontend v3 was never live on outreachpass-web-dev")
    assert "versions that were live on outreachpass-web-dev: v1, v2; --force goes to it anyway" in err
    assert image(project).endswith(":v2")

    code, out, err = project.cli("rollback", "frontend", "--env", "dev", "--to", "v3", "--force")

    assert code == 1
    assert "failed after it went live: post-traffic health check failed" in err and "verified healthy" in err
    assert image(project).endswith(":v2")
    latest = project.ledger("dev", "frontend")
    assert (latest["action"], latest["outcome"], latest["force"]) == ("rollback", "rolled-back", True)
    assert (latest["version"], latest["live_version"]) == ("v3", "v2")
    outcome = sink.texts()[-1]
    assert "rollback FAILED: traffic moved to v3, which failed its checks, and moved back; live on v2 (" in outcome
    assert "before traffic moved" not in outcome
