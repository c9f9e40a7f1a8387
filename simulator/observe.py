"""A small client for the simulator's observation endpoints (``/_sim/...``), for tests, demo and benchmarks."""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable
from typing import Any

import httpx

from simulator.runtime import Endpoints


class SimObserver:
    def __init__(self, endpoints: Endpoints):
        self._http = httpx.Client(
            base_url=endpoints.kube_api,
            verify=ssl.create_default_context(cafile=endpoints.ca_bundle),
            timeout=30,
            headers={"Authorization": f"Bearer {endpoints.token}"},
        )

    def _get(self, path: str, **params: int) -> Any:
        """The decoded JSON body of a GET; each endpoint's method states the shape it returns."""
        response = self._http.get(path, params=params)
        response.raise_for_status()
        return response.json()

    def timeline(self, since: int = 0) -> list[dict]:
        return self._get("/_sim/timeline", since=since)

    def audit(self, since: int = 0) -> list[dict]:
        return self._get("/_sim/audit", since=since)

    def mutating_requests(self, since: int = 0) -> list[dict]:
        return [e for e in self.audit(since) if e["mutating"]]

    def invariants(self) -> dict:
        return self._get("/_sim/invariants")

    def tokens(self) -> dict:
        """The Entra ID token service's issued tokens per audience (an Entra ID cluster only)."""
        return self._get("/_sim/tokens")

    def hosts(self) -> dict[str, dict]:
        return {h["node"]: h for h in self._get("/_sim/hosts")}

    def set_host(self, node: str, **changes: object) -> dict:
        response = self._http.patch(f"/_sim/hosts/{node}", json=changes)
        response.raise_for_status()
        return response.json()

    def faults(self, **settings: object) -> dict:
        """Change fault rates (error_rate, throttle_rate, latency_ms) or add rules
        (count, status, verb, path, retry_after)."""
        response = self._http.post("/_sim/faults", json=settings)
        response.raise_for_status()
        return response.json()

    def wait_for(self, condition: Callable[[], object], timeout: float = 30, interval: float = 0.1) -> object:
        deadline = time.monotonic() + timeout
        while True:
            value = condition()
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError("condition not met in time")
            time.sleep(interval)

    def close(self) -> None:
        self._http.close()
