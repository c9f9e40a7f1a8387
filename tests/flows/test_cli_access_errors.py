"""A cluster the command line cannot use is one line that says what to check, with no traceback: an
unreachable API server, a context the kubeconfig does not have, a token the API server refuses (401), an
identity without the permission (403), a missing kubeconfig. ``--debug`` (or PREFECT_LOGGING_LEVEL=DEBUG)
shows the traceback. Each case runs the real command in a process of its own."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from prefect import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
from prefect.client.schemas.sorting import FlowRunSort

from simulator.runtime import SimulatedAKS
from simulator.scenario import parse_scenario
from tests.support import RunningSim, cli_env, closed_port, maintenance_scenario, run_module

CLUSTER = "aks-demo"
REFUSED = "check the credentials and RBAC of the identity the flow runs as"


@pytest.fixture(scope="module")
def sim(tmp_path_factory) -> Iterator[RunningSim]:
    """One simulated cluster for every case: none of them gets as far as changing it."""
    scenario = parse_scenario(maintenance_scenario(need=1, count=2))
    running_sim = SimulatedAKS(scenario, state_dir=tmp_path_factory.mktemp("sim"))
    running_sim.start()
    running = RunningSim(running_sim)
    yield running
    running.observer.close()
    running_sim.stop()


def kubeconfig_like(sim: RunningSim, path: Path, server: str | None = None, token: str | None = None) -> str:
    """The simulator's kubeconfig with another server address or another token."""
    config = yaml.safe_load(Path(sim.kubeconfig).read_text())
    if server is not None:
        config["clusters"][0]["cluster"]["server"] = server
    if token is not None:
        config["users"][0]["user"]["token"] = token
    path.write_text(yaml.safe_dump(config))
    return str(path)


def aksmaint(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return run_module("aksmaint_cli", args, env, timeout=180)


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def logs_of_the_last_flow_run() -> list[str]:
    """The log messages the Prefect API holds for the newest flow run: what its page in the UI shows."""
    with get_client(sync_client=True) as prefect:
        (run,) = prefect.read_flow_runs(sort=FlowRunSort.START_TIME_DESC, limit=1)
        logs = prefect.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id])))
    return [log.message for log in logs]


def test_an_unreachable_api_server_is_one_line_naming_the_address_to_check(sim, prefect_api, tmp_path):
    server = f"https://127.0.0.1:{closed_port()}"
    kubeconfig = kubeconfig_like(sim, tmp_path / "down.yaml", server=server)

    done = aksmaint(["maintain", "--kubeconfig", kubeconfig], cli_env(tmp_path))

    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert done.stdout == ""
    assert lines(done.stderr) == [
        f"error: cannot reach the Kubernetes API of {CLUSTER} at {server} ({CLUSTER}: API server unreachable:"
        " NewConnectionError (Connection refused)); check that the API server is up and that this machine"
        " can reach that address"
    ]
    # the run's logs in the Prefect UI keep the whole story
    assert any("Traceback (most recent call last)" in message for message in logs_of_the_last_flow_run())


def test_with_debug_the_unreachable_api_server_comes_with_its_traceback(sim, prefect_api, tmp_path):
    server = f"https://127.0.0.1:{closed_port()}"
    kubeconfig = kubeconfig_like(sim, tmp_path / "down.yaml", server=server)

    done = aksmaint(["maintain", "--kubeconfig", kubeconfig, "--debug"], cli_env(tmp_path))

    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback (most recent call last)" in done.stderr
    assert "aksmaint.errors.ClusterAccessError: cannot reach the Kubernetes API" in done.stderr
    assert lines(done.stderr)[-1].startswith(
        f"error: cannot reach the Kubernetes API of {CLUSTER} at {server}"
    )


@pytest.mark.parametrize("case", ["wrong context", "401", "403", "missing kubeconfig"])
def test_an_access_error_before_the_rollout_is_one_line_saying_what_to_check(
    sim, prefect_api, tmp_path, case
):
    args = ["maintain", "--kubeconfig", sim.kubeconfig]
    if case == "wrong context":
        args += ["--context", "prod-westeurope"]
        expected = f"error: context 'prod-westeurope' is not in {sim.kubeconfig} (contexts: {CLUSTER})"
    elif case == "401":
        args[-1] = kubeconfig_like(sim, tmp_path / "old-token.yaml", token="a-token-long-revoked")
        expected = f"error: the cluster {CLUSTER} refused the request (HTTP 401 Unauthorized: Unauthorized); {REFUSED}"
    elif case == "403":
        # the API answers, but listing the nodes (the update check, before any change) is forbidden
        sim.observer.faults(rules=[{"count": 1, "status": 403, "verb": "list", "path": "^/api/v1/nodes$"}])
        expected = f"error: the cluster {CLUSTER} refused the request (HTTP 403 Forbidden: injected fault (403)); {REFUSED}"
    else:
        args[-1] = str(tmp_path / "no-such-kubeconfig")
        expected = f"error: kubeconfig not found: {args[-1]}"
    mark = len(sim.observer.audit())

    done = aksmaint(args, cli_env(tmp_path))

    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert done.stdout == ""
    assert lines(done.stderr) == [expected]
    assert sim.observer.mutating_requests(mark) == []


def upgrade_args(arm_endpoint: str) -> list[str]:
    return [
        "upgrade",
        *("--subscription-id", "00000000-0000-0000-0000-000000000000", "--resource-group", "rg"),
        *("--name", CLUSTER, "--mode", "node-image", "--credential", "static-token"),
        *("--arm-endpoint", arm_endpoint),
    ]


def test_the_upgrade_command_says_an_unreachable_azure_resource_manager_in_one_line(prefect_api, tmp_path):
    port = closed_port()
    env = {**cli_env(tmp_path), "AZURE_ACCESS_TOKEN": "token"}

    done = aksmaint(upgrade_args(f"https://127.0.0.1:{port}"), env)

    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    (error,) = lines(done.stderr)
    assert error.startswith("error: Azure Resource Manager call failed: ServiceRequestError: ")
    assert f"host='127.0.0.1', port={port}" in error and "Connection refused" in error

    debugging = aksmaint(upgrade_args(f"https://127.0.0.1:{port}"), {**env, "PREFECT_LOGGING_LEVEL": "DEBUG"})

    assert debugging.returncode == 1
    assert "Traceback (most recent call last)" in debugging.stderr
    assert error in lines(debugging.stderr)
