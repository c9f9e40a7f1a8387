"""What the Prefect UI shows of a rollout: every node a task run whose state is its outcome, every phase a
task run nested under it, and the node's story in its own logs. Read back through the REST API of the
session's Prefect server, as the UI reads it."""

from __future__ import annotations

import logging
import time
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterId,
    LogFilter,
    LogFilterTaskRunId,
    TaskRunFilter,
    TaskRunFilterId,
)
from prefect.client.schemas.objects import StateType, TaskRun

from aksmaint.report import Outcome
from tests.flows.test_gates_and_policies import db_pods_on, pdb_blocked_scenario
from tests.flows.test_maintenance import NEW_KERNEL, node, run, scenario
from tests.support import outcomes

QUARANTINED, NOT_NEEDED = node("nodepool1", 0), node("nodepool1", 1)
REBOOTED, FAILED = node("userpool", 0), node("userpool", 1)
HELD = node("heldpool", 0)
WINDOWS = "aksnpwin000000"


def mixed_scenario() -> dict:
    """nodepool1: a guarded Deployment on both nodes, the first needing a reboot (it cannot be drained);
    userpool: two nodes needing a reboot, the second never comes back; heldpool: one node needing a reboot
    under a budget that is closed now; npwin: a Windows node."""
    sc = pdb_blocked_scenario()
    demo = scenario({("userpool", 0): {}, ("userpool", 1): {"fail_after_reboot": True}, ("heldpool", 0): {}})
    userpool = demo["pools"][1]
    windows = {
        **userpool,
        "name": "npwin",
        "os_type": "Windows",
        "count": 1,
        "node_image_version": "AKSWindows-2022-containerd-20348.2700.240911",
        "latest_node_image_version": "AKSWindows-2022-containerd-20348.2700.240911",
        "os_image": "Windows Server 2022 Datacenter",
        "kernel": "10.0.20348.2700",
    }
    sc["pools"] += [userpool, {**userpool, "name": "heldpool", "count": 1}, windows]
    sc["nodes"] += demo["nodes"]
    (db,) = sc["workloads"]
    db["node_selector"] = {"kubernetes.azure.com/agentpool": "nodepool1"}
    return sc


def wait_for_task_runs(flow_run_id: UUID, done: int, timeout: float = 30) -> dict[str, TaskRun]:
    """The flow run's task runs by name, once ``done`` of them are in a final state (task run states reach
    the server as events, a moment after the flow returns)."""
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as prefect:
        while True:
            runs = prefect.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])), limit=200
            )
            final = [r for r in runs if r.state and r.state.is_final()]
            if len(final) >= done or time.monotonic() > deadline:
                return {r.name: r for r in runs}
            time.sleep(0.3)


def state_of(run: TaskRun) -> tuple[StateType | None, str | None]:
    return (run.state_type, run.state_name)


def parent_of(run: TaskRun) -> UUID | None:
    parents = run.task_inputs.get("__parents__") or []
    return parents[0].id if parents else None


