"""Command line: ``python -m simulator serve --scenario FILE`` runs a simulated AKS until stopped."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from simulator.runtime import SimulatedAKS
from simulator.scenario import ScenarioError, load_scenario


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulator", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve a scenario over HTTPS until SIGINT or SIGTERM")
    serve.add_argument("--scenario", required=True, help="scenario YAML file")
    serve.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free port)")
    serve.add_argument("--kubeconfig", help="where to write the kubeconfig (default: in the state folder)")
    serve.add_argument("--state-dir", help="folder for the CA, server certificate and kubeconfig")
    serve.add_argument("--time-scale", type=float, help="override the scenario's time_scale")
    args = parser.parse_args(argv)

    try:
        scenario = load_scenario(args.scenario, time_scale=args.time_scale)
    except ScenarioError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    sim = SimulatedAKS(scenario, port=args.port, state_dir=args.state_dir, kubeconfig=args.kubeconfig)
    try:
        endpoints = sim.start()
    except (OSError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(endpoints.ready_line(), flush=True)
    try:
        stop.wait()
    finally:
        sim.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
