"""The HTTP face of the simulated cluster: a Kubernetes API server subset as an ASGI app.

Requests are authenticated with a bearer token, recorded in the audit log, subjected to the configured
faults, and then dispatched: discovery documents, resource verbs, subresources (status, log,
eviction), and the simulator's own observation endpoints under ``/_sim``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse

from simulator.cluster import NODES, PODS, check_preconditions
from simulator.k8s import resources
from simulator.k8s.errors import ApiError, bad_request, invalid, not_found
from simulator.k8s.patch import PatchError, json_merge_patch, json_patch, strategic_merge_patch
from simulator.k8s.resources import ResourceType
from simulator.k8s.selectors import SelectorError, field_value, parse_field_selector, parse_label_selector
from simulator.k8s.store import Watcher, WatchEvent, key_text
from simulator.k8s.tables import to_table

if TYPE_CHECKING:
    from simulator.runtime import Simulation

MUTATING = {"create", "update", "patch", "delete", "deletecollection"}
UNCONDITIONAL_UPDATE_FORBIDDEN = {"leases"}
# A delete answers with the object for these (a pod may still be terminating), else with a Status.
RETURN_DELETED_OBJECT = {"pods", "namespaces"}
INITIAL_EVENTS_END = "k8s.io/initial-events-end"
# Typed fields a real server reads as "false" when unset, e.g. `spec.unschedulable=false` for nodes.
FIELD_DEFAULTS = {"spec.unschedulable": "false", "spec.hostNetwork": "false"}


@dataclass
class Target:
    """What a resource URL names."""

    rt: ResourceType
    namespace: str | None
    name: str | None
    subresource: str | None


def parse_resource_path(path: str) -> Target | None:
    parts = [p for p in path.split("/") if p]
    if parts[:2] == ["api", "v1"]:
        group, version, rest = "", "v1", parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    if not rest:
        return None
    namespace = None
    if rest[0] == "namespaces" and len(rest) >= 3:
        rt = resources.resource_type(group, version, rest[2])
        if rt is not None and rt.namespaced:
            namespace, rest = rest[1], rest[2:]
    rt = resources.resource_type(group, version, rest[0])
    if rt is None or len(rest) > 3:
        return None
    name = rest[1] if len(rest) > 1 else None
    sub = rest[2] if len(rest) > 2 else None
    if sub is not None and rt.subresource(sub) is None:
        return None
    return Target(rt, namespace, name, sub)


def audit_verb(method: str, target: Target | None, watch: bool) -> str:
    if method == "GET":
        if target is not None and target.name is None:
            return "watch" if watch else "list"
        return "get"
    return {
        "POST": "create",
        "PUT": "update",
        "PATCH": "patch",
        "DELETE": "delete" if target is None or target.name else "deletecollection",
    }.get(method, method.lower())


def _wants_table(request: Request) -> bool:
    return "as=Table" in request.headers.get("accept", "")


def _json(body: dict, status: int = 200, headers: dict | None = None) -> Response:
    return Response(
        json.dumps(body, separators=(",", ":")),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


class KubeAPI:
    """ASGI application serving the Kubernetes API of one simulated cluster."""

    def __init__(self, sim: Simulation):
        self.sim = sim

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        response = await self.handle(request)
        await response(scope, receive, send)

    async def handle(self, request: Request) -> Response:
        sim = self.sim
        path = request.url.path
        query = request.query_params
        target = parse_resource_path(path)
        watch = query.get("watch") in ("true", "1")
        verb = audit_verb(request.method, target, watch)
        entry = sim.audit.start(request, verb, target)
        try:
            sim.authenticate(request)
            if path.startswith("/_sim/"):
                response = await sim.observation(request)
            else:
                await sim.faults.apply(request, verb, path)
                response = await self._dispatch(request, target, verb)
        except ApiError as exc:
            response = _json(exc.status(), exc.code, exc.headers)
        except Exception as exc:  # the server must answer, as a real one does, with a Status
            sim.cluster.record("simulator_error", None, path=path, error=repr(exc))
            err = ApiError(500, "InternalError", f"Internal error occurred: {exc!r}")
            response = _json(err.status(), 500)
        sim.audit.finish(entry, response.status_code)
        return response

    async def _dispatch(self, request: Request, target: Target | None, verb: str) -> Response:
        path = request.url.path.rstrip("/")
        if request.method == "GET" and target is None:
            doc = discovery_document(path, self.sim.cluster.scenario.cluster.kubernetes_version)
            if doc is None:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            return _json(doc)
        if target is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if target.namespace is not None and target.rt.plural != "namespaces" and verb in ("create",):
            ns = self.sim.cluster.store.get(resources.by_kind("Namespace"), "", target.namespace)
            if ns is None:
                raise not_found("namespaces", target.namespace)
        handler = {
            "get": self._get,
            "list": self._list,
            "watch": self._watch,
            "create": self._create,
            "update": self._update,
            "patch": self._patch,
            "delete": self._delete,
            "deletecollection": self._delete_collection,
        }[verb]
        allowed = _allowed_verbs(target)
        if verb not in allowed and not (verb in ("list", "watch") and target.subresource is None):
            raise ApiError(
                405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
            )
        return await handler(request, target)

    # ---- helpers -------------------------------------------------------------------------
    def _ns(self, target: Target) -> str:
        return (target.namespace or "") if target.rt.namespaced else ""

    async def _body(self, request: Request) -> dict:
        """A request body that must be one object (create, update)."""
        body = await self._json_body(request)
        if not isinstance(body, dict):
            raise bad_request("the request body must be a JSON object")
        return body

    async def _json_body(self, request: Request) -> dict | list:
        """A request body that may be an object or, for a JSON patch, a list."""
        raw = await request.body()
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError as exc:
            raise bad_request(f"the request body is not valid JSON: {exc}") from exc
        if not isinstance(body, (dict, list)):
            raise bad_request("the request body must be a JSON object")
        return body

    def _render(self, rt: ResourceType, obj: dict) -> dict:
        return self.sim.cluster.store.render(rt, obj)

    def _respond_object(self, request: Request, rt: ResourceType, obj: dict, status: int = 200) -> Response:
        obj = self._render(rt, obj)
        if _wants_table(request):
            return _json(to_table(rt.plural, [obj], datetime.now(UTC), _include(request)), status)
        return _json(obj, status)

    # ---- read verbs ----------------------------------------------------------------------
    async def _get(self, request: Request, target: Target) -> Response:
        store = self.sim.cluster.store
        obj = store.must_get(target.rt, self._ns(target), _object_name(target))
        if target.subresource == "log":
            return PlainTextResponse(self.sim.cluster.logs.get(obj["metadata"]["uid"], ""))
        return self._respond_object(request, target.rt, obj)

    def _filters(self, request: Request, rt: ResourceType):
        query = request.query_params
        try:
            labels = parse_label_selector(query.get("labelSelector", ""))
            fields = parse_field_selector(query.get("fieldSelector", ""), set(rt.field_selectors))
        except SelectorError as exc:
            raise bad_request(str(exc)) from exc

        def accept(obj: dict) -> bool:
            return labels.matches(obj["metadata"].get("labels")) and all(
                (_field_text(obj, req.field) == req.value) != req.negated for req in fields.requirements
            )

        return accept

    async def _list(self, request: Request, target: Target) -> Response:
        store = self.sim.cluster.store
        rt = target.rt
        accept = self._filters(request, rt)
        items = [o for o in store.list(rt, target.namespace if rt.namespaced else None) if accept(o)]
        query = request.query_params
        meta: dict = {"resourceVersion": str(store.rv)}
        token = query.get("continue")
        if token:
            start = _decode_continue(token)
            items = [o for o in items if _sort_key(o) > start]
        limit = int(query.get("limit") or 0)
        if limit > 0 and len(items) > limit:
            meta["remainingItemCount"] = len(items) - limit
            items = items[:limit]
            meta["continue"] = _encode_continue(_sort_key(items[-1]), store.rv)
        items = [self._render(rt, o) for o in items]
        if _wants_table(request):
            return _json(to_table(rt.plural, items, datetime.now(UTC), _include(request), meta))
        listed = [{k: v for k, v in o.items() if k not in ("kind", "apiVersion")} for o in items]
        return _json(
            {"kind": f"{rt.kind}List", "apiVersion": rt.api_version, "metadata": meta, "items": listed}
        )

    async def _watch(self, request: Request, target: Target) -> Response:
        store = self.sim.cluster.store
        rt = target.rt
        accept = self._filters(request, rt)
        namespace = target.namespace if rt.namespaced else None
        query = request.query_params
        rv_text = query.get("resourceVersion", "")
        timeout = float(query.get("timeoutSeconds") or 1800)
        send_initial = _send_initial_events(query)
        bookmarks = query.get("allowWatchBookmarks") in ("true", "1")

        def matches(obj: dict) -> bool:
            return (namespace is None or obj["metadata"].get("namespace") == namespace) and accept(obj)

        watcher = Watcher(rt, namespace, matches)
        initial, gone = self._initial_events(rt, namespace, matches, rv_text, send_initial)
        initial_rv = store.rv
        store.add_watcher(watcher)
        as_table, include = _wants_table(request), _include(request)

        def line(kind: str, obj: dict) -> bytes:
            return self._watch_line(rt, kind, obj, as_table, include)

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
        self,
        rt: ResourceType,
        namespace: str | None,
        matches: Callable[[dict], bool],
        rv_text: str,
        send_initial: bool | None,
    ) -> tuple[list[tuple[str, dict]], bool]:
        """The events a watch sends before the changes to come, and whether its resourceVersion is too old.

        A watch list, or a watch from "any" or "the most recent" version, starts with the current state; a
        watch from a given version replays the changes since that version."""
        store = self.sim.cluster.store
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

    def _watch_line(self, rt: ResourceType, kind: str, obj: dict, as_table: bool, include: str) -> bytes:
        """One event of a watch stream, its object rendered as a plain object or a Table."""
        obj = self._render(rt, obj)
        if as_table:  # kubectl get --watch prints each event as a one-row Table
            obj = to_table(
                rt.plural,
                [obj],
                datetime.now(UTC),
                include,
                {"resourceVersion": obj["metadata"].get("resourceVersion")},
            )
        return _event_line(kind, obj)

    # ---- write verbs ---------------------------------------------------------------------
    async def _create(self, request: Request, target: Target) -> Response:
        cluster = self.sim.cluster
        body = await self._body(request)
        if target.subresource == "eviction":
            cluster.evict(self._ns(target), _object_name(target), body)
            cluster.reconcile()
            return _json(
                {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}, 201
            )
        if target.name is not None or target.subresource is not None:
            raise ApiError(
                405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
            )
        rt = target.rt
        meta = body.setdefault("metadata", {})
        if rt.namespaced:
            if meta.get("namespace") and meta["namespace"] != target.namespace:
                raise bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            meta["namespace"] = target.namespace
        if body.get("kind") and body["kind"] != rt.kind:
            raise bad_request(f"the kind of the provided object ({body['kind']}) does not match {rt.kind}")
        if rt.plural == "leases":
            cluster.check_lease(body)
            _utc_microtimes(body)
        if request.query_params.get("dryRun"):
            return _json(body, 201)
        obj = cluster.create_pod(body) if rt is PODS else cluster.store.create(rt, body)
        cluster.reconcile()
        return self._respond_object(request, rt, obj, 201)

    async def _update(self, request: Request, target: Target) -> Response:
        cluster = self.sim.cluster
        name = _object_name(target)
        body = await self._body(request)
        rt = target.rt
        meta = body.setdefault("metadata", {})
        if meta.get("name") != name:
            raise bad_request(
                f"the name of the object ({meta.get('name')}) does not match the name on the URL ({name})"
            )
        if rt.namespaced:
            meta["namespace"] = target.namespace
        rv = meta.get("resourceVersion")
        if not rv and rt.plural in UNCONDITIONAL_UPDATE_FORBIDDEN:
            raise invalid(
                rt.kind,
                name,
                "metadata.resourceVersion",
                "Invalid value: 0x0: must be specified for an update",
                rt.group,
            )
        if rt.plural == "leases":
            cluster.check_lease(body)
            _utc_microtimes(body)
        obj = cluster.store.update(rt, body, expect_rv=rv, status_only=target.subresource == "status")
        cluster.reconcile()
        return self._respond_object(request, rt, obj)

    async def _patch(self, request: Request, target: Target) -> Response:
        cluster = self.sim.cluster
        rt = target.rt
        name = _object_name(target)
        current = cluster.store.must_get(rt, self._ns(target), name)
        body = await self._json_body(request)
        ctype = request.headers.get("content-type", "").split(";")[0].strip()
        try:
            if ctype == "application/json-patch+json":
                if not isinstance(body, list):
                    raise bad_request("a JSON patch must be a list of operations")
                patched = json_patch(current, body)
            elif ctype == "application/merge-patch+json":
                patched = json_merge_patch(current, _object(body))
            elif ctype == "application/strategic-merge-patch+json":
                patched = strategic_merge_patch(current, _object(body))
            else:
                raise ApiError(
                    415,
                    "UnsupportedMediaType",
                    "the body of the request was in an unknown format - "
                    "accepted media types include: application/json-patch+json, "
                    "application/merge-patch+json, application/strategic-merge-patch+json",
                )
        except PatchError as exc:
            raise ApiError(422, "Invalid", str(exc)) from exc
        requested_rv = (
            _object(body).get("metadata", {}).get("resourceVersion") if isinstance(body, dict) else None
        )
        patched.setdefault("metadata", {})["name"] = name
        if rt.plural == "leases":
            cluster.check_lease(patched)
            _utc_microtimes(patched)
        patched["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        obj = cluster.store.update(
            rt, patched, expect_rv=requested_rv, status_only=target.subresource == "status"
        )
        cluster.reconcile()
        return self._respond_object(request, rt, obj)

    async def _delete_options(self, request: Request) -> tuple[int | None, dict | None]:
        body = await self._json_body(request) if await request.body() else {}
        body = _object(body)
        grace = body.get("gracePeriodSeconds")
        if request.query_params.get("gracePeriodSeconds") is not None:
            grace = int(request.query_params["gracePeriodSeconds"])
        return grace, body.get("preconditions")

    async def _delete(self, request: Request, target: Target) -> Response:
        cluster = self.sim.cluster
        rt = target.rt
        name = _object_name(target)
        grace, preconditions = await self._delete_options(request)
        if rt is PODS:
            obj = cluster.delete_pod(self._ns(target), name, grace, preconditions)
        elif rt is NODES:  # the VM goes with it (scale-in, auto-repair, a spot eviction): its pods too
            obj = cluster.store.must_get(rt, "", name)
            check_preconditions(obj, preconditions, rt.plural)
            cluster.remove_node(name, cause="node deleted through the API", count_violations=False)
        else:
            current = cluster.store.must_get(rt, self._ns(target), name)
            check_preconditions(current, preconditions, rt.plural)
            obj = cluster.store.remove(rt, self._ns(target), name)
        cluster.reconcile()
        if rt.plural not in RETURN_DELETED_OBJECT:
            meta = obj["metadata"]
            return _json(
                {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "metadata": {},
                    "status": "Success",
                    "details": {
                        "name": meta["name"],
                        "group": rt.group,
                        "kind": rt.plural,
                        "uid": meta["uid"],
                    },
                }
            )
        return _json(self._render(rt, obj))

    async def _delete_collection(self, request: Request, target: Target) -> Response:
        cluster = self.sim.cluster
        rt = target.rt
        accept = self._filters(request, rt)
        grace, _ = await self._delete_options(request)
        gone = []
        for obj in [
            o for o in cluster.store.list(rt, target.namespace if rt.namespaced else None) if accept(o)
        ]:
            meta = obj["metadata"]
            if rt is PODS:
                gone.append(cluster.delete_pod(meta["namespace"], meta["name"], grace, None))
            else:
                gone.append(cluster.store.remove(rt, meta.get("namespace", ""), meta["name"]))
        cluster.reconcile()
        return _json(
            {
                "kind": f"{rt.kind}List",
                "apiVersion": rt.api_version,
                "metadata": {"resourceVersion": str(cluster.store.rv)},
                "items": gone,
            }
        )


def _allowed_verbs(target: Target) -> list[str]:
    """The verbs the resource, or the subresource the URL names, serves."""
    if target.subresource is None:
        return target.rt.verbs
    sub = target.rt.subresource(target.subresource)
    assert sub is not None, "parse_resource_path accepts known subresources only"
    return sub.verbs


def _object_name(target: Target) -> str:
    """The object a verb on one object acts on; a collection URL does not serve it (405, as a real server)."""
    if target.name is None:
        raise ApiError(
            405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
        )
    return target.name


def _object(body: dict | list) -> dict:
    if not isinstance(body, dict):
        raise bad_request("the patch must be a JSON object")
    return body


def _include(request: Request) -> str:
    return request.query_params.get("includeObject", "PartialObjectMetadata")


def _sort_key(obj: dict) -> str:
    meta = obj["metadata"]
    return key_text((meta.get("namespace", ""), meta["name"]))


def _utc_microtimes(lease: dict) -> None:
    """A real server keeps a Lease's MicroTimes in UTC and writes them back with a "Z"."""
    spec = lease.get("spec") or {}
    for field in ("acquireTime", "renewTime"):
        value = spec.get(field)
        if isinstance(value, str) and not value.endswith("Z"):
            spec[field] = datetime.fromisoformat(value).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _field_text(obj: dict, path: str) -> str:
    return field_value(obj, path) or FIELD_DEFAULTS.get(path, "")


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


