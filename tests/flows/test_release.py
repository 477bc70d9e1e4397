"""The release flow end to end against the sandbox: parallel builds and deploys, the approval gate
answered through the Prefect API (as the UI's Resume form does), Slack and SES notifications."""

from __future__ import annotations

import json
import shutil
import time
from concurrent.futures import Future
from typing import Any

import pytest
from moto.backends import get_backend

from opcd.sandbox.slack import SlackSink
from tests.conftest import RAISES_ON_IMPORT, Project, error_lines, start_in_thread, wait_for_pending

pytestmark = pytest.mark.skipif(
    not (shutil.which("buildah") and shutil.which("skopeo") and shutil.which("docker-registry")),
    reason="needs buildah, skopeo and docker-registry (make test installs them)",
)

# The backend answers /health with 500 through `live` in prod only: dev passes, prod rolls back.
UNHEALTHY_IN_PROD = """

_handler = handler


def handler(event, context):
    live = context.invoked_function_arn.endswith(":live")
    if event.get("rawPath") == "/health" and live and os.environ.get("APP_ENV") == "prod":
        return _response(500, {"status": "unhealthy"})
    return _handler(event, context)
"""


def start_release(project: Project, version: str, **params: Any) -> Future[Any]:
    """Run the release flow in another thread (it blocks at the approval); its final state comes back."""
    from flows.release import release

    return start_in_thread(release, version=version, config_path=str(project.config_path), **params)


def live_version(project: Project, function: str) -> str:
    return project.description(project.live(function), function)


def sent_email() -> list[Any]:
    return list(get_backend("ses")["123456789012"]["us-east-1"].sent_messages)


def image(project: Project, env: str) -> str:
    client = project.client_for("apprunner")
    for summary in client.list_services()["ServiceSummaryList"]:
        if summary["ServiceName"] == f"outreachpass-web-{env}":
            service = client.describe_service(ServiceArn=summary["ServiceArn"])["Service"]
            return str(service["SourceConfiguration"]["ImageRepository"]["ImageIdentifier"])
    raise AssertionError(env)


def test_release_goes_to_dev_then_prod_after_an_approval(
    project: Project, prefect_server: None, sink: SlackSink
) -> None:
    release = start_release(project, "v1", git_sha="1234567")
    waiting = wait_for_pending(release)

    # The form says what will be deployed, what is live in prod now and how dev went.
    assert waiting["environment"] == "prod" and waiting["approvers"] == ["alice", "bob"]
    description = waiting["description"]
    assert "Release v1 to **prod**" in description and "`1234567`" in description
    for component in ("backend", "worker", "frontend"):
        assert f"- **{component}** → v1" in description
    assert "a version opcd did not deploy (Lambda version 1)" in description  # prod's backend before the release
    assert "hello-app-runner" in description  # prod's frontend: the seeded sample image
    assert description.count("deployed in") == 3  # the dev results
    assert waiting["url"] and waiting["url"].endswith(f"/runs/flow-run/{waiting['id']}")
    # dev is done, prod untouched while waiting
    assert live_version(project, "outreachpass-api-dev").startswith("opcd backend v1")
    assert project.live("outreachpass-api-prod") == "1"

    # Someone not on the list: refused by the Prefect server, the run stays paused.
    code, out, err = project.cli("approve", waiting["id"], "--approver", "mallory", "--reason", "lgtm")
    assert code == 2 and "'mallory' may not approve prod" in err
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        refused = client.resume_flow_run(
            waiting["id"], run_input={"approved": True, "approver": "mallory", "reason": "lgtm"}
        )
    assert refused.status.value == "REJECT" and "mallory" in str(refused.details)
    code, out, err = project.cli("pending")
    assert code == 0 and waiting["id"] in out and "alice, bob" in out

    code, out, err = project.cli("approve", waiting["id"], "--approver", "alice", "--reason", "dev looks good")
    assert code == 0, err
    state = release.result(timeout=300)
    assert state.is_completed(), state
    summary = state.result()
    assert summary["outcome"] == "released"
    assert summary["approvals"][0]["approver"] == "alice" and summary["approvals"][0]["reason"] == "dev looks good"

    for env in ("dev", "prod"):
        for component in ("backend", "worker", "frontend"):
            record = project.ledger(env, component)
            assert record["outcome"] == "deployed" and record["version"] == "v1", (env, component, record)
        assert live_version(project, f"outreachpass-api-{env}").startswith("opcd backend v1")
        assert live_version(project, f"outreachpass-worker-{env}").startswith("opcd worker v1")
        assert image(project, env).endswith("outreachpass-frontend:v1")
    # built once: every deploy reused the build
    assert {project.ledger(env, "backend")["artifact"] for env in ("dev", "prod")} == {"reused"}

    texts = sink.texts()
    expected = [
        "release v1: started by", "release v1: dev: 3 of 3 deployed", "release v1: approval requested for prod",
        "release v1: prod approved by alice: dev looks good", "release v1: prod: 3 of 3 deployed",
        "release v1: released:",
    ]  # fmt: skip
    assert len(texts) == len(expected), texts
    for text, start in zip(texts, expected, strict=True):
        assert text.startswith(start), (text, start)
    final = sink.messages[-1]["blocks"][1]["fields"]
    assert any("Took" in f["text"] for f in final)
    approval = sink.messages[2]["blocks"]
    assert any("Prefect run" in str(b) for b in approval)  # the link to the run in the UI

    emails = sent_email()
    assert [m.subject for m in emails] == ["[opcd] approval needed: release v1 to prod"]
    assert emails[0].destinations["ToAddresses"] == ["oncall@outreachpass.example"]
    assert f"opcd approve {waiting['id']}" in emails[0].body


