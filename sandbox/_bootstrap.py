"""A Lambda execution environment for the sandbox, as the AWS Python runtime runs one.

Usage: python _bootstrap.py CODE_DIR HANDLER RESULT_FD
Init imports the handler's module once; then each line on stdin is one invocation
(``{"event": ..., "context": {...}}``) and its outcome is one line written to RESULT_FD. The
handler's own stdout/stderr stay the function's log. After an init error the process reports it
and exits, so the next invocation initialises again, as Lambda does.
This file must run on any Python 3.9+ with the standard library only.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
import traceback
from typing import Any


class LambdaContext:
    def __init__(self, info: dict[str, Any]) -> None:
        self.function_name = info["function_name"]
        self.function_version = info["function_version"]
        self.invoked_function_arn = info["invoked_function_arn"]
        self.memory_limit_in_mb = info["memory_limit_in_mb"]
        self.aws_request_id = info["aws_request_id"]
        self.log_group_name = "/aws/lambda/" + info["function_name"]
        self.log_stream_name = info["aws_request_id"]
        self._deadline = time.time() + float(info["timeout"])

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.time()) * 1000))


def _error(error_type: str, message: str, tb: Any = None) -> dict[str, Any]:
    return {
        "errorMessage": message,
        "errorType": error_type,
        "stackTrace": traceback.format_tb(tb) if tb else [],
    }


def _init(handler_spec: str) -> tuple[Any, dict[str, Any] | None]:
    module_name, _, func_name = handler_spec.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        message = f"Unable to import module '{module_name}': {exc}"
        return None, _error("Runtime.ImportModuleError", message, exc.__traceback__)
    func = getattr(module, func_name, None)
    if func is None:
        return None, _error("Runtime.HandlerNotFound", f"Handler '{func_name}' missing on module '{module_name}'")
    return func, None


def _invoke(func: Any, request: dict[str, Any]) -> dict[str, Any]:
    """The handler's outcome and its run in milliseconds (Lambda's Duration: init not included)."""
    began = time.perf_counter()
    try:
        result = func(request["event"], LambdaContext(request["context"]))
    except Exception as exc:
        error = _error(type(exc).__name__, str(exc), exc.__traceback__)
        return {"ok": False, "error": error, "duration_ms": (time.perf_counter() - began) * 1000}
    return {"ok": True, "result": result, "duration_ms": (time.perf_counter() - began) * 1000}


def main() -> None:
    code_dir, handler_spec, result_fd = sys.argv[1], sys.argv[2], int(sys.argv[3])
    sys.path.insert(0, code_dir)
    results = os.fdopen(result_fd, "w", encoding="utf-8")
    func, init_error = _init(handler_spec)
    for line in sys.stdin:
        outcome = {"ok": False, "error": init_error} if init_error else _invoke(func, json.loads(line))
        try:
            text = json.dumps(outcome)
        except (TypeError, ValueError) as exc:
            text = json.dumps(
                {"ok": False, "error": _error("Runtime.MarshalError", f"Unable to marshal response: {exc}")}
            )
        sys.stdout.flush()
        sys.stderr.flush()
        results.write(text + "\n")
        results.flush()
        if init_error:
            return


if __name__ == "__main__":
    main()
