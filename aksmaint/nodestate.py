"""What a run records on a node, so that a crashed run's node can be resumed or cleaned by the next run.

The record is one JSON annotation on the Node. It is written in the same request that cordons the node,
so a node is never cordoned by us without a record saying who did it, why, and whether it was already
cordoned by an operator before (in which case it stays cordoned afterwards).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from enum import StrEnum

from pydantic import BaseModel

STATE_ANNOTATION = "aksmaint.io/maintenance"
PENDING_TAINT_KEY = "aksmaint.io/reboot-pending"
# set to "quarantined" on a node that could not be drained (drain.on_timeout: quarantine)
STATUS_LABEL = "aksmaint.io/status"
QUARANTINED = "quarantined"


class RecordState(StrEnum):
    """Where a run left the node, as its record says (the annotation's ``phase`` field). This is not one of
    the lifecycle's phases (``aksmaint.maintenance.phases.Phase``): it is what a phase writes for the next
    run to resume from, and only some phases write one. The values are what records on nodes already say,
    so a record written by an older run still resumes: never rename them."""

    cordoned = "cordoned"  # by the cordon phase; a recheck that starts over writes it back
    draining = "draining"  # by the drain phase
    rebooting = "rebooting"  # by the reboot phase, before it starts the reboot
    failed = "failed"  # by the verify phase: the node did not come back (the recover phase clears it)
    quarantined = "quarantined"  # by the drain phase, when drain.on_timeout is quarantine
    # by the hand-over phase: the run's own pod runs on the node; cordoned, with its reboot slot, for a
    # follow-up run on another node
    handed_over = "handed-over"


class NodeRecord(BaseModel):
    run_id: str
    holder: str
    phase: RecordState  # the annotation's key; the node's state, not a lifecycle phase
    cordoned_by_us: bool
    reason: str
    since: str
    boot_id_before: str | None = None
    kernel_before: str | None = None
    reboot_requested_at: str | None = None

    def to_annotation(self) -> str:
        return self.model_dump_json(exclude_none=True)


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def read_record(node) -> NodeRecord | None:
    """The record on a V1Node (or None). A record that cannot be parsed is treated as foreign: None."""
    annotations = (node.metadata.annotations or {}) if node.metadata else {}
    raw = annotations.get(STATE_ANNOTATION)
    if not raw:
        return None
    try:
        return NodeRecord.model_validate(json.loads(raw))
    except (ValueError, TypeError):
        return None
