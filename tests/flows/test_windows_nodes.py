"""Windows node pools: node-maintenance leaves them alone and says why; cluster-upgrade patches them.

Windows Server nodes get no daily updates and never set /var/run/reboot-required; a node image upgrade
keeps them current. The demo cluster has a one-node Windows pool beside its Linux pools."""

from __future__ import annotations

import contextlib
import threading

import urllib3
from kubernetes import client, config, watch

from aksmaint.report import Outcome
from flows.node_maintenance import node_maintenance
from tests.flows.test_cluster_upgrade import IMAGE_LABEL, read_nodes, upgrade  # noqa: F401 - fixture
from tests.support import fast_params, needing_reboot, scenario_dict

WINDOWS_NODE = "aksnpwin000000"
OLD_WINDOWS_IMAGE = "AKSWindows-2022-containerd-20348.2700.240911"
NEW_WINDOWS_IMAGE = "AKSWindows-2022-containerd-20348.2762.241009"
NEW_UBUNTU_IMAGE = "AKSUbuntu-2204gen2containerd-202502.05.0"


class PodPlacements:
    """Every pod the cluster saw during the block, with its node, from a watch of all pods."""

    def __init__(self, sim):
        self.api = client.CoreV1Api(config.new_client_from_config(config_file=sim.kubeconfig))
        self.pods: set[tuple[str, str]] = set()
        self.watch = watch.Watch()
        self.thread = threading.Thread(target=self._follow, daemon=True)

    def _follow(self) -> None:
        with contextlib.suppress(urllib3.exceptions.HTTPError):  # the simulator stops at the test's end
            for event in self.watch.stream(self.api.list_pod_for_all_namespaces, timeout_seconds=600):
                pod = event["object"]
                self.pods.add((pod.metadata.name, pod.spec.node_name or ""))

    def __enter__(self) -> PodPlacements:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.watch.stop()
        self.thread.join(timeout=10)


def test_node_maintenance_reports_windows_nodes_as_not_applicable_and_never_touches_them(
    start_sim, prefect_api
):
    sim = start_sim(scenario_dict("demo", time_scale=0.1))
    needed = needing_reboot(sim)
    assert needed and WINDOWS_NODE not in needed

    with PodPlacements(sim) as placed:
        state = node_maintenance(**fast_params(sim, apply_updates=True), return_state=True)

    assert state.is_completed(), state.message
    report = state.result()
    by_node = {n.node: n for n in report.nodes}
    windows = by_node[WINDOWS_NODE]
    assert windows.outcome == Outcome.not_applicable
    assert (
        windows.reason
        == f"Windows nodes are patched by a node image upgrade (node image {OLD_WINDOWS_IMAGE})"
    )
    assert windows.node_image_version == OLD_WINDOWS_IMAGE
    assert {n: by_node[n].outcome for n in needed} == dict.fromkeys(needed, Outcome.rebooted)
    # never cordoned, never rebooted, and no host pod ever sent there (the scan, nor apply_updates)
    assert not [e for e in sim.observer.timeline() if e.get("node") == WINDOWS_NODE]
    assert sim.observer.hosts()[WINDOWS_NODE]["boots"] == 0
    host_pods = {node for name, node in placed.pods if name.startswith("aksmaint-")}
    assert set(needed) <= host_pods  # the Linux nodes were scanned and updated through host pods
    assert WINDOWS_NODE not in {node for _, node in placed.pods}
    # the kernel report keeps them apart: the OS build is no Linux kernel, and not "lagging"
    assert "10.0.20348.2700" not in report.kernels_after
    assert report.windows_after == {f"10.0.20348.2700 ({OLD_WINDOWS_IMAGE})": 1}
    assert WINDOWS_NODE not in report.lagging_kernel and WINDOWS_NODE not in report.still_need_reboot


def test_node_image_upgrade_patches_the_windows_pool_within_its_own_image_family(start_sim, upgrade):  # noqa: F811
    sim = start_sim(scenario_dict("demo", time_scale=0.02))

    state, report = upgrade(sim, mode="node-image")

    assert state.is_completed(), state.message
    targets = {o.step.pool: o.step.to_version for o in report.operations}
    assert targets == {"nodepool1": NEW_UBUNTU_IMAGE, "npwin": NEW_WINDOWS_IMAGE}  # userpool is current
    windows = [n for n in read_nodes(sim).values() if n.metadata.labels["kubernetes.io/os"] == "windows"]
    assert [(n.metadata.labels[IMAGE_LABEL], n.status.node_info.kernel_version) for n in windows] == [
        (NEW_WINDOWS_IMAGE, "10.0.20348.2762")
    ]
    assert report.windows_after == {f"10.0.20348.2762 ({NEW_WINDOWS_IMAGE})": 1}
    assert all(not k.startswith("10.0.") for k in report.kernels_after)


def test_a_kubernetes_upgrade_covers_the_windows_pool(start_sim, upgrade):  # noqa: F811
    sim = start_sim(scenario_dict("demo", time_scale=0.02))

    state, report = upgrade(sim, mode="kubernetes-version", target="1.30.7")

    assert state.is_completed(), state.message
    steps = [(s.kind, s.pool) for s in report.plan.steps]
    assert ("pool-version", "npwin") in steps
    kubelets = {n.metadata.name: n.status.node_info.kubelet_version for n in read_nodes(sim).values()}
    assert set(kubelets.values()) == {"v1.30.7"}
    assert any(name.startswith("aksnpwin") for name in kubelets)
