"""What a Kubernetes API URL names, and which verb a request on it is.

``parse_resource_path`` reads a resource URL (group, version, namespace, name, subresource) into a
``ResourcePath``; ``audit_verb`` names the verb of a request as the audit log does, ``allowed_verbs`` the
verbs a target serves, ``object_name`` and ``namespace_of`` the one object a verb acts on, and
``listed_namespace`` the namespace a collection URL lists. Discovery paths, the simulator's ``/_sim``
endpoints and unknown resources name no target.
"""

from __future__ import annotations

from dataclasses import dataclass

from simulator.k8s import resources
from simulator.k8s.errors import ApiError
from simulator.k8s.resources import ResourceType

MUTATING = {"create", "update", "patch", "delete", "deletecollection"}


@dataclass
class ResourcePath:
    """What a resource URL names."""

    rt: ResourceType
    namespace: str | None
    name: str | None
    subresource: str | None


def parse_resource_path(path: str) -> ResourcePath | None:
    parts = [p for p in path.split("/") if p]
    if parts[:2] == ["api", "v1"]:
        group, version, rest = "", "v1", parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    if not rest:
        return None
    namespace = None
    if rest[0] == "namespaces" and len(rest) >= 3:
        rt = resources.resource_type(group, version, rest[2])
        if rt is not None and rt.namespaced:
            namespace, rest = rest[1], rest[2:]
    rt = resources.resource_type(group, version, rest[0])
    if rt is None or len(rest) > 3:
        return None
    name = rest[1] if len(rest) > 1 else None
    sub = rest[2] if len(rest) > 2 else None
    if sub is not None and rt.subresource(sub) is None:
        return None
    return ResourcePath(rt, namespace, name, sub)


def audit_verb(method: str, target: ResourcePath | None, watch: bool) -> str:
    if method == "GET":
        if target is not None and target.name is None:
            return "watch" if watch else "list"
        return "get"
    return {
        "POST": "create",
        "PUT": "update",
        "PATCH": "patch",
        "DELETE": "delete" if target is None or target.name else "deletecollection",
    }.get(method, method.lower())


def allowed_verbs(target: ResourcePath) -> list[str]:
    """The verbs the resource, or the subresource the URL names, serves."""
    if target.subresource is None:
        return target.rt.verbs
    sub = target.rt.subresource(target.subresource)
    assert sub is not None, "parse_resource_path accepts known subresources only"
    return sub.verbs


def method_not_allowed() -> ApiError:
    return ApiError(
        405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
    )


def object_name(target: ResourcePath) -> str:
    """The object a verb on one object acts on; a collection URL does not serve it (405, as a real server)."""
    if target.name is None:
        raise method_not_allowed()
    return target.name


def namespace_of(target: ResourcePath) -> str:
    """The namespace key of the object a target names ("" for a cluster-scoped resource)."""
    return (target.namespace or "") if target.rt.namespaced else ""


def listed_namespace(target: ResourcePath) -> str | None:
    """The namespace a collection URL lists (None: all of them, or a cluster-scoped resource)."""
    return target.namespace if target.rt.namespaced else None
