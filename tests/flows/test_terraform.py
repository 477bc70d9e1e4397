"""terraform-plan and terraform-apply against the sandbox's bucket, GitHub's stand-in and the Terraform stand-in."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.commits import commit, committed
from tests.conftest import TERRAFORM_STANDIN as STANDIN
from tests.conftest import Project, start_in_thread, wait_for_pending
from tests.conftest import write_terraform_root as write_root
from tests.github_stub import GitHubStub
from tests.tasks.test_terraform import FIRST

SHA1, SHA2 = "1111111aaaaaaa", "2222222bbbbbbb"
REPO = "outreachpass/outreachpass"


@pytest.fixture
def github(monkeypatch: pytest.MonkeyPatch) -> Iterator[GitHubStub]:
    stub = GitHubStub().start()
    monkeypatch.setenv("GITHUB_TOKEN", "ghs_test_token")
    monkeypatch.setenv("GITHUB_API_URL", stub.url)
    yield stub
    stub.stop()


def infra(project: Project) -> Path:
    return project.root / "src" / "terraform"


def configure(project: Project, resources: dict[str, Any]) -> None:
    write_root(infra(project), resources, replace_on=["function_name"])


def applied_everywhere(project: Project, resources: dict[str, Any]) -> None:
    """Bring both environments' state to ``resources`` with the wrapper itself (the starting point)."""
    from opcd.config import load_config
    from tasks.terraform import workspace

    configure(project, resources)
    config = load_config(project.config_path)
    for env in ("dev", "prod"):
        with workspace(config, env, lambda line: None) as tf:
            tf.init()
            if tf.plan(plan := project.root / f"start-{env}.tfplan"):
                tf.apply(plan)


def pending_changes(project: Project, env: str) -> bool:
    from opcd.config import load_config
    from tasks.terraform import workspace

    with workspace(load_config(project.config_path), env, lambda line: None) as tf:
        tf.init()
        return tf.plan(project.root / f"check-{env}.tfplan")


def stored_plans(project: Project) -> list[str]:
    listed = project.client("s3").list_objects_v2(Bucket="outreachpass-artifacts", Prefix="terraform/plans/")
    return [item["Key"] for item in listed.get("Contents", [])]


def commands(log: Path, subcommand: str) -> list[list[str]]:
    """The argv of each ``terraform SUBCOMMAND`` the stand-in ran, from its TF_STANDIN_LOG."""
    argvs = [json.loads(line)["argv"] for line in log.read_text().splitlines()]
    return [argv for argv in argvs if argv[0] == subcommand]


def aws_calls(test: str) -> list[dict[str, Any]]:
    """The AWS calls the product made during ``test``, as the suite records them to prove the IAM policies."""
    from opcd.iam import RECORD_ENV
    from tests.iam_proof import load

    if not os.environ.get(RECORD_ENV):
        pytest.skip("AWS calls are not recorded (--aws-policy-check=off)")
    return [c for c in load(Path(os.environ[RECORD_ENV])) if (c.get("test") or "").endswith(f"::{test}")]


CHANGED = {
    **{k: v for k, v in FIRST.items() if k != "aws_sqs_queue.legacy"},
    "aws_lambda_function.api": {"function_name": "op-api-${environment}", "memory_size": 512},
    "aws_apprunner_service.web": {"service_name": "op-web-${environment}"},
}


