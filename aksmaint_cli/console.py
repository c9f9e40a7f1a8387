"""What the terminal shows of the log records while a command runs a flow.

An error the project raises on purpose (``MaintenanceError``) has a message that says what to check. When
it ends the run, the command prints that message as its one ``error:`` line. Prefect's engine logs it
too, with the whole traceback: for the flow run, and for the task run that raised it. The terminal drops
those records, and urllib3's "Retrying" warnings too, since the client retries and then fails with such
an error.

Only the terminal's handlers are filtered. The Prefect API still gets every record, so the run's logs in
the UI keep the traceback. ``--debug``, or PREFECT_LOGGING_LEVEL=DEBUG, shows everything. A traceback of
any other exception (a bug) is always shown.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator

from azure.core.exceptions import ClientAuthenticationError, ServiceRequestError
from prefect.logging.handlers import APILogHandler
from prefect.settings import PREFECT_LOGGING_LEVEL

from aksmaint.errors import ClusterAccessError, MaintenanceError

FLOW_RUNS = "prefect.flow_runs"
TASK_RUNS = "prefect.task_runs"
# how Prefect names the exception in a failed state: "... encountered an exception: ClusterAccessError: ..."
FAILED_STATE = re.compile(r"^Finished in state .*encountered an exception:? (\w+): ")
# no use of the cluster is possible: a kubeconfig, context or API server that does not work, credentials
# refused; or Azure Resource Manager not answering or refusing the credential (the cluster-upgrade flow's
# tasks raise the Azure SDK's errors, and the flow turns them into a ClusterAccessError)
ACCESS_ERRORS: tuple[type[Exception], ...] = (
    ClusterAccessError,
    ServiceRequestError,
    ClientAuthenticationError,
)


def type_names(errors: tuple[type[Exception], ...]) -> set[str]:
    """The names of these exception types and of all their subclasses."""
    names: set[str] = set()
    todo: list[type] = list(errors)
    while todo:
        cls = todo.pop()
        names.add(cls.__name__)
        todo += cls.__subclasses__()
    return names


class ExplainedErrors(logging.Filter):
    """Drops the records that repeat an error the command prints itself.

    The flow run's record of its exception is dropped for any ``MaintenanceError``: the command prints
    that message as its ``error:`` line. A task run's records are dropped only for an access error
    (``ACCESS_ERRORS``): it ends the run, so the command prints it too. A task that fails for another
    reason may be one node of many, and its record stays."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "urllib3.connectionpool" and str(record.msg).startswith("Retrying"):
            return False
        if record.name == FLOW_RUNS:
            return not self.reports(record, (MaintenanceError,))
        if record.name == TASK_RUNS:
            return not self.reports(record, ACCESS_ERRORS)
        return True

    @staticmethod
    def reports(record: logging.LogRecord, errors: tuple[type[Exception], ...]) -> bool:
        """Whether the record is about an exception of one of these types: it carries one, or it is the
        "Finished in state Failed" line that names one."""
        if record.exc_info and record.exc_info[1] is not None:
            return isinstance(record.exc_info[1], errors)
        named = FAILED_STATE.match(record.getMessage())
        return named is not None and named.group(1) in type_names(errors)


def debugging() -> bool:
    """PREFECT_LOGGING_LEVEL=DEBUG asks for everything, as ``--debug`` does."""
    return str(PREFECT_LOGGING_LEVEL.value()).upper() == "DEBUG"


@contextlib.contextmanager
def explained_errors_once(debug: bool) -> Iterator[None]:
    """While a flow runs: the terminal's handlers leave out the records ``ExplainedErrors`` drops, unless
    ``debug`` or PREFECT_LOGGING_LEVEL=DEBUG."""
    if debug or debugging():
        yield
        return
    quiet = ExplainedErrors()
    # the terminal's handlers sit on the root logger; the API handler is on the run loggers themselves
    handlers = [h for h in logging.getLogger().handlers if not isinstance(h, APILogHandler)]
    for handler in handlers:
        handler.addFilter(quiet)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(quiet)
