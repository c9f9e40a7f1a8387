"""Injected API faults: error and throttle rates, latency, and one-shot fault rules, as clients see them."""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Iterator, Mapping

import httpx
import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from tests.support import RunningSim

SCALE = 0.05


@pytest.fixture
def sim(start_sim) -> Iterator:
    """Start a demo simulator with the given faults; yields a starter returning (sim, core, raw http)."""
    opened: list = []

    def start(**faults: float) -> tuple[RunningSim, client.CoreV1Api, httpx.Client]:
        running = start_sim("example", time_scale=SCALE, faults=faults)
        api = config.new_client_from_config(config_file=running.kubeconfig)
        http = httpx.Client(
            base_url=running.endpoints.kube_api,
            timeout=10,
            verify=ssl.create_default_context(cafile=running.endpoints.ca_bundle),
            headers={"Authorization": f"Bearer {running.endpoints.token}"},
        )
        opened.extend([api, http])
        return running, client.CoreV1Api(api), http

    yield start
    for c in opened:
        c.close()


def api_status(call, *args: object, **kwargs: object) -> tuple[int, dict, Mapping]:
    """HTTP status, Status body and headers of a client call that is expected to fail."""
    try:
        call(*args, **kwargs)
    except ApiException as exc:
        return exc.status, json.loads(exc.body), exc.headers or {}
    return 200, {}, {}


def eviction(name: str, namespace: str) -> client.V1Eviction:
    return client.V1Eviction(
        api_version="policy/v1", kind="Eviction", metadata=client.V1ObjectMeta(name=name, namespace=namespace)
    )


def test_error_rate_one_answers_every_resource_request_with_a_500_status(sim):
    running, core, http = sim(api_error_rate=1.0)
    status, body, _ = api_status(core.list_node)
    assert status == 500
    assert (body["kind"], body["status"], body["reason"], body["code"]) == (
        "Status",
        "Failure",
        "InternalError",
        500,
    )
    assert api_status(core.list_namespaced_pod, "default")[0] == 500
    assert (
        api_status(
            core.create_namespaced_pod,
            "default",
            {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}},
        )[0]
        == 500
    )
    assert api_status(core.read_node, running.sim.node_names()[0])[0] == 500
    # discovery stays up, so clients can still find the API; the observer is never faulted
    assert http.get("/version").status_code == 200
    assert http.get("/api/v1").status_code == 200
    assert http.get("/apis/apps/v1").status_code == 200
    assert len(running.observer.hosts()) == 5
    failed = [e for e in running.observer.audit() if e["resource"]]
    assert failed and {e["status"] for e in failed} == {500}


def test_throttle_rate_answers_429_with_retry_after(sim):
    running, core, http = sim(api_throttle_rate=1.0)
    response = http.get("/api/v1/namespaces/shop/pods")
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "1"
    body = response.json()
    assert (body["kind"], body["reason"], body["code"]) == ("Status", "TooManyRequests", 429)
    assert body["details"]["retryAfterSeconds"] == 1
    # POST is not retried by the client, so it sees the 429 and its header directly
    status, body, headers = api_status(
        core.create_namespaced_pod,
        "default",
        {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}},
    )
    assert status == 429
    assert headers.get("Retry-After") == "1"
    assert body["reason"] == "TooManyRequests"
    assert [e["status"] for e in running.observer.audit() if e["resource"] == "pods"] == [429, 429]


def test_partial_rates_fail_about_that_share_of_requests(sim):
    running, _, http = sim(api_error_rate=0.25, api_throttle_rate=0.25)
    codes = [http.get("/api/v1/nodes").status_code for _ in range(200)]
    assert set(codes) == {200, 429, 500}
    assert 25 <= codes.count(500) <= 75
    assert 25 <= codes.count(429) <= 75


def test_latency_delays_every_request_until_turned_off(sim):
    running, core, http = sim(api_latency_ms=150)
    started = time.monotonic()
    core.list_node()
    assert time.monotonic() - started >= 0.15
    started = time.monotonic()
    assert http.get("/version").status_code == 200
    assert time.monotonic() - started >= 0.15
    assert running.observer.faults(latency_ms=0)["latency_ms"] == 0
    timings = []
    for _ in range(3):
        started = time.monotonic()
        core.list_node()
        timings.append(time.monotonic() - started)
    assert min(timings) < 0.15


