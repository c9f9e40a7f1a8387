"""Running a simulated AKS: TLS, bearer token, kubeconfig, audit log, faults and the server thread."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import random
import re
import secrets
import socket
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import trustme
import uvicorn
import yaml
from starlette.requests import Request
from starlette.responses import Response

from simulator.arm import ArmAPI, ArmEmulator, route
from simulator.cluster import NODES, Cluster
from simulator.entra import AKS_SERVER_APP, TokenService
from simulator.k8s.api import MUTATING, KubeAPI, Target, parse_resource_path
from simulator.k8s.errors import ApiError, bad_request, not_found
from simulator.scenario import Scenario

T = TypeVar("T")
# an observation endpoint: the request and its ``since`` query parameter (0 when not given)
ObservationHandler = Callable[[Request, int], Awaitable[Response]]
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
    """Every API request: time, verb, path, status and user agent (what a real audit log keeps)."""

    def __init__(self, started: float):
        self.entries: list[dict] = []
        self.started = started

    def start(self, request: Request, verb: str, target: Target | None) -> dict:
        entry = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "t": round(time.monotonic() - self.started, 4),
            "verb": verb,
            "method": request.method,
            "path": request.url.path,
            "query": request.url.query,
            "user_agent": request.headers.get("user-agent", ""),
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


@dataclass
class FaultRule:
    """Fail the next ``count`` requests that match ``verb`` and the ``path`` pattern."""

    count: int
    status: int = 500
    verb: str | None = None
    path: str | None = None
    retry_after: int | None = None

    def matches(self, verb: str, path: str) -> bool:
        return (self.verb is None or self.verb == verb) and (
            self.path is None or re.search(self.path, path) is not None
        )


@dataclass
class Faults:
    error_rate: float = 0.0
    throttle_rate: float = 0.0
    latency_ms: float = 0.0
    rules: list[FaultRule] = field(default_factory=list)
    rng: random.Random = field(default_factory=random.Random)

    async def apply(self, request: Request, verb: str, path: str) -> None:
        if self.latency_ms:
            await asyncio.sleep(self.latency_ms / 1000)
        rule = next((r for r in self.rules if r.count > 0 and r.matches(verb, path)), None)
        if rule is not None:
            rule.count -= 1
        self.rules = [r for r in self.rules if r.count > 0]
        if rule is not None:
            headers = {"Retry-After": str(rule.retry_after)} if rule.retry_after is not None else None
            raise _fault_error(rule.status, headers)
        if parse_resource_path(path) is None:
            return  # discovery documents are served without random faults
        roll = self.rng.random()
        if roll < self.error_rate:
            raise _fault_error(500)
        if roll < self.error_rate + self.throttle_rate:
            raise _fault_error(429, {"Retry-After": "1"})


_FAULT_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    409: "Conflict",
    410: "Expired",
    422: "Invalid",
    504: "Timeout",
}


def _fault_error(status: int, headers: dict | None = None) -> ApiError:
    if status == 429:
        retry_after = (headers or {}).get("Retry-After")
        details = {"retryAfterSeconds": int(retry_after)} if retry_after is not None else None
        return ApiError(
            429, "TooManyRequests", "Too many requests, please try again later.", details, headers
        )
    if status == 503:
        return ApiError(
            503, "ServiceUnavailable", "The server is currently unable to handle the request", headers=headers
        )
    if status in _FAULT_REASONS:
        return ApiError(status, _FAULT_REASONS[status], f"injected fault ({status})", headers=headers)
    return ApiError(status, "InternalError", "Internal error occurred: injected fault", headers=headers)


class Simulation:
    """Cluster state plus the request-level machinery the API server needs."""

    def __init__(self, scenario: Scenario, loop: asyncio.AbstractEventLoop, token: str, base_url: str = ""):
        self.cluster = Cluster(scenario, loop)
        self.token = token
        aad = scenario.cluster.aad
        self.entra = (
            TokenService.for_scenario(aad, base_url, scenario.time_scale) if aad and aad.enabled else None
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

    def authenticate(self, request: Request) -> None:
        """The Kubernetes API's bearer tokens: the local (static) token unless local accounts are disabled,
        and, on an Entra ID cluster, unexpired tokens for the AKS server application. The simulator's
        own ``/_sim/`` endpoints take the static token either way."""
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        aad = self.cluster.scenario.cluster.aad
        local_accounts = request.url.path.startswith("/_sim/") or not (aad and aad.disable_local_accounts)
        if token and token == self.token and local_accounts:
            return
        if token and self.entra is not None and self.entra.problem(token, [AKS_SERVER_APP]) is None:
            return
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


@dataclass
class Endpoints:
    kube_api: str
    kubeconfig: str
    ca_bundle: str
    token: str
    arm: str = ""  # Azure Resource Manager base URL (the same server)
    # an Entra ID cluster's token service (AZURE_AUTHORITY_HOST) and its one service principal
    authority: str = ""
    tenant_id: str = ""
    client_id: str = ""
    client_secret: str = ""

    def ready_line(self) -> str:
        line = {
            "kube_api": self.kube_api,
            "kubeconfig": self.kubeconfig,
            "ca_bundle": self.ca_bundle,
            "token": self.token,
            "arm": self.arm,
        }
        if self.authority:
            line |= {
                "authority": self.authority,
                "tenant_id": self.tenant_id,
                "client_id": self.client_id,
                "client_secret": self.client_secret,
            }
        return json.dumps(line)


def write_kubeconfig(path: Path, name: str, server: str, ca_pem: bytes, token: str) -> None:
    user = f"clusterUser_{name}"
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": name,
        "preferences": {},
        "clusters": [
            {
                "name": name,
                "cluster": {
                    "server": server,
                    "certificate-authority-data": base64.b64encode(ca_pem).decode(),
                },
            }
        ],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": user}}],
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)


class SimulatedAKS:
    """A simulated cluster served over HTTPS from a background thread; also a context manager."""

    def __init__(
        self,
        scenario: Scenario,
        port: int = 0,
        state_dir: str | Path | None = None,
        kubeconfig: str | Path | None = None,
        token: str | None = None,
    ):
        self.scenario = scenario
        self.port = port
        self._tmp = None
        if state_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="simulated-aks-")
            state_dir = self._tmp.name
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.kubeconfig_path = Path(kubeconfig) if kubeconfig else self.state_dir / "kubeconfig"
        self.token = token or secrets.token_urlsafe(24)
        self.sim: Simulation | None = None
        self.arm: ArmEmulator | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.endpoints: Endpoints | None = None

    def start(self, timeout: float = 60) -> Endpoints:
        ca = trustme.CA(organization_name="simulated-aks")
        ca_path = self.state_dir / "ca.pem"
        ca.cert_pem.write_to_path(str(ca_path))
        server_pem = self.state_dir / "server.pem"
        ca.issue_cert("127.0.0.1", "localhost").private_key_and_cert_chain_pem.write_to_path(str(server_pem))
        server_pem.chmod(0o600)
        # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets whose proto says TCP, and
        # without it every response waits ~40 ms for the client's delayed ACK (Nagle).
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        port = sock.getsockname()[1]
        url = f"https://127.0.0.1:{port}"
        write_kubeconfig(
            self.kubeconfig_path, self.scenario.cluster.name, url, ca.cert_pem.bytes(), self.token
        )
        self._thread = threading.Thread(
            target=self._run, args=(sock, server_pem), daemon=True, name="simulated-aks"
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self._error:
            if self._server is not None and self._server.started:
                break
            time.sleep(0.02)
        if self._error:
            raise RuntimeError(f"simulator failed to start: {self._error}") from self._error
        if self._server is None or not self._server.started:
            raise RuntimeError("simulator did not start in time")
        entra = self.sim.entra if self.sim else None
        self.endpoints = Endpoints(
            url, str(self.kubeconfig_path.resolve()), str(ca_path.resolve()), self.token, arm=url
        )
        if entra is not None:
            self.endpoints.authority = entra.base_url
            self.endpoints.tenant_id = entra.tenant_id
            self.endpoints.client_id = entra.client_id
            self.endpoints.client_secret = entra.client_secret
        return self.endpoints

    def _run(self, sock: socket.socket, server_pem: Path) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self.loop = loop
        try:
            url = f"https://127.0.0.1:{sock.getsockname()[1]}"
            self.sim = Simulation(self.scenario, loop, self.token, base_url=url)
            # ARM paths (/subscriptions/...) go to the emulator, the tenant's paths to the token service,
            # everything else to the Kubernetes API
            self.arm = ArmEmulator(self.sim, url, (self.state_dir / "ca.pem").read_bytes())
            app = route(ArmAPI(self.arm), KubeAPI(self.sim), self.sim.entra)
            config = uvicorn.Config(
                app,
                ssl_certfile=str(server_pem),
                log_level="warning",
                access_log=False,
                lifespan="off",
                timeout_graceful_shutdown=1,
                timeout_keep_alive=30,
            )
            server = uvicorn.Server(config)
            self._server = server
            loop.run_until_complete(server.serve(sockets=[sock]))
        except BaseException as exc:  # reported to the starting thread
            self._error = exc
        finally:
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
            sock.close()

    def _drop_idle_connections(self) -> None:
        """Close idle keep-alive connections at once.

        A graceful TLS close waits for the client's close_notify, which an idle pooled client connection
        never sends; every such connection would hold the shutdown for the whole grace period.
        """
        assert self._server is not None  # scheduled by stop() only once the server exists
        for connection in list(self._server.server_state.connections):
            cycle = getattr(connection, "cycle", None)
            if cycle is None or cycle.response_complete:
                connection.transport.abort()

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the simulator's loop thread and return its result (for tests)."""
        assert self.loop is not None

        async def run() -> T:
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout=30)

    @property
    def cluster(self) -> Cluster:
        assert self.sim is not None
        return self.sim.cluster

    def node_names(self) -> list[str]:
        return self.call(lambda: [n["metadata"]["name"] for n in self.cluster.store.list(NODES)])

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            if self.loop is not None:
                with contextlib.suppress(RuntimeError):  # the loop is already closed
                    self.loop.call_soon_threadsafe(self._drop_idle_connections)
        if self._thread is not None:
            self._thread.join(timeout=15)
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> SimulatedAKS:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
