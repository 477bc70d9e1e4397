"""The App Runner stand-in speaks App Runner's protocol and walks its state machines.

It runs behind werkzeug's real HTTP server and an unmodified boto3 client talks to it. Every answer's raw JSON
is checked against botocore's own App Runner model before boto3 parses it. The stand-in's clock is frozen in
most tests, so that a test says when time passes and no assertion races the machine's load; one test runs on
the real clock with tiny timings.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from werkzeug.serving import make_server

from sandbox.apprunner import AppRunnerStandIn, ImageUnavailable, ServedImage, Timings
from tests.sandbox.shapes import problems

REGION, ACCOUNT = "us-east-1", "123456789012"
HOST = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/apprunner-ecr-access"
PUBLIC = "public.ecr.aws/aws-containers/hello-app-runner:latest"
LATER = 1000.0  # seconds: past the end of any phase
OPERATIONS = {
    "CreateService", "DescribeService", "UpdateService", "StartDeployment",
    "ListOperations", "ListServices", "DeleteService",
}  # fmt: skip


def image(tag: str, repository: str = "web") -> str:
    return f"{HOST}/{repository}:{tag}"


class Clock:
    """The stand-in's monotonic clock: frozen unless a test lets it run."""

    def __init__(self) -> None:
        self.frozen: float | None = time.monotonic()

    def __call__(self) -> float:
        return time.monotonic() if self.frozen is None else self.frozen

    def advance(self, seconds: float) -> None:
        assert self.frozen is not None, "the clock runs"
        self.frozen += seconds


class Registry:
    """The fake image source: identifier → directory of the image's files; other ECR tags do not exist."""

    def __init__(self, images: dict[str, Path]) -> None:
        self.images = dict(images)
        self.original = dict(images)
        self.pulls: list[str] = []
        self.gate: threading.Event | None = None  # set: pulls wait for it

    def resolve(self, identifier: str, repository_type: str) -> ServedImage:
        self.pulls.append(identifier)
        if self.gate is not None:
            self.gate.wait(60)
        if repository_type == "ECR_PUBLIC":
            return ServedImage(identifier, None, None)
        root = self.images.get(identifier)
        if root is None:
            raise ImageUnavailable(f"{identifier}: manifest unknown")
        return ServedImage(identifier, digest_of(root), root, "8080")

    def check(self, identifier: str, repository_type: str) -> str | None:
        return "The ECR repository 'nope' does not exist" if "/nope:" in identifier else None


def digest_of(root: Path) -> str:
    return "sha256:" + hashlib.sha256(str(root).encode()).hexdigest()


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("images")
    (base / "secret.txt").write_text("not for you")

    def unpacked(tag: str, files: dict[str, str]) -> Path:
        root = base / tag / "rootfs"
        for name, text in files.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text(text)
        return root

    v1 = unpacked("v1", {"index.html": "<h1>v1</h1>", "health.json": '{"ok": true}', "docs/index.html": "docs v1"})
    v2 = unpacked("v2", {"index.html": "<h1>v2</h1>", "health.json": '{"ok": true}', "static/app.css": "body {}"})
    (v2 / "leak.txt").symlink_to(base / "secret.txt")
    v3 = unpacked("v3", {"index.html": "<h1>v3</h1>"})  # no health.json
    return {image("v1"): v1, image("v2"): v2, image("v3"): v3}


@pytest.fixture(scope="module")
def clock() -> Clock:
    return Clock()


@pytest.fixture(scope="module")
def registry(images: dict[str, Path]) -> Registry:
    return Registry(images)


@pytest.fixture(scope="module")
def standin(registry: Registry, clock: Clock) -> Iterator[AppRunnerStandIn]:
    app = AppRunnerStandIn(REGION, ACCOUNT, registry.resolve, registry.check, clock=clock)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    app.base_url = f"http://127.0.0.1:{server.server_port}"
    yield app
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def wire() -> list[tuple[str, int, bytes]]:
    """(operation, HTTP status, raw body) of every call the client makes."""
    return []


