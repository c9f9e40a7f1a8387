"""The gates: whether the node may start now, before it takes anything."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aksmaint.maintenance.gates import gate_reason
from aksmaint.maintenance.phases.base import Done, Next, NodeRun, Phase, phase
from aksmaint.maintenance.phases.hand_over import NO_FOLLOW_UP, OWN_NODE
from aksmaint.nodestate import RecordState, read_record
from aksmaint.report import Outcome, PlanAction

if TYPE_CHECKING:
    from aksmaint.maintenance.lifecycle import NodeLifecycle


@phase(
    Phase.gates,
    does="maintenance window, blocking pods, Prometheus alerts, kured's lock",
    resumes="a node an earlier run left failed goes to recover instead of a new slot",
    on_cancel="the node is not started (held)",
)
def gates(lc: NodeLifecycle, run: NodeRun) -> Next:
    params = lc.params
    if reason := gate_reason(lc.kube, run.node, params.window, params.blockers, params.lock):
        return Done(Outcome.held, reason)
    if run.entry.action == PlanAction.resume:
        record = read_record(lc.kube.call(lc.kube.core.read_node, run.node))
        if record is not None and record.phase == RecordState.failed:
            run.record = record
            return Phase.recover
    if run.node == lc.own_node and lc.hand_over is None:
        return Done(Outcome.held, f"{OWN_NODE}; {NO_FOLLOW_UP}")
    return Phase.slot
