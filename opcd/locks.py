"""Locks on the Prefect server: Prefect global concurrency limits with one slot each.

- ``opcd-env-{environment}-{component}``: one change at a time to one component in one environment
  (a deploy or a rollback). Different components of an environment may change together: that is
  what a release does, in parallel.
- ``opcd-release-{environment}``: one release at a time per environment, held while the release
  deploys there (not while it waits for an approval), so two releases queue instead of interleaving.

``opcd setup`` creates the limits on a server; a run also creates its limit when it is missing,
because Prefect silently skips a limit that does not exist unless asked to be strict.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound


def limit_name(environment: str, component: str) -> str:
    return f"opcd-env-{environment}-{component}"


def release_limit_name(environment: str) -> str:
    return f"opcd-release-{environment}"


def ensure_limit(name: str) -> bool:
    """Create the one-slot limit ``name`` when missing; True when it was created."""
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
            return False
        except ObjectNotFound:
            pass
        try:
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
        except ObjectAlreadyExists:
            return False
        return True


# The slot is a lease the holder renews while it runs; a process that dies (killed mid-deploy)
# stops renewing, and the server frees the slot once the lease runs out. 60 s is the server's minimum.
LEASE_SECONDS = 60.0


@contextmanager
def _hold(name: str, timeout: float | None) -> Iterator[None]:
    ensure_limit(name)
    with concurrency(name, occupy=1, timeout_seconds=timeout, strict=True, lease_duration=LEASE_SECONDS):
        yield


@contextmanager
def environment_lock(environment: str, component: str, timeout: float | None = 3600.0) -> Iterator[None]:
    """Hold ``component``'s slot in ``environment`` for the block (waits for another change to it)."""
    with _hold(limit_name(environment, component), timeout):
        yield


@contextmanager
def release_lock(environment: str, timeout: float | None = None) -> Iterator[None]:
    """Hold the environment's release slot for the block (waits for another release's deploys there)."""
    with _hold(release_limit_name(environment), timeout):
        yield
