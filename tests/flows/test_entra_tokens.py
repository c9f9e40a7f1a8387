"""Entra ID clusters: tokens expire while a rollout goes on.

The simulated cluster has AAD integration with local accounts disabled, so its Kubernetes API takes
only Entra ID tokens for the AKS server application. Its token service issues tokens that expire in
seconds, and a rollout lasts several of those lifetimes. The flow reaches the cluster the way it
reaches a real one: by its Azure id, with the ``environment`` credential (a service principal in
AZURE_* variables) through the real azure-identity, and every request must carry a current token.
"""

from __future__ import annotations

import ssl
import time
from pathlib import Path

import httpx
import pytest
import yaml
from azure.identity import ClientSecretCredential

from aksmaint.azure import AKS_SERVER_APP
from aksmaint.report import Outcome
from flows.node_maintenance import node_maintenance
from tests.flows.test_cluster_upgrade import NAME, RG, SUB
from tests.support import RunningSim, fast_params, maintenance_scenario, needing_reboot

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
LIFETIME = 3  # real seconds a token lives (simulated 30 s at time scale 0.1)


def entra_cluster(local_accounts: bool = False) -> dict:
    scenario = maintenance_scenario(need=6, count=6)
    aad = {
        "tenant_id": TENANT,
        "token_lifetime_seconds": LIFETIME / scenario["time_scale"],
        "disable_local_accounts": not local_accounts,
    }
    return {**scenario, "cluster": {**scenario["cluster"], "aad": aad}}


@pytest.fixture
def service_principal(monkeypatch):
    """The simulator's service principal in the AZURE_* variables azure-identity's environment credential
    reads; any request that would leave the machine goes to a proxy that is not there."""

    def use(sim: RunningSim) -> None:
        e = sim.endpoints
        monkeypatch.setenv("AZURE_TENANT_ID", e.tenant_id)
        monkeypatch.setenv("AZURE_CLIENT_ID", e.client_id)
        monkeypatch.setenv("AZURE_CLIENT_SECRET", e.client_secret)
        monkeypatch.setenv("AZURE_AUTHORITY_HOST", e.authority)
        for proxy in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"):
            monkeypatch.setenv(proxy, "http://127.0.0.1:9")
        monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
        monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")

    return use


def aks_connection(sim: RunningSim) -> dict:
    return {
        "aks": {
            "subscription_id": SUB,
            "resource_group": RG,
            "name": NAME,
            "credential": "environment",
            "arm_endpoint": sim.endpoints.arm,
            "ca_bundle": sim.endpoints.ca_bundle,
        }
    }


def maintenance_params(sim: RunningSim, cluster: dict) -> dict:
    return {**fast_params(sim, concurrency=1), "cluster": cluster}


def issued(sim: RunningSim) -> int:
    return sim.observer.tokens()["issued"].get(AKS_SERVER_APP, 0)


def test_a_rollout_longer_than_three_token_lifetimes_completes(start_sim, prefect_api, service_principal):
    sim = start_sim(entra_cluster())
    service_principal(sim)
    refused = httpx.get(
        f"{sim.endpoints.kube_api}/api/v1/nodes",
        headers={"Authorization": f"Bearer {sim.endpoints.token}"},
        verify=ssl.create_default_context(cafile=sim.endpoints.ca_bundle),
    )
    assert refused.status_code == 401  # local accounts are disabled: only Entra ID tokens open the API
    needed = needing_reboot(sim)
    since = len(sim.observer.audit())

    started = time.monotonic()
    state = node_maintenance(**maintenance_params(sim, aks_connection(sim)), return_state=True)
    lasted = time.monotonic() - started

    assert state.is_completed(), state.message
    report = state.result()
    assert {n.node: n.outcome for n in report.nodes if n.node in needed} == dict.fromkeys(
        needed, Outcome.rebooted
    )
    assert sim.observer.invariants()["reboots"] == dict.fromkeys(needed, 1)
    assert lasted > 3 * LIFETIME, f"the rollout lasted {lasted:.0f}s, not more than three token lifetimes"
    assert issued(sim) >= lasted / LIFETIME  # at least one token per lifetime the run lasted
    assert not [e for e in sim.observer.audit(since) if e.get("status") == 401]


def test_without_renewal_the_same_rollout_fails_with_401(start_sim, prefect_api, service_principal, tmp_path):
    """The token fetched once, as a kubeconfig with a fixed token: the run cannot outlive it."""
    sim = start_sim(entra_cluster())
    service_principal(sim)
    credential = ClientSecretCredential(
        sim.endpoints.tenant_id,
        sim.endpoints.client_id,
        sim.endpoints.client_secret,
        authority=sim.endpoints.authority,
        connection_verify=sim.endpoints.ca_bundle,
        disable_instance_discovery=True,
    )
    config = yaml.safe_load(Path(sim.kubeconfig).read_text())
    config["users"][0]["user"] = {"token": credential.get_token(f"{AKS_SERVER_APP}/.default").token}
    kubeconfig = tmp_path / "fixed-token.kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(config))

    state = node_maintenance(**maintenance_params(sim, {"kubeconfig": str(kubeconfig)}), return_state=True)

    refusals = [e for e in sim.observer.audit() if e.get("status") == 401]
    assert refusals, "no request was refused: the run ended before its token expired"
    report = state.result(raise_on_failure=False) if state.is_completed() else None
    assert not state.is_completed() or any(n.outcome == Outcome.failed for n in report.nodes)
    text = state.message + ("".join(n.reason for n in report.nodes) if report else "")
    assert "401" in text, text
