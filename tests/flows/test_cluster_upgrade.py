"""The cluster-upgrade flow against the simulated AKS, through the real Azure SDK and the ARM emulator.

Each test calls the flow in-process against a time-scaled simulator and checks what Azure and the
cluster saw (the audit log of ARM and Kubernetes requests, the simulator's timeline and invariants,
the emulator's operations), the nodes as the Kubernetes client reads them, the Prefect state, and the
``UpgradeReport`` the state carries.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from azure.core.credentials import AccessToken
from azure.mgmt.containerservice import ContainerServiceClient
from kubernetes import client, config
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterId,
)
from prefect.client.schemas.objects import StateType, TaskRun

from aksmaint.aks.operations import UpgradeMode
from aksmaint.aks.versions import UpgradeError
from aksmaint.azure import AksCluster
from aksmaint.errors import ClusterAccessError
from aksmaint.params import ClusterConnection
from aksmaint.report import MaintenanceReport, UpgradePlan, UpgradeReport
from flows.cluster_upgrade import cluster_upgrade
from flows.node_maintenance import node_maintenance
from simulator.controllers.common import node_name
from tasks.upgrade import verify_nodes
from tests.support import RunningSim, events, pinned_pod, scenario_dict

SCALE = 0.03
SUB = "00000000-0000-0000-0000-000000000000"
RG, NAME = "rg-demo", "aks-demo"
OLD_IMAGE = "AKSUbuntu-2204gen2containerd-202501.12.0"
NEW_IMAGE = "AKSUbuntu-2204gen2containerd-202502.05.0"
OLD_KERNEL = "5.15.0-1079-azure"
NEW_KERNEL = "5.15.0-1090-azure"  # the kernel of nodepool1's latest image in these tests
POOL_LABEL = "kubernetes.azure.com/agentpool"
IMAGE_LABEL = "kubernetes.azure.com/node-image-version"


# ---- helpers -----------------------------------------------------------------------------------------
def demo(scale: float = SCALE, **pool_changes: dict) -> dict:
    """The example scenario at test speed, nodepool1's latest node image on NEW_KERNEL; ``pool_changes``
    adjust pools by name."""
    changes = {
        **pool_changes,
        "nodepool1": {"latest_node_image_kernel": NEW_KERNEL, **pool_changes.get("nodepool1", {})},
    }
    return scenario_dict(time_scale=scale, pools=changes)


def pin_pod_with_budget(scenario: dict) -> dict:
    """A pod on nodepool1's first node whose PodDisruptionBudget never allows an eviction."""
    scenario["workloads"].append(pinned_pod())
    return scenario


def aks_cluster(sim: RunningSim, name: str = NAME) -> AksCluster:
    return AksCluster(
        subscription_id=SUB,
        resource_group=RG,
        name=name,
        credential="static-token",
        arm_endpoint=sim.endpoints.arm,
        ca_bundle=sim.endpoints.ca_bundle,
    )


@pytest.fixture
def upgrade(prefect_api, monkeypatch):
    """Run the flow on a simulator; return its final Prefect state and what the state carries."""

    def run(sim: RunningSim, name: str = NAME, **params: object):
        monkeypatch.setenv("AZURE_ACCESS_TOKEN", sim.endpoints.token)
        state = cluster_upgrade(
            cluster=aks_cluster(sim, name), poll_interval_seconds=0.1, return_state=True, **params
        )
        return state, state.result(raise_on_failure=False)

    return run


class StaticToken:
    def __init__(self, token: str):
        self.token = token

    def get_token(self, *scopes: str, **kwargs: object) -> AccessToken:
        return AccessToken(self.token, int(time.time()) + 3600)


def sdk(sim: RunningSim) -> ContainerServiceClient:
    """The Azure SDK as another actor (a person, or a run that crashed) uses it."""
    ep = sim.endpoints
    return ContainerServiceClient(
        StaticToken(ep.token), SUB, base_url=ep.arm, connection_verify=ep.ca_bundle, polling_interval=0.1
    )


