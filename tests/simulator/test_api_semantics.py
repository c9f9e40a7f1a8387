"""API fidelity pinned by the official `kubernetes` client (and httpx for raw HTTP): the semantics
flows rely on, each where a real API server behaves in a specific way."""

from __future__ import annotations

import datetime
import json
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import kubernetes
import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.watch import Watch

from simulator.controllers.common import node_name

VERSION = "1.31.4"
NODES = [node_name("aks-api", "pool", i) for i in range(2)]
NEVER_READY = 100_000  # simulated seconds: pods that run but never pass their readiness probe

SCENARIO = {
    "time_scale": 0.05,
    "cluster": {
        "name": "aks-api",
        "subscription_id": "00000000-0000-0000-0000-000000000000",
        "resource_group": "rg-api",
        "location": "westeurope",
        "kubernetes_version": VERSION,
    },
    "pools": [
        {
            "name": "pool",
            "count": 2,
            "orchestrator_version": VERSION,
            "node_image_version": "AKSUbuntu-2204gen2containerd-202502.05.0",
            "kernel": "5.15.0-1079-azure",
        }
    ],
    "workloads": [
        # one disruption allowed once all three are Ready
        {
            "kind": "Deployment",
            "namespace": "shop",
            "name": "web",
            "replicas": 3,
            "labels": {"app": "web"},
            "pdb": {"min_available": 2},
            "ready_seconds": 1,
            "termination_grace_seconds": 30,
        },
        # never any disruption allowed
        {
            "kind": "Deployment",
            "namespace": "shop",
            "name": "locked",
            "replicas": 2,
            "labels": {"app": "locked"},
            "pdb": {"min_available": 2},
        },
        # running but never Ready: only AlwaysAllow lets them be evicted
        {
            "kind": "Deployment",
            "namespace": "shop",
            "name": "warming",
            "replicas": 2,
            "labels": {"app": "warming"},
            "ready_seconds": NEVER_READY,
            "pdb": {"min_available": 1, "unhealthy_pod_eviction_policy": "AlwaysAllow"},
        },
        {
            "kind": "Deployment",
            "namespace": "shop",
            "name": "cold",
            "replicas": 2,
            "labels": {"app": "cold"},
            "ready_seconds": NEVER_READY,
            "pdb": {"min_available": 1},
        },
    ],
}


@dataclass
class Api:
    sim: object
    api_client: client.ApiClient
    core: client.CoreV1Api
    apps: client.AppsV1Api
    policy: client.PolicyV1Api
    leases: client.CoordinationV1Api
    http: httpx.Client

    @property
    def store(self):
        return self.sim.sim.cluster.store


@pytest.fixture
def api(start_sim) -> Iterator[Api]:
    sim = start_sim(SCENARIO)
    api_client = kubernetes.config.new_client_from_config(config_file=sim.kubeconfig)
    endpoints = sim.endpoints
    http = httpx.Client(
        base_url=endpoints.kube_api,
        verify=ssl.create_default_context(cafile=endpoints.ca_bundle),
        timeout=30,
        headers={"Authorization": f"Bearer {endpoints.token}"},
    )
    yield Api(
        sim,
        api_client,
        client.CoreV1Api(api_client),
        client.AppsV1Api(api_client),
        client.PolicyV1Api(api_client),
        client.CoordinationV1Api(api_client),
        http,
    )
    http.close()
    api_client.close()


def poll(condition: Callable[[], object], timeout: float = 15, interval: float = 0.05) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(interval)


def failure(call: Callable[[], object], code: int, reason: str | None) -> dict:
    """Run a call that must fail; check the HTTP code and the Status body, and return the body."""
    with pytest.raises(ApiException) as caught:
        call()
    assert caught.value.status == code, caught.value.body
    status = json.loads(caught.value.body)
    assert (status["kind"], status["apiVersion"], status["status"], status["code"]) == (
        "Status",
        "v1",
        "Failure",
        code,
    )
    assert status.get("reason") == reason
    assert status["message"]
    return status


def pod_body(name: str, labels: dict | None = None, **spec: object) -> dict:
    return {
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}], **spec},
    }


def pending_pod_body(name: str, labels: dict | None = None) -> dict:
    return pod_body(name, labels, nodeSelector={"no-such-label": "anywhere"})


def names(items) -> list[str]:
    return sorted(i.metadata.name for i in items)


def wait_ready(api: Api, app: str, allowed: int) -> None:
    poll(
        lambda: (
            api.policy.read_namespaced_pod_disruption_budget(app, "shop").status.disruptions_allowed
            == allowed
            and api.apps.read_namespaced_deployment(app, "shop").status.ready_replicas
        )
    )


def eviction(name: str, namespace: str = "shop") -> client.V1Eviction:
    return client.V1Eviction(
        api_version="policy/v1", kind="Eviction", metadata=client.V1ObjectMeta(name=name, namespace=namespace)
    )