def test_reject_ends_the_release_with_prod_untouched(project: Project, prefect_server: None, sink: SlackSink) -> None:
    from prefect.client.orchestration import get_client

    release = start_release(project, "v1", components=["worker"])
    waiting = wait_for_pending(release)

    # A rejection without a reason passes the server's schema; the flow refuses it and waits again.
    with get_client(sync_client=True) as client:
        client.resume_flow_run(waiting["id"], run_input={"approved": False, "approver": "bob", "reason": " "})
    deadline = time.monotonic() + 120  # a guard against a hang, not a timing assertion
    again = waiting
    while "refused" not in again["description"] and time.monotonic() < deadline:
        time.sleep(0.3)
        again = wait_for_pending(release)
    assert "The last answer was refused:** a rejection needs a reason" in again["description"]
    assert project.live("outreachpass-worker-prod") == "1"

    code, out, err = project.cli("reject", waiting["id"], "--approver", "bob")
    assert code == 2 and "a rejection needs a reason" in err and "--reason" in err
    code, out, err = project.cli("reject", waiting["id"], "--approver", "bob", "--reason", "freeze until Monday")
    assert code == 0, err

    state = release.result(timeout=120)
    assert state.is_failed()
    assert "rejected by bob: freeze until Monday; prod untouched" in str(state.message)
    assert project.live("outreachpass-worker-prod") == "1"
    assert live_version(project, "outreachpass-worker-dev").startswith("opcd worker v1")
    assert any(t.startswith("release v1: prod rejected by bob: freeze until Monday") for t in sink.texts())
    assert sink.texts()[-1].startswith("release v1: rejected:")
    assert len([t for t in sink.texts() if "ended Failed" in t]) == 0  # the hook does not repeat the summary
    assert "[opcd] release v1 rejected" in [m.subject for m in sent_email()]


def test_no_answer_in_time_is_a_rejection(project: Project, prefect_server: None, sink: SlackSink) -> None:
    project.set_config('timeout = "120s", poll_interval = "1s"', 'timeout = "2s", poll_interval = "1s"')
    state = start_release(project, "v1", components=["worker"]).result(timeout=180)
    assert state.is_failed()
    assert "approval for prod timed out" in str(state.message) and "prod untouched" in str(state.message)
    assert project.live("outreachpass-worker-prod") == "1"
    assert any("timed out" in t for t in sink.texts())


