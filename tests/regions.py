"""examples/outreachpass/opcd-regions.toml (prod in us-east-1, then us-west-2) as a test project's opcd.toml."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from tests.conftest import EXAMPLES, Project

FAST_CHECKS = 'health_check = { successes = 2, attempts = 4, interval = "0.1s" }'
SHRUNK = {  # the waits of a test: checks, bakes and the approval's polls shrunk
    'health_check = { successes = 3, attempts = 10, interval = "1s", timeout = "5s" }': FAST_CHECKS,
    'approval = { approvers = ["alice", "bob"], timeout = "24h" }':
        'approval = { approvers = ["alice", "bob"], timeout = "120s", poll_interval = "1s" }',
    'traffic = { backend = "canary10-5m", worker = "linear50-2m" }':
        'traffic = { backend = "canary10-0.2s", worker = "linear50-0.2s" }',
    'bake = { poll_interval = "15s", smoke = true }':
        f'bake = {{ poll_interval = "0.1s", smoke = true }}\n{FAST_CHECKS}',
}  # fmt: skip


def regions_config() -> str:
    text = (EXAMPLES / "opcd-regions.toml").read_text()
    for old, new in SHRUNK.items():
        assert old in text, f"opcd-regions.toml changed: update tests/regions.py ({old})"
        text = text.replace(old, new)
    return text


def lay_out_regions(root: Path) -> None:
    """examples/outreachpass's Lambda components, with opcd-regions.toml (shrunk) as the opcd.toml."""
    for example in ("backend", "worker"):
        shutil.copytree(EXAMPLES / example, root / example, ignore=shutil.ignore_patterns("__pycache__", "tests"))
    (root / "opcd.toml").write_text(regions_config())


def client_in(project: Project, service: str, region: str) -> Any:
    """A sandbox client of ``service`` in ``region`` (the sandbox serves every region from one endpoint)."""
    from opcd.aws import new_client

    return new_client(service, region, ("testing", "testing"), project.endpoint)


def live_in(project: Project, function: str, region: str) -> str:
    """The app version ``function:live`` runs in ``region``, from its Lambda version's description."""
    lam = client_in(project, "lambda", region)
    version = lam.get_alias(FunctionName=function, Name="live")["FunctionVersion"]
    return str(lam.get_function_configuration(FunctionName=function, Qualifier=version).get("Description", ""))
