"""The proof of opcd's IAM policies: every AWS call the product made in the tests, checked against them.

``opcd.iam.record_calls`` writes one JSON line per call of a client from opcd's factory (never the
sandbox's seeding nor the tests' own clients, which use ``opcd.aws.new_client`` directly). Here each
call becomes the IAM requests AWS would authorize (action, resource ARN, condition context) through
:data:`OPERATIONS`, and each request is evaluated against the role's generated policy by a small
evaluator: Allow and Deny statements, ``*``/``?`` wildcards in Action and Resource, and the conditions
the policies use (``StringEquals`` on ``iam:PassedToService`` and ``ecs:CreateAction``). Two kinds of failure:
a call the policy does not allow, and an action the policy grants that no call needed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from email.utils import parseaddr
from pathlib import Path
from typing import Any

ACCOUNT = "123456789012"  # moto's account: the sandbox's ARNs carry it

# Granted, needed, and used outside botocore: skopeo pushes (and copies between regions) images through the registry
# API with the token of ecr:GetAuthorizationToken (the sandbox's registry asks for no IAM).
OUTSIDE_BOTOCORE = {
    "ecr:BatchCheckLayerAvailability": "skopeo checks which layers the repository has",
    "ecr:InitiateLayerUpload": "skopeo uploads a layer",
    "ecr:UploadLayerPart": "skopeo uploads a layer",
    "ecr:CompleteLayerUpload": "skopeo uploads a layer",
    "ecr:PutImage": "skopeo writes the manifest under each tag",
    "ecr:BatchGetImage": "skopeo reads the manifest it copies from another region's repository",
    "ecr:GetDownloadUrlForLayer": "skopeo reads the layers it copies from another region's repository",
}


@dataclass(frozen=True)
class Request:
    """One authorization AWS makes for a call."""

    action: str
    resource: str
    context: tuple[tuple[str, str], ...] = ()


Params = dict[str, Any]
Mapper = Callable[[Params, str], list[Request]]


def _function(params: Params, region: str, qualified: bool = True) -> str:
    name = str(params["FunctionName"])
    arn = name if name.startswith("arn:") else f"arn:aws:lambda:{region}:{ACCOUNT}:function:{name}"
    return f"{arn}:{params['Qualifier']}" if qualified and params.get("Qualifier") else arn


def _lambda(action: str, qualified: bool = True) -> Mapper:
    return lambda p, region: [Request(f"lambda:{action}", _function(p, region, qualified))]


def _update_code(p: Params, region: str) -> list[Request]:
    needs = [Request("lambda:UpdateFunctionCode", _function(p, region, False))]
    if p.get("S3Bucket"):  # Lambda reads the package from S3 with the caller's permissions
        needs.append(Request("s3:GetObject", f"arn:aws:s3:::{p['S3Bucket']}/{p['S3Key']}"))
    return needs


def _bucket(action: str) -> Mapper:
    return lambda p, region: [Request(f"s3:{action}", f"arn:aws:s3:::{p['Bucket']}")]


def _object(action: str) -> Mapper:
    return lambda p, region: [Request(f"s3:{action}", f"arn:aws:s3:::{p['Bucket']}/{p['Key']}")]


def _rule(action: str, key: str) -> Mapper:
    def needs(p: Params, region: str) -> list[Request]:
        name = str(p[key])
        arn = name if name.startswith("arn:") else f"arn:aws:events:{region}:{ACCOUNT}:rule/{name}"
        extra = [Request("events:TagResource", arn)] if p.get("Tags") else []  # PutRule with tags
        return [Request(f"events:{action}", arn), *extra]

    return needs


def _everything(action: str) -> Mapper:
    """An action without resource-level permissions."""
    return lambda p, region: [Request(action, "*")]


def _alarms(p: Params, region: str) -> list[Request]:
    names = p.get("AlarmNames") or []
    if not names:
        return [Request("cloudwatch:DescribeAlarms", f"arn:aws:cloudwatch:{region}:{ACCOUNT}:alarm:*")]
    return [Request("cloudwatch:DescribeAlarms", f"arn:aws:cloudwatch:{region}:{ACCOUNT}:alarm:{n}") for n in names]


def _secret(p: Params, region: str) -> list[Request]:
    name = str(p["SecretId"])  # by name: its ARN ends with "-" and six random characters
    arn = name if name.startswith("arn:") else f"arn:aws:secretsmanager:{region}:{ACCOUNT}:secret:{name}-Xy12Zq"
    return [Request("secretsmanager:GetSecretValue", arn)]


def _send_email(p: Params, region: str) -> list[Request]:
    address = parseaddr(str(p["Source"]))[1]
    return [Request("ses:SendEmail", f"arn:aws:ses:{region}:{ACCOUNT}:identity/{address}")]


def _repositories(action: str, key: str) -> Mapper:
    def needs(p: Params, region: str) -> list[Request]:
        names = p[key] if isinstance(p[key], list) else [p[key]]
        return [Request(f"ecr:{action}", f"arn:aws:ecr:{region}:{ACCOUNT}:repository/{n}") for n in names]

    return needs


def _service(action: str) -> Mapper:
    return lambda p, region: [Request(f"apprunner:{action}", str(p["ServiceArn"]))]


def _update_service(p: Params, region: str) -> list[Request]:
    needs = [Request("apprunner:UpdateService", str(p["ServiceArn"]))]
    passed = ("iam:PassedToService", "apprunner.amazonaws.com")
    roles = [
        (p.get("SourceConfiguration") or {}).get("AuthenticationConfiguration", {}).get("AccessRoleArn"),
        (p.get("InstanceConfiguration") or {}).get("InstanceRoleArn"),
    ]
    return needs + [Request("iam:PassRole", role, (passed,)) for role in roles if role]


def _ecs_service(action: str) -> Mapper:
    def needs(p: Params, region: str) -> list[Request]:
        names = p["services"] if isinstance(p.get("services"), list) else [p["service"]]
        cluster = str(p.get("cluster") or "default").rpartition("/")[2]
        return [
            Request(
                f"ecs:{action}", n if n.startswith("arn:") else f"arn:aws:ecs:{region}:{ACCOUNT}:service/{cluster}/{n}"
            )
            for n in names
        ]

    return needs


def _service_deployments(p: Params, region: str) -> list[Request]:
    return [Request("ecs:DescribeServiceDeployments", str(arn)) for arn in p["serviceDeploymentArns"]]


def _register_task_definition(p: Params, region: str) -> list[Request]:
    needs = [Request("ecs:RegisterTaskDefinition", "*")]
    if p.get("tags"):  # tagging on create: ecs:TagResource on the new revision, with ecs:CreateAction
        arn = f"arn:aws:ecs:{region}:{ACCOUNT}:task-definition/{p['family']}:*"
        needs.append(Request("ecs:TagResource", arn, (("ecs:CreateAction", "RegisterTaskDefinition"),)))
    passed = ("iam:PassedToService", "ecs-tasks.amazonaws.com")
    roles = [p.get("taskRoleArn"), p.get("executionRoleArn")]
    return needs + [Request("iam:PassRole", str(role), (passed,)) for role in roles if role]


def _copy_object(p: Params, region: str) -> list[Request]:
    """CopyObject reads its source object and writes its destination (another region's bucket: the same ARNs)."""
    source = p["CopySource"]
    read = f"{source['Bucket']}/{source['Key']}" if isinstance(source, dict) else str(source).lstrip("/")
    return [
        Request("s3:GetObject", f"arn:aws:s3:::{read}"),
        Request("s3:PutObject", f"arn:aws:s3:::{p['Bucket']}/{p['Key']}"),
    ]


def _no_permission(p: Params, region: str) -> list[Request]:
    return []


# (botocore service name, operation) → the IAM requests of one call.
OPERATIONS: dict[tuple[str, str], Mapper] = {
    ("lambda", "GetAlias"): _lambda("GetAlias", qualified=False),
    ("lambda", "UpdateAlias"): _lambda("UpdateAlias", qualified=False),
    ("lambda", "GetFunction"): _lambda("GetFunction"),
    ("lambda", "GetFunctionConfiguration"): _lambda("GetFunctionConfiguration"),
    ("lambda", "UpdateFunctionCode"): _update_code,
    ("lambda", "PublishVersion"): _lambda("PublishVersion", qualified=False),
    ("lambda", "Invoke"): _lambda("InvokeFunction"),
    ("lambda", "ListVersionsByFunction"): _lambda("ListVersionsByFunction", qualified=False),
    ("lambda", "GetPolicy"): _lambda("GetPolicy"),
    ("lambda", "AddPermission"): _lambda("AddPermission"),
    ("lambda", "RemovePermission"): _lambda("RemovePermission"),
    ("s3", "HeadBucket"): _bucket("ListBucket"),
    ("s3", "ListObjectsV2"): _bucket("ListBucket"),
    ("s3", "GetBucketLifecycleConfiguration"): _bucket("GetLifecycleConfiguration"),
    ("s3", "PutBucketLifecycleConfiguration"): _bucket("PutLifecycleConfiguration"),
    ("s3", "GetObject"): _object("GetObject"),
    ("s3", "HeadObject"): _object("GetObject"),
    ("s3", "PutObject"): _object("PutObject"),
    ("s3", "CopyObject"): _copy_object,
    ("s3", "DeleteObject"): _object("DeleteObject"),
    ("events", "DescribeRule"): _rule("DescribeRule", "Name"),
    ("events", "PutRule"): _rule("PutRule", "Name"),
    ("events", "DeleteRule"): _rule("DeleteRule", "Name"),
    ("events", "ListTargetsByRule"): _rule("ListTargetsByRule", "Rule"),
    ("events", "PutTargets"): _rule("PutTargets", "Rule"),
    ("events", "RemoveTargets"): _rule("RemoveTargets", "Rule"),
    ("events", "ListTagsForResource"): _rule("ListTagsForResource", "ResourceARN"),
    ("events", "ListRules"): _everything("events:ListRules"),
    ("cloudwatch", "DescribeAlarms"): _alarms,
    ("cloudwatch", "GetMetricData"): _everything("cloudwatch:GetMetricData"),
    ("secretsmanager", "GetSecretValue"): _secret,
    ("ses", "SendEmail"): _send_email,
    ("ecr", "DescribeRepositories"): _repositories("DescribeRepositories", "repositoryNames"),
    ("ecr", "DescribeImages"): _repositories("DescribeImages", "repositoryName"),
    ("ecr", "GetAuthorizationToken"): _everything("ecr:GetAuthorizationToken"),
    ("apprunner", "ListServices"): _everything("apprunner:ListServices"),
    ("apprunner", "DescribeService"): _service("DescribeService"),
    ("apprunner", "ListOperations"): _service("ListOperations"),
    ("apprunner", "StartDeployment"): _service("StartDeployment"),
    ("apprunner", "UpdateService"): _update_service,
    ("ecs", "DescribeServices"): _ecs_service("DescribeServices"),
    ("ecs", "UpdateService"): _ecs_service("UpdateService"),
    ("ecs", "ListServiceDeployments"): _ecs_service("ListServiceDeployments"),
    ("ecs", "DescribeServiceDeployments"): _service_deployments,
    ("ecs", "DescribeTaskDefinition"): _everything("ecs:DescribeTaskDefinition"),
    ("ecs", "RegisterTaskDefinition"): _register_task_definition,
    # GetCallerIdentity needs no permission: AWS answers it for any valid credentials.
    ("sts", "GetCallerIdentity"): _no_permission,
    # AssumeRole is made by the caller's own identity to obtain the deploy role, not by the deploy role:
    # the role's trust policy governs it, not the policies here.
    ("sts", "AssumeRole"): _no_permission,
}


def _pattern(text: str, ignore_case: bool) -> re.Pattern[str]:
    body = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in text)
    return re.compile(f"^{body}$", re.IGNORECASE | re.DOTALL if ignore_case else re.DOTALL)


