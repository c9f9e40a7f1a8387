"""The resource types the simulated API server serves, and their discovery documents."""

from __future__ import annotations

from dataclasses import dataclass, field

ALL_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


@dataclass(frozen=True)
class Subresource:
    name: str
    kind: str
    verbs: list[str]
    group: str = ""
    version: str = ""


@dataclass(frozen=True, eq=False)  # identity: each resource type exists once
class ResourceType:
    group: str
    version: str
    plural: str
    singular: str
    kind: str
    namespaced: bool
    short_names: list[str] = field(default_factory=list)
    verbs: list[str] = field(default_factory=lambda: list(ALL_VERBS))
    subresources: list[Subresource] = field(default_factory=list)
    field_selectors: frozenset[str] = frozenset({"metadata.name", "metadata.namespace"})
    # the top-level fields of the kind besides apiVersion, kind and metadata (for fieldValidation)
    fields: frozenset[str] = frozenset({"spec", "status"})

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def api_version(self) -> str:
        return self.group_version

    def subresource(self, name: str) -> Subresource | None:
        return next((s for s in self.subresources if s.name == name), None)


_STATUS = Subresource("status", "", ["get", "patch", "update"])
# Stored and served only: the simulator does not enforce RBAC (tests check the audit log against the roles).
_RBAC = "rbac.authorization.k8s.io"
_BINDING_FIELDS = frozenset({"roleRef", "subjects"})
_EVENT_FIELDS = frozenset(
    [
        "action",
        "count",
        "eventTime",
        "firstTimestamp",
        "involvedObject",
        "lastTimestamp",
        "message",
        "reason",
        "related",
        "reportingComponent",
        "reportingInstance",
        "series",
        "source",
        "type",
    ]
)

RESOURCE_TYPES: list[ResourceType] = [
    ResourceType(
        "",
        "v1",
        "namespaces",
        "namespace",
        "Namespace",
        False,
        ["ns"],
        ["create", "delete", "get", "list", "patch", "update", "watch"],
        [_STATUS],
        frozenset({"metadata.name", "status.phase"}),
    ),
    ResourceType(
        "",
        "v1",
        "nodes",
        "node",
        "Node",
        False,
        ["no"],
        subresources=[_STATUS],
        field_selectors=frozenset({"metadata.name", "spec.unschedulable"}),
    ),
    ResourceType(
        "",
        "v1",
        "pods",
        "pod",
        "Pod",
        True,
        ["po"],
        subresources=[
            _STATUS,
            Subresource("log", "Pod", ["get"]),
            Subresource("eviction", "Eviction", ["create"], "policy", "v1"),
        ],
        field_selectors=frozenset(
            {
                "metadata.name",
                "metadata.namespace",
                "spec.nodeName",
                "spec.restartPolicy",
                "spec.schedulerName",
                "spec.serviceAccountName",
                "spec.hostNetwork",
                "status.phase",
                "status.podIP",
                "status.nominatedNodeName",
            }
        ),
    ),
    ResourceType(
        "",
        "v1",
        "events",
        "event",
        "Event",
        True,
        ["ev"],
        field_selectors=frozenset(
            {
                "metadata.name",
                "metadata.namespace",
                "involvedObject.kind",
                "involvedObject.name",
                "involvedObject.namespace",
                "involvedObject.uid",
                "reason",
                "type",
            }
        ),
        fields=_EVENT_FIELDS,
    ),
    ResourceType(
        "apps", "v1", "deployments", "deployment", "Deployment", True, ["deploy"], subresources=[_STATUS]
    ),
    ResourceType(
        "apps", "v1", "replicasets", "replicaset", "ReplicaSet", True, ["rs"], subresources=[_STATUS]
    ),
    ResourceType("apps", "v1", "daemonsets", "daemonset", "DaemonSet", True, ["ds"], subresources=[_STATUS]),
    ResourceType(
        "policy",
        "v1",
        "poddisruptionbudgets",
        "poddisruptionbudget",
        "PodDisruptionBudget",
        True,
        ["pdb"],
        subresources=[_STATUS],
    ),
    ResourceType("coordination.k8s.io", "v1", "leases", "lease", "Lease", True, fields=frozenset({"spec"})),
    ResourceType(
        "batch",
        "v1",
        "jobs",
        "job",
        "Job",
        True,
        subresources=[_STATUS],
        field_selectors=frozenset({"metadata.name", "metadata.namespace", "status.successful"}),
    ),
    ResourceType(
        "",
        "v1",
        "serviceaccounts",
        "serviceaccount",
        "ServiceAccount",
        True,
        ["sa"],
        fields=frozenset({"automountServiceAccountToken", "imagePullSecrets", "secrets"}),
    ),
    ResourceType(
        "",
        "v1",
        "secrets",
        "secret",
        "Secret",
        True,
        field_selectors=frozenset({"metadata.name", "metadata.namespace", "type"}),
        fields=frozenset({"data", "immutable", "stringData", "type"}),
    ),
    ResourceType(
        "",
        "v1",
        "configmaps",
        "configmap",
        "ConfigMap",
        True,
        ["cm"],
        fields=frozenset({"binaryData", "data", "immutable"}),
    ),
    ResourceType(
        _RBAC,
        "v1",
        "clusterroles",
        "clusterrole",
        "ClusterRole",
        False,
        fields=frozenset({"aggregationRule", "rules"}),
    ),
    ResourceType(
        _RBAC,
        "v1",
        "clusterrolebindings",
        "clusterrolebinding",
        "ClusterRoleBinding",
        False,
        fields=_BINDING_FIELDS,
    ),
    ResourceType(_RBAC, "v1", "roles", "role", "Role", True, fields=frozenset({"rules"})),
    ResourceType(_RBAC, "v1", "rolebindings", "rolebinding", "RoleBinding", True, fields=_BINDING_FIELDS),
]

