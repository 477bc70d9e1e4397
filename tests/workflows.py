"""The commands of the GitHub Actions workflows (``prefect deployment run``, ``opcd …``), rendered as a runner would.

A step passes GitHub's values to its script only through ``env:`` (``${{ … }}`` never appears in
``run:``), so rendering is: substitute each ``${{ expression }}`` of the step's environment from a
context of values, then run the script with ``bash -eo pipefail -c script`` under that environment.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

EXPRESSION = re.compile(r"\$\{\{(.*?)\}\}", re.DOTALL)


@dataclass(frozen=True)
class Command:
    workflow: str  # the file's name, e.g. main.yml
    job: str
    step: str  # the step's name (or its id, or the start of its script)
    script: str  # the step's run: text
    env: dict[str, str]  # the step's env over the job's over the workflow's, expressions unrendered


def _env(level: dict[str, Any]) -> dict[str, str]:
    return {name: str(value) for name, value in (level.get("env") or {}).items()}


def deployment_commands(workflow_file: Path) -> list[Command]:
    """Every step whose script runs ``prefect deployment run``, in the file's order."""
    return commands(workflow_file, "prefect deployment run")


def commands(workflow_file: Path, needle: str) -> list[Command]:
    """Every step whose script holds ``needle`` (e.g. ``opcd validate``), in the file's order."""
    spec = yaml.safe_load(workflow_file.read_text())
    found = []
    for job_name, job in spec["jobs"].items():
        for step in job.get("steps") or []:
            script = step.get("run", "")
            if needle not in script:
                continue
            name = step.get("name") or step.get("id") or script[:40]
            env = {**_env(spec), **_env(job), **_env(step)}
            found.append(Command(workflow_file.name, job_name, name, script, env))
    return found


def render(command: Command, context: dict[str, str]) -> tuple[str, dict[str, str]]:
    """(script, environment) with every ``${{ expression }}`` of the environment replaced by ``context[expression]``.

    Raises KeyError naming the expression that ``context`` lacks, and ValueError for a script that
    holds an expression itself (only ``env:`` may: that is what makes the step injection-safe).
    """
    if EXPRESSION.search(command.script):
        raise ValueError(f"{command.workflow} {command.job} {command.step!r}: an expression inside run:")

    def value(match: re.Match[str]) -> str:
        expression = match.group(1).strip()
        if expression not in context:
            raise KeyError(f"{command.workflow} {command.job} {command.step!r}: no value for ${{{{ {expression} }}}}")
        return context[expression]

    return command.script, {name: EXPRESSION.sub(value, text) for name, text in command.env.items()}
