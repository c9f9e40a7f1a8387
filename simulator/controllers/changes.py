"""Change tracking: the store's listener.

Every change to a pod, workload object, budget or node lands here first. ``ChangeTracking`` keeps the
indexes up to date, marks what each controller must look at again in the next reconcile, records
cordons, and follows the unschedulable and not-Ready node sets with their peaks in the invariants.
Changes to Jobs, new namespaces and pods gone are handed to the controller that owns them.
"""

from __future__ import annotations

from simulator.controllers.admission import Admission
from simulator.controllers.common import (
    DAEMONSETS,
    DEPLOYMENTS,
    JOBS,
    NAMESPACES,
    NODES,
    PDBS,
    PODS,
    REPLICASETS,
    node_ready,
)
from simulator.controllers.jobs import JobController
from simulator.controllers.processes import PodProcesses
from simulator.controllers.state import ClusterState
from simulator.indexes import (
    changed_object,
    controller_of,
)
from simulator.k8s.resources import ResourceType


class ChangeTracking:
    """The store's listener: routes each change to the controllers it concerns."""

    def __init__(
        self, state: ClusterState, jobs: JobController, admission: Admission, processes: PodProcesses
    ):
        self.state = state
        self.jobs = jobs
        self.admission = admission
        self.processes = processes

    def on_change(self, rt: ResourceType, kind: str, old: dict | None, new: dict | None) -> None:
        """The store's listener: the controllers a change concerns will look again at the next reconcile."""
        if rt is PODS:
            self._pod_changed(old, new)
        elif rt in (DEPLOYMENTS, REPLICASETS, DAEMONSETS):
            self._owner_changed(rt, old, new)
        elif rt is PDBS:
            self._pdb_changed(old, new)
        elif rt is NODES:
            self._node_changed(old, new)
        elif rt is JOBS:
            self.jobs.job_changed(old, new)
        elif rt is NAMESPACES and old is None and new is not None:
            self.admission.namespace_added(new["metadata"]["name"])
        self.state.mark_dirty()

    def _pdb_changed(self, old: dict | None, new: dict | None) -> None:
        """A budget changed: its members are matched again when its spec did, its namespace's status
        is computed again either way."""
        namespace = changed_object(old, new)["metadata"]["namespace"]
        if old is None or new is None or old["spec"] != new["spec"]:
            self.state.pdb_members.set_pdb(old, new, self.state.store.list(PODS, namespace))
        self.state.pdb_namespaces_dirty.add(namespace)

    def _node_changed(self, old: dict | None, new: dict | None) -> None:
        """A node changed: cordons are recorded, the scheduler and the DaemonSet controller look at the
        node again, and the unschedulable and not-Ready sets (and their peaks) follow it."""
        name = changed_object(old, new)["metadata"]["name"]
        was = bool(old and old.get("spec", {}).get("unschedulable"))
        now = bool(new and new.get("spec", {}).get("unschedulable"))
        if now != was and new is not None:  # a deleted node is gone, not uncordoned
            self.state.record("cordoned" if now else "uncordoned", name)
        if new is not None:
            self.state.nodes_dirty.add(name)
        self.state.daemonset_nodes_dirty.add(name)
        for entry in self.state.feasible.values():
            entry.stale.add(name)
        if now:
            self.state.unschedulable.add(name)
        else:
            self.state.unschedulable.discard(name)
        self._node_readiness_changed(name, new)
        inv = self.state.invariants
        inv["max_unschedulable"] = max(inv["max_unschedulable"], len(self.state.unschedulable))
        inv["max_not_ready"] = max(inv["max_not_ready"], len(self.state.not_ready))
        disrupted = self.state.unschedulable | self.state.not_ready
        inv["max_disrupted"] = max(inv["max_disrupted"], len(disrupted))
        self._peaks_by_place(name, new, disrupted)

    def _peaks_by_place(self, name: str, new: dict | None, disrupted: set[str]) -> None:
        """The peaks of disrupted nodes within the changed node's zone and within its pool."""
        if new is not None:
            labels = new["metadata"].get("labels") or {}
            self.state.place_of[name] = (
                labels.get("topology.kubernetes.io/zone", ""),
                labels.get("kubernetes.azure.com/agentpool", ""),
            )
        zone, pool = self.state.place_of.get(name, ("", ""))
        places = [self.state.place_of.get(n, ("", "")) for n in disrupted]
        inv = self.state.invariants
        for peaks, value, index in (
            (inv["max_disrupted_per_zone"], zone, 0),
            (inv["max_disrupted_per_pool"], pool, 1),
        ):
            count = sum(1 for place in places if place[index] == value)
            peaks[value] = max(peaks.get(value, 0), count)

    def _node_readiness_changed(self, name: str, new: dict | None) -> None:
        """Track the not-Ready nodes; a node Ready again has the kubelet start the pods bound to it."""
        ready = new is not None and node_ready(new)
        if ready and name in self.state.not_ready:
            self.state.to_start |= self.state.pods.by_node.get(name, set())
        if ready:
            self.state.not_ready.discard(name)
        elif new is not None:
            self.state.not_ready.add(name)
        else:
            self.state.not_ready.discard(name)

    def _pod_changed(self, old: dict | None, new: dict | None) -> None:
        self.state.pods.change(old, new)
        self.state.pdb_members.pod_changed(old, new)
        pod = changed_object(old, new)
        key = (pod["metadata"]["namespace"], pod["metadata"]["name"])
        if new is None:  # deleted: ``pod`` is the old version
            self.state.started.discard(pod["metadata"]["uid"])
            self.processes.pod_removed(pod["metadata"]["uid"])
            self.state.unbound.discard(key)
            self.state.to_start.discard(key)
        elif not new["spec"].get("nodeName"):
            self.state.unbound.add(key)
        else:
            self.state.unbound.discard(key)
            if new["metadata"]["uid"] not in self.state.started:
                self.state.to_start.add(key)
        self.state.pdb_namespaces_dirty.add(key[0])
        for version in [v for v in (old, new) if v is not None]:
            owner = controller_of(version)
            if owner is None:
                continue
            if owner.get("kind") == "ReplicaSet":
                self.state.replicasets_dirty.add(owner["uid"])
            elif owner.get("kind") == "Job":
                self.state.jobs_dirty.add(owner["uid"])
            elif owner.get("kind") == "DaemonSet":
                self.state.daemonsets_status_dirty.add(owner["uid"])
                if version["spec"].get("nodeName"):  # a daemon pod gone from its node comes back
                    self.state.daemonset_nodes_dirty.add(version["spec"]["nodeName"])

    def _owner_changed(self, rt: ResourceType, old: dict | None, new: dict | None) -> None:
        """A workload controller's object changed: its controller looks at it again, and so does the
        controller that owns it (a Deployment reads its ReplicaSets' status)."""
        obj = changed_object(old, new)
        meta = obj["metadata"]
        uid = meta["uid"]
        if new is None:
            self.state.owners.pop(uid, None)
        else:
            self.state.owners[uid] = (rt, meta["namespace"], meta["name"])
        spec_changed = old is None or new is None or old.get("spec") != new.get("spec")
        if rt is DEPLOYMENTS and spec_changed:
            self.state.deployments_dirty.add(uid)
        elif rt is REPLICASETS:
            if spec_changed:
                self.state.replicasets_dirty.add(uid)
            parent = controller_of(obj)
            if parent is not None:
                self.state.deployments_dirty.add(parent["uid"])
        elif rt is DAEMONSETS:
            if spec_changed:
                self.state.daemonsets_full.add(uid)
            # the budget's expected pods follow the DaemonSet's desired count
            self.state.pdb_namespaces_dirty.add(meta["namespace"])
