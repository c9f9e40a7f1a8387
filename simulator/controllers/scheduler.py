"""The scheduler: feasibility, scoring and binding of pending pods.

``Scheduler`` owns the node filter kept per pod spec (cordon, taints, nodeSelector, OS), the choice of a
node by the scenario's scoring (spread or bin-pack), binding, and the Unschedulable condition of a pod
that fits nowhere.
"""

from __future__ import annotations

import json
from collections import Counter

from simulator.controllers.common import (
    NODES,
    PODS,
    UNSCHEDULABLE_TAINT_KEY,
    FeasibleNodes,
    node_ready,
    runs_on,
    tolerates,
)
from simulator.controllers.state import ClusterState
from simulator.indexes import (
    controller_of,
    is_terminating,
)
from simulator.k8s.store import now_rfc3339


class Scheduler:
    """kube-scheduler's part: binds each pending pod to a feasible node with room."""

    def __init__(self, state: ClusterState):
        self.state = state

    def reconcile(self) -> None:
        pending = [p for p in self.state.pods_at(self.state.unbound) if not is_terminating(p)]
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
            self.state.store.update_internal(
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
                    "message": f"0/{self.state.store.count(NODES)} nodes are available.",
                    "lastTransitionTime": now_rfc3339(),
                }
            ],
        }
        self.state.store.update_internal(PODS, {**pod, "status": status})

    def _feasible_nodes(self, signature: str, spec: dict) -> list[tuple[str, int]]:
        """The Ready nodes a pod spec may run on (cordon, taints, nodeSelector), each with the number of
        PreferNoSchedule taints the pod does not tolerate. Kept per pod spec and brought up to date
        for the nodes that changed since the last pass."""
        entry = self.state.feasible.get(signature)
        if entry is None:
            if (
                len(self.state.feasible) > 256
            ):  # one entry per distinct pod template: a bound, not a cache policy
                self.state.feasible.clear()
            names = {n["metadata"]["name"] for n in self.state.store.list(NODES)}
            entry = self.state.feasible[signature] = FeasibleNodes(spec=spec, stale=names)
        for name in entry.stale:
            node = self.state.store.get(NODES, "", name)
            fit = None if node is None or not node_ready(node) else self._fits(entry.spec, node)
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
        bin_pack = self.state.scenario.scheduler.scoring == "bin-pack"
        best: tuple[tuple[int, ...], str] | None = None  # (score, node name): the lowest wins
        for name, prefer_not in candidates:
            owners = self.state.pods.load.get(name) or Counter()
            count = owners.total()
            if count >= self.state.pool_of[name].max_pods:
                continue
            score: tuple[tuple[int, ...], str]
            if bin_pack:
                score = ((prefer_not, -count), name)
            else:
                score = ((prefer_not, owners[owner_uid] if owner_uid else 0, count), name)
            if best is None or score < best:
                best = score
        return best[1] if best else None
