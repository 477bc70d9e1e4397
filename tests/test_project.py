"""The project as a new user meets it: its own secret scan clean.

The secret scan is the one ``opcd validate`` runs (tasks/checks.py) over this repository's tracked files.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from opcd.config import load_config
from tasks.checks import judge_secrets, scan_tree

ROOT = Path(__file__).resolve().parent.parent


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
