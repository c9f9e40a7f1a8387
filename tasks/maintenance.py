"""The node-maintenance flow's Prefect layer: a thin layer over the runbook steps in ``aksmaint/maintenance/``.

Each task does one step of the runbook (reach the cluster, read AKS's node OS upgrade channel, plan, clean
up what a killed run left) and records it in Prefect; the work itself is in the step modules. Also here:
the approval pause, the rollout with each node recorded as a task run, and the cancellation hook.
"""

from __future__ import annotations

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.client.schemas.objects import State
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from prefect.logging.loggers import flow_run_logger
from prefect.states import Completed, Failed

from aksmaint.aks.channel import OsUpgradeSettings, read_os_upgrade_settings
from aksmaint.azure import management_client
from aksmaint.hostexec import HostPodSettings, delete_stale_host_pods
from aksmaint.kube import kube_for
from aksmaint.maintenance.budgets import Budgets
from aksmaint.maintenance.cancellation import clean_up_cancelled_run
from aksmaint.maintenance.kernel_diff import kernel_diff, render_markdown
from aksmaint.maintenance.lifecycle import NodeLifecycle
from aksmaint.maintenance.plan import WINDOWS_REASON, make_plan, plan_markdown, pods_to_move
from aksmaint.maintenance.rollout import Rollout, RolloutResult
from aksmaint.maintenance.sentinel import scan_nodes
from aksmaint.maintenance.taints import has_pending_taint, set_pending_taint
from aksmaint.maintenance.update_check import list_nodes, update_check
from aksmaint.params import ClusterConnection, MaintenanceParams, RolloutOrder, SentinelOptions
from aksmaint.report import MaintenanceReport, NodeFacts, NodeReport, Outcome, PlanAction, PlanEntry
from tasks.hand_over import follow_up_starter
from tasks.node_runs import record_outcome, recorded, run_phase_recorded
from tasks.recording import ApiWatch, PrefectRecorder, Progress
from tasks.tasking import best_effort, maintenance_task

INSECURE_WARNING = (
    "TLS verification of the Kubernetes API of %s is OFF (cluster.insecure_skip_tls_verify): "
    "the server is not authenticated and its token could be sent to an impostor"
)


def host_settings(params: MaintenanceParams) -> HostPodSettings:
    return HostPodSettings(params.reboot.host_pod_namespace, params.reboot.host_pod_image)


@maintenance_task(name="connect")
def connect_cluster(cluster: ClusterConnection) -> str:
    """Reach the cluster and check that its API answers, before anything else happens; its name."""
    kube = kube_for(cluster)
    logger = get_run_logger()
    logger.info("Connected to %s through %s", kube.cluster_name, cluster.describe())
    if not kube.tls_verified:
        logger.warning(INSECURE_WARNING, kube.cluster_name)
    return kube.cluster_name


@maintenance_task(name="update-check")
def check_updates(params: MaintenanceParams, settings: HostPodSettings) -> list[NodeFacts]:
    """List the nodes in scope with their kernel, image and boot id; install OS updates if asked."""
    logger = get_run_logger()
    facts, failures = update_check(
        kube_for(params.cluster),
        params.node_selector,
        params.apply_updates and not params.dry_run,
        settings,
        params.sentinel.parallelism,
    )
    for name, err in failures.items():
        logger.warning("Applying updates on %s failed: %s", name, err)
    logger.info("%d node(s) match selector %r", len(facts), params.node_selector or "(all)")
    return facts


@maintenance_task(name="sentinel-scan")
def scan_sentinels(
    cluster: ClusterConnection,
    facts: list[NodeFacts],
    options: SentinelOptions,
    settings: HostPodSettings,
    dry_run: bool,
) -> list[NodeFacts]:
    """Find the nodes that need a reboot (``aksmaint.maintenance.sentinel``) and say what was found."""
    logger = get_run_logger()
    scanned = scan_nodes(kube_for(cluster), facts, options, settings, dry_run)
    if scanned is None:
        logger.info(
            "Dry run: the host-pod scan creates pods, so reboot needs are not checked "
            "(sentinel mode node-condition scans read-only)"
        )
        return facts
    linux = [f for f in scanned if not f.windows]
    errors = [f for f in linux if f.scan_error]
    windows = len(scanned) - len(linux)
    logger.info(
        "%d of %d Linux node(s) need a reboot%s%s",
        sum(1 for f in linux if f.reboot_required),
        len(linux),
        f"; {len(errors)} could not be scanned" if errors else "",
        f"; {windows} Windows node(s) not scanned (a node image upgrade patches them)" if windows else "",
    )
    for f in errors:
        logger.warning("Scan of %s failed: %s", f.name, f.scan_error)
    return scanned


