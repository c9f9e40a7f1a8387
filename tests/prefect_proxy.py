"""A reverse proxy for the Prefect API on 127.0.0.1, for tests that need the API to misbehave.

The flow process talks to the proxy (``PREFECT_API_URL=proxy.api_url``) instead of the server. The proxy
passes plain HTTP requests on with httpx and the events websockets (``/api/events/in``, ``/events/out``)
with the ``websockets`` library, and counts what passes. It can answer a seeded share of chosen requests
with ``503 Service Unavailable`` (what Prefect's SQLite-backed server answers when its database is locked),
and it can go down: while down it looks like a stopped server, since new connections are refused and
open ones, websockets included, are dropped; it comes back on the same port.

It runs uvicorn in a background thread with its own event loop; going down stops that server and coming
back starts a new one on the same port.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httpx
import uvicorn
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException
from websockets.typing import Subprotocol

from scripts.prefect_postgres import free_port

Predicate = Callable[[str, str], bool]
"""Chooses requests by method and normalised path, e.g. ``("POST", "/api/flow_runs/{id}/set_state")``."""

# headers that belong to one hop: the proxy's own connection to each side sets them
HOP_HEADERS = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "content-encoding",
    "upgrade",
    "host",
    "accept-encoding",
}
SERVICE_UNAVAILABLE = json.dumps({"exception_message": "Service Unavailable"}).encode()
ID_SEGMENT = re.compile(
    r"^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9]+)$", re.IGNORECASE
)
WRITE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
RECORDING_RESOURCES = ("/flow_runs/", "/task_runs/", "/logs/", "/artifacts/")
READ_ENDPOINTS = ("/filter", "/count", "/paginate", "/history")


def normalised_path(path: str) -> str:
    """The path with every id segment (a UUID or a number) replaced by ``{id}``."""
    return "/".join("{id}" if ID_SEGMENT.match(part) else part for part in path.split("/"))


def prefect_writes(method: str, path: str) -> bool:
    """What a run writes to record itself: flow runs, task runs, logs, artifacts and their states
    (reads sent as POST, such as ``/flow_runs/filter``, are not writes)."""
    if method not in WRITE_METHODS or path.rstrip("/").endswith(READ_ENDPOINTS):
        return False
    return any(resource in path + "/" for resource in RECORDING_RESOURCES) or path.endswith("/set_state")


class PrefectProxy:
    """A reverse proxy in front of the Prefect API at ``upstream_api_url`` (e.g. ``http://127.0.0.1:4200/api``),
    serving the same paths at ``api_url``. Use it as a context manager, or call ``close()``."""

    def __init__(self, upstream_api_url: str, seed: int = 0, upstream_timeout: float = 60):
        upstream = urlsplit(upstream_api_url)
        self.upstream_origin = f"{upstream.scheme}://{upstream.netloc}"
        self.port = free_port()
        self.api_url = f"http://127.0.0.1:{self.port}{upstream.path}"
        self.upstream_timeout = upstream_timeout
        self.seed = seed
        self._rngs: dict[tuple[str, str], random.Random] = {}
        self._fault_share = 0.0
        self._fault_matches: Predicate = prefect_writes
        self._lock = threading.Lock()
        self._requests: Counter[tuple[str, str]] = Counter()
        self._refused: Counter[tuple[str, str]] = Counter()
        self._events = 0
        self._logs = 0  # log records in the batches sent to /logs/
        self._ws_messages = 0
        self._dropped = 0
        self._server: uvicorn.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._client: httpx.AsyncClient | None = None
        self._upstream_sockets: set[ClientConnection] = set()
        self.up()

    # ---- faults --------------------------------------------------------------------------------
    def fail(self, share: float, matches: Predicate = prefect_writes, seed: int | None = None) -> None:
        """Answer 503 to ``share`` (0..1) of the requests ``matches`` chooses, drawn from seeded RNGs
        (``seed`` starts the draws afresh from that seed)."""
        with self._lock:
            self._fault_share = share
            self._fault_matches = matches
            if seed is not None:
                self.seed = seed
                self._rngs.clear()

    def heal(self) -> None:
        self.fail(0.0)

    @property
    def is_up(self) -> bool:
        return self._server is not None

    def down(self, seconds: float | None = None) -> None:
        """Stop like a server that went away: refuse new connections and drop the open ones. With
        ``seconds``, come back on the same port after that long (in the background)."""
        server, loop, thread = self._server, self._loop, self._thread
        if server is None or loop is None or thread is None:
            return
        asyncio.run_coroutine_threadsafe(self._drop_everything(server), loop).result(10)
        server.force_exit = True
        server.should_exit = True
        thread.join(10)
        self._server = self._loop = self._thread = None
        if seconds is not None:
            threading.Thread(target=self._up_after, args=(seconds,), daemon=True).start()

    def up(self) -> None:
        """Listen again on the same port (a no-op when already up)."""
        if self._server is not None:
            return
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(128)
        config = uvicorn.Config(
            self._app,
            interface="asgi3",
            lifespan="off",
            http="h11",
            ws="websockets-sansio",
            log_config=None,  # leave the test process's logging alone
            access_log=False,
            log_level="warning",
        )
        server = uvicorn.Server(config)
        started = threading.Event()
        thread = threading.Thread(
            target=self._serve,
            args=(server, listener, started),
            name=f"prefect-proxy-{self.port}",
            daemon=True,
        )
        thread.start()
        if not started.wait(10) or not server.started:
            raise RuntimeError(f"the Prefect proxy did not start on port {self.port}")
        self._server, self._thread = server, thread

    def close(self) -> None:
        self.down()

    def __enter__(self) -> PrefectProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- counts --------------------------------------------------------------------------------
    def counts(self) -> dict[str, Any]:
        """What passed so far: HTTP requests by method and by "METHOD normalised-path", the 503s the
        proxy answered itself, websocket messages from the client (all, and events alone), and
        connections dropped by ``down()``."""
        with self._lock:
            by_method: Counter[str] = Counter()
            for (method, _), n in self._requests.items():
                by_method[method] += n
            return {
                "requests_total": sum(self._requests.values()),
                "by_method": dict(by_method),
                "by_path": {f"{m} {p}": n for (m, p), n in sorted(self._requests.items())},
                "refused_total": sum(self._refused.values()),
                "refused": {f"{m} {p}": n for (m, p), n in sorted(self._refused.items())},
                "ws_messages": self._ws_messages,
                "events_total": self._events,
                "logs_total": self._logs,
                "dropped_connections": self._dropped,
            }

    @property
    def requests_total(self) -> int:
        with self._lock:
            return sum(self._requests.values())

    @property
    def refused_total(self) -> int:
        with self._lock:
            return sum(self._refused.values())

    @property
    def events_total(self) -> int:
        with self._lock:
            return self._events

    # ---- the server's thread -------------------------------------------------------------------
    def _serve(self, server: uvicorn.Server, listener: socket.socket, started: threading.Event) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._client = httpx.AsyncClient(timeout=self.upstream_timeout)
            serving = asyncio.create_task(server.serve(sockets=[listener]))
            while not server.started and not serving.done():
                await asyncio.sleep(0.01)
            started.set()
            try:
                await serving
            finally:
                await self._client.aclose()

        try:
            asyncio.run(main())
        finally:
            started.set()
            listener.close()

    def _up_after(self, seconds: float) -> None:
        time.sleep(seconds)
        self.up()

    async def _drop_everything(self, server: uvicorn.Server) -> None:
        """In one step of the loop, so that nothing is accepted in between: stop listening, then abort
        every open connection (no close frame, no response: a reset, as from a server that died)."""
        for listening in server.servers:
            listening.close()
        connections = list(server.server_state.connections)
        for connection in connections:
            transport = getattr(connection, "transport", None)
            if transport is not None:
                transport.abort()
        upstream = list(self._upstream_sockets)
        with self._lock:
            self._dropped += len(connections)
        for ws in upstream:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 2)

    async def _app(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "websocket":
            await self._websocket(scope, receive, send)

    def _refuse(self, method: str, path: str) -> bool:
        with self._lock:
            self._requests[(method, path)] += 1
            refuse = (
                self._fault_share > 0
                and self._fault_matches(method, path)
                and self._draw(method, path) < self._fault_share
            )
            if refuse:
                self._refused[(method, path)] += 1
            return refuse

    def _draw(self, method: str, path: str) -> float:
        """The next draw for this method and path. One seeded RNG per path keeps which of a path's
        requests are refused the same from run to run, however threads interleave other paths."""
        key = (method, path)
        if key not in self._rngs:
            self._rngs[key] = random.Random(f"{self.seed} {method} {path}")
        return self._rngs[key].random()

    async def _http(self, scope: dict, receive: Callable, send: Callable) -> None:
        method = scope["method"]
        path = normalised_path(scope["path"])
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if self._refuse(method, path):
            await respond(send, 503, [(b"content-type", b"application/json")], SERVICE_UNAVAILABLE)
            return
        if method == "POST" and path.endswith("/logs/"):
            with self._lock:
                self._logs += log_records(body)
        target = self.upstream_origin + scope["raw_path"].decode()
        if scope["query_string"]:
            target += "?" + scope["query_string"].decode()
        headers = [(k, v) for k, v in scope["headers"] if k.decode().lower() not in HOP_HEADERS]
        headers.append((b"accept-encoding", b"identity"))
        assert self._client is not None
        try:
            answer = await self._client.request(method, target, headers=headers, content=body)
        except httpx.HTTPError as exc:
            message = json.dumps({"exception_message": f"proxy: upstream failed: {exc!r}"}).encode()
            await respond(send, 502, [(b"content-type", b"application/json")], message)
            return
        kept = [(k, v) for k, v in answer.headers.raw if k.decode().lower() not in HOP_HEADERS]
        await respond(send, answer.status_code, kept, answer.content)

    async def _websocket(self, scope: dict, receive: Callable, send: Callable) -> None:
        if (await receive())["type"] != "websocket.connect":
            return
        target = "ws" + self.upstream_origin.removeprefix("http") + scope["raw_path"].decode()
        if scope["query_string"]:
            target += "?" + scope["query_string"].decode()
        passed = {k.decode(): v.decode() for k, v in scope["headers"] if k.lower() == b"authorization"}
        offered = [Subprotocol(p) for p in scope.get("subprotocols", [])]
        try:
            upstream = await connect(target, subprotocols=offered or None, additional_headers=passed)
        except (OSError, WebSocketException, TimeoutError):
            await send({"type": "websocket.close", "code": 1011})
            return
        self._upstream_sockets.add(upstream)
        try:
            await send({"type": "websocket.accept", "subprotocol": upstream.subprotocol})
            pumps = [
                asyncio.create_task(self._client_to_server(receive, upstream)),
                asyncio.create_task(server_to_client(upstream, send)),
            ]
            _, pending = await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            for pump in pending:
                pump.cancel()
        finally:
            self._upstream_sockets.discard(upstream)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(upstream.close(), 2)

    async def _client_to_server(self, receive: Callable, upstream: ClientConnection) -> None:
        while True:
            message = await receive()
            if message["type"] != "websocket.receive":
                return  # the client went away
            data = message.get("text") if message.get("text") is not None else message.get("bytes")
            with self._lock:
                self._ws_messages += 1
                self._events += int(is_event(data))
            try:
                await upstream.send(data)
            except WebSocketException:
                return


def log_records(body: bytes) -> int:
    """How many log records a batch sent to ``POST /logs/`` holds."""
    try:
        batch = json.loads(body)
    except ValueError:
        return 0
    return len(batch) if isinstance(batch, list) else 0


def is_event(data: str | bytes | None) -> bool:
    """A message a client sends on the events websocket that is an event, not its auth handshake."""
    try:
        message = json.loads(data or b"")
    except ValueError:
        return False
    return isinstance(message, dict) and message.get("type") != "auth" and "event" in message


async def server_to_client(upstream: ClientConnection, send: Callable) -> None:
    try:
        async for data in upstream:
            key = "text" if isinstance(data, str) else "bytes"
            await send({"type": "websocket.send", key: data})
    except WebSocketException:
        pass
    with contextlib.suppress(Exception):
        await send({"type": "websocket.close", "code": upstream.close_code or 1000})


async def respond(send: Callable, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
