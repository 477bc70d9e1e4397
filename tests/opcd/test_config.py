"""opcd.toml: valid files load; every mistake is reported with its key path."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from opcd.config import load_config, parse_config, parse_duration
from opcd.errors import ConfigError, InputError, UnknownName
from opcd.traffic import parse_strategy

ROOT = Path(__file__).resolve().parent.parent.parent


def base() -> dict:  # type: ignore[type-arg]
    return tomllib.loads((ROOT / "opcd.toml").read_text())


def problems(data: dict) -> str:  # type: ignore[type-arg]
    with pytest.raises(ConfigError) as info:
        parse_config(data, ROOT)
    return str(info.value)


def test_the_project_config_loads() -> None:
    config = load_config(ROOT / "opcd.toml")
    assert config.function_name("backend", "dev") == "outreachpass-api-dev"
    assert config.environment("prod").approval and config.environment("prod").approval.timeout == 86400
    assert config.environment("dev").health_check.successes == 3
    assert config.source_dir("backend") == ROOT / "examples" / "outreachpass" / "backend"


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("24h", 86400.0), ("5m", 300.0), ("1.5s", 1.5), ("250ms", 0.25), (30, 30.0), ("2d", 172800.0)],
)
def test_durations(value: object, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["soon", "-5m", True, "5 parsecs", -1])
def test_bad_durations(value: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(value)


def test_unknown_key_names_its_path() -> None:
    data = base()
    data["environments"]["dev"]["healthz"] = {}
    assert "environments.dev.healthz: unknown key" in problems(data)


def test_missing_function_of_an_environment() -> None:
    data = base()
    del data["environments"]["prod"]["functions"]["backend"]
    assert "environments.prod.functions.backend: missing" in problems(data)


def test_every_problem_is_listed_at_once() -> None:
    data = base()
    del data["project"]["artifact_bucket"]
    data["components"]["backend"]["kind"] = "ec2"
    data["environments"]["dev"]["health"]["backend"] = "not a url"
    message = problems(data)
    assert "project.artifact_bucket: missing" in message
    assert "components.backend.kind: Input should be 'lambda', 'apprunner' or 'ecs'" in message
    assert "environments.dev.health: health.backend: expected an http(s) URL" in message


def test_cross_checks() -> None:
    data = base()
    data["components"]["backend"]["source"] = "nowhere"
    data["environments"]["dev"]["health"]["ghost"] = "https://x.example/"
    del data["environments"]["dev"]["database_secret"]
    message = problems(data)
    assert "components.backend.source: directory 'nowhere' does not exist" in message
    assert "environments.dev.health.ghost: no component 'ghost' in [components]" in message
    assert "environments.dev.database_secret: missing (a component has migrations)" in message


def test_a_lambda_needs_a_handler_and_apprunner_a_repository() -> None:
    data = base()
    del data["components"]["backend"]["handler"]
    data["components"]["web"] = {"kind": "apprunner", "source": "examples/outreachpass/backend"}
    message = problems(data)
    assert "components.backend.handler: missing" in message
    assert "components.web.repository: missing" in message


def test_each_kind_is_its_own_model_and_a_key_of_another_kind_is_refused() -> None:
    from opcd.config import AppRunnerComponent, LambdaComponent

    config = parse_config(base(), ROOT)
    assert isinstance(config.component("backend"), LambdaComponent)
    assert isinstance(config.component("frontend"), AppRunnerComponent)
    assert config.lambda_component("worker").rules[0].name == "nightly-digest"
    with pytest.raises(InputError, match="'frontend' is a apprunner component, not a Lambda"):
        config.lambda_component("frontend")
    data = base()
    data["components"]["frontend"]["handler"] = "app.handler"  # a Lambda's key on an App Runner component
    del data["components"]["worker"]["kind"]
    message = problems(data)
    assert "components.frontend.handler: unknown key" in message
    assert "components.worker.kind: missing" in message


def ecs_config() -> dict:  # type: ignore[type-arg]
    data = base()
    data["components"]["shop"] = {
        "kind": "ecs", "source": "examples/outreachpass/frontend", "repository": "outreachpass-shop",
        "smoke": [{"path": "/"}],
    }  # fmt: skip
    for name, env in data["environments"].items():
        env["ecs"] = {"shop": {"cluster": f"outreachpass-{name}", "service": "shop"}}
    return data


def test_an_ecs_component_and_its_service_per_environment() -> None:
    from opcd.config import EcsComponent

    data = ecs_config()
    data["environments"]["prod"]["ecs"]["shop"].update(strategy="blue-green", bake="90s")
    config = parse_config(data, ROOT)
    shop = config.component("shop")
    assert isinstance(shop, EcsComponent) and shop.container is None and shop.dockerfile == "Dockerfile"
    assert shop.operation.timeout == 1200.0
    dev, prod = config.ecs_service("shop", "dev"), config.ecs_service("shop", "prod")
    assert (dev.cluster, dev.service, dev.strategy, dev.bake_minutes) == ("outreachpass-dev", "shop", "rolling", 0)
    assert (prod.strategy, prod.bake, prod.bake_minutes) == ("blue-green", 90.0, 2)  # rounded up to minutes


def test_an_ecs_component_needs_a_repository_and_a_service_in_every_environment() -> None:
    data = ecs_config()
    del data["components"]["shop"]["repository"]
    data["environments"]["dev"]["ecs"]["shop"]["strategy"] = "canary"
    message = problems(data)
    assert "components.shop.repository: missing" in message
    assert "environments.dev.ecs.shop.strategy: Input should be 'rolling' or 'blue-green'" in message
    data = ecs_config()
    del data["environments"]["prod"]["ecs"]["shop"]
    data["environments"]["dev"]["ecs"]["ghost"] = {"cluster": "c", "service": "s"}
    message = problems(data)
    assert "environments.prod.ecs.shop: missing" in message
    assert "environments.dev.ecs.ghost: no component 'ghost' in [components]" in message
    data = ecs_config()
    data["environments"]["dev"]["traffic"] = {"shop": "canary10-5m"}
    assert "environments.dev.traffic: shop is an ECS service; only Lambda components shift" in problems(data)


def test_an_ecs_component_is_deployed_by_the_deploy_ecs_flow() -> None:
    from flows.components import deploy_flow

    config = parse_config(ecs_config(), ROOT)
    flow, extra = deploy_flow(config, "shop")
    assert (flow.name, extra) == ("deploy-ecs", {"component": "shop"})


def test_every_setting_says_what_it_is_for() -> None:
    """docs/config.md's key table is generated from these descriptions: none may be missing."""
    from pydantic import BaseModel

    from opcd import config as models

    classes = [v for v in vars(models).values() if isinstance(v, type) and issubclass(v, BaseModel)]
    missing = [f"{c.__name__}.{name}" for c in classes for name, f in c.model_fields.items() if not f.description]
    assert not missing, missing


