"""The HTTP face of the simulated cluster: a Kubernetes API server subset as an ASGI app.

Requests are authenticated with a bearer token (all but the public OIDC issuer documents), recorded in
the audit log, subjected to the configured faults, and then dispatched: discovery documents
(``discovery``), the OpenAPI v3 documents (``openapi``), the read verbs (``read``), watches (``watch``),
the write verbs and the eviction subresource (``write``), and the simulator's own observation endpoints
under ``/_sim``. What a URL names is read by ``paths``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response

from simulator.cluster import Cluster
from simulator.k8s import resources
from simulator.k8s.common import json_response
from simulator.k8s.discovery import discovery_document
from simulator.k8s.errors import ApiError, not_found
from simulator.k8s.openapi import openapi_response
from simulator.k8s.paths import (
    ResourcePath,
    allowed_verbs,
    audit_verb,
    method_not_allowed,
    parse_resource_path,
)
from simulator.k8s.read import get_object, list_objects
from simulator.k8s.watch import watch_objects
from simulator.k8s.write import create_object, delete_collection, delete_object, patch_object, update_object

if TYPE_CHECKING:
    from simulator.simulation import Simulation

# the user of a request without credentials (the OIDC issuer documents need none)
ANONYMOUS_USER = "system:anonymous"

Verb = Callable[[Cluster, Request, ResourcePath], Awaitable[Response]]
VERBS: dict[str, Verb] = {
    "get": get_object,
    "list": list_objects,
    "watch": watch_objects,
    "create": create_object,
    "update": update_object,
    "patch": patch_object,
    "delete": delete_object,
    "deletecollection": delete_collection,
}


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
        watch = query.get("watch", "").lower() in (
            "true",
            "1",
            "t",
        )  # Go's ParseBool: Python clients send "True"
        verb = audit_verb(request.method, target, watch)
        entry = sim.audit.start(request, verb, target)
        document = sim.cluster.service_accounts.document(path) if request.method == "GET" else None
        if document is not None:  # the OIDC issuer documents are public, as an AKS OIDC issuer serves them
            entry["user"] = ANONYMOUS_USER
            sim.audit.finish(entry, 200)
            return Response(document, media_type="application/json")
        try:
            entry["user"] = sim.authenticate(request)
            if path.startswith("/_sim/"):
                response = await sim.observation(request)
            else:
                await sim.faults.apply(request, verb, path)
                response = await self._dispatch(request, target, verb)
        except ApiError as exc:
            response = json_response(exc.status(), exc.code, exc.headers)
        except Exception as exc:  # the server must answer, as a real one does, with a Status
            sim.cluster.record("simulator_error", None, path=path, error=repr(exc))
            err = ApiError(500, "InternalError", f"Internal error occurred: {exc!r}")
            response = json_response(err.status(), 500)
        sim.audit.finish(entry, response.status_code)
        return response

    async def _dispatch(self, request: Request, target: ResourcePath | None, verb: str) -> Response:
        cluster = self.sim.cluster
        path = request.url.path.rstrip("/")
        if request.method == "GET" and target is None:
            openapi = openapi_response(request, cluster.kubernetes_version)
            if openapi is not None:
                return openapi
            doc = discovery_document(path, cluster.kubernetes_version)
            if doc is None:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            return json_response(doc)
        if target is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if target.namespace is not None and target.rt.plural != "namespaces" and verb in ("create",):
            ns = cluster.store.get(resources.by_kind("Namespace"), "", target.namespace)
            if ns is None:
                raise not_found("namespaces", target.namespace)
        handler = VERBS[verb]
        if verb not in allowed_verbs(target) and not (
            verb in ("list", "watch") and target.subresource is None
        ):
            raise method_not_allowed()
        return await handler(cluster, request, target)
