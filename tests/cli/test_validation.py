"""Pure CLI validation: bad arguments, a bad opcd.toml, bad versions — one line, exit 2, refused before any
AWS target is resolved (nothing printed on stdout). No sandbox, no Prefect server, no AWS credentials."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli.main import main
from tests.conftest import copy_examples, one_line_error, project_config, write_terraform_root


@pytest.fixture
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The project's opcd.toml with no sandbox and no AWS credentials: a request that reaches AWS fails there."""
    copy_examples(tmp_path)
    write_terraform_root(tmp_path / "src" / "terraform")
    (tmp_path / "opcd.toml").write_text(project_config())
    for var in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "OPCD_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    for var in ("AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE"):
        monkeypatch.setenv(var, str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return tmp_path / "opcd.toml"


def refused(capsys: pytest.CaptureFixture[str], args: list[str]) -> str:
    """Run ``opcd ARGS``; it must exit 2 with one error line and nothing on stdout. The line."""
    code = main(args)
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    assert out == ""  # refused before the AWS target was even resolved
    return one_line_error(err)


BAD_VERSIONS = [
    ("v13\n", "'v13\\n' is not a version"),
    ("v\uff11\uff13", "is not a version"),
    ("v\u0661\u0663", "is not a version"),
    ("v1..2", "'v1..2' is not a version"),
    ("../x", "'../x' is not a version"),
    ("", "'' is not a version"),
    ("v1; rm -rf /", "is not a version"),
    ("latest", "'latest' is not a version — 'latest' is the image tag that moves"),
]
VERSION_FLAGS = [["deploy", "backend", "--env", "dev", "--version"], ["rollback", "backend", "--env", "dev", "--to"],
                 ["release", "--component", "backend", "--version"]]  # fmt: skip
BAD_SHA = ["--version", "v2", "--git-sha", "abc1234\n"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [([*flags, version], expected) for flags in VERSION_FLAGS for version, expected in BAD_VERSIONS]
    + [(["deploy", "backend", "--env", "dev", *BAD_SHA], "'abc1234\\n' is not a commit sha — give 7 to 40"),
       (["release", "--component", "backend", *BAD_SHA], "'abc1234\\n' is not a commit sha — give 7 to 40")],
)  # fmt: skip
def test_bad_versions_and_shas_are_refused_before_aws(
    offline: Path, capsys: pytest.CaptureFixture[str], args: list[str], expected: str
) -> None:
    assert expected in refused(capsys, ["--config", str(offline), *args])


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["deploy", "web", "--env", "dev", "--version", "v1"], "'web' — opcd.toml defines: backend, frontend, worker"),
        (["deploy", "backend", "--env", "staging", "--version", "v1"], "unknown environment 'staging' — opcd.toml"),
        (["status", "--env", "qa"], "unknown environment 'qa'"),
    ],
)  # fmt: skip
def test_unknown_components_and_environments_are_refused_before_aws(
    offline: Path, capsys: pytest.CaptureFixture[str], args: list[str], expected: str
) -> None:
    assert expected in refused(capsys, ["--config", str(offline), *args])


def test_missing_config_file(capsys: pytest.CaptureFixture[str]) -> None:
    err = refused(
        capsys, ["--config", "/nonexistent/opcd.toml", "deploy", "backend", "--env", "dev", "--version", "v1"]
    )
    assert "config file '/nonexistent/opcd.toml' not found" in err and "--config" in err


def test_config_with_a_wrong_key(offline: Path, capsys: pytest.CaptureFixture[str]) -> None:
    offline.write_text(offline.read_text().replace("artifact_retention_days", "artifact_retention_dayz"))
    code = main(["--config", str(offline), "deploy", "backend", "--env", "dev", "--version", "v1"])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert "project.artifact_retention_dayz: unknown key" in err
    assert "Traceback" not in err


def test_config_that_is_not_toml_is_one_line(offline: Path, capsys: pytest.CaptureFixture[str]) -> None:
    offline.write_text(offline.read_text() + "\n[project\n")
    err = refused(capsys, ["--config", str(offline), "status"])
    assert str(offline) in err


def test_config_check(offline: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", str(offline), "config", "check"]) == 0
    assert capsys.readouterr().out.endswith("ok (3 components, 2 environments)\n")
    broken = offline.parent / "broken.toml"
    broken.write_text(offline.read_text().replace('backend = "outreachpass-api-prod", ', ""))
    assert main(["--config", str(offline), "config", "check", str(broken)]) == 2
    assert "environments.prod.functions.backend: missing" in capsys.readouterr().err


def test_health_options_are_checked(capsys: pytest.CaptureFixture[str]) -> None:
    err = refused(capsys, ["--config", "/nonexistent.toml", "health", "http://127.0.0.1:9/", "--successes", "0"])
    assert "--successes: Input should be greater than or equal to 1" in err


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for command in ("config", "sandbox", "deploy", "rollback", "status", "health"):
        assert command in out
