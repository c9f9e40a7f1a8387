"""What the reliability cases share (beyond tests/support.py): their scenario, the invariants every case
ends on, and small network stand-ins (a TCP proxy that can be cut, a server that never answers, an HTTP
catcher for notifications)."""

from __future__ import annotations

import contextlib
import http.server
import socket
import threading

from kubernetes import client

from aksmaint.nodestate import PENDING_TAINT_KEY, STATE_ANNOTATION
from tests.support import HOST_POD_LABEL, PENDING_KERNEL, RunningSim, core_api, maintenance_scenario


def reliability_scenario(need: int = 3, count: int = 4, **pool_changes: object) -> dict:
    """The shared scenario with two api pods per node, so every drain evicts some."""
    return maintenance_scenario(need, count, replicas=2 * count, **pool_changes)


def cordoned_without_record(core: client.CoreV1Api) -> list[str]:
    return [
        n.metadata.name
        for n in core.list_node().items
        if n.spec.unschedulable and STATE_ANNOTATION not in (n.metadata.annotations or {})
    ]


def assert_invariants(
    sim: RunningSim,
    needed: list[str],
    concurrency: int = 1,
    not_rebooted: tuple[str, ...] = (),
    left_cordoned: tuple[str, ...] = (),
    allow_finished_scan_pods: bool = False,
) -> dict:
    """What every case ends on: never more nodes unschedulable than the concurrency, no budget violated,
    every node that needed a reboot rebooted exactly once (``not_rebooted``: never), and nothing of ours
    left on the cluster (``left_cordoned``: nodes meant to stay cordoned, each with its record)."""
    inv = sim.observer.invariants()
    violations = [e for e in sim.observer.timeline() if e["event"] == "pdb_violation"]
    assert inv["pdb_violations"] == 0, violations
    assert inv["max_unschedulable"] <= concurrency, inv
    expected = {n: 1 for n in needed if n not in not_rebooted}
    expected.update({n: 1 for n in left_cordoned})
    assert inv["reboots"] == expected, inv["reboots"]
    core = core_api(sim)
    try:
        nodes = core.list_node().items
        # per node: cordoned, carries our record, carries our reboot-pending taint (a node left cordoned
        # for a person may keep it: it is not schedulable anyway)
        marks = {
            n.metadata.name: (
                bool(n.spec.unschedulable),
                STATE_ANNOTATION in (n.metadata.annotations or {}),
                n.metadata.name not in left_cordoned
                and any(t.key == PENDING_TAINT_KEY for t in n.spec.taints or []),
            )
            for n in nodes
        }
        wanted = {name: (name in left_cordoned, name in left_cordoned, False) for name in marks}
        assert marks == wanted, {n: m for n, m in marks.items() if m != wanted[n]}
        leftovers = [
            p.metadata.name
            for p in core.list_pod_for_all_namespaces(label_selector=HOST_POD_LABEL).items
            if not (
                allow_finished_scan_pods
                and (p.metadata.labels or {}).get("aksmaint.io/purpose") == "scan"
                and p.status.phase in ("Succeeded", "Failed")
            )
        ]
        assert leftovers == []
    finally:
        core.api_client.close()
    hosts = sim.observer.hosts()
    for name in expected:
        if name not in left_cordoned:
            assert hosts[name]["running_kernel"] == PENDING_KERNEL, hosts[name]
            assert not hosts[name]["reboot_required"]
    return inv


class TcpProxy:
    """A TCP proxy on 127.0.0.1 in front of the simulator. ``cut()`` closes the listener and every
    connection (the API becomes unreachable: connections are refused); ``restore()`` listens again on
    the same port."""

    def __init__(self, upstream_port: int):
        self.upstream_port = upstream_port
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self._listener: socket.socket | None = None
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.restore()

    def restore(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        with self._lock:
            connections, self._connections = self._connections, set()
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                downstream, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            except OSError:
                downstream.close()
                continue
            with self._lock:
                self._connections |= {downstream, upstream}
            for a, b in ((downstream, upstream), (upstream, downstream)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.cut()


class SilentServer:
    """Accepts TCP connections and never answers (a Prometheus that hangs)."""

    def __init__(self):
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port = self._listener.getsockname()[1]
        self._held: list[socket.socket] = []
        self.accepted = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self.accepted += 1
            self._held.append(conn)

    def close(self) -> None:
        self._listener.close()
        for conn in self._held:
            conn.close()


class Catcher:
    """An HTTP server that records what is posted to it (a notification webhook)."""

    def __init__(self):
        received: list[tuple[str, bytes]] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server interface
                length = int(self.headers.get("Content-Length") or 0)
                received.append((self.path, self.rfile.read(length)))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.received = received
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
