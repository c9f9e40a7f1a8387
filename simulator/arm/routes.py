"""Where ARM requests go: the containerservice paths the emulator serves, each with its handler on
``ArmAPI``, and ``route``, the one ASGI app that sends a request to ARM, to the Entra ID token service
or to the Kubernetes API. Paths match case-insensitively, as ARM's do."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.requests import Request

from simulator.entra import TokenService

ASGIApp = Callable[..., Awaitable[None]]

_SUB = r"/subscriptions/(?P<sub>[^/]+)"
_MC = (
    _SUB
    + r"/resourcegroups/(?P<rg>[^/]+)/providers/microsoft\.containerservice/managedclusters/(?P<name>[^/]+)"
)
_POOL = _MC + r"/agentpools/(?P<pool>[^/]+)"
_LOC = _SUB + r"/providers/microsoft\.containerservice/locations/(?P<loc>[^/]+)"


@dataclass(frozen=True)
class Route:
    method: str
    pattern: re.Pattern
    handler: str
    resource: str  # for the audit log
    verb: str  # get | list | update | action
    mutating: bool = False


def _route(
    method: str, pattern: str, handler: str, resource: str, verb: str, mutating: bool = False
) -> Route:
    return Route(method, re.compile(f"^{pattern}/?$", re.IGNORECASE), handler, resource, verb, mutating)


ROUTES = [
    _route("GET", _MC, "get_cluster", "managedClusters", "get"),
    _route("PUT", _MC, "put_cluster", "managedClusters", "update", mutating=True),
    _route("GET", _MC + "/upgradeprofiles/default", "get_upgrade_profile", "upgradeProfiles", "get"),
    _route(
        "GET",
        _MC + "/availableagentpoolversions",
        "get_available_pool_versions",
        "availableAgentPoolVersions",
        "get",
    ),
    _route("POST", _MC + "/abort", "abort_cluster", "managedClusters", "action", mutating=True),
    _route("POST", _MC + "/listclusterusercredential", "list_user_credential", "managedClusters", "action"),
    _route("GET", _MC + "/agentpools", "list_pools", "agentPools", "list"),
    _route("GET", _POOL, "get_pool", "agentPools", "get"),
    _route("PUT", _POOL, "put_pool", "agentPools", "update", mutating=True),
    _route("GET", _POOL + "/upgradeprofiles/default", "get_pool_upgrade_profile", "upgradeProfiles", "get"),
    _route(
        "POST",
        _POOL + "/upgradenodeimageversion",
        "upgrade_node_image",
        "agentPools",
        "action",
        mutating=True,
    ),
    _route("POST", _POOL + "/abort", "abort_pool", "agentPools", "action", mutating=True),
    _route(
        "GET", _MC + "/maintenanceconfigurations", "list_maintenance", "maintenanceConfigurations", "list"
    ),
    _route(
        "GET",
        _MC + "/maintenanceconfigurations/(?P<config>[^/]+)",
        "get_maintenance",
        "maintenanceConfigurations",
        "get",
    ),
    _route("GET", _LOC + "/kubernetesversions", "kubernetes_versions", "kubernetesVersions", "list"),
    _route("GET", _LOC + "/operations/(?P<op>[^/]+)", "operation_status", "operations", "get"),
    _route("GET", _LOC + "/operationresults/(?P<op>[^/]+)", "operation_result", "operationresults", "get"),
    _route(
        "GET",
        _SUB + r"/resourcegroups/(?P<rg>[^/]+)/providers/microsoft\.containerservice/managedclusters",
        "list_clusters",
        "managedClusters",
        "list",
    ),
    _route(
        "GET",
        _SUB + r"/providers/microsoft\.containerservice/managedclusters",
        "list_clusters",
        "managedClusters",
        "list",
    ),
]


def route(arm: ASGIApp, kube: ASGIApp, entra: TokenService | None = None) -> ASGIApp:
    """One ASGI app for every API: ARM paths (and ``/_sim/arm/``) to ``arm``, the tenant's paths to the
    Entra ID token service when the cluster has one, the rest to ``kube``."""

    async def app(scope, receive, send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path.lower().startswith("/subscriptions/") or path.startswith("/_sim/arm/"):
            await arm(scope, receive, send)
        elif entra is not None and entra.serves(path):
            request = Request(scope, receive)
            response = await entra.handle(request)
            await response(scope, receive, send)
        else:
            await kube(scope, receive, send)

    return app
