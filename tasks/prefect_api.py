"""The Prefect API a command-line run records itself in, made sure of before the run starts.

With ``PREFECT_API_URL`` set, the API must answer its health check. Without it, Prefect starts a temporary
local server; its first start on a fresh machine (a cold virtualenv, a new SQLite database and its
migrations) can take longer than Prefect's 20 s default, so the command line gives it
``LOCAL_SERVER_TIMEOUT`` seconds (or ``PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS`` if that is
larger) and stops waiting as soon as the server process has exited.

Either way a failure is one line that says what to do; nothing has been sent to the cluster yet.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

LOCAL_SERVER_TIMEOUT = 300.0
HEALTH_TIMEOUT = 15.0

# A run records a task run per node and one per phase of it (tasks/node_runs.py): about 24 task-run
# state events per rebooted node. Prefect's server writes them one transaction each by default; in
# batches it needs half the CPU (measured at 300 nodes, 30 at once). A state then shows up to a second
# later in the UI. The project's servers (the temporary local one here, scripts/prefect_postgres.py)
# start with these unless the environment already sets them.
SERVER_RECORDER_SETTINGS = {
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE": "200",
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_READ_BATCH_SIZE": "100",
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_FLUSH_INTERVAL": "1",
}


def server_environment(env: dict[str, str]) -> dict[str, str]:
    """``env`` with the task-run recorder's batching added where ``env`` does not set it."""
    return {**SERVER_RECORDER_SETTINGS, **env}


class PrefectUnavailable(Exception):
    """The Prefect API cannot be reached, or the temporary local server could not be started."""


def ensure_prefect_api() -> str:
    """The URL of a Prefect API that answers, starting the temporary local server when none is set."""
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_ENABLED

    url = PREFECT_API_URL.value()
    if url:
        check_health(url)
        return url
    if not PREFECT_SERVER_EPHEMERAL_ENABLED.value():
        raise PrefectUnavailable(
            "no Prefect API: set PREFECT_API_URL to a running Prefect server "
            "(or allow the temporary local server with PREFECT_SERVER_EPHEMERAL_ENABLED=true)"
        )
    return start_local_server()


def check_health(url: str) -> None:
    try:
        response = httpx.get(f"{url.rstrip('/')}/health", timeout=HEALTH_TIMEOUT)
    except httpx.HTTPError as exc:
        raise PrefectUnavailable(
            f"the Prefect API at {url} does not answer ({type(exc).__name__}); "
            "start the server or fix PREFECT_API_URL"
        ) from exc
    if response.status_code != 200:
        raise PrefectUnavailable(
            f"the Prefect API at {url} answered its health check with HTTP {response.status_code}; "
            "check the server (and PREFECT_API_URL)"
        )


def start_local_server() -> str:
    """Start Prefect's temporary local server, the one every flow call of this process then uses (Prefect
    keeps one per process and stops it at exit). Its own output goes to ``local-server.log`` under
    PREFECT_HOME, not among the run's report.

    Prefect's own start would wait only its setting's seconds, and start the server again and again when
    the application fails to start (uvicorn's exit code 3, which it takes for a port in use); here any
    exit is a failure, said once."""
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_HOME, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS

    timeout = max(LOCAL_SERVER_TIMEOUT, float(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value()))
    log_path = Path(PREFECT_HOME.value()) / "local-server.log"
    server = SubprocessASGIServer()
    if server.running:
        return server.api_url
    server.port = server.find_available_port()
    for name, value in SERVER_RECORDER_SETTINGS.items():  # the server process inherits this environment
        os.environ.setdefault(name, value)
    with _output_to(log_path):
        process = server._run_uvicorn_command()
    server.server_process, server.running = process, True
    atexit.register(server.stop)
    deadline = time.monotonic() + timeout
    why = f"it did not answer within {timeout:.0f}s"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            why = f"its process exited with code {process.returncode}"
            break
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{server.api_url}/health", timeout=HEALTH_TIMEOUT).status_code == 200:
                return server.api_url
        time.sleep(0.2)
    if process.poll() is None:
        process.kill()
    process.wait()
    server.server_process, server.running = None, False
    raise PrefectUnavailable(
        f"could not start the temporary local Prefect server ({why}; its log: {log_path}); "
        "set PREFECT_API_URL to a running Prefect server, or raise PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
    )


@contextlib.contextmanager
def _output_to(path: Path) -> Iterator[None]:
    """Send this process's standard output and error (and so a child's started meanwhile) to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with path.open("ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])


class OutageNoise(logging.Filter):
    """Prefect's own log records about an API that does not answer, made fit for a command line.

    While the API is away, Prefect's background services log one warning and one error, with the whole
    event, for every event they fail to send, and the flow engine logs a traceback when it cannot record
    the run's final state. The run itself already says once that the API is away, and the command line
    ends with one line about it; so the per-event records are dropped and the engine's record loses its
    traceback (its one-line message stays). Records about anything else pass unchanged."""

    DROPPED = {
        "prefect.events.clients": "Unable to connect to",
        "prefect._internal.concurrency": "failed to process item",
    }

    def __init__(self, api_url: str):
        super().__init__()
        self.api_url = api_url.rstrip("/")

    def filter(self, record: logging.LogRecord) -> bool:
        marker = self.DROPPED.get(record.name)
        if marker is not None and marker in str(record.msg):
            return False
        if record.exc_info and self.from_the_api(record.exc_info[1]):
            record.exc_info = None
            record.exc_text = None
        return True

    def from_the_api(self, exc: BaseException | None) -> bool:
        """Whether the exception is a failed request to this Prefect API."""
        if not isinstance(exc, httpx.HTTPError):
            return False
        try:
            url = str(exc.request.url)
        except RuntimeError:  # an httpx error raised without its request
            return False
        return url.startswith(self.api_url)


def quiet_outage_noise(api_url: str) -> None:
    """Install ``OutageNoise`` on the loggers Prefect reports API failures with, for this process; and
    stop the logging module printing its own "--- Error logging to API ---" notes."""
    noise = OutageNoise(api_url)
    for name in (*OutageNoise.DROPPED, "prefect.flow_runs", "prefect.task_runs"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, OutageNoise) for f in logger.filters):
            logger.addFilter(noise)
    logging.raiseExceptions = False
