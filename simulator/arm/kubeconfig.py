"""The user kubeconfig ARM hands out (``listClusterUserCredential``): the local token, or on an Entra ID
cluster the kubelogin exec user AKS returns."""

from __future__ import annotations

import base64

import yaml

from simulator.entra import AKS_SERVER_APP, TokenService
from simulator.scenario import ClusterSpec

# the Azure CLI's public client, which AKS's kubeconfigs name for kubelogin's interactive logins
KUBELOGIN_CLIENT_ID = "80faf920-1908-4b52-b5ef-a8e7bedfc67a"


def user_kubeconfig(
    spec: ClusterSpec, kube_api: str, ca_pem: bytes, token: str, entra: TokenService | None
) -> dict:
    """The answer of ``listClusterUserCredential``: one kubeconfig for the API server at ``kube_api``."""
    user = f"clusterUser_{spec.resource_group}_{spec.name}"
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": spec.name,
        "preferences": {},
        "clusters": [
            {
                "name": spec.name,
                "cluster": {
                    "server": kube_api,
                    "certificate-authority-data": base64.b64encode(ca_pem).decode(),
                },
            }
        ],
        "contexts": [{"name": spec.name, "context": {"cluster": spec.name, "user": user}}],
        "users": [{"name": user, "user": _kubeconfig_user(token, entra)}],
    }
    text = yaml.safe_dump(config, sort_keys=False)
    return {"kubeconfigs": [{"name": "clusterUser", "value": base64.b64encode(text.encode()).decode()}]}


def _kubeconfig_user(token: str, entra: TokenService | None) -> dict:
    """The local token, or on an Entra ID cluster what AKS returns: a kubelogin exec user."""
    if entra is None:
        return {"token": token}
    return {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1beta1",
            "command": "kubelogin",
            "args": [
                "get-token",
                *("--environment", "AzurePublicCloud"),
                *("--server-id", AKS_SERVER_APP),
                *("--client-id", KUBELOGIN_CLIENT_ID),
                *("--tenant-id", entra.tenant_id),
                *("--login", "devicecode"),
            ],
            "env": None,
            "installHint": "\nkubelogin is not installed which is required to connect to AAD enabled "
            "cluster.\n\nTo learn more, please go to https://aka.ms/aks/kubelogin\n",
            "provideClusterInfo": False,
        }
    }
