"""Nodes deleted in the middle of a rollout, as the cluster autoscaler, auto-repair or a spot eviction
delete them on AKS: each is reported gone (never failed), its slot is freed and the rollout goes on."""

from __future__ import annotations

import threading

from aksmaint.report import Outcome
from flows.node_maintenance import node_maintenance
from tests.reliability.support import reliability_scenario
from tests.support import (
    PENDING_KERNEL,
    assert_left_clean,
    core_api,
    fast_params,
    needing_reboot,
    report_of,
    slot_holders,
    wait_for,
)


def delete_node(sim, name: str) -> None:
    core = core_api(sim)
    try:
        core.delete_node(name)
    finally:
        core.api_client.close()


def test_nodes_deleted_while_waiting_draining_and_rebooting_are_gone_and_the_rollout_goes_on(
    start_sim, prefect_api
) -> None:
    sim = start_sim(reliability_scenario(need=6, count=6))
    needed = needing_reboot(sim)
    params = fast_params(sim, concurrency=1, max_failures=0)
    result: dict = {}
    flow = threading.Thread(
        target=lambda: result.update(state=node_maintenance(**params, return_state=True)), daemon=True
    )
    flow.start()
    # draining: the first node, as soon as its first pod is evicted
    draining = wait_for(sim, lambda kind, e: kind == "timeline" and e["event"] == "pod_evicted")["node"]
    waiting = next(n for n in reversed(needed) if n != draining)  # at concurrency 1, not started yet
    delete_node(sim, draining)
    delete_node(sim, waiting)
    # rebooting: the next node that goes down
    rebooting = wait_for(
        sim, lambda kind, e: kind == "timeline" and e["event"] == "rebooted" and e["node"] != draining
    )["node"]
    delete_node(sim, rebooting)
    flow.join(180)
    assert not flow.is_alive()

    state = result["state"]
    assert state.is_completed(), state.message
    report = report_of(state)
    by_node = {n.node: n for n in report.nodes}
    gone = {draining, waiting, rebooting}
    assert {n: by_node[n].outcome for n in gone} == dict.fromkeys(gone, Outcome.gone)
    for name in gone:
        assert by_node[name].reason.startswith("deleted from the cluster during"), by_node[name].reason
    rest = [n for n in needed if n not in gone]
    assert {n: by_node[n].outcome for n in rest} == dict.fromkeys(rest, Outcome.rebooted)
    assert not report.halted
    assert report.still_need_reboot == []
    reboots = sim.observer.invariants()["reboots"]
    assert {n: reboots.get(n) for n in rest} == dict.fromkeys(rest, 1)
    assert draining not in reboots and waiting not in reboots
    hosts = sim.observer.hosts()
    assert all(hosts[n]["running_kernel"] == PENDING_KERNEL for n in rest)
    assert_left_clean(sim, deleted=frozenset(gone))
    assert sim.observer.invariants()["pdb_violations"] == 0


def test_a_slot_kept_for_a_lost_node_is_freed_once_the_node_is_deleted(start_sim, prefect_api) -> None:
    scenario = reliability_scenario(need=2, count=3)
    scenario["nodes"][0]["fail_after_reboot"] = True
    sim = start_sim(scenario)
    needed = needing_reboot(sim)
    lost = needed[0]  # the plan goes by name: the lost node is first
    first = node_maintenance(**fast_params(sim, reboot={"boot_timeout_seconds": 4}), return_state=True)
    assert first.is_failed()
    assert [holder for holder in slot_holders(sim).values() if holder] == [f"failed/{lost}"]

    delete_node(sim, lost)  # auto-repair replaced it
    second = node_maintenance(**fast_params(sim), return_state=True)
    assert second.is_completed(), second.message
    assert {n.node: n.outcome for n in report_of(second).nodes}[needed[1]] == Outcome.rebooted
    assert_left_clean(sim, deleted=frozenset({lost}))
    assert sim.observer.invariants()["pdb_violations"] == 0
