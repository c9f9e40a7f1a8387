"""The write verbs of the simulated Kubernetes API: create (and a pod's eviction), update (and the status
subresource), patch (JSON, merge and strategic merge), delete and deletecollection. Unknown fields are
dropped or refused as ``fieldValidation`` asks (``fields``). Pods and nodes go through the cluster's own
lifecycle (admission, graceful deletion, a node's VM and pods going with it), leases through its lease
checks; every write ends with a reconcile of the controllers."""

from __future__ import annotations

from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import Response

from simulator.cluster import Cluster
from simulator.controllers.common import JOBS, NODES, PODS, check_preconditions
from simulator.k8s.common import json_body, json_response, object_body, render, respond_object, selection
from simulator.k8s.errors import ApiError, bad_request, invalid
from simulator.k8s.fields import validate_fields
from simulator.k8s.patch import PatchError, json_merge_patch, json_patch, strategic_merge_patch
from simulator.k8s.paths import (
    ResourcePath,
    listed_namespace,
    method_not_allowed,
    namespace_of,
    object_name,
)

UNCONDITIONAL_UPDATE_FORBIDDEN = {"leases"}
# A delete answers with the object for these (a pod may still be terminating), else with a Status.
RETURN_DELETED_OBJECT = {"pods", "namespaces"}


async def create_object(cluster: Cluster, request: Request, target: ResourcePath) -> Response:
    body = await object_body(request)
    if target.subresource == "eviction":
        cluster.evict(namespace_of(target), object_name(target), body)
        cluster.reconcile()
        return json_response(
            {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}, 201
        )
    if target.name is not None or target.subresource is not None:
        raise method_not_allowed()
    rt = target.rt
    meta = body.setdefault("metadata", {})
    if rt.namespaced:
        if meta.get("namespace") and meta["namespace"] != target.namespace:
            raise bad_request(
                "the namespace of the provided object does not match the namespace sent on the request"
            )
        meta["namespace"] = target.namespace
    if body.get("kind") and body["kind"] != rt.kind:
        raise bad_request(f"the kind of the provided object ({body['kind']}) does not match {rt.kind}")
    warnings = validate_fields(_directive(request), "create", rt, body)
    if rt.plural == "leases":
        cluster.check_lease(body)
        _utc_microtimes(body)
    if request.query_params.get("dryRun"):
        return json_response(body, 201, warnings)
    if rt is PODS:
        obj = cluster.create_pod(body)
    elif rt is JOBS:
        obj = cluster.create_job(body)
    else:
        obj = cluster.store.create(rt, body)
    cluster.reconcile()
    return respond_object(cluster, request, rt, obj, 201, warnings)


async def update_object(cluster: Cluster, request: Request, target: ResourcePath) -> Response:
    name = object_name(target)
    body = await object_body(request)
    rt = target.rt
    meta = body.setdefault("metadata", {})
    if meta.get("name") != name:
        raise bad_request(
            f"the name of the object ({meta.get('name')}) does not match the name on the URL ({name})"
        )
    if rt.namespaced:
        meta["namespace"] = target.namespace
    warnings = validate_fields(_directive(request), "update", rt, body)
    rv = meta.get("resourceVersion")
    if not rv and rt.plural in UNCONDITIONAL_UPDATE_FORBIDDEN:
        raise invalid(
            rt.kind,
            name,
            "metadata.resourceVersion",
            "Invalid value: 0x0: must be specified for an update",
            rt.group,
        )
    if rt.plural == "leases":
        cluster.check_lease(body)
        _utc_microtimes(body)
    obj = cluster.store.update(rt, body, expect_rv=rv, status_only=target.subresource == "status")
    cluster.reconcile()
    return respond_object(cluster, request, rt, obj, headers=warnings)


