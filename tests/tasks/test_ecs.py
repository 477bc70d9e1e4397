"""tasks.ecs against the sandbox's ECS stand-in (moto behind it), on the real clock with ECS's phases shrunk.

The stand-in runs in this process behind werkzeug's HTTP server; opcd's own clients (opcd.aws) talk to it.
Each test has a cluster of its own, so that tests never see each other's services.
"""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from werkzeug.serving import make_server

from opcd.aws import AwsTarget, new_client
from opcd.errors import DeployFailed, InputError, ResourceMissing
from opcd.iam import ROLES, acting_as, policy, unrecorded
from sandbox.apprunner import ImageUnavailable, ServedImage
from sandbox.ecs import EcsStandIn, Timings
from sandbox.server import SandboxApp
from tasks.ecs import (
    DeployOutcome,
    deploy_image,
    deployment_configuration,
    describe_service,
    pinned_image,
    register_revision,
    roll_back,
)
from tests.conftest import ROOT

REGION, ACCOUNT = "us-east-1", "123456789012"
REPOSITORY = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/outreachpass-frontend"
FAST = {"timeout": 60.0, "poll_interval": 0.02}


def digest(tag: str) -> str:
    return "sha256:" + hashlib.sha256(tag.encode()).hexdigest()


def pinned(tag: str) -> str:
    return f"{REPOSITORY}@{digest(tag)}"


@pytest.fixture(scope="module")
def standin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EcsStandIn]:
    base = tmp_path_factory.mktemp("ecs-images")
    images: dict[str, Path] = {}
    for tag in ("v1", "v2", "v3"):
        (base / tag).mkdir()
        (base / tag / "health.json").write_text(f'{{"version": "{tag}"}}')
        images[pinned(tag)] = images[f"{REPOSITORY}:{tag}"] = base / tag

    def resolve(identifier: str, repository_type: str) -> ServedImage:
        if identifier not in images:
            raise ImageUnavailable(f"{identifier}: manifest unknown")
        return ServedImage(identifier, digest(images[identifier].name), images[identifier])

    app = SandboxApp(tmp_path_factory.mktemp("ecs-sandbox"), REGION)
    app.ecs = EcsStandIn(REGION, ACCOUNT, app.moto, resolve, Timings(pending=0.02, deploy=0.1, rollback=0.05))
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    app.ecs.base_url = f"http://127.0.0.1:{server.server_port}"
    yield app.ecs
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


@pytest.fixture
def target(standin: EcsStandIn, monkeypatch: pytest.MonkeyPatch) -> AwsTarget:
    monkeypatch.delenv("AWS_ENDPOINT_URL_ECS", raising=False)
    return AwsTarget("endpoint", REGION, standin.base_url, credentials=("testing", "testing"))


def ecs_config(cluster: str) -> str:
    """The project's opcd.toml with the frontend an ECS component served by ``CLUSTER``/``web`` in dev and prod."""
    text = (ROOT / "opcd.toml").read_text()
    start = text.index("[components.frontend]")
    block = text[start : text.index("\n[", start + 1)]
    text = text.replace(block, "[components.frontend]\n" + "\n".join([
        'kind = "ecs"', 'source = "examples/outreachpass/frontend"', 'repository = "outreachpass-frontend"',
        'build_contexts = { tools = "/usr/bin" }', 'container = "frontend"',
    ]) + "\n")  # fmt: skip
    for env in ("dev", "prod"):
        old = f'services = {{ frontend = "outreachpass-web-{env}" }}'
        assert old in text, old
        text = text.replace(old, f'ecs = {{ frontend = {{ cluster = "{cluster}", service = "web" }} }}')
    return text


@pytest.fixture
def cluster(standin: EcsStandIn, tmp_path: Path) -> Iterator[str]:
    """A cluster with service ``web`` running v1 of container ``frontend`` beside a sidecar (Terraform's part:
    made with the test's own client, so that opcd's IAM proof does not count it). The test's own calls are
    made for an opcd.toml naming that service (the IAM proof checks them against its policy)."""
    name = f"c-{uuid.uuid4().hex[:8]}"
    (tmp_path / "opcd.toml").write_text(ecs_config(name))
    ecs = new_client("ecs", REGION, ("testing", "testing"), standin.base_url)
    ecs.create_cluster(clusterName=name)
    role = f"arn:aws:iam::{ACCOUNT}:role/web-"
    definition = ecs.register_task_definition(
        family=f"{name}-web", taskRoleArn=role + "task", executionRoleArn=role + "execution",
        networkMode="awsvpc", requiresCompatibilities=["FARGATE"], cpu="256", memory="512",
        containerDefinitions=[
            {"name": "frontend", "image": f"{REPOSITORY}:v1", "portMappings": [{"containerPort": 8080}],
             "environment": [{"name": "APP_ENV", "value": "dev"}]},
            {"name": "log-router", "image": "public.ecr.aws/aws-observability/aws-for-fluent-bit:stable"},
        ],
        tags=[{"key": "opcd:component", "value": "frontend"}],
    )["taskDefinition"]  # fmt: skip
    ecs.create_service(
        cluster=name, serviceName="web", taskDefinition=definition["taskDefinitionArn"], desiredCount=2,
        launchType="FARGATE", deploymentConfiguration={"deploymentCircuitBreaker": {"enable": True, "rollback": True}},
    )  # fmt: skip
    with acting_as("deploy", str(tmp_path / "opcd.toml")):
        yield name


