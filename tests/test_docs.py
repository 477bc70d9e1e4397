"""The docs stay true: the demo the README shows commits its project on the branch its opcd.toml
releases from."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent


def load_script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"scripts_{name}", ROOT / "scripts" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_the_demo_commits_its_project_on_the_release_branch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`make demo` releases commits of its own repository; opcd.toml's release_branch is main, which
    git's default branch is not everywhere."""
    demo = load_script("demo")
    monkeypatch.setattr(demo, "DEMO", tmp_path)
    (tmp_path / "opcd.toml").write_text("")
    sha = demo.commit("v1")
    branch = subprocess.run(["git", "rev-parse", "main"], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert branch.stdout.strip() == sha
