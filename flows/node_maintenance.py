"""Node maintenance: kured's job as a Prefect flow.

connect -> update check -> sentinel scan -> plan -> (approval) -> per node, in threads, each recorded as a
Prefect task run: gates -> reboot slot -> re-check -> cordon -> drain -> reboot -> verify -> uncordon ->
release (the phase table of ``aksmaint.maintenance.lifecycle``) -> kernel diff.

Prefect is the record of the work, not a part of it: what decides a node's outcome happens on the cluster,
and a Prefect API that fails or goes away only leaves gaps in the record (``tasks.recording``). Past
``orchestration_outage_seconds`` without the API, the rollout starts no new node and ends once the nodes
in progress are at a safe point.

Run it from a deployment, the Prefect UI, or ``aksmaint maintain --kubeconfig PATH [--concurrency N|P%]``
(or ``python -m flows.node_maintenance``). Its tasks are in ``tasks.maintenance``, the steps in ``aksmaint/maintenance/``.
"""

from __future__ import annotations

import contextlib
import sys
import uuid
from datetime import UTC, datetime

from prefect import flow, get_run_logger
from prefect.runtime import flow_run as current_run

from aksmaint.kube import kube_for
from aksmaint.maintenance.cancellation import run_id_of
from aksmaint.maintenance.plan import dry_run_reports, node_report, unplanned_report
from aksmaint.params import (
    ApprovalTimeout,
    Blockers,
    Budget,
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
from aksmaint.report import MaintenanceReport, Outcome, PlanAction
from tasks.hand_over import find_own_node
from tasks.maintenance import (
    approved,
    check_updates,
    clean_up_leftovers,
    compare_kernels,
    connect_cluster,
    execute_rollout,
    final_state,
    host_settings,
    os_upgrade_channel,
    plan_rollout,
    release_after_cancel,
    scan_sentinels,
)
from tasks.node_runs import record_outcome
from tasks.recording import ApiWatch
from tasks.result_storage import check_result_storage


@flow(name="node-maintenance", log_prints=False, on_cancellation=[release_after_cancel])
def node_maintenance(
    cluster: ClusterConnection,
    node_selector: str = "",
    concurrency: Concurrency = 1,
    budgets: list[Budget] = [],  # noqa: B006 - Prefect copies parameters; the default renders in the UI
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
    retry_quarantined: bool = False,
) -> MaintenanceReport:
    """Reboot the nodes that need it, one reboot slot at a time, and report kernels before and after.

    Args:
        cluster: How to reach the cluster: a kubeconfig file on the worker machine, the worker pod's own
            service account (in_cluster), or an AKS cluster by subscription, resource group and name.
        node_selector: Only maintain nodes matching this label selector, e.g.
            `kubernetes.azure.com/agentpool=userpool`. Empty: every node.
        concurrency: How many nodes may be cordoned, drained or rebooting at the same time, across all
            runs: a count, or a percentage of the nodes in scope ("10%": rounded down, at least 1).
        budgets: More limits (all nodes, per pool, per zone; a count or a percentage; always, or from a
            cron schedule for a duration, else 0). The strictest in force wins, across runs too.
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
        retry_quarantined: Drain again the nodes an earlier run quarantined; else they are left alone.
    """
    # every parameter of the flow is a field of MaintenanceParams: validated together, before any request
    params = MaintenanceParams(**locals())
    check_result_storage()  # before any request to the cluster: results must be storable
    return run_maintenance(params)


def run_maintenance(params: MaintenanceParams):
    """The runbook, under a watch of the Prefect API for the whole run (see ``tasks.recording``)."""
    watch = ApiWatch.for_current_run(interval=min(10.0, params.orchestration_outage_seconds / 5))
    with watch if watch is not None else contextlib.nullcontext():
        return _run_maintenance(params, watch)


def _run_maintenance(params: MaintenanceParams, watch: ApiWatch | None):
    logger = get_run_logger()
    run_id = run_id_of(current_run.id or uuid.uuid4())
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    cluster_name = connect_cluster(params.cluster)
    kube = kube_for(params.cluster)
    own_node = find_own_node(params.cluster).node if params.cluster.in_cluster else ""
    settings = host_settings(params)
    facts = check_updates(params, settings)
    facts = scan_sentinels(params.cluster, facts, params.sentinel, settings, params.dry_run)
    os_upgrades = os_upgrade_channel(params.cluster)
    hold = os_upgrades.hold_reason() if params.respect_os_upgrade_channel else None
    if not params.respect_os_upgrade_channel and (patches := os_upgrades.aks_patches()):
        logger.warning("%s; rebooting anyway: respect_os_upgrade_channel is false", patches)
    plan = plan_rollout(facts, params, hold, own_node)
    by_name = {f.name: f for f in facts}
    report = MaintenanceReport(
        cluster=cluster_name,
        flow_run_id=str(current_run.id or ""),
        dry_run=params.dry_run,
        started_at=started_at,
        tls_verified=kube.tls_verified,
        node_os_upgrade_channel=os_upgrades.channel,
    )
    todo = [e for e in plan if e.action.runs]
    if not params.dry_run:
        clean_up_leftovers(params.cluster, [e.node for e in plan if e.action == PlanAction.skip], settings)
    reports = {e.node: unplanned_report(e, by_name[e.node]) for e in plan if not e.action.runs}
    if not params.dry_run:
        reports = {e.node: record_outcome(e, reports[e.node]) for e in plan if e.node in reports}
    if params.dry_run:
        reports.update(dry_run_reports(kube, params, todo, by_name))
    elif todo and not approved(params, plan, logger):
        reports.update(
            {
                e.node: record_outcome(e, node_report(e, by_name[e.node], Outcome.held, "not approved"))
                for e in todo
            }
        )
    elif todo:
        result = execute_rollout(params, todo, by_name, run_id, cluster_name, watch, own_node)
        reports.update(result.reports)
        report.halted, report.halt_reason = bool(result.halted), result.halted
    report.nodes = [reports[e.node] for e in plan]
    compare_kernels(params, facts, report)
    report.finished_at = datetime.now(UTC).isoformat(timespec="seconds")
    logger.info(report.summary_line())
    FINISHED.report = report
    return final_state(report)


class FINISHED:
    """The report of the last run finished in this process: the command line prints it even when the
    Prefect API could not take the run's final state."""

    report: MaintenanceReport | None = None


if __name__ == "__main__":
    # one module object however it was started: the command line finds this one under its name
    sys.modules.setdefault("flows.node_maintenance", sys.modules[__name__])
    from aksmaint_cli.commands import maintenance_main

    sys.exit(maintenance_main())
