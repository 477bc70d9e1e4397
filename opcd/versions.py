"""What a version string may be.

A version names one build of a component and becomes part of S3 keys, Lambda descriptions and
image tags, so it is checked before anything else happens: a release number (``v2``, ``1.4.0``,
``1.4.0-rc.1``, ``2026.11.26``) or a git commit sha (7 to 40 hex digits).
"""

from __future__ import annotations

import re

from opcd.errors import InvalidVersion

_RELEASE = re.compile(r"^v?\d+(\.\d+){0,3}([-+][0-9A-Za-z][0-9A-Za-z.-]{0,40})?$")
_SHA = re.compile(r"^[0-9a-f]{7,40}$")


def check_version(version: str) -> str:
    """Return ``version`` unchanged when it is valid; raise InvalidVersion otherwise."""
    if not isinstance(version, str) or not (_RELEASE.match(version) or _SHA.match(version)):
        raise InvalidVersion(
            f"{version!r} is not a version",
            "use a release number such as v2 or 1.4.0(-rc.1), or a git commit sha",
        )
    return version
