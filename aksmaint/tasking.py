"""The one way tasks are declared here: retried on transient errors only, never cached."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from aksmaint.kube import is_transient


def retry_only_transient(task_obj: Any, task_run: Any, state: Any) -> bool:
    """Prefect retry condition: retry throttling, server errors and dropped connections; fail the rest."""
    try:
        exc = state.result(raise_on_failure=False)
    except Exception as err:  # a result that cannot be loaded is no reason to retry
        exc = err
    return isinstance(exc, BaseException) and is_transient(exc)


def maintenance_task(fn: Callable | None = None, *, retries: int = 3, **options: Any):
    """Decorate a step as a Prefect task with the project's retry policy."""
    settings = {
        "retries": retries,
        "retry_delay_seconds": exponential_backoff(backoff_factor=1),
        "retry_jitter_factor": 0.5,
        "retry_condition_fn": retry_only_transient,
        "cache_policy": NO_CACHE,
        **options,
    }
    if fn is None:
        return lambda f: task(f, **settings)
    return task(fn, **settings)