# ---- authentication, discovery, status bodies ------------------------------------------------


def test_requests_without_a_valid_token_get_401(api: Api) -> None:
    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": api.http.headers["Authorization"][:-1]},
    ):
        trust = ssl.create_default_context(cafile=api.sim.endpoints.ca_bundle)
        response = httpx.get(f"{api.sim.endpoints.kube_api}/api/v1/nodes", headers=headers, verify=trust)
        assert response.status_code == 401
        assert response.json() == {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": "Unauthorized",
            "reason": "Unauthorized",
            "code": 401,
        }
    api.api_client.configuration.api_key = {}
    api.api_client.configuration.refresh_api_key_hook = None
    failure(lambda: api.core.list_node(), 401, "Unauthorized")
    assert [e["status"] for e in api.sim.observer.audit()] == [401] * 4


def test_discovery_lists_the_eviction_subresource_and_version(api: Api) -> None:
    core = api.http.get("/api/v1").json()
    eviction_entry = next(r for r in core["resources"] if r["name"] == "pods/eviction")
    assert (eviction_entry["group"], eviction_entry["version"], eviction_entry["kind"]) == (
        "policy",
        "v1",
        "Eviction",
    )
    assert eviction_entry["verbs"] == ["create"]
    resources = {r.name: r for r in api.core.get_api_resources().resources}
    assert {"pods", "pods/eviction", "pods/log", "nodes", "nodes/status", "namespaces", "events"} <= set(
        resources
    )
    assert resources["pods/eviction"].group == "policy" and resources["pods/eviction"].kind == "Eviction"
    assert resources["pods"].namespaced and not resources["nodes"].namespaced
    groups = {
        g.name: g.preferred_version.group_version
        for g in client.ApisApi(api.api_client).get_api_versions().groups
    }
    assert groups == {
        "apps": "apps/v1",
        "policy": "policy/v1",
        "coordination.k8s.io": "coordination.k8s.io/v1",
        "batch": "batch/v1",
        "rbac.authorization.k8s.io": "rbac.authorization.k8s.io/v1",
    }
    assert "leases" in {
        r.name for r in client.CoordinationV1Api(api.api_client).get_api_resources().resources
    }

    version = client.VersionApi(api.api_client).get_code()
    assert (version.git_version, version.major, version.minor) == (f"v{VERSION}", "1", "31")
    assert api.http.get("/apis/no.such.group/v1").status_code == 404


def test_every_object_has_uid_resource_version_generation_and_creation_time(api: Api) -> None:
    api.core.create_namespaced_pod("shop", pod_body("extra"))
    seen = set()
    for group_version in ["v1", "apps/v1", "policy/v1", "coordination.k8s.io/v1"]:
        prefix = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
        for resource in api.http.get(prefix).json()["resources"]:
            if "/" in resource["name"]:
                continue
            listed = api.http.get(f"{prefix}/{resource['name']}").json()
            assert (
                listed["kind"] == f"{resource['kind']}List" and int(listed["metadata"]["resourceVersion"]) > 0
            )
            for item in listed["items"]:
                meta = item["metadata"]
                assert meta["uid"] and meta["resourceVersion"].isdigit(), meta
                assert isinstance(meta["generation"], int) and meta["generation"] >= 1, meta
                datetime.datetime.strptime(meta["creationTimestamp"], "%Y-%m-%dT%H:%M:%SZ")
                seen.add(resource["kind"])
    assert {"Namespace", "Node", "Pod", "Deployment", "ReplicaSet", "PodDisruptionBudget", "Lease"} <= seen
    pod = api.core.read_namespaced_pod("extra", "shop")
    assert pod.metadata.uid and pod.metadata.resource_version and pod.metadata.generation >= 1
    assert pod.metadata.creation_timestamp.tzinfo is not None


# ---- list: selectors and pagination ----------------------------------------------------------


def test_list_with_label_selectors(api: Api) -> None:
    api.core.create_namespace({"metadata": {"name": "sel"}})
    for name, labels in {
        "a": {"tier": "web", "env": "prod"},
        "b": {"tier": "api", "env": "prod"},
        "c": {"tier": "db"},
        "d": {},
    }.items():
        api.core.create_namespaced_pod("sel", pending_pod_body(name, labels))

    def select(selector: str) -> list[str]:
        return names(api.core.list_namespaced_pod("sel", label_selector=selector).items)

    assert select("") == ["a", "b", "c", "d"]
    assert select("tier=web") == select("tier==web") == ["a"]
    assert select("tier!=web") == ["b", "c", "d"]  # a missing label is "not web"
    assert select("tier in (web,api)") == ["a", "b"]
    assert select("tier notin (web,api)") == ["c", "d"]
    assert select("env") == ["a", "b"]
    assert select("!env") == ["c", "d"]
    assert select("tier in (web, api,db),!env") == ["c"]
    assert select("tier=nothing") == []
    status = failure(
        lambda: api.core.list_namespaced_pod("sel", label_selector="tier in web"), 400, "BadRequest"
    )
    assert "tier in web" in status["message"] or "(" in status["message"]


