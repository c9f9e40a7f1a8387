"""The Prefect side of a run inside the cluster it maintains (``aksmaint.maintenance.self_host``).

The run's own node is handed over to a follow-up run of the same deployment, with the same parameters.
The deployment's concurrency limit (``prefect.yaml``: 1, ENQUEUE) holds the follow-up until this run has
ended; the worker then starts its Job, whose pod cannot land on the cordoned node.
"""

from __future__ import annotations

import uuid
from typing import cast

from prefect import get_run_logger, task
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from prefect.runtime import deployment, flow_run

from aksmaint.kube import kube_for
from aksmaint.maintenance.phases.hand_over import HandOver
from aksmaint.maintenance.self_host import OwnPod, own_pod
from aksmaint.params import ClusterConnection
from tasks.tasking import maintenance_task

FOLLOW_UP_TAG = "aksmaint:follow-up"


@maintenance_task(name="find-own-node")
def find_own_node(cluster: ClusterConnection) -> OwnPod:
    """In the cluster it maintains: the pod this run is and its node, which the run must not drain."""
    pod = own_pod(kube_for(cluster))
    starts = "a follow-up run reboots it" if deployment.id else "it is held (not a deployment run)"
    get_run_logger().info("This run is %s: that node goes last, and %s", pod.describe(), starts)
    return pod


def follow_up_starter() -> HandOver | None:
    """What starts the follow-up run, or None when this run is not a deployment's (nothing to start)."""
    deployment_id = deployment.id
    if not deployment_id:
        return None
    parameters = dict(flow_run.parameters)
    this_run = str(flow_run.id or uuid.uuid4())

    def start(node: str) -> str:
        run = start_follow_up(deployment_id, parameters, f"{this_run}/hand-over/{node}")
        return f"{run.name} ({run.id})"

    return start


@task(name="start-follow-up", retries=2, retry_delay_seconds=2, persist_result=False)
def start_follow_up(deployment_id: str, parameters: dict, key: str) -> FlowRun:
    """One follow-up per node and run, however often this is retried (the idempotency key)."""
    run = run_deployment(
        name=uuid.UUID(deployment_id),
        parameters=parameters,
        timeout=0,
        as_subflow=False,
        idempotency_key=key,
        tags=[FOLLOW_UP_TAG],
    )
    return cast(FlowRun, run)  # called from a thread with no event loop: run_deployment runs synchronously
