"""The release flow end to end against the sandbox: parallel builds and deploys, the approval gate
answered through the Prefect API (as the UI's Resume form does), Slack and SES notifications."""

from __future__ import annotations

import json
import re
import shutil
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import httpx
import pytest
from moto.backends import get_backend

from sandbox.slack import SlackSink
from tests.commits import committed
from tests.conftest import (
    RAISES_ON_IMPORT,
    UNHEALTHY_UNDER_TRAFFIC,
    Project,
    error_lines,
    start_in_thread,
    wait_for_pending,
)
from tests.github_stub import GitHubStub, serving

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
    sha = committed(project)  # a commit the release can fetch, on main
    release = start_release(project, "v1", git_sha=sha[:7])
    waiting = wait_for_pending(release)

    # The form says what will be deployed, what is live in prod now and how dev went.
    assert waiting["environment"] == "prod" and waiting["approvers"] == ["alice", "bob"]
    description = waiting["description"]
    assert "Release v1 to **prod**" in description and f"`{sha}`" in description
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
    # prod's canary and linear bakes ran as child flow runs of their own (opcd promote|abort address
    # them); every other deploy ran in the release's `deploy` task
    runs = {(env, c): project.ledger(env, c)["flow_run_name"] for env in ("dev", "prod") for c in ("backend", "worker")}
    assert runs == {("dev", "backend"): "release v1", ("dev", "worker"): "release v1",
                    ("prod", "backend"): "backend v1 to prod", ("prod", "worker"): "worker v1 to prod"}  # fmt: skip
    assert project.ledger("prod", "frontend")["flow_run_name"] == "release v1"

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


def in_account_222(project: Project) -> Any:
    """Prod's worker function in account 222222222222 (as prod's role reaches it), live on its v-222."""
    from opcd.aws import target_for
    from opcd.config import load_config
    from opcd.iam import unrecorded

    prod = target_for(load_config(project.config_path), "prod")
    with unrecorded():  # Terraform's part, not opcd's: the IAM proof leaves these calls out
        make_worker_222(prod)
    return prod


def make_worker_222(prod: Any) -> None:
    import io
    import zipfile

    from tasks.lambda_functions import version_description

    prod.client("iam").create_role(RoleName="worker-exec", AssumeRolePolicyDocument="{}")
    package = io.BytesIO()
    with zipfile.ZipFile(package, "w") as archive:
        archive.writestr("worker.py", "def handler(event, context):\n    return {}\n")
    lam = prod.client("lambda")
    lam.create_function(
        FunctionName="outreachpass-worker-prod", Runtime="python3.11", Handler="worker.handler",
        Role="arn:aws:iam::222222222222:role/worker-exec", Code={"ZipFile": package.getvalue()},
    )  # fmt: skip
    published = lam.publish_version(
        FunctionName="outreachpass-worker-prod", Description=version_description("worker", "v-222", "0" * 64)
    )
    lam.create_alias(FunctionName="outreachpass-worker-prod", Name="live", FunctionVersion=published["Version"])
    prod.client("cloudwatch").put_metric_alarm(
        AlarmName="outreachpass-api-prod-errors", MetricName="Errors", Namespace="AWS/Lambda", Statistic="Sum",
        Period=60, EvaluationPeriods=1, Threshold=1, ComparisonOperator="GreaterThanOrEqualToThreshold",
    )  # fmt: skip


def test_each_environment_is_read_as_its_own_role(project: Project, prefect_server: None, sink: SlackSink) -> None:
    prod_role = "arn:aws:iam::222222222222:role/opcd-deploy"  # prod in another account, reached by STS
    project.set_config("[environments.prod]\n", f'[environments.prod]\nrole_arn = "{prod_role}"\n')
    in_account_222(project)

    release = start_release(project, "v1", components=["worker"])
    waiting = wait_for_pending(release)

    # what runs in prod is read in prod's account, through its role, not in the worker's own account
    assert "live in prod now: v-222 (Lambda version 1)" in waiting["description"], waiting["description"]
    code, out, err = project.cli("reject", waiting["id"], "--approver", "bob", "--reason", "wrong account")
    assert code == 0, err
    assert release.result(timeout=120).is_failed()
    # the release's record went to the ledger (the bucket both accounts' roles write)
    keys = project.client("s3").list_objects_v2(Bucket="outreachpass-artifacts", Prefix="ledger/releases/v1/")
    assert keys.get("KeyCount") == 1


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