def _as_list(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def _conditions_hold(condition: dict[str, dict[str, Any]], context: dict[str, str]) -> bool:
    for operator, tests in condition.items():
        if operator not in ("StringEquals", "StringLike"):
            raise ValueError(f"the evaluator does not know the condition operator {operator}")
        for key, wanted in tests.items():
            value = context.get(key)
            if value is None:
                return False
            if operator == "StringEquals" and value not in _as_list(wanted):
                return False
            if operator == "StringLike" and not any(_pattern(w, False).match(value) for w in _as_list(wanted)):
                return False
    return True


def _applies(statement: dict[str, Any], request: Request) -> bool:
    if not any(_pattern(a, True).match(request.action) for a in _as_list(statement["Action"])):
        return False
    if not any(_pattern(r, False).match(request.resource) for r in _as_list(statement["Resource"])):
        return False
    return _conditions_hold(statement.get("Condition", {}), dict(request.context))


def allows(policy: dict[str, Any], request: Request) -> bool:
    """True when an Allow statement applies and no Deny does (an explicit Deny wins)."""
    applying = [s["Effect"] for s in policy["Statement"] if _applies(s, request)]
    return "Allow" in applying and "Deny" not in applying


def granted_actions(policy: dict[str, Any]) -> set[str]:
    return {a for s in policy["Statement"] if s["Effect"] == "Allow" for a in _as_list(s["Action"])}


def load(directory: Path) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []
    for path in sorted(directory.glob("calls-*.jsonl")):
        calls += [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return calls


def _where(call: dict[str, Any]) -> str:
    parts = [f"as {call['role']}"]
    if call.get("flow"):
        parts.append(f"in flow {call['flow']}")
    if call.get("test"):
        parts.append(f"in {call['test']}")
    return ", ".join(parts)


Policies = dict[str, dict[str, Any]]


def check(
    calls: Iterable[dict[str, Any]],
    policies: Policies,
    unused: bool = True,
    policies_of: Callable[[dict[str, Any]], Policies] | None = None,
) -> list[str]:
    """Every problem: a call no mapping knows, a request its role's policy denies, an action granted unused.

    ``policies_of(call)`` gives the policies of the configuration the call ran with (a test may rename
    a component); ``policies``, what ships, is the default and what the unused grants are read from.
    """
    problems: dict[str, None] = {}  # ordered, each problem once
    used: dict[str, set[str]] = {role: set() for role in policies}
    for call in calls:
        own = policies_of(call) if policies_of else policies
        mapper = OPERATIONS.get((call["service"], call["operation"]))
        if mapper is None:
            problems[
                f"{call['service']}:{call['operation']} ({_where(call)}) has no IAM mapping: add it to"
                " OPERATIONS in tests/iam_proof.py and, if the policy lacks it, to opcd/iam.py"
            ] = None
            continue
        for request in mapper(call["params"], call["region"]):
            used[call["role"]].add(request.action)
            if not allows(own[call["role"]], request):
                problems[
                    f"{request.action} on {request.resource} is not allowed by the {call['role']} policy"
                    f" ({call['service']}:{call['operation']} {_where(call)}): grant it in opcd/iam.py"
                    " if the role should make it"
                ] = None
    if unused:
        for role, document in policies.items():
            for action in sorted(granted_actions(document) - used[role] - set(OUTSIDE_BOTOCORE)):
                problems[f"the {role} policy grants {action}, which no call needed: remove it from opcd/iam.py"] = None
    return list(problems)


def ran_whole_suite(config: Any, session: Any) -> bool:
    """No selection (paths, -k, -m, --deselect, --lf) and no early stop (-x, --maxfail)."""
    option = config.option
    selected = (
        config.args_source != config.ArgsSource.TESTPATHS
        or bool(option.keyword or option.markexpr or getattr(option, "deselect", None))
        or bool(getattr(option, "lf", False))
    )
    return not selected and not (session.shouldstop or session.shouldfail)


def policies_of_configs(shipped: Policies, generate: Callable[[str], Policies]) -> Callable[[dict[str, Any]], Policies]:
    """``policies_of`` for :func:`check`: each call's own opcd.toml (when it still reads), else ``shipped``."""
    cache: dict[str | None, Policies] = {None: shipped}

    def policies_of(call: dict[str, Any]) -> Policies:
        path = call.get("config")
        if path not in cache:
            try:
                cache[path] = generate(path)
            except Exception:  # gone or broken (a test of bad input): what ships
                cache[path] = shipped
        return cache[path]

    return policies_of
