"""Drain: evict a node's pods the way `kubectl drain` does, and what to do when it cannot finish.

The pods to evict are chosen by kubectl's filters (``aksmaint.maintenance.pod_filters``); if any filter
reports an error, nothing is evicted. Evictions go through the eviction subresource so
PodDisruptionBudgets are respected: a 429 refusal is retried every few seconds until the timeout, a 404
means the pod is already gone, a 403 because the pod's namespace is being deleted means the pod is going
away (kubectl's rule), anything else fails that pod. After each eviction we wait until the pod is gone or
has been replaced (its uid changed). A drain that did not finish goes as ``drain.on_timeout`` says
(``on_timeout``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import NamedTuple

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from aksmaint.kube import (
    Kube,
    describe_api_error,
    has_cause,
    is_transient,
    meta,
    object_ref,
    retry_after_seconds,
    spec_of,
    status_causes,
    status_of,
)
from aksmaint.maintenance.pod_filters import select_pods
from aksmaint.params import DrainOptions, OnDrainTimeout
from aksmaint.report import Outcome


def pods_on_node(kube: Kube, node: str, selector: str = "") -> list:
    return kube.call(
        kube.core.list_pod_for_all_namespaces,
        field_selector=f"spec.nodeName={node}",
        label_selector=selector or None,
    ).items


def selector_text(selector) -> str:
    """A PodDisruptionBudget's label selector (matchLabels and matchExpressions) as the text the API
    server's ``labelSelector`` takes; "" selects everything."""
    terms = [f"{k}={v}" for k, v in sorted((selector.match_labels or {}).items())]
    for req in selector.match_expressions or []:
        values = ",".join(sorted(req.values or []))
        terms.append(
            {
                "In": f"{req.key} in ({values})",
                "NotIn": f"{req.key} notin ({values})",
                "Exists": req.key,
                "DoesNotExist": f"!{req.key}",
            }[req.operator]
        )
    return ",".join(terms)


def blocking_budgets(kube: Kube, pods: list) -> list[str]:
    """PDBs covering the pods that currently allow no disruption, named for the operator. The API server
    matches each budget's selector, expressions included."""
    found = set()
    for namespace in sorted({p.metadata.namespace for p in pods}):
        ours = {p.metadata.name for p in pods if p.metadata.namespace == namespace}
        budgets = kube.call(kube.policy.list_namespaced_pod_disruption_budget, namespace).items
        for pdb in budgets:
            selector = spec_of(pdb).selector
            if selector is None or not (selector.match_labels or selector.match_expressions):
                continue
            status = status_of(pdb)
            if (status.disruptions_allowed or 0) > 0:
                continue
            covered = kube.call(
                kube.core.list_namespaced_pod, namespace, label_selector=selector_text(selector)
            ).items
            if ours & {meta(p).name for p in covered}:
                found.add(
                    f"{namespace}/{meta(pdb).name} (allows {status.disruptions_allowed or 0} "
                    f"disruptions, {status.current_healthy}/{status.desired_healthy} healthy)"
                )
    return sorted(found)


@dataclass
class DrainResult:
    evicted: list[str] = field(default_factory=list)
    remaining: list[str] = field(default_factory=list)  # pods still on the node at the end
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    timed_out: bool = False
    refusals: int = 0  # eviction refusals by PodDisruptionBudgets
    blocking: list[str] = field(default_factory=list)
    slowest: tuple[str, float] | None = None  # the evicted pod that took longest to go, and its seconds

    @property
    def complete(self) -> bool:
        return not self.remaining and not self.errors and not self.timed_out


@dataclass
class Eviction:
    """One pod's eviction: None when the pod is gone, else what stopped it, and whether that was the drain
    timeout (the node is then handled by drain.on_timeout, not failed); and how often a budget refused
    it (each worker counts its own: nothing is shared between the threads)."""

    error: str | None = None
    timed_out: bool = False
    refusals: int = 0
    seconds: float = 0.0  # from the first eviction request until the pod was gone


def _evict_and_wait(kube: Kube, pod, options: DrainOptions, deadline: float) -> Eviction:
    """Evict one pod and wait for it to go."""
    outcome, started = Eviction(), time.monotonic()
    outcome.error = _evict(kube, pod, options, deadline, outcome)
    outcome.seconds = time.monotonic() - started
    return outcome