@pytest.fixture(scope="module")
def client(standin: AppRunnerStandIn, wire: list[tuple[str, int, bytes]]) -> Any:
    client = boto3.client(
        "apprunner", endpoint_url=standin.base_url, region_name=REGION,
        aws_access_key_id="testing", aws_secret_access_key="testing",
    )  # fmt: skip

    def capture(http_response: Any, model: Any, **_: Any) -> None:
        wire.append((model.name, http_response.status_code, http_response.content))

    client.meta.events.register("after-call.apprunner", capture)
    return client


@pytest.fixture(autouse=True)
def fresh(
    standin: AppRunnerStandIn, clock: Clock, registry: Registry, wire: list[tuple[str, int, bytes]]
) -> Iterator[None]:
    standin.reset()
    standin.timings = Timings()
    clock.frozen = time.monotonic()
    registry.images, registry.pulls, registry.gate = dict(registry.original), [], None
    wire.clear()
    yield
    if registry.gate is not None:
        registry.gate.set()


# ---------------------------------------------------------------------- helpers


def create(client: Any, name: str = "site", identifier: str | None = None, **extra: Any) -> dict[str, Any]:
    repository_type = "ECR_PUBLIC" if (identifier or "").startswith("public.ecr.aws/") else "ECR"
    source = {
        "ImageRepository": {"ImageIdentifier": identifier or image("v1"), "ImageRepositoryType": repository_type},
        "AuthenticationConfiguration": {"AccessRoleArn": ROLE},
    }
    answer: dict[str, Any] = client.create_service(ServiceName=name, SourceConfiguration=source, **extra)
    return answer


def update(client: Any, arn: str, identifier: str) -> str:
    source = client.describe_service(ServiceArn=arn)["Service"]["SourceConfiguration"]
    source["ImageRepository"]["ImageIdentifier"] = identifier
    return str(client.update_service(ServiceArn=arn, SourceConfiguration=source)["OperationId"])


def running(client: Any, clock: Clock, **kwargs: Any) -> dict[str, Any]:
    """A service created and RUNNING."""
    service = create(client, **kwargs)["Service"]
    clock.advance(LATER)
    described: dict[str, Any] = client.describe_service(ServiceArn=service["ServiceArn"])["Service"]
    assert described["Status"] == "RUNNING"
    return described


def status(client: Any, arn: str) -> str:
    return str(client.describe_service(ServiceArn=arn)["Service"]["Status"])


def operation(client: Any, arn: str, operation_id: str) -> dict[str, Any]:
    summaries = client.list_operations(ServiceArn=arn)["OperationSummaryList"]
    found: dict[str, Any] = next(op for op in summaries if op["Id"] == operation_id)
    return found


def served(standin: AppRunnerStandIn, name: str = "site", path: str = "/", **kwargs: Any) -> httpx.Response:
    return httpx.get(standin.local_url(name) + path, timeout=30, **kwargs)


def control(standin: AppRunnerStandIn, method: str, what: str, **kwargs: Any) -> httpx.Response:
    return httpx.request(method, f"{standin.base_url}/_opcd/{what}", timeout=30, **kwargs)


def wait_until(check: Callable[[], Any], what: str, deadline: float = 60.0) -> Any:
    """Poll ``check`` until it returns something truthy; a generous deadline only guards against hanging."""
    give_up = time.monotonic() + deadline
    while not (result := check()):
        assert time.monotonic() < give_up, f"still waiting for {what}"
        time.sleep(0.02)
    return result


# ---------------------------------------------------------------------- the protocol


