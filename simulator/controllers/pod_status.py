"""What the kubelet writes of a pod it runs, shared by its simulated containers (``kubelet``) and the
containers it runs as local processes (``processes``): the pod's IP on first write, its conditions and
its first container's status entry; and the pod a container start still belongs to.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from simulator.controllers.common import NODES, PODS, ContainerStart
from simulator.controllers.state import ClusterState
from simulator.indexes import is_terminating
from simulator.k8s.store import Store

FIRST_POD_IP = ipaddress.ip_address("10.244.128.0")


def running_pod(store: Store, start: ContainerStart) -> dict | None:
    """The pod of ``start`` while its container still runs: the same pod, not terminating, on a host that
    is up and has not rebooted since; None otherwise."""
    current = store.get(PODS, *start.key)
    if current is None or current["metadata"]["uid"] != start.uid or is_terminating(current):
        return None
    host = start.host
    return current if host.boots == start.boot and host.state == "up" else None


def status_with_ip(state: ClusterState, pod: dict, stamp: str, host_ips: bool = False) -> dict[str, Any]:
    """A copy of the pod's status; on the first write it gets the pod's IP, its node's IP (and, with
    ``host_ips``, the hostIPs list) and its start time."""
    status: dict[str, Any] = dict(pod.get("status", {}))
    if not status.get("podIP"):
        state.ip_counter += 1
        status["podIP"] = str(FIRST_POD_IP + state.ip_counter)
        status["podIPs"] = [{"ip": status["podIP"]}]
        node = state.store.get(NODES, "", pod["spec"]["nodeName"])
        status["hostIP"] = node["status"]["addresses"][0]["address"] if node else ""
        if host_ips:
            status["hostIPs"] = [{"ip": status["hostIP"]}]
        status["startTime"] = stamp
    return status


def pod_conditions(ready: bool, stamp: str, sandbox: bool = False) -> list[dict]:
    """The pod's conditions, Ready and ContainersReady as ``ready`` says; ``sandbox`` adds
    PodReadyToStartContainers first."""
    flag = "True" if ready else "False"
    sandbox_ready = [{"type": "PodReadyToStartContainers", "status": "True", "lastTransitionTime": stamp}]
    return [
        *(sandbox_ready if sandbox else []),
        {"type": "Initialized", "status": "True", "lastTransitionTime": stamp},
        {"type": "Ready", "status": flag, "lastTransitionTime": stamp},
        {"type": "ContainersReady", "status": flag, "lastTransitionTime": stamp},
        {"type": "PodScheduled", "status": "True", "lastTransitionTime": stamp},
    ]


def container_entry(
    container: dict, ready: bool, restarts: int, started: bool, state: dict
) -> dict[str, Any]:
    """The status entry of ``container``; the caller adds its lastState and containerID."""
    return {
        "name": container["name"],
        "image": container.get("image", ""),
        "imageID": "",
        "ready": ready,
        "restartCount": restarts,
        "started": started,
        "state": state,
    }
