"""The layers of tests/README.md: a unit test is marked so, and cannot reach a Prefect server."""

from __future__ import annotations

import httpx
import pytest
from prefect.client.orchestration import get_client


def test_a_unit_test_is_marked_unit(request: pytest.FixtureRequest) -> None:
    assert [m.name for m in request.node.iter_markers() if m.name in ("unit", "integration", "e2e")] == ["unit"]


def test_a_unit_test_that_asks_prefect_fails_at_once_instead_of_starting_a_server() -> None:
    with get_client(sync_client=True) as client, pytest.raises(httpx.ConnectError):
        client.hello()