def arm_requests(sim: RunningSim, method: str | None = None, path_end: str = "") -> list[dict]:
    return [
        e
        for e in sim.observer.audit()
        if e.get("api") == "arm"
        and (method is None or e["method"] == method)
        and e["path"].lower().endswith(path_end.lower())
    ]


def arm_mutations(sim: RunningSim) -> list[dict]:
    return [e for e in arm_requests(sim) if e["mutating"]]


def sim_arm(sim: RunningSim, method: str, path: str, **kwargs: object) -> object:
    """The emulator's own endpoints: ``/_sim/arm/operations`` and ``/_sim/arm/faults``."""
    response = httpx.request(
        method,
        f"{sim.endpoints.arm}/_sim/arm/{path}",
        verify=ssl.create_default_context(cafile=sim.endpoints.ca_bundle),
        headers={"Authorization": f"Bearer {sim.endpoints.token}"},
        **kwargs,
    )
    response.raise_for_status()
    return response.json()


def sim_operations(sim: RunningSim) -> list[dict]:
    return sim_arm(sim, "GET", "operations")


def read_nodes(sim: RunningSim) -> dict[str, client.V1Node]:
    api = config.new_client_from_config(config_file=sim.kubeconfig)
    try:
        return {n.metadata.name: n for n in client.CoreV1Api(api).list_node().items}
    finally:
        api.close()


def pool_of(node: client.V1Node) -> str:
    return node.metadata.labels[POOL_LABEL]


def ready(node: client.V1Node) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])


def fewest_available_in_timeline(sim: RunningSim, pool: str, nodes: set[str]) -> tuple[int, int]:
    """Replay the timeline: the fewest Ready, schedulable nodes the pool had, and how many events moved it."""
    members, cordoned, not_ready = set(nodes), set(), set()
    fewest, moves = len(members), 0
    for e in sim.observer.timeline():
        name, kind = e["node"], e["event"]
        if kind == "node_added" and e["details"]["pool"] == pool:
            members.add(name)
        elif name not in members:
            continue
        elif kind == "node_removed":
            members.discard(name)
        elif kind == "cordoned":
            cordoned.add(name)
        elif kind == "uncordoned":
            cordoned.discard(name)
        elif kind in ("not_ready", "node_lost"):
            not_ready.add(name)
        elif kind == "ready":
            not_ready.discard(name)
        else:
            continue
        moves += 1
        fewest = min(fewest, len(members - cordoned - not_ready))
    return fewest, moves


class ReadyWatch:
    """Samples the pool's Ready, schedulable nodes from a thread while the flow runs."""

    def __init__(self, sim: RunningSim, pool: str):
        self.api = config.new_client_from_config(config_file=sim.kubeconfig)
        self.core = client.CoreV1Api(self.api)
        self.pool = pool
        self.samples: list[int] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            nodes = self.core.list_node(label_selector=f"{POOL_LABEL}={self.pool}").items
            self.samples.append(sum(ready(n) and not n.spec.unschedulable for n in nodes))
            time.sleep(0.02)

    def __enter__(self) -> ReadyWatch:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
        self.api.close()


def upgrade_while_an_operation_holds(sim: RunningSim, run, **params: object):
    """Run the flow while an operation in progress is held up by the pinned pod's budget; the budget goes
    only once the flow is seen polling for that operation to end, so the flow surely has to wait."""
    outcome: dict = {}
    flow = threading.Thread(target=lambda: outcome.update(result=run(sim, **params)), daemon=True)
    flow.start()
    # the flow lists the pools once in preflight, then on every poll while it waits
    sim.observer.wait_for(lambda: len(arm_requests(sim, "GET", "/agentPools")) >= 4, timeout=60)
    assert flow.is_alive() and arm_mutations(sim)[-1]["path"].endswith("/upgradeNodeImageVersion")
    api = config.new_client_from_config(config_file=sim.kubeconfig)
    try:
        client.PolicyV1Api(api).delete_namespaced_pod_disruption_budget("pinned", "default")
    finally:
        api.close()
    flow.join(timeout=120)
    assert not flow.is_alive()
    return outcome["result"]


