"""Service-account tokens of a simulated cluster, as the real kubernetes client and an OIDC relying party
meet them: the API takes them as the service account's user, refuses expired ones, and the issuer's
public documents verify them."""

from __future__ import annotations

import ssl
import time

import httpx
import jwt
import pytest
from azure.core.credentials import AccessToken
from azure.mgmt.containerservice import ContainerServiceClient
from kubernetes import client
from kubernetes.client.rest import ApiException

from simulator.controllers.common import NODES
from simulator.entra import TokenProblem
from simulator.service_accounts import ServiceAccountIssuer
from tests.support import RunningSim, scenario_dict


def issuer_of(sim: RunningSim) -> ServiceAccountIssuer:
    return sim.sim.cluster.service_accounts


def core_with_token(sim: RunningSim, token: str) -> client.CoreV1Api:
    configuration = client.Configuration()
    configuration.host = sim.endpoints.kube_api
    configuration.ssl_ca_cert = sim.endpoints.ca_bundle
    configuration.api_key = {"authorization": token}
    configuration.api_key_prefix = {"authorization": "Bearer"}
    return client.CoreV1Api(client.ApiClient(configuration))


def public_get(sim: RunningSim, url: str) -> httpx.Response:
    return httpx.get(url, verify=ssl.create_default_context(cafile=sim.endpoints.ca_bundle))


def test_a_service_account_token_opens_the_api_as_that_service_account(start_sim):
    sim = start_sim("example")
    issuer = issuer_of(sim)
    assert issuer.issuer == sim.endpoints.kube_api
    token = issuer.issue("shop", "web", [issuer.issuer], 600)
    nodes = core_with_token(sim, token).list_node().items
    assert len(nodes) == 5
    users = {e["user"] for e in sim.observer.audit() if e["path"] == "/api/v1/nodes"}
    assert users == {"system:serviceaccount:shop:web"}


def test_the_audit_log_names_the_static_token_user(start_sim):
    sim = start_sim("example")
    core_with_token(sim, sim.endpoints.token).list_namespace()
    entry = next(e for e in sim.observer.audit() if e["path"] == "/api/v1/namespaces")
    assert entry["user"] == "clusterAdmin"


def test_expired_or_foreign_tokens_get_401(start_sim):
    sim = start_sim("example")
    issuer = issuer_of(sim)
    short = issuer.issue("shop", "web", [issuer.issuer], 2)  # whole seconds: valid for 1 to 2 s
    other_audience = issuer.issue("shop", "web", ["api://AzureADTokenExchange"], 600)
    foreign = ServiceAccountIssuer(issuer.issuer).issue("shop", "web", [issuer.issuer], 600)
    for token in (other_audience, foreign):
        with pytest.raises(ApiException) as refused:
            core_with_token(sim, token).list_node()
        assert refused.value.status == 401
    assert core_with_token(sim, short).list_node().items
    time.sleep(2.05)
    with pytest.raises(ApiException) as expired:
        core_with_token(sim, short).list_node()
    assert expired.value.status == 401
    refused_entries = [e for e in sim.observer.audit() if e["status"] == 401]
    assert len(refused_entries) == 3 and all(e["user"] is None for e in refused_entries)


def test_tokens_are_shaped_like_bound_service_account_tokens(start_sim):
    sim = start_sim("example")
    issuer = issuer_of(sim)
    node = sim.sim.node_names()[0]
    node_uid = sim.sim.call(lambda: sim.sim.cluster.store.get(NODES, "", node)["metadata"]["uid"])
    # the node's uid is read from the store, which belongs to the simulator's loop
    token = sim.sim.call(
        issuer.issue, "shop", "web", ["api://AzureADTokenExchange"], 3600, "web-1", "pod-uid-1", node
    )
    assert jwt.get_unverified_header(token) == {"alg": "RS256", "kid": issuer.key_id, "typ": "JWT"}
    claims = issuer.verify(token, "api://AzureADTokenExchange")
    assert isinstance(claims, dict)
    assert claims["sub"] == "system:serviceaccount:shop:web"
    assert claims["aud"] == ["api://AzureADTokenExchange"]
    assert claims["exp"] - claims["iat"] == 3600 and claims["nbf"] == claims["iat"]
    bound = claims["kubernetes.io"]
    assert bound["namespace"] == "shop"
    assert bound["serviceaccount"] == {"name": "web", "uid": issuer.service_account_uid("shop", "web")}
    assert bound["pod"] == {"name": "web-1", "uid": "pod-uid-1"}
    assert bound["node"] == {"name": node, "uid": node_uid}
    assert issuer.verify(token, "another") is TokenProblem.audience


