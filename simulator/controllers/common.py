"""Shared vocabulary of the simulated cluster's controllers: the resource types and constants they
use, small pure helpers (node names, tolerations, scaling of budget percentages), and the records they
keep (invariants, the scheduler's node filter, a kubelet container start). No controller lives here.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypedDict

from simulator.hosts import Host
from simulator.k8s.errors import ApiError, conflict
from simulator.k8s.resources import by_kind

NODES = by_kind("Node")
PODS = by_kind("Pod")
NAMESPACES = by_kind("Namespace")
EVENTS = by_kind("Event")
DEPLOYMENTS = by_kind("Deployment")
REPLICASETS = by_kind("ReplicaSet")
DAEMONSETS = by_kind("DaemonSet")
PDBS = by_kind("PodDisruptionBudget")
LEASES = by_kind("Lease")
JOBS = by_kind("Job")
SERVICEACCOUNTS = by_kind("ServiceAccount")
SECRETS = by_kind("Secret")
CONFIGMAPS = by_kind("ConfigMap")

NODE_LEASE_NS = "kube-node-lease"
HEARTBEAT_SECONDS = 10.0
NODE_LEASE_SECONDS = 40
CONTAINER_START_SECONDS = 0.5
MICROTIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}(Z|[+-]\d\d:\d\d)$")
NOT_READY_TAINTS = [
    {"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"},
]
UNREACHABLE_TAINTS = [
    {"key": "node.kubernetes.io/unreachable", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"},
]
UNSCHEDULABLE_TAINT_KEY = "node.kubernetes.io/unschedulable"
OS_LABEL = "kubernetes.io/os"
SYSTEM_TAINT_KEYS = {"node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"}
DAEMONSET_TOLERATIONS = [
    {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/disk-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/memory-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/pid-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"},
]


def microtime(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def node_name(cluster: str, pool: str, index: int, windows: bool = False) -> str:
    """AKS-style VMSS node name: aks-<pool>-<8 digits>-vmss<6 base-36 digits> for Linux, and
    aks<pool><6 base-36 digits> for Windows (a Windows computer name has at most 15 characters)."""
    alphabet = "0123456789abcdefghijklmnopqrstuvwxyz"
    b36 = ""
    n = index
    for _ in range(6):
        n, r = divmod(n, 36)
        b36 = alphabet[r] + b36
    if windows:
        return f"aks{pool}{b36}"
    digits = int(hashlib.sha256(f"{cluster}/{pool}".encode()).hexdigest(), 16) % 10**8
    return f"aks-{pool}-{digits:08d}-vmss{b36}"


def windows_build(kernel: str) -> str:
    """The node.kubernetes.io/windows-build label of a Windows kernel version: 10.0.20348.2700 -> 10.0.20348."""
    return ".".join(kernel.split(".")[:3])


def runs_on(spec: dict, labels: dict) -> bool:
    """A Linux container image cannot start on a Windows node: a pod goes there only when its nodeSelector
    asks for kubernetes.io/os=windows (AKS asks every workload of a mixed cluster to select its OS)."""
    return (
        labels.get(OS_LABEL, "linux") != "windows"
        or (spec.get("nodeSelector") or {}).get(OS_LABEL) == "windows"
    )


def name_suffix(rng: random.Random, length: int = 5) -> str:
    """Random name suffix from the alphabet Kubernetes uses for generated names."""
    return "".join(rng.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(length))


def node_ready(node: dict) -> bool:
    """Whether the node's Ready condition is True."""
    for cond in node.get("status", {}).get("conditions", []):
        if cond["type"] == "Ready":
            return cond["status"] == "True"
    return False


def tolerates(tolerations: list[dict], taint: dict) -> bool:
    for tol in tolerations or []:
        if tol.get("effect") and tol["effect"] != taint.get("effect"):
            continue
        if tol.get("operator") == "Exists":
            if not tol.get("key") or tol["key"] == taint.get("key"):
                return True
        elif tol.get("key") == taint.get("key") and tol.get("value", "") == taint.get("value", ""):
            return True
    return False


def scaled_int(value: int | str, total: int, round_up: bool) -> int:
    if isinstance(value, int):
        return value
    pct = int(str(value).rstrip("%"))
    raw = pct * total / 100
    return math.ceil(raw) if round_up else math.floor(raw)


class Invariants(TypedDict):
    """What the simulator counts across a run, for tests and the demo to check afterwards."""

    max_unschedulable: int
    max_not_ready: int
    max_disrupted: int
    # the peak of disrupted (cordoned or not Ready) nodes within one zone, and within one pool
    max_disrupted_per_zone: dict[str, int]
    max_disrupted_per_pool: dict[str, int]
    pdb_violations: int
    reboots: dict[str, int]  # node -> reboots


@dataclass
class FeasibleNodes:
    spec: dict  # the pod spec whose tolerations and nodeSelector decide
    nodes: dict[str, int] = field(default_factory=dict)  # node -> untolerated PreferNoSchedule taints
    stale: set[str] = field(default_factory=set)  # nodes changed since ``nodes`` was last brought up to date


@dataclass(frozen=True)
class ContainerStart:
    """One start of a pod's container by the kubelet: which pod (key and uid), on which host, in which boot."""

    key: tuple[str, str]  # namespace, name
    uid: str
    host: Host
    boot: int  # the host's boot count when the container started


def check_preconditions(obj: dict, preconditions: dict | None, plural: str) -> None:
    if not preconditions:
        return
    meta = obj["metadata"]
    uid = preconditions.get("uid")
    if uid and uid != meta["uid"]:
        raise ApiError(
            409,
            "Conflict",
            f"Precondition failed: UID in precondition: {uid}, UID in object meta: {meta['uid']}",
            {"name": meta["name"], "kind": plural},
        )
    rv = preconditions.get("resourceVersion")
    if rv and rv != meta["resourceVersion"]:
        raise conflict(plural, meta["name"])
