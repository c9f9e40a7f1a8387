"""The simulated cluster: nodes with hosts, a kubelet, the controllers that matter for drains.

Everything here runs on the simulator's event loop. API handlers call the ``Cluster`` methods that
need more than plain storage (pod deletion, eviction, Lease rules); controllers react to store changes
through a listener and reconcile once per loop turn. Timed behaviour (pods becoming Ready, graceful
termination, reboots) is scheduled on the loop with the scenario's durations times ``time_scale``.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import ipaddress
import json
import math
import random
import re
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypedDict

from simulator.hosts import CommandResult, Host, run_host_command, split_host_command
from simulator.indexes import (
    PdbIndex,
    PodIndex,
    changed_object,
    controller_of,
    is_ready,
    is_terminal,
    is_terminating,
)
from simulator.k8s.errors import ApiError, bad_request, conflict, invalid
from simulator.k8s.resources import ResourceType, by_kind
from simulator.k8s.selectors import selector_from_dict
from simulator.k8s.store import Store, now_rfc3339
from simulator.scenario import NodeSpec, PoolSpec, Scenario, WorkloadSpec

NODES = by_kind("Node")
PODS = by_kind("Pod")
NAMESPACES = by_kind("Namespace")
EVENTS = by_kind("Event")
DEPLOYMENTS = by_kind("Deployment")
REPLICASETS = by_kind("ReplicaSet")
DAEMONSETS = by_kind("DaemonSet")
PDBS = by_kind("PodDisruptionBudget")
LEASES = by_kind("Lease")

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
# status fields without omitempty: clients (the Python client validates them) expect them even when 0
_REQUIRED_STATUS = {
    "ReplicaSet": {"replicas"},
    "DaemonSet": {"currentNumberScheduled", "numberMisscheduled", "desiredNumberScheduled", "numberReady"},
}
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


class Cluster:
    def __init__(self, scenario: Scenario, loop: asyncio.AbstractEventLoop | None = None):
        self.scenario = scenario
        self.scale = scenario.time_scale
        self.loop = loop or asyncio.get_event_loop()
        self.rng = random.Random(scenario.seed)
        self.store = Store()
        self.hosts: dict[str, Host] = {}
        self.pool_of: dict[str, PoolSpec] = {}
        self.started_at = time.monotonic()
        self.timeline: list[dict] = []
        self.logs: dict[str, str] = {}  # pod uid -> log text
        self.pods = PodIndex()
        self.pdb_members = PdbIndex()
        # uid of a Deployment, ReplicaSet or DaemonSet -> (resource type, namespace, name)
        self._owners: dict[str, tuple[ResourceType, str, str]] = {}
        self._deployments_dirty: set[str] = set()  # uids whose ReplicaSets or status may need an update
        self._replicasets_dirty: set[str] = set()  # uids whose pod count or status may need an update
        self._daemonsets_full: set[str] = set()  # uids to check on every node (new, or spec changed)
        self._daemonset_nodes_dirty: set[str] = set()  # nodes to check for every DaemonSet
        self._daemonsets_status_dirty: set[str] = set()  # uids whose pods changed
        self._daemonset_nodes: dict[str, set[str]] = defaultdict(set)  # uid -> nodes it wants a pod on
        self._feasible: dict[str, FeasibleNodes] = {}  # the scheduler's node filter, per pod spec
        self._unschedulable: set[str] = set()
        self._not_ready: set[str] = set()
        self._started: set[str] = set()  # uids of pods the kubelet has started
        self._unbound: set[tuple[str, str]] = set()  # pods waiting for the scheduler
        self._to_start: set[tuple[str, str]] = set()  # bound pods the kubelet has not started
        self._nodes_dirty: set[str] = set()  # nodes whose cordon taint may need an update
        self._npd_dirty: set[str] = set()  # nodes whose reboot-required condition may need an update
        self._pdb_namespaces_dirty: set[str] = set()
        self._heartbeat_from: dict[str, datetime] = {}
        self._heartbeat_frozen: dict[str, datetime] = {}
        self.invariants: Invariants = {
            "max_unschedulable": 0,
            "max_not_ready": 0,
            "max_disrupted": 0,
            "pdb_violations": 0,
            "reboots": {},
        }
        self._dirty = False
        self._reconciling = False
        self._ip_counter = 0
        self.store.add_listener(self._on_change)
        self.store.add_view(LEASES, self._lease_view)
        self._build()
        for name in self.hosts:
            self.host_changed(name)
        self.reconcile()

    # ---- time and records ----------------------------------------------------------------
    def sim_now(self) -> float:
        """Simulated seconds since the simulator started."""
        return (time.monotonic() - self.started_at) / self.scale

    def after(self, sim_seconds: float, fn: Callable[[], None]) -> None:
        # the changes ``fn`` makes schedule one reconcile (see _mark_dirty), shared by all timers that
        # fire in the same loop turn: a thousand pods starting together reconcile once, not a thousand times
        self.loop.call_later(max(0.0, sim_seconds * self.scale), fn)

    def record(self, event: str, node: str | None = None, **details: object) -> None:
        self.timeline.append(
            {
                "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
                "t": round(self.sim_now(), 3),
                "event": event,
                "node": node,
                "details": details,
            }
        )

    def emit_event(
        self, involved: dict, reason: str, message: str, type_: str = "Normal", component: str = "kubelet"
    ) -> None:
        meta = involved["metadata"]
        namespace = meta.get("namespace") or "default"
        stamp = now_rfc3339()
        self.store.create(
            EVENTS,
            {
                "metadata": {"name": f"{meta['name']}.{uuid.uuid4().hex[:16]}", "namespace": namespace},
                "involvedObject": {
                    "kind": involved["kind"],
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "namespace": meta.get("namespace", ""),
                    "apiVersion": involved["apiVersion"],
                },
                "reason": reason,
                "message": message,
                "type": type_,
                "count": 1,
                "firstTimestamp": stamp,
                "lastTimestamp": stamp,
                "source": {"component": component},
                "reportingComponent": component,
            },
        )

    # ---- building the scenario -----------------------------------------------------------
    def _build(self) -> None:
        sc = self.scenario
        namespaces = {"default", "kube-system", "kube-public", NODE_LEASE_NS}
        namespaces |= {w.namespace for w in sc.workloads}
        for ns in sorted(namespaces):
            self.store.create(
                NAMESPACES,
                {
                    "metadata": {"name": ns, "labels": {"kubernetes.io/metadata.name": ns}},
                    "spec": {"finalizers": ["kubernetes"]},
                    "status": {"phase": "Active"},
                },
            )
        overrides = {(n.pool, n.index): n for n in sc.nodes}
        for pool in sc.pools:
            for index in range(pool.count):
                self._add_node(pool, index, overrides.get((pool.name, index)))
        for w in sc.workloads:
            self._add_workload(w)

    def _node_name(self, pool: str, index: int) -> str:
        spec = next(p for p in self.scenario.pools if p.name == pool)
        return node_name(self.scenario.cluster.name, pool, index, windows=spec.windows)

    def _add_node(self, pool: PoolSpec, index: int, spec: NodeSpec | None) -> None:
        sc = self.scenario
        name = node_name(sc.cluster.name, pool.name, index, windows=pool.windows)
        host = Host(
            node_name=name,
            pool=pool.name,
            running_kernel=pool.kernel,
            os_image=pool.os_image,
            boot_seconds=pool.boot_seconds,
            os_type=pool.os_type,
        )
        if spec is not None:
            host.reboot_required = spec.reboot_required
            host.pending_kernel = spec.pending_kernel
            host.upgradable_packages = spec.upgradable_packages
            host.available_kernel = spec.available_kernel
            host.fail_after_reboot = spec.fail_after_reboot
        self.hosts[name] = host
        self.pool_of[name] = pool
        zone = pool.zones[index % len(pool.zones)] if pool.zones else "0"
        region_zone = f"{sc.cluster.location}-{zone}" if pool.zones else "0"
        os = "windows" if pool.windows else "linux"
        labels = {
            "agentpool": pool.name,
            "beta.kubernetes.io/arch": "amd64",
            "beta.kubernetes.io/instance-type": pool.vm_size,
            "beta.kubernetes.io/os": os,
            "failure-domain.beta.kubernetes.io/region": sc.cluster.location,
            "failure-domain.beta.kubernetes.io/zone": region_zone,
            "kubernetes.azure.com/agentpool": pool.name,
            "kubernetes.azure.com/cluster": f"MC_{sc.cluster.resource_group}_{sc.cluster.name}_"
            f"{sc.cluster.location}",
            "kubernetes.azure.com/mode": pool.mode.lower(),
            "kubernetes.azure.com/node-image-version": pool.node_image_version,
            "kubernetes.azure.com/os-sku": "Windows2022" if pool.windows else "Ubuntu",
            "kubernetes.azure.com/role": "agent",
            "kubernetes.io/arch": "amd64",
            "kubernetes.io/hostname": name,
            OS_LABEL: os,
            "kubernetes.io/role": "agent",
            "node.kubernetes.io/instance-type": pool.vm_size,
            "topology.kubernetes.io/region": sc.cluster.location,
            "topology.kubernetes.io/zone": region_zone,
        }
        if pool.windows:
            labels["node.kubernetes.io/windows-build"] = windows_build(pool.kernel)
        if spec is not None:
            labels.update(spec.labels)
        ip = str(ipaddress.ip_address("10.224.0.4") + len(self.hosts) - 1)
        node_rg = f"MC_{sc.cluster.resource_group}_{sc.cluster.name}_{sc.cluster.location}"
        vmss = name[:-6] if pool.windows else name.rsplit("vmss", 1)[0] + "vmss"
        node: dict[str, Any] = {
            "metadata": {
                "name": name,
                "labels": labels,
                "annotations": {
                    "node.alpha.kubernetes.io/ttl": "0",
                    "volumes.kubernetes.io/controller-managed-attach-detach": "true",
                },
            },
            "spec": {
                "podCIDR": f"10.244.{len(self.hosts) - 1}.0/24",
                "providerID": f"azure:///subscriptions/{sc.cluster.subscription_id}/resourceGroups/"
                f"{node_rg.lower()}/providers/Microsoft.Compute/virtualMachineScaleSets/"
                f"{vmss}/virtualMachines/{index}",
            },
            "status": {
                "capacity": {
                    "cpu": "4",
                    "memory": "16374584Ki",
                    "pods": str(pool.max_pods),
                    "ephemeral-storage": "129886128Ki",
                },
                "allocatable": {
                    "cpu": "3860m",
                    "memory": "12880184Ki",
                    "pods": str(pool.max_pods),
                    "ephemeral-storage": "119703055367",
                },
                "conditions": self._conditions(ready="True"),
                "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
                "nodeInfo": {
                    "machineID": uuid.uuid4().hex,
                    "systemUUID": str(uuid.uuid4()),
                    "bootID": host.boot_id,
                    "kernelVersion": host.running_kernel,
                    "osImage": pool.os_image,
                    "containerRuntimeVersion": pool.container_runtime,
                    "kubeletVersion": f"v{pool.orchestrator_version}",
                    "kubeProxyVersion": f"v{pool.orchestrator_version}",
                    "operatingSystem": os,
                    "architecture": "amd64",
                },
            },
        }
        if spec is not None and spec.cordoned:
            node["spec"]["unschedulable"] = True
            node["spec"]["taints"] = [
                {"key": UNSCHEDULABLE_TAINT_KEY, "effect": "NoSchedule", "timeAdded": now_rfc3339()}
            ]
        node = self.store.create(NODES, node)
        now = datetime.now(UTC)
        self._heartbeat_from[name] = now
        self.store.create(
            LEASES,
            {
                "metadata": {
                    "name": name,
                    "namespace": NODE_LEASE_NS,
                    "ownerReferences": [
                        {
                            "apiVersion": "v1",
                            "kind": "Node",
                            "name": name,
                            "uid": node["metadata"]["uid"],
                        }
                    ],
                },
                "spec": {
                    "holderIdentity": name,
                    "leaseDurationSeconds": NODE_LEASE_SECONDS,
                    "renewTime": microtime(now),
                },
            },
        )

    def _conditions(
        self, ready: str, reason: str = "KubeletReady", message: str = "kubelet is posting ready status"
    ) -> list[dict]:
        stamp = now_rfc3339()
        conds = []
        for ctype, creason, cmsg in (
            ("MemoryPressure", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
            ("DiskPressure", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            ("PIDPressure", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
        ):
            status = "Unknown" if ready == "Unknown" else "False"
            conds.append(
                {
                    "type": ctype,
                    "status": status,
                    "reason": creason,
                    "message": cmsg,
                    "lastHeartbeatTime": stamp,
                    "lastTransitionTime": stamp,
                }
            )
        conds.append(
            {
                "type": "Ready",
                "status": ready,
                "reason": reason,
                "message": message,
                "lastHeartbeatTime": stamp,
                "lastTransitionTime": stamp,
            }
        )
        return conds

    def _pod_template(self, w: WorkloadSpec) -> dict:
        container: dict[str, Any] = {
            "name": w.name,
            "image": w.image,
            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
        }
        if w.ready_seconds:
            container["readinessProbe"] = {
                "httpGet": {"path": "/", "port": 80},
                "initialDelaySeconds": math.ceil(w.ready_seconds),
                "periodSeconds": 1,
            }
        spec: dict[str, Any] = {
            "containers": [container],
            "terminationGracePeriodSeconds": w.termination_grace_seconds,
            "restartPolicy": "Always",
        }
        if w.tolerations:
            spec["tolerations"] = w.tolerations
        if w.node_selector:
            spec["nodeSelector"] = dict(w.node_selector)
        if w.empty_dir:
            spec["volumes"] = [{"name": "scratch", "emptyDir": {}}]
            container["volumeMounts"] = [{"name": "scratch", "mountPath": "/scratch"}]
        return {"metadata": {"labels": dict(w.labels)}, "spec": spec}

    def _add_workload(self, w: WorkloadSpec) -> None:
        template = self._pod_template(w)
        selector = {"matchLabels": dict(w.labels)}
        meta = {"name": w.name, "namespace": w.namespace, "labels": dict(w.labels)}
        if w.kind == "Deployment":
            self.store.create(
                DEPLOYMENTS,
                {
                    "metadata": meta,
                    "spec": {
                        "replicas": w.replicas,
                        "selector": selector,
                        "template": template,
                        "strategy": {
                            "type": "RollingUpdate",
                            "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"},
                        },
                    },
                    "status": {},
                },
            )
        elif w.kind == "DaemonSet":
            self.store.create(
                DAEMONSETS,
                {
                    "metadata": meta,
                    "spec": {
                        "selector": selector,
                        "template": template,
                        "updateStrategy": {"type": "RollingUpdate"},
                    },
                    "status": {},
                },
            )
        else:
            pod = {"metadata": meta, "spec": template["spec"]}
            if w.node is not None:
                pod["spec"]["nodeName"] = self._node_name(w.node.pool, w.node.index)
            self.create_pod(pod)
        if w.pdb is not None:
            spec: dict = {"selector": selector}
            if w.pdb.min_available is not None:
                spec["minAvailable"] = w.pdb.min_available
            else:
                spec["maxUnavailable"] = w.pdb.max_unavailable
            if w.pdb.unhealthy_pod_eviction_policy:
                spec["unhealthyPodEvictionPolicy"] = w.pdb.unhealthy_pod_eviction_policy
            self.store.create(
                PDBS, {"metadata": {"name": w.name, "namespace": w.namespace}, "spec": spec, "status": {}}
            )

    # ---- change tracking -----------------------------------------------------------------
    def _on_change(self, rt: ResourceType, kind: str, old: dict | None, new: dict | None) -> None:
        """The store's listener: the controllers a change concerns will look again at the next reconcile."""
        if rt is PODS:
            self._pod_changed(old, new)
        elif rt in (DEPLOYMENTS, REPLICASETS, DAEMONSETS):
            self._owner_changed(rt, old, new)
        elif rt is PDBS:
            self._pdb_changed(old, new)
        elif rt is NODES:
            self._node_changed(old, new)
        self._mark_dirty()

    def _pdb_changed(self, old: dict | None, new: dict | None) -> None:
        """A budget changed: its members are matched again when its spec did, its namespace's status
        is computed again either way."""
        namespace = changed_object(old, new)["metadata"]["namespace"]
        if old is None or new is None or old["spec"] != new["spec"]:
            self.pdb_members.set_pdb(old, new, self.store.list(PODS, namespace))
        self._pdb_namespaces_dirty.add(namespace)

    def _node_changed(self, old: dict | None, new: dict | None) -> None:
        """A node changed: cordons are recorded, the scheduler and the DaemonSet controller look at the
        node again, and the unschedulable and not-Ready sets (and their peaks) follow it."""
        name = changed_object(old, new)["metadata"]["name"]
        was = bool(old and old.get("spec", {}).get("unschedulable"))
        now = bool(new and new.get("spec", {}).get("unschedulable"))
        if now != was and new is not None:  # a deleted node is gone, not uncordoned
            self.record("cordoned" if now else "uncordoned", name)
        if new is not None:
            self._nodes_dirty.add(name)
        self._daemonset_nodes_dirty.add(name)
        for entry in self._feasible.values():
            entry.stale.add(name)
        if now:
            self._unschedulable.add(name)
        else:
            self._unschedulable.discard(name)
        self._node_readiness_changed(name, new)
        inv = self.invariants
        inv["max_unschedulable"] = max(inv["max_unschedulable"], len(self._unschedulable))
        inv["max_not_ready"] = max(inv["max_not_ready"], len(self._not_ready))
        inv["max_disrupted"] = max(inv["max_disrupted"], len(self._unschedulable | self._not_ready))

    def _node_readiness_changed(self, name: str, new: dict | None) -> None:
        """Track the not-Ready nodes; a node Ready again has the kubelet start the pods bound to it."""
        ready = new is not None and self._node_ready(new)
        if ready and name in self._not_ready:
            self._to_start |= self.pods.by_node.get(name, set())
        if ready:
            self._not_ready.discard(name)
        elif new is not None:
            self._not_ready.add(name)
        else:
            self._not_ready.discard(name)

    def _pod_changed(self, old: dict | None, new: dict | None) -> None:
        self.pods.change(old, new)
        self.pdb_members.pod_changed(old, new)
        pod = changed_object(old, new)
        key = (pod["metadata"]["namespace"], pod["metadata"]["name"])
        if new is None:  # deleted: ``pod`` is the old version
            self._started.discard(pod["metadata"]["uid"])
            self._unbound.discard(key)
            self._to_start.discard(key)
        elif not new["spec"].get("nodeName"):
            self._unbound.add(key)
        else:
            self._unbound.discard(key)
            if new["metadata"]["uid"] not in self._started:
                self._to_start.add(key)
        self._pdb_namespaces_dirty.add(key[0])
        for version in [v for v in (old, new) if v is not None]:
            owner = controller_of(version)
            if owner is None:
                continue
            if owner.get("kind") == "ReplicaSet":
                self._replicasets_dirty.add(owner["uid"])
            elif owner.get("kind") == "DaemonSet":
                self._daemonsets_status_dirty.add(owner["uid"])
                if version["spec"].get("nodeName"):  # a daemon pod gone from its node comes back
                    self._daemonset_nodes_dirty.add(version["spec"]["nodeName"])

    def _owner_changed(self, rt: ResourceType, old: dict | None, new: dict | None) -> None:
        """A workload controller's object changed: its controller looks at it again, and so does the
        controller that owns it (a Deployment reads its ReplicaSets' status)."""
        obj = changed_object(old, new)
        meta = obj["metadata"]
        uid = meta["uid"]
        if new is None:
            self._owners.pop(uid, None)
        else:
            self._owners[uid] = (rt, meta["namespace"], meta["name"])
        spec_changed = old is None or new is None or old.get("spec") != new.get("spec")
        if rt is DEPLOYMENTS and spec_changed:
            self._deployments_dirty.add(uid)
        elif rt is REPLICASETS:
            if spec_changed:
                self._replicasets_dirty.add(uid)
            parent = controller_of(obj)
            if parent is not None:
                self._deployments_dirty.add(parent["uid"])
        elif rt is DAEMONSETS:
            if spec_changed:
                self._daemonsets_full.add(uid)
            # the budget's expected pods follow the DaemonSet's desired count
            self._pdb_namespaces_dirty.add(meta["namespace"])

    def _owner(self, uid: str) -> dict | None:
        where = self._owners.get(uid)
        return None if where is None else self.store.get(*where)

    def _mark_dirty(self) -> None:
        if not self._dirty:
            self._dirty = True
            if not self._reconciling:
                self.loop.call_soon(self.reconcile)

    @staticmethod
    def _node_ready(node: dict) -> bool:
        for cond in node.get("status", {}).get("conditions", []):
            if cond["type"] == "Ready":
                return cond["status"] == "True"
        return False

    # ---- views ---------------------------------------------------------------------------
    def _lease_view(self, lease: dict) -> dict:
        """Node heartbeat Leases are renewed every 10 simulated seconds, computed when read."""
        meta = lease["metadata"]
        if meta.get("namespace") != NODE_LEASE_NS or meta["name"] not in self.hosts:
            return lease
        return {
            **lease,
            "spec": {**lease["spec"], "renewTime": microtime(self._last_heartbeat(meta["name"]))},
        }

    def _last_heartbeat(self, name: str) -> datetime:
        frozen = self._heartbeat_frozen.get(name)
        if frozen is not None:
            return frozen
        start = self._heartbeat_from[name]
        period = HEARTBEAT_SECONDS * self.scale
        elapsed = (datetime.now(UTC) - start).total_seconds()
        return start + timedelta(seconds=period * math.floor(elapsed / period)) if period else start

    # ---- reconciliation ------------------------------------------------------------------
    def reconcile(self) -> None:
        if self._reconciling:
            return
        self._reconciling = True
        try:
            for _ in range(20):
                if not self._dirty:
                    break
                self._dirty = False
                self._reconcile_node_taints()
                self._reconcile_problem_detector()
                self._reconcile_deployments()
                self._reconcile_replicasets()
                self._reconcile_daemonsets()
                self._schedule_pods()
                self._kubelet_start_pods()
                self._reconcile_pdbs()
        finally:
            self._reconciling = False
            if self._dirty:  # still changing after 20 rounds: go on in the next loop turn
                self._dirty = False
                self._mark_dirty()

    def host_changed(self, name: str) -> None:
        """Host state changed (sentinel, kernel): node-problem-detector, when modelled, reports it."""
        if self.scenario.node_problem_detector is not None:
            self._npd_dirty.add(name)
            self._mark_dirty()

    def _reconcile_problem_detector(self) -> None:
        """node-problem-detector's custom plugin: a node condition mirroring /var/run/reboot-required."""
        npd = self.scenario.node_problem_detector
        names, self._npd_dirty = self._npd_dirty, set()
        if npd is None:
            return
        for name in sorted(names):
            node, host = self.store.get(NODES, "", name), self.hosts.get(name)
            if node is None or host is None:
                continue
            if host.state != "up":
                self._npd_dirty.add(name)  # it runs on the node: nothing changes until the node is back
                continue
            status = "True" if host.reboot_required else "False"
            conds = node["status"].get("conditions", [])
            current = next((c for c in conds if c["type"] == npd.condition_type), None)
            if current is not None and current["status"] == status:
                continue
            stamp = now_rfc3339()
            cond = {
                "type": npd.condition_type,
                "status": status,
                "reason": "RebootRequired" if status == "True" else "NoRebootRequired",
                "message": "/var/run/reboot-required exists"
                if status == "True"
                else "/var/run/reboot-required does not exist",
                "lastHeartbeatTime": stamp,
                "lastTransitionTime": stamp,
            }
            others = [c for c in conds if c["type"] != npd.condition_type]
            self.store.update_internal(
                NODES, {**node, "status": {**node["status"], "conditions": others + [cond]}}
            )

    def _reconcile_node_taints(self) -> None:
        """The node lifecycle controller's part: a cordoned node carries the unschedulable NoSchedule taint."""
        names, self._nodes_dirty = self._nodes_dirty, set()
        for name in sorted(names):
            node = self.store.get(NODES, "", name)
            if node is None:
                continue
            taints = node["spec"].get("taints") or []
            tainted = any(
                t.get("key") == UNSCHEDULABLE_TAINT_KEY and t.get("effect") == "NoSchedule" for t in taints
            )
            cordoned = bool(node["spec"].get("unschedulable"))
            if tainted == cordoned:
                continue
            if cordoned:
                taints = [
                    *taints,
                    {"key": UNSCHEDULABLE_TAINT_KEY, "effect": "NoSchedule", "timeAdded": now_rfc3339()},
                ]
            else:
                taints = [t for t in taints if t.get("key") != UNSCHEDULABLE_TAINT_KEY]
            spec = {**node["spec"], "taints": taints}
            if not taints:
                del spec["taints"]
            self.store.update_internal(NODES, {**node, "spec": spec})

    def _pods(self, keys) -> list[dict]:
        out = []
        for ns, name in sorted(keys):
            pod = self.store.get(PODS, ns, name)
            if pod is not None:
                out.append(pod)
        return out

    def _reconcile_deployments(self) -> None:
        uids, self._deployments_dirty = self._deployments_dirty, set()
        for dep in self._owned_objects(uids):
            meta = dep["metadata"]
            template = dep["spec"]["template"]
            digest = int(hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest(), 16)
            tmpl_hash = name_suffix(random.Random(digest), 10)
            rs_name = f"{meta['name']}-{tmpl_hash}"
            replicas = dep["spec"].get("replicas", 1)
            owned = [
                rs
                for rs in self.store.list(REPLICASETS, meta["namespace"])
                if (controller_of(rs) or {}).get("uid") == meta["uid"]
            ]
            current = next((rs for rs in owned if rs["metadata"]["name"] == rs_name), None)
            if current is None:
                rs_template = copy.deepcopy(template)
                rs_template["metadata"].setdefault("labels", {})["pod-template-hash"] = tmpl_hash
                selector = copy.deepcopy(dep["spec"]["selector"])
                selector.setdefault("matchLabels", {})["pod-template-hash"] = tmpl_hash
                current = self.store.create(
                    REPLICASETS,
                    {
                        "metadata": {
                            "name": rs_name,
                            "namespace": meta["namespace"],
                            "labels": rs_template["metadata"]["labels"],
                            "ownerReferences": [self._owner_ref(dep)],
                        },
                        "spec": {"replicas": replicas, "selector": selector, "template": rs_template},
                        "status": {"replicas": 0},
                    },
                )
            elif current["spec"].get("replicas") != replicas:
                current = self.store.update_internal(
                    REPLICASETS, {**current, "spec": {**current["spec"], "replicas": replicas}}
                )
            for rs in owned:
                if rs["metadata"]["name"] != rs_name and rs["spec"].get("replicas", 0) != 0:
                    self.store.update_internal(REPLICASETS, {**rs, "spec": {**rs["spec"], "replicas": 0}})
            status = current.get("status", {})
            ready = status.get("readyReplicas", 0)
            self._set_status(
                DEPLOYMENTS,
                dep,
                {
                    "observedGeneration": meta.get("generation", 1),
                    "replicas": status.get("replicas", 0),
                    "updatedReplicas": status.get("replicas", 0),
                    "readyReplicas": ready,
                    "availableReplicas": ready,
                    "unavailableReplicas": max(0, replicas - ready),
                    "conditions": [
                        {
                            "type": "Available",
                            "status": "True" if ready >= replicas else "False",
                            "reason": "MinimumReplicasAvailable"
                            if ready >= replicas
                            else "MinimumReplicasUnavailable",
                        }
                    ],
                },
            )

    @staticmethod
    def _owner_ref(owner: dict) -> dict:
        return {
            "apiVersion": owner["apiVersion"],
            "kind": owner["kind"],
            "name": owner["metadata"]["name"],
            "uid": owner["metadata"]["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }

    def _set_status(self, rt, obj: dict, status: dict) -> None:
        # zero counts are omitted (omitempty), except the fields the API declares required
        required = _REQUIRED_STATUS.get(rt.kind, set())
        status = {k: v for k, v in status.items() if v not in (None, 0) or k in required}
        if obj.get("status") != status:
            self.store.update_internal(rt, {**obj, "status": status})

    def _owned_objects(self, uids: set[str]) -> list[dict]:
        """The workload objects with these uids that still exist, in the store's order."""
        found = [obj for obj in map(self._owner, uids) if obj is not None]
        return sorted(found, key=lambda o: (o["metadata"]["namespace"], o["metadata"]["name"]))

    def _live_owned(self, owner: dict) -> list[dict]:
        return self._pods(self.pods.live.get(owner["metadata"]["uid"], {}))

    def _reconcile_replicasets(self) -> None:
        uids, self._replicasets_dirty = self._replicasets_dirty, set()
        for rs in self._owned_objects(uids):
            uid = rs["metadata"]["uid"]
            live = len(self.pods.live.get(uid, ()))
            want = rs["spec"].get("replicas", 1)
            for _ in range(want - live):
                self._create_owned_pod(rs)
            if live > want:
                # remove the least useful pods first: unscheduled, then not ready
                pods = self._live_owned(rs)
                extra = sorted(pods, key=lambda p: (bool(p["spec"].get("nodeName")), is_ready(p)))
                for pod in extra[: live - want]:
                    self._start_graceful_delete(pod, None)
            live, ready = len(self.pods.live.get(uid, ())), len(self.pods.ready.get(uid, ()))
            self._set_status(
                REPLICASETS,
                rs,
                {
                    "replicas": live,
                    "fullyLabeledReplicas": live,
                    "readyReplicas": ready,
                    "availableReplicas": ready,
                    "observedGeneration": rs["metadata"].get("generation", 1),
                },
            )

    def _create_owned_pod(self, owner: dict, node: str | None = None) -> dict:
        template = copy.deepcopy(owner["spec"]["template"])
        name = f"{owner['metadata']['name']}-{name_suffix(self.rng)}"
        spec = template["spec"]
        if owner["kind"] == "DaemonSet":
            spec["tolerations"] = list(spec.get("tolerations", [])) + DAEMONSET_TOLERATIONS
            spec["nodeName"] = node
        pod = {
            "metadata": {
                "name": name,
                "namespace": owner["metadata"]["namespace"],
                "labels": template["metadata"].get("labels", {}),
                "ownerReferences": [self._owner_ref(owner)],
            },
            "spec": spec,
        }
        return self.create_pod(pod)

    def _daemon_wants(self, ds: dict, node: dict) -> bool:
        tolerations = list(ds["spec"]["template"]["spec"].get("tolerations", [])) + DAEMONSET_TOLERATIONS
        for taint in node["spec"].get("taints", []) or []:
            if taint.get("effect") in ("NoSchedule", "NoExecute") and not tolerates(tolerations, taint):
                return False
        selector = ds["spec"]["template"]["spec"].get("nodeSelector") or {}
        labels = node["metadata"].get("labels", {})
        return all(labels.get(k) == v for k, v in selector.items()) and runs_on(
            ds["spec"]["template"]["spec"], labels
        )

    def _reconcile_daemonsets(self) -> None:
        """Each DaemonSet looks again at the nodes that changed (at every node when it is new or its
        spec changed), creates the pods missing there, and refreshes its status when anything moved."""
        full, self._daemonsets_full = self._daemonsets_full, set()
        nodes_dirty, self._daemonset_nodes_dirty = self._daemonset_nodes_dirty, set()
        status_dirty, self._daemonsets_status_dirty = self._daemonsets_status_dirty, set()
        if not (full or nodes_dirty or status_dirty):
            return
        all_names = None
        for ds in self.store.list(DAEMONSETS):
            uid = ds["metadata"]["uid"]
            if uid in full:
                all_names = all_names or [n["metadata"]["name"] for n in self.store.list(NODES)]
                names = all_names
            else:
                names = sorted(nodes_dirty)
            if not names and uid not in status_dirty:
                continue
            wanted = self._daemonset_nodes[uid]
            if uid in full:
                wanted.clear()
            have = set(self.pods.live.get(uid, {}).values())
            for name in names:
                node = self.store.get(NODES, "", name)
                if node is None or not self._daemon_wants(ds, node):
                    wanted.discard(name)
                    continue
                wanted.add(name)
                if name not in have:
                    self._create_owned_pod(ds, name)
                    have.add(name)
            ready_on = set(self.pods.ready.get(uid, {}).values())
            desired = len(wanted)
            ready = len(wanted & ready_on)
            self._set_status(
                DAEMONSETS,
                ds,
                {
                    "desiredNumberScheduled": desired,
                    "currentNumberScheduled": desired,
                    "updatedNumberScheduled": desired,
                    "numberReady": ready,
                    "numberAvailable": ready,
                    "numberUnavailable": desired - ready,
                    "numberMisscheduled": 0,
                    "observedGeneration": ds["metadata"].get("generation", 1),
                },
            )

    # ---- scheduler -----------------------------------------------------------------------
    def _schedule_pods(self) -> None:
        pending = [p for p in self._pods(self._unbound) if not is_terminating(p)]
        if not pending:
            return
        feasible: dict[str, list[tuple[str, int]]] = {}  # pods of one template share their node filter
        for pod in pending:
            spec = pod["spec"]
            signature = json.dumps(
                [spec.get("tolerations", []), spec.get("nodeSelector") or {}], sort_keys=True
            )
            if signature not in feasible:
                feasible[signature] = self._feasible_nodes(signature, spec)
            node = self._pick_node(pod, feasible[signature])
            if node is None:
                self._mark_unschedulable(pod)
                continue
            stamp = now_rfc3339()
            status = dict(pod.get("status", {}))
            status["conditions"] = [c for c in status.get("conditions", []) if c["type"] != "PodScheduled"]
            status["conditions"].append(
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": stamp}
            )
            self.store.update_internal(
                PODS, {**pod, "spec": {**pod["spec"], "nodeName": node}, "status": status}
            )

    def _mark_unschedulable(self, pod: dict) -> None:
        conds = pod.get("status", {}).get("conditions", [])
        if any(c["type"] == "PodScheduled" and c["status"] == "False" for c in conds):
            return
        status = {
            **pod.get("status", {}),
            "phase": "Pending",
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": f"0/{self.store.count(NODES)} nodes are available.",
                    "lastTransitionTime": now_rfc3339(),
                }
            ],
        }
        self.store.update_internal(PODS, {**pod, "status": status})

    def _feasible_nodes(self, signature: str, spec: dict) -> list[tuple[str, int]]:
        """The Ready nodes a pod spec may run on (cordon, taints, nodeSelector), each with the number of
        PreferNoSchedule taints the pod does not tolerate. Kept per pod spec and brought up to date
        for the nodes that changed since the last pass."""
        entry = self._feasible.get(signature)
        if entry is None:
            if len(self._feasible) > 256:  # one entry per distinct pod template: a bound, not a cache policy
                self._feasible.clear()
            names = {n["metadata"]["name"] for n in self.store.list(NODES)}
            entry = self._feasible[signature] = FeasibleNodes(spec=spec, stale=names)
        for name in entry.stale:
            node = self.store.get(NODES, "", name)
            fit = None if node is None or not self._node_ready(node) else self._fits(entry.spec, node)
            if fit is None:
                entry.nodes.pop(name, None)
            else:
                entry.nodes[name] = fit
        entry.stale.clear()
        return list(entry.nodes.items())

    @staticmethod
    def _fits(spec: dict, node: dict) -> int | None:
        """None when the pod may not run on the node, else the PreferNoSchedule taints it does not
        tolerate there."""
        tolerations = spec.get("tolerations", [])
        if node["spec"].get("unschedulable") and not tolerates(
            tolerations, {"key": UNSCHEDULABLE_TAINT_KEY, "effect": "NoSchedule"}
        ):
            return None
        taints = node["spec"].get("taints", []) or []
        if any(
            t.get("effect") in ("NoSchedule", "NoExecute") and not tolerates(tolerations, t) for t in taints
        ):
            return None
        labels = node["metadata"].get("labels", {})
        if any(labels.get(k) != v for k, v in (spec.get("nodeSelector") or {}).items()):
            return None
        if not runs_on(spec, labels):
            return None
        return sum(
            1 for t in taints if t.get("effect") == "PreferNoSchedule" and not tolerates(tolerations, t)
        )

    def _pick_node(self, pod: dict, candidates: list[tuple[str, int]]) -> str | None:
        """The node for ``pod`` among feasible nodes with room (max_pods), by the scenario's scoring.

        ``spread`` (default) prefers, in this order: no untolerated PreferNoSchedule taint, fewest pods
        of the same controller, fewest pods, name. ``bin-pack`` prefers: no untolerated PreferNoSchedule
        taint, most pods (the fullest node that still has room), name. PreferNoSchedule stays a
        preference in both: a tainted node is used when no untainted one has room.

        The lexicographic order is a simplification of kube-scheduler, which adds up weighted plugin
        scores (TaintToleration, PodTopologySpread, NodeResourcesFit with LeastAllocated or
        MostAllocated, ...) so that one criterion can outweigh another; and pod count stands in for
        allocated resources. A pod bound earlier in the same pass counts at once (the index follows
        every binding)."""
        owner_uid = (controller_of(pod) or {}).get("uid")
        bin_pack = self.scenario.scheduler.scoring == "bin-pack"
        best: tuple[tuple[int, ...], str] | None = None  # (score, node name): the lowest wins
        for name, prefer_not in candidates:
            owners = self.pods.load.get(name) or Counter()
            count = owners.total()
            if count >= self.pool_of[name].max_pods:
                continue
            score: tuple[tuple[int, ...], str]
            if bin_pack:
                score = ((prefer_not, -count), name)
            else:
                score = ((prefer_not, owners[owner_uid] if owner_uid else 0, count), name)
            if best is None or score < best:
                best = score
        return best[1] if best else None

    # ---- kubelet -------------------------------------------------------------------------
    def _kubelet_start_pods(self) -> None:
        for key in sorted(self._to_start):
            pod = self.store.get(PODS, *key)
            if pod is None:
                self._to_start.discard(key)
                continue
            host = self.hosts.get(pod["spec"]["nodeName"])
            if host is None and self.store.get(NODES, "", pod["spec"]["nodeName"]) is None:
                # the pod garbage collector's part: a pod bound to a node that does not exist goes
                self._to_start.discard(key)
                self.store.remove(PODS, *key)
                continue
            if host is None or host.state != "up":
                continue  # started when the node is Ready again
            self._to_start.discard(key)
            uid = pod["metadata"]["uid"]
            if uid in self._started or is_terminating(pod) or is_terminal(pod):
                continue
            self._started.add(uid)
            self._start_pod(pod, host)

    def _start_pod(self, pod: dict, host: Host) -> None:
        """The kubelet starts the pod's container: it runs after CONTAINER_START_SECONDS; an nsenter host
        command runs on the host at once and the pod finishes when the command's simulated time is up."""
        container = pod["spec"]["containers"][0]
        argv = list(container.get("command", [])) + list(container.get("args", []))
        host_command = split_host_command(argv)
        key = (pod["metadata"]["namespace"], pod["metadata"]["name"])
        uid = pod["metadata"]["uid"]
        start = ContainerStart(key, uid, host, host.boots)
        if host.windows and not runs_on(pod["spec"], {OS_LABEL: "windows"}):
            self.after(CONTAINER_START_SECONDS, lambda: self._image_pull_failed(key, uid))
            return
        result = None if host_command is None else self._nsenter(pod, host, host_command)
        self.after(CONTAINER_START_SECONDS, lambda: self._container_running(start, container))
        if result is not None:
            self.after(
                CONTAINER_START_SECONDS + result.seconds, lambda: self._container_exited(start, result)
            )

    @staticmethod
    def _nsenter(pod: dict, host: Host, command: list[str]) -> CommandResult:
        """Run a pod's host command; entering the host's namespaces takes hostPID and a privileged container."""
        container = pod["spec"]["containers"][0]
        privileged = (container.get("securityContext") or {}).get("privileged")
        if not pod["spec"].get("hostPID") or not privileged:
            return CommandResult(
                1, "nsenter: reassociate to namespace 'ns/mnt' failed: Operation not permitted\n"
            )
        return run_host_command(host, command)

    def _started_pod(self, start: ContainerStart) -> dict | None:
        """The pod of ``start`` while its container still runs: the same pod, not terminating, on a host that
        is up and has not rebooted since; None otherwise."""
        current = self.store.get(PODS, *start.key)
        if current is None or current["metadata"]["uid"] != start.uid or is_terminating(current):
            return None
        host = start.host
        return current if host.boots == start.boot and host.state == "up" else None

    def _container_running(self, start: ContainerStart, container: dict) -> None:
        """The container runs: the pod is Running, and Ready now or, with a readiness probe, after its delay."""
        current = self._started_pod(start)
        if current is None:
            return
        probe = container.get("readinessProbe")
        self._write_pod_status(current, "Running", ready=not probe)
        if probe:
            self.after(probe.get("initialDelaySeconds", 0), lambda: self._container_ready(start))

    def _container_ready(self, start: ContainerStart) -> None:
        current = self._started_pod(start)
        if current is not None:
            self._write_pod_status(current, "Running", ready=True)

    def _container_exited(self, start: ContainerStart, result: CommandResult) -> None:
        """The host command is done: its output is the pod's log, and the pod Succeeded or Failed by its exit
        code, unless the command asked for a reboot: then the node reboots instead."""
        current = self._started_pod(start)
        if current is None:
            return
        self.logs[start.uid] = result.output
        self.host_changed(start.host.node_name)
        if result.reboot:
            self.reboot_node(start.host.node_name, requested_by=f"pod {start.key[0]}/{start.key[1]}")
            return
        code = result.exit_code
        self._write_pod_status(current, "Succeeded" if code == 0 else "Failed", ready=False, exit_code=code)

    def _image_pull_failed(self, key: tuple[str, str], uid: str) -> None:
        """A Linux image on a Windows node: the pod stays Pending, its container waiting on the pull."""
        pod = self.store.get(PODS, *key)
        if pod is None or pod["metadata"]["uid"] != uid:
            return
        container = pod["spec"]["containers"][0]
        status = {
            **pod.get("status", {}),
            "phase": "Pending",
            "containerStatuses": [
                {
                    "name": container["name"],
                    "image": container.get("image", ""),
                    "imageID": "",
                    "ready": False,
                    "restartCount": 0,
                    "started": False,
                    "state": {
                        "waiting": {
                            "reason": "ErrImagePull",
                            "message": f"failed to pull image {container.get('image', '')}: no matching "
                            "manifest for windows(10.0.20348)/amd64 in the manifest list entries",
                        }
                    },
                }
            ],
        }
        self.store.update_internal(PODS, {**pod, "status": status})

    def _write_pod_status(self, pod: dict, phase: str, ready: bool, exit_code: int | None = None) -> None:
        stamp = now_rfc3339()
        status = dict(pod.get("status", {}))
        if not status.get("podIP"):
            self._ip_counter += 1
            status["podIP"] = str(ipaddress.ip_address("10.244.128.0") + self._ip_counter)
            status["podIPs"] = [{"ip": status["podIP"]}]
            node = self.store.get(NODES, "", pod["spec"]["nodeName"])
            status["hostIP"] = node["status"]["addresses"][0]["address"] if node else ""
            status["startTime"] = stamp
        status["phase"] = phase
        status["conditions"] = [
            {"type": "Initialized", "status": "True", "lastTransitionTime": stamp},
            {"type": "Ready", "status": "True" if ready else "False", "lastTransitionTime": stamp},
            {"type": "ContainersReady", "status": "True" if ready else "False", "lastTransitionTime": stamp},
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": stamp},
        ]
        container = pod["spec"]["containers"][0]
        state: dict[str, dict[str, Any]]
        if exit_code is None:
            state = {"running": {"startedAt": stamp}}
        else:
            state = {
                "terminated": {
                    "exitCode": exit_code,
                    "reason": "Completed" if exit_code == 0 else "Error",
                    "startedAt": status.get("startTime", stamp),
                    "finishedAt": stamp,
                }
            }
        status["containerStatuses"] = [
            {
                "name": container["name"],
                "image": container.get("image", ""),
                "imageID": "",
                "ready": ready,
                "restartCount": 0,
                "started": True,
                "state": state,
                "containerID": f"containerd://{uuid.uuid4().hex}",
            }
        ]
        self.store.update_internal(PODS, {**pod, "status": status})

    # ---- pods: creation and deletion -----------------------------------------------------
    def create_pod(self, pod: dict) -> dict:
        # the store keeps a deep copy; here only the top level and spec are changed
        spec = dict(pod.get("spec") or {})
        pod = {**pod, "spec": spec}
        if not spec.get("containers"):
            raise invalid("Pod", pod["metadata"].get("name", ""), "spec.containers", "Required value")
        spec.setdefault("restartPolicy", "Always")
        spec.setdefault("terminationGracePeriodSeconds", 30)
        spec.setdefault("schedulerName", "default-scheduler")
        spec.setdefault("dnsPolicy", "ClusterFirst")
        tolerations = list(spec.get("tolerations", []))
        for key in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"):
            if not any(
                t.get("key") == key or (t.get("operator") == "Exists" and not t.get("key"))
                for t in tolerations
            ):
                tolerations.append(
                    {"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}
                )
        spec["tolerations"] = tolerations
        pod["status"] = {"phase": "Pending", "qosClass": "Burstable"}
        return self.store.create(PODS, pod)

    def delete_pod(
        self,
        namespace: str,
        name: str,
        grace: int | None,
        preconditions: dict | None,
        through_eviction: bool = False,
    ) -> dict:
        pod = self.store.must_get(PODS, namespace, name)
        check_preconditions(pod, preconditions, "pods")
        if not through_eviction and not is_terminating(pod):
            self._count_violation_if_covered(pod, cause="pod deleted directly")
        if through_eviction:
            self.record("pod_evicted", pod["spec"].get("nodeName"), pod=f"{namespace}/{name}")
        else:
            self.record("pod_deleted", pod["spec"].get("nodeName"), pod=f"{namespace}/{name}")
        return self._start_graceful_delete(pod, grace)

    def _start_graceful_delete(self, pod: dict, grace: int | None) -> dict:
        if grace is None:
            grace = pod["spec"].get("terminationGracePeriodSeconds", 30)
        meta = pod["metadata"]
        node = pod["spec"].get("nodeName")
        host = self.hosts.get(node) if node else None
        running = (
            host is not None
            and host.state == "up"
            and not is_terminal(pod)
            and pod.get("status", {}).get("phase") != "Pending"
        )
        if grace <= 0 or not running:
            return self.store.remove(PODS, meta["namespace"], meta["name"])
        if is_terminating(pod):
            return pod
        stamp = datetime.now(UTC) + timedelta(seconds=grace * self.scale)
        pod = self.store.update_internal(
            PODS,
            {
                **pod,
                "metadata": {
                    **meta,
                    "deletionTimestamp": stamp.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "deletionGracePeriodSeconds": grace,
                },
            },
        )
        uid = meta["uid"]

        def finish() -> None:
            current = self.store.get(PODS, meta["namespace"], meta["name"])
            if current is not None and current["metadata"]["uid"] == uid:
                self.store.remove(PODS, meta["namespace"], meta["name"])

        # the kubelet sends SIGTERM; a well-behaved container exits within a fraction of its grace period
        self.after(min(grace, max(1.0, grace / 2)), finish)
        return pod

    # ---- PodDisruptionBudgets ------------------------------------------------------------
    def pdb_status(self, pdb: dict) -> dict:
        """The status the disruption controller computes for a PDB, from the current pods."""
        members = self.pdb_members.members[pdb["metadata"]["uid"]]  # every caller passes a stored budget
        healthy = sum(1 for m in members.values() if m.healthy)
        spec = pdb["spec"]
        if isinstance(spec.get("minAvailable"), int):
            expected = len(members)
            desired = spec["minAvailable"]
        else:
            expected = self._expected_scale(pdb["metadata"]["namespace"], members.values())
            if spec.get("minAvailable") is not None:
                desired = scaled_int(spec["minAvailable"], expected, round_up=True)
            else:
                desired = max(0, expected - scaled_int(spec.get("maxUnavailable", 0), expected, True))
        allowed = max(0, healthy - desired)
        return {
            "observedGeneration": pdb["metadata"].get("generation", 1),
            "currentHealthy": healthy,
            "desiredHealthy": desired,
            "expectedPods": expected,
            "disruptionsAllowed": allowed,
            "conditions": [
                {
                    "type": "DisruptionAllowed",
                    "status": "True" if allowed else "False",
                    "reason": "SufficientPods" if allowed else "InsufficientPods",
                    "message": "",
                    "observedGeneration": pdb["metadata"].get("generation", 1),
                }
            ],
        }

    def _expected_scale(self, namespace: str, members) -> int:
        owners: dict[str, int] = {}
        loose = 0
        for member in members:
            if member.owner is None:
                loose += 1
                continue
            kind, name, uid = member.owner
            if uid in owners:
                continue
            owner = self._find_owner(namespace, {"kind": kind, "name": name})
            owners[uid] = (owner or {}).get("spec", {}).get("replicas", 1)
            if owner and owner["kind"] == "DaemonSet":
                owners[uid] = owner.get("status", {}).get("desiredNumberScheduled", 0)
        return sum(owners.values()) + loose

    def _find_owner(self, namespace: str, ref: dict) -> dict | None:
        kinds = {"ReplicaSet": REPLICASETS, "DaemonSet": DAEMONSETS, "Deployment": DEPLOYMENTS}
        rt = kinds.get(ref.get("kind", ""))
        return self.store.get(rt, namespace, ref["name"]) if rt else None

    def _reconcile_pdbs(self) -> None:
        namespaces, self._pdb_namespaces_dirty = self._pdb_namespaces_dirty, set()
        for pdb in [p for ns in sorted(namespaces) for p in self.store.list(PDBS, ns)]:
            status = self.pdb_status(pdb)
            old = pdb.get("status", {})
            if {k: v for k, v in old.items() if k != "conditions"} != {
                k: v for k, v in status.items() if k != "conditions"
            }:
                stamp = now_rfc3339()
                for cond in status["conditions"]:
                    cond["lastTransitionTime"] = stamp
                self.store.update_internal(PDBS, {**pdb, "status": status})

    def pdbs_for(self, pod: dict, for_eviction: bool) -> list[dict]:
        labels = pod["metadata"].get("labels") or {}
        out = []
        for pdb in self.store.list(PDBS, pod["metadata"]["namespace"]):
            selector = selector_from_dict(pdb["spec"].get("selector"))
            if for_eviction and selector.empty:
                continue
            if selector.matches(labels):
                out.append(pdb)
        return out

    def _count_violation_if_covered(self, pod: dict, cause: str) -> None:
        if not is_ready(pod) or is_terminating(pod) or is_terminal(pod):
            return
        for pdb in self.pdbs_for(pod, for_eviction=True):
            if self.pdb_status(pdb)["disruptionsAllowed"] <= 0:
                self.invariants["pdb_violations"] += 1
                self.record(
                    "pdb_violation",
                    pod["spec"].get("nodeName"),
                    pod=f"{pod['metadata']['namespace']}/{pod['metadata']['name']}",
                    pdb=pdb["metadata"]["name"],
                    cause=cause,
                )

    def evict(self, namespace: str, name: str, body: dict) -> None:
        """The eviction subresource, checked in the order the real API server checks it."""
        body_name = (body.get("metadata") or {}).get("name")
        if body_name != name:
            raise bad_request(f"name in URL does not match name in Eviction object: {body_name}/{name}")
        pod = self.store.must_get(PODS, namespace, name)
        options = body.get("deleteOptions") or {}
        grace = options.get("gracePeriodSeconds")
        preconditions = options.get("preconditions")
        if is_terminal(pod) or pod.get("status", {}).get("phase") == "Pending" or is_terminating(pod):
            self.delete_pod(namespace, name, grace, preconditions, through_eviction=True)
            return
        pdbs = self.pdbs_for(pod, for_eviction=True)
        if len(pdbs) > 1:
            raise ApiError(
                500,
                "InternalError",
                "This pod has more than one PodDisruptionBudget, which the "
                "eviction subresource does not support.",
            )
        if pdbs:
            pdb = pdbs[0]
            status = self.pdb_status(pdb)
            policy = pdb["spec"].get("unhealthyPodEvictionPolicy", "IfHealthyBudget")
            unhealthy = not is_ready(pod)
            if unhealthy and (
                policy == "AlwaysAllow" or status["currentHealthy"] >= status["desiredHealthy"]
            ):
                self.delete_pod(namespace, name, grace, preconditions, through_eviction=True)
                return
            if unhealthy or status["disruptionsAllowed"] <= 0:
                pdb_name = pdb["metadata"]["name"]
                raise ApiError(
                    429,
                    "TooManyRequests",
                    "Cannot evict pod as it would violate the pod's disruption budget.",
                    {
                        "causes": [
                            {
                                "reason": "DisruptionBudget",
                                "message": f"The disruption budget {pdb_name} needs {status['desiredHealthy']} "
                                f"healthy pods and has {status['currentHealthy']} currently",
                            }
                        ]
                    },
                )
        self.delete_pod(namespace, name, grace, preconditions, through_eviction=True)

    # ---- node reboots --------------------------------------------------------------------
    def reboot_node(self, name: str, requested_by: str) -> None:
        host = self.hosts[name]
        if host.state != "up":
            return
        host.state = "booting"
        host.boots += 1
        old_kernel, old_boot = host.running_kernel, host.boot_id
        if host.pending_kernel:
            host.running_kernel = host.pending_kernel
        host.pending_kernel = None
        host.reboot_required = False
        host.boot_id = str(uuid.uuid4())
        self.invariants["reboots"][name] = self.invariants["reboots"].get(name, 0) + 1
        # the kubelet stops renewing: the Lease keeps the last renewal made before the shutdown
        self._heartbeat_frozen[name] = self._last_heartbeat(name)
        self.record(
            "rebooted",
            name,
            kernel_before=old_kernel,
            kernel_after=host.running_kernel,
            boot_id_before=old_boot,
            boot_id_after=host.boot_id,
            requested_by=requested_by,
        )
        self._set_node_ready(
            name, "False", "KubeletNotReady", "node is shutting down for a reboot", NOT_READY_TAINTS
        )
        self.record("not_ready", name)
        for pod in self._pods(self.pods.by_node.get(name, ())):
            self._count_violation_if_covered(pod, cause="node rebooted with the pod on it")
            self.store.remove(PODS, pod["metadata"]["namespace"], pod["metadata"]["name"])
        self.after(host.boot_seconds, lambda: self._boot_finished(name))

    def repair_node(self, name: str) -> None:
        """An operator repaired a node that never came back: it boots and rejoins."""
        host = self.hosts[name]
        host.state = "booting"
        host.boot_id = str(uuid.uuid4())
        self.after(host.boot_seconds, lambda: self._boot_finished(name))

    def _boot_finished(self, name: str) -> None:
        host = self.hosts[name]
        node = self.store.get(NODES, "", name)
        if node is None:
            return
        if host.fail_after_reboot:
            host.state = "down"
            self._set_node_ready(
                name,
                "Unknown",
                "NodeStatusUnknown",
                "Kubelet stopped posting node status.",
                UNREACHABLE_TAINTS,
            )
            self.record("node_lost", name)
            return
        host.state = "up"
        self._heartbeat_frozen.pop(name, None)
        self._heartbeat_from[name] = datetime.now(UTC)
        node = self.store.must_get(NODES, "", name)
        info = {**node["status"]["nodeInfo"], "bootID": host.boot_id, "kernelVersion": host.running_kernel}
        node = {**node, "status": {**node["status"], "nodeInfo": info}}
        self.store.update_internal(NODES, node)
        self._set_node_ready(name, "True", "KubeletReady", "kubelet is posting ready status", [])
        self.record("ready", name, kernel=host.running_kernel, boot_id=host.boot_id)
        self.host_changed(name)
        self.emit_event(
            self.store.must_get(NODES, "", name),
            "Rebooted",
            f"Node {name} has been rebooted, boot id: {host.boot_id}",
            type_="Warning",
        )

    def _set_node_ready(self, name: str, ready: str, reason: str, message: str, taints: list[dict]) -> None:
        node = self.store.must_get(NODES, "", name)
        kept = [t for t in node["spec"].get("taints", []) or [] if t["key"] not in SYSTEM_TAINT_KEYS]
        stamp = now_rfc3339()
        new_taints = kept + [{**t, "timeAdded": stamp} if t["effect"] == "NoExecute" else t for t in taints]
        spec = {**node["spec"], "taints": new_taints}
        if not new_taints:
            spec.pop("taints")
        kubelet_types = {"MemoryPressure", "DiskPressure", "PIDPressure", "Ready"}
        others = [c for c in node["status"].get("conditions", []) if c["type"] not in kubelet_types]
        status = {**node["status"], "conditions": self._conditions(ready, reason, message) + others}
        self.store.update_internal(NODES, {**node, "spec": spec, "status": status})

    # ---- Leases --------------------------------------------------------------------------
    @staticmethod
    def check_lease(lease: dict) -> None:
        """Real servers reject Lease MicroTime fields without exactly six fractional digits."""
        spec = lease.get("spec") or {}
        for name in ("acquireTime", "renewTime"):
            value = spec.get(name)
            if value is not None and not MICROTIME.match(str(value)):
                raise bad_request(
                    f'Lease in version "v1" cannot be handled as a Lease: parsing time '
                    f'"{value}" as "2006-01-02T15:04:05.000000Z07:00": cannot parse'
                )

    # ---- observation ---------------------------------------------------------------------
    def invariants_report(self) -> dict:
        return {
            **self.invariants,
            "reboots": dict(self.invariants["reboots"]),
            "unschedulable_now": sorted(self._unschedulable),
            "not_ready_now": sorted(self._not_ready),
        }

    # ---- node pool changes (AKS upgrades through the ARM emulator) -----------------------
    def add_node(self, pool: PoolSpec, index: int) -> str:
        """Join a new VMSS instance of ``pool``, Ready, as AKS does when it surges a pool; returns its name."""
        nodes = self.store.list(NODES)
        taken_ips = {
            a["address"] for n in nodes for a in n["status"].get("addresses", []) if a["type"] == "InternalIP"
        }
        taken_cidrs = {n["spec"].get("podCIDR") for n in nodes}
        self._add_node(pool, index, None)
        name = node_name(self.scenario.cluster.name, pool.name, index, windows=pool.windows)
        node = self.store.must_get(NODES, "", name)
        if (
            node["status"]["addresses"][0]["address"] in taken_ips
            or node["spec"].get("podCIDR") in taken_cidrs
        ):
            # names of removed nodes free their slot in the host count: pick an address nobody holds
            ip = next(
                str(ipaddress.ip_address("10.224.0.4") + i)
                for i in range(65536)
                if str(ipaddress.ip_address("10.224.0.4") + i) not in taken_ips
            )
            cidr = next(f"10.244.{i}.0/24" for i in range(256) if f"10.244.{i}.0/24" not in taken_cidrs)
            self.store.update_internal(
                NODES,
                {
                    **node,
                    "spec": {**node["spec"], "podCIDR": cidr},
                    "status": {
                        **node["status"],
                        "addresses": [
                            {"type": "InternalIP", "address": ip},
                            {"type": "Hostname", "address": name},
                        ],
                    },
                },
            )
        self.record(
            "node_added",
            name,
            pool=pool.name,
            kubelet_version=f"v{pool.orchestrator_version}",
            node_image_version=pool.node_image_version,
            kernel=pool.kernel,
        )
        self.reconcile()
        return name

    def remove_node(
        self, name: str, cause: str = "node removed with the pod on it", count_violations: bool = True
    ) -> None:
        """Delete a node's VM: its pods, heartbeat Lease, host and Node object go at once. A budget
        breach counts against the caller only when it is the one removing the node (an AKS operation
        the flows asked for), not when someone else deletes it."""
        for pod in self._pods(self.pods.by_node.get(name, ())):
            if count_violations:
                self._count_violation_if_covered(pod, cause=cause)
            self.store.remove(PODS, pod["metadata"]["namespace"], pod["metadata"]["name"])
        if self.store.get(LEASES, NODE_LEASE_NS, name) is not None:
            self.store.remove(LEASES, NODE_LEASE_NS, name)
        if self.store.get(NODES, "", name) is not None:
            self.store.remove(NODES, "", name)
        self.hosts.pop(name, None)
        self.pool_of.pop(name, None)
        self._heartbeat_from.pop(name, None)
        self._heartbeat_frozen.pop(name, None)
        self.record("node_removed", name, cause=cause)
        self.reconcile()


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