def test_a_failure_in_dev_lets_the_others_finish_and_stops_before_prod(
    project: Project, prefect_server: None, sink: SlackSink
) -> None:
    project.write_source(RAISES_ON_IMPORT)  # the backend's new version cannot import: smoke check fails
    state = start_release(project, "v1", components=["backend", "worker"]).result(timeout=300)

    assert state.is_failed()
    message = str(state.message)
    assert "dev failed (backend: failed" in message and "prod untouched" in message
    assert project.ledger("dev", "backend")["outcome"] == "failed"
    assert project.ledger("dev", "worker")["outcome"] == "deployed"
    assert project.live("outreachpass-api-dev") == "1"  # live untouched: the smoke check ran before traffic
    for function in ("outreachpass-api-prod", "outreachpass-worker-prod"):
        assert project.live(function) == "1"
    assert not [t for t in sink.texts() if "approval requested" in t]  # nobody is asked to approve
    assert any(t.startswith("release v1: dev: 1 of 2 FAILED (backend)") for t in sink.texts())
    assert [m.subject for m in sent_email()] == ["[opcd] release v1 failed"]


def test_a_failure_in_prod_rolls_that_component_back_and_keeps_the_others(
    project: Project, prefect_server: None, sink: SlackSink
) -> None:
    project.write_source(UNHEALTHY_IN_PROD)
    release = start_release(project, "v1", components=["backend", "worker"])
    waiting = wait_for_pending(release)
    code, out, err = project.cli("approve", waiting["id"], "--approver", "bob", "--reason", "go")
    assert code == 0, err
    state = release.result(timeout=300)

    assert state.is_failed()
    assert project.ledger("prod", "backend")["outcome"] == "rolled-back"
    assert project.live("outreachpass-api-prod") == "1"  # back on what was live before
    assert live_version(project, "outreachpass-worker-prod").startswith("opcd worker v1")
    message = str(state.message)
    assert "prod failed (backend: rolled-back, live a version opcd did not deploy (Lambda version 1))" in message
    summary = project.client("s3").list_objects_v2(Bucket="outreachpass-artifacts", Prefix="ledger/releases/v1/")
    assert summary["KeyCount"] == 1
    rollback = [t for t in sink.texts() if "ROLLED BACK: live now" in t]
    assert rollback == [
        "release v1: backend in prod was ROLLED BACK: live now a version opcd did not deploy (Lambda version 1)"
    ]
    final = sink.messages[-1]
    assert final["text"].startswith("release v1: failed: prod failed")
    fields = {f["text"].split("\n", 1)[0]: f["text"] for f in final["blocks"][1]["fields"]}
    assert "prod: deployed, live v1" in fields["*worker*"] and "prod: rolled-back" in fields["*backend*"]


def test_slack_failures_are_retried_and_never_fail_a_release(
    project: Project, prefect_server: None, sink: SlackSink
) -> None:
    # One answer per request, in order (0: taken). 1st message: 500, then 429, then taken (retried
    # twice); 2nd: 500 four times (3 retries, then given up); 3rd: taken at once.
    sink.fail_next = [500, 429, 0, 500, 500, 500, 500]
    state = start_release(project, "v1", components=["worker"], environments=["dev"]).result(timeout=120)

    assert state.is_completed()
    summary = state.result()
    assert summary["outcome"] == "released"
    assert sink.requests == 3 + 4 + 1
    assert [t.split(":")[1].strip() for t in sink.texts()] == ["started by root", "released"]
    assert len(summary["notify_failures"]) == 1 and "HTTP 500" in summary["notify_failures"][0]
    assert "dev: 1 of 1 deployed" in summary["notify_failures"][0]
    recorded = project.client("s3").list_objects_v2(Bucket="outreachpass-artifacts", Prefix="ledger/releases/v1/")
    body = project.client("s3").get_object(Bucket="outreachpass-artifacts", Key=recorded["Contents"][0]["Key"])
    assert json.loads(body["Body"].read())["notify_failures"] == summary["notify_failures"]
    assert live_version(project, "outreachpass-worker-dev").startswith("opcd worker v1")