def test_bad_approval() -> None:
    data = base()
    data["environments"]["prod"]["approval"] = {"approvers": []}
    assert "environments.prod.approval.approvers: List should have at least 1 item" in problems(data)


def test_approvals_verified_by_github_name_each_approvers_login() -> None:
    data = base()
    gate = {"approvers": [{"name": "alice", "github": "alice-gh"}, "bob"], "verify": "github", "repository": "o/r"}
    data["environments"]["prod"]["approval"] = gate
    assert (
        'environments.prod.approval: verify = "github" needs each approver\'s GitHub login: bob has none'
    ) in problems(data)
    gate["approvers"] = [{"name": "alice", "github": "alice-gh"}, {"name": "bob", "github": "Bob"}]
    del gate["repository"]
    assert 'environments.prod.approval: verify = "github" needs repository = "owner/name"' in problems(data)
    gate["repository"], gate["workflow"] = "outreachpass/outreachpass", "approve.sh"
    assert "environments.prod.approval.workflow: String should match pattern" in problems(data)
    del gate["workflow"]
    approval = parse_config(data, ROOT).environment("prod").approval
    assert approval and approval.approvers == ["alice", "bob"] and approval.workflow == "approve.yml"
    assert approval.approver_of("BOB") == "bob" and approval.approver_of("mallory") is None  # logins ignore case
    # self-declared (the default): plain names, as before; a login on a name is kept but not needed
    data["environments"]["prod"]["approval"] = {"approvers": ["alice", {"name": "bob", "github": "bob"}]}
    approval = parse_config(data, ROOT).environment("prod").approval
    assert approval and approval.verify == "none" and approval.approvers == ["alice", "bob"]
    data["environments"]["prod"]["approval"] = {"approvers": ["alice", "alice"]}
    assert "environments.prod.approval: approver 'alice' appears twice" in problems(data)
    data["environments"]["prod"]["approval"] = {"approvers": [{"name": "a", "github": "not a login"}]}
    assert "environments.prod.approval.approvers[a].github: String should match pattern" in problems(data)


