"""The project as a new user meets it: every import declared, the lock current, its own secret scan clean.

The secret scan is the one ``opcd validate`` runs (tasks/checks.py) over this repository's tracked
files; the lock tests run uv offline (its cache) against uv.lock and pyproject.toml.
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from opcd.config import load_config
from tasks.checks import judge_secrets, scan_tree

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = ["cli", "opcd", "flows", "tasks", "deployments", "sandbox"]
# Where a module may import an optional extra's packages: the sandbox its own, the secret scan detect-secrets
# (imported where it runs, ConfigError naming the extra when it is missing).
EXTRA_OF = {"sandbox/": "sandbox", "tasks/checks.py": "validate"}
UV = Path(sys.executable).parent / "uv"
REQUIREMENTS = ROOT / "requirements" / "dev.lock.txt"
EXPORT = ["export", "--frozen", "--extra", "dev", "--no-emit-project", "--format", "requirements-txt"]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_the_repository_passes_its_own_secret_scan() -> None:
    """The `secrets` check of `opcd validate` over this checkout, against the baseline opcd.toml names."""
    baseline = load_config(ROOT / "opcd.toml").validation.secrets_baseline
    findings, _ = scan_tree(ROOT, baseline)
    ok, output = judge_secrets(findings, ROOT, baseline)
    assert ok, output
    # every known finding is audited as a false positive in the baseline: none is a real secret kept quiet
    results = json.loads((ROOT / baseline).read_text())["results"]
    assert results and all(item.get("is_secret") is False for items in results.values() for item in items), results


def test_a_planted_secret_fails_the_scan_despite_the_baseline(tmp_path: Path) -> None:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / ".secrets.baseline").write_text((ROOT / ".secrets.baseline").read_text())
    (tmp_path / "settings.py").write_text("SLACK = 'ok'\n")
    subprocess.run(["git", "add", "."], cwd=tmp_path, check=True)
    findings, _ = scan_tree(tmp_path, ".secrets.baseline")
    assert judge_secrets(findings, tmp_path, ".secrets.baseline")[0]
    key = "AKIA" + "Q3EGXZPLRY7VN4HT"  # a key-shaped value, assembled so this file holds none
    (tmp_path / "settings.py").write_text(f"SLACK = 'ok'\nAWS_ACCESS_KEY_ID = '{key}'\n")
    findings, values = scan_tree(tmp_path, ".secrets.baseline")
    ok, output = judge_secrets(findings, tmp_path, ".secrets.baseline")
    assert not ok and output.endswith("settings.py:2: AWS Access Key") and values == [key], output


def distribution_name(requirement: str) -> str:
    """``moto[server]==5.2.5`` → ``moto``; names normalised as PyPI does."""
    name = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert name, requirement
    return re.sub(r"[-_.]+", "-", name.group()).lower()


def declared(extra: str | None) -> set[str]:
    project = PYPROJECT["project"]
    requirements = project["dependencies"] + (project["optional-dependencies"][extra] if extra else [])
    return {distribution_name(r) for r in requirements}


def third_party_imports(path: Path) -> set[str]:
    """Top-level modules ``path`` imports that are neither the standard library nor the product (not
    counting ``if TYPE_CHECKING:`` blocks, which never run)."""
    tree = ast.parse(path.read_text())
    type_only = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and isinstance(block.test, ast.Name) and block.test.id == "TYPE_CHECKING"
        for statement in block.body
        for node in ast.walk(statement)
    }
    modules: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            modules |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module.split(".")[0])
    return {m for m in modules if m not in sys.stdlib_module_names and m not in PRODUCT}


def test_every_third_party_import_is_a_declared_dependency() -> None:
    distributions = importlib.metadata.packages_distributions()
    undeclared, seen = [], set()
    for package in PRODUCT:
        for path in sorted((ROOT / package).rglob("*.py")):
            name = path.relative_to(ROOT).as_posix()
            extra = next((e for prefix, e in EXTRA_OF.items() if name.startswith(prefix)), None)
            allowed = declared(extra)
            for module in sorted(third_party_imports(path)):
                seen.add(module)
                owners = {distribution_name(d) for d in distributions.get(module, [])}
                assert owners, f"{name} imports {module}, which no installed distribution provides"
                if not owners & allowed:
                    where = f"the {extra} extra" if extra else "[project] dependencies"
                    undeclared.append(f"{name}: {module} ({', '.join(sorted(owners))}) is not in {where}")
    assert not undeclared, "\n".join(undeclared)
    assert {"boto3", "prefect", "yaml", "moto", "werkzeug", "detect_secrets"} <= seen  # the walk does see them


def test_the_dev_extra_holds_every_other_extra() -> None:
    extras = PYPROJECT["project"]["optional-dependencies"]
    for name, requirements in extras.items():
        assert set(requirements) <= set(extras["dev"]), f"dev lacks part of the {name} extra"


BLOCK_SANDBOX_EXTRA = """
import sys
sys.modules[sys.argv[1]] = None  # as if the sandbox extra were not (wholly) installed: `import` raises
from cli.main import main
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.parametrize("blocked", ["moto", "werkzeug"])
def test_the_sandbox_without_its_extra_says_how_to_install_it(blocked: str) -> None:
    """`up` (with --detach or not: the same check, before anything starts) is what runs moto."""
    done = subprocess.run(
        [sys.executable, "-c", BLOCK_SANDBOX_EXTRA, blocked, "sandbox", "up", "--port", "0"],
        cwd=ROOT, capture_output=True, text=True,
        env={**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}, check=False,
    )  # fmt: skip
    assert done.returncode == 2 and done.stdout == "", done.stdout + done.stderr
    assert done.stderr.splitlines() == [
        "error: the sandbox needs the sandbox extra — pip install 'opcd[sandbox]' (or make install)"
    ], done.stderr


def uv(*args: str) -> subprocess.CompletedProcess[str]:
    assert UV.exists(), f"{UV} is missing: `make install` installs it (it is in the dev extra)"
    env = {**os.environ, "UV_OFFLINE": "1", "UV_NO_PROGRESS": "1"}
    return subprocess.run([UV, *args], cwd=ROOT, capture_output=True, text=True, env=env, check=False)


def without_header(text: str) -> list[str]:
    lines = text.splitlines()
    while lines and lines[0].startswith("#"):
        lines.pop(0)
    return lines


def test_uv_lock_matches_pyproject() -> None:
    checked = uv("lock", "--check", "--offline")
    assert checked.returncode == 0, f"uv.lock is out of date: run `make lock`\n{checked.stderr}"


def test_the_pip_requirements_are_uv_lock_exported_with_hashes() -> None:
    exported = uv(*EXPORT)
    assert exported.returncode == 0, exported.stderr
    assert without_header(REQUIREMENTS.read_text()) == without_header(exported.stdout), (
        f"{REQUIREMENTS.relative_to(ROOT)} is not uv.lock's export: run `make lock`"
    )
    # pip installs it with --require-hashes: every requirement pinned (==) and followed by its hashes
    requirements = re.findall(r"^[A-Za-z0-9].*", exported.stdout, re.M)
    pinned = re.findall(
        r"^([A-Za-z0-9._-]+)==[^ ;]+(?: ;[^\\]*)? \\\n +--hash=sha256:[0-9a-f]{64}", exported.stdout, re.M
    )
    assert len(pinned) == len(requirements) > 100, requirements
    assert declared("dev") - {"opcd"} <= {distribution_name(n) for n in pinned}
