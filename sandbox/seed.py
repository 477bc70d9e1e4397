"""Create in the sandbox what Terraform creates in a real account for the configured environments."""

from __future__ import annotations

import io
import json
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from opcd.aws import new_client
from opcd.config import Config
from opcd.iam import access_role, service_name

ROLE_NAME = "opcd-sandbox-lambda"
_TRUST = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}],
}
# What a function holds before its first deploy: Terraform creates it with a placeholder package.
_PLACEHOLDER = """import json


def {func}(event, context):
    return {{"statusCode": 200, "headers": {{"content-type": "application/json"}},
            "body": json.dumps({{"status": "ok", "version": "placeholder"}})}}
"""


def placeholder_zip(handler: str) -> bytes:
    module, _, func = handler.rpartition(".")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(module.replace(".", "/") + ".py", _PLACEHOLDER.format(func=func))
    return buffer.getvalue()


def seed(config: Config, endpoint_url: str, data_dir: Path, apprunner_url: str | None = None) -> dict[str, str]:
    """Create bucket, role, functions (version 1 + ``live``), alarms, secrets, ECR repositories and
    App Runner services (running AWS's public sample image, as Terraform would create them).

    Returns the gateway map: public origin of each health URL → local gateway URL.
    """

    def client(service: str, url: str = endpoint_url) -> Any:
        return new_client(service, config.project.region, ("testing", "testing"), url)

    s3, iam, lam, cw, sm = (client(s) for s in ("s3", "iam", "lambda", "cloudwatch", "secretsmanager"))
    if config.project.region == "us-east-1":
        s3.create_bucket(Bucket=config.project.artifact_bucket)
    else:
        s3.create_bucket(
            Bucket=config.project.artifact_bucket,
            CreateBucketConfiguration={"LocationConstraint": config.project.region},
        )
    # the retention rules Terraform gives the bucket (the lambda deploys keep their own in place too)
    s3.put_bucket_lifecycle_configuration(
        Bucket=config.project.artifact_bucket,
        LifecycleConfiguration={"Rules": [
            {"ID": f"opcd-retention-{name}", "Filter": {"Prefix": f"{name}/"}, "Status": "Enabled",
             "Expiration": {"Days": config.project.artifact_retention_days}}
            for name in config.components
        ]},
    )  # fmt: skip
    role_arn = iam.create_role(RoleName=ROLE_NAME, AssumeRolePolicyDocument=json.dumps(_TRUST))["Role"]["Arn"]
    gateway: dict[str, str] = {}
    for env_name, env in config.environments.items():
        database_url = f"sqlite:///{(data_dir / f'{config.project.name}-{env_name}.db').resolve()}"
        if env.database_secret:
            sm.create_secret(Name=env.database_secret, SecretString=database_url)
        for comp_name, function_name in env.functions.items():
            comp = config.lambda_component(comp_name)
            lam.create_function(
                FunctionName=function_name,
                Runtime=comp.runtime,
                Role=role_arn,
                Handler=comp.handler,
                Code={"ZipFile": placeholder_zip(comp.handler)},
                Timeout=15,
                MemorySize=256,
                Architectures=[comp.architecture],
                Environment={"Variables": {"APP_ENV": env_name, "DATABASE_URL": database_url}},
                Tags={"opcd:project": config.project.name, "opcd:component": comp_name},
            )
            version = lam.publish_version(FunctionName=function_name, Description="placeholder (terraform)")
            lam.create_alias(FunctionName=function_name, Name="live", FunctionVersion=version["Version"])
            if comp_name in env.health:
                parts = urlsplit(env.health[comp_name])
                gateway[f"{parts.scheme}://{parts.netloc}"] = f"{endpoint_url}/_gateway/{function_name}"
        for alarm in env.alarms:
            cw.put_metric_alarm(
                AlarmName=alarm,
                Namespace="AWS/Lambda",
                MetricName="Errors",
                Statistic="Sum",
                Period=60,
                EvaluationPeriods=1,
                Threshold=1.0,
                ComparisonOperator="GreaterThanOrEqualToThreshold",
                TreatMissingData="notBreaching",
            )
            cw.set_alarm_state(AlarmName=alarm, StateValue="OK", StateReason="seeded by the sandbox")
    if apprunner_url is not None:
        gateway.update(seed_apprunner(config, client, apprunner_url))
    if config.notifications.email is not None:  # SES sends only from a verified identity
        client("ses").verify_email_identity(EmailAddress=config.notifications.email.sender)
    return gateway


def seed_apprunner(config: Config, client: Callable[..., Any], apprunner_url: str) -> dict[str, str]:
    """ECR repositories and App Runner services; wait until every service runs. Returns gateway entries."""
    from sandbox.registry import PUBLIC_PLACEHOLDER

    ecr, iam, apprunner = client("ecr"), client("iam"), client("apprunner", apprunner_url)
    components = {name: comp for name, comp in config.components.items() if comp.kind == "apprunner"}
    if not components:
        return {}
    trust = json.loads(json.dumps(_TRUST))
    trust["Statement"][0]["Principal"] = {"Service": "build.apprunner.amazonaws.com"}
    roles = {  # the ECR access role each service names (opcd.iam.access_role), as Terraform creates them
        (env_name, comp_name): access_role(config, comp_name, env_name).rpartition("/")[2]
        for env_name, env in config.environments.items()
        for comp_name in env.services
    }
    role_arns = {
        role: iam.create_role(RoleName=role, AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
        for role in sorted(set(roles.values()))
    }
    for comp in components.values():
        ecr.create_repository(repositoryName=comp.repository, imageTagMutability="MUTABLE")
    gateway: dict[str, str] = {}
    arns = []
    for env_name, env in config.environments.items():
        for comp_name, ref in env.services.items():
            name = service_name(ref)
            service = apprunner.create_service(
                ServiceName=name,
                SourceConfiguration={
                    "ImageRepository": {
                        "ImageIdentifier": PUBLIC_PLACEHOLDER,
                        "ImageRepositoryType": "ECR_PUBLIC",
                        "ImageConfiguration": {"Port": "8080"},
                    },
                    "AutoDeploymentsEnabled": False,
                    "AuthenticationConfiguration": {"AccessRoleArn": role_arns[roles[env_name, comp_name]]},
                },
                HealthCheckConfiguration={"Protocol": "TCP"},
                Tags=[
                    {"Key": "opcd:project", "Value": config.project.name},
                    {"Key": "opcd:component", "Value": comp_name},
                ],
            )["Service"]
            arns.append(service["ServiceArn"])
            local = f"{apprunner_url}/_services/{name}"
            gateway[f"https://{service['ServiceUrl']}"] = local
            if comp_name in env.health:
                parts = urlsplit(env.health[comp_name])
                gateway[f"{parts.scheme}://{parts.netloc}"] = local
    deadline = time.monotonic() + 60
    for arn in arns:
        while (status := apprunner.describe_service(ServiceArn=arn)["Service"]["Status"]) != "RUNNING":
            if status != "OPERATION_IN_PROGRESS" or time.monotonic() > deadline:
                raise RuntimeError(f"App Runner service {arn} did not start: {status}")
            time.sleep(0.05)
    return gateway
