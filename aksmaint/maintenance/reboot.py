"""Reboot: the configured command, run in the node's host namespaces by a pinned privileged pod.

The pod does not report back: the node going away and returning with a new boot id is the answer
(``aksmaint.maintenance.health.wait_until_back``). A reboot is requested at most once per record: a retry, or a run
resuming another's work, finds the boot id changed or the reboot pod still there and does not reboot again.
"""

from __future__ import annotations

from aksmaint.hostexec import HostPodSettings, delete_host_pod, start_host_pod
from aksmaint.kube import Kube
from aksmaint.nodestate import NodeRecord, RecordState

REBOOT_PURPOSE = "reboot"


def request_reboot(kube: Kube, node: str, command: list[str], settings: HostPodSettings) -> str:
    """Start the reboot pod and return its name."""
    return start_host_pod(kube, node, command, REBOOT_PURPOSE, settings)


def reboot_pods(kube: Kube, node: str, settings: HostPodSettings) -> list:
    """The reboot pods on the node (ours, from this run or an earlier one)."""
    return kube.call(
        kube.core.list_namespaced_pod,
        settings.namespace,
        label_selector=f"aksmaint.io/purpose={REBOOT_PURPOSE},aksmaint.io/node={node}",
    ).items


def already_requested(
    kube: Kube, node: str, record: NodeRecord, boot_id_now: str, settings: HostPodSettings
) -> bool:
    """True when the record says a reboot was requested and it happened (a new boot id) or its pod is
    still there: requesting another would reboot the node twice."""
    return record.phase == RecordState.rebooting and (
        boot_id_now != record.boot_id_before or bool(reboot_pods(kube, node, settings))
    )


def remove_reboot_pods(kube: Kube, node: str, settings: HostPodSettings) -> None:
    for pod in reboot_pods(kube, node, settings):
        delete_host_pod(kube, pod.metadata.name, settings)
