"""deploy-backend end to end against the sandbox: the issue's "must show" list."""

from __future__ import annotations

import json
from typing import Any

import pytest
from botocore.exceptions import ClientError

from sandbox.slack import SlackSink
from tests.conftest import RAISES_ON_IMPORT, UNHEALTHY_UNDER_TRAFFIC, AliasWatcher, Project, error_lines


def status(project: Project) -> list[dict[str, object]]:
    code, out, err = project.cli("status", "--json")
    assert code == 0, err
    rows: list[dict[str, object]] = json.loads(out)
    return rows


def test_v1_then_v2_serves_v2_and_status_says_so(deployed: Project) -> None:
    # given v1 then v2 deployed (fixture)
    # then live points at the version published from v2, which the health URL answers
    assert "opcd backend v2 " in deployed.description(deployed.live())
    answer = deployed.health()
    assert answer.status_code == 200
    assert answer.json()["version"] == "v2"
    dev = next(r for r in status(deployed) if r["environment"] == "dev")
    assert dev["version"] == "v2"
    assert dev["lambda_version"] == deployed.live()
    assert dev["last_outcome"] == "deployed"
    assert dev["flow_run"] and dev["deployed_at"]
    assert dev["drift"] is False
    prod = next(r for r in status(deployed) if r["environment"] == "prod")
    assert prod["version"] is None and prod["lambda_version"] == "1"


def test_migrations_ran_and_the_api_uses_the_database(deployed: Project) -> None:
    import httpx

    url = f"{deployed.endpoint}/_gateway/outreachpass-api-dev/passes"
    created = httpx.post(url, json={"email": "ada@example.org", "event": "launch"}, timeout=30)
    assert created.status_code == 201, created.text
    listed = httpx.get(url, timeout=30).json()["passes"]
    assert [p["email"] for p in listed] == ["ada@example.org"]


def test_import_error_fails_pre_traffic_and_leaves_live_alone(deployed: Project) -> None:
    before = deployed.live()
    deployed.write_source(RAISES_ON_IMPORT)

    code, out, err = deployed.cli("deploy", "backend", "--env", "dev", "--version", "v3")

    assert code == 1
    assert "pre-traffic smoke failed" in err and "Runtime.ImportModuleError" in err
    assert "live untouched on v2" in err
    assert deployed.live() == before
    assert deployed.health().json()["version"] == "v2"
    dev = next(r for r in status(deployed) if r["environment"] == "dev")
    assert dev["last_outcome"] == "failed" and dev["version"] == "v2"


def test_a_syntax_error_is_refused_by_the_build_before_anything_is_uploaded(
    project: Project, prefect_server: None
) -> None:
    lam, s3 = project.client("lambda"), project.client("s3")
    versions = lam.list_versions_by_function(FunctionName="outreachpass-api-dev")["Versions"]
    (project.source / "app" / "models.py").write_text("".join(f"# {n}\n" for n in range(1, 12)) + "def passes(:\n")

    code, out, err = project.cli("deploy", "backend", "--env", "dev", "--version", "v3")

    assert code == 1
    (line,) = [line for line in err.splitlines() if line.startswith("error:")]
    assert "backend v3: app/models.py:12: invalid syntax (SyntaxError)" in line
    assert line.endswith(" — fix the file and build again")
    assert "migrations" not in err
    assert s3.list_objects_v2(Bucket="outreachpass-artifacts", Prefix="backend/v3/")["KeyCount"] == 0
    assert lam.list_versions_by_function(FunctionName="outreachpass-api-dev")["Versions"] == versions  # none published
    assert project.live() == "1"


