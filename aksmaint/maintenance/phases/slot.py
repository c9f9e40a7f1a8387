"""The slot: a reboot slot Lease in each of the node's slot sets, all or none (``aksmaint.maintenance.lock``)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from aksmaint.errors import LockTimeout
from aksmaint.maintenance.gates import window_closed
from aksmaint.maintenance.lock import handed_over_holder
from aksmaint.maintenance.phases.base import Done, Next, NodeRun, Phase, phase
from aksmaint.report import Outcome, PlanAction

if TYPE_CHECKING:
    from aksmaint.maintenance.lifecycle import NodeLifecycle


@phase(
    Phase.slot,
    does="take a reboot slot Lease (never more nodes disrupted than the slots), renewed in the background",
    resumes="a slot of a dead holder is taken over once it has looked unchanged for its TTL",
    on_cancel="stops waiting; the node is held",
    retries=2,
)
def slot(lc: NodeLifecycle, run: NodeRun) -> Next:
    assert run.held is not None
    waiting = time.monotonic()
    # a node an earlier run handed over (a node with a record: resumed) keeps its slots until this run
    # takes them; other nodes skip that read of the slot Leases
    resumed = run.entry.action == PlanAction.resume
    if resumed and (taken := lc.slots.take_over(handed_over_holder(run.node), run.holder)):
        run.held.take(taken)
        lc.tell(run, "took over reboot slot %s, kept for it since its hand-over", ", ".join(taken))
        return Phase.recheck
    try:
        names = lc.slots.acquire(
            run.holder,
            lambda: lc.budgets.sets_for(run.before, datetime.now(UTC)),
            lc.params.lock.wait_seconds,
            keep_waiting=lambda: _stop_waiting(lc),
        )
    except LockTimeout as exc:
        return Done(Outcome.held, str(exc))
    run.held.take(names)
    lc.tell(run, "took reboot slot %s after waiting %.1fs", ", ".join(names), time.monotonic() - waiting)
    return Phase.recheck


def _stop_waiting(lc: NodeLifecycle) -> str | None:
    if lc.stop.is_set():
        return "the run is stopping"
    return window_closed(lc.params.window)
