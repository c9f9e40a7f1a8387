"""The node-maintenance flow's Prefect tasks: a thin layer over the runbook steps in ``tasks/``.

Each task does one step of the runbook (reach the cluster, read AKS's node OS upgrade channel, plan, clean
up what a killed run left) and records it in Prefect; the work itself is in the step modules.
"""

from __future__ import annotations

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact

from aksmaint.azure import management_client
from aksmaint.hostexec import HostPodSettings, delete_stale_host_pods
from aksmaint.kube import kube_for
from aksmaint.nodestate import has_pending_taint
from aksmaint.params import ClusterConnection, MaintenanceParams, RolloutOrder
from aksmaint.report import NodeFacts, PlanAction, PlanEntry
from aksmaint.tasking import best_effort, maintenance_task
from tasks import cordon as cordon_ops
from tasks.aks import OsUpgradeSettings, read_os_upgrade_settings
from tasks.plan import WINDOWS_REASON, make_plan, plan_markdown, pods_to_move
from tasks.update_check import list_nodes

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
    facts: list[NodeFacts], params: MaintenanceParams, hold: str | None = None
) -> list[PlanEntry]:
    kube = kube_for(params.cluster)
    needing = {f.name for f in facts if f.reboot_required and not f.resume and not f.scan_error}
    by_pods = params.order == RolloutOrder.fewest_pods_first and needing and not hold
    plan = make_plan(facts, pods_to_move(kube, needing, params.drain) if by_pods else None, hold)
    best_effort(
        "the maintenance-plan artifact",
        create_markdown_artifact,
        key="maintenance-plan",
        markdown=plan_markdown(kube.cluster_name, params, plan, facts, hold),
        description=f"Plan for {kube.cluster_name}",
    )
    logger = get_run_logger()
    logger.info(
        "Plan: %d to reboot, %d to resume, %d held, %d skipped",
        *(
            sum(e.action == a for e in plan)
            for a in (PlanAction.reboot, PlanAction.resume, PlanAction.hold, PlanAction.skip)
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
        cordon_ops.set_pending_taint(kube, name, False)
    return tainted