def test_unhealthy_under_traffic_rolls_back_by_itself(deployed: Project) -> None:
    before = deployed.live()
    deployed.write_source(UNHEALTHY_UNDER_TRAFFIC)

    code, out, err = deployed.cli("deploy", "backend", "--env", "dev", "--version", "v4")

    assert code == 1
    assert "post-traffic health check failed" in err
    assert f"rolled back to v2 (Lambda version {before}), verified" in err
    assert err.count("\n") == 1  # one line, no traceback
    # verified by reading the alias and by the health URL answering v2
    assert deployed.live() == before
    answer = deployed.health()
    assert answer.status_code == 200 and answer.json()["version"] == "v2"
    dev = next(r for r in status(deployed) if r["environment"] == "dev")
    assert dev["last_outcome"] == "rolled-back" and dev["last_run"] == "backend v4 to dev"
    assert dev["flow_run"] == "backend v2 to dev"  # what put the live version live


def test_firing_alarm_after_the_shift_rolls_back(deployed: Project) -> None:
    before = deployed.live()

    def fire() -> None:
        deployed.client("cloudwatch").set_alarm_state(
            AlarmName="outreachpass-api-dev-errors", StateValue="ALARM", StateReason="Errors >= 1"
        )

    with AliasWatcher(deployed, when_moved=fire):
        code, out, err = deployed.cli("deploy", "backend", "--env", "dev", "--version", "v5")

    assert code == 1
    assert "alarm firing: outreachpass-api-dev-errors (Errors >= 1)" in err
    assert deployed.live() == before


def test_rollback_to_v1_then_redeploying_v1_is_a_noop(deployed: Project) -> None:
    code, out, err = deployed.cli("rollback", "backend", "--env", "dev", "--to", "v1")
    assert code == 0, err
    assert "rolled back backend in dev to v1" in out
    assert "opcd backend v1 " in deployed.description(deployed.live())
    assert deployed.health().json()["version"] == "v1"
    live = deployed.live()

    code, out, err = deployed.cli("deploy", "backend", "--env", "dev", "--version", "v1")

    assert code == 0, err
    assert "already live" in out
    assert deployed.live() == live
    versions = deployed.client("lambda").list_versions_by_function(FunctionName="outreachpass-api-dev")["Versions"]
    assert len(versions) == 4  # $LATEST, placeholder, v1, v2: nothing new published


def test_rollback_without_target_goes_to_the_previous_deploy(deployed: Project) -> None:
    code, out, err = deployed.cli("rollback", "backend", "--env", "dev")
    assert code == 0, err
    assert deployed.health().json()["version"] == "v1"


def test_rollback_to_lambda_version_like_the_old_script(deployed: Project) -> None:
    code, out, err = deployed.cli("rollback", "backend", "--env", "dev", "--to-lambda-version", "1")
    assert code == 0, err
    assert deployed.live() == "1"
    assert deployed.health().json()["version"] == "placeholder"


def test_rollback_dry_run_changes_nothing(deployed: Project) -> None:
    before = deployed.live()
    code, out, err = deployed.cli("rollback", "backend", "--env", "dev", "--to", "v1", "--dry-run")
    assert code == 0, err
    assert "would move outreachpass-api-dev:live from v2 (Lambda version" in out and "no changes made" in out
    assert " to v1 (Lambda version" in out
    assert deployed.live() == before
    # someone moves the alias by hand: status says the ledger disagrees
    deployed.client("lambda").update_alias(FunctionName="outreachpass-api-dev", Name="live", FunctionVersion="1")
    dev = next(r for r in status(deployed) if r["environment"] == "dev")
    assert dev["drift"] is True
    code, out, err = deployed.cli("status", "--env", "dev")
    assert "DRIFT: ledger disagrees with live" in out


def test_rollback_to_a_version_never_deployed_is_bad_input(deployed: Project) -> None:
    before = deployed.live()
    code, out, err = deployed.cli("rollback", "backend", "--env", "dev", "--to", "v9")
    assert code == 2
    assert err.startswith("error: backend v9 was never deployed") and "v1, v2" in err
    assert deployed.live() == before