def test_every_answer_has_the_shape_of_app_runners_model(client: Any, clock: Clock, wire: list[Any]) -> None:
    # given two services, one created with nothing but the required members
    answer = create(client)
    other = create(client, "site-2", image("v2"), InstanceConfiguration={"Cpu": "0.25 vCPU", "Memory": "0.5 GB"})
    arn = answer["Service"]["ServiceArn"]
    clock.advance(LATER)
    # when every operation is called, listings on more than one page
    client.describe_service(ServiceArn=arn)
    first = client.list_services(MaxResults=1)
    client.list_services(MaxResults=1, NextToken=first["NextToken"])
    update(client, arn, image("v2"))
    clock.advance(LATER)
    client.start_deployment(ServiceArn=arn)
    client.list_operations(ServiceArn=arn, MaxResults=1)
    clock.advance(LATER)
    deleted = client.delete_service(ServiceArn=other["Service"]["ServiceArn"])
    clock.advance(LATER)
    gone = client.describe_service(ServiceArn=other["Service"]["ServiceArn"])["Service"]
    everything = client.list_operations(ServiceArn=arn)["OperationSummaryList"]
    # then every raw answer conforms to its operation's output shape
    model = client.meta.service_model
    assert {name for name, _, _ in wire} == OPERATIONS
    for name, code, raw in wire:
        assert code == 200, (name, raw)
        assert problems(model.operation_model(name).output_shape, json.loads(raw)) == [], name
    # and carries what real App Runner would
    service = answer["Service"]
    assert re.fullmatch(rf"arn:aws:apprunner:{REGION}:{ACCOUNT}:service/site/[0-9a-f]{{32}}", arn)
    assert arn.endswith("/" + service["ServiceId"])
    assert re.fullmatch(rf"[a-z0-9]{{10}}\.{REGION}\.awsapprunner\.com", service["ServiceUrl"])
    assert re.fullmatch(r"[0-9a-f-]{36}", answer["OperationId"])
    assert service["Status"] == "OPERATION_IN_PROGRESS" and isinstance(service["CreatedAt"], datetime)
    assert service["InstanceConfiguration"] == {"Cpu": "1024", "Memory": "2048"}
    assert other["Service"]["InstanceConfiguration"] == {"Cpu": "256", "Memory": "512"}
    assert service["HealthCheckConfiguration"] == {
        "Protocol": "TCP", "Path": "/", "Interval": 5, "Timeout": 2, "HealthyThreshold": 1, "UnhealthyThreshold": 5,
    }  # fmt: skip
    assert service["SourceConfiguration"]["ImageRepository"]["ImageConfiguration"] == {"Port": "8080"}
    assert service["SourceConfiguration"]["AutoDeploymentsEnabled"] is True  # same-account ECR
    assert service["NetworkConfiguration"]["EgressConfiguration"] == {"EgressType": "DEFAULT"}
    assert service["AutoScalingConfigurationSummary"]["IsDefault"] is True
    assert deleted["Service"]["Status"] == "OPERATION_IN_PROGRESS"
    assert gone["Status"] == "DELETED" and isinstance(gone["DeletedAt"], datetime)
    assert [op["Type"] for op in everything] == ["START_DEPLOYMENT", "UPDATE_SERVICE", "CREATE_SERVICE"]


def test_the_shape_check_finds_what_departs_from_the_model(client: Any) -> None:
    model = client.meta.service_model
    summary = model.shape_for("OperationSummary")
    good = {"Id": "0" * 36, "Type": "CREATE_SERVICE", "Status": "SUCCEEDED", "StartedAt": 1.5}
    assert problems(summary, good) == []
    assert problems(summary, {**good, "Extra": 1}) == ["$: unknown member 'Extra' (not in OperationSummary)"]
    assert problems(summary, {**good, "Status": "DONE"})[0].startswith("$.Status: 'DONE' is not one of")
    assert problems(summary, {**good, "StartedAt": "2024-01-01T00:00:00Z"})[0].startswith("$.StartedAt: expected a")
    assert problems(summary, {**good, "Id": "short"})[0] == "$.Id: 5 is under the minimum 36 of UUID"
    answer = model.operation_model("DescribeService").output_shape
    assert problems(answer, {}) == ["$: missing required member Service"]
    listed = model.operation_model("ListServices").output_shape
    assert problems(listed, {"ServiceSummaryList": [{"Status": "RUNNING", "CreatedAt": True}]}) == [
        "$.ServiceSummaryList[0].CreatedAt: expected a number (Timestamp), got True"
    ]


