"""Node hosts and the simulated kubelet: host commands in privileged pods, reboots, lost nodes, PDB records.

Everything is driven through the Kubernetes API with the official client, exactly as a flow would do it,
and checked through the API and the simulator's observer.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from simulator.controllers.common import node_name
from tests.support import RunningSim, scenario_dict

SCALE = 0.05
BOOT_SECONDS = 20  # simulated; one second of wall time at SCALE
HEARTBEAT_SECONDS = 10  # the kubelet renews its node Lease this often
NSENTER = ["nsenter", "--target", "1", "--mount", "--uts", "--ipc", "--net", "--pid", "--"]
POOL1 = node_name("aks-demo", "nodepool1", 0).removesuffix("000000")  # + a 6-digit index
USER = node_name("aks-demo", "userpool", 0).removesuffix("000000")
_names = itertools.count()


def scenario(**node_overrides: dict) -> dict:
    """The demo scenario, time-scaled, with longer boots; ``userpool_1={...}`` replaces that node's host state."""
    sc = scenario_dict()
    sc["time_scale"] = SCALE
    for pool in sc["pools"]:
        pool["boot_seconds"] = BOOT_SECONDS
    for where, fields in node_overrides.items():
        pool, index = where.rsplit("_", 1)
        sc["nodes"] = [n for n in sc["nodes"] if (n["pool"], n["index"]) != (pool, int(index))]
        sc["nodes"].append({"pool": pool, "index": int(index), **fields})
    return sc


@pytest.fixture
def cluster(start_sim) -> Iterator[Callable[..., tuple[RunningSim, client.CoreV1Api]]]:
    """Start a simulator and return it with a CoreV1Api; clients are closed before the simulator stops."""
    opened: list[client.ApiClient] = []

    def start(sc: dict) -> tuple[RunningSim, client.CoreV1Api]:
        sim = start_sim(sc)
        api = config.new_client_from_config(config_file=sim.kubeconfig)
        opened.append(api)
        return sim, client.CoreV1Api(api)

    yield start
    for api in opened:
        api.close()


def host_pod(node: str, script: str, privileged: bool = True, host_pid: bool = True) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"host-cmd-{next(_names)}", "namespace": "kube-system"},
        "spec": {
            "nodeName": node,
            "hostPID": host_pid,
            "restartPolicy": "Never",
            "tolerations": [{"operator": "Exists"}],
            "containers": [
                {
                    "name": "host",
                    "image": "mcr.microsoft.com/cbl-mariner/busybox:2.0",
                    "command": [*NSENTER, "sh", "-c", script],
                    "securityContext": {"privileged": privileged},
                }
            ],
        },
    }


def run_on_host(
    sim: RunningSim, core: client.CoreV1Api, node: str, script: str, **kwargs: bool
) -> tuple[client.V1Pod, str]:
    """Run ``script`` on the node through a privileged host pod; return the finished pod and its log."""
    manifest = host_pod(node, script, **kwargs)
    name = manifest["metadata"]["name"]
    core.create_namespaced_pod("kube-system", manifest)

    def finished() -> client.V1Pod | None:
        pod = core.read_namespaced_pod(name, "kube-system")
        return pod if pod.status.phase in ("Succeeded", "Failed") else None

    pod = sim.observer.wait_for(finished, timeout=10, interval=0.02)
    return pod, core.read_namespaced_pod_log(name, "kube-system")


def exit_code(pod: client.V1Pod) -> int:
    return pod.status.container_statuses[0].state.terminated.exit_code


def ready_condition(node: client.V1Node) -> str:
    return next(c.status for c in node.status.conditions if c.type == "Ready")


def taint_set(node: client.V1Node) -> set[tuple[str, str]]:
    return {(t.key, t.effect) for t in node.spec.taints or []}


def wait_workloads_ready(sim: RunningSim, core: client.CoreV1Api, count: int) -> None:
    def all_ready() -> bool:
        pods = core.list_namespaced_pod("shop").items + core.list_namespaced_pod("kube-system").items
        ready = [
            p
            for p in pods
            if any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
        ]
        return len(ready) >= count

    sim.observer.wait_for(all_ready, timeout=10, interval=0.05)


# ---- host commands ---------------------------------------------------------------------------


