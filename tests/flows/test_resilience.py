"""Safety under crashes and concurrent runs, the approval gate, and the reboot-slot Leases.

What must hold whatever happens to the flow process: never more nodes disrupted than the concurrency,
no PodDisruptionBudget violated, every node that needed a reboot rebooted exactly once, and no node left
cordoned by us without the record annotation saying why. Everything is asserted on what the simulated
cluster saw (timeline, audit log, invariants) and on Prefect states.
"""

from __future__ import annotations

import contextvars
import functools
import json
import re
import threading
import time
from datetime import UTC, datetime

import pytest
from kubernetes import client
from prefect import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
    TaskRunFilter,
    TaskRunFilterName,
    TaskRunFilterStartTime,
    TaskRunFilterState,
    TaskRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.flow_runs import pause_flow_run, resume_flow_run

import aksmaint.maintenance.lock as lock_module
import tasks.maintenance as maintenance_module
from aksmaint.kube import Kube, connect
from aksmaint.maintenance.lock import RebootSlots
from aksmaint.nodestate import STATE_ANNOTATION, NodeRecord, RecordState
from aksmaint.params import ClusterConnection, LockOptions
from aksmaint.report import Outcome
from flows.node_maintenance import node_maintenance
from tests.flows.test_maintenance import release_budgets_when
from tests.support import (
    PENDING_KERNEL,
    POOL,
    RunningSim,
    SingleSetSlots,
    core_api,
    fast_params,
    maintenance_scenario,
    needing_reboot,
    outcomes,
    pinned_pod,
    report_of,
    timeline_event,
    wait_for,
)

TTL = 5  # seconds; the smallest lock TTL the parameters allow
SLOT = "aks-maintenance-slot-0"
SLOT_PATH = f"/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/{SLOT}"
MICROTIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")  # as a real API server returns it


def resilience_scenario(need: int = 3, count: int = 4, api_ready_seconds: float = 2) -> dict:
    return maintenance_scenario(need, count, replicas=6, api_ready_seconds=api_ready_seconds)


# ---- observing the cluster -------------------------------------------------------------------
def node_marks(core: client.CoreV1Api) -> dict[str, tuple[bool, str | None]]:
    """Per node: cordoned?, and our record annotation (or None)."""
    return {
        n.metadata.name: (bool(n.spec.unschedulable), (n.metadata.annotations or {}).get(STATE_ANNOTATION))
        for n in core.list_node().items
    }


def assert_safe(sim: RunningSim, concurrency: int = 1) -> dict:
    inv = sim.observer.invariants()
    violations = [e for e in sim.observer.timeline() if e["event"] == "pdb_violation"]
    assert inv["pdb_violations"] == 0, violations
    assert inv["max_disrupted"] <= concurrency, inv
    assert inv["max_unschedulable"] <= concurrency, inv
    return inv


def assert_no_cordon_without_record(core: client.CoreV1Api) -> None:
    bare = [name for name, (cordoned, record) in node_marks(core).items() if cordoned and not record]
    assert not bare, f"cordoned without a record saying why: {bare}"


def assert_converged(
    sim: RunningSim, core: client.CoreV1Api, needed: list[str], concurrency: int = 1
) -> None:
    """The job is done: each node that needed it rebooted exactly once, onto its pending kernel, and
    nothing of ours is left on the cluster."""
    inv = assert_safe(sim, concurrency)
    assert inv["reboots"] == dict.fromkeys(needed, 1)
    hosts = sim.observer.hosts()
    assert {n: hosts[n]["running_kernel"] for n in needed} == dict.fromkeys(needed, PENDING_KERNEL)
    assert needing_reboot(sim) == []
    marks = node_marks(core)
    assert marks == dict.fromkeys(marks, (False, None))
    assert inv["unschedulable_now"] == [] and inv["not_ready_now"] == []
    leftovers = core.list_pod_for_all_namespaces(
        label_selector="app.kubernetes.io/managed-by=aks-node-maintenance"
    ).items
    assert [p.metadata.name for p in leftovers] == []


