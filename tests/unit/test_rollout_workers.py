"""The rollout engine's contracts when the cluster API fails at the edges of a node's lifecycle: a slot
that cannot be released, a slot that cannot be kept, a node function that raises. No simulator here:
the lifecycle is given one phase that takes a slot and ends the node, and slots whose writes fail."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest

from aksmaint.errors import TransientApiError
from aksmaint.maintenance.lifecycle import NodeLifecycle
from aksmaint.maintenance.phases import Done, NodeRun, Phase, PhaseSpec
from aksmaint.maintenance.phases.recheck import decide
from aksmaint.maintenance.rollout import Rollout
from aksmaint.params import LockOptions, MaintenanceParams
from aksmaint.report import NodeFacts, NodeReport, Outcome, PlanEntry

pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")


class Recorder:
    def __init__(self) -> None:
        self.warnings: list[str] = []

    def event(self, name: str, node: str, **payload: object) -> None:
        pass

    def info(self, message: str, *args: object) -> None:
        pass

    def warning(self, message: str, *args: object) -> None:
        self.warnings.append(message % args)

    def error(self, message: str, *args: object) -> None:
        self.warnings.append(message % args)


class Slots:
    """Slot Leases whose writes fail for the nodes named in ``failing``."""

    def __init__(self, failing: set[str]) -> None:
        self.failing = failing
        self.options = LockOptions()  # renewals every 40 s: none in these tests
        self.released: list[str] = []
        self.kept: list[str] = []

    def release(self, slot: str, holder: str) -> None:
        node = holder.split("/")[-1]  # holders are <run id>/<node>
        if node in self.failing:
            raise TransientApiError("aks-demo: API server unreachable: Connection refused")
        self.released.append(node)

    def keep_for_node(self, slot: str, holder: str, keeper: str) -> None:
        node = keeper.split("/")[-1]  # keepers are failed/<node>
        if node in self.failing:
            raise TransientApiError("aks-demo: API server unreachable: Connection refused")
        self.kept.append(node)


def engine(failing: set[str], down: set[str] = frozenset(), concurrency: int = 2):
    def take_slot_and_finish(lc: NodeLifecycle, run: NodeRun) -> Done:
        assert run.held is not None
        run.held.take(["slot-0"])
        if run.node in down:  # the node did not come back: its slot stays with it
            run.keep_slot = True
            return Done(Outcome.failed, "did not come back")
        return Done(Outcome.rebooted, "rebooted")

    phase = PhaseSpec(Phase.gates, take_slot_and_finish, does="", resumes="", on_cancel="", retries=0)
    params = MaintenanceParams(
        cluster={"kubeconfig": "/nonexistent"}, concurrency=concurrency, max_failures=5
    )
    recorder = Recorder()
    slots = Slots(failing)
    kube = SimpleNamespace(cluster_name="aks-demo")
    lc = NodeLifecycle(kube, params, "run-1", recorder, phases={Phase.gates: phase}, slots=slots)
    return lc, slots, recorder


def plan(n: int) -> tuple[list[PlanEntry], dict[str, NodeFacts]]:
    names = [f"node-{i}" for i in range(n)]
    return (
        [PlanEntry(node=name, action="reboot", reason="reboot required") for name in names],
        {name: NodeFacts(name=name, pool="pool") for name in names},
    )


def test_a_slot_that_cannot_be_released_is_a_warning_not_a_lost_node():
    lc, slots, recorder = engine(failing={"node-1"})
    todo, facts = plan(4)
    result = Rollout(lc, todo, facts).run()
    assert {n: r.outcome for n, r in result.reports.items()} == dict.fromkeys(facts, Outcome.rebooted)
    assert result.halted == ""
    assert sorted(slots.released) == ["node-0", "node-2", "node-3"]
    assert any(
        "node-1: slots slot-0 could not be released" in w and "expire in 120s" in w for w in recorder.warnings
    )


def test_a_down_node_whose_slot_cannot_be_kept_stops_the_rollout():
    lc, slots, recorder = engine(failing={"node-0"}, down={"node-0"}, concurrency=1)
    todo, facts = plan(3)
    result = Rollout(lc, todo, facts).run()
    assert result.reports["node-0"].outcome == Outcome.failed
    assert "could not be kept" in result.halted
    assert {n: result.reports[n].outcome for n in ("node-1", "node-2")} == {
        "node-1": Outcome.held,
        "node-2": Outcome.held,
    }
    assert slots.kept == []


def test_a_node_function_that_raises_is_reported_failed_and_the_others_go_on():
    lc, _, _ = engine(failing=set())
    todo, facts = plan(5)
    threads_before = threading.active_count()

    def run_node(entry: PlanEntry, before: NodeFacts):
        if entry.node == "node-2":
            raise RuntimeError("boom")
        return lc.run(entry, before)

    result = Rollout(lc, todo, facts, run_node=run_node).run()
    assert result.reports["node-2"].outcome == Outcome.failed
    assert "RuntimeError: boom" in result.reports["node-2"].reason
    rebooted = sorted(n for n, r in result.reports.items() if r.outcome == Outcome.rebooted)
    assert rebooted == ["node-0", "node-1", "node-3", "node-4"]
    assert threading.active_count() == threads_before


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ({"scan_error": "probe exited 1: nsenter: permission denied"}, "nsenter: permission denied"),
        ({"reboot_required": None}, "no answer"),
    ],
)
def test_a_failed_recheck_holds_the_node_and_never_reads_as_not_needed(answer, reason):
    """The re-check under the slot could not tell: the node is held with the error, not counted as no
    longer needing a reboot (and nothing on the node is touched: the fake cluster has no API). The probe's
    answer is given to the recheck as it comes back from the node, with no record on the node."""
    lc, _, _ = engine(failing=set())
    todo, facts = plan(1)
    run = NodeRun(todo[0], facts["node-0"], "run-1", NodeReport(node="node-0", outcome=Outcome.failed))
    done = decide(lc, run, None, NodeFacts(name="node-0", pool="pool", **answer))
    assert isinstance(done, Done)
    assert done.outcome == Outcome.held
    assert done.reason.startswith("re-check under the slot failed") and reason in done.reason
