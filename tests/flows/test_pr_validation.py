"""pr-validation on a real checkout of the examples: real pytest, ruff, mypy, bandit, detect-secrets,
node's test runner and the build; GitHub through a local stand-in that records each request."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import EXAMPLES, ROOT
from tests.github_stub import GitHubStub

REPO = "outreachpass/outreachpass"
HAS_TERRAFORM = bool(shutil.which("terraform") or shutil.which("tofu"))
ALL = ["tests-backend", "tests-worker", "lint", "types", "node-frontend", "bandit", "secrets", "terraform", "build"]


def git(checkout: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=checkout, check=True, capture_output=True,
                   env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org", "GIT_COMMITTER_NAME": "t",
                        "GIT_COMMITTER_EMAIL": "t@example.org", "PATH": "/usr/bin:/bin"})  # fmt: skip


def head(checkout: Path) -> str:
    """The checkout's commit: the pull request's head sha its statuses go to."""
    done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=checkout, check=True, capture_output=True, text=True)
    return done.stdout.strip()


def add_validation(checkout: Path, lines: str) -> None:
    """Add ``lines`` at the top of the checkout's ``[validation]`` table."""
    path = checkout / "opcd.toml"
    config, count = re.subn(r"(?m)^\[validation\].*\n", lambda m: m[0] + lines, path.read_text())
    assert count == 1
    path.write_text(config)


def make_checkout(root: Path, validation: str = "") -> Path:
    """A git checkout holding the examples and the project's opcd.toml (plus a Terraform module).

    ``validation`` is added to the ``[validation]`` table, e.g. ``skip = ["build"]``.
    """
    for name in ("backend", "worker", "frontend"):
        shutil.copytree(EXAMPLES / name, root / "examples" / "outreachpass" / name,
                        ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache", "node_modules"))  # fmt: skip
    shutil.copy(EXAMPLES / "ruff.toml", root / "examples" / "outreachpass" / "ruff.toml")
    (root / "infra").mkdir()
    (root / "infra" / "main.tf").write_text('terraform {\n  required_version = ">= 1.6"\n}\n')
    shutil.copytree(EXAMPLES / "terraform", root / "examples" / "outreachpass" / "terraform")
    (root / "opcd.toml").write_text((ROOT / "opcd.toml").read_text())
    add_validation(root, f'terraform = "infra"\n{validation}')
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "pull request")
    return root


@pytest.fixture(scope="session")
def mypy_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mypy-cache")


