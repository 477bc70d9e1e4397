"""The layers of tests/README.md: a unit test is marked so, and cannot reach a Prefect server."""

from __future__ import annotations

from types import SimpleNamespace

import httpx
import pytest
from prefect.client.orchestration import get_client


def test_a_unit_test_is_marked_unit(request: pytest.FixtureRequest) -> None:
    assert [m.name for m in request.node.iter_markers() if m.name in ("unit", "integration", "e2e")] == ["unit"]


def test_a_unit_test_that_asks_prefect_fails_at_once_instead_of_starting_a_server() -> None:
    with get_client(sync_client=True) as client, pytest.raises(httpx.ConnectError):
        client.hello()


class Worker:
    """What xdist's scheduler sees of a worker: it is sent test indices, runs them in order, is shut down."""

    def __init__(self, name: str) -> None:
        self.gateway, self.shutting_down, self.queue = SimpleNamespace(id=name), False, list[int]()

    def send_runtest_some(self, indices: list[int]) -> None:
        self.queue += indices

    def shutdown(self) -> None:
        self.shutting_down = True


def test_loadgroup_runs_each_group_on_one_worker_and_starts_the_groups_first_on_different_workers(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.conftest import XDIST_GROUPS, LoadGroupByModule

    monkeypatch.setattr(request.config.option, "tx", ["2*popen"], raising=False)  # `-n 2`

    deployments, ui = XDIST_GROUPS
    collection = [  # as the workers report it: no "@group" suffix (pytest 9.2)
        *(f"{deployments}::test_{n}" for n in range(6)), *(f"{ui}::test_{n}" for n in range(2)),
        *(f"tests/cli/test_{n}.py::test" for n in range(20)),
    ]  # fmt: skip
    scheduler = LoadGroupByModule(request.config)
    workers = [Worker("gw0"), Worker("gw1")]
    for worker in workers:
        scheduler.add_node(worker)  # type: ignore[arg-type]
        scheduler.add_node_collection(worker, collection)  # type: ignore[arg-type]
    scheduler.schedule()
    ran: dict[str, list[str]] = {"gw0": [], "gw1": []}
    while any(worker.queue for worker in workers):
        for worker in workers:
            if worker.queue:
                index = worker.queue.pop(0)
                ran[worker.gateway.id].append(collection[index])
                scheduler.mark_test_complete(worker, index)  # type: ignore[arg-type]

    on = {module: {w for w, ids in ran.items() for i in ids if i.startswith(module)} for module in XDIST_GROUPS}
    assert on == {deployments: {"gw0"}, ui: {"gw1"}}, ran  # one worker each: one server each
    assert ran["gw0"][0].startswith(deployments) and ran["gw1"][0].startswith(ui), ran  # the largest units first
    assert sorted(ran["gw0"] + ran["gw1"]) == sorted(collection)
