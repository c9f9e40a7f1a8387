"""The ARM emulator pinned by the real Azure SDK (azure-mgmt-containerservice, default api-version):
resources, upgrade rules with AKS's codes, long-running operations, and upgrades that really replace
nodes on the simulated Kubernetes side."""

from __future__ import annotations

import base64
import copy
import json
import ssl
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
from azure.core import MatchConditions
from azure.core.credentials import AccessToken
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
)
from azure.mgmt.containerservice import ContainerServiceClient
from kubernetes import client, config

from simulator.controllers.common import node_name
from simulator.scenario import parse_scenario
from tests.support import RunningSim, events, pinned_pod, scenario_dict

SCALE = 0.01
SUB = "00000000-0000-0000-0000-000000000000"
RG, NAME = "rg-demo", "aks-demo"
OLD_IMAGE = "AKSUbuntu-2204gen2containerd-202501.12.0"
NEW_IMAGE = "AKSUbuntu-2204gen2containerd-202502.05.0"
NEW_KERNEL = "5.15.0-1090-azure"
POOL_LABEL = "kubernetes.azure.com/agentpool"
IMAGE_LABEL = "kubernetes.azure.com/node-image-version"


class StaticToken:
    def __init__(self, token: str):
        self.token = token

    def get_token(self, *scopes: str, **kwargs: object) -> AccessToken:
        return AccessToken(self.token, int(time.time()) + 3600)


def tls(sim: RunningSim) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=sim.endpoints.ca_bundle)


def aks_client(sim: RunningSim, token: str | None = None) -> ContainerServiceClient:
    ep = sim.endpoints
    return ContainerServiceClient(
        StaticToken(token or ep.token),
        SUB,
        base_url=ep.arm,
        connection_verify=ep.ca_bundle,
        polling_interval=0.2,
        retry_total=2,
    )


@pytest.fixture
def kube() -> Iterator[Callable[[RunningSim], client.CoreV1Api]]:
    opened: list[client.ApiClient] = []

    def make(sim: RunningSim, kubeconfig: str | None = None) -> client.CoreV1Api:
        api = config.new_client_from_config(config_file=kubeconfig or sim.kubeconfig)
        opened.append(api)
        return client.CoreV1Api(api)

    yield make
    for api in opened:
        api.close()


def arm_requests(sim: RunningSim, method: str, path_end: str) -> list[dict]:
    return [
        e
        for e in sim.observer.audit()
        if e.get("api") == "arm" and e["method"] == method and e["path"].lower().endswith(path_end.lower())
    ]


def pool_nodes(core: client.CoreV1Api, pool: str) -> list[client.V1Node]:
    return core.list_node(label_selector=f"{POOL_LABEL}={pool}").items


def ready_and_schedulable(node: client.V1Node) -> bool:
    ready = any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])
    return ready and not node.spec.unschedulable


def error_of(exc: HttpResponseError) -> tuple[int, str, str]:
    return exc.status_code, exc.error.code, exc.error.message


