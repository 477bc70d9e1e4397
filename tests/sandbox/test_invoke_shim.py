"""The sandbox's Lambda invoke shim behaves as Lambda's Invoke API does."""

from __future__ import annotations

import base64
import io
import json
import zipfile
from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError

from tests.conftest import Project

HANDLER = """
import json, os, time

print("init", os.environ["AWS_LAMBDA_FUNCTION_VERSION"])
COUNT = {"calls": 0}


def handler(event, context):
    COUNT["calls"] += 1
    action = (event or {}).get("action")
    if action == "raise":
        raise ValueError("bad input")
    if action == "sleep":
        time.sleep(5)
    if action == "unserialisable":
        return {"x": object()}
    if action == "exit":
        os._exit(3)
    print("handled", action)
    return {"calls": COUNT["calls"], "arn": context.invoked_function_arn, "color": os.environ.get("COLOR"),
            "remaining": context.get_remaining_time_in_millis(), "version": context.function_version}
"""


def zipped(source: str, name: str = "fn.py") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(name, source)
    return buffer.getvalue()


@pytest.fixture
def fn(project: Project) -> Any:
    lam = project.client("lambda")
    lam.create_function(
        FunctionName="shim", Runtime="python3.12", Role="arn:aws:iam::123456789012:role/opcd-sandbox-lambda",
        Handler="fn.handler", Code={"ZipFile": zipped(HANDLER)}, Timeout=1,
        Environment={"Variables": {"COLOR": "blue"}},
    )  # fmt: skip
    lam.publish_version(FunctionName="shim")
    lam.create_alias(FunctionName="shim", Name="live", FunctionVersion="1")
    return lam


def invoke(lam: Any, payload: Any, qualifier: str = "1", **kwargs: Any) -> tuple[dict[str, Any], Any]:
    result = lam.invoke(FunctionName="shim", Qualifier=qualifier, Payload=json.dumps(payload).encode(), **kwargs)
    return result, json.loads(result["Payload"].read() or b"null")


def test_runs_the_real_handler_and_keeps_it_warm(fn: Any) -> None:
    result, body = invoke(fn, {"action": "hello"}, LogType="Tail")
    assert "FunctionError" not in result and result["ExecutedVersion"] == "1"
    assert body["color"] == "blue" and body["version"] == "1" and 0 < body["remaining"] <= 1000
    assert body["arn"] == "arn:aws:lambda:us-east-1:123456789012:function:shim:1"
    assert "handled hello" in base64.b64decode(result["LogResult"]).decode()
    _, again = invoke(fn, {"action": "hello"})
    assert again["calls"] == 2  # the same execution environment served the second call


def test_alias_resolves_to_its_version(fn: Any) -> None:
    result, body = invoke(fn, {}, qualifier="live")
    assert result["ExecutedVersion"] == "1" and body["arn"].endswith(":shim:live")


def test_weighted_alias_routes_to_both_versions(fn: Any) -> None:
    fn.update_function_configuration(FunctionName="shim", Environment={"Variables": {"COLOR": "green"}})
    fn.publish_version(FunctionName="shim")
    fn.update_alias(FunctionName="shim", Name="live", RoutingConfig={"AdditionalVersionWeights": {"2": 0.5}})
    colors = {invoke(fn, {}, qualifier="live")[1]["color"] for _ in range(40)}
    assert colors == {"blue", "green"}


def test_handler_exception_is_an_unhandled_function_error(fn: Any) -> None:
    result, body = invoke(fn, {"action": "raise"})
    assert result["FunctionError"] == "Unhandled"
    assert body["errorType"] == "ValueError" and body["errorMessage"] == "bad input" and body["stackTrace"]


def test_timeout_kills_the_environment(fn: Any) -> None:
    result, body = invoke(fn, {"action": "sleep"})
    assert result["FunctionError"] == "Unhandled"
    assert body["errorType"] == "Sandbox.Timedout" and "Task timed out after 1.00 seconds" in body["errorMessage"]
    _, fresh = invoke(fn, {})
    assert fresh["calls"] == 1  # a new environment


def test_process_exit_and_unserialisable_results(fn: Any) -> None:
    result, body = invoke(fn, {"action": "exit"})
    assert result["FunctionError"] == "Unhandled" and body["errorType"] == "Runtime.ExitError"
    result, body = invoke(fn, {"action": "unserialisable"})
    assert body["errorType"] == "Runtime.MarshalError"


