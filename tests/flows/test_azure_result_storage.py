"""Flow results in Azure Blob storage, against Azurite, set up the way prefect.yaml's kubernetes pool sets it.

The block is prefect-azure's AzureBlobStorageContainer with a connection string; the flow runs get
PREFECT_DEFAULT_RESULT_STORAGE_BLOCK and PREFECT_RESULTS_PERSIST_BY_DEFAULT in their environment from the
kubernetes pool's ``env`` in prefect.yaml. A real ``prefect worker`` runs the fleet deployment and the two
node-maintenance deployments it starts: each maintenance run's result is a blob in the container, and the
fleet reads the reports from there.

A storage that cannot be used fails the run before its first request to the cluster, with one line that
names the block and the cause: a missing container, a refused key, an account that cannot be reached.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, FlowRunFilter
from prefect.client.schemas.objects import FlowRun
from prefect.serializers import PickleSerializer
from prefect.settings import (
    PREFECT_API_URL,
    PREFECT_DEFAULT_RESULT_STORAGE_BLOCK,
    PREFECT_RESULTS_PERSIST_BY_DEFAULT,
    temporary_settings,
)
from prefect.utilities.callables import parameter_schema
from prefect_azure import AzureBlobStorageCredentials
from prefect_azure.blob_storage import AzureBlobStorageContainer

from aksmaint.report import MaintenanceReport
from flows.fleet import fleet
from flows.node_maintenance import node_maintenance
from tasks.result_storage import PROBE
from tests.azurite_support import Azurite, connection_string
from tests.e2e.conftest import NEW_KERNEL, demo_scenario
from tests.e2e.test_fleet_stages import tables
from tests.support import ROOT, RunningSim, fast_params

POOL = "azurite-results"
SLUG = "azure-blob-storage-container"
CONTAINER = "aks-maintenance-results"
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def pool_env() -> dict[str, str]:
    """The environment prefect.yaml's kubernetes pool gives every flow run."""
    pools = yaml.safe_load((ROOT / "prefect.yaml").read_text())["definitions"]["work_pools"]
    return dict(pools["kubernetes"]["job_variables"]["env"])


def save_block(name: str, container: str, conn: str) -> str:
    AzureBlobStorageContainer(
        container_name=container, credentials=AzureBlobStorageCredentials(connection_string=conn)
    ).save(name, overwrite=True)
    return f"{SLUG}/{name}"


@pytest.fixture(scope="module")
def blocks(prefect_api, azurite: Azurite) -> dict[str, str]:
    """Result storage blocks by case: prefect.yaml's (the container exists) and three broken ones."""
    azurite.create_container(CONTAINER)
    good = pool_env()["PREFECT_DEFAULT_RESULT_STORAGE_BLOCK"]
    assert good.startswith(f"{SLUG}/")
    return {
        "good": save_block(good.split("/", 1)[1], CONTAINER, azurite.connection_string),
        "missing": save_block("no-container", "not-there", azurite.connection_string),
        "wrong key": save_block("wrong-key", CONTAINER, connection_string(azurite.blob_endpoint, "a2V5")),
        "unreachable": save_block(
            "unreachable", CONTAINER, connection_string("http://127.0.0.1:9/devstoreaccount1")
        ),
    }


def run_maintenance(sim: RunningSim, block: str):
    """A node-maintenance run in this process with ``block`` as its default result storage."""
    with temporary_settings(
        {PREFECT_DEFAULT_RESULT_STORAGE_BLOCK: block, PREFECT_RESULTS_PERSIST_BY_DEFAULT: True}
    ):
        return node_maintenance(**fast_params(sim), return_state=True)


@pytest.fixture(scope="module")
def unreachable_run(blocks, tmp_path_factory) -> Iterator[threading.Thread]:
    """The unreachable case, started first and left to run beside the other tests: the check fails in
    seconds, but Prefect then spends a minute of the Azure SDK's retries trying to store the failure."""
    from simulator.runtime import SimulatedAKS
    from simulator.scenario import parse_scenario

    sim = SimulatedAKS(
        parse_scenario(demo_scenario([("nodepool1", 0)])), state_dir=tmp_path_factory.mktemp("sim")
    )
    sim.start()
    running = RunningSim(sim)
    outcome: dict = {"mark": len(running.observer.audit())}
    thread = threading.Thread(
        target=contextvars.copy_context().run,
        args=(lambda: outcome.update(state=run_maintenance(running, blocks["unreachable"])),),
        daemon=True,
    )
    thread.sim, thread.outcome = running, outcome  # type: ignore[attr-defined]
    thread.start()
    yield thread
    thread.join(timeout=180)
    running.observer.close()
    sim.stop()


# ---- the pre-flight check --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("case", "cause"),
    [
        ("missing", "container 'not-there' does not exist"),
        ("wrong key", "the account key was refused (403 AuthorizationFailure)"),
    ],
)
def test_a_storage_that_cannot_be_used_fails_the_run_before_any_request_to_the_cluster(
    unreachable_run, blocks, start_sim, case, cause
):
    sim = start_sim(demo_scenario([("nodepool1", 0)]))
    mark = len(sim.observer.audit())
    state = run_maintenance(sim, blocks[case])
    assert state.is_failed(), state
    assert state.message.endswith(f"ResultStorageError: result storage {blocks[case]}: {cause}"), (
        state.message
    )
    assert sim.observer.audit(mark) == []  # not even a read: the check comes before connecting
    assert sim.observer.invariants()["max_unschedulable"] == 0