def artifacts_of(state) -> dict[str, object]:
    with get_client(sync_client=True) as prefect:
        found = prefect.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])
            )
        )
    return {a.key: a for a in found if a.key}


def task_runs(state, final: int, timeout: float = 30) -> dict[str, TaskRun]:
    """The flow run's task runs by name, read through the REST API once ``final`` of them have a final
    state (task run states reach the server as events, a moment after the flow returns)."""
    flow_run = FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as prefect:
        while True:
            runs = prefect.read_task_runs(flow_run_filter=flow_run, limit=100)
            if (
                sum(bool(r.state and r.state.is_final()) for r in runs) >= final
                or time.monotonic() > deadline
            ):
                return {r.name: r for r in runs}
            time.sleep(0.2)


def state_of(run: TaskRun) -> tuple[StateType | None, str | None, str | None]:
    assert run.state is not None
    return run.state_type, run.state_name, run.state.message


def operation_runs(runs: dict[str, TaskRun]) -> list[str]:
    """The names of the task runs of AKS operations and node checks."""
    kinds = ("control-plane ", "pool-version ", "node-image ", "check-nodes ")
    return sorted(name for name in runs if name.startswith(kinds))


# ---- node image --------------------------------------------------------------------------------------
def test_node_image_upgrade_of_one_pool_surges_respects_budgets_and_reports_kernels(start_sim, upgrade):
    sim = start_sim(demo())
    before = read_nodes(sim)
    old_pool = {n for n, node in before.items() if pool_of(node) == "nodepool1"}
    userpool = {n: node for n, node in before.items() if pool_of(node) == "userpool"}

    with ReadyWatch(sim, "nodepool1") as watch:
        state, report = upgrade(sim, mode="node-image", pools=["nodepool1"])

    assert state.is_completed(), state.message
    assert isinstance(report, UpgradeReport) and report.outcome == "upgraded" and report.verified
    assert [(o.step.pool, o.step.to_version, o.status) for o in report.operations] == [
        ("nodepool1", NEW_IMAGE, "succeeded")
    ]
    # surge: maxSurge 10% of 3 -> 1 node, maxUnavailable 0 -> never fewer than 3 Ready, schedulable nodes
    fewest, moves = fewest_available_in_timeline(sim, "nodepool1", set(old_pool))
    assert moves >= 9 and fewest >= 3  # 3 nodes added, 3 cordoned, 3 removed
    assert len(watch.samples) > 10 and min(watch.samples) >= 3
    assert sim.observer.invariants()["pdb_violations"] == 0
    assert events(sim, "pod_evicted")  # the web pods left through the eviction subresource

    after = read_nodes(sim)
    new_pool = {n: node for n, node in after.items() if pool_of(node) == "nodepool1"}
    assert len(new_pool) == 3 and not set(new_pool) & old_pool
    assert {
        (
            n.metadata.labels[IMAGE_LABEL],
            n.status.node_info.kernel_version,
            ready(n),
            bool(n.spec.unschedulable),
        )
        for n in new_pool.values()
    } == {(NEW_IMAGE, NEW_KERNEL, True, False)}
    untouched = {n: node for n, node in after.items() if pool_of(node) == "userpool"}
    assert set(untouched) == set(userpool)
    for name, node in untouched.items():
        assert node.metadata.labels[IMAGE_LABEL] == OLD_IMAGE
        assert node.status.node_info.boot_id == userpool[name].status.node_info.boot_id
        assert node.status.node_info.kernel_version == OLD_KERNEL
    assert [(e["method"], e["path"].rsplit("/", 2)[-2:], e["status"]) for e in arm_mutations(sim)] == [
        ("POST", ["nodepool1", "upgradeNodeImageVersion"], 202)
    ]
    assert report.kernels_after == {OLD_KERNEL: 2, NEW_KERNEL: 3}

    artifacts = artifacts_of(state)
    assert {"upgrade-plan", "kernel-diff", "kernel-report"} <= set(artifacts)
    assert f"pool nodepool1: node image {OLD_IMAGE} -> {NEW_IMAGE}" in artifacts["upgrade-plan"].data
    rows = artifacts["kernel-diff"].data
    rows = {r["node"]: r for r in (json.loads(rows) if isinstance(rows, str) else rows)}
    assert {n: (rows[n]["kernel_before"], rows[n]["kernel_after"]) for n in old_pool} == {
        n: (OLD_KERNEL, "(node gone)") for n in old_pool
    }
    assert {n: (rows[n]["kernel_before"], rows[n]["kernel_after"]) for n in new_pool} == {
        n: ("(new node)", NEW_KERNEL) for n in new_pool
    }
    assert {n: rows[n]["kernel_after"] for n in userpool} == dict.fromkeys(userpool, OLD_KERNEL)

    # the Prefect record: the operation's task run says it upgraded, the node check what the nodes run
    runs = task_runs(state, final=5)
    assert operation_runs(runs) == ["check-nodes nodepool1", "node-image nodepool1"]
    kind, name, message = state_of(runs["node-image nodepool1"])
    assert (kind, name) == (StateType.COMPLETED, "Upgraded")
    assert message and message.startswith(
        f"pool nodepool1: node image {OLD_IMAGE} -> {NEW_IMAGE}: upgraded in "
    )
    assert state_of(runs["check-nodes nodepool1"]) == (
        StateType.COMPLETED,
        "Verified",
        f"3 node(s) on {NEW_IMAGE}: {', '.join(sorted(new_pool))}",
    )


