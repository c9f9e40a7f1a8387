"""What the verbs of the simulated Kubernetes API share: reading a request (its JSON body, its label and
field selectors, whether it asks for a Table and with which ``includeObject``) and answering one (a
compact JSON response, an object rendered as stored or as a one-row Table for kubectl)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import Response

from simulator.cluster import Cluster
from simulator.k8s.errors import bad_request
from simulator.k8s.field_selectors import field_value, parse_field_selector
from simulator.k8s.resources import ResourceType
from simulator.k8s.selectors import SelectorError, parse_label_selector
from simulator.k8s.tables import to_table

# Typed fields a real server reads as "false" when unset, e.g. `spec.unschedulable=false` for nodes.
FIELD_DEFAULTS = {"spec.unschedulable": "false", "spec.hostNetwork": "false"}


def json_response(body: dict, status: int = 200, headers: dict | None = None) -> Response:
    return Response(
        json.dumps(body, separators=(",", ":")),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def wants_table(request: Request) -> bool:
    return "as=Table" in request.headers.get("accept", "")


def include_object(request: Request) -> str:
    return request.query_params.get("includeObject", "PartialObjectMetadata")


async def object_body(request: Request) -> dict:
    """A request body that must be one object (create, update)."""
    body = await json_body(request)
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object")
    return body


async def json_body(request: Request) -> dict | list:
    """A request body that may be an object or, for a JSON patch, a list."""
    raw = await request.body()
    try:
        body = json.loads(raw or b"{}")
    except json.JSONDecodeError as exc:
        raise bad_request(f"the request body is not valid JSON: {exc}") from exc
    if not isinstance(body, (dict, list)):
        raise bad_request("the request body must be a JSON object")
    return body


def render(cluster: Cluster, rt: ResourceType, obj: dict) -> dict:
    return cluster.store.render(rt, obj)


def respond_object(
    cluster: Cluster,
    request: Request,
    rt: ResourceType,
    obj: dict,
    status: int = 200,
    headers: dict | None = None,
) -> Response:
    obj = render(cluster, rt, obj)
    if wants_table(request):
        table = to_table(rt.plural, [obj], datetime.now(UTC), include_object(request))
        return json_response(table, status, headers)
    return json_response(obj, status, headers)


def selection(request: Request, rt: ResourceType) -> Callable[[dict], bool]:
    """Whether an object is selected by the request's labelSelector and fieldSelector."""
    query = request.query_params
    try:
        labels = parse_label_selector(query.get("labelSelector", ""))
        fields = parse_field_selector(query.get("fieldSelector", ""), set(rt.field_selectors))
    except SelectorError as exc:
        raise bad_request(str(exc)) from exc

    def accept(obj: dict) -> bool:
        return labels.matches(obj["metadata"].get("labels")) and all(
            (_field_text(obj, req.field) == req.value) != req.negated for req in fields.requirements
        )

    return accept


def _field_text(obj: dict, path: str) -> str:
    return field_value(obj, path) or FIELD_DEFAULTS.get(path, "")
