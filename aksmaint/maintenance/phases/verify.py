"""The verify: the node back Ready on a new boot id (``aksmaint.maintenance.health``), or left failed."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from aksmaint.maintenance import cordon as cordon_ops
from aksmaint.maintenance.health import wait_until_back
from aksmaint.maintenance.phases.base import Done, Next, NodeRun, Phase, phase
from aksmaint.report import Outcome

if TYPE_CHECKING:
    from aksmaint.maintenance.lifecycle import NodeLifecycle


@phase(
    Phase.verify,
    does="wait until Ready on a new boot id with a fresh heartbeat; else leave it failed with its slot",
    resumes="verifies against the boot id the record holds",
    on_cancel="the record stays; the next run verifies the node",
)
def verify(lc: NodeLifecycle, run: NodeRun) -> Next:
    record = run.record
    assert record is not None
    health = wait_until_back(
        lc.kube, run.node, record.boot_id_before or "", lc.params.reboot.boot_timeout_seconds
    )
    report = run.report
    report.boot_seconds = round(time.monotonic() - run.boot_started, 2)
    report.kernel_after = health.kernel
    report.boot_id_changed = bool(health.boot_id and health.boot_id != record.boot_id_before)
    if not health.healthy:
        cordon_ops.mark_failed(lc.kube, run.node, record, health.reason)
        run.keep_slot = True
        lc.notify(lc.params.notify.failure_template, run.node, reason=health.reason)
        return Done(
            Outcome.failed,
            f"{health.reason}; left cordoned with a record in annotation aksmaint.io/maintenance",
        )
    lc.tell(
        run,
        "back Ready on kernel %s after %.0fs (boot id %s)",
        health.kernel,
        report.boot_seconds,
        health.boot_id,
    )
    lc.recorder.event(
        "node.rebooted",
        run.node,
        kernel_before=record.kernel_before,
        kernel_after=health.kernel,
        boot_seconds=report.boot_seconds,
        duration_seconds=report.boot_seconds,
    )
    return Phase.uncordon