# ---- resources ---------------------------------------------------------------------------------------
def test_managed_cluster_and_agent_pools_as_the_sdk_reads_them(start_sim):
    sim = start_sim(scenario_dict(time_scale=SCALE))
    aks = aks_client(sim)
    mc = aks.managed_clusters.get(RG, NAME)
    assert (
        mc.id
        == f"/subscriptions/{SUB}/resourcegroups/{RG}/providers/Microsoft.ContainerService/managedClusters/{NAME}"
    )
    assert (mc.name, mc.location, mc.type) == (
        NAME,
        "westeurope",
        "Microsoft.ContainerService/ManagedClusters",
    )
    assert (mc.kubernetes_version, mc.current_kubernetes_version) == ("1.30.5", "1.30.5")
    assert (mc.provisioning_state, mc.power_state.code) == ("Succeeded", "Running")
    assert mc.fqdn.endswith(".hcp.westeurope.azmk8s.io") and mc.e_tag
    assert [(p.name, p.count, p.mode, p.orchestrator_version) for p in mc.agent_pool_profiles] == [
        ("nodepool1", 3, "System", "1.30.5"),
        ("userpool", 2, "User", "1.30.5"),
    ]

    pools = {p.name: p for p in aks.agent_pools.list(RG, NAME)}
    assert set(pools) == {"nodepool1", "userpool"}
    pool = aks.agent_pools.get(RG, NAME, "nodepool1")
    assert pool.id == f"{mc.id}/agentPools/nodepool1"
    assert (pool.count, pool.node_image_version, pool.current_orchestrator_version) == (
        3,
        OLD_IMAGE,
        "1.30.5",
    )
    assert (
        pool.upgrade_settings.max_surge,
        pool.upgrade_settings.drain_timeout_in_minutes,
        pool.upgrade_settings.node_soak_duration_in_minutes,
        pool.upgrade_settings.undrainable_node_behavior,
    ) == ("10%", 30, 0, "Schedule")
    assert pool.availability_zones == ["1", "2", "3"] and pool.provisioning_state == "Succeeded"

    raw = httpx.get(
        f"{sim.endpoints.arm}{mc.id}",
        params={"api-version": "2026-08-01"},
        headers={"Authorization": f"Bearer {sim.endpoints.token}"},
        verify=tls(sim),
    )
    assert "etag" not in raw.headers  # real AKS sends no ETag header (tests/simulator/test_arm_recordings.py)
    assert raw.json()["eTag"] == mc.e_tag
    with pytest.raises(HttpResponseError) as missing:
        aks.agent_pools.get(RG, NAME, "nope")
    assert missing.value.status_code == 404
    with pytest.raises(HttpResponseError) as other:
        aks.managed_clusters.get(RG, "other")
    assert error_of(other.value)[:2] == (404, "ResourceNotFound")
    assert json.loads(sim.endpoints.ready_line())["arm"] == sim.endpoints.kube_api


def test_upgrade_profiles_versions_and_maintenance_configurations(start_sim):
    scenario = scenario_dict(time_scale=SCALE)
    scenario["cluster"]["maintenance_configurations"] = {
        "aksManagedNodeOSUpgradeSchedule": {
            "maintenance_window": {
                "schedule": {"weekly": {"interval_weeks": 1, "day_of_week": "Sunday"}},
                "duration_hours": 4,
                "utc_offset": "+01:00",
                "start_time": "02:00",
            }
        },
        "default": {"time_in_week": [{"day": "Saturday", "hour_slots": [1, 2, 3]}]},
    }
    sim = start_sim(scenario)
    aks = aks_client(sim)
    profile = aks.managed_clusters.get_upgrade_profile(RG, NAME)
    assert profile.control_plane_profile.kubernetes_version == "1.30.5"
    assert [u.kubernetes_version for u in profile.control_plane_profile.upgrades] == [
        "1.30.7",
        "1.31.2",
        "1.31.4",
    ]
    assert [(p.name, p.kubernetes_version) for p in profile.agent_pool_profiles] == [
        ("nodepool1", "1.30.5"),
        ("userpool", "1.30.5"),
    ]

    pool_profile = aks.agent_pools.get_upgrade_profile(RG, NAME, "nodepool1")
    assert pool_profile.latest_node_image_version == NEW_IMAGE
    assert pool_profile.upgrades == []  # a pool never goes past the control plane
    assert aks.agent_pools.get_upgrade_profile(RG, NAME, "userpool").latest_node_image_version == OLD_IMAGE
    available = aks.agent_pools.get_available_agent_pool_versions(RG, NAME).agent_pool_versions
    assert [(v.kubernetes_version, v.default) for v in available] == [("1.30.5", True)]

    listing = aks.managed_clusters.list_kubernetes_versions("westeurope").values_property
    assert [v.version for v in listing] == ["1.30", "1.31", "1.32"]
    assert {k: v.upgrades for k, v in listing[0].patch_versions.items()} == {
        "1.30.5": ["1.30.7", "1.31.2", "1.31.4"],
        "1.30.7": ["1.31.2", "1.31.4"],
    }
    assert listing[1].patch_versions["1.31.4"].upgrades == ["1.32.1"]

    configs = {c.name: c for c in aks.maintenance_configurations.list_by_managed_cluster(RG, NAME)}
    assert set(configs) == {"aksManagedNodeOSUpgradeSchedule", "default"}
    window = aks.maintenance_configurations.get(
        RG, NAME, "aksManagedNodeOSUpgradeSchedule"
    ).maintenance_window
    assert (
        window.schedule.weekly.day_of_week,
        window.duration_hours,
        window.start_time,
        window.utc_offset,
    ) == ("Sunday", 4, "02:00", "+01:00")
    assert [(s.day, s.hour_slots) for s in configs["default"].time_in_week] == [("Saturday", [1, 2, 3])]
    with pytest.raises(HttpResponseError) as missing:
        aks.maintenance_configurations.get(RG, NAME, "aksManagedAutoUpgradeSchedule")
    assert missing.value.status_code == 404