def test_prefect_writes_that_fail_change_no_operation(start_sim, upgrade, monkeypatch):
    """The progress artifact and the event are the record, not the work: when Prefect refuses them, the
    operation is still started once and its task run still says it upgraded."""
    sim = start_sim(demo())
    refused: list[str] = []

    def refuse(what: str):
        def call(*args: object, **kwargs: object) -> None:
            refused.append(what)
            raise httpx.HTTPStatusError(
                "Server error '503 Service Unavailable'",
                request=httpx.Request("POST", "http://prefect/api"),
                response=httpx.Response(503),
            )

        return call

    for name in ("create_progress_artifact", "update_progress_artifact", "emit_event"):
        monkeypatch.setattr(f"tasks.upgrade.{name}", refuse(name))

    state, report = upgrade(sim, mode="node-image", pools=["nodepool1"])

    assert state.is_completed(), state.message
    assert refused == ["create_progress_artifact", "emit_event"]  # no artifact: nothing to update
    assert [o.status for o in report.operations] == ["succeeded"] and report.verified
    assert [(e["method"], e["status"]) for e in arm_mutations(sim)] == [("POST", 202)]
    assert state_of(task_runs(state, final=5)["node-image nodepool1"])[:2] == (
        StateType.COMPLETED,
        "Upgraded",
    )


def test_node_image_already_latest_is_nothing_to_do(start_sim, upgrade):
    sim = start_sim(demo())
    state, report = upgrade(sim, mode="node-image", pools=["userpool"])
    assert state.is_completed() and report.outcome == "nothing to do"
    assert report.plan.steps == [] and report.operations == []
    assert report.plan.notes == [
        f"pool userpool: node image {OLD_IMAGE} is already the latest; nothing to do"
    ]
    assert arm_mutations(sim) == [] and sim.observer.mutating_requests() == []


