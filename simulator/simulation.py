"""The state behind one simulated AKS server: the cluster, plus the request-level machinery the API
server needs: bearer-token authentication (the static token, Entra ID tokens and service-account
tokens), the audit log with the user of each request, the injected faults, and the simulator's own
observation endpoints under ``/_sim`` (timeline, audit, invariants, hosts, tokens, fault control and
host changes)."""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from simulator.cluster import Cluster
from simulator.entra import AKS_SERVER_APP, TokenService
from simulator.faults import FaultRule, Faults
from simulator.k8s.errors import ApiError, bad_request, not_found
from simulator.k8s.paths import MUTATING, ResourcePath
from simulator.scenario import Scenario
from simulator.service_accounts import SERVICE_ACCOUNT_PREFIX

# an observation endpoint: the request and its ``since`` query parameter (0 when not given)
ObservationHandler = Callable[[Request, int], Awaitable[Response]]
# the user name of the static token, as in the clusterAdmin kubeconfig AKS hands out
STATIC_TOKEN_USER = "clusterAdmin"
# the host fields PATCH /_sim/hosts/<node> may change
HOST_FIELDS = {
    "reboot_required",
    "pending_kernel",
    "upgradable_packages",
    "available_kernel",
    "fail_after_reboot",
}


def _json(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body), status_code=status, media_type="application/json")


class Audit:
    """Every API request: time, verb, path, status, user and user agent (what a real audit log keeps).

    ``user`` is set once the request is authenticated: ``clusterAdmin`` for the static token, an Entra
    ID token's ``oid``, a service account's ``system:serviceaccount:<ns>:<name>``; None when refused."""

    def __init__(self, started: float):
        self.entries: list[dict] = []
        self.started = started

    def start(self, request: Request, verb: str, target: ResourcePath | None) -> dict:
        entry = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "t": round(time.monotonic() - self.started, 4),
            "verb": verb,
            "method": request.method,
            "path": request.url.path,
            "query": request.url.query,
            "user_agent": request.headers.get("user-agent", ""),
            "user": None,
            "resource": target.rt.plural if target else None,
            "group": target.rt.group if target else None,
            "subresource": target.subresource if target else None,
            "namespace": target.namespace if target else None,
            "name": target.name if target else None,
            "mutating": verb in MUTATING and not request.url.path.startswith("/_sim/"),
            "status": None,
        }
        if not request.url.path.startswith("/_sim/"):
            self.entries.append(entry)
        return entry

    @staticmethod
    def finish(entry: dict, status: int) -> None:
        entry["status"] = status


