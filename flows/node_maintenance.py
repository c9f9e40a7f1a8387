"""Node maintenance: kured's job as a Prefect flow.

connect -> update check -> sentinel scan -> plan -> (approval) -> per node, in threads, each recorded as a
Prefect task run: gates -> reboot slot -> re-check -> cordon -> drain -> reboot -> verify -> uncordon ->
release (the phase table of ``tasks.lifecycle``) -> kernel diff.

Prefect is the record of the work, not a part of it: what decides a node's outcome happens on the cluster,
and a Prefect API that fails or goes away only leaves gaps in the record (``flows.recording``). Past
``orchestration_outage_seconds`` without the API, the rollout starts no new node and ends once the nodes
in progress are at a safe point.

Run it from a deployment, from the Prefect UI, or from the command line:
``python -m flows.node_maintenance --kubeconfig PATH [--context NAME] [--concurrency N] [--dry-run]``.
"""

from __future__ import annotations

import contextlib
import sys
import uuid
from datetime import UTC, datetime

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from prefect.logging.loggers import flow_run_logger
from prefect.runtime import flow_run as current_run
from prefect.states import Completed, Failed

from aksmaint.azure import management_client
from aksmaint.hostexec import HostPodSettings, delete_stale_host_pods
from aksmaint.kube import Kube, kube_for
from aksmaint.nodestate import has_pending_taint
from aksmaint.params import (
    ApprovalTimeout,
    Blockers,
    ClusterConnection,
    Concurrency,
    DrainOptions,
    LockOptions,
    MaintenanceParams,
    MaintenanceWindow,
    MaxFailures,
    NodeLabels,
    NotifyOptions,
    OutageTolerance,
    RebootOptions,
    RolloutOrder,
    SentinelOptions,
)
from aksmaint.report import MaintenanceReport, NodeFacts, NodeReport, Outcome, PlanAction, PlanEntry
from aksmaint.tasking import best_effort, maintenance_task
from flows.recording import ApiWatch, PrefectRecorder, Progress, recorded
from tasks import cordon as cordon_ops
from tasks.aks import OsUpgradeSettings, read_os_upgrade_settings
from tasks.cancellation import clean_up_cancelled_run, run_id_of
from tasks.drain import select_pods
from tasks.gates import gate_reason
from tasks.kernel_diff import kernel_diff_report
from tasks.lifecycle import NodeLifecycle
from tasks.rollout import Rollout
from tasks.sentinel import scan_sentinels
from tasks.update_check import check_updates, list_nodes


class Approval(RunInput):
    """Answer to the approval gate, given from the Prefect UI."""

    approve: bool = False
    note: str = ""


def host_settings(params: MaintenanceParams) -> HostPodSettings:
    return HostPodSettings(params.reboot.host_pod_namespace, params.reboot.host_pod_image)


# ---- plan ------------------------------------------------------------------------------------
WINDOWS_REASON = "Windows nodes are patched by a node image upgrade"


def make_plan(
    facts: list[NodeFacts], pods_to_move: dict[str, int] | None = None, hold: str | None = None
) -> list[PlanEntry]:
    """Order: nodes a previous run left mid-way first, then by pool and, within a pool, the nodes with the
    fewest pods a drain would evict first (``pods_to_move``), then by name. Emptier nodes go first so that
    the pods of fuller ones find nodes already rebooted (and, with the PreferNoSchedule taint on the
    nodes still waiting, go there): each pod moves as few times as possible. With ``hold`` (why reboots do
    not belong on this cluster), nodes that need one are held with that reason; a node a previous run
    left mid-way is still finished, to put it back in service."""
    moves = pods_to_move or {}
    entries = []
    for f in sorted(facts, key=lambda f: (not f.resume, f.pool, moves.get(f.name, 0), f.name)):
        if f.windows:
            entries.append(PlanEntry(node=f.name, action=PlanAction.not_applicable, reason=WINDOWS_REASON))
        elif f.resume:
            entries.append(
                PlanEntry(node=f.name, action=PlanAction.resume, reason="a previous run left its record here")
            )
        elif f.scan_error:
            entries.append(
                PlanEntry(node=f.name, action=PlanAction.skip, reason=f"not scanned: {f.scan_error}")
            )
        elif f.reboot_required is None:
            entries.append(
                PlanEntry(
                    node=f.name,
                    action=PlanAction.check,
                    reason="reboot need unknown (dry run with host-pod scan)",
                )
            )
        elif f.reboot_required:
            reason = "/var/run/reboot-required present"
            if f.name in moves:
                reason += f"; {moves[f.name]} pod(s) to move"
            if hold:
                entries.append(PlanEntry(node=f.name, action=PlanAction.hold, reason=hold))
            else:
                entries.append(PlanEntry(node=f.name, action=PlanAction.reboot, reason=reason))
        else:
            entries.append(PlanEntry(node=f.name, action=PlanAction.skip, reason="no reboot required"))
    return entries


