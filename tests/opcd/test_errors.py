"""How an AWS error is said to people: the permission that is missing, throttling, credentials."""

from __future__ import annotations

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber

from opcd.errors import DeployFailed, explain_aws_error, failure_text


def client_error(code: str, operation: str = "UpdateAlias", message: str = "the message") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}}, operation)


@pytest.mark.parametrize("code", ["AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "403"])
def test_access_denied_names_the_missing_permission(code: str) -> None:
    message, hint = explain_aws_error(client_error(code), "lambda")
    assert message == f"AWS UpdateAlias failed: {code}: the message"
    assert "lack the IAM permission lambda:UpdateAlias" in hint


def test_the_permission_comes_from_the_client_that_raised() -> None:
    client = boto3.client(
        "lambda", region_name="us-east-1", aws_access_key_id="k", aws_secret_access_key="s",
        endpoint_url="http://127.0.0.1:9",
    )  # fmt: skip
    with Stubber(client) as stub:
        stub.add_client_error("invoke", "AccessDeniedException", "no")
        with pytest.raises(ClientError) as raised:
            client.invoke(FunctionName="f")
    # Invoke's IAM action is lambda:InvokeFunction, not lambda:Invoke
    assert "lack the IAM permission lambda:InvokeFunction" in explain_aws_error(raised.value)[1]


def test_the_action_aws_names_is_the_one_said() -> None:
    denied = client_error(
        "AccessDenied", "ListObjectsV2",
        "User: arn:aws:iam::1:user/ci is not authorized to perform: s3:ListBucket on resource: arn:aws:s3:::b",
    )  # fmt: skip
    assert "lack the IAM permission s3:ListBucket" in explain_aws_error(denied)[1]
    assert "the IAM permission for GetAlias" in explain_aws_error(client_error("AccessDenied", "GetAlias"))[1]


@pytest.mark.parametrize(
    "code", ["Throttling", "ThrottlingException", "TooManyRequestsException", "RequestLimitExceeded", "SlowDown"]
)
def test_throttling_says_retry(code: str) -> None:
    assert explain_aws_error(client_error(code))[1] == "AWS is throttling: retry in a minute"


@pytest.mark.parametrize(
    ("code", "words"),
    [
        ("ExpiredToken", "did not accept the credentials"),
        ("InvalidClientTokenId", "did not accept the credentials"),
        ("UnrecognizedClientException", "did not accept the credentials"),
        ("ResourceNotFoundException", "check the names in opcd.toml"),
        ("NoSuchBucket", "check the names in opcd.toml"),
        ("ValidationException", "its message above says why"),
    ],
)
def test_credentials_missing_resources_and_the_rest(code: str, words: str) -> None:
    assert words in explain_aws_error(client_error(code))[1]


def test_failure_text_is_the_same_line_everywhere() -> None:
    throttled = client_error("TooManyRequestsException", message="Rate exceeded")
    assert failure_text(throttled) == (
        "AWS UpdateAlias failed: TooManyRequestsException: Rate exceeded — AWS is throttling: retry in a minute"
    )
    assert failure_text(DeployFailed("smoke failed", "fix it")) == "smoke failed — fix it"
    assert failure_text(ValueError("bad")) == "ValueError: bad"