def test_sentinel_test_exit_codes_follow_each_nodes_host_state(cluster):
    sim, core = cluster(scenario())
    hosts = sim.observer.hosts()
    expected = {
        f"{POOL1}000000": 0,
        f"{POOL1}000001": 1,
        f"{POOL1}000002": 1,
        f"{USER}000000": 1,
        f"{USER}000001": 0,
    }
    assert {name: 0 if h["reboot_required"] else 1 for name, h in hosts.items()} == expected
    for node, code in expected.items():
        pod, log = run_on_host(sim, core, node, "test -f /var/run/reboot-required")
        assert pod.status.phase == ("Succeeded" if code == 0 else "Failed"), node
        assert exit_code(pod) == code, node
        assert pod.spec.node_name == node
        assert log == ""


def test_kernel_boot_id_and_upgradable_packages_are_read_from_the_host(cluster):
    sim, core = cluster(scenario(nodepool1_1={"upgradable_packages": 5}))
    for node in (f"{POOL1}000000", f"{POOL1}000001", f"{USER}000001"):
        info = core.read_node(node).status.node_info
        host = sim.observer.hosts()[node]
        pod, log = run_on_host(sim, core, node, "uname -r")
        assert (exit_code(pod), log) == (0, info.kernel_version + "\n")
        pod, log = run_on_host(sim, core, node, "cat /proc/sys/kernel/random/boot_id")
        assert (exit_code(pod), log.strip()) == (0, info.boot_id)
        pod, log = run_on_host(sim, core, node, "apt list --upgradable 2>/dev/null")
        packages = [line for line in log.splitlines() if "[upgradable from:" in line]
        assert exit_code(pod) == 0
        assert len(packages) == host["upgradable_packages"]
    assert sim.observer.hosts()[f"{POOL1}000001"]["upgradable_packages"] == 5
    pod, log = run_on_host(sim, core, f"{POOL1}000001", "hostname && cat /etc/os-release")
    assert log.splitlines()[0] == f"{POOL1}000001"
    assert 'PRETTY_NAME="Ubuntu 22.04.5 LTS"' in log


def test_apt_upgrade_turns_the_available_kernel_into_a_pending_one_and_sets_the_sentinel(cluster):
    node = f"{POOL1}000001"
    sim, core = cluster(
        scenario(nodepool1_1={"available_kernel": "5.15.0-1082-azure", "upgradable_packages": 4})
    )
    pod, log = run_on_host(sim, core, node, "apt list --upgradable")
    assert "linux-azure/jammy-updates 5.15.0-1082-azure" in log
    assert len([line for line in log.splitlines() if "upgradable from" in line]) == 4
    assert exit_code(run_on_host(sim, core, node, "test -f /var/run/reboot-required")[0]) == 1

    pod, log = run_on_host(
        sim, core, node, "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get upgrade -y"
    )
    assert exit_code(pod) == 0
    assert "4 upgraded" in log

    host = sim.observer.hosts()[node]
    assert (host["pending_kernel"], host["available_kernel"], host["reboot_required"]) == (
        "5.15.0-1082-azure",
        None,
        True,
    )
    assert host["running_kernel"] == "5.15.0-1079-azure"
    assert exit_code(run_on_host(sim, core, node, "[ -f /var/run/reboot-required ]")[0]) == 0
    assert (
        run_on_host(sim, core, node, "cat /var/run/reboot-required.pkgs")[1]
        == "linux-image-5.15.0-1082-azure\n"
    )
    assert run_on_host(sim, core, node, "uname -r")[1] == "5.15.0-1079-azure\n"
    assert run_on_host(sim, core, node, "apt list --upgradable")[1] == "Listing...\n"
    assert core.read_node(node).status.node_info.kernel_version == "5.15.0-1079-azure"


def test_unknown_command_exits_127_and_says_not_found(cluster):
    sim, core = cluster(scenario())
    pod, log = run_on_host(sim, core, f"{POOL1}000000", "echo checking && frobnicate --now; echo after")
    assert pod.status.phase == "Succeeded"  # the last command of the script decides
    assert "sh: 1: frobnicate: not found" in log
    pod, log = run_on_host(sim, core, f"{POOL1}000000", "frobnicate --now")
    assert pod.status.phase == "Failed"
    assert exit_code(pod) == 127
    assert "frobnicate: not found" in log
    pod, _ = run_on_host(sim, core, f"{POOL1}000000", "true && false || exit 3")
    assert exit_code(pod) == 3


