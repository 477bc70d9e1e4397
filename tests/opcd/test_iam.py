"""The generated IAM policies, the evaluator and the checker that prove them against the recorded calls."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from botocore.config import Config as BotoConfig
from botocore.exceptions import EndpointConnectionError

from cli.main import main
from opcd.aws import new_client
from opcd.config import Config, load_config
from opcd.iam import ROLES, acting_as, policy, record_calls, render
from tests.conftest import ROOT
from tests.iam_proof import Request, allows, check, granted_actions, load, policies_of_configs, ran_whole_suite

CONFIG = load_config(ROOT / "opcd.toml")
POLICIES = {role: policy(CONFIG, role, account="*") for role in ROLES}
FN = "arn:aws:lambda:us-east-1:123456789012:function:"
RULE = "arn:aws:events:us-east-1:123456789012:rule/"
IAM_ROLE = "arn:aws:iam::123456789012:role/"
SECRET = "arn:aws:secretsmanager:us-east-1:1:secret:outreachpass/dev/database"  # pragma: allowlist secret


def call(service: str, operation: str, role: str = "deploy", **params: Any) -> dict[str, Any]:
    return {"service": service, "operation": operation, "params": params, "region": "us-east-1", "role": role}


def every_granted_call() -> list[dict[str, Any]]:
    """One call per action the policies grant, each as its role: what the test suite does, in small."""
    return [
        call("lambda", "GetAlias", FunctionName="outreachpass-api-dev", Name="live"),
        call("lambda", "GetFunctionConfiguration", FunctionName="outreachpass-api-dev", Qualifier="3"),
        call("lambda", "ListVersionsByFunction", FunctionName="outreachpass-api-prod"),
        call(
            "lambda",
            "UpdateFunctionCode",
            FunctionName="outreachpass-api-dev",
            S3Bucket="outreachpass-artifacts",
            S3Key="backend/v2/lambda.zip",
        ),  # fmt: skip
        call("lambda", "PublishVersion", FunctionName="outreachpass-api-dev"),
        call("lambda", "Invoke", FunctionName="outreachpass-worker-dev", Qualifier="4"),
        call("lambda", "UpdateAlias", FunctionName="outreachpass-api-prod", Name="live"),
        call("lambda", "GetPolicy", FunctionName="outreachpass-worker-dev", Qualifier="live"),
        call("lambda", "AddPermission", FunctionName="outreachpass-worker-dev", Qualifier="live"),
        call("lambda", "RemovePermission", FunctionName="outreachpass-worker-dev", Qualifier="live"),
        call("events", "PutRule", Name="outreachpass-dev-nightly-digest", Tags=[{"Key": "a", "Value": "b"}]),
        call("events", "DescribeRule", Name="outreachpass-dev-nightly-digest"),
        call("events", "ListTargetsByRule", Rule="outreachpass-dev-nightly-digest"),
        call("events", "PutTargets", Rule="outreachpass-dev-nightly-digest"),
        call("events", "RemoveTargets", Rule="outreachpass-dev-old"),
        call("events", "DeleteRule", Name="outreachpass-dev-old"),
        call("events", "ListRules", NamePrefix="outreachpass-dev-"),
        call(
            "events",
            "ListTagsForResource",
            ResourceARN="arn:aws:events:us-east-1:123456789012:rule/outreachpass-dev-old",
        ),
        call("s3", "HeadBucket", Bucket="outreachpass-artifacts"),
        call("s3", "GetBucketLifecycleConfiguration", Bucket="outreachpass-artifacts"),
        call("s3", "PutObject", Bucket="outreachpass-artifacts", Key="ledger/dev/backend/latest.json"),
        call("s3", "PutObject", Bucket="outreachpass-artifacts", Key="terraform/plans/abc/dev/plan.tfplan"),
        call("s3", "GetObject", Bucket="outreachpass-artifacts", Key="backend/v2/metadata.json"),
        call("cloudwatch", "DescribeAlarms", AlarmNames=["outreachpass-api-prod-errors"]),
        call("cloudwatch", "GetMetricData", MetricDataQueries=[]),
        call("secretsmanager", "GetSecretValue", SecretId="outreachpass/prod/database"),  # pragma: allowlist secret
        call("ses", "SendEmail", Source="deploys@outreachpass.example"),
        call("ecr", "GetAuthorizationToken"),
        call("ecr", "DescribeRepositories", repositoryNames=["outreachpass-frontend"]),
        call("ecr", "DescribeImages", repositoryName="outreachpass-frontend"),
        call("apprunner", "ListServices"),
        call("apprunner", "DescribeService", ServiceArn=SERVICE),
        call("apprunner", "ListOperations", ServiceArn=SERVICE),
        call("apprunner", "StartDeployment", ServiceArn=SERVICE),
        call("apprunner", "UpdateService", ServiceArn=SERVICE, SourceConfiguration=ACCESS_ROLE),
        call("sts", "GetCallerIdentity"),
    ] + [
        call("lambda", "GetAlias", "read", FunctionName="outreachpass-worker-prod", Name="live"),
        call("lambda", "GetFunctionConfiguration", "read", FunctionName="outreachpass-worker-prod"),
        call("lambda", "ListVersionsByFunction", "read", FunctionName="outreachpass-api-dev"),
        call("events", "DescribeRule", "read", Name="outreachpass-prod-nightly-digest"),
        call("events", "ListTargetsByRule", "read", Rule="outreachpass-prod-nightly-digest"),
        call("s3", "ListObjectsV2", "read", Bucket="outreachpass-artifacts", Prefix="ledger/dev/backend/"),
        call("s3", "GetBucketLifecycleConfiguration", "read", Bucket="outreachpass-artifacts"),
        call("s3", "GetObject", "read", Bucket="outreachpass-artifacts", Key="ledger/prod/worker/live.json"),
        call("cloudwatch", "DescribeAlarms", "read", AlarmNames=["outreachpass-api-dev-errors"]),
        call("ecr", "DescribeRepositories", "read", repositoryNames=["outreachpass-frontend"]),
        call("ecr", "DescribeImages", "read", repositoryName="outreachpass-frontend"),
        call("apprunner", "ListServices", "read"),
        call("apprunner", "DescribeService", "read", ServiceArn=SERVICE),
    ]


SERVICE = "arn:aws:apprunner:us-east-1:123456789012:service/outreachpass-web-dev/0123456789abcdef"
ACCESS_ROLE = {
    "ImageRepository": {"ImageIdentifier": "x"},
    "AuthenticationConfiguration": {"AccessRoleArn": "arn:aws:iam::123456789012:role/outreachpass-web-dev-ecr-access"},
}


def test_every_granted_action_called_as_its_role_passes() -> None:
    assert check(every_granted_call(), POLICIES) == []


def test_an_operation_added_without_policy_fails_and_is_named() -> None:
    calls = [*every_granted_call(), call("lambda", "DeleteFunction", FunctionName="outreachpass-api-dev")]
    assert check(calls, POLICIES) == [
        "lambda:DeleteFunction (as deploy) has no IAM mapping: add it to OPERATIONS in tests/iam_proof.py and,"
        " if the policy lacks it, to opcd/iam.py"
    ]


def test_a_mapped_operation_the_policy_does_not_grant_fails() -> None:
    # the deploy used to write the bucket's lifecycle rules: the deploy role may not
    calls = [*every_granted_call(), call("s3", "PutBucketLifecycleConfiguration", Bucket="outreachpass-artifacts")]
    (problem,) = check(calls, POLICIES)
    assert problem.startswith(
        "s3:PutLifecycleConfiguration on arn:aws:s3:::outreachpass-artifacts is not allowed by the deploy policy"
    )


def test_a_granted_action_nothing_called_fails() -> None:
    calls = [c for c in every_granted_call() if c["operation"] != "StartDeployment"]
    assert check(calls, POLICIES) == [
        "the deploy policy grants apprunner:StartDeployment, which no call needed: remove it from opcd/iam.py"
    ]


def test_metric_data_is_granted_to_deploy_only_where_a_canary_analysis_reads_it() -> None:
    metrics = Request("cloudwatch:GetMetricData", "*")
    assert allows(POLICIES["deploy"], metrics) and not allows(POLICIES["read"], metrics)
    environments = {
        name: env.model_copy(update={"bake": env.bake.model_copy(update={"analysis": None})})
        for name, env in CONFIG.environments.items()
    }
    without = CONFIG.model_copy(update={"environments": environments})
    assert not allows(policy(without, "deploy"), metrics)


def test_another_projects_function_is_not_allowed() -> None:
    calls = [*every_granted_call(), call("lambda", "UpdateAlias", FunctionName="billing-api-dev", Name="live")]
    (problem,) = check(calls, POLICIES)
    assert problem.startswith(f"lambda:UpdateAlias on {FN}billing-api-dev is not allowed by the deploy policy")


def test_the_read_role_changes_nothing() -> None:
    calls = [*every_granted_call(), call("lambda", "UpdateAlias", "read", FunctionName="outreachpass-api-dev")]
    assert len(check(calls, POLICIES)) == 1
    read = POLICIES["read"]
    s3_actions = {action for action in granted_actions(read) if action.startswith("s3:")}
    assert s3_actions == {"s3:GetLifecycleConfiguration", "s3:GetObject", "s3:ListBucket"}  # no write at all
    for request in (
        # pull requests' code runs with the read role: a plan it could keep, terraform-apply would apply
        Request("s3:PutObject", "arn:aws:s3:::outreachpass-artifacts/terraform/plans/abc/dev/plan.tfplan"),
        Request("s3:PutObject", "arn:aws:s3:::outreachpass-artifacts/ledger/dev/backend/latest.json"),
        Request("s3:PutObject", "arn:aws:s3:::outreachpass-artifacts/backend/v9/lambda.zip"),
        Request("lambda:InvokeFunction", f"{FN}outreachpass-api-dev:live"),
        Request("secretsmanager:GetSecretValue", f"{SECRET}-Ab12Cd"),
    ):  # fmt: skip
        assert not allows(read, request), request


def test_wildcards_scope_versions_secrets_and_rules() -> None:
    deploy = POLICIES["deploy"]
    assert allows(deploy, Request("secretsmanager:GetSecretValue", f"{SECRET}-Ab12Cd"))
    assert not allows(deploy, Request("secretsmanager:GetSecretValue", f"{SECRET}-other-Ab12Cd"))  # not six
    assert allows(deploy, Request("lambda:InvokeFunction", f"{FN}outreachpass-api-dev:7"))
    assert not allows(deploy, Request("lambda:InvokeFunction", f"{FN}outreachpass-api-dev2"))
    assert allows(deploy, Request("LAMBDA:invokefunction", f"{FN}outreachpass-api-dev"))  # actions ignore case
    assert not allows(deploy, Request("events:PutRule", "arn:aws:events:us-east-1:1:rule/outreachpass-qa-x"))
    other_region = "arn:aws:lambda:eu-west-1:1:function:outreachpass-api-dev"
    assert not allows(deploy, Request("lambda:UpdateFunctionCode", other_region))


def test_pass_role_only_to_app_runner_and_only_the_access_role() -> None:
    deploy = POLICIES["deploy"]
    role = "arn:aws:iam::123456789012:role/outreachpass-web-dev-ecr-access"
    to_apprunner = (("iam:PassedToService", "apprunner.amazonaws.com"),)
    assert allows(deploy, Request("iam:PassRole", role, to_apprunner))
    assert not allows(deploy, Request("iam:PassRole", role, (("iam:PassedToService", "lambda.amazonaws.com"),)))
    assert not allows(deploy, Request("iam:PassRole", role))  # no context: the condition does not hold
    assert not allows(deploy, Request("iam:PassRole", "arn:aws:iam::123456789012:role/admin", to_apprunner))
    calls = [*every_granted_call(), call("apprunner", "UpdateService", ServiceArn=SERVICE, SourceConfiguration={
        "AuthenticationConfiguration": {"AccessRoleArn": "arn:aws:iam::123456789012:role/admin"}})]  # fmt: skip
    (problem,) = check(calls, POLICIES)
    assert problem.startswith("iam:PassRole on arn:aws:iam::123456789012:role/admin is not allowed")


def test_the_ledger_is_never_deleted_nor_expired_even_beside_a_broader_policy() -> None:
    broader = {"Statement": [*POLICIES["deploy"]["Statement"], {"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
    assert not allows(broader, Request("s3:DeleteObject", "arn:aws:s3:::outreachpass-artifacts/ledger/dev/x.json"))
    assert not allows(broader, Request("s3:PutLifecycleConfiguration", "arn:aws:s3:::outreachpass-artifacts"))
    assert allows(broader, Request("s3:DeleteObject", "arn:aws:s3:::outreachpass-artifacts/backend/v1/lambda.zip"))
    for document in POLICIES.values():  # and neither role is granted either
        assert not allows(document, Request("s3:PutLifecycleConfiguration", "arn:aws:s3:::outreachpass-artifacts"))
        assert not allows(document, Request("s3:DeleteObject", "arn:aws:s3:::outreachpass-artifacts/backend/v1/x"))


@pytest.mark.parametrize("role", ROLES)
def test_the_committed_policies_are_current(role: str) -> None:
    path = ROOT / "deploy" / "iam" / f"{role}-policy.json"
    refresh = f"opcd iam policy --role {role} > deploy/iam/{role}-policy.json"
    assert path.is_file(), f"{path.relative_to(ROOT)} is missing: run `{refresh}`"
    assert path.read_text() == render(policy(CONFIG, role)), f"{path.relative_to(ROOT)} is stale: run `{refresh}`"


def test_the_cli_prints_the_policy_and_refuses_a_bad_config(tmp_path: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        assert main(["--config", str(ROOT / "opcd.toml"), "iam", "policy", "--role", "read"]) == 0
        assert main(["--config", str(tmp_path / "missing.toml"), "iam", "policy"]) == 2
    assert json.loads(out.getvalue()) == policy(CONFIG, "read")
    assert err.getvalue().startswith("error: config file") and err.getvalue().count("\n") == 1


def test_names_come_from_the_config_and_account_ids_from_the_environments() -> None:
    data = CONFIG.model_dump(exclude={"root"}, by_alias=True)
    data["project"]["name"] = "billing"
    data["environments"]["dev"]["functions"]["backend"] = "billing-api-dev"
    data["environments"]["dev"]["services"]["frontend"] = "arn:aws:apprunner:us-east-1:111:service/web/abc"
    data["components"]["frontend"]["access_role"] = "arn:aws:iam::111:role/pull-images-{environment}"
    text = render(policy(Config.model_validate({**data, "root": ROOT}), "deploy"))
    assert f"{FN.replace('123456789012', '*')}billing-api-dev:*" in text and 'outreachpass-api-dev"' not in text
    assert "rule/billing-dev-*" in text and '"arn:aws:apprunner:us-east-1:111:service/web/abc"' in text
    assert '"arn:aws:iam::111:role/pull-images-dev"' in text and '"arn:aws:iam::111:role/pull-images-prod"' in text
    assert render(policy(CONFIG, "deploy", account="222")).count(":222:") > 10


def test_recorded_calls_carry_their_role(tmp_path: Path) -> None:
    client = new_client(
        "lambda", "us-east-1", ("a", "b"), "http://127.0.0.1:1", BotoConfig(retries={"max_attempts": 1})
    )
    record_calls(client, str(tmp_path))
    for role in ("deploy", "read"):
        with acting_as(role, "opcd.toml"), pytest.raises(EndpointConnectionError):  # type: ignore[arg-type]
            client.get_alias(FunctionName="outreachpass-api-dev", Name="live")
    with pytest.raises(EndpointConnectionError):
        client.invoke(FunctionName="outreachpass-api-dev", Qualifier="3", Payload=b"{}")
    calls = load(tmp_path)
    assert [(c["operation"], c["role"]) for c in calls] == [("GetAlias", "deploy"), ("GetAlias", "read"),
                                                           ("Invoke", "deploy")]  # fmt: skip
    assert calls[2]["params"] == {"FunctionName": "outreachpass-api-dev", "Qualifier": "3", "Payload": "<bytes>"}
    assert [c["config"] for c in calls] == [str(Path("opcd.toml").resolve())] * 2 + [None]


def test_a_call_is_checked_against_the_config_it_ran_with(tmp_path: Path) -> None:
    text = (ROOT / "opcd.toml").read_text().replace("[components.backend]", "[components.api]")
    text = text.replace('"examples/', f'"{ROOT}/examples/').replace('root = "examples', f'root = "{ROOT}/examples')
    for table in ("functions", "health", "traffic"):
        text = text.replace(f"{table} = {{ backend = ", f"{table} = {{ api = ")
    (tmp_path / "opcd.toml").write_text(text)
    renamed = call("s3", "PutObject", Bucket="outreachpass-artifacts", Key="api/v1/lambda.zip")
    calls = [*every_granted_call(), {**renamed, "config": str(tmp_path / "opcd.toml")}]

    def generate(path: str) -> dict[str, Any]:
        config = load_config(path)
        return {role: policy(config, role, account="*") for role in ROLES}

    assert check(calls, POLICIES, policies_of=policies_of_configs(POLICIES, generate)) == []
    (problem,) = check(calls, POLICIES)  # what ships has no api/ prefix
    assert problem.startswith("s3:PutObject on arn:aws:s3:::outreachpass-artifacts/api/v1/lambda.zip is not allowed")


# Community auditors' findings, each accepted for a reason: the deploy role's purpose, scoped.
ACCEPTED = {
    # the registry token skopeo pushes with; what it may push is the Repositories statement
    ("CREDENTIALS_EXPOSURE", ("ecr:getauthorizationtoken",)),
    # PassRole: one role, to App Runner only; Add/RemovePermission: EventBridge's on the project's live aliases
    ("PERMISSIONS_MANAGEMENT_ACTIONS", ("iam:passrole", "lambda:addpermission", "lambda:removepermission")),
    # deploying code is the role's job; the execution role is Terraform's and the deploy cannot change it
    ("PRIVILEGE_ESCALATION", ("lambda:updatefunctioncode",)),
}
# parliament warns at import (unclosed files, invalid escapes): it runs in its own interpreter
LINT = """
import json, os, sys
import parliament
from parliament import analyze_policy_string, enhance_finding, override_config
override_config(os.path.join(os.path.dirname(parliament.__file__), "community_auditors", "config_override.yaml"))
found = []
for path in sys.argv[1:]:
    for f in analyze_policy_string(open(path).read(), include_community_auditors=True).findings:
        f = enhance_finding(f)
        where = f.location if isinstance(f.location, dict) else {}
        actions = sorted(where.get("actions", []))
        found.append({"path": path, "issue": f.issue, "severity": f.severity, "actions": actions,
                      "detail": str(f.detail), "location": str(f.location)})