def _evict(kube: Kube, pod, options: DrainOptions, deadline: float, outcome: Eviction) -> str | None:
    gone, error = _request_eviction(kube, pod, options, deadline, outcome)
    if gone or error:
        return error
    error = _wait_until_gone(kube, pod, options, deadline)
    outcome.timed_out = error is not None  # its only failure: the pod outlived the drain timeout
    return error


class _Refusal(NamedTuple):
    wait: float | None  # seconds before asking again; None: a refusal no retry changes
    accepted: bool = False  # the pod goes anyway (its namespace is being deleted)


def _request_eviction(
    kube: Kube, pod, options: DrainOptions, deadline: float, outcome: Eviction
) -> tuple[bool, str | None]:
    """Ask for the eviction until the API server takes it: (the pod is already gone, why it failed)."""
    name, namespace = pod.metadata.name, pod.metadata.namespace
    body = client.V1Eviction(
        api_version="policy/v1", kind="Eviction", metadata=client.V1ObjectMeta(name=name, namespace=namespace)
    )
    if options.grace_period_seconds >= 0:
        body.delete_options = client.V1DeleteOptions(grace_period_seconds=options.grace_period_seconds)
    while True:
        try:
            kube.call(kube.core.create_namespaced_pod_eviction, name, namespace, body, retry=False)
            return False, None
        except ApiException as exc:
            if exc.status == 404:
                return True, None
            refusal, answer = _refusal(kube, pod, exc, options, outcome), describe_api_error(exc)
        if refusal.accepted:
            return False, None
        if refusal.wait is None:
            return False, f"eviction of {namespace}/{name} failed: {answer}"
        if time.monotonic() + refusal.wait > deadline:
            outcome.timed_out = True
            return False, f"eviction of {namespace}/{name} still refused at the drain timeout"
        time.sleep(refusal.wait)


def _refusal(kube: Kube, pod, exc: ApiException, options: DrainOptions, outcome: Eviction) -> _Refusal:
    """How to go on after the API server refused an eviction."""
    if exc.status == 429:
        wait = retry_after_seconds(exc)
        if wait is None and _is_budget_refusal(exc):
            outcome.refusals += 1
            wait = options.eviction_retry_seconds
        return _Refusal(wait or 1.0)
    if exc.status == 403 and has_cause(exc, "NamespaceTerminating"):
        if _marked_for_deletion(kube, pod):
            return _Refusal(None, accepted=True)  # the namespace's deletion takes the pod: wait for it
        return _Refusal(options.eviction_retry_seconds or 1.0)  # it will be marked soon
    if is_transient(exc):
        return _Refusal(1.0)
    return _Refusal(None)


