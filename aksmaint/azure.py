"""Reaching AKS through Azure Resource Manager: credentials, the management client, and kubeconfigs.

The ARM endpoint, CA bundle and credential are configuration, so the same code reaches the public
cloud, a sovereign cloud or any endpoint that speaks the same API. For clusters with Entra ID (AAD)
integration, the Kubernetes API gets tokens for the AKS server application from azure-identity,
renewed before they expire, so no kubelogin binary is needed.
"""

from __future__ import annotations

import base64
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import yaml
from azure.core.credentials import AccessToken, TokenCredential
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
)
from azure.mgmt.containerservice import ContainerServiceClient
from kubernetes.client import Configuration
from pydantic import BaseModel, ConfigDict, Field

from aksmaint.errors import ClusterAccessError

AKS_SERVER_APP = "6dae42f8-4368-4678-94ff-3960e28e3630"  # the audience of AKS's Kubernetes API tokens
RENEW_BEFORE_EXPIRY = 300  # seconds: like azure-identity, a token is renewed in its last five minutes
PUBLIC_ARM = "https://management.azure.com"
TOKEN_ENV = "AZURE_ACCESS_TOKEN"
# azure.identity.AzureAuthorityHosts: Microsoft's instance discovery knows these
_WELL_KNOWN_AUTHORITY_HOSTS = {
    "login.microsoftonline.com",
    "login.microsoftonline.us",
    "login.chinacloudapi.cn",
}

log = logging.getLogger(__name__)


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
        None,
        description="CA bundle file to verify ARM (and, with the environment credential, the Entra "
        "ID authority) with (default: system CAs).",
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


def _custom_authority() -> bool:
    """AZURE_AUTHORITY_HOST names an authority Microsoft's instance discovery does not know (Azure Stack,
    a private cloud): azure-identity must not ask login.microsoftonline.com about it."""
    host = os.environ.get("AZURE_AUTHORITY_HOST", "")
    host = host.removeprefix("https://").split("/")[0].split(":")[0].lower()
    return bool(host) and host not in _WELL_KNOWN_AUTHORITY_HOSTS


def make_credential(
    kind: CredentialKind, client_id: str | None = None, ca_bundle: str | None = None
) -> TokenCredential:
    from azure import identity

    if kind == CredentialKind.static_token:
        return StaticTokenCredential()
    # the authority is verified with the same CA bundle as ARM; a custom one is not looked up at Microsoft
    options: dict = {"connection_verify": ca_bundle} if ca_bundle else {}
    if _custom_authority():
        options["disable_instance_discovery"] = True
    if kind == CredentialKind.workload_identity:
        # AKS's webhook sets AZURE_CLIENT_ID, AZURE_TENANT_ID, AZURE_FEDERATED_TOKEN_FILE, AZURE_AUTHORITY_HOST
        return identity.WorkloadIdentityCredential(
            **({"client_id": client_id} if client_id else {}), **options
        )
    if kind == CredentialKind.managed_identity:
        return identity.ManagedIdentityCredential(client_id=client_id)
    if kind == CredentialKind.azure_cli:
        return identity.AzureCliCredential()
    if kind == CredentialKind.environment:
        return identity.EnvironmentCredential(**options)
    return identity.DefaultAzureCredential(managed_identity_client_id=client_id)


class KubeTokenSource:
    """Bearer tokens for the Kubernetes API of an Entra ID cluster, renewed before they expire.

    Entra access tokens live 60 to 90 minutes and a rollout can take hours. Installed as the kubernetes
    client's refresh hook, the source puts an unexpired token on every request: it asks the credential
    for a new one in the last five minutes of the current one (or its second half, for short-lived
    tokens). When a renewal fails while the current token is still valid, the source keeps it and
    tries again at the next request; once it has expired, requests fail with a ClusterAccessError.
    """

    def __init__(
        self, credential: TokenCredential, scope: str, cluster: str, clock: Callable[[], float] = time.time
    ):
        self.credential = credential
        self.scope = scope
        self.cluster = cluster
        self.clock = clock
        self._token: AccessToken | None = None
        self._renew_at = 0.0
        self._lock = threading.Lock()

    def token(self) -> str:
        with self._lock:
            now = self.clock()
            if self._token is None or now >= self._renew_at:
                self._renew(now)
            assert self._token is not None
            return self._token.token

    def _renew(self, now: float) -> None:
        try:
            fresh = self.credential.get_token(self.scope)
        except AzureError as exc:
            if self._token is not None and now < self._token.expires_on:
                log.warning(
                    "renewing the Entra ID token for %s failed, the current one still serves: %s",
                    self.cluster,
                    describe_azure_error(exc),
                )
                return
            raise ClusterAccessError(
                f"cannot get an Entra ID token for the Kubernetes API of {self.cluster} "
                f"(scope {self.scope}): {describe_azure_error(exc)}"
            ) from exc
        self._token = fresh
        self._renew_at = fresh.expires_on - min(RENEW_BEFORE_EXPIRY, (fresh.expires_on - now) / 2)

    def install(self, configuration: Configuration) -> None:
        """Make every request of a kubernetes client configuration carry a current token."""

        def refresh(config: Configuration) -> None:
            config.api_key["authorization"] = f"Bearer {self.token()}"

        refresh(configuration)  # the first token now: a credential that cannot get one fails up front
        # the client declares the hook's attribute as None, though it calls whatever is set there
        configuration.refresh_api_key_hook = refresh  # type: ignore[assignment]


