"""Health verification after a reboot: the node is back, on a new boot, and heartbeating.

Between looks the node is watched (from the resourceVersion last read), as `kubectl wait` does: the next
look happens as soon as the kubelet reports anything, instead of up to a poll interval later, and a boot
of minutes costs a handful of requests instead of one per second.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

from kubernetes import watch
from kubernetes.client.exceptions import ApiException

from aksmaint.kube import Kube, is_transient, meta, spec_of, status_of

NODE_LEASE_NAMESPACE = "kube-node-lease"
BAD_TAINTS = {"node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"}
HEARTBEAT_FRESH_SECONDS = 60


@dataclass
class Health:
    healthy: bool
    reason: str
    kernel: str = ""
    boot_id: str = ""
    went_down: bool = False
    resource_version: str = ""


def check_node(kube: Kube, name: str, boot_id_before: str, now: datetime | None = None) -> Health:
    """One look at the node: every check that must pass, with the first failing one as the reason."""
    node = kube.call(kube.core.read_node, name)
    status = status_of(node)
    info = status.node_info
    ready = next((c for c in status.conditions or [] if c.type == "Ready"), None)
    health = Health(False, "", info.kernel_version if info else "", info.boot_id if info else "")
    health.resource_version = meta(node).resource_version or ""
    health.went_down = bool(ready is None or ready.status != "True" or health.boot_id != boot_id_before)
    if ready is None or ready.status != "True":
        health.reason = f"node not Ready ({ready.reason if ready else 'no Ready condition'})"
        return health
    if health.boot_id == boot_id_before:
        health.reason = "boot id unchanged: the node has not rebooted yet"
        return health
    if not health.kernel:
        health.reason = "node reports no kernel version"
        return health
    bad = [t.key for t in spec_of(node).taints or [] if t.key in BAD_TAINTS]
    if bad:
        health.reason = f"node still tainted {', '.join(bad)}"
        return health
    try:
        lease = kube.call(kube.coordination.read_namespaced_lease, name, NODE_LEASE_NAMESPACE)
        renewed = spec_of(lease).renew_time
        age = ((now or datetime.now(UTC)) - renewed).total_seconds() if renewed else None
        if age is None or age > HEARTBEAT_FRESH_SECONDS:
            health.reason = "kubelet heartbeat is stale"
            return health
    except ApiException as exc:
        if exc.status != 404:
            raise
        health.reason = "no kubelet heartbeat Lease"
        return health
    health.healthy = True
    health.reason = "Ready, new boot id, fresh heartbeat"
    return health


def wait_for_node_change(
    kube: Kube, name: str, resource_version: str, seconds: float, pause: float = 1.0
) -> None:
    """Return when the node changes after ``resource_version``, or after ``seconds``. A watch that cannot
    be had (no version, an error, a server that ends it at once) falls back to a pause of ``pause``."""
    started = time.monotonic()
    if resource_version and seconds >= 1:
        stream = watch.Watch()
        try:
            for _ in stream.stream(
                kube.core.list_node,
                field_selector=f"metadata.name={name}",
                resource_version=resource_version,
                timeout_seconds=int(seconds),
                _request_timeout=(5, seconds + 5),
            ):
                return
        except Exception:  # an expired version (410), a dropped connection: look again after a pause
            pass
        finally:
            stream.stop()
    time.sleep(max(0.0, min(pause, seconds) - (time.monotonic() - started)))


def wait_until_back(
    kube: Kube, name: str, boot_id_before: str, timeout: float, poll: float = 1.0, watch_seconds: float = 10
) -> Health:
    """Look until the node is healthy on a new boot or the timeout passes (transient errors are waited
    out); between looks, wait for the node to change (at most ``watch_seconds``, then look anyway: a
    heartbeat Lease going fresh does not change the node)."""
    deadline = time.monotonic() + timeout
    last = Health(False, "not checked yet")
    while time.monotonic() < deadline:
        try:
            last = check_node(kube, name, boot_id_before)
        except Exception as exc:
            if not is_transient(exc):
                raise
            last = Health(False, f"API error while checking: {exc}", went_down=last.went_down)
        if last.healthy:
            return last
        remaining = deadline - time.monotonic()
        wait_for_node_change(kube, name, last.resource_version, min(watch_seconds, remaining), poll)
    went = "went down but " if last.went_down else "never went down and "
    last.reason = f"node {went}did not come back healthy within {timeout:.0f}s: {last.reason}"
    return last
