"""Cluster upgrade: AKS node-image and Kubernetes-version upgrades through the management API.

connect -> preflight (states, version path, skew, blocking PDBs, maintenance window) -> control plane
step by step -> each pool -> verify nodes -> kernel diff. A run that finds an operation in progress
(its own, from a crashed run) waits for it instead of starting another one.

``python -m flows.cluster_upgrade --subscription-id S --resource-group RG --name N
--mode node-image|kubernetes-version [--target V] [--pools a,b] [--dry-run]``
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from functools import partial
from typing import Annotated

from azure.core.exceptions import HttpResponseError, ResourceNotFoundError, ServiceRequestError
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, update_progress_artifact
from prefect.client.schemas.objects import State
from prefect.events import emit_event
from prefect.logging.loggers import flow_run_logger
from prefect.runtime import flow_run as this_flow_run
from prefect.states import Completed, Failed
from pydantic import BaseModel, Field

from aksmaint.aks import (
    IN_PROGRESS_STATES,
    OperationResult,
    OperationStatus,
    StepKind,
    UpgradeError,
    UpgradeMode,
    UpgradeStep,
    check_pool_nodes,
    maintenance_window_open,
    node_os_upgrade_channel_of,
    resolve_target,
    run_operation,
    skew_problem,
    upgrade_path,
    wait_for_idle,
)
from aksmaint.aks.cancellation import RecordPhase, UpgradeRecord, abort_own_operation, begin_recorded
from aksmaint.azure import AksCluster, describe_azure_error, management_client
from aksmaint.errors import ClusterAccessError
from aksmaint.kube import kube_for
from aksmaint.maintenance.drain import blocking_budgets
from aksmaint.maintenance.update_check import POOL_LABEL, list_nodes, node_facts
from aksmaint.params import ClusterConnection
from tasks.maintenance import kernel_diff_report
from tasks.result_storage import check_result_storage
from tasks.tasking import best_effort, maintenance_task

# the name of an operation's task run state, by how the operation ended (a failed one is Failed)
STATE_NAMES = {OperationStatus.succeeded: "Upgraded", OperationStatus.already_current: "AlreadyCurrent"}


class UpgradePlan(BaseModel):
    steps: list[UpgradeStep] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    blocking_pdbs: list[str] = Field(default_factory=list)
    window: str = ""
    window_open: bool = True
    node_os_upgrade_channel: str = ""  # who patches the nodes' OS between node image upgrades


class UpgradeReport(BaseModel):
    cluster: str
    mode: UpgradeMode
    dry_run: bool
    started_at: str
    finished_at: str = ""
    plan: UpgradePlan
    operations: list[OperationResult] = Field(default_factory=list)
    verified: bool = False
    verify_problems: list[str] = Field(default_factory=list)
    kernels_after: dict[str, int] = Field(default_factory=dict)  # Linux nodes
    windows_after: dict[str, int] = Field(
        default_factory=dict
    )  # "<OS build> (<node image>)" of Windows nodes
    outcome: str = ""

    @property
    def node_os_upgrade_channel(self) -> str:
        return self.plan.node_os_upgrade_channel


def _pool_names(pools: list, wanted: list[str]) -> list[str]:
    names = [p.name for p in pools]
    unknown = sorted(set(wanted) - set(names))
    if unknown:
        raise UpgradeError(f"unknown pool(s) {', '.join(unknown)}; the cluster has {', '.join(names)}")
    return [n for n in names if not wanted or n in wanted]


@maintenance_task(name="aks-preflight", retries=2)
def preflight(
    cluster: AksCluster,
    mode: UpgradeMode,
    target: str,
    pools: list[str],
    control_plane_only: bool,
    respect_maintenance_window: bool,
) -> UpgradePlan:
    """Everything checked before the first mutating call: states, versions, skew, budgets, window."""
    client = management_client(cluster)
    try:
        mc = client.managed_clusters.get(cluster.resource_group, cluster.name)
    except ResourceNotFoundError as exc:
        raise ClusterAccessError(
            f"AKS cluster {cluster.name} not found in resource group "
            f"{cluster.resource_group} of subscription {cluster.subscription_id}"
        ) from exc
    agent_pools = list(client.agent_pools.list(cluster.resource_group, cluster.name))
    selected = _pool_names(agent_pools, pools)
    plan = UpgradePlan(node_os_upgrade_channel=node_os_upgrade_channel_of(mc))
    _check_states(mc, agent_pools, selected, plan)
    if mode == UpgradeMode.node_image:
        _plan_node_images(client, cluster, agent_pools, selected, plan)
    else:
        _plan_versions(client, mc, agent_pools, selected, target, control_plane_only, plan)
    if respect_maintenance_window:
        check = maintenance_window_open(_maintenance_configuration(client, cluster, mode))
        plan.window, plan.window_open = check.description, check.open
    if plan.steps:
        plan.blocking_pdbs = _blocking_budgets(cluster, plan)
    return plan


def _check_states(mc, agent_pools: list, selected: list[str], plan: UpgradePlan) -> None:
    """Refuse a cluster or selected pool in a failed state; note the operations a run will wait for, and
    the pools an aborted operation left Canceled (this run starts their upgrade again)."""
    problems = []
    if mc.provisioning_state == "Failed":
        problems.append("cluster is in provisioning state Failed; fix it before upgrading")
    for p in agent_pools:
        if p.name in selected and p.provisioning_state == "Failed":
            problems.append(f"pool {p.name} is in provisioning state Failed")
    states = [("the cluster", mc.provisioning_state)] + [
        (f"pool {p.name}", p.provisioning_state) for p in agent_pools
    ]
    for what, state in states:
        if state in IN_PROGRESS_STATES:
            plan.notes.append(f"an operation is in progress on {what} ({state}); it will be waited for")
        elif state == "Canceled":
            plan.notes.append(f"{what} was left Canceled by an aborted operation")
    if problems:
        raise UpgradeError("; ".join(problems))


def _plan_node_images(
    client, cluster: AksCluster, agent_pools: list, selected: list[str], plan: UpgradePlan
) -> None:
    """One node-image step per selected pool whose image is not the latest of its own image family."""
    for name in selected:
        pool = next(p for p in agent_pools if p.name == name)
        profile = client.agent_pools.get_upgrade_profile(cluster.resource_group, cluster.name, name)
        latest = profile.latest_node_image_version
        if latest and latest == pool.node_image_version:
            plan.notes.append(
                f"pool {name}: node image {pool.node_image_version} is already the latest; nothing to do"
            )
            continue
        plan.steps.append(
            UpgradeStep(
                kind=StepKind.node_image,
                pool=name,
                from_version=pool.node_image_version or "?",
                to_version=latest or "latest",
            )
        )


def _plan_versions(
    client,
    mc,
    agent_pools: list,
    selected: list[str],
    target: str,
    control_plane_only: bool,
    plan: UpgradePlan,
) -> None:
    """The control plane and the selected pools one minor at a time up to ``target``; no pool left
    behind by more than AKS's version skew."""
    current = mc.current_kubernetes_version or mc.kubernetes_version
    versions = client.managed_clusters.list_kubernetes_versions(mc.location)
    available = [pv for v in versions.values_property or [] for pv in (v.patch_versions or {})]
    final = resolve_target(current, available, target)
    pool_versions = {p.name: p.current_orchestrator_version or p.orchestrator_version for p in agent_pools}
    if final is None:
        plan.notes.append(
            f"the control plane already runs {current}: no newer version matches target {target!r}; nothing to do"
        )
        return
    cp = current
    for hop in upgrade_path(current, final, available):
        if control_plane_only:
            for name in selected:
                if problem := skew_problem(hop, pool_versions[name]):
                    raise UpgradeError(f"pool {name}: {problem}")
        plan.steps.append(UpgradeStep(kind=StepKind.control_plane, from_version=cp, to_version=hop))
        if not control_plane_only:
            for name in selected:
                plan.steps.append(
                    UpgradeStep(
                        kind=StepKind.pool_version,
                        pool=name,
                        from_version=pool_versions[name],
                        to_version=hop,
                    )
                )
                pool_versions[name] = hop
        cp = hop
    for p in agent_pools:
        if p.name in selected or not plan.steps:
            continue
        if problem := skew_problem(plan.steps[-1].to_version, pool_versions[p.name]):
            raise UpgradeError(f"pool {p.name} is not part of this upgrade but {problem}")


