"""A release to a prod of two regions (examples/outreachpass/opcd-regions.toml): built once, copied to the second
region's bucket; us-east-1 deployed alone first, then us-west-2; a failure in us-west-2 rolls back both regions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sandbox.slack import SlackSink
from tests.conftest import Project, fresh_project, one_line_error, start_in_thread, wait_for_pending
from tests.regions import client_in, lay_out_regions, live_in

REGIONS = ("us-east-1", "us-west-2")
# The backend answers /health with 500 through `live` in prod's us-west-2 only (the sandbox's Lambda shim runs
# each function with its region's AWS_REGION): dev and us-east-1 pass.
UNHEALTHY_IN_US_WEST_2 = """

_handler = handler


def handler(event, context):
    live = context.invoked_function_arn.endswith(":live")
    west = os.environ.get("APP_ENV") == "prod" and os.environ.get("AWS_REGION") == "us-west-2"
    if event.get("rawPath") == "/health" and live and west:
        return _response(500, {"status": "unhealthy"})
    return _handler(event, context)
"""


@pytest.fixture
def regions(tmp_path: Path, sandbox: Any, build_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Project:
    return fresh_project(tmp_path, sandbox, build_cache, monkeypatch, lay_out_regions)


def ledger(project: Project, region: str, component: str, name: str = "latest.json") -> dict[str, Any]:
    """prod's ledger record of ``component`` in ``region``: in that region's bucket, under its region's key."""
    s3 = client_in(project, "s3", region)
    key = f"ledger/prod/{region}/{component}/{name}"
    record: dict[str, Any] = json.loads(
        s3.get_object(Bucket=f"outreachpass-artifacts-{region}", Key=key)["Body"].read()
    )
    return record


def history(project: Project, region: str, component: str) -> list[dict[str, Any]]:
    s3 = client_in(project, "s3", region)
    bucket = f"outreachpass-artifacts-{region}"
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=f"ledger/prod/{region}/{component}/")["Contents"]
    keys = sorted(o["Key"] for o in listed if not o["Key"].endswith(("/latest.json", "/live.json")))
    return [json.loads(s3.get_object(Bucket=bucket, Key=k)["Body"].read()) for k in keys]


def release_to_prod(project: Project, version: str) -> Any:
    """A release of ``version`` through dev and, approved, prod; its final state."""
    from flows.release import release

    run = start_in_thread(release, version=version, config_path=str(project.config_path))
    waiting = wait_for_pending(run)
    assert waiting["environment"] == "prod"
    lines = [line for line in waiting["description"].splitlines() if "live in prod now" in line]
    assert len(lines) == 2 and all("now: us-east-1: " in line and "; us-west-2: " in line for line in lines), lines
    code, out, err = project.cli("approve", waiting["id"], "--approver", "alice", "--reason", "dev is fine")
    assert code == 0, err
    return run.result(timeout=600)


