"""The reboot: the boot to leave recorded, then the reboot command started in a host pod
(``aksmaint.maintenance.reboot``)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from aksmaint.kube import node_info
from aksmaint.maintenance import cordon as cordon_ops
from aksmaint.maintenance.phases.base import Next, NodeRun, Phase, phase
from aksmaint.maintenance.reboot import already_requested, request_reboot
from aksmaint.nodestate import RecordState, now_iso

if TYPE_CHECKING:
    from aksmaint.maintenance.lifecycle import NodeLifecycle


@phase(
    Phase.reboot,
    does="record the boot id to leave, then start the reboot command in a host pod",
    resumes="a node already on a new boot is not rebooted again",
    on_cancel="the record stays (phase rebooting); the next run verifies the node",
    retries=2,
)
def reboot(lc: NodeLifecycle, run: NodeRun) -> Next:
    """Record the boot we expect to leave, then start the reboot. Idempotent: a node already on a new
    boot is not rebooted again."""
    assert run.record is not None
    run.boot_started = time.monotonic()
    current = lc.kube.call(lc.kube.core.read_node, run.node)
    boot_id = node_info(current).boot_id
    if already_requested(lc.kube, run.node, run.record, boot_id or "", lc.settings):
        return Phase.verify  # a retry after the reboot was requested: never a second reboot
    if lc.params.reboot.delay_seconds:
        time.sleep(lc.params.reboot.delay_seconds)
    lc.notify(lc.params.notify.reboot_template, run.node)
    run.record = run.record.model_copy(
        update={"phase": RecordState.rebooting, "reboot_requested_at": now_iso(), "boot_id_before": boot_id}
    )
    cordon_ops.update_record(lc.kube, run.node, run.record)
    run.rebooted_here = True
    request_reboot(lc.kube, run.node, lc.params.reboot.command, lc.settings)
    lc.recorder.event(
        "node.rebooting", run.node, kernel_before=run.record.kernel_before, boot_id_before=boot_id
    )
    lc.tell(run, "reboot requested; leaving boot id %s on kernel %s", boot_id, run.record.kernel_before)
    return Phase.verify
