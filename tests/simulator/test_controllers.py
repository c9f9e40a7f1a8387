"""The simulator's controllers: Deployments and ReplicaSets, the scheduler, DaemonSets, PDB status, readiness.

Workloads are created through the Kubernetes API with the official client and observed through it, as
they would be on a real cluster.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator

import pytest
from kubernetes import client, config

from simulator.scenario import ScenarioError, parse_scenario
from tests.support import RunningSim

SCALE = 0.05
NS = "default"


def small_scenario(count: int = 3, max_pods: int = 110, **extra: object) -> dict:
    return {
        "time_scale": SCALE,
        "cluster": {
            "name": "aks-ctl",
            "subscription_id": "00000000-0000-0000-0000-000000000000",
            "resource_group": "rg-ctl",
            "location": "westeurope",
            "kubernetes_version": "1.30.5",
        },
        "pools": [
            {
                "name": "pool",
                "count": count,
                "zones": ["1", "2", "3"],
                "orchestrator_version": "1.30.5",
                "node_image_version": "AKSUbuntu-2204gen2containerd-202501.12.0",
                "kernel": "5.15.0-1079-azure",
                "max_pods": max_pods,
            }
        ],
        **extra,
    }


class Kube:
    def __init__(self, sim: RunningSim):
        self.sim = sim
        self.api = config.new_client_from_config(config_file=sim.kubeconfig)
        self.core = client.CoreV1Api(self.api)
        self.apps = client.AppsV1Api(self.api)
        self.policy = client.PolicyV1Api(self.api)

    def nodes(self) -> list[str]:
        return [n.metadata.name for n in self.core.list_node().items]

    def pods(self, selector: str, namespace: str = NS) -> list[client.V1Pod]:
        return self.core.list_namespaced_pod(namespace, label_selector=selector).items

    def live_pods(self, selector: str, namespace: str = NS) -> list[client.V1Pod]:
        return [p for p in self.pods(selector, namespace) if p.metadata.deletion_timestamp is None]

    def wait(self, condition: Callable[[], object], timeout: float = 5) -> object:
        return self.sim.observer.wait_for(condition, timeout=timeout, interval=0.02)

    def wait_bound(self, selector: str, count: int) -> list[client.V1Pod]:
        def bound() -> list[client.V1Pod] | None:
            pods = self.live_pods(selector)
            return pods if len(pods) == count and all(p.spec.node_name for p in pods) else None

        return self.wait(bound)

    def cordon(self, node: str, on: bool = True) -> None:
        self.core.patch_node(node, {"spec": {"unschedulable": True if on else None}})

    def taint(self, node: str, *taints: dict) -> None:
        self.core.patch_node(node, {"spec": {"taints": list(taints)}})

    def deployment(
        self, name: str, replicas: int, pod_spec: dict | None = None, ready_seconds: int = 0
    ) -> client.V1Deployment:
        container = {"name": "app", "image": "mcr.microsoft.com/azurelinux/base/nginx:1.25"}
        if ready_seconds:
            container["readinessProbe"] = {
                "httpGet": {"path": "/", "port": 80},
                "initialDelaySeconds": ready_seconds,
            }
        body = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": NS},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {"containers": [container], **(pod_spec or {})},
                },
            },
        }
        return self.apps.create_namespaced_deployment(NS, body)

    def scale(self, name: str, replicas: int) -> None:
        self.apps.patch_namespaced_deployment(name, NS, {"spec": {"replicas": replicas}})


@pytest.fixture
def kube(start_sim) -> Iterator[Callable[..., Kube]]:
    opened: list[Kube] = []

    def start(scenario: dict | str = "example", **overrides: object) -> Kube:
        k = Kube(start_sim(scenario, **overrides))
        opened.append(k)
        return k

    yield start
    for k in opened:
        k.api.close()


def placement(pods: list[client.V1Pod]) -> Counter:
    return Counter(p.spec.node_name for p in pods)


def is_ready(pod: client.V1Pod) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


# ---- Deployments and ReplicaSets -------------------------------------------------------------


def test_deployment_owns_a_replicaset_that_owns_its_pods(kube):
    k = kube(small_scenario())
    dep = k.deployment("shop", 3)
    pods = k.wait_bound("app=shop", 3)
    rs_list = k.apps.list_namespaced_replica_set(NS, label_selector="app=shop").items
    assert len(rs_list) == 1
    rs = rs_list[0]
    rs_owner = rs.metadata.owner_references[0]
    assert (rs_owner.kind, rs_owner.name, rs_owner.uid, rs_owner.controller) == (
        "Deployment",
        "shop",
        dep.metadata.uid,
        True,
    )
    template_hash = rs.metadata.labels["pod-template-hash"]
    assert rs.metadata.name == f"shop-{template_hash}"
    assert rs.spec.replicas == 3
    for pod in pods:
        owner = pod.metadata.owner_references[0]
        assert (owner.kind, owner.name, owner.uid, owner.controller) == (
            "ReplicaSet",
            rs.metadata.name,
            rs.metadata.uid,
            True,
        )
        assert pod.metadata.labels == {"app": "shop", "pod-template-hash": template_hash}
        assert pod.metadata.name.startswith(f"{rs.metadata.name}-")
    k.wait(lambda: k.apps.read_namespaced_deployment("shop", NS).status.ready_replicas == 3)
    status = k.apps.read_namespaced_deployment("shop", NS).status
    assert (status.replicas, status.available_replicas, status.unavailable_replicas) == (3, 3, None)
    assert k.apps.read_namespaced_replica_set(rs.metadata.name, NS).status.ready_replicas == 3


def test_a_deleted_pod_is_recreated_and_scaling_follows_the_deployment(kube):
    k = kube(small_scenario())
    k.deployment("shop", 3)
    pods = k.wait_bound("app=shop", 3)
    victim = pods[0]
    k.core.delete_namespaced_pod(victim.metadata.name, NS, grace_period_seconds=0)
    replaced = k.wait_bound("app=shop", 3)
    assert victim.metadata.uid not in {p.metadata.uid for p in replaced}
    assert len({p.metadata.uid for p in replaced} & {p.metadata.uid for p in pods}) == 2

    k.scale("shop", 5)
    assert len(k.wait_bound("app=shop", 5)) == 5
    k.scale("shop", 1)
    k.wait(lambda: len(k.pods("app=shop")) == 1, timeout=5)
    rs = k.apps.list_namespaced_replica_set(NS, label_selector="app=shop").items[0]
    assert rs.spec.replicas == 1


def test_a_new_pod_template_rolls_to_a_new_replicaset(kube):
    k = kube(small_scenario())
    k.deployment("shop", 2)
    first = {p.metadata.uid for p in k.wait_bound("app=shop", 2)}
    k.apps.patch_namespaced_deployment(
        "shop", NS, {"spec": {"template": {"metadata": {"annotations": {"rollout": "2"}}}}}
    )

    def rolled() -> bool:
        pods = k.live_pods("app=shop")
        return len(pods) == 2 and not {p.metadata.uid for p in pods} & first

    k.wait(rolled)
    sets = {
        rs.metadata.name: rs.spec.replicas
        for rs in k.apps.list_namespaced_replica_set(NS, label_selector="app=shop").items
    }
    assert sorted(sets.values()) == [0, 2]


@pytest.mark.parametrize("source", ["api", "scenario"])
def test_pods_become_ready_only_after_their_readiness_delay(kube, source):
    ready_seconds = 20  # one second of wall time
    if source == "api":
        k = kube(small_scenario())
        k.deployment("slow", 1, ready_seconds=ready_seconds)
    else:
        k = kube(
            small_scenario(
                workloads=[
                    {
                        "kind": "Deployment",
                        "namespace": NS,
                        "name": "slow",
                        "replicas": 1,
                        "labels": {"app": "slow"},
                        "ready_seconds": ready_seconds,
                    }
                ]
            )
        )
    running = k.wait(lambda: [p for p in k.pods("app=slow") if p.status.phase == "Running"])
    started = time.monotonic()
    assert not is_ready(running[0])
    assert not running[0].status.container_statuses[0].ready
    assert not k.apps.read_namespaced_deployment("slow", NS).status.ready_replicas
    k.wait(lambda: is_ready(k.pods("app=slow")[0]), timeout=5)
    took = time.monotonic() - started
    assert 0.7 * ready_seconds * SCALE <= took <= ready_seconds * SCALE + 1
    assert k.pods("app=slow")[0].status.container_statuses[0].ready
    k.wait(lambda: k.apps.read_namespaced_deployment("slow", NS).status.ready_replicas == 1)


def test_pods_without_a_readiness_probe_are_ready_when_running(kube):
    k = kube(small_scenario())
    k.deployment("fast", 2)
    k.wait(lambda: [p for p in k.pods("app=fast") if p.status.phase == "Running"])
    assert all(is_ready(p) for p in k.pods("app=fast") if p.status.phase == "Running")


# ---- scheduling ------------------------------------------------------------------------------


def test_scheduler_skips_cordoned_nodes(kube):
    k = kube(small_scenario())
    a, b, c = k.nodes()
    k.cordon(a)
    k.cordon(b)
    node = k.core.read_node(a)
    assert node.spec.unschedulable is True
    assert ("node.kubernetes.io/unschedulable", "NoSchedule") in {(t.key, t.effect) for t in node.spec.taints}
    k.deployment("shop", 4)
    assert placement(k.wait_bound("app=shop", 4)) == {c: 4}
    assert k.sim.observer.invariants()["unschedulable_now"] == sorted([a, b])
    cordoned = [e["node"] for e in k.sim.observer.timeline() if e["event"] == "cordoned"]
    assert sorted(cordoned) == sorted([a, b])

    k.cordon(a, on=False)
    assert not k.core.read_node(a).spec.taints
    k.scale("shop", 6)
    assert placement(k.wait_bound("app=shop", 6)) == {c: 4, a: 2}
    assert any(e["event"] == "uncordoned" and e["node"] == a for e in k.sim.observer.timeline())


def test_a_pod_nothing_can_take_stays_pending_as_unschedulable(kube):
    k = kube(small_scenario(count=2))
    for node in k.nodes():
        k.cordon(node)
    k.deployment("shop", 1)

    def unschedulable() -> client.V1Pod | None:
        pods = k.pods("app=shop")
        conditions = pods[0].status.conditions if pods else None
        return pods[0] if conditions and conditions[0].reason == "Unschedulable" else None

    pod = k.wait(unschedulable)
    assert pod.status.phase == "Pending"
    assert pod.spec.node_name is None
    k.cordon(k.nodes()[1], on=False)
    assert placement(k.wait_bound("app=shop", 1)) == {k.nodes()[1]: 1}


def test_noschedule_taints_keep_pods_away_unless_tolerated(kube):
    k = kube(small_scenario())
    a, b, c = k.nodes()
    infra = {"key": "dedicated", "value": "infra", "effect": "NoSchedule"}
    k.taint(a, infra)
    k.taint(b, {"key": "gpu", "effect": "NoExecute"})
    k.deployment("plain", 3)
    assert placement(k.wait_bound("app=plain", 3)) == {c: 3}

    tolerant = {
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "infra", "effect": "NoSchedule"}],
        "nodeSelector": {"kubernetes.io/hostname": a},
    }
    k.deployment("tolerant", 2, tolerant)
    assert placement(k.wait_bound("app=tolerant", 2)) == {a: 2}

    wrong_value = {
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoSchedule"}],
        "nodeSelector": {"kubernetes.io/hostname": a},
    }
    k.deployment("intolerant", 1, wrong_value)
    time.sleep(0.2)
    pod = k.wait(lambda: (k.pods("app=intolerant") or [None])[0])
    assert pod.spec.node_name is None


def test_node_selector_picks_nodes_by_label(kube):
    k = kube("example", time_scale=SCALE)
    user_nodes = {n for n in k.nodes() if "userpool" in n}
    k.deployment("batch", 4, {"nodeSelector": {"kubernetes.azure.com/agentpool": "userpool"}})
    assert set(placement(k.wait_bound("app=batch", 4))) == user_nodes
    zone = {"topology.kubernetes.io/zone": "westeurope-3"}
    k.deployment("zonal", 2, {"nodeSelector": zone})
    zone_nodes = {
        n.metadata.name
        for n in k.core.list_node(label_selector="topology.kubernetes.io/zone=westeurope-3").items
    }
    assert len(zone_nodes) == 1
    assert set(placement(k.wait_bound("app=zonal", 2))) == zone_nodes


def test_max_pods_caps_each_node(kube):
    k = kube(small_scenario(count=2, max_pods=3))
    assert {n.status.allocatable["pods"] for n in k.core.list_node().items} == {"3"}
    k.deployment("shop", 7)

    def six_bound() -> bool:
        pods = k.pods("app=shop")
        return len(pods) == 7 and sum(1 for p in pods if p.spec.node_name) == 6

    k.wait(six_bound)
    pods = k.pods("app=shop")
    assert sorted(placement([p for p in pods if p.spec.node_name]).values()) == [3, 3]
    pending = [p for p in pods if not p.spec.node_name]
    assert pending[0].status.conditions[0].reason == "Unschedulable"
    # scaling down removes the pod that could not be scheduled first
    k.scale("shop", 6)
    k.wait(lambda: len(k.pods("app=shop")) == 6)
    assert all(p.spec.node_name for p in k.pods("app=shop"))


def test_prefer_no_schedule_is_a_preference(kube):
    k = kube(small_scenario(count=2, max_pods=3))
    tainted, free = k.nodes()
    k.taint(tainted, {"key": "kured", "value": "draining", "effect": "PreferNoSchedule"})
    k.deployment("shop", 3)
    assert placement(k.wait_bound("app=shop", 3)) == {free: 3}, "untainted node while it has room"
    k.scale("shop", 5)
    assert placement(k.wait_bound("app=shop", 5)) == {free: 3, tainted: 2}, "tainted node when it must"


def test_prefer_no_schedule_taint_is_ignored_by_pods_that_tolerate_it(kube):
    k = kube(small_scenario(count=2))
    tainted, free = k.nodes()
    k.taint(tainted, {"key": "kured", "value": "draining", "effect": "PreferNoSchedule"})
    k.deployment("tolerant", 4, {"tolerations": [{"key": "kured", "operator": "Exists"}]})
    assert placement(k.wait_bound("app=tolerant", 4)) == {tainted: 2, free: 2}


BIN_PACK = {"scheduler": {"scoring": "bin-pack"}}


def pin(k: Kube, name: str, node: str, replicas: int) -> None:
    """A deployment whose pods may only run on ``node``, bound before this returns."""
    k.deployment(name, replicas, {"nodeSelector": {"kubernetes.io/hostname": node}})
    assert placement(k.wait_bound(f"app={name}", replicas)) == {node: replicas}


def test_bin_pack_puts_new_pods_on_the_fullest_node_with_room(kube):
    k = kube(small_scenario(count=3, max_pods=4, **BIN_PACK))
    first, middle, last = sorted(k.nodes())
    pin(k, "two", last, 2)
    pin(k, "one", middle, 1)
    k.deployment("shop", 1)
    assert placement(k.wait_bound("app=shop", 1)) == {last: 1}, "the fullest node, not the first by name"
    k.scale("shop", 3)
    assert placement(k.wait_bound("app=shop", 3)) == {last: 2, middle: 1}, "then the fullest with room"
    k.scale("shop", 4)
    assert placement(k.wait_bound("app=shop", 4)) == {last: 2, middle: 2}
    assert not any(p.spec.node_name == first for p in k.pods("app=shop"))


def test_bin_pack_keeps_prefer_no_schedule_a_preference(kube):
    k = kube(small_scenario(count=2, max_pods=3, **BIN_PACK))
    tainted, free = k.nodes()
    k.taint(tainted, {"key": "kured", "value": "draining", "effect": "PreferNoSchedule"})
    pin(k, "pinned", tainted, 2)  # the tainted node is now the fuller one
    k.deployment("shop", 3)
    assert placement(k.wait_bound("app=shop", 3)) == {free: 3}, "untainted node while it has room"
    k.scale("shop", 4)
    assert placement(k.wait_bound("app=shop", 4)) == {free: 3, tainted: 1}, "tainted node when it must"


def test_scheduler_scoring_defaults_to_spread_and_rejects_unknown_values():
    assert parse_scenario(small_scenario()).scheduler.scoring == "spread"
    assert parse_scenario(small_scenario(**BIN_PACK)).scheduler.scoring == "bin-pack"
    for scheduler, field, says in (
        ({"scoring": "most-allocated"}, "scheduler.scoring", "'spread' or 'bin-pack'"),
        ({"scoring": "bin-pack", "weights": {}}, "scheduler.weights", "Extra inputs are not permitted"),
        ("bin-pack", "scheduler", "valid dictionary"),
    ):
        with pytest.raises(ScenarioError) as raised:
            parse_scenario(small_scenario(scheduler=scheduler), source="bad.yaml")
        lines = [line.strip() for line in str(raised.value).splitlines()[1:]]
        assert [line for line in lines if line.startswith(f"{field}:") and says in line], lines


# ---- DaemonSets ------------------------------------------------------------------------------


def test_daemonset_runs_one_pod_on_every_node(kube):
    k = kube("example", time_scale=SCALE)
    nodes = k.nodes()
    pods = k.wait(
        lambda: (lambda ps: ps if len(ps) == len(nodes) else None)(
            k.pods("k8s-app=kube-proxy", "kube-system")
        )
    )
    assert placement(pods) == dict.fromkeys(nodes, 1)
    ds = k.apps.read_namespaced_daemon_set("kube-proxy", "kube-system")
    for pod in pods:
        owner = pod.metadata.owner_references[0]
        assert (owner.kind, owner.uid, owner.controller) == ("DaemonSet", ds.metadata.uid, True)
        tolerated = {(t.key, t.effect) for t in pod.spec.tolerations}
        assert ("node.kubernetes.io/unschedulable", "NoSchedule") in tolerated
    k.wait(
        lambda: (
            k.apps.read_namespaced_daemon_set("kube-proxy", "kube-system").status.number_ready == len(nodes)
        )
    )
    status = k.apps.read_namespaced_daemon_set("kube-proxy", "kube-system").status
    assert (status.desired_number_scheduled, status.current_number_scheduled) == (len(nodes), len(nodes))

    # a deleted daemon pod comes back on its node; a cordoned node keeps its daemon pod
    victim = pods[0]
    k.cordon(victim.spec.node_name)
    k.core.delete_namespaced_pod(victim.metadata.name, "kube-system", grace_period_seconds=0)

    def back() -> bool:
        now = k.live_pods("k8s-app=kube-proxy", "kube-system")
        return placement(now) == dict.fromkeys(nodes, 1) and victim.metadata.uid not in {
            p.metadata.uid for p in now
        }

    k.wait(back)


def test_daemonset_honours_node_selector_and_follows_taints(kube):
    k = kube("example", time_scale=SCALE)
    body = {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": "agent", "namespace": NS},
        "spec": {
            "selector": {"matchLabels": {"app": "agent"}},
            "template": {
                "metadata": {"labels": {"app": "agent"}},
                "spec": {
                    "nodeSelector": {"agentpool": "userpool"},
                    "containers": [{"name": "agent", "image": "agent:1"}],
                },
            },
        },
    }
    k.apps.create_namespaced_daemon_set(NS, body)
    user_nodes = sorted(n for n in k.nodes() if "userpool" in n)
    assert sorted(placement(k.wait_bound("app=agent", 2))) == user_nodes
    # a NoSchedule taint the DaemonSet does not tolerate keeps it off a node that joins its selector
    pool1 = sorted(n for n in k.nodes() if "nodepool1" in n)
    k.taint(pool1[0], {"key": "dedicated", "value": "infra", "effect": "NoSchedule"})
    for node in pool1[:2]:
        k.core.patch_node(node, {"metadata": {"labels": {"agentpool": "userpool"}}})
    pods = k.wait_bound("app=agent", 3)
    assert sorted(placement(pods)) == sorted([*user_nodes, pool1[1]])
    assert k.apps.read_namespaced_daemon_set("agent", NS).status.desired_number_scheduled == 3


# ---- PodDisruptionBudgets --------------------------------------------------------------------


def make_pdb(k: Kube, name: str, app: str, **spec: object) -> None:
    k.policy.create_namespaced_pod_disruption_budget(
        NS,
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"selector": {"matchLabels": {"app": app}}, **spec},
        },
    )


def pdb_status(k: Kube, name: str) -> dict:
    status = k.policy.read_namespaced_pod_disruption_budget(name, NS).status
    return {
        "currentHealthy": status.current_healthy,
        "desiredHealthy": status.desired_healthy,
        "disruptionsAllowed": status.disruptions_allowed,
        "expectedPods": status.expected_pods,
        "observedGeneration": status.observed_generation,
    }


@pytest.mark.parametrize(
    ("spec", "desired", "allowed"),
    [
        ({"minAvailable": 3}, 3, 1),
        ({"minAvailable": "50%"}, 2, 2),  # 2 of 4, rounded up
        ({"minAvailable": "60%"}, 3, 1),  # 2.4 rounds up to 3
        ({"maxUnavailable": 1}, 3, 1),
        ({"maxUnavailable": "30%"}, 2, 2),  # 1.2 unavailable rounds up to 2
        ({"minAvailable": 5}, 5, 0),
    ],
)
def test_pdb_status_is_computed_from_healthy_pods(kube, spec, desired, allowed):
    k = kube(small_scenario())
    k.deployment("shop", 4)
    make_pdb(k, "shop", "shop", **spec)
    k.wait(lambda: pdb_status(k, "shop")["currentHealthy"] == 4)
    assert pdb_status(k, "shop") == {
        "currentHealthy": 4,
        "desiredHealthy": desired,
        "disruptionsAllowed": allowed,
        "expectedPods": 4,
        "observedGeneration": 1,
    }
    condition = k.policy.read_namespaced_pod_disruption_budget("shop", NS).status.conditions[0]
    assert (condition.type, condition.status) == ("DisruptionAllowed", "True" if allowed else "False")


def test_pdb_status_follows_pods_and_spec_changes(kube):
    k = kube(small_scenario())
    k.deployment("shop", 3, ready_seconds=10)
    make_pdb(k, "shop", "shop", minAvailable=2)
    k.wait(lambda: pdb_status(k, "shop")["expectedPods"] == 3)
    assert pdb_status(k, "shop")["currentHealthy"] == 0, "pods are not Ready yet"
    assert pdb_status(k, "shop")["disruptionsAllowed"] == 0
    k.wait(lambda: pdb_status(k, "shop")["currentHealthy"] == 3, timeout=5)
    assert pdb_status(k, "shop")["disruptionsAllowed"] == 1

    k.policy.patch_namespaced_pod_disruption_budget("shop", NS, {"spec": {"minAvailable": 3}})
    k.wait(lambda: pdb_status(k, "shop")["observedGeneration"] == 2)
    assert pdb_status(k, "shop") == {
        "currentHealthy": 3,
        "desiredHealthy": 3,
        "disruptionsAllowed": 0,
        "expectedPods": 3,
        "observedGeneration": 2,
    }

    # a terminating pod is no longer healthy; its replacement counts once Ready
    victim = k.pods("app=shop")[0]
    k.policy.patch_namespaced_pod_disruption_budget("shop", NS, {"spec": {"minAvailable": 1}})
    k.core.delete_namespaced_pod(victim.metadata.name, NS)
    k.wait(lambda: pdb_status(k, "shop")["currentHealthy"] == 2)
    k.wait(lambda: pdb_status(k, "shop")["currentHealthy"] == 3, timeout=5)


def test_pdb_percentages_scale_with_the_controller_not_the_pods(kube):
    k = kube(small_scenario(count=2, max_pods=2))
    k.deployment("shop", 6)
    make_pdb(k, "shop", "shop", maxUnavailable="50%")
    k.wait(lambda: pdb_status(k, "shop")["currentHealthy"] == 4)
    # two pods cannot be scheduled: the budget is still computed from the 6 replicas wanted
    assert pdb_status(k, "shop") == {
        "currentHealthy": 4,
        "desiredHealthy": 3,
        "disruptionsAllowed": 1,
        "expectedPods": 6,
        "observedGeneration": 1,
    }


def test_pdb_for_a_daemonset_expects_one_pod_per_node(kube):
    k = kube("example", time_scale=SCALE)
    k.policy.create_namespaced_pod_disruption_budget(
        "kube-system",
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": {"name": "kube-proxy", "namespace": "kube-system"},
            "spec": {"selector": {"matchLabels": {"k8s-app": "kube-proxy"}}, "maxUnavailable": "20%"},
        },
    )

    def status() -> client.V1PodDisruptionBudgetStatus:
        return k.policy.read_namespaced_pod_disruption_budget("kube-proxy", "kube-system").status

    k.wait(lambda: status().current_healthy == 5)
    assert (status().expected_pods, status().desired_healthy, status().disruptions_allowed) == (5, 4, 1)


def test_deleting_a_node_takes_its_pods_and_controllers_recreate_them_elsewhere(kube):
    """As a scale-in, an auto-repair or a spot eviction on AKS: the VM goes, its pods with it; the
    ReplicaSet brings its count back on the remaining nodes, and the DaemonSet no longer wants the node."""
    k = kube(small_scenario(count=3, workloads=[]))
    nodes = k.nodes()
    k.deployment("web", 6)
    pods = k.wait_bound("app=web", 6)
    victim = pods[0].spec.node_name
    on_victim = {p.metadata.name for p in pods if p.spec.node_name == victim}
    assert on_victim
    k.core.delete_node(victim)

    assert victim not in k.nodes()
    now = k.wait_bound("app=web", 6)
    assert victim not in placement(now)
    assert on_victim.isdisjoint(p.metadata.name for p in now), "the deleted node's pods are gone, not moved"
    assert set(placement(now)) <= set(nodes) - {victim}
    removed = [e for e in k.sim.observer.timeline() if e["event"] == "node_removed"]
    assert [e["node"] for e in removed] == [victim]
    assert k.sim.observer.invariants()["pdb_violations"] == 0