def test_a_release_goes_region_by_region_and_a_failure_in_the_second_rolls_back_both(
    regions: Project, prefect_server: None, sink: SlackSink
) -> None:
    state = release_to_prod(regions, "v1")

    assert state.is_completed(), state
    for region in REGIONS:
        for component, function in (("backend", "outreachpass-api-prod"), ("worker", "outreachpass-worker-prod")):
            assert live_in(regions, function, region).startswith(f"opcd {component} v1"), (region, component)
            record = ledger(regions, region, component)
            assert (record["outcome"], record["version"], record["region"]) == ("deployed", "v1", region)
    # us-east-1 alone first: every deploy there ended before any in us-west-2 began
    east = [ledger(regions, "us-east-1", c) for c in ("backend", "worker")]
    west = [ledger(regions, "us-west-2", c) for c in ("backend", "worker")]
    assert max(r["finished_at"] for r in east) <= min(r["started_at"] for r in west)
    # built once (dev's bucket is us-east-1's), copied server-side to us-west-2's bucket with its checksum
    assert "copy" in west[0]["steps"] and "copy" not in east[0]["steps"]
    assert [r["sha256"] for r in east] == [r["sha256"] for r in west]  # each component's one build
    head = client_in(regions, "s3", "us-west-2").head_object(
        Bucket="outreachpass-artifacts-us-west-2", Key="backend/v1/lambda.zip", ChecksumMode="ENABLED"
    )
    code_sha = client_in(regions, "lambda", "us-west-2").get_function(FunctionName="outreachpass-api-prod")
    assert head["ChecksumSHA256"] == code_sha["Configuration"]["CodeSha256"]
    # dev has one region: its records stay where they always were, with no region
    dev = json.loads(client_in(regions, "s3", "us-east-1").get_object(
        Bucket="outreachpass-artifacts-us-east-1", Key="ledger/dev/backend/latest.json")["Body"].read())  # fmt: skip
    assert dev["outcome"] == "deployed" and "region" not in dev
    assert set(state.result()["steps"]["prod"]) == {f"{c}@{r}" for c in ("backend", "worker") for r in REGIONS}

    code, out, err = regions.cli("status", "--env", "prod")
    assert code == 0, err
    rows = [line.split() for line in out.splitlines() if line.startswith(("backend", "worker"))]
    assert sorted((r[0], r[1], r[2], r[3]) for r in rows) == sorted(
        (c, "prod", region, "v1") for c in ("backend", "worker") for region in REGIONS
    )

    # v2's backend fails its health check in us-west-2 only, once it takes traffic there
    init = regions.root / "backend" / "app" / "__init__.py"
    init.write_text(init.read_text() + UNHEALTHY_IN_US_WEST_2)
    state = release_to_prod(regions, "v2")

    assert state.is_failed()
    west_backend = ledger(regions, "us-west-2", "backend")  # rolled itself back after traffic moved
    assert (west_backend["action"], west_backend["outcome"], west_backend["version"]) == ("deploy", "rolled-back", "v2")
    # everything else the release changed in prod went back to v1, each verified (the rollback flow's checks)
    for region, component in (("us-east-1", "backend"), ("us-east-1", "worker"), ("us-west-2", "worker")):
        records = history(regions, region, component)
        assert [(r["action"], r["outcome"], r["version"]) for r in records][-2:] == [
            ("deploy", "deployed", "v2"), ("rollback", "deployed", "v1"),
        ], (region, component)  # fmt: skip
    for region in REGIONS:
        assert live_in(regions, "outreachpass-api-prod", region).startswith("opcd backend v1"), region
        assert live_in(regions, "outreachpass-worker-prod", region).startswith("opcd worker v1"), region
    message = str(state.message)
    assert "prod failed (backend (us-west-2): rolled-back, live v1 (Lambda version 2))" in message
    assert "rolled back with it: backend (us-east-1) (live v1 (" in message and "worker (us-west-2) (live v1" in message
    said = [t for t in sink.texts() if "in prod us-east-1 was ROLLED BACK: live now v1" in t]
    assert said, sink.texts()

    code, out, err = regions.cli("status", "--env", "prod")
    assert code == 0, err
    rows = [line.split() for line in out.splitlines() if line.startswith("backend")]
    assert sorted((r[2], r[3]) for r in rows) == [("us-east-1", "v1"), ("us-west-2", "v1")]


@pytest.mark.parametrize("command", ["deploy", "rollback"])
def test_a_region_the_environment_does_not_have_is_refused_in_one_line(regions: Project, command: str) -> None:
    more = ["--version", "v1"] if command == "deploy" else []
    code, out, err = regions.cli(command, "backend", "--env", "prod", "--region", "eu-west-1", *more)
    assert code == 2
    assert one_line_error(err) == (
        "error: environment 'prod' has no region 'eu-west-1' — its regions: us-east-1, us-west-2\n"
    )


