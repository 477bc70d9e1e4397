"""Which AWS opcd talks to, in order: AWS_ENDPOINT_URL, credentials, a running sandbox, AWS."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from opcd.aws import AwsTarget, error_code, resolve_target
from opcd.errors import InputError, UnknownName
from tests.conftest import Project


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(var, raising=False)


def write_sandbox(state: Path, url: str) -> None:
    state.mkdir(parents=True, exist_ok=True)
    info = {
        "aws_endpoint_url": url,
        "region": "us-east-1",
        "pid": 1,
        "gateway": {"https://api.example": f"{url}/_gateway/fn"},
    }
    (state / "sandbox.json").write_text(json.dumps(info))


def test_running_sandbox_is_used_when_nothing_else_is_chosen(tmp_path: Path, sandbox: Any) -> None:
    write_sandbox(tmp_path, sandbox.url)
    target = resolve_target(tmp_path, "eu-west-1")
    assert target.kind == "sandbox" and target.endpoint_url == sandbox.url
    assert target.describe().startswith("AWS target: embedded sandbox at http://127.0.0.1:")
    assert target.resolve_url("https://api.example/health?x=1") == f"{sandbox.url}/_gateway/fn/health?x=1"
    assert target.resolve_url("https://other.example/health") == "https://other.example/health"


def test_no_sandbox_file_means_aws_with_the_default_chain(tmp_path: Path) -> None:
    target = resolve_target(tmp_path, "eu-west-1")
    assert target.kind == "aws" and target.region == "eu-west-1"
    assert target.describe() == "AWS target: AWS eu-west-1, credentials from the default chain"


@pytest.fixture
def no_aws_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any boto3 client made from here on fails the test: nothing may reach AWS."""
    import opcd.aws

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"an AWS client was made: {args}")

    monkeypatch.setattr(opcd.aws, "_clients", {})
    monkeypatch.setattr(opcd.aws, "new_client", refuse)


