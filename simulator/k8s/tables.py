"""Server-side tables (`meta.k8s.io/v1` Table) for `kubectl get`.

kubectl asks for `application/json;as=Table;v=v1;g=meta.k8s.io` and prints
whatever columns the server sends, so the columns and cell texts here follow
the real API server's printers. The server always sends every column;
kubectl shows the priority-1 ones only with `-o wide`.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from simulator.k8s.selectors import SelectorError, selector_from_dict

Row = list[Any]
Object = Mapping[str, Any]

# Values of the `includeObject` query parameter. The API server spells the
# default "Metadata" and also takes ""; "PartialObjectMetadata" is an alias.
_INCLUDE_OBJECT_VALUES = ("None", "Object", "Metadata", "PartialObjectMetadata", "")


def human_duration(elapsed: datetime.timedelta) -> str:
    """Format a duration the way kubectl's AGE column does: `45s`, `3m20s`, `2h5m`, `3d4h`, `5y`.

    Mirrors k8s.io/apimachinery/pkg/util/duration.HumanDuration, which keeps
    about two significant units and tolerates up to two seconds of clock skew.
    """
    seconds = int(elapsed.total_seconds())
    if seconds < -1:
        return "<invalid>"
    if seconds < 0:
        return "0s"
    if seconds < 120:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 10:
        return f"{minutes}m{seconds % 60}s" if seconds % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    days = hours // 24
    if hours < 24 * 8:
        return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"
    if days < 365 * 2:
        return f"{days}d"
    if days < 365 * 8:
        return f"{days // 365}y{days % 365}d" if days % 365 else f"{days // 365}y"
    return f"{days // 365}y"


def _parse_time(value: Any) -> datetime.datetime | None:
    """Read an RFC 3339 timestamp such as `2026-01-02T03:04:05Z`; None when absent or unreadable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.UTC)


def _since(value: Any, now: datetime.datetime) -> str:
    """Time elapsed from a timestamp to `now`, or `<unknown>` without a timestamp."""
    moment = _parse_time(value)
    if moment is None:
        return "<unknown>"
    return human_duration(now - moment)


def _get(obj: Any, *path: str) -> Any:
    """Follow nested keys, giving None as soon as one is missing."""
    for key in path:
        obj = obj.get(key) if isinstance(obj, Mapping) else None
    return obj


def _column(name: str, type_: str, description: str, priority: int = 0, format_: str = "") -> dict[str, Any]:
    return {"name": name, "type": type_, "format": format_, "description": description, "priority": priority}


_NAME = _column("Name", "string", "Name of the object, unique within its namespace.", format_="name")
_AGE = _column("Age", "string", "Time since the object was created (metadata.creationTimestamp).")


def _name(obj: Object) -> str:
    return _get(obj, "metadata", "name") or ""


def _age(obj: Object, now: datetime.datetime) -> str:
    return _since(_get(obj, "metadata", "creationTimestamp"), now)


# --- nodes ----------------------------------------------------------------------------------------

_NODE_COLUMNS = [
    _NAME,
    _column("Status", "string", "Readiness of the node, and whether it accepts new pods."),
    _column("Roles", "string", "Roles of the node, from its node-role labels."),
    _AGE,
    _column("Version", "string", "Kubelet version reported by the node."),
    _column("Internal-IP", "string", "First InternalIP address of the node.", priority=1),
    _column("External-IP", "string", "First ExternalIP address of the node.", priority=1),
    _column("OS-Image", "string", "Operating system image reported by the node.", priority=1),
    _column("Kernel-Version", "string", "Kernel version reported by the node.", priority=1),
    _column("Container-Runtime", "string", "Container runtime and version reported by the node.", priority=1),
]


def _condition(obj: Object, condition_type: str) -> Mapping[str, Any] | None:
    """The status condition of the given type, or None."""
    conditions = _get(obj, "status", "conditions") or []
    return next((c for c in conditions if c.get("type") == condition_type), None)


def node_status(node: Object) -> str:
    """kubectl's node STATUS: `Ready`, `NotReady` or `Unknown`, plus `,SchedulingDisabled` when cordoned."""
    ready = _condition(node, "Ready")
    status = "Unknown" if ready is None else "Ready" if ready.get("status") == "True" else "NotReady"
    if _get(node, "spec", "unschedulable"):
        status += ",SchedulingDisabled"
    return status


