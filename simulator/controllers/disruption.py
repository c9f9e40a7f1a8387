"""The disruption controller and the disruption invariants.

``DisruptionBudgets`` owns PodDisruptionBudget status (healthy, desired and expected pods, disruptions
allowed), the budgets that cover a pod, the count of budget violations when a covered pod goes without
an eviction, and the invariants report.
"""

from __future__ import annotations

from simulator.controllers.common import (
    DAEMONSETS,
    DEPLOYMENTS,
    PDBS,
    REPLICASETS,
    scaled_int,
)
from simulator.controllers.state import ClusterState
from simulator.indexes import (
    is_ready,
    is_terminal,
    is_terminating,
)
from simulator.k8s.selectors import selector_from_dict
from simulator.k8s.store import now_rfc3339


class DisruptionBudgets:
    """PodDisruptionBudget status and the violations the simulator counts."""

    def __init__(self, state: ClusterState):
        self.state = state

    def pdb_status(self, pdb: dict) -> dict:
        """The status the disruption controller computes for a PDB, from the current pods."""
        members = self.state.pdb_members.members[
            pdb["metadata"]["uid"]
        ]  # every caller passes a stored budget
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
        return self.state.store.get(rt, namespace, ref["name"]) if rt else None

    def reconcile(self) -> None:
        namespaces, self.state.pdb_namespaces_dirty = self.state.pdb_namespaces_dirty, set()
        for pdb in [p for ns in sorted(namespaces) for p in self.state.store.list(PDBS, ns)]:
            status = self.pdb_status(pdb)
            old = pdb.get("status", {})
            if {k: v for k, v in old.items() if k != "conditions"} != {
                k: v for k, v in status.items() if k != "conditions"
            }:
                stamp = now_rfc3339()
                for cond in status["conditions"]:
                    cond["lastTransitionTime"] = stamp
                self.state.store.update_internal(PDBS, {**pdb, "status": status})

    def pdbs_for(self, pod: dict, for_eviction: bool) -> list[dict]:
        labels = pod["metadata"].get("labels") or {}
        out = []
        for pdb in self.state.store.list(PDBS, pod["metadata"]["namespace"]):
            selector = selector_from_dict(pdb["spec"].get("selector"))
            if for_eviction and selector.empty:
                continue
            if selector.matches(labels):
                out.append(pdb)
        return out

    def count_violation_if_covered(self, pod: dict, cause: str) -> None:
        if not is_ready(pod) or is_terminating(pod) or is_terminal(pod):
            return
        for pdb in self.pdbs_for(pod, for_eviction=True):
            if self.pdb_status(pdb)["disruptionsAllowed"] <= 0:
                self.state.invariants["pdb_violations"] += 1
                self.state.record(
                    "pdb_violation",
                    pod["spec"].get("nodeName"),
                    pod=f"{pod['metadata']['namespace']}/{pod['metadata']['name']}",
                    pdb=pdb["metadata"]["name"],
                    cause=cause,
                )

    def invariants_report(self) -> dict:
        return {
            **self.state.invariants,
            "reboots": dict(self.state.invariants["reboots"]),
            "unschedulable_now": sorted(self.state.unschedulable),
            "not_ready_now": sorted(self.state.not_ready),
        }
