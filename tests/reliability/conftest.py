"""Fixtures of the reliability suite: a TCP proxy that can be cut, a server that never answers, a webhook catcher."""

from __future__ import annotations

import pytest

from tests.reliability.support import Catcher, SilentServer, TcpProxy
from tests.support import RunningSim


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
