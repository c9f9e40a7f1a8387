"""Node lifecycle: cordon taints, heartbeats, reboots, readiness, and nodes joining and leaving.

``NodeController`` owns the unschedulable taint of a cordoned node (the node lifecycle controller's
part), node heartbeat Leases and their rules, host reboots and repairs with the node's Ready condition
and taints, and the node pool changes the ARM emulator makes (add and remove a node).
"""

from __future__ import annotations

import ipaddress
import math
import uuid
from datetime import UTC, datetime, timedelta

from simulator.controllers.build import ScenarioBuilder, node_conditions
from simulator.controllers.common import (
    HEARTBEAT_SECONDS,
    LEASES,
    MICROTIME,
    NODE_LEASE_NS,
    NODES,
    NOT_READY_TAINTS,
    PODS,
    SYSTEM_TAINT_KEYS,
    UNREACHABLE_TAINTS,
    UNSCHEDULABLE_TAINT_KEY,
    microtime,
    node_name,
)
from simulator.controllers.disruption import DisruptionBudgets
from simulator.controllers.problem_detector import ProblemDetector
from simulator.controllers.state import ClusterState
from simulator.k8s.errors import bad_request
from simulator.k8s.store import now_rfc3339
from simulator.scenario import PoolSpec


class NodeController:
    """Node readiness, heartbeats, reboots, and nodes added or removed.

    ``builder`` makes a node that joins; ``budgets`` counts the pods a reboot or a removal takes down
    against their budgets; ``detector`` looks again at a node that booted."""

    def __init__(
        self,
        state: ClusterState,
        builder: ScenarioBuilder,
        budgets: DisruptionBudgets,
        detector: ProblemDetector,
    ):
        self.state = state
        self.builder = builder
        self.budgets = budgets
        self.detector = detector

    def reconcile_taints(self) -> None:
        """The node lifecycle controller's part: a cordoned node carries the unschedulable NoSchedule taint."""
        names, self.state.nodes_dirty = self.state.nodes_dirty, set()
        for name in sorted(names):
            node = self.state.store.get(NODES, "", name)
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
            self.state.store.update_internal(NODES, {**node, "spec": spec})

    def lease_view(self, lease: dict) -> dict:
        """Node heartbeat Leases are renewed every 10 simulated seconds, computed when read."""
        meta = lease["metadata"]
        if meta.get("namespace") != NODE_LEASE_NS or meta["name"] not in self.state.hosts:
            return lease
        return {
            **lease,
            "spec": {**lease["spec"], "renewTime": microtime(self._last_heartbeat(meta["name"]))},
        }

    def _last_heartbeat(self, name: str) -> datetime:
        frozen = self.state.heartbeat_frozen.get(name)
        if frozen is not None:
            return frozen
        start = self.state.heartbeat_from[name]
        period = HEARTBEAT_SECONDS * self.state.scale
        elapsed = (datetime.now(UTC) - start).total_seconds()
        return start + timedelta(seconds=period * math.floor(elapsed / period)) if period else start

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

    def reboot_node(self, name: str, requested_by: str) -> None:
        host = self.state.hosts[name]
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
        self.state.invariants["reboots"][name] = self.state.invariants["reboots"].get(name, 0) + 1
        # the kubelet stops renewing: the Lease keeps the last renewal made before the shutdown
        self.state.heartbeat_frozen[name] = self._last_heartbeat(name)
        self.state.record(
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
        self.state.record("not_ready", name)
        for pod in self.state.pods_at(self.state.pods.by_node.get(name, ())):
            self.budgets.count_violation_if_covered(pod, cause="node rebooted with the pod on it")
            self.state.store.remove(PODS, pod["metadata"]["namespace"], pod["metadata"]["name"])
        self.state.after(host.boot_seconds, lambda: self._boot_finished(name))

    def repair_node(self, name: str) -> None:
        """An operator repaired a node that never came back: it boots and rejoins."""
        host = self.state.hosts[name]
        host.state = "booting"
        host.boot_id = str(uuid.uuid4())
        self.state.after(host.boot_seconds, lambda: self._boot_finished(name))

    def _boot_finished(self, name: str) -> None:
        host = self.state.hosts[name]
        node = self.state.store.get(NODES, "", name)
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
            self.state.record("node_lost", name)
            return
        host.state = "up"
        self.state.heartbeat_frozen.pop(name, None)
        self.state.heartbeat_from[name] = datetime.now(UTC)
        node = self.state.store.must_get(NODES, "", name)
        info = {**node["status"]["nodeInfo"], "bootID": host.boot_id, "kernelVersion": host.running_kernel}
        node = {**node, "status": {**node["status"], "nodeInfo": info}}
        self.state.store.update_internal(NODES, node)
        self._set_node_ready(name, "True", "KubeletReady", "kubelet is posting ready status", [])
        self.state.record("ready", name, kernel=host.running_kernel, boot_id=host.boot_id)
        self.detector.host_changed(name)
        self.state.emit_event(
            self.state.store.must_get(NODES, "", name),
            "Rebooted",
            f"Node {name} has been rebooted, boot id: {host.boot_id}",
            type_="Warning",
        )

    def _set_node_ready(self, name: str, ready: str, reason: str, message: str, taints: list[dict]) -> None:
        node = self.state.store.must_get(NODES, "", name)
        kept = [t for t in node["spec"].get("taints", []) or [] if t["key"] not in SYSTEM_TAINT_KEYS]
        stamp = now_rfc3339()
        new_taints = kept + [{**t, "timeAdded": stamp} if t["effect"] == "NoExecute" else t for t in taints]
        spec = {**node["spec"], "taints": new_taints}
        if not new_taints:
            spec.pop("taints")
        kubelet_types = {"MemoryPressure", "DiskPressure", "PIDPressure", "Ready"}
        others = [c for c in node["status"].get("conditions", []) if c["type"] not in kubelet_types]
        status = {**node["status"], "conditions": node_conditions(ready, reason, message) + others}
        self.state.store.update_internal(NODES, {**node, "spec": spec, "status": status})

    def add_node(self, pool: PoolSpec, index: int) -> str:
        """Join a new VMSS instance of ``pool``, Ready, as AKS does when it surges a pool; returns its name.
        The caller reconciles."""
        nodes = self.state.store.list(NODES)
        taken_ips = {
            a["address"] for n in nodes for a in n["status"].get("addresses", []) if a["type"] == "InternalIP"
        }
        taken_cidrs = {n["spec"].get("podCIDR") for n in nodes}
        self.builder.add_node(pool, index, None)
        name = node_name(self.state.scenario.cluster.name, pool.name, index, windows=pool.windows)
        node = self.state.store.must_get(NODES, "", name)
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
            self.state.store.update_internal(
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
        self.state.record(
            "node_added",
            name,
            pool=pool.name,
            kubelet_version=f"v{pool.orchestrator_version}",
            node_image_version=pool.node_image_version,
            kernel=pool.kernel,
        )
        return name

    def remove_node(
        self, name: str, cause: str = "node removed with the pod on it", count_violations: bool = True
    ) -> None:
        """Delete a node's VM: its pods, heartbeat Lease, host and Node object go at once. A budget
        breach counts against the caller only when it is the one removing the node (an AKS operation
        the flows asked for), not when someone else deletes it. The caller reconciles."""
        for pod in self.state.pods_at(self.state.pods.by_node.get(name, ())):
            if count_violations:
                self.budgets.count_violation_if_covered(pod, cause=cause)
            self.state.store.remove(PODS, pod["metadata"]["namespace"], pod["metadata"]["name"])
        if self.state.store.get(LEASES, NODE_LEASE_NS, name) is not None:
            self.state.store.remove(LEASES, NODE_LEASE_NS, name)
        if self.state.store.get(NODES, "", name) is not None:
            self.state.store.remove(NODES, "", name)
        self.state.hosts.pop(name, None)
        self.state.pool_of.pop(name, None)
        self.state.heartbeat_from.pop(name, None)
        self.state.heartbeat_frozen.pop(name, None)
        self.state.record("node_removed", name, cause=cause)
