import pytest

from opcd.errors import InvalidVersion
from opcd.versions import check_version


@pytest.mark.parametrize("version", ["v1", "v2", "1.4.0", "1.4.0-rc.1", "2026.11.26", "v1.2.3+build.7", "abc1234", "0"])
def test_valid_versions(version: str) -> None:
    assert check_version(version) == version


@pytest.mark.parametrize(
    "version", ["", "../x", "latest", "v1/../../etc", "v 1", "1.2.3.4.5", "ABC1234", "v1;rm", "-1"]
)
def test_invalid_versions(version: str) -> None:
    with pytest.raises(InvalidVersion) as info:
        check_version(version)
    assert "is not a version" in str(info.value) and "v2 or 1.4.0" in str(info.value)
