"""Faults around a run: a flaky API server, an API server that goes away, a node that never comes back,
a budget that never frees, a Prometheus that never answers. Each case ends on the simulator's invariants."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import yaml

from aksmaint.nodestate import STATE_ANNOTATION, NodeRecord, RecordState
from aksmaint.report import Outcome
from flows.node_maintenance import node_maintenance
from tests.reliability.support import assert_invariants, cordoned_without_record, reliability_scenario
from tests.support import (
    POOL,
    core_api,
    fast_params,
    needing_reboot,
    outcomes,
    pinned_pod,
    report_of,
    wait_for,
)


def test_api_faults_throughout_a_run(start_sim, prefect_api) -> None:
    sim = start_sim(reliability_scenario(need=4, count=5))
    needed = needing_reboot(sim)
    mark = len(sim.observer.audit())
    sim.observer.faults(error_rate=0.05, throttle_rate=0.05)
    try:
        state = node_maintenance(**fast_params(sim, concurrency=2), return_state=True)
    finally:
        sim.observer.faults(error_rate=0, throttle_rate=0)
    statuses = [e["status"] for e in sim.observer.audit(mark)]
    # the faults really happened, all through the run
    assert statuses.count(500) >= 5 and statuses.count(429) >= 5, (statuses.count(500), statuses.count(429))
    assert state.is_completed(), state.message
    assert {n: outcomes(report_of(state))[n] for n in needed} == dict.fromkeys(needed, Outcome.rebooted)
    assert_invariants(sim, needed, concurrency=2)


def proxied_kubeconfig(sim, port: int, folder: Path) -> str:
    """The simulator's kubeconfig with the server on the proxy's port (same CA, same token)."""
    data = yaml.safe_load(Path(sim.kubeconfig).read_text())
    data["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{port}"
    path = folder / "proxied.kubeconfig"
    path.write_text(yaml.safe_dump(data))
    path.chmod(0o600)
    return str(path)


class NodeWatch:
    """Samples the nodes directly (not through the proxy) while a run goes on: a node cordoned or down
    without our record would be a half-done node nobody could account for."""

    def __init__(self, sim):
        self.sim = sim
        self.core = core_api(sim)
        self.bad: list[str] = []
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            nodes = self.core.list_node().items
            hosts = self.sim.observer.hosts()
            for n in nodes:
                recorded = STATE_ANNOTATION in (n.metadata.annotations or {})
                down = hosts[n.metadata.name]["state"] != "up"
                if (n.spec.unschedulable or down) and not recorded:
                    self.bad.append(f"{n.metadata.name}: cordoned={n.spec.unschedulable} down={down}")
            self.samples += 1
            time.sleep(0.05)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.core.api_client.close()


def test_api_unreachable_mid_run(start_sim, prefect_api, proxy, record_property, tmp_path) -> None:
    """Two outages: 3 s while a node reboots (the run rides it out), 15 s while the next node drains
    (retries run out: the run fails saying why, the node keeps its record, the next run finishes the job)."""
    sim = start_sim(reliability_scenario(need=3, count=4))
    needed = needing_reboot(sim)
    cut = proxy(sim)
    params = fast_params(sim, cluster={"kubeconfig": proxied_kubeconfig(sim, cut.port, tmp_path)})
    watch = NodeWatch(sim)
    result: dict = {}
    flow = threading.Thread(
        target=lambda: result.update(state=node_maintenance(**params, return_state=True)), daemon=True
    )
    flow.start()
    try:
        first = wait_for(sim, lambda kind, e: kind == "timeline" and e["event"] == "rebooted")
        cut.cut()
        time.sleep(3)
        cut.restore()
        second = wait_for(sim, lambda kind, e: kind == "timeline" and e["event"] == "pod_evicted")
        assert second["node"] != first["node"]
        cut.cut()
        time.sleep(15)
        cut.restore()
        flow.join(120)
        assert not flow.is_alive()
    finally:
        watch.stop()
    assert watch.bad == [], watch.bad
    assert watch.samples > 50
    state = result["state"]
    report = state.result(raise_on_failure=False)
    if state.is_completed():  # rode out both
        assert_invariants(sim, needed)
        record_property(
            "reliability", "API unreachable 3 s while rebooting, 15 s while draining: the run rode out both"
        )
        return
    # a clear failure: the run says the API server could not be reached
    reasons = [n.reason for n in getattr(report, "nodes", []) if n.outcome == Outcome.failed]
    assert "unreachable" in " ".join([state.message or "", *reasons]).lower(), (state.message, reasons)
    # the node that was draining is cordoned, with the record saying who, why and how far it got
    core = core_api(sim)
    node = core.read_node(second["node"])
    core.api_client.close()
    record = NodeRecord.model_validate_json(node.metadata.annotations[STATE_ANNOTATION])
    assert node.spec.unschedulable and record.phase in (RecordState.cordoned, RecordState.draining), record
    assert sim.observer.invariants()["reboots"] == {first["node"]: 1}  # the first one rode the short outage
    again = node_maintenance(**fast_params(sim), return_state=True)
    assert again.is_completed(), again.message
    assert_invariants(sim, needed)
    record_property(
        "reliability",
        "API unreachable 3 s while rebooting: ridden out; 15 s while draining: the run failed "
        f"({(reasons or [state.message])[0][:90]}...), the node kept its record, the next run finished",
    )


def test_node_that_never_returns(start_sim, prefect_api) -> None:
    scenario = reliability_scenario(need=3, count=4)
    scenario["nodes"][0]["fail_after_reboot"] = True
    sim = start_sim(scenario)
    needed = needing_reboot(sim)
    lost = needed[0]  # the plan goes by name: the lost node is the first
    started = time.monotonic()
    state = node_maintenance(**fast_params(sim, reboot={"boot_timeout_seconds": 4}), return_state=True)
    assert time.monotonic() - started < 60
    assert state.is_failed()
    assert lost in state.message and "halted" in state.message, state.message
    assert outcomes(report_of(state)) == {
        **{n: Outcome.not_needed for n in sim.sim.node_names() if n not in needed},
        lost: Outcome.failed,
        **{n: Outcome.held for n in needed[1:]},
    }
    core = core_api(sim)
    record = NodeRecord.model_validate_json(core.read_node(lost).metadata.annotations[STATE_ANNOTATION])
    core.api_client.close()
    assert record.phase == RecordState.failed and "did not come back" in record.reason
    # the rollout halted: the lost node stays cordoned with its record, nothing else was touched
    assert_invariants(sim, needed, not_rebooted=tuple(needed[1:]), left_cordoned=(lost,))
    assert report_of(state).still_need_reboot == needed


def test_pdb_that_never_frees(start_sim, prefect_api) -> None:
    scenario = reliability_scenario(need=3, count=4)
    scenario["workloads"].append(pinned_pod(pool=POOL))
    sim = start_sim(scenario)
    needed = needing_reboot(sim)
    blocked = needed[0]
    state = node_maintenance(**fast_params(sim, drain={"timeout_seconds": 3}), return_state=True)
    assert state.is_completed(), state.message
    report = report_of(state)
    skipped = next(n for n in report.nodes if n.node == blocked)
    assert skipped.outcome == Outcome.skipped
    assert "default/pinned" in skipped.reason and "uncordoned" in skipped.reason, skipped.reason
    assert {n: outcomes(report_of(state))[n] for n in needed[1:]} == dict.fromkeys(
        needed[1:], Outcome.rebooted
    )
    refused = [e for e in sim.observer.audit() if e["subresource"] == "eviction" and e["name"] == "pinned"]
    assert refused and {e["status"] for e in refused} == {429}
    assert_invariants(sim, needed, not_rebooted=(blocked,))
    assert report.still_need_reboot == [blocked]


def test_prometheus_that_never_answers(start_sim, prefect_api, silent_server) -> None:
    sim = start_sim(reliability_scenario(need=3, count=4))
    needed = needing_reboot(sim)
    mark = len(sim.observer.audit())
    started = time.monotonic()
    state = node_maintenance(
        **fast_params(
            sim,
            blockers={
                "prometheus_url": f"http://127.0.0.1:{silent_server.port}",
                "prometheus_timeout_seconds": 0.5,
            },
        ),
        return_state=True,
    )
    assert time.monotonic() - started < 60  # each gate gives up after its timeout
    assert silent_server.accepted >= len(needed)
    assert state.is_completed(), state.message
    report = report_of(state)
    for node in needed:
        entry = next(n for n in report.nodes if n.node == node)
        assert entry.outcome == Outcome.held
        assert "could not be queried" in entry.reason and "Timeout" in entry.reason, entry.reason
    # nothing was cordoned; the only node writes were the reboot-pending taints, set and taken off
    node_writes = [e for e in sim.observer.mutating_requests(mark) if e["resource"] == "nodes"]
    assert len(node_writes) == 2 * len(needed), node_writes
    assert [e for e in sim.observer.timeline() if e["event"] in ("cordoned", "rebooted")] == []
    assert_invariants(sim, needed, not_rebooted=tuple(needed))
    core = core_api(sim)
    assert cordoned_without_record(core) == []
    core.api_client.close()