REPO = "outreachpass/outreachpass"
SELF_DECLARED = 'approval = { approvers = ["alice", "bob"], timeout = "120s", poll_interval = "1s" }'
VERIFIED_BY_GITHUB = (
    'approval = { approvers = [{ name = "alice", github = "alice-gh" }, { name = "bob", github = "bob-gh" }],'
    f' verify = "github", repository = "{REPO}", github_api = "GITHUB_API", timeout = "120s", poll_interval = "1s" }}'
)  # GITHUB_API: the stand-in's address (approvals are verified only where opcd.toml says)


@pytest.fixture
def github(monkeypatch: pytest.MonkeyPatch) -> Iterator[GitHubStub]:
    with serving(monkeypatch) as stub:  # GITHUB_TOKEN: the worker's own token
        yield stub


def start_verified_release(project: Project, github: GitHubStub) -> tuple[Future[Any], dict[str, Any]]:
    """A release of the worker whose prod gate is verified by GitHub (the stand-in), once it waits there."""
    project.set_config(SELF_DECLARED, VERIFIED_BY_GITHUB.replace("GITHUB_API", github.url))
    release = start_release(project, "v1", components=["worker"])
    return release, wait_for_pending(release)


def refused_again(release: Future[Any], refusal: str) -> dict[str, Any]:
    """The gate once the flow refused an answer with ``refusal`` and paused again."""
    deadline = time.monotonic() + 120  # a guard against a hang, not a timing assertion
    waiting = wait_for_pending(release)
    while f"The last answer was refused:** {refusal}" not in waiting["description"]:
        assert time.monotonic() < deadline, waiting["description"][:300]
        time.sleep(0.3)
        waiting = wait_for_pending(release)
    return waiting


def release_record(project: Project, version: str) -> dict[str, Any]:
    s3 = project.client("s3")
    (item,) = s3.list_objects_v2(Bucket="outreachpass-artifacts", Prefix=f"ledger/releases/{version}/")["Contents"]
    record: dict[str, Any] = json.loads(s3.get_object(Bucket="outreachpass-artifacts", Key=item["Key"])["Body"].read())
    return record


def test_a_prod_approval_verified_by_github_refuses_every_answer_without_proof(
    project: Project, prefect_server: None, sink: SlackSink, github: GitHubStub
) -> None:
    from prefect.client.orchestration import get_client

    from flows.release import summary_markdown

    release, waiting = start_verified_release(project, github)
    run_id = waiting["id"]
    assert waiting["approvers"] == ["alice", "bob"] and "**Verified by GitHub**" in waiting["description"]

    # `opcd approve` with a name only: the CLI says where approvals are given; nothing reaches the run.
    code, out, err = project.cli("approve", run_id, "--approver", "alice", "--reason", "lgtm")
    assert code == 2 and "error: prod is approved in GitHub, not by a name given here" in err
    title = f"opcd approve {run_id} for prod"  # approve.yml's run-name
    github.add_run("mallory/fork", 201, title, [("approved", "alice-gh", "prod-approval", "")])
    github.add_run(REPO, 202, title, [("approved", "mallory-gh", "prod-approval", "")])
    github.add_run(
        REPO, 203, title, [("approved", "bob-gh", "prod-approval", "")], created_at=datetime(2020, 1, 1, tzinfo=UTC)
    )  # noqa: E501
    github.add_run(REPO, 204, title, [("approved", "alice-gh", "prod-approval", "")])
    answers = [  # each straight through the API, as the UI's form or a stolen key would send it
        ({"approved": True, "reason": "lgtm"}, "prod is approved in GitHub: this answer names no approval run"),
        ({"approved": True, "github_run": 201}, f"GitHub run 201 of {REPO} could not be checked: GitHub answered 404"),
        ({"approved": True, "github_run": 202}, f"run 202 of {REPO} was reviewed for prod-approval by mallory-gh"),
        ({"approved": True, "github_run": 203}, f"run 203 of {REPO} was started at 2020-01-01T00:00:00Z, before"),
    ]  # fmt: skip
    for run_input, refusal in answers:
        with get_client(sync_client=True) as client:
            assert client.resume_flow_run(run_id, run_input=run_input).status.value == "ACCEPT"
        refused_again(release, refusal)
    assert project.live("outreachpass-worker-prod") == "1"  # prod untouched by any of them

    code, out, err = project.cli("approve", run_id, "--github-run", "204", "--reason", "dev looks good")
    assert code == 0 and "with GitHub run 204, which it checks" in out, err
    state = release.result(timeout=300)
    assert state.is_completed(), state
    assert live_version(project, "outreachpass-worker-prod").startswith("opcd worker v1")
    how = f"verified by GitHub: alice-gh approved run 204 of {REPO}"
    record = release_record(project, "v1")  # the ledger
    (approval,) = record["approvals"]
    assert approval["approver"] == "alice" and approval["verified"] == how and len(approval["refused"]) == 4
    approved = [m for m in sink.messages if m["text"].startswith("release v1: prod approved by alice: dev looks good")]
    assert len(approved) == 1 and how in json.dumps(approved[0]["blocks"])  # Slack
    assert f"Approval for prod: approved by alice: dev looks good ({how})" in summary_markdown(record)  # the summary
    checked = {path for method, path, _ in github.requests if method == "GET"}
    runs = [f"/repos/{REPO}/actions/runs/{n}" for n in (201, 202, 203, 204)]
    # 201 is no run of this repository (404): nothing more is asked about it
    assert checked == {*runs, *(f"{run}/approvals" for run in runs[1:])}


