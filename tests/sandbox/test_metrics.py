"""The sandbox publishes what Lambda publishes: each invoke's metrics under Lambda's dimensions, read back
with GetMetricData (percentiles too) in answers that hold to botocore's model of the operation."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from sandbox.server import lambda_metrics, percentile
from tests.conftest import Project, one_line_error
from tests.sandbox.shapes import problems
from tests.sandbox.test_invoke_shim import zipped

HANDLER = """
import os
import time


def handler(event, context):
    if (event or {}).get("raise"):
        raise ValueError("asked to")
    time.sleep(float(os.environ.get("SLEEP", "0")))
    return {"statusCode": 200, "body": "ok"}
"""


@pytest.fixture
def fn(project: Project) -> Any:
    """``metered``: version 1 fast, version 2 sleeping 30 ms; ``live`` on 1 with half of it on 2."""
    lam = project.client("lambda")
    lam.create_function(
        FunctionName="metered", Runtime="python3.12", Role="arn:aws:iam::123456789012:role/opcd-sandbox-lambda",
        Handler="fn.handler", Code={"ZipFile": zipped(HANDLER)}, Timeout=5,
    )  # fmt: skip
    lam.publish_version(FunctionName="metered")
    lam.update_function_configuration(FunctionName="metered", Environment={"Variables": {"SLEEP": "0.03"}})
    lam.publish_version(FunctionName="metered")
    lam.create_alias(
        FunctionName="metered", Name="live", FunctionVersion="1", RoutingConfig={"AdditionalVersionWeights": {"2": 0.5}}
    )
    return lam


def dims(**pairs: str) -> list[dict[str, str]]:
    return [{"Name": k, "Value": v} for k, v in pairs.items()]


def query(qid: str, metric: str, stat: str, dimensions: list[dict[str, str]], period: int = 60) -> dict[str, Any]:
    return {
        "Id": qid,
        "MetricStat": {
            "Metric": {"Namespace": "AWS/Lambda", "MetricName": metric, "Dimensions": dimensions},
            "Period": period,
            "Stat": stat,
        },
    }


def metric_data(project: Project, queries: list[dict[str, Any]], raw: list[bytes] | None = None) -> dict[str, Any]:
    """GetMetricData over the last 10 minutes: ``{Id: values}``; ``raw`` gets the answer as it crossed the wire."""
    cloudwatch = project.client("cloudwatch")

    def keep(response_dict: dict[str, Any], **_: Any) -> None:
        if raw is not None:
            raw.append(response_dict["body"])

    cloudwatch.meta.events.register("before-parse.cloudwatch.GetMetricData", keep)
    try:
        now = datetime.now(UTC)
        answer = cloudwatch.get_metric_data(
            MetricDataQueries=queries, StartTime=now - timedelta(minutes=10), EndTime=now + timedelta(minutes=1)
        )
    finally:
        cloudwatch.meta.events.unregister("before-parse.cloudwatch.GetMetricData", keep)
    return {r["Id"]: r["Values"] for r in answer["MetricDataResults"]}


def test_alias_invokes_are_counted_per_executed_version_under_lambdas_dimensions(project: Project, fn: Any) -> None:
    ran = {"1": 0, "2": 0}
    for _ in range(30):
        ran[fn.invoke(FunctionName="metered", Qualifier="live", Payload=b"{}")["ExecutedVersion"]] += 1
    fn.invoke(FunctionName="metered", Qualifier="1", Payload=b'{"raise": true}')  # a version, not the alias
    assert ran["1"] and ran["2"]

    alias = dims(FunctionName="metered", Resource="metered:live")
    queries = [query(f"v{v}", "Invocations", "Sum", [*alias, *dims(ExecutedVersion=v)]) for v in ("1", "2")]
    queries += [
        query("alias", "Invocations", "Sum", alias),
        query("function", "Invocations", "Sum", dims(FunctionName="metered")),
        query("version1", "Invocations", "Sum", dims(FunctionName="metered", Resource="metered:1")),
        query("errors", "Errors", "Sum", dims(FunctionName="metered")),
        query("fast", "Duration", "p50", [*alias, *dims(ExecutedVersion="1")]),
        query("slow", "Duration", "p50", [*alias, *dims(ExecutedVersion="2")]),
        query("nothing", "Throttles", "Sum", dims(FunctionName="metered")),
    ]
    raw: list[bytes] = []
    values = metric_data(project, queries, raw)

    assert sum(values["v1"]) == ran["1"] and sum(values["v2"]) == ran["2"]
    assert sum(values["alias"]) == 30 and sum(values["function"]) == 31 and sum(values["version1"]) == 1
    assert sum(values["errors"]) == 1 and values["nothing"] == []
    assert max(values["fast"]) < 30 <= min(values["slow"])  # milliseconds: version 2 sleeps 30 ms
    # the answer on the wire, held to botocore's model of GetMetricData's output
    model = project.client("cloudwatch").meta.service_model.operation_model("GetMetricData").output_shape
    [body] = raw
    assert problems(model, json.loads(body)) == []
    assert {r["Id"] for r in json.loads(body)["MetricDataResults"]} == {q["Id"] for q in queries}


def test_the_gateway_and_an_injected_throttle_are_metered_too(project: Project, fn: Any) -> None:
    for _ in range(4):
        assert httpx.get(f"{project.endpoint}/_gateway/metered/", timeout=30).status_code == 200
    project.faults({"method": "GET", "path": "^/_gateway/metered/", "status": 429, "code": "TooManyRequestsException"})
    assert httpx.get(f"{project.endpoint}/_gateway/metered/", timeout=30).status_code == 429
    alias = dims(FunctionName="metered", Resource="metered:live")
    values = metric_data(project, [query("calls", "Invocations", "Sum", alias), query("t", "Throttles", "Sum", alias)])
    assert sum(values["calls"]) == 4 and sum(values["t"]) == 1


def test_values_fall_into_their_periods_newest_first_as_aws_answers(project: Project) -> None:
    cloudwatch = project.client("cloudwatch")
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=30)
    for second, values in ((0, [10.0, 20.0, 30.0, 40.0]), (5, [100.0]), (7, [1.0, 3.0])):
        cloudwatch.put_metric_data(Namespace="AWS/Lambda", MetricData=[{
            "MetricName": "Duration", "Dimensions": dims(FunctionName="f"), "Values": values,
            "Unit": "Milliseconds", "Timestamp": start + timedelta(seconds=second),
        }])  # fmt: skip
    answer = cloudwatch.get_metric_data(
        MetricDataQueries=[query("p", "Duration", "p50", dims(FunctionName="f"), period=5)],
        StartTime=start, EndTime=start + timedelta(seconds=10),
    )["MetricDataResults"][0]  # fmt: skip
    assert answer["Values"] == [3.0, 20.0]  # [5 s, 10 s): 100, 1, 3; [0, 5 s): 10..40
    assert answer["Timestamps"] == [start + timedelta(seconds=5), start]


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, "p50") == 50.0 and percentile(values, "p99") == 99.0
    assert percentile(values, "p99.9") == 100.0 and percentile([7.0], "p1") == 7.0
    assert percentile([], "p50") is None and percentile(values, "Average") is None


def test_which_dimension_sets_an_invocation_adds() -> None:
    def sets(qualifier: str) -> list[list[str]]:
        found = lambda_metrics("f", qualifier, "2", 5.0, False)
        return [[d["Name"] for d in m["Dimensions"]] for m in found if m["MetricName"] == "Invocations"]

    assert sets("live") == [
        ["FunctionName"],
        ["FunctionName", "Resource"],
        ["FunctionName", "Resource", "ExecutedVersion"],
    ]
    assert sets("2") == [["FunctionName"], ["FunctionName", "Resource"]]
    assert sets("$LATEST") == [["FunctionName"]]
    throttled = lambda_metrics("f", "live", "2", None, False, throttled=True)
    assert {m["MetricName"] for m in throttled} == {"Throttles"}


def test_traffic_drives_the_gateway_and_lambdas_metrics_count_it(project: Project) -> None:
    code, out, err = project.cli(
        "sandbox", "traffic", "https://api.dev.outreachpass.example/health", "--rps", "10", "--for", "1s"
    )
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("sending 10 GET https://api.dev.outreachpass.example/health (http://127.0.0.1:")
    # a slow machine may send fewer (never more, never late): every one sent is answered and metered
    sent = int(lines[1].split(" requests in ")[0])
    assert (
        1 <= sent <= 10
        and f"answers 200: {sent};" in lines[1]
        and lines[1].endswith(f"served by Lambda version 1: {sent}")
    )
    alias = dims(FunctionName="outreachpass-api-dev", Resource="outreachpass-api-dev:live", ExecutedVersion="1")
    assert sum(metric_data(project, [query("n", "Invocations", "Sum", alias)])["n"]) == sent


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["https://example.org/", "--for", "1s"], "error: https://example.org/ is not served by the sandbox: the"
         " traffic generator sends to loopback only — give a URL the sandbox's gateway maps ("),
        (["http://127.0.0.1:9/", "--rps", "1000"], "error: --rps 1000 is out of bounds — give 0 < rps <= 200"),
        (["http://127.0.0.1:9/", "--for", "1h"], "error: --for 1h is out of bounds — give more than 0 and at most"),
        (["http://127.0.0.1:9/", "--for", "soon"], "error: --for soon: expected a duration such as"),
    ],
)  # fmt: skip
def test_traffic_is_bounded_and_loopback_only(project: Project, args: list[str], error: str) -> None:
    code, out, err = project.cli("sandbox", "traffic", *args)
    assert code == 2 and out == ""
    assert one_line_error(err).startswith(error)