def test_list_with_field_selectors(api: Api) -> None:
    api.core.create_namespaced_pod("shop", pending_pod_body("stuck"))
    wait_ready(api, "web", 1)
    everything = api.core.list_pod_for_all_namespaces().items
    for node in NODES:
        on_node = api.core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={node}").items
        assert names(on_node) == names(p for p in everything if p.spec.node_name == node) and on_node
    assert names(api.core.list_pod_for_all_namespaces(field_selector="spec.nodeName=").items) == ["stuck"]
    assert names(api.core.list_namespaced_pod("shop", field_selector="metadata.name=stuck").items) == [
        "stuck"
    ]
    assert names(api.core.list_namespaced_pod("shop", field_selector="status.phase=Pending").items) == [
        "stuck"
    ]
    running = api.core.list_namespaced_pod("shop", field_selector="status.phase=Running").items
    assert names(running) == names(p for p in everything if p.status.phase == "Running") and len(running) == 9
    both = api.core.list_pod_for_all_namespaces(
        field_selector=f"status.phase!=Running,spec.nodeName!={NODES[0]}"
    )
    assert names(both.items) == ["stuck"]
    combined = api.core.list_namespaced_pod(
        "shop", label_selector="app=web", field_selector=f"spec.nodeName={NODES[0]}"
    )
    assert names(combined.items) == names(
        p for p in everything if p.metadata.labels.get("app") == "web" and p.spec.node_name == NODES[0]
    )
    assert (
        len(api.core.list_namespaced_pod("shop", field_selector="spec.schedulerName=default-scheduler").items)
        == 10
    )

    status = failure(
        lambda: api.core.list_namespaced_pod("shop", field_selector="spec.containers=app"), 400, "BadRequest"
    )
    assert "field label not supported: spec.containers" in status["message"]
    failure(lambda: api.core.list_node(field_selector="spec.nodeName=x"), 400, "BadRequest")

    # an unset bool field reads "false", as the typed objects of a real server do
    api.core.patch_node(NODES[1], {"spec": {"unschedulable": True}})
    assert names(api.core.list_node(field_selector="spec.unschedulable=false").items) == [NODES[0]]
    assert names(api.core.list_node(field_selector="spec.unschedulable=true").items) == [NODES[1]]
    assert names(api.core.list_namespace(field_selector="metadata.name=shop").items) == ["shop"]


