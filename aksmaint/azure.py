"""Reaching AKS through Azure Resource Manager: credentials, the management client, and kubeconfigs.

The ARM endpoint, CA bundle and credential are configuration, so the same code reaches the public
cloud, a sovereign cloud or any endpoint that speaks the same API. For clusters with Entra ID (AAD) integration, the Kubernetes API gets a token for the
AKS server application from azure-identity, so no kubelogin binary is needed.
"""

from __future__ import annotations

import base64
import os
import tempfile
import time
from enum import StrEnum
from pathlib import Path

import yaml
from azure.core.credentials import AccessToken, TokenCredential
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ServiceRequestError
from azure.mgmt.containerservice import ContainerServiceClient
from pydantic import BaseModel, ConfigDict, Field

from aksmaint.errors import ClusterAccessError

AKS_SERVER_SCOPE = "6dae42f8-4368-4678-94ff-3960e28e3630/.default"
PUBLIC_ARM = "https://management.azure.com"
TOKEN_ENV = "AZURE_ACCESS_TOKEN"


class CredentialKind(StrEnum):
    default = "default"
    workload_identity = "workload-identity"
    managed_identity = "managed-identity"
    azure_cli = "azure-cli"
    environment = "environment"
    static_token = "static-token"


class AksCluster(BaseModel):
    """An AKS cluster by its Azure resource id parts, and how to reach Azure Resource Manager."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    subscription_id: str = Field(min_length=1, description="Azure subscription id of the cluster.")
    resource_group: str = Field(min_length=1, description="Resource group of the cluster.")
    name: str = Field(min_length=1, description="Name of the AKS cluster.")
    credential: CredentialKind = Field(
        CredentialKind.default,
        description="How to authenticate: default (DefaultAzureCredential), workload-identity, "
        "managed-identity, azure-cli, environment (service principal from AZURE_* variables), "
        "or static-token (a bearer token from AZURE_ACCESS_TOKEN).",
    )
    client_id: str | None = Field(None, description="Client id of a user-assigned managed identity.")
    arm_endpoint: str = Field(
        PUBLIC_ARM, pattern=r"^https://", description="Azure Resource Manager endpoint (HTTPS only)."
    )
    ca_bundle: str | None = Field(
        None, description="CA bundle file to verify ARM with (default: system CAs)."
    )

    def resource_id(self) -> str:
        return (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}/providers/"
            f"Microsoft.ContainerService/managedClusters/{self.name}"
        )


class StaticTokenCredential:
    """A bearer token obtained elsewhere and passed in the environment."""

    def __init__(self, variable: str = TOKEN_ENV):
        token = os.environ.get(variable)
        if not token:
            raise ClusterAccessError(f"credential static-token needs the environment variable {variable}")
        self._token = token

    def get_token(self, *scopes: str, **kwargs: object) -> AccessToken:
        return AccessToken(self._token, int(time.time()) + 3600)


def make_credential(kind: CredentialKind, client_id: str | None = None) -> TokenCredential:
    from azure import identity

    if kind == CredentialKind.static_token:
        return StaticTokenCredential()
    if kind == CredentialKind.workload_identity:
        return (
            identity.WorkloadIdentityCredential(client_id=client_id)
            if client_id
            else identity.WorkloadIdentityCredential()
        )
    if kind == CredentialKind.managed_identity:
        return identity.ManagedIdentityCredential(client_id=client_id)
    if kind == CredentialKind.azure_cli:
        return identity.AzureCliCredential()
    if kind == CredentialKind.environment:
        return identity.EnvironmentCredential()
    return identity.DefaultAzureCredential(managed_identity_client_id=client_id)


def management_client(cluster: AksCluster, polling_interval: float = 30) -> ContainerServiceClient:
    kwargs: dict = {"base_url": cluster.arm_endpoint, "polling_interval": polling_interval, "retry_total": 4}
    if cluster.ca_bundle:
        kwargs["connection_verify"] = cluster.ca_bundle
    if cluster.arm_endpoint != PUBLIC_ARM:
        kwargs["credential_scopes"] = [cluster.arm_endpoint.rstrip("/") + "/.default"]
    return ContainerServiceClient(
        make_credential(cluster.credential, cluster.client_id), cluster.subscription_id, **kwargs
    )


def describe_azure_error(exc: Exception) -> str:
    if isinstance(exc, HttpResponseError):
        code = getattr(exc.error, "code", None) if exc.error else None
        message = getattr(exc.error, "message", None) if exc.error else None
        return f"HTTP {exc.status_code} {code or ''}: {message or exc.message}".strip()
    return f"{type(exc).__name__}: {exc}"


def fetch_kubeconfig(cluster: AksCluster, folder: str | None = None) -> Path:
    """The cluster-user kubeconfig from listClusterUserCredential, written to a private file.

    When the kubeconfig authenticates through kubelogin (Entra ID clusters), its user is replaced by a
    token for the AKS server application from the same Azure credential.
    """
    client = management_client(cluster)
    try:
        result = client.managed_clusters.list_cluster_user_credentials(cluster.resource_group, cluster.name)
    except (HttpResponseError, ServiceRequestError, ClientAuthenticationError) as exc:
        raise ClusterAccessError(
            f"cannot get the kubeconfig of AKS cluster {cluster.name}: {describe_azure_error(exc)}"
        ) from exc
    if not result.kubeconfigs:
        raise ClusterAccessError(f"AKS returned no kubeconfig for {cluster.name}")
    raw = result.kubeconfigs[0].value
    text = raw.decode() if isinstance(raw, bytes) else base64.b64decode(raw).decode()
    config = yaml.safe_load(text)
    for user in config.get("users", []):
        spec = user.get("user", {})
        if "exec" in spec:
            token = make_credential(cluster.credential, cluster.client_id).get_token(AKS_SERVER_SCOPE).token
            user["user"] = {"token": token}
    folder = folder or tempfile.mkdtemp(prefix="aks-kubeconfig-")
    path = Path(folder) / f"{cluster.name}.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path
