"""The pod log subresource: ``GET /api/v1/namespaces/{ns}/pods/{name}/log``.

Pods that run a process serve what it printed, with kubelet's options: ``container``, ``previous``
(400 when there is no earlier run), ``tailLines``, ``sinceSeconds``, ``timestamps`` and ``follow``
(a stream that ends with the run). Simulated pods serve the output of their host command, if any.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse

from simulator.cluster import Cluster
from simulator.k8s.errors import bad_request
from simulator.podruntime.logs import ContainerLog, rfc3339_nano


def _flag(request: Request, name: str) -> bool:
    return request.query_params.get(name) in ("true", "1")


def _number(request: Request, name: str) -> int | None:
    text = request.query_params.get(name)
    if text is None:
        return None
    try:
        return int(text)
    except ValueError as exc:
        raise bad_request(f"invalid {name}: {text!r}") from exc


def _container(pod: dict, request: Request) -> str:
    """The container the request names, or the pod's only one."""
    spec = pod["spec"]
    names = [c["name"] for c in (spec.get("initContainers") or []) + spec["containers"]]
    name = request.query_params.get("container")
    pod_name = pod["metadata"]["name"]
    if name is None:
        if len(spec["containers"]) == 1:
            return spec["containers"][0]["name"]
        choices = " ".join(c["name"] for c in spec["containers"])
        raise bad_request(
            f"a container name must be specified for pod {pod_name}, choose one of: [{choices}]"
        )
    if name not in names:
        raise bad_request(f"container {name} is not valid for pod {pod_name}")
    return name


async def pod_log(cluster: Cluster, request: Request, pod: dict) -> Response:
    uid, pod_name = pod["metadata"]["uid"], pod["metadata"]["name"]
    container = _container(pod, request)
    tail = _number(request, "tailLines")
    since_seconds = _number(request, "sinceSeconds")
    since = datetime.now(UTC) - timedelta(seconds=since_seconds) if since_seconds is not None else None
    timestamps = _flag(request, "timestamps")
    if _flag(request, "previous"):
        log = cluster.pod_logs.previous(uid, container)
        if log is None:
            raise bad_request(f'previous terminated container "{container}" in pod "{pod_name}" not found')
    else:
        log = cluster.pod_logs.current(uid, container)
    if log is None:
        return PlainTextResponse(cluster.logs.get(uid, ""))
    lines = log.select(tail, since)
    if not _flag(request, "follow"):
        return Response(b"".join(_line(entry, timestamps) for entry in lines), media_type="text/plain")
    # the lines written from here on are followed from this position, taken with the selection: the
    # response starts streaming later, and a line written meanwhile must be neither lost nor sent twice
    return StreamingResponse(_follow(log, lines, log.end, timestamps), media_type="text/plain")


async def _follow(log: ContainerLog, first: list, end: int, timestamps: bool) -> AsyncIterator[bytes]:
    for entry in first:
        yield _line(entry, timestamps)
    async for entry in log.follow(end):
        yield _line(entry, timestamps)


def _line(entry: tuple[datetime, bytes], timestamps: bool) -> bytes:
    moment, text = entry
    return (rfc3339_nano(moment).encode() + b" " + text) if timestamps else text
