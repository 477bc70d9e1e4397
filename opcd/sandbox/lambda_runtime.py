"""The invoke shim: run a Lambda version's real handler from the zip it was published from."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import random
import subprocess
import tempfile
import threading
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opcd.pythons import find_python

BOOTSTRAP = Path(__file__).with_name("_bootstrap.py")


@dataclass
class Invocation:
    status: int
    payload: bytes
    executed_version: str
    function_error: str | None
    log_tail: str


class LambdaRunner:
    """Runs handlers in subprocesses; zips are unpacked once per code sha into ``work_dir``."""

    def __init__(self, work_dir: Path, endpoint_url: str) -> None:
        self.work_dir = work_dir
        self.endpoint_url = endpoint_url
        self._unpack_lock = threading.Lock()

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

    def invoke(self, fn: Any, qualifier: str, event: bytes, region: str, asynchronous: bool = False) -> Invocation:
        if asynchronous:
            threading.Thread(target=self.invoke, args=(fn, qualifier, event, region), daemon=True).start()
            return Invocation(202, b"", str(fn.version), None, "")
        code_dir = self._code_dir(fn.code_bytes)
        request_id = str(uuid.uuid4())
        base = f"arn:aws:lambda:{fn.region}:{fn.account_id}:function:{fn.function_name}"
        arn = base if qualifier == "$LATEST" else f"{base}:{qualifier}"
        info = {
            "function_name": fn.function_name,
            "function_version": str(fn.version),
            "invoked_function_arn": arn,
            "memory_limit_in_mb": str(fn.memory_size),
            "aws_request_id": request_id,
            "timeout": fn.timeout,
        }
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONNOUSERSITE": "1",
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
        runtime = str(fn.run_time or "python3.12")
        with tempfile.TemporaryDirectory(dir=self.work_dir) as tmp:
            result_path = Path(tmp) / "result.json"
            try:
                proc = subprocess.run(
                    [
                        find_python(runtime),
                        "-I",
                        str(BOOTSTRAP),
                        str(code_dir),
                        fn.handler,
                        json.dumps(info),
                        str(result_path),
                    ],
                    input=event,
                    capture_output=True,
                    env=env,
                    cwd=code_dir,
                    timeout=float(fn.timeout),
                    check=False,
                )
                log = (proc.stdout + proc.stderr).decode("utf-8", "replace")
            except subprocess.TimeoutExpired as exc:
                log = ((exc.stdout or b"") + (exc.stderr or b"")).decode("utf-8", "replace")
                error = {
                    "errorMessage": f"{request_id} Task timed out after {float(fn.timeout):.2f} seconds",
                    "errorType": "Sandbox.Timedout",
                }
                return Invocation(200, json.dumps(error).encode(), str(fn.version), "Unhandled", log)
            try:
                outcome = json.loads(result_path.read_text())
            except (OSError, ValueError):
                error = {
                    "errorMessage": f"RequestId: {request_id} Error: Runtime exited with code {proc.returncode}",
                    "errorType": "Runtime.ExitError",
                }
                return Invocation(200, json.dumps(error).encode(), str(fn.version), "Unhandled", log)
        if outcome["ok"]:
            return Invocation(200, json.dumps(outcome["result"]).encode(), str(fn.version), None, log)
        return Invocation(200, json.dumps(outcome["error"]).encode(), str(fn.version), "Unhandled", log)


def log_result_header(log: str) -> str:
    """``X-Amz-Log-Result``: the last 4 KB of the log, base64-encoded."""
    return base64.b64encode(log.encode()[-4096:]).decode()