@maintenance_task(name="kernel-diff")
def kernel_diff_report(
    cluster: ClusterConnection,
    node_selector: str,
    before: list[NodeFacts],
    reports: list[NodeReport],
    need_reboot: list[str],
) -> dict:
    """Compare kernels before and after (``aksmaint.maintenance.kernel_diff``); publish the diff and the fleet summary."""
    kube = kube_for(cluster)
    diff = kernel_diff(kube, node_selector, before, reports, need_reboot)
    best_effort(
        "the kernel-diff artifact",
        create_table_artifact,
        key="kernel-diff",
        table=diff["rows"],
        description=f"Kernel before and after on {kube.cluster_name}",
    )
    best_effort(
        "the kernel-report artifact",
        create_markdown_artifact,
        key="kernel-report",
        markdown=render_markdown(kube.cluster_name, diff["rows"], diff["summary"], diff["table"]),
        description=f"Kernel-version report for {kube.cluster_name}",
    )
    return diff


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


@maintenance_task(name="plan")
def plan_rollout(
    facts: list[NodeFacts], params: MaintenanceParams, hold: str | None = None, own_node: str = ""
) -> list[PlanEntry]:
    kube = kube_for(params.cluster)
    needing = {f.name for f in facts if f.reboot_required and not f.resume and not f.scan_error}
    by_pods = params.order == RolloutOrder.fewest_pods_first and needing and not hold
    moves = pods_to_move(kube, needing, params.drain) if by_pods else None
    plan = make_plan(facts, moves, hold, params.retry_quarantined, own_node)
    best_effort(
        "the maintenance-plan artifact",
        create_markdown_artifact,
        key="maintenance-plan",
        markdown=plan_markdown(kube.cluster_name, params, plan, facts, hold),
        description=f"Plan for {kube.cluster_name}",
    )
    logger = get_run_logger()
    logger.info(
        "Plan: %d to reboot, %d to resume, %d held, %d skipped, %d quarantined by an earlier run",
        *(
            sum(e.action == a for e in plan)
            for a in (
                PlanAction.reboot,
                PlanAction.resume,
                PlanAction.hold,
                PlanAction.skip,
                PlanAction.quarantined,
            )
        ),
    )
    if windows := sum(e.action == PlanAction.not_applicable for e in plan):
        logger.info("%d Windows node(s) not applicable: %s (cluster-upgrade)", windows, WINDOWS_REASON)
    return plan


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
        set_pending_taint(kube, name, False)
    return tainted


class Approval(RunInput):
    """Answer to the approval gate, given from the Prefect UI."""

    approve: bool = False
    note: str = ""


def release_after_cancel(flow, flow_run, state) -> None:
    """on_cancellation hook (possibly in another process): put interrupted nodes back in service,
    keep the record of nodes already rebooting for the next run, and release the run's reboot slots."""
    cleanup = clean_up_cancelled_run(flow_run.parameters, flow_run.id)
    flow_run_logger(flow_run, flow).warning("Cancelled: %s", cleanup.describe())


def approved(params: MaintenanceParams, plan: list[PlanEntry], logger) -> bool:
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


def execute_rollout(
    params: MaintenanceParams,
    todo: list[PlanEntry],
    by_name: dict[str, NodeFacts],
    run_id: str,
    cluster: str,
    watch: ApiWatch | None,
    own_node: str = "",
) -> RolloutResult:
    """The nodes through their lifecycle, at most ``concurrency`` at once, each recorded as a task run."""
    kube = kube_for(params.cluster)
    if params.labels.prefer_no_schedule_taint:
        for e in todo:
            set_pending_taint(kube, e.node, True)
    budgets = Budgets(params, list(by_name.values()))
    lifecycle = NodeLifecycle(
        kube,
        params,
        run_id,
        PrefectRecorder(cluster),
        budgets=budgets,
        run_phase=run_phase_recorded,
        own_node=own_node,
        hand_over=follow_up_starter() if own_node else None,
    )
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
        report_unstarted=record_outcome,
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
                set_pending_taint(kube, node, False)
            except Exception as exc:  # a preference, not a safety matter: the run still ends with its report
                get_run_logger().warning(
                    "%s: could not remove the reboot-pending taint (%s); the next run removes it", node, exc
                )
    return result


def compare_kernels(params: MaintenanceParams, facts: list[NodeFacts], report: MaintenanceReport) -> None:
    """The kernel-diff step: kernels before and after, and the nodes still needing a reboot."""
    needed = {f.name for f in facts if f.reboot_required}
    left = (Outcome.held, Outcome.skipped, Outcome.failed, Outcome.handed_over)
    report.still_need_reboot = [n.node for n in report.nodes if n.outcome in left and n.node in needed]
    diff = kernel_diff_report(
        params.cluster, params.node_selector, facts, report.nodes, report.still_need_reboot
    )
    report.kernels_after = diff["summary"]["kernels"]
    report.windows_after = diff["summary"]["windows"]
    report.lagging_kernel = diff["summary"]["lagging"]


def final_state(report: MaintenanceReport) -> State:
    """Completed, or Failed when a node failed or the rollout halted; the report is the state's data."""
    if not report.failed:
        return Completed(message=report.summary_line(), data=report)
    failed = [f"{n.node}: {n.reason}" for n in report.nodes if n.outcome == Outcome.failed]
    message = (report.halt_reason + ". " if report.halted else "") + (
        "Failed nodes: " + "; ".join(failed) if failed else ""
    )
    return Failed(message=message.strip(), data=report)
