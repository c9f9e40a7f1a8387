"""The plan: which node gets what, in which order, and the report of the nodes the plan does not touch.

No Prefect here: the flow's ``plan`` task (``tasks.maintenance``) runs this and publishes the
result as the ``maintenance-plan`` artifact.
"""

from __future__ import annotations

from datetime import UTC, datetime

from aksmaint.kube import Kube
from aksmaint.maintenance.budgets import Budgets
from aksmaint.maintenance.gates import gate_reason
from aksmaint.maintenance.pod_filters import select_pods
from aksmaint.params import DrainOptions, MaintenanceParams
from aksmaint.report import NodeFacts, NodeReport, Outcome, PlanAction, PlanEntry

WINDOWS_REASON = "Windows nodes are patched by a node image upgrade"


def make_plan(
    facts: list[NodeFacts],
    pods_to_move: dict[str, int] | None = None,
    hold: str | None = None,
    retry_quarantined: bool = False,
    own_node: str = "",
) -> list[PlanEntry]:
    """Order: nodes a previous run left mid-way first, then by pool and, within a pool, the nodes with the
    fewest pods a drain would evict first (``pods_to_move``), then by name. Emptier nodes go first so that
    the pods of fuller ones find nodes already rebooted (and, with the PreferNoSchedule taint on the
    nodes still waiting, go there): each pod moves as few times as possible. With ``hold`` (why reboots do
    not belong on this cluster), nodes that need one are held with that reason; a node a previous run
    left mid-way is still finished, to put it back in service. A node an earlier run quarantined is left
    alone, unless ``retry_quarantined``: then it is drained again like a node left mid-way. The node the
    run's own pod is on (``own_node``, in_cluster) goes last: it is handed over, not drained."""
    moves = pods_to_move or {}
    ordered = sorted(
        facts, key=lambda f: (f.name == own_node, not f.resume, f.pool, moves.get(f.name, 0), f.name)
    )
    entries = [_entry(f, moves, hold, retry_quarantined) for f in ordered]
    return [
        e.model_copy(update={"reason": f"{e.reason}; this run's pod runs here: handed over last"})
        if e.node == own_node and e.action.runs
        else e
        for e in entries
    ]


def _entry(f: NodeFacts, moves: dict[str, int], hold: str | None, retry_quarantined: bool) -> PlanEntry:
    if f.windows:
        return PlanEntry(node=f.name, action=PlanAction.not_applicable, reason=WINDOWS_REASON)
    if f.quarantined is not None and not retry_quarantined:
        return PlanEntry(
            node=f.name,
            action=PlanAction.quarantined,
            reason=f"quarantined by an earlier run ({f.quarantined}); set retry_quarantined to drain it again",
        )
    if f.resume:
        return PlanEntry(node=f.name, action=PlanAction.resume, reason="a previous run left its record here")
    if f.scan_error:
        return PlanEntry(node=f.name, action=PlanAction.skip, reason=f"not scanned: {f.scan_error}")
    if f.reboot_required is None:
        return PlanEntry(
            node=f.name, action=PlanAction.check, reason="reboot need unknown (dry run with host-pod scan)"
        )
    if not f.reboot_required:
        return PlanEntry(node=f.name, action=PlanAction.skip, reason="no reboot required")
    if hold:
        return PlanEntry(node=f.name, action=PlanAction.hold, reason=hold)
    reason = "/var/run/reboot-required present"
    if f.name in moves:
        reason += f"; {moves[f.name]} pod(s) to move"
    return PlanEntry(node=f.name, action=PlanAction.reboot, reason=reason)


def pods_to_move(kube: Kube, nodes: set[str], options: DrainOptions) -> dict[str, int]:
    """Per node, the pods a drain would evict now (kubectl's filters), from one LIST of all pods."""
    on_node: dict[str, list] = {name: [] for name in nodes}
    for pod in kube.call(kube.core.list_pod_for_all_namespaces).items:
        node = pod.spec.node_name if pod.spec else None
        if node is not None and node in on_node:
            on_node[node].append(pod)
    return {name: len(select_pods(pods, options).evict) for name, pods in on_node.items()}


def plan_markdown(
    cluster: str, params: MaintenanceParams, plan: list[PlanEntry], facts: list[NodeFacts], hold: str | None
) -> str:
    """The ``maintenance-plan`` artifact: the settings that matter and one row per node."""
    by_name = {f.name: f for f in facts}
    budgets_text = Budgets(params, facts).describe(datetime.now(UTC))
    lines = [
        f"# Maintenance plan for {cluster}",
        "",
        f"Limits: {budgets_text}. Max failures {params.max_failures}, "
        f"drain timeout {params.drain.timeout_seconds:.0f}s (then {params.drain.on_timeout.value}), "
        f"sentinel {params.sentinel.mode.value}, order {params.order.value}"
        f"{', dry run' if params.dry_run else ''}.",
        *(["", f"Reboots held: {hold}."] if hold else []),
        "",
        "| # | node | pool | zone | kernel | action | why |",
        "|---|---|---|---|---|---|---|",
    ]
    for i, e in enumerate(plan, 1):
        f = by_name[e.node]
        lines.append(f"| {i} | {e.node} | {f.pool} | {f.zone} | {f.kernel} | {e.action} | {e.reason} |")
    return "\n".join(lines)


def node_report(entry: PlanEntry, before: NodeFacts, outcome: Outcome, reason: str) -> NodeReport:
    return NodeReport(
        node=entry.node,
        pool=before.pool,
        outcome=outcome,
        reason=reason,
        kernel_before=before.kernel,
        node_image_version=before.node_image_version,
    )


def unplanned_report(entry: PlanEntry, before: NodeFacts) -> NodeReport:
    """A node the plan does not touch (or, in a dry run, cannot judge): a node that could not be scanned
    is held back, never reported as needing nothing."""
    if entry.action == PlanAction.check:
        return node_report(entry, before, Outcome.planned, entry.reason)
    if entry.action == PlanAction.hold:
        return node_report(entry, before, Outcome.held, entry.reason)
    if entry.action == PlanAction.quarantined:
        return node_report(entry, before, Outcome.quarantined, entry.reason)
    if entry.action == PlanAction.not_applicable:
        reason = f"{entry.reason} (node image {before.node_image_version})"
        return node_report(entry, before, Outcome.not_applicable, reason)
    outcome = Outcome.held if before.scan_error else Outcome.not_needed
    return node_report(entry, before, outcome, entry.reason)


def dry_run_reports(
    kube: Kube, params: MaintenanceParams, todo: list[PlanEntry], by_name: dict[str, NodeFacts]
) -> dict[str, NodeReport]:
    """What a dry run reports for the nodes it would reboot: planned, or held with the gate that is shut."""
    reports = {}
    for e in todo:
        reason = gate_reason(kube, e.node, params.window, params.blockers, params.lock)
        outcome = Outcome.held if reason else Outcome.planned
        reports[e.node] = node_report(e, by_name[e.node], outcome, reason or f"would {e.action}: {e.reason}")
    return reports