def in_thread(fn, *args) -> threading.Thread:
    """A thread that sees this test's Prefect settings (threads do not inherit context variables)."""
    thread = threading.Thread(target=contextvars.copy_context().run, args=(fn, *args), daemon=True)
    thread.start()
    return thread


# ---- 1. crash, then resume -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kill_after", "phase", "api_ready_seconds"),
    [("pod_evicted", RecordState.draining, 25), ("rebooted", RecordState.rebooting, 2)],
    ids=["mid-drain", "mid-reboot"],
)
def test_killed_run_is_finished_by_the_next_run(
    start_sim, flow_process, kill_after: str, phase: RecordState, api_ready_seconds: float
) -> None:
    sim = start_sim(resilience_scenario(need=3, count=4, api_ready_seconds=api_ready_seconds))
    core = core_api(sim)
    needed = needing_reboot(sim)
    assert len(needed) == 3

    first = flow_process(sim, "first")
    event = wait_for(sim, timeline_event(kill_after), first)
    assert first.kill() == -9
    audit_mark = len(sim.observer.audit())

    # in between: the node is cordoned, with the record saying who, why and how far it got
    node = event["node"]
    cordoned, raw = node_marks(core)[node]
    assert cordoned and raw
    record = NodeRecord.model_validate_json(raw)
    assert record.phase == phase and record.cordoned_by_us
    assert record.boot_id_before
    assert_no_cordon_without_record(core)
    inv = assert_safe(sim)
    assert inv["reboots"] == ({} if kill_after == "pod_evicted" else {node: 1})
    slot = client.CoordinationV1Api(core.api_client).read_namespaced_lease(SLOT, "kube-system")
    assert slot.spec.holder_identity == record.holder  # the dead run still holds its slot

    # the next run waits out the dead run's slot, resumes its node first, then does the rest
    state = node_maintenance(**fast_params(sim), return_state=True)
    assert state.is_completed(), state.message
    report = report_of(state)
    assert report.nodes[0].node == node  # a node left mid-way goes first
    if kill_after == "rebooted":  # its reboot was the killed run's: this run only verified it
        assert report.nodes[0].reason == f"verified after the reboot run {record.run_id} requested"
    else:
        assert report.nodes[0].reason.startswith("drained (")
    assert outcomes(report) == {
        **dict.fromkeys(node_marks(core), Outcome.not_needed),
        **dict.fromkeys(needed, Outcome.rebooted),
    }
    assert {n.node: n.kernel_after for n in report.nodes if n.node in needed} == dict.fromkeys(
        needed, PENDING_KERNEL
    )
    assert_converged(sim, core, needed)
    if kill_after == "pod_evicted":  # the drains really had to wait on the budgets
        refused = [e for e in sim.observer.audit() if e["subresource"] == "eviction" and e["status"] == 429]
        assert refused, "no eviction was refused: the budgets were never put to the test"

    # takeover of the dead run's slot only after it looked unchanged for a whole TTL, seen from here
    lease_calls = [e for e in sim.observer.audit(audit_mark) if e["path"] == SLOT_PATH]
    first_look = next(e for e in lease_calls if e["verb"] == "get")
    takeover = next(e for e in lease_calls if e["verb"] == "update" and e["status"] == 200)
    assert takeover["t"] - first_look["t"] >= TTL