@pytest.mark.parametrize(
    ("traffic", "expected"),
    [
        ("canary150-5m", "'canary150-5m': the percentage must be 1–99"),
        ("linear0-1m", "'linear0-1m': the percentage must be 1–99"),
        ("canary10-0m", "'canary10-0m': the bake time must be more than 0"),
        ("canary10-5d", "'canary10-5d' is not a traffic strategy: use all-at-once, canaryP-Dm or linearP-Dm"),
        ("blue-green", "'blue-green' is not a traffic strategy"),
        ({"backend": "linear100-1m"}, "backend: 'linear100-1m': the percentage must be 1–99"),
        ({"web": "canary10-5m"}, "environments.prod.traffic.web: no component 'web' in [components]"),
        (7, "expected a strategy string or a table of component = strategy, got 7"),
    ],
)
def test_invalid_traffic_strategies_are_refused(traffic: object, expected: str) -> None:
    data = base()
    data["environments"]["prod"]["traffic"] = traffic
    assert expected in problems(data)


def test_invalid_strategy_through_config_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cli.main import main

    text = (ROOT / "opcd.toml").read_text().replace('backend = "canary10-5m"', 'backend = "canary150-5m"')
    (tmp_path / "opcd.toml").write_text(text.replace('"examples/', f'"{ROOT}/examples/'))
    assert main(["config", "check", str(tmp_path / "opcd.toml")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "error: invalid opcd.toml:",
        "  environments.prod.traffic: backend: 'canary150-5m': the percentage must be 1–99 (every strategy ends"
        " at 100%); for everything at once use 'all-at-once' — fix the keys above; `opcd config check` shows"
        " them again",
    ]


def test_strategies_per_component_and_their_steps() -> None:
    config = load_config(ROOT / "opcd.toml")
    prod = config.environment("prod")
    canary, linear = prod.strategy("backend"), prod.strategy("worker")
    assert [(s.percent, s.bake) for s in canary.steps()] == [(10, 300.0)]
    assert [(s.percent, s.bake) for s in linear.steps()] == [(50, 120.0)]
    assert parse_strategy("linear25-1m").steps()[-1].percent == 75 and len(parse_strategy("linear25-1m").steps()) == 3
    assert [s.percent for s in parse_strategy("linear30-90s").steps()] == [30, 60, 90]
    assert parse_strategy("linear30-90s").total_bake == 270.0
    assert parse_strategy("linear10-1m").describe().startswith("linear10-1m: 10% → 20%")
    assert parse_strategy("canary5-0.5s").describe() == "canary5-0.5s: 5% → 100%, 0.5s per step"
    assert config.environment("dev").strategy("backend").steps() == []
    assert prod.bake.poll_interval == 15.0 and prod.bake.smoke


def test_an_apprunner_service_cannot_shift_gradually() -> None:
    data = base()
    data["components"]["web"] = {"kind": "apprunner", "source": "examples/outreachpass/backend", "repository": "web"}
    for env in data["environments"].values():
        env["services"]["web"] = "arn:aws:apprunner:us-east-1:123456789012:service/web/1"
    data["environments"]["dev"]["traffic"] = {"web": "canary10-5m"}
    assert "environments.dev.traffic: web is an App Runner service" in problems(data)
    # one strategy for every component applies to the Lambdas; App Runner rolls its own way
    data["environments"]["dev"]["traffic"] = "canary10-5m"
    assert parse_config(data, ROOT).environment("dev").strategy("backend").gradual


def test_toml_syntax_error(tmp_path: Path) -> None:
    bad = tmp_path / "opcd.toml"
    bad.write_text("[project\nname = 1\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_config_from_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPCD_CONFIG", str(ROOT / "opcd.toml"))
    assert load_config().project.name == "outreachpass"


def test_unknown_names() -> None:
    config = load_config(ROOT / "opcd.toml")
    with pytest.raises(UnknownName, match="unknown component 'web'.*defines: backend, frontend, worker"):
        config.component("web")
    with pytest.raises(UnknownName, match="unknown environment 'qa'"):
        config.environment("qa")


def test_rule_problems_name_the_rule() -> None:
    data = base()
    data["components"]["worker"]["rules"] = [
        {"name": "nightly-digest", "schedule": "every night"},
        {"name": "on-signup", "event_pattern": {"source": "outreachpass"}},
        {"name": "both", "schedule": "rate(5 minutes)", "event_pattern": {"source": ["x"]}},
    ]
    message = problems(data)
    assert "components.worker.rules[nightly-digest].schedule: 'every night' is not a schedule expression" in message
    assert (
        "components.worker.rules[on-signup].event_pattern: event_pattern.source: expected a non-empty array" in message
    )
    assert "components.worker.rules[both]: rule 'both': give exactly one of schedule or event_pattern" in message


def test_valid_schedules() -> None:
    data = base()
    data["components"]["worker"]["rules"] = [
        {"name": "a", "schedule": "rate(1 hour)"},
        {"name": "b", "schedule": "rate(15 minutes)"},
        {"name": "c", "event_pattern": {"source": ["outreachpass"], "detail": {"kind": ["signup"]}}},
    ]
    assert len(parse_config(data, ROOT).components["worker"].rules) == 3
    data["components"]["worker"]["rules"] = [{"name": "a", "schedule": "rate(1 hours)"}]
    assert "is not a schedule expression" in problems(data)


def test_sample_event_must_exist() -> None:
    data = base()
    data["components"]["worker"]["sample_event"] = "nowhere.json"
    assert "components.worker.sample_event: file 'nowhere.json' does not exist" in problems(data)


def test_terraform_files_are_checked_per_environment() -> None:
    data = base()
    data["terraform"] = {**data["terraform"], "var_file": "vars/{environment}.tfvars", "colour": "blue"}
    text = problems(data)
    assert "terraform.colour: unknown key" in text
    data["terraform"].pop("colour")
    text = problems(data)
    assert "terraform.var_file: dev's file examples/outreachpass/terraform/vars/dev.tfvars does not exist" in text
    assert "terraform.var_file: prod's file" in text
    data["terraform"]["root"] = "nowhere"
    assert "terraform.root: directory 'nowhere' does not exist" in problems(data)


def test_the_project_config_names_its_terraform() -> None:
    config = load_config(ROOT / "opcd.toml")
    assert config.terraform is not None
    assert config.terraform.backend_file("prod") == "backends/prod.hcl"
    assert config.terraform.var_file_for("dev") == "environments/dev.tfvars"


def test_account_and_role_of_an_environment() -> None:
    data = base()
    data["environments"]["prod"]["account_id"] = "012345678901"
    data["environments"]["prod"]["role_arn"] = "arn:aws:iam::012345678901:role/deploy/opcd-prod"
    prod = parse_config(data, ROOT).environment("prod")
    assert (prod.account_id, prod.role_arn) == ("012345678901", "arn:aws:iam::012345678901:role/deploy/opcd-prod")
    assert parse_config(base(), ROOT).environment("dev").account_id is None  # unset: any account, reported


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("account_id", 123456789012, 'write the account as a string of 12 digits: account_id = "123456789012"'),
        ("account_id", "12345678901", "expected an AWS account id of 12 digits, e.g. '123456789012', got"),
        ("account_id", "12345678901a", "expected an AWS account id of 12 digits"),
        ("account_id", "123456789012\n", "expected an AWS account id of 12 digits"),
        ("role_arn", "arn:aws:iam::123456789012:user/alice", "expected an IAM role ARN, e.g. 'arn:aws:iam::"),
        ("role_arn", "opcd-deploy", "expected an IAM role ARN"),
        ("role_arn", "arn:aws:iam::1234:role/opcd", "expected an IAM role ARN"),
    ],
)
def test_bad_account_or_role(key: str, value: object, expected: str) -> None:
    data = base()
    data["environments"]["prod"][key] = value
    assert f"environments.prod.{key}: {expected}" in problems(data)