def test_errors_are_the_modelled_exceptions(client: Any, clock: Clock, standin: AppRunnerStandIn) -> None:
    unknown = f"arn:aws:apprunner:{REGION}:{ACCOUNT}:service/ghost/{'0' * 32}"
    for call in (client.describe_service, client.list_operations, client.start_deployment, client.delete_service):
        with pytest.raises(client.exceptions.ResourceNotFoundException):
            call(ServiceArn=unknown)
    service = create(client)["Service"]
    arn = service["ServiceArn"]
    with pytest.raises(client.exceptions.InvalidRequestException, match="already exists: site"):
        create(client)
    no_role = {"ImageRepository": {"ImageIdentifier": image("v1"), "ImageRepositoryType": "ECR"}}
    with pytest.raises(client.exceptions.InvalidRequestException, match="AccessRoleArn is required"):
        client.create_service(ServiceName="no-role", SourceConfiguration=no_role)
    with pytest.raises(client.exceptions.InvalidRequestException, match="The ECR repository 'nope' does not exist"):
        create(client, "refused", image("v1", repository="nope"))
    with pytest.raises(client.exceptions.InvalidRequestException, match="NextToken"):
        client.list_operations(ServiceArn=arn, NextToken="garbage")
    # while the creation is in progress, nothing else may start
    for call, kwargs in (
        (client.update_service, {"SourceConfiguration": service["SourceConfiguration"]}),
        (client.start_deployment, {}),
        (client.delete_service, {}),
    ):
        with pytest.raises(client.exceptions.InvalidStateException, match="in OPERATION_IN_PROGRESS state"):
            call(ServiceArn=arn, **kwargs)
    clock.advance(LATER)
    with pytest.raises(client.exceptions.InvalidRequestException, match="'nope' does not exist"):
        update(client, arn, image("v2", repository="nope"))
    assert status(client, arn) == "RUNNING"  # a refused update starts nothing
    # the raw error: the header botocore reads the code from, and the error shape's members
    raw = httpx.post(
        standin.base_url, content=json.dumps({"ServiceArn": unknown}), timeout=30,
        headers={"X-Amz-Target": "AppRunner.DescribeService", "Content-Type": "application/x-amz-json-1.0"},
    )  # fmt: skip
    assert raw.status_code == 400 and raw.headers["x-amzn-ErrorType"] == "ResourceNotFoundException"
    body = raw.json()
    assert body.pop("__type") == "ResourceNotFoundException"
    assert problems(client.meta.service_model.shape_for("ResourceNotFoundException"), body) == []
    unsupported = httpx.post(standin.base_url, content="{}", headers={"X-Amz-Target": "AppRunner.PauseService"})
    assert unsupported.status_code == 400 and unsupported.json()["__type"] == "UnknownOperationException"


# ---------------------------------------------------------------------- status machines


def test_an_update_goes_live_only_once_it_succeeds(client: Any, clock: Clock, standin: AppRunnerStandIn) -> None:
    # given a service being created: PENDING, IN_PROGRESS, then RUNNING serving v1
    created = create(client)
    arn, create_id = created["Service"]["ServiceArn"], created["OperationId"]
    assert operation(client, arn, create_id)["Status"] == "PENDING"
    assert served(standin).status_code == 503  # nothing serves before the first deploy
    clock.advance(0.6)
    assert operation(client, arn, create_id)["Status"] == "IN_PROGRESS"
    clock.advance(2)
    assert status(client, arn) == "RUNNING"
    assert operation(client, arn, create_id)["Status"] == "SUCCEEDED"
    page = served(standin)
    assert page.text == "<h1>v1</h1>" and page.headers["X-Sandbox-Image-Digest"].startswith("sha256:")
    # when it is updated to v2
    update_id = update(client, arn, image("v2"))
    described = client.describe_service(ServiceArn=arn)["Service"]
    assert described["Status"] == "OPERATION_IN_PROGRESS"
    assert described["SourceConfiguration"]["ImageRepository"]["ImageIdentifier"] == image("v2")
    clock.advance(1)
    # then v1 serves until v2 is live
    assert operation(client, arn, update_id)["Status"] == "IN_PROGRESS"
    assert served(standin).text == "<h1>v1</h1>"
    clock.advance(LATER)
    ended = operation(client, arn, update_id)
    assert ended["Status"] == "SUCCEEDED" and ended["EndedAt"] >= ended["StartedAt"]
    assert status(client, arn) == "RUNNING"
    assert served(standin).text == "<h1>v2</h1>"