def _node_roles(node: Object) -> str:
    """Roles from `node-role.kubernetes.io/<role>` label keys and the `kubernetes.io/role` label value."""
    roles = set()
    for key, value in (_get(node, "metadata", "labels") or {}).items():
        if key.startswith("node-role.kubernetes.io/"):
            roles.add(key.removeprefix("node-role.kubernetes.io/"))
        elif key == "kubernetes.io/role":
            roles.add(value)
    return ",".join(sorted(roles - {""})) or "<none>"


def _node_address(node: Object, address_type: str) -> str:
    addresses = _get(node, "status", "addresses") or []
    return next((a.get("address", "") for a in addresses if a.get("type") == address_type), "<none>")


def _node_row(node: Object, now: datetime.datetime) -> Row:
    info = _get(node, "status", "nodeInfo") or {}
    return [
        _name(node),
        node_status(node),
        _node_roles(node),
        _age(node, now),
        info.get("kubeletVersion", ""),
        _node_address(node, "InternalIP"),
        _node_address(node, "ExternalIP"),
        info.get("osImage") or "<unknown>",
        info.get("kernelVersion") or "<unknown>",
        info.get("containerRuntimeVersion") or "<unknown>",
    ]


# --- pods -----------------------------------------------------------------------------------------

_POD_COLUMNS = [
    _NAME,
    _column("Ready", "string", "Ready containers out of all containers in the pod."),
    _column("Status", "string", "Aggregate status of the pod and its containers."),
    _column("Restarts", "string", "Container restarts, and how long ago the latest one was."),
    _AGE,
    _column("IP", "string", "IP address allocated to the pod.", priority=1),
    _column("Node", "string", "Node the pod is bound to.", priority=1),
    _column("Nominated Node", "string", "Node nominated for the pod by preemption.", priority=1),
    _column("Readiness Gates", "string", "Readiness gates that are true, out of all gates.", priority=1),
]


def _terminated_reason(terminated: Mapping[str, Any], prefix: str = "") -> str:
    """A terminated container's reason, or `Signal:N` / `ExitCode:N` when it gave none."""
    if terminated.get("reason"):
        return prefix + terminated["reason"]
    if terminated.get("signal"):
        return f"{prefix}Signal:{terminated['signal']}"
    return f"{prefix}ExitCode:{terminated.get('exitCode', 0)}"


def _last_restart(statuses: list[Mapping[str, Any]]) -> datetime.datetime | None:
    """The latest time any of these containers last finished before restarting."""
    times = [_parse_time(_get(status, "lastState", "terminated", "finishedAt")) for status in statuses]
    return max((moment for moment in times if moment), default=None)


class PodSummary(NamedTuple):
    """What kubectl shows in a pod's READY (`ready/total`), STATUS and RESTARTS columns."""

    ready: int
    total: int
    status: str
    restarts: int
    last_restart: datetime.datetime | None


def pod_status(pod: Object) -> PodSummary:
    """Summarise a pod for kubectl's READY, STATUS and RESTARTS columns.

    Follows the API server's pod printer: a waiting or failed init container
    shows as `Init:…`, a container's waiting or terminated reason (e.g.
    `ContainerCreating`, `CrashLoopBackOff`, `Completed`, `Error`) overrides the
    phase, and a pod being deleted shows `Terminating`.
    """
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    init_specs = {c.get("name"): c for c in spec.get("initContainers") or []}
    sidecars = {name for name, c in init_specs.items() if c.get("restartPolicy") == "Always"}
    total = len(spec.get("containers") or []) + len(sidecars)
    phase = status.get("phase", "")
    reason = status.get("reason") or phase
    if (_condition(pod, "PodScheduled") or {}).get("reason") == "SchedulingGated":
        reason = "SchedulingGated"

    # Restarts count only the init containers walked past before the first unfinished one.
    walked_init, ready, init_reason = _walk_init_containers(
        status.get("initContainerStatuses") or [], sidecars, len(init_specs)
    )
    restarted = walked_init
    if init_reason is not None:
        reason = init_reason
    if init_reason is None or (_condition(pod, "Initialized") or {}).get("status") == "True":
        container_statuses = status.get("containerStatuses") or []
        restarted = [s for s in walked_init if s.get("name") in sidecars] + container_statuses
        reason, ready_containers, running = _walk_containers(container_statuses, reason)
        ready += ready_containers
        if reason == "Completed" and running:
            pod_ready = (_condition(pod, "Ready") or {}).get("status") == "True"
            reason = "Running" if pod_ready else "NotReady"

    if _get(pod, "metadata", "deletionTimestamp"):
        reason = _deleted_reason(status, phase, reason)
    restarts = sum(container.get("restartCount", 0) for container in restarted)
    return PodSummary(ready, total, reason, restarts, _last_restart(restarted))


