"""Fixtures of the reliability suite, and a summary of how many runs each crash case needed."""

from __future__ import annotations

import pytest

from tests.conftest import RunningSim
from tests.reliability.support import SUMMARY, Catcher, SilentServer, TcpProxy


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


@pytest.fixture(autouse=True)
def _summary_into_the_report(request):
    """Hand what a case found (SUMMARY lines) to its test report, so that tests/conftest.py can print it
    at the end of the session, also when the case ran in a pytest-xdist worker."""
    mark = len(SUMMARY)
    yield
    request.node.user_properties += [("reliability", line) for line in SUMMARY[mark:]]
