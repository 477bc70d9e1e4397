"""Prefect tasks, one module per outside system. Each task does one thing to one system."""