def test_a_deploy_plan_per_region_names_its_region_function_bucket_and_lock(regions: Project) -> None:
    code, out, err = regions.cli("deploy", "backend", "--env", "prod", "--version", "v1", "--dry-run", "--json")
    assert code == 0, err
    from flows.plan.models import DeployPlan

    plans = [DeployPlan.model_validate(d) for d in json.loads(out)]  # one document: the list of the regions' plans
    assert [(p.region, p.target.region) for p in plans] == [("us-east-1", "us-east-1"), ("us-west-2", "us-west-2")]
    assert [p.artifact.location for p in plans] == [
        f"s3://outreachpass-artifacts-{r}/backend/v1/lambda.zip" for r in REGIONS
    ]
    locks = [next(s.inputs["lock"] for s in p.steps if s.action == "lock") for p in plans]
    assert locks == [f"opcd-env-prod-{r}-backend" for r in REGIONS]
    health = [next(s.inputs["resolved_url"] for s in p.steps if s.action == "health") for p in plans]
    assert health[1].endswith("/_gateway/outreachpass-api-prod@us-west-2/health")
    # prod's database is shared (its secret names no {region}): migrated by us-east-1's deploy alone
    assert [[s.inputs["secret"] for s in p.steps if s.action == "migrations"] for p in plans] == [
        ["outreachpass/prod/database"], [],
    ]  # fmt: skip
    assert "migrations: not here: prod's regions share one database" in plans[1].notes[0]


def test_a_release_dry_run_shows_prods_regions_in_waves_and_the_copy(regions: Project) -> None:
    code, out, err = regions.cli("release", "--version", "v1", "--dry-run")
    assert code == 0, err
    assert "), in us-east-1 first, then in us-west-2 in parallel:" in out
    assert "  backend → v1 (prod us-west-2: outreachpass-api-prod):" in out
    copy = (
        "copy s3://outreachpass-artifacts-us-east-1/backend/v1/lambda.zip to"
        " s3://outreachpass-artifacts-us-west-2/backend/v1/lambda.zip (CopyObject), its sha256 checked"
    )
    assert copy in out
    assert "take the lock opcd-env-prod-us-west-2-backend" in out and "take the lock opcd-env-dev-backend" in out


def test_a_deploy_without_a_region_goes_to_each_region_in_turn_from_one_build(
    regions: Project, prefect_server: None
) -> None:
    code, out, err = regions.cli("deploy", "backend", "--env", "prod", "--version", "v1")

    assert code == 0, err
    assert "deployed backend v1 to prod us-east-1: live on Lambda version 2" in out
    assert "deployed backend v1 to prod us-west-2: live on Lambda version 2" in out
    east, west = (ledger(regions, region, "backend") for region in REGIONS)
    assert east["finished_at"] <= west["started_at"]
    assert (east["artifact"], west["artifact"]) == ("built", "reused") and "copy" in west["steps"]
    assert "migrations" in east["steps"] and "migrations" not in west["steps"]  # one database, migrated once
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    runs = ArtifactFilterFlowRunId(any_=[east["flow_run_id"], west["flow_run_id"]])
    with get_client(sync_client=True) as client:  # each region's run artifact under a key of its own
        found = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=runs))
    keys = {a.key for a in found if a.key and a.key.startswith("deploy-")}  # and their bakes', bake-backend-…
    assert keys == {"deploy-backend-prod-us-east-1", "deploy-backend-prod-us-west-2"}
    assert west["sha256"] == east["sha256"]


