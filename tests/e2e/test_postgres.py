"""The e2e Prefect server keeps its state in PostgreSQL, and a rollout survives the server going away.

The session's server (tests/e2e/conftest.py) runs on a local PostgreSQL started by
scripts/prefect_postgres.py. One test reads a deployment run back from the database itself; the other
stops the server process for 30 seconds in the middle of a rollout and starts it again on the same port
and database, then checks on the simulated cluster that every node was rebooted exactly once.
"""

from __future__ import annotations

import time
from collections import Counter

import httpx
import pytest

from simulator.controllers.common import node_name
from tests.e2e.conftest import NEW_KERNEL, PrefectServer, demo_scenario
from tests.e2e.test_deployments import MAINTENANCE, core_api, run_deployment

pytestmark = pytest.mark.e2e

CLUSTER = "aks-prod-weu"
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
OUTAGE_SECONDS = 30


def ensure_worker(server: PrefectServer) -> None:
    if not any(w.poll() is None for w in server.workers):
        server.start_worker()


def rows(server: PrefectServer, sql: str) -> list[list[str]]:
    """The rows psql prints for ``sql``, read straight from the server's PostgreSQL database."""
    return [line.split("|") for line in server.database.psql(sql).splitlines() if line]


def test_deployment_runs_are_stored_in_the_servers_postgresql_database(prefect_server, sim_cluster):
    sim = sim_cluster("prod-weu", demo_scenario([("nodepool1", 0)]))
    ensure_worker(prefect_server)
    deployment = prefect_server.deployment(MAINTENANCE.format("prod-weu"))
    run_id = run_deployment(prefect_server, MAINTENANCE.format("prod-weu"), "window=null")
    run = prefect_server.wait_for_state(run_id, FINAL, timeout=300)
    assert run["state"]["type"] == "COMPLETED", (run["state"], prefect_server.worker_log()[-4000:])
    assert sim.kernels()[node_name(CLUSTER, "nodepool1", 0)] == NEW_KERNEL

    (version,) = rows(prefect_server, "SELECT version()")
    assert version[0].startswith("PostgreSQL ")
    stored = rows(
        prefect_server,
        "SELECT r.id, r.state_type, s.message FROM flow_run r JOIN flow_run_state s ON s.id = r.state_id"
        f" WHERE r.deployment_id = '{deployment['id']}'",
    )
    assert [run_id, "COMPLETED", run["state"]["message"]] in stored
    ((task_runs,),) = rows(prefect_server, f"SELECT count(*) FROM task_run WHERE flow_run_id = '{run_id}'")
    assert int(task_runs) > 0
    # and no SQLite database was made on the side
    assert not (prefect_server.home / "prefect.db").exists()


def test_a_rollout_survives_the_prefect_server_stopping_for_30_seconds(prefect_server, sim_cluster):
    needed = [("nodepool1", 0), ("nodepool1", 1), ("nodepool1", 2), ("userpool", 0)]
    sim = sim_cluster("prod-weu", demo_scenario(needed))
    names = {node_name(CLUSTER, pool, index) for pool, index in needed}
    ensure_worker(prefect_server)
    run_id = run_deployment(prefect_server, MAINTENANCE.format("prod-weu"), "window=null", "concurrency=1")

    def rebooted() -> Counter:
        return Counter(e["node"] for e in sim.observer.timeline() if e["event"] == "rebooted")

    sim.observer.wait_for(lambda: rebooted(), timeout=240, interval=0.2)
    try:
        prefect_server.backend.stop_server()
        with pytest.raises(httpx.TransportError):
            prefect_server.http.get("/health")
        at_outage = rebooted()
        # the outage starts mid-rollout: some nodes done, others still to go
        assert 0 < sum(at_outage.values()) < len(names), at_outage
        time.sleep(OUTAGE_SECONDS)
    finally:
        prefect_server.ensure_running()

    # the same port and the same database: the server still knows the run
    run = prefect_server.wait_for_state(run_id, FINAL, timeout=420)
    counts = rebooted()
    log = prefect_server.worker_log()[-4000:]
    assert dict(counts) == dict.fromkeys(names, 1), (counts, run["state"], log)
    kernels = sim.kernels()
    assert {n for n, k in kernels.items() if k == NEW_KERNEL} == names
    assert sim.observer.invariants()["pdb_violations"] == 0
    assert not any(n.spec.unschedulable for n in core_api(sim.kubeconfig).list_node().items)
    assert run["state"]["type"] == "COMPLETED", (run["state"], log)
    assert run["state"]["message"] == f"{CLUSTER}: 4 rebooted, 1 not-needed"