def test_redirections_to_dev_null_silence_output_and_pipelines_are_refused(cluster):
    node = f"{POOL1}000000"
    sim, core = cluster(
        scenario(
            nodepool1_0={
                "reboot_required": True,
                "pending_kernel": "5.15.0-1081-azure",
                "upgradable_packages": 2,
            }
        )
    )
    pod, log = run_on_host(sim, core, node, "apt-get update >/dev/null && apt list --upgradable 2>/dev/null")
    assert (exit_code(pod), log.splitlines()[0]) == (0, "Listing...")
    assert len(log.splitlines()) == 3
    pod, log = run_on_host(sim, core, node, "test -f /var/run/reboot-required > /dev/null 2>&1 && echo yes")
    assert (exit_code(pod), log) == (0, "yes\n")
    pod, log = run_on_host(sim, core, node, "cat /nonexistent 2>/dev/null || uname -r")
    assert log == "5.15.0-1079-azure\n"
    pod, log = run_on_host(sim, core, node, "apt list --upgradable | wc -l")
    assert pod.status.phase == "Failed"
    assert "pipelines (|) are not supported" in log
    assert "Listing" not in log


@pytest.mark.parametrize(("privileged", "host_pid"), [(False, True), (True, False)])
def test_nsenter_needs_a_privileged_host_pid_pod(cluster, privileged, host_pid):
    node = f"{POOL1}000000"
    sim, core = cluster(scenario())
    pod, log = run_on_host(sim, core, node, "systemctl reboot", privileged=privileged, host_pid=host_pid)
    assert pod.status.phase == "Failed"
    assert exit_code(pod) != 0
    assert "Operation not permitted" in log
    assert sim.observer.invariants()["reboots"] == {}
    assert sim.observer.hosts()[node]["boots"] == 0
    assert ready_condition(core.read_node(node)) == "True"


# ---- reboots ---------------------------------------------------------------------------------


def test_reboot_takes_the_node_down_and_brings_the_pending_kernel_up(cluster):
    node = f"{POOL1}000000"
    sim, core = cluster(scenario())
    coord = client.CoordinationV1Api(core.api_client)
    apps = client.AppsV1Api(core.api_client)
    wait_workloads_ready(sim, core, count=3 + 5)
    before = core.read_node(node)
    old_pods = {
        p.metadata.uid: p
        for p in core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={node}").items
    }
    owners = {p.metadata.owner_references[0].kind for p in old_pods.values() if p.metadata.owner_references}
    assert owners == {"ReplicaSet", "DaemonSet"}, "the demo places a web pod and a kube-proxy pod here"
    assert sim.observer.hosts()[node]["pending_kernel"] == "5.15.0-1081-azure"

    renew_before = coord.read_namespaced_lease(node, "kube-node-lease").spec.renew_time
    manifest = host_pod(node, "systemctl reboot")
    core.create_namespaced_pod("kube-system", manifest)
    sim.observer.wait_for(lambda: ready_condition(core.read_node(node)) == "False", timeout=5, interval=0.01)
    down_at = time.monotonic()
    down = core.read_node(node)
    assert {
        ("node.kubernetes.io/not-ready", "NoSchedule"),
        ("node.kubernetes.io/not-ready", "NoExecute"),
    } <= taint_set(down)
    on_node = core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={node}").items
    assert not {p.metadata.uid for p in on_node} & set(old_pods), "the node's pods must be gone"
    with pytest.raises(ApiException) as gone:
        core.read_namespaced_pod(manifest["metadata"]["name"], "kube-system")
    assert gone.value.status == 404
    frozen_renew = coord.read_namespaced_lease(node, "kube-node-lease").spec.renew_time
    # the Lease keeps the kubelet's last regular renewal, made before the shutdown
    beats = (frozen_renew - renew_before).total_seconds() / (HEARTBEAT_SECONDS * SCALE)
    assert beats >= 0
    assert abs(beats - round(beats)) < 0.01, "renewTime must stay on the kubelet's heartbeat grid"
    time.sleep(HEARTBEAT_SECONDS * SCALE * 1.2)
    if ready_condition(core.read_node(node)) == "False":
        assert coord.read_namespaced_lease(node, "kube-node-lease").spec.renew_time == frozen_renew

    sim.observer.wait_for(lambda: ready_condition(core.read_node(node)) == "True", timeout=10, interval=0.01)
    not_ready_for = time.monotonic() - down_at
    assert 0.6 * BOOT_SECONDS * SCALE <= not_ready_for <= BOOT_SECONDS * SCALE + 1.5
    after = core.read_node(node)
    assert after.status.node_info.boot_id != before.status.node_info.boot_id
    assert (before.status.node_info.kernel_version, after.status.node_info.kernel_version) == (
        "5.15.0-1079-azure",
        "5.15.0-1081-azure",
    )
    assert not taint_set(after) & {
        ("node.kubernetes.io/not-ready", "NoSchedule"),
        ("node.kubernetes.io/not-ready", "NoExecute"),
    }
    assert exit_code(run_on_host(sim, core, node, "test -f /var/run/reboot-required")[0]) == 1
    assert run_on_host(sim, core, node, "uname -r")[1] == "5.15.0-1081-azure\n"
    host = sim.observer.hosts()[node]
    assert (host["reboot_required"], host["pending_kernel"], host["boot_id"], host["boots"]) == (
        False,
        None,
        after.status.node_info.boot_id,
        1,
    )

    # the heartbeat Lease is renewed again once the kubelet is back
    def renewed() -> bool:
        return coord.read_namespaced_lease(node, "kube-node-lease").spec.renew_time > frozen_renew

    sim.observer.wait_for(renewed, timeout=5, interval=0.05)

    # the DaemonSet puts its pod back on the node; the Deployment's pod was recreated elsewhere
    def daemon_pod_back() -> bool:
        pods = core.list_namespaced_pod(
            "kube-system", label_selector="k8s-app=kube-proxy", field_selector=f"spec.nodeName={node}"
        ).items
        return len(pods) == 1 and pods[0].metadata.uid not in old_pods and pods[0].status.phase == "Running"

    sim.observer.wait_for(daemon_pod_back, timeout=5, interval=0.05)
    web = core.list_namespaced_pod("shop", label_selector="app=web").items
    assert len(web) == 3
    assert node not in {p.spec.node_name for p in web}
    sim.observer.wait_for(
        lambda: apps.read_namespaced_deployment("web", "shop").status.ready_replicas == 3,
        timeout=5,
        interval=0.05,
    )

    events = core.list_namespaced_event("default", field_selector=f"involvedObject.name={node}").items
    rebooted = [e for e in events if e.reason == "Rebooted"]
    assert len(rebooted) == 1
    assert rebooted[0].involved_object.kind == "Node"
    assert after.status.node_info.boot_id in rebooted[0].message

    timeline = [e for e in sim.observer.timeline() if e["node"] == node]
    kinds = [e["event"] for e in timeline]
    assert kinds.index("rebooted") < kinds.index("not_ready") < kinds.index("ready")
    by_kind = {e["event"]: e for e in timeline}
    assert by_kind["rebooted"]["details"]["kernel_after"] == "5.15.0-1081-azure"
    assert BOOT_SECONDS <= by_kind["ready"]["t"] - by_kind["not_ready"]["t"] <= BOOT_SECONDS * 1.5
    invariants = sim.observer.invariants()
    assert invariants["reboots"] == {node: 1}
    assert invariants["pdb_violations"] == 0, "the web PDB (minAvailable 2 of 3) allowed this disruption"
    assert invariants["max_not_ready"] == 1
    assert invariants["not_ready_now"] == []