def test_limit_and_continue_return_every_item_exactly_once(api: Api) -> None:
    # "team" is a prefix of "team-a": etcd orders keys as text, so "team-a/..." sorts before "team/..."
    for namespace in ("team", "team-a", "team.b"):
        api.core.create_namespace({"metadata": {"name": namespace}})
        for i in range(3):
            api.core.create_namespaced_pod(namespace, pending_pod_body(f"p{i}", {"page": "yes"}))
    expected = [(p.metadata.namespace, p.metadata.name) for p in api.core.list_pod_for_all_namespaces().items]
    assert len(expected) == len(set(expected))

    for limit, selector in ((1, ""), (2, ""), (4, "page=yes"), (100, "page=yes")):
        seen, token, pages = [], None, 0
        while True:
            page = api.core.list_pod_for_all_namespaces(limit=limit, _continue=token, label_selector=selector)
            pages += 1
            seen += [(p.metadata.namespace, p.metadata.name) for p in page.items]
            assert len(page.items) <= limit
            token = page.metadata._continue
            if not token:
                assert page.metadata.remaining_item_count is None
                break
            assert page.metadata.remaining_item_count == len(
                [k for k in expected if not selector or k[0].startswith("team")]
            ) - len(seen)
        want = [k for k in expected if not selector or k[0].startswith("team")]
        assert sorted(seen) == sorted(want) and len(seen) == len(set(seen)), (limit, selector)
        assert seen == want  # the same order as an unpaginated list
        assert pages == max(1, -(-len(want) // limit))
    failure(lambda: api.core.list_pod_for_all_namespaces(limit=1, _continue="not-a-token"), 400, "BadRequest")


# ---- watch ------------------------------------------------------------------------------------


def test_watch_sees_added_modified_deleted_from_a_resource_version(api: Api) -> None:
    api.core.create_namespace({"metadata": {"name": "w"}})
    start = api.core.list_namespaced_pod("w").metadata.resource_version
    api.core.create_namespaced_pod("w", pending_pod_body("target", {"tier": "web"}))
    api.core.create_namespaced_pod("w", pending_pod_body("other"))
    api.core.patch_namespaced_pod("target", "w", {"metadata": {"labels": {"seen": "yes"}}})
    api.core.delete_namespaced_pod("target", "w", grace_period_seconds=0)

    events = []
    watch = Watch()
    for event in watch.stream(
        api.core.list_namespaced_pod,
        "w",
        resource_version=start,
        timeout_seconds=5,
        field_selector="metadata.name=target",
    ):
        events.append(event)
        if event["type"] == "DELETED":
            watch.stop()
    types = [e["type"] for e in events]
    assert types[0] == "ADDED" and types[-1] == "DELETED" and set(types[1:-1]) == {"MODIFIED"}
    assert all(e["object"].metadata.name == "target" for e in events)
    versions = [int(e["object"].metadata.resource_version) for e in events]
    assert versions == sorted(set(versions)) and versions[0] > int(start)
    assert any(e["object"].metadata.labels.get("seen") == "yes" for e in events if e["type"] == "MODIFIED")
    assert watch.resource_version == str(versions[-1])

    # a live watch: events made after it started arrive too
    live: list[tuple[str, str, str]] = []

    def follow() -> None:
        for event in Watch().stream(
            api.core.list_namespaced_pod,
            "w",
            resource_version=str(versions[-1]),
            timeout_seconds=3,
            label_selector="tier=web",
        ):
            if event["type"] != "MODIFIED":  # the scheduler marks pending pods Unschedulable
                meta = event["object"].metadata
                live.append((event["type"], meta.name, meta.labels.get("tier")))
            if live[-1:] == [("ADDED", "other", "web")]:
                return

    thread = threading.Thread(target=follow)
    thread.start()
    poll(lambda: any(e["verb"] == "watch" and "tier" in e["query"] for e in api.sim.observer.audit()))
    api.core.create_namespaced_pod("w", pending_pod_body("late", {"tier": "web"}))
    api.core.patch_namespaced_pod(
        "late", "w", {"metadata": {"labels": {"tier": "api"}}}
    )  # leaves the selection
    api.core.patch_namespaced_pod("late", "w", {"metadata": {"labels": {"tier": "web"}}})  # enters it again
    api.core.patch_namespaced_pod("other", "w", {"metadata": {"labels": {"tier": "web"}}})
    thread.join(timeout=10)
    # leaving the selection is a DELETED with the last content that matched
    assert live == [
        ("ADDED", "late", "web"),
        ("DELETED", "late", "web"),
        ("ADDED", "late", "web"),
        ("ADDED", "other", "web"),
    ]


def test_watch_ends_at_timeout_seconds(api: Api) -> None:
    api.core.create_namespace({"metadata": {"name": "quiet"}})
    rv = api.core.list_namespaced_pod("quiet").metadata.resource_version
    started = time.monotonic()
    events = list(
        Watch().stream(api.core.list_namespaced_pod, "quiet", resource_version=rv, timeout_seconds=1)
    )
    elapsed = time.monotonic() - started
    assert events == [] and 0.9 <= elapsed < 3


def test_watch_from_a_compacted_resource_version_is_410_gone(api: Api) -> None:
    old = api.core.list_namespaced_pod("shop").metadata.resource_version
    api.core.create_namespaced_pod("shop", pending_pod_body("after"))
    api.sim.sim.call(api.store.compact)  # what etcd compaction does to old revisions

    with pytest.raises(ApiException) as caught:
        list(Watch().stream(api.core.list_namespaced_pod, "shop", resource_version=old, timeout_seconds=2))
    assert caught.value.status == 410 and "Expired" in caught.value.reason

    with api.http.stream(
        "GET",
        "/api/v1/namespaces/shop/pods",
        params={"watch": "true", "resourceVersion": old, "timeoutSeconds": "2"},
    ) as response:
        assert response.status_code == 200
        lines = [json.loads(line) for line in response.iter_lines() if line]
    assert len(lines) == 1 and lines[0]["type"] == "ERROR"
    status = lines[0]["object"]
    assert (status["kind"], status["code"], status["reason"]) == ("Status", 410, "Expired")
    assert status["message"].startswith(f"too old resource version: {old}")

    api.core.create_namespace({"metadata": {"name": "calm"}})
    current = api.core.list_namespaced_pod("calm").metadata.resource_version
    watch = Watch().stream(api.core.list_namespaced_pod, "calm", resource_version=current, timeout_seconds=1)
    assert list(watch) == []


def test_watch_list_sends_initial_events_then_a_bookmark(api: Api) -> None:
    params = {
        "watch": "true",
        "sendInitialEvents": "true",
        "resourceVersionMatch": "NotOlderThan",
        "allowWatchBookmarks": "true",
        "timeoutSeconds": "1",
    }
    expected = names(api.core.list_namespaced_pod("shop").items)
    with api.http.stream("GET", "/api/v1/namespaces/shop/pods", params=params) as response:
        lines = [json.loads(line) for line in response.iter_lines() if line]
    initial = [e for e in lines if e["type"] == "ADDED"]
    assert sorted(e["object"]["metadata"]["name"] for e in initial) == expected
    bookmark = lines[len(initial)]
    assert bookmark["type"] == "BOOKMARK"
    assert bookmark["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}
    assert int(bookmark["object"]["metadata"]["resourceVersion"]) >= max(
        int(e["object"]["metadata"]["resourceVersion"]) for e in initial
    )

    bad = api.http.get("/api/v1/namespaces/shop/pods", params={"watch": "true", "sendInitialEvents": "true"})
    assert bad.status_code == 422 and bad.json()["reason"] == "Invalid"


# ---- writes: conflicts and validation --------------------------------------------------------


def test_create_twice_is_409_already_exists(api: Api) -> None:
    api.core.create_namespaced_pod("shop", pending_pod_body("twice"))
    status = failure(
        lambda: api.core.create_namespaced_pod("shop", pending_pod_body("twice")), 409, "AlreadyExists"
    )
    assert status["details"]["name"] == "twice" and status["details"]["kind"] == "pods"
    lease = {"metadata": {"name": "lock"}, "spec": {"holderIdentity": "a"}}
    api.leases.create_namespaced_lease("shop", lease)
    status = failure(lambda: api.leases.create_namespaced_lease("shop", lease), 409, "AlreadyExists")
    assert status["details"]["group"] == "coordination.k8s.io"


def test_update_with_a_stale_resource_version_is_409_conflict(api: Api) -> None:
    created = api.leases.create_namespaced_lease(
        "shop", {"metadata": {"name": "lock"}, "spec": {"holderIdentity": "a"}}
    )
    stale = created.metadata.resource_version
    created.spec.holder_identity = "b"
    updated = api.leases.replace_namespaced_lease("lock", "shop", created)
    assert updated.spec.holder_identity == "b" and int(updated.metadata.resource_version) > int(stale)

    body = {"metadata": {"name": "lock", "resourceVersion": stale}, "spec": {"holderIdentity": "c"}}
    status = failure(lambda: api.leases.replace_namespaced_lease("lock", "shop", body), 409, "Conflict")
    assert "the object has been modified" in status["message"]
    assert api.leases.read_namespaced_lease("lock", "shop").spec.holder_identity == "b"

    pod = api.core.create_namespaced_pod("shop", pending_pod_body("versioned"))
    api.core.patch_namespaced_pod("versioned", "shop", {"metadata": {"labels": {"v": "2"}}})
    pod.metadata.labels = {"v": "stale"}
    failure(lambda: api.core.replace_namespaced_pod("versioned", "shop", pod), 409, "Conflict")


def test_lease_update_without_resource_version_is_422(api: Api) -> None:
    api.leases.create_namespaced_lease(
        "shop", {"metadata": {"name": "lock"}, "spec": {"holderIdentity": "a"}}
    )
    body = {"metadata": {"name": "lock"}, "spec": {"holderIdentity": "b"}}
    status = failure(lambda: api.leases.replace_namespaced_lease("lock", "shop", body), 422, "Invalid")
    assert status["details"]["causes"][0]["field"] == "metadata.resourceVersion"
    assert api.leases.read_namespaced_lease("lock", "shop").spec.holder_identity == "a"


def test_lease_micro_times_need_six_fractional_digits(api: Api) -> None:
    url = "/apis/coordination.k8s.io/v1/namespaces/shop/leases"

    def lease(name: str, when: str) -> dict:
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": name},
            "spec": {
                "holderIdentity": "me",
                "leaseDurationSeconds": 15,
                "acquireTime": when,
                "renewTime": when,
            },
        }

    for text in (
        "2026-03-01T10:00:00Z",
        "2026-03-01T10:00:00.123Z",
        "2026-03-01T10:00:00.1234567Z",
        "2026-03-01 10:00:00.000000Z",
    ):
        response = api.http.post(url, json=lease("bad", text))
        assert response.status_code == 400 and response.json()["reason"] == "BadRequest", text
        assert f'parsing time "{text}"' in response.json()["message"]
    created = api.http.post(url, json=lease("good", "2026-03-01T10:00:00.000000Z"))
    assert created.status_code == 201 and created.json()["spec"]["renewTime"] == "2026-03-01T10:00:00.000000Z"
    # any offset parses; the server writes MicroTimes back in UTC
    created = api.http.post(url, json=lease("offset", "2026-03-01T12:00:00.000001+02:00"))
    assert (
        created.status_code == 201 and created.json()["spec"]["acquireTime"] == "2026-03-01T10:00:00.000001Z"
    )

    # the Python client writes datetimes with isoformat(): no fraction at all when microseconds are 0
    def typed(name: str, when: datetime.datetime) -> client.V1Lease:
        return client.V1Lease(
            metadata=client.V1ObjectMeta(name=name),
            spec=client.V1LeaseSpec(holder_identity="me", renew_time=when),
        )

    whole_second = datetime.datetime(2026, 3, 1, 10, tzinfo=datetime.UTC)
    status = failure(
        lambda: api.leases.create_namespaced_lease("shop", typed("whole", whole_second)), 400, "BadRequest"
    )
    assert "2026-03-01T10:00:00+00:00" in status["message"]
    with_micros = whole_second.replace(microsecond=250)
    assert (
        api.leases.create_namespaced_lease("shop", typed("micro", with_micros)).spec.renew_time == with_micros
    )
    assert api.http.get(f"{url}/micro").json()["spec"]["renewTime"] == "2026-03-01T10:00:00.000250Z"

    # a patch body stays a dict, so its MicroTime text reaches the server as written
    renewed = api.leases.patch_namespaced_lease(
        "good", "shop", {"spec": {"renewTime": "2026-03-01T10:00:10.500000Z"}}
    )
    assert renewed.spec.renew_time == datetime.datetime(2026, 3, 1, 10, 0, 10, 500000, tzinfo=datetime.UTC)
    failure(
        lambda: api.leases.patch_namespaced_lease(
            "good", "shop", {"spec": {"renewTime": "2026-03-01T10:00:11Z"}}
        ),
        400,
        "BadRequest",
    )
    assert api.leases.read_namespaced_lease("good", "shop").spec.renew_time == renewed.spec.renew_time


def test_strategic_merge_json_merge_and_json_patch(api: Api) -> None:
    before = api.apps.read_namespaced_deployment("web", "shop")
    container = before.spec.template.spec.containers[0]
    assert container.resources.requests and container.readiness_probe

    # strategic merge: containers merge by name, so the rest of the container stays
    patched = api.apps.patch_namespaced_deployment(
        "web",
        "shop",
        {"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}}}},
    )
    merged = patched.spec.template.spec.containers
    assert [(c.name, c.image) for c in merged] == [("web", "nginx:1.27")]
    assert merged[0].resources.requests == container.resources.requests and merged[0].readiness_probe
    assert patched.metadata.generation == before.metadata.generation + 1

    # JSON merge patch: lists are replaced whole; null removes a key
    api.apps.patch_namespaced_deployment("web", "shop", {"metadata": {"labels": {"drop-me": "x"}}})
    replaced = api.apps.patch_namespaced_deployment(
        "web",
        "shop",
        {
            "metadata": {"labels": {"drop-me": None}},
            "spec": {"template": {"spec": {"containers": [{"name": "web", "image": "nginx:1.28"}]}}},
        },
        _content_type="application/merge-patch+json",
    )
    only = replaced.spec.template.spec.containers
    assert [(c.name, c.image, c.resources, c.readiness_probe) for c in only] == [
        ("web", "nginx:1.28", None, None)
    ]
    assert "drop-me" not in replaced.metadata.labels

    # JSON patch: a list of operations
    ops = [
        {"op": "add", "path": "/metadata/labels/patched", "value": "yes"},
        {"op": "replace", "path": "/spec/replicas", "value": 4},
    ]
    result = api.apps.patch_namespaced_deployment("web", "shop", ops)
    assert result.metadata.labels["patched"] == "yes" and result.spec.replicas == 4
    poll(lambda: len(api.core.list_namespaced_pod("shop", label_selector="app=web").items) >= 4)
    failure(
        lambda: api.apps.patch_namespaced_deployment(
            "web", "shop", [{"op": "test", "path": "/spec/replicas", "value": 9}]
        ),
        422,
        "Invalid",
    )

    # a node cordon is a strategic merge patch; uncordon sends null
    api.core.patch_node(NODES[0], {"spec": {"unschedulable": True}})
    assert api.core.read_node(NODES[0]).spec.unschedulable is True
    api.core.patch_node(NODES[0], {"spec": {"unschedulable": None}})
    assert api.core.read_node(NODES[0]).spec.unschedulable is None
    assert [e["event"] for e in api.sim.observer.timeline() if e["node"] == NODES[0]][-2:] == [
        "cordoned",
        "uncordoned",
    ]

    unknown = api.http.patch(
        "/apis/apps/v1/namespaces/shop/deployments/web",
        content='{"spec":{}}',
        headers={"Content-Type": "application/yaml"},
    )
    assert unknown.status_code == 415 and unknown.json()["reason"] == "UnsupportedMediaType"
    failure(lambda: api.apps.patch_namespaced_deployment("nope", "shop", {"metadata": {}}), 404, "NotFound")


def test_patch_with_a_stale_resource_version_is_409(api: Api) -> None:
    api.core.create_namespaced_pod("shop", pending_pod_body("patched"))

    def unschedulable() -> bool:  # the scheduler's last change to a pod it cannot place
        conditions = api.core.read_namespaced_pod("patched", "shop").status.conditions or []
        return any(c.reason == "Unschedulable" for c in conditions)

    poll(unschedulable)
    stale = api.core.read_namespaced_pod("patched", "shop").metadata.resource_version
    fresh = api.core.patch_namespaced_pod(
        "patched", "shop", {"metadata": {"labels": {"a": "1"}, "resourceVersion": stale}}
    )
    assert fresh.metadata.labels == {"a": "1"}
    for content_type in ("application/strategic-merge-patch+json", "application/merge-patch+json"):
        status = failure(
            lambda ct=content_type: api.core.patch_namespaced_pod(
                "patched",
                "shop",
                {"metadata": {"labels": {"a": "2"}, "resourceVersion": stale}},
                _content_type=ct,
            ),
            409,
            "Conflict",
        )
        assert "the object has been modified" in status["message"]
    assert api.core.read_namespaced_pod("patched", "shop").metadata.labels == {"a": "1"}


# ---- delete -----------------------------------------------------------------------------------


def test_delete_preconditions_and_graceful_pod_deletion(api: Api) -> None:
    wait_ready(api, "web", 1)
    pod = api.core.list_namespaced_pod("shop", label_selector="app=web").items[0]
    name = pod.metadata.name
    wrong_uid = client.V1DeleteOptions(
        preconditions=client.V1Preconditions(uid="00000000-0000-0000-0000-000000000000")
    )
    status = failure(lambda: api.core.delete_namespaced_pod(name, "shop", body=wrong_uid), 409, "Conflict")
    assert "Precondition failed: UID in precondition" in status["message"]
    wrong_rv = client.V1DeleteOptions(preconditions=client.V1Preconditions(resource_version="1"))
    failure(lambda: api.core.delete_namespaced_pod(name, "shop", body=wrong_rv), 409, "Conflict")
    assert api.core.read_namespaced_pod(name, "shop").metadata.deletion_timestamp is None

    right = client.V1DeleteOptions(
        preconditions=client.V1Preconditions(uid=pod.metadata.uid), grace_period_seconds=30
    )
    deleted = api.core.delete_namespaced_pod(name, "shop", body=right)
    assert (
        deleted.metadata.deletion_timestamp is not None
        and deleted.metadata.deletion_grace_period_seconds == 30
    )
    terminating = api.core.read_namespaced_pod(name, "shop")
    assert (
        terminating.metadata.deletion_timestamp is not None and terminating.metadata.uid == pod.metadata.uid
    )

    def gone() -> bool:
        try:
            api.core.read_namespaced_pod(name, "shop")
        except ApiException as exc:
            return exc.status == 404
        return False

    poll(gone, timeout=10)
    failure(lambda: api.core.delete_namespaced_pod(name, "shop"), 404, "NotFound")

    api.leases.create_namespaced_lease(
        "shop", {"metadata": {"name": "lock"}, "spec": {"holderIdentity": "a"}}
    )
    lease_uid = api.leases.read_namespaced_lease("lock", "shop").metadata.uid
    # a Lease delete answers with a Status naming what went (a pod delete answers with the pod)
    status = api.leases.delete_namespaced_lease("lock", "shop")
    assert (status["kind"], status["status"]) == ("Status", "Success")
    assert (status["details"]["name"], status["details"]["uid"]) == ("lock", lease_uid)
    failure(lambda: api.leases.read_namespaced_lease("lock", "shop"), 404, "NotFound")


# ---- eviction ---------------------------------------------------------------------------------


def test_eviction_success_is_201_with_a_status(api: Api) -> None:
    wait_ready(api, "web", 1)
    pod = api.core.list_namespaced_pod("shop", label_selector="app=web").items[0].metadata.name
    data, code, _ = api.core.create_namespaced_pod_eviction_with_http_info(pod, "shop", eviction(pod))
    assert code == 201 and (data.kind, data.api_version) == ("Status", "v1")
    evicted = api.core.read_namespaced_pod(pod, "shop")
    assert evicted.metadata.deletion_timestamp is not None
    events = [e for e in api.sim.observer.timeline() if e["event"] == "pod_evicted"]
    assert [e["details"]["pod"] for e in events] == [f"shop/{pod}"]
    assert api.sim.observer.invariants()["pdb_violations"] == 0


def test_eviction_refused_by_a_disruption_budget_is_429(api: Api) -> None:
    wait_ready(api, "locked", 0)
    pod = api.core.list_namespaced_pod("shop", label_selector="app=locked").items[0].metadata.name
    with pytest.raises(ApiException) as caught:
        api.core.create_namespaced_pod_eviction(pod, "shop", eviction(pod))
    assert caught.value.status == 429
    assert "retry-after" not in {k.lower() for k in caught.value.headers}
    status = json.loads(caught.value.body)
    assert (status["kind"], status["reason"], status["code"]) == ("Status", "TooManyRequests", 429)
    assert status["message"] == "Cannot evict pod as it would violate the pod's disruption budget."
    assert status["details"]["causes"][0]["reason"] == "DisruptionBudget"
    assert (
        "The disruption budget locked needs 2 healthy pods and has 2 currently"
        in status["details"]["causes"][0]["message"]
    )
    assert api.core.read_namespaced_pod(pod, "shop").metadata.deletion_timestamp is None
    assert api.sim.observer.invariants()["pdb_violations"] == 0


def test_eviction_errors(api: Api) -> None:
    wait_ready(api, "web", 1)
    pod = api.core.list_namespaced_pod("shop", label_selector="app=web").items[0].metadata.name
    status = failure(
        lambda: api.core.create_namespaced_pod_eviction(pod, "shop", eviction("someone-else")),
        400,
        "BadRequest",
    )
    assert "name in URL does not match name in Eviction object" in status["message"]
    status = failure(
        lambda: api.core.create_namespaced_pod_eviction("ghost", "shop", eviction("ghost")), 404, "NotFound"
    )
    assert status["details"]["name"] == "ghost"

    api.policy.create_namespaced_pod_disruption_budget(
        "shop",
        {
            "metadata": {"name": "web-too"},
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "web"}}},
        },
    )
    with pytest.raises(ApiException) as caught:
        api.core.create_namespaced_pod_eviction(pod, "shop", eviction(pod))
    assert caught.value.status == 500
    assert "more than one PodDisruptionBudget" in json.loads(caught.value.body)["message"]
    assert api.core.read_namespaced_pod(pod, "shop").metadata.deletion_timestamp is None

    # a PDB with an empty selector matches nothing for eviction
    api.policy.delete_namespaced_pod_disruption_budget("web-too", "shop")
    api.policy.create_namespaced_pod_disruption_budget(
        "shop", {"metadata": {"name": "everything"}, "spec": {"minAvailable": "100%", "selector": {}}}
    )
    _, code, _ = api.core.create_namespaced_pod_eviction_with_http_info(pod, "shop", eviction(pod))
    assert code == 201


