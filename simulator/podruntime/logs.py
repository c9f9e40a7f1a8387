"""Container logs as the kubelet keeps them: the current and the previous run of each container,
each a bounded list of timestamped lines that a follower can wait on."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from datetime import UTC, datetime

LOG_LIMIT_BYTES = 10 * 1024 * 1024  # kubelet's default containerLogMaxSize


def rfc3339_nano(moment: datetime) -> str:
    """The timestamp kubectl logs --timestamps prints: nine fractional digits, UTC."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"


class ContainerLog:
    """One run of a container: its output as lines, the oldest dropped past ``limit`` bytes."""

    def __init__(self, limit: int = LOG_LIMIT_BYTES):
        self.limit = limit
        self.lines: deque[tuple[datetime, bytes]] = deque()
        self.size = 0
        self.dropped = 0  # lines dropped from the front, so followers keep their place
        self.finished = False
        self._partial = b""
        self._changed = asyncio.Event()

    def write(self, data: bytes) -> None:
        """Add process output; a line is complete at its newline."""
        *complete, self._partial = (self._partial + data).split(b"\n")
        for line in complete:
            self._add(line + b"\n")

    def finish(self) -> None:
        """The process is gone: a last line without a newline is kept as it is."""
        if self._partial:
            self._add(self._partial)
            self._partial = b""
        self.finished = True
        self._wake()

    def _add(self, line: bytes) -> None:
        self.lines.append((datetime.now(UTC), line))
        self.size += len(line)
        while self.size > self.limit and len(self.lines) > 1:
            self.size -= len(self.lines.popleft()[1])
            self.dropped += 1
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def select(self, tail: int | None, since: datetime | None) -> list[tuple[datetime, bytes]]:
        lines = [entry for entry in self.lines if since is None or entry[0] >= since]
        return lines[-tail:] if tail is not None else lines

    async def follow(self, start: int) -> AsyncIterator[tuple[datetime, bytes]]:
        """The lines from absolute position ``start`` on, as they come, until the run ends."""
        position = start
        while True:
            first = position - self.dropped
            for entry in list(self.lines)[max(0, first) :]:
                position += 1
                yield entry
            if self.finished:
                return
            await self._changed.wait()

    @property
    def end(self) -> int:
        """The absolute position after the last line."""
        return self.dropped + len(self.lines)


class PodLogs:
    """The logs of the containers that run as processes: the current and the previous run of each."""

    def __init__(self) -> None:
        self._runs: dict[tuple[str, str], list[ContainerLog]] = {}

    def start(self, pod_uid: str, container: str) -> ContainerLog:
        runs = self._runs.setdefault((pod_uid, container), [])
        runs.append(ContainerLog())
        del runs[:-2]
        return runs[-1]

    def current(self, pod_uid: str, container: str) -> ContainerLog | None:
        runs = self._runs.get((pod_uid, container))
        return runs[-1] if runs else None

    def previous(self, pod_uid: str, container: str) -> ContainerLog | None:
        runs = self._runs.get((pod_uid, container)) or []
        return runs[-2] if len(runs) > 1 else None

    def forget(self, pod_uid: str) -> None:
        for key in [k for k in self._runs if k[0] == pod_uid]:
            del self._runs[key]
