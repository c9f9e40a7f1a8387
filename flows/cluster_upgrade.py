"""Cluster upgrade: AKS node-image and Kubernetes-version upgrades through the management API.

connect -> preflight (states, version path, skew, blocking PDBs, maintenance window) -> control plane
step by step -> each pool -> verify nodes -> kernel diff. A run that finds an operation in progress
(its own, from a crashed run) waits for it instead of starting another one. The plan and the AKS
operations are in ``aksmaint.aks``, the tasks in ``tasks.upgrade``, the report in ``aksmaint.report``.

``python -m flows.cluster_upgrade --subscription-id S --resource-group RG --name N
--mode node-image|kubernetes-version [--target V] [--pools a,b] [--dry-run]``
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import Annotated

from azure.core.exceptions import HttpResponseError, ServiceRequestError
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run as this_flow_run
from prefect.states import Completed, Failed
from pydantic import Field

from aksmaint.aks.operations import OperationResult, OperationStatus, UpgradeMode
from aksmaint.aks.plan import plan_markdown
from aksmaint.aks.versions import UpgradeError
from aksmaint.azure import AksCluster, describe_azure_error
from aksmaint.errors import ClusterAccessError
from aksmaint.kube import kube_for
from aksmaint.maintenance.update_check import list_nodes, node_facts
from aksmaint.params import ClusterConnection
from aksmaint.report import UpgradePlan, UpgradeReport
from tasks.maintenance import kernel_diff_report
from tasks.result_storage import check_result_storage
from tasks.upgrade import (
    abort_after_cancel,
    check_nodes,
    execute_step,
    preflight,
    step_run_name,
    verify_nodes,
)


def run_steps(
    cluster: AksCluster, plan: UpgradePlan, poll: float, timeout: float, report: UpgradeReport
) -> None:
    """The plan's operations in order, each a task run, each pool's nodes checked after it; the first
    failed operation ends the rollout."""
    run_id = str(this_flow_run.id)
    connection = ClusterConnection(aks=cluster)
    for step in plan.steps:
        runner = execute_step.with_options(task_run_name=step_run_name(step))
        state = runner(cluster, step, poll, timeout, run_id, return_state=True)
        outcome = state.result(raise_on_failure=False)
        if not isinstance(outcome, OperationResult):  # the step raised: no operation result to go on with
            raise outcome if isinstance(outcome, BaseException) else UpgradeError(state.message or str(state))
        report.operations.append(outcome)
        if step.pool is not None:
            check = check_nodes.with_options(task_run_name=f"check-nodes {step.pool}")
            check(connection, step, return_state=True)  # a record for the operator: the run goes on
        if outcome.status == OperationStatus.failed:
            report.outcome = f"failed: {step.describe()}: {outcome.message}"
            return


@flow(name="cluster-upgrade", on_cancellation=[abort_after_cancel])
def cluster_upgrade(
    cluster: AksCluster,
    mode: UpgradeMode = UpgradeMode.node_image,
    target: str = "latest",
    pools: list[str] | None = None,
    control_plane_only: bool = False,
    respect_maintenance_window: bool = True,
    dry_run: bool = False,
    poll_interval_seconds: Annotated[float, Field(gt=0)] = 15,
    operation_timeout_seconds: Annotated[float, Field(gt=0)] = 7200,
):
    """Upgrade an AKS cluster's node images or Kubernetes version, one safe step at a time."""
    logger = get_run_logger()
    check_result_storage()  # before any request to Azure: results must be storable
    report = UpgradeReport(
        cluster=cluster.name,
        mode=mode,
        dry_run=dry_run,
        started_at=datetime.now(UTC).isoformat(timespec="seconds"),
        plan=UpgradePlan(),
    )
    try:
        plan = preflight(cluster, mode, target, pools or [], control_plane_only, respect_maintenance_window)
    except (HttpResponseError, ServiceRequestError) as exc:
        raise ClusterAccessError(f"Azure Resource Manager call failed: {describe_azure_error(exc)}") from exc
    report.plan = plan
    create_markdown_artifact(
        key="upgrade-plan",
        markdown=plan_markdown(cluster.name, mode, target, plan),
        description=f"Plan for {cluster.name}",
    )
    for note in plan.notes:
        logger.info(note)
    if plan.blocking_pdbs:
        logger.warning("PodDisruptionBudgets that would block a drain now: %s", ", ".join(plan.blocking_pdbs))
    if dry_run or not plan.steps:
        report.outcome = "dry run: nothing changed" if dry_run else "nothing to do"
        return _finish(report, logger)
    if not plan.window_open:
        report.outcome = f"not started: {plan.window}"
        return _finish(report, logger)
    connection = ClusterConnection(aks=cluster)
    before = [node_facts(n) for n in list_nodes(kube_for(connection), "")]
    run_steps(cluster, plan, poll_interval_seconds, operation_timeout_seconds, report)
    report.verify_problems = verify_nodes(connection, mode, plan)
    report.verified = not report.verify_problems
    diff = kernel_diff_report(connection, "", before, [], [])
    report.kernels_after = diff["summary"]["kernels"]
    report.windows_after = diff["summary"]["windows"]
    if not report.outcome:
        report.outcome = "upgraded" if report.verified else "upgraded, but verification found problems"
    return _finish(report, logger)


def _finish(report: UpgradeReport, logger):
    report.finished_at = datetime.now(UTC).isoformat(timespec="seconds")
    logger.info("%s: %s", report.cluster, report.outcome)
    if report.outcome.startswith("failed") or report.verify_problems:
        return Failed(
            message=f"{report.outcome}; {'; '.join(report.verify_problems)}".rstrip("; "), data=report
        )
    return Completed(message=report.outcome, data=report)


if __name__ == "__main__":
    # one module object however it was started: the command line finds this one under its name
    sys.modules.setdefault("flows.cluster_upgrade", sys.modules[__name__])
    from aksmaint_cli.upgrade import upgrade_main

    sys.exit(upgrade_main())
