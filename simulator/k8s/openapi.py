"""The OpenAPI v3 documents of the simulated API, generated from the resource registry.

kubectl's default ``--validate=strict`` first asks ``/openapi/v3`` whether the PATCH of a kind takes
the ``fieldValidation`` query parameter (cli-runtime's ``queryParamVerifierV3``). When it does, kubectl
sends ``fieldValidation=Strict`` and leaves validation to the server. So each group version's document
holds the paths and operations of its kinds with their query parameters, and no schemas. kubectl's
apply then finds no schema for a kind, tries ``/openapi/v2`` (a 404 here) and builds its patches from
its own built-in types. The simulator takes no apply patch (server-side apply), so none is listed.
"""

from __future__ import annotations

import hashlib
import json
from functools import cache

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from simulator.k8s.resources import RESOURCE_TYPES, ResourceType

PREFIX = "/openapi/v3"
# what the simulator's PATCH accepts (kubectl checks the strategic merge patch is among them)
PATCH_MEDIA_TYPES = (
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
)
_WRITE_PARAMETERS = {
    "dryRun": "When present, the changes are not persisted.",
    "fieldManager": "The name of the actor or entity making the changes.",
    "fieldValidation": "Ignore, Warn (the default) or Strict: how to treat unknown fields in the object.",
}
_LIST_PARAMETERS = {
    "labelSelector": "A selector on the objects' labels.",
    "fieldSelector": "A selector on the objects' fields.",
    "limit": "The maximum number of objects in one response.",
    "continue": "The continue token of the previous response.",
    "resourceVersion": "Where a watch starts, or how fresh a list must be.",
    "watch": "Watch for changes instead of listing.",
}
_QUERY_PARAMETERS = {
    "create": _WRITE_PARAMETERS,
    "update": _WRITE_PARAMETERS,
    "patch": _WRITE_PARAMETERS,
    "list": _LIST_PARAMETERS,
    "deletecollection": _LIST_PARAMETERS,
}
# the API server names the actions of create and update by their HTTP methods
_ACTIONS = {"create": "post", "update": "put"}


def openapi_response(request: Request, kubernetes_version: str) -> Response | None:
    """The index at ``/openapi/v3`` or one group version's document; None for any other path."""
    path = request.url.path.rstrip("/")
    if path == PREFIX:
        urls = {gv: _url(gv, _document(gv, kubernetes_version)[1]) for gv in _group_version_paths()}
        index = {"paths": {gv: {"serverRelativeURL": url} for gv, url in urls.items()}}
        return Response(
            json.dumps(index), media_type="application/json", headers={"Cache-Control": "no-cache"}
        )
    gv_path = path.removeprefix(PREFIX + "/")
    if not path.startswith(PREFIX + "/") or gv_path not in _group_version_paths():
        return None
    body, digest = _document(gv_path, kubernetes_version)
    asked = request.query_params.get("hash")
    if asked and asked != digest:  # an old hash: the current document is elsewhere, as kube-openapi answers
        return RedirectResponse(_url(gv_path, digest), status_code=301)
    # a URL with the hash never changes, so clients may keep it for good
    cache_control = "public, immutable, max-age=31536000" if asked else "no-cache"
    return Response(
        body, media_type="application/json", headers={"ETag": f'"{digest}"', "Cache-Control": cache_control}
    )


def _url(gv_path: str, digest: str) -> str:
    return f"{PREFIX}/{gv_path}?hash={digest}"


def _api_path(rt: ResourceType) -> str:
    """``api/v1`` for the core group, ``apis/<group>/<version>`` for the others (no leading slash)."""
    return f"apis/{rt.group}/{rt.version}" if rt.group else f"api/{rt.version}"


@cache
def _group_version_paths() -> dict[str, list[ResourceType]]:
    out: dict[str, list[ResourceType]] = {}
    for rt in RESOURCE_TYPES:
        out.setdefault(_api_path(rt), []).append(rt)
    return out


@cache
def _document(gv_path: str, kubernetes_version: str) -> tuple[bytes, str]:
    """One group version's document and its hash, which the index puts in its URL."""
    paths: dict[str, dict] = {}
    for rt in _group_version_paths()[gv_path]:
        paths.update(_resource_paths(rt))
    document = {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": f"v{kubernetes_version}"},
        "paths": paths,
        "components": {"schemas": {}},
    }
    body = json.dumps(document, separators=(",", ":")).encode()
    return body, hashlib.sha512(body).hexdigest().upper()


def _resource_paths(rt: ResourceType) -> dict[str, dict]:
    """The collection and object paths of one resource, with an operation for each verb it serves."""
    base = f"/{_api_path(rt)}"
    scoped = f"{base}/namespaces/{{namespace}}/{rt.plural}" if rt.namespaced else f"{base}/{rt.plural}"
    collection_ops = {"get": "list", "post": "create", "delete": "deletecollection"}
    object_ops = {"get": "get", "put": "update", "patch": "patch", "delete": "delete"}
    paths = {
        scoped: _path_item(rt, collection_ops, ["namespace"] if rt.namespaced else []),
        f"{scoped}/{{name}}": _path_item(
            rt, object_ops, ["namespace", "name"] if rt.namespaced else ["name"]
        ),
    }
    if rt.namespaced and "list" in rt.verbs:  # the list across all namespaces
        paths[f"{base}/{rt.plural}"] = _path_item(rt, {"get": "list"}, [])
    return {path: item for path, item in paths.items() if set(item) - {"parameters"}}


def _path_item(rt: ResourceType, operations: dict[str, str], path_parameters: list[str]) -> dict:
    item: dict = {method: _operation(rt, verb) for method, verb in operations.items() if verb in rt.verbs}
    if path_parameters:
        item["parameters"] = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in path_parameters
        ]
    return item


def _operation(rt: ResourceType, verb: str) -> dict:
    parameters = _QUERY_PARAMETERS.get(verb, {})
    operation: dict = {
        "description": f"{verb} {rt.kind}",
        "parameters": [
            {"name": name, "in": "query", "description": text, "schema": {"type": "string"}}
            for name, text in parameters.items()
        ],
        "responses": {"200": {"description": "OK"}},
        "x-kubernetes-action": _ACTIONS.get(verb, verb),
        "x-kubernetes-group-version-kind": {"group": rt.group, "version": rt.version, "kind": rt.kind},
    }
    media_types = PATCH_MEDIA_TYPES if verb == "patch" else ("application/json",)
    if verb in ("create", "update", "patch"):
        content = {media: {"schema": {"type": "object"}} for media in media_types}
        operation["requestBody"] = {"required": True, "content": content}
    return operation