def test_reboot_without_pending_kernel_keeps_the_kernel_and_changes_the_boot_id(cluster):
    node = f"{POOL1}000002"
    sim, core = cluster(scenario())
    before = core.read_node(node).status.node_info
    core.create_namespaced_pod("kube-system", host_pod(node, "shutdown -r now"))
    sim.observer.wait_for(lambda: sim.observer.hosts()[node]["boots"] == 1, timeout=5, interval=0.02)
    sim.observer.wait_for(lambda: ready_condition(core.read_node(node)) == "True", timeout=10, interval=0.02)
    after = core.read_node(node).status.node_info
    assert after.kernel_version == before.kernel_version
    assert after.boot_id != before.boot_id


def test_a_node_that_fails_after_reboot_never_comes_back(cluster):
    node = f"{USER}000001"
    sim, core = cluster(
        scenario(
            userpool_1={
                "reboot_required": True,
                "pending_kernel": "5.15.0-1081-azure",
                "fail_after_reboot": True,
            }
        )
    )
    core.create_namespaced_pod("kube-system", host_pod(node, "systemctl reboot"))
    sim.observer.wait_for(
        lambda: ready_condition(core.read_node(node)) == "Unknown", timeout=10, interval=0.02
    )
    lost = core.read_node(node)
    assert {
        ("node.kubernetes.io/unreachable", "NoSchedule"),
        ("node.kubernetes.io/unreachable", "NoExecute"),
    } <= taint_set(lost)
    assert not any(key == "node.kubernetes.io/not-ready" for key, _ in taint_set(lost))
    time.sleep(BOOT_SECONDS * SCALE)
    still = core.read_node(node)
    assert ready_condition(still) == "Unknown"
    assert still.status.node_info.boot_id == lost.status.node_info.boot_id
    assert sim.observer.hosts()[node]["state"] == "down"
    events = [e["event"] for e in sim.observer.timeline() if e["node"] == node]
    assert "node_lost" in events
    assert "ready" not in events
    assert sim.observer.invariants()["not_ready_now"] == [node]
    # no pod is started on a lost node
    pod = host_pod(node, "true")
    core.create_namespaced_pod("kube-system", pod)
    time.sleep(0.3)
    assert core.read_namespaced_pod(pod["metadata"]["name"], "kube-system").status.phase == "Pending"


