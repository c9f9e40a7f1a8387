"""The version rules of an AKS upgrade: which version a target means, the path to it, and the skew.

The rules mirror AKS's own: no "upgrade" to the version already running, no skipped minor version, node
pools never newer than the control plane nor more than three minors behind it.
"""

from __future__ import annotations

from enum import StrEnum

from aksmaint.errors import MaintenanceError

MAX_POOL_MINOR_SKEW = 3

Version = tuple[int, int, int]


class UpgradeError(MaintenanceError):
    """A rule or AKS itself refused the upgrade; the message says why."""


class UpgradeTarget(StrEnum):
    """The targets named by a word; any other target is a version like 1.31.4."""

    latest = "latest"  # the newest version offered
    latest_patch = "latest-patch"  # the newest patch of the minor running now
    next_minor = "next-minor"  # the newest patch of the next minor


def parse_version(text: str) -> Version:
    parts = text.lstrip("v").split(".")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise UpgradeError(f"{text!r} is not a Kubernetes version like 1.30.5")
    return int(parts[0]), int(parts[1]), int(parts[2])


def fmt(version: Version) -> str:
    return ".".join(str(p) for p in version)


def resolve_target(current: str, available: list[str], target: str) -> str | None:
    """The version to end on, or None when there is nothing to do. Raises UpgradeError for a bad target."""
    cur = parse_version(current)
    versions = sorted({parse_version(v) for v in available})
    if target == UpgradeTarget.latest_patch:
        same_minor = [v for v in versions if v[:2] == cur[:2] and v > cur]
        return fmt(same_minor[-1]) if same_minor else None
    if target == UpgradeTarget.next_minor:
        nxt = [v for v in versions if v[:2] == (cur[0], cur[1] + 1)]
        if not nxt:
            raise UpgradeError(
                f"no {cur[0]}.{cur[1] + 1}.x version is offered in this region "
                f"(available: {', '.join(fmt(v) for v in versions)})"
            )
        return fmt(nxt[-1])
    if target == UpgradeTarget.latest:
        newer = [v for v in versions if v > cur]
        return fmt(newer[-1]) if newer else None
    wanted = parse_version(target)
    if wanted == cur:
        return None
    if wanted < cur:
        raise UpgradeError(f"downgrading from {current} to {target} is not allowed")
    if wanted not in versions:
        raise UpgradeError(
            f"version {target} is not offered in this region "
            f"(available: {', '.join(fmt(v) for v in versions)})"
        )
    return fmt(wanted)


def upgrade_path(current: str, target: str, available: list[str]) -> list[str]:
    """Versions to go through, one minor at a time, each the newest patch of its minor; ends on target."""
    cur, end = parse_version(current), parse_version(target)
    versions = sorted({parse_version(v) for v in available})
    path = []
    for minor in range(cur[1] + 1, end[1]):
        hop = [v for v in versions if v[:2] == (cur[0], minor)]
        if not hop:
            raise UpgradeError(
                f"cannot reach {target} from {current}: no {cur[0]}.{minor}.x version is offered, "
                "and AKS does not skip minor versions"
            )
        path.append(fmt(hop[-1]))
    path.append(target)
    return path


def skew_problem(control_plane: str, pool_version: str) -> str | None:
    cp, pool = parse_version(control_plane), parse_version(pool_version)
    if pool > cp:
        return f"pool version {pool_version} would be newer than the control plane {control_plane}"
    if cp[1] - pool[1] > MAX_POOL_MINOR_SKEW:
        return (
            f"pool version {pool_version} would be more than {MAX_POOL_MINOR_SKEW} minor versions behind "
            f"the control plane {control_plane}"
        )
    return None
