"""Terraform (or OpenTofu) through its CLI: init, fmt, validate, plan, show and apply.

A thin wrapper: each method runs one ``terraform`` command in the root module and streams its
output, line by line, to the run log. Nothing is parsed from human output; what opcd reads comes
from exit codes (``plan -detailed-exitcode``: 0 no changes, 1 error, 2 changes) and from the
documented JSON of a saved plan (``show -json``: ``format_version``, ``resource_changes``,
``change.actions``).

Each command run gets its own ``TF_DATA_DIR`` (so two environments, or two runs, never share
``.terraform``) and one shared provider cache (``TF_PLUGIN_CACHE_DIR``). Values of secret
environment variables (``TF_VAR_*``, AWS keys, tokens) are masked in every line that is logged.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import INPUTS, NO_CACHE, RUN_ID, TASK_SOURCE
from prefect.logging import get_run_logger

from opcd.config import Config, TerraformSettings
from opcd.errors import ConfigError, DeployFailed, InputError

# Environment variables whose values never reach a log line.
_SECRET_NAMES = re.compile(r"^TF_VAR_.+|.*(SECRET|TOKEN|PASSWORD|PASSWD|KEY|WEBHOOK|AUTH|CREDENTIAL).*$")
INSTALL_HINT = (
    "install Terraform (https://developer.hashicorp.com/terraform/install) or OpenTofu (https://opentofu.org/docs/intro/install/)"
    " on the worker's PATH, or set terraform.binary in opcd.toml to its path"
)


class TerraformFailed(DeployFailed):
    """A terraform command ended with an error."""


def find_binary(name: str) -> str:
    """The full path of ``terraform``/``tofu`` (or of an explicit path); InputError naming what to install."""
    found = shutil.which(name)
    if not found:
        raise InputError(f"{name!r} not found on PATH", INSTALL_HINT)
    return found


def secret_values(environ: dict[str, str] | None = None) -> list[str]:
    """The values to mask: those of secret-named variables, longest first (a value may contain another)."""
    env = os.environ if environ is None else environ
    values = {v for k, v in env.items() if _SECRET_NAMES.match(k) and len(v) >= 4}
    values |= {line for v in values for line in v.splitlines() if len(line.strip()) >= 4}  # a log line holds one
    return sorted(values, key=len, reverse=True)


def redact(line: str, secrets: list[str]) -> str:
    for value in secrets:
        line = line.replace(value, "***")
    return line


@dataclass
class Result:
    code: int
    stdout: str


class Terraform:
    """One root module for one environment: its backend config and var file, a private data dir."""

    def __init__(
        self,
        settings: TerraformSettings,
        config_root: Path,
        environment: str,
        log: Callable[[str], None],
        data_dir: Path,
        plugin_cache: Path | None = None,
    ) -> None:
        self.settings, self.environment, self.log = settings, environment, log
        self.binary = find_binary(settings.binary)
        self.root = (config_root / settings.root).resolve()
        if not self.root.is_dir():
            raise ConfigError(
                f"terraform.root: directory {self.root} does not exist", "fix terraform.root in opcd.toml"
            )
        self.backend_file = self.root / settings.backend_file(environment)
        var_file = settings.var_file_for(environment)
        self.var_file = self.root / var_file if var_file else None
        self.data_dir = data_dir
        self.plugin_cache = plugin_cache

    def _env(self) -> dict[str, str]:
        # TF_LOG would stream providers' request and response bodies (secrets among them) into the log
        env = {k: v for k, v in os.environ.items() if not k.startswith("TF_LOG")}
        env.update({"TF_DATA_DIR": str(self.data_dir), "TF_IN_AUTOMATION": "1", "TF_INPUT": "0"})
        if self.plugin_cache:
            self.plugin_cache.mkdir(parents=True, exist_ok=True)
            env["TF_PLUGIN_CACHE_DIR"] = str(self.plugin_cache)
        return env

    def run(self, *args: str, ok: tuple[int, ...] = (0,), capture: bool = False) -> Result:
        """Run ``terraform ARGS`` in the root; stream its output (stderr only, when ``capture``)."""
        command = [self.binary, *args]
        secrets = secret_values()
        shown = redact(" ".join([Path(self.binary).name, *args]), secrets)
        self.log(f"[{self.environment}] $ {shown}")
        started = time.monotonic()
        with subprocess.Popen(
            command, cwd=self.root, env=self._env(), text=True, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE if capture else subprocess.STDOUT,
        ) as proc:  # fmt: skip
            streamed = proc.stderr if capture else proc.stdout
            assert streamed is not None and proc.stdout is not None
            out: list[str] = []
            reader = None
            if capture:  # stdout is the JSON answer: read it aside while stderr streams
                reader = threading.Thread(target=lambda: out.append(proc.stdout.read()), daemon=True)  # type: ignore[union-attr]
                reader.start()
            timer = threading.Timer(self.settings.timeout, proc.kill)
            timer.start()
            try:
                for line in streamed:
                    self.log(f"[{self.environment}] {redact(line.rstrip(), secrets)}")
                code = proc.wait()
            finally:
                timer.cancel()
            if reader:
                reader.join()
        if time.monotonic() - started >= self.settings.timeout:
            raise TerraformFailed(
                f"{shown} ran longer than {self.settings.timeout:.0f} s and was stopped",
                "raise terraform.timeout in opcd.toml, or look at the run log for where it hung",
            )
        if code not in ok:
            raise TerraformFailed(
                f"{shown} failed with exit code {code} in {self.environment}", "the run log holds terraform's output"
            )
        return Result(code, "".join(out))

    def init(self) -> None:
        args = ["init", "-input=false", "-no-color", "-reconfigure"]
        if not self.backend_file.is_file():
            raise ConfigError(
                f"terraform backend config {self.backend_file} does not exist",
                "fix terraform.backend_config in opcd.toml",
            )
        args.append(f"-backend-config={self.backend_file}")
        with _plugin_cache_lock(self.plugin_cache):  # Terraform's provider cache is not safe for concurrent inits
            self.run(*args)

    def fmt_check(self) -> list[str]:
        """The files ``fmt -check`` says need formatting (none: formatted)."""
        result = self.run("fmt", "-check", "-recursive", "-no-color", ok=(0, 3), capture=True)
        return [line.strip() for line in result.stdout.splitlines() if line.strip()]

    def validate(self) -> None:
        self.run("validate", "-no-color")

    def _var_args(self) -> list[str]:
        return [f"-var-file={self.var_file}"] if self.var_file else []

    def plan(self, out: Path, lock: bool = True) -> bool:
        """Save a plan to ``out``; True when it holds changes.

        ``lock=False``: the state is read without taking its lock (``-lock=false``), as a read-only
        role must (taking the lock writes to the backend); such a plan is for showing, not applying.
        """
        locking = [f"-lock-timeout={self.settings.lock_timeout:.0f}s"] if lock else ["-lock=false"]
        result = self.run(
            "plan", "-input=false", "-no-color", f"-out={out}", "-detailed-exitcode", *locking, *self._var_args(),
            ok=(0, 2),
        )  # fmt: skip
        return result.code == 2

    def show_json(self, plan: Path) -> dict[str, Any]:
        result = self.run("show", "-json", "-no-color", str(plan), capture=True)
        try:
            data: dict[str, Any] = json.loads(result.stdout)
        except ValueError as exc:
            raise TerraformFailed(f"terraform show -json printed no JSON for {plan.name}: {exc}") from exc
        return data

    def plan_summary(self, out: Path, lock: bool = True) -> PlanSummary:
        """Plan to ``out`` and summarise the saved plan from its JSON (``changed``: exit code 2)."""
        changed = self.plan(out, lock)
        summary = summarize_plan(self.show_json(out), self.environment)
        summary.changed = changed
        return summary

    def apply(self, plan: Path) -> None:
        """Apply exactly the saved plan ``plan`` (terraform refuses it when the state moved since)."""
        self.run(
            "apply", "-input=false", "-no-color", f"-lock-timeout={self.settings.lock_timeout:.0f}s", str(plan)
        )  # fmt: skip


@contextmanager
def _plugin_cache_lock(cache: Path | None) -> Iterator[None]:
    if cache is None:
        yield
        return
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / ".opcd-init.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@contextmanager
def workspace(config: Config, environment: str, log: Callable[[str], None]) -> Iterator[Terraform]:
    """A Terraform for ``environment`` with a data dir of its own, removed afterwards."""
    if config.terraform is None:
        raise ConfigError("opcd.toml has no [terraform] table", "add [terraform] with root = the root module")
    cache = Path(os.environ.get("TF_PLUGIN_CACHE_DIR") or Path.home() / ".cache" / "opcd" / "terraform-plugins")
    with tempfile.TemporaryDirectory(prefix=f"opcd-tf-{environment}-") as data:
        yield Terraform(config.terraform, config.root, environment, log, Path(data), cache)


# --- what a saved plan does, from its JSON ------------------------------------------------------

_KINDS = {
    ("create",): "add",
    ("update",): "change",
    ("delete",): "destroy",
    ("delete", "create"): "replace",
    ("create", "delete"): "replace",
}


@dataclass
class PlanSummary:
    environment: str
    add: list[str] = field(default_factory=list)
    change: list[str] = field(default_factory=list)
    destroy: list[str] = field(default_factory=list)
    replace: list[str] = field(default_factory=list)
    drift: list[str] = field(default_factory=list)  # changed outside Terraform (resource_drift)
    outputs: list[str] = field(default_factory=list)  # root outputs the plan changes
    fingerprint: str = ""
    terraform_version: str | None = None
    changed: bool = False  # plan -detailed-exitcode said 2: something to apply (resources, outputs, imports)

    @property
    def changes_resources(self) -> bool:
        return bool(self.add or self.change or self.destroy or self.replace)

    @property
    def has_changes(self) -> bool:
        return self.changed or self.changes_resources or bool(self.outputs)

    def counts(self) -> str:
        """Terraform's own tally: a replacement counts as one to add and one to destroy."""
        adds, destroys = len(self.add) + len(self.replace), len(self.destroy) + len(self.replace)
        return f"{adds} to add, {len(self.change)} to change, {destroys} to destroy"

    def markdown(self) -> str:
        """Destroys and replacements first: they are what a reviewer must not miss."""
        if not self.has_changes:
            return f"#### {self.environment}: no changes\n"
        lines = [
            f"#### {self.environment}: {self.counts()}" + (f", {len(self.outputs)} output(s)" if self.outputs else ""),
            "",
        ]
        for label, items in (
            (":warning: **destroy**", self.destroy), (":warning: **replace** (destroy, then create)", self.replace),
            ("add", self.add), ("change", self.change), ("output", self.outputs),
        ):  # fmt: skip
            lines += [f"- {label}: `{address}`" for address in items]
        if self.drift:
            lines += ["", "Changed outside Terraform since the last apply:"]
            lines += [f"- `{address}`" for address in self.drift]
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _significant(changes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [rc for rc in changes if tuple(rc.get("change", {}).get("actions", [])) not in (("no-op",), ("read",))]


def _changed_outputs(plan: dict[str, Any]) -> dict[str, Any]:
    outputs = plan.get("output_changes") or {}
    return {name: c for name, c in outputs.items() if c.get("actions") not in (["no-op"], None)}


def fingerprint(plan: dict[str, Any]) -> str:
    """One hash of what the plan would do: each change's address, actions, before and after, and the outputs."""
    rows: list[Any] = sorted(
        (rc["address"], rc["change"].get("actions"), rc["change"].get("before"), rc["change"].get("after"),
         rc.get("previous_address"), rc["change"].get("importing"))
        for rc in _significant(plan.get("resource_changes") or [])
    )  # fmt: skip
    rows += sorted((f"output.{name}", c.get("actions"), c.get("after")) for name, c in _changed_outputs(plan).items())
    return hashlib.sha256(json.dumps(rows, sort_keys=True, default=str).encode()).hexdigest()


def summarize_plan(plan: dict[str, Any], environment: str) -> PlanSummary:
    """The summary of ``terraform show -json PLAN``; a format opcd does not know is an error."""
    version = str(plan.get("format_version", ""))
    if not version.startswith("1."):
        raise TerraformFailed(
            f"the saved plan's JSON has format_version {version or 'none'!r}; opcd reads format 1.x",
            "use Terraform 1.x or OpenTofu 1.x",
        )
    summary = PlanSummary(environment, fingerprint=fingerprint(plan), terraform_version=plan.get("terraform_version"))
    for rc in _significant(plan.get("resource_changes") or []):
        actions = tuple(rc["change"]["actions"])
        kind = _KINDS.get(actions)
        if kind is None:
            raise TerraformFailed(f"{rc['address']}: unknown plan actions {list(actions)}")
        getattr(summary, kind).append(rc["address"])
    summary.drift = sorted(rc["address"] for rc in _significant(plan.get("resource_drift") or []))
    summary.outputs = sorted(_changed_outputs(plan))
    for items in (summary.add, summary.change, summary.destroy, summary.replace):
        items.sort()
    return summary


def comment_body(marker: str, summaries: list[PlanSummary], git_sha: str | None, run_url: str | None) -> str:
    """The PR comment: one section per environment; destroys said at the top."""
    destroys = [s.environment for s in summaries if s.destroy or s.replace]
    lines = [marker, f"### Terraform plan{f' for `{git_sha[:12]}`' if git_sha else ''}", ""]
    if destroys:
        lines += [f":warning: **This plan destroys resources in {', '.join(destroys)}.**", ""]
    lines += [s.markdown() for s in summaries]
    if run_url:
        lines.append(f"[The Prefect run]({run_url}) keeps each full plan.")
    return "\n".join(lines)


# --- tasks ---------------------------------------------------------------------------------------


@task(name="plan-terraform", cache_policy=NO_CACHE)
def plan_terraform(config: Config, environment: str, out_dir: str, lock: bool = True) -> tuple[str, PlanSummary]:
    """init, plan to ``{out_dir}/{environment}.tfplan``, read it back as JSON: (plan file, summary).

    ``lock=False``: without the state lock (a plan only shown, made with a read-only role).
    """
    logger = get_run_logger()
    with workspace(config, environment, logger.info) as tf:
        tf.init()
        out = Path(out_dir) / f"{environment}.tfplan"
        summary = tf.plan_summary(out, lock)
    logger.info("Terraform plan for %s: %s", environment, summary.counts() if summary.changed else "no changes")
    return str(out), summary


class PlanChanged(DeployFailed):
    """The environment's plan now differs from the one that was reviewed: nothing applied."""


# terraform-apply started from a deployment is suspended at its gate and then runs again from the
# top: an environment it applied before comes back from the persisted result, not applied twice
# (the plan file's path and the work dir differ between the two processes; what is applied does not).
_APPLIED_ONCE_PER_RUN = RUN_ID + TASK_SOURCE + (INPUTS - "plan_file" - "out_dir")


@task(name="apply-terraform", cache_policy=_APPLIED_ONCE_PER_RUN, persist_result=True)
def apply_terraform(
    config: Config, environment: str, plan_file: str, plan_id: str, reviewed: str, replan: bool, out_dir: str
) -> str:
    """Apply ``plan_id``'s plan to ``environment``; what happened, in one line.

    ``replan=False``: exactly the saved plan ``plan_file`` (Terraform refuses it if the state moved).
    ``replan=True`` (after an approval that may have taken hours): plan again, and apply that plan
    only when its fingerprint is ``reviewed``'s; otherwise raise PlanChanged, nothing applied.
    """
    logger = get_run_logger()
    with workspace(config, environment, logger.info) as tf:
        tf.init()
        if replan:
            fresh = Path(out_dir) / f"{environment}-again.tfplan"
            summary = tf.plan_summary(fresh)
            if summary.fingerprint != reviewed:
                raise PlanChanged(
                    f"{environment}'s plan changed since it was reviewed (now: {summary.counts()}); nothing applied"
                    f" to {environment}",
                    "run terraform-plan again and review it",
                )
            if not summary.changed:
                return "no changes"
            plan_file = str(fresh)
        tf.apply(Path(plan_file))
    logger.info("Terraform applied plan %s to %s", plan_id, environment)
    return "applied"
