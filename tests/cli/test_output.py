"""What ``opcd deploy``, ``rollback`` and ``release`` print: what will run, one line per step, a summary;
Prefect's log in a file (``-v``: on the console too). A live table in a terminal, plain lines elsewhere."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

from cli.main import main
from cli.progress import Display, live_terminal
from opcd.progress import State, Step, listening, report
from tests.conftest import Project


class Terminal(io.StringIO):
    """What a terminal receives (``isatty``: a live table is drawn)."""

    def isatty(self) -> bool:
        return True


def step(component: str, env: str, name: str, detail: str = "", state: State = State.RUNNING) -> Step:
    return Step(component, env, name, detail, state, 0.0)


def test_plain_lines_one_per_step_and_a_summary() -> None:
    out = io.StringIO()
    display = Display(out, [("backend", "dev"), ("worker", "dev")], live=False)
    display.step(step("backend", "dev", "publish", "outreachpass-api-dev"))
    display.step(step("backend", "dev", "bake 1/2", "10%, 6s left"))
    display.step(step("backend", "dev", "bake 1/2", "10%, 4s left"))  # the same step: no new line
    display.step(step("backend", "dev", "deployed", "live: v2 (Lambda version 3)", State.OK))
    display.close()
    lines = out.getvalue().splitlines()
    assert [ln.split()[1:4] for ln in lines[:3]] == [
        ["backend", "dev", "publish"], ["backend", "dev", "bake"], ["backend", "dev", "deployed"],
    ]  # fmt: skip
    assert "\x1b" not in out.getvalue()
    assert lines[3] == "summary:"
    assert lines[4].split() == ["+", "backend", "dev", "deployed", *lines[4].split()[4:]]
    assert lines[4].endswith("live: v2 (Lambda version 3)") and lines[5].split() == ["worker", "dev", "-"]


def test_a_terminal_gets_a_table_redrawn_in_place(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    screen = Terminal()
    assert live_terminal(screen)
    display = Display(screen, [("backend", "dev"), ("frontend", "dev")], live=True)
    display.step(step("backend", "dev", "publish"))
    display.step(step("frontend", "dev", "push"))
    display.note("backend dev: warning: smoke failed")
    how = "alice or bob: opcd approve 51333531-bf76-457c-ac4b-f030ca66a128 --approver NAME --reason '…'" * 3
    display.step(step("approval", "prod", "waiting", how, State.WAITING))  # in full, not cut to the screen
    display.step(step("backend", "dev", "ROLLED BACK", "live: v1", State.FAILED))
    display.close()
    drawn = screen.getvalue()
    assert drawn.count("\x1b[2F") >= 2  # each change moves up over the rows and draws them again
    assert "\x1b[31m" in drawn and "summary:" not in drawn  # the last table, in colour, is the summary
    last = drawn.split("\x1b[2F")[-1]
    assert "ROLLED BACK" in last and "push" in last and "smoke failed" in drawn
    assert f"approval prod: waiting: {how}\n" in drawn


@pytest.mark.parametrize("env", [{"CI": "true"}, {"TERM": "dumb"}])
def test_ci_and_dumb_terminals_get_plain_lines(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert not live_terminal(Terminal())
    assert not live_terminal(io.StringIO())


def test_report_outside_a_run_names_its_row_or_is_dropped() -> None:
    seen: list[Step] = []
    report("publish")  # nobody listens: nothing happens
    with listening(seen.append):
        report("publish")  # no flow run to take the component and environment from: dropped
        report("build", "v2", component="backend", environment="build")
    assert [(s.component, s.environment, s.name) for s in seen] == [("backend", "build", "build")]


def log_file(out: str) -> Path:
    found = re.search(r"^log: (\S+)", out, re.MULTILINE)
    assert found, out
    return Path(found.group(1))


def test_deploy_and_rollback_print_steps_and_keep_prefects_log_in_a_file(
    project: Project, prefect_server: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, err = project.run("deploy", "backend", "--env", "dev", "--version", "v1")  # a process: real consoles
    assert code == 0, err
    assert "Finished in state" not in out + err and "NoneType" not in out + err
    steps = [ln.split()[1:4] for ln in out.splitlines() if re.match(r"^ *[\d.m]+s  backend  dev  ", ln)]
    names = [s[2] for s in steps]
    assert names[:3] == ["plan", "build", "upload"], out
    order = [n for n in names if n in ("publish", "smoke", "shift", "health", "alarms", "deployed")]
    assert order == ["publish", "smoke", "shift", "health", "alarms", "deployed"], out
    assert out.splitlines()[-1] == "deployed backend v1 to dev: live on Lambda version 2"
    text = log_file(out).read_text()
    assert "Task run 'publish-version-" in text and "Finished in state Completed()" in text

    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    screen = Terminal()  # in a terminal: the table, redrawn; the result line after it
    with contextlib.redirect_stdout(screen):
        assert main(["--config", str(project.config_path), "rollback", "backend", "--env", "dev"]) == 0
    assert "\x1b[1F" in screen.getvalue() and "rolled back" in screen.getvalue()
    assert screen.getvalue().splitlines()[-1].startswith("rolled back backend in dev to")

    code, out, err = project.run("rollback", "backend", "--env", "dev", "--to", "v1", "-v")
    assert code == 0, err
    assert "Finished in state Completed()" in err  # -v: Prefect's log on the console again
    assert "  backend  dev  rolled back" in out and "(-v shows it here)" not in out
