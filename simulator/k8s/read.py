"""The read verbs of the simulated Kubernetes API: get one object (or a pod's log), and list a collection
with label and field selectors and ``limit``/``continue`` paging, as objects or as a Table."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import Response

from simulator.cluster import Cluster
from simulator.k8s.common import (
    include_object,
    json_response,
    render,
    respond_object,
    selection,
    wants_table,
)
from simulator.k8s.errors import bad_request
from simulator.k8s.logs import pod_log
from simulator.k8s.paths import ResourcePath, listed_namespace, namespace_of, object_name
from simulator.k8s.store import key_text
from simulator.k8s.tables import to_table


async def get_object(cluster: Cluster, request: Request, target: ResourcePath) -> Response:
    obj = cluster.store.must_get(target.rt, namespace_of(target), object_name(target))
    if target.subresource == "log":
        return await pod_log(cluster, request, obj)
    return respond_object(cluster, request, target.rt, obj)


async def list_objects(cluster: Cluster, request: Request, target: ResourcePath) -> Response:
    store = cluster.store
    rt = target.rt
    accept = selection(request, rt)
    items = [o for o in store.list(rt, listed_namespace(target)) if accept(o)]
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
    items = [render(cluster, rt, o) for o in items]
    if wants_table(request):
        return json_response(to_table(rt.plural, items, datetime.now(UTC), include_object(request), meta))
    listed = [{k: v for k, v in o.items() if k not in ("kind", "apiVersion")} for o in items]
    return json_response(
        {"kind": f"{rt.kind}List", "apiVersion": rt.api_version, "metadata": meta, "items": listed}
    )


def _sort_key(obj: dict) -> str:
    meta = obj["metadata"]
    return key_text((meta.get("namespace", ""), meta["name"]))


def _encode_continue(start: str, rv: int) -> str:
    raw = json.dumps({"v": "meta.k8s.io/v1", "rv": rv, "start": start}).encode()
    return base64.urlsafe_b64encode(raw).decode()


def _decode_continue(token: str) -> str:
    try:
        return json.loads(base64.urlsafe_b64decode(token.encode()))["start"]
    except (binascii.Error, ValueError, KeyError, TypeError) as exc:
        raise bad_request("continue key is not valid") from exc
