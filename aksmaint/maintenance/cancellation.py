"""Cleaning up after a cancelled maintenance run.

Prefect may run the cancellation hook in another process than the flow (the worker's), so everything is
rebuilt from the run's parameters: the cluster connection, the slot Leases, the node records. A node
whose drain was interrupted is put back in service (it stays cordoned if an operator had cordoned it);
a node already rebooting keeps its record, and the next run resumes it. The run's reboot slots are
released either way, so the next run does not wait out their TTL.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aksmaint.kube import kube_for
from aksmaint.maintenance import cordon as cordon_ops
from aksmaint.maintenance.lock import RebootSlots
from aksmaint.maintenance.taints import has_pending_taint, set_pending_taint
from aksmaint.maintenance.update_check import list_nodes
from aksmaint.nodestate import RecordState, read_record
from aksmaint.params import MaintenanceParams

INTERRUPTIBLE = (RecordState.cordoned, RecordState.draining)


@dataclass
class CancelCleanup:
    uncordoned: list[str] = field(default_factory=list)
    left_for_resume: list[str] = field(default_factory=list)
    left_quarantined: list[str] = field(default_factory=list)
    untainted: list[str] = field(default_factory=list)
    released_slots: list[str] = field(default_factory=list)

    def describe(self) -> str:
        return (
            f"uncordoned {', '.join(self.uncordoned) or 'none'}; "
            f"left for the next run to resume: {', '.join(self.left_for_resume) or 'none'}; "
            f"left quarantined: {', '.join(self.left_quarantined) or 'none'}; "
            f"released slots: {', '.join(self.released_slots) or 'none'}"
        )


def run_id_of(flow_run_id: object) -> str:
    """The short run id the maintenance flow writes into node records and slot holders."""
    return str(flow_run_id)[:8]


def clean_up_cancelled_run(parameters: dict[str, Any], flow_run_id: object) -> CancelCleanup:
    params = MaintenanceParams.model_validate(parameters)
    kube = kube_for(params.cluster)
    run_id = run_id_of(flow_run_id)
    result = CancelCleanup()
    for node in list_nodes(kube, params.node_selector):
        name = node.metadata.name
        record = read_record(node)
        if record is not None and record.run_id == run_id:
            if record.phase in INTERRUPTIBLE:
                cordon_ops.uncordon(kube, name, record)
                result.uncordoned.append(name)
            elif record.phase == RecordState.quarantined:  # stays cordoned on purpose, with its reason
                result.left_quarantined.append(name)
            else:
                result.left_for_resume.append(name)
        elif record is None and has_pending_taint(node):
            set_pending_taint(kube, name, False)
            result.untainted.append(name)
    slots = RebootSlots(kube, params.lock)
    result.released_slots = slots.release_all_held_by(f"{run_id}/")
    return result
