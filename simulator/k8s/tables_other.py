"""The server-side tables of every kind but nodes and pods, following the real API server's printers:
the workloads (deployments, replicasets and daemonsets, with their pod template's containers, images
and selector under ``-o wide``), pod disruption budgets, leases, namespaces, events, and the RBAC kinds
(roles show when they were created, bindings the role they grant and, under ``-o wide``, their users,
groups and ServiceAccounts)."""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

from simulator.k8s.selectors import SelectorError, selector_from_dict
from simulator.k8s.tables_common import (
    AGE_COLUMN,
    NAME_COLUMN,
    Object,
    Row,
    age_of,
    column,
    get_path,
    name_of,
    since,
)

_TEMPLATE_COLUMNS = [
    column("Containers", "string", "Names of the containers in the pod template.", priority=1),
    column("Images", "string", "Images of the containers in the pod template.", priority=1),
    column("Selector", "string", "Label selector for the pods this object manages.", priority=1),
]


def _format_selector(selector: Mapping[str, Any] | None) -> str:
    """A metav1.LabelSelector as kubectl prints it: `app=web`, `<none>` when empty, `<error>` if invalid."""
    try:
        return str(selector_from_dict(selector)) or "<none>"
    except SelectorError:
        return "<error>"


def _template_cells(obj: Object) -> Row:
    """CONTAINERS, IMAGES and SELECTOR for an object with a pod template."""
    containers = get_path(obj, "spec", "template", "spec", "containers") or []
    return [
        ",".join(c.get("name", "") for c in containers),
        ",".join(c.get("image", "") for c in containers),
        _format_selector(get_path(obj, "spec", "selector")),
    ]


def _desired_replicas(obj: Object) -> int:
    """spec.replicas, which the API server defaults to 1."""
    replicas = get_path(obj, "spec", "replicas")
    return 1 if replicas is None else replicas


DEPLOYMENT_COLUMNS = [
    NAME_COLUMN,
    column("Ready", "string", "Ready replicas out of desired replicas."),
    column("Up-to-date", "string", "Replicas running the latest pod template."),
    column("Available", "string", "Replicas available to serve."),
    AGE_COLUMN,
    *_TEMPLATE_COLUMNS,
]


def deployment_row(deployment: Object, now: datetime.datetime) -> Row:
    status = deployment.get("status") or {}
    return [
        name_of(deployment),
        f"{status.get('readyReplicas', 0)}/{_desired_replicas(deployment)}",
        status.get("updatedReplicas", 0),
        status.get("availableReplicas", 0),
        age_of(deployment, now),
        *_template_cells(deployment),
    ]


REPLICASET_COLUMNS = [
    NAME_COLUMN,
    column("Desired", "integer", "Replicas wanted."),
    column("Current", "integer", "Replicas that exist."),
    column("Ready", "integer", "Replicas that are ready."),
    AGE_COLUMN,
    *_TEMPLATE_COLUMNS,
]


def replicaset_row(replicaset: Object, now: datetime.datetime) -> Row:
    status = replicaset.get("status") or {}
    return [
        name_of(replicaset),
        _desired_replicas(replicaset),
        status.get("replicas", 0),
        status.get("readyReplicas", 0),
        age_of(replicaset, now),
        *_template_cells(replicaset),
    ]


DAEMONSET_COLUMNS = [
    NAME_COLUMN,
    column("Desired", "integer", "Nodes that should run the daemon pod."),
    column("Current", "integer", "Nodes running at least one daemon pod."),
    column("Ready", "integer", "Nodes whose daemon pod is ready."),
    column("Up-to-date", "integer", "Nodes running the latest daemon pod template."),
    column("Available", "integer", "Nodes whose daemon pod is available."),
    column("Node Selector", "string", "Node labels a node needs to run the daemon pod."),
    AGE_COLUMN,
    *_TEMPLATE_COLUMNS,
]


def daemonset_row(daemonset: Object, now: datetime.datetime) -> Row:
    status = daemonset.get("status") or {}
    node_selector = get_path(daemonset, "spec", "template", "spec", "nodeSelector") or {}
    return [
        name_of(daemonset),
        status.get("desiredNumberScheduled", 0),
        status.get("currentNumberScheduled", 0),
        status.get("numberReady", 0),
        status.get("updatedNumberScheduled", 0),
        status.get("numberAvailable", 0),
        ",".join(f"{key}={value}" for key, value in sorted(node_selector.items())) or "<none>",
        age_of(daemonset, now),
        *_template_cells(daemonset),
    ]


# --- other resources ------------------------------------------------------------------------------

