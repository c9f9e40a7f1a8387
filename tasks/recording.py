"""Prefect as the record of the work, never a part of it.

Every write to the Prefect API made while nodes are being maintained goes through here, and none of them
can decide a node's outcome:

- ``PrefectRecorder``: a node's events and log lines (in the node's task run). Events travel through Prefect's background events
  client (which buffers and resends after a reconnect) and logs through its batched log handler; a failure
  of either is logged, never raised, and neither waits for the API.
- ``tasks.node_runs``: a node's lifecycle inside a Prefect task run named after the node, each phase a task
  run nested under it. The work runs exactly once whatever Prefect does (see there).
- ``best_effort`` (``tasks.tasking``): artifacts (plan, kernel report) are HTTP writes; one that fails
  is logged, and none is tried while the API is known down. ``Progress`` writes the progress artifact from
  a thread of its own, so a node's worker never waits on it.
- ``ApiWatch``: looks at the Prefect API's health in the background (``PrefectHealth``), so the rollout
  can stop starting nodes once the API has been unreachable for longer than the run tolerates.
"""

from __future__ import annotations

import logging
import threading
import time

import httpx
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.events import emit_event

from tasks.node_runs import node_logger
from tasks.tasking import PrefectHealth, best_effort, brief

log = logging.getLogger("aksmaint.recording")


class PrefectRecorder:
    """A node's progress as Prefect events (resource ``aks.node.<cluster>.<node>``) and log lines."""

    def __init__(self, cluster: str):
        self.cluster = cluster

    def event(self, name: str, node: str, **payload: object) -> None:
        """Queued for Prefect's events client, which sends in the background and, after an outage, resends
        what it still holds; so an event is queued even while the API does not answer."""
        try:
            emit_event(
                event=name,
                resource={
                    "prefect.resource.id": f"aks.node.{self.cluster}.{node}",
                    "prefect.resource.name": node,
                    "aks.cluster": self.cluster,
                },
                payload={k: v for k, v in payload.items() if v is not None},
            )
        except Exception as exc:
            log.warning("Could not queue event %s of %s (%s); the work goes on", name, node, brief(exc))

    def info(self, message: str, *args: object) -> None:
        node_logger().info(message, *args)

    def warning(self, message: str, *args: object) -> None:
        node_logger().warning(message, *args)

    def error(self, message: str, *args: object) -> None:
        node_logger().error(message, *args)


class ApiWatch:
    """How long the Prefect API has been unreachable, looked at every ``interval`` seconds in the background.

    One GET of ``/health`` per look, for the whole run (not per node)."""

    def __init__(self, api_url: str, interval: float = 10.0, timeout: float = 5.0):
        self.api_url = api_url.rstrip("/")
        self.interval = interval
        self.timeout = timeout
        self._down_since: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="prefect-api-watch", daemon=True)

    @staticmethod
    def for_current_run(interval: float) -> ApiWatch | None:
        """A watch on the API the current run talks to (None when it cannot be known)."""
        from prefect.client.orchestration import get_client

        try:
            with get_client(sync_client=True) as client:
                url = str(client.api_url)
        except Exception:
            return None
        return ApiWatch(url, interval=interval, timeout=min(5.0, interval))

    def unreachable_for(self) -> float:
        """Seconds since the API last stopped answering (0 while it answers)."""
        since = self._down_since
        return 0.0 if since is None else time.monotonic() - since

    def look(self) -> bool:
        try:
            healthy = httpx.get(f"{self.api_url}/health", timeout=self.timeout).status_code == 200
        except httpx.HTTPError:
            healthy = False
        if healthy:
            if self._down_since is not None:
                log.warning("The Prefect API at %s answers again", self.api_url)
            self._down_since = None
            PrefectHealth.down.clear()
        elif self._down_since is None:
            self._down_since = time.monotonic()
            PrefectHealth.down.set()
            log.warning(
                "The Prefect API at %s does not answer; the rollout goes on and its record has gaps",
                self.api_url,
            )
        return healthy

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.look()

    def __enter__(self) -> ApiWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self.timeout + 1)
        PrefectHealth.down.clear()


class Progress:
    """The maintenance-progress artifact, kept up to date by a thread of its own: a node's worker only hands
    it the count and never waits on the Prefect API. At most one write every ``every`` seconds; ``close``
    makes the last one."""

    def __init__(self, cluster: str, every: float = 5.0):
        self.every = every
        self._wanted = 0.0
        self._written = 0.0
        self._changed = threading.Condition()
        self._closing = threading.Event()
        self.id = best_effort(
            "the maintenance-progress artifact",
            create_progress_artifact,
            progress=0.0,
            key="maintenance-progress",
            description=f"Nodes done on {cluster}",
        )
        self._thread = threading.Thread(target=self._run, name="progress-artifact", daemon=True)
        if self.id is not None:
            self._thread.start()

    def update(self, done: int, total: int) -> None:
        with self._changed:
            self._wanted = 100.0 * done / max(total, 1)
            self._changed.notify()

    def close(self, timeout: float = 10.0) -> None:
        """Write the last value (waiting at most ``timeout`` seconds for it) and stop."""
        self._closing.set()
        with self._changed:
            self._changed.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._changed:
                while self._wanted == self._written and not self._closing.is_set():
                    self._changed.wait()
                if self._wanted == self._written:
                    return
                value = self._wanted
            best_effort("maintenance progress", update_progress_artifact, self.id, value)
            self._written = value
            self._closing.wait(self.every)
