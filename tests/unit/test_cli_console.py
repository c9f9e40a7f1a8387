"""What the command line's terminal leaves out while a flow runs: the records that repeat an access error
the command prints itself. A bug's traceback, a node's own failure and the project's warnings stay."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest
from prefect.settings import PREFECT_LOGGING_LEVEL, temporary_settings

from aksmaint.errors import ClusterAccessError, HostCommandError, TransientApiError
from aksmaint_cli.console import explained_errors_once

UNREACHABLE = ClusterAccessError("cannot reach the Kubernetes API of aks-demo")


@pytest.fixture
def terminal() -> Iterator[io.StringIO]:
    """A handler on the root logger, where Prefect puts its console handler; the logging level is not
    DEBUG (which would show everything)."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    with temporary_settings(updates={PREFECT_LOGGING_LEVEL: "INFO"}):
        yield out
    root.removeHandler(handler)


def raised(exc: Exception) -> tuple:
    try:
        raise exc
    except Exception as caught:
        return (type(caught), caught, caught.__traceback__)


def log(name: str, message: str, exc: Exception | None = None, level: int = logging.ERROR) -> None:
    """A record of logger ``name`` as it reaches the root logger's handlers (the loggers' own handlers,
    Prefect's API handler among them, are left out)."""
    record = logging.LogRecord(name, level, __file__, 0, message, None, raised(exc) if exc else None)
    logging.getLogger().handle(record)


def log_a_run_that_cannot_reach_its_cluster() -> None:
    log(
        "urllib3.connectionpool",
        "Retrying (Retry(total=0)) after connection broken by NewConnectionError",
        level=30,
    )
    log(
        "prefect.task_runs",
        "Finished in state Failed('Task run encountered an exception ClusterAccessError: cannot reach')",
    )
    log("prefect.flow_runs", f"Encountered exception during execution: {UNREACHABLE!r}", UNREACHABLE)


def test_the_records_repeating_an_access_error_are_left_out(terminal):
    with explained_errors_once(debug=False):
        log_a_run_that_cannot_reach_its_cluster()
    assert terminal.getvalue() == ""


def test_with_debug_they_are_all_shown_with_the_traceback(terminal):
    with explained_errors_once(debug=True):
        log_a_run_that_cannot_reach_its_cluster()
    shown = terminal.getvalue()
    assert [
        line.split(" ", 1)[0] for line in shown.splitlines() if line.startswith(("urllib3", "prefect"))
    ] == [
        "urllib3.connectionpool",
        "prefect.task_runs",
        "prefect.flow_runs",
    ]
    assert "Traceback (most recent call last)" in shown


def test_once_the_flow_has_run_the_terminal_shows_everything_again(terminal):
    with explained_errors_once(debug=False):
        pass
    log("prefect.flow_runs", "Encountered exception during execution", UNREACHABLE)
    assert "Traceback (most recent call last)" in terminal.getvalue()


def test_a_bugs_traceback_a_nodes_failure_and_warnings_stay(terminal):
    with explained_errors_once(debug=False):
        log("prefect.flow_runs", "Encountered exception during execution", KeyError("node"))
        log(
            "prefect.task_runs",
            "Finished in state Failed('Task run encountered an exception HostCommandError: reboot')",
        )
        log("prefect.task_runs", "Task run failed with exception", TransientApiError("503"))
        log("prefect.flow_runs", "node aks-1 did not come back", level=logging.WARNING)
    shown = terminal.getvalue()
    assert "KeyError: 'node'" in shown and shown.count("Traceback (most recent call last)") == 2
    assert f"exception {HostCommandError.__name__}: reboot" in shown
    assert "prefect.flow_runs WARNING node aks-1 did not come back" in shown


def test_the_flow_runs_own_explained_error_is_left_out_whatever_its_kind(terminal):
    with explained_errors_once(debug=False):
        log("prefect.flow_runs", "Encountered exception during execution", HostCommandError("apt failed"))
    assert terminal.getvalue() == ""
