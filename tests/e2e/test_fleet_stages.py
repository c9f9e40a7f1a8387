"""A staged fleet update run end to end: the fleet-update-run deployment of prefect.yaml on the real Prefect
server with two or more process workers, over four simulated clusters and both kinds of deployment.

Two clusters are prefect.yaml's (staging-eus and prod-weu, their node-maintenance deployments); two more are
deployed for this test only from copies of prefect.yaml's deployments: staging-wus (a node-image upgrade
through its own simulated Azure) and prod-neu (node maintenance). Stage "staging" names staging-eus and
staging-wus, stage "prod" takes the node-maintenance deployments tagged env:prod; two clusters at a time,
an approval after staging.

The first run of update run "e2e-rollout" breaks staging-wus with a cluster name Azure does not know: it
stops after stage staging, prod not started. The second run with the same name does not run staging-eus
again, upgrades staging-wus, waits Paused for approval (resumed through the REST API, with nothing of
prod started before), then maintains both prod clusters at once.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import datetime

import pytest

from simulator.controllers.common import node_name
from tests.e2e.conftest import NEW_KERNEL, PrefectServer, demo_scenario
from tests.e2e.test_deployments import MAINTENANCE, NEW_IMAGE, core_api

pytestmark = pytest.mark.e2e

FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
UPDATE_RUN = "fleet/fleet-update-run"
NAME = "e2e-rollout"
WUS_UPGRADE = "cluster-upgrade/staging-wus-node-image-upgrade"
STAGES = [
    {
        "name": "staging",
        "deployments": ["staging-eus-node-maintenance", WUS_UPGRADE],
        "max_parallel": 2,
        "after_stage_wait_seconds": 1,
        "approval": "after",
    },
    {"name": "prod", "tag": "env:prod", "max_parallel": 2},
]
OVERRIDES = {"node-maintenance/*": {"window": None}}
EXTRA = {  # the clusters prefect.yaml does not have
    "staging-wus": {
        "subscription_id": "44444444-4444-4444-4444-444444444444",
        "resource_group": "rg-aks-staging-wus",
        "name": "aks-staging-wus",
    },
    "prod-neu": {
        "subscription_id": "33333333-3333-3333-3333-333333333333",
        "resource_group": "rg-aks-prod-neu",
        "name": "aks-prod-neu",
    },
}


def ensure_workers(server: PrefectServer, count: int = 2) -> None:
    """At least ``count`` process workers on the pool; the new ones poll every 2 s."""
    while sum(w.poll() is None for w in server.workers) < count:
        server.start_worker(env={"PREFECT_WORKER_QUERY_SECONDS": "2"})


def start_fleet(server: PrefectServer, **parameters: object) -> str:
    deployment = server.deployment(UPDATE_RUN)
    run = server.post(f"/deployments/{deployment['id']}/create_flow_run", {"parameters": parameters})
    assert isinstance(run, dict)
    return run["id"]


def children(server: PrefectServer, run_id: str) -> dict[str, dict]:
    """The fleet run's child flow runs by deployment name (flow/deployment)."""
    runs = server.post("/flow_runs/filter", {"flow_runs": {"parent_flow_run_id": {"any_": [run_id]}}})
    assert isinstance(runs, list)
    names = {}
    for r in runs:
        d = server.get(f"/deployments/{r['deployment_id']}")
        flow = server.get(f"/flows/{d['flow_id']}")
        names[f"{flow['name']}/{d['name']}"] = r
    return names


def summaries(server: PrefectServer, run_id: str) -> list[str]:
    """Every version of the run's fleet-summary artifact, oldest first."""
    found = server.post(
        "/artifacts/filter",
        {"artifacts": {"key": {"any_": ["fleet-summary"]}, "flow_run_id": {"any_": [run_id]}}},
    )
    assert isinstance(found, list)
    return [a["data"] for a in sorted(found, key=lambda a: a["created"])]


def tables(markdown: str) -> dict[str, dict[str, list[str]]]:
    """Per stage (by name), each cluster's row (cells, by the cluster column)."""
    stages: dict[str, dict[str, list[str]]] = {}
    current = ""
    for line in markdown.splitlines():
        if heading := re.match(r"## Stage \d+: (\S+) ", line):
            current = heading.group(1)
            stages[current] = {}
        elif current and line.startswith("| ") and not line.startswith(("| cluster ", "|---")):
            cells = [c.strip() for c in line.strip("|").split("|")]
            stages[current][cells[0]] = cells
    return stages


def when(value: str) -> datetime:
    return datetime.fromisoformat(value)


def resumed_at(server: PrefectServer, run_id: str) -> datetime:
    """When the run left its Paused state (the Running state that follows it)."""
    states = sorted(server.get(f"/flow_run_states/?flow_run_id={run_id}"), key=lambda s: when(s["timestamp"]))
    paused = next(i for i, s in enumerate(states) if s["type"] == "PAUSED")
    return when(next(s["timestamp"] for s in states[paused + 1 :] if s["type"] == "RUNNING"))


