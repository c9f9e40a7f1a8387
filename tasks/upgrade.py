"""The cluster upgrade's Prefect tasks: the preflight, one task run per AKS operation (in the state of
how it ended), the nodes of a pool after its operation, and the abort of the run's operation on cancel.
The rules and operations themselves are in ``aksmaint.aks``."""

from __future__ import annotations

from functools import partial

from prefect import get_run_logger
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.client.schemas.objects import State
from prefect.events import emit_event
from prefect.logging.loggers import flow_run_logger
from prefect.states import Completed, Failed

from aksmaint.aks.cancellation import RecordPhase, UpgradeRecord, abort_own_operation, begin_recorded
from aksmaint.aks.node_check import check_pool_nodes
from aksmaint.aks.operations import (
    IN_PROGRESS_STATES,
    OperationResult,
    OperationStatus,
    StepKind,
    UpgradeMode,
    UpgradeStep,
    busy_state,
    run_operation,
    wait_for_idle,
)
from aksmaint.aks.plan import plan_upgrade
from aksmaint.azure import AksCluster, describe_azure_error, management_client
from aksmaint.kube import kube_for
from aksmaint.maintenance.update_check import list_nodes, node_facts
from aksmaint.params import ClusterConnection
from aksmaint.report import UpgradePlan
from tasks.tasking import best_effort, maintenance_task

# the name of an operation's task run state, by how the operation ended (a failed one is Failed)
STATE_NAMES = {OperationStatus.succeeded: "Upgraded", OperationStatus.already_current: "AlreadyCurrent"}


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
    return plan_upgrade(cluster, mode, target, pools, control_plane_only, respect_maintenance_window)


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
    get_state = busy_state(client, cluster)
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
