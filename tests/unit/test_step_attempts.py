"""The attempts of a runbook step: each runs once, a transient error allows another, anything else ends the
step, and a driver that stops half-way leaves the rest to ``finish``."""

from __future__ import annotations

import pytest

from aksmaint.errors import TransientApiError
from aksmaint.maintenance.attempts import StepAttempts


class Body:
    """A step body that fails with the given errors, in order, then returns "done"."""

    def __init__(self, *errors: Exception):
        self.errors = list(errors)
        self.runs = 0

    def __call__(self) -> str:
        self.runs += 1
        if self.errors:
            raise self.errors.pop(0)
        return "done"


def attempts_of(body: Body, retries: int = 3) -> tuple[StepAttempts[str], list[tuple[int, float]]]:
    retried: list[tuple[int, float]] = []
    attempts = StepAttempts(
        body, retries, retry_delay=0.0, on_retry=lambda n, exc, wait: retried.append((n, wait))
    )
    return attempts, retried


def test_a_transient_error_allows_another_attempt_each_run_once():
    body = Body(TransientApiError("503"), TransientApiError("429"))
    attempts, retried = attempts_of(body)

    with pytest.raises(TransientApiError):
        attempts.attempt()
    assert not attempts.ended and attempts.can_retry(TransientApiError("again"))
    with pytest.raises(TransientApiError):
        attempts.attempt()
    assert attempts.attempt() == "done"

    assert (body.runs, attempts.count, attempts.ended) == (3, 3, True)
    assert [n for n, _ in retried] == [2, 3], "the second and third attempts were announced"


def test_an_error_that_is_not_transient_ends_the_step_at_once():
    body = Body(ValueError("bad request"))
    attempts, retried = attempts_of(body)

    with pytest.raises(ValueError):
        attempts.attempt()

    assert attempts.ended and body.runs == 1 and retried == []
    with pytest.raises(ValueError):  # asked again, it answers the same without running the body
        attempts.attempt()
    with pytest.raises(ValueError):
        attempts.finish()
    assert body.runs == 1


def test_retries_run_out():
    body = Body(*(TransientApiError("503") for _ in range(5)))
    attempts, _ = attempts_of(body, retries=2)

    with pytest.raises(TransientApiError):
        attempts.finish()

    assert body.runs == 3 and attempts.ended


def test_finish_goes_on_where_a_driver_stopped_and_never_repeats_an_attempt():
    body = Body(TransientApiError("503"))
    attempts, _ = attempts_of(body)
    with pytest.raises(TransientApiError):
        attempts.attempt()  # the driver (a Prefect task run) stopped after this attempt

    assert attempts.finish() == "done"
    assert attempts.finish() == "done"
    assert body.runs == 2


def test_a_step_nobody_drove_is_run_by_finish():
    body = Body()
    attempts, _ = attempts_of(body)

    assert attempts.finish() == "done" and body.runs == 1
