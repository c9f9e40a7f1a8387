"""Gates that hold nodes back (blocking pods, Prometheus alerts, the maintenance window) and the policies
for drains that cannot finish and nodes that do not come back, checked on what the simulated cluster saw.
"""

from __future__ import annotations

import socket
from datetime import UTC, datetime, timedelta

import pytest
from kubernetes import client, config

from aksmaint.nodestate import STATE_ANNOTATION, NodeRecord, RecordState
from aksmaint.params import MaintenanceWindow
from aksmaint.report import Outcome
from tests.flows.test_maintenance import (
    NEW_KERNEL,
    OLD_KERNEL,
    node,
    read_nodes,
    run,
    scenario,
)
from tests.support import assert_left_clean, events, outcomes

NEEDING = {("nodepool1", 0): {}, ("userpool", 1): {}}
FIRST, SECOND = node("nodepool1", 0), node("userpool", 1)


def assert_nothing_disrupted(sim) -> None:
    inv = sim.observer.invariants()
    assert inv["reboots"] == {}
    assert inv["max_disrupted"] == 0
    assert events(sim, "cordoned") == [] and events(sim, "pod_evicted") == []
    assert {h["running_kernel"] for h in sim.observer.hosts().values()} == {OLD_KERNEL}


# ---- blocking pods ----------------------------------------------------------------------------
def test_blocking_pod_holds_exactly_the_node_it_runs_on(start_sim, prefect_api):
    sc = scenario(NEEDING)
    sc["workloads"].append(
        {
            "kind": "Pod",
            "namespace": "ops",
            "name": "etcd-backup",
            "node": {"pool": "nodepool1", "index": 0},
            "labels": {"app": "backup", "tier": "critical"},
        }
    )
    sim = start_sim(sc)

    state, report = run(sim, blockers={"pod_selectors": ["app=backup,tier in (critical)"]})

    assert state.is_completed(), state.message
    assert outcomes(report)[FIRST] == Outcome.held
    assert "ops/etcd-backup" in next(n.reason for n in report.nodes if n.node == FIRST)
    assert outcomes(report)[SECOND] == Outcome.rebooted
    assert sim.observer.invariants()["reboots"] == {SECOND: 1}
    assert {e["node"] for e in events(sim, "cordoned")} == {SECOND}
    assert report.still_need_reboot == [FIRST]
    assert_left_clean(sim)


# ---- Prometheus alerts ------------------------------------------------------------------------
# A real Prometheus (the ``prometheus`` fixture) keeps ALERTS active: KubeNodeNotReady firing,
# NodeDiskPressure pending, Watchdog firing. Each test selects among them with kured's options.
def held_by_alerts(report, name: str) -> str:
    entry = next(n for n in report.nodes if n.node == name)
    assert entry.outcome == Outcome.held, (entry.outcome, entry.reason)
    return entry.reason


def test_firing_alert_holds_every_node(start_sim, prefect_api, prometheus):
    sim = start_sim(scenario(NEEDING))
    queries = prometheus.alert_queries()

    state, report = run(
        sim,
        blockers={
            "prometheus_url": prometheus.url,
            "alert_filter_regexp": "^Watchdog$",  # kured's usual setting: the heartbeat never holds
            "alert_firing_only": True,
        },
    )

    assert state.is_completed(), state.message
    assert prometheus.alert_queries() - queries >= 2, "the alerts are checked before each node"
    for name in (FIRST, SECOND):
        assert held_by_alerts(report, name) == "active Prometheus alerts: KubeNodeNotReady"
    assert sorted(report.still_need_reboot) == sorted([FIRST, SECOND])
    assert_nothing_disrupted(sim)
    assert_left_clean(sim)


@pytest.mark.parametrize(
    ("blockers", "held_by"),
    [
        # pending alerts count unless firing-only; match-only: the firing KubeNodeNotReady does not count
        ({"alert_filter_regexp": "^NodeDiskPressure$", "alert_filter_match_only": True}, "NodeDiskPressure"),
        (
            {
                "alert_filter_regexp": "^NodeDiskPressure$",
                "alert_filter_match_only": True,
                "alert_firing_only": True,
            },
            None,
        ),
        # the regexp names the alerts to ignore; it searches, so "Node" filters out both node alerts
        ({"alert_filter_regexp": "^Watchdog$|Node"}, None),
        # with match-only, the regexp names the only alerts that count
        ({"alert_filter_regexp": "^Watchdog$", "alert_filter_match_only": True}, "Watchdog"),
    ],
    ids=["pending-holds", "pending-ignored-when-firing-only", "filtered-out", "match-only"],
)
def test_alert_filters_choose_what_holds(start_sim, prefect_api, prometheus, blockers, held_by):
    sim = start_sim(scenario({("userpool", 1): {}}))
    queries = prometheus.alert_queries()

    state, report = run(sim, blockers={"prometheus_url": prometheus.url, **blockers})

    assert state.is_completed(), state.message
    assert prometheus.alert_queries() > queries
    if held_by:
        assert held_by_alerts(report, SECOND) == f"active Prometheus alerts: {held_by}"
        assert_nothing_disrupted(sim)
    else:
        assert outcomes(report)[SECOND] == Outcome.rebooted
        assert sim.observer.invariants()["reboots"] == {SECOND: 1}
        assert sim.observer.hosts()[SECOND]["running_kernel"] == NEW_KERNEL
    assert_left_clean(sim)