def fault(standin: EcsStandIn, **body: Any) -> None:
    httpx.post(f"{standin.base_url}/_opcd/ecs/faults", json=body, timeout=30).raise_for_status()


def served(standin: EcsStandIn, cluster: str) -> Any:
    return httpx.get(standin.local_url(cluster, "web") + "/health.json", timeout=30).json()


def test_a_deploy_registers_a_copied_revision_and_succeeds(
    target: AwsTarget, cluster: str, standin: EcsStandIn
) -> None:
    lines: list[str] = []
    before, result = deploy_image(target, cluster, "web", "frontend", pinned("v2"), say=lines.append, **FAST)
    assert (before.revision, before.tag, before.digest, before.running, before.desired) == (1, "v1", None, 2, 2)
    assert result.outcome is DeployOutcome.SUCCEEDED and result.ok and result.reason is None
    assert result.task_definition.endswith(f"task-definition/{cluster}-web:2")
    now = describe_service(target, cluster, "web", "frontend")
    assert (now.revision, now.image, now.digest, now.tag) == (2, pinned("v2"), digest("v2"), None)
    assert (now.running, now.desired, now.rollout) == (2, 2, "COMPLETED")
    # the revision is the live one copied: only the container's image changed
    ecs = new_client("ecs", REGION, ("testing", "testing"), standin.base_url)
    old, new = (
        ecs.describe_task_definition(taskDefinition=arn, include=["TAGS"])
        for arn in (before.task_definition, result.task_definition)
    )
    for member in ("taskRoleArn", "executionRoleArn", "cpu", "memory", "networkMode", "requiresCompatibilities"):
        assert new["taskDefinition"][member] == old["taskDefinition"][member], member
    assert new["tags"] == old["tags"] == [{"key": "opcd:component", "value": "frontend"}]
    (frontend, sidecar), (old_frontend, old_sidecar) = (d["taskDefinition"]["containerDefinitions"] for d in (new, old))
    assert sidecar == old_sidecar and frontend == {**old_frontend, "image": pinned("v2")}
    assert served(standin, cluster) == {"version": "v2"}
    assert any("SUCCESSFUL" in line for line in lines)


def test_a_circuit_breaker_rollback_is_a_failed_deploy(target: AwsTarget, cluster: str, standin: EcsStandIn) -> None:
    fault(standin, service="web", fail="circuit-breaker")
    before, result = deploy_image(target, cluster, "web", "frontend", pinned("v2"), **FAST)
    assert result.outcome is DeployOutcome.ROLLED_BACK and not result.ok
    assert result.status == "ROLLBACK_SUCCESSFUL" and result.task_definition == before.task_definition
    assert result.reason is not None and "circuit breaker triggered" in result.reason
    assert served(standin, cluster) == {"version": "v1"}


def test_an_alarm_rollback_names_the_alarm(target: AwsTarget, cluster: str, standin: EcsStandIn) -> None:
    fault(standin, service="web", fail="alarm")
    alarms = ["outreachpass-web-dev-5xx"]
    before, result = deploy_image(target, cluster, "web", "frontend", pinned("v2"), alarms=alarms, **FAST)
    assert result.outcome is DeployOutcome.ROLLED_BACK and result.task_definition == before.task_definition
    assert result.reason is not None and "alarms in ALARM: outreachpass-web-dev-5xx" in result.reason


def test_a_failed_rollback_by_ecs_is_a_failed_deploy(target: AwsTarget, cluster: str, standin: EcsStandIn) -> None:
    fault(standin, service="web", fail="rollback")
    _, result = deploy_image(target, cluster, "web", "frontend", pinned("v2"), **FAST)
    assert result.outcome is DeployOutcome.FAILED and result.status == "ROLLBACK_FAILED"
    assert result.reason is not None and "the rollback's tasks failed to start too" in result.reason


def test_an_image_that_cannot_be_pulled_rolls_back(target: AwsTarget, cluster: str) -> None:
    _, result = deploy_image(target, cluster, "web", "frontend", pinned("v9"), **FAST)
    assert result.outcome is DeployOutcome.ROLLED_BACK
    assert result.reason is not None and "CannotPullContainerError" in result.reason


def test_a_deployment_that_outlasts_its_timeout(target: AwsTarget, cluster: str, standin: EcsStandIn) -> None:
    httpx.post(f"{standin.base_url}/_opcd/ecs/timings", json={"deploy": 3600}, timeout=30).raise_for_status()
    try:
        _, result = deploy_image(target, cluster, "web", "frontend", pinned("v2"), timeout=0.3, poll_interval=0.05)
    finally:
        httpx.post(f"{standin.base_url}/_opcd/ecs/timings", json={"deploy": 0.1}, timeout=30).raise_for_status()
    assert result.outcome is DeployOutcome.TIMED_OUT and result.status in ("PENDING", "IN_PROGRESS")
    assert result.reason is not None and result.reason.startswith(f"still {result.status} after")


