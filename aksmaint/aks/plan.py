"""The cluster upgrade's plan: everything checked before the first mutating call, and the steps.

The cluster and the selected pools must not be in a failed state; the version path goes one minor at a
time and leaves no pool too far behind; the PodDisruptionBudgets that would block a drain now and the
maintenance window are noted. Nothing here changes the cluster.
"""

from __future__ import annotations

from azure.core.exceptions import ResourceNotFoundError

from aksmaint.aks.channel import node_os_upgrade_channel_of
from aksmaint.aks.operations import IN_PROGRESS_STATES, StepKind, UpgradeMode, UpgradeStep
from aksmaint.aks.versions import UpgradeError, UpgradeTarget, resolve_target, skew_problem, upgrade_path
from aksmaint.aks.windows import maintenance_window_open
from aksmaint.azure import AksCluster, management_client
from aksmaint.errors import ClusterAccessError
from aksmaint.kube import kube_for
from aksmaint.maintenance.drain import blocking_budgets
from aksmaint.maintenance.update_check import POOL_LABEL, list_nodes
from aksmaint.params import ClusterConnection
from aksmaint.report import UpgradePlan


def plan_upgrade(
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
    selected = pool_names(agent_pools, pools)
    plan = UpgradePlan(node_os_upgrade_channel=node_os_upgrade_channel_of(mc))
    check_states(mc, agent_pools, selected, plan)
    if mode == UpgradeMode.node_image:
        plan_node_images(client, cluster, agent_pools, selected, plan)
    else:
        plan_versions(client, mc, agent_pools, selected, target, control_plane_only, plan)
    if respect_maintenance_window:
        check = maintenance_window_open(maintenance_configuration(client, cluster, mode))
        plan.window, plan.window_open = check.description, check.open
    if plan.steps:
        plan.blocking_pdbs = blocking_pdbs(cluster, plan)
    return plan


def pool_names(pools: list, wanted: list[str]) -> list[str]:
    names = [p.name for p in pools]
    unknown = sorted(set(wanted) - set(names))
    if unknown:
        raise UpgradeError(f"unknown pool(s) {', '.join(unknown)}; the cluster has {', '.join(names)}")
    return [n for n in names if not wanted or n in wanted]


def check_states(mc, agent_pools: list, selected: list[str], plan: UpgradePlan) -> None:
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


def plan_node_images(
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
                to_version=latest or UpgradeTarget.latest.value,
            )
        )


def plan_versions(
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


def maintenance_configuration(client, cluster: AksCluster, mode: UpgradeMode):
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


def blocking_pdbs(cluster: AksCluster, plan: UpgradePlan) -> list:
    """The PodDisruptionBudgets that would block draining the nodes of the pools the plan touches."""
    kube = kube_for(ClusterConnection(aks=cluster))
    pods = kube.call(kube.core.list_pod_for_all_namespaces).items
    pools_touched = {s.pool for s in plan.steps if s.pool}
    nodes = {n.metadata.name: (n.metadata.labels or {}).get(POOL_LABEL) for n in list_nodes(kube, "")}
    on_pools = [p for p in pods if p.spec and nodes.get(p.spec.node_name or "") in pools_touched]
    return blocking_budgets(kube, on_pools)


def plan_markdown(cluster: str, mode: UpgradeMode, target: str, plan: UpgradePlan) -> str:
    """The ``upgrade-plan`` artifact: the steps in order, the notes, the blocking budgets, the window."""
    lines = [f"# Upgrade plan for {cluster} ({mode.value}, target {target})", ""]
    lines += [f"{i}. {s.describe()}" for i, s in enumerate(plan.steps, 1)] or ["Nothing to do."]
    lines += [""] + [f"- {n}" for n in plan.notes]
    if plan.blocking_pdbs:
        lines += ["", "PodDisruptionBudgets that would block a drain now: " + ", ".join(plan.blocking_pdbs)]
    if plan.window:
        lines += ["", f"Maintenance window: {plan.window}"]
    return "\n".join(lines)