def test_crashed_run_resumed_waits_for_its_operation_instead_of_starting_another(start_sim, upgrade):
    sim = start_sim(pin_pod_with_budget(demo()))
    # what the crashed run had done: the node-image upgrade was accepted, then the process died
    sdk(sim).agent_pools.begin_upgrade_node_image_version(RG, NAME, "nodepool1")
    assert sdk(sim).agent_pools.get(RG, NAME, "nodepool1").provisioning_state == "UpgradingNodeImageVersion"

    state, report = upgrade_while_an_operation_holds(sim, upgrade, mode="node-image", pools=["nodepool1"])

    assert state.is_completed(), state.message
    in_progress = (
        "an operation is in progress on pool nodepool1 (UpgradingNodeImageVersion); it will be waited for"
    )
    assert in_progress in report.plan.notes
    [op] = report.operations
    assert op.waited_for_other_operation and op.status == "already-current"
    assert report.verified and report.outcome == "upgraded"
    kind, name, message = state_of(task_runs(state, final=5)["node-image nodepool1"])
    assert (kind, name) == (StateType.COMPLETED, "AlreadyCurrent")
    assert message == (
        f"pool nodepool1: node image {OLD_IMAGE} -> {NEW_IMAGE}: already done (by an earlier operation); "
        "nothing started (after waiting for another operation)"
    )
    posts = arm_requests(sim, "POST", "/upgradeNodeImageVersion")
    assert [e["status"] for e in posts] == [202]  # the crashed run's POST, none from the resumed run
    assert [(o["kind"], o["status"]) for o in sim_operations(sim)] == [
        ("UpgradeNodeImageVersion", "Succeeded")
    ]
    nodes = read_nodes(sim)
    assert {n.metadata.labels[IMAGE_LABEL] for n in nodes.values() if pool_of(n) == "nodepool1"} == {
        NEW_IMAGE
    }
    assert sim.observer.invariants()["pdb_violations"] == 0


def test_a_pool_left_canceled_by_an_abort_is_upgraded_again(start_sim, upgrade):
    sim = start_sim(pin_pod_with_budget(demo()))
    aks = sdk(sim)
    aks.agent_pools.begin_upgrade_node_image_version(RG, NAME, "nodepool1")
    sim.observer.wait_for(lambda: events(sim, "cordoned"), timeout=60)  # AKS drains the pinned pod's node
    aks.agent_pools.begin_abort_latest_operation(RG, NAME, "nodepool1").result()
    assert aks.agent_pools.get(RG, NAME, "nodepool1").provisioning_state == "Canceled"
    api = config.new_client_from_config(config_file=sim.kubeconfig)
    try:
        client.PolicyV1Api(api).delete_namespaced_pod_disruption_budget("pinned", "default")
    finally:
        api.close()

    state, report = upgrade(sim, mode="node-image", pools=["nodepool1"])

    assert state.is_completed(), state.message
    assert "pool nodepool1 was left Canceled by an aborted operation" in report.plan.notes
    assert [o.status for o in report.operations] == ["succeeded"] and report.verified
    assert aks.agent_pools.get(RG, NAME, "nodepool1").provisioning_state == "Succeeded"
    images = {n.metadata.labels[IMAGE_LABEL] for n in read_nodes(sim).values() if pool_of(n) == "nodepool1"}
    assert images == {NEW_IMAGE}


def test_upgrade_failed_by_an_undrainable_node_fails_the_run_with_aks_message(start_sim, upgrade):
    scenario = pin_pod_with_budget(demo(nodepool1={"upgrade_settings": {"drain_timeout_minutes": 1}}))
    sim = start_sim(scenario)
    blocked = node_name(NAME, "nodepool1", 0)

    state, report = upgrade(sim, mode="node-image", pools=["nodepool1"])

    assert state.is_failed()
    assert report.plan.blocking_pdbs and report.plan.blocking_pdbs[0].startswith("default/pinned ")
    [op] = report.operations
    assert op.status == "failed" and op.message.startswith(
        f"UpgradeFailed: Drain node {blocked} failed when evicting pod pinned"
    )
    assert "blocked by pdb pinned" in op.message
    assert report.outcome.startswith("failed: pool nodepool1: node image") and blocked in report.outcome
    assert "UpgradeFailed" in state.message and "blocked by pdb pinned" in state.message
    assert sim.observer.invariants()["pdb_violations"] == 0
    runs = task_runs(state, final=5)
    assert state_of(runs["node-image nodepool1"]) == (StateType.FAILED, "Failed", op.message)
    # AKS put the surge node back: the pool's nodes are the old ones, on the old image, as the check says
    pool = sorted(n for n, node in read_nodes(sim).items() if pool_of(node) == "nodepool1")
    assert {read_nodes(sim)[n].metadata.labels[IMAGE_LABEL] for n in pool} == {OLD_IMAGE}
    assert state_of(runs["check-nodes nodepool1"]) == (
        StateType.FAILED,
        "Failed",
        f"3 node(s) on {OLD_IMAGE}: {', '.join(pool)}. Not on {NEW_IMAGE}: {', '.join(pool)}",
    )
    assert [(o["kind"], o["status"]) for o in sim_operations(sim)] == [("UpgradeNodeImageVersion", "Failed")]


