"""`make demo`: run the node-maintenance flow on the embedded simulated AKS cluster and show the result."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from aksmaint_cli.commands import maintenance_main as run_flow
from simulator.observe import SimObserver
from simulator.runtime import SimulatedAKS
from simulator.scenario import load_scenario

ROOT = Path(__file__).resolve().parent.parent
KUBECTL = ROOT / ".cache" / "bin" / "kubectl"
SHOWN_EVENTS = {"cordoned", "pod_evicted", "rebooted", "ready", "uncordoned", "node_lost", "pdb_violation"}


def kubectl(kubeconfig: str, *args: str) -> None:
    print(f"$ kubectl {' '.join(args)}", flush=True)
    subprocess.run([str(KUBECTL), "--kubeconfig", kubeconfig, *args], check=True)
    print(flush=True)


def main() -> int:
    scenario = load_scenario(ROOT / "scenarios" / "demo.yaml")
    with SimulatedAKS(scenario) as sim:
        kubeconfig = sim.endpoints.kubeconfig
        observer = SimObserver(sim.endpoints)
        print(
            f"== Simulated AKS cluster '{scenario.cluster.name}' at {sim.endpoints.kube_api} ==\n", flush=True
        )
        kubectl(kubeconfig, "get", "nodes", "-o", "wide")
        waiting = [n for n, h in observer.hosts().items() if h["reboot_required"]]
        print(f"Nodes with /var/run/reboot-required: {', '.join(waiting) or 'none'}\n")
        print("== Running the node-maintenance flow (concurrency 1) ==", flush=True)
        print("   (the first run starts a local Prefect server, which takes a few seconds)\n", flush=True)
        started = time.monotonic()
        code = run_flow(["--kubeconfig", kubeconfig, "--concurrency", "1"])
        print(f"\n(flow finished in {time.monotonic() - started:.0f}s)\n")
        print("== What the cluster saw (simulator timeline, simulated seconds since the first cordon) ==")
        events = [e for e in observer.timeline() if e["event"] in SHOWN_EVENTS]
        origin = events[0]["t"] if events else 0.0
        for event in events:
            detail = event["details"]
            extra = (
                f" {detail['kernel_before']} -> {detail['kernel_after']}"
                if event["event"] == "rebooted"
                else f" {detail['pod']}"
                if "pod" in detail
                else ""
            )
            print(f"  t={event['t'] - origin:6.1f}s  {event['event']:<12} {event['node']}{extra}")
        inv = observer.invariants()
        print(
            f"\nSafety: at most {inv['max_disrupted']} node(s) disrupted at once, "
            f"{inv['pdb_violations']} PodDisruptionBudget violation(s), reboots per node {inv['reboots']}\n"
        )
        kubectl(kubeconfig, "get", "nodes", "-o", "wide")
        observer.close()
    return code


if __name__ == "__main__":
    sys.exit(main())