@maintenance_task(name="plan")
def plan_rollout(
    facts: list[NodeFacts], params: MaintenanceParams, hold: str | None = None
) -> list[PlanEntry]:
    kube = kube_for(params.cluster)
    needing = {f.name for f in facts if f.reboot_required and not f.resume and not f.scan_error}
    by_pods = params.order == RolloutOrder.fewest_pods_first and needing and not hold
    plan = make_plan(facts, pods_to_move(kube, needing, params.drain) if by_pods else None, hold)
    by_name = {f.name: f for f in facts}
    lines = [
        f"# Maintenance plan for {kube.cluster_name}",
        "",
        f"Concurrency {params.concurrency}, max failures {params.max_failures}, "
        f"drain timeout {params.drain.timeout_seconds:.0f}s (then {params.drain.on_timeout.value}), "
        f"sentinel {params.sentinel.mode.value}, order {params.order.value}"
        f"{', dry run' if params.dry_run else ''}.",
        *(["", f"Reboots held: {hold}."] if hold else []),
        "",
        "| # | node | pool | kernel | action | why |",
        "|---|---|---|---|---|---|",
    ]
    for i, e in enumerate(plan, 1):
        f = by_name[e.node]
        lines.append(f"| {i} | {e.node} | {f.pool} | {f.kernel} | {e.action} | {e.reason} |")
    best_effort(
        "the maintenance-plan artifact",
        create_markdown_artifact,
        key="maintenance-plan",
        markdown="\n".join(lines),
        description=f"Plan for {kube.cluster_name}",
    )
    get_run_logger().info(
        "Plan: %d to reboot, %d to resume, %d held, %d skipped",
        sum(e.action == PlanAction.reboot for e in plan),
        sum(e.action == PlanAction.resume for e in plan),
        sum(e.action == PlanAction.hold for e in plan),
        sum(e.action == PlanAction.skip for e in plan),
    )
    if windows := sum(e.action == PlanAction.not_applicable for e in plan):
        get_run_logger().info(
            "%d Windows node(s) not applicable: %s (cluster-upgrade)", windows, WINDOWS_REASON
        )
    return plan


def pods_to_move(kube: Kube, nodes: set[str], options: DrainOptions) -> dict[str, int]:
    """Per node, the pods a drain would evict now (kubectl's filters), from one LIST of all pods."""
    on_node: dict[str, list] = {name: [] for name in nodes}
    for pod in kube.call(kube.core.list_pod_for_all_namespaces).items:
        node = pod.spec.node_name if pod.spec else None
        if node is not None and node in on_node:
            on_node[node].append(pod)
    return {name: len(select_pods(pods, options).evict) for name, pods in on_node.items()}


# ---- the flow --------------------------------------------------------------------------------
INSECURE_WARNING = (
    "TLS verification of the Kubernetes API of %s is OFF (cluster.insecure_skip_tls_verify): "
    "the server is not authenticated and its token could be sent to an impostor"
)


@maintenance_task(name="os-upgrade-channel")
def os_upgrade_channel(cluster: ClusterConnection) -> OsUpgradeSettings:
    """AKS's node OS upgrade channel and its node OS maintenance window; unknown without an AKS connection."""
    if cluster.aks is None:
        return OsUpgradeSettings()
    settings = read_os_upgrade_settings(
        management_client(cluster.aks), cluster.aks.resource_group, cluster.aks.name
    )
    get_run_logger().info(
        "Node OS upgrade channel: %s%s",
        settings.channel,
        f"; node OS maintenance window: {settings.schedule}" if settings.schedule else "",
    )
    return settings


@maintenance_task(name="connect")
def connect_cluster(cluster: ClusterConnection) -> str:
    """Reach the cluster and check that its API answers, before anything else happens; its name."""
    kube = kube_for(cluster)
    logger = get_run_logger()
    logger.info("Connected to %s through %s", kube.cluster_name, cluster.describe())
    if not kube.tls_verified:
        logger.warning(INSECURE_WARNING, kube.cluster_name)
    return kube.cluster_name