def test_failing_operation_halts_the_rollout_with_its_code_and_message(start_sim, upgrade):
    sim = start_sim(demo())
    failure = {"code": "VMExtensionProvisioningError", "message": "Provisioning failed."}
    sim_arm(sim, "POST", "faults", json={"fail_next_operation": failure})

    state, report = upgrade(sim, mode="kubernetes-version", target="next-minor")

    assert state.is_failed()
    assert "VMExtensionProvisioningError" in state.message and "Provisioning failed." in state.message
    assert report.outcome.startswith("failed: control plane: Kubernetes 1.30.5 -> 1.31.4")
    assert len(report.plan.steps) == 3 and len(report.operations) == 1  # the pools were not started
    assert [(e["method"], e["status"]) for e in arm_mutations(sim)] == [("PUT", 200)]
    assert [(o["kind"], o["status"]) for o in sim_operations(sim)] == [("UpgradeKubernetesVersion", "Failed")]
    runs = task_runs(state, final=4)
    assert operation_runs(runs) == ["control-plane 1.31.4"]  # the pools' operations never started
    assert state_of(runs["control-plane 1.31.4"]) == (
        StateType.FAILED,
        "Failed",
        "VMExtensionProvisioningError: Provisioning failed.",
    )


# ---- Kubernetes version ------------------------------------------------------------------------------
def test_two_minors_up_goes_through_the_minor_between(start_sim, upgrade):
    sim = start_sim(demo(scale=0.02))

    state, report = upgrade(sim, mode="kubernetes-version", target="1.32.1")

    assert state.is_completed(), state.message
    steps = [(s.kind, s.pool, s.to_version) for s in report.plan.steps]
    assert steps == [
        ("control-plane", None, "1.31.4"),
        ("pool-version", "nodepool1", "1.31.4"),
        ("pool-version", "userpool", "1.31.4"),
        ("control-plane", None, "1.32.1"),
        ("pool-version", "nodepool1", "1.32.1"),
        ("pool-version", "userpool", "1.32.1"),
    ]
    assert [o.status for o in report.operations] == ["succeeded"] * 6 and report.verified
    puts = [(e["path"].rsplit("/", 1)[-1], e["status"]) for e in arm_mutations(sim)]
    assert puts == [(NAME, 200), ("nodepool1", 200), ("userpool", 200)] * 2
    started = [
        (e["details"]["kind"], e["details"]["from"], e["details"]["to"])
        for e in events(sim, "upgrade_started")
    ]
    assert started == [
        ("UpgradeKubernetesVersion", "1.30.5", "1.31.4"),
        ("UpgradeAgentPoolKubernetesVersion", "1.30.5", "1.31.4"),
        ("UpgradeAgentPoolKubernetesVersion", "1.30.5", "1.31.4"),
        ("UpgradeKubernetesVersion", "1.31.4", "1.32.1"),
        ("UpgradeAgentPoolKubernetesVersion", "1.31.4", "1.32.1"),
        ("UpgradeAgentPoolKubernetesVersion", "1.31.4", "1.32.1"),
    ]
    assert [e["details"]["kubernetes_version"] for e in events(sim, "control_plane_upgraded")] == [
        "1.31.4",
        "1.32.1",
    ]
    assert {n.status.node_info.kubelet_version for n in read_nodes(sim).values()} == {"v1.32.1"}
    assert sdk(sim).managed_clusters.get(RG, NAME).current_kubernetes_version == "1.32.1"
    assert sim.observer.invariants()["pdb_violations"] == 0


