"""``opcd sandbox up|down|env|fire-rule|traffic``."""

from __future__ import annotations

import hashlib
import ipaddress
import json
import math
import os
import shutil
import signal
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from opcd.aws import SANDBOX_FILE, AwsTarget
from opcd.config import load_config, parse_duration
from opcd.errors import InputError
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
        print(f"  {seeded.environment} {seeded.region}: ECS {seeded.cluster}/{seeded.service} ({seeded.component})"
              " running AWS's sample image until the first deploy")  # fmt: skip
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


MAX_RPS = 200.0  # the traffic generator's bounds: it drives the sandbox, it is no load-testing tool
MAX_SECONDS = 600.0
WORKERS = 4  # requests in flight at once at most: a slow sandbox slows the rate, it does not pile up


def loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class TrafficReport:
    """What the traffic generator saw: answers by status, latencies, versions that served them."""

    sent: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, status: str, version: str | None, seconds: float) -> None:
        with self.lock:
            self.statuses[status] = self.statuses.get(status, 0) + 1
            if version:
                self.versions[version] = self.versions.get(version, 0) + 1
            self.latencies.append(seconds * 1000)

    def summary(self, elapsed: float) -> str:
        ordered = sorted(self.latencies)

        def pct(p: float) -> str:
            return f"{ordered[max(0, math.ceil(len(ordered) * p / 100) - 1)]:.0f}ms" if ordered else "-"

        statuses = ", ".join(f"{k}: {v}" for k, v in sorted(self.statuses.items()))
        versions = ", ".join(f"version {k}: {v}" for k, v in sorted(self.versions.items())) or "not said"
        return (
            f"{self.sent} requests in {elapsed:.1f}s ({self.sent / max(elapsed, 0.001):.1f}/s); answers {statuses};"
            f" latency p50 {pct(50)}, p95 {pct(95)}, p99 {pct(99)}; served by Lambda {versions}"
        )


def traffic(config_path: Path, url: str, rps: float, duration: str) -> int:
    """``opcd sandbox traffic URL --rps R --for D``: GET ``url`` ``rps`` times a second for ``duration``
    through the sandbox's gateway (a public URL is mapped onto it); loopback only, bounded in rate and time."""
    try:
        seconds = parse_duration(duration)
    except ValueError as exc:
        raise InputError(f"--for {duration}: {exc}", "e.g. --for 30s or --for 2m") from None
    if not 0 < rps <= MAX_RPS:
        raise InputError(f"--rps {rps:g} is out of bounds", f"give 0 < rps <= {MAX_RPS:g}")
    if not 0 < seconds <= MAX_SECONDS:
        raise InputError(f"--for {duration} is out of bounds", f"give more than 0 and at most {MAX_SECONDS:g}s")
    config = load_config(config_path)
    info = read_info(config.state_dir())
    gateway = (info or {}).get("gateway") or {}
    target = AwsTarget("sandbox", config.project.region, gateway=gateway)
    local = target.resolve_url(url)
    if not loopback(local):
        known = ", ".join(gateway) or "none: is the sandbox up (`opcd sandbox up --detach`)?"
        raise InputError(
            f"{url} is not served by the sandbox: the traffic generator sends to loopback only",
            f"give a URL the sandbox's gateway maps ({known}) or an http://127.0.0.1 one",
        )
    total = max(1, round(rps * seconds))
    print(f"sending {total} GET {url} ({local}) at {rps:g}/s for {seconds:g}s", flush=True)
    report = TrafficReport()

    slots = threading.BoundedSemaphore(WORKERS)

    def one(client: httpx.Client) -> None:
        began = time.perf_counter()
        try:
            answer = client.get(local)
            status, version = str(answer.status_code), answer.headers.get("x-sandbox-executed-version")
        except httpx.HTTPError as exc:
            status, version = type(exc).__name__, None
        finally:
            slots.release()
        report.add(status, version, time.perf_counter() - began)

    started = time.monotonic()
    deadline = started + seconds
    with httpx.Client(timeout=10.0, headers={"user-agent": "opcd-sandbox-traffic"}) as client:
        with ThreadPoolExecutor(max_workers=WORKERS) as pool:
            for number in range(total):
                due = started + number / rps
                now = time.monotonic()
                if now >= deadline:
                    break
                if due > now:
                    time.sleep(due - now)
                if not slots.acquire(timeout=max(0.0, deadline - time.monotonic())):
                    break  # every slot busy until the end: the sandbox is slower than the rate asked
                pool.submit(one, client)
                report.sent += 1
    print(report.summary(time.monotonic() - started))
    return 0 if any(k.startswith("2") for k in report.statuses) else 1