# ---- 2. overlapping runs ---------------------------------------------------------------------
@pytest.mark.parametrize("runs", [2, 3])
def test_overlapping_runs_share_the_reboot_slot(start_sim, prefect_api, runs: int) -> None:
    """The other runs start once the first has cordoned its first node, and that node's drain waits until
    every run has planned, so that all of them plan nodes the first has not reached yet (runs started at
    the same instant: tests/reliability/test_crashes.py)."""
    scenario = resilience_scenario(need=3, count=4)
    scenario["workloads"] += [
        pinned_pod(i, POOL, name=f"pinned-{i}", termination_grace_seconds=2) for i in range(3)
    ]
    sim = start_sim(scenario)
    core = core_api(sim)
    started = datetime.now(UTC)
    needed = needing_reboot(sim)
    start = threading.Barrier(runs - 1)
    states: list = [None] * runs

    def run(i: int) -> None:
        if i:
            start.wait()
        states[i] = node_maintenance(**fast_params(sim, concurrency=1), return_state=True)

    threads = [in_thread(run, 0)]
    wait_for(sim, timeline_event("cordoned"), timeout=60)
    threads += [in_thread(run, i) for i in range(1, runs)]
    release_budgets_when(sim, [f"pinned-{i}" for i in range(3)], lambda _: planned_since(started) >= runs, 0)
    for t in threads:
        t.join(120)
    assert all(s is not None for s in states), "a run did not finish"
    assert [s.is_completed() for s in states] == [True] * runs, [s.message for s in states]
    reports = [report_of(s) for s in states]

    # each node rebooted by exactly one run; the others found it done (after waiting, or at their scan)
    for node in needed:
        seen = sorted(outcomes(r)[node].value for r in reports)
        assert seen == sorted([Outcome.rebooted.value] + [Outcome.not_needed.value] * (runs - 1)), (
            node,
            seen,
        )
    # at least one run planned a node, waited for the slot while another run rebooted it, then found
    # it done on its second look
    rechecked = [n for r in reports for n in r.nodes if n.reason == "no reboot required any more"]
    assert rechecked
    assert_converged(sim, core, needed)


def planned_since(started: datetime) -> int:
    """How many flow runs have finished their plan since ``started``, as the Prefect API has it."""
    with get_client(sync_client=True) as prefect:
        plans = prefect.read_task_runs(
            task_run_filter=TaskRunFilter(
                name=TaskRunFilterName(like_="plan-"),
                state=TaskRunFilterState(type=TaskRunFilterStateType(any_=[StateType.COMPLETED])),
                start_time=TaskRunFilterStartTime(after_=started),
            )
        )
    return len({p.flow_run_id for p in plans})


def test_a_node_whose_slot_is_taken_over_mid_drain_is_not_rebooted(start_sim, prefect_api) -> None:
    """Another holder takes the slot over while the node drains (as one that saw our renewals stop
    would): it counts on this node being back, so the node is put back in service and held, never
    rebooted, and the slot stays with the other holder."""
    sim = start_sim(resilience_scenario(need=1, count=4, api_ready_seconds=60))  # a drain of seconds
    core = core_api(sim)
    (node,) = needing_reboot(sim)
    result: list = []
    thread = in_thread(lambda: result.append(node_maintenance(**fast_params(sim), return_state=True)))
    wait_for(sim, timeline_event("cordoned"), timeout=60)
    coordination = client.CoordinationV1Api(core.api_client)
    lease = coordination.read_namespaced_lease(SLOT, "kube-system")
    lease.spec.holder_identity = "other-run/other-node"
    coordination.replace_namespaced_lease(SLOT, "kube-system", lease)
    thread.join(120)
    report = report_of(result[0])
    assert outcomes(report)[node] == Outcome.held
    reason = next(n.reason for n in report.nodes if n.node == node)
    assert "lost its reboot slot (aks-maintenance-slot-0) before the reboot" in reason
    assert sim.observer.invariants()["reboots"] == {}
    assert not core.read_node(node).spec.unschedulable, "put back in service"
    assert (
        coordination.read_namespaced_lease(SLOT, "kube-system").spec.holder_identity == "other-run/other-node"
    )


# ---- 3. the approval gate, driven through the Prefect API ------------------------------------
def paused_run_for(sim: RunningSim, timeout: float = 60):
    """The Paused flow run whose cluster is this simulator."""
    paused = FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED])))
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as prefect:
        while time.monotonic() < deadline:
            for run in prefect.read_flow_runs(flow_run_filter=paused):
                if (run.parameters.get("cluster") or {}).get("kubeconfig") == sim.kubeconfig:
                    return run
            time.sleep(0.2)
    pytest.fail("the flow run never paused for approval")


