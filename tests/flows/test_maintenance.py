"""The node-maintenance flow against the simulated AKS: what gets rebooted, how many at once, what is left.

Every test calls the flow directly against a time-scaled simulator and checks what the cluster saw
(the simulator's timeline, audit log, invariants and host state), the nodes as the Kubernetes client
reads them, the Prefect state, and the returned ``MaintenanceReport``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from kubernetes import client, config
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter, EventResourceFilter
from prefect.exceptions import ParameterBindError

from aksmaint.report import Outcome
from flows.node_maintenance import node_maintenance
from simulator.controllers.common import node_name
from simulator.observe import SimObserver
from tests.support import (
    ROOT,
    RunningSim,
    assert_left_clean,
    cli_env,
    events,
    fast_params,
    outcomes,
    pinned_pod,
    scenario_dict,
)

SCALE = 0.05
OLD_KERNEL = "5.15.0-1079-azure"
NEW_KERNEL = "5.15.0-1081-azure"


def node(pool: str, index: int) -> str:
    """The simulator's name for a node of the demo cluster."""
    return node_name("aks-demo", pool, index)


def scenario(needs_reboot: dict[tuple[str, int], dict] | None = None) -> dict:
    """The demo scenario, time-scaled, with exactly the given nodes needing a reboot.

    ``needs_reboot`` maps (pool, index) to extra node fields (e.g. ``{"cordoned": True}``); each such
    node gets the sentinel and a pending kernel.
    """
    sc = scenario_dict()
    sc["time_scale"] = SCALE
    sc["nodes"] = [
        {"pool": pool, "index": index, "reboot_required": True, "pending_kernel": NEW_KERNEL, **extra}
        for (pool, index), extra in (needs_reboot or {}).items()
    ]
    return sc


def run(sim: RunningSim, **overrides: object):
    """Run the flow on the simulator; return its final Prefect state and the report it carries."""
    state = node_maintenance(**fast_params(sim, **overrides), return_state=True)
    return state, state.result(raise_on_failure=False)


def read_nodes(sim: RunningSim) -> dict[str, client.V1Node]:
    api = config.new_client_from_config(config_file=sim.kubeconfig)
    try:
        return {n.metadata.name: n for n in client.CoreV1Api(api).list_node().items}
    finally:
        api.close()


# ---- what gets rebooted, and how many at once -------------------------------------------------
def release_budgets_when(
    sim: RunningSim, budgets: list[str], ready: Callable[[list[dict]], bool], linger: float
) -> threading.Thread:
    """Delete the ``default`` PodDisruptionBudgets that hold drains once ``ready(timeline)`` holds and
    ``linger`` more seconds have passed (time for a flow to overstep its limit), or after 25 s."""

    def release() -> None:
        observer = SimObserver(sim.endpoints)
        api = config.new_client_from_config(config_file=sim.kubeconfig)
        try:
            observer.wait_for(lambda: ready(observer.timeline()), timeout=25, interval=0.05)
            time.sleep(linger)
        except TimeoutError:
            pass  # the assertions on the run say what went wrong
        finally:
            for budget in budgets:
                client.PolicyV1Api(api).delete_namespaced_pod_disruption_budget(budget, "default")
            api.close()
            observer.close()

    thread = threading.Thread(target=release, daemon=True, name="release-budgets")
    thread.start()
    return thread


def cordoned(timeline: list[dict]) -> set[str]:
    return {e["node"] for e in timeline if e["event"] == "cordoned"}