def _maintenance_configuration(client, cluster: AksCluster, mode: UpgradeMode):
    """The planned-maintenance configuration that governs ``mode`` (falling back to ``default``); None
    when the cluster has neither."""
    name = (
        "aksManagedNodeOSUpgradeSchedule"
        if mode == UpgradeMode.node_image
        else "aksManagedAutoUpgradeSchedule"
    )
    for config in (name, "default"):
        try:
            return client.maintenance_configurations.get(cluster.resource_group, cluster.name, config)
        except ResourceNotFoundError:
            continue
    return None


def _blocking_budgets(cluster: AksCluster, plan: UpgradePlan) -> list:
    """The PodDisruptionBudgets that would block draining the nodes of the pools the plan touches."""
    kube = kube_for(ClusterConnection(aks=cluster))
    pods = kube.call(kube.core.list_pod_for_all_namespaces).items
    pools_touched = {s.pool for s in plan.steps if s.pool}
    nodes = {n.metadata.name: (n.metadata.labels or {}).get(POOL_LABEL) for n in list_nodes(kube, "")}
    on_pools = [p for p in pods if p.spec and nodes.get(p.spec.node_name or "") in pools_touched]
    return blocking_budgets(kube, on_pools)


def _busy_state(client, cluster: AksCluster):
    """The state of an operation in progress on the cluster or any pool (AKS answers 409 to a new operation
    while one runs anywhere on the cluster), else the cluster's state."""

    def get() -> str:
        state = client.managed_clusters.get(cluster.resource_group, cluster.name).provisioning_state
        if state in IN_PROGRESS_STATES:
            return state
        pools = client.agent_pools.list(cluster.resource_group, cluster.name)
        return next(
            (p.provisioning_state for p in pools if p.provisioning_state in IN_PROGRESS_STATES), state
        )

    return get