# ---- results through a real worker -----------------------------------------------------------------
@pytest.fixture(scope="module")
def worker(prefect_api, tmp_path_factory) -> Iterator[Path]:
    """A process work pool and ``prefect worker start`` on it, polling every second; yields its log."""

    async def create_pool() -> None:
        async with get_client() as client:
            await client.create_work_pool(WorkPoolCreate(name=POOL, type="process"), overwrite=True)

    asyncio.run(create_pool())
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PREFECT_WORKER_QUERY_SECONDS": "1"}
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(Path(sys.executable).with_name("prefect")), "worker", "start", "--pool", POOL],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    yield log
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


async def deploy(flow_fn, name: str, parameters: dict, tags: list[str]) -> str:
    """A deployment of ``flow_fn`` on the pool, run from this checkout with the kubernetes pool's env."""
    entrypoint = {
        "node-maintenance": "flows/node_maintenance.py:node_maintenance",
        "fleet": "flows/fleet.py:fleet",
    }
    async with get_client() as client:
        flow_id = await client.create_flow_from_name(flow_fn.name)
        deployment_id = await client.create_deployment(
            flow_id=flow_id,
            name=name,
            entrypoint=entrypoint[flow_fn.name],
            path=str(ROOT),
            work_pool_name=POOL,
            parameters=parameters,
            parameter_openapi_schema=parameter_schema(flow_fn).model_dump_for_openapi(),
            job_variables={"env": pool_env()},
            tags=tags,
        )
    return str(deployment_id)


async def run_and_wait(deployment_id: str, parameters: dict, timeout: float) -> FlowRun:
    async with get_client() as client:
        run = await client.create_flow_run_from_deployment(deployment_id, parameters=parameters)
        deadline = time.monotonic() + timeout
        while not (run.state and run.state.type.value in FINAL) and time.monotonic() < deadline:
            await asyncio.sleep(1)
            run = await client.read_flow_run(run.id)
        return run


async def children_of(run: FlowRun) -> list[FlowRun]:
    async with get_client() as client:
        return await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_flow_run_id={"any_": [run.id]})  # type: ignore[arg-type]
        )


async def fleet_summary(run: FlowRun) -> str:
    async with get_client() as client:
        found = await client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["fleet-summary"]))
        )
    return [a.data for a in found if a.flow_run_id == run.id][-1]


def test_maintenance_results_are_blobs_in_the_container_and_the_fleet_reads_its_reports_there(
    unreachable_run, blocks, azurite, worker, start_sim
):
    sims = {}
    for key in ("weu", "neu"):
        sc = demo_scenario([("nodepool1", 1)])
        sc["cluster"]["name"] = f"aks-{key}"
        sims[key] = start_sim(sc)

    async def scenario() -> tuple[FlowRun, list[FlowRun], str]:
        for key, sim in sims.items():
            await deploy(node_maintenance, f"{key}-node-maintenance", fast_params(sim), [f"cluster:{key}"])
        fleet_id = await deploy(fleet, "azurite-fleet", {}, ["fleet"])
        names = [f"node-maintenance/{key}-node-maintenance" for key in sims]
        run = await run_and_wait(fleet_id, {"deployments": names, "poll_interval_seconds": 1}, timeout=240)
        return run, await children_of(run), await fleet_summary(run)

    run, children, summary = asyncio.run(scenario())
    assert run.state is not None and run.state.type.value == "COMPLETED", (
        run.state,
        worker.read_text()[-4000:],
    )
    assert run.state.message == "2 cluster(s) done"
    # each maintenance run's result is a blob in the container, holding its report
    blobs = azurite.blob_names(CONTAINER)
    assert len(children) == 2
    for child in children:
        assert child.state is not None and child.state.type.value == "COMPLETED", child.state
        key = child.state.data.storage_key  # type: ignore[union-attr]  # the result record's metadata
        assert key in blobs, (key, blobs)
        stored = PickleSerializer().loads(azurite.read_blob(CONTAINER, key))  # Prefect's default serializer
        assert isinstance(stored, MaintenanceReport), stored
        assert stored.cluster in {"aks-weu", "aks-neu"}
    assert PROBE in blobs  # the pre-flight check's probe, one object whatever the number of runs
    # the fleet read both reports from there: each cluster's row shows its outcome
    rows = next(iter(tables(summary).values()))
    assert {cluster: cells[1:3] for cluster, cells in rows.items()} == {
        "aks-weu": ["Completed", "1"],
        "aks-neu": ["Completed", "1"],
    }, summary
    for sim in sims.values():
        assert NEW_KERNEL in {h["running_kernel"] for h in sim.observer.hosts().values()}


# last: the run started first, beside the other tests
def test_an_unreachable_storage_account_fails_the_run_before_any_request_to_the_cluster(
    unreachable_run, blocks
):
    unreachable_run.join(timeout=180)
    state = unreachable_run.outcome["state"]
    assert state.is_failed(), state
    expected = (
        f"result storage {blocks['unreachable']}: the storage account cannot be reached: Cannot connect to"
    )
    assert expected in state.message, state.message
    assert "127.0.0.1:9" in state.message
    assert unreachable_run.sim.observer.audit(unreachable_run.outcome["mark"]) == []
    assert unreachable_run.sim.observer.invariants()["max_unschedulable"] == 0
