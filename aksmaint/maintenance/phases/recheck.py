"""The recheck: under the slot, wait out another live run on the node, then look again whether it still
needs a reboot (another run may have done it meanwhile)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from kubernetes.client import V1Node

from aksmaint.errors import NodeBusy
from aksmaint.maintenance import cordon as cordon_ops
from aksmaint.maintenance.phases.base import Done, Next, NodeRun, Phase, phase
from aksmaint.maintenance.reboot import reboot_pods
from aksmaint.maintenance.sentinel import recheck_node
from aksmaint.maintenance.taints import set_pending_taint
from aksmaint.nodestate import NodeRecord, RecordState, read_record
from aksmaint.report import NodeFacts, Outcome

if TYPE_CHECKING:
    from aksmaint.maintenance.lifecycle import NodeLifecycle


@phase(
    Phase.recheck,
    does="under the slot, wait out another live run on the node and probe again whether it needs a reboot",
    resumes="reads the record an earlier run left: its phase, boot id and kernel before",
    on_cancel="the node was not touched: released and held",
)
def recheck(lc: NodeLifecycle, run: NodeRun) -> Next:
    try:
        current, record = _wait_for_other_runs(lc, run)
    except NodeBusy as exc:
        return Done(Outcome.held, str(exc))
    if record is not None and record.phase == RecordState.failed:
        return Done(Outcome.held, f"left failed by an earlier run: {record.reason}")
    return decide(lc, run, record, recheck_node(lc.kube, current, lc.params.sentinel, lc.settings))


def decide(lc: NodeLifecycle, run: NodeRun, record: NodeRecord | None, now: NodeFacts) -> Next:
    """What the probe under the slot (``now``) means for the node, given the record an earlier run left."""
    if now.scan_error or now.reboot_required is None:
        return Done(Outcome.held, f"re-check under the slot failed: {now.scan_error or 'no answer'}")
    run.rebooted_already = bool(
        record is not None and record.boot_id_before and now.boot_id != record.boot_id_before
    )
    if (
        record is not None
        and record.phase == RecordState.rebooting
        and not run.rebooted_already
        and now.ready
        and not reboot_pods(lc.kube, run.node, lc.settings)
    ):
        # the earlier run stopped between recording the reboot and starting it: start over
        record = record.model_copy(update={"phase": RecordState.cordoned})
        cordon_ops.update_record(lc.kube, run.node, record)
    if not now.reboot_required and not run.rebooted_already:
        if record is not None:
            cordon_ops.uncordon(lc.kube, run.node, record)
            return Done(Outcome.not_needed, "no reboot required; cleaned up after an earlier run")
        set_pending_taint(lc.kube, run.node, False)
        return Done(Outcome.not_needed, "no reboot required any more")
    run.earlier_run = record.run_id if record is not None else ""
    run.told.append(f"still needs a reboot (kernel {now.kernel or 'unknown'} running)")
    return Phase.cordon


def _wait_for_other_runs(lc: NodeLifecycle, run: NodeRun) -> tuple[V1Node, NodeRecord | None]:
    deadline = time.monotonic() + lc.params.lock.wait_seconds
    while True:
        current = lc.kube.call(lc.kube.core.read_node, run.node)
        record = read_record(current)
        if record is None or record.holder == run.holder or not lc.slots.holder_alive(record.holder):
            return current, record
        if time.monotonic() > deadline:
            raise NodeBusy(f"node {run.node} is being handled by {record.holder}")
        time.sleep(1)