def test_a_github_reviewers_rejection_rejects_the_release(
    project: Project, prefect_server: None, sink: SlackSink, github: GitHubStub
) -> None:
    release, waiting = start_verified_release(project, github)
    github.add_run(REPO, 301, f"opcd approve {waiting['id']} for prod", [
        ("rejected", "bob-gh", "prod-approval", "not during the sale"),
    ])  # fmt: skip
    code, out, err = project.cli("approve", waiting["id"], "--github-run", "301")  # answered approve: still rejected
    assert code == 0, err

    state = release.result(timeout=120)
    assert state.is_failed() and "rejected by bob: not during the sale; prod untouched" in str(state.message)
    assert project.live("outreachpass-worker-prod") == "1"
    (approval,) = release_record(project, "v1")["approvals"]
    assert approval["approved"] is False
    assert approval["verified"] == f"verified by GitHub: bob-gh rejected run 301 of {REPO}"
    assert any(t.startswith("release v1: prod rejected by bob: not during the sale") for t in sink.texts())


def test_no_answer_in_time_is_a_rejection(project: Project, prefect_server: None, sink: SlackSink) -> None:
    project.set_config('timeout = "120s", poll_interval = "1s"', 'timeout = "2s", poll_interval = "1s"')
    state = start_release(project, "v1", components=["worker"]).result(timeout=180)
    assert state.is_failed()
    # its own outcome, said once per environment, not a rejection
    said = re.compile(r"prod: approval timed out after \d+ s; nothing deployed there")
    assert said.search(str(state.message)), state.message
    assert project.live("outreachpass-worker-prod") == "1"
    assert [t for t in sink.texts() if said.search(t)][0].startswith("release v1: prod: approval timed out")
    assert sink.texts()[-1].startswith("release v1: timed-out: prod: approval timed out after")
    assert not any("rejected" in t or "prod approval for prod" in t for t in sink.texts())
    assert "[opcd] release v1 timed-out" in [m.subject for m in sent_email()]


def test_a_failure_in_dev_lets_the_others_finish_and_stops_before_prod(
    project: Project, prefect_server: None, sink: SlackSink
) -> None:
    project.write_source(RAISES_ON_IMPORT)  # the backend's new version cannot import: smoke check fails
    state = start_release(project, "v1", components=["backend", "worker"]).result(timeout=300)

    assert state.is_failed()
    message = str(state.message)
    assert "dev failed (backend: failed" in message and "prod untouched" in message
    assert project.ledger("dev", "backend")["outcome"] == "failed"
    # rollback-all then takes the worker back to Lambda version 1, the sandbox's placeholder, which fails the
    # worker's sample event: a rollback never leaves a version that fails its checks live, so v1 stays (verified)
    worker = project.ledger("dev", "worker")
    assert (worker["action"], worker["outcome"], worker["live_version"]) == ("rollback", "rolled-back", "v1")
    assert "rolled back with it: worker (ROLLBACK FAILED, live v1 (Lambda version 2))" in message
    assert project.live("outreachpass-api-dev") == "1"  # live untouched: the smoke check ran before traffic
    for function in ("outreachpass-api-prod", "outreachpass-worker-prod"):
        assert project.live(function) == "1"
    assert not [t for t in sink.texts() if "approval requested" in t]  # nobody is asked to approve
    assert any(t.startswith("release v1: dev: 1 of 2 FAILED (backend)") for t in sink.texts())
    assert [m.subject for m in sent_email()] == ["[opcd] release v1 failed"]