def _walk_init_containers(
    statuses: list[Mapping[str, Any]], sidecars: set[str], init_count: int
) -> tuple[list[Mapping[str, Any]], int, str | None]:
    """Walk the init containers up to the first unfinished one (a started sidecar counts as finished).

    Returns the containers walked past (that one included), how many of the started sidecars among
    them are ready, and the `Init:…` reason of the unfinished one, or None when there is none.
    """
    walked: list[Mapping[str, Any]] = []
    ready = 0
    for index, container in enumerate(statuses):
        walked.append(container)
        terminated = (container.get("state") or {}).get("terminated")
        if terminated is not None and terminated.get("exitCode", 0) == 0:
            continue
        if container.get("name") in sidecars and container.get("started"):
            ready += 1 if container.get("ready") else 0
            continue
        return walked, ready, _init_reason(container, index, init_count)
    return walked, ready, None


def _init_reason(container: Mapping[str, Any], index: int, init_count: int) -> str:
    """The STATUS of a pod held up by this init container: its failure, its waiting reason or `Init:i/n`."""
    state = container.get("state") or {}
    terminated, waiting = state.get("terminated"), state.get("waiting")
    if terminated is not None:
        return _terminated_reason(terminated, "Init:")
    if waiting and waiting.get("reason") and waiting["reason"] != "PodInitializing":
        return "Init:" + waiting["reason"]
    return f"Init:{index}/{init_count}"


def _walk_containers(statuses: list[Mapping[str, Any]], reason: str) -> tuple[str, int, bool]:
    """Walk the app containers from the last to the first, as the pod printer does.

    Returns the pod's reason (the first container with a waiting or terminated reason, else
    ``reason``), how many containers are ready and running, and whether any of them is.
    """
    ready, running = 0, False
    for container in reversed(statuses):
        state = container.get("state") or {}
        terminated, waiting = state.get("terminated"), state.get("waiting")
        if waiting and waiting.get("reason"):
            reason = waiting["reason"]
        elif terminated is not None:
            reason = _terminated_reason(terminated)
        elif container.get("ready") and state.get("running") is not None:
            running = True
            ready += 1
    return reason, ready, running


def _deleted_reason(status: Mapping[str, Any], phase: str, reason: str) -> str:
    """The STATUS of a pod being deleted: `Unknown` on a lost node, `Terminating` unless it already ended."""
    if status.get("reason") == "NodeLost":
        return "Unknown"
    if phase not in ("Succeeded", "Failed"):
        return "Terminating"
    return reason


def _readiness_gates(pod: Object) -> str:
    gates = _get(pod, "spec", "readinessGates") or []
    if not gates:
        return "<none>"
    conditions = {c.get("type"): c.get("status") for c in _get(pod, "status", "conditions") or []}
    passing = sum(1 for gate in gates if conditions.get(gate.get("conditionType")) == "True")
    return f"{passing}/{len(gates)}"


def _pod_row(pod: Object, now: datetime.datetime) -> Row:
    summary = pod_status(pod)
    restarts = str(summary.restarts)
    if summary.restarts and summary.last_restart:
        restarts = f"{summary.restarts} ({human_duration(now - summary.last_restart)} ago)"
    pod_ips = _get(pod, "status", "podIPs") or []
    pod_ip = (pod_ips[0].get("ip") if pod_ips else None) or _get(pod, "status", "podIP")
    return [
        _name(pod),
        f"{summary.ready}/{summary.total}",
        summary.status,
        restarts,
        _age(pod, now),
        pod_ip or "<none>",
        _get(pod, "spec", "nodeName") or "<none>",
        _get(pod, "status", "nominatedNodeName") or "<none>",
        _readiness_gates(pod),
    ]


# --- workloads ------------------------------------------------------------------------------------