def resume_when_ready(flow_run_id, answer: dict, timeout: float = 20) -> None:
    """Resume; the schema of the expected input is saved just after the pause, so retry briefly."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            resume_flow_run(flow_run_id, run_input=answer)
            return
        except RuntimeError as exc:
            if "schema not found" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.mark.parametrize("approve", [True, False], ids=["approved", "rejected"])
def test_approval_gate(start_sim, prefect_api, monkeypatch, approve: bool) -> None:
    # the flow checks for the answer every 10 s by default; a second keeps the test short
    monkeypatch.setattr(
        maintenance_module, "pause_flow_run", functools.partial(pause_flow_run, poll_interval=1)
    )
    sim = start_sim(resilience_scenario(need=2, count=3))
    core = core_api(sim)
    needed = needing_reboot(sim)
    result: dict = {}

    def run() -> None:
        result["state"] = node_maintenance(**fast_params(sim, require_approval=True), return_state=True)

    thread = in_thread(run)
    flow_run = paused_run_for(sim)
    assert flow_run.state.state_details.run_input_keyset  # waiting for an answer, not just paused
    # paused before the first reboot, and before anything touched a node
    assert [e for e in sim.observer.mutating_requests() if e["resource"] == "nodes"] == []
    assert [e["event"] for e in sim.observer.timeline() if e["event"] in ("cordoned", "rebooted")] == []

    resume_when_ready(flow_run.id, {"approve": approve})
    thread.join(60)
    state = result["state"]
    assert state.is_completed(), state.message
    report = report_of(state)
    assert report.flow_run_id == str(flow_run.id)
    if approve:
        assert {n: outcomes(report)[n] for n in needed} == dict.fromkeys(needed, Outcome.rebooted)
        assert_converged(sim, core, needed)
    else:
        held = {n.node: (n.outcome, n.reason) for n in report.nodes if n.node in needed}
        assert held == dict.fromkeys(needed, (Outcome.held, "not approved"))
        assert report.still_need_reboot == needed
        assert sim.observer.invariants()["reboots"] == {}
        assert [e for e in sim.observer.mutating_requests() if e["resource"] == "nodes"] == []
        assert needing_reboot(sim) == needed


# ---- 4. reboot-slot Leases through the real API ----------------------------------------------
@pytest.fixture
def lease_cluster(start_sim):
    sim = start_sim("example")
    kubes = [connect(ClusterConnection(kubeconfig=sim.kubeconfig)) for _ in range(2)]
    return sim, kubes


def raw_lease(kube: Kube, name: str) -> dict:
    response = kube.coordination.read_namespaced_lease(name, "kube-system", _preload_content=False)
    return json.loads(response.data)


def lease_writes(sim: RunningSim, name: str, since: int = 0) -> list[tuple[str, int]]:
    path = "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases"
    return [
        (e["verb"], e["status"])
        for e in sim.observer.audit(since)
        if e["mutating"] and e["path"] in (path, f"{path}/{name}")
    ]


def test_slot_contention_has_one_winner(lease_cluster, monkeypatch) -> None:
    sim, (kube_a, kube_b) = lease_cluster
    options = LockOptions(ttl_seconds=TTL, name_prefix="contended")
    a, b = SingleSetSlots(kube_a, options, 1), SingleSetSlots(kube_b, options, 1)

    # both find no Lease and create it at once: one create wins, the other is a 409 AlreadyExists
    go = threading.Barrier(2)
    won: dict[str, str | None] = {}

    def contend(slots: SingleSetSlots, holder: str) -> None:
        go.wait()
        won[holder] = slots.take(holder)

    for t in [in_thread(contend, a, "run-a/n1"), in_thread(contend, b, "run-b/n1")]:
        t.join(30)
    assert sorted(won.values(), key=str) == [None, "contended-0"]
    winner = next(h for h, slot in won.items() if slot)
    assert raw_lease(kube_a, "contended-0")["spec"]["holderIdentity"] == winner
    (a if winner.startswith("run-a") else b).release("contended-0", winner)
    assert raw_lease(kube_a, "contended-0")["spec"]["holderIdentity"] == ""

    # a free slot read by b, taken by a before b writes: b's write carries a stale resourceVersion
    mark = len(sim.observer.audit())
    real_call = kube_b.call
    raced = []

    def call_racing_a(fn, *args, **kwargs):
        if getattr(fn, "__name__", "") == "replace_namespaced_lease" and not raced:
            raced.append(a.take("run-a/n2"))
        return real_call(fn, *args, **kwargs)

    monkeypatch.setattr(kube_b, "call", call_racing_a)
    assert b.take("run-b/n2") is None
    assert raced == ["contended-0"]
    assert lease_writes(sim, "contended-0", mark) == [("update", 200), ("update", 409)]
    assert raw_lease(kube_a, "contended-0")["spec"]["holderIdentity"] == "run-a/n2"


def test_slot_taken_over_only_after_ttl_observed_locally(lease_cluster) -> None:
    sim, (kube_a, kube_b) = lease_cluster
    options = LockOptions(ttl_seconds=TTL, name_prefix="held")
    a, b = SingleSetSlots(kube_a, options, 1), SingleSetSlots(kube_b, options, 1)
    assert a.wait("run-a/n1", timeout=5) == "held-0"
    # the holder's clock says it renewed long ago: not trusted, only what we see change counts
    lease = kube_a.coordination.read_namespaced_lease("held-0", "kube-system")
    lease.spec.renew_time = datetime(2001, 1, 1, 0, 0, 0, 1, tzinfo=UTC)
    kube_a.coordination.replace_namespaced_lease("held-0", "kube-system", lease)
    transitions = lease.spec.lease_transitions

    first_look = time.monotonic()
    renewed_at = None
    while (taken := b.take("run-b/n1")) is None:
        if renewed_at is None and time.monotonic() - first_look > 2:
            assert a.renew("held-0", "run-a/n1")  # a live holder renews: b's clock starts again
            renewed_at = time.monotonic()
        assert time.monotonic() - first_look < 3 * TTL, "never taken over"
        time.sleep(0.25)
    taken_at = time.monotonic()
    assert taken == "held-0"
    assert renewed_at is not None
    assert TTL <= taken_at - renewed_at < TTL + 2
    spec = raw_lease(kube_b, "held-0")["spec"]
    assert (spec["holderIdentity"], spec["leaseTransitions"]) == ("run-b/n1", transitions + 1)

    # the old holder finds it lost the slot, and its release leaves the new holder alone
    assert a.renew("held-0", "run-a/n1") is False
    a.release("held-0", "run-a/n1")
    assert raw_lease(kube_b, "held-0")["spec"]["holderIdentity"] == "run-b/n1"

    # release is idempotent: the second one writes nothing; a slot that does not exist is fine too
    mark = len(sim.observer.audit())
    b.release("held-0", "run-b/n1")
    b.release("held-0", "run-b/n1")
    RebootSlots(kube_b, LockOptions(name_prefix="never-made")).release("never-made-0", "run-b/n1")
    assert lease_writes(sim, "held-0", mark) == [("update", 200)]
    assert raw_lease(kube_b, "held-0")["spec"]["holderIdentity"] == ""


class _OnTheSecond(datetime):
    """A clock that reads exactly on a whole second, where isoformat() drops the fraction."""

    @classmethod
    def now(cls, tz=None):
        return datetime(2030, 1, 1, 12, 0, 0, tzinfo=tz or UTC)


def test_slot_lease_microtimes_have_six_fractional_digits(lease_cluster, monkeypatch) -> None:
    sim, (kube, _) = lease_cluster
    slots = SingleSetSlots(kube, LockOptions(ttl_seconds=TTL, name_prefix="micro"), 2)
    assert slots.wait("run-a/n1", timeout=5) == "micro-0"
    assert slots.renew("micro-0", "run-a/n1")
    monkeypatch.setattr(lock_module, "datetime", _OnTheSecond)
    assert slots.wait("run-a/n2", timeout=5) == "micro-1"  # a real server would 400 a bare second
    for name in ("micro-0", "micro-1"):
        spec = raw_lease(kube, name)["spec"]
        assert MICROTIME.match(spec["acquireTime"]), spec
        assert MICROTIME.match(spec["renewTime"]), spec
    assert raw_lease(kube, "micro-1")["spec"]["renewTime"] == "2030-01-01T12:00:00.000001Z"
    assert all(status < 400 for _, status in lease_writes(sim, "micro-0") + lease_writes(sim, "micro-1"))
