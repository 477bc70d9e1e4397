"""Which checks a pull request gets, from opcd.toml; bad names in [validation] are clear errors."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from opcd.config import parse_config
from opcd.errors import ConfigError
from tasks.checks import plan_checks, redact

ROOT = Path(__file__).resolve().parent.parent.parent


def config_with(**validation: Any) -> Any:
    data = tomllib.loads((ROOT / "opcd.toml").read_text())
    data["validation"].update(validation)
    return parse_config(data, ROOT)


def test_the_projects_checks_in_report_order() -> None:
    names = [c.name for c in plan_checks(config_with(), ROOT)]
    assert names == ["tests-backend", "tests-worker", "lint", "types", "node-frontend", "bandit", "secrets", "build"]
    tests = plan_checks(config_with(coverage_floor=90), ROOT)[0]
    assert tests.commands[0][0] == "examples/outreachpass/backend" and "--cov-fail-under=90" in tests.commands[0][1]
    assert "--cov=app" in tests.commands[0][1] and tests.required and tests.timeout == 600.0


def test_skip_optional_timeouts_and_extra_commands() -> None:
    checks = plan_checks(
        config_with(skip=["types"], optional=["bandit"], timeouts={"lint": "30s"}, commands={"docs": "true"}), ROOT
    )
    by_name = {c.name: c for c in checks}
    assert "types" not in by_name and not by_name["bandit"].required and by_name["lint"].timeout == 30.0
    assert by_name["docs"].commands == [(".", ["true"])]

    lint = {c.name: c for c in plan_checks(config_with(commands={"lint": "flake8 src"}), ROOT)}["lint"]
    assert lint.commands == [(".", ["flake8", "src"])] and lint.kind == "command"  # replaces the built-in


@pytest.mark.parametrize("key", ["skip", "optional"])
def test_unknown_check_names_are_refused(key: str) -> None:
    with pytest.raises(ConfigError, match=rf"validation\.{key}: unknown check\(s\) tset-backend — checks are: bandit,"):
        plan_checks(config_with(**{key: ["tset-backend"]}), ROOT)


def test_a_node_directory_without_package_json(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="validation.node: examples/outreachpass/backend/package.json does not exist"):
        plan_checks(config_with(node=["examples/outreachpass/backend"]), ROOT)


def test_terraform_without_a_binary_is_skipped_not_passed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    by_name = {c.name: c for c in plan_checks(config_with(terraform="examples"), ROOT)}
    assert by_name["terraform"].kind == "skip"
    assert by_name["terraform"].skip_reason == "terraform not installed (nor tofu): not checked"
    assert by_name["node-frontend"].kind == "skip" and by_name["node-frontend"].skip_reason == "npm not installed"


def test_redact_replaces_every_value() -> None:  # scan_tree gives them longest first
    assert redact("key=AKIA123 and AKIA12345", ["AKIA12345", "AKIA123"]) == "key=*** and ***"
