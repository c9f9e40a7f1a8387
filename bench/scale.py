"""1000 nodes: the sentinel scan in both modes, and the flow process's peak memory over a full run.

The simulator runs in real time here (time scale 1): a scan pod's start-up is modelled at 0.5 s, as on a
node that has the image cached, so the host-pod scan's wall time means what it says.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from bench.common import CLUSTER, PENDING_KERNEL, FlowRun, Sim, flow_run_params, pool, run_flow_process

POOLS = 4
NODES_PER_POOL = 250
NEED_REBOOT = 10  # nodes that need a reboot: every 100th of 1000
BOOT_SECONDS = 10.0


def scenario(
    pools: int = POOLS,
    nodes_per_pool: int = NODES_PER_POOL,
    deployments: int = 4,
    replicas: int = 50,
    time_scale: float = 1.0,
) -> dict:
    """``pools`` x ``nodes_per_pool`` nodes in 3 zones, NEED_REBOOT of them (evenly spaced) needing a reboot,
    node-problem-detector on, and ``deployments`` Deployments of ``replicas`` pods behind budgets."""
    nodes = pools * nodes_per_pool
    return {
        "time_scale": time_scale,
        "seed": 3,
        "cluster": CLUSTER,
        "node_problem_detector": {},
        "pools": [
            pool(f"pool{i}", nodes_per_pool, BOOT_SECONDS, max_pods=110, system=i == 0) for i in range(pools)
        ],
        "nodes": [
            {
                "pool": f"pool{j // nodes_per_pool}",
                "index": j % nodes_per_pool,
                "reboot_required": True,
                "pending_kernel": PENDING_KERNEL,
            }
            for j in range(0, nodes, max(1, nodes // NEED_REBOOT))
        ],
        "workloads": [
            {
                "kind": "DaemonSet",
                "namespace": "kube-system",
                "name": "kube-proxy",
                "labels": {"k8s-app": "kube-proxy"},
            },
            *(
                {
                    "kind": "Deployment",
                    "namespace": "apps",
                    "name": f"app{i}",
                    "replicas": replicas,
                    "labels": {"app": f"app{i}"},
                    "pdb": {"max_unavailable": 1},
                    "ready_seconds": 2,
                    "termination_grace_seconds": 4,
                }
                for i in range(deployments)
            ),
        ],
    }


@dataclass
class Scan:
    mode: str
    seconds: float  # the sentinel-scan task run, start to end
    requests: dict[str, int]  # API requests in that interval, by verb and resource
    run: FlowRun

    @property
    def total_requests(self) -> int:
        return sum(self.requests.values())


def _task_window(flow_run_id: str, name: str) -> tuple[datetime, datetime]:
    from prefect import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterFlowRunId, TaskRunFilterName

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            task_run_filter=TaskRunFilter(
                flow_run_id=TaskRunFilterFlowRunId(any_=[flow_run_id]), name=TaskRunFilterName(like_=name)
            )
        )
    run = next(r for r in runs if r.name.rsplit("-", 1)[0] == name)
    return run.start_time, run.end_time


def measure_scan(sim: Sim, run: FlowRun, mode: str) -> Scan:
    if run.report is None:
        raise RuntimeError(f"{mode} run failed (exit {run.exit_code}):\n{run.output[-3000:]}")
    start, end = _task_window(run.report["flow_run_id"], "sentinel-scan")
    inside = [e for e in run.audit if start <= datetime.fromisoformat(e["time"]) <= end]
    counts: dict[str, int] = {}
    for e in inside:
        key = f"{e['verb']} {e['resource']}{'/' + e['subresource'] if e['subresource'] else ''}"
        counts[key] = counts.get(key, 0) + 1
    return Scan(mode, (end - start).total_seconds(), counts, run)


def run_scale(api_url: str, workdir, parallelism: int = 20) -> tuple[Scan, Scan, int]:
    with Sim(scenario(), workdir / "sim-1000") as sim:
        need = len(sim.needing_reboot())
        condition = run_flow_process(
            sim,
            flow_run_params(sim, dry_run=True, sentinel={"mode": "node-condition"}),
            api_url,
            workdir,
            "scan-condition-1000",
        )
        by_condition = measure_scan(sim, condition, "node-condition")
        full = run_flow_process(
            sim,
            flow_run_params(sim, concurrency=5, sentinel={"mode": "host-pod", "parallelism": parallelism}),
            api_url,
            workdir,
            "full-run-1000",
        )
        by_host_pod = measure_scan(sim, full, "host-pod")
        if full.exit_code != 0:
            raise RuntimeError(f"the 1000-node run failed (exit {full.exit_code}):\n{full.output[-3000:]}")
        rebooted = sum(1 for n in full.report["nodes"] if n["outcome"] == "rebooted")
        if rebooted != need:
            raise RuntimeError(f"the 1000-node run rebooted {rebooted} of {need} nodes")
    return by_condition, by_host_pod, need