@pytest.fixture
def silent_port() -> Iterator[tuple[int, list[socket.socket]]]:
    """A port that accepts connections and never answers (a sandbox too loaded to reply); the
    connections it accepted, to count the ping's attempts."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []

    def accept() -> None:
        with contextlib.suppress(OSError):  # the listener closed at the end
            while True:
                accepted.append(listener.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1], accepted
    listener.close()
    thread.join(timeout=10)
    for conn in accepted:
        conn.close()


def closed_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        return int(probe.getsockname()[1])  # nothing listens there once it is closed


def test_a_sandbox_file_whose_sandbox_is_gone_is_refused_not_aws(tmp_path: Path, no_aws_call: None) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    write_sandbox(tmp_path, url)
    with pytest.raises(InputError) as refused:
        resolve_target(tmp_path, "eu-west-1")
    assert refused.value.exit_code == 2
    assert str(refused.value) == (
        f"the sandbox in {tmp_path / 'sandbox.json'} does not answer at {url} — start it"
        f" (`opcd sandbox up --detach`) or remove {tmp_path / 'sandbox.json'} to use AWS"
    )


def test_a_sandbox_that_accepts_but_never_answers_is_refused_after_a_few_tries(
    tmp_path: Path, no_aws_call: None, silent_port: tuple[int, list[socket.socket]], monkeypatch: pytest.MonkeyPatch
) -> None:
    import opcd.aws

    port, accepted = silent_port
    monkeypatch.setattr(opcd.aws, "PING_TIMEOUTS", (0.2, 0.2, 0.2))  # the test's patience, not the product's
    write_sandbox(tmp_path, f"http://127.0.0.1:{port}")
    with pytest.raises(InputError, match="does not answer at"):
        resolve_target(tmp_path, "eu-west-1")
    assert len(accepted) == 3  # one connection per try: a read timeout is tried again


def test_a_refused_ping_is_not_tried_again(monkeypatch: pytest.MonkeyPatch) -> None:
    import opcd.aws

    client, tries = httpx.Client(), []
    real_get = client.get
    monkeypatch.setattr(client, "get", lambda url, **kw: tries.append(url) or real_get(url, **kw))
    monkeypatch.setattr(opcd.aws, "_http", lambda: client)
    assert opcd.aws.ping(f"http://127.0.0.1:{closed_port()}") is False
    assert len(tries) == 1  # refused: nothing listens, no second try
    client.close()


def test_stale_sandbox_refusal_is_one_cli_line_and_exit_2(
    project: Project, no_aws_call: None, capsys: pytest.CaptureFixture[str]
) -> None:
    from cli.main import main

    write_sandbox(project.root / ".opcd", f"http://127.0.0.1:{closed_port()}")
    health = ["health", "https://api.dev.outreachpass.example/health"]  # not checked on the public URL instead
    for command in (["status"], ["deploy", "backend", "--env", "dev", "--version", "v9"], health):
        code = main(["--config", str(project.config_path), *command])
        err = capsys.readouterr().err
        assert code == 2
        assert err.startswith("error: the sandbox in ") and err.count("\n") == 1, err
        assert "does not answer at http://127.0.0.1:" in err and "start it (`opcd sandbox up --detach`)" in err
    # the sandbox commands still read the stale file: `down` clears it
    assert main(["--config", str(project.config_path), "sandbox", "down"]) == 0
    assert not (project.root / ".opcd" / "sandbox.json").exists()


def test_explicit_endpoint_wins(tmp_path: Path, sandbox: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    write_sandbox(tmp_path, sandbox.url)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1234")
    target = resolve_target(tmp_path, "us-east-1")
    assert (target.kind, target.endpoint_url, target.gateway) == ("endpoint", "http://127.0.0.1:1234", {})
    assert "from AWS_ENDPOINT_URL" in target.describe()


def test_exported_sandbox_endpoint_keeps_the_gateway(
    tmp_path: Path, sandbox: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_sandbox(tmp_path, sandbox.url)
    monkeypatch.setenv("AWS_ENDPOINT_URL", sandbox.url)
    assert resolve_target(tmp_path, "us-east-1").kind == "sandbox"


def test_credentials_mean_real_aws(tmp_path: Path, sandbox: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    write_sandbox(tmp_path, sandbox.url)
    monkeypatch.setenv("AWS_PROFILE", "prod-deployer")
    monkeypatch.setenv("AWS_REGION", "eu-central-1")
    target = resolve_target(tmp_path, "us-east-1")
    assert (target.kind, target.region, target.endpoint_url) == ("aws", "eu-central-1", None)


def test_clients_are_cached_per_target_and_service() -> None:
    target = AwsTarget("endpoint", "us-east-1", "http://127.0.0.1:1", credentials=("a", "b"))
    assert target.client("s3") is target.client("s3")
    assert target.client("s3") is not target.client("lambda")


def test_error_code() -> None:
    assert error_code(ValueError("x")) == ""


def test_targets_share_one_session_per_region_and_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    import opcd.aws

    monkeypatch.setattr(opcd.aws, "_sessions", {})
    monkeypatch.setattr(opcd.aws, "_clients", {})
    creds = ("testing", "testing")
    one = AwsTarget("sandbox", "us-east-1", "http://127.0.0.1:1", creds, gateway={"https://a": "http://x"})
    two = AwsTarget("sandbox", "us-east-1", "http://127.0.0.1:1", creds, gateway={"https://b": "http://y"})
    assert one.client("s3") is one.client("s3")  # a client per target and service
    assert one.client("s3") is not two.client("s3")
    assert two.client("s3").meta.endpoint_url == "http://127.0.0.1:1"
    assert len(opcd.aws._sessions) == 1  # the models one session read serve every target
    AwsTarget("sandbox", "eu-west-1", "http://127.0.0.1:1", creds).client("s3")
    AwsTarget("aws", "us-east-1").client("s3")
    assert len(opcd.aws._sessions) == 3


def test_endpoint_variables_are_named_after_the_service_id_as_botocore_reads_them() -> None:
    from opcd.aws import endpoint_variable

    assert endpoint_variable("events") == "AWS_ENDPOINT_URL_EVENTBRIDGE"
    assert endpoint_variable("secretsmanager") == "AWS_ENDPOINT_URL_SECRETS_MANAGER"
    assert endpoint_variable("logs") == "AWS_ENDPOINT_URL_CLOUDWATCH_LOGS"
    assert endpoint_variable("apprunner") == "AWS_ENDPOINT_URL_APPRUNNER"
    assert endpoint_variable("lambda") == "AWS_ENDPOINT_URL_LAMBDA"


def test_a_service_endpoint_variable_sends_that_service_alone_there(
    sandbox: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import opcd.aws

    monkeypatch.setattr(opcd.aws, "_clients", {})
    monkeypatch.delenv("OPCD_RECORD_AWS_CALLS", raising=False)  # it tests where calls go: not the product's calls
    elsewhere = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    # given: a target on a dead endpoint, EventBridge and Secrets Manager sent to the sandbox by
    # their service ids, and the names botocore does not read pointing nowhere
    monkeypatch.setenv("AWS_ENDPOINT_URL_EVENTBRIDGE", sandbox.url)
    monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", sandbox.url)
    monkeypatch.setenv("AWS_ENDPOINT_URL_EVENTS", elsewhere)
    monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETSMANAGER", elsewhere)
    target = AwsTarget("endpoint", "us-east-1", elsewhere, credentials=("testing", "testing"))

    # then: their calls are answered by the sandbox; a service without a variable keeps the target's
    events = target.client("events")
    assert events.meta.endpoint_url == sandbox.url
    assert isinstance(events.list_rules()["Rules"], list)
    assert target.client("secretsmanager").list_secrets()["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert target.client("s3").meta.endpoint_url == elsewhere


def test_the_sandbox_exports_the_variables_botocore_reads() -> None:
    from opcd.aws import endpoint_variable
    from sandbox.server import export_lines

    lines = export_lines({"aws_endpoint_url": "http://a", "apprunner_endpoint_url": "http://b", "region": "us-east-1"})
    assert f"export {endpoint_variable('apprunner')}=http://b" in lines


# --- the account guard -----------------------------------------------------------------------------

SANDBOX_ACCOUNT = "123456789012"  # moto's default account, where the sandbox seeds everything


def set_environment(project: Project, environment: str, lines: str) -> None:
    project.set_config(f"[environments.{environment}]\n", f"[environments.{environment}]\n{lines}\n")


def sts_calls(target: AwsTarget) -> list[str]:
    """The STS operations this target's client makes from now on."""
    seen: list[str] = []
    target.client("sts").meta.events.register("before-call.sts.*", lambda model, **kw: seen.append(model.name))
    return seen


