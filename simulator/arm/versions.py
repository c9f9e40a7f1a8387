"""Kubernetes versions as AKS offers and checks them: region versions, upgrade paths and skew rules.

The control plane moves one minor version at a time and never down; a node pool may not be newer than
the control plane nor more than three minor versions behind it. Messages follow AKS's own wording.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from simulator.arm.errors import ArmError, not_allowed

MAX_POOL_MINOR_SKEW = 3
VERSION_RULES = "https://aka.ms/aks/UpgradeVersionRules"

Version = tuple[int, int, int]


def parse(text: str) -> Version:
    major, minor, patch = (int(p) for p in text.split("."))
    return major, minor, patch


def minor_text(version: str) -> str:
    major, minor, _ = parse(version)
    return f"{major}.{minor}"


class Region:
    """The Kubernetes versions a region offers."""

    def __init__(self, versions: Iterable[str]):
        self.versions = sorted(set(versions), key=parse)

    def resolve(self, requested: str) -> str:
        """A full version; ``1.31`` means the newest 1.31 patch the region offers (as AKS reads it)."""
        if re.fullmatch(r"\d+\.\d+", requested):
            same_minor = [v for v in self.versions if minor_text(v) == requested]
            return same_minor[-1] if same_minor else requested
        return requested

    def offers(self, version: str) -> bool:
        return version in self.versions

    def minors(self) -> list[str]:
        return sorted(
            {minor_text(v) for v in self.versions}, key=lambda m: tuple(int(p) for p in m.split("."))
        )

    def control_plane_upgrades(self, current: str) -> list[str]:
        """Newer versions of the same or the next minor: where the control plane may go from ``current``."""
        major, minor, _ = parse(current)
        return [
            v
            for v in self.versions
            if parse(v) > parse(current) and parse(v)[0] == major and parse(v)[1] <= minor + 1
        ]

    def pool_upgrades(self, pool_version: str, control_plane: str) -> list[str]:
        """Newer versions a pool may take: up to the control plane's version."""
        return [v for v in self.versions if parse(pool_version) < parse(v) <= parse(control_plane)]

    def pool_versions(self, control_plane: str) -> list[str]:
        """Versions a pool may run next to ``control_plane``."""
        major, minor, _ = parse(control_plane)
        return [
            v
            for v in self.versions
            if parse(v) <= parse(control_plane)
            and parse(v)[0] == major
            and minor - parse(v)[1] <= MAX_POOL_MINOR_SKEW
        ]


def _not_supported(version: str) -> ArmError:
    return ArmError(
        400,
        "K8sVersionNotSupported",
        f"Version {version} is not supported in this region. Please use [az aks get-versions] command "
        "to get the supported version list in this region. For more information, please check "
        "https://aka.ms/supported-version-list",
    )


def check_control_plane(region: Region, current: str, target: str) -> None:
    """Raise the error AKS answers a control-plane upgrade from ``current`` to ``target`` with."""
    available = " ".join(region.control_plane_upgrades(current))
    if parse(target) < parse(current):
        raise not_allowed(
            f"Downgrading Kubernetes version {current} to {target} is not allowed. "
            f"Available upgrades: [{available}]. Please see {VERSION_RULES} for version details."
        )
    if not region.offers(target):
        raise _not_supported(target)
    if target not in region.control_plane_upgrades(current):
        raise not_allowed(
            f"Upgrading Kubernetes version {current} to {target} is not allowed. Available upgrades: "
            f"[{available}]. Minor versions cannot be skipped; please see {VERSION_RULES} for "
            "version details."
        )


def check_pool(region: Region, pool: str, current: str, target: str, control_plane: str) -> None:
    """Raise the error AKS answers moving pool ``pool`` from ``current`` to ``target`` with."""
    if parse(target) < parse(current):
        raise not_allowed(
            f"Downgrading agent pool {pool} from Kubernetes version {current} to {target} is not "
            f"allowed. Please see {VERSION_RULES} for version details."
        )
    if not region.offers(target):
        raise _not_supported(target)
    check_skew(pool, target, control_plane)


def check_skew(pool: str, pool_version: str, control_plane: str) -> None:
    """A pool no newer than the control plane and at most three minors behind it."""
    if parse(pool_version) > parse(control_plane):
        raise ArmError(
            400,
            "NodePoolMcVersionIncompatible",
            f"Node pool version {pool_version} and control plane version {control_plane} are "
            f"incompatible. Agent pool {pool} cannot be newer than the control plane. For more "
            f"information, please check {VERSION_RULES}",
        )
    behind = parse(control_plane)[1] - parse(pool_version)[1]
    if parse(pool_version)[0] != parse(control_plane)[0] or behind > MAX_POOL_MINOR_SKEW:
        raise ArmError(
            400,
            "NodePoolMcVersionIncompatible",
            f"Node pool version {pool_version} and control plane version {control_plane} are "
            f"incompatible. Minor version of agent pool {pool} would be {behind} behind the control "
            f"plane; at most {MAX_POOL_MINOR_SKEW} are allowed. For more information, please check "
            f"{VERSION_RULES}",
        )


def kubernetes_versions(region: Region) -> dict:
    """The ``locations/{loc}/kubernetesVersions`` document: minors with their patches and upgrades."""
    minors = region.minors()
    default = minors[-2] if len(minors) > 1 else (minors[-1] if minors else None)
    values = []
    for minor in minors:
        patches = [v for v in region.versions if minor_text(v) == minor]
        values.append(
            {
                "version": minor,
                "capabilities": {"supportPlan": ["KubernetesOfficial"]},
                "isDefault": minor == default,
                "isPreview": False,
                "patchVersions": {v: {"upgrades": region.control_plane_upgrades(v)} for v in patches},
            }
        )
    return {"values": values}