def test_no_maintenance_configuration_is_an_empty_list(start_sim):
    sim = start_sim(scenario_dict(time_scale=SCALE))
    assert list(aks_client(sim).maintenance_configurations.list_by_managed_cluster(RG, NAME)) == []


# ---- node-image upgrade ------------------------------------------------------------------------------
def test_node_image_upgrade_surges_drains_and_replaces_every_node(start_sim, kube):
    sim = start_sim(
        scenario_dict(time_scale=SCALE, pools={"nodepool1": {"latest_node_image_kernel": NEW_KERNEL}})
    )
    aks, core = aks_client(sim), kube(sim)
    before = sorted(n.metadata.name for n in pool_nodes(core, "nodepool1"))
    poller = aks.agent_pools.begin_upgrade_node_image_version(RG, NAME, "nodepool1")
    assert poller.status() == "InProgress"
    assert aks.agent_pools.get(RG, NAME, "nodepool1").provisioning_state == "UpgradingNodeImageVersion"
    fewest_ready = 3
    while not poller.done():
        fewest_ready = min(fewest_ready, sum(ready_and_schedulable(n) for n in pool_nodes(core, "nodepool1")))
        time.sleep(0.01)
    poller.result()

    assert fewest_ready >= 3  # maxSurge 10% of 3 = 1 node surged before each drain, maxUnavailable 0
    assert sim.observer.invariants()["pdb_violations"] == 0
    after = pool_nodes(core, "nodepool1")
    assert sorted(n.metadata.name for n in after) == [node_name(NAME, "nodepool1", i) for i in (3, 4, 5)]
    assert {
        (
            n.metadata.labels[IMAGE_LABEL],
            n.status.node_info.kernel_version,
            n.status.node_info.kubelet_version,
        )
        for n in after
    } == {(NEW_IMAGE, NEW_KERNEL, "v1.30.5")}
    assert all(ready_and_schedulable(n) for n in after)
    assert {
        h["node"]: h["running_kernel"] for h in sim.observer.hosts().values() if h["pool"] == "nodepool1"
    } == {n.metadata.name: NEW_KERNEL for n in after}
    assert all(n.metadata.labels[IMAGE_LABEL] == OLD_IMAGE for n in pool_nodes(core, "userpool"))

    pool = aks.agent_pools.get(RG, NAME, "nodepool1")
    assert (pool.provisioning_state, pool.node_image_version, pool.count) == ("Succeeded", NEW_IMAGE, 3)
    assert aks.agent_pools.get_upgrade_profile(RG, NAME, "nodepool1").latest_node_image_version == NEW_IMAGE
    timeline = events(
        sim, "upgrade_started", "upgrade_finished", "node_added", "node_removed", "cordoned", "uncordoned"
    )
    assert [e["event"] for e in timeline] == ["upgrade_started"] + [
        "node_added",
        "cordoned",
        "node_removed",
    ] * 3 + ["upgrade_finished"]
    assert [e["node"] for e in timeline if e["event"] == "node_removed"] == before
    assert timeline[-1]["details"]["status"] == "Succeeded"
    assert events(sim, "pod_evicted")  # the web pods left through the eviction subresource
    assert [(e["status"], e["mutating"]) for e in arm_requests(sim, "POST", "/upgradeNodeImageVersion")] == [
        (202, True)
    ]


