"""Which of a node's pods a drain evicts: kubectl drain's filters, in kubectl's order (deleted, DaemonSet,
mirror, local storage, unreplicated). The first filter with a verdict decides a pod; if any filter reports
an error, the drain evicts nothing (``aksmaint.maintenance.drain``). The plan counts the pods to move with
the same filters.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from aksmaint.hostexec import MANAGED_BY
from aksmaint.kube import object_ref
from aksmaint.params import DrainOptions

MIRROR_ANNOTATION = "kubernetes.io/config.mirror"


@dataclass(frozen=True)
class Verdict:
    evict: bool
    warning: str = ""
    error: str = ""


PodFilter = Callable[[object, DrainOptions, datetime], Verdict | None]


def skip_deleted(pod, options: DrainOptions, now: datetime) -> Verdict | None:
    deleted = pod.metadata.deletion_timestamp
    if (
        deleted
        and options.skip_wait_for_delete_timeout_seconds > 0
        and (now - deleted).total_seconds() > options.skip_wait_for_delete_timeout_seconds
    ):
        return Verdict(False, warning=f"{object_ref(pod)} is being deleted for too long; not waiting for it")
    return None


def skip_daemonset(pod, options: DrainOptions, now: datetime) -> Verdict | None:
    owner = _controller(pod)
    if owner is not None and owner.kind == "DaemonSet":
        return Verdict(False)
    return None


def skip_mirror(pod, options: DrainOptions, now: datetime) -> Verdict | None:
    if MIRROR_ANNOTATION in (pod.metadata.annotations or {}):
        return Verdict(False)
    return None


def check_local_storage(pod, options: DrainOptions, now: datetime) -> Verdict | None:
    if pod.status and pod.status.phase in ("Succeeded", "Failed"):
        return None
    if any(v.empty_dir is not None for v in pod.spec.volumes or []):
        if not options.delete_emptydir_data:
            return Verdict(
                False, error=f"{object_ref(pod)} uses emptyDir data (set delete_emptydir_data to evict)"
            )
        return Verdict(True, warning=f"deleting emptyDir data of {object_ref(pod)}")
    return None


def check_unreplicated(pod, options: DrainOptions, now: datetime) -> Verdict | None:
    if pod.status and pod.status.phase in ("Succeeded", "Failed"):
        return None
    if _controller(pod) is None:
        if not options.force:
            return Verdict(
                False, error=f"{object_ref(pod)} is not managed by a controller (set force to evict)"
            )
        return Verdict(True, warning=f"evicting unmanaged pod {object_ref(pod)}; it will not come back")
    return None


FILTERS: list[PodFilter] = [
    skip_deleted,
    skip_daemonset,
    skip_mirror,
    check_local_storage,
    check_unreplicated,
]


def _controller(pod):
    return next((r for r in pod.metadata.owner_references or [] if r.controller), None)


@dataclass
class PodSelection:
    evict: list = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def select_pods(pods: list, options: DrainOptions, now: datetime | None = None) -> PodSelection:
    """Apply the filters in order; the first filter with a verdict decides (errors win over all)."""
    now = now or datetime.now(UTC)
    selection = PodSelection()
    for pod in pods:
        if (pod.metadata.labels or {}).get("app.kubernetes.io/managed-by") == MANAGED_BY:
            continue  # our own host pods go with the reboot
        verdict = Verdict(True)
        for pod_filter in FILTERS:
            result = pod_filter(pod, options, now)
            if result is None:
                continue
            if result.warning:
                selection.warnings.append(result.warning)
            if result.error:
                selection.errors.append(result.error)
            verdict = result
            if not result.evict or result.error:
                break
        if verdict.evict and not verdict.error:
            selection.evict.append(pod)
    return selection
