"""Cancelling a cluster upgrade stops it on AKS too.

The flow runs as a deployment runs it: served by a Prefect runner in a process of its own
(``cluster_upgrade.serve``). *Cancel* through the Prefect API makes the runner kill the flow's process
and run the cancellation hook itself, so the hook rebuilds everything from the run's parameters. The
other tests call the hook's step directly, for the operations it must leave alone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from kubernetes import client, config
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
from prefect.states import Cancelling

from aksmaint.aks.cancellation import (
    RECORD_ANNOTATION,
    RECORD_LEASE,
    RECORD_NAMESPACE,
    RecordPhase,
    UpgradeRecord,
    abort_own_operation,
)
from aksmaint.aks.operations import StepKind, UpgradeStep
from aksmaint.azure import AksCluster
from aksmaint.kube import kube_for
from aksmaint.params import ClusterConnection
from tests.flows.test_cluster_upgrade import (
    NAME,
    NEW_IMAGE,
    OLD_IMAGE,
    RG,
    aks_cluster,
    arm_mutations,
    demo,
    sdk,
    sim_operations,
)
from tests.support import ROOT, RunningSim

DEPLOYMENT = "upgrade-cancel-test"
# loaded from its entrypoint, as a worker loads a deployment's flow (a flow object served directly is sent
# to its process pickled by value, where the parameter types, named only in annotations, are missing)
SERVE = (
    "from prefect import flow; "
    "flow.from_source(source='.', entrypoint='flows/cluster_upgrade.py:cluster_upgrade')"
    f".serve(name={DEPLOYMENT!r})"
)
STEP = UpgradeStep(kind=StepKind.node_image, pool="nodepool1", from_version=OLD_IMAGE, to_version=NEW_IMAGE)


def slow_upgrade_scenario() -> dict:
    """nodepool1's surge node takes hours to join: its node image upgrade runs until it is aborted."""
    return demo(nodepool1={"node_provision_seconds": 1_000_000})


def record_of(sim: RunningSim) -> dict:
    """The run's record in the cluster ({} while there is none)."""
    api = config.new_client_from_config(config_file=sim.kubeconfig)
    try:
        lease = client.CoordinationV1Api(api).read_namespaced_lease(RECORD_LEASE, RECORD_NAMESPACE)
    except client.ApiException as exc:
        if exc.status == 404:
            return {}
        raise
    finally:
        api.close()
    return json.loads(lease.metadata.annotations[RECORD_ANNOTATION])


def pool_state(sim: RunningSim, pool: str = "nodepool1") -> str:
    return sdk(sim).agent_pools.get(RG, NAME, pool).provisioning_state


def aborts(sim: RunningSim) -> list[tuple[str, int]]:
    return [
        (e["path"].split("/managedClusters/")[1], e["status"])
        for e in arm_mutations(sim)
        if e["path"].endswith("/abort")
    ]


@pytest.fixture
def served_upgrade(prefect_api, tmp_path):
    """Start the cluster-upgrade flow served by a Prefect runner in its own process, against this
    session's Prefect server, with a simulator's token as its Azure credential (``serve(sim)``); gives the
    deployment's id and the runner's log. The runner is stopped at the end."""
    from prefect.settings import PREFECT_API_URL

    started: list[subprocess.Popen] = []

    def serve(sim: RunningSim) -> tuple[uuid.UUID, Path]:
        env = {
            **os.environ,
            "AZURE_ACCESS_TOKEN": sim.endpoints.token,
            "PREFECT_API_URL": PREFECT_API_URL.value(),
            "PREFECT_HOME": str(tmp_path / "prefect-home"),
            "PREFECT_RUNNER_POLL_FREQUENCY": "1",
            "PREFECT_LOGGING_LEVEL": "INFO",
        }
        log = tmp_path / "runner.log"
        with log.open("w") as out:
            runner = subprocess.Popen(
                [sys.executable, "-c", SERVE], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
            )
        started.append(runner)
        return deployment_id(runner, log), log

    yield serve
    for runner in started:
        runner.terminate()
        try:
            runner.wait(20)
        except subprocess.TimeoutExpired:
            runner.kill()
            runner.wait(10)


def deployment_id(runner: subprocess.Popen, log: Path) -> uuid.UUID:
    deadline = time.monotonic() + 120
    with get_client(sync_client=True) as prefect:
        while time.monotonic() < deadline:
            assert runner.poll() is None, log.read_text()
            try:
                return prefect.read_deployment_by_name(f"cluster-upgrade/{DEPLOYMENT}").id
            except Exception:
                time.sleep(0.5)
    raise AssertionError(f"the runner never served the deployment:\n{log.read_text()}")


def wait_for_flow_run(flow_run_id: uuid.UUID, states: set[str], timeout: float, log: Path):
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as prefect:
        while time.monotonic() < deadline:
            run = prefect.read_flow_run(flow_run_id)
            if run.state_type and run.state_type.value in states:
                return run
            time.sleep(0.3)
    raise AssertionError(f"flow run not in {states} after {timeout}s:\n{log.read_text()[-6000:]}")


