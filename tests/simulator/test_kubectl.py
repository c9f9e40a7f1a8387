"""API fidelity pinned by a real kubectl: tables, cordon, drain through PDB refusals, watches, auth."""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from simulator.controllers.common import node_name

KERNEL = "5.15.0-1081-azure"
SPOT_KERNEL = "6.8.0-1021-azure"


def _cluster(name: str, version: str = "1.31.4") -> dict:
    return {
        "name": name,
        "subscription_id": "00000000-0000-0000-0000-000000000000",
        "resource_group": "rg-test",
        "location": "westeurope",
        "kubernetes_version": version,
    }


def _pool(name: str, count: int, **extra: object) -> dict:
    return {
        "name": name,
        "count": count,
        "orchestrator_version": "1.31.4",
        "node_image_version": "AKSUbuntu-2204gen2containerd-202502.05.0",
        "kernel": KERNEL,
        **extra,
    }


FLEET = {
    "time_scale": 0.05,
    "cluster": _cluster("aks-kubectl"),
    "pools": [
        _pool("system", 2, mode="System"),
        _pool(
            "spot",
            1,
            os_image="Ubuntu 24.04.2 LTS",
            kernel=SPOT_KERNEL,
            orchestrator_version="1.31.2",
            container_runtime="containerd://2.0.4-1",
        ),
    ],
    "nodes": [{"pool": "spot", "index": 0, "labels": {"node-role.kubernetes.io/spot": ""}}],
    "workloads": [
        {
            "kind": "Deployment",
            "namespace": "shop",
            "name": "web",
            "replicas": 3,
            "labels": {"app": "web"},
            "pdb": {"min_available": 2},
            "ready_seconds": 1,
            "termination_grace_seconds": 2,
        },
        {
            "kind": "DaemonSet",
            "namespace": "kube-system",
            "name": "kube-proxy",
            "labels": {"k8s-app": "kube-proxy"},
        },
        {
            "kind": "Pod",
            "namespace": "default",
            "name": "scratch",
            "labels": {"app": "scratch"},
            "node": {"pool": "spot", "index": 0},
            "empty_dir": True,
        },
    ],
}


def run(
    kubectl: str, kubeconfig: str, *args: str, timeout: float = 30, check: bool = True
) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [kubectl, "--kubeconfig", kubeconfig, *args], capture_output=True, text=True, timeout=timeout
    )
    if check:
        assert result.returncode == 0, f"kubectl {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def tables(text: str) -> list[list[dict[str, str]]]:
    """Parse kubectl's printed tables (several for `get a,b`), cutting cells at the header positions."""
    out = []
    for block in re.split(r"\n\s*\n", text.strip()):
        lines = [line for line in block.splitlines() if line.strip()]
        columns = [(m.start(), m.group()) for m in re.finditer(r"\S+(?: \S+)*", lines[0])]
        rows = []
        for line in lines[1:]:
            row = {}
            for i, (start, name) in enumerate(columns):
                end = columns[i + 1][0] if i + 1 < len(columns) else None
                row[name] = line[start:end].strip()
            rows.append(row)
        out.append(rows)
    return out


def table(text: str) -> list[dict[str, str]]:
    (rows,) = tables(text)
    return rows


def poll(condition: Callable[[], object], timeout: float = 20, interval: float = 0.1) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(interval)


