"""One deploy at a time per environment: a Prefect global concurrency limit with one slot.

``opcd setup`` creates the limits on a server; a deploy also creates its limit when it is missing,
because Prefect silently skips a limit that does not exist unless asked to be strict.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound


def limit_name(environment: str) -> str:
    return f"opcd-env-{environment}"


def ensure_limit(environment: str) -> bool:
    """Create the environment's one-slot limit when missing; True when it was created."""
    name = limit_name(environment)
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
def environment_lock(environment: str, timeout: float | None = 3600.0) -> Iterator[None]:
    """Hold the environment's slot for the duration of the block (waits for another deploy)."""
    ensure_limit(environment)
    with concurrency(
        limit_name(environment), occupy=1, timeout_seconds=timeout, strict=True, lease_duration=LEASE_SECONDS
    ):
        yield