def test_unreachable_prometheus_holds(start_sim, prefect_api):
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    sim = start_sim(scenario({("userpool", 1): {}}))

    state, report = run(sim, blockers={"prometheus_url": url, "prometheus_timeout_seconds": 2})

    assert state.is_completed(), state.message
    assert outcomes(report)[SECOND] == Outcome.held
    reason = next(n.reason for n in report.nodes if n.node == SECOND)
    assert url in reason and "could not be queried" in reason
    assert_nothing_disrupted(sim)


# ---- maintenance window -----------------------------------------------------------------------
def closed_window() -> dict:
    """A one-hour window starting two hours from now (it may wrap past midnight): closed now."""
    now = datetime.now(UTC)
    window = {
        "start": (now + timedelta(hours=2)).strftime("%H:%M"),
        "end": (now + timedelta(hours=3)).strftime("%H:%M"),
        "time_zone": "UTC",
    }
    assert not MaintenanceWindow(**window).is_open(now)
    assert MaintenanceWindow(**window).is_open(now + timedelta(hours=2, minutes=30))
    return window


def test_closed_window_holds_every_node(start_sim, prefect_api):
    window = closed_window()
    sim = start_sim(scenario(NEEDING))

    state, report = run(sim, window=window)

    assert state.is_completed(), state.message
    for n in report.nodes:
        if n.node in (FIRST, SECOND):
            assert n.outcome == Outcome.held
            assert (
                f"outside the maintenance window (mon,tue,wed,thu,fri,sat,sun {window['start']}-" in n.reason
            )
        else:
            assert n.outcome == Outcome.not_needed
    assert_nothing_disrupted(sim)
    assert_left_clean(sim)


# ---- a drain that never finishes --------------------------------------------------------------
def pdb_blocked_scenario() -> dict:
    """Two nodes, a Deployment with a replica on each and a budget that never allows a disruption;
    the first node needs a reboot."""
    sc = scenario({("nodepool1", 0): {}})
    sc["pools"] = [{**sc["pools"][0], "count": 2}]
    sc["workloads"] = [
        {
            "kind": "Deployment",
            "namespace": "data",
            "name": "db",
            "replicas": 2,
            "labels": {"app": "db"},
            "pdb": {"min_available": 2},
            "ready_seconds": 1,
            "termination_grace_seconds": 2,
        }
    ]
    return sc


def db_pods_on(sim, name: str) -> list:
    api = config.new_client_from_config(config_file=sim.kubeconfig)
    try:
        pods = client.CoreV1Api(api).list_namespaced_pod("data", label_selector="app=db").items
    finally:
        api.close()
    return [p for p in pods if p.spec.node_name == name and not p.metadata.deletion_timestamp]


def drain_blocked_params(policy: str) -> dict:
    return {"drain": {"timeout_seconds": 1.5, "eviction_retry_seconds": 0.25, "on_timeout": policy}}


def test_blocked_drain_uncordon_and_skip(start_sim, prefect_api):
    sim = start_sim(pdb_blocked_scenario())
    sim.observer.wait_for(lambda: len(db_pods_on(sim, FIRST)) == 1, timeout=10)

    state, report = run(sim, **drain_blocked_params("uncordon-and-skip"))

    assert state.is_completed(), state.message
    skipped = next(n for n in report.nodes if n.node == FIRST)
    assert skipped.outcome == Outcome.skipped
    assert "data/db" in skipped.reason and "uncordoned and left unrebooted" in skipped.reason
    inv = sim.observer.invariants()
    assert inv["reboots"] == {}
    assert inv["pdb_violations"] == 0
    assert [e["node"] for e in events(sim, "cordoned")] == [FIRST]
    assert [e["node"] for e in events(sim, "uncordoned")] == [FIRST]
    assert sim.observer.hosts()[FIRST]["reboot_required"]
    assert len(db_pods_on(sim, FIRST)) == 1, "the guarded pod was left where it was"
    assert report.still_need_reboot == [FIRST]
    assert_left_clean(sim)