def test_a_failure_in_prod_rolls_that_component_back_and_with_keep_leaves_the_others(
    project: Project, prefect_server: None, sink: SlackSink
) -> None:
    with project.config_path.open("a") as toml:
        toml.write('\n[release]\non_failure = "keep"\n')
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


def served_page(project: Project, path: str, env: str = "dev") -> str:
    """What the App Runner service of ``env`` serves at ``path`` (through the sandbox's stand-in)."""
    return httpx.get(f"{project.apprunner}/_services/outreachpass-web-{env}{path}", timeout=30).text.strip()


def test_a_failed_deploy_rolls_back_the_others_the_release_changed_in_that_environment(
    project: Project, prefect_server: None, sink: SlackSink, request: pytest.FixtureRequest
) -> None:
    """release.on_failure = rollback-all (the default): dev is never left half-released."""
    site = project.root / "src" / "frontend" / "site" / "version.txt"
    site.write_text("v1\n")
    code, out, err = project.cli("deploy", "frontend", "--env", "dev", "--version", "v1")
    assert code == 0, err
    project.write_source(UNHEALTHY_UNDER_TRAFFIC)  # the backend's v2 fails /health once it takes traffic
    site.write_text("v2\n")
    requests = request.getfixturevalue("lock_requests")  # from here on: the deploy above took its own

    state = start_release(project, "v2", components=["backend", "frontend"], environments=["dev"]).result(timeout=300)

    assert state.is_failed()
    # the environment's locks in one request; the deploys and the frontend's rollback under it took none
    assert requests == [["opcd-release-dev", "opcd-env-dev-backend", "opcd-env-dev-frontend"]]
    assert served_page(project, "/version.txt") == "v1"  # what AWS serves: the frontend is back on v1
    assert project.live("outreachpass-api-dev") == "1"  # the backend rolled itself back
    frontend = project.ledger("dev", "frontend")
    assert (frontend["action"], frontend["outcome"], frontend["live_version"]) == ("rollback", "deployed", "v1")
    s3 = project.client("s3")
    listed = s3.list_objects_v2(Bucket="outreachpass-artifacts", Prefix="ledger/dev/frontend/")["Contents"]
    keys = sorted(o["Key"] for o in listed if not o["Key"].endswith(("/latest.json", "/live.json")))
    records = [json.loads(s3.get_object(Bucket="outreachpass-artifacts", Key=k)["Body"].read()) for k in keys]
    assert [(r["action"], r["outcome"], r["version"]) for r in records][-2:] == [
        ("deploy", "deployed", "v2"), ("rollback", "deployed", "v1"),
    ]  # fmt: skip
    message = str(state.message)
    assert "dev failed (backend: rolled-back" in message and "rolled back with it: frontend (live v1 (" in message
    (key,) = [o["Key"] for o in project.client("s3").list_objects_v2(
        Bucket="outreachpass-artifacts", Prefix="ledger/releases/v2/")["Contents"]]  # fmt: skip
    summary = json.loads(project.client("s3").get_object(Bucket="outreachpass-artifacts", Key=key)["Body"].read())
    step = summary["steps"]["dev"]["frontend"]
    assert (step["outcome"], step["rolled_back_because"]) == ("rolled-back", "backend")
    assert step["live"].startswith("v1 (") and "rollback-all" in step["reason"]
    assert any(t.startswith("release v2: dev: 1 of 2 FAILED (backend)") for t in sink.texts())
    said = [t for t in sink.texts() if "frontend in dev was ROLLED BACK: live now v1" in t]
    assert said, sink.texts()
    assert "rolled back with it: frontend" in sink.texts()[-1]


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
    assert "dev (no approval), in parallel:" in out
    assert "prod (approval by alice or bob first, waits at most 2m), in parallel:" in out
    assert (
        "  backend → v1 (outreachpass-api-dev):\n    live now: a version opcd did not deploy (Lambda version 1)" in out
    )
    assert project.live("outreachpass-api-dev") == "1"
    assert project.client("s3").list_objects_v2(Bucket="outreachpass-artifacts")["KeyCount"] == 0


