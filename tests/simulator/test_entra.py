"""The Entra ID side of a simulated AKS with AAD integration, as the real azure-identity and kubernetes
clients meet it: the token service, the audiences the Kubernetes API and ARM take, local accounts, and
the kubelogin kubeconfig listClusterUserCredential returns."""

from __future__ import annotations

import base64
import json
import ssl
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest
import yaml
from azure.core.exceptions import ClientAuthenticationError
from azure.identity import ClientSecretCredential

from aksmaint.azure import AKS_SERVER_APP, AksCluster, fetch_kubeconfig, management_client
from aksmaint.errors import ClusterAccessError
from aksmaint.kube import connect
from aksmaint.params import ClusterConnection
from simulator.scenario import ScenarioError, parse_scenario
from tests.support import RunningSim, scenario_dict

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
SUB, RG, NAME = "00000000-0000-0000-0000-000000000000", "rg-demo", "aks-demo"


def entra(local_accounts: bool = True, lifetime: float = 3600) -> dict:
    scenario = scenario_dict("example")
    aad = {
        "tenant_id": TENANT,
        "token_lifetime_seconds": lifetime,
        "disable_local_accounts": not local_accounts,
    }
    return {**scenario, "time_scale": 1.0, "cluster": {**scenario["cluster"], "aad": aad}}


def credential(sim: RunningSim, secret: str | None = None) -> ClientSecretCredential:
    e = sim.endpoints
    return ClientSecretCredential(
        e.tenant_id,
        e.client_id,
        secret or e.client_secret,
        authority=e.authority,
        connection_verify=e.ca_bundle,
        disable_instance_discovery=True,
    )


def aks_of(sim: RunningSim, credential: str = "default") -> AksCluster:
    e = sim.endpoints
    return AksCluster(
        subscription_id=SUB,
        resource_group=RG,
        name=NAME,
        credential=credential,
        arm_endpoint=e.arm,
        ca_bundle=e.ca_bundle,
    )


def get(sim: RunningSim, path: str, token: str) -> httpx.Response:
    return httpx.get(
        sim.endpoints.kube_api + path,
        headers={"Authorization": f"Bearer {token}"},
        verify=ssl.create_default_context(cafile=sim.endpoints.ca_bundle),
    )