def test_blue_green_bakes_whole_minutes(target: AwsTarget, cluster: str, standin: EcsStandIn) -> None:
    assert deployment_configuration("blue-green", 61, [])["bakeTimeInMinutes"] == 2
    assert deployment_configuration("rolling", 600, ["a"]) == {
        "strategy": "ROLLING", "deploymentCircuitBreaker": {"enable": True, "rollback": True},
        "alarms": {"alarmNames": ["a"], "enable": True, "rollback": True},
    }  # fmt: skip
    httpx.post(f"{standin.base_url}/_opcd/ecs/timings", json={"minute": 0.05}, timeout=30).raise_for_status()
    lines: list[str] = []
    _, result = deploy_image(
        target, cluster, "web", "frontend", pinned("v2"), strategy="blue-green", bake_seconds=90, say=lines.append,
        **FAST,
    )  # fmt: skip
    assert result.ok and any("(BAKE_TIME)" in line for line in lines)


def test_a_tag_is_refused_before_anything_changes(target: AwsTarget, cluster: str) -> None:
    for tagged in (f"{REPOSITORY}:v2", f"{REPOSITORY}:latest", REPOSITORY, f"{REPOSITORY}@sha256:abc"):
        with pytest.raises(InputError, match="not pinned to a digest") as raised:
            deploy_image(target, cluster, "web", "frontend", tagged, **FAST)
        assert str(raised.value).endswith("REPOSITORY@sha256:<64 hex digits> (the digest the push reported)")
    live = describe_service(target, cluster, "web", "frontend")
    assert live.revision == 1 and live.image == f"{REPOSITORY}:v1"
    with pytest.raises(InputError):
        register_revision(target, live, f"{REPOSITORY}:v2")
    assert pinned_image(pinned("v2")) == pinned("v2")


def test_wrong_names_are_one_line_errors(target: AwsTarget, cluster: str) -> None:
    with unrecorded():  # names opcd.toml does not give: its policy denies them, the sandbox answers them
        with pytest.raises(ResourceMissing, match="ClusterNotFoundException — fix environments.ENV.ecs"):
            describe_service(target, "nowhere", "web", "frontend")
        with pytest.raises(ResourceMissing, match="'ghost' does not exist in cluster"):
            describe_service(target, cluster, "ghost", "frontend")
    with pytest.raises(InputError, match="has no container 'web' \\(it has frontend, log-router\\)"):
        describe_service(target, cluster, "web", "web")


def test_roll_back_puts_the_previous_revision_back_verified(
    target: AwsTarget, cluster: str, standin: EcsStandIn
) -> None:
    fault(standin, service="web", fail="health", path="/health.json")
    before, result = deploy_image(target, cluster, "web", "frontend", pinned("v2"), **FAST)
    assert result.ok and httpx.get(standin.local_url(cluster, "web") + "/health.json", timeout=30).status_code == 500
    back = roll_back(target, cluster, "web", before.task_definition, **FAST)
    assert back.ok and back.task_definition == before.task_definition
    assert served(standin, cluster) == {"version": "v1"}
    again = roll_back(target, cluster, "web", before.task_definition, **FAST)  # already there: nothing to do
    assert again.ok and again.deployment_arn == ""
    # a rollback whose deployment fails is not verified
    broken = register_revision(target, describe_service(target, cluster, "web", "frontend"), pinned("v9"))
    with pytest.raises(DeployFailed, match="ROLLBACK NOT VERIFIED: web runs .*-web:1 \\(2/2 tasks\\)"):
        roll_back(target, cluster, "web", broken, **FAST)


def test_the_calls_of_a_deploy_and_a_rollback_pass_the_generated_policy(
    standin: EcsStandIn, cluster: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from opcd.config import load_config
    from opcd.errors import ConfigError
    from tests.iam_proof import check, load

    try:
        config = load_config(tmp_path / "opcd.toml")
    except ConfigError as exc:
        pytest.skip(f"opcd.config does not read ECS components yet: {exc}")
    calls = tmp_path / "calls"
    calls.mkdir()
    monkeypatch.setenv("OPCD_RECORD_AWS_CALLS", str(calls))
    # a target of its own: its clients are made now, recording into ``calls``
    own = AwsTarget("endpoint", REGION, standin.base_url, credentials=("testing", "recorded"))
    before, result = deploy_image(own, cluster, "web", "frontend", pinned("v2"), alarms=["a"], **FAST)
    roll_back(own, cluster, "web", before.task_definition, **FAST)
    recorded = load(calls)
    assert {c["operation"] for c in recorded} == {
        "DescribeServices", "DescribeTaskDefinition", "RegisterTaskDefinition", "ListServiceDeployments",
        "UpdateService", "DescribeServiceDeployments",
    }  # fmt: skip
    policies = {role: policy(config, role, account="*") for role in ROLES}
    assert check(recorded, policies, unused=False) == []
