"""Scenario files, the ``python -m simulator serve`` command line, the kubeconfig it writes, AKS-like nodes."""

from __future__ import annotations

import base64
import copy
import json
import os
import re
import signal
import ssl
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
import yaml
from kubernetes import client, config

from simulator.scenario import Scenario, ScenarioError, load_scenario, parse_scenario
from tests.support import DEMO_SCENARIO, EXAMPLE_SCENARIO, ROOT, scenario_dict

NODE_NAME = re.compile(r"^aks-(?P<pool>[a-z][a-z0-9]{0,11})-\d{8}-vmss[0-9a-z]{6}$")
AKS_LABELS = (
    "kubernetes.azure.com/agentpool",
    "kubernetes.azure.com/node-image-version",
    "agentpool",
    "kubernetes.azure.com/mode",
    "topology.kubernetes.io/zone",
    "kubernetes.io/os",
    "kubernetes.io/hostname",
    "node.kubernetes.io/instance-type",
)


def shared_example() -> Path:
    """The example scenario in shared/, which lives beside the checkout (CI) or at /work/shared.

    Outside this workplace the project's verbatim copy, scenarios/example.yaml, stands in for it."""
    for base in (ROOT.parent / "shared", Path("/work/shared")):
        path = base / "scenarios" / "example.yaml"
        if path.exists():
            return path
    return EXAMPLE_SCENARIO


# ---- loading -----------------------------------------------------------------------------------


def test_the_shared_example_loads_unchanged():
    example = shared_example()
    scenario = load_scenario(example)
    assert isinstance(scenario, Scenario)
    assert example.read_text() == EXAMPLE_SCENARIO.read_text()
    assert scenario.time_scale == 0.2
    assert [p.name for p in scenario.pools] == ["nodepool1", "userpool"]
    assert scenario.cluster.available_versions == ["1.30.5", "1.30.7", "1.31.2", "1.31.4", "1.32.1"]
    assert scenario.nodes[0].pending_kernel == "5.15.0-1081-azure"
    assert [w.kind for w in scenario.workloads] == ["Deployment", "DaemonSet", "Pod"]


def test_the_demo_is_the_example_plus_a_one_node_windows_pool():
    example, demo = load_scenario(shared_example()), load_scenario(DEMO_SCENARIO)
    assert demo.model_copy(update={"pools": demo.pools[:-1]}) == example
    windows = demo.pools[-1]
    assert (windows.name, windows.os_type, windows.count) == ("npwin", "Windows", 1)
    assert windows.os_image == "Windows Server 2022 Datacenter"
    assert windows.node_image_version.startswith("AKSWindows-2022-containerd-")


def test_time_scale_can_be_overridden_when_loading():
    assert load_scenario(DEMO_SCENARIO, time_scale=0.05).time_scale == 0.05


def broken(change) -> dict:
    doc = copy.deepcopy(scenario_dict())
    change(doc)
    return doc


def _set(path: str, value: object):
    def change(doc: dict) -> None:
        *parents, last = path.split(".")
        target = doc
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        if isinstance(target, list):
            target[int(last)] = value
        else:
            target[last] = value

    return change