@pytest.mark.parametrize("concurrency", [1, 2])
def test_only_nodes_needing_a_reboot_are_rebooted_within_the_concurrency(start_sim, prefect_api, concurrency):
    """Three nodes need a reboot. The drains of the first two are held by PodDisruptionBudgets until as
    many nodes as allowed are stuck and a flow that overstepped its limit would have started another."""
    targets = [node("nodepool1", 0), node("nodepool1", 2), node("userpool", 1)]
    stuck = set(targets[:concurrency])  # the plan's order: the first nodes get the slots
    sc = scenario({("nodepool1", 0): {}, ("nodepool1", 2): {}, ("userpool", 1): {}})
    sc["workloads"] += [
        pinned_pod(0, name="pinned-a", termination_grace_seconds=2),
        pinned_pod(2, name="pinned-b", termination_grace_seconds=2),
    ]
    sim = start_sim(sc)
    before = sim.observer.hosts()
    releaser = release_budgets_when(
        sim, ["pinned-a", "pinned-b"], lambda tl: stuck <= cordoned(tl), linger=1.5
    )

    state, report = run(sim, concurrency=concurrency)
    releaser.join(timeout=30)

    assert state.is_completed(), state.message
    inv = sim.observer.invariants()
    assert inv["reboots"] == dict.fromkeys(targets, 1)
    assert inv["max_unschedulable"] == concurrency
    assert inv["max_disrupted"] == concurrency
    assert inv["pdb_violations"] == 0
    hosts, nodes = sim.observer.hosts(), read_nodes(sim)
    for name, host in hosts.items():
        if name in targets:
            assert host["running_kernel"] == NEW_KERNEL and not host["reboot_required"], name
            assert host["boot_id"] != before[name]["boot_id"], name
            assert nodes[name].status.node_info.kernel_version == NEW_KERNEL, name
            assert nodes[name].status.node_info.boot_id == host["boot_id"], name
        else:
            assert host == before[name], name
            assert nodes[name].status.node_info.kernel_version == OLD_KERNEL, name
    assert cordoned(sim.observer.timeline()) == set(targets)
    assert outcomes(report) == {n: Outcome.rebooted if n in targets else Outcome.not_needed for n in hosts}
    for n in report.nodes:
        if n.node in targets:
            assert (n.kernel_before, n.kernel_after, n.boot_id_changed) == (OLD_KERNEL, NEW_KERNEL, True)
    assert report.still_need_reboot == []
    assert report.kernels_after == {OLD_KERNEL: 2, NEW_KERNEL: 3}
    assert_left_clean(sim)


def test_operator_cordoned_node_is_rebooted_and_stays_cordoned(start_sim, prefect_api):
    cordoned = node("nodepool1", 1)
    sim = start_sim(scenario({("nodepool1", 1): {"cordoned": True}}))
    assert read_nodes(sim)[cordoned].spec.unschedulable

    state, report = run(sim)

    assert state.is_completed(), state.message
    assert sim.observer.invariants()["reboots"] == {cordoned: 1}
    assert sim.observer.hosts()[cordoned]["running_kernel"] == NEW_KERNEL
    assert outcomes(report)[cordoned] == Outcome.rebooted
    # never uncordoned, not even for a moment
    assert events(sim, "uncordoned") == []
    assert_left_clean(sim, operator_cordoned=frozenset({cordoned}))


def test_second_run_right_after_a_complete_one_is_a_noop(start_sim, prefect_api):
    target = node("userpool", 1)
    sim = start_sim(scenario({("userpool", 1): {}}))
    state, _ = run(sim)
    assert state.is_completed(), state.message
    assert sim.observer.invariants()["reboots"] == {target: 1}
    timeline_mark, audit_mark = len(sim.observer.timeline()), len(sim.observer.audit())

    state, report = run(sim)

    assert state.is_completed(), state.message
    assert sim.observer.invariants()["reboots"] == {target: 1}
    new_events = {e["event"] for e in sim.observer.timeline(timeline_mark)}
    assert not new_events & {"cordoned", "uncordoned", "pod_evicted", "rebooted", "pdb_violation"}
    assert set(outcomes(report).values()) == {Outcome.not_needed}
    # the only writes are the short-lived scan pods: no node, Lease or eviction request at all
    writes = sim.observer.mutating_requests(audit_mark)
    assert writes, "the second run scans the nodes with host pods"
    assert {(e["resource"], e["namespace"], e["subresource"]) for e in writes} == {
        ("pods", "kube-system", None)
    }
    assert_left_clean(sim)


# ---- dry runs ---------------------------------------------------------------------------------
def test_dry_run_makes_no_mutating_request_and_plans_every_node(start_sim, prefect_api):
    sim = start_sim(scenario({("nodepool1", 0): {}, ("userpool", 1): {}}))
    hosts_before = sim.observer.hosts()
    mark = len(sim.observer.audit())

    state, report = run(sim, dry_run=True)

    assert state.is_completed(), state.message
    assert report.dry_run
    assert len(sim.observer.audit(mark)) > 0, "a dry run still reads the cluster"
    assert sim.observer.mutating_requests(mark) == []
    # the host-pod scan would create pods, so a dry run cannot know which nodes need a reboot:
    # every node is planned for a check, none is claimed to be fine
    assert set(outcomes(report)) == set(hosts_before)
    assert set(outcomes(report).values()) == {Outcome.planned}
    assert sim.observer.hosts() == hosts_before
    assert sim.observer.invariants()["reboots"] == {}