def test_a_deploy_failing_in_a_later_region_rolls_the_earlier_back_and_rollbacks_name_their_region(
    regions: Project, prefect_server: None
) -> None:
    west = client_in(regions, "lambda", "us-west-2")
    west.update_function_configuration(FunctionName="outreachpass-api-prod", MemorySize=256)  # a version to publish
    west.get_waiter("function_updated_v2").wait(FunctionName="outreachpass-api-prod")
    west.publish_version(FunctionName="outreachpass-api-prod", Description="one more version in us-west-2 only")
    code, out, err = regions.cli("deploy", "backend", "--env", "prod", "--version", "v1")
    assert code == 0, err
    assert "to prod us-east-1: live on Lambda version 2" in out and "to prod us-west-2: live on Lambda version 3" in out
    init = regions.root / "backend" / "app" / "__init__.py"
    init.write_text(init.read_text() + UNHEALTHY_IN_US_WEST_2)

    code, out, err = regions.cli("deploy", "backend", "--env", "prod", "--version", "v2")

    assert code == 1
    assert "a later region failed: rolling back backend in prod us-east-1" in err
    assert "rolled back backend in prod us-east-1 to v1 (Lambda version 2)" in err
    east = history(regions, "us-east-1", "backend")
    assert [(r["action"], r["outcome"], r["version"]) for r in east][-2:] == [
        ("deploy", "deployed", "v2"), ("rollback", "deployed", "v1"),
    ]  # fmt: skip
    for region in REGIONS:
        assert live_in(regions, "outreachpass-api-prod", region).startswith("opcd backend v1"), region

    # Lambda version numbers differ per region: one of them names no version of every region
    code, out, err = regions.cli("rollback", "backend", "--env", "prod", "--to-lambda-version", "2")
    assert code == 2 and "--to-lambda-version names a version of one region" in one_line_error(err)
    code, out, err = regions.cli("rollback", "backend", "--env", "prod", "--dry-run")  # one app version in both
    assert "run different versions" not in err
    code, out, err = regions.cli("deploy", "backend", "--env", "prod", "--version", "v3", "--region", "us-east-1")
    assert code == 0, err
    # the regions now run different versions: "back" is not the same step in both
    code, out, err = regions.cli("rollback", "backend", "--env", "prod")
    assert code == 2 and "the regions of prod run different versions (us-east-1: v3" in one_line_error(err)
    assert live_in(regions, "outreachpass-api-prod", "us-east-1").startswith("opcd backend v3")


def test_a_given_release_plan_must_deploy_every_region_in_opcd_tomls_order(regions: Project) -> None:
    from flows.plan.build import build_release_plan
    from flows.release import checked_release_plan
    from opcd.config import load_config
    from opcd.errors import InputError
    from opcd.iam import acting_as

    config = load_config(regions.config_path)
    with acting_as("deploy", str(regions.config_path)):  # as `opcd release` plans: its deploy role (the IAM proof)
        plan = build_release_plan(config, "v1", components=["backend"])
    prod = next(stage for stage in plan.stages if stage.environment == "prod")
    assert prod.regions == REGIONS and sorted(d.region or "" for d in prod.deploys) == list(REGIONS)
    east_only = prod.model_copy(update={"regions": ("us-east-1",), "deploys": prod.deploys[:1]})
    reversed_ = prod.model_copy(update={"regions": REGIONS[::-1]})
    for stage in (east_only, reversed_):
        forged = plan.model_copy(update={"stages": (plan.stages[0], stage)})
        with pytest.raises(InputError, match="prod's deploys are not one per component and region of us-east-1"):
            checked_release_plan(config, forged, None, None)


def shifting_in_us_west_2(project: Project) -> None:
    """prod us-west-2's ledger says a deploy of backend v2 is moving traffic (its run's record: ``shifting``)."""
    record = {
        "component": "backend", "environment": "prod", "action": "deploy", "outcome": "shifting", "version": "v2",
        "traffic": "all-at-once", "flow_run_id": "7d1c0a52-3f4e-4b6a-9c1d-2e8f5a6b7c90", "region": "us-west-2",
    }  # fmt: skip
    for name in ("latest.json", "20261130T071500Z-7d1c0a52.json"):
        client_in(project, "s3", "us-west-2").put_object(
            Bucket="outreachpass-artifacts-us-west-2", Key=f"ledger/prod/us-west-2/backend/{name}",
            Body=json.dumps({**record, "finished_at": "2026-11-30T07:15:00Z"}).encode(),
        )  # fmt: skip


