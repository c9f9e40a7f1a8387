"""Disruption budgets on a simulated cluster: a percentage concurrency with one node per zone, held across
two runs at once through the slot Leases; a budget outside its schedule; and nodes that cannot be
drained, quarantined so that the rollout goes on, then tried again by a later run."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from kubernetes import client, config

from aksmaint.nodestate import QUARANTINED, STATE_ANNOTATION, STATUS_LABEL, NodeRecord, RecordState
from aksmaint.report import Outcome
from bench.concurrency import scenario as scale_scenario
from tests.flows.test_gates_and_policies import db_pods_on, drain_blocked_params, pdb_blocked_scenario
from tests.flows.test_maintenance import NEW_KERNEL, node, read_nodes, run, scenario
from tests.reliability.support import assert_invariants
from tests.support import assert_left_clean, events, needing_reboot, outcomes, report_in, slot_holders

TIME_SCALE = 0.05
PER_POOL = 15  # 45 nodes in 3 pools over 3 zones, every node needing a reboot


def test_one_node_per_zone_across_two_runs_at_once(start_sim, flow_process, record_property) -> None:
    """Two runs on two pools at the same time, each with 30% concurrency (4 of its 15 nodes) and at most
    one node per zone: the zone slots they share keep every zone to one disrupted node, while all three
    zones are worked on together."""
    sim = start_sim(scale_scenario(3 * PER_POOL, 4, TIME_SCALE))
    pools = ("pool1", "pool2")
    needed = [n for n in needing_reboot(sim) if any(f"-{p}-" in n for p in pools)]
    assert len(needed) == 2 * PER_POOL
    started = time.monotonic()
    runs = [
        flow_process(
            sim,
            pool,
            node_selector=f"kubernetes.azure.com/agentpool={pool}",
            concurrency="30%",
            budgets=[{"scope": "zone", "nodes": 1}],
            drain={"timeout_seconds": 120, "eviction_retry_seconds": 5 * TIME_SCALE},
            reboot={"boot_timeout_seconds": 120},
            lock={"ttl_seconds": 30, "wait_seconds": 600},
        )
        for pool in pools
    ]
    for process in runs:
        assert process.wait(600) == 0, process.output()[-5000:]
    took = time.monotonic() - started
    for process in runs:
        report = report_in(process.output())
        assert {n["outcome"] for n in report["nodes"]} == {"rebooted"}, report
    inv = assert_invariants(sim, needed, concurrency=3)
    assert inv["max_disrupted_per_zone"] == {"westeurope-1": 1, "westeurope-2": 1, "westeurope-3": 1}, inv
    assert inv["max_disrupted"] == 3, "the three zones were worked on at once"
    assert set(slot_holders(sim).values()) == {""}, "every slot was given back"
    record_property(
        "scale",
        f"2 runs x {PER_POOL} nodes, 30% concurrency, max 1 per zone: per-zone peak "
        f"{max(inv['max_disrupted_per_zone'].values())}, overall peak {inv['max_disrupted']}, {took:.0f}s",
    )


def test_a_budget_outside_its_schedule_holds_its_pool_and_nothing_else(start_sim, prefect_api) -> None:
    first, second = node("nodepool1", 0), node("userpool", 1)
    sim = start_sim(scenario({("nodepool1", 0): {}, ("userpool", 1): {}}))
    later = datetime.now(UTC) + timedelta(hours=3)
    schedule = f"{later.minute} {later.hour} * * *"  # opens in three hours, for an hour

    state, report = run(
        sim,
        concurrency=2,
        budgets=[
            {"scope": "pool", "name": "userpool", "nodes": 1, "schedule": schedule, "duration_minutes": 60}
        ],
    )

    assert state.is_completed(), state.message
    assert outcomes(report)[first] == Outcome.rebooted
    held = next(n for n in report.nodes if n.node == second)
    assert held.outcome == Outcome.held
    assert held.reason == (
        "no node may be disrupted now: pool userpool: 0 at once (pool userpool: at most 1"
        f" from {schedule} for 60 min (UTC), else 0 (outside its schedule now))"
    )
    assert sim.observer.invariants()["reboots"] == {first: 1}
    assert [e["node"] for e in events(sim, "cordoned")] == [first]
    assert_left_clean(sim)


# ---- quarantine ----------------------------------------------------------------------------------------
def quarantine_scenario() -> dict:
    """nodepool1's two nodes carry the replicas of a Deployment whose budget allows no disruption; the
    first of them and a node of userpool need a reboot."""
    sc = pdb_blocked_scenario()
    sc["pools"].append(scenario()["pools"][1])
    sc["nodes"] += scenario({("userpool", 0): {}})["nodes"]
    (db,) = sc["workloads"]
    db["node_selector"] = {"kubernetes.azure.com/agentpool": "nodepool1"}
    return sc


def test_an_undrainable_node_is_quarantined_and_the_rollout_goes_on(start_sim, prefect_api) -> None:
    stuck, other = node("nodepool1", 0), node("userpool", 0)
    sim = start_sim(quarantine_scenario())
    sim.observer.wait_for(lambda: len(db_pods_on(sim, stuck)) == 1, timeout=10)

    state, report = run(sim, **drain_blocked_params("quarantine"))

    assert state.is_completed(), state.message
    assert outcomes(report)[stuck] == Outcome.quarantined
    reason = next(n.reason for n in report.nodes if n.node == stuck)
    assert "data/db" in reason and "quarantined" in reason
    assert outcomes(report)[other] == Outcome.rebooted, "the rollout went on after the quarantine"
    inv = sim.observer.invariants()
    assert inv["reboots"] == {other: 1} and inv["pdb_violations"] == 0
    assert len(db_pods_on(sim, stuck)) == 1, "the guarded pod stayed where it was"
    quarantined = read_nodes(sim)[stuck]
    assert quarantined.spec.unschedulable
    assert quarantined.metadata.labels[STATUS_LABEL] == QUARANTINED
    record = NodeRecord.model_validate_json(quarantined.metadata.annotations[STATE_ANNOTATION])
    assert record.phase == RecordState.quarantined and "data/db" in record.reason
    assert inv["unschedulable_now"] == [stuck], "only the quarantined node stays cordoned"
    assert set(slot_holders(sim).values()) == {""}, "the quarantined node gave its slot back"

    # a later run leaves it alone and says why
    state, again = run(sim, **drain_blocked_params("quarantine"))
    assert outcomes(again)[stuck] == Outcome.quarantined
    assert "set retry_quarantined to drain it again" in next(n.reason for n in again.nodes if n.node == stuck)
    assert [e["node"] for e in events(sim, "cordoned")] == [stuck, other], "not cordoned again"

    # once the budget allows it, a run with retry_quarantined drains and reboots it and clears the label
    api = config.new_client_from_config(config_file=sim.kubeconfig)
    try:
        client.PolicyV1Api(api).patch_namespaced_pod_disruption_budget(
            "db", "data", {"spec": {"minAvailable": 1}}
        )
    finally:
        api.close()
    state, retried = run(sim, retry_quarantined=True)
    assert state.is_completed(), state.message
    assert outcomes(retried)[stuck] == Outcome.rebooted
    assert sim.observer.invariants()["reboots"] == {other: 1, stuck: 1}
    assert sim.observer.hosts()[stuck]["running_kernel"] == NEW_KERNEL
    assert STATUS_LABEL not in (read_nodes(sim)[stuck].metadata.labels or {})
    assert_left_clean(sim)
