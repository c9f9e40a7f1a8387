"""A node-image upgrade of a 10-node pool through ``flows.cluster_upgrade`` and the ARM emulator.

AKS replaces the pool in batches of ``maxSurge`` (+ ``maxUnavailable``) nodes: surge nodes join, the old
ones are drained and deleted. No upgrade can beat ``ceil(nodes / (maxSurge + maxUnavailable)) x
(provision + drain)``: each batch waits for its surge nodes to join and its old nodes to drain.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from aksmaint.azure import AksCluster
from bench.common import CLUSTER, KERNEL, Sim
from bench.rollout import terminate_seconds
from simulator.arm.upgrade import count_of

NODES = 10
PROVISION_SECONDS = 20.0
GRACE_SECONDS = 10
NEW_IMAGE = "AKSUbuntu-2204gen2containerd-202502.05.0"


def scenario(time_scale: float) -> dict:
    return {
        "time_scale": time_scale,
        "cluster": CLUSTER,
        "pools": [
            {
                "name": "nodepool1",
                "mode": "System",
                "count": NODES,
                "zones": ["1", "2", "3"],
                "orchestrator_version": "1.30.5",
                "node_image_version": "AKSUbuntu-2204gen2containerd-202501.12.0",
                "latest_node_image_version": NEW_IMAGE,
                "kernel": KERNEL,
                "max_pods": 30,
                "node_provision_seconds": PROVISION_SECONDS,
            }
        ],
        "workloads": [
            {
                "kind": "Deployment",
                "namespace": "shop",
                "name": "web",
                "replicas": NODES,
                "labels": {"app": "web"},
                "pdb": {"max_unavailable": 1},
                "ready_seconds": 5,
                "termination_grace_seconds": GRACE_SECONDS,
            },
            {
                "kind": "DaemonSet",
                "namespace": "kube-system",
                "name": "kube-proxy",
                "labels": {"k8s-app": "kube-proxy"},
            },
        ],
    }


@dataclass
class Upgrade:
    surge: int
    batches: int
    bound: float  # simulated seconds
    operation: float  # simulated seconds, the flow's upgrade request to its last poll (that saw it end)
    replaced: float  # simulated seconds, the flow's upgrade request to the last old node's removal
    flow: float  # simulated seconds, the whole flow run (preflight, operation, verification, kernel report)
    outcome: str

    @property
    def efficiency(self) -> float:
        return self.bound / self.operation


def run_upgrade(workdir, time_scale: float) -> Upgrade:
    import time

    from aksmaint.report import UpgradeReport
    from flows.cluster_upgrade import cluster_upgrade

    sc = scenario(time_scale)
    pool = sc["pools"][0]
    surge = count_of("10%", NODES)  # AKS's default maxSurge; maxUnavailable 0
    batches = math.ceil(NODES / surge)
    bound = batches * (pool["node_provision_seconds"] + terminate_seconds(GRACE_SECONDS))
    with Sim(sc, workdir / "sim-upgrade") as sim:
        os.environ["AZURE_ACCESS_TOKEN"] = sim.endpoints.token
        cluster = AksCluster(
            subscription_id=CLUSTER["subscription_id"],
            resource_group=CLUSTER["resource_group"],
            name=CLUSTER["name"],
            credential="static-token",
            arm_endpoint=sim.endpoints.arm,
            ca_bundle=sim.endpoints.ca_bundle,
        )
        started = time.perf_counter()
        state = cluster_upgrade(
            cluster=cluster,
            mode="node-image",
            pools=["nodepool1"],
            poll_interval_seconds=0.1,
            return_state=True,
        )
        flow_seconds = time.perf_counter() - started
        report = state.result(raise_on_failure=False)
        arm = [e for e in sim.observer.audit() if e.get("api") == "arm"]
        removed = [e["t"] for e in sim.observer.timeline() if e["event"] == "node_removed"]
    if not isinstance(report, UpgradeReport) or not state.is_completed():
        raise RuntimeError(f"the upgrade failed: {state.message}")
    # the audit log's t is wall seconds since the simulator started, the timeline's simulated seconds
    requested = next(e["t"] for e in arm if e["path"].endswith("/upgradeNodeImageVersion")) / time_scale
    last_poll = max(e["t"] for e in arm if "operations" in e["path"].lower()) / time_scale
    return Upgrade(
        surge=surge,
        batches=batches,
        bound=bound,
        operation=last_poll - requested,
        replaced=max(removed) - requested,
        flow=flow_seconds / time_scale,
        outcome=report.outcome,
    )
