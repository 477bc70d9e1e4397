"""Shared result storage: the release's persisted task results in the artifact bucket, for any worker.

A release started from a deployment is suspended at its approval gate and, once answered, runs
again from the top on whichever worker of the pool takes it: its builds and deploys come back as
``Cached`` from their persisted results, if that worker can read them. ``opcd setup`` saves a
prefect-aws ``S3Bucket`` block, :data:`BLOCK`, on the artifact bucket under :data:`PREFIX`; a
release run that finds it keeps its task results there (:func:`shared_results`) — on a worker or in
the CLI's own process, with that process's AWS credentials — and one that does not (a server
``opcd setup`` never prepared) keeps them on its machine, as Prefect does by default.

The block holds the bucket and the prefix only, no credentials: each worker reads and writes with
its own (the AWS target opcd resolves for it, as for the ledger), so the deploy role needs
``s3:GetObject`` and ``s3:PutObject`` on ``PREFIX/*`` and nothing else changes hands.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prefect.context import FlowRunContext
from prefect_aws import AwsClientParameters, AwsCredentials
from prefect_aws.s3 import S3Bucket
from pydantic import SecretStr

from opcd.aws import resolve_target
from opcd.config import load_config
from opcd.iam import RESULTS_PREFIX, record_calls

BLOCK = "opcd-results"  # the S3Bucket block's name: s3-bucket/opcd-results
PREFIX = RESULTS_PREFIX


def block_for(bucket: str) -> S3Bucket:
    """The block ``opcd setup`` saves: the bucket and the prefix, no credentials."""
    return S3Bucket(bucket_name=bucket, bucket_folder=PREFIX)


def shared_storage(config_path: str | None) -> S3Bucket | None:
    """The server's :data:`BLOCK` with this worker's AWS credentials; None when the server has no such block."""
    try:
        saved: Any = S3Bucket.load(BLOCK)  # sync here: load is async-dispatched
    except ValueError:  # Prefect's "Unable to find block document named …"
        return None
    config = load_config(config_path)
    target = resolve_target(config.state_dir(), config.project.region)  # the worker's own, as the release's
    key = secret = token = None
    if target.credentials:
        key, secret, *session = target.credentials
        token = session[0] if session else None
    credentials = AwsCredentials(
        aws_access_key_id=key, aws_secret_access_key=SecretStr(secret) if secret else None,
        aws_session_token=token, region_name=target.region,
        aws_client_parameters=AwsClientParameters(endpoint_url=target.endpoint_for("s3")),
    )  # fmt: skip
    if directory := os.environ.get("OPCD_RECORD_AWS_CALLS"):  # the tests prove the IAM policy (opcd/iam.py)
        record_calls(credentials.get_s3_client(), directory)
    return S3Bucket(bucket_name=saved.bucket_name, bucket_folder=saved.bucket_folder, credentials=credentials)


@contextmanager
def shared_results(config_path: str | None) -> Iterator[str | None]:
    """Inside: the current flow run's tasks (and their child runs) persist their results in :data:`BLOCK`.

    Yields where (``s3://BUCKET/PREFIX``), or None when the results stay where Prefect keeps them.
    """
    context = FlowRunContext.get()
    storage = shared_storage(config_path) if context is not None else None
    if context is None or storage is None:
        yield None
        return
    store = context.result_store.model_copy(update={"result_storage": storage})
    with context.model_copy(update={"result_store": store}):
        yield f"s3://{storage.bucket_name}/{storage.bucket_folder}"
