"""The Terraform wrapper against the stand-in executable (tests/terraform_standin/terraform).

No Terraform binary with providers can run here; the stand-in answers the same subcommands with
Terraform's documented exit codes and plan JSON, keeps a real state file and refuses stale plans.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from opcd.config import TerraformSettings
from opcd.errors import InputError
from tasks.terraform import (
    PlanSummary,
    Terraform,
    TerraformFailed,
    comment_body,
    find_binary,
    fingerprint,
    redact,
    secret_values,
    summarize_plan,
)
from tests.conftest import TERRAFORM_STANDIN as STANDIN
from tests.conftest import write_terraform_root as write_root


def terraform(tmp_path: Path, env: str = "dev", binary: str = str(STANDIN)) -> tuple[Terraform, list[str]]:
    lines: list[str] = []
    settings = TerraformSettings(root="infra", binary=binary)
    data = tmp_path / f"data-{env}"
    return Terraform(settings, tmp_path, env, lines.append, data), lines


FIRST = {
    "aws_s3_bucket.artifacts": {"bucket": "op-artifacts"},
    "aws_lambda_function.api": {"function_name": "op-api-${environment}", "memory_size": 256},
    "aws_cloudwatch_metric_alarm.errors": {"alarm_name": "op-api-${environment}-errors", "threshold": 5},
    "aws_sqs_queue.legacy": {"name": "op-legacy-${environment}"},
}


def test_missing_binary_names_what_to_install() -> None:
    with pytest.raises(InputError) as raised:
        find_binary("no-such-terraform-here")
    assert "'no-such-terraform-here' not found on PATH" in str(raised.value)
    assert "install Terraform" in str(raised.value) and "OpenTofu" in str(raised.value)


def test_plan_show_apply_with_adds_changes_and_a_destroy(tmp_path: Path) -> None:
    # given: a root applied once in dev
    write_root(tmp_path / "infra", FIRST, replace_on=["function_name"])
    tf, log = terraform(tmp_path)
    tf.init()
    first = tmp_path / "first.tfplan"
    assert tf.plan(first) is True
    summary = summarize_plan(tf.show_json(first), "dev")
    assert summary.counts() == "4 to add, 0 to change, 0 to destroy"
    assert "aws_lambda_function.api" in summary.add
    tf.apply(first)
    assert tf.plan(tmp_path / "again.tfplan") is False  # applied: no changes left

    # when: the configuration adds one resource, changes one and drops one
    resources = {k: v for k, v in FIRST.items() if k != "aws_sqs_queue.legacy"}
    resources["aws_lambda_function.api"] = {"function_name": "op-api-${environment}", "memory_size": 512}
    resources["aws_apprunner_service.web"] = {"service_name": "op-web-${environment}"}
    write_root(tmp_path / "infra", resources, replace_on=["function_name"])
    second = tmp_path / "second.tfplan"
    assert tf.plan(second) is True
    plan = tf.show_json(second)
    summary = summarize_plan(plan, "dev")

    # then: the summary says what the plan's JSON says, and the markdown puts the destroy first
    assert plan["format_version"].startswith("1.")
    assert (summary.add, summary.change, summary.destroy) == (
        ["aws_apprunner_service.web"], ["aws_lambda_function.api"], ["aws_sqs_queue.legacy"]
    )  # fmt: skip
    assert summary.counts() == "1 to add, 1 to change, 1 to destroy"
    text = summary.markdown()
    assert text.index("aws_sqs_queue.legacy") < text.index("aws_apprunner_service.web")
    assert "**destroy**" in text
    assert any("$ terraform plan" in line and f"-out={second}" in line for line in log)
    tf.apply(second)
    assert tf.plan(tmp_path / "third.tfplan") is False


def test_a_replacement_counts_as_an_add_and_a_destroy(tmp_path: Path) -> None:
    write_root(tmp_path / "infra", FIRST, replace_on=["function_name"])
    tf, _ = terraform(tmp_path)
    tf.init()
    tf.plan(first := tmp_path / "a.tfplan")
    tf.apply(first)
    resources = {**FIRST, "aws_lambda_function.api": {"function_name": "renamed", "memory_size": 256}}
    write_root(tmp_path / "infra", resources, replace_on=["function_name"])
    tf.plan(second := tmp_path / "b.tfplan")
    summary = summarize_plan(tf.show_json(second), "dev")
    assert summary.replace == ["aws_lambda_function.api"]
    assert summary.counts() == "1 to add, 0 to change, 1 to destroy"
    assert "replace" in summary.markdown()


def test_a_stale_saved_plan_is_refused_and_the_state_kept(tmp_path: Path) -> None:
    write_root(tmp_path / "infra", FIRST)
    tf, log = terraform(tmp_path)
    tf.init()
    tf.plan(older := tmp_path / "older.tfplan")
    tf.plan(newer := tmp_path / "newer.tfplan")
    tf.apply(newer)
    with pytest.raises(TerraformFailed, match="apply .* failed with exit code 1 in dev"):
        tf.apply(older)
    assert any("Saved plan is stale" in line for line in log)
    assert tf.plan(tmp_path / "check.tfplan") is False  # the newer apply stands


def test_a_held_state_lock_stops_a_locking_plan_and_not_a_read_only_one(tmp_path: Path) -> None:
    write_root(tmp_path / "infra", FIRST)
    lines: list[str] = []
    settings = TerraformSettings(root="infra", binary=str(STANDIN), lock_timeout=0)
    tf = Terraform(settings, tmp_path, "dev", lines.append, tmp_path / "data-dev")
    tf.init()
    # given: dev's state lock held elsewhere (an apply running), as the local backend records it
    held = tmp_path / "terraform-state" / ".dev.tfstate.lock.info"
    held.parent.mkdir(parents=True, exist_ok=True)
    held.write_text(json.dumps({"ID": "5f1c-held", "Operation": "OperationTypeApply", "Who": "deploy@worker"}))

    # then: a plan that would lock waits its -lock-timeout and fails, naming the holder
    with pytest.raises(TerraformFailed, match="plan .* failed with exit code 1 in dev"):
        tf.plan(tmp_path / "locked.tfplan")
    assert any("Error acquiring the state lock" in line for line in lines)
    assert any("ID: 5f1c-held" in line for line in lines)
    # a plan only shown takes no lock (a read-only role cannot): it plans, and the holder's lock stays
    assert tf.plan(tmp_path / "shown.tfplan", lock=False) is True
    assert any("-lock=false" in line and "$ terraform plan" in line for line in lines)
    assert held.is_file() and json.loads(held.read_text())["ID"] == "5f1c-held"
    # released: a locking plan takes the lock and gives it back
    held.unlink()
    assert tf.plan(tmp_path / "again.tfplan") is True
    assert not held.exists()


def test_environments_keep_their_own_state(tmp_path: Path) -> None:
    write_root(tmp_path / "infra", FIRST)
    dev, _ = terraform(tmp_path, "dev")
    prod, _ = terraform(tmp_path, "prod")
    dev.init()
    prod.init()
    dev.plan(plan := tmp_path / "dev.tfplan")
    dev.apply(plan)
    assert dev.plan(tmp_path / "dev2.tfplan") is False
    assert prod.plan(prod_plan := tmp_path / "prod.tfplan") is True  # prod's state is still empty
    after = summarize_plan(prod.show_json(prod_plan), "prod")
    assert len(after.add) == 4


def test_fmt_validate_and_a_failing_plan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_root(tmp_path / "infra", FIRST, unformatted=["main.tf"])
    tf, log = terraform(tmp_path)
    assert tf.fmt_check() == ["main.tf"]
    tf.validate()
    tf.init()
    monkeypatch.setenv("TF_STANDIN_FAIL", "plan")
    with pytest.raises(TerraformFailed, match="plan .* failed with exit code 1 in dev"):
        tf.plan(tmp_path / "x.tfplan")
    assert any("injected failure" in line for line in log)


def test_init_needs_the_environments_backend_config(tmp_path: Path) -> None:
    write_root(tmp_path / "infra", FIRST)
    (tmp_path / "infra" / "backends" / "dev.hcl").unlink()
    tf, _ = terraform(tmp_path)
    with pytest.raises(InputError, match="backend config .*dev.hcl does not exist"):
        tf.init()


def test_secret_values_never_reach_the_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # given: a secret variable, and a "terraform" that prints it (echo stands in for a careless provider)
    monkeypatch.setenv("TF_VAR_db_password", "hunter2-very-secret")
    (tmp_path / "infra").mkdir()
    tf, log = terraform(tmp_path, binary="echo")
    tf.run("connecting", "with", os.environ["TF_VAR_db_password"])
    assert log[-1].endswith("connecting with ***")
    assert not any("hunter2" in line for line in log)
    assert "hunter2-very-secret" in secret_values()
    assert redact("a hunter2-very-secret b", ["hunter2-very-secret"]) == "a *** b"


def test_an_unknown_plan_format_is_refused() -> None:
    with pytest.raises(TerraformFailed, match="format_version '2.0'"):
        summarize_plan({"format_version": "2.0", "resource_changes": []}, "dev")


def test_the_fingerprint_follows_what_the_plan_does() -> None:
    def change(after: dict[str, Any]) -> dict[str, Any]:
        return {"address": "aws_x.y", "change": {"actions": ["update"], "before": {"a": 1}, "after": after}}

    noop = {"address": "aws_x.z", "change": {"actions": ["no-op"], "before": {}, "after": {}}}
    one = {"format_version": "1.2", "resource_changes": [change({"a": 2}), noop]}
    same = {"format_version": "1.2", "resource_changes": [noop, change({"a": 2})]}
    other = {"format_version": "1.2", "resource_changes": [change({"a": 3})]}
    assert fingerprint(one) == fingerprint(same) != fingerprint(other)


def test_the_comment_says_destroys_first() -> None:
    quiet = PlanSummary("dev")
    risky = PlanSummary("prod", add=["aws_a.b"], destroy=["aws_c.d"])
    body = comment_body("<!-- m -->", [quiet, risky], "0123456789abcdef", "http://ui/run")
    assert body.startswith("<!-- m -->")
    assert ":warning: **This plan destroys resources in prod.**" in body
    assert body.index("aws_c.d") < body.index("aws_a.b")
    assert "#### dev: no changes" in body and "`0123456789ab`" in body