def release_after_cancel(flow, flow_run, state) -> None:
    """on_cancellation hook (possibly in another process): put interrupted nodes back in service,
    keep the record of nodes already rebooting for the next run, and release the run's reboot slots."""
    cleanup = clean_up_cancelled_run(flow_run.parameters, flow_run.id)
    flow_run_logger(flow_run, flow).warning("Cancelled: %s", cleanup.describe())


@flow(name="node-maintenance", log_prints=False, on_cancellation=[release_after_cancel])
def node_maintenance(
    cluster: ClusterConnection,
    node_selector: str = "",
    concurrency: Concurrency = 1,
    max_failures: MaxFailures = 0,
    window: MaintenanceWindow | None = None,
    drain: DrainOptions = DrainOptions(),  # noqa: B008 - immutable pydantic defaults render in the UI
    blockers: Blockers = Blockers(),  # noqa: B008
    reboot: RebootOptions = RebootOptions(),  # noqa: B008
    lock: LockOptions = LockOptions(),  # noqa: B008
    sentinel: SentinelOptions = SentinelOptions(),  # noqa: B008
    apply_updates: bool = False,
    labels: NodeLabels = NodeLabels(),  # noqa: B008
    notify: NotifyOptions = NotifyOptions(),  # noqa: B008
    order: RolloutOrder = RolloutOrder.fewest_pods_first,
    require_approval: bool = False,
    approval_timeout_seconds: ApprovalTimeout = 3600,
    orchestration_outage_seconds: OutageTolerance = 120,
    respect_os_upgrade_channel: bool = True,
    dry_run: bool = False,
) -> MaintenanceReport:
    """Reboot the nodes that need it, one reboot slot at a time, and report kernels before and after.

    Args:
        cluster: How to reach the cluster: a kubeconfig file on the worker machine, the worker pod's own
            service account (in_cluster), or an AKS cluster by subscription, resource group and name.
        node_selector: Only maintain nodes matching this label selector, e.g.
            `kubernetes.azure.com/agentpool=userpool`. Empty: every node.
        concurrency: How many nodes may be cordoned, drained or rebooting at the same time, across all
            runs on this cluster (the number of reboot slots).
        max_failures: Stop starting new nodes once more than this many nodes failed to come back
            healthy. 0 halts at the first failure.
        window: When reboots may start (days, local times, time zone). Empty: any time.
        drain: How pods leave a node before its reboot, and what happens when they cannot.
        blockers: What holds reboots back: pods matching a selector, active Prometheus alerts.
        reboot: The reboot command and how long a node may take to come back.
        lock: The reboot slots (Lease objects) and cooperation with a kured still installed.
        sentinel: How the flow finds out which nodes need a reboot.
        apply_updates: Install pending OS updates (apt-get upgrade) on every node before checking
            whether it needs a reboot.
        labels: Node labels set before and after a reboot, and the taint on nodes still waiting.
        notify: Where to send progress messages (Teams, Slack, ... webhooks).
        order: The order of the nodes within a pool (pools go one after the other, by name):
            fewest-pods-first takes the nodes with the fewest pods to evict first, so that the pods of
            fuller nodes move once, onto nodes already rebooted; name is alphabetical.
        require_approval: Pause after the plan until someone approves it in the Prefect UI (the plan is
            the maintenance-plan artifact).
        approval_timeout_seconds: How long to wait for that approval; no answer means nothing is
            rebooted.
        orchestration_outage_seconds: How long the rollout goes on while the Prefect API does not answer
            (the work on the cluster never depends on it; only its record does). Past that, no new node is
            started and the run ends once the nodes in progress are back in service or recorded.
        respect_os_upgrade_channel: On an AKS cluster whose node OS upgrade channel is SecurityPatch or
            NodeImage, AKS patches the nodes itself: reboot nothing (the report says why). Turn off to
            reboot anyway. Needs the cluster by its AKS id; a kubeconfig cannot tell the channel.
        dry_run: Scan and plan only: report what would be rebooted and change nothing on the cluster.
    """
    params = MaintenanceParams(
        cluster=cluster,
        node_selector=node_selector,
        concurrency=concurrency,
        max_failures=max_failures,
        window=window,
        drain=drain,
        blockers=blockers,
        reboot=reboot,
        lock=lock,
        sentinel=sentinel,
        apply_updates=apply_updates,
        labels=labels,
        notify=notify,
        order=order,
        require_approval=require_approval,
        approval_timeout_seconds=approval_timeout_seconds,
        orchestration_outage_seconds=orchestration_outage_seconds,
        respect_os_upgrade_channel=respect_os_upgrade_channel,
        dry_run=dry_run,
    )
    return run_maintenance(params)


