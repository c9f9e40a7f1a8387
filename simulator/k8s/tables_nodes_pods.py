"""The server-side tables of nodes and pods, following the real API server's printers: a node's STATUS
(readiness, cordon), ROLES and addresses, and a pod's READY, STATUS (init containers, waiting and
terminated reasons, deletion) and RESTARTS, with the ``-o wide`` columns of both."""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any, NamedTuple

from simulator.k8s.tables_common import (
    AGE_COLUMN,
    NAME_COLUMN,
    Object,
    Row,
    age_of,
    column,
    condition,
    get_path,
    human_duration,
    name_of,
    parse_time,
)

NODE_COLUMNS = [
    NAME_COLUMN,
    column("Status", "string", "Readiness of the node, and whether it accepts new pods."),
    column("Roles", "string", "Roles of the node, from its node-role labels."),
    AGE_COLUMN,
    column("Version", "string", "Kubelet version reported by the node."),
    column("Internal-IP", "string", "First InternalIP address of the node.", priority=1),
    column("External-IP", "string", "First ExternalIP address of the node.", priority=1),
    column("OS-Image", "string", "Operating system image reported by the node.", priority=1),
    column("Kernel-Version", "string", "Kernel version reported by the node.", priority=1),
    column("Container-Runtime", "string", "Container runtime and version reported by the node.", priority=1),
]


def node_status(node: Object) -> str:
    """kubectl's node STATUS: `Ready`, `NotReady` or `Unknown`, plus `,SchedulingDisabled` when cordoned."""
    ready = condition(node, "Ready")
    status = "Unknown" if ready is None else "Ready" if ready.get("status") == "True" else "NotReady"
    if get_path(node, "spec", "unschedulable"):
        status += ",SchedulingDisabled"
    return status


def _node_roles(node: Object) -> str:
    """Roles from `node-role.kubernetes.io/<role>` label keys and the `kubernetes.io/role` label value."""
    roles = set()
    for key, value in (get_path(node, "metadata", "labels") or {}).items():
        if key.startswith("node-role.kubernetes.io/"):
            roles.add(key.removeprefix("node-role.kubernetes.io/"))
        elif key == "kubernetes.io/role":
            roles.add(value)
    return ",".join(sorted(roles - {""})) or "<none>"


def _node_address(node: Object, address_type: str) -> str:
    addresses = get_path(node, "status", "addresses") or []
    return next((a.get("address", "") for a in addresses if a.get("type") == address_type), "<none>")


def node_row(node: Object, now: datetime.datetime) -> Row:
    info = get_path(node, "status", "nodeInfo") or {}
    return [
        name_of(node),
        node_status(node),
        _node_roles(node),
        age_of(node, now),
        info.get("kubeletVersion", ""),
        _node_address(node, "InternalIP"),
        _node_address(node, "ExternalIP"),
        info.get("osImage") or "<unknown>",
        info.get("kernelVersion") or "<unknown>",
        info.get("containerRuntimeVersion") or "<unknown>",
    ]


# --- pods -----------------------------------------------------------------------------------------

POD_COLUMNS = [
    NAME_COLUMN,
    column("Ready", "string", "Ready containers out of all containers in the pod."),
    column("Status", "string", "Aggregate status of the pod and its containers."),
    column("Restarts", "string", "Container restarts, and how long ago the latest one was."),
    AGE_COLUMN,
    column("IP", "string", "IP address allocated to the pod.", priority=1),
    column("Node", "string", "Node the pod is bound to.", priority=1),
    column("Nominated Node", "string", "Node nominated for the pod by preemption.", priority=1),
    column("Readiness Gates", "string", "Readiness gates that are true, out of all gates.", priority=1),
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
    times = [parse_time(get_path(status, "lastState", "terminated", "finishedAt")) for status in statuses]
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
    if (condition(pod, "PodScheduled") or {}).get("reason") == "SchedulingGated":
        reason = "SchedulingGated"

    # Restarts count only the init containers walked past before the first unfinished one.
    walked_init, ready, init_reason = _walk_init_containers(
        status.get("initContainerStatuses") or [], sidecars, len(init_specs)
    )
    restarted = walked_init
    if init_reason is not None:
        reason = init_reason
    if init_reason is None or (condition(pod, "Initialized") or {}).get("status") == "True":
        container_statuses = status.get("containerStatuses") or []
        restarted = [s for s in walked_init if s.get("name") in sidecars] + container_statuses
        reason, ready_containers, running = _walk_containers(container_statuses, reason)
        ready += ready_containers
        if reason == "Completed" and running:
            pod_ready = (condition(pod, "Ready") or {}).get("status") == "True"
            reason = "Running" if pod_ready else "NotReady"

    if get_path(pod, "metadata", "deletionTimestamp"):
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
    gates = get_path(pod, "spec", "readinessGates") or []
    if not gates:
        return "<none>"
    conditions = {c.get("type"): c.get("status") for c in get_path(pod, "status", "conditions") or []}
    passing = sum(1 for gate in gates if conditions.get(gate.get("conditionType")) == "True")
    return f"{passing}/{len(gates)}"


def pod_row(pod: Object, now: datetime.datetime) -> Row:
    summary = pod_status(pod)
    restarts = str(summary.restarts)
    if summary.restarts and summary.last_restart:
        restarts = f"{summary.restarts} ({human_duration(now - summary.last_restart)} ago)"
    pod_ips = get_path(pod, "status", "podIPs") or []
    pod_ip = (pod_ips[0].get("ip") if pod_ips else None) or get_path(pod, "status", "podIP")
    return [
        name_of(pod),
        f"{summary.ready}/{summary.total}",
        summary.status,
        restarts,
        age_of(pod, now),
        pod_ip or "<none>",
        get_path(pod, "spec", "nodeName") or "<none>",
        get_path(pod, "status", "nominatedNodeName") or "<none>",
        _readiness_gates(pod),
    ]