@pytest.fixture
def fleet_clusters(prefect_server, sim_cluster) -> Iterator[dict]:
    """Four simulated clusters, and the deployments of the two that prefect.yaml does not have."""
    kubeconfigs = prefect_server.env["AKSMAINT_KUBECONFIG_DIR"]
    sims = {
        "staging-eus": sim_cluster("staging-eus", demo_scenario([("nodepool1", 1)])),
        "staging-wus": sim_cluster("staging-wus", demo_scenario([]), azure=EXTRA["staging-wus"]),
        "prod-weu": sim_cluster("prod-weu", demo_scenario([("nodepool1", 0)])),
        "prod-neu": sim_cluster("prod-neu", demo_scenario([("userpool", 1)]), azure=EXTRA["prod-neu"]),
    }
    base = prefect_server.deployment(MAINTENANCE.format("prod-weu"))
    neu = prefect_server.clone_deployment(
        MAINTENANCE.format("prod-weu"),
        "prod-neu-node-maintenance",
        parameters={**base["parameters"], "cluster": {"kubeconfig": f"{kubeconfigs}/prod-neu.kubeconfig"}},
        tags=["cluster:prod-neu", "env:prod"],
    )
    upgrade = prefect_server.deployment("cluster-upgrade/staging-eus-node-image-upgrade")
    wus = sims["staging-wus"].endpoints
    # the static-token credential reads the simulator's token from the flow run's environment
    env = {**upgrade["job_variables"].get("env", {}), "AZURE_ACCESS_TOKEN": wus.token}
    wus_upgrade = prefect_server.clone_deployment(
        "cluster-upgrade/staging-eus-node-image-upgrade",
        WUS_UPGRADE.split("/")[1],
        parameters={
            "cluster": {
                **upgrade["parameters"]["cluster"],
                **EXTRA["staging-wus"],
                "arm_endpoint": wus.arm,
                "ca_bundle": wus.ca_bundle,
            },
            "mode": "node-image",
            "pools": ["nodepool1"],
            "respect_maintenance_window": False,
            "poll_interval_seconds": 0.5,
        },
        tags=["cluster:staging-wus", "env:staging"],
        job_variables={**upgrade["job_variables"], "env": env},
    )
    ensure_workers(prefect_server)
    try:
        yield sims
    finally:
        for d in (neu, wus_upgrade):
            prefect_server.delete_deployment(d["id"])


def test_an_update_run_with_problems_is_refused_before_any_cluster_runs(prefect_server):
    ensure_workers(prefect_server)
    run_id = start_fleet(
        prefect_server,
        stages=[
            {"name": "a", "deployments": ["staging-eus-node-maintenance", "nowhere-node-maintenance"]},
            {"name": "b", "deployments": ["staging-eus-node-maintenance"], "tag": "env:nowhere"},
        ],
        overrides={"*": {"concurrency": 0}},
    )
    run = prefect_server.wait_for_state(run_id, FINAL, timeout=180)
    assert run["state"]["type"] == "FAILED", run["state"]
    message = run["state"]["message"]
    assert message.startswith("nothing run: "), message
    for problem in (
        "stage a: no node-maintenance or cluster-upgrade deployment named node-maintenance/nowhere-node-maintenance",
        "stage b: no node-maintenance deployment has the tag 'env:nowhere'",
        "cluster staging-eus is in the update run more than once",
        "node-maintenance/staging-eus-node-maintenance: Validation failed for field 'concurrency'",
    ):
        assert problem in message, message
    assert children(prefect_server, run_id) == {}
    assert summaries(prefect_server, run_id) == []