print(json.dumps(found))
"""


def test_parliament_finds_nothing_of_medium_severity_or_more_but_the_accepted() -> None:
    paths = [str(ROOT / "deploy" / "iam" / f"{role}-policy.json") for role in ROLES]
    answer = subprocess.run([sys.executable, "-W", "ignore", "-c", LINT, *paths], capture_output=True, text=True)
    assert answer.returncode == 0, answer.stderr
    findings = json.loads(answer.stdout)
    serious = [
        f for f in findings
        if f["severity"] in ("MEDIUM", "HIGH", "CRITICAL") and (f["issue"], tuple(f["actions"])) not in ACCEPTED
    ]  # fmt: skip
    assert serious == [], json.dumps(serious, indent=2)
    assert any(f["issue"] == "PRIVILEGE_ESCALATION" for f in findings)  # the community auditors did run


@pytest.mark.parametrize(
    ("source", "options", "stopped", "whole"),
    [
        (pytest.Config.ArgsSource.TESTPATHS, {}, None, True),  # `make test`
        (pytest.Config.ArgsSource.ARGS, {}, None, False),  # a path or a node id
        (pytest.Config.ArgsSource.TESTPATHS, {"keyword": "deploy"}, None, False),  # -k
        (pytest.Config.ArgsSource.TESTPATHS, {"markexpr": "not slow"}, None, False),  # -m
        (pytest.Config.ArgsSource.TESTPATHS, {"deselect": ["tests/x.py"]}, None, False),
        (pytest.Config.ArgsSource.TESTPATHS, {"lf": True}, None, False),
        (pytest.Config.ArgsSource.TESTPATHS, {}, "stopping after 1 failures", False),  # -x stopped it
    ],
)
def test_the_unused_grants_are_judged_only_after_the_whole_suite(
    source: Any, options: dict[str, Any], stopped: str | None, whole: bool
) -> None:
    option = SimpleNamespace(**{"keyword": "", "markexpr": "", "deselect": None, "lf": False, **options})
    config = SimpleNamespace(option=option, args_source=source, ArgsSource=pytest.Config.ArgsSource)
    assert ran_whole_suite(config, SimpleNamespace(shouldstop=stopped or False, shouldfail=False)) is whole


def test_each_region_of_an_environment_gets_its_functions_bucket_alarms_and_the_copy_between_buckets() -> None:
    regional = load_config(ROOT / "examples" / "outreachpass" / "opcd-regions.toml")
    policies = {role: policy(regional, role, account="*") for role in ROLES}
    west = "arn:aws:lambda:us-west-2:1:function:outreachpass-api-prod"
    copy = call(
        "s3", "CopyObject", Bucket="outreachpass-artifacts-us-west-2", Key="backend/v1/lambda.zip",
        CopySource={"Bucket": "outreachpass-artifacts-us-east-1", "Key": "backend/v1/lambda.zip"},
    )  # fmt: skip
    assert check([copy], policies, unused=False) == []
    stray = {**copy, "params": {**copy["params"], "Bucket": "someone-elses-bucket"}}
    (problem,) = check([stray], policies, unused=False)
    assert problem.startswith("s3:PutObject on arn:aws:s3:::someone-elses-bucket/backend/v1/lambda.zip is not allowed")
    deploy = policies["deploy"]
    assert allows(deploy, Request("lambda:UpdateFunctionCode", west))
    assert not allows(deploy, Request("lambda:UpdateFunctionCode", west.replace("-prod", "-dev")))  # dev: us-east-1
    assert allows(
        deploy,
        Request("cloudwatch:DescribeAlarms", "arn:aws:cloudwatch:us-west-2:1:alarm:outreachpass-api-prod-errors"),
    )
    assert allows(
        deploy,
        Request(
            "s3:PutObject", "arn:aws:s3:::outreachpass-artifacts-us-west-2/ledger/prod/us-west-2/backend/latest.json"
        ),
    )
    assert not allows(
        policies["read"], Request("s3:PutObject", "arn:aws:s3:::outreachpass-artifacts-us-west-2/backend/v1/lambda.zip")
    )


def test_an_ecs_service_in_each_region_of_an_environment_and_its_repository_there() -> None:
    regional = load_config(ROOT / "examples" / "outreachpass" / "opcd-ecs-regions.toml")
    policies = {role: policy(regional, role, account="*") for role in ROLES}
    deploy, read = policies["deploy"], policies["read"]
    west = "arn:aws:ecs:us-west-2:1:service/outreachpass-prod-us-west-2/outreachpass-web-ecs-prod"
    assert allows(deploy, Request("ecs:UpdateService", west))
    assert allows(deploy, Request("ecs:UpdateService", west.replace("us-west-2", "us-east-1")))
    assert allows(read, Request("ecs:DescribeServices", west)) and not allows(read, Request("ecs:UpdateService", west))
    assert not allows(deploy, Request("ecs:UpdateService", "arn:aws:ecs:us-west-2:1:service/outreachpass-dev/"
                                      "outreachpass-web-ecs-dev"))  # dev: us-east-1 only  # fmt: skip
    assert allows(deploy, Request("ecs:DescribeServiceDeployments", west.replace(":service/", ":service-deployment/")
                                  + "/abc"))  # fmt: skip
    for region in ("us-east-1", "us-west-2"):  # the image copied to each region's repository
        repository = f"arn:aws:ecr:{region}:1:repository/outreachpass-frontend"
        assert allows(deploy, Request("ecr:PutImage", repository)) and allows(
            read, Request("ecr:DescribeImages", repository)
        )
    source = "arn:aws:ecr:us-east-1:1:repository/outreachpass-frontend"  # the copy to us-west-2 pulls from it
    assert allows(deploy, Request("ecr:BatchGetImage", source)) and allows(
        deploy, Request("ecr:GetDownloadUrlForLayer", source)
    )
    assert not allows(read, Request("ecr:BatchGetImage", source))
    assert not allows(deploy, Request("ecr:PutImage", "arn:aws:ecr:eu-west-1:1:repository/outreachpass-frontend"))