def _wait_until_gone(kube: Kube, pod, options: DrainOptions, deadline: float) -> str | None:
    """After the eviction: wait for the pod to go (or, with skip_wait_for_delete_timeout_seconds, to have
    been deleting for that long, as kubectl does)."""
    name, namespace, uid = pod.metadata.name, pod.metadata.namespace, pod.metadata.uid
    while time.monotonic() < deadline:
        try:
            current = kube.call(kube.core.read_namespaced_pod, name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        current_meta = meta(current)
        if current_meta.uid != uid:
            return None
        if (
            options.skip_wait_for_delete_timeout_seconds
            and current_meta.deletion_timestamp
            and (datetime.now(UTC) - current_meta.deletion_timestamp).total_seconds()
            > options.skip_wait_for_delete_timeout_seconds
        ):
            return None
        time.sleep(0.5)
    return f"{namespace}/{name} was evicted but had not terminated at the drain timeout"


def _is_budget_refusal(exc: ApiException) -> bool:
    causes = status_causes(exc)
    return not causes or any(c.get("reason") == "DisruptionBudget" for c in causes)


def _marked_for_deletion(kube: Kube, pod) -> bool:
    try:
        current = kube.call(kube.core.read_namespaced_pod, pod.metadata.name, pod.metadata.namespace)
    except ApiException as exc:
        if exc.status == 404:
            return True
        raise
    current_meta = meta(current)
    return current_meta.uid != pod.metadata.uid or current_meta.deletion_timestamp is not None


def drain_node(kube: Kube, node: str, options: DrainOptions) -> DrainResult:
    """Evict the node's pods; stop at the timeout, reporting what is left and which PDBs block."""
    result = DrainResult()
    deadline = time.monotonic() + options.timeout_seconds
    selection = select_pods(pods_on_node(kube, node, options.pod_selector), options)
    result.warnings = selection.warnings
    if selection.errors:
        result.errors = selection.errors
        result.remaining = [object_ref(p) for p in selection.evict]
        return result
    if not selection.evict:
        return result
    with ThreadPoolExecutor(max_workers=min(16, len(selection.evict))) as pool:
        outcomes = list(pool.map(lambda p: (p, _evict_and_wait(kube, p, options, deadline)), selection.evict))
    for pod, eviction in outcomes:
        result.refusals += eviction.refusals
        error = eviction.error
        if error is None:
            result.evicted.append(object_ref(pod))
            if result.slowest is None or eviction.seconds > result.slowest[1]:
                result.slowest = (object_ref(pod), eviction.seconds)
        else:
            result.remaining.append(object_ref(pod))
            if eviction.timed_out:
                result.timed_out = True
            else:
                result.errors.append(error)
    if result.remaining:
        left = [
            p
            for p in pods_on_node(kube, node, options.pod_selector)
            if object_ref(p) in set(result.remaining)
        ]
        result.blocking = blocking_budgets(kube, left)
    return result


def delete_pods(kube: Kube, refs: list[str], grace_period_seconds: int, timeout: float) -> list[str]:
    """Delete pods directly, bypassing eviction (and so their PodDisruptionBudgets). Returns pods left."""
    options = (
        client.V1DeleteOptions(grace_period_seconds=grace_period_seconds)
        if grace_period_seconds >= 0
        else None
    )
    for ref in refs:
        namespace, name = ref.split("/", 1)
        try:
            kube.call(kube.core.delete_namespaced_pod, name, namespace, body=options)
        except ApiException as exc:
            if exc.status != 404:
                raise
    deadline = time.monotonic() + timeout
    left = list(refs)
    while left and time.monotonic() < deadline:
        still = []
        for ref in left:
            namespace, name = ref.split("/", 1)
            try:
                kube.call(kube.core.read_namespaced_pod, name, namespace)
                still.append(ref)
            except ApiException as exc:
                if exc.status != 404:
                    raise
        left = still
        if left:
            time.sleep(0.5)
    return left


@dataclass(frozen=True)
class Unfinished:
    """What ``drain.on_timeout`` makes of a drain that did not finish: the node ends ``outcome`` (quarantined,
    or skipped once put back in service), or, with no outcome, the reboot goes ahead."""

    why: str  # why the drain did not finish
    outcome: Outcome | None = None
    reason: str = ""  # the node's reason, when it ends here


def unfinished_reason(result: DrainResult, options: DrainOptions) -> str:
    return "; ".join(result.errors) or (
        f"drain timed out after {options.timeout_seconds:.0f}s with {len(result.remaining)} pod(s) left"
        + (f" (blocked by PodDisruptionBudget {', '.join(result.blocking)})" if result.blocking else "")
    )


def on_timeout(
    kube: Kube, node: str, result: DrainResult, options: DrainOptions, warn: Callable[..., None]
) -> Unfinished:
    """The drain-timeout policy for a drain that timed out or hit an error. Quarantine, and uncordon and
    skip, end the node (the caller writes the quarantine record or puts the node back in service); after a
    drain error the node is always skipped. Delete-pods deletes the pods left (bypassing their budgets),
    and it and reboot-anyway let the reboot go ahead. ``warn`` logs as the recorder does."""
    why = unfinished_reason(result, options)
    warn("%s not fully drained: %s", node, why)
    if options.on_timeout == OnDrainTimeout.quarantine:
        return Unfinished(
            why,
            Outcome.quarantined,
            f"{why}; quarantined: left cordoned with label aksmaint.io/status=quarantined",
        )
    if result.errors or options.on_timeout == OnDrainTimeout.uncordon_and_skip:
        return Unfinished(why, Outcome.skipped, f"{why}; uncordoned and left unrebooted")
    if options.on_timeout == OnDrainTimeout.delete_pods:
        warn("%s: deleting the remaining pods (bypassing their budgets)", node)
        left = delete_pods(kube, result.remaining, options.grace_period_seconds, 120)
        if left:
            warn("%s: pods still present after deletion: %s", node, ", ".join(left))
    else:
        warn("%s: rebooting anyway as configured", node)
    return Unfinished(why)
