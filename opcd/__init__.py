"""opcd: continuous delivery for OutreachPass on Prefect 3."""

__version__ = "0.1.0"