@pytest.mark.parametrize(
    ("change", "field", "says"),
    [
        (_set("pools.0.colour", "blue"), "pools.0.colour", "Extra inputs are not permitted"),
        (_set("surprise", 1), "surprise", "Extra inputs are not permitted"),
        (_set("pools.1.count", "three"), "pools.1.count", "valid integer"),
        (_set("workloads.0.replicas", [3]), "workloads.0.replicas", "valid integer"),
        (_set("faults.api_error_rate", 2), "faults.api_error_rate", "less than or equal to 1"),
        (_set("cluster.kubernetes_version", "1.30"), "cluster.kubernetes_version", "should match pattern"),
        (_set("pools.0.orchestrator_version", "v1.30.5"), "pools.0.orchestrator_version", "should match"),
        (_set("cluster.available_versions", ["1.30.5", "1.31"]), "cluster.available_versions.1", "pattern"),
        (_set("nodes.1.index", 2), "nodes.1.index", "outside pool 'userpool' (count 2)"),
        (_set("nodes.0.pool", "gpupool"), "nodes.0.pool", "unknown pool 'gpupool'"),
        (
            _set("workloads.2.node", {"pool": "userpool", "index": 7}),
            "workloads.2.node.index",
            "outside pool",
        ),
        (
            _set("workloads.0.pdb", {"min_available": 2, "max_unavailable": 1}),
            "workloads.0.pdb",
            "exactly one of min_available and max_unavailable",
        ),
        (_set("workloads.0.pdb", {}), "workloads.0.pdb", "exactly one of"),
        (_set("workloads.1.kind", "StatefulSet"), "workloads.1.kind", "'Deployment', 'DaemonSet' or 'Pod'"),
        (_set("pools.1.name", "nodepool1"), "pools.1.name", "used twice"),
        (_set("nodes.1.reboot_required", False), "nodes.1", "pending_kernel is set but reboot_required"),
    ],
)
def test_invalid_scenarios_name_the_field(change, field, says):
    with pytest.raises(ScenarioError) as raised:
        parse_scenario(broken(change), source="bad.yaml")
    message = str(raised.value)
    assert message.startswith("bad.yaml: invalid scenario")
    line = next((line.strip() for line in message.splitlines() if line.strip().startswith(f"{field}:")), None)
    assert line is not None, f"{field} is not named in:\n{message}"
    assert says in line


