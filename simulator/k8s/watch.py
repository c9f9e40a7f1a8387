"""The watch verb of the simulated Kubernetes API: a stream of JSON events for a selection of objects.

A watch starts with the current state (a watch list, or a watch from "any" version) or replays the
changes since a given resourceVersion (410 Expired once that is older than the history kept), ends
the initial events of a watch list with a bookmark, then follows the store's changes until its
timeout or the client goes; objects entering or leaving the selection are seen as ADDED or DELETED.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from simulator.cluster import Cluster
from simulator.k8s.common import include_object, render, selection, wants_table
from simulator.k8s.errors import ApiError, bad_request
from simulator.k8s.paths import ResourcePath, listed_namespace
from simulator.k8s.resources import ResourceType
from simulator.k8s.store import Store, Watcher, WatchEvent
from simulator.k8s.tables import to_table

INITIAL_EVENTS_END = "k8s.io/initial-events-end"


async def watch_objects(cluster: Cluster, request: Request, target: ResourcePath) -> Response:
    store = cluster.store
    rt = target.rt
    accept = selection(request, rt)
    namespace = listed_namespace(target)
    query = request.query_params
    rv_text = query.get("resourceVersion", "")
    timeout = float(query.get("timeoutSeconds") or 1800)
    send_initial = _send_initial_events(query)
    bookmarks = query.get("allowWatchBookmarks") in ("true", "1")

    def matches(obj: dict) -> bool:
        return (namespace is None or obj["metadata"].get("namespace") == namespace) and accept(obj)

    watcher = Watcher(rt, namespace, matches)
    initial, gone = _initial_events(store, rt, namespace, matches, rv_text, send_initial)
    initial_rv = store.rv
    store.add_watcher(watcher)
    as_table, include = wants_table(request), include_object(request)

    def line(kind: str, obj: dict) -> bytes:
        return _watch_line(cluster, rt, kind, obj, as_table, include)

    async def stream() -> AsyncIterator[bytes]:
        try:
            if gone:
                yield _expired_line(rv_text, store.oldest_watchable_rv())
                return
            for kind, obj in initial:
                yield line(kind, obj)
            if send_initial and bookmarks:
                # clients of a watch list wait for this bookmark before they trust their cache
                yield _initial_events_end_line(rt, initial_rv)
            deadline = asyncio.get_running_loop().time() + timeout
            while (event := await _next_event(request, watcher, deadline)) is not None:
                seen = _seen_as(event, matches)
                if seen is not None:
                    yield line(*seen)
        finally:
            store.remove_watcher(watcher)

    return StreamingResponse(stream(), media_type="application/json")


def _initial_events(
    store: Store,
    rt: ResourceType,
    namespace: str | None,
    matches: Callable[[dict], bool],
    rv_text: str,
    send_initial: bool | None,
) -> tuple[list[tuple[str, dict]], bool]:
    """The events a watch sends before the changes to come, and whether its resourceVersion is too old.

    A watch list, or a watch from "any" or "the most recent" version, starts with the current state; a
    watch from a given version replays the changes since that version."""
    if send_initial or (send_initial is None and rv_text in ("", "0")):
        return [("ADDED", o) for o in store.list(rt, namespace) if matches(o)], False
    if rv_text in ("", "0"):  # sendInitialEvents=false without a version: changes from now on
        return [], False
    try:
        since = int(rv_text)
    except ValueError as exc:
        raise bad_request(f"invalid resource version: {rv_text}") from exc
    if since < store.oldest_watchable_rv():
        return [], True
    return [seen for e in store.history_since(rt, since) if (seen := _seen_as(e, matches))], False


def _watch_line(
    cluster: Cluster, rt: ResourceType, kind: str, obj: dict, as_table: bool, include: str
) -> bytes:
    """One event of a watch stream, its object rendered as a plain object or a Table."""
    obj = render(cluster, rt, obj)
    if as_table:  # kubectl get --watch prints each event as a one-row Table
        obj = to_table(
            rt.plural,
            [obj],
            datetime.now(UTC),
            include,
            {"resourceVersion": obj["metadata"].get("resourceVersion")},
        )
    return _event_line(kind, obj)


def _seen_as(event: WatchEvent, matches: Callable[[dict], bool]) -> tuple[str, dict] | None:
    """The event as a watch with this selection sees it: objects entering or leaving it are ADDED/DELETED."""
    now_in = matches(event.obj)
    if event.type != "MODIFIED":
        return (event.type, event.obj) if now_in else None
    old = event.old
    was_in = old is not None and matches(old)
    if now_in:
        return ("MODIFIED" if was_in else "ADDED", event.obj)
    if old is None or not was_in:
        return None
    # as the watch cache does: the last content that matched, at the event's resourceVersion
    rv = event.obj["metadata"]["resourceVersion"]
    return "DELETED", {**old, "metadata": {**old["metadata"], "resourceVersion": rv}}


async def _next_event(request: Request, watcher: Watcher, deadline: float) -> WatchEvent | None:
    """The watcher's next event; None once the deadline (loop time) has passed or the client has gone."""
    loop = asyncio.get_running_loop()
    while True:
        remaining = deadline - loop.time()
        if remaining <= 0:
            return None
        try:
            return await asyncio.wait_for(watcher.queue.get(), timeout=min(remaining, 1.0))
        except TimeoutError:
            if await request.is_disconnected():
                return None


def _event_line(kind: str, obj: dict) -> bytes:
    return (json.dumps({"type": kind, "object": obj}) + "\n").encode()


def _expired_line(rv_text: str, oldest_rv: int) -> bytes:
    """The ERROR event of a watch from a resourceVersion older than the history kept (410 Expired)."""
    status = ApiError(410, "Expired", f"too old resource version: {rv_text} ({oldest_rv})").status()
    return _event_line("ERROR", status)


def _initial_events_end_line(rt: ResourceType, rv: int) -> bytes:
    """The BOOKMARK that ends the initial events of a watch list."""
    end = {
        "kind": rt.kind,
        "apiVersion": rt.api_version,
        "metadata": {"resourceVersion": str(rv), "annotations": {INITIAL_EVENTS_END: "true"}},
    }
    return _event_line("BOOKMARK", end)


def _send_initial_events(query) -> bool | None:
    """Validate a watch list request (sendInitialEvents) the way the API server does; None if not one."""
    text = query.get("sendInitialEvents")
    match = query.get("resourceVersionMatch", "")
    send = None if text is None else text in ("true", "1")
    problems = []
    if send is not None and match != "NotOlderThan":
        problems.append(
            "resourceVersionMatch: Forbidden: sendInitialEvents requires setting resourceVersionMatch "
            "to NotOlderThan"
        )
    if match and send is None:
        problems.append(
            "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden for watch unless "
            "sendInitialEvents is provided"
        )
    if match and match != "NotOlderThan":
        problems.append(
            f'resourceVersionMatch: Unsupported value: "{match}": supported values: "NotOlderThan"'
        )
    if problems:
        raise ApiError(
            422,
            "Invalid",
            f'ListOptions.meta.k8s.io "" is invalid: [{", ".join(problems)}]',
            {"group": "meta.k8s.io", "kind": "ListOptions"},
        )
    return send
