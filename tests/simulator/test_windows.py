"""Windows node pools in the simulated AKS, built as AKS builds them: names, labels, images, kernels,
what kubectl shows, which pods may run there, and node-image upgrades within the Windows image family."""

from __future__ import annotations

import copy
import subprocess

import pytest
from kubernetes import client, config

from simulator.controllers.common import node_name
from simulator.scenario import ScenarioError, parse_scenario
from tests.simulator.test_arm import NAME, RG, aks_client
from tests.support import scenario_dict

WINDOWS_NODE = "aksnpwin000000"
BUILD = "10.0.20348.2700"


def core(sim) -> client.CoreV1Api:
    return client.CoreV1Api(config.new_client_from_config(config_file=sim.kubeconfig))


def test_windows_nodes_are_named_labelled_and_described_as_aks_builds_them(start_sim):
    sim = start_sim(scenario_dict("demo", time_scale=0.02))
    assert node_name(NAME, "npwin", 0, windows=True) == WINDOWS_NODE
    node = core(sim).read_node(WINDOWS_NODE)
    labels = node.metadata.labels
    assert labels["kubernetes.io/os"] == labels["beta.kubernetes.io/os"] == "windows"
    assert labels["node.kubernetes.io/windows-build"] == "10.0.20348"
    assert labels["kubernetes.azure.com/os-sku"] == "Windows2022"
    assert labels["kubernetes.azure.com/node-image-version"] == "AKSWindows-2022-containerd-20348.2700.240911"
    info = node.status.node_info
    assert (info.operating_system, info.os_image, info.kernel_version) == (
        "windows",
        "Windows Server 2022 Datacenter",
        BUILD,
    )
    assert sim.observer.hosts()[WINDOWS_NODE]["os_type"] == "Windows"


def test_kubectl_get_nodes_wide_shows_the_windows_node(start_sim, kubectl):
    sim = start_sim(scenario_dict("demo", time_scale=0.02))
    out = subprocess.run(
        [kubectl, "--kubeconfig", sim.kubeconfig, "get", "nodes", "-o", "wide"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    line = next(line for line in out.splitlines() if line.startswith(WINDOWS_NODE))
    assert "Windows Server 2022 Datacenter" in line and BUILD in line and "containerd://1.7.20+azure" in line
    assert " Ready " in line


def test_linux_pods_never_land_on_a_windows_node(start_sim):
    sim = start_sim(scenario_dict("demo", time_scale=0.02))
    api = core(sim)
    sim.observer.wait_for(lambda: len(api.list_namespaced_pod("kube-system").items) == 5)
    assert not [
        p.metadata.name for p in api.list_pod_for_all_namespaces().items if p.spec.node_name == WINDOWS_NODE
    ]
    # a Linux image sent there by name (as a kured-style host pod would be) never starts
    api.create_namespaced_pod(
        "default",
        {
            "metadata": {"name": "host"},
            "spec": {
                "nodeName": WINDOWS_NODE,
                "hostPID": True,
                "containers": [
                    {
                        "name": "c",
                        "image": "mcr.microsoft.com/azurelinux/busybox:1.36",
                        "command": ["nsenter", "--target", "1", "--mount", "--", "test", "-f", "/x"],
                        "securityContext": {"privileged": True},
                    }
                ],
            },
        },
    )

    def waiting():
        pod = api.read_namespaced_pod("host", "default")
        statuses = pod.status.container_statuses or []
        return statuses and statuses[0].state.waiting and statuses[0].state.waiting.reason

    assert sim.observer.wait_for(waiting, timeout=10) == "ErrImagePull"
    assert api.read_namespaced_pod("host", "default").status.phase == "Pending"


def test_a_windows_workload_selects_its_os(start_sim):
    scenario = scenario_dict("demo", time_scale=0.02)
    scenario["workloads"].append(
        {
            "kind": "Deployment",
            "namespace": "shop",
            "name": "iis",
            "replicas": 1,
            "labels": {"app": "iis"},
            "node_selector": {"kubernetes.io/os": "windows"},
        }
    )
    sim = start_sim(scenario)
    api = core(sim)
    sim.observer.wait_for(lambda: api.list_namespaced_pod("shop", label_selector="app=iis").items)
    pod = api.list_namespaced_pod("shop", label_selector="app=iis").items[0]
    assert pod.spec.node_name == WINDOWS_NODE


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p: p.update(name="winpool1"), "pools.2.name: a Windows pool name has at most 6"),
        (
            lambda p: p.update(mode="System"),
            "pools.2.mode: a Windows pool cannot be a System pool",
        ),
    ],
)
def test_the_scenario_keeps_aks_windows_pool_rules(change, message):
    scenario = copy.deepcopy(scenario_dict("demo", time_scale=0.02))
    change(scenario["pools"][2])
    with pytest.raises(ScenarioError, match=message.replace(".", r"\.")):
        parse_scenario(scenario)


def test_a_windows_node_cannot_be_told_to_need_a_reboot():
    scenario = copy.deepcopy(scenario_dict("demo", time_scale=0.02))
    scenario["nodes"].append({"pool": "npwin", "index": 0, "reboot_required": True})
    with pytest.raises(ScenarioError, match="its nodes never ask for a reboot"):
        parse_scenario(scenario)


def test_arm_reports_the_windows_pool_and_upgrades_its_image_within_its_family(start_sim):
    sim = start_sim(scenario_dict("demo", time_scale=0.02))
    aks = aks_client(sim)
    pool = aks.agent_pools.get(RG, NAME, "npwin")
    assert (pool.os_type, pool.os_sku) == ("Windows", "Windows2022")
    profile = aks.agent_pools.get_upgrade_profile(RG, NAME, "npwin")
    assert profile.latest_node_image_version == "AKSWindows-2022-containerd-20348.2762.241009"

    aks.agent_pools.begin_upgrade_node_image_version(RG, NAME, "npwin").result()

    nodes = [n for n in core(sim).list_node().items if n.metadata.labels["agentpool"] == "npwin"]
    assert [n.metadata.name for n in nodes] == ["aksnpwin000001"]  # surged, then the old one removed
    labels, info = nodes[0].metadata.labels, nodes[0].status.node_info
    assert labels["kubernetes.azure.com/node-image-version"] == "AKSWindows-2022-containerd-20348.2762.241009"
    assert info.kernel_version == "10.0.20348.2762"
    assert labels["node.kubernetes.io/windows-build"] == "10.0.20348"
    linux = {
        n.metadata.labels["kubernetes.azure.com/node-image-version"]
        for n in core(sim).list_node().items
        if n.metadata.labels["kubernetes.io/os"] == "linux"
    }
    assert linux == {"AKSUbuntu-2204gen2containerd-202501.12.0"}  # the Linux pools were not touched