@pytest.mark.parametrize("dry_run", [True, False])
def test_node_condition_sentinel_without_node_problem_detector_holds_every_node(
    start_sim, prefect_api, dry_run
):
    """The simulated cluster runs no node-problem-detector here: without the condition nothing can be
    known, so the report must hold the nodes and say why instead of calling them fine."""
    sim = start_sim(scenario({("userpool", 1): {}}))
    mark = len(sim.observer.audit())

    state, report = run(sim, dry_run=dry_run, sentinel={"mode": "node-condition"})

    assert state.is_completed(), state.message
    assert set(outcomes(report).values()) == {Outcome.held}
    for n in report.nodes:
        assert "no RebootRequired condition" in n.reason and "node-problem-detector" in n.reason, n
    assert sim.observer.invariants()["reboots"] == {}
    if dry_run:
        assert sim.observer.mutating_requests(mark) == []
    else:
        assert events(sim, "cordoned") == []
    assert sim.observer.hosts()[node("userpool", 1)]["reboot_required"]


# ---- parameters and cluster access are checked before anything else ---------------------------
@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"concurrency": 0}, "concurrency"),
        ({"window": {"time_zone": "Mars/Olympus_Mons"}}, "window.time_zone"),
        ({"window": {"start": "25:00"}}, "window.start"),
        ({"drain": {"on_timeout": "pray"}}, "drain.on_timeout"),
        ({"lock": {"ttl_seconds": 1}}, "lock.ttl_seconds"),
        ({"drain": {"timeout": 60}}, "drain.timeout"),
        ({"blockers": {"prometheus_url": "prometheus:9090"}}, "blockers.prometheus_url"),
    ],
)
def test_invalid_parameters_fail_naming_the_field_before_any_request(
    start_sim, prefect_api, overrides, field
):
    sim = start_sim(scenario())
    mark = len(sim.observer.audit())

    state, error = run(sim, **overrides)

    assert state.is_failed()
    assert field in state.message, state.message
    assert isinstance(error, Exception)
    assert sim.observer.audit(mark) == []


def test_unknown_parameter_is_refused_before_any_request(start_sim, prefect_api):
    sim = start_sim(scenario())
    mark = len(sim.observer.audit())
    with pytest.raises(ParameterBindError, match="concurency"):
        node_maintenance(**fast_params(sim), concurency=2, return_state=True)
    assert sim.observer.audit(mark) == []


def test_unknown_context_fails_fast_with_the_contexts_it_has(start_sim, prefect_api):
    sim = start_sim(scenario({("userpool", 1): {}}))
    mark = len(sim.observer.audit())
    started = time.monotonic()

    state, error = run(sim, cluster={"kubeconfig": sim.kubeconfig, "context": "prod-westeurope"})

    assert state.is_failed()
    assert time.monotonic() - started < 10
    assert "'prod-westeurope' is not in" in state.message and "aks-demo" in state.message, state.message
    assert type(error).__name__ == "ClusterAccessError"
    assert sim.observer.audit(mark) == []


def test_missing_kubeconfig_fails_fast_saying_it_is_missing(prefect_api, tmp_path):
    missing = tmp_path / "no-such-kubeconfig"
    started = time.monotonic()

    state = node_maintenance(cluster={"kubeconfig": str(missing)}, return_state=True)

    assert state.is_failed()
    assert time.monotonic() - started < 10
    assert f"kubeconfig not found: {missing}" in state.message, state.message


# ---- outputs: artifacts, events, command line -------------------------------------------------
def test_run_publishes_plan_and_kernel_diff_artifacts_and_node_events(start_sim, prefect_api):
    target = node("userpool", 1)
    sim = start_sim(scenario({("userpool", 1): {}}))
    started = datetime.now(UTC)

    state, report = run(sim)

    assert state.is_completed(), state.message
    with get_client(sync_client=True) as prefect:
        artifacts = prefect.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])
            )
        )
        by_key = {a.key: a for a in artifacts}
        assert {"maintenance-plan", "kernel-diff", "kernel-report"} <= set(by_key)
        assert target in by_key["maintenance-plan"].data and "reboot" in by_key["maintenance-plan"].data
        rows = by_key["kernel-diff"].data
        rows = json.loads(rows) if isinstance(rows, str) else rows
        row = next(r for r in rows if r["node"] == target)
        assert (row["kernel_before"], row["kernel_after"], row["boot_id_changed"], row["outcome"]) == (
            OLD_KERNEL,
            NEW_KERNEL,
            True,
            "rebooted",
        )
        assert f"{OLD_KERNEL}" in by_key["kernel-report"].data and NEW_KERNEL in by_key["kernel-report"].data

        wanted = {
            "node.cordoned",
            "node.draining",
            "node.drained",
            "node.rebooting",
            "node.rebooted",
            "node.uncordoned",
        }
        event_filter = EventFilter(
            occurred=EventOccurredFilter(since=started, until=datetime.now(UTC).replace(year=2100)),
            event=EventNameFilter(prefix=["node."]),
            resource=EventResourceFilter(id=[f"aks.node.aks-demo.{target}"]),
        )
        deadline = time.monotonic() + 15
        seen: set[str] = set()
        found: dict = {}
        while time.monotonic() < deadline and not wanted <= seen:  # events are stored asynchronously
            found = {e.event: e for e in prefect.read_events(filter=event_filter, limit=50).events}
            seen = set(found)
            time.sleep(0.2)
        assert wanted <= seen
        # the phases that take time say how long they took, for automations and dashboards
        assert found["node.drained"].payload["duration_seconds"] >= 0
        assert found["node.rebooted"].payload["duration_seconds"] > 0
        assert found["node.rebooted"].payload["kernel_after"] == NEW_KERNEL