def test_import_error_and_missing_handler(project: Project) -> None:
    lam = project.client("lambda")
    for name, source, handler in (
        ("broken", "raise ImportError('nope')", "fn.handler"),
        ("nohandler", "x = 1", "fn.handler"),
    ):
        lam.create_function(
            FunctionName=name, Runtime="python3.12", Role="arn:aws:iam::123456789012:role/opcd-sandbox-lambda",
            Handler=handler, Code={"ZipFile": zipped(source)},
        )  # fmt: skip
    body = json.loads(lam.invoke(FunctionName="broken")["Payload"].read())
    assert (
        body["errorType"] == "Runtime.ImportModuleError"
        and "Unable to import module 'fn': nope" in body["errorMessage"]
    )
    body = json.loads(lam.invoke(FunctionName="broken")["Payload"].read())
    assert body["errorType"] == "Runtime.ImportModuleError"  # initialises again, fails again
    body = json.loads(lam.invoke(FunctionName="nohandler")["Payload"].read())
    assert body["errorType"] == "Runtime.HandlerNotFound"


def test_event_and_dry_run_invocations(fn: Any) -> None:
    assert fn.invoke(FunctionName="shim", InvocationType="Event", Payload=b"{}")["StatusCode"] == 202
    assert fn.invoke(FunctionName="shim", InvocationType="DryRun")["StatusCode"] == 204


def test_unknown_function_is_resource_not_found(fn: Any) -> None:
    with pytest.raises(fn.exceptions.ResourceNotFoundException):
        fn.invoke(FunctionName="nope", Payload=b"{}")
    with pytest.raises(fn.exceptions.ResourceNotFoundException):
        fn.invoke(FunctionName="shim", Qualifier="99", Payload=b"{}")


def test_gateway_answers_as_api_gateway(project: Project, fn: Any) -> None:
    answer = httpx.get(f"{project.endpoint}/_gateway/outreachpass-api-dev/health", timeout=30)
    assert answer.status_code == 200 and answer.json() == {"status": "ok", "version": "placeholder"}
    assert answer.headers["x-sandbox-executed-version"] == "1"
    fn.update_function_code(FunctionName="shim", ZipFile=zipped(HANDLER.replace("def handler", "def other")))
    fn.publish_version(FunctionName="shim")
    fn.update_alias(FunctionName="shim", Name="live", FunctionVersion="2")
    assert httpx.get(f"{project.endpoint}/_gateway/shim/", timeout=30).status_code == 500  # handler error → 500
    assert httpx.get(f"{project.endpoint}/_gateway/missing/", timeout=30).status_code == 404


def test_fault_injection_validates_its_input(project: Project) -> None:
    assert httpx.post(f"{project.endpoint}/_opcd/faults", json={"method": "PUT"}, timeout=10).status_code == 400
    assert httpx.post(f"{project.endpoint}/_opcd/faults", content=b"{", timeout=10).status_code == 400
    fault = {"method": "GET", "path": "^/_gateway/outreachpass-api-dev/", "status": 503, "code": "ServiceUnavailable"}
    assert httpx.post(f"{project.endpoint}/_opcd/faults", json=fault, timeout=10).status_code == 200
    assert httpx.get(f"{project.endpoint}/_gateway/outreachpass-api-dev/health", timeout=10).status_code == 503
    assert httpx.get(f"{project.endpoint}/_gateway/outreachpass-api-dev/health", timeout=10).status_code == 200


def test_a_fault_naming_a_region_fails_only_that_regions_requests(project: Project) -> None:
    from tests.regions import client_in

    bad = {"method": "GET", "path": "^/_gateway/", "region": ["us-west-2"]}
    assert httpx.post(f"{project.endpoint}/_opcd/faults", json=bad, timeout=10).status_code == 400
    fault = {"method": "GET", "path": "^/2015-03-31/functions/", "region": "us-west-2", "status": 403,
             "code": "AccessDeniedException"}  # fmt: skip
    assert httpx.post(f"{project.endpoint}/_opcd/faults", json=fault, timeout=10).status_code == 200
    east, west = client_in(project, "lambda", "us-east-1"), client_in(project, "lambda", "us-west-2")
    east.get_alias(FunctionName="outreachpass-api-dev", Name="live")  # signed for us-east-1: not taken
    with pytest.raises(ClientError, match="AccessDeniedException"):
        west.get_function(FunctionName="outreachpass-api-dev")  # signed for us-west-2 (its SigV4 scope)
    gateway = {"method": "GET", "path": "^/_gateway/", "region": "us-west-2", "status": 503, "code": "Unavailable"}
    assert httpx.post(f"{project.endpoint}/_opcd/faults", json=gateway, timeout=10).status_code == 200
    health = f"{project.endpoint}/_gateway/outreachpass-api-dev"
    assert httpx.get(f"{health}/health", timeout=10).status_code == 200
    assert httpx.get(f"{health}@us-west-2/health", timeout=10).status_code == 503