def test_get_nodes_wide_shows_the_scenarios_node_facts(start_sim, kubectl) -> None:
    scenario = {**FLEET, "nodes": [*FLEET["nodes"], {"pool": "system", "index": 1, "cordoned": True}]}
    sim = start_sim(scenario)
    rows = {r["NAME"]: r for r in table(run(kubectl, sim.kubeconfig, "get", "nodes", "-o", "wide").stdout)}
    items = json.loads(run(kubectl, sim.kubeconfig, "get", "nodes", "-o", "json").stdout)["items"]
    addresses = {n["metadata"]["name"]: n["status"]["addresses"] for n in items}

    system0, system1 = node_name("aks-kubectl", "system", 0), node_name("aks-kubectl", "system", 1)
    spot = node_name("aks-kubectl", "spot", 0)
    assert sorted(rows) == sorted([system0, system1, spot])
    expected = {
        system0: ("Ready", "agent", "v1.31.4", "Ubuntu 22.04.5 LTS", KERNEL, "containerd://1.7.25-1"),
        system1: (
            "Ready,SchedulingDisabled",
            "agent",
            "v1.31.4",
            "Ubuntu 22.04.5 LTS",
            KERNEL,
            "containerd://1.7.25-1",
        ),
        spot: ("Ready", "agent,spot", "v1.31.2", "Ubuntu 24.04.2 LTS", SPOT_KERNEL, "containerd://2.0.4-1"),
    }
    for name, (status, roles, version, os_image, kernel, runtime) in expected.items():
        row = rows[name]
        assert (row["STATUS"], row["ROLES"], row["VERSION"]) == (status, roles, version)
        assert (row["OS-IMAGE"], row["KERNEL-VERSION"], row["CONTAINER-RUNTIME"]) == (
            os_image,
            kernel,
            runtime,
        )
        internal = next(a["address"] for a in addresses[name] if a["type"] == "InternalIP")
        assert row["INTERNAL-IP"] == internal and re.fullmatch(r"10\.224\.\d+\.\d+", internal)
        assert row["EXTERNAL-IP"] == "<none>"
    assert len({r["INTERNAL-IP"] for r in rows.values()}) == 3

    # without -o wide, kubectl hides the priority-1 columns the server sent
    narrow = table(run(kubectl, sim.kubeconfig, "get", "nodes").stdout)
    assert set(narrow[0]) == {"NAME", "STATUS", "ROLES", "AGE", "VERSION"}


def test_cordon_and_uncordon_show_in_status_and_timeline(start_sim, kubectl) -> None:
    sim = start_sim(FLEET)
    node = node_name("aks-kubectl", "system", 0)

    def status() -> str:
        rows = table(run(kubectl, sim.kubeconfig, "get", "nodes").stdout)
        return next(r["STATUS"] for r in rows if r["NAME"] == node)

    assert status() == "Ready"
    assert run(kubectl, sim.kubeconfig, "cordon", node).stdout.strip() == f"node/{node} cordoned"
    assert status() == "Ready,SchedulingDisabled"
    assert "already cordoned" in run(kubectl, sim.kubeconfig, "cordon", node).stdout
    assert run(kubectl, sim.kubeconfig, "uncordon", node).stdout.strip() == f"node/{node} uncordoned"
    assert status() == "Ready"

    events = [
        (e["event"], e["node"]) for e in sim.observer.timeline() if e["event"] in ("cordoned", "uncordoned")
    ]
    assert events == [("cordoned", node), ("uncordoned", node)]
    patches = [e for e in sim.observer.mutating_requests() if e["resource"] == "nodes"]
    assert [(e["verb"], e["name"], e["status"]) for e in patches] == [
        ("patch", node, 200),
        ("patch", node, 200),
    ]
    cordoned = run(
        kubectl, sim.kubeconfig, "get", "nodes", "--field-selector", "spec.unschedulable=false", "-o", "name"
    ).stdout.split()
    assert f"node/{node}" in cordoned and len(cordoned) == 3