def claims(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def test_the_ready_line_names_the_authority_and_the_service_principal(start_sim):
    sim = start_sim(entra())
    line = json.loads(sim.endpoints.ready_line())
    assert line["authority"] == sim.endpoints.kube_api
    assert line["tenant_id"] == TENANT
    assert line["client_id"] and line["client_secret"]
    plain = start_sim("example")
    assert "authority" not in json.loads(plain.endpoints.ready_line())


def test_azure_identity_gets_jwt_tokens_for_the_scope_it_asks(start_sim):
    sim = start_sim(entra(lifetime=600))
    token = credential(sim).get_token(f"{AKS_SERVER_APP}/.default")
    body = claims(token.token)
    assert body["aud"] == AKS_SERVER_APP
    assert body["tid"] == TENANT
    assert body["exp"] - time.time() == pytest.approx(600, abs=2)
    assert token.expires_on == pytest.approx(body["exp"], abs=2)
    assert sim.observer.tokens()["issued"] == {AKS_SERVER_APP: 1}


def test_a_wrong_secret_or_scope_is_refused_as_entra_refuses_it(start_sim):
    sim = start_sim(entra())
    with pytest.raises(ClientAuthenticationError, match="AADSTS7000215"):
        credential(sim, secret="not-the-secret").get_token(f"{AKS_SERVER_APP}/.default")
    token_url = f"{sim.endpoints.authority}/{TENANT}/oauth2/v2.0/token"
    form = {"grant_type": "client_credentials", "client_id": sim.endpoints.client_id}
    verify = ssl.create_default_context(cafile=sim.endpoints.ca_bundle)
    answer = httpx.post(
        token_url,
        data={**form, "client_secret": sim.endpoints.client_secret, "scope": "openid"},
        verify=verify,
    )
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_scope"
    other = httpx.post(
        token_url.replace(TENANT, "11111111-1111-1111-1111-111111111111"), data=form, verify=verify
    )
    assert other.status_code == 400 and "AADSTS90002" in other.json()["error_description"]
    assert sim.observer.tokens()["issued"] == {}


def test_the_kubernetes_api_takes_only_unexpired_tokens_for_the_aks_server(start_sim):
    sim = start_sim(entra(lifetime=2))
    cred = credential(sim)
    aks = cred.get_token(f"{AKS_SERVER_APP}/.default").token
    arm = cred.get_token(f"{sim.endpoints.arm}/.default").token
    assert get(sim, "/api/v1/nodes", aks).status_code == 200
    assert get(sim, "/api/v1/nodes", arm).status_code == 401  # another audience
    assert get(sim, "/api/v1/nodes", aks[:-4] + "AAAA").status_code == 401  # not signed by the service
    time.sleep(2.5)
    assert get(sim, "/api/v1/nodes", aks).status_code == 401  # expired


@pytest.mark.parametrize("local_accounts", [True, False])
def test_local_accounts_decide_the_static_token_but_never_the_observation_endpoints(
    start_sim, local_accounts
):
    sim = start_sim(entra(local_accounts=local_accounts))
    token = sim.endpoints.token
    assert get(sim, "/api/v1/nodes", token).status_code == (200 if local_accounts else 401)
    assert get(sim, "/_sim/invariants", token).status_code == 200


def test_arm_takes_tokens_for_its_own_audience_only(start_sim):
    sim = start_sim(entra(local_accounts=False))
    cred = credential(sim)
    path = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.ContainerService/managedClusters/{NAME}"
    url = f"{sim.endpoints.arm}{path}?api-version=2024-09-01"
    verify = ssl.create_default_context(cafile=sim.endpoints.ca_bundle)
    aks = cred.get_token(f"{AKS_SERVER_APP}/.default").token
    refused = httpx.get(url, headers={"Authorization": f"Bearer {aks}"}, verify=verify)
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "InvalidAuthenticationTokenAudience"
    client = management_client(aks_of(sim), credential=cred)
    cluster = client.managed_clusters.get(RG, NAME)
    assert cluster.aad_profile.managed and cluster.aad_profile.tenant_id == TENANT
    assert cluster.disable_local_accounts is True


def test_the_user_kubeconfig_runs_kubelogin_for_the_aks_server(start_sim):
    sim = start_sim(entra())
    client = management_client(aks_of(sim), credential=credential(sim))
    kubeconfig = yaml.safe_load(
        client.managed_clusters.list_cluster_user_credentials(RG, NAME).kubeconfigs[0].value
    )
    user = kubeconfig["users"][0]["user"]
    assert user["exec"]["command"] == "kubelogin"
    args = user["exec"]["args"]
    assert args[0] == "get-token"
    assert args[args.index("--server-id") + 1] == AKS_SERVER_APP
    assert args[args.index("--tenant-id") + 1] == TENANT


def test_fetch_kubeconfig_needs_no_kubelogin_and_reaches_the_api(start_sim, monkeypatch, tmp_path):
    sim = start_sim(entra(local_accounts=False))
    e = sim.endpoints
    for name, value in {
        "AZURE_TENANT_ID": e.tenant_id,
        "AZURE_CLIENT_ID": e.client_id,
        "AZURE_CLIENT_SECRET": e.client_secret,
        "AZURE_AUTHORITY_HOST": e.authority,
    }.items():
        monkeypatch.setenv(name, value)
    aks = aks_of(sim, credential="environment")
    fetched = fetch_kubeconfig(aks, folder=str(tmp_path))
    assert "exec" not in fetched.path.read_text() and fetched.tokens is not None
    assert fetched.tokens.scope == f"{AKS_SERVER_APP}/.default"
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "temp"))
    (tmp_path / "temp").mkdir()
    kube = connect(ClusterConnection(aks=aks))
    assert len(kube.call(kube.core.list_node).items) == 5
    # the kubeconfig AKS gave (its server, CA and user) is not left on disk once the client is built (the
    # kubernetes client keeps its own copy of the CA in a temporary file, which it deletes at exit)
    assert [p.name for p in (tmp_path / "temp").iterdir() if p.name.startswith("aks-kubeconfig-")] == []

    monkeypatch.setenv("AZURE_CLIENT_SECRET", "wrong")
    with pytest.raises(ClusterAccessError, match="AADSTS7000215"):
        connect(ClusterConnection(aks=aks))


EXEC_PLUGIN = """
import json, sys, ssl, urllib.parse, urllib.request
authority, tenant, client_id, secret, ca = sys.argv[1:6]
form = urllib.parse.urlencode({"grant_type": "client_credentials", "client_id": client_id,
    "client_secret": secret, "scope": "6dae42f8-4368-4678-94ff-3960e28e3630/.default"}).encode()
context = ssl.create_default_context(cafile=ca)
answer = json.load(urllib.request.urlopen(f"{authority}/{tenant}/oauth2/v2.0/token", form, context=context))
import datetime
expiry = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=answer["expires_in"])
print(json.dumps({"apiVersion": "client.authentication.k8s.io/v1beta1", "kind": "ExecCredential",
    "status": {"token": answer["access_token"], "expirationTimestamp": expiry.strftime("%Y-%m-%dT%H:%M:%SZ")}}))
"""


def test_a_kubeconfig_with_an_exec_user_renews_through_the_kubernetes_client(start_sim, tmp_path):
    sim = start_sim(entra(local_accounts=False, lifetime=2))
    e = sim.endpoints
    plugin = tmp_path / "get-token.py"
    plugin.write_text(EXEC_PLUGIN)
    config = yaml.safe_load(Path(e.kubeconfig).read_text())
    config["users"][0]["user"] = {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1beta1",
            "command": sys.executable,
            "args": [str(plugin), e.authority, e.tenant_id, e.client_id, e.client_secret, e.ca_bundle],
            "interactiveMode": "Never",
        }
    }
    path = tmp_path / "exec.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    kube = connect(ClusterConnection(kubeconfig=str(path)))
    assert kube.call(kube.core.list_node).items
    first = sim.observer.tokens()["issued"][AKS_SERVER_APP]
    time.sleep(2.5)  # the first token has expired
    assert kube.call(kube.core.list_node).items
    assert sim.observer.tokens()["issued"][AKS_SERVER_APP] > first


def test_the_scenario_checks_the_tenant_id():
    scenario = entra()
    scenario["cluster"]["aad"]["tenant_id"] = "contoso"
    with pytest.raises(ScenarioError, match="cluster.aad.tenant_id"):
        parse_scenario(scenario)
