"""How the simulated AKS scales: a 1000-node cluster's start time, node listing and idle CPU.

Run with ``uv run python -m bench.sim_scale``. Prints figures, asserts nothing. Targets: start < 10 s,
``list nodes`` < 1 s through the official client, idle CPU near zero.
"""

from __future__ import annotations

import argparse
import ssl
import time

import httpx
from kubernetes import client, config

from bench.scale import scenario
from simulator.runtime import SimulatedAKS
from simulator.scenario import parse_scenario

IDLE_SECONDS = 5.0


def cpu_seconds() -> float:
    """CPU time of this process, all threads (the simulator runs in a thread of it)."""
    return time.process_time()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pools", type=int, default=4)
    parser.add_argument("--nodes-per-pool", type=int, default=250)
    parser.add_argument("--deployments", type=int, default=4)
    parser.add_argument("--replicas", type=int, default=50)
    args = parser.parse_args()

    sc = parse_scenario(
        scenario(args.pools, args.nodes_per_pool, args.deployments, args.replicas, time_scale=0.1)
    )
    nodes = args.pools * args.nodes_per_pool
    rows: list[tuple[str, str, str]] = []

    sim = SimulatedAKS(sc)
    started = time.perf_counter()
    endpoints = sim.start()
    start_seconds = time.perf_counter() - started
    rows.append(("start() to ready", f"{start_seconds:.2f} s", "< 10 s"))
    try:
        http = httpx.Client(
            base_url=endpoints.kube_api,
            timeout=120,
            verify=ssl.create_default_context(cafile=endpoints.ca_bundle),
            headers={"Authorization": f"Bearer {endpoints.token}"},
        )
        http.get("/api/v1/namespaces").raise_for_status()
        rows.append(
            (
                "start() to first API answer",
                f"{time.perf_counter() - started:.2f} s",
                "the loop is free to serve",
            )
        )
        api = config.new_client_from_config(config_file=endpoints.kubeconfig)
        core = client.CoreV1Api(api)
        core.list_namespace()  # the client's own import and connection, not measured

        pods_expected = nodes + args.deployments * args.replicas
        while True:
            pods = core.list_pod_for_all_namespaces(_preload_content=False)
            running = pods.data.count(b'"phase":"Running"')
            if running >= pods_expected or time.perf_counter() - started > 120:
                break
            time.sleep(0.1)
        rows.append(
            (
                "start() to all pods Running",
                f"{time.perf_counter() - started:.2f} s",
                f"{running}/{pods_expected} pods (includes client import)",
            )
        )

        raw_times, typed_times, size = [], [], 0
        for _ in range(3):
            t = time.perf_counter()
            raw = core.list_node(_preload_content=False)
            size = len(raw.data)
            raw_times.append(time.perf_counter() - t)
            t = time.perf_counter()
            listed = core.list_node()
            typed_times.append(time.perf_counter() - t)
        assert len(listed.items) == nodes, "the benchmark's own sanity check"
        rows.append(
            (
                "list nodes, raw JSON",
                f"{min(raw_times):.3f} s (best of 3)",
                f"{size / 1e6:.1f} MB, {size // nodes} B/node",
            )
        )
        rows.append(("list nodes, client models", f"{min(typed_times):.3f} s (best of 3)", "< 1 s"))

        t = time.perf_counter()
        table = http.get("/api/v1/nodes", headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"})
        rows.append(
            (
                "list nodes as Table (kubectl)",
                f"{time.perf_counter() - t:.3f} s",
                f"{len(table.content) / 1e6:.1f} MB",
            )
        )

        names = [n.metadata.name for n in listed.items[:20]]
        t = time.perf_counter()
        for name in names:
            core.patch_node(name, {"spec": {"unschedulable": True}})
        rows.append(
            (
                "cordon (patch node) round trip",
                f"{(time.perf_counter() - t) / len(names) * 1000:.1f} ms",
                "mean of 20, controllers included",
            )
        )

        api.close()
        http.close()
        time.sleep(1.0)  # let the last responses drain
        cpu_before, wall_before = cpu_seconds(), time.perf_counter()
        time.sleep(IDLE_SECONDS)
        idle_cpu = cpu_seconds() - cpu_before
        idle_wall = time.perf_counter() - wall_before
        rows.append(
            (
                f"idle CPU over {IDLE_SECONDS:.0f} s",
                f"{idle_cpu:.3f} s CPU",
                f"{100 * idle_cpu / idle_wall:.1f}% of one core",
            )
        )
    finally:
        sim.stop()

    print(
        f"\nSimulated AKS: {nodes} nodes in {args.pools} pools, DaemonSet + {args.deployments} Deployments "
        f"x {args.replicas} replicas\n"
    )
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  {'figure':<26}  note")
    print(f"{'-' * width}  {'-' * 26}  {'-' * 24}")
    for name, figure, note in rows:
        print(f"{name:<{width}}  {figure:<26}  {note}")


if __name__ == "__main__":
    main()