def test_node_image_already_latest_is_accepted_and_replaces_no_node(start_sim, kube):
    sim = start_sim(
        scenario_dict(time_scale=SCALE), time_scale=0.05
    )  # the operation runs 1.5 s: long enough to see it running
    aks, core = aks_client(sim), kube(sim)
    before = sorted(n.metadata.name for n in pool_nodes(core, "userpool"))
    poller = aks.agent_pools.begin_upgrade_node_image_version(RG, NAME, "userpool")
    assert aks.agent_pools.get(RG, NAME, "userpool").provisioning_state == "UpgradingNodeImageVersion"
    poller.result()
    assert poller.status() == "Succeeded"
    assert [e["status"] for e in arm_requests(sim, "POST", "/upgradeNodeImageVersion")] == [202]
    pool = aks.agent_pools.get(RG, NAME, "userpool")
    assert (pool.provisioning_state, pool.node_image_version) == ("Succeeded", OLD_IMAGE)
    assert sorted(n.metadata.name for n in pool_nodes(core, "userpool")) == before
    assert events(sim, "node_added", "cordoned", "node_removed") == []
    assert [e["details"]["status"] for e in events(sim, "upgrade_finished")] == ["Succeeded"]


def test_resume_from_a_continuation_token_does_not_post_again(start_sim):
    sim = start_sim(scenario_dict(time_scale=SCALE))
    poller = aks_client(sim).agent_pools.begin_upgrade_node_image_version(RG, NAME, "nodepool1")
    token = poller.continuation_token()
    resumed = aks_client(sim).agent_pools.begin_upgrade_node_image_version(
        RG, NAME, "nodepool1", continuation_token=token
    )
    resumed.result()
    assert resumed.status() == "Succeeded"
    assert len(arm_requests(sim, "POST", "/upgradeNodeImageVersion")) == 1
    polls = [e for e in sim.observer.audit() if "/operations/" in e["path"]]
    assert polls and all(e["method"] == "GET" and e["status"] == 200 for e in polls)
    assert len(events(sim, "upgrade_started")) == 1


# ---- Kubernetes version upgrade ----------------------------------------------------------------------
def test_control_plane_then_pool_one_minor_up(start_sim, kube):
    sim = start_sim(scenario_dict(time_scale=SCALE))
    aks, core = aks_client(sim), kube(sim)
    version_api = client.VersionApi(core.api_client)
    mc = aks.managed_clusters.get(RG, NAME)
    mc.kubernetes_version = "1.31.4"  # agent pool profiles keep 1.30.5: the control plane only
    poller = aks.managed_clusters.begin_create_or_update(RG, NAME, mc)
    assert aks.managed_clusters.get(RG, NAME).provisioning_state == "Upgrading"
    upgraded = poller.result()
    assert (upgraded.kubernetes_version, upgraded.current_kubernetes_version) == ("1.31.4", "1.31.4")
    assert upgraded.provisioning_state == "Succeeded"
    assert version_api.get_code().git_version == "v1.31.4"
    assert {n.status.node_info.kubelet_version for n in core.list_node().items} == {"v1.30.5"}
    assert events(sim, "node_added") == []
    assert [
        u.kubernetes_version for u in aks.agent_pools.get_upgrade_profile(RG, NAME, "nodepool1").upgrades
    ] == ["1.30.7", "1.31.2", "1.31.4"]

    pool = aks.agent_pools.get(RG, NAME, "nodepool1")
    pool.orchestrator_version = "1.31.4"
    result = aks.agent_pools.begin_create_or_update(RG, NAME, "nodepool1", pool).result()
    assert (result.orchestrator_version, result.current_orchestrator_version) == ("1.31.4", "1.31.4")
    assert result.node_image_version == NEW_IMAGE  # a version upgrade also brings the latest image
    nodes = pool_nodes(core, "nodepool1")
    assert len(nodes) == 3 and {
        (n.status.node_info.kubelet_version, n.metadata.labels[IMAGE_LABEL]) for n in nodes
    } == {("v1.31.4", NEW_IMAGE)}
    assert {n.status.node_info.kubelet_version for n in pool_nodes(core, "userpool")} == {"v1.30.5"}
    assert sim.observer.invariants()["pdb_violations"] == 0
    kinds = [(e["details"]["kind"], e["details"].get("status")) for e in events(sim, "upgrade_finished")]
    assert kinds == [
        ("UpgradeKubernetesVersion", "Succeeded"),
        ("UpgradeAgentPoolKubernetesVersion", "Succeeded"),
    ]