def test_an_injected_health_failure_rolls_back_to_the_old_image(
    client: Any, clock: Clock, standin: AppRunnerStandIn
) -> None:
    # given v1 running and a health fault for its next deployment
    arn = running(client, clock)["ServiceArn"]
    digest = served(standin).headers["X-Sandbox-Image-Digest"]
    control(standin, "POST", "apprunner/faults", json={"service": "site", "fail": "health"}).raise_for_status()
    # when v2 is deployed
    update_id = update(client, arn, image("v2"))
    clock.advance(3)
    # then App Runner rolls back, v1 serving throughout
    assert operation(client, arn, update_id)["Status"] == "ROLLBACK_IN_PROGRESS"
    assert status(client, arn) == "OPERATION_IN_PROGRESS"
    assert served(standin).text == "<h1>v1</h1>"
    clock.advance(LATER)
    assert operation(client, arn, update_id)["Status"] == "ROLLBACK_SUCCEEDED"
    service = client.describe_service(ServiceArn=arn)["Service"]
    assert service["Status"] == "RUNNING"
    assert service["SourceConfiguration"]["ImageRepository"]["ImageIdentifier"] == image("v1")
    assert served(standin).headers["X-Sandbox-Image-Digest"] == digest
    # and the fault was used up: the next deployment of v2 succeeds
    assert control(standin, "GET", "apprunner/faults").json() == {"faults": []}
    retry = update(client, arn, image("v2"))
    clock.advance(LATER)
    assert operation(client, arn, retry)["Status"] == "SUCCEEDED"
    assert served(standin).text == "<h1>v2</h1>"


def test_a_missing_tag_rolls_back_an_update_and_fails_a_creation(
    client: Any, clock: Clock, standin: AppRunnerStandIn
) -> None:
    arn = running(client, clock)["ServiceArn"]
    update_id = update(client, arn, image("v9"))
    clock.advance(LATER)
    assert operation(client, arn, update_id)["Status"] == "ROLLBACK_SUCCEEDED"
    assert served(standin).text == "<h1>v1</h1>"
    described = client.describe_service(ServiceArn=arn)["Service"]
    assert described["SourceConfiguration"]["ImageRepository"]["ImageIdentifier"] == image("v1")
    # a service whose first image cannot be pulled fails to create, and can be rebuilt with UpdateService
    failed = create(client, "broken", image("v9"))
    broken = failed["Service"]["ServiceArn"]
    clock.advance(LATER)
    assert operation(client, broken, failed["OperationId"])["Status"] == "FAILED"
    assert status(client, broken) == "CREATE_FAILED"
    assert served(standin, "broken").status_code == 503
    with pytest.raises(client.exceptions.InvalidStateException):
        client.start_deployment(ServiceArn=broken)
    rebuild = update(client, broken, image("v1"))
    clock.advance(LATER)
    assert operation(client, broken, rebuild)["Status"] == "SUCCEEDED"
    assert status(client, broken) == "RUNNING" and served(standin, "broken").text == "<h1>v1</h1>"


def test_an_http_health_check_needs_its_path_where_tcp_does_not(
    client: Any, clock: Clock, standin: AppRunnerStandIn
) -> None:
    http_check = {"Protocol": "HTTP", "Path": "/health.json", "Interval": 10}
    checked = running(client, clock, name="checked", HealthCheckConfiguration=http_check)["ServiceArn"]
    tcp = running(client, clock, name="plain")["ServiceArn"]
    described = client.describe_service(ServiceArn=checked)["Service"]["HealthCheckConfiguration"]
    assert described == {**http_check, "Timeout": 2, "HealthyThreshold": 1, "UnhealthyThreshold": 5}
    # v3 has no health.json
    rolled, deployed = update(client, checked, image("v3")), update(client, tcp, image("v3"))
    clock.advance(LATER)
    assert operation(client, checked, rolled)["Status"] == "ROLLBACK_SUCCEEDED"
    assert served(standin, "checked").text == "<h1>v1</h1>"
    assert operation(client, tcp, deployed)["Status"] == "SUCCEEDED"
    assert served(standin, "plain").text == "<h1>v3</h1>"


