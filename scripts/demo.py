"""`make demo`: start the embedded simulated AKS on the demo scenario and show the cluster."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from simulator.runtime import SimulatedAKS
from simulator.scenario import load_scenario

ROOT = Path(__file__).resolve().parent.parent
KUBECTL = ROOT / ".cache" / "bin" / "kubectl"


def main() -> int:
    scenario = load_scenario(ROOT / "scenarios" / "demo.yaml")
    with SimulatedAKS(scenario) as sim:
        print(f"Simulated AKS cluster '{scenario.cluster.name}' is serving at {sim.endpoints.kube_api}\n")
        for title, args in (("Nodes", ["get", "nodes", "-o", "wide"]),
                            ("Pods", ["get", "pods", "-A", "-o", "wide"]),
                            ("PodDisruptionBudgets", ["get", "pdb", "-A"])):
            print(f"$ kubectl {' '.join(args)}")
            subprocess.run([str(KUBECTL), "--kubeconfig", sim.endpoints.kubeconfig, *args], check=True)
            print()
        hosts = sim.call(lambda: [h.snapshot() for h in sim.cluster.hosts.values()])
        waiting = [h["node"] for h in hosts if h["reboot_required"]]
        print(f"Nodes waiting for a reboot (/var/run/reboot-required present): {', '.join(waiting) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
