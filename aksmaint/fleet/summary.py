"""The fleet summary: each cluster's row, read from its run's MaintenanceReport or UpgradeReport, and the
``fleet-summary`` artifact, a table per stage."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic import ValidationError as ModelError

from aksmaint.aks.operations import OperationStatus
from aksmaint.fleet.models import (
    ClusterSummary,
    DeploymentKind,
    FleetReport,
    RunState,
    StageApproval,
    StageReport,
)
from aksmaint.report import MaintenanceReport, Outcome, UpgradeReport


# ---- reading a cluster's run -------------------------------------------------------------------------
def parse_report(kind: DeploymentKind, result: object) -> MaintenanceReport | UpgradeReport | None:
    """The run's result as its flow's report, however it was stored (the model, or its JSON form)."""
    if isinstance(result, BaseModel):
        result = result.model_dump(mode="json")
    if not isinstance(result, dict):
        return None
    model = MaintenanceReport if kind == DeploymentKind.node_maintenance else UpgradeReport
    try:
        return model.model_validate(result)
    except ModelError:
        return None


def summarise(row: ClusterSummary, run: Any, result: object) -> ClusterSummary:
    """``row`` with the state and figures of the cluster's run ``run`` (a FlowRun) and its ``result``."""
    state = run.state
    row = row.model_copy(
        update={
            "flow_run_id": str(run.id),
            "flow_run_name": getattr(run, "name", "") or "",
            "state": state.name if state else RunState.unknown.value,
            "message": (state.message or "") if state else "",
        }
    )
    report = parse_report(row.kind, result)
    if report is None:
        row.report_missing = True
        return row
    row.cluster = report.cluster
    row.kernels = dict(report.kernels_after)
    if isinstance(report, MaintenanceReport):
        row.rebooted = report.count(Outcome.rebooted)
        row.failed = report.count(Outcome.failed)
        row.still_pending = list(report.still_need_reboot)
    else:
        row.failed = sum(1 for op in report.operations if op.status == OperationStatus.failed)
        row.changes = [f"{op.step.describe()}: {op.status.value}" for op in report.operations]
        row.changes += report.verify_problems or ([] if report.operations else [report.outcome])
    return row


# ---- the summary artifact ----------------------------------------------------------------------------
def cluster_state(c: ClusterSummary) -> str:
    if c.earlier_run:
        return "done in an earlier run"
    if c.report_missing and c.started:
        return f"{c.state} (no report: {c.message or 'the run left no result'})"
    return c.state


def cluster_row(c: ClusterSummary) -> str:
    upgrade = c.kind != DeploymentKind.node_maintenance
    cells = [
        c.cluster,
        cluster_state(c),
        "-" if upgrade or not c.started else str(c.rebooted),
        str(c.failed) if c.started else "-",
        ", ".join(c.still_pending) or "-",
        ", ".join(f"{k} x{n}" for k, n in sorted(c.kernels.items())) or "-",
        "; ".join(c.changes) or "-",
        c.deployment,
        c.flow_run_name or "-",
    ]
    return "| " + " | ".join(cell.replace("|", "/") for cell in cells) + " |"


def stage_heading(i: int, s: StageReport) -> str:
    gate = "" if s.approval == StageApproval.none else f", approval {s.approval.value}"
    return f"## Stage {i}: {s.name} ({len(s.clusters)} cluster(s), {s.max_parallel} at a time{gate})"


def summary_markdown(report: FleetReport) -> str:
    clusters = report.clusters
    title = f"# Fleet update run {report.name}" if report.name else "# Fleet update run"
    lines = [
        title,
        "",
        f"{len(clusters)} cluster(s) in {len(report.stages)} stage(s): "
        f"{sum(c.ok for c in clusters)} done ({sum(c.earlier_run for c in clusters)} in an earlier run), "
        f"{len(report.failed)} failed, {sum(not c.started for c in clusters)} not started. "
        f"{sum(c.rebooted for c in clusters)} node(s) patched, {sum(c.failed for c in clusters)} failed, "
        f"{sum(len(c.still_pending) for c in clusters)} still waiting for a reboot.",
    ]
    if report.stopped:
        lines += ["", f"**Stopped:** {report.stopped}"]
    for i, s in enumerate(report.stages, 1):
        lines += ["", stage_heading(i, s), ""]
        lines += [
            "| cluster | state | patched | failed | still pending | kernels now | upgrades | deployment | run |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        lines += [cluster_row(c) for c in s.clusters]
        if s.notes:
            lines += ["", *(f"- {n}" for n in s.notes)]
    return "\n".join(lines)
