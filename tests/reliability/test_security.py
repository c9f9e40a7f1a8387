"""Secrets stay secret, and TLS is verified.

A run is given known secrets (the cluster's bearer token and CA in its kubeconfig, notification URLs
whose path is the webhook secret, one of them delivered to a local catcher so they are surely used);
then everything the run left behind is searched for them: the Prefect logs, artifacts, events, flow and
task runs, the returned report, and every log record the process emitted at INFO and above.
"""

from __future__ import annotations

import base64
import logging
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import trustme
import yaml
from prefect import get_client
from prefect.blocks.notifications import CustomWebhookNotificationBlock
from prefect.client.schemas.filters import LogFilter, LogFilterTimestamp
from prefect.events.filters import EventFilter, EventOccurredFilter
from prefect.events.worker import EventsWorker
from prefect.logging.handlers import APILogWorker

from aksmaint.report import MaintenanceReport, Outcome
from aksmaint_cli.commands import maintenance_main as flow_cli
from flows.node_maintenance import node_maintenance
from tests.reliability.support import assert_invariants, reliability_scenario
from tests.support import closed_port, fast_params, needing_reboot, report_of


def everything_prefect_kept(since: datetime, flow_run_id: str, must_see_event: str) -> list[str]:
    """Logs, artifacts, events, flow runs and task runs the Prefect server holds, as JSON texts."""
    APILogWorker.drain_all()
    EventsWorker.drain_all()
    texts: list[str] = []
    with get_client(sync_client=True) as prefect:
        deadline = time.monotonic() + 30
        while True:  # events are persisted by the server in batches: wait until the run's are in
            events = prefect.read_events(EventFilter(occurred=EventOccurredFilter(since=since)), limit=50)
            page = events
            collected = list(page.events)
            while page.next_page:
                page = prefect.read_events_page(page.next_page)
                collected += page.events
            if any(e.event == must_see_event for e in collected) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert any(e.event == must_see_event for e in collected), [e.event for e in collected]
        texts += [e.model_dump_json() for e in collected]
        offset = 0
        while logs := prefect.read_logs(
            log_filter=LogFilter(timestamp=LogFilterTimestamp(after_=since)), limit=200, offset=offset
        ):
            texts += [log.model_dump_json() for log in logs]
            offset += len(logs)
        assert any(flow_run_id in t for t in texts), "no log of the run was found"
        texts += [a.model_dump_json() for a in prefect.read_artifacts(limit=200)]
        texts += [r.model_dump_json() for r in prefect.read_flow_runs(limit=200)]
        texts += [r.model_dump_json() for r in prefect.read_task_runs(limit=200)]
    return texts