def test_a_role_of_another_account_than_account_id() -> None:
    data = base()
    data["environments"]["prod"]["account_id"] = "111111111111"
    data["environments"]["prod"]["role_arn"] = "arn:aws:iam::222222222222:role/opcd-deploy"
    assert "environments.prod: role_arn is a role of account 222222222222, not of account_id 111111111111" in problems(
        data
    )


# Python's \d matches any Unicode digit and $ matches before a trailing newline: every pattern of
# opcd.toml is ASCII and matches the whole value.
@pytest.mark.parametrize("value", ["\uff15m", "\u0665m", "5\uff4d"])
def test_durations_are_ascii(value: str) -> None:
    with pytest.raises(ValueError, match="expected a duration"):
        parse_duration(value)


@pytest.mark.parametrize("value", ["canary10-5m\n", "canary\uff11\uff10-5m", "linear10-\u0665m", "canary10-5m "])
def test_strategies_are_ascii_and_whole(value: str) -> None:
    with pytest.raises(ValueError, match="is not a traffic strategy"):
        parse_strategy(value)


@pytest.mark.parametrize(
    ("where", "value", "expected"),
    [
        ("schedule", "rate(5 minutes)\n", "is not a schedule expression"),
        ("schedule", "rate(\uff15 minutes)", "is not a schedule expression"),
        ("schedule", "cron(0 3 * * ? *)\n", "is not a schedule expression"),
        ("handler", "app.h\u00e4ndler", "components.backend.handler: String should match pattern"),
        ("health", "https://x.example/health\n", "expected an http(s) URL"),
        ("health", "https://\u00fc.example/health", "expected an http(s) URL"),
    ],
)
def test_config_patterns_are_ascii_and_whole(where: str, value: str, expected: str) -> None:
    data = base()
    if where == "schedule":
        data["components"]["worker"]["rules"] = [{"name": "a", "schedule": value}]
    elif where == "handler":
        data["components"]["backend"]["handler"] = value
    else:
        data["environments"]["dev"]["health"]["backend"] = value
    assert expected in problems(data)


