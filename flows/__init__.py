"""Prefect flows: the order of steps, parallelism, approval and rollback policy. No boto3 here."""