def test_secrets_never_leave_the_run(start_sim, prefect_api, catcher, caplog, capsys, tmp_path) -> None:
    """Run from the command line (a parameters file holds the notification URLs), as an operator would."""
    sim = start_sim(reliability_scenario(need=1, count=2))
    needed = needing_reboot(sim)
    webhook_secret = f"secret-token-{uuid.uuid4().hex}"
    kubeconfig = yaml.safe_load(Path(sim.kubeconfig).read_text())
    secrets = {
        "webhook path": webhook_secret,
        "bearer token": sim.endpoints.token,
        "CA in the kubeconfig": kubeconfig["clusters"][0]["cluster"]["certificate-authority-data"][:64],
    }
    urls = [
        f"json://127.0.0.1:{catcher.port}/{webhook_secret}",
        f"json://127.0.0.1:{closed_port()}/{webhook_secret}-undeliverable",  # exercises the failure path
    ]
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(fast_params(sim, notify={"urls": urls})))
    since = datetime.now(UTC)
    caplog.set_level(logging.INFO)
    capsys.readouterr()
    assert flow_cli(["--params", str(params_file), "--json"]) == 0
    printed = capsys.readouterr()
    report = MaintenanceReport.model_validate_json(printed.out[printed.out.index("{\n") :])
    assert {n.node: n.outcome for n in report.nodes if n.node in needed} == {needed[0]: Outcome.rebooted}
    # the secrets were really in use: the notifications arrived, at the secret path
    paths = {path for path, _ in catcher.received}
    assert paths == {f"/{webhook_secret}"} and len(catcher.received) == 3, (
        catcher.received
    )  # drain, reboot, back

    texts = everything_prefect_kept(since, report.flow_run_id, "node.rebooted")
    texts += [printed.out, printed.err]
    texts += [f"{r.name} {r.levelname} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records]
    assert any("Notification" in t or "notification" in t for t in texts[-len(caplog.records) :]), (
        "the undeliverable URL should have been reported (without itself)"
    )
    for what, secret in secrets.items():
        leaks = [t[:300] for t in texts if secret in t]
        assert not leaks, f"the {what} leaked: {leaks}"
    assert_invariants(sim, needed)


def kubeconfig_with(sim, folder: Path, **cluster: object) -> str:
    data = yaml.safe_load(Path(sim.kubeconfig).read_text())
    entry = data["clusters"][0]["cluster"]
    entry.pop("certificate-authority-data")
    entry.update(cluster)
    path = folder / f"{uuid.uuid4().hex[:6]}.kubeconfig"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_tls_is_verified_with_the_kubeconfig_ca(start_sim, prefect_api, tmp_path) -> None:
    """A CA that did not sign the server's certificate, or a kubeconfig asking to skip verification,
    both fail at connect with a message saying so; no request reaches the API."""
    sim = start_sim(reliability_scenario(need=1, count=2))
    other_ca = base64.b64encode(trustme.CA().cert_pem.bytes()).decode()
    for kubeconfig in (
        kubeconfig_with(sim, tmp_path, **{"certificate-authority-data": other_ca}),
        kubeconfig_with(sim, tmp_path, **{"insecure-skip-tls-verify": True}),
    ):
        mark = len(sim.observer.audit())
        state = node_maintenance(**fast_params(sim, cluster={"kubeconfig": kubeconfig}), return_state=True)
        assert state.is_failed()
        assert "certificate verify failed" in state.message and "kubeconfig" in state.message, state.message
        assert sim.observer.audit(mark) == []  # the TLS handshake failed: not one request got through
    assert sim.observer.invariants()["reboots"] == {}


def test_tls_verification_is_off_only_when_asked_and_then_warns(
    start_sim, prefect_api, tmp_path, caplog
) -> None:
    """With cluster.insecure_skip_tls_verify the same wrong-CA kubeconfig connects, the run logs a warning
    naming the parameter, and the report records that the server was not authenticated."""
    sim = start_sim(reliability_scenario(need=1, count=2))
    needed = needing_reboot(sim)
    other_ca = base64.b64encode(trustme.CA().cert_pem.bytes()).decode()
    kubeconfig = kubeconfig_with(sim, tmp_path, **{"certificate-authority-data": other_ca})
    caplog.set_level(logging.WARNING)
    state = node_maintenance(
        **fast_params(sim, cluster={"kubeconfig": kubeconfig, "insecure_skip_tls_verify": True}),
        return_state=True,
    )
    report = state.result()
    assert report.tls_verified is False
    assert {n.node: n.outcome for n in report.nodes if n.node in needed} == {needed[0]: Outcome.rebooted}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("TLS verification" in w and "insecure_skip_tls_verify" in w for w in warnings), warnings
    assert_invariants(sim, needed)


def test_notification_block_keeps_the_webhook_out_of_the_run(start_sim, prefect_api, catcher) -> None:
    """The way docs/operations.md recommends for deployments: the webhook (and its secret path) lives in a
    Prefect notification block; the run's parameters, as the Prefect server stores them, hold only the
    block's name, and the messages still arrive."""
    sim = start_sim(reliability_scenario(need=1, count=2))
    needed = needing_reboot(sim)
    webhook_secret = f"secret-token-{uuid.uuid4().hex}"
    block_name = f"ops-{uuid.uuid4().hex[:8]}"
    CustomWebhookNotificationBlock(
        name="aks maintenance",
        url=f"http://127.0.0.1:{catcher.port}/{{{{path}}}}",
        json_data={"text": "{{body}}"},
        secrets={"path": webhook_secret},
        allow_private_urls=True,
    ).save(block_name)
    since = datetime.now(UTC)
    state = node_maintenance(
        **fast_params(sim, notify={"block": f"custom-webhook/{block_name}"}), return_state=True
    )
    report = report_of(state)
    assert {n.node: n.outcome for n in report.nodes if n.node in needed} == {needed[0]: Outcome.rebooted}
    assert [path for path, _ in catcher.received] == [f"/{webhook_secret}"] * 3  # drain, reboot, back
    assert needed[0] in catcher.received[-1][1].decode()

    with get_client(sync_client=True) as prefect:
        stored = prefect.read_flow_run(report.flow_run_id).parameters
    assert stored["notify"]["block"] == f"custom-webhook/{block_name}"
    texts = everything_prefect_kept(since, report.flow_run_id, "node.rebooted")
    assert not [t[:300] for t in texts if webhook_secret in t]
    assert_invariants(sim, needed)
