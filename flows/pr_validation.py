"""``pr-validation``: the checks of a pull request in parallel, one commit status each, one PR comment.

The run ends Failed when a required check fails or times out, so the GitHub Actions job that
started it fails too and branch protection blocks the merge.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.client.schemas.objects import State
from prefect.logging import get_run_logger
from prefect.runtime import flow_run
from prefect.states import Failed

from opcd.config import load_config
from opcd.errors import ConfigError, InputError
from opcd.outcomes import CheckStatus
from tasks.checks import CheckResult, plan_checks, run_check, scan_tree
from tasks.git import commit_tree
from tasks.github import report_to_github
from tasks.notify import run_url

MARKER = "<!-- opcd:pr-validation -->"
_ICON = {
    CheckStatus.PASSED: "✅", CheckStatus.FAILED: "❌", CheckStatus.TIMED_OUT: "⏱️", CheckStatus.SKIPPED: "⏭️",
    CheckStatus.ERROR: "💥",
}  # fmt: skip
_STATE = {
    CheckStatus.PASSED: "success", CheckStatus.SKIPPED: "success", CheckStatus.FAILED: "failure",
    CheckStatus.TIMED_OUT: "failure", CheckStatus.ERROR: "error",
}  # fmt: skip


def report(results: list[CheckResult], head_sha: str | None) -> str:
    """The PR comment: a table of checks, then the first lines of each failure."""
    failed = [r for r in results if r.blocking]
    verdict = f"**{len(failed)} required check(s) failed**" if failed else "**all required checks passed**"
    lines = [
        MARKER, f"### opcd PR validation: {verdict}", "",
        f"Commit `{head_sha[:12]}`" if head_sha else "Local checkout", "",
        "| check | result | duration | |", "|---|---|---|---|",
    ]  # fmt: skip
    for r in results:
        note = "" if r.required else "optional"
        lines.append(f"| {r.title} | {_ICON.get(r.status, '')} {r.status} | {r.seconds:.1f}s | {note} |")
    for r in results:
        if r.status.is_failure and r.output:
            summary = f"<details><summary>{r.title}: {r.status}</summary>"
            lines += ["", summary, "", "```", r.output, "```", "</details>"]
    skipped = [r for r in results if r.status is CheckStatus.SKIPPED]
    if skipped:
        lines += [""] + [f"- {r.title}: skipped — {r.output}" for r in skipped]
    return "\n".join(lines) + "\n"


def table(results: list[CheckResult]) -> str:
    """The same report for a terminal."""
    width = max(len(r.name) for r in results)
    rows = [f"{'CHECK'.ljust(width)}  {'RESULT':9}  {'TIME':>7}"]
    for r in results:
        flag = "" if r.required else "  (optional)"
        rows.append(f"{r.name.ljust(width)}  {r.status:9}  {r.seconds:6.1f}s{flag}")
    for r in results:
        if r.status is not CheckStatus.PASSED and r.output:
            rows += ["", f"{r.name}: {r.status}"] + [f"  {line}" for line in r.output.splitlines()]
    return "\n".join(rows)


def _run_name() -> str:
    params = flow_run.parameters
    if params.get("repository"):
        return f"validate {params['repository']}#{params.get('pull_request') or (params.get('head_sha') or '')[:12]}"
    return f"validate {Path(params.get('path') or '.').resolve().name}"


@contextmanager
def _head_of(given: Path, head_sha: str | None, config_path: str | None) -> Iterator[Path]:
    """The checkout at ``given`` as it is in ``head_sha`` (fetched into a worktree), or as it is without one."""
    if head_sha is None:
        yield given
        return
    try:  # the checkout's own settings: where to fetch from, where its state lives
        config = load_config(config_path or given / "opcd.toml")
        repository, state = config.project.repository, config.state_dir()
    except ConfigError:
        repository, state = None, given / ".opcd"
    with commit_tree(given, head_sha, repository, state) as (checkout, _):
        yield checkout


@flow(name="pr-validation", flow_run_name=_run_name)
def pr_validation(
    path: str = ".",
    repository: str | None = None,
    pull_request: int | None = None,
    head_sha: str | None = None,
    config_path: str | None = None,
) -> list[dict[str, Any]] | State:
    """Run every configured check of the checkout at ``path`` in parallel; report them; fail on a required failure."""
    logger = get_run_logger()
    given = Path(path).resolve()
    if not given.is_dir():
        raise InputError(f"checkout {path!r} is not a directory", "pass the path of the pull request's checkout")
    with _head_of(given, head_sha, config_path) as checkout:  # the PR's head, also on a worker's checkout of main
        config = load_config(config_path or checkout / "opcd.toml")
        checks = plan_checks(config, checkout)
        logger.info("Running %d checks in parallel: %s", len(checks), ", ".join(c.name for c in checks))
        # first, so that every check's output is redacted of what it finds
        findings, secrets = scan_tree(checkout, config.validation.secrets_baseline)
        futures = [run_check.submit(check, checkout, config, findings, secrets) for check in checks]
        results: list[CheckResult] = [f.result() for f in futures]
    comment = report(results, head_sha)
    create_markdown_artifact(key="pr-validation", markdown=comment, description="checks of the pull request")
    if repository and (head_sha or pull_request is not None):
        statuses = [
            (f"opcd/{r.name}", _STATE[r.status], f"{r.status} in {r.seconds:.0f}s")
            for r in results
            if r.status is not CheckStatus.SKIPPED
        ]  # a skipped check makes no claim
        report_to_github(repository, pull_request, head_sha, statuses, comment, MARKER, run_url())
    data = [asdict(r) for r in results]
    failed = [r.name for r in results if r.blocking]
    if failed:  # the run ends Failed, and keeps the results for `opcd validate`
        return Failed(message=f"required check(s) failed: {', '.join(failed)}", data=data)
    return data
