"""node-problem-detector: the node condition that mirrors a host's /var/run/reboot-required.

``ProblemDetector`` owns the nodes waiting for their condition to be checked and the condition itself;
it only runs when the scenario models node-problem-detector.
"""

from __future__ import annotations

from simulator.controllers.common import (
    NODES,
)
from simulator.controllers.state import ClusterState
from simulator.k8s.store import now_rfc3339


class ProblemDetector:
    """node-problem-detector's custom plugin for the reboot-required sentinel."""

    def __init__(self, state: ClusterState):
        self.state = state

    def host_changed(self, name: str) -> None:
        """Host state changed (sentinel, kernel): node-problem-detector, when modelled, reports it."""
        if self.state.scenario.node_problem_detector is not None:
            self.state.npd_dirty.add(name)
            self.state.mark_dirty()

    def reconcile(self) -> None:
        """node-problem-detector's custom plugin: a node condition mirroring /var/run/reboot-required."""
        npd = self.state.scenario.node_problem_detector
        names, self.state.npd_dirty = self.state.npd_dirty, set()
        if npd is None:
            return
        for name in sorted(names):
            node, host = self.state.store.get(NODES, "", name), self.state.hosts.get(name)
            if node is None or host is None:
                continue
            if host.state != "up":
                self.state.npd_dirty.add(name)  # it runs on the node: nothing changes until the node is back
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
            self.state.store.update_internal(
                NODES, {**node, "status": {**node["status"], "conditions": others + [cond]}}
            )
