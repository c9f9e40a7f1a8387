"""The object store behind the simulated API server.

One global resourceVersion counter, as etcd gives a real server. Stored objects are never mutated
in place: every change stores a new dict, so a reference handed out stays a consistent snapshot.
All access happens on the simulator's event loop thread.
"""

from __future__ import annotations

import asyncio
import copy
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from simulator.k8s.errors import ApiError, already_exists, conflict, not_found
from simulator.k8s.resources import ResourceType

WATCH_HISTORY = 50_000

Key = tuple[str, str]  # (namespace, name); namespace is "" for cluster-scoped objects
Listener = Callable[[ResourceType, str, dict | None, dict | None], None]
View = Callable[[dict], dict]


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class WatchEvent:
    rv: int
    type: str  # ADDED, MODIFIED, DELETED
    resource: ResourceType
    obj: dict
    old: dict | None = None  # the previous version, for MODIFIED: selectors may have stopped matching


@dataclass
class Watcher:
    resource: ResourceType
    namespace: str | None
    accept: Callable[[dict], bool]
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)


class Store:
    def __init__(self) -> None:
        self.rv = 1
        self._objects: dict[ResourceType, dict[Key, dict]] = {}
        self._history: deque[WatchEvent] = deque(maxlen=WATCH_HISTORY)
        self._watchers: list[Watcher] = []
        self._listeners: list[Listener] = []
        self._views: dict[ResourceType, View] = {}

    # ---- reading -------------------------------------------------------------------------
    def get(self, rt: ResourceType, namespace: str, name: str) -> dict | None:
        return self._objects.get(rt, {}).get((namespace, name))

    def must_get(self, rt: ResourceType, namespace: str, name: str) -> dict:
        obj = self.get(rt, namespace, name)
        if obj is None:
            raise not_found(rt.plural, name, rt.group)
        return obj

    def list(self, rt: ResourceType, namespace: str | None = None) -> list[dict]:
        """Objects in etcd's key order: by the text "namespace/name" (so "team-a/x" before "team/x")."""
        objs = self._objects.get(rt, {})
        keys = sorted((k for k in objs if namespace is None or k[0] == namespace), key=key_text)
        return [objs[k] for k in keys]

    def count(self, rt: ResourceType) -> int:
        return len(self._objects.get(rt, {}))

    def add_view(self, rt: ResourceType, view: View) -> None:
        """Register a function that fills lazily computed fields when an object is served."""
        self._views[rt] = view

    def render(self, rt: ResourceType, obj: dict) -> dict:
        view = self._views.get(rt)
        return view(obj) if view else obj

    def add_listener(self, listener: Listener) -> None:
        """Called synchronously with (resource, event type, old, new) after every change."""
        self._listeners.append(listener)

    # ---- writing -------------------------------------------------------------------------
    def create(self, rt: ResourceType, obj: dict, uid: str | None = None) -> dict:
        """Store a new object; ``uid`` lets an admission step that already put it in labels choose it."""
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        namespace = meta.get("namespace", "") if rt.namespaced else ""
        name = meta.get("name")
        if not name and meta.get("generateName"):
            name = meta["generateName"] + uuid.uuid4().hex[:5]
            meta["name"] = name
        if not name:
            raise ApiError(
                422,
                "Invalid",
                f"{rt.kind} is invalid: metadata.name: Required value: name or generateName is required",
            )
        if self.get(rt, namespace, name) is not None:
            raise already_exists(rt.plural, name, rt.group)
        if rt.namespaced:
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        meta["uid"] = uid or str(uuid.uuid4())
        meta["creationTimestamp"] = now_rfc3339()
        meta["generation"] = 1
        meta.pop("deletionTimestamp", None)
        obj["kind"] = rt.kind
        obj["apiVersion"] = rt.api_version
        return self._commit(rt, "ADDED", None, obj)

    def update(
        self, rt: ResourceType, obj: dict, expect_rv: str | None = None, status_only: bool = False
    ) -> dict:
        """Store a new version of an existing object.

        ``expect_rv`` is the resourceVersion the writer based its change on; a stale one is a 409.
        A status update keeps everything but ``status`` from the stored object, as real servers do.
        """
        meta = obj.get("metadata", {})
        namespace = meta.get("namespace", "") if rt.namespaced else ""
        old = self.must_get(rt, namespace, meta.get("name", ""))
        if expect_rv and expect_rv != old["metadata"]["resourceVersion"]:
            raise conflict(rt.plural, old["metadata"]["name"], rt.group)
        if status_only:
            new = {**old, "status": copy.deepcopy(obj.get("status", {}))}
            new["metadata"] = dict(old["metadata"])
        else:
            new = copy.deepcopy(obj)
            new["metadata"] = {**new.get("metadata", {})}
            for fixed in (
                "uid",
                "creationTimestamp",
                "namespace",
                "name",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
            ):
                if fixed in old["metadata"]:
                    new["metadata"][fixed] = old["metadata"][fixed]
                else:
                    new["metadata"].pop(fixed, None)
            if "status" in old:
                new["status"] = old["status"]
            if new.get("spec") != old.get("spec"):
                new["metadata"]["generation"] = old["metadata"].get("generation", 1) + 1
        new["kind"] = rt.kind
        new["apiVersion"] = rt.api_version
        if _same_content(old, new):
            return old
        return self._commit(rt, "MODIFIED", old, new)

    def update_internal(self, rt: ResourceType, obj: dict) -> dict:
        """A change made by the simulator itself (controllers, kubelet): metadata fields it sets stay."""
        meta = obj["metadata"]
        old = self.must_get(rt, meta.get("namespace", ""), meta["name"])
        if _same_content(old, obj):
            return old
        new = {**obj, "metadata": {**meta}}
        if new.get("spec") != old.get("spec"):
            new["metadata"]["generation"] = old["metadata"].get("generation", 1) + 1
        return self._commit(rt, "MODIFIED", old, new)

    def remove(self, rt: ResourceType, namespace: str, name: str) -> dict:
        old = self.must_get(rt, namespace, name)
        del self._objects[rt][(namespace, name)]
        self.rv += 1
        gone = {**old, "metadata": {**old["metadata"], "resourceVersion": str(self.rv)}}
        self._publish(rt, "DELETED", old, gone, None)
        return gone

    def _commit(self, rt: ResourceType, kind: str, old: dict | None, new: dict) -> dict:
        self.rv += 1
        new["metadata"]["resourceVersion"] = str(self.rv)
        meta = new["metadata"]
        self._objects.setdefault(rt, {})[(meta.get("namespace", ""), meta["name"])] = new
        self._publish(rt, kind, old, new, new)
        return new

    def _publish(self, rt: ResourceType, kind: str, old: dict | None, obj: dict, new: dict | None) -> None:
        event = WatchEvent(self.rv, kind, rt, obj, old if kind == "MODIFIED" else None)
        self._history.append(event)
        for watcher in self._watchers:
            if watcher.resource is rt:
                watcher.queue.put_nowait(event)
        for listener in self._listeners:
            listener(rt, kind, old, new)

    # ---- watching ------------------------------------------------------------------------
    def oldest_watchable_rv(self) -> int:
        return self._history[0].rv - 1 if self._history else self.rv

    def compact(self, rv: int | None = None) -> None:
        """Forget the change history up to ``rv`` (all of it by default), as etcd compaction does.

        A watch from a resourceVersion older than the history kept then gets 410 Gone.
        """
        upto = self.rv if rv is None else rv
        while self._history and self._history[0].rv <= upto:
            self._history.popleft()

    def history_since(self, rt: ResourceType, rv: int) -> Iterable[WatchEvent]:
        return [e for e in self._history if e.rv > rv and e.resource is rt]

    def add_watcher(self, watcher: Watcher) -> None:
        self._watchers.append(watcher)

    def remove_watcher(self, watcher: Watcher) -> None:
        if watcher in self._watchers:
            self._watchers.remove(watcher)


def key_text(key: Key) -> str:
    """The part of an object's etcd key that orders lists and continue tokens: "namespace/name"."""
    return f"{key[0]}/{key[1]}"


def _same_content(old: dict, new: dict) -> bool:
    """True when a write would change nothing, so no new resourceVersion is due (as a real server does)."""
    old_meta = {k: v for k, v in old["metadata"].items() if k != "resourceVersion"}
    new_meta = {k: v for k, v in new["metadata"].items() if k != "resourceVersion"}
    return old_meta == new_meta and all(
        old.get(k) == new.get(k) for k in (set(old) | set(new)) - {"metadata"}
    )