def test_the_issuer_documents_are_public_and_verify_a_token(start_sim):
    sim = start_sim("example")
    issuer = issuer_of(sim)
    discovery = public_get(sim, f"{issuer.issuer}/.well-known/openid-configuration")
    assert discovery.status_code == 200
    doc = discovery.json()
    assert doc == {
        "issuer": issuer.issuer,
        "jwks_uri": f"{issuer.issuer}/openid/v1/jwks",
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
    }
    jwks = public_get(sim, doc["jwks_uri"])
    assert jwks.status_code == 200
    token = issuer.issue("default", "builder", ["api://AzureADTokenExchange"], 600)
    key = jwt.PyJWKSet.from_dict(jwks.json())[jwt.get_unverified_header(token)["kid"]]
    claims = jwt.decode(token, key.key, algorithms=["RS256"], audience="api://AzureADTokenExchange")
    assert claims["iss"] == issuer.issuer
    anonymous = [e for e in sim.observer.audit() if e["user"] == "system:anonymous"]
    assert [e["path"] for e in anonymous] == ["/.well-known/openid-configuration", "/openid/v1/jwks"]


def test_a_named_issuer_is_served_under_its_own_path(start_sim):
    scenario = scenario_dict("example")
    named = "https://127.0.0.1/oidc/7f1c/"
    scenario["cluster"]["oidc_issuer"] = {"issuer_url": named}
    sim = start_sim(scenario)
    issuer = issuer_of(sim)
    assert issuer.issuer == named
    served = public_get(sim, f"{sim.endpoints.kube_api}/oidc/7f1c/.well-known/openid-configuration")
    assert served.json()["issuer"] == named
    assert served.json()["jwks_uri"] == "https://127.0.0.1/oidc/7f1c/openid/v1/jwks"
    assert public_get(sim, f"{sim.endpoints.kube_api}/oidc/7f1c/openid/v1/jwks").json() == issuer.jwks()
    # the API server's audiences are the issuer and its own URL
    for audience in (named, sim.endpoints.kube_api):
        assert core_with_token(sim, issuer.issue("a", "b", [audience], 60)).list_node().items


class StaticToken:
    """The simulator's own token as an Azure credential (ARM takes it too)."""

    def __init__(self, token: str):
        self.token = token

    def get_token(self, *scopes: str, **kwargs: object) -> AccessToken:
        return AccessToken(self.token, int(time.time()) + 3600)


def managed_cluster(sim: RunningSim):
    arm = ContainerServiceClient(
        StaticToken(sim.endpoints.token),
        "00000000-0000-0000-0000-000000000000",
        base_url=sim.endpoints.arm,
        connection_verify=sim.endpoints.ca_bundle,
        retry_total=0,
    )
    return arm.managed_clusters.get("rg-demo", "aks-demo")


def test_arm_shows_the_oidc_issuer_and_workload_identity_when_the_scenario_enables_them(start_sim):
    plain = managed_cluster(start_sim("example"))
    assert plain.oidc_issuer_profile.enabled is False and plain.oidc_issuer_profile.issuer_url is None
    assert plain.security_profile is None
    scenario = scenario_dict("example")
    tenant = "72f988bf-86f1-41af-91ab-2d7cd011db47"
    scenario["cluster"] |= {"oidc_issuer": {"enabled": True}, "workload_identity": {"tenant_id": tenant}}
    sim = start_sim(scenario)
    cluster = managed_cluster(sim)
    assert cluster.oidc_issuer_profile.enabled is True
    assert cluster.oidc_issuer_profile.issuer_url == issuer_of(sim).issuer == sim.endpoints.kube_api
    assert cluster.security_profile.workload_identity.enabled is True
