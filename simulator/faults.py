"""Injected faults of the simulated Kubernetes API: latency on every request, random 500s and 429s at
the scenario's rates, and rules (set through ``POST /_sim/faults``) that fail the next requests
matching a verb and a path pattern with a given status, answered as a real API server's Status."""

from __future__ import annotations

import asyncio
import random
import re
from dataclasses import dataclass, field

from starlette.requests import Request

from simulator.k8s.errors import ApiError
from simulator.k8s.paths import parse_resource_path


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