def test_a_load_test_is_optional_bounded_and_needs_the_first_environments_health_url() -> None:
    config = parse_config(base(), ROOT)
    assert config.component("backend").load_test is None  # old files stay valid
    data = base()
    data["components"]["backend"]["load_test"] = {"rate": 20, "duration": "30s", "max_p95_regression": 0.2}
    test = parse_config(data, ROOT).component("backend").load_test
    assert test is not None and test.requests == 600 and test.endpoints == ["/health"] and test.p95_noise == 0.01
    for load_test, expected in (
        ({"rate": 200, "duration": "300s"}, "load_test: rate × duration is 60000 requests; at most 10000"),
        ({"rate": 0}, "load_test.rate: Input should be greater than 0"),
        ({"duration": "10m"}, "load_test.duration: must be more than 0 and at most 5 minutes"),
        ({"endpoints": ["health"]}, "load_test.endpoints[0]: String should match pattern"),
        ({"endpoints": []}, "load_test.endpoints: List should have at least 1 item"),
        ({"max_p95_regression": -0.1}, "load_test.max_p95_regression: Input should be greater than or equal to 0"),
        ({"max_error_rate": 2}, "load_test.max_error_rate: Input should be less than or equal to 1"),
        ({"concurrency": 0}, "load_test.concurrency: Input should be greater than or equal to 1"),
        ({"rps": 5}, "load_test.rps: unknown key"),
    ):
        data["components"]["backend"]["load_test"] = load_test
        assert f"components.backend.{expected}" in problems(data), load_test
    data["components"]["backend"]["load_test"] = {}
    data["components"]["worker"]["load_test"] = {}  # the worker has no health URL to find its origin
    assert "environments.dev.health.worker: missing (components.worker.load_test requests its origin)" in problems(data)