def test_promote_abort_and_history_find_the_deploy_shifting_in_the_region_named(regions: Project) -> None:
    shifting_in_us_west_2(regions)
    code, out, err = regions.cli("history", "backend", "--env", "prod")
    assert code == 0, err
    (row,) = [line.split() for line in out.splitlines()[1:]]
    assert row[2:7] == ["deploy", "backend", "prod", "us-west-2", "v2"] and "shifting" in row
    code, out, err = regions.cli("promote", "backend", "--env", "prod", "--region", "us-west-2")
    assert code == 2 and "the running deploy of backend to prod moves traffic all at once" in one_line_error(err)
    code, out, err = regions.cli("abort", "backend", "--env", "prod")  # the first region's: nothing recorded
    assert code == 2 and "no bake is running for backend in prod (it has no run recorded)" in one_line_error(err)


def test_drift_checks_each_region_against_its_own_ledger(regions: Project, prefect_server: None) -> None:
    shifting_in_us_west_2(regions)
    code, out, err = regions.cli("drift", "--env", "prod")
    assert code == 3, err  # drift
    (finding,) = [line for line in out.splitlines() if line.startswith("DRIFT")]
    assert finding.startswith("DRIFT  prod us-west-2 outreachpass-api-prod:live: a deploy of v2 stopped while")


def test_a_region_refused_before_its_plan_runs_is_recorded_in_that_regions_ledger(
    regions: Project, prefect_server: None
) -> None:
    from flows.lambda_deploy import deploy_backend
    from flows.plan.models import DeployPlan, parse_plan

    code, out, err = regions.cli(
        "deploy", "backend", "--env", "prod", "--version", "v1", "--region", "us-west-2", "--dry-run", "--json"
    )
    assert code == 0, err
    plan = parse_plan(out)
    assert isinstance(plan, DeployPlan) and plan.region == "us-west-2"
    client_in(regions, "cloudwatch", "us-west-2").set_alarm_state(
        AlarmName="outreachpass-api-prod-errors", StateValue="ALARM", StateReason="errors after the plan was made"
    )  # the run reads the alarms again when it starts, and refuses

    state = deploy_backend(environment="prod", version="v1", config_path=str(regions.config_path), plan=plan,
                           return_state=True)  # fmt: skip

    assert state.is_failed()
    record = ledger(regions, "us-west-2", "backend")
    assert (record["outcome"], record["region"], record["step"]) == ("failed", "us-west-2", "plan")
    assert "outreachpass-api-prod-errors" in record["reason"]


def live_record(project: Project, environment: str, region: str | None, version: str, sha: str | None) -> None:
    """``backend`` and ``worker`` live on ``version`` (commit ``sha``) in ``environment`` (its ``region``)."""
    for component in ("backend", "worker"):
        record = {"component": component, "environment": environment, "action": "deploy", "outcome": "deployed",
                  "version": version, "git_sha": sha, **({"region": region} if region else {})}  # fmt: skip
        key = (
            f"ledger/{environment}/{region}/{component}/live.json"
            if region
            else f"ledger/{environment}/{component}/live.json"
        )
        bucket = f"outreachpass-artifacts-{region or 'us-east-1'}"
        client_in(project, "s3", region or "us-east-1").put_object(Bucket=bucket, Key=key, Body=json.dumps(record))


