"""The modelled node-problem-detector plugin: a node condition that mirrors /var/run/reboot-required."""

from __future__ import annotations

from kubernetes import client

from simulator.controllers.common import node_name
from tests.simulator.test_hosts import cluster, run_on_host, scenario  # noqa: F401 - fixture reused

NEEDS_REBOOT = node_name("aks-demo", "nodepool1", 0)
PATCHABLE = node_name("aks-demo", "nodepool1", 1)


def reboot_condition(core: client.CoreV1Api, node: str) -> str | None:
    conds = core.read_node(node).status.conditions
    return next((c.status for c in conds if c.type == "RebootRequired"), None)


def test_condition_follows_the_sentinel_through_updates_and_reboots(cluster):  # noqa: F811
    sc = scenario(nodepool1_1={"upgradable_packages": 2, "available_kernel": "5.15.0-1090-azure"})
    sc["node_problem_detector"] = {}
    sim, core = cluster(sc)
    assert reboot_condition(core, NEEDS_REBOOT) == "True"
    assert reboot_condition(core, PATCHABLE) == "False"

    run_on_host(sim, core, PATCHABLE, "apt-get upgrade -y")
    sim.observer.wait_for(lambda: reboot_condition(core, PATCHABLE) == "True", timeout=20)

    core.create_namespaced_pod(
        "kube-system",
        {
            "metadata": {"name": "reboot-it"},
            "spec": {
                "nodeName": NEEDS_REBOOT,
                "hostPID": True,
                "restartPolicy": "Never",
                "tolerations": [{"operator": "Exists"}],
                "containers": [
                    {
                        "name": "host",
                        "image": "busybox",
                        "securityContext": {"privileged": True},
                        "command": ["nsenter", "--target", "1", "--mount", "--", "systemctl", "reboot"],
                    }
                ],
            },
        },
    )
    sim.observer.wait_for(lambda: reboot_condition(core, NEEDS_REBOOT) == "False", timeout=20)
    ready = next(c.status for c in core.read_node(NEEDS_REBOOT).status.conditions if c.type == "Ready")
    assert ready == "True", "the condition is only reported again once the node is back"


def test_no_condition_without_the_detector(cluster):  # noqa: F811
    sim, core = cluster(scenario())
    assert reboot_condition(core, NEEDS_REBOOT) is None