def test_bad_input_is_refused_before_anything_is_built(project: Project) -> None:
    for args, message in (
        (("--version", "not a version"), "'not a version' is not a version"),
        (("--version", "v1", "--component", "payments"), "payments"),
        (("--version", "v1", "--env", "staging"), "staging"),
        (("--version", "v1", "--git-sha", "HEAD~1"), "'HEAD~1' is not a commit sha"),
        (("--version", "v1", "--env", "prod"), "backend v1 is not live in dev, which comes before prod"),
    ):
        code, out, err = project.cli("release", *args)
        assert code == 2 and message in err and err.count("\n") == 1, (args, err)
    project.client_for("apprunner")  # the sandbox answers; the missing resource is ours:
    project.client("lambda").delete_function(FunctionName="outreachpass-worker-prod")
    code, out, err = project.cli("release", "--version", "v1")
    assert code == 2 and "outreachpass-worker-prod" in err
    listed = project.client("s3").list_objects_v2(Bucket="outreachpass-artifacts")
    assert listed["KeyCount"] == 0  # nothing built, nothing recorded


def test_dry_run_shows_the_plan_and_changes_nothing(project: Project) -> None:
    code, out, err = project.cli("release", "--version", "v1", "--dry-run")
    assert code == 0, err
    assert "components: backend, worker, frontend (all components: no commit given to compare)" in out
    assert "dev (no approval):" in out and "prod (approval by alice or bob first):" in out
    assert "  backend: live now a version opcd did not deploy (Lambda version 1) → v1" in out
    assert project.live("outreachpass-api-dev") == "1"
    assert project.client("s3").list_objects_v2(Bucket="outreachpass-artifacts")["KeyCount"] == 0


def test_a_failed_deploy_whose_last_record_says_shifting_is_a_failure(project: Project) -> None:
    """The child failed after its `shifting` record and before its outcome: never counted as deployed."""
    from types import SimpleNamespace

    from prefect.states import Completed, Failed

    from flows.release import step_of
    from opcd.aws import resolve_target
    from opcd.config import load_config

    config = load_config(project.config_path)
    target = resolve_target(config.state_dir(), config.project.region)
    record = {"component": "backend", "environment": "dev", "action": "deploy", "version": "v1",
              "outcome": "shifting", "reason": "moving live from 1 to 2", "live_lambda_version": "1"}  # fmt: skip
    failed: Any = SimpleNamespace(state=Failed(message="ThrottlingException", data=record))
    step = step_of(config, target, "backend", "dev", failed)
    assert step.failed and step.outcome == "error" and "ledger says shifting" in str(step.reason)
    done: Any = SimpleNamespace(state=Completed(data={**record, "outcome": "deployed"}))
    assert not step_of(config, target, "backend", "dev", done).failed


def test_a_build_that_fails_ends_the_release_with_a_record_a_message_and_one_line(
    project: Project, prefect_server: None, sink: SlackSink
) -> None:
    # S3 answers 503 to the backend's upload: the build step fails; the ledger (same bucket) answers
    project.faults({"method": "PUT", "path": "^/outreachpass-artifacts/backend/", "status": 503, "code": "SlowDown",
                    "count": 100})  # fmt: skip

    code, out, err = project.run("release", "--version", "v9", "--component", "backend")

    assert code == 1, err
    (line,) = error_lines(err)
    assert line.startswith("error: release v9: build failed, nothing deployed: backend failed at upload: AWS"
                           " PutObject answered 503 SlowDown"), line  # fmt: skip
    assert line.endswith(" — AWS is unavailable or throttling: try again in a few minutes")
    (key,) = [o["Key"] for o in project.client("s3").list_objects_v2(
        Bucket="outreachpass-artifacts", Prefix="ledger/releases/v9/")["Contents"]]  # fmt: skip
    summary = json.loads(project.client("s3").get_object(Bucket="outreachpass-artifacts", Key=key)["Body"].read())
    assert summary["outcome"] == "failed" and "backend failed at upload" in summary["detail"]
    assert sink.texts()[-1].startswith("release v9: failed: build failed, nothing deployed: backend failed at upload")
    assert project.live() == "1"
