"""The attempts of one runbook step, counted in one place so that whoever drives them (a plain loop, or a
Prefect task run with its retries) runs each attempt exactly once.

A step is retried only after a transient API error (throttling, a server error, a dropped connection),
with exponential backoff and jitter; any other error ends the step. ``StepAttempts`` runs one attempt at a
time and remembers how the step ended, so a driver that stops half-way (the Prefect API failed around a
task run) hands the rest to ``finish``, which goes on without it.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from aksmaint.kube import is_transient

T = TypeVar("T")


class StepAttempts(Generic[T]):
    """Up to ``retries + 1`` runs of ``body``; each ``attempt`` call runs at most one."""

    def __init__(
        self,
        body: Callable[[], T],
        retries: int,
        retry_delay: float,
        on_retry: Callable[[int, BaseException, float], None] = lambda attempt, exc, wait: None,
    ):
        self.body = body
        self.retries = retries
        self.retry_delay = retry_delay
        self.on_retry = on_retry
        self.count = 0  # attempts started
        self.ended = False
        self.result: T | None = None
        self.error: BaseException | None = None  # the error that ended the step, if one did

    def can_retry(self, exc: BaseException) -> bool:
        """True when ``exc`` ended an attempt and another one is allowed."""
        return not self.ended and is_transient(exc) and self.count <= self.retries

    def attempt(self) -> T:
        """Run the next attempt (after its backoff, from the second on) and return its result, or raise
        its error. A step that has ended is never run again: its result is returned, or its error raised."""
        if self.ended:
            return self._outcome()
        if self.count:
            wait = self.retry_delay * 2 ** (self.count - 1) * (1 + random.random() * 0.5)
            assert self.error is not None
            self.on_retry(self.count + 1, self.error, wait)
            time.sleep(wait)
        self.count += 1
        try:
            self.result = self.body()
        except Exception as exc:
            self.error = exc
            self.ended = not self.can_retry(exc)
            raise
        self.error, self.ended = None, True
        return self.result

    def finish(self) -> T:
        """The step's outcome, running the attempts left when no driver did."""
        while not self.ended:
            try:
                return self.attempt()
            except Exception:
                continue
        return self._outcome()

    def _outcome(self) -> T:
        if self.error is not None:
            raise self.error
        return self.result  # type: ignore[return-value]