def test_the_right_account_passes_and_the_target_line_names_it(project: Project) -> None:
    import opcd.aws
    from opcd.aws import guarded_target
    from opcd.config import load_config

    opcd.aws._identities.clear()
    set_environment(project, "prod", f'account_id = "{SANDBOX_ACCOUNT}"')
    config = load_config(project.config_path)
    target = guarded_target(config, "prod")
    asked = sts_calls(target)
    assert guarded_target(config, "prod") == target and asked == []  # asked once per target and process
    line = f"AWS target: embedded sandbox at {project.endpoint} (us-east-1), account {SANDBOX_ACCOUNT} as"
    assert target.describe() == f"{line} arn:aws:sts::{SANDBOX_ACCOUNT}:user/moto"

    code, out, err = project.cli("deploy", "backend", "--env", "prod", "--version", "v1", "--dry-run")
    assert code == 0, err
    assert out.splitlines()[0] == f"{line} arn:aws:sts::{SANDBOX_ACCOUNT}:user/moto"


@pytest.mark.parametrize(
    "command",
    [
        ["deploy", "backend", "--env", "prod", "--version", "v7"],
        ["deploy", "frontend", "--env", "prod", "--version", "v7"],
        ["rollback", "backend", "--env", "prod", "--to-lambda-version", "1"],
    ],
)
def test_another_account_is_refused_before_anything_changes(project: Project, command: list[str]) -> None:
    set_environment(project, "prod", 'account_id = "222222222222"')
    code, out, err = project.cli(*command)
    assert code == 2, err
    assert err == (
        f"error: AWS account {SANDBOX_ACCOUNT} (arn:aws:sts::{SANDBOX_ACCOUNT}:user/moto) is not prod's account"
        " 222222222222 — use prod's credentials/role or fix environments.prod.account_id\n"
    )
    # nothing changed: no artifact, no new Lambda version, live and the service as seeded
    assert project.client("s3").list_objects_v2(Bucket="outreachpass-artifacts").get("KeyCount", 0) == 0
    versions = project.client("lambda").list_versions_by_function(FunctionName="outreachpass-api-prod")["Versions"]
    assert [v["Version"] for v in versions] == ["$LATEST", "1"]
    assert project.live("outreachpass-api-prod") == "1"
    services = project.client_for("apprunner").list_services()["ServiceSummaryList"]
    prod = next(s for s in services if s["ServiceName"] == "outreachpass-web-prod")
    described = project.client_for("apprunner").describe_service(ServiceArn=prod["ServiceArn"])["Service"]
    assert described["SourceConfiguration"]["ImageRepository"]["ImageIdentifier"].startswith("public.ecr.aws/")