def test_the_plan_is_one_pr_comment_updated_in_place(
    project: Project, prefect_server: None, github: GitHubStub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.terraform import terraform_plan

    # given: both environments applied, then a change that adds, changes and destroys
    applied_everywhere(project, FIRST)
    configure(project, CHANGED)
    calls = tmp_path / "terraform-calls.jsonl"
    monkeypatch.setenv("TF_STANDIN_LOG", str(calls))

    # when: the PR is planned (store=True is the default: a pull request's plan is not stored all the same)
    result = terraform_plan(pull_request=7, repository=REPO, git_sha=SHA1, config_path=str(project.config_path))
    assert result["comment"] == "created"

    # then: one comment, destroys first
    assert [p["environment"] for p in result["plans"]] == ["dev", "prod"]
    (comment,) = github.comments.values()
    body = comment["body"]
    assert "<!-- opcd:terraform-plan -->" in body and f"`{SHA1[:12]}`" in body
    assert ":warning: **This plan destroys resources in dev, prod.**" in body
    assert body.index("aws_sqs_queue.legacy") < body.index("aws_apprunner_service.web")
    assert "#### prod: 1 to add, 1 to change, 1 to destroy" in body
    # only shown: nothing kept for terraform-apply, the state read without its lock, every call as read
    assert result["stored"] is False and stored_plans(project) == []
    plans = commands(calls, "plan")
    assert len(plans) == 2 and all("-lock=false" in argv for argv in plans), plans
    assert not any(a.startswith("-lock-timeout") for argv in plans for a in argv)
    assert {c["role"] for c in aws_calls("test_the_plan_is_one_pr_comment_updated_in_place")} <= {"read"}

    # when: the next push changes the plan
    configure(project, {**CHANGED, "aws_sns_topic.alerts": {"name": "op-alerts"}})
    again = terraform_plan(pull_request=7, repository=REPO, git_sha=SHA2, config_path=str(project.config_path))

    # then: the same comment is edited, not a second one posted
    assert again["comment"] == "updated"
    assert len(github.comments) == 1
    (comment,) = github.comments.values()
    assert f"`{SHA2[:12]}`" in comment["body"] and "aws_sns_topic.alerts" in comment["body"]
    assert any(method == "PATCH" for method, _, _ in github.requests)


def test_apply_uses_dev_saved_plan_then_prod_after_approval(
    project: Project, prefect_server: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.terraform import terraform_apply, terraform_plan
    from tasks.approval import answer, find_waiting

    applied_everywhere(project, FIRST)
    configure(project, CHANGED)
    sha = committed(project)  # the change merged: a commit on main, which terraform-apply takes
    terraform_plan(git_sha=sha, config_path=str(project.config_path))
    calls = tmp_path / "terraform-calls.jsonl"
    monkeypatch.setenv("TF_STANDIN_LOG", str(calls))

    run = start_in_thread(terraform_apply, git_sha=sha, config_path=str(project.config_path))
    waiting = wait_for_pending(run)
    assert waiting["environment"] == "prod"
    assert "1 to add, 1 to change, 1 to destroy" in waiting["description"]
    # dev was applied from the reviewed plan file itself, without planning again
    argv = [json.loads(line)["argv"] for line in calls.read_text().splitlines()]
    assert [a[0] for a in argv] == ["init", "apply"]
    assert Path(argv[1][-1]).name == "dev.tfplan"
    assert not pending_changes(project, "dev")
    assert pending_changes(project, "prod")  # prod waits

    answer(find_waiting(waiting["id"]), True, "alice", "reviewed in the PR")
    state = run.result(timeout=120)
    assert state.is_completed(), state.message
    result = state.result()
    assert result["dev"] == result["prod"] == "applied: 1 to add, 1 to change, 1 to destroy"
    assert not pending_changes(project, "prod")


def test_prod_is_refused_when_its_plan_changed_since_review(project: Project, prefect_server: None) -> None:
    from flows.terraform import terraform_apply, terraform_plan
    from tasks.approval import answer, find_waiting

    applied_everywhere(project, FIRST)
    configure(project, CHANGED)
    sha = committed(project)
    terraform_plan(git_sha=sha, config_path=str(project.config_path))

    run = start_in_thread(terraform_apply, git_sha=sha, config_path=str(project.config_path))
    waiting = wait_for_pending(run)
    # while prod waits, prod's state moves on (applied from elsewhere): its plan is no longer what was reviewed
    configure(project, {**CHANGED, "aws_sns_topic.alerts": {"name": "op-alerts"}})
    commit(project.root, "the topic, applied to prod by hand")
    from opcd.config import load_config
    from tasks.terraform import workspace

    with workspace(load_config(project.config_path), "prod", lambda line: None) as tf:
        tf.init()
        assert tf.plan(by_hand := project.root / "by-hand.tfplan")
        tf.apply(by_hand)
    answer(find_waiting(waiting["id"]), True, "bob", "looks fine")
    state = run.result(timeout=120)

    assert state.is_failed()
    assert "prod's plan changed since it was reviewed" in str(state.message)
    assert state.result(raise_on_failure=False)["prod"].startswith("failed: prod's plan changed since it was reviewed")
    # prod untouched by the run: still as applied by hand (the reviewed change would destroy the topic)
    assert not pending_changes(project, "prod")
    configure(project, CHANGED)
    assert pending_changes(project, "prod")


def test_apply_without_a_reviewed_plan_is_refused(project: Project, prefect_server: None) -> None:
    sha = committed(project)
    code, out, err = project.cli("terraform", "apply", "--git-sha", sha)
    assert code == 2
    assert f"no reviewed Terraform plan '{sha}' for dev" in err
    assert "run terraform-plan with the same git_sha first" in err


def test_a_missing_terraform_binary_is_one_clear_line(project: Project, prefect_server: None) -> None:
    project.set_config(f'binary = "{STANDIN}"', 'binary = "no-such-terraform"')
    code, out, err = project.cli("terraform", "plan", "--env", "dev")
    assert code == 2
    assert err.strip().splitlines() == [err.strip()]  # one line
    assert "'no-such-terraform' not found on PATH — install Terraform" in err


def test_cli_plan_prints_each_environment(project: Project, prefect_server: None) -> None:
    configure(project, FIRST)
    sha = committed(project)  # a stored plan is made with deploy credentials: only of a commit on main
    code, out, err = project.cli("terraform", "plan", "--git-sha", sha)
    assert code == 0, err
    assert "dev: 4 to add, 0 to change, 0 to destroy" in out
    assert "prod: 4 to add, 0 to change, 0 to destroy" in out
    assert f"saved as plan {sha}" in out
    # kept for terraform-apply: that takes the deploy role, and its writes are attributed to it
    assert sorted(stored_plans(project)) == [
        f"terraform/plans/{sha}/{env}/{name}" for env in ("dev", "prod") for name in ("plan.tfplan", "summary.json")
    ]
    puts = [c for c in aws_calls("test_cli_plan_prints_each_environment") if c["operation"] == "PutObject"]
    assert len(puts) == 4 and {c["role"] for c in puts} == {"deploy"}


def test_cli_plan_no_store_only_shows_the_plan(
    project: Project, prefect_server: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(project, FIRST)
    sha = committed(project)
    calls = tmp_path / "terraform-calls.jsonl"
    monkeypatch.setenv("TF_STANDIN_LOG", str(calls))
    code, out, err = project.cli("terraform", "plan", "--git-sha", sha, "--no-store")
    assert code == 0, err
    assert "dev: 4 to add, 0 to change, 0 to destroy" in out
    assert "not stored (shown only)" in out and "saved as plan" not in out
    assert stored_plans(project) == []
    plans = commands(calls, "plan")
    assert len(plans) == 2 and all("-lock=false" in argv for argv in plans), plans
    assert {c["role"] for c in aws_calls("test_cli_plan_no_store_only_shows_the_plan")} <= {"read"}
    # and terraform-apply finds nothing it could apply
    code, out, err = project.cli("terraform", "apply", "--git-sha", sha)
    assert code == 2 and f"no reviewed Terraform plan '{sha}' for dev" in err


def test_apply_refuses_an_environment_in_another_account_before_applying_any(
    project: Project, prefect_server: None
) -> None:
    from flows.terraform import terraform_apply, terraform_plan
    from opcd.errors import InputError

    # given: reviewed plans for both, and prod's account is not the one the credentials reach
    applied_everywhere(project, FIRST)
    configure(project, CHANGED)
    sha = committed(project)
    terraform_plan(git_sha=sha, config_path=str(project.config_path))
    project.set_config("[environments.prod]\n", '[environments.prod]\naccount_id = "222222222222"\n')

    # when / then: refused up front; not even dev, which comes first, was applied
    with pytest.raises(InputError, match="AWS account 123456789012 .* is not prod's account 222222222222"):
        terraform_apply(git_sha=sha, config_path=str(project.config_path))
    assert pending_changes(project, "dev") and pending_changes(project, "prod")


@pytest.mark.parametrize("sha", ["abc1234\n", "abc\uff11234", "HEAD"])
def test_a_plan_id_is_a_whole_ascii_sha(sha: str) -> None:
    from flows.terraform import plan_id_of
    from opcd.errors import InputError

    assert plan_id_of(SHA1) == SHA1 and plan_id_of(None) == "latest"
    with pytest.raises(InputError, match="is not a commit sha"):
        plan_id_of(sha)