_TEMPLATE_COLUMNS = [
    _column("Containers", "string", "Names of the containers in the pod template.", priority=1),
    _column("Images", "string", "Images of the containers in the pod template.", priority=1),
    _column("Selector", "string", "Label selector for the pods this object manages.", priority=1),
]


def _format_selector(selector: Mapping[str, Any] | None) -> str:
    """A metav1.LabelSelector as kubectl prints it: `app=web`, `<none>` when empty, `<error>` if invalid."""
    try:
        return str(selector_from_dict(selector)) or "<none>"
    except SelectorError:
        return "<error>"


def _template_cells(obj: Object) -> Row:
    """CONTAINERS, IMAGES and SELECTOR for an object with a pod template."""
    containers = _get(obj, "spec", "template", "spec", "containers") or []
    return [
        ",".join(c.get("name", "") for c in containers),
        ",".join(c.get("image", "") for c in containers),
        _format_selector(_get(obj, "spec", "selector")),
    ]


def _desired_replicas(obj: Object) -> int:
    """spec.replicas, which the API server defaults to 1."""
    replicas = _get(obj, "spec", "replicas")
    return 1 if replicas is None else replicas


_DEPLOYMENT_COLUMNS = [
    _NAME,
    _column("Ready", "string", "Ready replicas out of desired replicas."),
    _column("Up-to-date", "string", "Replicas running the latest pod template."),
    _column("Available", "string", "Replicas available to serve."),
    _AGE,
    *_TEMPLATE_COLUMNS,
]


def _deployment_row(deployment: Object, now: datetime.datetime) -> Row:
    status = deployment.get("status") or {}
    return [
        _name(deployment),
        f"{status.get('readyReplicas', 0)}/{_desired_replicas(deployment)}",
        status.get("updatedReplicas", 0),
        status.get("availableReplicas", 0),
        _age(deployment, now),
        *_template_cells(deployment),
    ]


_REPLICASET_COLUMNS = [
    _NAME,
    _column("Desired", "integer", "Replicas wanted."),
    _column("Current", "integer", "Replicas that exist."),
    _column("Ready", "integer", "Replicas that are ready."),
    _AGE,
    *_TEMPLATE_COLUMNS,
]


def _replicaset_row(replicaset: Object, now: datetime.datetime) -> Row:
    status = replicaset.get("status") or {}
    return [
        _name(replicaset),
        _desired_replicas(replicaset),
        status.get("replicas", 0),
        status.get("readyReplicas", 0),
        _age(replicaset, now),
        *_template_cells(replicaset),
    ]


_DAEMONSET_COLUMNS = [
    _NAME,
    _column("Desired", "integer", "Nodes that should run the daemon pod."),
    _column("Current", "integer", "Nodes running at least one daemon pod."),
    _column("Ready", "integer", "Nodes whose daemon pod is ready."),
    _column("Up-to-date", "integer", "Nodes running the latest daemon pod template."),
    _column("Available", "integer", "Nodes whose daemon pod is available."),
    _column("Node Selector", "string", "Node labels a node needs to run the daemon pod."),
    _AGE,
    *_TEMPLATE_COLUMNS,
]


def _daemonset_row(daemonset: Object, now: datetime.datetime) -> Row:
    status = daemonset.get("status") or {}
    node_selector = _get(daemonset, "spec", "template", "spec", "nodeSelector") or {}
    return [
        _name(daemonset),
        status.get("desiredNumberScheduled", 0),
        status.get("currentNumberScheduled", 0),
        status.get("numberReady", 0),
        status.get("updatedNumberScheduled", 0),
        status.get("numberAvailable", 0),
        ",".join(f"{key}={value}" for key, value in sorted(node_selector.items())) or "<none>",
        _age(daemonset, now),
        *_template_cells(daemonset),
    ]


# --- other resources ------------------------------------------------------------------------------

_PDB_COLUMNS = [
    _NAME,
    _column("Min Available", "string", "Pods that must stay available."),
    _column("Max Unavailable", "string", "Pods that may be unavailable."),
    _column("Allowed Disruptions", "integer", "Pods that may be disrupted right now."),
    _AGE,
]


def _pdb_row(pdb: Object, now: datetime.datetime) -> Row:
    spec = pdb.get("spec") or {}
    min_available, max_unavailable = spec.get("minAvailable"), spec.get("maxUnavailable")
    return [
        _name(pdb),
        "N/A" if min_available is None else str(min_available),
        "N/A" if max_unavailable is None else str(max_unavailable),
        _get(pdb, "status", "disruptionsAllowed") or 0,
        _age(pdb, now),
    ]


