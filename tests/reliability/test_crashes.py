"""The flow process killed at random points, and several runs started at once against one cluster.

A SIGKILL runs no ``finally`` block and no hook: whatever the run held (its reboot slot, a cordoned node,
a node mid-reboot) is left as it was. The next runs must converge: every node that needed a reboot
rebooted exactly once, never more nodes disrupted than the concurrency, no budget violated, nothing of
ours left on a node.
"""

from __future__ import annotations

import json
import random
import time

import pytest

from flows.node_maintenance import node_maintenance
from tests.reliability.support import assert_invariants, cordoned_without_record, reliability_scenario
from tests.support import core_api, fast_params, needing_reboot, wait_for

SLOT_PREFIX = "aks-maintenance-slot"


def slot_taken(kind: str, entry: dict) -> bool:
    """A reboot slot written: created (the first time) or updated (taken over, renewed or released)."""
    return (
        kind == "audit"
        and entry["resource"] == "leases"
        and entry["namespace"] == "kube-system"
        and (
            (entry["verb"] == "create" and entry["status"] == 201)
            or (
                entry["verb"] == "update"
                and (entry["name"] or "").startswith(SLOT_PREFIX)
                and entry["status"] == 200
            )
        )
    )


def reboot_pod_created():
    """The reboot pod's creation: the first pod created after the first eviction (at concurrency 1 the
    next scan pod comes only after the node is back)."""
    evicted = []

    def matches(kind: str, entry: dict) -> bool:
        if kind != "audit" or entry["resource"] != "pods" or entry["verb"] != "create":
            return False
        if entry["subresource"] == "eviction":
            evicted.append(entry)
            return False
        return bool(evicted) and entry["subresource"] is None and entry["status"] == 201

    return matches


def on_nth_node(event: str, nth: int):
    """The first ``event`` on the nth node that has one (timeline)."""
    nodes: list[str] = []

    def matches(kind: str, entry: dict) -> bool:
        if kind != "timeline" or entry["event"] != event:
            return False
        if entry["node"] not in nodes:
            nodes.append(entry["node"])
            return len(nodes) == nth
        return False

    return matches


def kill_point(point: str, nth: int):
    """Where to kill: right after the step began on the nth node the run handles."""
    if point == "holding a slot":
        return slot_taken  # the first slot write is the first acquisition (renewals come later)
    if point == "cordon":
        return on_nth_node("cordoned", nth)
    if point == "drain":
        return on_nth_node("pod_evicted", nth)
    if point == "reboot":
        return reboot_pod_created()
    if point == "verify":
        return on_nth_node("rebooted", nth)
    raise ValueError(point)


# per seed, where each run is killed (step, nth node of the run); the last seed kills the resuming run too
KILLS = {
    0: [("holding a slot", 1)],
    1: [("cordon", 2)],
    2: [("reboot", 1)],
    3: [("verify", 2)],
    4: [("drain", 2), ("holding a slot", 1)],
}


def converged(sim) -> bool:
    core = core_api(sim)
    try:
        return not needing_reboot(sim) and not any(n.spec.unschedulable for n in core.list_node().items)
    finally:
        core.api_client.close()


@pytest.mark.parametrize("seed", sorted(KILLS))
def test_killed_runs_converge(start_sim, flow_process, record_property, seed: int) -> None:
    rng = random.Random(seed)
    kills = KILLS[seed]
    sim = start_sim(reliability_scenario(need=2, count=3), time_scale=0.05)
    needed = needing_reboot(sim)
    assert len(needed) == 2

    runs = 0
    for i, (point, nth) in enumerate(kills):
        process = flow_process(sim, f"run{i}")
        wait_for(sim, kill_point(point, nth), process)
        time.sleep(rng.uniform(0, 0.3))  # somewhere inside the step, not always at its first request
        assert process.kill() == -9
        runs += 1
        # in between: at most one node disrupted, and a cordoned node always says who and why
        core = core_api(sim)
        assert cordoned_without_record(core) == []
        core.api_client.close()
        inv = sim.observer.invariants()
        assert inv["max_unschedulable"] <= 1 and inv["pdb_violations"] == 0, inv
        assert all(count == 1 for count in inv["reboots"].values()), inv["reboots"]

    states = []
    while not converged(sim):
        assert runs < 5, f"not converged after {runs} runs: {[s.message for s in states]}"
        states.append(node_maintenance(**fast_params(sim), return_state=True))
        runs += 1
    assert all(s.is_completed() for s in states), [s.message for s in states]
    # a killed run may leave a finished scan pod; the next run cleans those up once they are stale
    assert_invariants(sim, needed, allow_finished_scan_pods=True)
    where = " then ".join(f"{point} (node {nth})" for point, nth in kills)
    record_property(
        "reliability", f"SIGKILL seed {seed}: killed during {where}: converged after {runs} runs in all"
    )


@pytest.mark.parametrize("runs", [2, 3])
def test_runs_started_at_once(start_sim, flow_process, runs: int) -> None:
    sim = start_sim(reliability_scenario(need=3, count=4), time_scale=0.05)
    needed = needing_reboot(sim)
    processes = [flow_process(sim, f"run{i}", concurrency=2) for i in range(runs)]
    codes = [p.wait(180) for p in processes]
    outputs = [p.output() for p in processes]
    assert codes == [0] * runs, outputs
    reports = [json.loads(out[out.index("{\n") :]) for out in outputs]
    for node in needed:
        by = sorted(n["outcome"] for r in reports for n in r["nodes"] if n["node"] == node)
        assert by.count("rebooted") == 1, (node, by)
        assert set(by) <= {"rebooted", "not-needed"}, (node, by)
    assert_invariants(sim, needed, concurrency=2)
