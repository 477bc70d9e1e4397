"""Create in the sandbox what Terraform creates in a real account for the configured environments."""

from __future__ import annotations

import io
import json
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from opcd.aws import new_client
from opcd.config import Config, EcsComponent
from opcd.iam import access_role, service_name
from opcd.iam import ecs_services as named_ecs_services

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

    def client(service: str, url: str = endpoint_url, region: str = config.project.region) -> Any:
        return new_client(service, region, ("testing", "testing"), url)

    iam = client("iam")
    buckets = {config.project.artifact_bucket: config.project.region}  # the project's own: the ledger's
    for env_name in config.environments:
        for region in config.regions(env_name):
            buckets.setdefault(config.bucket_for(env_name, region), region)
    for bucket, region in buckets.items():
        seed_bucket(config, client("s3", region=region), region, bucket)
    role_arn = iam.create_role(RoleName=ROLE_NAME, AssumeRolePolicyDocument=json.dumps(_TRUST))["Role"]["Arn"]
    gateway: dict[str, str] = {}
    for env_name, env in config.environments.items():
        for region in config.regions(env_name):
            lam, cw, sm = (client(s, region=region) for s in ("lambda", "cloudwatch", "secretsmanager"))
            database_url = f"sqlite:///{(data_dir / f'{config.project.name}-{env_name}.db').resolve()}"
            if env.database_secret:
                sm.create_secret(Name=config.database_secret(env_name, region), SecretString=database_url)
            for comp_name in env.functions:
                comp = config.lambda_component(comp_name)
                function_name = config.function_name(comp_name, env_name, region)
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
                if public := config.health_url(comp_name, env_name, region):
                    parts = urlsplit(public)
                    where = "" if region == config.project.region else f"@{region}"  # the gateway's region
                    gateway[f"{parts.scheme}://{parts.netloc}"] = f"{endpoint_url}/_gateway/{function_name}{where}"
            for alarm in config.alarm_names(env_name, region):
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
    gateway.update(seed_ecs(client, endpoint_url, ecs_services(config), config.project.region))
    ecs_regions = {config.project.region} | {s.region for s in ecs_services(config)}
    for ecs_comp in config.components.values():  # an ECS component's ECR repository, as for App Runner's
        if isinstance(ecs_comp, EcsComponent):  # in each region of an ECS service: its images are that region's
            for region in sorted(ecs_regions):
                ecr = client("ecr", region=region)
                ecr.create_repository(repositoryName=ecs_comp.repository, imageTagMutability="MUTABLE")
    if config.notifications.email is not None:  # SES sends only from a verified identity
        client("ses").verify_email_identity(EmailAddress=config.notifications.email.sender)
    return gateway


def seed_bucket(config: Config, s3: Any, region: str, bucket: str) -> None:
    """An artifact bucket in ``region`` with the retention rules Terraform gives it (the lambda deploys keep
    their own in place too)."""
    if region == "us-east-1":
        s3.create_bucket(Bucket=bucket)
    else:
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region})
    s3.put_bucket_lifecycle_configuration(
        Bucket=bucket,
        LifecycleConfiguration={"Rules": [
            {"ID": f"opcd-retention-{name}", "Filter": {"Prefix": f"{name}/"}, "Status": "Enabled",
             "Expiration": {"Days": config.project.artifact_retention_days}}
            for name in config.components
        ]},
    )  # fmt: skip


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


@dataclass(frozen=True)
class EcsSeed:
    """An ECS service as Terraform creates it for a component of ``kind = "ecs"`` in one environment."""

    environment: str
    component: str
    cluster: str
    service: str
    container: str  # the container whose image a deploy changes
    health: str | None = None  # the environment's health URL of the component (in its region)
    region: str = "us-east-1"  # the service's region: one of its environment's


def ecs_services(config: Config) -> list[EcsSeed]:
    """The ECS services the configuration names: ``environments.ENV.ecs.COMPONENT`` (cluster, service) in each
    region of ENV, the component's ``container`` (default: its name) and health URL there."""
    return [
        EcsSeed(
            env,
            component,
            cluster,
            service,
            config.ecs_container(component),
            config.health_url(component, env, region),
            region,
        )  # fmt: skip
        for env, region, component, cluster, service in named_ecs_services(config)
    ]


def seed_ecs(
    client: Callable[..., Any], endpoint_url: str, services: list[EcsSeed], home: str = "us-east-1"
) -> dict[str, str]:
    """Clusters, task and execution roles, a task definition and a service (Fargate, 2 tasks, behind a load
    balancer, circuit breaker on) running AWS's public sample image per ECS service, in its region. Returns
    gateway entries: the health URL's origin → the service's URL in the sandbox (``/_ecs/CLUSTER/SERVICE``;
    ``…/SERVICE@REGION`` in another region than the sandbox's, ``home``)."""
    from sandbox.registry import PUBLIC_PLACEHOLDER

    if not services:
        return {}
    iam = client("iam")
    trust = json.loads(json.dumps(_TRUST))
    trust["Statement"][0]["Principal"] = {"Service": "ecs-tasks.amazonaws.com"}
    gateway: dict[str, str] = {}
    for region, cluster in sorted({(s.region, s.cluster) for s in services}):
        client("ecs", region=region).create_cluster(clusterName=cluster)
    roles: dict[str, str] = {}  # IAM is global: a service of the same name in several regions shares its roles
    for seeded in services:
        ecs = client("ecs", region=seeded.region)
        for kind in ("task", "execution"):  # opcd.iam scopes iam:PassRole to {service}-task and {service}-execution
            name = f"{seeded.service}-{kind}"
            if name not in roles:
                roles[name] = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
        definition = ecs.register_task_definition(
            family=seeded.service,
            taskRoleArn=roles[f"{seeded.service}-task"],
            executionRoleArn=roles[f"{seeded.service}-execution"],
            networkMode="awsvpc",
            requiresCompatibilities=["FARGATE"],
            cpu="256",
            memory="512",
            containerDefinitions=[{
                "name": seeded.container, "image": PUBLIC_PLACEHOLDER, "essential": True,
                "portMappings": [{"containerPort": 8080, "protocol": "tcp"}],
            }],
        )["taskDefinition"]  # fmt: skip
        ecs.create_service(
            cluster=seeded.cluster,
            serviceName=seeded.service,
            taskDefinition=definition["taskDefinitionArn"],
            desiredCount=2,
            launchType="FARGATE",
            loadBalancers=[{
                "targetGroupArn": f"arn:aws:elasticloadbalancing:{ecs.meta.region_name}:123456789012:targetgroup/"
                f"{seeded.service[:26]}/0123456789abcdef",
                "containerName": seeded.container, "containerPort": 8080,
            }],
            deploymentConfiguration={"deploymentCircuitBreaker": {"enable": True, "rollback": True}},
            tags=[{"key": "opcd:component", "value": seeded.component}],
        )  # fmt: skip
        if seeded.health:
            parts = urlsplit(seeded.health)
            where = "" if seeded.region == home else f"@{seeded.region}"  # the stand-in's region of the service
            local = f"{endpoint_url}/_ecs/{seeded.cluster}/{seeded.service}{where}"
            gateway[f"{parts.scheme}://{parts.netloc}"] = local
    return gateway