class Simulation:
    """Cluster state plus the request-level machinery the API server needs."""

    def __init__(
        self,
        scenario: Scenario,
        loop: asyncio.AbstractEventLoop,
        token: str,
        base_url: str = "",
        ca_bundle: str = "",
    ):
        """``ca_bundle`` is the simulator's CA, which the token service trusts when it fetches an
        OIDC issuer's documents (another simulated cluster's, or this one's)."""
        self.cluster = Cluster(scenario, loop, base_url=base_url)
        self.token = token
        aad = scenario.cluster.aad
        self.entra = (
            TokenService.for_scenario(aad, base_url, scenario.time_scale, [ca_bundle] if ca_bundle else [])
            if aad and aad.enabled
            else None
        )
        self.audit = Audit(self.cluster.started_at)
        self.faults = Faults(
            scenario.faults.api_error_rate,
            scenario.faults.api_throttle_rate,
            scenario.faults.api_latency_ms,
            rng=random.Random(scenario.seed),
        )
        # the observation endpoints by method and path; PATCH /_sim/hosts/<node> is matched apart
        self._observations: dict[tuple[str, str], ObservationHandler] = {
            ("GET", "/_sim/timeline"): self._get_timeline,
            ("GET", "/_sim/audit"): self._get_audit,
            ("GET", "/_sim/invariants"): self._get_invariants,
            ("GET", "/_sim/hosts"): self._get_hosts,
            ("GET", "/_sim/tokens"): self._get_tokens,
            ("POST", "/_sim/faults"): self._post_faults,
        }

    def authenticate(self, request: Request) -> str:
        """The user a request's bearer token names, or a 401.

        The Kubernetes API takes the local (static) token unless local accounts are disabled; on an
        Entra ID cluster, unexpired tokens for the AKS server application; and unexpired service-account
        tokens for the API server's audiences. The simulator's own ``/_sim/`` endpoints take the static
        token either way."""
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer":  # the scheme is case-insensitive: the Python client sends "bearer"
            token = ""
        if not token:
            raise ApiError(401, "Unauthorized", "Unauthorized")
        aad = self.cluster.scenario.cluster.aad
        local_accounts = request.url.path.startswith("/_sim/") or not (aad and aad.disable_local_accounts)
        if token == self.token and local_accounts:
            return STATIC_TOKEN_USER
        if self.entra is not None:
            claims = self.entra.verify(token, [AKS_SERVER_APP])
            if isinstance(claims, dict):
                return str(claims.get("oid") or claims.get("appid"))
        issuer = self.cluster.service_accounts
        claims = issuer.verify(token, issuer.api_audiences)
        if isinstance(claims, dict) and str(claims["sub"]).startswith(SERVICE_ACCOUNT_PREFIX):
            return str(claims["sub"])
        raise ApiError(401, "Unauthorized", "Unauthorized")

    async def observation(self, request: Request) -> Response:
        """The simulator's own endpoints: timeline, audit, invariants, hosts and fault control."""
        path = request.url.path
        since = int(request.query_params.get("since", 0))  # read, and so checked, for every endpoint
        handler = self._observations.get((request.method, path))
        if handler is not None:
            return await handler(request, since)
        match = re.fullmatch(r"/_sim/hosts/([^/]+)", path)
        if match and request.method == "PATCH":
            return await self._patch_host(request, match.group(1))
        raise ApiError(404, "NotFound", f"no simulator endpoint {request.method} {path}")

    # ---- observation endpoints -----------------------------------------------------------
    async def _get_timeline(self, request: Request, since: int) -> Response:
        return _json(self.cluster.timeline[since:])

    async def _get_audit(self, request: Request, since: int) -> Response:
        return _json(self.audit.entries[since:])

    async def _get_invariants(self, request: Request, since: int) -> Response:
        return _json(self.cluster.invariants_report())

    async def _get_hosts(self, request: Request, since: int) -> Response:
        return _json([h.snapshot() for h in self.cluster.hosts.values()])

    async def _get_tokens(self, request: Request, since: int) -> Response:
        return _json(self.entra.counts() if self.entra else {"issued": {}})

    async def _post_faults(self, request: Request, since: int) -> Response:
        """Add fault rules (``rules``, or one rule given inline with ``count``) and set the random fault
        rates and the latency; answers with the fault settings now in force."""
        body = json.loads(await request.body() or b"{}")
        if "rules" in body or "count" in body:
            for rule in body.get("rules", [body] if "count" in body else []):
                self.faults.rules.append(FaultRule(**rule))
        for key in ("error_rate", "throttle_rate", "latency_ms"):
            if key in body:
                setattr(self.faults, key, float(body[key]))
        return _json(
            {
                "rules": len(self.faults.rules),
                "error_rate": self.faults.error_rate,
                "throttle_rate": self.faults.throttle_rate,
                "latency_ms": self.faults.latency_ms,
            }
        )

    async def _patch_host(self, request: Request, node: str) -> Response:
        """Change the state of a node's host (reboot-required sentinel, pending kernel, packages, ...);
        a host that is down and no longer set to fail after its reboot is repaired."""
        host = self.cluster.hosts.get(node)
        if host is None:
            raise not_found("hosts", node)
        changes = json.loads(await request.body() or b"{}")
        if set(changes) - HOST_FIELDS:
            raise bad_request(f"unknown host fields: {sorted(set(changes) - HOST_FIELDS)}")
        for key, value in changes.items():
            setattr(host, key, value)
        self.cluster.host_changed(host.node_name)
        if host.state == "down" and not host.fail_after_reboot:
            self.cluster.repair_node(host.node_name)
        self.cluster.reconcile()
        return _json(host.snapshot())