_LEASE_COLUMNS = [_NAME, _column("Holder", "string", "Identity of the current lease holder."), _AGE]


def _lease_row(lease: Object, now: datetime.datetime) -> Row:
    return [_name(lease), _get(lease, "spec", "holderIdentity") or "", _age(lease, now)]


_NAMESPACE_COLUMNS = [_NAME, _column("Status", "string", "Phase of the namespace."), _AGE]


def _namespace_row(namespace: Object, now: datetime.datetime) -> Row:
    return [_name(namespace), _get(namespace, "status", "phase") or "", _age(namespace, now)]


_EVENT_COLUMNS = [
    _column("Last Seen", "string", "Time since the event was last observed."),
    _column("Type", "string", "Normal or Warning."),
    _column("Reason", "string", "Short machine-readable reason."),
    _column("Object", "string", "Object the event is about, as kind/name."),
    _column("Subobject", "string", "Field path within the object.", priority=1),
    _column("Source", "string", "Component, and host, that reported the event.", priority=1),
    _column("Message", "string", "Human-readable description."),
    _column("First Seen", "string", "Time since the event was first observed.", priority=1),
    _column("Count", "string", "Times the event has been observed.", priority=1),
    _column("Name", "string", "Name of the event object.", priority=1, format_="name"),
]


def _event_row(event: Object, now: datetime.datetime) -> Row:
    first_seen = _since(event.get("firstTimestamp") or event.get("eventTime"), now)
    last_seen = _since(event["lastTimestamp"], now) if event.get("lastTimestamp") else first_seen
    count = event.get("count") or 1
    series = event.get("series")
    if series:
        last_seen = _since(series.get("lastObservedTime"), now)
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
        _name(event),
    ]


def _default_row(obj: Object, now: datetime.datetime) -> Row:
    return [_name(obj), _age(obj, now)]


_PRINTERS: dict[str, tuple[list[dict[str, Any]], Callable[[Object, datetime.datetime], Row]]] = {
    "nodes": (_NODE_COLUMNS, _node_row),
    "pods": (_POD_COLUMNS, _pod_row),
    "poddisruptionbudgets": (_PDB_COLUMNS, _pdb_row),
    "leases": (_LEASE_COLUMNS, _lease_row),
    "deployments": (_DEPLOYMENT_COLUMNS, _deployment_row),
    "replicasets": (_REPLICASET_COLUMNS, _replicaset_row),
    "daemonsets": (_DAEMONSET_COLUMNS, _daemonset_row),
    "namespaces": (_NAMESPACE_COLUMNS, _namespace_row),
    "events": (_EVENT_COLUMNS, _event_row),
}


def _row_object(obj: Object, include_object: str) -> Any:
    if include_object == "Object":
        return obj
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata") or {},
    }


def to_table(
    resource: str,
    objects: list[dict[str, Any]],
    now: datetime.datetime,
    include_object: str = "PartialObjectMetadata",
    list_meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Render objects of one resource (plural name, e.g. "pods") as a `meta.k8s.io/v1` Table.

    `include_object` is the `includeObject` query parameter: "None" leaves each
    row without its object, "Object" embeds the full object, and "Metadata"
    (or "" or "PartialObjectMetadata", the default) embeds only its metadata.
    `list_meta` supplies the list's resourceVersion, continue token and
    remaining count. Raises ValueError for any other `include_object`.
    """
    if include_object not in _INCLUDE_OBJECT_VALUES:
        raise ValueError(
            f"includeObject must be one of {', '.join(_INCLUDE_OBJECT_VALUES)}, not {include_object!r}"
        )
    if now.tzinfo is None:
        now = now.replace(tzinfo=datetime.UTC)
    columns, build_row = _PRINTERS.get(resource, ([_NAME, _AGE], _default_row))
    rows = []
    for obj in objects:
        row: dict[str, Any] = {"cells": build_row(obj, now)}
        if include_object != "None":
            row["object"] = _row_object(obj, include_object)
        rows.append(row)
    metadata = {
        key: value
        for key, value in (list_meta or {}).items()
        if key in ("resourceVersion", "continue", "remainingItemCount") and value not in (None, "")
    }
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": [dict(column) for column in columns],
        "rows": rows,
    }
