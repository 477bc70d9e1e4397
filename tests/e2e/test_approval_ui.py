"""The prod approval answered in the Prefect UI by a person, in a real browser.

A real ``prefect server start`` on a loopback port that is not 4200 (so ``PREFECT_UI_API_URL``
must name its API), a release started with ``opcd release`` against the sandbox, and Debian's
chromium driven by Playwright (never a downloaded browser) opening the link ``opcd pending``
prints, the Resume form, the approver dropdown, the reason, Submit. Screenshots of each form are
saved under ``test-artifacts/`` (CI keeps them), always on failure.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from sandbox.slack import SlackSink
from tests.conftest import ROOT, Project
from tests.e2e.conftest import BIN, prefect_server, wait_for_approval_wait

CHROMIUM = shutil.which("chromium")
try:
    from playwright.sync_api import Page, sync_playwright
except ImportError:  # pragma: no cover - make test installs it
    sync_playwright = None  # type: ignore[assignment]

pytestmark = [
    pytest.mark.skipif(
        CHROMIUM is None or sync_playwright is None,
        reason="needs Debian's chromium and the playwright package: `make test` installs both when run as root",
    ),
    pytest.mark.xdist_group("prefect-ui"),  # one test process: one server
]
ARTIFACTS = ROOT / "test-artifacts"
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


@pytest.fixture(scope="session")  # once per test process, even if other modules run between
def ui_server(
    tmp_path_factory: pytest.TempPathFactory, prefect_database: Callable[[str], dict[str, str]]
) -> Iterator[str]:
    """A real Prefect server on PostgreSQL with its UI on a free loopback port; its API URL."""
    with prefect_server(tmp_path_factory.mktemp("prefect-ui"), **prefect_database("ui")) as api:
        yield api


@pytest.fixture
def sink() -> Iterator[SlackSink]:
    server = SlackSink().start()
    yield server
    server.stop()


def opcd_env(api: str, sink: SlackSink) -> dict[str, str]:
    return {**os.environ, "PREFECT_API_URL": api, "OPCD_SLACK_WEBHOOK_URL": sink.webhook_url}


def start_release(project: Project, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with (project.root / "release.log").open("wb") as log:  # the child keeps its own copy of the file
        return subprocess.Popen(
            [str(BIN / "opcd"), "--config", str(project.config_path), "release", "--version", "v1",
             "--component", "worker"],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip


def waiting_run(project: Project, api: str, env: dict[str, str], release: subprocess.Popen[bytes]) -> dict[str, Any]:
    """The release waiting for an approval, as `opcd pending --json` lists it once it waits."""
    wait_for_approval_wait(api, release, project.root / "release.log")
    for _ in range(20):  # the run's form is saved a moment after it pauses
        out = subprocess.run(
            [str(BIN / "opcd"), "--config", str(project.config_path), "pending", "--json"],
            env=env, capture_output=True, check=True,
        )  # fmt: skip
        found: list[dict[str, Any]] = json.loads(out.stdout)
        if found:
            return found[0]
        time.sleep(0.5)
    raise AssertionError(f"`opcd pending` lists no run: {out.stdout!r}")


def open_form(page: Page, url: str, shot: str) -> Any:
    """The run's page as the link shows it, menu → Resume; the form."""
    page.goto(url, wait_until="networkidle")
    page.get_by_role("button", name="Resume").click()
    form = page.get_by_role("dialog").filter(has_text="Resume Flow Run")
    form.wait_for()
    return form


def answer_in_browser(url: str, approve: bool, approver: str, reason: str, shot: str) -> dict[str, Any]:
    """Fill and submit the Resume form; what the form showed."""
    ARTIFACTS.mkdir(exist_ok=True)
    assert sync_playwright is not None
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            form = open_form(page, url, shot)
            shown = form.inner_text()
            field = form.locator(".schema-form-property").filter(has_text="Approver")
            field.locator(".p-select-button__icon").click()  # the classic UI's select opens from its chevron
            options = page.get_by_role("option").all_inner_texts()
            page.get_by_role("option", name=approver, exact=True).click()
            if not approve:
                form.locator(".schema-form-property").filter(has_text="Approved").get_by_role("switch").click()
            form.locator("textarea").fill(reason)
            page.screenshot(path=str(ARTIFACTS / f"{shot}.png"))
            form.get_by_role("button", name="Submit").click()
            form.wait_for(state="hidden")
        except Exception:
            page.screenshot(path=str(ARTIFACTS / f"{shot}-failed.png"))
            raise
        finally:
            browser.close()
    return {"text": shown, "options": options}


def test_approve_in_the_prefect_ui(project: Project, ui_server: str, sink: SlackSink) -> None:
    env = opcd_env(ui_server, sink)
    release = start_release(project, env)
    waiting = waiting_run(project, ui_server, env, release)
    assert waiting["ui_url"].startswith(ui_server.removesuffix("/api"))

    seen = answer_in_browser(waiting["ui_url"], True, "alice", "dev looks good", "approval-form")

    assert seen["options"] == ["alice", "bob"]  # exactly the configured approvers: nobody else can be chosen
    text = seen["text"]
    assert "Release v1 to prod" in text and "worker" in text and "v1" in text
    assert "a version opcd did not deploy (Lambda version 1)" in text  # what is live in prod now
    assert "deployed in" in text  # dev's result
    assert release.wait(timeout=240) == 0, (project.root / "release.log").read_text()[-3000:]
    assert project.ledger("prod", "worker")["outcome"] == "deployed"
    assert "prod approved by alice: dev looks good" in " ".join(sink.texts())
    with httpx.Client(base_url=ui_server) as api:
        run = api.get(f"/flow_runs/{waiting['flow_run_id']}").json()
    assert run["state"]["type"] == "COMPLETED"
    listed = project.client("s3").list_objects_v2(Bucket="outreachpass-artifacts", Prefix="ledger/releases/v1/")
    body = project.client("s3").get_object(Bucket="outreachpass-artifacts", Key=listed["Contents"][0]["Key"])
    approval = json.loads(body["Body"].read())["approvals"][0]
    assert (approval["approver"], approval["reason"], approval["approved"]) == ("alice", "dev looks good", True)


def test_reject_in_the_prefect_ui(project: Project, ui_server: str, sink: SlackSink) -> None:
    env = opcd_env(ui_server, sink)
    release = start_release(project, env)
    waiting = waiting_run(project, ui_server, env, release)

    answer_in_browser(waiting["ui_url"], False, "bob", "freeze until Monday", "rejection-form")

    assert release.wait(timeout=240) == 1
    assert project.live("outreachpass-worker-prod") == "1"  # prod untouched
    assert "prod rejected by bob: freeze until Monday" in " ".join(sink.texts())
