"""Gates checked before each node: maintenance window, blocking pods, Prometheus alerts, kured's lock."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import httpx
from kubernetes.client.exceptions import ApiException

from aksmaint.kube import Kube, meta, object_ref
from aksmaint.params import Blockers, LockOptions, MaintenanceWindow

KURED_LOCK_ANNOTATION = "weave.works/kured-node-lock"


def window_closed(window: MaintenanceWindow | None, now: datetime | None = None) -> str | None:
    """A reason when the window is closed, else None."""
    if window is None:
        return None
    now = now or datetime.now(UTC)
    if window.is_open(now):
        return None
    return (
        f"outside the maintenance window ({','.join(window.days)} {window.start}-{window.end} "
        f"{window.time_zone})"
    )


def blocking_pods(kube: Kube, node: str, selectors: list[str]) -> list[str]:
    """Pods on the node that match a blocking selector, as namespace/name."""
    found: list[str] = []
    for selector in selectors:
        pods = kube.call(
            kube.core.list_pod_for_all_namespaces,
            label_selector=selector,
            field_selector=f"spec.nodeName={node}",
        ).items
        found += [
            object_ref(p) for p in pods if p.status is None or p.status.phase not in ("Succeeded", "Failed")
        ]
    return sorted(set(found))


def active_alerts(blockers: Blockers) -> list[str]:
    """Names of the Prometheus alerts that block reboots. Raises httpx.HTTPError when unreachable."""
    assert blockers.prometheus_url is not None, "only asked when a Prometheus URL is set"
    url = blockers.prometheus_url.rstrip("/") + "/api/v1/alerts"
    response = httpx.get(url, timeout=blockers.prometheus_timeout_seconds)
    response.raise_for_status()
    alerts = response.json().get("data", {}).get("alerts", [])
    pattern = re.compile(blockers.alert_filter_regexp) if blockers.alert_filter_regexp else None
    names = []
    for alert in alerts:
        name = alert.get("labels", {}).get("alertname", "")
        if blockers.alert_firing_only and alert.get("state") != "firing":
            continue
        if pattern is not None:
            matched = bool(pattern.search(name))
            if matched != blockers.alert_filter_match_only:
                continue  # kured: the regexp excludes alerts, or with match-only selects them
        names.append(name)
    return sorted(set(names))


def prometheus_blocks(blockers: Blockers) -> str | None:
    if not blockers.prometheus_url:
        return None
    try:
        alerts = active_alerts(blockers)
    except (httpx.HTTPError, ValueError) as exc:
        return f"Prometheus at {blockers.prometheus_url} could not be queried ({type(exc).__name__})"
    if alerts:
        return f"active Prometheus alerts: {', '.join(alerts)}"
    return None


def kured_lock_holder(kube: Kube, lock: LockOptions, now: datetime | None = None) -> str | None:
    """The node holding kured's DaemonSet lock, if kured's lock is held and not expired."""
    namespace, name = lock.kured_daemonset.split("/")
    try:
        ds = kube.call(kube.apps.read_namespaced_daemon_set, name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    raw = (meta(ds).annotations or {}).get(KURED_LOCK_ANNOTATION)
    if not raw:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return f"unparseable lock {raw[:60]!r}"
    locks = data.get("locks") if "locks" in data else [data]
    now = now or datetime.now(UTC)
    holders = []
    for entry in locks or []:
        if not entry.get("nodeID"):
            continue
        ttl = entry.get("TTL", 0) or 0
        created = entry.get("created")
        if ttl and created:
            try:
                started = datetime.fromisoformat(created.replace("Z", "+00:00"))
                if started + timedelta(seconds=ttl / 1e9 if ttl > 1e6 else ttl) < now:
                    continue
            except ValueError:
                pass
        holders.append(entry["nodeID"])
    return ", ".join(holders) or None


def gate_reason(
    kube: Kube, node: str, window: MaintenanceWindow | None, blockers: Blockers, lock: LockOptions
) -> str | None:
    """Why the node may not start now, or None when every gate is open."""
    if reason := window_closed(window):
        return reason
    if blockers.pod_selectors and (pods := blocking_pods(kube, node, blockers.pod_selectors)):
        return f"blocking pods on the node: {', '.join(pods)}"
    if reason := prometheus_blocks(blockers):
        return reason
    if lock.respect_kured_lock and (holder := kured_lock_holder(kube, lock)):
        return f"kured holds its reboot lock ({holder})"
    return None