def step_run_name(step: UpgradeStep) -> str:
    """The task run name of a step's operation, e.g. "node-image nodepool1" or "control-plane 1.31.4"."""
    if step.kind == StepKind.control_plane:
        return f"control-plane {step.to_version}"
    if step.kind == StepKind.pool_version:
        return f"pool-version {step.pool} {step.to_version}"
    return f"node-image {step.pool}"


def step_state(result: OperationResult) -> State:
    """The task run state that says how the operation ended; the result is the state's data."""
    if result.status == OperationStatus.failed:
        return Failed(message=result.message, data=result)
    if result.status == OperationStatus.succeeded:
        message = f"{result.step.describe()}: upgraded in {result.seconds:.0f}s"
    else:
        message = f"{result.step.describe()}: {result.message}"
    if result.waited_for_other_operation:
        message += " (after waiting for another operation)"
    return Completed(name=STATE_NAMES[result.status], message=message, data=result)


@maintenance_task(name="aks-operation", retries=0)
def execute_step(
    cluster: AksCluster, step: UpgradeStep, poll_interval: float, timeout: float, run_id: str
) -> State:
    """One AKS operation, waited for; a crashed run's operation in progress is waited for first. Never
    retried: an operation is started once. Its record in the cluster (``aksmaint.aks.cancellation``)
    lets a cancelled run abort it."""
    logger = get_run_logger()
    client = management_client(cluster, polling_interval=poll_interval)
    record = UpgradeRecord(kube_for(ClusterConnection(aks=cluster)))
    s = step
    get_state = _busy_state(client, cluster)
    waited = get_state() in IN_PROGRESS_STATES
    if waited:
        logger.info("%s: waiting for the operation in progress to finish first", s.describe())
    wait_for_idle(get_state, timeout, poll_interval)
    progress = best_effort(
        "the operation's progress artifact", create_progress_artifact, progress=0.0, description=s.describe()
    )
    last = {"state": ""}

    def report(state: str) -> None:
        if state != last["state"]:
            logger.info("%s: %s", s.describe(), state)
            last["state"] = state

    begin = partial(begin_recorded, client, cluster, s, record, run_id)
    result: OperationResult = run_operation(s, begin, get_state, timeout, poll_interval, report)
    result.waited_for_other_operation |= waited
    result.seconds = round(result.seconds, 1)
    if result.status != OperationStatus.already_current:
        try:
            record.write(run_id, s, RecordPhase.finished)
        except Exception as exc:  # the record only matters while the operation runs
            logger.warning("Could not mark the upgrade record finished (%s); the upgrade goes on", exc)
    if progress is not None:
        best_effort("the operation's progress", update_progress_artifact, progress, 100.0)
    best_effort(
        f"the aks.upgrade.{result.status} event",
        emit_event,
        event=f"aks.upgrade.{result.status}",
        resource={"prefect.resource.id": f"aks.cluster.{cluster.name}"},
        payload={"step": s.describe(), "message": result.message},
    )
    (logger.error if result.status == OperationStatus.failed else logger.info)(
        "%s: %s %s", s.describe(), result.status, result.message
    )
    return step_state(result)