def test_second_deploy_of_a_built_version_reuses_the_artifact(deployed: Project) -> None:
    s3 = deployed.client("s3")
    before = s3.head_object(Bucket="outreachpass-artifacts", Key="backend/v2/lambda.zip")

    code, out, err = deployed.cli("deploy", "backend", "--env", "prod", "--version", "v2")

    assert code == 0, err
    after = s3.head_object(Bucket="outreachpass-artifacts", Key="backend/v2/lambda.zip")
    assert after["LastModified"] == before["LastModified"]  # not uploaded again
    latest = json.loads(
        s3.get_object(Bucket="outreachpass-artifacts", Key="ledger/prod/backend/latest.json")["Body"].read()
    )
    assert latest["artifact"] == "reused" and latest["outcome"] == "deployed"
    assert deployed.health("prod").json()["version"] == "v2"
    # prod shifts by canary (shrunk for tests): 10% first, guarded by alarms, health and smoke
    assert latest["traffic"] == "canary10-0.2s" and latest["bake"]["ended"] == "completed"
    assert [s["percent"] for s in latest["bake"]["steps"]] == [10]
    assert set(latest["bake"]["ticks"][0]["guards"]) == {"alarms", "health", "smoke", "analysis"}
    # no traffic in a 0.2 s canary: the analysis had too few invocations, and prod's setting passes that
    assert (
        latest["bake"]["analysis"]["verdict"] == "inconclusive"
        and latest["bake"]["analysis"]["on_inconclusive"] == "pass"
    )


def test_changed_source_under_a_taken_version_is_refused(deployed: Project) -> None:
    before = deployed.live()
    deployed.write_source("\n# a change\n")
    code, out, err = deployed.cli("deploy", "backend", "--env", "dev", "--version", "v2")
    assert code == 2
    assert "already exists" in err and "pick a new version" in err
    assert deployed.live() == before


def test_artifacts_metadata_and_retention(deployed: Project) -> None:
    s3 = deployed.client("s3")
    meta = json.loads(s3.get_object(Bucket="outreachpass-artifacts", Key="backend/v2/metadata.json")["Body"].read())
    assert {"component", "version", "git_sha", "sha256", "size", "built_at", "builder", "python"} <= set(meta)
    assert meta["component"] == "backend" and meta["version"] == "v2" and meta["python"] == "python3.12"
    rules = s3.get_bucket_lifecycle_configuration(Bucket="outreachpass-artifacts")["Rules"]
    # Terraform's rules (the sandbox seeds them) are as they were: a deploy reads them, never writes them
    assert sorted((r["ID"], r["Expiration"]["Days"]) for r in rules) == [
        ("opcd-retention-backend", 30), ("opcd-retention-frontend", 30), ("opcd-retention-worker", 30)
    ]  # fmt: skip


def test_a_missing_retention_rule_is_warned_of_and_left_to_terraform(
    project: Project, prefect_server: None, caplog: pytest.LogCaptureFixture
) -> None:
    s3 = project.client("s3")
    s3.delete_bucket_lifecycle(Bucket="outreachpass-artifacts")
    code, out, err = project.cli("deploy", "backend", "--env", "dev", "--version", "v1")
    assert code == 0, err
    assert "Bucket outreachpass-artifacts has no retention rule for backend/ (artifacts are never" in caplog.text
    with pytest.raises(ClientError) as raised:  # the deploy role may not write lifecycle rules: it never does
        s3.get_bucket_lifecycle_configuration(Bucket="outreachpass-artifacts")
    assert raised.value.response["Error"]["Code"] == "NoSuchLifecycleConfiguration"


def test_secrets_stay_out_of_the_ledger_and_output(project: Project, prefect_server: None) -> None:
    secret = project.client("secretsmanager").get_secret_value(SecretId="outreachpass/dev/database")["SecretString"]
    code, out, err = project.cli("deploy", "backend", "--env", "dev", "--version", "v1")
    assert code == 0, err
    s3 = project.client("s3")
    for obj in s3.list_objects_v2(Bucket="outreachpass-artifacts", Prefix="ledger/")["Contents"]:
        assert secret not in s3.get_object(Bucket="outreachpass-artifacts", Key=obj["Key"])["Body"].read().decode()
    assert secret not in out + err


