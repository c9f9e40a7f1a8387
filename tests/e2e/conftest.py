"""A real Prefect server on PostgreSQL, the project's deployments from prefect.yaml, workers, and simulated
clusters.

Everything runs as the operator would run it: `prefect server start` on a local PostgreSQL (the
production shape, from scripts/prefect_postgres.py), `prefect work-pool create`,
`prefect --no-prompt deploy --all`, `prefect deployment run`, `prefect worker start`, each a
subprocess with its own PREFECT_HOME in a temporary folder. The clusters of prefect.yaml are simulated
AKS clusters whose kubeconfigs land where the deploy-time variables say.
"""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from scripts.prefect_postgres import LocalPostgres, PostgresPrefect, free_port, stop_process_group
from simulator.observe import SimObserver
from simulator.runtime import SimulatedAKS
from simulator.scenario import parse_scenario
from tests.support import ROOT, scenario_dict

POOL = "aks-maintenance"
PREFECT = str(Path(sys.executable).with_name("prefect"))
SCALE = 0.05
NEW_KERNEL = "5.15.0-1081-azure"


def stop_process(proc: subprocess.Popen, timeout: float = 20) -> None:
    """SIGTERM the process group we started (a worker wants two), then SIGKILL what is left."""
    stop_process_group(proc, timeout / 2, (signal.SIGTERM, signal.SIGTERM, signal.SIGKILL))


def prefect_yaml() -> dict:
    return yaml.safe_load((ROOT / "prefect.yaml").read_text())


def cluster_block(name: str) -> dict:
    return prefect_yaml()["definitions"]["clusters"][name]


class PrefectServer:
    """A local Prefect server on PostgreSQL plus the CLI and REST calls the tests make against it."""

    def __init__(self, home: Path, env: dict[str, str]):
        self.home = home
        self.env = env
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env["PREFECT_API_URL"] = f"{self.url}/api"
        self.env["PREFECT_UI_API_URL"] = f"{self.url}/api"  # what the browser calls
        # PostgreSQL's folder is a temporary one outside pytest's: the postgres user cannot enter those
        self.backend = PostgresPrefect(port=self.port, env=env, server_log=home / "server.log", cwd=ROOT)
        self.http = httpx.Client(base_url=f"{self.url}/api", timeout=30)
        self.workers: list[subprocess.Popen] = []

    @property
    def database(self) -> LocalPostgres:
        """The PostgreSQL the server keeps its state in (tests query it with psql)."""
        return self.backend.postgres

    def start(self, timeout: float = 180) -> None:
        self.backend.start(timeout)

    def restart(self, down_seconds: float) -> None:
        """Stop the server process, stay down, start it again on the same port and database."""
        self.backend.restart_server(down_seconds)

    def ensure_running(self) -> None:
        """Start the server again if a test left it stopped, so that later tests find it."""
        if self.backend.process is None or self.backend.process.poll() is not None:
            self.backend.start_server()

    def cli(
        self, *args: str, check: bool = True, timeout: float = 180, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [PREFECT, *args], env=env or self.env, cwd=ROOT, capture_output=True, text=True, timeout=timeout
        )
        if check and result.returncode != 0:
            raise AssertionError(f"prefect {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result

    def start_worker(self, *extra: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        """`prefect worker start` on the pool; ``env``: more environment for it, e.g. a shorter poll."""
        log = open(self.home / f"worker{len(self.workers)}.log", "w")  # noqa: SIM115
        proc = subprocess.Popen(
            [PREFECT, "worker", "start", "--pool", POOL, *extra],
            env={**self.env, **(env or {})},
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.workers.append(proc)
        return proc

    def worker_log(self, index: int = -1) -> str:
        n = index if index >= 0 else len(self.workers) + index
        return (self.home / f"worker{n}.log").read_text()

    # ---- REST ------------------------------------------------------------------------------------
    def get(self, path: str) -> dict:
        response = self.http.get(path)
        response.raise_for_status()
        return response.json()

    def post(self, path: str, body: dict) -> object:
        response = self.http.post(path, json=body)
        response.raise_for_status()
        return response.json() if response.content else None

    def deployment(self, full_name: str) -> dict:
        return self.get(f"/deployments/name/{full_name}")

    def clone_deployment(
        self, source: str, name: str, parameters: dict, tags: list[str], job_variables: dict | None = None
    ) -> dict:
        """A copy of deployment ``source`` (flow/name) under another name, with its own parameters and tags
        and no schedule: a cluster prefect.yaml does not have. Delete it with ``delete_deployment``."""
        d = self.deployment(source)
        body = {
            key: d[key]
            for key in (
                "flow_id",
                "entrypoint",
                "path",
                "pull_steps",
                "work_pool_name",
                "work_queue_name",
                "parameter_openapi_schema",
                "enforce_parameter_schema",
                "concurrency_options",
            )
        }
        limit = d.get("global_concurrency_limit") or {}
        body.update(
            name=name,
            parameters=parameters,
            tags=tags,
            job_variables=d["job_variables"] if job_variables is None else job_variables,
            concurrency_limit=limit.get("limit"),
        )
        created = self.post("/deployments/", body)
        assert isinstance(created, dict), created
        return self.get(f"/deployments/{created['id']}")

    def delete_deployment(self, deployment_id: str) -> None:
        self.http.delete(f"/deployments/{deployment_id}").raise_for_status()

    def flow_run(self, run_id: str) -> dict:
        return self.get(f"/flow_runs/{run_id}")

    def runs_of(self, deployment_id: str) -> list[dict]:
        return self.post("/flow_runs/filter", {"deployments": {"id": {"any_": [deployment_id]}}})

    def wait_for_state(self, run_id: str, states: set[str], timeout: float = 180) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            run = self.flow_run(run_id)
            if run["state"] and run["state"]["type"] in states:
                return run
            if time.monotonic() > deadline:
                raise AssertionError(f"run {run_id} is {run['state']} after {timeout}s")
            time.sleep(0.5)

    def stop(self) -> None:
        for worker in self.workers:
            stop_process(worker)
        self.backend.stop()
        self.http.close()


@pytest.fixture(scope="session")
def e2e_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("e2e")


@pytest.fixture(scope="session")
def prefect_server(e2e_dir) -> Iterator[PrefectServer]:
    """A local Prefect server with the process pool and every deployment of prefect.yaml deployed."""
    home = e2e_dir / "prefect-home"
    kubeconfigs = e2e_dir / "kubeconfigs"
    home.mkdir()
    kubeconfigs.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "AKSMAINT_", "AZURE_"))}
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_LOGGING_LEVEL="INFO",
        PREFECT_CLI_WRAP_LINES="false",
        # deploy-time variables of prefect.yaml (the "test profile")
        AKSMAINT_KUBECONFIG_DIR=str(kubeconfigs),
        AKSMAINT_AZURE_CREDENTIAL="static-token",
        AKSMAINT_ARM_ENDPOINT="https://127.0.0.1:9",  # replaced per simulator where ARM is used
    )
    # the pull step's variable is read where the flow runs (the workers), so the deploy must not see it:
    # a value present at deploy time would be written into the deployment instead
    deploy_env = dict(env)
    env["AKSMAINT_PROJECT_DIR"] = str(ROOT)
    server = PrefectServer(home, env)
    try:
        server.start()
        server.cli("work-pool", "create", POOL, "--type", "process")
        server.cli(
            "--no-prompt",
            "deploy",
            "--all",
            env={**deploy_env, **{k: server.env[k] for k in ("PREFECT_API_URL", "PREFECT_UI_API_URL")}},
        )
        yield server
    finally:
        server.stop()