def small_scenario(needs_reboot: dict[tuple[str, int], dict]) -> dict:
    """Two nodes in one pool and only a DaemonSet: the least a command-line run has to wait for."""
    sc = scenario(needs_reboot)
    sc["pools"] = [{**sc["pools"][0], "count": 2}]
    sc["workloads"] = [w for w in sc["workloads"] if w["kind"] == "DaemonSet"]
    return sc


def test_cli_dry_run_prints_a_summary_and_exits_zero(start_sim, prefect_api, tmp_path):
    sim = start_sim(small_scenario({("nodepool1", 1): {}}))
    mark = len(sim.observer.audit())

    done = subprocess.run(
        [sys.executable, "-m", "flows.node_maintenance", "--kubeconfig", sim.kubeconfig, "--dry-run"],
        cwd=ROOT,
        env=cli_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert done.returncode == 0, done.stderr
    assert "Node maintenance on aks-demo (dry run)" in done.stdout
    for name in sim.observer.hosts():
        assert name in done.stdout
    assert "Result: aks-demo: 2 planned" in done.stdout
    assert sim.observer.mutating_requests(mark) == []


def test_cli_exits_nonzero_when_the_run_fails(start_sim, prefect_api, tmp_path):
    lost = node("nodepool1", 1)
    sim = start_sim(small_scenario({("nodepool1", 1): {"fail_after_reboot": True}}))
    params = tmp_path / "params.json"
    params.write_text(json.dumps(fast_params(sim, reboot={"boot_timeout_seconds": 2})))

    done = subprocess.run(
        [sys.executable, "-m", "flows.node_maintenance", "--params", str(params)],
        cwd=ROOT,
        env=cli_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert done.returncode == 1, done.stdout + done.stderr
    line = next(line for line in done.stdout.splitlines() if lost in line)
    assert "failed" in line and "did not come back" in line
    assert "Result: aks-demo: 1 not-needed, 1 failed" in done.stdout


@pytest.mark.parametrize(("order", "moves_per_pod"), [("fewest-pods-first", 1), ("name", 2)])
def test_emptiest_nodes_go_first_so_each_pod_moves_once(start_sim, prefect_api, order, moves_per_pod):
    """Under bin-pack scoring every workload pod starts on the pool's first node. The default order takes
    the empty nodes first; when the full node drains, its pods go to nodes already rebooted, so no pod is
    evicted twice. By name, the full node goes first, its pods pile onto the next node (all the others
    are waiting) and move again when that one drains."""
    from tests.support import maintenance_scenario, needing_reboot

    sim = start_sim({**maintenance_scenario(need=3, count=3), "scheduler": {"scoring": "bin-pack"}})
    needed = needing_reboot(sim)
    core = client.CoreV1Api(config.new_client_from_config(config_file=sim.kubeconfig))
    workload = [p for p in core.list_pod_for_all_namespaces().items if p.metadata.namespace == "shop"]
    full = {p.spec.node_name for p in workload}
    assert len(full) == 1 and len(workload) == 9, "bin-pack should have put every workload pod on one node"

    state, report = run(sim, order=order)
    assert state.is_completed(), state.message
    timeline = sim.observer.timeline()
    cordoned = [e["node"] for e in timeline if e["event"] == "cordoned"]
    assert sorted(cordoned) == needed
    assert cordoned[-1 if order == "fewest-pods-first" else 0] in full
    evicted = [e for e in timeline if e["event"] == "pod_evicted"]
    assert len(evicted) == moves_per_pod * len(workload), [e.get("pod") for e in evicted]
    reasons = {n.node: n.reason for n in report.nodes}
    assert "9 pod(s) evicted" in reasons[next(iter(full))]
    assert sim.observer.invariants()["pdb_violations"] == 0