def test_a_failed_rollback_leaves_the_service_running_but_unavailable(
    client: Any, clock: Clock, standin: AppRunnerStandIn
) -> None:
    arn = running(client, clock)["ServiceArn"]
    control(standin, "POST", "apprunner/faults", json={"service": "site", "fail": "rollback"}).raise_for_status()
    update_id = update(client, arn, image("v2"))
    clock.advance(3)
    assert operation(client, arn, update_id)["Status"] == "ROLLBACK_IN_PROGRESS"
    clock.advance(LATER)
    assert operation(client, arn, update_id)["Status"] == "ROLLBACK_FAILED"
    assert status(client, arn) == "RUNNING"
    assert served(standin).status_code == 503
    # a later deployment recovers it
    recovery = update(client, arn, image("v2"))
    clock.advance(LATER)
    assert operation(client, arn, recovery)["Status"] == "SUCCEEDED" and served(standin).text == "<h1>v2</h1>"


def test_start_deployment_pulls_the_tag_again(
    client: Any, clock: Clock, standin: AppRunnerStandIn, registry: Registry, images: dict[str, Path]
) -> None:
    arn = running(client, clock)["ServiceArn"]
    registry.images[image("v1")] = images[image("v2")]  # v1 was pushed again, with other files
    assert served(standin).text == "<h1>v1</h1>"
    deployment = client.start_deployment(ServiceArn=arn)["OperationId"]
    assert status(client, arn) == "OPERATION_IN_PROGRESS"
    clock.advance(LATER)
    ended = operation(client, arn, deployment)
    assert (ended["Type"], ended["Status"]) == ("START_DEPLOYMENT", "SUCCEEDED")
    page = served(standin)
    assert page.text == "<h1>v2</h1>" and page.headers["X-Sandbox-Image-Digest"] == digest_of(images[image("v2")])
    assert registry.pulls == [image("v1"), image("v1")]


def test_deleting_a_service(client: Any, clock: Clock, standin: AppRunnerStandIn) -> None:
    arn = running(client, clock)["ServiceArn"]
    deletion = client.delete_service(ServiceArn=arn)["OperationId"]
    assert served(standin).text == "<h1>v1</h1>"  # until it is gone
    clock.advance(LATER)
    ended = operation(client, arn, deletion)
    assert (ended["Type"], ended["Status"]) == ("DELETE_SERVICE", "SUCCEEDED")
    assert status(client, arn) == "DELETED"  # a deleted service can still be described
    assert served(standin).status_code == 503
    assert client.list_services()["ServiceSummaryList"] == []
    with pytest.raises(client.exceptions.InvalidStateException, match="in DELETED state"):
        update(client, arn, image("v2"))
    # its name can be used again
    again = running(client, clock, identifier=image("v2"))
    assert again["ServiceArn"] != arn and served(standin).text == "<h1>v2</h1>"


def test_operations_are_listed_newest_first_in_pages(client: Any, clock: Clock) -> None:
    created = create(client)
    arn, ids = created["Service"]["ServiceArn"], [created["OperationId"]]
    for tag in ("v2", "v1", "v2", "v1"):
        clock.advance(LATER)
        ids.append(update(client, arn, image(tag)))
    first = client.list_operations(ServiceArn=arn, MaxResults=2)
    assert [op["Id"] for op in first["OperationSummaryList"]] == [ids[4], ids[3]]
    clock.advance(LATER)
    newest = update(client, arn, image("v2"))  # an operation started between pages does not shift them
    second = client.list_operations(ServiceArn=arn, MaxResults=2, NextToken=first["NextToken"])
    assert [op["Id"] for op in second["OperationSummaryList"]] == [ids[2], ids[1]]
    third = client.list_operations(ServiceArn=arn, MaxResults=2, NextToken=second["NextToken"])
    assert [op["Id"] for op in third["OperationSummaryList"]] == [ids[0]] and "NextToken" not in third
    everything = client.list_operations(ServiceArn=arn)["OperationSummaryList"]
    assert [op["Id"] for op in everything] == [newest, *reversed(ids)]
    started = [op["StartedAt"] for op in everything]
    assert started == sorted(started, reverse=True) and len(set(started)) == len(started)
    assert [op["Status"] for op in everything] == ["PENDING"] + ["SUCCEEDED"] * 5
    assert "EndedAt" not in everything[0] and all("EndedAt" in op for op in everything[1:])
    assert {op["TargetArn"] for op in everything} == {arn}


