"""What a version string and a git commit sha may be.

A version names one build of a component and becomes part of S3 keys, Lambda descriptions and
image tags, so it is checked before anything else happens. Its grammar is the container image
tag's: ASCII letters, digits, ``_``, ``.`` and ``-``, 1 to 128 characters, not starting with ``.``
or ``-`` — ``v2``, ``1.4.0``, ``1.4.0-rc.1``, ``build-42``, ``main.3f9c2e1``, ``2026-11-29_1``, a
git sha. Two more refusals: ``..`` (a version is a path part of S3 keys) and ``latest`` (the tag
that moves to each newly pushed image: a version of that name would be moved away from its image).
Every pattern is ASCII-only and matches the whole string: Python's ``\\d`` matches any Unicode
digit and ``$`` matches before a trailing newline.
"""

from __future__ import annotations

import re

from opcd.errors import InputError, InvalidVersion

GRAMMAR = "[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_VERSION = re.compile(GRAMMAR, re.ASCII)
_SHA = re.compile("[0-9a-f]{7,40}", re.ASCII)
MOVING_TAG = "latest"  # the frontend image's tag that follows each push (tasks.ecr.LATEST)


def check_version(version: str) -> str:
    """Return ``version`` unchanged when it is valid; raise InvalidVersion otherwise."""
    if isinstance(version, str) and version == MOVING_TAG:
        raise InvalidVersion(
            f"{version!r} is not a version",
            f"{MOVING_TAG!r} is the image tag that moves to each new push; name the build, e.g. v2 or 1.4.0",
        )
    if not isinstance(version, str) or not _VERSION.fullmatch(version) or ".." in version:
        raise InvalidVersion(
            f"{version!r} is not a version",
            f"use 1-128 ASCII letters, digits, '_', '.' or '-' ({GRAMMAR}, no '..'), e.g. v2, 1.4.0-rc.1, build-42",
        )
    return version


def version_or_none(text: str | None) -> str | None:
    """``text`` when it is a version (an image tag, a Lambda description's word), else None."""
    try:
        return check_version(text) if text is not None else None
    except InvalidVersion:
        return None


def check_git_sha(git_sha: str) -> str:
    """Return ``git_sha`` unchanged when it is 7 to 40 lowercase hex digits; raise InputError otherwise."""
    if not isinstance(git_sha, str) or not _SHA.fullmatch(git_sha):
        raise InputError(f"{git_sha!r} is not a commit sha", "give 7 to 40 lowercase hex digits (git rev-parse HEAD)")
    return git_sha
