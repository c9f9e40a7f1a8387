"""The uncordon: the node back in service with its post-reboot labels, and its record dropped."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aksmaint.maintenance.phases.base import Done, Next, NodeRun, Phase, phase
from aksmaint.report import Outcome

if TYPE_CHECKING:
    from aksmaint.maintenance.lifecycle import NodeLifecycle


@phase(
    Phase.uncordon,
    does="uncordon (unless an operator had cordoned it), post-reboot labels, drop the record",
    resumes="idempotent: a node already uncordoned stays so",
    on_cancel="finishes: the node is healthy",
)
def uncordon(lc: NodeLifecycle, run: NodeRun) -> Next:
    record = run.record
    assert record is not None
    # told with the slot's release, in one line (``NodeLifecycle._free_slot``)
    if lc.uncordon(run):
        run.told.append("uncordoned")
        run.uncordoned = True
    else:
        lc.tell(run, "left cordoned: an operator had cordoned it before the run")
    report = run.report
    lc.notify(
        lc.params.notify.uncordon_template,
        run.node,
        kernel_before=record.kernel_before or run.before.kernel,
        kernel_after=report.kernel_after,
    )
    if record.kernel_before:
        report.kernel_before = record.kernel_before
    if not run.rebooted_here:
        return Done(Outcome.rebooted, f"verified after the reboot run {run.earlier_run} requested")
    return Done(
        Outcome.rebooted,
        f"drained ({report.evicted_pods} pod(s) evicted, {report.drain_seconds:.0f}s), "
        f"back after {report.boot_seconds:.0f}s",
    )
