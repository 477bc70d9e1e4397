"""Find the Python interpreter that matches a Lambda runtime (``python3.12``).

Migrations run from the built package, and the sandbox runs handlers the same way: with the
matching interpreter when this machine has one, else with the interpreter running opcd (the
package's pure-Python wheels import on either; compiled ones may fall back to pure Python).
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import threading

_found: dict[str, str] = {}
_lock = threading.Lock()


def find_python(runtime: str) -> str:
    """Path of a working ``runtime`` interpreter (``python3.12``), else ``sys.executable``."""
    with _lock:
        if runtime not in _found:
            _found[runtime] = _search(runtime)
        return _found[runtime]


def _search(runtime: str) -> str:
    number = runtime.removeprefix("python")
    candidates = [shutil.which(runtime) or ""]
    candidates += sorted(glob.glob(os.path.expanduser(f"~/.pyenv/versions/{number}*/bin/{runtime}")))
    candidates += [f"/usr/bin/{runtime}", f"/usr/local/bin/{runtime}"]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            probe = subprocess.run(
                [candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            if probe.returncode == 0 and probe.stdout.strip() == number:
                return candidate
    return sys.executable
