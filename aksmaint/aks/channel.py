"""The node OS upgrade channel: who keeps the nodes' OS patched, as AKS says it."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from aksmaint.azure import describe_azure_error
from aksmaint.errors import MaintenanceError


class OsUpgradeChannel(StrEnum):
    """AKS's autoUpgradeProfile.nodeOSUpgradeChannel: who keeps the nodes' OS patched."""

    none = "None"  # nobody: no updates at all
    unmanaged = "Unmanaged"  # the nodes' own unattended-upgrades; reboots are ours (kured's job)
    security_patch = "SecurityPatch"  # AKS applies security patches itself, rebooting when it must
    node_image = "NodeImage"  # AKS reimages the nodes with each new node image


AKS_PATCHES: dict[str, str] = {
    OsUpgradeChannel.security_patch: "applies security patches to the nodes",
    OsUpgradeChannel.node_image: "reimages the nodes with each new node image",
}
NODE_OS_SCHEDULE = "aksManagedNodeOSUpgradeSchedule"


@dataclass
class OsUpgradeSettings:
    """What AKS says about patching the cluster's nodes. ``channel`` is "" when unknown (the flow reached
    the cluster by kubeconfig, not through Azure)."""

    channel: str = ""
    schedule: str = ""  # the aksManagedNodeOSUpgradeSchedule window, described

    def aks_patches(self) -> str | None:
        """Who patches the nodes when it is AKS itself (the channel, what AKS does, when), else None."""
        does = AKS_PATCHES.get(self.channel)  # StrEnum members compare and hash as their text
        if does is None:
            return None
        when = f" in its window ({self.schedule})" if self.schedule else ""
        return f"the cluster's node OS upgrade channel is {self.channel}: AKS {does} itself{when}"

    def hold_reason(self) -> str | None:
        """Why reboots by hand do not belong on this cluster, or None when they do."""
        patches = self.aks_patches()
        if patches is None:
            return None
        return (
            f"{patches}, and reboots by hand would work against it "
            "(set respect_os_upgrade_channel to false to reboot anyway)"
        )


def describe_schedule(config) -> str:
    """An AKS managed maintenance window in a line, e.g. "weekly on Saturday, 02:00 for 4h (UTC+01:00)"."""
    window = getattr(config, "maintenance_window", None)
    if window is None or window.schedule is None:
        return ""
    schedule = window.schedule
    if schedule.weekly is not None:
        every = (
            "weekly"
            if (schedule.weekly.interval_weeks or 1) == 1
            else f"every {schedule.weekly.interval_weeks} weeks"
        )
        when = f"{every} on {_text(schedule.weekly.day_of_week)}"
    elif schedule.absolute_monthly is not None:
        when = f"monthly on day {schedule.absolute_monthly.day_of_month}"
    elif schedule.relative_monthly is not None:
        rule = schedule.relative_monthly
        when = f"monthly on the {_text(rule.week_index).lower()} {_text(rule.day_of_week)}"
    else:
        when = "daily"
    return f"{when}, {window.start_time} for {window.duration_hours}h (UTC{window.utc_offset or '+00:00'})"


def _text(value: object) -> str:
    """An SDK enum member as AKS spells it (its value), or the text itself."""
    return str(getattr(value, "value", value))


def read_os_upgrade_settings(client, resource_group: str, name: str) -> OsUpgradeSettings:
    """The managed cluster's channel and AKS's node OS maintenance window, if one is configured."""
    try:
        mc = client.managed_clusters.get(resource_group, name)
        channel = node_os_upgrade_channel_of(mc)
        try:
            config = client.maintenance_configurations.get(resource_group, name, NODE_OS_SCHEDULE)
        except ResourceNotFoundError:
            config = None
    except HttpResponseError as exc:
        raise MaintenanceError(
            f"could not read the node OS upgrade channel: {describe_azure_error(exc)}"
        ) from exc
    return OsUpgradeSettings(channel=channel, schedule=describe_schedule(config) if config else "")


def node_os_upgrade_channel_of(mc) -> str:
    """The managed cluster's channel as AKS spells it; unset means Unmanaged (clusters made before the
    channel existed)."""
    profile = mc.auto_upgrade_profile
    channel = profile.node_os_upgrade_channel if profile else None
    return _text(channel) if channel else OsUpgradeChannel.unmanaged.value
