"""Which flow deploys a component: its own (deploy-backend, deploy-worker, deploy-frontend), else its kind's
(deploy-lambda, deploy-apprunner, deploy-ecs: every ECS component)."""

from __future__ import annotations

from typing import Any

from flows import ecs_deploy, frontend_deploy, lambda_deploy
from opcd.config import Config


def deploy_flow(config: Config, component: str) -> tuple[Any, dict[str, Any]]:
    """(the flow, the extra parameters it needs) for deploying ``component``."""
    named: dict[str, Any]
    if config.component(component).kind == "ecs":
        return ecs_deploy.deploy_ecs, {"component": component}
    if config.component(component).kind == "apprunner":
        named, generic = {"frontend": frontend_deploy.deploy_frontend}, frontend_deploy.deploy_apprunner_component
    else:
        named = {"backend": lambda_deploy.deploy_backend, "worker": lambda_deploy.deploy_worker}
        generic = lambda_deploy.deploy_lambda_component
    if component in named:
        return named[component], {}
    return generic, {"component": component}