@pytest.fixture(autouse=True)
def caches(build_cache: Path, mypy_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Warm caches across tests: the build's dependencies and mypy's cache."""
    monkeypatch.setenv("OPCD_BUILD_CACHE", str(build_cache))
    monkeypatch.setenv("MYPY_CACHE_DIR", str(mypy_cache))


@pytest.fixture
def github(monkeypatch: pytest.MonkeyPatch) -> Iterator[GitHubStub]:
    stub = GitHubStub().start()
    monkeypatch.setenv("GITHUB_TOKEN", "ghs_test_token")
    monkeypatch.setenv("GITHUB_API_URL", stub.url)
    monkeypatch.delenv("OPCD_CONFIG", raising=False)
    yield stub
    stub.stop()


def run(checkout: Path, **params: Any) -> tuple[Any, list[dict[str, Any]]]:
    from flows.pr_validation import pr_validation

    state = pr_validation(path=str(checkout), return_state=True, **params)
    data = state.result(raise_on_failure=False)
    assert isinstance(data, list), data
    return state, data


def by_name(results: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in results}


def test_a_clean_checkout_passes_and_is_reported(tmp_path: Path, github: GitHubStub, prefect_server: None) -> None:
    checkout = make_checkout(tmp_path)
    sha = head(checkout)
    state, results = run(checkout, repository=REPO, pull_request=7, head_sha=sha)

    assert state.is_completed(), state.message
    checks = by_name(results)
    assert list(checks) == ALL
    assert {n: r["status"] for n, r in checks.items() if n != "terraform"} == dict.fromkeys(ALL[:-2] + ["build"],
                                                                                             "passed")  # fmt: skip
    # the real binary when installed (fmt, init without backend, validate); else skipped, never "passed"
    terraform = checks["terraform"]
    if HAS_TERRAFORM:
        assert terraform["status"] == "passed"
    else:
        assert terraform["status"] == "skipped" and "terraform not installed" in terraform["output"]
    assert "Required test coverage of 80% reached" in checks["tests-backend"]["output"]

    # exactly: one status per check that ran, then the comment looked up and created
    posted = [(m, p) for m, p, _ in github.requests]
    ran = [n for n in ALL if n != "terraform" or HAS_TERRAFORM]
    assert posted == [("POST", f"/repos/{REPO}/statuses/{sha}")] * len(ran) + [
        ("GET", f"/repos/{REPO}/issues/7/comments?per_page=100&page=1"),
        ("POST", f"/repos/{REPO}/issues/7/comments"),
    ]
    assert [s["context"] for s in github.statuses] == [f"opcd/{n}" for n in ran]
    assert {s["state"] for s in github.statuses} == {"success"}
    assert github.authorization == {"Bearer ghs_test_token"}
    [comment] = github.comments.values()
    assert comment["body"].startswith(
        "<!-- opcd:pr-validation -->\n### opcd PR validation: **all required checks passed**"
    )
    assert re.search(r"\| backend tests, coverage ≥ 80% \| ✅ passed \| \d+\.\d+s \|", comment["body"])
    assert ("terraform fmt and validate: skipped — terraform not installed" in comment["body"]) != HAS_TERRAFORM

    # a second run on the same PR (only two quick checks this time) edits that comment
    add_validation(checkout, 'skip = ["tests-backend", "tests-worker", "types", "node-frontend", "bandit", "build",'
                             ' "terraform"]\n')  # fmt: skip
    git(checkout, "commit", "-qam", "second push")  # what is checked is the commit, never the working tree
    github.requests.clear()
    sha = head(checkout)
    state, results = run(checkout, repository=REPO, pull_request=7, head_sha=sha)
    assert state.is_completed() and [r["name"] for r in results] == ["lint", "secrets"]
    assert [(m, p) for m, p, _ in github.requests][-2:] == [
        ("GET", f"/repos/{REPO}/issues/7/comments?per_page=100&page=1"),
        ("PATCH", f"/repos/{REPO}/issues/comments/1000"),
    ]
    assert len(github.comments) == 1 and "| ruff (lint and format) |" in github.comments[1000]["body"]


PLANTED_TEST = """

def test_planted_failure() -> None:
    assert 1 + 1 == 3, "planted"
"""

BRANCHES = [f"    if kind == {i!r}:\n        return {str(i)!r}" for i in range(40)]
UNTESTED_CODE = "\n".join(["", "", "def untested(kind: int) -> str:", *BRANCHES, "    return 'none'", ""])


def test_each_planted_problem_is_reported_by_its_check(
    tmp_path: Path, github: GitHubStub, prefect_server: None
) -> None:
    checkout = make_checkout(tmp_path, 'skip = ["node-frontend", "types", "build", "terraform"]\n')
    source = checkout / "examples" / "outreachpass"
    with (source / "backend" / "tests" / "test_app.py").open("a") as tests:
        tests.write(PLANTED_TEST)  # a failing test
    with (source / "worker" / "worker.py").open("a") as module:
        module.write(UNTESTED_CODE)  # coverage under the floor
    (source / "worker" / "settings.py").write_text(
        "import os\n\nAWS_ACCESS_KEY_ID = 'AKIAQ3EGXZPLRY7VN4HT'\n"  # a committed key, and an unused import
    )
    git(checkout, "add", "-A")
    git(checkout, "commit", "-qm", "planted")

    state, results = run(checkout, repository=REPO, pull_request=8, head_sha=head(checkout))

    assert state.is_failed()
    assert state.message == "required check(s) failed: tests-backend, tests-worker, lint, secrets"
    checks = by_name(results)
    assert (
        "test_planted_failure" in checks["tests-backend"]["output"] and "1 failed" in checks["tests-backend"]["output"]
    )
    assert "Required test coverage of 80% not reached" in checks["tests-worker"]["output"]
    assert "F401" in checks["lint"]["output"] and "settings.py" in checks["lint"]["output"]
    assert "examples/outreachpass/worker/settings.py:3: AWS Access Key" in checks["secrets"]["output"]
    assert "AKIAQ3EGXZPLRY7VN4HT" not in str(results) + str(github.requests)  # the secret itself is never shown
    assert checks["bandit"]["status"] == "passed"
    failures = {s["context"]: s["state"] for s in github.statuses}
    assert failures["opcd/tests-backend"] == failures["opcd/lint"] == "failure"
    [comment] = github.comments.values()
    assert (
        "**4 required check(s) failed**" in comment["body"]
        and "<summary>secret scan (detect-secrets): failed" in comment["body"]
    )


def test_checks_run_in_parallel_and_a_hung_one_is_stopped(tmp_path: Path, prefect_server: None) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    skip = '", "'.join(n for n in ALL if n != "secrets")
    checkout = make_checkout(
        tmp_path,
        f'skip = ["{skip}"]\ntimeouts = {{ hang = "1s" }}\noptional = ["slow"]\n'
        "commands = { hang = \"python3 -c 'import time; time.sleep(60)'\","
        " slow = \"python3 -c 'import time; time.sleep(2)'\" }\n",
    )

    state, results = run(checkout)

    assert state.is_failed() and state.message == "required check(s) failed: hang"
    checks = by_name(results)
    assert checks["hang"]["status"] == "timed-out" and "stopped after the 1s limit" in checks["hang"]["output"]
    assert checks["slow"]["status"] == "passed" and checks["secrets"]["status"] == "passed"
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
        )
    spans = {r.name: (r.start_time, r.end_time) for r in runs if r.name.startswith("check ")}
    assert set(spans) == {"check secrets", "check hang", "check slow"}
    hang, slow = spans["check hang"], spans["check slow"]
    assert hang[0] < slow[1] and slow[0] < hang[1]  # the two overlapped in time


def test_opcd_validate_prints_the_table(
    tmp_path: Path, prefect_server: None, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Also: without a terraform binary on PATH the Terraform check is skipped, and says why."""
    from cli.main import main

    skip = '", "'.join(n for n in ALL if n not in ("lint", "terraform"))
    checkout = make_checkout(tmp_path, f'skip = ["{skip}"]\n')
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # git, but no terraform (it lives in /usr/local/bin if at all)
    assert main(["validate", str(checkout)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^lint\s+passed\s+\d+\.\ds$", out, re.M)
    assert re.search(r"^terraform\s+skipped", out, re.M) and "all required checks passed" in out

    with (checkout / "examples" / "outreachpass" / "worker" / "worker.py").open("a") as module:
        module.write("\nimport base64\n")
    assert main(["validate", str(checkout)]) == 1
    captured = capsys.readouterr()
    assert re.search(r"^lint\s+failed", captured.out, re.M) and "F401" in captured.out
    assert "error: required check(s) failed: lint" in captured.err
