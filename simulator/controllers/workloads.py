"""The workload controllers: Deployments, ReplicaSets and DaemonSets.

``WorkloadControllers`` owns a Deployment's ReplicaSet for its current template, a ReplicaSet's pod
count, the DaemonSet pod on each node it wants, the pods these controllers create, and their status.
"""

from __future__ import annotations

import copy
import hashlib
import json
import random
from collections import defaultdict

from simulator.controllers.common import (
    DAEMONSET_TOLERATIONS,
    DAEMONSETS,
    DEPLOYMENTS,
    NODES,
    REPLICASETS,
    name_suffix,
    runs_on,
    tolerates,
)
from simulator.controllers.pods import PodLifecycle
from simulator.controllers.state import ClusterState
from simulator.indexes import (
    controller_of,
    is_ready,
)

# status fields without omitempty: clients (the Python client validates them) expect them even when 0
_REQUIRED_STATUS = {
    "ReplicaSet": {"replicas"},
    "DaemonSet": {"currentNumberScheduled", "numberMisscheduled", "desiredNumberScheduled", "numberReady"},
}


class WorkloadControllers:
    """The Deployment, ReplicaSet and DaemonSet controllers; ``pod_lifecycle`` creates and deletes their pods."""

    def __init__(self, state: ClusterState, pod_lifecycle: PodLifecycle):
        self.state = state
        self.pod_lifecycle = pod_lifecycle
        self._daemonset_nodes: dict[str, set[str]] = defaultdict(set)  # uid -> nodes it wants a pod on

    def reconcile_deployments(self) -> None:
        uids, self.state.deployments_dirty = self.state.deployments_dirty, set()
        for dep in self._owned_objects(uids):
            self._reconcile_deployment(dep)

    def _reconcile_deployment(self, dep: dict) -> None:
        """A Deployment's ReplicaSet for its current template runs its replicas, older ones none."""
        meta = dep["metadata"]
        template = dep["spec"]["template"]
        digest = int(hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest(), 16)
        tmpl_hash = name_suffix(random.Random(digest), 10)
        rs_name = f"{meta['name']}-{tmpl_hash}"
        replicas = dep["spec"].get("replicas", 1)
        owned = [
            rs
            for rs in self.state.store.list(REPLICASETS, meta["namespace"])
            if (controller_of(rs) or {}).get("uid") == meta["uid"]
        ]
        current = next((rs for rs in owned if rs["metadata"]["name"] == rs_name), None)
        if current is None:
            current = self._create_replicaset(dep, rs_name, tmpl_hash, replicas)
        elif current["spec"].get("replicas") != replicas:
            current = self.state.store.update_internal(
                REPLICASETS, {**current, "spec": {**current["spec"], "replicas": replicas}}
            )
        for rs in owned:
            if rs["metadata"]["name"] != rs_name and rs["spec"].get("replicas", 0) != 0:
                self.state.store.update_internal(REPLICASETS, {**rs, "spec": {**rs["spec"], "replicas": 0}})
        self._set_deployment_status(dep, current, replicas)

    def _create_replicaset(self, dep: dict, rs_name: str, tmpl_hash: str, replicas: int) -> dict:
        """The ReplicaSet of a Deployment's template, labelled and selected by the template's hash."""
        rs_template = copy.deepcopy(dep["spec"]["template"])
        rs_template["metadata"].setdefault("labels", {})["pod-template-hash"] = tmpl_hash
        selector = copy.deepcopy(dep["spec"]["selector"])
        selector.setdefault("matchLabels", {})["pod-template-hash"] = tmpl_hash
        return self.state.store.create(
            REPLICASETS,
            {
                "metadata": {
                    "name": rs_name,
                    "namespace": dep["metadata"]["namespace"],
                    "labels": rs_template["metadata"]["labels"],
                    "ownerReferences": [self._owner_ref(dep)],
                },
                "spec": {"replicas": replicas, "selector": selector, "template": rs_template},
                "status": {"replicas": 0},
            },
        )

    def _set_deployment_status(self, dep: dict, current: dict, replicas: int) -> None:
        """A Deployment's status follows its current ReplicaSet's."""
        status = current.get("status", {})
        ready = status.get("readyReplicas", 0)
        self._set_status(
            DEPLOYMENTS,
            dep,
            {
                "observedGeneration": dep["metadata"].get("generation", 1),
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
            self.state.store.update_internal(rt, {**obj, "status": status})

    def _owned_objects(self, uids: set[str]) -> list[dict]:
        """The workload objects with these uids that still exist, in the store's order."""
        found = [obj for obj in map(self.state.owner, uids) if obj is not None]
        return sorted(found, key=lambda o: (o["metadata"]["namespace"], o["metadata"]["name"]))

    def _live_owned(self, owner: dict) -> list[dict]:
        return self.state.pods_at(self.state.pods.live.get(owner["metadata"]["uid"], {}))

    def reconcile_replicasets(self) -> None:
        uids, self.state.replicasets_dirty = self.state.replicasets_dirty, set()
        for rs in self._owned_objects(uids):
            uid = rs["metadata"]["uid"]
            live = len(self.state.pods.live.get(uid, ()))
            want = rs["spec"].get("replicas", 1)
            for _ in range(want - live):
                self._create_owned_pod(rs)
            if live > want:
                # remove the least useful pods first: unscheduled, then not ready
                pods = self._live_owned(rs)
                extra = sorted(pods, key=lambda p: (bool(p["spec"].get("nodeName")), is_ready(p)))
                for pod in extra[: live - want]:
                    self.pod_lifecycle.start_graceful_delete(pod, None)
            live, ready = len(self.state.pods.live.get(uid, ())), len(self.state.pods.ready.get(uid, ()))
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
        name = f"{owner['metadata']['name']}-{name_suffix(self.state.rng)}"
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
        return self.pod_lifecycle.create_pod(pod)

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

    def reconcile_daemonsets(self) -> None:
        """Each DaemonSet looks again at the nodes that changed (at every node when it is new or its
        spec changed), creates the pods missing there, and refreshes its status when anything moved."""
        full, self.state.daemonsets_full = self.state.daemonsets_full, set()
        nodes_dirty, self.state.daemonset_nodes_dirty = self.state.daemonset_nodes_dirty, set()
        status_dirty, self.state.daemonsets_status_dirty = self.state.daemonsets_status_dirty, set()
        if not (full or nodes_dirty or status_dirty):
            return
        all_names = None
        for ds in self.state.store.list(DAEMONSETS):
            uid = ds["metadata"]["uid"]
            if uid in full:
                all_names = all_names or [n["metadata"]["name"] for n in self.state.store.list(NODES)]
                names = all_names
            else:
                names = sorted(nodes_dirty)
            if not names and uid not in status_dirty:
                continue
            wanted = self._daemonset_nodes[uid]
            if uid in full:
                wanted.clear()
            have = set(self.state.pods.live.get(uid, {}).values())
            for name in names:
                node = self.state.store.get(NODES, "", name)
                if node is None or not self._daemon_wants(ds, node):
                    wanted.discard(name)
                    continue
                wanted.add(name)
                if name not in have:
                    self._create_owned_pod(ds, name)
                    have.add(name)
            ready_on = set(self.state.pods.ready.get(uid, {}).values())
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
