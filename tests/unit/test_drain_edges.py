"""Drain at its edges, against a scripted API: budget refusals counted across the eviction threads, an
eviction refused because the pod's namespace is being deleted, and budgets selected by expressions."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

import aksmaint.maintenance.drain as drain
from aksmaint.errors import ClusterAccessError
from aksmaint.kube import Kube
from aksmaint.params import DrainOptions


def pod(
    name: str, namespace: str = "shop", labels: dict | None = None, deleting: bool = False
) -> client.V1Pod:
    return client.V1Pod(
        metadata=client.V1ObjectMeta(
            name=name,
            namespace=namespace,
            uid=f"uid-{name}",
            labels=labels or {"app": "web"},
            owner_references=[
                client.V1OwnerReference(
                    api_version="apps/v1", kind="ReplicaSet", name="web-1", uid="rs", controller=True
                )
            ],
            deletion_timestamp=datetime.now(UTC) if deleting else None,
        ),
        spec=client.V1PodSpec(containers=[client.V1Container(name="c")], node_name="node-0"),
        status=client.V1PodStatus(phase="Running"),
    )


def api_error(status: int, reason: str, causes: list[dict]) -> ApiException:
    exc = ApiException(status=status, reason=reason)
    exc.body = json.dumps({"kind": "Status", "code": status, "reason": reason, "details": {"causes": causes}})
    return exc


class ScriptedKube:
    """The calls drain makes, answered from per-pod scripts, through the real ``Kube.call`` (which decides
    what an error means: access refused, transient, or the caller's to judge)."""

    cluster_name = "aks-demo"
    attempts = 2
    calls = 0

    def __init__(self, pods: list, evictions: dict[str, list], reads: dict[str, list] | None = None):
        self._lock = threading.Lock()
        self.pods = pods
        self.evictions = evictions  # pod name -> exceptions to raise, in order, before accepting
        self.reads = reads or {}  # pod name -> pods to return, in order, before 404
        self.lock = threading.Lock()
        self.core = SimpleNamespace(
            list_pod_for_all_namespaces=self.list_pods,
            create_namespaced_pod_eviction=self.evict,
            read_namespaced_pod=self.read,
        )
        self.policy = SimpleNamespace(
            list_namespaced_pod_disruption_budget=lambda ns, **_: SimpleNamespace(items=[])
        )

    def call(self, fn, *args, retry: bool = True, **kwargs):
        return Kube.call(self, fn, *args, retry=retry, **kwargs)

    def list_pods(self, field_selector: str = "", label_selector: str | None = None, **_):
        return SimpleNamespace(items=list(self.pods))

    def evict(self, name: str, namespace: str, body, **_) -> None:
        with self.lock:
            script = self.evictions.get(name, [])
            error = script.pop(0) if script else None
        if error is not None:
            raise error

    def read(self, name: str, namespace: str, **_):
        with self.lock:
            script = self.reads.get(name, [])
            current = script.pop(0) if script else None
        if current is None:
            raise ApiException(status=404, reason="Not Found")
        return current


def budget_refusal() -> ApiException:
    return api_error(429, "TooManyRequests", [{"reason": "DisruptionBudget", "message": "needs 2 healthy"}])


class SlowCountResult(drain.DrainResult):
    """A result whose refusal count takes a while to read: any unguarded read-modify-write of it from
    several threads loses counts."""

    def __init__(self, *args, **kwargs):
        self._refusals = 0
        super().__init__(*args, **kwargs)

    @property
    def refusals(self) -> int:
        value = self._refusals
        time.sleep(0.01)
        return value

    @refusals.setter
    def refusals(self, value: int) -> None:
        self._refusals = value


def test_budget_refusals_are_all_counted_when_pods_are_evicted_in_parallel(monkeypatch):
    monkeypatch.setattr(drain, "DrainResult", SlowCountResult)
    pods = [pod(f"web-{i}") for i in range(8)]
    kube = ScriptedKube(pods, {p.metadata.name: [budget_refusal() for _ in range(3)] for p in pods})
    result = drain.drain_node(kube, "node-0", DrainOptions(eviction_retry_seconds=0.01, timeout_seconds=30))
    assert sorted(result.evicted) == sorted(f"shop/{p.metadata.name}" for p in pods)
    assert result.refusals == 24


def test_eviction_refused_because_the_namespace_is_terminating_is_the_pod_going_away():
    terminating = api_error(
        403,
        "Forbidden",
        [
            {
                "reason": "NamespaceTerminating",
                "message": "namespace shop is being terminated",
                "field": "metadata.namespace",
            }
        ],
    )
    victim = pod("web-0")
    kube = ScriptedKube(
        [victim],
        # refused twice: first before the namespace controller marked the pod, then after
        {"web-0": [terminating, terminating]},
        # the drain's look after the first refusal: not marked yet; after the second: marked; then gone
        {"web-0": [pod("web-0"), pod("web-0", deleting=True), pod("web-0", deleting=True)]},
    )
    result = drain.drain_node(kube, "node-0", DrainOptions(eviction_retry_seconds=0.01, timeout_seconds=30))
    assert result.errors == []
    assert result.evicted == ["shop/web-0"]
    assert result.complete


def test_a_forbidden_eviction_for_another_reason_is_an_access_problem():
    rbac = api_error(403, "Forbidden", [])
    kube = ScriptedKube([pod("web-0")], {"web-0": [rbac]})
    with pytest.raises(ClusterAccessError, match="check the credentials and RBAC"):
        drain.drain_node(kube, "node-0", DrainOptions(eviction_retry_seconds=0.01, timeout_seconds=30))


@pytest.mark.parametrize(
    ("labels", "expressions", "text"),
    [
        ({"app": "web"}, [], "app=web"),
        ({"app": "web"}, [("tier", "In", ["b", "a"])], "app=web,tier in (a,b)"),
        ({}, [("tier", "NotIn", ["batch"]), ("canary", "DoesNotExist", None)], "tier notin (batch),!canary"),
        ({}, [("app", "Exists", None)], "app"),
    ],
)
def test_selector_text_covers_labels_and_expressions(labels, expressions, text):
    selector = client.V1LabelSelector(
        match_labels=labels or None,
        match_expressions=[
            client.V1LabelSelectorRequirement(key=k, operator=op, values=values)
            for k, op, values in expressions
        ]
        or None,
    )
    assert drain.selector_text(selector) == text