def test_a_run_that_died_mid_shift_is_reported_by_the_next(
    project: Project, prefect_server: None, caplog: pytest.LogCaptureFixture
) -> None:
    record = {"component": "backend", "environment": "dev", "action": "deploy", "outcome": "shifting", "version": "v0",
              "previous_lambda_version": "1", "lambda_version": "2", "flow_run_name": "killed-run"}  # fmt: skip
    project.client("s3").put_object(
        Bucket="outreachpass-artifacts", Key="ledger/dev/backend/latest.json", Body=json.dumps(record).encode()
    )
    code, out, err = project.cli("deploy", "backend", "--env", "dev", "--version", "v1")
    assert code == 0, err
    assert "The previous run (killed-run) died while moving live from Lambda version 1 to 2" in caplog.text
    rows = status(project)
    assert rows[0]["last_outcome"] == "deployed"


def test_a_failed_rollback_hook_is_retried_and_verified(deployed: Project, caplog: pytest.LogCaptureFixture) -> None:
    import httpx

    before = deployed.live()
    deployed.write_source(UNHEALTHY_UNDER_TRAFFIC)
    # the shift (first alias update) passes; the rollback hook's update is denied once
    fault = {
        "method": "PUT",
        "path": "/aliases/live$",
        "skip": 1,
        "count": 1,
        "status": 403,
        "code": "AccessDeniedException",
    }
    httpx.post(f"{deployed.endpoint}/_opcd/faults", json=fault, timeout=10).raise_for_status()

    code, out, err = deployed.cli("deploy", "backend", "--env", "dev", "--version", "v6")

    assert code == 1
    assert f"rolled back to v2 (Lambda version {before}), verified" in err
    assert "AccessDeniedException" in caplog.text  # the hook's own failure is on record
    assert "moving it back once more" in caplog.text
    assert deployed.live() == before
    assert httpx.get(f"{deployed.endpoint}/_opcd/faults", timeout=10).json() == {"faults": []}


def test_any_lambda_component_name_deploys(project: Project, prefect_server: None) -> None:
    text = project.config_path.read_text().replace("[components.backend]", "[components.api]")
    text = text.replace('backend = "outreachpass-api-', 'api = "outreachpass-api-')
    text = text.replace('health = { backend = "https', 'health = { api = "https')
    text = text.replace('traffic = { backend = "canary', 'traffic = { api = "canary')
    project.config_path.write_text(text)
    code, out, err = project.cli("deploy", "api", "--env", "dev", "--version", "v1")
    assert code == 0, err
    assert project.health().json()["version"] == "v1"