def test_upgrades_through_arm_leave_the_given_scenario_as_it_was(start_sim):
    scenario = parse_scenario(scenario_dict(time_scale=SCALE))
    before = copy.deepcopy(scenario.model_dump())
    sim = start_sim(scenario)
    aks = aks_client(sim)
    mc = aks.managed_clusters.get(RG, NAME)
    mc.kubernetes_version = "1.31.4"
    aks.managed_clusters.begin_create_or_update(RG, NAME, mc).result()
    pool = aks.agent_pools.get(RG, NAME, "nodepool1")
    pool.orchestrator_version = "1.31.4"
    aks.agent_pools.begin_create_or_update(RG, NAME, "nodepool1", pool).result()
    aks.agent_pools.begin_upgrade_node_image_version(RG, NAME, "userpool").result()
    assert aks.managed_clusters.get(RG, NAME).current_kubernetes_version == "1.31.4"
    assert scenario.model_dump() == before
    given = sim.sim.cluster.scenario
    assert given is scenario and given.model_dump() == before


def test_version_rules_answer_with_aks_codes_and_change_nothing(start_sim):
    sim = start_sim(scenario_dict(time_scale=SCALE))
    aks = aks_client(sim)

    def put_cluster(version: str):
        mc = aks.managed_clusters.get(RG, NAME)
        mc.kubernetes_version = version
        return aks.managed_clusters.begin_create_or_update(RG, NAME, mc)

    def put_pool(version: str):
        pool = aks.agent_pools.get(RG, NAME, "userpool")
        pool.orchestrator_version = version
        return aks.agent_pools.begin_create_or_update(RG, NAME, "userpool", pool)

    refusals = {}
    for label, call, version in [
        ("downgrade", put_cluster, "1.29.9"),
        ("skip", put_cluster, "1.32.1"),
        ("unsupported", put_cluster, "1.31.3"),
        ("pool-ahead", put_pool, "1.31.4"),
        ("pool-downgrade", put_pool, "1.29.9"),
        ("pool-unsupported", put_pool, "1.30.6"),
    ]:
        with pytest.raises(HttpResponseError) as refused:
            call(version)
        refusals[label] = error_of(refused.value)
    assert {k: v[:2] for k, v in refusals.items()} == {
        "downgrade": (400, "OperationNotAllowed"),
        "skip": (400, "OperationNotAllowed"),
        "unsupported": (400, "K8sVersionNotSupported"),
        "pool-ahead": (400, "NodePoolMcVersionIncompatible"),
        "pool-downgrade": (400, "OperationNotAllowed"),
        "pool-unsupported": (400, "K8sVersionNotSupported"),
    }
    assert "Available upgrades: [1.30.7 1.31.2 1.31.4]" in refusals["skip"][2]
    assert "1.30.5 to 1.29.9" in refusals["downgrade"][2]

    etag = aks.managed_clusters.get(RG, NAME).e_tag
    same = put_cluster("1.30.5")
    assert same.result().current_kubernetes_version == "1.30.5"
    assert put_pool("1.30.5").result().provisioning_state == "Succeeded"
    assert aks.managed_clusters.get(RG, NAME).e_tag == etag
    assert [e["status"] for e in arm_requests(sim, "PUT", f"/managedClusters/{NAME}")] == [400, 400, 400, 200]
    assert events(sim, "upgrade_started", "node_added", "cordoned", "control_plane_upgraded") == []


def test_pool_more_than_three_minors_behind_blocks_the_control_plane(start_sim):
    scenario = scenario_dict(time_scale=SCALE, pools={"userpool": {"orchestrator_version": "1.28.9"}})
    scenario["cluster"].update(kubernetes_version="1.31.4", available_versions=["1.28.9", "1.31.4", "1.32.1"])
    scenario["pools"][0]["orchestrator_version"] = "1.31.4"
    sim = start_sim(scenario)
    aks = aks_client(sim)
    mc = aks.managed_clusters.get(RG, NAME)
    mc.kubernetes_version = "1.32.1"
    with pytest.raises(HttpResponseError) as refused:
        aks.managed_clusters.begin_create_or_update(RG, NAME, mc)
    status, code, message = error_of(refused.value)
    assert (status, code) == (400, "NodePoolMcVersionIncompatible") and "userpool" in message
    assert events(sim, "upgrade_started") == []


