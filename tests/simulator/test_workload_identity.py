"""Workload identity across two simulated clusters, as the real azure-identity meets it: cluster A's
service-account tokens are the client assertions; cluster B's Entra ID trusts A's issuer through an
application's federated credential, checks the assertion against A's public JWKS, and issues ARM tokens
that B's ARM emulator takes. Refusals carry Entra's AADSTS codes."""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from azure.core.exceptions import ClientAuthenticationError
from azure.identity import WorkloadIdentityCredential

from aksmaint.azure import AksCluster, management_client
from simulator.runtime import SimulatedAKS
from simulator.scenario import ScenarioError, parse_scenario
from simulator.service_accounts import ServiceAccountIssuer
from tests.support import RunningSim, closed_port, scenario_dict

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
CLIENT_ID = "5f3c1a52-8a8e-4b7e-9a51-0c2f7d6e9b10"
OBJECT_ID = "0d9a2f4e-6b1c-4c8d-9e7f-1a2b3c4d5e6f"
SUB, RG, NAME = "00000000-0000-0000-0000-000000000000", "rg-demo", "aks-demo"
EXCHANGE = "api://AzureADTokenExchange"
NAMESPACE, ACCOUNT = "aksmaint", "flow-runner"


def entra_trusting(issuer: str, ca_bundle: str) -> dict:
    """The example cluster with Entra ID, whose one application trusts ``issuer`` for the flow's account."""
    scenario = scenario_dict("example")
    application = {
        "client_id": CLIENT_ID,
        "object_id": OBJECT_ID,
        "name": "aksmaint-flows",
        "federated_credentials": [
            {"name": "cluster-a", "issuer": issuer, "subject": f"system:serviceaccount:{NAMESPACE}:{ACCOUNT}"}
        ],
    }
    aad = {"tenant_id": TENANT, "applications": [application], "trusted_ca_bundle": ca_bundle}
    return {**scenario, "time_scale": 1.0, "cluster": {**scenario["cluster"], "aad": aad}}


@pytest.fixture(scope="module")
def clusters(tmp_path_factory) -> Iterator[tuple[RunningSim, RunningSim]]:
    """Cluster A (the issuer of the assertions) and cluster B (its Entra ID trusts A), each with its own CA."""
    folder = tmp_path_factory.mktemp("workload-identity")
    a = SimulatedAKS(parse_scenario(scenario_dict("example")), state_dir=folder / "a")
    a.start()
    b = None
    try:
        issuer = a.cluster.service_accounts.issuer
        b = SimulatedAKS(
            parse_scenario(entra_trusting(issuer, a.endpoints.ca_bundle)), state_dir=folder / "b"
        )
        b.start()
        yield RunningSim(a), RunningSim(b)
    finally:
        for sim in (b, a):
            if sim is not None:
                sim.stop()


def token_file(folder: Path, token: str) -> str:
    path = folder / "azure-identity-token"
    path.write_text(token)
    return str(path)


def credential(b: RunningSim, token_path: str, client_id: str = CLIENT_ID) -> WorkloadIdentityCredential:
    """What a pod with AKS's workload identity gets, pointed at B's Entra ID and trusting B's CA."""
    return WorkloadIdentityCredential(
        tenant_id=TENANT,
        client_id=client_id,
        token_file_path=token_path,
        authority=b.endpoints.authority,
        connection_verify=b.endpoints.ca_bundle,
    )


def assertion(a: RunningSim, account: str = ACCOUNT, audience: str = EXCHANGE, lifetime: float = 3600) -> str:
    return a.sim.cluster.service_accounts.issue(NAMESPACE, account, [audience], lifetime, "flow-pod", "uid-1")


def refusal(b: RunningSim, tmp_path: Path, token: str, client_id: str = CLIENT_ID) -> str:
    with pytest.raises(ClientAuthenticationError) as refused:
        credential(b, token_file(tmp_path, token), client_id).get_token(f"{b.endpoints.arm}/.default")
    return str(refused.value)


def test_a_service_account_token_of_cluster_a_opens_arm_of_cluster_b(clusters, tmp_path):
    a, b = clusters
    cred = credential(b, token_file(tmp_path, assertion(a)))
    token = cred.get_token(f"{b.endpoints.arm}/.default")
    assert token.expires_on > time.time() + 3000
    aks = AksCluster(
        subscription_id=SUB,
        resource_group=RG,
        name=NAME,
        arm_endpoint=b.endpoints.arm,
        ca_bundle=b.endpoints.ca_bundle,
    )
    cluster = management_client(aks, credential=cred).managed_clusters.get(RG, NAME)
    assert cluster.name == NAME
    users = {e["user"] for e in b.observer.audit() if e.get("api") == "arm" and e["status"] == 200}
    assert users == {OBJECT_ID}


