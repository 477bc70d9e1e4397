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

An AWS error (botocore's ``ClientError``) is said through :func:`explain_aws_error` wherever it
reaches a person: the CLI's last line, a deploy's reason, Slack.
"""

from __future__ import annotations

import re
import traceback

from botocore.exceptions import ClientError


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


# --- AWS's errors, said the same way everywhere ---------------------------------------------

_DENIED = frozenset({
    "AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "UnauthorizedAccess", "AuthorizationError",
    "AuthorizationErrorException", "NotAuthorized", "Forbidden", "ForbiddenException", "403",
})  # fmt: skip
_THROTTLED = frozenset({
    "Throttling", "ThrottlingException", "ThrottledException", "TooManyRequestsException", "RequestLimitExceeded",
    "RequestThrottled", "RequestThrottledException", "SlowDown", "ProvisionedThroughputExceededException",
    "BandwidthLimitExceeded", "PriorRequestNotComplete", "EC2ThrottledException",
})  # fmt: skip
_CREDENTIALS = frozenset({
    "ExpiredToken", "ExpiredTokenException", "InvalidClientTokenId", "UnrecognizedClientException",
    "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "TokenRefreshRequired", "RequestExpired",
    "AuthFailure", "IncompleteSignature", "MissingAuthenticationToken", "InvalidSignatureException",
})  # fmt: skip
_NOT_FOUND = frozenset({"NoSuchBucket", "NoSuchKey", "NotFound", "404"})
# Operations whose IAM action is not named ``service:Operation``.
_ACTIONS = {
    ("lambda", "Invoke"): "lambda:InvokeFunction",
    ("s3", "HeadObject"): "s3:GetObject",
    ("s3", "HeadBucket"): "s3:ListBucket",
    ("s3", "ListObjectsV2"): "s3:ListBucket",
    ("s3", "GetBucketLifecycleConfiguration"): "s3:GetLifecycleConfiguration",
    ("s3", "PutBucketLifecycleConfiguration"): "s3:PutLifecycleConfiguration",
}
_NAMED_ACTION = re.compile(r"not authorized to perform:? ([\w-]+:[\w*]+)")


def _service_of(exc: BaseException) -> str | None:
    """The client's service name (``lambda``, ``s3``…): the botocore client that raised ``exc`` is on its stack."""
    for frame, _line in traceback.walk_tb(exc.__traceback__):
        model = getattr(getattr(frame.f_locals.get("self"), "meta", None), "service_model", None)
        if model is not None:
            return str(model.service_name)
    return None


def explain_aws_error(exc: BaseException, service: str | None = None) -> tuple[str, str]:
    """(message, hint) for an AWS error (a botocore ``ClientError``), as opcd says it everywhere.

    Access denied names the IAM action that is missing (``service:Operation``: AWS's own message
    when it names one, else from the client's service and the operation); throttling says to retry;
    rejected credentials and missing resources say where to look.
    """
    error = (getattr(exc, "response", None) or {}).get("Error", {})
    code, text = str(error.get("Code") or type(exc).__name__), str(error.get("Message") or "").strip()
    operation = str(getattr(exc, "operation_name", None) or "call")
    message = f"AWS {operation} failed: {code}" + (f": {text}" if text else "")
    if code in _DENIED:
        named = _NAMED_ACTION.search(text)
        service = service or _service_of(exc)
        action = f"{service}:{operation}" if service else f"for {operation}"
        action = named[1] if named else _ACTIONS.get((service or "", operation), action)
        return message, f"the credentials opcd uses lack the IAM permission {action}: grant it (policy or role)"
    if code in _THROTTLED:
        return message, "AWS is throttling: retry in a minute"
    if code in _CREDENTIALS:
        return message, (
            "AWS did not accept the credentials (expired or wrong): renew them (aws sso login, AWS_PROFILE,"
            " AWS_ACCESS_KEY_ID…), or start the sandbox"
        )
    if code in _NOT_FOUND or "NotFound" in code:
        return message, "check the names in opcd.toml against the account and region opcd uses (first line)"
    return message, "AWS refused the call: its message above says why; fix that and run the command again"


def failure_text(exc: BaseException) -> str:
    """One line for a failure in a reason or a message: an OpcdError as is, an AWS error explained."""
    if isinstance(exc, OpcdError):
        return str(exc)
    if isinstance(exc, ClientError):
        message, hint = explain_aws_error(exc)
        return f"{message} — {hint}"
    return f"{type(exc).__name__}: {exc}"
