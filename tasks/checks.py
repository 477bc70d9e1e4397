"""The checks of a pull request: what runs, and running one with a time limit and captured output.

Checks come from ``opcd.toml``: per Lambda component its tests with a coverage floor; ruff and
mypy over the components' sources; ``npm test`` (and ``lint``/``typecheck`` when the package
defines them) per ``validation.node`` directory; bandit; a detect-secrets scan of the tracked tree
against the baseline; ``terraform fmt -check`` and ``validate`` when ``validation.terraform`` is set
(skipped, never passed, when no terraform binary is installed); a build of every Lambda package
without uploading; and any ``validation.commands``. Each check is a task: they run in parallel.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from opcd.config import Config
from opcd.errors import ConfigError, OpcdError
from opcd.outcomes import CheckStatus

OUTPUT_LINES = 15  # lines of a failure's output kept for the report


@dataclass(frozen=True)
class Check:
    name: str
    title: str
    commands: list[tuple[str, list[str]]] = field(default_factory=list)  # (cwd, argv) in order; first failure stops
    timeout: float = 600.0
    required: bool = True
    kind: str = "command"  # command | secrets | build | skip
    skip_reason: str | None = None


@dataclass
class CheckResult:
    name: str
    title: str
    status: CheckStatus
    seconds: float
    required: bool
    output: str = ""  # the last lines, for the report
    started: float = 0.0
    finished: float = 0.0

    @property
    def blocking(self) -> bool:
        return self.required and self.status.is_failure


def _package_of(handler: str | None) -> str | None:
    """``app.handler`` → ``app``; ``worker.handler`` → ``worker``."""
    return handler.split(".")[0] if handler else None


def plan_checks(config: Config, checkout: Path) -> list[Check]:
    """Every check opcd.toml asks for, in report order; ConfigError on unknown names in validation.*."""
    v = config.validation
    py = sys.executable
    lambdas = {n: c for n, c in config.components.items() if c.kind == "lambda"}
    sources = [c.source for c in lambdas.values()]
    checks: list[Check] = []
    for name, comp in lambdas.items():
        package = _package_of(comp.handler)
        tests = checkout / comp.source / "tests"
        argv = [py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=", f"--cov={package}",
                "--cov-report=term", f"--cov-fail-under={v.coverage_floor}", "tests"]  # fmt: skip
        if tests.is_dir():
            title = f"{name} tests, coverage ≥ {v.coverage_floor}%"
            checks.append(Check(f"tests-{name}", title, [(comp.source, argv)]))
        else:
            checks.append(Check(f"tests-{name}", f"{name} tests", kind="skip", skip_reason=f"no {comp.source}/tests"))
    lint = [
        [py, "-m", "ruff", "check", "--output-format=concise", *sources],
        [py, "-m", "ruff", "format", "--check", *sources],
    ]
    checks.append(Check("lint", "ruff (lint and format)", [(".", argv) for argv in lint]))
    mypy = [(src, [py, "-m", "mypy", "--ignore-missing-imports", "--no-error-summary", "."]) for src in sources]
    checks.append(Check("types", "mypy", mypy))
    for directory in v.node:
        label = Path(directory).name
        if not (checkout / directory / "package.json").is_file():
            raise ConfigError(f"validation.node: {directory}/package.json does not exist", "fix the path in opcd.toml")
        npm = shutil.which("npm")
        if npm is None:
            checks.append(Check(f"node-{label}", f"{label}: npm test, lint, typecheck", kind="skip",
                                skip_reason="npm not installed"))  # fmt: skip
            continue
        commands = [[npm, "test", "--silent"], [npm, "run", "lint", "--if-present", "--silent"],
                    [npm, "run", "typecheck", "--if-present", "--silent"]]  # fmt: skip
        steps = [(directory, argv) for argv in commands]
        checks.append(Check(f"node-{label}", f"{label}: npm test, lint, typecheck", steps))
    excluded = ",".join(f"{s}/tests" for s in sources)
    bandit = [(".", [py, "-m", "bandit", "-q", "-r", *sources, "-x", excluded])]
    checks.append(Check("bandit", "bandit (Python security)", bandit))
    checks.append(Check("secrets", "secret scan (detect-secrets)", kind="secrets"))
    if v.terraform:
        binary = shutil.which("terraform") or shutil.which("tofu")
        if binary is None:
            checks.append(Check("terraform", "terraform fmt and validate", kind="skip",
                                skip_reason="terraform not installed (nor tofu): not checked"))  # fmt: skip
        else:
            commands = [[binary, "fmt", "-check", "-recursive"], [binary, "init", "-backend=false", "-input=false"],
                        [binary, "validate"]]  # fmt: skip
            checks.append(Check("terraform", "terraform fmt and validate", [(v.terraform, a) for a in commands]))
    checks.append(Check("build", "build every Lambda package (no upload)", kind="build"))
    for name, command in v.commands.items():  # a new check, or another command for a built-in one
        own = Check(name, command, [(".", shlex.split(command))])
        at = next((i for i, c in enumerate(checks) if c.name == name), None)
        if at is None:
            checks.append(own)
        else:
            checks[at] = own
    known = {c.name for c in checks}
    for key, names in (("skip", v.skip), ("optional", v.optional), ("timeouts", list(v.timeouts))):
        unknown = sorted(set(names) - known)
        if unknown:
            raise ConfigError(
                f"validation.{key}: unknown check(s) {', '.join(unknown)}", f"checks are: {', '.join(sorted(known))}"
            )
    planned = []
    for check in checks:
        if check.name in v.skip:
            continue
        timeout = v.timeouts.get(check.name, v.timeout)
        planned.append(replace(check, timeout=timeout, required=check.name not in v.optional))
    return planned


def _tail(text: str, lines: int = OUTPUT_LINES) -> str:
    kept = [line.rstrip() for line in text.strip().splitlines() if line.strip()]
    return "\n".join(kept[-lines:])


def run_command(argv: list[str], cwd: Path, deadline: float) -> tuple[int | None, str]:
    """Run one command until ``deadline`` (monotonic); (exit code or None when stopped, output)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "AWS_", "OPCD_"))}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    with tempfile.TemporaryFile() as out:
        try:
            proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)  # fmt: skip
        except OSError as exc:
            return 127, f"cannot run {argv[0]}: {exc.strerror}"
        try:
            code: int | None = proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the whole group: pytest's children too
            proc.wait()
            code = None
        out.seek(0)
        return code, out.read().decode(errors="replace")