PDB_COLUMNS = [
    NAME_COLUMN,
    column("Min Available", "string", "Pods that must stay available."),
    column("Max Unavailable", "string", "Pods that may be unavailable."),
    column("Allowed Disruptions", "integer", "Pods that may be disrupted right now."),
    AGE_COLUMN,
]


def pdb_row(pdb: Object, now: datetime.datetime) -> Row:
    spec = pdb.get("spec") or {}
    min_available, max_unavailable = spec.get("minAvailable"), spec.get("maxUnavailable")
    return [
        name_of(pdb),
        "N/A" if min_available is None else str(min_available),
        "N/A" if max_unavailable is None else str(max_unavailable),
        get_path(pdb, "status", "disruptionsAllowed") or 0,
        age_of(pdb, now),
    ]


LEASE_COLUMNS = [NAME_COLUMN, column("Holder", "string", "Identity of the current lease holder."), AGE_COLUMN]


def lease_row(lease: Object, now: datetime.datetime) -> Row:
    return [name_of(lease), get_path(lease, "spec", "holderIdentity") or "", age_of(lease, now)]


NAMESPACE_COLUMNS = [NAME_COLUMN, column("Status", "string", "Phase of the namespace."), AGE_COLUMN]


def namespace_row(namespace: Object, now: datetime.datetime) -> Row:
    return [name_of(namespace), get_path(namespace, "status", "phase") or "", age_of(namespace, now)]


EVENT_COLUMNS = [
    column("Last Seen", "string", "Time since the event was last observed."),
    column("Type", "string", "Normal or Warning."),
    column("Reason", "string", "Short machine-readable reason."),
    column("Object", "string", "Object the event is about, as kind/name."),
    column("Subobject", "string", "Field path within the object.", priority=1),
    column("Source", "string", "Component, and host, that reported the event.", priority=1),
    column("Message", "string", "Human-readable description."),
    column("First Seen", "string", "Time since the event was first observed.", priority=1),
    column("Count", "string", "Times the event has been observed.", priority=1),
    column("Name", "string", "Name of the event object.", priority=1, format_="name"),
]


def event_row(event: Object, now: datetime.datetime) -> Row:
    first_seen = since(event.get("firstTimestamp") or event.get("eventTime"), now)
    last_seen = since(event["lastTimestamp"], now) if event.get("lastTimestamp") else first_seen
    count = event.get("count") or 1
    series = event.get("series")
    if series:
        last_seen = since(series.get("lastObservedTime"), now)
        count = series.get("count", 0)
    involved = event.get("involvedObject") or {}
    kind = (involved.get("kind") or "").lower()
    target = f"{kind}/{involved['name']}" if involved.get("name") else kind
    source = event.get("source") or {}
    component = source.get("component") or event.get("reportingComponent") or ""
    host = source.get("host") or event.get("reportingInstance") or ""
    return [
        last_seen,
        event.get("type", ""),
        event.get("reason", ""),
        target,
        involved.get("fieldPath", ""),
        f"{component}, {host}" if host else component,
        (event.get("message") or "").strip(),
        first_seen,
        count,
        name_of(event),
    ]


# ---- RBAC ----------------------------------------------------------------------------------
ROLE_COLUMNS = [NAME_COLUMN, column("Created At", "date", "Time at which the object was created.")]


def role_row(role: Object, now: datetime.datetime) -> Row:
    """Roles and ClusterRoles: the creation time in RFC 3339 (UTC), not an age."""
    return [name_of(role), get_path(role, "metadata", "creationTimestamp") or ""]


BINDING_COLUMNS = [
    NAME_COLUMN,
    column("Role", "string", "The role the binding grants, as kind/name."),
    AGE_COLUMN,
    column("Users", "string", "Users the binding applies to.", priority=1),
    column("Groups", "string", "Groups the binding applies to.", priority=1),
    column("ServiceAccounts", "string", "ServiceAccounts the binding applies to.", priority=1),
]


def binding_row(binding: Object, now: datetime.datetime) -> Row:
    """RoleBindings and ClusterRoleBindings; a ServiceAccount subject reads namespace/name."""
    role_ref = binding.get("roleRef") or {}
    names: dict[str, list[str]] = {"User": [], "Group": [], "ServiceAccount": []}
    for subject in binding.get("subjects") or []:
        name = subject.get("name", "")
        if subject.get("kind") == "ServiceAccount" and subject.get("namespace"):
            name = f"{subject['namespace']}/{name}"
        names.get(subject.get("kind", ""), []).append(name)
    return [
        name_of(binding),
        f"{role_ref.get('kind', '')}/{role_ref.get('name', '')}",
        age_of(binding, now),
        *(", ".join(names[kind]) for kind in ("User", "Group", "ServiceAccount")),
    ]
