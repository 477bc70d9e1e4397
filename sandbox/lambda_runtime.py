"""The invoke shim: run a Lambda version's real handler from the zip it was published from."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import random
import select
import subprocess
import tempfile
import threading
import time
import uuid
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opcd.pythons import find_python

BOOTSTRAP = Path(__file__).with_name("_bootstrap.py")
INIT_ERRORS = ("Runtime.ImportModuleError", "Runtime.HandlerNotFound")


@dataclass
class Invocation:
    status: int
    payload: bytes
    executed_version: str
    function_error: str | None
    log_tail: str
    duration_ms: float | None = None  # the handler's run, as Lambda's Duration metric


class Worker:
    """One warm execution environment: a Python process that keeps the handler imported."""

    def __init__(self, key: tuple[Any, ...], argv: list[str], env: dict[str, str], cwd: Path, log_path: Path) -> None:
        self.key = key
        read_fd, write_fd = os.pipe()
        self.log_path = log_path
        with log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [*argv, str(write_fd)], stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT,
                env=env, cwd=cwd, pass_fds=(write_fd,),
            )  # fmt: skip
        os.close(write_fd)
        self.results = os.fdopen(read_fd, "r", encoding="utf-8")
        self.last_used = time.monotonic()

    def call(self, request: dict[str, Any], timeout: float) -> dict[str, Any] | None:
        """The outcome of one invocation; None when the process timed out or died (it is then gone)."""
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(request).encode() + b"\n")
            self.proc.stdin.flush()
        except OSError:
            self.kill()
            return None
        ready, _, _ = select.select([self.results], [], [], timeout)
        line = self.results.readline() if ready else ""
        if not line:
            self.kill()
            return None
        self.last_used = time.monotonic()
        outcome: dict[str, Any] = json.loads(line)
        return outcome

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.results.close()
        if self.proc.stdin:
            self.proc.stdin.close()


class LambdaRunner:
    """Runs handlers in warm worker processes, reused across invocations as Lambda reuses them.

    Zips are unpacked once per code sha into ``work_dir``; a worker is keyed by function,
    version, code and environment, serves one invocation at a time, and is discarded after a
    timeout or an init error (the next invocation starts a fresh one).
    """

    MAX_WORKERS = 24

    def __init__(self, work_dir: Path, endpoint_url: str) -> None:
        self.work_dir = work_dir
        self.endpoint_url = endpoint_url
        self._unpack_lock = threading.Lock()
        self._pool_lock = threading.Lock()
        self._idle: list[Worker] = []
        self._busy = 0
        # called after each invocation that ran (its metrics); (function, qualifier, result, region)
        self.on_invoked: Callable[[Any, str, Invocation, str], None] | None = None

    def _code_dir(self, code: bytes) -> Path:
        digest = hashlib.sha256(code).hexdigest()
        target = self.work_dir / "lambda-code" / digest
        with self._unpack_lock:
            if not target.exists():
                tmp = Path(tempfile.mkdtemp(dir=self.work_dir, prefix=".unpack-"))
                with zipfile.ZipFile(io.BytesIO(code)) as archive:
                    archive.extractall(tmp)
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp.rename(target)
        return target

    def resolve(self, backend: Any, name: str, qualifier: str | None) -> tuple[Any, str]:
        """The function version that serves ``name:qualifier`` (alias weights applied)."""
        if ":" in name and not name.startswith("arn:"):
            name, qualifier = name.split(":", 1)
        if name.startswith("arn:"):
            parts = name.split(":")
            name = parts[6]
            qualifier = parts[7] if len(parts) > 7 else qualifier
        qualifier = qualifier or "$LATEST"
        version = qualifier
        if qualifier != "$LATEST" and not qualifier.isdigit():
            alias = backend.get_alias(qualifier, name)
            version = alias.function_version
            weights = (alias.routing_config or {}).get("AdditionalVersionWeights") or {}
            roll = random.random()
            for other, weight in weights.items():
                if roll < float(weight):
                    version = other
                    break
                roll -= float(weight)
        fn = backend.get_function(name, version)
        return fn, qualifier

    def _environment(self, fn: Any, region: str, code_dir: Path) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "LAMBDA_TASK_ROOT": str(code_dir),
            "AWS_REGION": region,
            "AWS_DEFAULT_REGION": region,
            "AWS_LAMBDA_FUNCTION_NAME": fn.function_name,
            "AWS_LAMBDA_FUNCTION_VERSION": str(fn.version),
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(fn.memory_size),
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            **{str(k): str(v) for k, v in (fn.environment_vars or {}).items()},
        }

    def _checkout(self, fn: Any, region: str) -> Worker:
        code_dir = self._code_dir(fn.code_bytes)
        env = self._environment(fn, region, code_dir)
        key = (
            fn.function_name,
            str(fn.version),
            code_dir.name,
            fn.handler,
            str(fn.run_time),
            tuple(sorted(env.items())),
        )
        with self._pool_lock:
            for worker in list(self._idle):
                if not worker.alive():  # exited while idle: reap it, close its pipes
                    self._idle.remove(worker)
                    worker.kill()
                elif worker.key == key:
                    self._idle.remove(worker)
                    self._busy += 1
                    return worker
            while self._idle and len(self._idle) + self._busy >= self.MAX_WORKERS:
                self._idle.sort(key=lambda w: w.last_used)
                self._idle.pop(0).kill()
            self._busy += 1
        logs = self.work_dir / "lambda-logs"
        logs.mkdir(parents=True, exist_ok=True)
        argv = [find_python(str(fn.run_time or "python3.12")), "-I", str(BOOTSTRAP), str(code_dir), fn.handler]
        return Worker(key, argv, env, code_dir, logs / f"{fn.function_name}.log")

    def _checkin(self, worker: Worker) -> None:
        with self._pool_lock:
            self._busy -= 1
            if worker.alive():
                self._idle.append(worker)
            else:
                worker.kill()  # reaps it and closes its pipes

    def invoke(self, fn: Any, qualifier: str, event: bytes, region: str, asynchronous: bool = False) -> Invocation:
        if asynchronous:
            threading.Thread(target=self.invoke, args=(fn, qualifier, event, region), daemon=True).start()
            return Invocation(202, b"", str(fn.version), None, "")
        request_id = str(uuid.uuid4())
        base = f"arn:aws:lambda:{fn.region}:{fn.account_id}:function:{fn.function_name}"
        context = {
            "function_name": fn.function_name,
            "function_version": str(fn.version),
            "invoked_function_arn": base if qualifier == "$LATEST" else f"{base}:{qualifier}",
            "memory_limit_in_mb": str(fn.memory_size),
            "aws_request_id": request_id,
            "timeout": fn.timeout,
        }
        worker = self._checkout(fn, region)
        start = worker.log_path.stat().st_size if worker.log_path.exists() else 0
        began = time.perf_counter()
        try:
            outcome = worker.call({"event": json.loads(event or b"null"), "context": context}, float(fn.timeout))
            if outcome and not outcome["ok"] and outcome["error"]["errorType"] in INIT_ERRORS:
                worker.kill()  # it exits after an init error; the next invocation initialises again
        finally:
            self._checkin(worker)
        result = self._result(outcome, worker, request_id, fn, start)
        # the handler's own run, as Lambda measures it (init excluded); a timeout or crash: the time waited
        ran = outcome.get("duration_ms") if outcome else None
        result.duration_ms = round(ran if ran is not None else (time.perf_counter() - began) * 1000, 3)
        if self.on_invoked is not None:
            self.on_invoked(fn, qualifier, result, region)
        return result

    def _result(
        self, outcome: dict[str, Any] | None, worker: Worker, request_id: str, fn: Any, start: int
    ) -> Invocation:
        with worker.log_path.open("rb") as log:
            log.seek(start)
            tail = log.read().decode("utf-8", "replace")
        version = str(fn.version)
        if outcome is None:
            error = {
                "errorMessage": f"RequestId: {request_id} Task timed out after {float(fn.timeout):.2f} seconds"
                if worker.proc.returncode in (-9, None)
                else f"RequestId: {request_id} Error: Runtime exited with code {worker.proc.returncode}",
                "errorType": "Sandbox.Timedout" if worker.proc.returncode in (-9, None) else "Runtime.ExitError",
            }
            return Invocation(200, json.dumps(error).encode(), version, "Unhandled", tail)
        if outcome["ok"]:
            return Invocation(200, json.dumps(outcome["result"]).encode(), version, None, tail)
        return Invocation(200, json.dumps(outcome["error"]).encode(), version, "Unhandled", tail)

    def close(self) -> None:
        with self._pool_lock:
            for worker in self._idle:
                worker.kill()
            self._idle.clear()


def log_result_header(log: str) -> str:
    """``X-Amz-Log-Result``: the last 4 KB of the log, base64-encoded."""
    return base64.b64encode(log.encode()[-4096:]).decode()
