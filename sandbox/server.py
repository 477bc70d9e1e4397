"""The sandbox server: moto behind a small WSGI layer that adds Lambda invoke and a gateway."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote

import httpx

# moto and werkzeug (the sandbox extra) are imported where they are used: `opcd sandbox down`, `env` and
# `fire-rule` load this module and run without them.
from opcd.aws import SANDBOX_FILE
from opcd.errors import InputError
from sandbox.lambda_runtime import Invocation, LambdaRunner, log_result_header

ACCOUNT_ID = "123456789012"
_INVOKE = re.compile(r"^/2015-03-31/functions/(?P<name>[^/]+)/invocations$")
# /_gateway/FUNCTION[@REGION]/PATH: FUNCTION's live alias in REGION (default: the sandbox's region)
_GATEWAY = re.compile(r"^/_gateway/(?P<function>[^/@]+)(?:@(?P<region>[a-z0-9-]+))?(?P<path>/.*)?$")
_ECR_TARGET = "AmazonEC2ContainerRegistry_V20150921."
_REGION = re.compile(r"Credential=[^/]+/\d{8}/(?P<region>[a-z0-9-]+)/")
_SERVICE = re.compile(r"Credential=[^/]+/\d{8}/[a-z0-9-]+/(?P<service>[a-z0-9-]+)/")

StartResponse = Callable[..., Any]


def _configure_moto() -> None:
    # Must happen before any function exists, or moto's Docker backend hides them.
    from moto.core.config import default_user_config

    default_user_config.setdefault("lambda", {})["use_docker"] = False
    _composite_alarms_as_aws()
    _metric_data_as_aws()


def _composite_alarms_as_aws() -> None:
    """CloudWatch's composite alarms as AWS serves them (stands in where moto 5.2.5 falls short).

    moto keeps a composite alarm (an alarm with an ``AlarmRule``) but answers PutCompositeAlarm
    with a 500 (not implemented), and DescribeAlarms returns composite alarms whether asked or not;
    AWS returns metric alarms alone unless ``AlarmTypes`` asks for composite ones too.
    """
    from moto.cloudwatch.responses import CloudWatchResponse
    from moto.core.responses import ActionResult

    if getattr(CloudWatchResponse, "_opcd_composite", False):
        return
    describe = CloudWatchResponse.describe_alarms

    def describe_alarms(self: Any) -> ActionResult:
        answer: dict[str, Any] = dict(describe(self).result)  # type: ignore[call-overload]
        types = self._get_param("AlarmTypes") or ["MetricAlarm"]
        for kind in ("MetricAlarm", "CompositeAlarm"):
            if kind not in types:
                answer[f"{kind}s"] = []
        return ActionResult(answer)

    # PutMetricAlarm's handler reads AlarmRule too: moto's own model of a composite alarm
    CloudWatchResponse.put_composite_alarm = CloudWatchResponse.put_metric_alarm  # type: ignore[attr-defined]
    CloudWatchResponse.describe_alarms = describe_alarms  # type: ignore[method-assign]
    CloudWatchResponse._opcd_composite = True  # type: ignore[attr-defined]


_PERCENTILE = re.compile(r"^p(\d{1,2}(\.\d+)?|100)$")


def percentile(values: list[float], stat: str) -> float | None:
    """CloudWatch's ``pNN`` of raw values (nearest rank); None when there are none."""
    match = _PERCENTILE.match(stat)
    if not match or not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-float(match[1]) * len(ordered) // 100))  # ceil(p/100 * n), at least the first
    return ordered[int(rank) - 1]