async def patch_object(cluster: Cluster, request: Request, target: ResourcePath) -> Response:
    rt = target.rt
    name = object_name(target)
    current = cluster.store.must_get(rt, namespace_of(target), name)
    body = await json_body(request)
    ctype = request.headers.get("content-type", "").split(";")[0].strip()
    try:
        if ctype == "application/json-patch+json":
            if not isinstance(body, list):
                raise bad_request("a JSON patch must be a list of operations")
            patched = json_patch(current, body)
        elif ctype == "application/merge-patch+json":
            patched = json_merge_patch(current, _object(body))
        elif ctype == "application/strategic-merge-patch+json":
            patched = strategic_merge_patch(current, _object(body))
        else:
            raise ApiError(
                415,
                "UnsupportedMediaType",
                "the body of the request was in an unknown format - "
                "accepted media types include: application/json-patch+json, "
                "application/merge-patch+json, application/strategic-merge-patch+json",
            )
    except PatchError as exc:
        raise ApiError(422, "Invalid", str(exc)) from exc
    requested_rv = (
        _object(body).get("metadata", {}).get("resourceVersion") if isinstance(body, dict) else None
    )
    patched.setdefault("metadata", {})["name"] = name
    warnings = validate_fields(_directive(request), "patch", rt, patched, body)
    if rt.plural == "leases":
        cluster.check_lease(patched)
        _utc_microtimes(patched)
    patched["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
    obj = cluster.store.update(
        rt, patched, expect_rv=requested_rv, status_only=target.subresource == "status"
    )
    cluster.reconcile()
    return respond_object(cluster, request, rt, obj, headers=warnings)


async def delete_object(cluster: Cluster, request: Request, target: ResourcePath) -> Response:
    rt = target.rt
    name = object_name(target)
    grace, preconditions = await _delete_options(request)
    if rt is PODS:
        obj = cluster.delete_pod(namespace_of(target), name, grace, preconditions)
    elif rt is JOBS:
        obj = cluster.delete_job(namespace_of(target), name, await _propagation(request), preconditions)
    elif rt is NODES:  # the VM goes with it (scale-in, auto-repair, a spot eviction): its pods too
        obj = cluster.store.must_get(rt, "", name)
        check_preconditions(obj, preconditions, rt.plural)
        cluster.remove_node(name, cause="node deleted through the API", count_violations=False)
    else:
        current = cluster.store.must_get(rt, namespace_of(target), name)
        check_preconditions(current, preconditions, rt.plural)
        obj = cluster.store.remove(rt, namespace_of(target), name)
    cluster.reconcile()
    if rt.plural not in RETURN_DELETED_OBJECT:
        meta = obj["metadata"]
        return json_response(
            {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "details": {
                    "name": meta["name"],
                    "group": rt.group,
                    "kind": rt.plural,
                    "uid": meta["uid"],
                },
            }
        )
    return json_response(render(cluster, rt, obj))


async def delete_collection(cluster: Cluster, request: Request, target: ResourcePath) -> Response:
    rt = target.rt
    accept = selection(request, rt)
    grace, _ = await _delete_options(request)
    gone = []
    for obj in [o for o in cluster.store.list(rt, listed_namespace(target)) if accept(o)]:
        meta = obj["metadata"]
        if rt is PODS:
            gone.append(cluster.delete_pod(meta["namespace"], meta["name"], grace, None))
        else:
            gone.append(cluster.store.remove(rt, meta.get("namespace", ""), meta["name"]))
    cluster.reconcile()
    return json_response(
        {
            "kind": f"{rt.kind}List",
            "apiVersion": rt.api_version,
            "metadata": {"resourceVersion": str(cluster.store.rv)},
            "items": gone,
        }
    )


async def _delete_options(request: Request) -> tuple[int | None, dict | None]:
    body = await json_body(request) if await request.body() else {}
    body = _object(body)
    grace = body.get("gracePeriodSeconds")
    if request.query_params.get("gracePeriodSeconds") is not None:
        grace = int(request.query_params["gracePeriodSeconds"])
    return grace, body.get("preconditions")


async def _propagation(request: Request) -> str | None:
    """The propagationPolicy of a delete, from the query or the DeleteOptions body."""
    body = await json_body(request) if await request.body() else {}
    return request.query_params.get("propagationPolicy") or _object(body).get("propagationPolicy")


def _directive(request: Request) -> str | None:
    """The fieldValidation query parameter (kubectl sends Strict; unset means Warn)."""
    return request.query_params.get("fieldValidation")


def _object(body: dict | list) -> dict:
    if not isinstance(body, dict):
        raise bad_request("the patch must be a JSON object")
    return body


def _utc_microtimes(lease: dict) -> None:
    """A real server keeps a Lease's MicroTimes in UTC and writes them back with a "Z"."""
    spec = lease.get("spec") or {}
    for field in ("acquireTime", "renewTime"):
        value = spec.get(field)
        if isinstance(value, str) and not value.endswith("Z"):
            spec[field] = datetime.fromisoformat(value).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
