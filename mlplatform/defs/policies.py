"""Retry policies of steps that talk to external services (MLflow, databases)."""

import dagster as dg

__all__ = ["EXTERNAL_SERVICE_RETRY"]

EXTERNAL_SERVICE_RETRY = dg.RetryPolicy(
    max_retries=3,
    delay=2,
    backoff=dg.Backoff.EXPONENTIAL,
    jitter=dg.Jitter.PLUS_MINUS,
)
"""Three more tries, about 2 s, 4 s and 8 s apart: rides out a restarting MLflow server
or database. Failures that retrying cannot fix (bad input) raise
``dg.Failure(allow_retries=False)`` and fail at once."""