def _metric_data_as_aws() -> None:
    """GetMetricData as AWS serves it for a metric's statistics (stands in where moto 5.2.5 falls short).

    moto answers a percentile statistic (``p50``, ``p99``) with a 500, and compares every data point with
    every period (seconds per poll once an invoke records its metrics): here each query's points are
    picked once, by namespace, name, exact dimensions and unit, then grouped by period. Queries with
    an ``Expression`` still go to moto.
    """
    from moto.cloudwatch.models import CloudWatchBackend, Statistics

    if getattr(CloudWatchBackend, "_opcd_metric_data", False):
        return
    original = CloudWatchBackend.get_metric_data
    statistic = Statistics.get_statistics_for_type

    def get_statistics_for_type(self: Any, stat: str) -> Any:
        if _PERCENTILE.match(stat):
            return percentile(self.metric_single_values_list, stat)
        return statistic(self, stat)

    def get_metric_data(
        self: Any, queries: list[dict[str, Any]], start_time: Any, end_time: Any, scan_by: str = "TimestampAscending"
    ) -> list[dict[str, Any]]:
        if any("MetricStat" not in q for q in queries):
            return original(self, queries, start_time, end_time, scan_by)
        original(self, [], start_time, end_time, scan_by)  # its checks of the window
        start, end = start_time.replace(microsecond=0), end_time.replace(microsecond=0)
        points = [md for md in self.get_all_metrics() if start <= md.timestamp < end]
        results = []
        for query in queries:
            stat_of = query["MetricStat"]
            metric, stat, period = stat_of["Metric"], stat_of["Stat"], int(stat_of["Period"])
            dimensions = sorted((d["Name"], d["Value"]) for d in metric.get("Dimensions", []))
            buckets: dict[int, list[Any]] = {}
            for md in points:
                if md.namespace != metric["Namespace"] or md.name != metric["MetricName"]:
                    continue
                if sorted((d.name, d.value) for d in md.dimensions) != dimensions:
                    continue
                if stat_of.get("Unit") and md.unit != stat_of["Unit"]:
                    continue
                buckets.setdefault(int((md.timestamp - start).total_seconds()) // period, []).append(md)
            timestamps, values = [], []
            for index in sorted(buckets, reverse=scan_by == "TimestampDescending"):
                stats = Statistics([stat], start + timedelta(seconds=index * period))
                stats.metric_data = buckets[index]
                value = stats.get_statistics_for_type(stat)
                if value is not None:  # AWS leaves out a period without the statistic (no raw values)
                    timestamps.append(stats.timestamp)
                    values.append(value)
            if query.get("ReturnData", True):
                results.append({
                    "id": query["Id"], "label": query.get("Label") or f"{metric['MetricName']} {stat}",
                    "values": values, "timestamps": timestamps, "status_code": "Complete",
                })  # fmt: skip
        return results

    Statistics.get_statistics_for_type = get_statistics_for_type  # type: ignore[method-assign]
    CloudWatchBackend.get_metric_data = get_metric_data  # type: ignore[method-assign]
    CloudWatchBackend._opcd_metric_data = True  # type: ignore[attr-defined]


def lambda_metrics(
    function: str, qualifier: str, version: str, duration_ms: float | None, error: bool, throttled: bool = False
) -> list[dict[str, Any]]:
    """The ``AWS/Lambda`` data points one invocation adds, as Lambda publishes them.

    Each goes under ``FunctionName``; an invocation of a version or alias also under ``Resource``
    (``function:qualifier``); of an alias also under ``ExecutedVersion``, the version that ran. A
    throttled request adds ``Throttles`` alone; any other ``Invocations``, ``Errors`` (0 or 1) and
    ``Duration`` (milliseconds).
    """
    sets = [[{"Name": "FunctionName", "Value": function}]]
    if qualifier != "$LATEST":
        sets.append([*sets[0], {"Name": "Resource", "Value": f"{function}:{qualifier}"}])
        if not qualifier.isdigit():
            sets.append([*sets[1], {"Name": "ExecutedVersion", "Value": version}])
    values: list[tuple[str, float, str]] = [("Throttles", 1.0, "Count")]
    if not throttled:
        values = [("Invocations", 1.0, "Count"), ("Errors", float(error), "Count")]
        values += [("Duration", float(duration_ms), "Milliseconds")] if duration_ms is not None else []
    return [
        {"MetricName": name, "Value": value, "Unit": unit, "Dimensions": dims}
        for dims in sets
        for name, value, unit in values
    ]


class SandboxApp:
    """WSGI app: ``/_opcd/*`` control, Lambda invoke shim, API gateway, else moto."""

    def __init__(self, work_dir: Path, region: str) -> None:
        _configure_moto()
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

        self.region = region
        self.moto = DomainDispatcherApplication(create_backend_app)
        self.runner = LambdaRunner(work_dir, endpoint_url="")
        self.runner.on_invoked = self.record_invocation
        self._fault_lock = threading.Lock()
        self._faults_list: list[dict[str, Any]] = []
        self.registry_host = ""  # host:port of the ECR registry stand-in; ECR's answers name it
        self.on_reset: list[Callable[[], None]] = []
        self.ecs: Any = None  # the ECS stand-in (sandbox.ecs.EcsStandIn) in front of moto's ECS, once set

    def lambda_backend(self, region: str) -> Any:
        from moto.awslambda.utils import get_backend

        return get_backend(ACCOUNT_ID, region)

    def put_lambda_metrics(self, region: str, data: list[dict[str, Any]]) -> None:
        """Into the sandbox's CloudWatch as PutMetricData puts them (moto's backend, in this process)."""
        from moto.cloudwatch.models import cloudwatch_backends
        from moto.core.utils import utcnow

        stamp = utcnow()
        cloudwatch_backends[ACCOUNT_ID][region].put_metric_data("AWS/Lambda", [{**d, "Timestamp": stamp} for d in data])

    def record_invocation(self, fn: Any, qualifier: str, result: Invocation, region: str) -> None:
        """What Lambda's metrics say of one invocation (the runner calls it after each, async ones too)."""
        error = result.function_error is not None
        self.put_lambda_metrics(region, lambda_metrics(
            fn.function_name, qualifier, result.executed_version, result.duration_ms, error,
        ))  # fmt: skip

    def record_throttle(self, environ: dict[str, Any], path: str) -> None:
        """An injected 429 on an invoke (or the gateway's invoke of ``live``): Lambda's ``Throttles``."""
        invoke, gateway = _INVOKE.match(path), _GATEWAY.match(path)
        name = unquote(invoke["name"]) if invoke else gateway["function"] if gateway else None
        if not name:
            return
        qualifier = parse_qs(environ.get("QUERY_STRING", "")).get("Qualifier", [None])[0] if invoke else "live"
        region = self.region_of(environ, path)
        try:
            fn, qualifier = self.runner.resolve(self.lambda_backend(region), name, qualifier)
        except Exception:  # no such function: nothing was throttled, the fault answers anyway
            return
        data = lambda_metrics(fn.function_name, qualifier, str(fn.version), None, False, throttled=True)
        self.put_lambda_metrics(region, data)

    def region_of(self, environ: dict[str, Any], path: str) -> str:
        """A request's region: the gateway path's ``@REGION``, else its SigV4 credential scope's, else the sandbox's."""
        gateway = _GATEWAY.match(path)
        signed = _REGION.search(environ.get("HTTP_AUTHORIZATION", ""))
        return (gateway["region"] if gateway else signed["region"] if signed else None) or self.region

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "GET")
        if path == "/_opcd/ping":
            return _json(start_response, 200, {"ok": True, "pid": os.getpid()})
        if path == "/_opcd/faults":
            return self._faults(environ, start_response)
        if fault := self._take_fault(method, path, self.region_of(environ, path)):
            if fault["code"] == "TooManyRequestsException":
                self.record_throttle(environ, path)
            answer = _s3_error if _service(environ) == "s3" else _aws_error
            return answer(start_response, int(fault["status"]), str(fault["code"]), "injected by the sandbox")
        if path == "/moto-api/reset":
            for reset in self.on_reset:
                reset()
        if self.ecs is not None and self.ecs.handles(environ):
            handled: Iterable[bytes] = self.ecs(environ, start_response)
            return handled
        if self.registry_host and environ.get("HTTP_X_AMZ_TARGET", "").startswith(_ECR_TARGET):
            return self._ecr(environ, start_response)
        if method == "POST" and (match := _INVOKE.match(path)):
            return self._invoke(environ, start_response, unquote(match["name"]))
        if match := _GATEWAY.match(path):
            region = match["region"] or self.region
            return self._gateway(environ, start_response, match["function"], match["path"] or "/", region)
        result: Iterable[bytes] = self.moto(environ, start_response)
        return result

    def _ecr(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        """moto's ECR answer, naming the sandbox's registry instead of ``*.dkr.ecr.*.amazonaws.com``."""
        from sandbox.registry import rewrite_ecr

        captured: list[Any] = []

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            captured[:] = [status, headers]
            return lambda data: None

        body = b"".join(self.moto(environ, capture))
        signed = _REGION.search(environ.get("HTTP_AUTHORIZATION", ""))
        region = signed["region"] if signed else self.region
        body = rewrite_ecr(body, ACCOUNT_ID, region, self.registry_host, self.region)
        headers = [(k, v) for k, v in captured[1] if k.lower() != "content-length"]
        start_response(captured[0], [*headers, ("Content-Length", str(len(body)))])
        return [body]

    def _faults(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        """Fault injection: POST a fault to fail matching requests; DELETE clears them; GET lists."""
        method = environ.get("REQUEST_METHOD", "GET")
        with self._fault_lock:
            if method == "POST":
                fault: dict[str, Any] = {"method": "PUT", "status": 500, "code": "ServiceException", "skip": 0}
                fault["count"] = 1
                try:
                    fault.update(json.loads(_read_body(environ) or b"{}"))
                    re.compile(str(fault["path"]))  # required: a regular expression over the request path
                    if not isinstance(fault.get("region", ""), str):  # optional: only that region's requests
                        raise ValueError(f"'region' is a region's name, not {fault['region']!r}")
                except (ValueError, KeyError, re.error) as exc:
                    message = f"a fault is JSON with a 'path' regular expression (and maybe a 'region'): {exc!r}"
                    return _json(start_response, 400, {"error": message})
                self._faults_list.append(fault)
            elif method == "DELETE":
                self._faults_list.clear()
            return _json(start_response, 200, {"faults": self._faults_list})

    def _take_fault(self, method: str, path: str, region: str) -> dict[str, Any] | None:
        """The first fault matching the request (its ``region`` too, when the fault names one), counted down."""
        with self._fault_lock:
            for fault in self._faults_list:
                if fault.get("region") not in (None, region):
                    continue
                if fault["method"] == method and re.search(str(fault["path"]), path):
                    if fault["skip"] > 0:
                        fault["skip"] -= 1
                        return None
                    fault["count"] -= 1
                    if fault["count"] <= 0:
                        self._faults_list.remove(fault)
                    return fault
        return None

    def _invoke(self, environ: dict[str, Any], start_response: StartResponse, name: str) -> Iterable[bytes]:
        from moto.awslambda.exceptions import UnknownFunctionException

        auth = environ.get("HTTP_AUTHORIZATION", "")
        region = m["region"] if (m := _REGION.search(auth)) else self.region
        qualifier = parse_qs(environ.get("QUERY_STRING", "")).get("Qualifier", [None])[0]
        invocation_type = environ.get("HTTP_X_AMZ_INVOCATION_TYPE", "RequestResponse")
        body = _read_body(environ)
        try:
            fn, qualifier = self.runner.resolve(self.lambda_backend(region), name, qualifier)
        except UnknownFunctionException as exc:
            return _aws_error(start_response, 404, "ResourceNotFoundException", exc.message)
        except Exception as exc:  # moto raises several types for a missing alias/version
            return _aws_error(
                start_response, 404, "ResourceNotFoundException", f"Function not found: {name}:{qualifier} ({exc})"
            )
        if invocation_type == "DryRun":
            start_response("204 No Content", [])
            return [b""]
        result = self.runner.invoke(fn, qualifier, body, region, asynchronous=invocation_type == "Event")
        headers = [("Content-Type", "application/json"), ("X-Amz-Executed-Version", result.executed_version)]
        if result.function_error:
            headers.append(("X-Amz-Function-Error", result.function_error))
        if environ.get("HTTP_X_AMZ_LOG_TYPE") == "Tail":
            headers.append(("X-Amz-Log-Result", log_result_header(result.log_tail)))
        start_response(f"{result.status} {'OK' if result.status == 200 else 'Accepted'}", headers)
        return [result.payload]

    def _gateway(
        self, environ: dict[str, Any], start_response: StartResponse, function: str, path: str, region: str
    ) -> Iterable[bytes]:
        """Serve a request as API Gateway's HTTP API in ``region`` would: invoke ``function:live`` (v2 event)."""
        body = _read_body(environ)
        headers = {k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k.startswith("HTTP_")}
        now = time.time()
        event = {
            "version": "2.0",
            "routeKey": "$default",
            "rawPath": path,
            "rawQueryString": environ.get("QUERY_STRING", ""),
            "headers": headers,
            "requestContext": {
                "accountId": ACCOUNT_ID,
                "apiId": "sandbox",
                "domainName": headers.get("host", "localhost"),
                "http": {
                    "method": environ.get("REQUEST_METHOD", "GET"),
                    "path": path,
                    "protocol": environ.get("SERVER_PROTOCOL", "HTTP/1.1"),
                    "sourceIp": environ.get("REMOTE_ADDR", "127.0.0.1"),
                    "userAgent": headers.get("user-agent", ""),
                },
                "requestId": str(uuid.uuid4()),
                "routeKey": "$default",
                "stage": "$default",
                "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
                "timeEpoch": int(now * 1000),
            },
            "body": base64.b64encode(body).decode() if body else None,
            "isBase64Encoded": bool(body),
        }
        try:
            fn, qualifier = self.runner.resolve(self.lambda_backend(region), function, "live")
        except Exception:
            return _json(start_response, 404, {"message": "Not Found"})
        result = self.runner.invoke(fn, qualifier, json.dumps(event).encode(), region)
        if result.function_error:
            return _json(start_response, 500, {"message": "Internal Server Error"})
        try:
            answer = json.loads(result.payload)
        except ValueError:
            return _json(start_response, 502, {"message": "Internal Server Error"})
        if not (isinstance(answer, dict) and "statusCode" in answer):
            return _json(start_response, 200, answer)
        out = answer.get("body") or ""
        data = base64.b64decode(out) if answer.get("isBase64Encoded") else str(out).encode()
        out_headers = [(str(k), str(v)) for k, v in (answer.get("headers") or {}).items()]
        out_headers.append(("X-Sandbox-Executed-Version", result.executed_version))
        start_response(f"{int(answer['statusCode'])} Gateway", out_headers)
        return [data]


def _read_body(environ: dict[str, Any]) -> bytes:
    length = int(environ.get("CONTENT_LENGTH") or 0)
    data: bytes = environ["wsgi.input"].read(length) if length else b""
    return data


def _json(start_response: StartResponse, status: int, payload: Any) -> list[bytes]:
    start_response(f"{status} X", [("Content-Type", "application/json")])
    return [json.dumps(payload).encode()]


def _aws_error(start_response: StartResponse, status: int, code: str, message: str) -> list[bytes]:
    start_response(f"{status} X", [("Content-Type", "application/json"), ("x-amzn-ErrorType", code)])
    return [json.dumps({"Type": "User", "message": message}).encode()]


def _service(environ: dict[str, Any]) -> str | None:
    """The AWS service a request is signed for (its credential scope)."""
    match = _SERVICE.search(environ.get("HTTP_AUTHORIZATION", ""))
    return match["service"] if match else None


def _s3_error(start_response: StartResponse, status: int, code: str, message: str) -> list[bytes]:
    """An error as S3 answers it: XML (e.g. ``503 SlowDown``), which botocore reads code and message from."""
    start_response(f"{status} X", [("Content-Type", "application/xml")])
    body = f"<Error><Code>{code}</Code><Message>{message}</Message><RequestId>{uuid.uuid4()}</RequestId></Error>"
    return [b'<?xml version="1.0" encoding="UTF-8"?>\n' + body.encode()]


class _Thread:
    """One WSGI app served on 127.0.0.1 by a background thread."""

    def __init__(self, app: Any, port: int) -> None:
        from werkzeug.serving import WSGIRequestHandler, make_server

        class QuietHandler(WSGIRequestHandler):
            def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
                """No access log: every AWS call would be a line."""

        try:
            self.server = make_server("127.0.0.1", port, app, threaded=True, request_handler=QuietHandler)
        except (OSError, SystemExit) as exc:
            raise InputError(
                f"cannot listen on 127.0.0.1:{port}: {exc}",
                "stop what uses that port, or pass --port N (0 picks a free port)",
            ) from None
        self.port = int(self.server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


class SandboxServer:
    """The sandbox in background threads of this process, on 127.0.0.1.

    ``url``: moto with the invoke shim, the gateway and the ECS stand-in (every AWS service but App Runner;
    ECS services' URLs at ``/_ecs/CLUSTER/SERVICE``);
    ``apprunner_url``: the App Runner stand-in and its service URLs; ``registry_url``: ECR's
    registry host (a proxy in front of Debian's docker-registry, run as a child process).
    """

    def __init__(self, work_dir: Path, region: str, port: int = 0) -> None:
        from sandbox.apprunner import AppRunnerStandIn
        from sandbox.ecs import EcsStandIn
        from sandbox.registry import ImageStore, LocalRegistry, RegistryProxy

        work_dir.mkdir(parents=True, exist_ok=True)
        self.app = SandboxApp(work_dir, region)
        self.registry = LocalRegistry(work_dir / "registry")
        self.images = ImageStore(work_dir / "images", self.registry, ACCOUNT_ID, region)
        self.apprunner = AppRunnerStandIn(region, ACCOUNT_ID, self.images.resolve, self.images.check)
        self._main = _Thread(self.app, port)
        self._apprunner = _Thread(self.apprunner, 0)
        self.registry_proxy = RegistryProxy(self.registry, ACCOUNT_ID, region)
        self._registry = _Thread(self.registry_proxy, 0)
        self.port, self.url = self._main.port, self._main.url
        self.apprunner_url = self._apprunner.url
        self.registry_url = self._registry.url
        self.apprunner.base_url = self.apprunner_url
        self.images.registry_host = self.app.registry_host = f"127.0.0.1:{self._registry.port}"
        self.app.runner.endpoint_url = self.url
        self.app.on_reset.append(self.apprunner.reset)
        self.ecs = self.app.ecs = EcsStandIn(region, ACCOUNT_ID, self.app.moto, self.images.resolve)
        self.ecs.base_url = self.url
        self.app.on_reset.append(self.ecs.reset)

    def start(self) -> SandboxServer:
        self.registry.start()
        for server in (self._main, self._apprunner, self._registry):
            server.thread.start()
        return self

    def stop(self) -> None:
        for server in (self._main, self._apprunner, self._registry):
            server.stop()
        self.registry.stop()
        self.registry_proxy.close()
        self.app.runner.close()

    def info(self) -> dict[str, Any]:
        """The endpoints ``.opcd/sandbox.json`` publishes."""
        return {
            "aws_endpoint_url": self.url,
            "apprunner_endpoint_url": self.apprunner_url,
            "registry": self.images.registry_host,
        }


def read_info(state_dir: Path) -> dict[str, Any] | None:
    try:
        info: dict[str, Any] = json.loads((state_dir / SANDBOX_FILE).read_text())
    except (OSError, ValueError):
        return None
    return info


def is_running(info: dict[str, Any] | None) -> bool:
    if not info:
        return False
    try:
        answer = httpx.get(f"{info['aws_endpoint_url']}/_opcd/ping", timeout=2.0)
        return answer.status_code == 200 and answer.json().get("pid") == info.get("pid")
    except (httpx.HTTPError, KeyError, ValueError):
        return False


def write_info(state_dir: Path, info: dict[str, Any]) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    tmp = state_dir / f".{SANDBOX_FILE}.tmp"
    tmp.write_text(json.dumps(info, indent=2) + "\n")
    tmp.replace(state_dir / SANDBOX_FILE)


def export_lines(info: dict[str, Any]) -> list[str]:
    apprunner = [f"export AWS_ENDPOINT_URL_APPRUNNER={info['apprunner_endpoint_url']}"] * bool(
        info.get("apprunner_endpoint_url")
    )
    return [
        f"export AWS_ENDPOINT_URL={info['aws_endpoint_url']}",
        *apprunner,
        "export AWS_ACCESS_KEY_ID=testing",
        "export AWS_SECRET_ACCESS_KEY=testing",
        f"export AWS_DEFAULT_REGION={info['region']}",
    ]


def start_detached(config_path: Path, state_dir: Path, port: int, timeout: float = 120.0) -> dict[str, Any]:
    """Start ``opcd sandbox up`` in the background; return its info once it answers."""
    state_dir.mkdir(parents=True, exist_ok=True)
    log_path = state_dir / "sandbox.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cli", "--config", str(config_path), "sandbox", "up", "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = read_info(state_dir)
        if info and info.get("pid") == proc.pid and is_running(info):
            return info
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-5:]
            raise InputError(
                "the sandbox did not start: " + (" | ".join(tail) or f"exit {proc.returncode}"),
                f"see {log_path}",
            )
        time.sleep(0.2)
    proc.terminate()
    raise InputError(f"the sandbox did not answer within {timeout:.0f}s", f"see {log_path}")


def stop_running(state_dir: Path, timeout: float = 20.0) -> str:
    info = read_info(state_dir)
    if not info:
        return "no sandbox is running"
    pid = int(info.get("pid", 0))
    if is_running(info):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and is_running(info):
            time.sleep(0.2)
        if is_running(info):
            os.kill(pid, signal.SIGKILL)
    (state_dir / SANDBOX_FILE).unlink(missing_ok=True)
    return f"sandbox at {info.get('aws_endpoint_url')} stopped"