@pytest.mark.parametrize(
    ("target", "completed", "message"),
    [
        ("1.29.9", False, "downgrading from 1.30.5 to 1.29.9 is not allowed"),
        ("1.30.5", True, "the control plane already runs 1.30.5: no newer version matches target '1.30.5'"),
        ("1.31.3", False, "version 1.31.3 is not offered in this region (available: 1.30.5, 1.30.7, 1.31.2"),
    ],
    ids=["downgrade", "same-version", "unsupported"],
)
def test_refused_versions_end_clearly_without_a_mutating_call(start_sim, upgrade, target, completed, message):
    sim = start_sim(demo())
    state, result = upgrade(sim, mode="kubernetes-version", target=target)
    if completed:
        assert state.is_completed() and result.outcome == "nothing to do"
        assert result.plan.steps == [] and message in result.plan.notes[0]
    else:
        assert state.is_failed() and isinstance(result, UpgradeError)
        assert message in str(result)
    assert arm_requests(sim, "GET", "/kubernetesVersions")  # decided on what the region offers
    assert arm_mutations(sim) == [] and sim.observer.mutating_requests() == []


def test_dry_run_plans_and_names_blocking_budgets_but_mutates_nothing(start_sim, upgrade):
    sim = start_sim(pin_pod_with_budget(demo()))
    state, report = upgrade(sim, mode="kubernetes-version", target="next-minor", dry_run=True)
    assert state.is_completed() and report.outcome == "dry run: nothing changed" and report.dry_run
    assert [(s.kind, s.pool, s.to_version) for s in report.plan.steps] == [
        ("control-plane", None, "1.31.4"),
        ("pool-version", "nodepool1", "1.31.4"),
        ("pool-version", "userpool", "1.31.4"),
    ]
    assert [b.split(" ")[0] for b in report.plan.blocking_pdbs] == ["default/pinned"]
    assert report.operations == []
    assert arm_mutations(sim) == [] and sim.observer.mutating_requests() == []
    assert sim_operations(sim) == []


def test_closed_maintenance_window_starts_nothing(start_sim, upgrade):
    scenario = demo()
    in_two_days = (datetime.now(UTC) + timedelta(days=2)).strftime("%A")
    scenario["cluster"]["maintenance_configurations"] = {
        "aksManagedNodeOSUpgradeSchedule": {
            "maintenance_window": {
                "schedule": {"weekly": {"interval_weeks": 1, "day_of_week": in_two_days}},
                "duration_hours": 4,
                "utc_offset": "+00:00",
                "start_time": "00:00",
            }
        }
    }
    sim = start_sim(scenario)
    state, report = upgrade(sim, mode="node-image", pools=["nodepool1"])
    assert state.is_completed() and not report.plan.window_open
    assert report.outcome == "not started: outside the maintenance window (starts 00:00, 4h, UTC+00:00)"
    assert arm_requests(sim, "GET", "/maintenanceConfigurations/aksManagedNodeOSUpgradeSchedule")
    assert arm_mutations(sim) == [] and sim.observer.mutating_requests() == []


