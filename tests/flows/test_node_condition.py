"""Sentinel mode node-condition: reboot needs read from a node condition with one LIST, no scan pods."""

from __future__ import annotations

from flows.node_maintenance import node_maintenance
from tests.support import fast_params, scenario_dict


def _scenario() -> dict:
    sc = scenario_dict()
    sc["time_scale"] = 0.05
    sc["node_problem_detector"] = {"condition_type": "RebootRequired"}
    return sc


def test_node_condition_mode_reboots_the_flagged_nodes_without_scan_pods(start_sim, prefect_api):
    sim = start_sim(_scenario())
    need = sorted(n for n, h in sim.observer.hosts().items() if h["reboot_required"])
    state = node_maintenance(**fast_params(sim, sentinel={"mode": "node-condition"}), return_state=True)
    report = state.result(raise_on_failure=False)
    assert state.is_completed(), state.message
    assert sorted(n.node for n in report.nodes if n.outcome == "rebooted") == need
    assert sim.observer.invariants()["reboots"] == {n: 1 for n in need}
    created = [
        e
        for e in sim.observer.audit()
        if e["verb"] == "create"
        and e["resource"] == "pods"
        and e["subresource"] is None
        and e["status"] == 201
    ]
    assert len(created) == len(need), "one reboot pod per node and nothing else"
    pod_names = [e["name"] for e in sim.observer.audit() if e["verb"] == "delete" and e["resource"] == "pods"]
    assert not any("scan" in (n or "") for n in pod_names), "node-condition mode must not run scan pods"


def test_node_condition_dry_run_plans_exactly_the_flagged_nodes_and_changes_nothing(start_sim, prefect_api):
    sim = start_sim(_scenario())
    need = sorted(n for n, h in sim.observer.hosts().items() if h["reboot_required"])
    before = len(sim.observer.audit())
    state = node_maintenance(
        **fast_params(sim, sentinel={"mode": "node-condition"}, dry_run=True), return_state=True
    )
    report = state.result(raise_on_failure=False)
    assert sorted(n.node for n in report.nodes if n.outcome == "planned") == need
    assert [e for e in sim.observer.audit()[before:] if e["mutating"]] == []
    node_lists = [
        e for e in sim.observer.audit()[before:] if e["verb"] == "list" and e["resource"] == "nodes"
    ]
    assert len(node_lists) <= 3  # update check, condition scan, kernel report: no per-node requests
