"""Running a simulated AKS: TLS, bearer token, kubeconfig, the server thread and its ready line.

``SimulatedAKS`` serves one ``Simulation`` (``simulation``) over HTTPS from a background thread:
the Kubernetes API, the ARM emulator and, on an Entra ID cluster, the token service, all on one port;
``Endpoints`` is what a client needs to reach it, printed as the ready line.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import secrets
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import trustme
import uvicorn
import yaml

from simulator.arm.api import ArmAPI
from simulator.arm.emulator import ArmEmulator
from simulator.arm.routes import route
from simulator.cluster import Cluster
from simulator.controllers.common import NODES
from simulator.k8s.api import KubeAPI
from simulator.scenario import Scenario
from simulator.simulation import Simulation

T = TypeVar("T")


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
        ca: trustme.CA | None = None,
    ):
        self.scenario = scenario
        # a CA shared by several simulators lets one bundle trust them all; by default each has its own
        self.ca = ca
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
        ca = self.ca or trustme.CA(organization_name="simulated-aks")
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
            ca_bundle = str(self.state_dir / "ca.pem")
            self.sim = Simulation(self.scenario, loop, self.token, base_url=url, ca_bundle=ca_bundle)
            # ARM paths (/subscriptions/...) go to the emulator, the tenant's paths to the token service,
            # everything else to the Kubernetes API
            self.arm = ArmEmulator(self.sim, url, (self.state_dir / "ca.pem").read_bytes())
            self.sim.cluster.attach_runtime(
                sock.getsockname()[1], (self.state_dir / "ca.pem").read_text(), self.state_dir
            )
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
            # tasks still going (a pod's process being waited on, a watch) end here, not destroyed pending
            pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
            for task in pending:
                task.cancel()
            with contextlib.suppress(Exception):
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
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
        if self.sim is not None and self.loop is not None and not self.loop.is_closed():
            # no process a pod ran outlives the simulator
            with contextlib.suppress(RuntimeError, TimeoutError):
                self.call(self.sim.cluster.stop_processes)
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