def _encode_continue(start: str, rv: int) -> str:
    raw = json.dumps({"v": "meta.k8s.io/v1", "rv": rv, "start": start}).encode()
    return base64.urlsafe_b64encode(raw).decode()


def _decode_continue(token: str) -> str:
    try:
        return json.loads(base64.urlsafe_b64decode(token.encode()))["start"]
    except (binascii.Error, ValueError, KeyError, TypeError) as exc:
        raise bad_request("continue key is not valid") from exc


_GROUP_PATH = re.compile(r"^/apis/([^/]+)(?:/([^/]+))?$")


def discovery_document(path: str, kubernetes_version: str) -> dict | None:
    """Legacy (unaggregated) discovery documents, which every client understands."""
    if path == "/version":
        major, minor, _ = kubernetes_version.split(".")
        return {
            "major": major,
            "minor": minor,
            "gitVersion": f"v{kubernetes_version}",
            "gitCommit": "0000000000000000000000000000000000000000",
            "gitTreeState": "clean",
            "buildDate": "2026-01-01T00:00:00Z",
            "goVersion": "go1.24.0",
            "compiler": "gc",
            "platform": "linux/amd64",
        }
    if path == "/api":
        return resources.api_versions()
    if path == "/api/v1":
        return resources.api_resource_list("", "v1")
    if path == "/apis":
        return resources.api_group_list()
    match = _GROUP_PATH.match(path)
    if match:
        group, version = match.groups()
        return resources.api_resource_list(group, version) if version else resources.api_group(group)
    return None
