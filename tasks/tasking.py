"""The one way tasks are declared here (retried on transient errors only, never cached), and the one way a
write to the Prefect API is made where its failure must not matter (``best_effort``)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from aksmaint.kube import is_transient

T = TypeVar("T")
log = logging.getLogger("aksmaint")


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


def run_logger() -> logging.Logger | logging.LoggerAdapter:
    """The logger of the current Prefect run, or a plain one outside any run."""
    try:
        return get_run_logger()
    except Exception:
        return log


def brief(exc: BaseException) -> str:
    """An exception in one short line: its type and the first line of its message."""
    text = str(exc).splitlines()[0][:200] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class PrefectHealth:
    """Whether the Prefect API is known not to answer, as a watch of it (``tasks.recording.ApiWatch``)
    last saw. While it does not, best-effort writes are not even tried: each would hold up the work for
    the minute of retries Prefect's client makes."""

    down = threading.Event()


def best_effort(what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
    """Call a Prefect API write (an artifact, an event); a failure is logged as a gap in the record and
    returns None: Prefect is the record of the work, never a part of it."""
    if PrefectHealth.down.is_set():
        log.debug("Not recording %s: the Prefect API does not answer", what)
        return None
    try:
        return fn(*args, **kwargs)
    except Exception as exc:
        run_logger().warning("Could not record %s in Prefect (%s); the work goes on", what, brief(exc))
        return None