def test_a_staged_update_run_stops_on_a_failure_then_resumes_by_name_with_an_approval(
    prefect_server, fleet_clusters
):
    sims = fleet_clusters
    patched = {
        "staging-eus": node_name("aks-staging-eus", "nodepool1", 1),
        "prod-weu": node_name("aks-prod-weu", "nodepool1", 0),
        "prod-neu": node_name("aks-prod-neu", "userpool", 1),
    }
    # ---- first run: staging-wus fails (Azure knows no such cluster), so prod is not started
    broken = {**OVERRIDES, WUS_UPGRADE.split("/")[1]: {"cluster": {"name": "aks-missing"}}}
    first = start_fleet(prefect_server, name=NAME, stages=STAGES, overrides=broken, poll_interval_seconds=1)
    run = prefect_server.wait_for_state(first, FINAL, timeout=240)
    assert run["state"]["type"] == "FAILED", (run["state"], prefect_server.worker_log()[-4000:])
    assert run["state"]["message"] == (
        "stopped in stage staging: 1 cluster(s) failed (staging-wus), more than max_failures=0; "
        "2 cluster(s) not started"
    )
    ran = children(prefect_server, first)
    assert set(ran) == {MAINTENANCE.format("staging-eus"), WUS_UPGRADE}
    assert ran[WUS_UPGRADE]["state"]["type"] == "FAILED"
    assert ran[WUS_UPGRADE]["parameters"]["cluster"]["name"] == "aks-missing"
    assert ran[MAINTENANCE.format("staging-eus")]["parameters"]["window"] is None
    assert all({f"fleet-run:{NAME}", "fleet-stage:staging"} <= set(r["tags"]) for r in ran.values())
    (summary,) = summaries(prefect_server, first)
    stage = tables(summary)
    assert stage["staging"]["aks-staging-eus"][1:4] == ["Completed", "1", "0"]
    assert stage["staging"]["staging-wus"][1].startswith("Failed (no report: "), stage
    assert "aks-missing" in stage["staging"]["staging-wus"][1]
    assert {k: v[1] for k, v in stage["prod"].items()} == {
        "prod-neu": "not started",
        "prod-weu": "not started",
    }
    assert sims["staging-eus"].kernels()[patched["staging-eus"]] == NEW_KERNEL
    assert NEW_KERNEL not in {**sims["prod-weu"].kernels(), **sims["prod-neu"].kernels()}.values()

    # ---- second run, same name: staging-eus is done; staging-wus runs, then the approval gate
    second = start_fleet(
        prefect_server, name=NAME, stages=STAGES, overrides=OVERRIDES, poll_interval_seconds=1
    )
    run = prefect_server.wait_for_state(second, {"PAUSED", *FINAL}, timeout=240)
    assert run["state"]["type"] == "PAUSED", (run["state"], prefect_server.worker_log()[-4000:])
    assert set(children(prefect_server, second)) == {WUS_UPGRADE}
    (interim,) = summaries(prefect_server, second)  # written for the approver before the pause
    stage = tables(interim)
    assert stage["staging"]["aks-staging-eus"][1] == "done in an earlier run"
    assert stage["staging"]["aks-staging-wus"][1] == "Completed"
    assert f"-> {NEW_IMAGE}: succeeded" in stage["staging"]["aks-staging-wus"][6]
    assert {k: v[1] for k, v in stage["prod"].items()} == {
        "prod-neu": "not started",
        "prod-weu": "not started",
    }
    time.sleep(3)  # nothing of stage prod starts while the run waits
    assert prefect_server.flow_run(second)["state"]["type"] == "PAUSED"
    assert set(children(prefect_server, second)) == {WUS_UPGRADE}

    prefect_server.post(f"/flow_runs/{second}/resume", {})
    run = prefect_server.wait_for_state(second, FINAL, timeout=240)
    assert run["state"]["type"] == "COMPLETED", (run["state"], prefect_server.worker_log()[-4000:])
    assert run["state"]["message"] == "4 cluster(s) done, 1 of them in an earlier run"
    ran = children(prefect_server, second)
    assert set(ran) == {
        WUS_UPGRADE,
        MAINTENANCE.format("prod-weu"),
        "node-maintenance/prod-neu-node-maintenance",
    }
    prod = [r for name, r in ran.items() if name != WUS_UPGRADE]
    assert all("fleet-stage:prod" in r["tags"] and r["state"]["type"] == "COMPLETED" for r in prod)
    # prod started only after the approval, both at once (max_parallel 2)
    approved = resumed_at(prefect_server, second)
    assert all(when(r["created"]) > approved for r in prod)
    assert when(ran[WUS_UPGRADE]["end_time"]) < approved
    assert max(when(r["start_time"]) for r in prod) < min(when(r["end_time"]) for r in prod)

    final = tables(summaries(prefect_server, second)[-1])
    assert final["staging"]["aks-staging-eus"][1] == "done in an earlier run"
    assert final["prod"]["aks-prod-weu"][1:4] == ["Completed", "1", "0"]
    assert final["prod"]["aks-prod-neu"][1:4] == ["Completed", "1", "0"]
    assert "- approved after the stage" in summaries(prefect_server, second)[-1]
    # every cluster patched once: staging-eus's node was not rebooted again by the second run
    for key, node in patched.items():
        assert sims[key].kernels()[node] == NEW_KERNEL, key
    reboots = sims["staging-eus"].observer.invariants()["reboots"]
    assert reboots.get(patched["staging-eus"]) == 1 and sum(reboots.values()) == 1, reboots
    images = {
        n.metadata.labels["kubernetes.azure.com/node-image-version"]
        for n in core_api(sims["staging-wus"].kubeconfig).list_node().items
        if n.metadata.labels["kubernetes.azure.com/agentpool"] == "nodepool1"
    }
    assert images == {NEW_IMAGE}