def test_the_issuer_keys_are_fetched_once_and_reused(clusters, tmp_path):
    a, b = clusters
    keys = b.sim.sim.entra.issuer_keys
    credential(b, token_file(tmp_path, assertion(a))).get_token(f"{b.endpoints.arm}/.default")
    fetched = keys.fetches
    credential(b, token_file(tmp_path, assertion(a))).get_token(f"{b.endpoints.arm}/.default")
    assert keys.fetches == fetched >= 1


def test_a_wrong_subject_or_audience_finds_no_federated_record(clusters, tmp_path):
    a, b = clusters
    issuer = a.sim.cluster.service_accounts.issuer
    other_account = refusal(b, tmp_path, assertion(a, account="someone-else"))
    assert "AADSTS70021" in other_account
    assert (
        f"Assertion Issuer: '{issuer}'. Assertion Subject: 'system:serviceaccount:{NAMESPACE}:someone-else'. "
        f"Assertion Audience: '{EXCHANGE}'." in other_account
    )
    api_audience = refusal(b, tmp_path, assertion(a, audience=issuer))
    assert "AADSTS70021" in api_audience and f"Assertion Audience: '{issuer}'" in api_audience


def test_an_expired_assertion_is_out_of_its_time_range(clusters, tmp_path):
    a, b = clusters
    short = assertion(a, lifetime=1)
    time.sleep(1.2)
    message = refusal(b, tmp_path, short)
    assert "AADSTS700024: Client assertion is not within its valid time range." in message


def test_a_token_signed_by_another_key_is_refused(clusters, tmp_path):
    a, b = clusters
    impostor = ServiceAccountIssuer(a.sim.cluster.service_accounts.issuer)
    forged = impostor.issue(NAMESPACE, ACCOUNT, [EXCHANGE], 600)
    assert "AADSTS7000272" in refusal(b, tmp_path, forged)
    genuine = assertion(a)
    tampered = genuine[: genuine.rindex(".") + 1] + forged.rsplit(".", 1)[1]
    assert "AADSTS700027" in refusal(b, tmp_path, tampered)


def test_an_unknown_client_or_a_malformed_assertion_is_refused(clusters, tmp_path):
    a, b = clusters
    unknown = "11111111-2222-3333-4444-555555555555"
    assert "AADSTS700016" in refusal(b, tmp_path, assertion(a), client_id=unknown)
    answer = httpx.post(
        f"{b.endpoints.authority}/{TENANT}/oauth2/v2.0/token",
        data={
            "grant_type": "client_credentials",
            "client_id": CLIENT_ID,
            "scope": f"{b.endpoints.arm}/.default",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": "not-a-jwt",
        },
        verify=ssl.create_default_context(cafile=b.endpoints.ca_bundle),
    )
    assert answer.status_code == 400
    assert answer.json()["error_codes"] == [50027]


def test_an_issuer_nobody_serves_is_an_oidc_endpoint_failure(tmp_path):
    down = f"https://127.0.0.1:{closed_port()}/"
    scenario = entra_trusting(down, "")
    scenario["cluster"]["aad"].pop("trusted_ca_bundle")
    with SimulatedAKS(parse_scenario(scenario), state_dir=tmp_path / "b") as b:
        issuer = ServiceAccountIssuer(down)
        token = issuer.issue(NAMESPACE, ACCOUNT, [EXCHANGE], 600)
        message = refusal(RunningSim(b), tmp_path, token)
    assert "AADSTS50166: Request to External OIDC endpoint failed." in message


def test_the_scenario_checks_the_federated_credentials():
    scenario = entra_trusting("https://127.0.0.1:1/", "ca.pem")
    credentials = scenario["cluster"]["aad"]["applications"][0]["federated_credentials"]
    credentials.append({**credentials[0], "name": "again"})
    with pytest.raises(ScenarioError, match="same issuer and subject"):
        parse_scenario(scenario)
    credentials[1:] = [{"name": "plain-http", "issuer": "http://127.0.0.1:1", "subject": "x"}]
    with pytest.raises(ScenarioError, match=r"federated_credentials\.1\.issuer"):
        parse_scenario(scenario)
    credentials[1:] = [
        {"name": "two", "issuer": "https://a.example", "subject": "x", "audiences": ["a", "b"]}
    ]
    with pytest.raises(ScenarioError, match=r"federated_credentials\.1\.audiences"):
        parse_scenario(scenario)


def test_one_cluster_can_trust_its_own_issuer_without_blocking_its_loop(tmp_path):
    port = closed_port()
    own_issuer = f"https://127.0.0.1:{port}"
    scenario = entra_trusting(own_issuer, "")
    scenario["cluster"]["aad"].pop("trusted_ca_bundle")
    with SimulatedAKS(parse_scenario(scenario), port=port, state_dir=tmp_path / "self") as sim:
        one = RunningSim(sim)
        started = time.monotonic()
        token = credential(one, token_file(tmp_path, assertion(one))).get_token(
            f"{one.endpoints.arm}/.default"
        )
        assert token.token and time.monotonic() - started < 5  # a blocking fetch would wait out its timeout
