"""A rollout at the scale users run, on the defaults a new user has: 150 nodes in 3 pools, all needing a
reboot, 15 at once, recorded in the command line's own temporary Prefect server (SQLite). The cluster is
the scale benchmark's (bench/concurrency.py), sped up 20 times: a 60 s boot takes 3 s.

The rollout must reach the concurrency asked for and never pass it, keep every budget, and reboot every
node exactly once, whatever Prefect's database does under 15 node runs writing at once.
"""

from __future__ import annotations

import time

from bench.concurrency import scenario
from tests.reliability.support import assert_invariants
from tests.support import FlowProcess, needing_reboot, report_in

NODES = 150
CONCURRENCY = 15
TIME_SCALE = 0.05


def test_150_nodes_at_concurrency_15_on_the_local_server(start_sim, tmp_path, record_property) -> None:
    sim = start_sim(scenario(NODES, CONCURRENCY, TIME_SCALE))
    needed = needing_reboot(sim)
    assert len(needed) == NODES
    started = time.monotonic()
    process = FlowProcess(
        sim,
        tmp_path,
        None,  # no PREFECT_API_URL: the command line's temporary local server, as for a new user
        "scale",
        concurrency=CONCURRENCY,
        drain={"timeout_seconds": 120, "eviction_retry_seconds": 5 * TIME_SCALE},
        reboot={"boot_timeout_seconds": 120},
        lock={"ttl_seconds": 30, "wait_seconds": 600},
    )
    code = process.wait(600)
    took = time.monotonic() - started
    output = process.output()
    assert code == 0, output[-5000:]
    assert "Traceback" not in output, output
    report = report_in(output)
    outcomes = {n["node"]: n["outcome"] for n in report["nodes"]}
    assert outcomes == dict.fromkeys(needed, "rebooted"), {
        n: o for n, o in outcomes.items() if o != "rebooted"
    }
    assert not report["halted"], report["halt_reason"]
    inv = assert_invariants(sim, needed, concurrency=CONCURRENCY)
    # the concurrency asked for is reached, not only respected
    assert inv["max_disrupted"] == CONCURRENCY, inv
    record_property(
        "scale",
        f"{NODES} nodes at concurrency {CONCURRENCY} on the CLI's local SQLite server: all rebooted once, "
        f"at most {inv['max_disrupted']} disrupted at once, 0 PDB violations, {took:.0f}s",
    )
