"""The command line's filter of Prefect's own records about an API that does not answer."""

from __future__ import annotations

import logging
import sys

import httpx

from tasks.prefect_api import OutageNoise

API = "http://127.0.0.1:4200/api"


def record(name: str, msg: str, exc: BaseException | None = None) -> logging.LogRecord:
    exc_info = None
    if exc is not None:
        try:
            raise exc
        except BaseException:
            exc_info = sys.exc_info()
    return logging.LogRecord(name, logging.ERROR, __file__, 1, msg, None, exc_info)


def connect_error(url: str) -> httpx.ConnectError:
    return httpx.ConnectError("[Errno 111] Connection refused", request=httpx.Request("POST", url))


def test_per_event_failures_are_dropped() -> None:
    noise = OutageNoise(API)
    assert not noise.filter(record("prefect.events.clients", "Unable to connect to 'ws://x/api/events/in'."))
    assert not noise.filter(record("prefect._internal.concurrency", "Service %r failed to process item %r"))
    # the same loggers' other records pass
    assert noise.filter(record("prefect.events.clients", "Reconnected"))


def test_a_failed_request_to_the_api_loses_its_traceback_but_keeps_its_line() -> None:
    noise = OutageNoise(API)
    rec = record(
        "prefect.flow_runs", "Encountered exception during execution", connect_error(f"{API}/flow_runs/1")
    )
    assert noise.filter(rec)
    assert rec.exc_info is None
    assert "Traceback" not in logging.Formatter().format(rec)
    assert rec.getMessage() == "Encountered exception during execution"


def test_other_failures_keep_their_traceback() -> None:
    noise = OutageNoise(API)
    elsewhere = record("prefect.flow_runs", "boom", connect_error("http://prometheus:9090/api/v1/alerts"))
    ours = record("prefect.flow_runs", "boom", KeyError("node"))
    for rec in (elsewhere, ours):
        assert noise.filter(rec)
        assert rec.exc_info is not None
        assert "Traceback" in logging.Formatter().format(rec)