@dataclass(frozen=True)
class SuspectedSecret:
    """A possible secret: where, what kind, and its hash (the baseline's key). Never its value."""

    file: str
    line: int
    type: str
    hashed: str


def scan_tree(checkout: Path, baseline_name: str) -> tuple[list[SuspectedSecret], list[str]]:
    """detect-secrets over the tracked files but the baseline: (findings, the values found, to redact)."""
    try:
        from detect_secrets.core.secrets_collection import SecretsCollection
        from detect_secrets.settings import default_settings
    except ImportError:
        raise ConfigError(
            "the secret scan needs detect-secrets, which is not installed", "pip install 'opcd[validate]'"
        ) from None

    listed = subprocess.run(["git", "ls-files", "-z"], cwd=checkout, capture_output=True, check=False)
    if listed.returncode == 0:
        files = [checkout / name for name in listed.stdout.decode().split("\0") if name]
    else:  # not a git checkout: every file
        files = [f for f in checkout.rglob("*") if f.is_file() and ".git" not in f.parts]
    baseline = (checkout / baseline_name).resolve()
    collection = SecretsCollection(root=str(checkout))
    with default_settings():
        collection.scan_files(*(str(f) for f in files if f.is_file() and f.resolve() != baseline))
    findings, values = [], set()
    for filename, secret in collection:
        name = str(Path(filename).resolve().relative_to(checkout)) if Path(filename).is_absolute() else filename
        findings.append(SuspectedSecret(name, secret.line_number, secret.type, secret.secret_hash))
        if secret.secret_value:
            values.add(secret.secret_value)
    return sorted(findings, key=lambda f: (f.file, f.line, f.type)), sorted(values, key=len, reverse=True)