def few_attempts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every AWS call tried twice (new clients): with every attempt throttled, two are enough to show it."""
    import opcd.aws

    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
    monkeypatch.setattr(opcd.aws, "_clients", {})


def test_a_persistent_429_on_update_alias_fails_before_traffic_moved(
    deployed: Project, sink: SlackSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    import httpx

    before = deployed.live()
    few_attempts(monkeypatch)
    throttled = {"method": "PUT", "path": "/aliases/live$", "status": 429, "code": "TooManyRequestsException",
                 "count": 100}  # fmt: skip
    httpx.post(f"{deployed.endpoint}/_opcd/faults", json=throttled, timeout=10).raise_for_status()

    with AliasWatcher(deployed) as watcher:
        code, out, err = deployed.cli("deploy", "backend", "--env", "dev", "--version", "v3")

    assert code == 1
    assert "AWS UpdateAlias failed: TooManyRequestsException" in err and "AWS is throttling: retry in a minute" in err
    assert f"traffic never moved: live untouched on v2 (Lambda version {before})" in err
    assert "rolled back" not in err
    assert watcher.seen == [(before, {})]  # the alias never left v2
    latest = deployed.ledger("dev", "backend")
    assert (latest["outcome"], latest["live_version"]) == ("failed", "v2")
    outcome = sink.texts()[-1]
    assert f"deploy FAILED before traffic moved; live untouched on v2 (Lambda version {before})" in outcome
    assert "ROLLED BACK" not in outcome


def test_rollback_goes_only_to_what_was_live_unless_forced(deployed: Project, sink: SlackSink) -> None:
    before = deployed.live()
    deployed.write_source(UNHEALTHY_UNDER_TRAFFIC)
    code, out, err = deployed.cli("deploy", "backend", "--env", "dev", "--version", "v3")
    assert code == 1 and deployed.live() == before  # v3 moved in, failed its health check, moved out
    versions = deployed.client("lambda").list_versions_by_function(FunctionName="outreachpass-api-dev")["Versions"]
    v3 = next(v["Version"] for v in versions if v.get("Description", "").startswith("opcd backend v3 "))

    code, out, err = deployed.cli("rollback", "backend", "--env", "dev", "--to", "v3")
    assert code == 2
    assert err.startswith("error: backend v3 was never live in dev")
    assert "versions that were live: v1, v2; --force goes to it anyway" in err
    code, out, err = deployed.cli("rollback", "backend", "--env", "dev", "--to-lambda-version", v3)
    assert code == 2
    assert f"Lambda version {v3} of outreachpass-api-dev was never live" in err
    assert f"Lambda versions that were live: 1, 2, {before};" in err
    assert deployed.live() == before

    code, out, err = deployed.cli("rollback", "backend", "--env", "dev", "--to", "v3", "--force")

    assert code == 1
    assert err.startswith(f"error: moved live to v3 (Lambda version {v3}): post-traffic health check failed")
    assert f"rolled back to v2 (Lambda version {before}), verified" in err
    assert deployed.live() == before and deployed.health().json()["version"] == "v2"
    latest = deployed.ledger("dev", "backend")
    assert (latest["action"], latest["outcome"], latest["force"]) == ("rollback", "rolled-back", True)
    assert (latest["version"], latest["live_version"]) == ("v3", "v2")
    outcome = sink.texts()[-1]
    assert outcome.endswith(
        f"rollback FAILED: traffic moved to v3, which failed its checks, and moved back;"
        f" live on v2 (Lambda version {before}), verified"
    )
    assert "before traffic moved" not in outcome and "untouched" not in outcome


def test_a_broken_requirements_file_fails_at_build_with_a_record_a_message_and_one_line(
    project: Project, prefect_server: None, sink: SlackSink
) -> None:
    (project.source / "requirements.txt").write_text("alembic==1.20.1\nnot a requirement!\n")

    code, out, err = project.run("deploy", "backend", "--env", "dev", "--version", "v9")

    assert code == 1, err
    (line,) = error_lines(err)
    assert line.startswith("error: deploy backend v9 to dev failed at build: installing requirements.txt"), line
    assert "Invalid requirement" in line and "nothing changed, live untouched" in line and " — " in line
    record = project.ledger("dev", "backend")
    assert (record["outcome"], record["step"], record["version"]) == ("failed", "build", "v9")
    assert record["live_lambda_version"] == project.live() == "1"
    (message,) = sink.texts()
    assert message.startswith("backend v9 → dev: deploy FAILED before traffic moved; live untouched")


def test_s3_unavailable_on_upload_is_retried_a_bounded_time_and_said_in_one_line(
    project: Project, prefect_server: None, sink: SlackSink
) -> None:
    # S3 answers 503 SlowDown to every PUT of the artifact and of the ledger (the same bucket)
    bucket = "^/outreachpass-artifacts/"
    project.faults(
        {"method": "PUT", "path": bucket + "backend/", "status": 503, "code": "SlowDown", "count": 100},
        {"method": "PUT", "path": bucket + "ledger/", "status": 503, "code": "SlowDown", "count": 100},
    )

    code, out, err = project.run("deploy", "backend", "--env", "dev", "--version", "v9")

    upload, ledger = project.faults()
    assert (100 - upload["count"], 100 - ledger["count"]) == (5, 5)  # boto's 5 attempts each, nothing on top
    assert code == 1, err
    (line,) = error_lines(err)
    assert line.startswith("error: deploy backend v9 to dev failed at upload: AWS PutObject answered 503 SlowDown")
    assert "the ledger record could not be written either" in line
    assert line.endswith(" — AWS is unavailable or throttling: try again in a few minutes")
    (message,) = sink.texts()  # Slack still hears of it
    assert "deploy FAILED before traffic moved" in message
    assert project.live() == "1"


def test_the_sandbox_stopping_mid_build_is_one_line_naming_the_step(
    project: Project, prefect_server: None, sandbox: Any, sink: SlackSink
) -> None:
    """AWS stops answering once the build has begun: connections refused, as by a sandbox that stopped.

    The build's first AWS call: the bucket's retention rule, read before the upload (the plan, made before,
    found the version not built).
    """
    import socket

    from sandbox.server import _Thread, read_info, write_info

    def stops_at_the_build(environ: dict[str, Any], start_response: Any) -> Any:
        if "lifecycle" in environ.get("QUERY_STRING", ""):  # the build's first call, before its upload
            server.stop()
            environ["werkzeug.socket"].shutdown(socket.SHUT_RDWR)
            raise ConnectionResetError("the sandbox stopped")
        return sandbox.app(environ, start_response)

    server = _Thread(stops_at_the_build, 0)  # the sandbox's state, served on a port of its own
    server.thread.start()
    state = project.root / ".opcd"
    write_info(state, {**(read_info(state) or {}), "aws_endpoint_url": server.url})

    code, out, err = project.run("deploy", "backend", "--env", "dev", "--version", "v9")

    assert code == 1, err
    (line,) = error_lines(err)
    assert line.startswith("error: deploy backend v9 to dev failed at upload: AWS did not answer: Could not connect")
    assert "nothing changed, live untouched" in line and "the ledger record could not be written either" in line
    assert line.endswith(" — is the sandbox (`opcd sandbox up`) or the network up? try again then")
    (message,) = sink.texts()  # Slack does not depend on AWS
    assert "deploy FAILED before traffic moved" in message
    assert project.live() == "1"


# Under live traffic the health check fails, and from that moment AWS throttles every GetAlias (the
# handler itself asks the sandbox for the fault, so that it starts exactly after the shift).
THROTTLES_GET_ALIAS_UNDER_TRAFFIC = """