def test_services_are_listed_in_pages(client: Any, clock: Clock) -> None:
    for name in ("site-a", "site-b", "site-c"):
        create(client, name)
    first = client.list_services(MaxResults=2)
    second = client.list_services(MaxResults=2, NextToken=first["NextToken"])
    names = [s["ServiceName"] for s in first["ServiceSummaryList"] + second["ServiceSummaryList"]]
    assert names == ["site-a", "site-b", "site-c"] and "NextToken" not in second
    assert {s["Status"] for s in second["ServiceSummaryList"]} == {"OPERATION_IN_PROGRESS"}


def test_timings_apply_to_operations_started_after_they_change(
    client: Any, clock: Clock, standin: AppRunnerStandIn
) -> None:
    arn = running(client, clock)["ServiceArn"]
    update_id = update(client, arn, image("v2"))  # with the default timings: live after 2.5 s
    control(standin, "POST", "apprunner/timings", json={"pending": 0, "deploy": 100}).raise_for_status()
    clock.advance(3)
    assert operation(client, arn, update_id)["Status"] == "SUCCEEDED"
    second = update(client, arn, image("v1"))
    clock.advance(3)
    assert operation(client, arn, second)["Status"] == "IN_PROGRESS"


def test_on_the_real_clock_with_tiny_timings(client: Any, clock: Clock, standin: AppRunnerStandIn) -> None:
    clock.frozen = None
    tiny = {"pending": 0.05, "deploy": 0.1, "rollback": 0.05}
    assert control(standin, "POST", "apprunner/timings", json=tiny).json() == tiny
    arn = create(client)["Service"]["ServiceArn"]
    wait_until(lambda: status(client, arn) == "RUNNING", "the service to run")
    update_id = update(client, arn, image("v2"))
    ended = wait_until(lambda: operation(client, arn, update_id).get("EndedAt") and operation(client, arn, update_id),
                       "the update to end")  # fmt: skip
    assert ended["Status"] == "SUCCEEDED" and served(standin).text == "<h1>v2</h1>"
    control(standin, "POST", "apprunner/faults", json={"service": "site", "fail": "health"}).raise_for_status()
    failing = update(client, arn, image("v3"))
    wait_until(lambda: operation(client, arn, failing)["Status"] == "ROLLBACK_SUCCEEDED", "the rollback")
    assert served(standin).text == "<h1>v2</h1>"


def test_a_slow_image_pull_blocks_no_other_request(
    client: Any, clock: Clock, standin: AppRunnerStandIn, registry: Registry
) -> None:
    # given a creation due to be decided, and a registry that holds every pull
    arn = create(client)["Service"]["ServiceArn"]
    registry.gate = threading.Event()
    clock.advance(LATER)
    answers: list[httpx.Response] = []
    puller = threading.Thread(target=lambda: answers.append(served(standin)))
    puller.start()  # this request finds the deploy due and pulls the image
    wait_until(lambda: registry.pulls, "the pull to start")
    # when other requests come meanwhile, they are answered: the deploy is still in progress
    assert status(client, arn) == "OPERATION_IN_PROGRESS"
    assert client.list_operations(ServiceArn=arn)["OperationSummaryList"][0]["Status"] == "IN_PROGRESS"
    assert served(standin).status_code == 503
    # then once the pull ends the image is live, pulled once
    registry.gate.set()
    puller.join(60)
    assert [a.text for a in answers] == ["<h1>v1</h1>"]
    assert status(client, arn) == "RUNNING" and registry.pulls == [image("v1")]


# ---------------------------------------------------------------------- service URLs


def test_a_service_url_serves_the_images_files(client: Any, clock: Clock, standin: AppRunnerStandIn) -> None:
    service = running(client, clock, identifier=image("v2"))
    index = served(standin)
    assert index.text == "<h1>v2</h1>" and index.headers["content-type"] == "text/html; charset=utf-8"
    css = served(standin, path="/static/app.css")
    assert css.text == "body {}" and css.headers["content-type"].startswith("text/css")
    assert served(standin, path="/missing.txt").status_code == 404
    assert served(standin, path="/static/").status_code == 404  # a directory without index.html
    head = httpx.head(standin.local_url("site") + "/", timeout=30)
    assert head.status_code == 200 and head.content == b""
    assert httpx.post(standin.local_url("site") + "/", timeout=30).status_code == 405
    # by host name, as a request to the service's ServiceUrl arrives
    for host in (service["ServiceUrl"], service["ServiceUrl"] + ":443"):
        by_host = httpx.get(f"{standin.base_url}/health.json", headers={"Host": host}, timeout=30)
        assert by_host.json() == {"ok": True} and by_host.headers["content-type"] == "application/json"
    assert served(standin, "nobody").status_code == 404
    # v1's docs directory serves its index.html
    update(client, service["ServiceArn"], image("v1"))
    clock.advance(LATER)
    assert served(standin, path="/docs").text == "docs v1" == served(standin, path="/docs/").text


