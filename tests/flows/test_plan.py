"""The plan as a value: built against the sandbox for the example config, rendered, JSON both ways, read-only.

The expected step lists are read off the flows' code paths (flows/lambda_deploy.py ``deploy_lambda``
and ``shift_and_verify``, flows/frontend_deploy.py ``deploy_apprunner`` and ``move_service``,
flows/rollback.py ``rollback``, flows/release.py ``_release``), in the order those run them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flows.plan.build import build_deploy_plan, build_release_plan, build_rollback_plan
from flows.plan.models import DeployPlan, ReleasePlan, RollbackPlan, parse_plan
from flows.plan.render import render_json, render_text
from opcd.config import Config, load_config
from opcd.errors import InputError, VersionConflict
from tests.conftest import Project, fresh_project

# deploy_lambda: ensure_artifact (build, upload), the lock, read_live_alias, update_function_code,
# publish_version, run_migrations, invoke_smoke_checks, invoke_sample_event (new version), sync_rules,
# the "shifting" record, shift_and_verify (shift, health, sample event on live, alarms), the
# failure path's rollback, finish (record).
BACKEND_DEV = [
    "build", "upload", "lock", "read-live", "update-code", "publish", "migrations", "smoke", "rules",
    "record-shifting", "shift", "health", "alarms", "on-failure", "record",
]  # fmt: skip
WORKER_DEV = [
    "build", "upload", "lock", "read-live", "update-code", "publish", "sample-event", "rules",
    "record-shifting", "shift", "sample-event", "alarms", "on-failure", "record",
]  # fmt: skip
# deploy_apprunner: build_and_push (build, push + metadata), the lock, record_service, the "shifting"
# record, move_service (update_service, wait_for_operation, the image read back, check_service:
# health, smoke, alarms), the rollback on failure, finish.
FRONTEND_DEV = [
    "build", "push", "lock", "read-live", "record-shifting", "update-service", "follow-operation",
    "verify-image", "health", "smoke", "alarms", "on-failure", "record",
]  # fmt: skip
READ_ONLY = ("Get", "List", "Describe", "Head")


@pytest.fixture
def config(project: Project) -> Config:
    return load_config(project.config_path)


@pytest.fixture
def aws_requests(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, dict[str, Any]]]]:
    """Every AWS operation the product's clients make from here on, with its parameters (botocore's hook)."""
    import opcd.aws

    requests: list[tuple[str, dict[str, Any]]] = []
    made = opcd.aws.new_client

    def hooked(*args: Any, **kwargs: Any) -> Any:
        client = made(*args, **kwargs)
        client.meta.events.register(
            "before-parameter-build", lambda params, model, **_: requests.append((model.name, dict(params)))
        )
        return client

    monkeypatch.setattr(opcd.aws, "_clients", {})  # no client made before escapes the hook
    monkeypatch.setattr(opcd.aws, "new_client", hooked)
    yield requests


def test_the_backend_plan_in_dev_holds_every_step_of_the_lambda_deploy(config: Config) -> None:
    plan = build_deploy_plan(config, "backend", "dev", "v1")

    assert plan.actions() == BACKEND_DEV
    assert (plan.kind, plan.resource, plan.version) == ("lambda", "outreachpass-api-dev", "v1")
    assert plan.live.lambda_version == "1" and plan.live.version is None  # the seeded placeholder
    assert plan.rollback_to == plan.live and not plan.noop
    assert plan.artifact.build and plan.artifact.location == "s3://outreachpass-artifacts/backend/v1/lambda.zip"
    assert plan.shift is not None and plan.shift.strategy == "all-at-once" and plan.shift.increments == ()
    assert [c.name for c in plan.checks] == ["version", "account", "alarms", "bucket", "function", "artifact"]
    steps = {s.action: s for s in plan.steps}
    migrations = steps["migrations"].inputs
    assert migrations["secret"] == "outreachpass/dev/database"  # a name, never its value  # pragma: allowlist secret
    assert steps["health"].inputs["url"] == "https://api.dev.outreachpass.example/health"
    assert steps["health"].inputs["expect_version"] == "v1"
    assert steps["alarms"].inputs["names"] == ["outreachpass-api-dev-errors"]
    assert steps["rules"].inputs["rules"] == []  # none configured: stale ones opcd made are removed
    assert steps["on-failure"].inputs == {"function": "outreachpass-api-dev", "to": "1"}


def test_the_worker_plan_shows_its_sample_event_and_its_rules(config: Config) -> None:
    plan = build_deploy_plan(config, "worker", "dev", "v1")

    assert plan.actions() == WORKER_DEV
    samples = [s for s in plan.steps if s.action == "sample-event"]
    assert [s.inputs["qualifier"] for s in samples] == ["new", "live"]  # before traffic, then on live
    assert samples[0].inputs["expect"] == {"status": "ok"} and isinstance(samples[0].inputs["event"], dict)
    (rules,) = [s for s in plan.steps if s.action == "rules"]
    assert rules.inputs["alias_arn"] == plan_alias_arn(config, "outreachpass-worker-dev")
    assert [r["name"] for r in rules.inputs["rules"]] == ["nightly-digest"]  # type: ignore[index,union-attr]
    text = render_text(plan)
    assert "outreachpass-dev-nightly-digest (cron(0 3 * * ? *))" in text
    assert "sample event src/worker/sample_event.json" in text and '{"status": "ok"}' in text


def plan_alias_arn(config: Config, function: str) -> str:
    from opcd.aws import target_for

    answer = target_for(config, "dev").client("lambda").get_alias(FunctionName=function, Name="live")
    return str(answer["AliasArn"])


def test_prod_shifts_by_its_strategy_with_its_increments_and_guards(config: Config) -> None:
    backend = build_deploy_plan(config, "backend", "prod", "v1")
    worker = build_deploy_plan(config, "worker", "prod", "v1")

    assert backend.shift is not None and worker.shift is not None
    assert [(i.percent, i.bake_seconds) for i in backend.shift.increments] == [(10, 0.2)]
    assert [(i.percent, i.bake_seconds) for i in worker.shift.increments] == [(50, 0.2)]
    assert backend.shift.guards == (  # bake.smoke = true; prod's bake.analysis is set
        "alarms", "health", "smoke on the new version", "canary analysis (new vs old version on CloudWatch)",
    )  # fmt: skip
    assert worker.shift.guards == ("alarms", "canary analysis (new vs old version on CloudWatch)")  # no health, smoke
    assert "shift live by canary10-0.2s: 10% → 100%, 0.2s per step; every 0.1s check alarms, health" in (
        render_text(backend)
    )


def test_the_frontend_plan_in_dev_holds_every_step_of_the_app_runner_deploy(config: Config) -> None:
    plan = build_deploy_plan(config, "frontend", "dev", "v1")

    assert plan.actions() == FRONTEND_DEV and plan.artifact.build and plan.artifact.reason == "not in ECR"
    assert plan.kind == "apprunner" and plan.resource == "outreachpass-web-dev"
    assert plan.resource_id.startswith("arn:aws:apprunner:")
    assert plan.live.image and plan.live.status == "RUNNING" and plan.artifact.location.endswith(":v1")
    steps = {s.action: s for s in plan.steps}
    assert steps["on-failure"].inputs == {"image": plan.live.image}
    assert steps["follow-operation"].inputs == {"poll_interval": 0.05, "timeout": 60.0}
    assert steps["health"].inputs["url"] == "https://dev.outreachpass.example/health.json"
    assert [c.name for c in plan.checks] == [
        "version", "account", "alarms", "bucket", "service", "repository", "artifact",
    ]  # fmt: skip


def test_a_release_through_dev_and_prod_builds_once_then_deploys_each_environment(config: Config) -> None:
    plan = build_release_plan(config, "v1", components=["backend", "worker", "frontend"])

    assert plan.components == ("backend", "worker", "frontend") and plan.why == "as asked"
    assert [s.environment for s in plan.stages] == ["dev", "prod"]
    assert plan.stages[0].approval is None
    gate = plan.stages[1].approval
    assert gate is not None and gate.approvers == ("alice", "bob") and gate.timeout == 120.0
    assert plan.on_failure == "rollback-all"
    assert [(b.component, b.steps[0].action) for b in plan.builds] == [
        ("backend", "build"), ("worker", "build"), ("frontend", "build"),
    ]  # fmt: skip
    for stage in plan.stages:
        assert [d.component for d in stage.deploys] == ["backend", "worker", "frontend"]
        for deploy in stage.deploys:  # built once by the release: each deploy uses that artifact
            assert deploy.steps[0].action == "reuse" and not deploy.artifact.build
            assert not {"build", "upload", "push"} & set(deploy.actions())
    assert plan.deploy("backend", "dev").actions() == ["reuse", *BACKEND_DEV[2:]]
    assert plan.deploy("worker", "prod").actions() == ["reuse", *WORKER_DEV[2:]]
    assert plan.deploy("frontend", "prod").actions() == ["reuse", *FRONTEND_DEV[2:]]
    assert plan.deploy("frontend", "prod").artifact.location.endswith("outreachpass-frontend:v1")
    with pytest.raises(KeyError):
        plan.deploy("backend", "staging")
    text = render_text(plan)
    assert "prod (approval by alice or bob first, waits at most 2m), in parallel:" in text
    assert "roll back, verified, every component the release changed there (rollback-all)" in text
    assert plan.deploy("worker", "prod").shift.description in text  # type: ignore[union-attr]


def test_plans_go_to_json_and_back_unchanged(config: Config) -> None:
    release = build_release_plan(config, "v1", components=["backend", "worker"], on_failure="keep")
    deploy = release.deploy("worker", "prod")

    assert parse_plan(render_json(release)) == release
    assert isinstance(parse_plan(render_json(deploy)), DeployPlan)
    assert DeployPlan.model_validate_json(deploy.model_dump_json()) == deploy
    assert ReleasePlan.model_validate_json(release.model_dump_json()).on_failure == "keep"
    assert "testing" not in render_json(release)  # the sandbox's credentials stay out of a plan


def test_the_text_numbers_every_step_of_the_plan_in_order(config: Config) -> None:
    plan = build_deploy_plan(config, "backend", "dev", "v1")
    lines = render_text(plan).splitlines()

    numbered = [line.strip() for line in lines if line.strip()[:1].isdigit()]
    assert numbered == [f"{n}. {s.text}" for n, s in enumerate(plan.steps, 1)]
    assert lines[0] == plan.target.description and lines[0].startswith("AWS target: embedded sandbox")
    assert lines[1] == "dry run: deploy backend v1 to dev (outreachpass-api-dev)"
    assert lines[-1] == "no changes made (dry run)"
    assert "  live now: a version opcd did not deploy (Lambda version 1)" in lines
    assert "  artifact: build s3://outreachpass-artifacts/backend/v1/lambda.zip (not built yet)" in lines


Requests = list[tuple[str, dict[str, Any]]]


def test_building_plans_only_reads_aws(config: Config, project: Project, aws_requests: Requests) -> None:
    build_release_plan(config, "v1", components=["backend", "worker", "frontend"])
    release = [name for name, _ in aws_requests]
    build_deploy_plan(config, "backend", "dev", "v1", ["outreachpass-api-dev-errors"])
    build_deploy_plan(config, "frontend", "prod", "v1")
    with pytest.raises(InputError):  # the ledger knows no previous version yet: the rollback has no target
        build_rollback_plan(config, "backend", "dev")
    with pytest.raises(InputError, match="not in ECR"):  # an App Runner rollback reads ECR and the ledger
        build_rollback_plan(config, "frontend", "dev", to_version="v9")

    names = [name for name, _ in aws_requests]
    assert release and len(names) > len(release)
    assert [name for name in names if not name.startswith(READ_ONLY)] == []
    # one release reads each environment's alarms and bucket once, for all its components
    assert release.count("HeadBucket") == 2 and release.count("DescribeAlarms") == 2


def test_a_firing_alarm_refuses_a_deploy_plan_unless_accepted(config: Config, project: Project) -> None:
    project.client("cloudwatch").set_alarm_state(
        AlarmName="outreachpass-api-dev-errors", StateValue="ALARM", StateReason="Errors >= 1"
    )
    with pytest.raises(InputError, match="alarm firing in dev"):
        build_deploy_plan(config, "backend", "dev", "v1")

    plan = build_deploy_plan(config, "backend", "dev", "v1", ["outreachpass-api-dev-errors"])
    assert plan.accepted_alarms == ("outreachpass-api-dev-errors",)
    release = build_release_plan(config, "v1", components=["backend"])  # each deploy checks again when it starts
    assert release.deploy("backend", "dev").accepted_alarms == ()  # the deploy refuses it unless it clears


def test_bad_requests_are_refused_before_anything(config: Config) -> None:
    with pytest.raises(InputError, match="not a version"):
        build_deploy_plan(config, "backend", "dev", "../v1")
    with pytest.raises(InputError, match="unknown component"):
        build_deploy_plan(config, "nope", "dev", "v1")
    with pytest.raises(InputError, match="no Lambda versions"):
        build_rollback_plan(config, "frontend", "dev", to_lambda_version="3")
    with pytest.raises(InputError, match="not both"):
        build_rollback_plan(config, "backend", "dev", to_version="v1", to_lambda_version="3")


def test_a_deployed_version_plans_a_noop_and_a_rollback_to_the_previous(deployed: Project) -> None:
    config = load_config(deployed.config_path)

    again = build_deploy_plan(config, "backend", "dev", "v2")
    assert again.noop and again.actions() == ["reuse", "lock", "read-live", "rules", "record"]
    assert "nothing to do: that version is already live" in render_text(again)
    assert again.live.version == "v2" and again.live.lambda_version == deployed.live()

    back = build_rollback_plan(config, "backend", "dev")
    assert isinstance(back, RollbackPlan) and (back.to.version, back.live.version) == ("v1", "v2")
    # rollback: the lock, read_live_alias + choose_version, shift_and_verify (all at once: shift,
    # health, alarms), the failure path, finish
    assert back.actions() == ["lock", "read-live", "shift", "health", "alarms", "on-failure", "record"]
    health = next(s for s in back.steps if s.action == "health")
    assert health.inputs["expect_version"] == "v1"
    assert "would move outreachpass-api-dev:live from v2 (Lambda version" in render_text(back)
    assert parse_plan(render_json(back)) == back

    deployed.write_source("\n# a change\n")
    with pytest.raises(VersionConflict, match="built from other source"):
        build_deploy_plan(config, "backend", "dev", "v2")


def observed_action(name: str, params: dict[str, Any], shifted: bool) -> str | None:
    """The plan's action an AWS request of a deploy belongs to; None for reads that any step makes.

    ``shifted``: the alias has moved already (a ledger write before it is the "shifting" record, and
    DescribeAlarms after it is the guard, not the preflight).
    """
    if name == "PutObject" and str(params.get("Key", "")).startswith("ledger/"):
        return "record" if shifted else "record-shifting"
    if name == "Invoke":
        payload = params.get("Payload", b"")
        payload = payload.encode() if isinstance(payload, str) else payload
        return "smoke" if isinstance(payload, bytes) and b"opcd-smoke" in payload else "sample-event"
    if name == "DescribeAlarms":
        return "alarms" if shifted else None
    return {
        "GetBucketLifecycleConfiguration": "upload", "PutObject": "upload", "UpdateFunctionCode": "update-code",
        "PublishVersion": "publish", "PutRule": "rules", "PutTargets": "rules", "AddPermission": "rules",
        "UpdateAlias": "shift",
    }.get(name)  # fmt: skip


def test_a_real_deploy_runs_the_dry_runs_plan_step_by_step_in_its_order(
    project: Project, prefect_server: None, aws_requests: Requests
) -> None:
    code, out, err = project.cli("deploy", "worker", "--env", "dev", "--version", "v1", "--dry-run", "--json")
    assert code == 0, err
    plan = parse_plan(out)
    assert isinstance(plan, DeployPlan) and plan.actions() == WORKER_DEV
    aws_requests.clear()

    code, out, err = project.cli("deploy", "worker", "--env", "dev", "--version", "v1")

    assert code == 0, err
    # the run reports each step it runs (the ledger's "steps"): the plan's, in its order ("on-failure" is the
    # failure path's, not run when nothing fails)
    assert project.ledger("dev", "worker")["steps"] == [a for a in plan.actions() if a != "on-failure"]
    requests = list(aws_requests)  # the deploy's, as AWS saw them (checked below)
    # the dry run made right after shows what a second run would do: nothing but its rules and the record
    code, out, err = project.cli("deploy", "worker", "--env", "dev", "--version", "v1", "--dry-run", "--json")
    again = parse_plan(out)
    assert isinstance(again, DeployPlan) and again.noop and again.actions() == ["reuse", "lock", "read-live", "rules",
                                                                                "record"]  # fmt: skip
    code, out, err = project.cli("deploy", "worker", "--env", "dev", "--version", "v1")
    assert code == 0, err
    assert project.ledger("dev", "worker")["steps"] == again.actions()
    observed: list[str] = []
    for name, params in requests:
        action = observed_action(name, params, "shift" in observed)
        if action and (not observed or observed[-1] != action):
            observed.append(action)
    # what AWS sees of each step: the build, the lock and the reads run locally or as reads
    seen_by_aws = {"upload", "update-code", "publish", "smoke", "sample-event", "rules", "record-shifting", "shift",
                   "alarms", "record"}  # fmt: skip
    assert observed == [a for a in plan.actions() if a in seen_by_aws], [n for n, _ in requests]
    assert observed == [
        "upload", "update-code", "publish", "sample-event", "rules", "record-shifting", "shift", "sample-event",
        "alarms", "record",
    ]  # fmt: skip


# run_ecs_deploy: build_and_push (build, push + metadata), the lock, record_service, register_revision,
# the "shifting" record, move_service (start_deployment, follow_deployment, the revision read back,
# check_service: health, smoke, alarms), the rollback on failure, finish.
FRONTEND_ECS_DEV = [
    "build", "push", "lock", "read-live", "register-revision", "record-shifting", "update-service",
    "follow-operation", "verify-revision", "health", "smoke", "alarms", "on-failure", "record",
]  # fmt: skip


@pytest.fixture
def ecs(tmp_path: Path, sandbox: Any, build_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Project]:
    """examples/outreachpass with opcd-ecs.toml as its opcd.toml: the frontend on ECS, seeded. The plans the
    tests build here read AWS as ``opcd deploy`` does: as the deploy role of this opcd.toml (the IAM proof)."""
    from opcd.iam import acting_as
    from tests.flows.test_ecs_deploy import lay_out_ecs

    project = fresh_project(tmp_path, sandbox, build_cache, monkeypatch, lay_out_ecs)
    with acting_as("deploy", str(project.config_path)):
        yield project


def test_an_ecs_plan_holds_every_step_of_the_ecs_deploy_and_its_rollback(ecs: Project) -> None:
    config = load_config(ecs.config_path)
    plan = build_deploy_plan(config, "frontend", "dev", "v1")

    assert plan.actions() == FRONTEND_ECS_DEV and plan.kind == "ecs" and plan.resource == "outreachpass-web-ecs-dev"
    assert plan.artifact.build and plan.artifact.location.endswith("outreachpass-frontend:v1")
    assert plan.live.task_definition and plan.rollback_to == plan.live
    steps = {s.action: s for s in plan.steps}
    assert steps["update-service"].inputs["strategy"] == "rolling"
    assert steps["update-service"].inputs["alarms"] == ["outreachpass-web-ecs-dev-5xx"]  # the service's own
    assert steps["on-failure"].inputs == {"task_definition": plan.live.task_definition}
    assert steps["health"].inputs["url"] == "https://dev.outreachpass.example/health.json"
    assert [c.name for c in plan.checks] == ["version", "account", "alarms", "bucket", "service", "repository",
                                             "artifact"]  # fmt: skip
    prod = build_deploy_plan(config, "frontend", "prod", "v1")
    assert prod.shift is not None and prod.shift.description.startswith("blue-green (ECS's native blue/green")
    text = render_text(plan)
    assert "register a new revision of" in text and "UpdateService outreachpass-dev/outreachpass-web-ecs-dev" in text
    assert parse_plan(render_json(plan)) == plan

    release = build_release_plan(config, "v1", components=["backend", "frontend"])
    assert release.deploy("frontend", "prod").actions() == ["reuse", *FRONTEND_ECS_DEV[2:]]
    with pytest.raises(InputError, match="does not say what ran"):  # no deploy in the ledger yet
        build_rollback_plan(config, "frontend", "dev")
    with pytest.raises(InputError, match="no Lambda versions"):
        build_rollback_plan(config, "frontend", "dev", to_lambda_version="3")


def test_a_failed_deploy_runs_the_plan_up_to_its_failure_then_its_failure_path(
    project: Project, prefect_server: None
) -> None:
    code, out, err = project.cli("deploy", "backend", "--env", "dev", "--version", "v1", "--dry-run", "--json")
    assert code == 0, err
    plan = parse_plan(out)
    assert isinstance(plan, DeployPlan)
    project.set_config(
        'health = { backend = "https://api.dev.outreachpass.example/health"',
        'health = { backend = "https://api.dev.outreachpass.example/nowhere"',
    )  # the new version goes live, then fails its health check: rolled back

    code, out, err = project.cli("deploy", "backend", "--env", "dev", "--version", "v1")

    assert code == 1
    record = project.ledger("dev", "backend")
    assert record["outcome"] == "rolled-back"
    ran = plan.actions()[: plan.actions().index("health") + 1]
    assert record["steps"] == [*ran, "on-failure", "record"]


def test_a_release_runs_its_plan_each_deploy_step_by_step(project: Project, prefect_server: None) -> None:
    args = ("release", "--version", "v1", "--component", "worker", "--env", "dev")
    code, out, err = project.cli(*args, "--dry-run", "--json")
    assert code == 0, err
    plan = parse_plan(out)
    assert isinstance(plan, ReleasePlan) and [s.environment for s in plan.stages] == ["dev"]
    assert [b.steps[0].action for b in plan.builds] == ["build"]

    code, out, err = project.cli(*args)

    assert code == 0, err
    for component in plan.components:  # built once by the release: each deploy reuses its build
        planned = plan.deploy(component, "dev").actions()
        assert planned[0] == "reuse"
        assert project.ledger("dev", component)["steps"] == [a for a in planned if a != "on-failure"]


def test_a_run_executes_the_plan_of_its_own_deploy_only(config: Config) -> None:
    from flows.common import the_plan

    plan = build_deploy_plan(config, "backend", "dev", "v1")

    assert the_plan(config, "lambda", ("backend", "dev", "v1"), None, plan)[0] is plan
    with pytest.raises(InputError, match="the plan given deploys backend v1 to dev .lambda., not backend v1 to prod"):
        the_plan(config, "lambda", ("backend", "prod", "v1"), None, plan)
    made, _ = the_plan(config, "lambda", ("backend", "prod", "v1"))  # a run given none makes its own
    assert made.environment == "prod" and made.actions()[0] == "build"


def test_a_plan_given_as_a_parameter_names_only_what_opcd_toml_names(config: Config) -> None:
    from flows.common import check_given_image, check_given_plan, the_plan
    from tasks.ecr import Repository

    plan = build_deploy_plan(config, "backend", "dev", "v1")
    check_given_plan(config, plan, None)  # the plan `opcd deploy` makes passes
    prod_function = config.function_name("backend", "prod")
    elsewhere = plan.model_copy(update={"resource": prod_function, "resource_id": prod_function})
    with pytest.raises(InputError, match=f"does not match opcd.toml: function {prod_function}, not "):
        the_plan(config, "lambda", ("backend", "dev", "v1"), None, elsewhere)
    foreign = plan.model_copy(update={"artifact": plan.artifact.model_copy(update={"location": "s3://x/backend.zip"})})
    with pytest.raises(InputError, match="artifact s3://x/backend.zip, not s3://"):
        check_given_plan(config, foreign, None)
    accepting = plan.model_copy(update={"accepted_alarms": ("outreachpass-api-dev-errors",)})
    with pytest.raises(InputError, match="accepted that the request does not accept: outreachpass-api-dev-errors"):
        check_given_plan(config, accepting, None)
    check_given_plan(config, accepting, ["outreachpass-api-dev-errors"])  # named by the request: accepted

    image = build_deploy_plan(config, "frontend", "dev", "v1")
    check_given_plan(config, image, None)
    uri = image.artifact.location.rpartition(":")[0]
    check_given_image(image, Repository("outreachpass-frontend", uri))
    public = image.model_copy(
        update={"artifact": image.artifact.model_copy(update={"location": "evil.example/outreachpass-frontend:v1"})}
    )
    check_given_plan(config, public, None)  # its repository's name and tag are right: the registry is not
    with pytest.raises(InputError, match="deploys the image evil.example/outreachpass-frontend:v1, not "):
        check_given_image(public, Repository("outreachpass-frontend", uri))


def test_a_plan_made_from_another_source_tree_is_made_again(config: Config) -> None:
    from flows.common import made_from_another_tree

    plan = build_deploy_plan(config, "backend", "dev", "v1")
    assert not made_from_another_tree(config, plan)
    handler = next(p for p in config.source_dir("backend").rglob("*.py") if p.is_file())
    handler.write_text(handler.read_text() + "\n# changed after the plan was made\n")
    assert made_from_another_tree(config, plan)


def test_bounded_waits_for_what_it_started_when_a_start_fails() -> None:
    from concurrent.futures import ThreadPoolExecutor

    from flows.release import bounded

    class Future:  # the two methods bounded uses of a PrefectFuture
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def add_done_callback(self, fn: Any) -> None:
            self.inner.add_done_callback(lambda _: fn(self))

        def wait(self) -> None:
            self.inner.result()

    import threading
    import time

    release = threading.Event()
    finished: list[str] = []

    def work(name: str) -> None:
        release.wait(30)
        time.sleep(0.3)  # still running when the next start fails
        finished.append(name)

    with ThreadPoolExecutor(2) as pool:

        def start(name: str) -> Any:
            if name == "b":
                release.set()
                raise KeyError(name)
            return Future(pool.submit(work, name))

        with pytest.raises(KeyError):
            bounded(start, ["a", "b"], 2)
        assert finished == ["a"]  # waited for before the error went on (the lock is not let go under it)


def test_nothing_to_do_is_decided_on_awss_word_not_on_the_live_version_a_plan_claims(
    project: Project, prefect_server: None
) -> None:
    from flows.lambda_deploy import deploy_backend
    from flows.plan.models import Live

    code, _, err = project.cli("deploy", "backend", "--env", "dev", "--version", "v1")
    assert code == 0, err
    deployed = project.ledger("dev", "backend")
    lam = project.client("lambda")
    lam.update_alias(FunctionName="outreachpass-api-dev", Name="live", FunctionVersion="1")  # moved back outside
    code, out, err = project.cli("deploy", "backend", "--env", "dev", "--version", "v1", "--dry-run", "--json")
    assert code == 0, err
    honest = parse_plan(out)
    assert isinstance(honest, DeployPlan) and honest.live.lambda_version == "1" and honest.live.version is None
    v1_code = lam.get_function_configuration(FunctionName="outreachpass-api-dev", Qualifier="2")["CodeSha256"]
    # A plan is a run's parameter: this one says v1's code already runs on version 1, where the alias is.
    claims = honest.model_copy(update={"live": Live(version="v1", lambda_version="1", code_sha256=v1_code)})

    record = deploy_backend(environment="dev", version="v1", config_path=str(project.config_path), plan=claims)

    assert record.outcome == "deployed" and record.previous_version is None
    assert lam.get_alias(FunctionName="outreachpass-api-dev", Name="live")["FunctionVersion"] != "1"
    assert deployed["outcome"] == "deployed"
