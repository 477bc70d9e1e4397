"""The errors opcd reports to people.

Every error a user can cause or meet carries a one-line message that says what is wrong and a
hint that says how to fix it. The CLI prints ``error: <message> — <hint>`` and exits with the
error's ``exit_code``; nothing else is shown (no stack trace).

    OpcdError
    ├── InputError            exit 2: the request is wrong; live state was not touched
    │   ├── ConfigError       opcd.toml is missing or invalid
    │   ├── UnknownName       an unknown component or environment
    │   ├── InvalidVersion    a version string that is not a version
    │   ├── ResourceMissing   an AWS resource named in opcd.toml does not exist
    │   ├── VersionConflict   a version that already names another build
    │   └── AlarmFiring       an alarm of the environment is firing and was not accepted
    └── DeployFailed          exit 1: the deploy ran and failed (rolled back when traffic moved)
        └── BuildFailed       the package could not be built
"""

from __future__ import annotations


class OpcdError(Exception):
    """Base of every error opcd reports; ``str()`` is the one line shown to the user."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} — {self.hint}" if self.hint else self.message

    def __reduce__(self) -> tuple[type[OpcdError], tuple[str, str | None]]:
        # Prefect persists a failed run's exception; keep the message and hint when it does.
        return (type(self), (self.message, self.hint))


class InputError(OpcdError):
    """The request cannot be carried out as given; nothing was changed."""

    exit_code = 2


class ConfigError(InputError):
    """``opcd.toml`` is missing, unreadable or does not match the schema."""


class UnknownName(InputError):
    """A component or environment that ``opcd.toml`` does not define."""


class InvalidVersion(InputError):
    """A version string that is not a version."""


class ResourceMissing(InputError):
    """An AWS resource that ``opcd.toml`` names does not exist."""


class VersionConflict(InputError):
    """The version is already taken by a different build."""


class AlarmFiring(InputError):
    """An alarm of the environment is in ALARM before the deploy; it was not accepted by name."""


class DeployFailed(OpcdError):
    """The deploy ran and failed; the message says what is live now."""

    exit_code = 1


class BuildFailed(DeployFailed):
    """Building the component's package failed."""
