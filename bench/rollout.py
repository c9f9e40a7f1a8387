"""Rollouts of a 30-node, 3-zone cluster where every node needs a reboot, under PodDisruptionBudgets.

Makespan against the lower bound, coordination overhead, workload churn (ours: the plan's
fewest-pods-first order and the PreferNoSchedule taint on nodes still waiting; naive: by name, no taint;
under the simulated scheduler's spread or bin-pack scoring), and what a full reboot costs in Prefect
task runs and API requests per node.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

from bench.common import (
    CLUSTER,
    KUBE_PROXY,
    PENDING_KERNEL,
    FlowRun,
    Sim,
    deployment,
    flow_run_params,
    pool,
    run_flow_process,
)

NODES = 30
BOOT_SECONDS = 60.0  # a VM reboot on Azure takes one to a few minutes
GRACE_SECONDS = 10  # pods' terminationGracePeriodSeconds
READY_SECONDS = 5.0  # replacement pods' readiness delay


def terminate_seconds(grace: float) -> float:
    """How long the simulated kubelet takes to stop a pod after SIGTERM (simulator.cluster's model)."""
    return min(grace, max(1.0, grace / 2))


@dataclass(frozen=True)
class Timings:
    """The per-node work no rollout can avoid, in simulated seconds, from the scenario itself."""

    drain: float  # evicted pods all leave at once; the last one is gone after its termination time
    boot: float  # the pool's boot_seconds: NotReady from the reboot until the kubelet is back
    ready: float  # from the kubelet's return to Ready with a fresh heartbeat: immediate in the simulator

    @property
    def per_node(self) -> float:
        return self.drain + self.boot + self.ready

    def lower_bound(self, nodes: int, concurrency: int) -> float:
        return math.ceil(nodes / concurrency) * self.per_node


def scenario(time_scale: float, nodes: int = NODES, scoring: str = "spread") -> dict:
    """The rollout's cluster; ``scoring`` is the simulated scheduler's (``spread`` or ``bin-pack``)."""
    workloads = [
        ("web", 30, {"max_unavailable": 1}),
        ("api", 15, {"max_unavailable": 1}),
        ("cache", 6, {"min_available": 5}),
    ]
    return {
        "time_scale": time_scale,
        "seed": 7,
        "cluster": CLUSTER,
        "scheduler": {"scoring": scoring},
        "pools": [pool("nodepool1", nodes, BOOT_SECONDS, system=True)],
        "nodes": [
            {"pool": "nodepool1", "index": i, "reboot_required": True, "pending_kernel": PENDING_KERNEL}
            for i in range(nodes)
        ],
        "workloads": [
            *(
                deployment(name, replicas, pdb, READY_SECONDS, GRACE_SECONDS)
                for name, replicas, pdb in workloads
            ),
            KUBE_PROXY,
        ],
    }


def timings() -> Timings:
    return Timings(drain=terminate_seconds(GRACE_SECONDS), boot=BOOT_SECONDS, ready=0.0)


def workload_pods(sc: dict) -> int:
    return sum(w["replicas"] for w in sc["workloads"] if w["kind"] == "Deployment")


@dataclass
class Rollout:
    concurrency: int
    naive: bool  # name order and no PreferNoSchedule taint, instead of ours (fewest pods first, taint)
    run: FlowRun
    makespan: float  # simulated seconds, first cordon to last uncordon
    end_to_end: float  # simulated seconds, first API request of the run to its last
    bound: float
    evictions: int
    workload_pods: int
    reboots: dict[str, int]
    invariants: dict
    scale: float
    nodes: int = NODES
    scoring: str = "spread"  # the simulated scheduler's scoring

    @property
    def efficiency(self) -> float:
        return self.bound / self.makespan

    @property
    def overhead_per_node_wall(self) -> float:
        """Real seconds each node spends on coordination beyond the unavoidable work (per slot)."""
        per_slot = math.ceil(self.nodes / self.concurrency)
        return (self.makespan - self.bound) * self.scale / per_slot

    def efficiency_at(self, time_scale: float) -> float:
        """bound/makespan had the same real-second overhead met a simulator at ``time_scale``."""
        per_slot = math.ceil(self.nodes / self.concurrency)
        return self.bound / (self.bound + self.overhead_per_node_wall * per_slot / time_scale)

    @property
    def evictions_per_pod(self) -> float:
        return self.evictions / self.workload_pods

    @property
    def churn_floor(self) -> float:
        """Evictions per pod no order can avoid: the pods of the first nodes drained have no rebooted node
        to go to, so they move once more later."""
        events = self.run.timeline
        first = [e["node"] for e in events if e["event"] == "cordoned"][: self.concurrency]
        unavoidable = sum(1 for e in events if e["event"] == "pod_evicted" and e["node"] in first)
        return (self.workload_pods + unavoidable) / self.workload_pods


def run_rollout(
    api_url: str,
    workdir,
    time_scale: float,
    concurrency: int,
    naive: bool = False,
    name: str = "",
    nodes: int = NODES,
    scoring: str = "spread",
) -> Rollout:
    sc = scenario(time_scale, nodes, scoring)
    with Sim(sc, workdir / f"sim-{name}") as sim:
        need = sim.needing_reboot()
        assert len(need) == nodes, "every node needs a reboot"
        params = flow_run_params(
            sim,
            concurrency=concurrency,
            labels={"prefer_no_schedule_taint": not naive},
            order="name" if naive else "fewest-pods-first",
        )
        run = run_flow_process(sim, params, api_url, workdir, name or f"rollout-c{concurrency}")
        invariants = sim.observer.invariants()
    events = run.timeline
    cordons = [e["t"] for e in events if e["event"] == "cordoned"]
    uncordons = [e["t"] for e in events if e["event"] == "uncordoned"]
    audit_t = [e["t"] for e in run.audit]
    if run.exit_code != 0 or not cordons or not uncordons:
        raise RuntimeError(f"rollout c{concurrency} failed (exit {run.exit_code}):\n{run.output[-3000:]}")
    return Rollout(
        concurrency=concurrency,
        naive=naive,
        run=run,
        makespan=max(uncordons) - min(cordons),
        end_to_end=(max(audit_t) - min(audit_t)) / time_scale,  # the audit log's t is wall seconds
        bound=timings().lower_bound(nodes, concurrency),
        nodes=nodes,
        evictions=sum(1 for e in events if e["event"] == "pod_evicted"),
        workload_pods=workload_pods(sc),
        reboots=invariants["reboots"],
        invariants=invariants,
        scale=time_scale,
        scoring=scoring,
    )


def requests_by_kind(audit: list[dict]) -> Counter:
    return Counter(
        f"{e['verb']} {e['resource'] or e['path']}{'/' + e['subresource'] if e['subresource'] else ''}"
        for e in audit
    )


def task_runs_of(flow_run_id: str) -> tuple[int, int, Counter]:
    """Task runs (not counting subflow placeholders) and subflow runs of a flow run, with names."""
    from prefect import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterParentFlowRunId,
        TaskRunFilter,
        TaskRunFilterFlowRunId,
        TaskRunFilterSubFlowRuns,
    )

    with get_client(sync_client=True) as client:
        children = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id])
            ),
            limit=200,
        )
        ids = [flow_run_id, *(str(c.id) for c in children)]
        names: Counter = Counter()
        offset = 0
        while True:
            page = client.read_task_runs(
                task_run_filter=TaskRunFilter(
                    flow_run_id=TaskRunFilterFlowRunId(any_=ids),
                    subflow_runs=TaskRunFilterSubFlowRuns(exists_=False),
                ),
                limit=200,
                offset=offset,
            )
            names.update(t.name.rsplit("-", 1)[0] for t in page)
            if len(page) < 200:
                break
            offset += 200
    return sum(names.values()), len(children), names