@pytest.mark.parametrize(
    ("policy", "cause"),
    [("delete-pods", "pod deleted directly"), ("reboot-anyway", "node rebooted with the pod on it")],
)
def test_blocked_drain_policies_that_reboot(start_sim, prefect_api, policy, cause):
    """Both policies reboot the node; the simulator records the one budget violation each causes."""
    sim = start_sim(pdb_blocked_scenario())
    sim.observer.wait_for(lambda: len(db_pods_on(sim, FIRST)) == 1, timeout=10)

    state, report = run(sim, **drain_blocked_params(policy))

    assert state.is_completed(), state.message
    assert outcomes(report)[FIRST] == Outcome.rebooted
    inv = sim.observer.invariants()
    assert inv["reboots"] == {FIRST: 1}
    assert inv["pdb_violations"] == 1
    violations = events(sim, "pdb_violation")
    assert [(e["node"], e["details"]["pdb"], e["details"]["cause"]) for e in violations] == [
        (FIRST, "db", cause)
    ]
    assert sim.observer.hosts()[FIRST]["running_kernel"] == NEW_KERNEL
    rebooted_at = events(sim, "rebooted")[0]["t"]
    if policy == "delete-pods":  # deleted before the reboot, not by it
        assert violations[0]["t"] < rebooted_at
    else:
        assert violations[0]["t"] == pytest.approx(rebooted_at, abs=0.5)
    assert_left_clean(sim)


# ---- a node that does not come back -----------------------------------------------------------
@pytest.mark.parametrize(("max_failures", "concurrency"), [(0, 1), (1, 1), (1, 2)])
def test_node_that_never_returns_fails_the_run(start_sim, prefect_api, max_failures, concurrency):
    lost, healthy = node("nodepool1", 0), node("nodepool1", 1)
    sim = start_sim(scenario({("nodepool1", 0): {"fail_after_reboot": True}, ("nodepool1", 1): {}}))

    state, report = run(
        sim, max_failures=max_failures, concurrency=concurrency, reboot={"boot_timeout_seconds": 2}
    )

    assert state.is_failed()
    assert report.nodes, "a failed run still returns its report"
    assert f"{lost}: node went down but did not come back healthy within 2s" in state.message, state.message
    assert outcomes(report)[lost] == Outcome.failed
    inv = sim.observer.invariants()
    assert lost in inv["not_ready_now"]
    lost_node = read_nodes(sim)[lost]
    assert lost_node.spec.unschedulable, "a node that did not come back stays cordoned"
    record = NodeRecord.model_validate_json(lost_node.metadata.annotations[STATE_ANNOTATION])
    assert record.phase == RecordState.failed
    assert "did not come back healthy" in record.reason
    if max_failures == 0:
        assert report.halted
        assert state.message.startswith("rollout halted after 1 failed node(s) (max_failures=0)")
        held = next(n for n in report.nodes if n.node == healthy)
        assert held.outcome == Outcome.held
        assert held.reason == "not started: rollout halted after 1 failed node(s) (max_failures=0)"
        assert inv["reboots"] == {lost: 1}
        assert [e["node"] for e in events(sim, "cordoned")] == [lost]
        assert not read_nodes(sim)[healthy].spec.unschedulable
        assert inv["max_disrupted"] == 1
    elif concurrency == 1:  # tolerated, but the lost node keeps the only slot: nothing else goes down
        assert not report.halted
        held = next(n for n in report.nodes if n.node == healthy)
        assert held.outcome == Outcome.held
        assert held.reason == (
            f"every reboot slot of all nodes is kept by a node that did not come back ({lost});"
            " fix those nodes first"
        )
        assert inv["reboots"] == {lost: 1}
        assert inv["max_disrupted"] == 1
    else:  # one failure tolerated with a second slot: the rollout goes on while the lost node stays down
        assert not report.halted
        assert outcomes(report)[healthy] == Outcome.rebooted
        assert inv["reboots"] == {lost: 1, healthy: 1}
        assert inv["max_disrupted"] <= 2
    assert inv["pdb_violations"] == 0


def test_a_failed_node_that_comes_back_is_recovered_by_the_next_run(start_sim, prefect_api):
    lost = node("nodepool1", 0)
    sim = start_sim(scenario({("nodepool1", 0): {"fail_after_reboot": True}}))
    state, _ = run(sim, reboot={"boot_timeout_seconds": 2})
    assert state.is_failed()
    api = config.new_client_from_config(config_file=sim.kubeconfig)
    try:
        leases = client.CoordinationV1Api(api).list_namespaced_lease("kube-system").items
        assert [lease.spec.holder_identity for lease in leases] == [f"failed/{lost}"]

        sim.observer.set_host(lost, fail_after_reboot=False)  # an operator repairs the VM
        sim.observer.wait_for(lambda: lost not in sim.observer.invariants()["not_ready_now"], timeout=10)
        state, report = run(sim)
        assert state.is_completed(), state.message
        recovered = next(n for n in report.nodes if n.node == lost)
        assert recovered.outcome == Outcome.rebooted
        assert "came back after run" in recovered.reason
        node_now = read_nodes(sim)[lost]
        assert not node_now.spec.unschedulable
        assert STATE_ANNOTATION not in (node_now.metadata.annotations or {})
        leases = client.CoordinationV1Api(api).list_namespaced_lease("kube-system").items
        assert all(not lease.spec.holder_identity for lease in leases), "the kept slot is free again"
    finally:
        api.close()
