"""The run's own node (in_cluster) is never drained from under the run: it goes last, is cordoned with
its reboot slot kept for it, and a follow-up run on another node reboots it.

These cases drive the runbook (``aksmaint/maintenance/``) against the simulated cluster, with the follow-up's start
given as a plain function; the Prefect side, a real worker and the run as a Job in the cluster it
maintains are in tests/e2e/test_kubernetes_pool.py.
"""

from __future__ import annotations

import json

from aksmaint.kube import kube_for
from aksmaint.maintenance.lifecycle import NodeLifecycle
from aksmaint.maintenance.lock import RebootSlots, handed_over_holder
from aksmaint.maintenance.plan import make_plan
from aksmaint.maintenance.rollout import Rollout
from aksmaint.maintenance.sentinel import scan_nodes
from aksmaint.maintenance.update_check import update_check
from aksmaint.nodestate import STATE_ANNOTATION, RecordState
from aksmaint.params import MaintenanceParams
from aksmaint.report import Outcome
from tests.support import POOL, core_api, fast_params, maintenance_scenario


class Log:
    """A recorder that keeps what the lifecycle says (the flow's is Prefect's)."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.events: list[tuple[str, str]] = []

    def event(self, name: str, node: str, **payload: object) -> None:
        self.events.append((name, node))

    def info(self, message: str, *args: object) -> None:
        self.lines.append(message % args)

    warning = error = info


def run_once(sim, run_id: str, own_node: str, hand_over, concurrency: int = 2):
    params = MaintenanceParams(**fast_params(sim, concurrency=concurrency))
    kube = kube_for(params.cluster)
    settings = NodeLifecycle(kube, params, run_id, Log()).settings
    facts, _ = update_check(kube, "", False, settings, 4)
    facts = scan_nodes(kube, facts, params.sentinel, settings, False) or facts
    plan = make_plan(facts, own_node=own_node)
    log = Log()
    lifecycle = NodeLifecycle(kube, params, run_id, log, own_node=own_node, hand_over=hand_over)
    todo = [e for e in plan if e.action.runs]
    result = Rollout(lifecycle, todo, {f.name: f for f in facts}).run()
    return plan, result, log, kube, params


def node_named(sim, name: str) -> dict:
    return core_api(sim).read_node(name).to_dict()


def test_the_own_node_is_handed_over_last_and_the_follow_up_reboots_it(start_sim):
    sim = start_sim(maintenance_scenario(need=4, count=4))
    nodes = sorted(sim.sim.node_names())
    own, other = nodes[0], nodes[1]
    started: list[str] = []

    def hand_over(node: str) -> str:
        started.append(node)
        return "follow-up-1 (1234)"

    plan, result, log, kube, params = run_once(sim, "run-a", own, hand_over)

    assert plan[-1].node == own and "handed over last" in plan[-1].reason
    outcomes = {n: r.outcome for n, r in result.reports.items()}
    assert outcomes == {**{n: Outcome.rebooted for n in nodes if n != own}, own: Outcome.handed_over}
    assert started == [own]
    assert result.reports[own].reason.startswith("cordoned and handed over to flow run follow-up-1 (1234)")
    # never drained, never rebooted: no eviction of a pod on it, its boot unchanged
    audit = sim.observer.audit()
    evicted_from = {e["name"] for e in audit if e["subresource"] == "eviction"}
    pods_on_own = {
        p.metadata.name
        for p in core_api(sim).list_pod_for_all_namespaces(field_selector=f"spec.nodeName={own}").items
    }
    assert pods_on_own and not pods_on_own & evicted_from
    invariants = sim.observer.invariants()
    assert own not in invariants["reboots"]
    assert invariants["max_disrupted"] <= 2
    # cordoned with a record saying why, and its slot kept for it
    node = node_named(sim, own)
    assert node["spec"]["unschedulable"] is True
    record = json.loads(node["metadata"]["annotations"][STATE_ANNOTATION])
    assert record["phase"] == RecordState.handed_over and "follow-up-1" in record["reason"]
    slots = RebootSlots(kube, params.lock)
    assert [h.split("=")[1] for h in slots.holders()] == [handed_over_holder(own)]

    # the follow-up runs from another node: it takes the kept slot over and reboots the node
    plan, result, log, kube, params = run_once(sim, "run-b", other, hand_over)
    assert plan[0].node == own and plan[0].action == "resume"
    assert result.reports[own].outcome == Outcome.rebooted, result.reports[own].reason
    assert any("took over reboot slot" in line for line in log.lines)
    assert started == [own], "the follow-up started no follow-up of its own"
    node = node_named(sim, own)
    assert not node["spec"]["unschedulable"] and STATE_ANNOTATION not in (
        node["metadata"]["annotations"] or {}
    )
    assert slots.holders() == []
    invariants = sim.observer.invariants()
    assert all(count == 1 for count in invariants["reboots"].values()) and len(invariants["reboots"]) == 4
    assert invariants["max_disrupted"] <= 2
    assert invariants["pdb_violations"] == 0


def test_without_a_deployment_the_own_node_is_held_untouched(start_sim):
    sim = start_sim(maintenance_scenario(need=2, count=3))
    own = sorted(sim.sim.node_names())[0]
    _, result, _, _, _ = run_once(sim, "run-c", own, hand_over=None)
    report = result.reports[own]
    assert report.outcome == Outcome.held
    assert "this run's own pod runs on it" in report.reason and "deployment" in report.reason
    assert not node_named(sim, own)["spec"]["unschedulable"]


def test_a_follow_up_that_cannot_start_puts_the_node_back(start_sim):
    sim = start_sim(maintenance_scenario(need=1, count=3))
    own = sorted(sim.sim.node_names())[0]

    def refuse(node: str) -> str:
        raise RuntimeError("the Prefect API answered 503")

    _, result, _, kube, params = run_once(sim, "run-d", own, refuse)
    report = result.reports[own]
    assert report.outcome == Outcome.held
    assert "the follow-up run could not be started (the Prefect API answered 503)" in report.reason
    node = node_named(sim, own)
    assert not node["spec"]["unschedulable"] and STATE_ANNOTATION not in (
        node["metadata"]["annotations"] or {}
    )
    assert RebootSlots(kube, params.lock).holders() == []
    assert node["metadata"]["labels"]["kubernetes.azure.com/agentpool"] == POOL
