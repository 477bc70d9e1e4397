"""App Runner (botocore's Stubber: moto has no App Runner): find, describe, update, follow an operation."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from botocore.stub import Stubber

from opcd.aws import AwsTarget
from opcd.errors import DeployFailed, InputError, ResourceMissing
from tasks.apprunner import (
    find_service,
    follow_operation,
    read_service,
    repository_type_of,
    start_update,
    update_service,
)
from tests.tasks.conftest import logged

Stub = tuple[AwsTarget, Callable[[str], Stubber]]
ARN = "arn:aws:apprunner:us-east-1:123456789012:service/op-web-dev/0123456789abcdef0123456789abcdef"
SERVICE_ID = "0123456789abcdef0123456789abcdef"  # pragma: allowlist secret
WHEN = datetime(2026, 1, 1, tzinfo=UTC)
OP1, OP2 = "11111111-1111-4111-8111-111111111111", "22222222-2222-4222-8222-222222222222"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/op/frontend:v1"


def summary(name: str, arn: str = ARN, status: str = "RUNNING") -> dict[str, Any]:
    return {"ServiceName": name, "ServiceId": SERVICE_ID, "ServiceArn": arn,
            "ServiceUrl": f"{name}.awsapprunner.com", "Status": status,
            "CreatedAt": WHEN, "UpdatedAt": WHEN}  # fmt: skip


SOURCE = {
    "ImageRepository": {
        "ImageIdentifier": IMAGE, "ImageRepositoryType": "ECR",
        "ImageConfiguration": {"Port": "8080", "RuntimeEnvironmentVariables": {"MODE": "prod"}},
    },
    "AutoDeploymentsEnabled": False,
    "AuthenticationConfiguration": {"AccessRoleArn": "arn:aws:iam::123456789012:role/apprunner-ecr"},
}  # fmt: skip


def service(status: str = "RUNNING", source: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"Service": {
        **summary("op-web-dev", status=status), "SourceConfiguration": source or SOURCE,
        "InstanceConfiguration": {}, "AutoScalingConfigurationSummary": {}, "NetworkConfiguration": {},
    }}  # fmt: skip


def operations(*statuses: tuple[str, str]) -> dict[str, Any]:
    return {"OperationSummaryList": [{"Id": op, "Type": "UPDATE_SERVICE", "Status": s} for op, s in statuses]}


def not_found(stubber: Stubber, operation: str) -> None:
    stubber.add_client_error(operation, "ResourceNotFoundException", "no such service", 400)


def test_a_service_is_found_by_name_across_pages_past_a_deleted_one(stub: Stub) -> None:
    target, stubber = stub
    apprunner = stubber("apprunner")
    other = ARN.replace("op-web-dev", "op-web-old")
    apprunner.add_response("list_services", {"ServiceSummaryList": [summary("op-web-dev", other, "DELETED")],
                                             "NextToken": "page2"}, {})  # fmt: skip
    apprunner.add_response("list_services", {"ServiceSummaryList": [summary("op-web-dev")]}, {"NextToken": "page2"})
    assert find_service(target, "op-web-dev") == ARN


def test_a_missing_service_names_the_setting_to_fix(stub: Stub) -> None:
    target, stubber = stub
    stubber("apprunner").add_response("list_services", {"ServiceSummaryList": []}, {})
    with pytest.raises(ResourceMissing) as caught:
        find_service(target, "op-web-prod")
    assert str(caught.value) == (
        "App Runner service 'op-web-prod' does not exist in us-east-1"
        " — create it (Terraform) or fix environments.*.services in opcd.toml"
    )


def test_a_service_given_by_arn_is_described_and_a_missing_arn_named(stub: Stub) -> None:
    target, stubber = stub
    apprunner = stubber("apprunner")
    apprunner.add_response("describe_service", service(), {"ServiceArn": ARN})
    assert find_service(target, ARN) == ARN
    not_found(apprunner, "describe_service")
    with pytest.raises(ResourceMissing) as caught:
        read_service(target, ARN)
    assert str(caught.value) == f"App Runner service {ARN} does not exist — fix environments.*.services in opcd.toml"


def test_described_as_a_deploy_needs_it(stub: Stub) -> None:
    target, stubber = stub
    stubber("apprunner").add_response("describe_service", service(), {"ServiceArn": ARN})
    found = read_service(target, ARN)
    assert (found.name, found.image, found.status) == ("op-web-dev", IMAGE, "RUNNING")
    assert found.https_url == "https://op-web-dev.awsapprunner.com" and found.source == SOURCE


def test_an_update_changes_the_image_and_keeps_every_other_setting(stub: Stub, run_log: Any) -> None:
    target, stubber = stub
    apprunner = stubber("apprunner")
    apprunner.add_response("describe_service", service(), {"ServiceArn": ARN})
    new = "public.ecr.aws/op/frontend:v2"
    expected = {**SOURCE, "ImageRepository": {**SOURCE["ImageRepository"], "ImageIdentifier": new,
                                              "ImageRepositoryType": "ECR_PUBLIC"}}  # fmt: skip
    apprunner.add_response("update_service", {"Service": service()["Service"], "OperationId": OP1},
                           {"ServiceArn": ARN, "SourceConfiguration": expected})  # fmt: skip
    assert update_service.fn(target, read_service(target, ARN), new, 60.0, 1.0) == OP1
    assert logged(run_log) == [f"UpdateService op-web-dev → {new}: operation {OP1}"]
    assert repository_type_of(IMAGE) == "ECR"


def test_a_busy_service_refuses_the_update_in_one_line(stub: Stub) -> None:
    target, stubber = stub
    apprunner = stubber("apprunner")
    apprunner.add_response("describe_service", service("OPERATION_IN_PROGRESS"), {"ServiceArn": ARN})
    apprunner.add_client_error("update_service", "InvalidStateException", "an operation is in progress", 400)
    with pytest.raises(InputError) as caught:
        start_update(target, read_service(target, ARN), IMAGE)
    assert str(caught.value).startswith("App Runner service op-web-dev is busy: ")
    assert str(caught.value).endswith(
        " — an operation is in progress; wait for it to end (opcd status) and deploy again"
    )
    assert "\n" not in str(caught.value)


def test_following_an_operation_says_each_status_until_it_ends(stub: Stub) -> None:
    target, stubber = stub
    apprunner = stubber("apprunner")
    page = {"ServiceArn": ARN, "MaxResults": 20}
    apprunner.add_response("list_operations", operations(), page)  # not listed yet
    apprunner.add_response("list_operations", operations((OP1, "IN_PROGRESS")), page)
    apprunner.add_response("list_operations", operations((OP2, "SUCCEEDED")), page)
    apprunner.add_response("list_operations", {**operations((OP2, "SUCCEEDED")), "NextToken": "n"}, page)
    apprunner.add_response("list_operations", operations((OP1, "ROLLBACK_SUCCEEDED")), {**page, "NextToken": "n"})
    said: list[str] = []
    slept: list[float] = []
    status = follow_operation(target, ARN, OP1, "deploy of v2", 600.0, 2.0, said.append, slept.append)
    assert status == "ROLLBACK_SUCCEEDED"  # App Runner rolling itself back ends the operation, not as a success
    assert [line.split(" after ")[0] for line in said] == [
        "App Runner deploy of v2 (operation 11111111): NOT_LISTED_YET",
        "App Runner deploy of v2 (operation 11111111): IN_PROGRESS",
        "App Runner deploy of v2 (operation 11111111): NOT_LISTED_YET",
        "App Runner deploy of v2 (operation 11111111): ROLLBACK_SUCCEEDED",
    ]
    assert slept == [2.0, 2.0, 2.0]


def test_an_operation_that_outlasts_its_timeout_fails_the_deploy(stub: Stub) -> None:
    target, stubber = stub
    stubber("apprunner").add_response(
        "list_operations", operations((OP1, "IN_PROGRESS")), {"ServiceArn": ARN, "MaxResults": 20}
    )
    with pytest.raises(DeployFailed) as caught:
        follow_operation(target, ARN, OP1, "deploy of v2", 0.0, 1.0, lambda _: None, lambda _: None)
    assert str(caught.value) == (
        "App Runner deploy of v2 did not end within 0s (still IN_PROGRESS) — it may still finish:"
        " watch `opcd status`; raise components.*.operation.timeout if deploys are slow"
    )
