import pytest

from opcd.errors import InputError, InvalidVersion
from opcd.versions import check_git_sha, check_version, version_or_none

SHA = "3f9c2e1" + "0" * 33  # 40 hex digits


@pytest.mark.parametrize(
    "version",
    ["v1", "v2", "1.4.0", "1.4.0-rc.1", "2026.11.26", "abc1234", "0", SHA, "ABC1234", "v1.x",
     "build-42", "main.3f9c2e1", "2026-11-29_1", "acc-1", "_", "a" * 128, "latest-1", "Latest"],
)  # fmt: skip
def test_valid_versions(version: str) -> None:
    assert check_version(version) == version
    assert version_or_none(version) == version


@pytest.mark.parametrize(
    "version",
    ["", "../x", "v1/../../etc", "v 1", "v1;rm", "-1", ".v1", "a..b", "v1..", "a" * 129,
     "v13\n", "v13\r\n", "\nv13", "v\uff11\uff13", "v\u0661\u0663", "v1.2.3+build.7", "v1\u200b", "caf\u00e9"],
)  # fmt: skip
def test_invalid_versions(version: str) -> None:
    with pytest.raises(InvalidVersion) as info:
        check_version(version)
    assert f"{version!r} is not a version" in str(info.value)
    assert "[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}, no '..'" in str(info.value)  # the hint states the grammar
    assert version_or_none(version) is None


def test_latest_is_the_moving_image_tag() -> None:
    with pytest.raises(InvalidVersion) as info:
        check_version("latest")
    assert "'latest' is not a version" in str(info.value)
    assert "the image tag that moves to each new push" in str(info.value)


@pytest.mark.parametrize("sha", ["abc1234", SHA])
def test_valid_git_shas(sha: str) -> None:
    assert check_git_sha(sha) == sha


@pytest.mark.parametrize("sha", ["abc1234\n", "abc123", "ABC1234", SHA + "0", "abc\uff11234", "HEAD~1", ""])
def test_invalid_git_shas(sha: str) -> None:
    with pytest.raises(InputError, match="is not a commit sha — give 7 to 40 lowercase hex digits"):
        check_git_sha(sha)
