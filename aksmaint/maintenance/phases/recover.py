"""Recover: a node an earlier run left failed, back in service once it is healthy."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aksmaint.maintenance.health import check_node
from aksmaint.maintenance.lock import failed_holder
from aksmaint.maintenance.phases.base import Done, Next, NodeRun, Phase, phase
from aksmaint.report import Outcome

if TYPE_CHECKING:
    from aksmaint.maintenance.lifecycle import NodeLifecycle


@phase(
    Phase.recover,
    does="a node left failed: uncordon it once healthy and free the slot it kept",
    resumes="the `failed/<node>` slot holder and the failed record",
    on_cancel="nothing to undo: it only puts a healthy node back",
)
def recover(lc: NodeLifecycle, run: NodeRun) -> Next:
    """A node an earlier run left failed: back in service once healthy, with the slot it kept freed."""
    record = run.record
    assert record is not None
    health = check_node(lc.kube, run.node, record.boot_id_before or "")
    if not health.healthy:
        return Done(
            Outcome.held,
            f"left failed by run {record.run_id} and still not healthy ({health.reason}): {record.reason}",
        )
    lc.uncordon(run)
    lc.slots.release_all_held_by(failed_holder(run.node))
    run.report.kernel_after, run.report.boot_id_changed = health.kernel, True
    return Done(
        Outcome.rebooted, f"came back after run {record.run_id} gave up on it; kernel {health.kernel}"
    )