def run_maintenance(params: MaintenanceParams):
    """The runbook, under a watch of the Prefect API for the whole run (see ``flows.recording``)."""
    watch = ApiWatch.for_current_run(interval=min(10.0, params.orchestration_outage_seconds / 5))
    with watch if watch is not None else contextlib.nullcontext():
        return _run_maintenance(params, watch)


def _run_maintenance(params: MaintenanceParams, watch: ApiWatch | None):
    logger = get_run_logger()
    run_id = run_id_of(current_run.id or uuid.uuid4())
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    cluster_name = connect_cluster(params.cluster)
    kube = kube_for(params.cluster)
    settings = host_settings(params)
    facts = check_updates(
        params.cluster,
        params.node_selector,
        params.apply_updates,
        params.dry_run,
        settings,
        params.sentinel.parallelism,
    )
    facts = scan_sentinels(params.cluster, facts, params.sentinel, settings, params.dry_run)
    os_upgrades = os_upgrade_channel(params.cluster)
    hold = os_upgrades.hold_reason() if params.respect_os_upgrade_channel else None
    if not params.respect_os_upgrade_channel and (patches := os_upgrades.aks_patches()):
        logger.warning("%s; rebooting anyway: respect_os_upgrade_channel is false", patches)
    plan = plan_rollout(facts, params, hold)
    by_name = {f.name: f for f in facts}
    report = MaintenanceReport(
        cluster=cluster_name,
        flow_run_id=str(current_run.id or ""),
        dry_run=params.dry_run,
        started_at=started_at,
        tls_verified=kube.tls_verified,
        node_os_upgrade_channel=os_upgrades.channel,
    )
    todo = [e for e in plan if e.action in (PlanAction.reboot, PlanAction.resume)]
    if not params.dry_run:
        clean_up_leftovers(params.cluster, [e.node for e in plan if e.action == PlanAction.skip], settings)
    unplanned = (PlanAction.skip, PlanAction.check, PlanAction.hold, PlanAction.not_applicable)
    reports = {e.node: _unplanned(e, by_name[e.node]) for e in plan if e.action in unplanned}
    if params.dry_run:
        for e in todo:
            reason = gate_reason(kube, e.node, params.window, params.blockers, params.lock)
            reports[e.node] = _report(
                e,
                by_name[e.node],
                Outcome.held if reason else Outcome.planned,
                reason or f"would {e.action}: {e.reason}",
            )
    elif todo and not _approved(params, plan, logger):
        reports.update({e.node: _report(e, by_name[e.node], Outcome.held, "not approved") for e in todo})
    elif todo:
        result = _execute(params, todo, by_name, run_id, cluster_name, watch)
        reports.update(result.reports)
        report.halted, report.halt_reason = bool(result.halted), result.halted
    report.nodes = [reports[e.node] for e in plan]
    still = [
        n.node
        for n in report.nodes
        if n.outcome in (Outcome.held, Outcome.skipped, Outcome.failed) and by_name[n.node].reboot_required
    ]
    diff = kernel_diff_report(params.cluster, params.node_selector, facts, report.nodes, still)
    report.kernels_after = diff["summary"]["kernels"]
    report.windows_after = diff["summary"]["windows"]
    report.lagging_kernel = diff["summary"]["lagging"]
    report.still_need_reboot = still
    report.finished_at = datetime.now(UTC).isoformat(timespec="seconds")
    logger.info(report.summary_line())
    FINISHED.report = report
    if report.failed:
        failed = [f"{n.node}: {n.reason}" for n in report.nodes if n.outcome == Outcome.failed]
        message = (report.halt_reason + ". " if report.halted else "") + (
            "Failed nodes: " + "; ".join(failed) if failed else ""
        )
        return Failed(message=message.strip(), data=report)
    return Completed(message=report.summary_line(), data=report)


class FINISHED:
    """The report of the last run finished in this process: the command line prints it even when the
    Prefect API could not take the run's final state."""

    report: MaintenanceReport | None = None