def test_the_flows_plans_refuse_another_account(project: Project) -> None:
    from flows.frontend_deploy import plan_apprunner_deploy
    from flows.lambda_deploy import plan_lambda_deploy

    set_environment(project, "dev", 'account_id = "222222222222"')
    for plan in (plan_lambda_deploy, plan_apprunner_deploy):
        component = "backend" if plan is plan_lambda_deploy else "frontend"
        with pytest.raises(InputError, match="is not dev's account 222222222222"):
            plan(component, "dev", "v7", str(project.config_path))


def test_a_role_is_assumed_per_environment(project: Project) -> None:
    import getpass

    from opcd.aws import guarded_target, target_for
    from opcd.config import load_config

    role = f"arn:aws:iam::{SANDBOX_ACCOUNT}:role/opcd-deploy"
    set_environment(project, "dev", f'account_id = "{SANDBOX_ACCOUNT}"\nrole_arn = "{role}"')
    set_environment(
        project, "prod", 'account_id = "222222222222"\nrole_arn = "arn:aws:iam::222222222222:role/opcd-deploy"'
    )
    config = load_config(project.config_path)

    # given: dev's target assumes dev's role; the project's target (no environment) does not
    dev = guarded_target(config, "dev")
    session = f"opcd-dev-{getpass.getuser()}"
    assumed = f"arn:aws:sts::{SANDBOX_ACCOUNT}:assumed-role/opcd-deploy/{session}"
    assert dev.identity().arn == assumed
    assert target_for(config).identity().arn == f"arn:aws:sts::{SANDBOX_ACCOUNT}:user/moto"

    # then: its calls are signed with the role's temporary credentials, not the sandbox's keys
    signed: list[str] = []
    lam = dev.client("lambda")
    lam.meta.events.register("request-created", lambda request, **kw: signed.append(request.headers["Authorization"]))
    assert lam.get_alias(FunctionName="outreachpass-api-dev", Name="live")["FunctionVersion"] == "1"
    assert dev.client("sts").get_caller_identity()["Arn"] == assumed
    assert signed and "Credential=testing/" not in signed[0] and "Credential=ASIA" in signed[0]

    # and prod lives in another account, reached through its own role
    prod = guarded_target(config, "prod")
    assert prod.identity().account == "222222222222"
    assert prod.describe().endswith(
        f"account 222222222222 as arn:aws:sts::222222222222:assumed-role/opcd-deploy/opcd-prod-{getpass.getuser()}"
    )

    code, out, err = project.cli("deploy", "backend", "--env", "dev", "--version", "v1", "--dry-run")
    assert code == 0, err
    assert out.splitlines()[0].endswith(f"account {SANDBOX_ACCOUNT} as {assumed}")


def test_static_credentials_may_carry_a_session_token(sandbox: Any) -> None:
    target = AwsTarget("endpoint", "us-east-1", sandbox.url, credentials=("testing", "testing", "a-session-token"))
    headers: list[Any] = []
    sts = target.client("sts")
    sts.meta.events.register("request-created", lambda request, **kw: headers.append(request.headers))
    assert sts.get_caller_identity()["Account"] == SANDBOX_ACCOUNT
    assert headers[0]["X-Amz-Security-Token"] == "a-session-token"


def test_a_region_of_an_environment_is_its_targets_whatever_aws_region_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from opcd.aws import target_for
    from opcd.config import parse_config
    from tests.opcd.test_config import ROOT, base, two_regions

    config = parse_config(two_regions(base()), ROOT).model_copy(update={"root": tmp_path})  # no sandbox file
    assert config.bucket_for("prod", "us-west-2") == "outreachpass-artifacts-us-west-2"  # the copy keeps it
    monkeypatch.setenv("AWS_PROFILE", "deployer")
    monkeypatch.setenv("AWS_REGION", "eu-central-1")
    assert target_for(config, "prod", "us-west-2").region == "us-west-2"
    assert target_for(config, "prod").region == "us-east-1"  # the environment's first region
    assert target_for(config, "dev").region == "eu-central-1"  # no regions named: as before, AWS_REGION wins
    assert target_for(config).region == "eu-central-1"
    with pytest.raises(UnknownName, match="environment 'prod' has no region 'eu-west-1'"):
        target_for(config, "prod", "eu-west-1")


def test_a_pinned_region_wins_over_the_sandboxs_own(tmp_path: Path, sandbox: Any) -> None:
    write_sandbox(tmp_path, sandbox.url)
    assert resolve_target(tmp_path, "us-west-2").region == "us-east-1"  # as before: the sandbox's region
    target = resolve_target(tmp_path, "us-west-2", pinned=True)
    assert (target.kind, target.region) == ("sandbox", "us-west-2")