def test_canary_analysis_settings_are_checked_at_load() -> None:
    analysis = load_config(ROOT / "opcd.toml").environment("prod").bake.analysis
    assert analysis is not None and analysis.min_samples == 50 and analysis.on_inconclusive == "pass"
    assert analysis.metrics == ["errors", "throttles", "p50", "p99"] and analysis.period == 60.0
    assert load_config(ROOT / "opcd.toml").environment("dev").bake.analysis is None  # off unless configured
    for wrong, message in (
        ({"period": "7s"}, "environments.prod.bake.analysis.period: period must be 1s, 5s, 10s, 30s or a multiple"),
        ({"on_inconclusive": "maybe"}, "environments.prod.bake.analysis.on_inconclusive: "),
        (
            {"metrics": ["p95"]},
            "environments.prod.bake.analysis.metrics[0]: Input should be 'errors', 'throttles', 'p50' or 'p99'",
        ),
        ({"metrics": ["p50", "p50"]}, "metrics lists a metric twice"),
        ({"min_samples": 0}, "environments.prod.bake.analysis.min_samples: "),
        ({"confidence": 1.5}, "environments.prod.bake.analysis.confidence: "),
        ({"thresholds": 1}, "environments.prod.bake.analysis.thresholds: unknown key"),
    ):
        data = base()
        data["environments"]["prod"]["bake"]["analysis"] = wrong
        assert message in problems(data), wrong


def two_regions(data: dict) -> dict:  # type: ignore[type-arg]
    """``data`` with prod in us-east-1 then us-west-2, Lambda components only, names per region."""
    del data["components"]["frontend"]
    for env in data["environments"].values():
        env.pop("services", None)
        env["health"].pop("frontend", None)
    data["project"]["artifact_bucket"] = "outreachpass-artifacts-{region}"
    prod = data["environments"]["prod"]
    prod["regions"] = ["us-east-1", "us-west-2"]
    prod["functions"]["backend"] = "outreachpass-api-prod-{region}"
    prod["alarms"] = ["outreachpass-api-prod-{region}-errors"]
    prod["database_secret"] = "outreachpass/prod/{region}/database"  # pragma: allowlist secret
    prod["health"]["backend"] = "https://api.{region}.outreachpass.example/health"
    return data


def test_an_environment_without_regions_has_the_projects_region_and_names_as_written() -> None:
    config = load_config(ROOT / "opcd.toml")
    assert config.regions("prod") == ["us-east-1"] and config.region_key("prod") is None
    assert config.function_name("backend", "prod") == "outreachpass-api-prod"
    assert config.bucket_for("prod") == config.project.artifact_bucket == "outreachpass-artifacts"
    assert config.alarm_names("prod") == ["outreachpass-api-prod-errors"]
    with pytest.raises(UnknownName, match="environment 'prod' has no region 'us-west-2'"):
        config.region_key("prod", "us-west-2")


def test_regions_fill_in_each_regions_names() -> None:
    config = parse_config(two_regions(base()), ROOT)
    assert config.regions("prod") == ["us-east-1", "us-west-2"] and config.regions("dev") == ["us-east-1"]
    assert (config.region_key("prod"), config.region_key("prod", "us-west-2")) == ("us-east-1", "us-west-2")
    assert config.region_key("dev", "us-east-1") is None  # one region: no region key anywhere
    assert config.function_name("backend", "prod", "us-west-2") == "outreachpass-api-prod-us-west-2"
    assert config.function_name("backend", "prod") == "outreachpass-api-prod-us-east-1"  # the first region's
    assert config.function_name("worker", "prod", "us-west-2") == "outreachpass-worker-prod"  # no {region}
    assert config.bucket_for("prod", "us-west-2") == "outreachpass-artifacts-us-west-2"
    assert config.project.artifact_bucket == "outreachpass-artifacts-us-east-1"  # the project's region's
    assert config.alarm_names("prod", "us-west-2") == ["outreachpass-api-prod-us-west-2-errors"]
    assert config.database_secret("prod", "us-west-2") == "outreachpass/prod/us-west-2/database"
    assert config.health_url("backend", "prod", "us-west-2") == "https://api.us-west-2.outreachpass.example/health"


def test_a_database_of_each_region_is_migrated_in_each_a_shared_one_in_the_first_region_alone() -> None:
    own = parse_config(two_regions(base()), ROOT)  # database_secret with {region}: a database per region
    assert [own.migrates("prod", r) for r in ("us-east-1", "us-west-2")] == [True, True]
    data = two_regions(base())
    data["environments"]["prod"]["database_secret"] = "outreachpass/prod/database"  # pragma: allowlist secret
    shared = parse_config(data, ROOT)
    assert [shared.migrates("prod", r) for r in ("us-east-1", "us-west-2")] == [True, False]
    assert shared.migrates("dev") and shared.migrates("prod")  # one region, or no region named: always