def _report(entry: PlanEntry, before: NodeFacts, outcome: Outcome, reason: str) -> NodeReport:
    return NodeReport(
        node=entry.node,
        pool=before.pool,
        outcome=outcome,
        reason=reason,
        kernel_before=before.kernel,
        node_image_version=before.node_image_version,
    )


def _unplanned(entry: PlanEntry, before: NodeFacts) -> NodeReport:
    """A node the plan skips (or, in a dry run, cannot judge): a node that could not be scanned is held
    back, never reported as needing nothing."""
    if entry.action == PlanAction.check:
        return _report(entry, before, Outcome.planned, entry.reason)
    if entry.action == PlanAction.hold:
        return _report(entry, before, Outcome.held, entry.reason)
    if entry.action == PlanAction.not_applicable:
        return _report(
            entry, before, Outcome.not_applicable, f"{entry.reason} (node image {before.node_image_version})"
        )
    return _report(entry, before, Outcome.held if before.scan_error else Outcome.not_needed, entry.reason)


@maintenance_task(name="clean-up-leftovers")
def clean_up_leftovers(cluster: ClusterConnection, nodes: list[str], settings: HostPodSettings) -> list[str]:
    """Remove what a killed run left behind: finished host pods, and the reboot-pending taint on nodes
    that no longer need a reboot."""
    kube = kube_for(cluster)
    delete_stale_host_pods(kube, settings)
    tainted = [
        n.metadata.name
        for n in list_nodes(kube, "")
        if n.metadata.name in set(nodes) and has_pending_taint(n)
    ]
    for name in tainted:
        cordon_ops.set_pending_taint(kube, name, False)
    return tainted


def _approved(params: MaintenanceParams, plan: list[PlanEntry], logger) -> bool:
    if not params.require_approval:
        return True
    nodes = ", ".join(e.node for e in plan if e.action in (PlanAction.reboot, PlanAction.resume))
    logger.info("Waiting for approval to reboot: %s (see the maintenance-plan artifact)", nodes)
    answer = pause_flow_run(
        wait_for_input=Approval.with_initial_data(description=f"Approve rebooting {nodes}?", approve=False),
        timeout=int(params.approval_timeout_seconds),
        poll_interval=2,
    )
    logger.info(
        "Approval answer: %s%s",
        "approved" if answer.approve else "rejected",
        f" ({answer.note})" if answer.note else "",
    )
    return answer.approve


def _execute(
    params: MaintenanceParams,
    todo: list[PlanEntry],
    by_name: dict[str, NodeFacts],
    run_id: str,
    cluster: str,
    watch: ApiWatch | None,
):
    """The nodes through their lifecycle, at most ``concurrency`` at once, each recorded as a task run."""
    kube = kube_for(params.cluster)
    if params.labels.prefer_no_schedule_taint:
        for e in todo:
            cordon_ops.set_pending_taint(kube, e.node, True)
    lifecycle = NodeLifecycle(kube, params, run_id, PrefectRecorder(cluster))
    tolerance = params.orchestration_outage_seconds
    progress = Progress(cluster)

    def prefect_gone() -> str | None:
        if watch is None or (down := watch.unreachable_for()) <= tolerance:
            return None
        return (
            f"the Prefect API at {watch.api_url} has not answered for {down:.0f}s "
            f"(more than orchestration_outage_seconds={tolerance:g}); no node was started after that, "
            "the nodes in progress were finished; run again once Prefect is back"
        )

    rollout = Rollout(
        lifecycle,
        todo,
        by_name,
        run_node=lambda entry, before: recorded(entry, before, lifecycle.run),
        should_halt=prefect_gone,
        on_progress=progress.update,
    )
    try:
        result = rollout.run()
    finally:
        progress.close()
    if result.halted:
        get_run_logger().error("%s", result.halted)
    if params.labels.prefer_no_schedule_taint:
        for node, r in result.reports.items():
            if r.outcome == Outcome.failed:
                continue
            try:
                cordon_ops.set_pending_taint(kube, node, False)
            except Exception as exc:  # a preference, not a safety matter: the run still ends with its report
                get_run_logger().warning(
                    "%s: could not remove the reboot-pending taint (%s); the next run removes it", node, exc
                )
    return result


if __name__ == "__main__":
    # one module object however it was started: the command line finds this one under its name
    sys.modules.setdefault("flows.node_maintenance", sys.modules[__name__])
    from aksmaint_cli.commands import maintenance_main

    sys.exit(maintenance_main())