# ---- PodDisruptionBudget records ---------------------------------------------------------------


def pdb_scenario(min_available: int) -> dict:
    sc = scenario()
    web = next(w for w in sc["workloads"] if w["name"] == "web")
    web["pdb"] = {"min_available": min_available}
    return sc


def web_pod_on(core: client.CoreV1Api, node: str) -> client.V1Pod:
    return next(
        p
        for p in core.list_namespaced_pod("shop", label_selector="app=web").items
        if p.spec.node_name == node
    )


def test_rebooting_a_node_whose_pods_have_no_disruption_budget_left_is_a_violation(cluster):
    node = f"{POOL1}000000"
    sim, core = cluster(pdb_scenario(min_available=3))
    wait_workloads_ready(sim, core, count=3 + 5)
    covered = web_pod_on(core, node)
    core.create_namespaced_pod("kube-system", host_pod(node, "reboot"))
    sim.observer.wait_for(lambda: sim.observer.invariants()["reboots"].get(node) == 1, timeout=5)
    invariants = sim.observer.invariants()
    assert invariants["pdb_violations"] == 1
    violation = next(e for e in sim.observer.timeline() if e["event"] == "pdb_violation")
    assert violation["node"] == node
    assert violation["details"]["pod"] == f"shop/{covered.metadata.name}"
    assert violation["details"]["pdb"] == "web"


def test_deleting_a_covered_pod_directly_is_a_violation_and_evicting_it_is_refused(cluster):
    sim, core = cluster(pdb_scenario(min_available=3))
    wait_workloads_ready(sim, core, count=3 + 5)
    policy = client.PolicyV1Api(core.api_client)
    sim.observer.wait_for(
        lambda: policy.read_namespaced_pod_disruption_budget("web", "shop").status.current_healthy == 3,
        timeout=5,
        interval=0.05,
    )
    victim = core.list_namespaced_pod("shop", label_selector="app=web").items[0]
    body = client.V1Eviction(
        api_version="policy/v1",
        kind="Eviction",
        metadata=client.V1ObjectMeta(name=victim.metadata.name, namespace="shop"),
    )
    with pytest.raises(ApiException) as refused:
        core.create_namespaced_pod_eviction(victim.metadata.name, "shop", body)
    assert refused.value.status == 429
    assert sim.observer.invariants()["pdb_violations"] == 0
    assert core.read_namespaced_pod(victim.metadata.name, "shop").metadata.deletion_timestamp is None

    core.delete_namespaced_pod(victim.metadata.name, "shop")
    assert sim.observer.invariants()["pdb_violations"] == 1
    violation = next(e for e in sim.observer.timeline() if e["event"] == "pdb_violation")
    assert violation["details"]["pod"] == f"shop/{victim.metadata.name}"
    assert violation["details"]["cause"] == "pod deleted directly"


def test_evicting_or_deleting_a_covered_pod_within_the_budget_is_no_violation(cluster):
    sim, core = cluster(pdb_scenario(min_available=1))
    wait_workloads_ready(sim, core, count=3 + 5)
    policy = client.PolicyV1Api(core.api_client)
    sim.observer.wait_for(
        lambda: policy.read_namespaced_pod_disruption_budget("web", "shop").status.disruptions_allowed == 2,
        timeout=5,
        interval=0.05,
    )
    first, second = core.list_namespaced_pod("shop", label_selector="app=web").items[:2]
    body = client.V1Eviction(
        api_version="policy/v1",
        kind="Eviction",
        metadata=client.V1ObjectMeta(name=first.metadata.name, namespace="shop"),
    )
    core.create_namespaced_pod_eviction(first.metadata.name, "shop", body)
    assert any(
        e["event"] == "pod_evicted" and e["details"]["pod"] == f"shop/{first.metadata.name}"
        for e in sim.observer.timeline()
    )
    core.delete_namespaced_pod(second.metadata.name, "shop")
    assert any(
        e["event"] == "pod_deleted" and e["details"]["pod"] == f"shop/{second.metadata.name}"
        for e in sim.observer.timeline()
    )
    assert sim.observer.invariants()["pdb_violations"] == 0