def test_if_match_with_a_stale_etag_is_412(start_sim):
    sim = start_sim(scenario_dict(time_scale=SCALE))
    aks = aks_client(sim)
    mc = aks.managed_clusters.get(RG, NAME)
    with pytest.raises(HttpResponseError) as stale:
        aks.managed_clusters.begin_create_or_update(
            RG, NAME, mc, etag="not-the-etag", match_condition=MatchConditions.IfNotModified
        )
    assert error_of(stale.value)[:2] == (412, "PreconditionFailed")
    assert aks.managed_clusters.begin_create_or_update(
        RG, NAME, mc, etag=mc.e_tag, match_condition=MatchConditions.IfNotModified
    ).result()
    sent = [e for e in arm_requests(sim, "PUT", f"/managedClusters/{NAME}")]
    assert [e["status"] for e in sent] == [412, 200]


# ---- operations in progress, failures and faults -----------------------------------------------------
def test_another_operation_in_progress_is_409_until_aborted(start_sim):
    sim = start_sim(scenario_dict(time_scale=SCALE, pools={"nodepool1": {"node_provision_seconds": 100_000}}))
    aks = aks_client(sim)
    running = aks.agent_pools.begin_upgrade_node_image_version(RG, NAME, "nodepool1")
    pool = aks.agent_pools.get(RG, NAME, "userpool")
    pool.orchestrator_version = "1.30.7"
    mc = aks.managed_clusters.get(RG, NAME)
    mc.kubernetes_version = "1.30.7"
    for attempt in (
        lambda: aks.agent_pools.begin_create_or_update(RG, NAME, "userpool", pool),
        lambda: aks.managed_clusters.begin_create_or_update(RG, NAME, mc),
        lambda: aks.agent_pools.begin_upgrade_node_image_version(RG, NAME, "nodepool1"),
    ):
        with pytest.raises(ResourceExistsError) as busy:
            attempt()
        assert error_of(busy.value)[:2] == (409, "OperationNotAllowed")
        assert "UpgradeNodeImageVersion" in busy.value.error.message

    aks.agent_pools.begin_abort_latest_operation(RG, NAME, "nodepool1").result()
    with pytest.raises(HttpResponseError) as canceled:
        running.result()
    assert canceled.value.error.code == "OperationCanceled"
    assert aks.agent_pools.get(RG, NAME, "nodepool1").provisioning_state == "Canceled"
    with pytest.raises(ResourceExistsError):  # nothing left to abort
        aks.agent_pools.begin_abort_latest_operation(RG, NAME, "nodepool1")
    pool.orchestrator_version = "1.30.5"  # idle again: accepted (a no-op) instead of 409
    assert (
        aks.agent_pools.begin_create_or_update(RG, NAME, "userpool", pool).result().provisioning_state
        == "Succeeded"
    )


@pytest.mark.parametrize("behavior", ["Schedule", "Cordon"])
def test_a_drain_past_its_timeout_fails_with_upgrade_failed(start_sim, kube, behavior):
    settings = {"drain_timeout_minutes": 1, "undrainable_node_behavior": behavior}
    scenario = scenario_dict(time_scale=SCALE, pools={"nodepool1": {"upgrade_settings": settings}})
    scenario["workloads"].append(pinned_pod())
    sim = start_sim(scenario)
    aks, core = aks_client(sim), kube(sim)
    blocked = node_name(NAME, "nodepool1", 0)
    with pytest.raises(HttpResponseError) as failed:
        aks.agent_pools.begin_upgrade_node_image_version(RG, NAME, "nodepool1").result()
    code, message = failed.value.error.code, failed.value.error.message
    assert code == "UpgradeFailed"
    assert blocked in message and "blocked by pdb pinned" in message
    assert aks.agent_pools.get(RG, NAME, "nodepool1").provisioning_state == "Failed"
    assert sim.observer.invariants()["pdb_violations"] == 0
    assert core.read_namespaced_pod("pinned", "default").spec.node_name == blocked
    nodes = {n.metadata.name: n for n in pool_nodes(core, "nodepool1")}
    if behavior == "Schedule":  # the blocked node is schedulable again, not upgraded; spare surge nodes go
        assert sorted(nodes) == [node_name(NAME, "nodepool1", i) for i in range(3)]
        assert not any(n.spec.unschedulable for n in nodes.values())
    else:  # quarantined; every other node upgraded, one surge node kept in its place
        assert nodes[blocked].spec.unschedulable
        assert nodes[blocked].metadata.labels["kubernetes.azure.com/upgrade-status"] == "Quarantined"
        others = [n for name, n in nodes.items() if name != blocked]
        assert len(others) == 3 and {n.metadata.labels[IMAGE_LABEL] for n in others} == {NEW_IMAGE}
    finished = events(sim, "upgrade_finished")
    assert [(e["details"]["status"], e["details"]["error"]["code"]) for e in finished] == [
        ("Failed", "UpgradeFailed")
    ]


