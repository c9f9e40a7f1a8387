"""Update check: what each node runs now, and (optionally) installing the pending OS updates first."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from aksmaint.hostexec import HostPodSettings, run_on_host
from aksmaint.kube import Kube
from aksmaint.nodestate import RecordState, read_record
from aksmaint.report import NodeFacts

POOL_LABEL = "kubernetes.azure.com/agentpool"
IMAGE_LABEL = "kubernetes.azure.com/node-image-version"
OS_LABEL = "kubernetes.io/os"
ZONE_LABEL = "topology.kubernetes.io/zone"
APPLY_UPDATES_SCRIPT = (
    "DEBIAN_FRONTEND=noninteractive apt-get update && DEBIAN_FRONTEND=noninteractive apt-get upgrade -y"
)


def node_facts(node) -> NodeFacts:
    """Facts readable from a Node object alone."""
    labels = node.metadata.labels or {}
    info = node.status.node_info if node.status else None
    ready = any(c.type == "Ready" and c.status == "True" for c in (node.status.conditions or []))
    record = read_record(node)
    return NodeFacts(
        name=node.metadata.name,
        pool=labels.get(POOL_LABEL, labels.get("agentpool", "")),
        zone=labels.get(ZONE_LABEL, ""),
        kernel=info.kernel_version if info else "",
        os_image=info.os_image if info else "",
        node_image_version=labels.get(IMAGE_LABEL, ""),
        os=labels.get(OS_LABEL) or (info.operating_system if info else "") or "linux",
        kubelet_version=info.kubelet_version if info else "",
        boot_id=info.boot_id if info else "",
        ready=ready,
        unschedulable=bool(node.spec.unschedulable),
        resume=record is not None,
        quarantined=record.reason if record is not None and record.phase == RecordState.quarantined else None,
    )


def list_nodes(kube: Kube, selector: str) -> list:
    return kube.call(kube.core.list_node, label_selector=selector or None).items


def apply_updates_on(
    kube: Kube, names: list[str], settings: HostPodSettings, parallelism: int
) -> dict[str, str]:
    """Install OS updates on the nodes; returns node -> error text for the nodes where it failed."""

    def one(name: str) -> tuple[str, str | None]:
        result = run_on_host(kube, name, APPLY_UPDATES_SCRIPT, "apply-updates", settings, timeout=1800)
        if result.exit_code != 0:
            return name, f"apt-get exited {result.exit_code}: {result.output.strip()[-300:]}"
        return name, None

    with ThreadPoolExecutor(max_workers=parallelism) as pool:
        return {name: err for name, err in pool.map(one, names) if err}


def update_check(
    kube: Kube,
    node_selector: str,
    apply_updates: bool,
    settings: HostPodSettings,
    parallelism: int,
) -> tuple[list[NodeFacts], dict[str, str]]:
    """The nodes in scope with their kernel, image and boot id, after installing the OS updates on the
    Linux ones if asked; and, per node, why installing them failed."""
    nodes = list_nodes(kube, node_selector)
    failures: dict[str, str] = {}
    if apply_updates:
        linux = [n.metadata.name for n in nodes if not node_facts(n).windows]
        failures = apply_updates_on(kube, linux, settings, parallelism)
        nodes = list_nodes(kube, node_selector)
    return [node_facts(n) for n in nodes], failures
