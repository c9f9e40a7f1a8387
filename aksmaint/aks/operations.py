"""The long-running AKS operations of an upgrade: one step each, started once and waited for.

A step whose work is done already starts nothing: ``begin_step`` and AKS's 304 both say so with one
``NothingStarted``, which carries the reason.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceNotModifiedError,
)
from azure.mgmt.containerservice import ContainerServiceClient
from pydantic import BaseModel, ConfigDict

from aksmaint.aks.versions import UpgradeError
from aksmaint.azure import AksCluster, describe_azure_error

IN_PROGRESS_STATES = {
    "Upgrading",
    "UpgradingNodeImageVersion",
    "Updating",
    "Creating",
    "Scaling",
    "Deleting",
    "Starting",
    "Stopping",
    "Canceling",
}


# what an upgrade changes: the pools' node images, or the Kubernetes version (no docstring: it would
# become the description of the cluster-upgrade flow's mode in the UI form)
class UpgradeMode(StrEnum):
    node_image = "node-image"
    kubernetes_version = "kubernetes-version"


class StepKind(StrEnum):
    control_plane = "control-plane"  # the managed cluster's kubernetesVersion
    pool_version = "pool-version"  # an agent pool's orchestratorVersion
    node_image = "node-image"  # an agent pool's node image, the latest of its image family


class UpgradeStep(BaseModel):
    """One AKS operation of an upgrade plan."""

    model_config = ConfigDict(frozen=True)

    kind: StepKind
    pool: str | None = None  # None for the control plane
    from_version: str
    to_version: str

    def describe(self) -> str:
        what = "control plane" if self.kind == StepKind.control_plane else f"pool {self.pool}"
        noun = "node image" if self.kind == StepKind.node_image else "Kubernetes"
        return f"{what}: {noun} {self.from_version} -> {self.to_version}"


class OperationStatus(StrEnum):
    succeeded = "succeeded"
    already_current = "already-current"  # nothing started: AKS (or an earlier run) had done it
    failed = "failed"


class OperationResult(BaseModel):
    """How one step's AKS operation ended."""

    step: UpgradeStep
    status: OperationStatus
    message: str = ""
    seconds: float = 0.0
    waited_for_other_operation: bool = False


class Poller(Protocol):
    """What run_operation uses of the LROPoller an AKS begin_* call returns."""

    def done(self) -> bool: ...

    def status(self) -> str: ...

    def wait(self, timeout: float | None = None) -> None: ...

    def result(self) -> object: ...


def busy_state(client: ContainerServiceClient, cluster: AksCluster) -> Callable[[], str]:
    """A reader of the state of an operation in progress on the cluster or any pool (AKS answers 409 to a
    new operation while one runs anywhere on the cluster), else of the cluster's state."""

    def get() -> str:
        state = client.managed_clusters.get(cluster.resource_group, cluster.name).provisioning_state
        if state in IN_PROGRESS_STATES:
            return state
        pools = client.agent_pools.list(cluster.resource_group, cluster.name)
        return next(
            (p.provisioning_state for p in pools if p.provisioning_state in IN_PROGRESS_STATES), state
        )

    return get


def wait_for_idle(get_state: Callable[[], str], timeout: float, poll: float) -> str:
    """Wait while an operation (ours from a crashed run, or someone else's) is in progress."""
    deadline = time.monotonic() + timeout
    state = get_state()
    while state in IN_PROGRESS_STATES:
        if time.monotonic() > deadline:
            raise UpgradeError(f"an operation was still in progress ({state}) after {timeout:.0f}s")
        time.sleep(poll)
        state = get_state()
    return state


@dataclass(frozen=True)
class NothingStarted:
    """What a step's start gives when its work is done already: no operation, and why."""

    reason: str


# a crashed run's operation (or someone's) did the step's work before this run came to start it
ALREADY_DONE = NothingStarted("already done (by an earlier operation); nothing started")
# AKS answered 304 Not Modified to the start of a node image upgrade
AKS_NOT_MODIFIED = NothingStarted("AKS reports the node image is already the latest")

Started = Poller | NothingStarted


