"""The example automations of deployments/automations, created by ``aksmaint automations`` on a real
Prefect server, notify through the operator's block when a node is quarantined."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.support import ROOT

NODE = "aks-nodepool1-12345678-vmss000003"


class Receiver:
    """A webhook on 127.0.0.1 that keeps the bodies posted to it."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        received = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                received.append(json.loads(self.rfile.read(length) or b"{}"))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True, name="webhook").start()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()
    r.server.server_close()


def run_python(prefect_server, code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=prefect_server.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def aksmaint(prefect_server, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "aksmaint_cli", "automations", *args],
        env=prefect_server.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_quarantined_node_is_notified_through_the_operators_block(prefect_server, receiver):
    run_python(
        prefect_server,
        f"""
        from prefect.blocks.notifications import CustomWebhookNotificationBlock
        CustomWebhookNotificationBlock(
            name="ops", url={receiver.url!r}, allow_private_urls=True,
            json_data={{"subject": "{{{{subject}}}}", "body": "{{{{body}}}}"}},
        ).save("ops-webhook", overwrite=True)
        """,
    )
    unknown = aksmaint(prefect_server, "--block", "custom-webhook/no-such-block")
    assert unknown.returncode == 2 and "no notification block custom-webhook/no-such-block" in unknown.stderr

    created = aksmaint(prefect_server, "--block", "custom-webhook/ops-webhook", "--replace")
    assert created.returncode == 0, created.stderr
    for name in ("aks-node-quarantined", "aks-node-failed", "aks-maintenance-run-failed"):
        assert f"created automation {name!r}" in created.stdout
    again = aksmaint(prefect_server, "--block", "custom-webhook/ops-webhook")
    assert "kept the existing automation 'aks-node-quarantined'" in again.stdout

    # the event the node-maintenance flow emits when it quarantines a node
    reason = "drain timed out after 900s with 1 pod(s) left (blocked by PodDisruptionBudget data/db)"
    event = {
        "id": str(uuid.uuid4()),
        "occurred": datetime.now(UTC).isoformat(),
        "event": "node.quarantined",
        "resource": {
            "prefect.resource.id": f"aks.node.aks-prod-weu.{NODE}",
            "prefect.resource.name": NODE,
            "aks.cluster": "aks-prod-weu",
        },
        "payload": {"reason": reason, "phase": "drain", "duration_seconds": 903.2},
    }
    time.sleep(2)  # the triggers service loads new automations on its next pass
    assert prefect_server.http.post("/events", json=[event]).status_code == 204
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not receiver.bodies:
        time.sleep(0.5)
    assert receiver.bodies, "no notification arrived within 90 s"
    (body,) = receiver.bodies
    assert body["subject"] == f"Node {NODE} quarantined on aks-prod-weu"
    assert reason in body["body"] and "retry_quarantined" in body["body"]
