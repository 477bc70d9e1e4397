"""The ECS stand-in walks ECS's service deployments in front of moto's ECS, in ECS's wire shapes.

It is mounted in the sandbox's real WSGI app (moto behind it) served by werkzeug, and an unmodified boto3 client
talks to it. Every answer's raw JSON is checked against botocore's ECS model before boto3 parses it. The
stand-in's clock is frozen: a test says when time passes.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from werkzeug.serving import make_server

from sandbox.apprunner import ImageUnavailable, ServedImage
from sandbox.ecs import EcsStandIn, Timings
from sandbox.seed import EcsSeed, seed_ecs
from sandbox.server import SandboxApp
from tests.sandbox.shapes import problems
from tests.sandbox.test_apprunner import Clock

REGION, ACCOUNT = "us-east-1", "123456789012"
HOST = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com"
LATER = 1000.0
OURS = {"UpdateService", "DescribeServices", "ListServiceDeployments", "DescribeServiceDeployments"}


def image(tag: str) -> str:
    return f"{HOST}/web:{tag}"


class Images:
    """The fake image source: identifier → directory of the image's files; others cannot be pulled."""

    def __init__(self, images: dict[str, Path]) -> None:
        self.images = images

    def resolve(self, identifier: str, repository_type: str) -> ServedImage:
        if repository_type == "ECR_PUBLIC":
            return ServedImage(identifier, None, None)
        root = self.images.get(identifier)
        if root is None:
            raise ImageUnavailable(f"{identifier}: manifest unknown")
        return ServedImage(identifier, "sha256:" + hashlib.sha256(str(root).encode()).hexdigest(), root)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("ecs-images")
    found = {}
    for tag in ("v1", "v2", "v3"):
        root = base / tag
        root.mkdir()
        (root / "index.html").write_text(f"<h1>{tag}</h1>")
        (root / "health.json").write_text('{"ok": true}')
        found[image(tag)] = root
    return found