def test_unreadable_or_malformed_files_are_scenario_errors(tmp_path):
    with pytest.raises(ScenarioError, match="cannot read scenario"):
        load_scenario(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("pools: [unclosed\n")
    with pytest.raises(ScenarioError, match="not valid YAML"):
        load_scenario(bad)
    bad.write_text("- a list\n")
    with pytest.raises(ScenarioError, match="must be a mapping"):
        load_scenario(bad)


# ---- the command line --------------------------------------------------------------------------


def serve(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "simulator", "serve", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def read_line(proc: subprocess.Popen, timeout: float) -> str:
    """The first stdout line, or fail after ``timeout`` seconds (the process is killed then)."""
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    if not lines:
        proc.kill()
        pytest.fail(f"no ready line within {timeout} s; stderr: {proc.communicate()[1]}")
    return lines[0]


def test_serve_refuses_a_bad_scenario_with_exit_code_2_and_starts_nothing(tmp_path):
    doc = scenario_dict()
    doc["nodes"][0]["index"] = 9
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(doc))
    state = tmp_path / "state"
    proc = serve("--scenario", str(bad), "--state-dir", str(state), "--kubeconfig", str(tmp_path / "kc"))
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert out == ""
    assert "nodes.0.index" in err and "outside pool 'nodepool1'" in err
    assert str(bad) in err
    assert not state.exists()
    assert not (tmp_path / "kc").exists()


def test_serve_prints_one_ready_line_serves_over_verified_tls_and_stops_on_sigterm(tmp_path):
    state = tmp_path / "state"
    proc = serve("--scenario", str(DEMO_SCENARIO), "--state-dir", str(state), "--time-scale", "0.05")
    try:
        ready = json.loads(read_line(proc, timeout=30))
        assert {"kube_api", "kubeconfig", "ca_bundle", "token"} <= set(ready)
        assert re.fullmatch(r"https://127\.0\.0\.1:\d+", ready["kube_api"])
        assert Path(ready["kubeconfig"]) == (state / "kubeconfig").resolve()
        assert Path(ready["ca_bundle"]) == (state / "ca.pem").resolve()

        kubeconfig = yaml.safe_load(Path(ready["kubeconfig"]).read_text())
        cluster = kubeconfig["clusters"][0]["cluster"]
        assert cluster["server"] == ready["kube_api"]
        assert "insecure-skip-tls-verify" not in cluster
        assert (
            base64.b64decode(cluster["certificate-authority-data"]) == Path(ready["ca_bundle"]).read_bytes()
        )
        assert kubeconfig["users"][0]["user"]["token"] == ready["token"]
        assert oct(Path(ready["kubeconfig"]).stat().st_mode & 0o777) == "0o600"

        api = config.new_client_from_config(config_file=ready["kubeconfig"])
        try:
            assert api.configuration.verify_ssl
            nodes = client.CoreV1Api(api).list_node().items
            assert len(nodes) == 6  # the demo: 5 Linux nodes and 1 Windows node
        finally:
            api.close()
        with httpx.Client(verify=ssl.create_default_context(cafile=ready["ca_bundle"])) as http:
            assert http.get(f"{ready['kube_api']}/version").status_code == 401
            headers = {"Authorization": f"Bearer {ready['token']}"}
            assert http.get(f"{ready['kube_api']}/version", headers=headers).json()["gitVersion"] == "v1.30.5"
        with (
            httpx.Client(verify=ssl.create_default_context()) as untrusting,
            pytest.raises(httpx.ConnectError),
        ):
            untrusting.get(f"{ready['kube_api']}/version")

        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
        assert proc.returncode == 0
        assert out == "", "exactly one line on stdout"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


# ---- AKS-like nodes ----------------------------------------------------------------------------


def test_nodes_are_named_and_labelled_like_aks_nodes(start_sim):
    sim = start_sim("example", time_scale=0.05)
    api = config.new_client_from_config(config_file=sim.kubeconfig)
    try:
        nodes = client.CoreV1Api(api).list_node().items
    finally:
        api.close()
    scenario = load_scenario(EXAMPLE_SCENARIO)
    pools = {p.name: p for p in scenario.pools}
    assert len(nodes) == sum(p.count for p in scenario.pools)
    addresses = set()
    for node in nodes:
        name = node.metadata.name
        match = NODE_NAME.match(name)
        assert match, name
        pool = pools[match["pool"]]
        labels = node.metadata.labels
        assert all(key in labels for key in AKS_LABELS), sorted(set(AKS_LABELS) - set(labels))
        assert labels["kubernetes.azure.com/agentpool"] == labels["agentpool"] == pool.name
        assert labels["kubernetes.azure.com/node-image-version"] == pool.node_image_version
        assert labels["kubernetes.azure.com/mode"] == pool.mode.lower()
        assert labels["kubernetes.io/os"] == "linux"
        assert labels["kubernetes.io/hostname"] == name
        assert labels["node.kubernetes.io/instance-type"] == pool.vm_size
        assert re.fullmatch(r"westeurope-[123]", labels["topology.kubernetes.io/zone"])
        internal = [a.address for a in node.status.addresses if a.type == "InternalIP"]
        assert len(internal) == 1 and internal[0].startswith("10.224.")
        addresses.add(internal[0])
        info = node.status.node_info
        assert (info.kernel_version, info.os_image, info.kubelet_version) == (
            pool.kernel,
            pool.os_image,
            f"v{pool.orchestrator_version}",
        )
    assert len(addresses) == len(nodes)
    # nodes of a pool share the VMSS part of the name and are numbered in base 36 from 0
    pool1 = sorted(n.metadata.name for n in nodes if "nodepool1" in n.metadata.name)
    assert [n[-6:] for n in pool1] == ["000000", "000001", "000002"]
    assert len({n[:-6] for n in pool1}) == 1
    zones = [
        n.metadata.labels["topology.kubernetes.io/zone"]
        for n in sorted(nodes, key=lambda n: n.metadata.name)
        if "nodepool1" in n.metadata.name
    ]
    assert zones == ["westeurope-1", "westeurope-2", "westeurope-3"]