def judge_secrets(findings: list[SuspectedSecret], checkout: Path, baseline_name: str) -> tuple[bool, str]:
    """Findings not in the detect-secrets baseline fail the check."""
    known: set[tuple[str, str, str]] = set()
    baseline = checkout / baseline_name
    if baseline.is_file():
        for file, items in json.loads(baseline.read_text()).get("results", {}).items():
            known |= {(file, i["type"], i["hashed_secret"]) for i in items}
    new = [f"{f.file}:{f.line}: {f.type}" for f in findings if (f.file, f.type, f.hashed) not in known]
    if new:
        return False, "possible secrets (not in the baseline):\n" + "\n".join(new[:OUTPUT_LINES])
    return True, f"no new secrets ({len(findings)} known in {baseline_name})"


def redact(text: str, secrets: list[str]) -> str:
    for value in secrets:
        text = text.replace(value, "***")
    return text


def build_all(config: Config) -> tuple[bool, str]:
    """Build every Lambda component's package into a temporary directory (nothing uploaded)."""
    from tasks.build import build_zip

    lines, ok = [], True
    with tempfile.TemporaryDirectory(prefix="opcd-validate-build-") as tmp:
        for name, comp in config.components.items():
            if comp.kind != "lambda":
                lines.append(f"{name}: {comp.kind} images are built by their own pipeline")
                continue
            try:
                package = build_zip(name, "pr", comp, config.source_dir(name), Path(tmp) / name,
                                    config.build_cache_dir())  # fmt: skip
            except OpcdError as exc:
                ok = False
                lines.append(f"{name}: FAILED: {exc}")
                continue
            lines.append(f"{name}: {package.size} bytes, sha256 {package.sha256_hex[:12]}")
    return ok, "\n".join(lines)


@task(name="run-check", task_run_name="check {check.name}", cache_policy=NO_CACHE)
def run_check(
    check: Check, checkout: Path, config: Config, findings: list[SuspectedSecret], secrets: list[str]
) -> CheckResult:
    """Run one check within its time limit; never raises for a failing check (the report says it).

    Output is redacted of every value the secret scan found before it is logged or returned.
    """
    logger = get_run_logger()
    started = time.time()
    begin = time.monotonic()

    def result(status: CheckStatus, output: str) -> CheckResult:
        output = redact(output, secrets)
        seconds = time.monotonic() - begin
        logger.log(
            20 if not status.is_failure else 30, "%s: %s in %.1fs%s", check.name, status.upper(), seconds,
            ("\n" + output) if status.is_failure and output else "",
        )  # fmt: skip
        return CheckResult(check.name, check.title, status, seconds, check.required, output, started, time.time())

    if check.kind == "skip":
        return result(CheckStatus.SKIPPED, check.skip_reason or "")
    try:
        if check.kind == "secrets":
            ok, output = judge_secrets(findings, checkout, config.validation.secrets_baseline)
            return result(CheckStatus.PASSED if ok else CheckStatus.FAILED, output)
        if check.kind == "build":
            ok, output = build_all(config)
            return result(CheckStatus.PASSED if ok else CheckStatus.FAILED, output)
        deadline = begin + check.timeout
        outputs = []
        for cwd, argv in check.commands:
            code, output = run_command(argv, checkout / cwd, deadline)
            outputs.append(output)
            if code is None:
                return result(CheckStatus.TIMED_OUT, f"stopped after the {check.timeout:g}s limit\n" + _tail(output))
            if code != 0:
                command = shlex.join(Path(a).name if i == 0 else a for i, a in enumerate(argv))
                return result(CheckStatus.FAILED, f"$ {command} → exit {code}\n" + _tail(output))
        return result(CheckStatus.PASSED, _tail("\n".join(outputs), 3))
    except Exception as exc:  # a check that cannot run is an error of that check, not of the run
        return result(CheckStatus.ERROR, f"{type(exc).__name__}: {exc}")