def test_each_node_and_each_phase_is_a_task_run_in_the_state_of_what_happened(
    start_sim, prefect_api, monkeypatch
):
    # the suite runs with Prefect's loggers at WARNING; the story is told at INFO, as operators run it
    monkeypatch.setattr(logging.getLogger("prefect.task_runs"), "level", logging.INFO)
    sim = start_sim(mixed_scenario())
    sim.observer.wait_for(lambda: len(db_pods_on(sim, QUARANTINED)) == 1, timeout=10)
    # the first three writes of the rebooted node's cordon fail, and the Kubernetes client's own retries
    # with them: the cordon phase is tried again, as a Prefect retry
    sim.observer.faults(count=4, status=503, verb="patch", path=f"/api/v1/nodes/{REBOOTED}$")

    state, report = run(
        sim,
        concurrency=2,
        max_failures=1,
        order="name",
        drain={"timeout_seconds": 1.5, "eviction_retry_seconds": 0.25, "on_timeout": "quarantine"},
        reboot={"boot_timeout_seconds": 2},
        labels={"prefer_no_schedule_taint": False},
        budgets=[
            {"scope": "pool", "name": "heldpool", "nodes": 1, "schedule": "0 0 1 1 *", "duration_minutes": 1}
        ],
    )

    assert state.is_failed(), state.message
    assert outcomes(report) == {
        QUARANTINED: Outcome.quarantined,
        NOT_NEEDED: Outcome.not_needed,
        REBOOTED: Outcome.rebooted,
        FAILED: Outcome.failed,
        HELD: Outcome.held,
        WINDOWS: Outcome.not_applicable,
    }
    flow_run_id = state.state_details.flow_run_id
    assert flow_run_id is not None
    runs = wait_for_task_runs(flow_run_id, done=len(report.nodes) + 20)

    # ---- one task run per node, in the state of its outcome
    assert {name: state_of(runs[name]) for name in outcomes(report)} == {
        QUARANTINED: (StateType.FAILED, "Quarantined"),
        NOT_NEEDED: (StateType.COMPLETED, "NotNeeded"),
        REBOOTED: (StateType.COMPLETED, "Rebooted"),
        FAILED: (StateType.FAILED, "Failed"),
        HELD: (StateType.CANCELLED, "Held"),
        WINDOWS: (StateType.COMPLETED, "NotApplicable"),
    }
    failed_reason = next(n.reason for n in report.nodes if n.node == FAILED)
    assert runs[FAILED].state.message == (f"{failed_reason}. Next: {Outcome.failed.next_step}"), (
        "the failed node's run says why and what to do"
    )
    assert "outside its schedule now" in runs[HELD].state.message

    # ---- the phases, nested under their node, each in the state of what it did
    def phases(node_name: str) -> dict[str, TaskRun]:
        return {n.split("/", 1)[1]: r for n, r in runs.items() if n.startswith(node_name + "/")}

    rebooted = phases(REBOOTED)
    assert set(rebooted) == {
        "reboot-slot",
        "re-check",
        "cordon",
        "drain",
        "reboot",
        "health-verify",
        "uncordon",
    }
    assert {parent_of(r) for r in rebooted.values()} == {runs[REBOOTED].id}
    assert all(state_of(r) == (StateType.COMPLETED, "Completed") for r in rebooted.values()), {
        k: state_of(r) for k, r in rebooted.items()
    }
    assert rebooted["cordon"].run_count == 2, "the cordon was tried again after the API failed it"
    assert all(r.run_count == 1 for k, r in rebooted.items() if k != "cordon")
    assert rebooted["health-verify"].state.message.startswith(f"back Ready on kernel {NEW_KERNEL} after ")

    failed = phases(FAILED)
    assert state_of(failed["health-verify"]) == (StateType.FAILED, "Failed")
    # the phases that did happen stay Completed: a failed node does not roll its cordon back
    assert {k: state_of(failed[k]) for k in ("cordon", "drain", "reboot")} == {
        k: (StateType.COMPLETED, "Completed") for k in ("cordon", "drain", "reboot")
    }
    assert "uncordon" not in failed

    quarantined = phases(QUARANTINED)
    assert state_of(quarantined["drain"]) == (StateType.FAILED, "Quarantined")
    assert "reboot" not in quarantined
    assert phases(HELD) == {} and phases(NOT_NEEDED) == {}, "a node never started has no phase runs"

    with get_client(sync_client=True) as prefect:
        # the retry is a state of its own in the cordon's history
        history = [s.name for s in prefect.read_task_run_states(rebooted["cordon"].id)]
        assert "Retrying" in history or "AwaitingRetry" in history, history
        # the rebooted node's story, in its own task run
        deadline, story = time.monotonic() + 15, []
        while time.monotonic() < deadline:
            logs = prefect.read_logs(
                log_filter=LogFilter(task_run_id=LogFilterTaskRunId(any_=[runs[REBOOTED].id]))
            )
            story = [entry.message for entry in logs]
            if any("reboot slot" in line and "released" in line for line in story):
                break
            time.sleep(0.3)
        deadline, failed_story = time.monotonic() + 15, []
        while time.monotonic() < deadline:
            logs = prefect.read_logs(
                log_filter=LogFilter(task_run_id=LogFilterTaskRunId(any_=[runs[FAILED].id]))
            )
            failed_story = [entry.message for entry in logs]
            if any(line.startswith(f"{FAILED} failed: ") for line in failed_story):
                break
            time.sleep(0.3)
        nested = prefect.read_task_runs(
            task_run_filter=TaskRunFilter(id=TaskRunFilterId(any_=[r.id for r in failed.values()]))
        )
    expected = [
        "took reboot slot",
        "cordoned",
        "drained: ",
        "reboot requested; leaving boot id",
        f"back Ready on kernel {NEW_KERNEL} after",
        "uncordoned; reboot slot",
    ]
    for words in expected:
        assert any(words in line for line in story), (words, story)
    assert any(
        line.startswith(f"{FAILED} failed: ") and Outcome.failed.next_step in line for line in failed_story
    ), ("the failed node says what to do next, in its own task run", failed_story)
    assert len(nested) == len(failed)
