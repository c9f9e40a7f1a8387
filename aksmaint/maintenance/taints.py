"""The reboot-pending taint: PreferNoSchedule on the nodes still waiting for their reboot, so that pods
evicted from one node land on nodes already done and move only once.

Set on every node of the plan before the rollout, removed from each as it is done (by the uncordon in
``aksmaint.maintenance.cordon``, or here for a node that turns out to need nothing) and by the clean-up after a
cancelled or killed run. Every write carries the node's resourceVersion (``aksmaint.kube.patch_node``).
"""

from __future__ import annotations

from kubernetes.client import V1Node
from kubernetes.client.exceptions import ApiException

from aksmaint.kube import Kube, patch_node, spec_of
from aksmaint.nodestate import PENDING_TAINT_KEY


def has_pending_taint(node: V1Node) -> bool:
    return any(t.key == PENDING_TAINT_KEY for t in (spec_of(node).taints or []))


def taints_without_pending(kube: Kube, node: V1Node) -> list[dict]:
    """The node's other taints, as they are sent back in a patch."""
    return [
        kube.api_client.sanitize_for_serialization(t)
        for t in (spec_of(node).taints or [])
        if t.key != PENDING_TAINT_KEY
    ]


def set_pending_taint(kube: Kube, name: str, present: bool) -> None:
    """Add or remove the taint; a node deleted meanwhile needs neither."""

    def build(node: V1Node) -> dict | None:
        if has_pending_taint(node) == present:
            return None
        taints = taints_without_pending(kube, node)
        if present:
            taints.append({"key": PENDING_TAINT_KEY, "value": "true", "effect": "PreferNoSchedule"})
        return {"spec": {"taints": taints or None}}

    try:
        patch_node(kube, name, build)
    except ApiException as exc:
        if exc.status != 404:
            raise