import json as _json
import urllib.request as _request

_handler = handler


def handler(event, context):
    if event.get("rawPath") == "/health" and context.invoked_function_arn.endswith(":live"):
        fault = {"method": "GET", "path": "/aliases/live$", "status": 429, "code": "TooManyRequestsException",
                 "count": 1000}
        ask = _request.Request("ENDPOINT/_opcd/faults", data=_json.dumps(fault).encode(), method="POST")
        _request.urlopen(ask, timeout=10).close()
        return _response(500, {"status": "unhealthy"})
    return _handler(event, context)
"""


def test_a_failure_handler_that_cannot_read_the_alias_still_records_and_reports(
    deployed: Project, sink: SlackSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    import httpx

    before = deployed.live()
    few_attempts(monkeypatch)
    deployed.write_source(THROTTLES_GET_ALIAS_UNDER_TRAFFIC.replace("ENDPOINT", deployed.endpoint))

    code, out, err = deployed.cli("deploy", "backend", "--env", "dev", "--version", "v3")

    assert code == 1
    assert "unknown: could not read the alias: AWS GetAlias failed: TooManyRequestsException" in err
    latest = deployed.ledger("dev", "backend")
    assert (latest["outcome"], latest["live_version"], latest["live_lambda_version"]) == ("rollback-failed", None, None)
    assert "unknown: could not read the alias: AWS GetAlias failed: TooManyRequestsException" in latest["reason"]
    assert "ROLLBACK FAILED" in sink.texts()[-1]  # the message went out: act now
    httpx.delete(f"{deployed.endpoint}/_opcd/faults", timeout=10).raise_for_status()
    assert deployed.live() == before  # the rollback hook itself worked; only reading it back failed
