"""How a run ended: the one vocabulary the ledger, the flows, Slack and the CLI share.

The values are the strings the ledger has always held, so records written before still read.
"""

from __future__ import annotations

from enum import StrEnum


class Outcome(StrEnum):
    """How one deploy or rollback of one component in one environment ended (a ledger record's ``outcome``)."""

    DEPLOYED = "deployed"  # the version is live and proved healthy
    NOOP = "noop"  # it was live already: nothing changed
    SHIFTING = "shifting"  # traffic is moving now (the run has not ended)
    FAILED = "failed"  # failed before traffic moved: live untouched
    ROLLED_BACK = "rolled-back"  # failed after traffic moved, and live went back (verified)
    ROLLBACK_FAILED = "rollback-failed"  # failed, and going back failed too (or could not be verified)
    ERROR = "error"  # the run failed without (or after) its last ledger record

    @classmethod
    def failed_outcomes(cls) -> frozenset[Outcome]:
        """The outcomes that are failures: the one place that says so."""
        return frozenset({cls.FAILED, cls.ROLLED_BACK, cls.ROLLBACK_FAILED, cls.ERROR})

    @property
    def is_failure(self) -> bool:
        return self in self.failed_outcomes()

    @property
    def saw_previous_live(self) -> bool:
        """The run read its previous version live and ended knowing it (not rollback-failed: live unknown)."""
        return self in (Outcome.DEPLOYED, Outcome.NOOP, Outcome.ROLLED_BACK)


class ReleaseOutcome(StrEnum):
    """How a whole release ended (its summary's ``outcome``)."""

    RELEASED = "released"
    FAILED = "failed"
    REJECTED = "rejected"  # an approver said no
    TIMED_OUT = "timed-out"  # no approval before the timeout

    @property
    def is_failure(self) -> bool:
        return self is not ReleaseOutcome.RELEASED


class Stage(StrEnum):
    """The step a run is at before it changes anything live (a failure there leaves live untouched)."""

    PLAN = "plan"  # the request and the AWS resources it names
    BUILD = "build"
    PUSH = "push"  # an image to ECR
    UPLOAD = "upload"  # a Lambda package to S3


class CheckStatus(StrEnum):
    """How one check of a pull request ended."""

    PASSED = "passed"
    FAILED = "failed"
    TIMED_OUT = "timed-out"
    SKIPPED = "skipped"
    ERROR = "error"  # the check could not run

    @property
    def is_failure(self) -> bool:
        return self in (CheckStatus.FAILED, CheckStatus.TIMED_OUT, CheckStatus.ERROR)


class BakeEnd(StrEnum):
    """How a canary or linear bake ended (the ledger record's ``bake.ended``)."""

    RUNNING = "running"
    COMPLETED = "completed"  # every step baked under its guards
    PROMOTED = "promoted"  # someone moved all traffic early (opcd promote)
    ABORTED = "aborted"  # someone stopped it (opcd abort)
    GUARD_FAILED = "guard-failed"  # an alarm, the health URL or a smoke check failed
