"""Disruption budgets at scale: the cluster of the scale runs (3 pools over 3 zones, every node needing a
reboot), once with a plain concurrency and once with a percentage concurrency under a per-zone budget
that allows the same number of nodes in all. Both runs have the same limit, so the ratio of their
makespans is what the zone slot sets cost, and the per-zone peaks show each zone's limit reached and
never passed.
"""

from __future__ import annotations

from pathlib import Path

from bench import concurrency
from bench.common import print_table

NODES = 300
ZONES = 3
PER_ZONE = 10  # the budget: 10% of each zone's 100 nodes
LIMIT = ZONES * PER_ZONE  # what both runs may disrupt at once
TIME_SCALE = 0.1


def bench_budgets(workdir: Path, results: dict) -> None:
    plain = concurrency.run_scale(workdir, NODES, LIMIT, TIME_SCALE, None, "local", name="budgets-plain")
    zoned = concurrency.run_scale(
        workdir,
        NODES,
        LIMIT,
        TIME_SCALE,
        None,
        "local",
        name="budgets-zone",
        # 90 workers, held to 10 per zone by the budget
        flow_params={"concurrency": "30%", "budgets": [{"scope": "zone", "nodes": f"{PER_ZONE}%"}]},
    )
    rows = []
    for label, r in (
        (f"concurrency {LIMIT}", plain),
        (f"concurrency 30% ({NODES * 30 // 100}), zone budget {PER_ZONE}% ({PER_ZONE}/zone)", zoned),
    ):
        peaks = r.invariants["max_disrupted_per_zone"]
        rows.append(
            [
                label,
                f"{r.rebooted_once}/{r.nodes}",
                r.invariants["max_disrupted"],
                " ".join(f"{v}" for _, v in sorted(peaks.items())),
                r.invariants["pdb_violations"],
                f"{r.makespan:.0f}",
                f"{r.bound:.0f}",
                f"{r.makespan / plain.makespan:.2f}",
                f"{r.overhead_per_slot:.2f}",
                f"{r.run.wall_seconds:.0f}",
            ]
        )
    print_table(
        f"Disruption budgets: {NODES} nodes over {ZONES} zones, {LIMIT} at once either way",
        [
            "limits",
            "rebooted once",
            "max disrupted",
            "peak per zone",
            "PDB violations",
            "makespan (s)",
            "lower bound (s)",
            "makespan ratio",
            "overhead (real s/node-slot)",
            "wall (s)",
        ],
        rows,
        [
            "Seconds are simulated, first cordon to last uncordon. lower bound: ceil(nodes / limit) x (drain + "
            "boot). makespan ratio: this run's makespan over the plain run's (1.00: budgets cost nothing).",
            "peak per zone: the most nodes of one zone cordoned or NotReady at once (the simulator's "
            f"invariant); with the budget it must not pass {PER_ZONE}.",
        ],
    )
    zone_peak = max(zoned.invariants["max_disrupted_per_zone"].values())
    if zone_peak > PER_ZONE or not zoned.safe or not plain.safe:
        print(f"  ! safety check failed: zone peak {zone_peak}, {zoned.invariants}")
    results.update(
        budgets_zone_peak=zone_peak,
        budgets_makespan_ratio=round(zoned.makespan / plain.makespan, 3),
    )