def test_pending_pods_are_evicted_without_consulting_budgets(api: Api) -> None:
    api.core.create_namespaced_pod("shop", pending_pod_body("queued", {"app": "locked"}))
    wait_ready(api, "locked", 0)
    assert api.core.read_namespaced_pod("queued", "shop").status.phase == "Pending"
    _, code, _ = api.core.create_namespaced_pod_eviction_with_http_info("queued", "shop", eviction("queued"))
    assert code == 201
    failure(lambda: api.core.read_namespaced_pod("queued", "shop"), 404, "NotFound")


def test_unhealthy_pod_eviction_policy(api: Api) -> None:
    def running(app: str) -> list[str]:
        pods = api.core.list_namespaced_pod("shop", label_selector=f"app={app}").items
        return [p.metadata.name for p in pods if p.status.phase == "Running"] if len(pods) == 2 else []

    warming, cold = poll(lambda: running("warming")), poll(lambda: running("cold"))
    assert api.policy.read_namespaced_pod_disruption_budget("warming", "shop").status.current_healthy == 0

    # AlwaysAllow: a running pod that is not Ready may go even though no disruption is allowed
    _, code, _ = api.core.create_namespaced_pod_eviction_with_http_info(
        warming[0], "shop", eviction(warming[0])
    )
    assert code == 201
    # IfHealthyBudget (the default): only while the budget is healthy, which it is not
    status = failure(
        lambda: api.core.create_namespaced_pod_eviction(cold[0], "shop", eviction(cold[0])),
        429,
        "TooManyRequests",
    )
    assert status["details"]["causes"][0]["reason"] == "DisruptionBudget"
    assert api.sim.observer.invariants()["pdb_violations"] == 0