def test_what_a_release_picks_and_promotes_reads_every_region_not_the_first_alone(regions: Project) -> None:
    from flows.plan.build import check_request, choose_components
    from opcd.aws import target_for
    from opcd.config import load_config
    from opcd.errors import InputError
    from opcd.iam import acting_as
    from tests.commits import commit, git

    git(regions.root, "init", "-q")
    first = commit(regions.root, "v1")
    (regions.root / "worker" / "worker.py").write_text((regions.root / "worker" / "worker.py").read_text() + "\n#\n")
    second = commit(regions.root, "worker changed")
    live_record(regions, "prod", "us-east-1", "v2", second)
    live_record(regions, "prod", "us-west-2", "v1", first)  # deployed on its own (--region), not moved since
    config = load_config(regions.config_path)

    with acting_as("deploy", str(regions.config_path)):  # as `opcd release` reads: this opcd.toml's deploy role
        chosen, why = choose_components(config, target_for(config, "prod"), None, second, "prod")
    assert chosen == ["worker"], why  # us-west-2 still runs the worker of the first commit
    assert f"backend: unchanged since {second[:12]}, {first[:12]}, skipped" in why

    # a release to an environment after prod that leaves prod out: the version must be live in each of its regions
    regions.config_path.write_text(regions.config_path.read_text() + (
        '\n[environments.dr]\nfunctions = { backend = "outreachpass-api-dr", worker = "outreachpass-worker-dr" }\n'
        'database_secret = "outreachpass/dr/database"\n'  # pragma: allowlist secret
    ))  # fmt: skip
    config = load_config(regions.config_path)
    live_record(regions, "dev", None, "v2", second)
    with (
        acting_as("deploy", str(regions.config_path)),
        pytest.raises(InputError, match="backend v2 is not live in prod us-west-2, which comes before dr"),
    ):
        check_request(config, "v2", None, ["backend"], ["dr"])
    live_record(regions, "prod", "us-west-2", "v2", second)
    with acting_as("deploy", str(regions.config_path)):
        assert check_request(config, "v2", None, ["backend"], ["dr"]) == ["dr"]


def test_a_later_region_sharing_the_database_refuses_a_version_the_first_region_has_not_migrated(
    regions: Project, prefect_server: None
) -> None:
    code, out, err = regions.cli("deploy", "backend", "--env", "prod", "--version", "v1", "--region", "us-west-2")

    assert code == 1
    assert (
        "backend v1's migrations run with its deploy to prod us-east-1 (one database for every region), which runs no"
        " version opcd deployed" in err
    ), err
    assert "opcd deploy backend --env prod --region us-east-1 --version v1" in err
    record = ledger(regions, "us-west-2", "backend")
    assert (record["outcome"], record["version"]) == ("failed", "v1") and "migrations" not in record["steps"]
    assert not live_in(regions, "outreachpass-api-prod", "us-west-2").startswith("opcd backend v1")  # live untouched


def test_a_release_refuses_a_version_another_regions_bucket_holds_from_other_source_before_any_change(
    regions: Project,
) -> None:
    west = client_in(regions, "s3", "us-west-2")
    body = json.dumps({"source_hash": "another", "code_sha256": "b3RoZXI=", "sha256": "00", "size": 1})
    west.put_object(Bucket="outreachpass-artifacts-us-west-2", Key="backend/v1/metadata.json", Body=body)

    code, out, err = regions.cli("release", "--version", "v1", "--dry-run")

    assert code == 2
    assert one_line_error(err).startswith(
        "error: backend v1 already exists in s3://outreachpass-artifacts-us-west-2 built from other source"
    ), err
    # the same source there (an earlier deploy of that region alone): used as it is, not copied over
    from opcd.config import load_config
    from tasks.build import lambda_source_hash

    config = load_config(regions.config_path)
    hashed = lambda_source_hash(config.lambda_component("backend"), config.source_dir("backend"))
    body = json.dumps({"source_hash": hashed, "code_sha256": "b3RoZXI=", "sha256": "00", "size": 1})
    west.put_object(Bucket="outreachpass-artifacts-us-west-2", Key="backend/v1/metadata.json", Body=body)
    code, out, err = regions.cli("release", "--version", "v1", "--dry-run")
    assert code == 0, err
    assert (
        "reuse s3://outreachpass-artifacts-us-west-2/backend/v1/lambda.zip (same source, already there: not copied)"
        in out
    )
    assert "s3://outreachpass-artifacts-us-west-2/worker/v1/lambda.zip (CopyObject)" in out  # the worker: copied