def wait_until_started(sim: RunningSim, flow_run_id: uuid.UUID, log: Path, timeout: float = 120) -> None:
    """Until nodepool1's node image upgrade runs and the run's record says it started it."""
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as prefect:
        while time.monotonic() < deadline:
            if pool_state(sim) == "UpgradingNodeImageVersion" and record_of(sim).get("phase") == "started":
                return
            state = prefect.read_flow_run(flow_run_id).state
            assert not (state and state.is_final()), f"{state}:\n{log.read_text()[-6000:]}"
            time.sleep(0.3)
    raise AssertionError(f"the upgrade never started:\n{log.read_text()[-6000:]}")


def flow_run_logs(flow_run_id: uuid.UUID, wanted: str, timeout: float = 30) -> list[str]:
    """The flow run's log messages, once one contains ``wanted`` (logs reach the server in batches)."""
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as prefect:
        while True:
            logs = prefect.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
            messages = [entry.message for entry in logs]
            if any(wanted in m for m in messages) or time.monotonic() > deadline:
                return messages
            time.sleep(0.5)


def test_cancel_mid_upgrade_aborts_the_pools_operation_and_logs_where_each_pool_was_left(
    start_sim, served_upgrade, monkeypatch
):
    sim = start_sim(slow_upgrade_scenario())
    monkeypatch.setenv("AZURE_ACCESS_TOKEN", sim.endpoints.token)  # for the checks made from here
    deployment, log = served_upgrade(sim)
    parameters = {
        "cluster": aks_cluster(sim).model_dump(mode="json"),
        "mode": "node-image",
        "pools": ["nodepool1"],
        "respect_maintenance_window": False,
        "poll_interval_seconds": 0.2,
    }
    with get_client(sync_client=True) as prefect:
        run = prefect.create_flow_run_from_deployment(deployment, parameters=parameters)
    wait_until_started(sim, run.id, log)
    assert record_of(sim)["run_id"] == str(run.id)
    assert aborts(sim) == []

    with get_client(sync_client=True) as prefect:
        prefect.set_flow_run_state(run.id, Cancelling(), force=True)
    wait_for_flow_run(run.id, {"CANCELLED"}, timeout=120, log=log)

    assert pool_state(sim) == "Canceled"
    assert aborts(sim) == [(f"{NAME}/agentPools/nodepool1/abort", 202)]
    assert [(o["kind"], o["status"]) for o in sim_operations(sim)] == [
        ("UpgradeNodeImageVersion", "Canceled"),
        ("Abort", "Succeeded"),
    ]
    assert record_of(sim)["phase"] == "aborted"
    assert sdk(sim).agent_pools.get(RG, NAME, "userpool").provisioning_state == "Succeeded"
    messages = flow_run_logs(run.id, "Cancelled: pool userpool")
    step = f"pool nodepool1: node image {OLD_IMAGE} -> {NEW_IMAGE}"
    assert f"Cancelled: aborted the AKS operation of {step}" in messages, messages
    assert "Cancelled: pool nodepool1 stopped: Canceled" in messages
    left = [m for m in messages if m.startswith("Cancelled: pool nodepool1: ")]
    assert len(left) == 1 and left[0].startswith(
        f"Cancelled: pool nodepool1: Canceled, Kubernetes 1.30.5, node image {OLD_IMAGE}; 3 node(s) on {OLD_IMAGE}"
    ), messages


@pytest.mark.parametrize(
    ("record", "why"),
    [
        (None, "the upgrade record names no run, not this run"),
        ("other-run/started", "the upgrade record names run other-run, not this run"),
        ("this-run/waiting", f"this run's last operation ({STEP.describe()}) is waiting: nothing to abort"),
    ],
    ids=["no-record", "another-runs-operation", "this-run-only-waited"],
)
def test_an_operation_this_run_did_not_start_is_never_aborted(start_sim, monkeypatch, record, why):
    """Someone's node image upgrade runs on nodepool1 while the cancelled run's record says it did not
    start it (no record, another run's, or this run waiting for that operation)."""
    sim = start_sim(slow_upgrade_scenario())
    monkeypatch.setenv("AZURE_ACCESS_TOKEN", sim.endpoints.token)
    cluster = AksCluster.model_validate(aks_cluster(sim).model_dump())
    sdk(sim).agent_pools.begin_upgrade_node_image_version(RG, NAME, "nodepool1")
    if record is not None:
        run_id, phase = record.split("/")
        UpgradeRecord(kube_for(ClusterConnection(aks=cluster))).write(run_id, STEP, RecordPhase(phase))

    report = abort_own_operation(cluster, "this-run", poll=0.1)

    assert report.aborted == "" and report.notes[0].startswith(why)
    assert aborts(sim) == []
    assert pool_state(sim) == "UpgradingNodeImageVersion"
    assert [(o["kind"], o["status"]) for o in sim_operations(sim)] == [
        ("UpgradeNodeImageVersion", "InProgress")
    ]
    assert report.left[1].startswith("pool nodepool1: UpgradingNodeImageVersion, Kubernetes 1.30.5")