# ---- pods/log ---------------------------------------------------------------------------------


def test_pod_log_returns_the_container_output_as_text(api: Api) -> None:
    nsenter = ["nsenter", "--target", "1", "--mount", "--uts", "--ipc", "--net", "--pid", "--"]
    for name, privileged in (("kernel", True), ("unprivileged", False)):
        api.core.create_namespaced_pod(
            "shop",
            {
                "metadata": {"name": name},
                "spec": {
                    "nodeName": NODES[1],
                    "hostPID": True,
                    "restartPolicy": "Never",
                    "containers": [
                        {
                            "name": "probe",
                            "image": "busybox",
                            "command": [*nsenter, "uname", "-r"],
                            "securityContext": {"privileged": privileged},
                        }
                    ],
                },
            },
        )

    def finished(name: str) -> str | None:
        phase = api.core.read_namespaced_pod(name, "shop").status.phase
        return phase if phase in ("Succeeded", "Failed") else None

    assert poll(lambda: finished("kernel")) == "Succeeded"
    assert api.core.read_namespaced_pod_log("kernel", "shop") == "5.15.0-1079-azure\n"
    assert poll(lambda: finished("unprivileged")) == "Failed"
    assert "Operation not permitted" in api.core.read_namespaced_pod_log("unprivileged", "shop")
    response = api.http.get("/api/v1/namespaces/shop/pods/kernel/log")
    assert (
        response.headers["content-type"].startswith("text/plain") and response.text == "5.15.0-1079-azure\n"
    )
    failure(lambda: api.core.read_namespaced_pod_log("ghost", "shop"), 404, "NotFound")