@pytest.fixture(scope="module")
def clock() -> Clock:
    return Clock()


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory, files: dict[str, Path], clock: Clock) -> Iterator[SandboxApp]:
    sandbox = SandboxApp(tmp_path_factory.mktemp("ecs-sandbox"), REGION)
    sandbox.ecs = EcsStandIn(REGION, ACCOUNT, sandbox.moto, Images(files).resolve, clock=clock)
    sandbox.on_reset.append(sandbox.ecs.reset)
    server = make_server("127.0.0.1", 0, sandbox, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    sandbox.ecs.base_url = f"http://127.0.0.1:{server.server_port}"
    yield sandbox
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


@pytest.fixture
def standin(app: SandboxApp) -> EcsStandIn:
    ecs: EcsStandIn = app.ecs
    return ecs


@pytest.fixture(scope="module")
def wire() -> list[tuple[str, int, bytes]]:
    return []


@pytest.fixture(scope="module")
def client(app: SandboxApp, wire: list[tuple[str, int, bytes]]) -> Any:
    client = boto3.client(
        "ecs", endpoint_url=app.ecs.base_url, region_name=REGION,
        aws_access_key_id="testing", aws_secret_access_key="testing",
    )  # fmt: skip
    client.meta.events.register(
        "after-call.ecs", lambda http_response, model, **_: wire.append((model.name, http_response.status_code,
                                                                         http_response.content)),
    )  # fmt: skip
    return client


@pytest.fixture(autouse=True)
def fresh(app: SandboxApp, clock: Clock, wire: list[Any]) -> None:
    httpx.post(f"{app.ecs.base_url}/moto-api/reset", timeout=30).raise_for_status()
    app.ecs.timings = Timings()
    wire.clear()


# ---------------------------------------------------------------------- helpers


def service(client: Any, name: str = "web", tag: str = "v1", **config: Any) -> str:
    """A cluster ``site`` and a service running ``tag`` (2 tasks); its ARN."""
    client.create_cluster(clusterName="site")
    register(client, tag, family=name)
    arn: str = client.create_service(
        cluster="site", serviceName=name, taskDefinition=name, desiredCount=2, launchType="FARGATE",
        loadBalancers=[{"targetGroupArn": "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/t/0a",
                        "containerName": "frontend", "containerPort": 8080}],
        deploymentConfiguration=config or {"deploymentCircuitBreaker": {"enable": True, "rollback": True}},
    )["service"]["serviceArn"]  # fmt: skip
    return arn


def register(client: Any, tag: str, family: str = "web") -> str:
    arn: str = client.register_task_definition(
        family=family, networkMode="awsvpc", requiresCompatibilities=["FARGATE"], cpu="256", memory="512",
        containerDefinitions=[
            {"name": "log-router", "image": "public.ecr.aws/aws-observability/aws-for-fluent-bit:stable"},
            {"name": "frontend", "image": image(tag), "portMappings": [{"containerPort": 8080}]},
        ],
    )["taskDefinition"]["taskDefinitionArn"]  # fmt: skip
    return arn


def deploy(client: Any, tag: str, name: str = "web", **config: Any) -> str:
    """UpdateService to a new revision with ``tag``; the service deployment's ARN."""
    extra = {"deploymentConfiguration": config} if config else {}
    client.update_service(cluster="site", service=name, taskDefinition=register(client, tag, name), **extra)
    return str(client.list_service_deployments(cluster="site", service=name)["serviceDeployments"][0][
        "serviceDeploymentArn"])  # fmt: skip


def described(client: Any, arn: str) -> dict[str, Any]:
    found: dict[str, Any] = client.describe_service_deployments(serviceDeploymentArns=[arn])["serviceDeployments"][0]
    return found


def live(client: Any, name: str = "web") -> dict[str, Any]:
    found: dict[str, Any] = client.describe_services(cluster="site", services=[name])["services"][0]
    return found


def served(standin: EcsStandIn, path: str = "/", name: str = "web") -> httpx.Response:
    return httpx.get(standin.local_url("site", name) + path, timeout=30)


def fault(standin: EcsStandIn, **body: Any) -> httpx.Response:
    return httpx.post(f"{standin.base_url}/_opcd/ecs/faults", json=body, timeout=30)


# ---------------------------------------------------------------------- the protocol


def test_every_answer_has_the_shape_of_ecss_model(client: Any, clock: Clock, standin: EcsStandIn,
                                                   wire: list[Any]) -> None:  # fmt: skip
    # given services that deploy every way the stand-in knows
    service(client)
    service(client, "green")
    service(client, "alarmed")
    live(client)
    first = deploy(client, "v2")
    described(client, first)  # PENDING
    clock.advance(1)
    live(client)
    described(client, first)  # IN_PROGRESS
    clock.advance(LATER)
    described(client, first)  # SUCCESSFUL
    fault(standin, service="web", fail="circuit-breaker").raise_for_status()
    broken = deploy(client, "v3")
    clock.advance(3)
    live(client)
    described(client, broken)  # ROLLBACK_IN_PROGRESS
    clock.advance(LATER)
    blue = deploy(client, "v2", "green", strategy="BLUE_GREEN", bakeTimeInMinutes=5)
    clock.advance(3)
    described(client, blue)  # baking
    alarms = {"alarmNames": ["web-errors"], "enable": True, "rollback": False}
    fault(standin, service="alarmed", fail="alarm").raise_for_status()
    stopped = deploy(client, "v2", "alarmed", alarms=alarms)
    clock.advance(LATER)
    for arn in (first, broken, blue, stopped):
        described(client, arn)
    live(client)
    live(client, "alarmed")
    page = client.list_service_deployments(cluster="site", service="web", maxResults=1)
    client.list_service_deployments(cluster="site", service="web", maxResults=1, nextToken=page["nextToken"])
    missing = client.describe_service_deployments(serviceDeploymentArns=[first + "x"])
    # then every raw answer conforms to its operation's output shape, moto's and the stand-in's alike
    model = client.meta.service_model
    assert OURS <= {name for name, _, _ in wire}
    for name, code, raw in wire:
        assert code == 200, (name, raw)
        assert problems(model.operation_model(name).output_shape, json.loads(raw)) == [], name
    assert missing["failures"] == [{"arn": first + "x", "reason": "MISSING"}]
    assert [described(client, arn)["status"] for arn in (first, broken, blue, stopped)] == [
        "SUCCESSFUL", "ROLLBACK_SUCCESSFUL", "SUCCESSFUL", "STOPPED",
    ]  # fmt: skip


def test_a_rolling_deployment_moves_through_its_states(client: Any, clock: Clock, standin: EcsStandIn) -> None:
    arn = service(client)
    before = live(client)
    assert (before["runningCount"], before["desiredCount"], before["pendingCount"]) == (2, 2, 0)
    assert [d["rolloutState"] for d in before["deployments"]] == ["COMPLETED"]
    assert served(standin).text == "<h1>v1</h1>"
    deployment = deploy(client, "v2")
    assert deployment.startswith(f"arn:aws:ecs:{REGION}:{ACCOUNT}:service-deployment/site/web/")
    pending = described(client, deployment)
    assert pending["status"] == "PENDING" and pending["serviceArn"] == arn and "startedAt" not in pending
    now = live(client)
    assert now["taskDefinition"].endswith("task-definition/web:2") and now["currentServiceDeployment"] == deployment
    assert [(d["status"], d["rolloutState"]) for d in now["deployments"]] == [
        ("PRIMARY", "IN_PROGRESS"), ("ACTIVE", "COMPLETED"),
    ]  # fmt: skip
    clock.advance(1.5)
    assert described(client, deployment)["status"] == "IN_PROGRESS"
    assert served(standin).text == "<h1>v1</h1>"  # the new tasks are not up yet
    clock.advance(LATER)
    done = described(client, deployment)
    assert done["status"] == "SUCCESSFUL" and "finishedAt" in done
    assert done["deploymentCircuitBreaker"] == {"status": "MONITORING_COMPLETE", "failureCount": 0, "threshold": 3}
    assert done["alarms"]["status"] == "DISABLED" and "rollback" not in done
    assert done["targetServiceRevision"]["runningTaskCount"] == 2
    after = live(client)
    assert [(d["taskDefinition"][-5:], d["rolloutState"]) for d in after["deployments"]] == [("web:2", "COMPLETED")]
    assert after["runningCount"] == 2 and served(standin).text == "<h1>v2</h1>"


def test_the_circuit_breaker_rolls_back_a_deployment_whose_tasks_fail(
    client: Any, clock: Clock, standin: EcsStandIn
) -> None:
    service(client)
    fault(standin, service="web", fail="circuit-breaker").raise_for_status()
    deployment = deploy(client, "v2")
    clock.advance(3)
    rolling = described(client, deployment)
    assert rolling["status"] == "ROLLBACK_IN_PROGRESS"
    assert rolling["deploymentCircuitBreaker"]["status"] == "TRIGGERED"
    assert rolling["rollback"]["serviceRevisionArn"] == rolling["sourceServiceRevisions"][0]["arn"]
    assert "circuit breaker" in rolling["rollback"]["reason"]
    assert [d["rolloutState"] for d in live(client)["deployments"]] == ["IN_PROGRESS", "FAILED"]
    assert served(standin).text == "<h1>v1</h1>"
    clock.advance(LATER)
    ended = described(client, deployment)
    assert ended["status"] == "ROLLBACK_SUCCESSFUL" and "tasks failed to start" in ended["statusReason"]
    after = live(client)
    assert after["taskDefinition"].endswith("web:1") and after["runningCount"] == 2
    assert served(standin).text == "<h1>v1</h1>"
    # a later deployment does not inherit the fault
    assert described(client, (later := deploy(client, "v2")))["status"] == "PENDING"
    clock.advance(LATER)
    assert described(client, later)["status"] == "SUCCESSFUL"


def test_a_failed_rollback_leaves_nothing_serving(
    client: Any, clock: Clock, standin: EcsStandIn, wire: list[Any]
) -> None:
    service(client)
    fault(standin, service="web", fail="rollback").raise_for_status()
    deployment = deploy(client, "v2")
    clock.advance(LATER)
    ended = described(client, deployment)
    assert ended["status"] == "ROLLBACK_FAILED" and "the rollback's tasks failed to start too" in ended["statusReason"]
    name, _, raw = wire[-1]
    shape = client.meta.service_model.operation_model(name).output_shape
    assert name == "DescribeServiceDeployments" and problems(shape, json.loads(raw)) == []
    assert served(standin).status_code == 503
    recovery = deploy(client, "v3")  # a later deployment brings tasks back
    clock.advance(LATER)
    assert described(client, recovery)["status"] == "SUCCESSFUL" and served(standin).text == "<h1>v3</h1>"


def test_an_image_that_cannot_be_pulled(client: Any, clock: Clock, standin: EcsStandIn) -> None:
    service(client)
    service(client, "unwatched", deploymentCircuitBreaker={"enable": False, "rollback": False})
    watched, unwatched = deploy(client, "v9"), deploy(client, "v9", "unwatched")
    clock.advance(LATER)
    assert described(client, watched)["status"] == "ROLLBACK_SUCCESSFUL"
    assert "CannotPullContainerError" in described(client, watched)["statusReason"]
    # without the circuit breaker ECS keeps trying: the deployment never ends
    stuck = described(client, unwatched)
    assert stuck["status"] == "IN_PROGRESS" and stuck["deploymentCircuitBreaker"]["status"] == "DISABLED"
    assert served(standin, name="unwatched").text == "<h1>v1</h1>"


def test_an_alarm_rolls_back_after_traffic_moved(client: Any, clock: Clock, standin: EcsStandIn) -> None:
    service(client)
    alarms = {"alarmNames": ["web-errors", "web-latency"], "enable": True, "rollback": True}
    fault(standin, service="web", fail="alarm").raise_for_status()
    deployment = deploy(client, "v2", alarms=alarms)
    clock.advance(3)
    rolling = described(client, deployment)
    assert rolling["status"] == "ROLLBACK_IN_PROGRESS"
    assert rolling["alarms"] == {"status": "TRIGGERED", "alarmNames": ["web-errors", "web-latency"],
                                 "triggeredAlarmNames": ["web-errors"]}  # fmt: skip
    assert "web-errors" in rolling["rollback"]["reason"]
    assert served(standin).text == "<h1>v2</h1>"  # the alarm fired under the new tasks' traffic
    clock.advance(LATER)
    assert described(client, deployment)["status"] == "ROLLBACK_SUCCESSFUL"
    assert served(standin).text == "<h1>v1</h1>"
    # an alarm fault on a deployment that watches no alarm changes nothing
    unwatched = {"alarmNames": ["web-errors"], "enable": False, "rollback": False}
    fault(standin, service="web", fail="alarm").raise_for_status()
    quiet = deploy(client, "v3", alarms=unwatched)
    clock.advance(LATER)
    assert described(client, quiet)["status"] == "SUCCESSFUL" and served(standin).text == "<h1>v3</h1>"


def test_without_rollback_a_failure_stops_the_deployment(client: Any, clock: Clock, standin: EcsStandIn) -> None:
    service(client, deploymentCircuitBreaker={"enable": True, "rollback": False})
    fault(standin, service="web", fail="circuit-breaker").raise_for_status()
    deployment = deploy(client, "v2")
    clock.advance(LATER)
    stopped = described(client, deployment)
    assert stopped["status"] == "STOPPED" and "stoppedAt" in stopped and "rollback" not in stopped
    now = live(client)
    assert now["taskDefinition"].endswith("web:2") and now["deployments"][0]["rolloutState"] == "FAILED"
    assert served(standin).text == "<h1>v1</h1>"  # the old tasks still serve


def test_blue_green_bakes_before_it_ends(client: Any, clock: Clock, standin: EcsStandIn) -> None:
    service(client)
    deployment = deploy(client, "v2", strategy="BLUE_GREEN", bakeTimeInMinutes=10)  # 10 s of the sandbox's
    assert described(client, deployment)["lifecycleStage"] == "RECONCILE_SERVICE"
    clock.advance(1)
    assert described(client, deployment)["lifecycleStage"] == "SCALE_UP"
    clock.advance(2)
    baking = described(client, deployment)
    assert (baking["status"], baking["lifecycleStage"]) == ("IN_PROGRESS", "BAKE_TIME")
    assert baking["deploymentConfiguration"]["bakeTimeInMinutes"] == 10
    assert served(standin).text == "<h1>v2</h1>"  # production traffic shifted
    assert [d["runningCount"] for d in live(client)["deployments"]] == [2, 2]  # blue stays up while baking
    clock.advance(10)
    ended = described(client, deployment)
    assert (ended["status"], ended["lifecycleStage"]) == ("SUCCESSFUL", "CLEAN_UP")
    assert live(client)["deploymentConfiguration"]["strategy"] == "BLUE_GREEN"


def test_the_health_fault_makes_the_new_tasks_unhealthy(client: Any, clock: Clock, standin: EcsStandIn) -> None:
    service(client)
    fault(standin, service="web", fail="health", path="/health.json").raise_for_status()
    deployment = deploy(client, "v2")
    clock.advance(LATER)
    assert described(client, deployment)["status"] == "SUCCESSFUL"  # ECS's own checks passed
    assert served(standin, "/health.json").status_code == 500
    assert served(standin).text == "<h1>v2</h1>"
    back = deploy(client, "v1")  # a deploy of the previous revision's image serves healthy tasks again
    clock.advance(LATER)
    assert described(client, back)["status"] == "SUCCESSFUL" and served(standin, "/health.json").json() == {"ok": True}


def test_a_newer_deployment_stops_the_one_in_progress(client: Any, clock: Clock) -> None:
    service(client)
    first = deploy(client, "v2")
    clock.advance(1)
    second = deploy(client, "v3")
    assert described(client, first)["status"] == "STOPPED"
    listed = client.list_service_deployments(cluster="site", service="web")["serviceDeployments"]
    assert [d["serviceDeploymentArn"] for d in listed] == [second, first]
    only = client.list_service_deployments(cluster="site", service="web", status=["STOPPED"])["serviceDeployments"]
    assert [d["serviceDeploymentArn"] for d in only] == [first]
    clock.advance(LATER)
    assert described(client, second)["status"] == "SUCCESSFUL" and live(client)["taskDefinition"].endswith("web:3")


def test_bad_requests_are_refused_as_ecs_does(client: Any) -> None:
    service(client)
    with pytest.raises(client.exceptions.ServiceNotFoundException):
        client.update_service(cluster="site", service="ghost", taskDefinition="web:1")
    with pytest.raises(client.exceptions.ClusterNotFoundException):
        client.list_service_deployments(cluster="nowhere", service="web")
    for bad in (
        {"strategy": "CANARY"},
        {"bakeTimeInMinutes": 5000},
        {"alarms": {"alarmNames": [], "enable": True, "rollback": True}},
    ):
        with pytest.raises(client.exceptions.InvalidParameterException):
            client.update_service(cluster="site", service="web", taskDefinition="web:1", deploymentConfiguration=bad)
    assert client.list_service_deployments(cluster="site", service="web")["serviceDeployments"] == []


def test_faults_and_timings_control(client: Any, standin: EcsStandIn) -> None:
    alarm_with_path = {"service": "web", "fail": "alarm", "path": "/"}
    for bad in ({"service": "web", "fail": "boom"}, {"service": "web"}, alarm_with_path):
        assert fault(standin, **bad).status_code == 400, bad
    timings = httpx.post(f"{standin.base_url}/_opcd/ecs/timings", json={"deploy": 0.5, "minute": 0.1}, timeout=30)
    assert timings.json() == {"pending": 0.5, "deploy": 0.5, "rollback": 1.0, "minute": 0.1}
    assert httpx.post(f"{standin.base_url}/_opcd/ecs/timings", json={"deploy": -1}, timeout=30).status_code == 400
    assert fault(standin, service="web", fail="health").json() == {"faults": [{"service": "web", "fail": "health"}]}
    assert httpx.delete(f"{standin.base_url}/_opcd/ecs/faults", timeout=30).json() == {"faults": []}


def in_region(app: SandboxApp, region: str, service: str = "ecs") -> Any:
    return boto3.client(
        service, endpoint_url=app.ecs.base_url, region_name=region,
        aws_access_key_id="testing", aws_secret_access_key="testing",
    )  # fmt: skip


def test_each_region_keeps_its_own_services_deployments_and_faults(
    app: SandboxApp, client: Any, clock: Clock, standin: EcsStandIn
) -> None:
    west = in_region(app, "us-west-2")
    for each in (client, west):  # a service of the same name in each region
        service(each)
    fault(standin, service="web", fail="health", path="/health.json", region="us-west-2").raise_for_status()
    east_deployment, west_deployment = deploy(client, "v2"), deploy(west, "v2")
    assert ":us-west-2:" in west_deployment and ":us-east-1:" in east_deployment
    clock.advance(LATER)
    assert described(west, west_deployment)["status"] == "SUCCESSFUL"
    assert described(client, east_deployment)["status"] == "SUCCESSFUL"
    east_url, west_url = standin.local_url("site", "web"), standin.local_url("site", "web", "us-west-2")
    assert west_url.endswith("/_ecs/site/web@us-west-2")
    assert httpx.get(east_url + "/health.json", timeout=30).json() == {"ok": True}  # the fault was us-west-2's
    assert httpx.get(west_url + "/health.json", timeout=30).status_code == 500
    assert httpx.get(west_url + "/", timeout=30).text == "<h1>v2</h1>"
    listed = west.list_service_deployments(cluster="site", service="web")["serviceDeployments"]
    assert [d["serviceDeploymentArn"] for d in listed] == [west_deployment]
    assert live(west)["serviceArn"].startswith("arn:aws:ecs:us-west-2:")
    back = deploy(client, "v1")  # us-east-1 alone: us-west-2 keeps v2
    clock.advance(LATER)
    assert described(client, back)["status"] == "SUCCESSFUL" and live(west)["taskDefinition"].endswith("web:2")
    assert httpx.get(east_url + "/", timeout=30).text == "<h1>v1</h1>"
    assert httpx.get(west_url + "/", timeout=30).text == "<h1>v2</h1>"
    assert httpx.get(standin.local_url("site", "web", "eu-west-1") + "/", timeout=30).status_code == 404


def test_a_fault_without_a_region_is_taken_in_the_first_region_that_deploys(
    app: SandboxApp, client: Any, clock: Clock, standin: EcsStandIn
) -> None:
    west = in_region(app, "us-west-2")
    for each in (client, west):
        service(each)
    fault(standin, service="web", fail="circuit-breaker").raise_for_status()
    first, second = deploy(west, "v2"), deploy(client, "v2")
    clock.advance(LATER)
    assert described(west, first)["status"] == "ROLLBACK_SUCCESSFUL"
    assert described(client, second)["status"] == "SUCCESSFUL"
    assert fault(standin, service="web", fail="health", region="Oregon").status_code == 400


def test_seed_creates_the_examples_services(app: SandboxApp, client: Any, standin: EcsStandIn) -> None:
    def make(service_name: str, region: str = REGION) -> Any:
        return in_region(app, region, service_name)

    services = [
        EcsSeed(env, "frontend", f"outreachpass-{env}", f"outreachpass-web-ecs-{env}", "frontend", health)
        for env, health in (("dev", "https://dev.ecs.example/health.json"), ("prod", None))
    ]
    gateway = seed_ecs(make, standin.base_url, services)
    assert gateway == {"https://dev.ecs.example": standin.local_url("outreachpass-dev", "outreachpass-web-ecs-dev")}
    for env in ("dev", "prod"):
        found = client.describe_services(cluster=f"outreachpass-{env}", services=[f"outreachpass-web-ecs-{env}"])
        running = found["services"][0]
        assert (running["runningCount"], running["desiredCount"]) == (2, 2)
        definition = client.describe_task_definition(taskDefinition=running["taskDefinition"])["taskDefinition"]
        assert [c["name"] for c in definition["containerDefinitions"]] == ["frontend"]
        assert definition["executionRoleArn"].endswith(f"role/outreachpass-web-ecs-{env}-execution")
    answer = httpx.get(gateway["https://dev.ecs.example"] + "/health.json", timeout=30)
    assert answer.json() == {"status": "ok", "version": "placeholder"}


def test_seed_creates_a_service_in_each_region_and_its_gateway_entry(
    app: SandboxApp, client: Any, standin: EcsStandIn
) -> None:
    def make(service_name: str, region: str = REGION) -> Any:
        return in_region(app, region, service_name)

    services = [
        EcsSeed("prod", "frontend", f"outreachpass-prod-{region}", "outreachpass-web-ecs-prod", "frontend",
                f"https://{region}.ecs.example/health.json", region)
        for region in (REGION, "us-west-2")
    ]  # fmt: skip
    gateway = seed_ecs(make, standin.base_url, services, REGION)
    assert gateway == {
        "https://us-east-1.ecs.example": standin.local_url("outreachpass-prod-us-east-1", "outreachpass-web-ecs-prod"),
        "https://us-west-2.ecs.example": standin.local_url(
            "outreachpass-prod-us-west-2", "outreachpass-web-ecs-prod", "us-west-2"
        ),
    }  # fmt: skip
    west = in_region(app, "us-west-2")
    found = west.describe_services(cluster="outreachpass-prod-us-west-2", services=["outreachpass-web-ecs-prod"])
    assert found["services"][0]["serviceArn"].startswith("arn:aws:ecs:us-west-2:")
    with pytest.raises(client.exceptions.ClusterNotFoundException):  # us-east-1 has no us-west-2 cluster
        client.list_service_deployments(cluster="outreachpass-prod-us-west-2", service="outreachpass-web-ecs-prod")
    answer = httpx.get(gateway["https://us-west-2.ecs.example"] + "/health.json", timeout=30)
    assert answer.json() == {"status": "ok", "version": "placeholder"}


def test_the_sandbox_server_serves_ecs_through_its_gateway(sandbox: Any) -> None:
    # the real sandbox (moto, the registry, the stand-ins), its ECS seeded as Terraform would
    from opcd.aws import new_client

    httpx.post(f"{sandbox.url}/moto-api/reset", timeout=30).raise_for_status()
    seeded = [EcsSeed("dev", "frontend", "outreachpass-dev", "outreachpass-web-ecs-dev", "frontend",
                      "https://dev.ecs.example/health.json")]  # fmt: skip
    gateway = seed_ecs(lambda name, region=REGION: new_client(name, region, ("testing", "testing"), sandbox.url),
                       sandbox.url, seeded)  # fmt: skip
    assert gateway == {"https://dev.ecs.example": f"{sandbox.url}/_ecs/outreachpass-dev/outreachpass-web-ecs-dev"}
    assert httpx.get(gateway["https://dev.ecs.example"] + "/", timeout=30).json()["version"] == "placeholder"
    ecs = new_client("ecs", REGION, ("testing", "testing"), sandbox.url)
    answer = ecs.list_service_deployments(cluster="outreachpass-dev", service="outreachpass-web-ecs-dev")
    assert answer["serviceDeployments"] == []