def test_rates_can_be_changed_at_run_time(sim):
    running, core, _ = sim()
    assert len(core.list_node().items) == 5
    settings = running.observer.faults(error_rate=1.0)
    assert settings["error_rate"] == 1.0
    assert api_status(core.list_node)[0] == 500
    running.observer.faults(error_rate=0.0)
    assert len(core.list_node().items) == 5


def test_a_fault_rule_fails_exactly_the_next_matching_requests(sim):
    running, core, _ = sim()
    running.observer.wait_for(
        lambda: (
            len([p for p in core.list_namespaced_pod("kube-system").items if p.status.phase == "Running"])
            == 5
        ),
        timeout=5,
        interval=0.05,
    )
    first, second, third = core.list_namespaced_pod("kube-system", label_selector="k8s-app=kube-proxy").items[
        :3
    ]
    since = len(running.observer.audit())
    assert running.observer.faults(count=2, status=500, verb="create", path="eviction")["rules"] == 1

    # requests that do not match pass: other verbs on the eviction path, other creates
    assert api_status(core.read_namespaced_pod, first.metadata.name, "kube-system")[0] == 200
    core.create_namespaced_pod(
        "default",
        {"metadata": {"name": "unaffected"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}},
    )
    status, body, _ = api_status(
        core.create_namespaced_pod_eviction,
        first.metadata.name,
        "kube-system",
        eviction(first.metadata.name, "kube-system"),
    )
    assert (status, body["kind"], body["code"]) == (500, "Status", 500)
    assert (
        api_status(
            core.create_namespaced_pod_eviction,
            second.metadata.name,
            "kube-system",
            eviction(second.metadata.name, "kube-system"),
        )[0]
        == 500
    )
    assert running.observer.faults()["rules"] == 0, "the rule is used up"
    core.create_namespaced_pod_eviction(
        third.metadata.name, "kube-system", eviction(third.metadata.name, "kube-system")
    )
    core.create_namespaced_pod_eviction(
        first.metadata.name, "kube-system", eviction(first.metadata.name, "kube-system")
    )

    audit = running.observer.audit(since)
    evictions = [(e["name"], e["status"]) for e in audit if e["subresource"] == "eviction"]
    assert evictions == [
        (first.metadata.name, 500),
        (second.metadata.name, 500),
        (third.metadata.name, 201),
        (first.metadata.name, 201),
    ]
    assert [e["status"] for e in audit if e["verb"] == "create" and e["subresource"] is None] == [201]
    faulted = [e for e in audit if e["status"] == 500]
    assert all(e["verb"] == "create" and e["mutating"] and "/eviction" in e["path"] for e in faulted)
    # the faulted evictions changed nothing; the later ones did
    timeline = [e for e in running.observer.timeline() if e["event"] == "pod_evicted"]
    assert [e["details"]["pod"] for e in timeline] == [
        f"kube-system/{third.metadata.name}",
        f"kube-system/{first.metadata.name}",
    ]


def test_fault_rules_can_throttle_with_retry_after_and_stack(sim):
    running, core, http = sim()
    running.observer.faults(
        rules=[
            {"count": 1, "status": 429, "verb": "patch", "path": "/nodes/", "retry_after": 7},
            {"count": 1, "status": 409, "verb": "patch"},
        ]
    )
    node = running.sim.node_names()[0]
    status, body, headers = api_status(core.patch_node, node, {"spec": {"unschedulable": True}})
    assert (status, headers.get("Retry-After"), body["details"]["retryAfterSeconds"]) == (429, "7", 7)
    status, body, _ = api_status(core.patch_node, node, {"spec": {"unschedulable": True}})
    assert (status, body["reason"]) == (409, "Conflict")
    assert core.patch_node(node, {"spec": {"unschedulable": True}}).spec.unschedulable is True
    statuses = [e["status"] for e in running.observer.audit() if e["verb"] == "patch"]
    assert statuses == [429, 409, 200]
