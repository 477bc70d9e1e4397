"""``opcd setup``'s shared result storage, against the Prefect test server and the sandbox's S3.

A flow that runs its tasks inside ``shared_results`` (the release, terraform-apply) keeps their
results in the artifact bucket once ``opcd setup`` saved the ``opcd-results`` block, and finds them
there again from any process; without the block, nothing changes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from uuid import uuid4

import pytest
from prefect import flow, task
from prefect.cache_policies import INPUTS
from prefect.states import State

from deployments.setup import ensure_result_storage
from opcd.config import load_config
from tasks.results import BLOCK, PREFIX, shared_results
from tests.conftest import Project

BUCKET = "outreachpass-artifacts"
RAN: list[int] = []
SESSION = uuid4().hex  # in the cache key: results an earlier test session left on this machine never match


@task(cache_policy=INPUTS, persist_result=True)
def remembered(n: int, session: str) -> str:
    RAN.append(n)
    return f"built {n}"


@flow
def uses_shared_results(config_path: str, n: int) -> tuple[str | None, State[Any]]:
    with shared_results(config_path) as where:
        return where, remembered(n, SESSION, return_state=True)


@pytest.fixture
def no_block_left(prefect_server: None) -> Iterator[None]:
    """The test server outlives this test: the block it saves is deleted after it, so other runs keep local results."""
    from prefect.client.orchestration import get_client

    yield
    with get_client(sync_client=True) as client:
        try:
            block = client.read_block_document_by_name(BLOCK, "s3-bucket")
        except Exception:  # never saved: the test failed before
            return
        client.delete_block_document(block.id)


def result_keys(project: Project) -> list[str]:
    listed = project.client("s3").list_objects_v2(Bucket=BUCKET, Prefix=f"{PREFIX}/")
    return [item["Key"] for item in listed.get("Contents", [])]


def test_setup_saves_the_block_and_runs_then_keep_their_results_in_the_bucket(
    project: Project, no_block_left: None
) -> None:
    path = str(project.config_path)
    config = load_config(path)
    RAN.clear()

    # without the block: the results stay where Prefect keeps them; nothing in the bucket
    where, state = uses_shared_results(path, 1)
    assert where is None and state.result() == "built 1"
    assert result_keys(project) == []

    # opcd setup saves the block (bucket and prefix, no credentials); again, it changes nothing
    first, again = ensure_result_storage(config, dry_run=False), ensure_result_storage(config, dry_run=False)
    assert (first.kind, first.name, first.action) == ("result storage", f"s3-bucket/{BLOCK}", "created")
    assert first.detail == f"s3://{BUCKET}/{PREFIX}/", first
    assert again.action == "unchanged"

    # with it: the task's result is an object under prefect-results/
    where, state = uses_shared_results(path, 2)
    assert where == f"s3://{BUCKET}/{PREFIX}"
    assert state.result() == "built 2" and RAN == [1, 2]
    keys = result_keys(project)
    assert len(keys) == 1, keys

    # another run finds it there: Cached, not run again; gone from the bucket, it runs again
    where, state = uses_shared_results(path, 2)
    assert (state.name, state.result(), RAN) == ("Cached", "built 2", [1, 2])
    project.client("s3").delete_object(Bucket=BUCKET, Key=keys[0])
    where, state = uses_shared_results(path, 2)
    assert (state.name, RAN) == ("Completed", [1, 2, 2])


def test_setup_dry_run_saves_no_block(project: Project, no_block_left: None) -> None:
    from prefect_aws.s3 import S3Bucket

    change = ensure_result_storage(load_config(str(project.config_path)), dry_run=True)
    assert change.action == "created"
    with pytest.raises(ValueError):
        S3Bucket.load(BLOCK)


@flow(persist_result=True)  # as the release: what runs inside persists its results unless told not to
def reads_a_secret(config_path: str) -> int:
    from opcd.aws import target_for
    from tasks.secrets import read_secret

    config = load_config(config_path)
    with shared_results(config_path):
        value = read_secret(target_for(config, "dev"), str(config.environment("dev").database_secret))
        return len(value.get_secret_value())


def test_a_secret_read_in_a_release_never_reaches_the_result_storage(project: Project, no_block_left: None) -> None:
    # read_secret has no cache key (NO_CACHE): Prefect writes a result only under a key, even in a persisting run
    path = str(project.config_path)
    config = load_config(path)
    ensure_result_storage(config, dry_run=False)
    secret = project.client("secretsmanager").get_secret_value(SecretId=config.environment("dev").database_secret)
    assert reads_a_secret(path) == len(secret["SecretString"]) > 0
    s3 = project.client("s3")
    stored = [s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() for key in result_keys(project)]
    assert not [body for body in stored if secret["SecretString"].encode() in body]
