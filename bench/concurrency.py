"""Rollouts at the scale users run: 3 pools, every node needing a reboot, 60 s boots, and Deployments
whose PodDisruptionBudgets allow as many pods down at once as the rollout's concurrency.

The same cluster serves the test that keeps this in ``make test`` (tests/flows/test_scale.py), at a faster
time scale.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

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
from bench.rollout import BOOT_SECONDS, GRACE_SECONDS, READY_SECONDS, terminate_seconds

POOLS = 3  # boots, grace periods and readiness as in the 30-node rollout benchmark


def scenario(nodes: int, concurrency: int, time_scale: float) -> dict:
    """``nodes`` nodes in POOLS pools (as even as can be) over 3 zones, all needing a reboot. Two Deployments spread over
    them (one pod per node, and one per two nodes), each behind a budget of ``concurrency`` pods down, so
    that the budgets let ``concurrency`` nodes drain at once and never decide the pace alone."""
    counts = {f"pool{i}": nodes // POOLS + (1 if i < nodes % POOLS else 0) for i in range(POOLS)}
    budget = {"max_unavailable": concurrency}
    return {
        "time_scale": time_scale,
        "seed": 11,
        "cluster": CLUSTER,
        "pools": [
            pool(name, count, BOOT_SECONDS, system=i == 0) for i, (name, count) in enumerate(counts.items())
        ],
        "nodes": [
            {"pool": name, "index": i, "reboot_required": True, "pending_kernel": PENDING_KERNEL}
            for name, count in counts.items()
            for i in range(count)
        ],
        "workloads": [
            deployment("web", nodes, budget, READY_SECONDS, GRACE_SECONDS),
            deployment("api", nodes // 2, budget, READY_SECONDS, GRACE_SECONDS),
            KUBE_PROXY,
        ],
    }


def per_node_seconds() -> float:
    """The unavoidable work of one node, in simulated seconds: its pods stop, then it boots."""
    return terminate_seconds(GRACE_SECONDS) + BOOT_SECONDS


def lower_bound(nodes: int, concurrency: int) -> float:
    return math.ceil(nodes / concurrency) * per_node_seconds()


@dataclass
class ScaleRun:
    nodes: int
    concurrency: int
    server: str  # which Prefect server the run recorded itself in
    scale: float
    run: FlowRun
    makespan: float  # simulated seconds, first cordon to last uncordon
    invariants: dict
    prefect: dict | None  # what the flow sent the Prefect API (tests.prefect_proxy counts), when counted

    @property
    def bound(self) -> float:
        return lower_bound(self.nodes, self.concurrency)

    @property
    def slots(self) -> int:
        """Nodes each slot handles one after another."""
        return math.ceil(self.nodes / self.concurrency)

    @property
    def overhead_per_slot(self) -> float:
        """Real seconds beyond the unavoidable drain and boot, per node a slot handles."""
        return (self.makespan - self.bound) * self.scale / self.slots

    def efficiency_at(self, time_scale: float) -> float:
        """bound/makespan had the same real-second overhead met a simulator at ``time_scale``."""
        return self.bound / (self.bound + self.overhead_per_slot * self.slots / time_scale)

    def per_node(self, key: str) -> float | None:
        """A Prefect count (``requests_total``, ``events_total``) per node of the cluster."""
        return None if self.prefect is None else self.prefect[key] / self.nodes

    @property
    def rebooted_once(self) -> int:
        return sum(1 for count in self.invariants["reboots"].values() if count == 1)

    @property
    def safe(self) -> bool:
        inv = self.invariants
        return (
            self.run.exit_code == 0
            and self.rebooted_once == self.nodes == len(inv["reboots"])
            and inv["pdb_violations"] == 0
            and inv["max_disrupted"] <= self.concurrency
        )


@contextlib.contextmanager
def counted(api_url: str | None) -> Iterator[tuple[str | None, object]]:
    """The API URL to give the flow, and a proxy that counts its requests (None for the CLI's own
    local server, whose address is only known inside the flow's process)."""
    if api_url is None:
        yield None, None
        return
    from tests.prefect_proxy import PrefectProxy

    with PrefectProxy(api_url) as proxy:
        yield proxy.api_url, proxy


def run_scale(
    workdir: Path,
    nodes: int,
    concurrency: int,
    time_scale: float,
    api_url: str | None,
    server: str,
    name: str = "",
    flow_params: dict | None = None,
) -> ScaleRun:
    """One rollout of the whole cluster in the flow's own process. ``api_url`` None: the command line
    starts its temporary local (SQLite) server, as it does for a user with no PREFECT_API_URL.
    ``concurrency`` is the limit the run should reach (the flow's own unless ``flow_params`` say how,
    e.g. a percentage and budgets)."""
    name = name or f"scale-{nodes}-c{concurrency}"
    with Sim(scenario(nodes, concurrency, time_scale), workdir / f"sim-{name}") as sim:
        if len(sim.needing_reboot()) != nodes:
            raise RuntimeError("every node must need a reboot")
        params = flow_run_params(sim, **{"concurrency": concurrency, **(flow_params or {})})
        with counted(api_url) as (url, proxy):
            run = run_flow_process(sim, params, url, workdir, name)
            prefect = None if proxy is None else proxy.counts()
        invariants = sim.observer.invariants()
    cordons = [e["t"] for e in run.timeline if e["event"] == "cordoned"]
    uncordons = [e["t"] for e in run.timeline if e["event"] == "uncordoned"]
    if run.exit_code != 0 or not cordons or not uncordons:
        raise RuntimeError(f"{name} failed (exit {run.exit_code}):\n{run.output[-3000:]}")
    result = ScaleRun(
        nodes=nodes,
        concurrency=concurrency,
        server=server,
        scale=time_scale,
        run=run,
        makespan=max(uncordons) - min(cordons),
        invariants=invariants,
        prefect=prefect,
    )
    print(
        f"  {nodes} nodes @ {concurrency} ({server}): {result.rebooted_once} rebooted once, "
        f"max disrupted {invariants['max_disrupted']}, {invariants['pdb_violations']} PDB violations, "
        f"overhead {result.overhead_per_slot:.2f} s/node-slot, {run.wall_seconds:.0f} s wall",
        flush=True,
    )
    return result
