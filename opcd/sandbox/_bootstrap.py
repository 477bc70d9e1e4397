"""Runs one Lambda invocation inside a fresh interpreter, as the AWS Python runtime would.

Usage: python _bootstrap.py CODE_DIR HANDLER CONTEXT_JSON RESULT_PATH < event.json
The handler's own stdout/stderr stay the function's log; the result goes to RESULT_PATH.
This file must run on any Python 3.9+ with the standard library only.
"""

from __future__ import annotations

import importlib
import json
import sys
import time
import traceback
from typing import Any


class LambdaContext:
    def __init__(self, info: dict[str, Any], deadline: float) -> None:
        self.function_name = info["function_name"]
        self.function_version = info["function_version"]
        self.invoked_function_arn = info["invoked_function_arn"]
        self.memory_limit_in_mb = info["memory_limit_in_mb"]
        self.aws_request_id = info["aws_request_id"]
        self.log_group_name = "/aws/lambda/" + info["function_name"]
        self.log_stream_name = info["aws_request_id"]
        self._deadline = deadline

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.time()) * 1000))


def _error(error_type: str, message: str, tb: Any = None) -> dict[str, Any]:
    return {
        "errorMessage": message,
        "errorType": error_type,
        "stackTrace": traceback.format_tb(tb) if tb else [],
    }


def main() -> None:
    code_dir, handler_spec, context_json, result_path = sys.argv[1:5]
    info = json.loads(context_json)
    context = LambdaContext(info, time.time() + float(info["timeout"]))
    sys.path.insert(0, code_dir)
    event = json.loads(sys.stdin.read() or "null")
    module_name, _, func_name = handler_spec.rpartition(".")
    outcome: dict[str, Any] | None = None
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        outcome = {
            "ok": False,
            "error": _error(
                "Runtime.ImportModuleError",
                f"Unable to import module '{module_name}': {exc}",
                exc.__traceback__,
            ),
        }
    if outcome is None:
        func = getattr(module, func_name, None)
        if func is None:
            outcome = {
                "ok": False,
                "error": _error(
                    "Runtime.HandlerNotFound",
                    f"Handler '{func_name}' missing on module '{module_name}'",
                ),
            }
        else:
            try:
                outcome = {"ok": True, "result": func(event, context)}
            except Exception as exc:
                outcome = {
                    "ok": False,
                    "error": _error(type(exc).__name__, str(exc), exc.__traceback__),
                }
    try:
        text = json.dumps(outcome)
    except (TypeError, ValueError) as exc:
        text = json.dumps({"ok": False, "error": _error("Runtime.MarshalError", f"Unable to marshal response: {exc}")})
    with open(result_path, "w", encoding="utf-8") as out:
        out.write(text)


if __name__ == "__main__":
    main()