def test_no_path_leads_out_of_the_image(client: Any, clock: Clock, standin: AppRunnerStandIn) -> None:
    running(client, clock, identifier=image("v2"))
    port = int(standin.base_url.rsplit(":", 1)[1])
    for path in (
        "/_services/site/../../secret.txt",
        "/_services/site/%2e%2e/%2e%2e/secret.txt",
        "/_services/site/leak.txt",
    ):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        connection.request("GET", path)
        answer = connection.getresponse()
        body = answer.read()
        connection.close()
        assert answer.status == 403 and b"not for you" not in body, path


def test_an_image_without_files_serves_the_placeholder(client: Any, clock: Clock, standin: AppRunnerStandIn) -> None:
    service = running(client, clock, identifier=PUBLIC, HealthCheckConfiguration={"Protocol": "HTTP", "Path": "/x"})
    assert service["SourceConfiguration"]["AutoDeploymentsEnabled"] is False  # ECR Public: no automatic deploys
    for path in ("/", "/health", "/anything/at/all"):
        answer = served(standin, path=path)
        assert answer.status_code == 200 and answer.json() == {"status": "ok", "version": "placeholder"}
        assert answer.headers["content-type"] == "application/json"
        assert "X-Sandbox-Image-Digest" not in answer.headers


# ---------------------------------------------------------------------- control


def test_timings_control_checks_what_it_is_given(standin: AppRunnerStandIn) -> None:
    assert control(standin, "GET", "apprunner/timings").json() == {"pending": 0.5, "deploy": 2.0, "rollback": 1.0}
    for bad in ({"deploy": -1}, {"deploy": "2"}, {"deploy": True}, {"later": 1}, [1]):
        answer = control(standin, "POST", "apprunner/timings", json=bad)
        assert answer.status_code == 400 and answer.json()["error"], bad
    for raw in (b"{not json", b'{"deploy": 1e999}', b""):  # not JSON, infinite, nothing
        assert control(standin, "POST", "apprunner/timings", content=raw).status_code == 400, raw
    assert standin.timings == Timings()
    answer = control(standin, "POST", "apprunner/timings", json={"pending": 0, "rollback": 3})
    assert answer.json() == {"pending": 0.0, "deploy": 2.0, "rollback": 3.0}
    assert standin.timings == Timings(0, 2, 3)
    assert control(standin, "DELETE", "apprunner/timings").status_code == 405


def test_faults_control_checks_what_it_is_given(client: Any, standin: AppRunnerStandIn) -> None:
    create(client)
    for bad in (
        {"service": "site", "fail": "boom"},
        {"service": "ghost", "fail": "health"},
        {"service": "site"},
        {"service": "site", "fail": "health", "count": 2},
        ["site"],
    ):
        answer = control(standin, "POST", "apprunner/faults", json=bad)
        assert answer.status_code == 400 and answer.json()["error"], bad
    assert control(standin, "POST", "apprunner/faults", content=b"nope").status_code == 400
    assert control(standin, "GET", "apprunner/faults").json() == {"faults": []}
    fault = {"service": "site", "fail": "rollback"}
    assert control(standin, "POST", "apprunner/faults", json=fault).json() == {"faults": [fault]}
    assert control(standin, "GET", "apprunner/faults").json() == {"faults": [fault]}
    assert control(standin, "DELETE", "apprunner/faults").json() == {"faults": []}
    assert control(standin, "GET", "apprunner/faults").json() == {"faults": []}
    assert control(standin, "GET", "ping").json() == {"ok": True}
    assert control(standin, "GET", "nothing").status_code == 404
