"""`make bench`: rollout makespan against its lower bound and a model of kured, sentinel scans at 1000
nodes, rollouts of 150 to 1000 nodes at concurrency 15 to 50 (on the local server and on PostgreSQL),
orchestration cost, disruption budgets per zone against a plain concurrency, a node-image upgrade against
its surge bound, workload churn, and chaos at scale (300 nodes on a faulty API, the flow killed or the
Prefect server restarted mid-rollout).

Prints tables (no assertions) and writes the headline figures to ``bench/results.json``. About 30 minutes
on 2 cores. ``python -m bench --only rollout,scale`` runs a part and updates only its figures.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

from bench import budgets, chaos, concurrency, kured_model, rollout, scale, upgrade
from bench.common import prefect_server, print_table

RESULTS = Path(__file__).resolve().parent / "results.json"
ROLLOUT_SCALE = 0.15  # a 60 s reboot takes 9 s: the 30-node rollout at concurrency 1 runs in about 5 minutes
UPGRADE_SCALE = 0.05
PARTS = ("rollout", "scale", "budgets", "upgrade", "chaos")
TARGETS = {  # the targets: (comparison, value)
    "efficiency_c1": (">=", 0.85),
    "efficiency_c3": (">=", 0.75),
    "overhead_s_per_node": ("<=", 1.5),
    "scan_condition_1000_s": ("<=", 2.0),
    "scan_condition_1000_requests": ("<=", 1),
    "scan_hostpod_1000_s": ("<=", 60.0),
    "peak_rss_mb_1000": ("<=", 400.0),
    "evictions_per_pod": ("<=", 1.2),
    "scale_c15_overhead_s": ("<=", 1.0),
    "scale_c50_overhead_s": ("<=", 1.5),
    "scale_efficiency_real_time": (">=", 0.97),
    "scale_c50_peak_rss_mb": ("<=", 400.0),
    "scale_c30_overhead_s": ("<=", 1.5),
    "scale_prefect_writes_per_node": ("<=", 40.0),
    "budgets_zone_peak": ("<=", budgets.PER_ZONE),
    # chaos at scale: every node exactly once, nothing left behind, at most 2 runs, budgets kept
    **{
        f"chaos_{variant}_{figure}": target
        for variant in chaos.VARIANTS
        for figure, target in (
            ("runs", ("<=", 2)),
            ("rebooted_once", (">=", chaos.NODES)),
            ("rebooted_twice", ("<=", 0)),
            ("never_rebooted", ("<=", 0)),
            ("pdb_violations", ("<=", 0)),
            ("max_disrupted", ("<=", chaos.CONCURRENCY)),
            ("left_cordoned", ("<=", 0)),
            ("leases_held", ("<=", 0)),
        )
    },
}
# (nodes, concurrency, Prefect server, time scale). At time scale 0.1 a 60 s reboot takes 6 s; the
# 1000-node cluster runs at 0.25, because at 0.1 its simulator (one Python process, every API write a
# reconcile over 2,500 pods) uses a whole core and its own lag would be measured as the flow's overhead.
SCALE_RUNS = ((150, 15, "local", 0.1), (300, 30, "postgres", 0.1), (1000, 50, "postgres", 0.1))


def bench_rollouts(api_url: str, workdir: Path, results: dict) -> None:
    t = rollout.timings()
    c1 = rollout.run_rollout(api_url, workdir, ROLLOUT_SCALE, 1, name="rollout-c1")
    c3 = rollout.run_rollout(api_url, workdir, ROLLOUT_SCALE, 3, name="rollout-c3")
    naive = rollout.run_rollout(api_url, workdir, ROLLOUT_SCALE, 3, naive=True, name="rollout-c3-naive")
    binpack = rollout.run_rollout(
        api_url, workdir, ROLLOUT_SCALE, 3, name="rollout-c3-binpack", scoring="bin-pack"
    )
    binpack_naive = rollout.run_rollout(
        api_url, workdir, ROLLOUT_SCALE, 3, naive=True, name="rollout-c3-binpack-naive", scoring="bin-pack"
    )
    nodes = rollout.NODES
    models = {c: kured_model.model(nodes, c, t.per_node) for c in (1, 3)}

    def kured_overhead(c: int) -> float:
        return (models[c].makespan - t.lower_bound(nodes, c)) / math.ceil(nodes / c)

    rows = []
    for r in (c1, c3):
        rows.append(
            [
                f"ours, concurrency {r.concurrency}",
                f"{r.makespan:.0f}",
                f"{r.bound:.0f}",
                f"{r.efficiency:.3f}",
                f"{r.overhead_per_node_wall:.2f}",
                f"{r.end_to_end:.0f}",
            ]
        )
    for c, m in models.items():
        rows.append(
            [
                f"kured model, concurrency {c}",
                f"{m.makespan:.0f} (p90 {m.makespan_p90:.0f})",
                f"{t.lower_bound(nodes, c):.0f}",
                f"{t.lower_bound(nodes, c) / m.makespan:.3f}",
                f"{kured_overhead(c):.0f}",
                f"{m.from_start:.0f}",
            ]
        )
    print_table(
        f"Makespan: {nodes} nodes in 3 zones, all needing a reboot, PDB-protected workloads",
        [
            "rollout",
            "makespan (s)",
            "lower bound (s)",
            "bound/makespan",
            "overhead (s/node)",
            "end to end (s)",
        ],
        rows,
        [
            f"Seconds are simulated seconds of the scenario (time scale {ROLLOUT_SCALE}: the simulator runs "
            f"{1 / ROLLOUT_SCALE:.0f}x faster than written), read from the simulator's timeline.",
            "makespan: first cordon to last uncordon; end to end: the run's first API request to its last "
            "(connect, scan, plan, rollout, kernel report).",
            f"lower bound: ceil(nodes / concurrency) x (drain + boot + ready) = ceil({nodes}/c) x "
            f"({t.drain:g} + {t.boot:g} + {t.ready:g}) s. drain: the evicted pods all leave at once and "
            f"the last is gone after its termination ({rollout.GRACE_SECONDS} s grace; the simulated "
            f"kubelet stops a pod in half its grace period); boot: the pool's boot_seconds (NotReady); "
            "ready: from the kubelet's return to Ready with a fresh heartbeat (immediate in the simulator). "
            "It ignores the PodDisruptionBudgets, which serialise evictions when several nodes drain at once.",
            "overhead: (makespan - lower bound) per node a slot handles, in real seconds (our polling, API "
            "round trips and Prefect's bookkeeping do not shrink with the time scale, so the same wall time "
            f"weighs {1 / ROLLOUT_SCALE:.1f}x in simulated seconds). The same overhead would give "
            f"bound/makespan {c1.efficiency_at(0.1):.3f} (c1) and {c3.efficiency_at(0.1):.3f} (c3) at time "
            f"scale 0.1, {c1.efficiency_at(1):.3f} and {c3.efficiency_at(1):.3f} in real time (scale 1).",
            f"kured model (not a measurement; {models[1].trials} random draws each, see bench/kured_model.py): "
            f"each node's daemon first checks at U(0.5, 1.5) x period ({kured_model.PERIOD_SECONDS:.0f} s) "
            "after it starts, then every period; at a tick it takes the lock only if a place is free (1, or 3 "
            "with --concurrency 3), holds it for drain + boot + ready, and its restarted daemon uncordons "
            "and releases after its 1-minute start-up tick (U(0.5, 1.5) min). Its 'end to end' is from the "
            "daemons' start.",
        ],
    )
    churn = (c1, c3, naive, binpack, binpack_naive)
    for r in churn:
        bad = {n: k for n, k in r.reboots.items() if k != 1}
        if len(r.reboots) != nodes or bad or r.invariants["pdb_violations"]:
            print(
                f"  ! safety check failed for c{r.concurrency} ({r.scoring} scoring, "
                f"{'naive' if r.naive else 'ours'}): reboots {bad or len(r.reboots)}, "
                f"PDB violations {r.invariants['pdb_violations']}"
            )

    print_table(
        "Workload churn: evictions per workload pod over the full rollout (ideal 1.0)",
        ["rollout", "scheduler scoring", "evictions", "workload pods", "evictions per pod", "floor"],
        [
            [
                f"concurrency {r.concurrency}, "
                + ("naive: by name, no taint" if r.naive else "ours: fewest pods first, taint"),
                r.scoring,
                r.evictions,
                r.workload_pods,
                f"{r.evictions_per_pod:.2f}",
                f"{r.churn_floor:.2f}" if r.scoring == "spread" else "n/a",
            ]
            for r in churn
        ],
        [
            "Evictions from the simulator's timeline. floor (spread rows): 1 + the evictions from the first "
            "nodes drained (concurrency of them) per pod: those pods have no rebooted node to go to and must "
            "move again. It is no lower bound under bin-pack (n/a): there pods evicted from one node of the "
            "first batch can land on another before it is cordoned and count twice, and an empty node of the "
            "first batch may be back from its reboot while the full ones still drain.",
            "ours: the plan's default order (within a pool, the nodes with the fewest pods to evict first) and "
            "the PreferNoSchedule taint on nodes still waiting; naive: nodes by name (order=name), no taint.",
            "Scheduler scoring is the scenario's scheduler.scoring; PreferNoSchedule is a preference under "
            "both. spread models kube-scheduler's default scoring (fewest pods of the same owner, then fewest "
            "pods): a node back from its reboot is empty, so evicted pods go there in both rollouts; what is "
            "left is the first batch's pods, which have no rebooted node to go to (the floor), and ours "
            "starts with the emptiest nodes, so fewer pods are in that batch.",
            "bin-pack models a NodeResourcesFit MostAllocated profile (the fullest node with room first): "
            "every workload pod starts on the first two nodes. Naive drains those first and their pods pile "
            "onto the next (fullest) waiting node, then move again: each pod twice. Ours reboots the 28 empty "
            "nodes first; the full ones' pods then land on rebooted nodes and move once.",
        ],
    )

    tasks, subflows, by_name = rollout.task_runs_of(c1.run.report["flow_run_id"])
    requests = rollout.requests_by_kind(c1.run.audit)
    per_node = {k: v / nodes for k, v in requests.items()}
    print_table(
        f"Orchestration cost of a full reboot (concurrency 1, {nodes} nodes, host-pod scan)",
        ["measure", "total", "per node"],
        [
            ["Prefect task runs", tasks, f"{tasks / nodes:.1f}"],
            ["Prefect subflow runs", subflows, f"{subflows / nodes:.1f}"],
            ["Kubernetes API requests", sum(requests.values()), f"{sum(requests.values()) / nodes:.1f}"],
            *(
                [f"  {kind}", count, f"{per_node[kind]:.1f}"]
                for kind, count in sorted(requests.items(), key=lambda kv: -kv[1])
            ),
            ["flow process peak RSS", f"{c1.run.peak_rss_mb:.0f} MB", ""],
        ],
        [
            "Task runs per node: "
            + ", ".join(f"{n} {c // nodes}" for n, c in by_name.items() if c >= nodes)
            + "; once per run: "
            + ", ".join(n for n, c in by_name.items() if c < nodes)
            + ".",
            "Requests from the simulator's audit log, for the whole run (scan, plan, rollout, kernel report).",
        ],
    )
    results.update(
        efficiency_c1=round(c1.efficiency, 3),
        efficiency_c3=round(c3.efficiency, 3),
        overhead_s_per_node=round(c1.overhead_per_node_wall, 2),
        kured_model_overhead_s_per_node=round(kured_overhead(1), 1),
        evictions_per_pod=round(c3.evictions_per_pod, 3),
        evictions_per_pod_naive=round(naive.evictions_per_pod, 3),
        evictions_per_pod_binpack=round(binpack.evictions_per_pod, 3),
        evictions_per_pod_binpack_naive=round(binpack_naive.evictions_per_pod, 3),
    )


def bench_scale(api_url: str, workdir: Path, results: dict) -> None:
    bench_scans(api_url, workdir, results)
    bench_scale_rollouts(workdir, results)


def bench_scale_rollouts(workdir: Path, results: dict) -> None:
    from scripts.prefect_postgres import PostgresPrefect

    runs: list[concurrency.ScaleRun] = []
    # PostgreSQL gets a temporary folder of its own: the postgres user cannot enter the benchmark's
    with PostgresPrefect(server_log=workdir / "prefect-postgres.log") as postgres:
        for nodes, c, server, time_scale in SCALE_RUNS:
            url = None if server == "local" else postgres.api_url
            runs.append(concurrency.run_scale(workdir, nodes, c, time_scale, url, server))
    servers = {"local": "CLI's local server (SQLite)", "postgres": "Prefect on PostgreSQL"}
    print_table(
        f"Rollouts at scale: {concurrency.POOLS} pools, every node needing a reboot, "
        f"{concurrency.BOOT_SECONDS:.0f} s boot",
        [
            "nodes @ concurrency",
            "Prefect server",
            "time scale",
            "rebooted once",
            "max disrupted",
            "PDB violations",
            "makespan (s)",
            "lower bound (s)",
            "overhead (real s/node-slot)",
            "efficiency, real time",
            "peak RSS (MB)",
            "Prefect HTTP requests/node",
            "events/node",
            "log records/node",
            "Prefect writes/node",
        ],
        [
            [
                f"{r.nodes} @ {r.concurrency}",
                servers[r.server],
                r.scale,
                f"{r.rebooted_once}/{r.nodes}",
                r.invariants["max_disrupted"],
                r.invariants["pdb_violations"],
                f"{r.makespan:.0f}",
                f"{r.bound:.0f}",
                f"{r.overhead_per_slot:.2f}",
                f"{r.efficiency_at(1):.3f}",
                f"{r.run.peak_rss_mb:.0f}",
                "n/a" if r.prefect is None else f"{r.per_node('requests_total'):.1f}",
                "n/a" if r.prefect is None else f"{r.per_node('events_total'):.1f}",
                "n/a" if r.prefect is None else f"{r.per_node('logs_total'):.1f}",
                "n/a" if r.prefect is None else f"{prefect_writes_per_node(r):.1f}",
            ]
            for r in runs
        ],
        [
            "Seconds are simulated (the simulator runs 1/time-scale times faster than written), first cordon "
            "to last uncordon, from the simulator's timeline. lower bound: ceil(nodes / concurrency) x (drain + boot) = "
            f"ceil(n/c) x ({concurrency.per_node_seconds() - concurrency.BOOT_SECONDS:g} + "
            f"{concurrency.BOOT_SECONDS:g}) s.",
            "overhead: (makespan - lower bound) per node a slot handles, in real seconds; efficiency, real "
            "time: bound / (bound + that overhead at time scale 1), i.e. with 60 s boots taking 60 s.",
            "max disrupted: most nodes cordoned or NotReady at once (the simulator's invariant); it should "
            "equal the concurrency: reached, never passed.",
            "Prefect HTTP requests: of the flow's process to the Prefect API (a counting proxy in front of the "
            "PostgreSQL-backed server), for the whole run; events: messages on its events websocket, which "
            "also carries the task runs' states (a node's task run and one per phase); log records: the "
            "records in the log batches (each batch is one of the HTTP requests). Prefect writes: the three "
            "together (scale_prefect_writes_per_node; the target is at most 40). Not counted for the local "
            "server, whose address only the flow's process knows.",
            "peak RSS: ru_maxrss of the flow's own process, from wait4.",
        ],
    )
    for r in runs:
        if not r.safe:
            print(f"  ! safety check failed at {r.nodes} @ {r.concurrency}: {r.invariants}")
    by_c = {r.concurrency: r for r in runs}
    counted = [r for r in runs if r.prefect is not None]
    results.update(
        scale_c15_overhead_s=round(by_c[15].overhead_per_slot, 2),
        scale_c30_overhead_s=round(by_c[30].overhead_per_slot, 2),
        scale_c50_overhead_s=round(by_c[50].overhead_per_slot, 2),
        scale_c50_max_disrupted=by_c[50].invariants["max_disrupted"],
        scale_c50_peak_rss_mb=round(by_c[50].run.peak_rss_mb, 1),
        scale_efficiency_real_time=round(min(r.efficiency_at(1) for r in runs), 3),
        scale_prefect_requests_per_node=round(
            max(r.per_node("requests_total") + r.per_node("events_total") for r in counted), 1
        ),
        scale_prefect_writes_per_node=round(max(prefect_writes_per_node(r) for r in counted), 1),
        scale_prefect_events_per_node=round(max(r.per_node("events_total") or 0 for r in counted), 1),
        scale_prefect_logs_per_node=round(max(r.per_node("logs_total") or 0 for r in counted), 1),
    )


def prefect_writes_per_node(r: concurrency.ScaleRun) -> float:
    """Events, log records and HTTP requests to the Prefect API, per node of the cluster."""
    return sum(r.per_node(k) or 0 for k in ("requests_total", "events_total", "logs_total"))


def bench_scans(api_url: str, workdir: Path, results: dict) -> None:
    by_condition, by_host_pod, need = scale.run_scale(api_url, workdir)
    nodes = scale.POOLS * scale.NODES_PER_POOL
    print_table(
        f"Sentinel scan at {nodes} nodes",
        ["mode", "wall time (s)", "API requests", "requests by kind"],
        [
            [
                s.mode,
                f"{s.seconds:.2f}",
                s.total_requests,
                ", ".join(f"{k} {v}" for k, v in sorted(s.requests.items(), key=lambda kv: -kv[1])),
            ]
            for s in (by_condition, by_host_pod)
        ],
        [
            "node-condition: node-problem-detector's RebootRequired condition (the scenario runs the "
            "simulator's model of its custom plugin), read with one LIST (dry run).",
            "host-pod: one short-lived privileged pod per node, 20 at once (sentinel.parallelism, the default); "
            "each pod starts in 0.5 s as modelled (time scale 1).",
            "Wall time is the sentinel-scan task run's; requests are the audit-log entries inside it.",
        ],
    )
    full = by_host_pod.run
    print_table(
        f"Flow process at {nodes} nodes (a full run: host-pod scan, {need} reboots at concurrency 5)",
        ["measure", "figure"],
        [
            ["peak RSS of the flow process", f"{full.peak_rss_mb:.0f} MB"],
            ["run wall time (process start to exit)", f"{full.wall_seconds:.0f} s"],
            ["API requests of the run", len(full.audit)],
            ["peak RSS, the node-condition dry run", f"{by_condition.run.peak_rss_mb:.0f} MB"],
        ],
        ["RSS: ru_maxrss of the flow's own process (python -m flows.node_maintenance), from wait4."],
    )
    results.update(
        scan_condition_1000_s=round(by_condition.seconds, 3),
        scan_condition_1000_requests=by_condition.total_requests,
        scan_hostpod_1000_s=round(by_host_pod.seconds, 2),
        peak_rss_mb_1000=round(full.peak_rss_mb, 1),
    )


def bench_upgrade(api_url: str, workdir: Path, results: dict) -> None:
    u = upgrade.run_upgrade(workdir, UPGRADE_SCALE)
    print_table(
        f"Node-image upgrade of a {upgrade.NODES}-node pool (flows.cluster_upgrade, maxSurge 10% = {u.surge})",
        ["measure", "simulated s"],
        [
            ["surge lower bound", f"{u.bound:.0f}"],
            ["upgrade request to the flow seeing it end", f"{u.operation:.0f}"],
            ["upgrade request to the last old node removed", f"{u.replaced:.0f}"],
            ["bound / makespan", f"{u.bound / u.operation:.3f}"],
            ["whole flow run (preflight, upgrade, verify, kernel report)", f"{u.flow:.0f}"],
        ],
        [
            f"lower bound: ceil(nodes / (maxSurge + maxUnavailable)) x (provision + drain) = {u.batches} x "
            f"({upgrade.PROVISION_SECONDS:g} + {rollout.terminate_seconds(upgrade.GRACE_SECONDS):g}) s: "
            "each batch waits for its surge node to join Ready and its old node to drain.",
            f"Time scale {UPGRADE_SCALE}; outcome: {u.outcome}.",
        ],
    )
    results.update(upgrade_efficiency=round(u.efficiency, 3))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--only", default=",".join(PARTS), help=f"comma-separated parts of {', '.join(PARTS)}"
    )
    args = parser.parse_args()
    parts = [p for p in args.only.split(",") if p]
    unknown = set(parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown parts: {', '.join(sorted(unknown))}")
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() and set(parts) != set(PARTS) else {}
    started = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="aksmaint-bench-"))
    with prefect_server() as api_url:
        for part, run in (
            ("rollout", bench_rollouts),
            ("scale", bench_scale),
            ("budgets", lambda _url, workdir, results: budgets.bench_budgets(workdir, results)),
            ("upgrade", bench_upgrade),
            ("chaos", lambda _url, workdir, results: chaos.bench_chaos(workdir, results)),
        ):
            if part in parts:
                run(api_url, workdir, results)
    ordered = {
        key: results[key]
        for key in (
            "efficiency_c1",
            "efficiency_c3",
            "overhead_s_per_node",
            "kured_model_overhead_s_per_node",
            "scan_condition_1000_s",
            "scan_condition_1000_requests",
            "scan_hostpod_1000_s",
            "peak_rss_mb_1000",
            "upgrade_efficiency",
            "evictions_per_pod",
            "evictions_per_pod_naive",
            "evictions_per_pod_binpack",
            "evictions_per_pod_binpack_naive",
            "scale_c15_overhead_s",
            "scale_c30_overhead_s",
            "scale_c50_overhead_s",
            "scale_c50_max_disrupted",
            "scale_c50_peak_rss_mb",
            "scale_efficiency_real_time",
            "scale_prefect_requests_per_node",
            "scale_prefect_writes_per_node",
            "scale_prefect_events_per_node",
            "scale_prefect_logs_per_node",
            "budgets_zone_peak",
            "budgets_makespan_ratio",
            *(f"chaos_{variant}_{figure}" for variant in chaos.VARIANTS for figure in chaos.FIGURES),
        )
        if key in results
    }
    RESULTS.write_text(json.dumps(ordered, indent=2) + "\n")
    rows = []
    for key, value in ordered.items():
        op, target = TARGETS.get(key, ("", None))
        met = (
            ""
            if target is None
            else ("yes" if (value >= target if op == ">=" else value <= target) else "NO")
        )
        rows.append([key, value, f"{op} {target}" if target is not None else "-", met])
    print_table("Headline figures (bench/results.json)", ["figure", "value", "target", "met"], rows)
    print(
        f"\nWrote {RESULTS.relative_to(Path.cwd()) if RESULTS.is_relative_to(Path.cwd()) else RESULTS} "
        f"({len(ordered)} figures) in {time.perf_counter() - started:.0f} s"
    )


if __name__ == "__main__":
    main()