def credential_of(cluster: AksCluster) -> TokenCredential:
    return make_credential(cluster.credential, cluster.client_id, cluster.ca_bundle)


def management_client(
    cluster: AksCluster, polling_interval: float = 30, credential: TokenCredential | None = None
) -> ContainerServiceClient:
    kwargs: dict = {"base_url": cluster.arm_endpoint, "polling_interval": polling_interval, "retry_total": 4}
    if cluster.ca_bundle:
        kwargs["connection_verify"] = cluster.ca_bundle
    if cluster.arm_endpoint != PUBLIC_ARM:
        kwargs["credential_scopes"] = [cluster.arm_endpoint.rstrip("/") + "/.default"]
    return ContainerServiceClient(credential or credential_of(cluster), cluster.subscription_id, **kwargs)


def describe_azure_error(exc: Exception) -> str:
    if isinstance(exc, HttpResponseError):
        code = getattr(exc.error, "code", None) if exc.error else None
        message = getattr(exc.error, "message", None) if exc.error else None
        return f"HTTP {exc.status_code} {code or ''}: {message or exc.message}".strip()
    return f"{type(exc).__name__}: {exc}"


@dataclass
class AksKubeconfig:
    """The cluster-user kubeconfig of an AKS cluster, and for an Entra ID cluster its token source."""

    path: Path
    tokens: KubeTokenSource | None = None


def fetch_kubeconfig(cluster: AksCluster, folder: str | None = None) -> AksKubeconfig:
    """The cluster-user kubeconfig from listClusterUserCredential, written to a private file.

    An Entra ID cluster's kubeconfig authenticates through kubelogin (an exec user with ``--server-id``).
    No kubelogin is needed here: the user is left without credentials in the file, and the returned
    token source gets tokens for that server application from the same Azure credential, renewed for
    as long as the process runs.
    """
    credential = credential_of(cluster)
    client = management_client(cluster, credential=credential)
    try:
        result = client.managed_clusters.list_cluster_user_credentials(cluster.resource_group, cluster.name)
    except (HttpResponseError, ServiceRequestError, ClientAuthenticationError) as exc:
        raise ClusterAccessError(
            f"cannot get the kubeconfig of AKS cluster {cluster.name}: {describe_azure_error(exc)}"
        ) from exc
    if not result.kubeconfigs:
        raise ClusterAccessError(f"AKS returned no kubeconfig for {cluster.name}")
    raw: bytes | str | None = result.kubeconfigs[0].value  # bytes from this SDK, base64 text from others
    if raw is None:
        raise ClusterAccessError(f"AKS returned an empty kubeconfig for {cluster.name}")
    text = raw.decode() if isinstance(raw, bytes) else base64.b64decode(raw).decode()
    config = yaml.safe_load(text)
    tokens = None
    for user in config.get("users", []):
        spec = user.get("user") or {}
        if "exec" in spec:
            server_id = _server_id(spec["exec"].get("args") or [])
            tokens = KubeTokenSource(credential, f"{server_id}/.default", cluster.name)
            user["user"] = {}
    folder = folder or tempfile.mkdtemp(prefix="aks-kubeconfig-")
    path = Path(folder) / f"{cluster.name}.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return AksKubeconfig(path, tokens)


def _server_id(args: list[str]) -> str:
    """kubelogin's ``--server-id`` (the AKS server application unless the kubeconfig says otherwise)."""
    for flag, value in zip(args, args[1:], strict=False):
        if flag == "--server-id":
            return value
    return AKS_SERVER_APP
