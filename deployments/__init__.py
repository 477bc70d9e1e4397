"""What makes a Prefect server ready for the opcd flows (work pool, locks, secret blocks)."""
