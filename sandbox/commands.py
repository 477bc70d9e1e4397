"""``opcd sandbox up|down|env``."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import threading
import time
from pathlib import Path

from opcd.aws import SANDBOX_FILE, AwsTarget
from opcd.config import load_config
from sandbox.seed import ecs_services, seed
from sandbox.server import (
    SandboxServer,
    export_lines,
    is_running,
    read_info,
    start_detached,
    stop_running,
    write_info,
)


def config_digest(config_path: Path) -> str:
    return hashlib.sha256(config_path.read_bytes()).hexdigest()


def up(config_path: Path, port: int, detach: bool) -> int:
    config = load_config(config_path)
    state = config.state_dir()
    info = read_info(state)
    if is_running(info):
        assert info is not None
        print(f"sandbox already running at {info['aws_endpoint_url']} (pid {info['pid']})")
        if info.get("config_sha256") != config_digest(config_path):
            print(
                "warning: it was seeded from another version of opcd.toml; `opcd sandbox down` and up again to reseed"
            )
        return 0
    if detach:
        info = start_detached(config_path.resolve(), state, port)
        print(f"sandbox running at {info['aws_endpoint_url']} (pid {info['pid']}); stop it with `opcd sandbox down`")
        return 0
    work = state / "sandbox"
    shutil.rmtree(work, ignore_errors=True)  # moto starts empty, so does everything beside it
    server = SandboxServer(work, config.project.region, port).start()
    started = time.perf_counter()
    gateway = seed(config, server.url, work, server.apprunner_url)

    info = {
        **server.info(),
        "region": config.project.region,
        "pid": os.getpid(),
        "gateway": gateway,
        "config": str(config_path.resolve()),
        "config_sha256": config_digest(config_path),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    write_info(state, info)
    print(f"sandbox listening on {server.url} (seeded in {time.perf_counter() - started:.1f}s)")
    for env_name, env in config.environments.items():
        for comp, fn in env.functions.items():
            print(f"  {env_name}: Lambda {fn} ({comp}) with alias live → version 1")
    for env_name, env in config.environments.items():
        for comp, ref in env.services.items():
            print(f"  {env_name}: App Runner {ref} ({comp}) running AWS's sample image until the first deploy")
    for seeded in ecs_services(config):
        print(f"  {seeded.environment}: ECS {seeded.cluster}/{seeded.service} ({seeded.component}) running AWS's"
              " sample image until the first deploy")  # fmt: skip
    if server.registry.missing:
        print(f"  warning: {server.registry.missing}; images cannot be pushed")
    else:
        print(f"  ECR registry: {server.images.registry_host} (docker-registry behind ECR's credentials)")
    for origin, local in gateway.items():
        print(f"  gateway: {origin} → {local}")
    print(f"endpoints written to {state / SANDBOX_FILE}; Ctrl-C or `opcd sandbox down` stops it")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    server.stop()
    current = read_info(state)
    if current and current.get("pid") == info["pid"]:
        (state / SANDBOX_FILE).unlink(missing_ok=True)
    print("sandbox stopped")
    return 0


def down(config_path: Path) -> int:
    print(stop_running(load_config(config_path).state_dir()))
    return 0


def env(config_path: Path) -> int:
    info = read_info(load_config(config_path).state_dir())
    if not is_running(info):
        print("# no sandbox is running: start one with `opcd sandbox up --detach`")
        return 1
    assert info is not None
    print("\n".join(export_lines(info)))
    return 0


def fire_rule(config_path: Path, name: str, environment: str) -> int:
    """Deliver a rule's event to its Lambda targets through the invoke shim (moto never does)."""
    import json
    import uuid

    config = load_config(config_path)
    config.environment(environment)
    info = read_info(config.state_dir())
    if not is_running(info):
        print("no sandbox is running: start one with `opcd sandbox up --detach`")
        return 1
    assert info is not None
    target = AwsTarget("sandbox", info["region"], info["aws_endpoint_url"], credentials=("testing", "testing"))
    events, lam = target.client("events"), target.client("lambda")
    full = name if name.startswith(f"{config.project.name}-") else f"{config.project.name}-{environment}-{name}"
    try:
        rule = events.describe_rule(Name=full)
    except events.exceptions.ResourceNotFoundException:
        print(f"no rule {full!r} in the sandbox: deploy the component that owns it first")
        return 2
    envelope = {
        "version": "0", "id": str(uuid.uuid4()), "detail-type": "Scheduled Event", "source": "aws.events",
        "account": "123456789012", "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "region": info["region"], "resources": [rule["Arn"]], "detail": {},
    }  # fmt: skip
    targets = events.list_targets_by_rule(Rule=full)["Targets"]
    if not targets:
        print(f"rule {full} has no targets")
        return 1
    failed = False
    for rule_target in targets:
        payload = rule_target.get("Input") or json.dumps(envelope)
        result = lam.invoke(FunctionName=rule_target["Arn"], Payload=payload.encode())
        body = result["Payload"].read().decode()
        failed |= "FunctionError" in result
        state = f"FAILED ({result['FunctionError']})" if "FunctionError" in result else "ok"
        print(f"fired {full} → {rule_target['Arn']} (version {result.get('ExecutedVersion')}): {state}")
        print(f"  {body}")
    return 1 if failed else 0