@pytest.mark.parametrize(
    ("regions", "message"),
    [
        ([], "environments.prod.regions: name at least one region"),
        (["us-east-1", "us-east-1"], "environments.prod.regions: 'us-east-1' appears twice"),
        (["us-east-1", "Oregon"], "environments.prod.regions: 'Oregon' is not an AWS region's name"),
        ("us-east-1", "environments.prod.regions: Input should be a valid list"),
    ],
)
def test_bad_regions_are_refused_at_load(regions: object, message: str) -> None:
    data = two_regions(base())
    data["environments"]["prod"]["regions"] = regions
    assert message in problems(data)


def test_several_regions_refuse_app_runner_saying_why_and_need_a_bucket_per_region() -> None:
    data = base()  # the frontend is an App Runner service; the bucket has no {region}
    data["environments"]["prod"]["regions"] = ["us-east-1", "us-west-2"]
    text = problems(data)
    assert "environments.prod.regions: frontend is an App Runner component" in text
    assert "App Runner takes no new customers since 30 April 2026" in text and 'kind = "ecs"' in text
    assert "project.artifact_bucket: prod has several regions" in text and "put {region} in the name" in text


def test_one_region_other_than_the_projects_needs_a_bucket_in_it() -> None:
    data = base()
    data["environments"]["prod"]["regions"] = ["us-west-2"]  # the bucket's name has no {region}: project.region's
    assert "project.artifact_bucket: prod is in us-west-2, not project.region, and a Lambda function" in problems(data)
    data["project"]["artifact_bucket"] = "outreachpass-artifacts-{region}"
    config = parse_config(data, ROOT)
    assert config.bucket_for("prod") == "outreachpass-artifacts-us-west-2" and config.region_key("prod") is None


def test_several_regions_need_a_health_url_per_region() -> None:
    data = two_regions(base())
    data["environments"]["prod"]["health"]["backend"] = "https://api.outreachpass.example/health"  # one for both
    assert "environments.prod.health.backend: prod has several regions, and one URL for all" in problems(data)
    parse_config(two_regions(base()), ROOT)  # {region} in it: each region its own URL


def ecs_in_two_regions() -> dict:  # type: ignore[type-arg]
    """examples/outreachpass/opcd-ecs.toml with prod in us-east-1 then us-west-2, {region} in its names."""
    data = tomllib.loads((ROOT / "examples" / "outreachpass" / "opcd-ecs.toml").read_text())
    data["project"]["artifact_bucket"] = "outreachpass-artifacts-{region}"
    prod = data["environments"]["prod"]
    prod["regions"] = ["us-east-1", "us-west-2"]
    prod["health"] = {k: v.replace("://", "://{region}.") for k, v in prod["health"].items()}
    prod["ecs"]["frontend"].update(
        cluster="outreachpass-prod-{region}", alarms=["outreachpass-web-ecs-prod-{region}-5xx"]
    )
    return data


def test_an_ecs_component_in_several_regions_names_each_regions_cluster_service_and_alarms() -> None:
    config = parse_config(ecs_in_two_regions(), ROOT / "examples" / "outreachpass")
    west = config.ecs_service("frontend", "prod", "us-west-2")
    assert (west.cluster, west.service, west.alarms) == (
        "outreachpass-prod-us-west-2", "outreachpass-web-ecs-prod", ["outreachpass-web-ecs-prod-us-west-2-5xx"]
    )  # fmt: skip
    assert config.ecs_service("frontend", "prod").cluster == "outreachpass-prod-us-east-1"  # its first region
    assert (west.strategy, west.bake) == ("blue-green", 300.0)
    assert config.ecs_service("frontend", "dev").cluster == "outreachpass-dev"  # one region: as written


@pytest.mark.parametrize("cluster", ["outreachpass-{zone}", "outreachpass.{region}", "{REGION}"])
def test_an_ecs_name_takes_only_the_region_placeholder(cluster: str) -> None:
    data = ecs_in_two_regions()
    data["environments"]["prod"]["ecs"]["frontend"]["cluster"] = cluster
    assert "environments.prod.ecs.frontend.cluster: String should match pattern" in problems(data)
