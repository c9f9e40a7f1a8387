"""Cordon and uncordon, with the node record written in the same request.

Every write carries the node's resourceVersion, so a concurrent change (an operator, another run) is a
409 and we re-read instead of overwriting it.
"""

from __future__ import annotations

from collections.abc import Callable

from kubernetes.client import V1Node

from aksmaint.errors import NodeBusy
from aksmaint.kube import Kube, meta, node_info, patch_node, spec_of
from aksmaint.maintenance.taints import has_pending_taint, taints_without_pending
from aksmaint.nodestate import (
    QUARANTINED,
    STATE_ANNOTATION,
    STATUS_LABEL,
    NodeRecord,
    RecordState,
    now_iso,
    read_record,
)


def cordon(
    kube: Kube, name: str, run_id: str, holder: str, reason: str, holder_alive: Callable[[str], bool]
) -> NodeRecord:
    """Cordon the node and record why. A record left by an earlier run is taken over, keeping its
    knowledge of whether the node was cordoned before anyone of us touched it; a record of a run that
    still holds a reboot slot is not (NodeBusy)."""
    result: dict[str, NodeRecord] = {}

    def build(node: V1Node) -> dict:
        previous = read_record(node)
        if previous and previous.holder != holder and holder_alive(previous.holder):
            raise NodeBusy(f"node {name} is being handled by {previous.holder}")
        cordoned_by_us = previous.cordoned_by_us if previous else not spec_of(node).unschedulable
        record = NodeRecord(
            run_id=run_id,
            holder=holder,
            phase=RecordState.cordoned,
            cordoned_by_us=cordoned_by_us,
            reason=reason,
            since=now_iso(),
            boot_id_before=previous.boot_id_before if previous else node_info(node).boot_id,
            kernel_before=previous.kernel_before if previous else node_info(node).kernel_version,
            reboot_requested_at=previous.reboot_requested_at if previous else None,
        )
        if previous and previous.phase == RecordState.rebooting:
            record = record.model_copy(update={"phase": previous.phase})
        result["record"] = record
        return {
            "spec": {"unschedulable": True},
            "metadata": {"annotations": {STATE_ANNOTATION: record.to_annotation()}},
        }

    patch_node(kube, name, build)
    return result["record"]


def update_record(kube: Kube, name: str, record: NodeRecord) -> None:
    patch_node(
        kube, name, lambda node: {"metadata": {"annotations": {STATE_ANNOTATION: record.to_annotation()}}}
    )


def uncordon(
    kube: Kube, name: str, record: NodeRecord | None, post_labels: dict[str, str] | None = None
) -> bool:
    """Put the node back in service: uncordon it if we cordoned it, drop our record and pending taint.
    Returns whether the node is schedulable afterwards."""
    state: dict[str, bool] = {}

    def build(node: V1Node) -> dict:
        current = read_record(node) or record
        patch: dict = {"metadata": {"annotations": {STATE_ANNOTATION: None}}}
        if current is None or current.cordoned_by_us:
            patch["spec"] = {"unschedulable": None}
        spec = spec_of(node)
        state["schedulable"] = current is None or current.cordoned_by_us or not spec.unschedulable
        if has_pending_taint(node):
            patch.setdefault("spec", {})["taints"] = taints_without_pending(kube, node) or None
        labels: dict[str, str | None] = dict(post_labels or {})
        if STATUS_LABEL in (meta(node).labels or {}):
            labels[STATUS_LABEL] = None  # no longer quarantined
        if labels:
            patch["metadata"]["labels"] = labels
        return patch

    patch_node(kube, name, build)
    return state["schedulable"]


def set_labels(kube: Kube, name: str, labels: dict[str, str]) -> None:
    if labels:
        patch_node(kube, name, lambda node: {"metadata": {"labels": dict(labels)}})


def mark_failed(kube: Kube, name: str, record: NodeRecord, reason: str) -> NodeRecord:
    """Leave the node cordoned with a record a person can act on."""
    failed = record.model_copy(update={"phase": RecordState.failed, "reason": reason, "since": now_iso()})
    update_record(kube, name, failed)
    return failed


def quarantine(kube: Kube, name: str, record: NodeRecord, reason: str) -> NodeRecord:
    """Leave a node that could not be drained cordoned, labelled aksmaint.io/status=quarantined, with the
    reason in its record (one patch), for a person or a later run with retry_quarantined."""
    kept = record.model_copy(update={"phase": RecordState.quarantined, "reason": reason, "since": now_iso()})
    patch_node(
        kube,
        name,
        lambda node: {
            "metadata": {
                "labels": {STATUS_LABEL: QUARANTINED},
                "annotations": {STATE_ANNOTATION: kept.to_annotation()},
            }
        },
    )
    return kept
