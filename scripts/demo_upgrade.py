"""`make demo-upgrade`: AKS upgrades on the embedded simulated cluster, through the Azure SDK and the ARM emulator.

Starts the simulator on scenarios/demo.yaml, runs the cluster-upgrade flow twice through its command line
(node image, then one minor Kubernetes version with ``--target next-minor``) and shows per pool what changed,
with ``kubectl get nodes -o wide`` before and after.
"""

from __future__ import annotations

import argparse
import os
import ssl
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
from kubernetes import client, config

from aksmaint.azure import TOKEN_ENV
from aksmaint_cli.upgrade import upgrade_main as run_flow
from simulator.observe import SimObserver
from simulator.runtime import Endpoints, SimulatedAKS
from simulator.scenario import load_scenario

ROOT = Path(__file__).resolve().parent.parent
KUBECTL = ROOT / ".cache" / "bin" / "kubectl"
POOL_LABEL = "kubernetes.azure.com/agentpool"
IMAGE_LABEL = "kubernetes.azure.com/node-image-version"


def kubectl(kubeconfig: str, *args: str) -> None:
    print(f"$ kubectl {' '.join(args)}", flush=True)
    subprocess.run([str(KUBECTL), "--kubeconfig", kubeconfig, *args], check=True)
    print(flush=True)


def read_nodes(kubeconfig: str) -> dict[str, dict]:
    """Per node: pool, image, kubelet and kernel, as the Kubernetes API reports them."""
    api = config.new_client_from_config(config_file=kubeconfig)
    try:
        nodes = client.CoreV1Api(api).list_node().items
    finally:
        api.close()
    return {
        n.metadata.name: {
            "pool": n.metadata.labels.get(POOL_LABEL, "?"),
            "image": n.metadata.labels.get(IMAGE_LABEL, "?"),
            "kubelet": n.status.node_info.kubelet_version,
            "kernel": n.status.node_info.kernel_version,
        }
        for n in nodes
    }


def arm_operations(endpoints: Endpoints) -> list[dict]:
    response = httpx.get(
        f"{endpoints.arm}/_sim/arm/operations",
        verify=ssl.create_default_context(cafile=endpoints.ca_bundle),
        headers={"Authorization": f"Bearer {endpoints.token}"},
    )
    response.raise_for_status()
    return response.json()


def _mix(nodes: list[dict], key: str) -> str:
    counts = Counter(n[key] for n in nodes)
    return ", ".join(
        f"{value}" + (f" x{count}" if len(counts) > 1 else "") for value, count in sorted(counts.items())
    )


def print_pools(before: dict[str, dict], after: dict[str, dict]) -> None:
    """What happened per pool: nodes replaced, and image, kubelet and kernel before -> after."""
    for pool in sorted({n["pool"] for n in (*before.values(), *after.values())}):
        old = {name: n for name, n in before.items() if n["pool"] == pool}
        new = {name: n for name, n in after.items() if n["pool"] == pool}
        removed, added = sorted(set(old) - set(new)), sorted(set(new) - set(old))
        changed = removed or added or any(old[name] != new[name] for name in old)
        print(f"  pool {pool}: {len(old)} -> {len(new)} node(s)" + ("" if changed else ", unchanged"))
        if not changed:
            continue
        for key, label in (("image", "node image"), ("kubelet", "kubelet"), ("kernel", "kernel")):
            was, now = _mix(list(old.values()), key), _mix(list(new.values()), key)
            print(f"    {label:<11} {was}" + (f"  ->  {now}" if now != was else "  (same)"))
        if removed:
            print(f"    removed     {', '.join(removed)}")
        if added:
            print(f"    added       {', '.join(added)}")
    print(flush=True)


def run_phase(title: str, sim: SimulatedAKS, args: list[str]) -> int:
    endpoints, scenario = sim.endpoints, sim.scenario
    print(f"== {title} ==", flush=True)
    print(f"$ python -m flows.cluster_upgrade {' '.join(args)} ...\n", flush=True)
    before = read_nodes(endpoints.kubeconfig)
    known_ops = len(arm_operations(endpoints))
    started = time.monotonic()
    code = run_flow(
        [
            "--subscription-id", scenario.cluster.subscription_id,
            "--resource-group", scenario.cluster.resource_group,
            "--name", scenario.cluster.name,
            "--arm-endpoint", endpoints.arm,
            "--ca-bundle", endpoints.ca_bundle,
            "--credential", "static-token",
            "--poll-interval", "0.5",
            *args,
        ]
    )  # fmt: skip
    print(f"\n(flow finished in {time.monotonic() - started:.0f}s, exit code {code})\n")
    print("AKS operations (as the ARM emulator ran them):")
    for op in arm_operations(endpoints)[known_ops:]:
        error = f"  {op['error']['code']}: {op['error']['message']}" if op.get("error") else ""
        print(f"  {op['kind']:<36} {op['target']:<10} {op['status']}{error}")
    print("\nPer pool:")
    print_pools(before, read_nodes(endpoints.kubeconfig))
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python scripts/demo_upgrade.py", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--time-scale", type=float, help="override the scenario's time_scale (e.g. 0.05)")
    args = parser.parse_args(argv)
    scenario = load_scenario(ROOT / "scenarios" / "demo.yaml", time_scale=args.time_scale)
    with SimulatedAKS(scenario) as sim:
        endpoints = sim.endpoints
        os.environ[TOKEN_ENV] = endpoints.token  # the static-token credential of the simulator
        observer = SimObserver(endpoints)
        print(
            f"== Simulated AKS cluster '{scenario.cluster.name}' (ARM and Kubernetes API at {endpoints.arm}) ==\n"
        )
        kubectl(endpoints.kubeconfig, "get", "nodes", "-o", "wide")
        print("   (the first run starts a local Prefect server, which takes a few seconds)\n", flush=True)
        codes = [run_phase("1. Node image upgrade of every pool", sim, ["--mode", "node-image"])]
        kubectl(endpoints.kubeconfig, "get", "nodes", "-o", "wide")
        codes.append(
            run_phase(
                "2. Kubernetes one minor version up (control plane, then each pool)",
                sim,
                ["--mode", "kubernetes-version", "--target", "next-minor"],
            )
        )
        kubectl(endpoints.kubeconfig, "get", "nodes", "-o", "wide")
        inv = observer.invariants()
        print(f"Safety: {inv['pdb_violations']} PodDisruptionBudget violation(s) during both upgrades")
        observer.close()
    return max(codes)


if __name__ == "__main__":
    sys.exit(main())
