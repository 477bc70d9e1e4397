"""Lambda helpers: smoke judgement and update polling (botocore Stubber checks each call)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from opcd import aws
from opcd.aws import AwsTarget
from opcd.config import SmokeCheck
from opcd.errors import DeployFailed
from tasks.lambda_functions import (
    LiveVersion,
    app_version_of,
    judge_smoke,
    read_live,
    version_description,
    wait_until_updated,
)


@pytest.fixture
def stubbed() -> Iterator[tuple[AwsTarget, Stubber]]:
    target = AwsTarget("endpoint", "us-east-1", "http://127.0.0.1:1", credentials=("a", "b"))
    client = boto3.client("lambda", region_name="us-east-1", aws_access_key_id="a", aws_secret_access_key="b")
    aws._clients[(target, "lambda")] = client
    with Stubber(client) as stubber:
        yield target, stubber
        stubber.assert_no_pending_responses()
    del aws._clients[(target, "lambda")]


def conf(status: str, state: str = "Active", reason: str = "") -> dict[str, Any]:
    return {"LastUpdateStatus": status, "State": state, "LastUpdateStatusReason": reason, "CodeSha256": "abc"}


def test_wait_polls_until_successful(stubbed: tuple[AwsTarget, Stubber]) -> None:
    target, stubber = stubbed
    for status in ("InProgress", "InProgress", "Successful"):
        stubber.add_response("get_function_configuration", conf(status), {"FunctionName": "api"})
    sleeps: list[float] = []
    assert wait_until_updated(target, "api", sleep=sleeps.append)["CodeSha256"] == "abc"
    assert sleeps == [0.5, 1.0]


def test_wait_fails_on_a_failed_update(stubbed: tuple[AwsTarget, Stubber]) -> None:
    target, stubber = stubbed
    stubber.add_response(
        "get_function_configuration", conf("Failed", reason="EniLimitExceeded"), {"FunctionName": "api"}
    )
    with pytest.raises(DeployFailed, match="updating api failed: EniLimitExceeded"):
        wait_until_updated(target, "api", sleep=lambda _: None)


def test_wait_gives_up_after_its_timeout(stubbed: tuple[AwsTarget, Stubber]) -> None:
    target, stubber = stubbed
    stubber.add_response("get_function_configuration", conf("InProgress"), {"FunctionName": "api"})
    with pytest.raises(DeployFailed, match="did not finish within 0s"):
        wait_until_updated(target, "api", timeout=0.0, sleep=lambda _: None)


CHECK = SmokeCheck(path="/health", expect_status=200, body_contains="ok")


@pytest.mark.parametrize(
    ("error", "payload", "reason"),
    [
        (None, b'{"statusCode": 200, "body": "{\\"status\\": \\"ok\\"}"}', None),
        (None, b'{"statusCode": 503, "body": "down"}', "GET /health: status 503, expected 200"),
        (None, b'{"statusCode": 200, "body": "fine"}', "GET /health: body lacks 'ok'"),
        (
            "Unhandled",
            b'{"errorType": "KeyError", "errorMessage": "DB_URL"}',
            "GET /health: handler error KeyError: DB_URL",
        ),
        ("Unhandled", b"not json", "GET /health: handler error Unhandled: "),
    ],
)
def test_judge_smoke(error: str | None, payload: bytes, reason: str | None) -> None:
    assert judge_smoke(CHECK, error, payload) == reason


def test_version_description_round_trip() -> None:
    description = version_description("backend", "1.4.0-rc.1", "ab" * 32)
    assert app_version_of(description) == "1.4.0-rc.1"
    assert app_version_of("placeholder (terraform)") is None
    sha = "ab" * 32
    assert app_version_of(f"opcd backend build-42 sha256={sha}") == "build-42"
    for version in ("v13\n", "v\uff11\uff13", "v\u0661\u0663", "latest"):  # not a version: no version at all
        assert app_version_of(f"opcd backend {version} sha256={sha}") is None, version
    assert app_version_of(f"opcd backend v1 sha256={sha}\n") is None


def alias(version: str, weights: dict[str, float] | None = None) -> dict[str, Any]:
    answer: dict[str, Any] = {"FunctionVersion": version, "AliasArn": "arn:aws:lambda:us-east-1:1:function:api:live"}
    if weights:
        answer["RoutingConfig"] = {"AdditionalVersionWeights": weights}
    return answer


KNOWN = LiveVersion("api", "4", "v2", "sha-of-4", "", {})


def test_read_live_reads_a_known_versions_configuration_once_and_its_alias_every_time(
    stubbed: tuple[AwsTarget, Stubber],
) -> None:
    target, stubber = stubbed
    stubber.add_response("get_alias", alias("4", {"5": 0.1}), {"FunctionName": "api", "Name": "live"})
    live = read_live(target, "api", known=KNOWN)  # no get_function_configuration: the Stubber fails on one
    assert (live.lambda_version, live.app_version, live.code_sha256, live.weights) == (
        "4",
        "v2",
        "sha-of-4",
        {"5": 0.1},
    )
    assert live.alias_arn.endswith(":live")


@pytest.mark.parametrize("moved_to", ["5", "$LATEST"])
def test_read_live_reads_the_configuration_of_another_version_or_of_latest(
    stubbed: tuple[AwsTarget, Stubber], moved_to: str
) -> None:
    target, stubber = stubbed
    stubber.add_response("get_alias", alias(moved_to), {"FunctionName": "api", "Name": "live"})
    v3 = {"CodeSha256": "other", "Description": version_description("api", "v3", "f" * 64)}
    stubber.add_response("get_function_configuration", v3, {"FunctionName": "api", "Qualifier": moved_to})
    known = KNOWN if moved_to == "5" else LiveVersion("api", "$LATEST", "v2", "sha-of-4", "", {})
    live = read_live(target, "api", known=known)
    assert (live.lambda_version, live.app_version, live.code_sha256) == (moved_to, "v3", "other")