def test_get_pods_wide_pdb_leases_and_workloads(start_sim, kubectl) -> None:
    sim = start_sim(FLEET)
    nodes = sorted(sim.sim.node_names())
    spot = node_name("aks-kubectl", "spot", 0)

    def running_pods() -> list[dict[str, str]] | None:
        rows = table(run(kubectl, sim.kubeconfig, "get", "pods", "-A", "-o", "wide").stdout)
        ready = len(rows) == 3 + 3 + 1 and all(r["STATUS"] == "Running" and r["READY"] == "1/1" for r in rows)
        return rows if ready else None

    rows = poll(running_pods)
    pods = json.loads(run(kubectl, sim.kubeconfig, "get", "pods", "-A", "-o", "json").stdout)["items"]
    truth = {(p["metadata"]["namespace"], p["metadata"]["name"]): p for p in pods}
    for row in rows:
        pod = truth[(row["NAMESPACE"], row["NAME"])]
        assert row["NODE"] == pod["spec"]["nodeName"] and row["NODE"] in nodes
        assert row["IP"] == pod["status"]["podIP"]
        assert row["NOMINATED NODE"] == "<none>" and row["READINESS GATES"] == "<none>"
    by_namespace = {
        ns: sorted(r["NODE"] for r in rows if r["NAMESPACE"] == ns) for ns in ("kube-system", "shop")
    }
    assert by_namespace["kube-system"] == nodes  # one kube-proxy per node
    assert sorted(set(by_namespace["shop"])) == nodes  # replicas spread over the nodes
    assert [(r["NAME"], r["NODE"]) for r in rows if r["NAMESPACE"] == "default"] == [("scratch", spot)]

    pdb = poll(
        lambda: [
            r
            for r in table(run(kubectl, sim.kubeconfig, "get", "pdb", "-A").stdout)
            if r["ALLOWED DISRUPTIONS"] == "1"
        ]
    )
    assert pdb == [
        {
            "NAMESPACE": "shop",
            "NAME": "web",
            "MIN AVAILABLE": "2",
            "MAX UNAVAILABLE": "N/A",
            "ALLOWED DISRUPTIONS": "1",
            "AGE": pdb[0]["AGE"],
        }
    ]

    leases = table(run(kubectl, sim.kubeconfig, "get", "leases", "-A").stdout)
    assert sorted((r["NAMESPACE"], r["NAME"], r["HOLDER"]) for r in leases) == [
        ("kube-node-lease", n, n) for n in nodes
    ]

    def renew_times() -> dict[str, str]:
        out = run(
            kubectl,
            sim.kubeconfig,
            "get",
            "leases",
            "-n",
            "kube-node-lease",
            "-o",
            r"jsonpath={range .items[*]}{.metadata.name}={.spec.renewTime}{'\n'}{end}",
        ).stdout
        return dict(line.split("=", 1) for line in out.split())

    first = renew_times()
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", t) for t in first.values())
    # heartbeats every 10 simulated seconds: 0.5 s at this time scale
    poll(lambda: all(t > first[n] for n, t in renew_times().items()), timeout=10)

    deploy, rs, ds = tables(run(kubectl, sim.kubeconfig, "get", "deploy,rs,ds", "-A").stdout)
    assert [(r["NAMESPACE"], r["NAME"], r["READY"], r["UP-TO-DATE"], r["AVAILABLE"]) for r in deploy] == [
        ("shop", "deployment.apps/web", "3/3", "3", "3")
    ]
    assert len(rs) == 1 and rs[0]["NAME"].startswith("replicaset.apps/web-")
    assert (rs[0]["DESIRED"], rs[0]["CURRENT"], rs[0]["READY"]) == ("3", "3", "3")
    assert [(r["NAME"], r["DESIRED"], r["CURRENT"], r["READY"], r["NODE SELECTOR"]) for r in ds] == [
        ("daemonset.apps/kube-proxy", "3", "3", "3", "<none>")
    ]


DRAIN = {
    "time_scale": 0.25,
    "cluster": _cluster("aks-drain"),
    "pools": [_pool("pool", 2)],
    "workloads": [
        # 4 replicas on 2 nodes, 3 must stay available: the second eviction from a node is refused
        # until the first one's replacement is Ready (8 simulated seconds = 2 s)
        {
            "kind": "Deployment",
            "namespace": "shop",
            "name": "web",
            "replicas": 4,
            "labels": {"app": "web"},
            "pdb": {"min_available": 3},
            "ready_seconds": 8,
            "termination_grace_seconds": 2,
        },
        {
            "kind": "DaemonSet",
            "namespace": "kube-system",
            "name": "kube-proxy",
            "labels": {"k8s-app": "kube-proxy"},
        },
        {
            "kind": "Pod",
            "namespace": "default",
            "name": "scratch",
            "labels": {"app": "scratch"},
            "node": {"pool": "pool", "index": 0},
            "empty_dir": True,
        },
    ],
}


