"""The drain: the pods evicted (``aksmaint.maintenance.drain``), or ``drain.on_timeout`` when it cannot
finish; then a last check that the node may still be rebooted."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from aksmaint.maintenance import cordon as cordon_ops
from aksmaint.maintenance.drain import DrainResult, drain_node, on_timeout
from aksmaint.maintenance.phases.base import Done, Next, NodeRun, Phase, phase
from aksmaint.nodestate import RecordState
from aksmaint.report import Outcome

if TYPE_CHECKING:
    from aksmaint.maintenance.lifecycle import NodeLifecycle


@phase(
    Phase.drain,
    does="pre-reboot labels, evict the pods (budgets respected), then drain.on_timeout if it cannot finish",
    resumes="a record in phase draining drains again",
    on_cancel="stops before the reboot and puts the node back in service",
    retries=1,
)
def drain(lc: NodeLifecycle, run: NodeRun) -> Next:
    assert run.record is not None
    params = lc.params
    if run.record.phase != RecordState.draining:
        cordon_ops.set_labels(lc.kube, run.node, params.labels.pre_reboot)
        lc.notify(params.notify.drain_template, run.node)
        run.record = run.record.model_copy(update={"phase": RecordState.draining})
        cordon_ops.update_record(lc.kube, run.node, run.record)
    lc.recorder.event("node.draining", run.node, run=lc.run_id, slots=list(run.slots))
    started = time.monotonic()
    result = drain_node(lc.kube, run.node, params.drain)
    run.report.evicted_pods = len(result.evicted)
    run.report.drain_seconds = round(time.monotonic() - started, 2)
    _log_drain(lc, run, result)
    if not result.complete and (done := _unfinished(lc, run, result)):
        return done
    lc.recorder.event(
        "node.drained",
        run.node,
        evicted=len(result.evicted),
        complete=result.complete,
        duration_seconds=run.report.drain_seconds,
    )
    return _before_the_reboot(lc, run)


def _unfinished(lc: NodeLifecycle, run: NodeRun, result: DrainResult) -> Done | None:
    """The drain timed out or hit an error: the node ends as ``drain.on_timeout`` says, or goes on."""
    after = on_timeout(lc.kube, run.node, result, lc.params.drain, lc.recorder.warning)
    if after.outcome == Outcome.quarantined:
        assert run.record is not None
        run.record = cordon_ops.quarantine(lc.kube, run.node, run.record, after.why)
    elif after.outcome == Outcome.skipped:
        lc.uncordon(run, post_labels=False)
    return Done(after.outcome, after.reason) if after.outcome is not None else None


def _before_the_reboot(lc: NodeLifecycle, run: NodeRun) -> Next:
    if run.held is not None and run.held.lost:
        # another holder saw our renewals stop and took a slot over: it counts on our node being
        # back, so the reboot must not happen; the node goes back in service for a later run
        lc.uncordon(run, post_labels=False)
        return Done(
            Outcome.held,
            f"lost its reboot slot ({', '.join(run.slots)}) before the reboot: its renewals were "
            "late and another holder took it over; put back in service",
        )
    if lc.stop.is_set():
        lc.uncordon(run)
        return Done(Outcome.held, "run stopped before the reboot; node put back in service")
    return Phase.reboot


def _log_drain(lc: NodeLifecycle, run: NodeRun, result: DrainResult) -> None:
    for warning in result.warnings:
        lc.recorder.warning("%s: %s", run.node, warning)
    if not result.complete:
        return
    slowest = f"; slowest {result.slowest[0]} in {result.slowest[1]:.1f}s" if result.slowest else ""
    refused = (
        f"; PodDisruptionBudgets refused {result.refusals} eviction(s) while replacements got ready"
        if result.refusals
        else ""
    )
    lc.tell(
        run,
        "drained: %d pod(s) evicted in %.1fs%s%s",
        len(result.evicted),
        run.report.drain_seconds,
        slowest,
        refused,
    )