def test_fail_next_operation_fault_fails_the_operation_with_its_code(start_sim):
    scenario = scenario_dict(time_scale=SCALE)
    scenario["faults"] = {
        "fail_next_operation": {
            "code": "VMExtensionProvisioningError",
            "message": "Provisioning of VM extension failed.",
        }
    }
    sim = start_sim(scenario)
    aks = aks_client(sim)
    with pytest.raises(HttpResponseError) as failed:
        aks.agent_pools.begin_upgrade_node_image_version(RG, NAME, "nodepool1").result()
    assert (failed.value.error.code, failed.value.error.message) == (
        "VMExtensionProvisioningError",
        "Provisioning of VM extension failed.",
    )
    assert aks.agent_pools.get(RG, NAME, "nodepool1").provisioning_state == "Failed"
    assert events(sim, "node_added") == []
    ops = httpx.get(
        f"{sim.endpoints.arm}/_sim/arm/operations",
        verify=tls(sim),
        headers={"Authorization": f"Bearer {sim.endpoints.token}"},
    ).json()
    assert [(o["kind"], o["status"]) for o in ops] == [("UpgradeNodeImageVersion", "Failed")]


def test_fault_rules_and_the_audit_log_cover_arm_requests(start_sim):
    sim = start_sim(scenario_dict(time_scale=SCALE))
    sim.observer.faults(count=1, status=500, path="agentPools/nodepool1$")
    assert aks_client(sim).agent_pools.get(RG, NAME, "nodepool1").name == "nodepool1"  # the SDK retried
    sent = arm_requests(sim, "GET", "/agentPools/nodepool1")
    assert [e["status"] for e in sent] == [500, 200]
    assert sent[0]["resource"] == "agentPools" and sent[0]["name"] == "nodepool1" and not sent[0]["mutating"]


# ---- credentials and authentication ------------------------------------------------------------------
def test_user_credential_kubeconfig_reaches_the_simulated_api(start_sim, kube, tmp_path):
    sim = start_sim(scenario_dict(time_scale=SCALE))
    result = aks_client(sim).managed_clusters.list_cluster_user_credentials(RG, NAME)
    assert [k.name for k in result.kubeconfigs] == ["clusterUser"]
    value = result.kubeconfigs[0].value
    text = value.decode() if isinstance(value, bytes) else base64.b64decode(value).decode()
    path = tmp_path / "user.kubeconfig"
    path.write_text(text)
    nodes = kube(sim, str(path)).list_node().items
    assert len(nodes) == 5
    assert [e["mutating"] for e in arm_requests(sim, "POST", "/listClusterUserCredential")] == [False]


def test_requests_without_the_bearer_token_are_refused(start_sim):
    sim = start_sim(scenario_dict(time_scale=SCALE))
    ep = sim.endpoints
    cluster = f"{ep.arm}/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.ContainerService/managedClusters/{NAME}"
    with httpx.Client(verify=tls(sim), params={"api-version": "2026-08-01"}) as http:
        for method, url, headers in [
            ("GET", cluster, {}),
            ("POST", f"{cluster}/agentPools/nodepool1/upgradeNodeImageVersion", {}),
            ("POST", f"{cluster}/listClusterUserCredential", {"Authorization": "Bearer wrong"}),
            (
                "GET",
                f"{ep.arm}/subscriptions/{SUB}/providers/Microsoft.ContainerService/locations/westeurope/"
                "kubernetesVersions",
                {},
            ),
            ("GET", f"{ep.arm}/_sim/arm/operations", {}),
        ]:
            response = http.request(method, url, headers=headers)
            assert response.status_code == 401, url
            assert response.json()["error"]["code"] in ("AuthenticationFailed", "InvalidAuthenticationToken")
    with pytest.raises(ClientAuthenticationError):
        aks_client(sim, token="not-the-token").agent_pools.begin_upgrade_node_image_version(
            RG, NAME, "nodepool1"
        )
    assert events(sim, "upgrade_started") == []