def test_drain_waits_out_the_disruption_budget_and_succeeds(start_sim, kubectl) -> None:
    sim = start_sim(DRAIN)
    node = node_name("aks-drain", "pool", 0)

    def web_pods() -> dict[str, list[str]]:
        out = run(
            kubectl,
            sim.kubeconfig,
            "get",
            "pods",
            "-n",
            "shop",
            "-o",
            r"jsonpath={range .items[*]}{.metadata.name} {.spec.nodeName}{'\n'}{end}",
        ).stdout
        by_node: dict[str, list[str]] = {}
        for line in out.splitlines():
            name, where = line.split()
            by_node.setdefault(where, []).append(name)
        return by_node

    poll(
        lambda: [
            r
            for r in table(run(kubectl, sim.kubeconfig, "get", "pdb", "-n", "shop").stdout)
            if r["ALLOWED DISRUPTIONS"] == "1"
        ]
    )
    on_node = sorted(web_pods()[node])
    assert len(on_node) == 2

    started = time.monotonic()
    result = run(
        kubectl,
        sim.kubeconfig,
        "drain",
        node,
        "--ignore-daemonsets",
        "--delete-emptydir-data",
        "--force",
        timeout=40,
    )
    elapsed = time.monotonic() - started
    assert "Cannot evict pod as it would violate the pod's disruption budget" in result.stderr
    assert "will retry after 5s" in result.stderr
    assert f"node/{node} drained" in result.stdout
    for pod in [*on_node, "scratch"]:
        assert f"pod/{pod} evicted" in result.stdout
    assert elapsed >= 5  # one refusal, one retry

    assert node not in web_pods()
    rows = table(run(kubectl, sim.kubeconfig, "get", "pods", "-A", "-o", "wide").stdout)
    assert [r["NAME"] for r in rows if r["NODE"] == node] == [
        r["NAME"] for r in rows if r["NAME"].startswith("kube-proxy-") and r["NODE"] == node
    ]
    status = next(
        r["STATUS"] for r in table(run(kubectl, sim.kubeconfig, "get", "nodes").stdout) if r["NAME"] == node
    )
    assert status == "Ready,SchedulingDisabled"

    timeline = sim.observer.timeline()
    evicted = sorted(
        e["details"]["pod"] for e in timeline if e["event"] == "pod_evicted" and e["node"] == node
    )
    assert evicted == sorted(["default/scratch", *(f"shop/{p}" for p in on_node)])
    assert [e["event"] for e in timeline if e["node"] == node][0] == "cordoned"
    refusals = [e for e in sim.observer.audit() if e["subresource"] == "eviction" and e["status"] == 429]
    assert len(refusals) >= 1
    assert sim.observer.invariants()["pdb_violations"] == 0


def test_get_watch_prints_server_side_table_rows(start_sim, kubectl) -> None:
    sim = start_sim(FLEET)
    # Ready, not only Running: the watch's first row must show 1/1 (the readiness probe's delay sits between)
    poll(
        lambda: (
            ["scratch", "1/1", "Running"]
            in [
                r.split()[:3]
                for r in run(
                    kubectl, sim.kubeconfig, "get", "pod", "-n", "default", "scratch"
                ).stdout.splitlines()
            ]
        )
    )
    watch = subprocess.Popen(
        [kubectl, "--kubeconfig", sim.kubeconfig, "get", "pods", "-n", "default", "-w"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        poll(lambda: any(e["verb"] == "watch" and e["resource"] == "pods" for e in sim.observer.audit()))
        result = run(kubectl, sim.kubeconfig, "delete", "pod", "-n", "default", "scratch", "--wait=true")
        assert 'pod "scratch" deleted' in result.stdout
        assert (
            run(kubectl, sim.kubeconfig, "get", "pod", "-n", "default", "scratch", check=False).returncode
            == 1
        )
    finally:
        watch.terminate()
        out, _ = watch.communicate(timeout=10)
    rows = [line.split() for line in out.splitlines()]
    assert rows[0] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert rows[1][:3] == ["scratch", "1/1", "Running"]
    assert ["scratch", "1/1", "Terminating"] in [r[:3] for r in rows[2:]]


def test_kubectl_with_a_wrong_token_is_unauthorized(start_sim, kubectl, tmp_path) -> None:
    sim = start_sim(FLEET)
    config = yaml.safe_load(Path(sim.kubeconfig).read_text())
    config["users"][0]["user"]["token"] = "not-the-token"
    bad = tmp_path / "kubeconfig-bad"
    bad.write_text(yaml.safe_dump(config))
    result = run(kubectl, str(bad), "get", "nodes", check=False)
    assert result.returncode == 1
    # kubectl >= 1.27 words a 401 as client-go's generic Unauthorized text, not the body's message
    assert (
        "error: You must be logged in to the server (the server has asked for the client to provide "
        "credentials)" in result.stderr
    )
    assert all(e["status"] == 401 for e in sim.observer.audit())
    assert run(kubectl, sim.kubeconfig, "get", "nodes").returncode == 0
