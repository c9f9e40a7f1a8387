"""Fixtures of the reliability suite, and a summary of how many runs each crash case needed."""

from __future__ import annotations

import pytest
from prefect.settings import PREFECT_API_URL

from tests.conftest import RunningSim
from tests.reliability.support import SUMMARY, Catcher, FlowProcess, SilentServer, TcpProxy


@pytest.fixture
def flow_process(prefect_api, tmp_path):
    """Start the flow's command line against this session's Prefect server; leftovers are killed."""
    api_url = PREFECT_API_URL.value()
    started: list[FlowProcess] = []

    def start(sim: RunningSim, name: str, **overrides: object) -> FlowProcess:
        process = FlowProcess(sim, tmp_path, api_url, name, **overrides)
        started.append(process)
        return process

    yield start
    for process in started:
        if process.proc.poll() is None:
            process.kill()


@pytest.fixture
def proxy():
    """A TCP proxy in front of a simulator (``proxy(sim)``), closed at the end."""
    made: list[TcpProxy] = []

    def make(sim: RunningSim) -> TcpProxy:
        made.append(TcpProxy(int(sim.endpoints.kube_api.rsplit(":", 1)[1])))
        return made[-1]

    yield make
    for p in made:
        p.close()


@pytest.fixture
def silent_server():
    server = SilentServer()
    yield server
    server.close()


@pytest.fixture
def catcher():
    server = Catcher()
    yield server
    server.close()


def pytest_terminal_summary(terminalreporter) -> None:
    if SUMMARY:
        terminalreporter.section("reliability suite")
        for line in sorted(SUMMARY):
            terminalreporter.write_line(line)