def begin_step(client: ContainerServiceClient, cluster: AksCluster, step: UpgradeStep) -> Started:
    """Start the step's AKS operation through the SDK ``client``, unless what it would do is done."""
    rg, name = cluster.resource_group, cluster.name
    if step.kind == StepKind.control_plane:
        mc = client.managed_clusters.get(rg, name)
        if (mc.current_kubernetes_version or mc.kubernetes_version) == step.to_version:
            return ALREADY_DONE
        mc.kubernetes_version = step.to_version
        return client.managed_clusters.begin_create_or_update(rg, name, mc)
    assert step.pool is not None, "a node-image or pool step names its pool"
    pool = client.agent_pools.get(rg, name, step.pool)
    if step.kind == StepKind.node_image:
        latest = client.agent_pools.get_upgrade_profile(rg, name, step.pool).latest_node_image_version
        if latest and pool.node_image_version == latest:
            return ALREADY_DONE
        return client.agent_pools.begin_upgrade_node_image_version(rg, name, step.pool)
    if (pool.current_orchestrator_version or pool.orchestrator_version) == step.to_version:
        return ALREADY_DONE
    pool.orchestrator_version = step.to_version
    return client.agent_pools.begin_create_or_update(rg, name, step.pool, pool)


def run_operation(
    step: UpgradeStep,
    begin: Callable[[], Started],
    get_state: Callable[[], str],
    timeout: float,
    poll: float,
    on_progress: Callable[[str], None] = lambda s: None,
) -> OperationResult:
    """Start one AKS operation and wait for it; 409 "in progress" waits and retries, 304 means current."""
    started = time.monotonic()
    poller, waited = _start(step, begin, get_state, timeout, poll, on_progress)
    if isinstance(poller, NothingStarted):
        return OperationResult(
            step=step,
            status=OperationStatus.already_current,
            message=poller.reason,
            seconds=time.monotonic() - started,
            waited_for_other_operation=waited,
        )
    error = _wait(step, poller, get_state, timeout, poll, on_progress)
    return OperationResult(
        step=step,
        status=OperationStatus.failed if error else OperationStatus.succeeded,
        message=error or "",
        seconds=time.monotonic() - started,
        waited_for_other_operation=waited,
    )


def _start(
    step: UpgradeStep,
    begin: Callable[[], Started],
    get_state: Callable[[], str],
    timeout: float,
    poll: float,
    on_progress: Callable[[str], None],
) -> tuple[Started, bool]:
    """The operation's poller (or what says nothing was started: done already, or AKS's 304) and
    whether another operation in progress had to be waited out first (409)."""
    started = time.monotonic()
    waited = False
    while True:
        try:
            return begin(), waited
        except ResourceNotModifiedError:
            return AKS_NOT_MODIFIED, waited
        except ResourceExistsError as exc:
            waited = True
            if time.monotonic() - started > timeout:
                raise UpgradeError(
                    f"{step.describe()}: AKS still reports another operation in progress after "
                    f"{timeout:.0f}s ({describe_azure_error(exc)})"
                ) from exc
            on_progress(f"another operation is in progress ({describe_azure_error(exc)}); waiting")
            time.sleep(poll)  # the state can read idle a moment before AKS accepts a new operation
            wait_for_idle(get_state, timeout, poll)
        except HttpResponseError as exc:
            if exc.status_code and 400 <= exc.status_code < 500:
                raise UpgradeError(f"AKS refused {step.describe()}: {describe_azure_error(exc)}") from exc
            raise


def _wait(
    step: UpgradeStep,
    poller: Poller,
    get_state: Callable[[], str],
    timeout: float,
    poll: float,
    on_progress: Callable[[str], None],
) -> str | None:
    """Wait for the operation to end: None when it succeeded, else AKS's error code and message."""
    deadline = time.monotonic() + timeout
    while not poller.done():
        if time.monotonic() > deadline:
            raise UpgradeError(
                f"{step.describe()} did not finish within {timeout:.0f}s (status {poller.status()})"
            )
        on_progress(get_state())
        try:
            poller.wait(poll)
        except HttpResponseError:
            break  # the operation ended Failed or Canceled; result() raises the same error again
    try:
        poller.result()
    except HttpResponseError as exc:
        error = exc.error if exc.error is not None and exc.error.code else None
        return f"{error.code}: {error.message}" if error else describe_azure_error(exc)
    return None