@maintenance_task(name="check-nodes")
def check_nodes(cluster: ClusterConnection, step: UpgradeStep) -> State:
    """The nodes of the step's pool after its operation: which run which image, and any not done."""
    nodes = [node_facts(n) for n in list_nodes(kube_for(cluster), "")]
    check = check_pool_nodes(nodes, step)
    get_run_logger().info("pool %s: %s", check.pool, check.describe())
    if check.problems:
        return Failed(message=f"{check.describe()}. {check.describe_problems()}", data=check.problems)
    return Completed(name="Verified", message=check.describe(), data=[])


@maintenance_task(name="verify-nodes")
def verify_nodes(cluster: ClusterConnection, mode: UpgradeMode, plan: UpgradePlan) -> list[str]:
    """Every node of every pool the plan touched, against the last step of its pool."""
    nodes = [node_facts(n) for n in list_nodes(kube_for(cluster), "")]
    final_steps = {step.pool: step for step in plan.steps if step.pool is not None}
    problems = [p for step in final_steps.values() for p in check_pool_nodes(nodes, step).problems]
    return sorted(set(problems))


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


def abort_after_cancel(flow, flow_run, state) -> None:
    """on_cancellation hook (possibly in another process, so everything is rebuilt from the run's
    parameters): abort the AKS operation this run started, wait until AKS reports it stopped, and log the
    state the cluster and each pool were left in."""
    logger = flow_run_logger(flow_run, flow)
    params = flow_run.parameters
    cluster = AksCluster.model_validate(params["cluster"])
    poll = min(float(params.get("poll_interval_seconds", 15)), 15.0)
    try:
        aborted = abort_own_operation(cluster, str(flow_run.id), poll)
    except Exception as exc:
        logger.error(
            "Cancelled, but the AKS operation of this run could not be checked or aborted (%s); "
            "see az aks operation-abort and az aks nodepool operation-abort",
            describe_azure_error(exc),
        )
        raise
    for line in aborted.lines():
        logger.warning("Cancelled: %s", line)


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
    lines = [f"# Upgrade plan for {cluster.name} ({mode.value}, target {target})", ""]
    lines += [f"{i}. {s.describe()}" for i, s in enumerate(plan.steps, 1)] or ["Nothing to do."]
    lines += [""] + [f"- {n}" for n in plan.notes]
    if plan.blocking_pdbs:
        lines += ["", "PodDisruptionBudgets that would block a drain now: " + ", ".join(plan.blocking_pdbs)]
    if plan.window:
        lines += ["", f"Maintenance window: {plan.window}"]
    create_markdown_artifact(
        key="upgrade-plan", markdown="\n".join(lines), description=f"Plan for {cluster.name}"
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
    from aksmaint_cli.commands import upgrade_main

    sys.exit(upgrade_main())
