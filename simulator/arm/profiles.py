"""What ARM answers about versions: the upgrade profiles of the managed cluster and of an agent pool,
and the versions a pool may run, from the region's versions and the control plane's."""

from __future__ import annotations

from collections.abc import Iterable

from simulator.arm.state import ManagedClusterState, PoolState
from simulator.arm.versions import Region


def upgrade_profile(mc: ManagedClusterState, pools: Iterable[PoolState], region: Region) -> dict:
    cp = mc.current_version
    return {
        "id": f"{mc.id}/upgradeprofiles/default",
        "name": "default",
        "type": "Microsoft.ContainerService/managedClusters/upgradeprofiles",
        "properties": {
            "controlPlaneProfile": {
                "kubernetesVersion": cp,
                "osType": "Linux",
                "upgrades": _upgrades(region.control_plane_upgrades(cp)),
            },
            "agentPoolProfiles": [
                {
                    "kubernetesVersion": p.current_version,
                    "name": p.name,
                    "osType": "Linux",
                    "upgrades": _upgrades(region.control_plane_upgrades(p.current_version)),
                }
                for p in pools
            ],
        },
    }


def pool_upgrade_profile(mc: ManagedClusterState, pool: PoolState, region: Region) -> dict:
    return {
        "id": f"{mc.id}/agentPools/{pool.name}/upgradeProfiles/default",
        "name": "default",
        "type": "Microsoft.ContainerService/managedClusters/agentPools/upgradeProfiles",
        "properties": {
            "kubernetesVersion": pool.current_version,
            "osType": "Linux",
            "upgrades": _upgrades(region.pool_upgrades(pool.current_version, mc.current_version)),
            "latestNodeImageVersion": pool.latest_image,
        },
    }


def available_pool_versions(mc: ManagedClusterState, region: Region) -> dict:
    allowed = region.pool_versions(mc.current_version)
    return {
        "id": f"{mc.id}/availableAgentpoolVersions",
        "name": "default",
        "type": "Microsoft.ContainerService/managedClusters/availableAgentpoolVersions",
        "properties": {
            "agentPoolVersions": [
                {"kubernetesVersion": v, "default": v == mc.current_version, "isPreview": False}
                for v in allowed
            ]
        },
    }


def _upgrades(candidates: list[str]) -> list[dict]:
    return [{"kubernetesVersion": v, "isPreview": False} for v in candidates]
