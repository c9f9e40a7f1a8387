"""The command line and its Prefect API: the temporary local server gets the time a first start on a fresh
machine needs, and a Prefect API that cannot be had is one line and exit code 2, with nothing sent to the
cluster. Each case is a process of its own, since Prefect keeps one temporary server per process."""

from __future__ import annotations

import subprocess

from tests.support import cli_env, closed_port, maintenance_scenario, run_module


def run_cli(args: list[str], env: dict[str, str], timeout: float = 400) -> subprocess.CompletedProcess:
    return run_module("flows.node_maintenance", args, env, timeout)


def assert_one_error_line(done: subprocess.CompletedProcess, says: str) -> None:
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error: ") and says in errors[0], done.stderr


def test_first_run_on_a_new_database_waits_for_the_local_server(start_sim, tmp_path):
    """A fresh PREFECT_HOME (its database created and migrated on the spot) with Prefect's start-up wait
    cut to 1 s: Prefect alone gives up, the command line waits as long as the start needs."""
    sim = start_sim(maintenance_scenario(need=1, count=2))
    home = tmp_path / "prefect-home"  # cli_env's, fresh

    done = run_cli(
        ["--kubeconfig", sim.kubeconfig, "--dry-run"],
        cli_env(tmp_path, local_server=True, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="1"),
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert "Result: aks-demo: 2 planned" in done.stdout, done.stdout
    assert (home / "prefect.db").exists()
    assert (home / "local-server.log").exists()


def test_a_local_server_that_cannot_start_is_one_line_and_exit_2(start_sim, tmp_path):
    sim = start_sim(maintenance_scenario(need=1, count=2))
    mark = len(sim.observer.audit())
    unreachable_db = f"postgresql+asyncpg://prefect:x@127.0.0.1:{closed_port()}/prefect"

    done = run_cli(
        ["--kubeconfig", sim.kubeconfig],
        cli_env(tmp_path, local_server=True, PREFECT_API_DATABASE_CONNECTION_URL=unreachable_db),
        timeout=120,
    )

    assert_one_error_line(done, "could not start the temporary local Prefect server")
    assert "local-server.log" in done.stderr
    assert sim.observer.audit(mark) == []


def test_an_unreachable_prefect_api_is_one_line_and_exit_2(start_sim, tmp_path):
    sim = start_sim(maintenance_scenario(need=1, count=2))
    mark = len(sim.observer.audit())
    url = f"http://127.0.0.1:{closed_port()}/api"

    done = run_cli(["--kubeconfig", sim.kubeconfig], cli_env(tmp_path, PREFECT_API_URL=url), 120)

    assert_one_error_line(done, f"the Prefect API at {url} does not answer")
    assert sim.observer.audit(mark) == []
