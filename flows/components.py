"""Which flow deploys a component: its own (deploy-backend, deploy-worker, deploy-frontend), else its kind's
(deploy-lambda, deploy-apprunner, deploy-ecs: every ECS component); and the body those flows run."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flows import ecs_deploy, frontend_deploy, lambda_deploy
from opcd.config import Config
from tasks.ledger import Record


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


def deploy_body(config: Config, component: str) -> Callable[..., Record]:
    """What ``component``'s deploy flow runs: ``body(component, environment, version, git_sha, config_path,
    accept_alarms=None, notify=True, planned=None)``, its lock, ledger records, checks and rollback included."""
    kind = config.component(component).kind
    if kind == "ecs":
        return ecs_deploy.run_ecs_deploy
    if kind == "apprunner":
        return frontend_deploy.deploy_apprunner
    return lambda_deploy.deploy_lambda


def bakes(config: Config, component: str, environment: str) -> bool:
    """Whether ``component``'s deploy to ``environment`` bakes a Lambda traffic split (canary or linear):
    ``opcd promote|abort`` then address that deploy through its own flow run."""
    return config.component(component).kind == "lambda" and config.environment(environment).strategy(component).gradual