class SimCluster:
    """A simulated AKS standing in for one cluster of prefect.yaml (same name, resource group, subscription),
    its kubeconfig written where that cluster's deployments look for it."""

    def __init__(
        self, key: str, kubeconfig_dir: Path, state_dir: Path, scenario: dict, azure: dict | None = None
    ):
        azure = azure or cluster_block(key)["azure"]
        sc = copy.deepcopy(scenario)
        sc["cluster"].update(
            name=azure["name"],
            resource_group=azure["resource_group"],
            subscription_id=azure["subscription_id"],
        )
        self.key = key
        self.sim = SimulatedAKS(
            parse_scenario(sc), state_dir=state_dir, kubeconfig=kubeconfig_dir / f"{key}.kubeconfig"
        )
        self.endpoints = self.sim.start()
        self.observer = SimObserver(self.endpoints)

    @property
    def kubeconfig(self) -> str:
        return self.endpoints.kubeconfig

    def kernels(self) -> dict[str, str]:
        return {name: h["running_kernel"] for name, h in self.observer.hosts().items()}

    def stop(self) -> None:
        self.observer.close()
        self.sim.stop()


def demo_scenario(reboot: list[tuple[str, int]], **changes: object) -> dict:
    sc = scenario_dict()
    sc["time_scale"] = SCALE
    sc["nodes"] = [
        {"pool": pool, "index": index, "reboot_required": True, "pending_kernel": NEW_KERNEL}
        for pool, index in reboot
    ]
    sc.update(changes)
    return sc


@pytest.fixture
def sim_cluster(prefect_server, tmp_path) -> Iterator:
    """Start simulated clusters for keys of prefect.yaml (or, given ``azure``: its subscription_id,
    resource_group and name, a cluster prefect.yaml does not have); stopped at the end of the test."""
    started: list[SimCluster] = []
    kubeconfigs = Path(prefect_server.env["AKSMAINT_KUBECONFIG_DIR"])

    def start(key: str, scenario: dict, azure: dict | None = None) -> SimCluster:
        cluster = SimCluster(key, kubeconfigs, tmp_path / f"sim-{key}", scenario, azure)
        started.append(cluster)
        return cluster

    yield start
    for cluster in started:
        cluster.stop()