_BY_PATH = {(r.group, r.version, r.plural): r for r in RESOURCE_TYPES}
_BY_KIND = {r.kind: r for r in RESOURCE_TYPES}


def resource_type(group: str, version: str, plural: str) -> ResourceType | None:
    return _BY_PATH.get((group, version, plural))


def by_kind(kind: str) -> ResourceType:
    return _BY_KIND[kind]


def groups() -> dict[str, list[str]]:
    """Map of API group name to its versions (core group excluded)."""
    out: dict[str, list[str]] = {}
    for r in RESOURCE_TYPES:
        if r.group and r.version not in out.setdefault(r.group, []):
            out[r.group].append(r.version)
    return out


def api_versions() -> dict:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}],
    }


def _group_doc(name: str, versions: list[str]) -> dict:
    gvs = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
    return {"name": name, "versions": gvs, "preferredVersion": gvs[0]}


def api_group_list() -> dict:
    return {
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [_group_doc(g, vs) for g, vs in groups().items()],
    }


def api_group(name: str) -> dict | None:
    versions = groups().get(name)
    if versions is None:
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_group_doc(name, versions)}


def api_resource_list(group: str, version: str) -> dict | None:
    types = [r for r in RESOURCE_TYPES if r.group == group and r.version == version]
    if not types:
        return None
    resources = []
    for r in types:
        resources.append(
            {
                "name": r.plural,
                "singularName": r.singular,
                "namespaced": r.namespaced,
                "kind": r.kind,
                "verbs": r.verbs,
                "shortNames": r.short_names,
            }
        )
        for sub in r.subresources:
            entry = {
                "name": f"{r.plural}/{sub.name}",
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": sub.kind or r.kind,
                "verbs": sub.verbs,
            }
            if sub.group:
                entry.update(group=sub.group, version=sub.version)
            resources.append(entry)
    gv = f"{group}/{version}" if group else version
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}
