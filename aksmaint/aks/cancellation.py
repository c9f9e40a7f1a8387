"""The cluster-upgrade run's record of the AKS operation it starts, and aborting that operation on cancel.

AKS does not say who started an operation. So the run writes its own record in the cluster, in the
Lease ``kube-system/aksmaint-upgrade``, before each AKS call that can start one: the run id, the step,
and a phase (starting, started, waiting, finished, not-started, aborted). The cancellation hook may run
in another process than the flow, so it reads that record back. It aborts an operation only when the
record names this run as having started it, and AKS reports the target busy with an operation of the
kind the step starts. An operation of another run or of a person is left alone.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

from azure.core.exceptions import HttpResponseError, ResourceExistsError
from azure.mgmt.containerservice import ContainerServiceClient
from kubernetes.client.exceptions import ApiException
from pydantic import BaseModel, ValidationError

from aksmaint.aks.node_check import check_pool_nodes
from aksmaint.aks.operations import (
    IN_PROGRESS_STATES,
    NothingStarted,
    Started,
    StepKind,
    UpgradeStep,
    begin_step,
)
from aksmaint.aks.versions import UpgradeTarget
from aksmaint.azure import AksCluster, describe_azure_error, management_client
from aksmaint.kube import Kube, kube_for, meta
from aksmaint.maintenance.update_check import list_nodes, node_facts
from aksmaint.params import ClusterConnection

RECORD_LEASE = "aksmaint-upgrade"
RECORD_NAMESPACE = "kube-system"
RECORD_ANNOTATION = "aksmaint.io/upgrade-operation"
ABORT_TIMEOUT_SECONDS = 1800.0

# the provisioning state AKS reports while the operation a step starts runs
BUSY_STATE = {
    StepKind.node_image: "UpgradingNodeImageVersion",
    StepKind.pool_version: "Upgrading",
    StepKind.control_plane: "Upgrading",
}


class RecordPhase(StrEnum):
    starting = "starting"  # the call that starts the operation is under way
    started = "started"  # AKS accepted it: the operation is this run's
    waiting = "waiting"  # AKS answered 409: another operation runs; this run waits for it
    not_started = "not-started"  # nothing to do (already done, or AKS answered 304)
    finished = "finished"  # the operation ended (succeeded, failed or canceled)
    aborted = "aborted"  # the run was cancelled and aborted its operation


class OperationRecord(BaseModel):
    run_id: str
    phase: RecordPhase
    step: UpgradeStep
    at: str = ""


class UpgradeRecord:
    """The Lease that carries the run's record; every write carries the resourceVersion it read."""

    def __init__(self, kube: Kube):
        self.kube = kube

    def read(self) -> OperationRecord | None:
        try:
            lease = self.kube.call(
                self.kube.coordination.read_namespaced_lease, RECORD_LEASE, RECORD_NAMESPACE
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        text = (meta(lease).annotations or {}).get(RECORD_ANNOTATION)
        try:
            return OperationRecord.model_validate_json(text) if text else None
        except ValidationError:
            return None  # not a record this code wrote: nothing of ours to abort

    def write(self, run_id: str, step: UpgradeStep, phase: RecordPhase) -> None:
        record = OperationRecord(
            run_id=run_id, phase=phase, step=step, at=datetime.now(UTC).isoformat(timespec="seconds")
        )
        holder = run_id if phase in (RecordPhase.starting, RecordPhase.started) else None
        body: dict = {
            "metadata": {
                "name": RECORD_LEASE,
                "namespace": RECORD_NAMESPACE,
                "annotations": {RECORD_ANNOTATION: record.model_dump_json()},
            },
            "spec": {"holderIdentity": holder},
        }
        coordination = self.kube.coordination
        for _ in range(5):
            try:
                lease = self.kube.call(coordination.read_namespaced_lease, RECORD_LEASE, RECORD_NAMESPACE)
            except ApiException as exc:
                if exc.status != 404:
                    raise
                lease = None
            try:
                if lease is None:
                    self.kube.call(coordination.create_namespaced_lease, RECORD_NAMESPACE, body)
                else:
                    body["metadata"]["resourceVersion"] = meta(lease).resource_version
                    self.kube.call(
                        coordination.replace_namespaced_lease, RECORD_LEASE, RECORD_NAMESPACE, body
                    )
                return
            except ApiException as exc:
                if exc.status != 409:  # 409: written in between (or created first): read again
                    raise
        raise RuntimeError(f"could not write the Lease {RECORD_NAMESPACE}/{RECORD_LEASE}: it kept changing")


def begin_recorded(
    client: ContainerServiceClient, cluster: AksCluster, step: UpgradeStep, record: UpgradeRecord, run_id: str
) -> Started:
    """``begin_step`` with the run's record written first: "starting" before the call, then what AKS
    answered. Another answer (an error) leaves "starting": the operation may have started."""
    record.write(run_id, step, RecordPhase.starting)
    try:
        poller = begin_step(client, cluster, step)
    except ResourceExistsError:
        record.write(run_id, step, RecordPhase.waiting)
        raise
    except HttpResponseError as exc:
        if exc.status_code == 304:
            record.write(run_id, step, RecordPhase.not_started)
        raise
    done = isinstance(poller, NothingStarted)
    record.write(run_id, step, RecordPhase.not_started if done else RecordPhase.started)
    return poller


def why_not_ours(record: OperationRecord | None, run_id: str, state: str) -> str | None:
    """None when the operation in progress on the record's target is this run's own, else why it is not
    aborted. ``state`` is the target's provisioning state now."""
    if record is None or record.run_id != run_id:
        holder = f"run {record.run_id}" if record else "no run"
        return f"the upgrade record names {holder}, not this run: this run started no operation to abort"
    target = describe_target(record.step)
    if record.phase not in (RecordPhase.starting, RecordPhase.started):
        return (
            f"this run's last operation ({record.step.describe()}) is {record.phase.value}: nothing to abort"
        )
    if state == "Canceling":
        return None  # aborted already (by someone): waited for all the same
    if state != BUSY_STATE[record.step.kind]:
        return f"{target} is {state}, not {BUSY_STATE[record.step.kind]}: no operation of this run runs there"
    return None


def describe_target(step: UpgradeStep) -> str:
    return f"pool {step.pool}" if step.pool else "the cluster"


@dataclass
class AbortReport:
    aborted: str = ""  # the step whose operation was aborted
    notes: list[str] = field(default_factory=list)  # how it went, or why nothing was aborted
    left: list[str] = field(default_factory=list)  # the state the cluster and each pool were left in

    def lines(self) -> list[str]:
        head = f"aborted the AKS operation of {self.aborted}" if self.aborted else "no AKS operation aborted"
        return [head, *self.notes, *self.left]


def abort_own_operation(
    cluster: AksCluster, run_id: str, poll: float, timeout: float = ABORT_TIMEOUT_SECONDS
) -> AbortReport:
    """Abort the AKS operation the run ``run_id`` started, if one still runs; wait until AKS reports it
    stopped; report the state of the cluster and of each pool."""
    client = management_client(cluster, polling_interval=poll)
    kube = kube_for(ClusterConnection(aks=cluster))
    store = UpgradeRecord(kube)
    record = store.read()
    report = AbortReport()
    state = _state_of(client, cluster, record.step.pool if record else None)
    reason = why_not_ours(record, run_id, state)
    if reason is not None or record is None:
        report.notes.append(reason or "")
    else:
        report.aborted = record.step.describe()
        if state != "Canceling":
            report.notes.append(_abort(client, cluster, record.step))
        report.notes.append(_wait_stopped(client, cluster, record.step, poll, timeout))
        store.write(run_id, record.step, RecordPhase.aborted)
    report.left = left_states(client, cluster, kube)
    return report


def _state_of(client: ContainerServiceClient, cluster: AksCluster, pool: str | None) -> str:
    if pool is None:
        return client.managed_clusters.get(cluster.resource_group, cluster.name).provisioning_state or ""
    return client.agent_pools.get(cluster.resource_group, cluster.name, pool).provisioning_state or ""


def _abort(client: ContainerServiceClient, cluster: AksCluster, step: UpgradeStep) -> str:
    """Ask AKS to abort the latest operation of the step's target and wait for the abort itself."""
    rg, name = cluster.resource_group, cluster.name
    try:
        if step.pool is None:
            client.managed_clusters.begin_abort_latest_operation(rg, name).result()
        else:
            client.agent_pools.begin_abort_latest_operation(rg, name, step.pool).result()
    except ResourceExistsError as exc:  # nothing running any more: it ended on its own meanwhile
        return f"AKS had no operation left to abort ({describe_azure_error(exc)})"
    return f"AKS accepted the abort of {describe_target(step)}"


def _wait_stopped(
    client: ContainerServiceClient, cluster: AksCluster, step: UpgradeStep, poll: float, timeout: float
) -> str:
    deadline = time.monotonic() + timeout
    state = _state_of(client, cluster, step.pool)
    while state in IN_PROGRESS_STATES:
        if time.monotonic() > deadline:
            return f"{describe_target(step)} was still {state} after {timeout:.0f}s"
        time.sleep(poll)
        state = _state_of(client, cluster, step.pool)
    return f"{describe_target(step)} stopped: {state}"


def left_states(client: ContainerServiceClient, cluster: AksCluster, kube: Kube) -> list[str]:
    """One line for the cluster and one per pool: provisioning state, versions, and which nodes run what."""
    rg, name = cluster.resource_group, cluster.name
    mc = client.managed_clusters.get(rg, name)
    lines = [
        f"cluster {name}: {mc.provisioning_state}, Kubernetes "
        f"{mc.current_kubernetes_version or mc.kubernetes_version}"
    ]
    nodes = [node_facts(n) for n in list_nodes(kube, "")]
    for pool in client.agent_pools.list(rg, name):
        check = check_pool_nodes(
            nodes,
            UpgradeStep(
                kind=StepKind.node_image,
                pool=pool.name,
                from_version="",
                to_version=UpgradeTarget.latest.value,
            ),
        )
        lines.append(
            f"pool {pool.name}: {pool.provisioning_state}, Kubernetes "
            f"{pool.current_orchestrator_version or pool.orchestrator_version}, node image "
            f"{pool.node_image_version}; {check.describe()}"
        )
    return lines