# ---- operations in progress --------------------------------------------------------------------------
def test_operation_in_progress_is_waited_for_then_the_upgrade_completes(start_sim, upgrade):
    sim = start_sim(pin_pod_with_budget(demo()))
    sdk(sim).agent_pools.begin_upgrade_node_image_version(RG, NAME, "nodepool1")  # someone else's operation

    state, report = upgrade_while_an_operation_holds(
        sim, upgrade, mode="kubernetes-version", target="latest-patch", control_plane_only=True
    )

    assert state.is_completed(), state.message
    [op] = report.operations
    assert op.status == "succeeded" and op.waited_for_other_operation
    kinds = [(e["event"], e["details"]["kind"]) for e in events(sim, "upgrade_started", "upgrade_finished")]
    assert kinds == [
        ("upgrade_started", "UpgradeNodeImageVersion"),
        ("upgrade_finished", "UpgradeNodeImageVersion"),
        ("upgrade_started", "UpgradeKubernetesVersion"),
        ("upgrade_finished", "UpgradeKubernetesVersion"),
    ]
    assert [(e["method"], e["status"]) for e in arm_mutations(sim)] == [("POST", 202), ("PUT", 200)]
    assert sdk(sim).managed_clusters.get(RG, NAME).current_kubernetes_version == "1.30.7"


def test_409_operation_in_progress_is_retried_after_waiting(start_sim, upgrade):
    sim = start_sim(demo())
    sim.observer.faults(count=2, status=409, verb="update", path=f"managedClusters/{NAME}$")

    state, report = upgrade(sim, mode="kubernetes-version", target="latest-patch", control_plane_only=True)

    assert state.is_completed(), state.message
    [op] = report.operations
    assert op.status == "succeeded" and op.waited_for_other_operation
    assert [(e["method"], e["status"]) for e in arm_mutations(sim)] == [
        ("PUT", 409),
        ("PUT", 409),
        ("PUT", 200),
    ]
    assert sdk(sim).managed_clusters.get(RG, NAME).current_kubernetes_version == "1.30.7"


# ---- connecting ----------------------------------------------------------------------------------------
def test_unknown_cluster_is_a_clear_access_error(start_sim, upgrade):
    sim = start_sim(demo())
    state, error = upgrade(sim, name="aks-nope", mode="node-image")
    assert state.is_failed() and isinstance(error, ClusterAccessError)
    assert str(error) == f"AKS cluster aks-nope not found in resource group {RG} of subscription {SUB}"
    assert [e["status"] for e in arm_requests(sim, "GET", "/managedClusters/aks-nope")] == [404]
    assert arm_mutations(sim) == [] and sim.observer.mutating_requests() == []


def test_node_maintenance_reaches_the_cluster_by_its_aks_id(start_sim, prefect_api, monkeypatch):
    sim = start_sim(demo())
    monkeypatch.setenv("AZURE_ACCESS_TOKEN", sim.endpoints.token)
    cluster = {"aks": aks_cluster(sim).model_dump(mode="json")}

    state = node_maintenance(cluster=cluster, dry_run=True, return_state=True)

    report = state.result(raise_on_failure=False)
    assert state.is_completed(), state.message
    assert isinstance(report, MaintenanceReport) and report.cluster == NAME and report.dry_run
    assert {n.node for n in report.nodes} == set(read_nodes(sim))
    # a dry run reads no sentinels (the scan would create host pods): every node is a candidate
    assert {n.outcome.value for n in report.nodes} == {"planned"}
    assert [(e["method"], e["status"]) for e in arm_requests(sim, path_end="/listClusterUserCredential")] == [
        ("POST", 200)
    ]
    assert arm_mutations(sim) == [] and sim.observer.mutating_requests() == []


# ---- verification ------------------------------------------------------------------------------------
def test_verification_checks_every_pool_of_a_version_upgrade(start_sim):
    sim = start_sim(demo())
    connection = ClusterConnection(kubeconfig=sim.kubeconfig)
    plan = UpgradePlan(
        steps=[
            {"kind": "control-plane", "pool": None, "from_version": "1.30.5", "to_version": "1.31.4"},
            {"kind": "pool-version", "pool": "nodepool1", "from_version": "1.30.5", "to_version": "1.31.4"},
            {"kind": "pool-version", "pool": "userpool", "from_version": "1.30.5", "to_version": "1.31.4"},
        ]
    )
    problems = verify_nodes.fn(connection, UpgradeMode.kubernetes_version, plan)
    assert problems == sorted(f"{n} runs kubelet v1.30.5, not 1.31.4" for n in read_nodes(sim))