def test_a_failed_deploy_whose_last_record_says_shifting_is_a_failure(project: Project) -> None:
    """The child failed after its `shifting` record and before its outcome: never counted as deployed."""
    from types import SimpleNamespace

    from prefect.states import Completed, Failed

    from flows.release import step_of
    from opcd.aws import resolve_target
    from opcd.config import load_config
    from opcd.outcomes import Outcome
    from tasks.ledger import Record

    config = load_config(project.config_path)
    target = resolve_target(config.state_dir(), config.project.region)
    record = Record(
        "backend", "dev", "deploy", Outcome.SHIFTING, "v1", reason="moving live from 1 to 2", live_lambda_version="1"
    )
    failed: Any = SimpleNamespace(state=Failed(message="ThrottlingException", data=record))
    step = step_of(config, target, "backend", "dev", failed)
    assert step.failed and step.outcome == "error" and "ledger says shifting" in str(step.reason)
    deployed = Record("backend", "dev", "deploy", Outcome.DEPLOYED, "v1", live_lambda_version="2")
    done: Any = SimpleNamespace(state=Completed(data=deployed))
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


def test_max_parallel_1_deploys_one_component_at_a_time(project: Project, prefect_server: None) -> None:
    """`release.max_parallel = 1`: no two deploys in an environment overlap (their ledger records' times)."""
    project.config_path.write_text(project.config_path.read_text() + "\n[release]\nmax_parallel = 1\n")
    state = start_release(project, "v1", components=["backend", "worker"], environments=["dev"]).result(timeout=300)

    assert state.is_completed(), state.message
    records = [project.ledger("dev", "backend"), project.ledger("dev", "worker")]
    spans = sorted((datetime.fromisoformat(r["started_at"]), datetime.fromisoformat(r["finished_at"])) for r in records)
    assert spans[0][1] <= spans[1][0], f"the deploys overlapped: {spans}"
    # neither bakes in dev: each ran in the release's `deploy` task, not as a child flow run of its own
    assert {r["flow_run_name"] for r in records} == {"release v1"}


def test_bounded_starts_the_next_only_when_one_ends() -> None:
    from concurrent.futures import ThreadPoolExecutor

    from prefect.futures import PrefectConcurrentFuture

    from flows.release import bounded

    running, most = 0, 0
    lock = threading.Lock()

    def work() -> None:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.05)
        with lock:
            running -= 1

    with ThreadPoolExecutor(8) as pool:
        futures = bounded(lambda _: PrefectConcurrentFuture(uuid4(), pool.submit(work)), list("abcdefg"), 2)
        for future in futures.values():
            future.wait()
    assert list(futures) == list("abcdefg") and most == 2


def test_wait_all_waits_for_every_deploy_even_when_interrupted() -> None:
    """The release holds the environment's locks for its deploys: a Ctrl-C while it waits must not let them go
    while a deploy still runs."""
    from concurrent.futures import ThreadPoolExecutor

    from prefect.futures import PrefectConcurrentFuture

    from flows.release import wait_all

    ended = threading.Event()

    class Interrupted:  # a wait that a Ctrl-C interrupts the first time
        waits = 0

        def wait(self, timeout: float | None = None) -> None:
            Interrupted.waits += 1
            if Interrupted.waits == 1:
                raise KeyboardInterrupt

    def deploy() -> None:
        time.sleep(0.2)
        ended.set()

    with ThreadPoolExecutor(1) as pool:
        running = PrefectConcurrentFuture(uuid4(), pool.submit(deploy))
        with pytest.raises(KeyboardInterrupt):
            wait_all([Interrupted(), running])  # type: ignore[list-item]
        assert ended.is_set()  # the interrupt went on only once the deploy had ended
