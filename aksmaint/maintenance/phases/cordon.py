"""The cordon: the node unschedulable and its record written, in one patch (``aksmaint.maintenance.cordon``)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from aksmaint.errors import NodeBusy
from aksmaint.maintenance import cordon as cordon_ops
from aksmaint.maintenance.phases.base import Done, Next, NodeRun, Phase, phase
from aksmaint.nodestate import RecordState
from aksmaint.report import Outcome

if TYPE_CHECKING:
    from aksmaint.maintenance.lifecycle import NodeLifecycle


@phase(
    Phase.cordon,
    does="cordon and write the record in one patch (never cordoned by us without a record)",
    resumes="takes over the record, keeping whether an operator had cordoned the node",
    on_cancel="the cancellation hook uncordons it (phase cordoned)",
)
def cordon(lc: NodeLifecycle, run: NodeRun) -> Next:
    try:
        run.record = cordon_ops.cordon(
            lc.kube,
            run.node,
            lc.run_id,
            run.holder,
            "kernel update needs a reboot",
            lc.slots.holder_alive,
        )
    except NodeBusy as exc:  # another run cordoned it between our re-check and our cordon
        return Done(Outcome.held, str(exc))
    lc.recorder.event(
        "node.cordoned", run.node, run=lc.run_id, operator_cordoned=not run.record.cordoned_by_us
    )
    lc.tell(
        run,
        "cordoned"
        if run.record.cordoned_by_us
        else "already cordoned by an operator; it stays cordoned after",
    )
    if run.rebooted_already or run.record.phase == RecordState.rebooting:
        lc.recorder.info("%s: resuming after the reboot requested by %s", run.node, run.earlier_run)
        run.boot_started = time.monotonic()
        return Phase.verify
    if run.node == lc.own_node:
        return Phase.hand_over
    return Phase.drain
