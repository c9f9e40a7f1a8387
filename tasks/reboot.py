"""Reboot: the configured command, run in the node's host namespaces by a pinned privileged pod."""

from __future__ import annotations

from aksmaint.hostexec import HostPodSettings, delete_host_pod, start_host_pod
from aksmaint.kube import Kube

REBOOT_PURPOSE = "reboot"


def request_reboot(kube: Kube, node: str, command: list[str], settings: HostPodSettings) -> str:
    """Start the reboot pod and return its name. The pod does not report back: the node going away and
    returning with a new boot id is the answer (see health.wait_until_back)."""
    return start_host_pod(kube, node, command, REBOOT_PURPOSE, settings)


def cleanup_reboot_pod(kube: Kube, name: str, settings: HostPodSettings) -> None:
    delete_host_pod(kube, name, settings)
