"""Scenario models for identity: Entra ID integration, its applications with federated credentials,
and the cluster's OIDC issuer. ``simulator.scenario`` re-exports them; see it for the file format."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

GUID_PATTERN = r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$"
Guid = Annotated[str, Field(pattern=GUID_PATTERN)]
HttpsUrl = Annotated[str, Field(pattern=r"^https://[^\s/?#]+(/[^\s?#]*)?$")]
# the audience Entra ID recommends for federated credentials, and the one AKS's webhook projects
TOKEN_EXCHANGE_AUDIENCE = "api://AzureADTokenExchange"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FederatedCredentialSpec(_Strict):
    """An application's federated identity credential: it trusts tokens from ``issuer`` about
    ``subject`` for ``audiences``. Entra ID matches all three exactly."""

    name: str = Field(pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_-]{2,119}$")
    issuer: HttpsUrl
    subject: str = Field(min_length=1, max_length=600)
    audiences: list[str] = Field(
        default_factory=lambda: [TOKEN_EXCHANGE_AUDIENCE], min_length=1, max_length=1
    )


class ApplicationSpec(_Strict):
    """An app registration (or user-assigned managed identity) a workload signs in as. Its tokens carry
    ``object_id`` as ``oid`` (the client id when not given)."""

    client_id: Guid
    name: str = Field(min_length=1, max_length=120)
    object_id: Guid | None = None
    federated_credentials: list[FederatedCredentialSpec] = Field(default_factory=list, max_length=20)

    @field_validator("federated_credentials")
    @classmethod
    def _unique(cls, value: list[FederatedCredentialSpec]) -> list[FederatedCredentialSpec]:
        names = [c.name for c in value]
        if len(set(names)) != len(names):
            raise ValueError("federated credential names must be unique within an application")
        pairs = [(c.issuer, c.subject) for c in value]
        if len(set(pairs)) != len(pairs):
            raise ValueError("two federated credentials have the same issuer and subject")
        return value


class AadSpec(_Strict):
    """Entra ID (AAD) integration: a token service, and a Kubernetes API that takes its tokens.

    ``token_lifetime_seconds`` is simulated time, like every duration here; a token's ``exp`` is in real
    time (the clients compare it with their own clock). ``applications`` sign in with federated
    credentials; ``trusted_ca_bundle`` names a PEM file of extra CAs to trust when fetching an issuer's
    documents (the simulator's own CA is always trusted).
    """

    enabled: bool = True
    tenant_id: Guid
    token_lifetime_seconds: float = Field(default=3600, gt=0)
    # AKS's disableLocalAccounts: the static (local) token no longer opens the Kubernetes API
    disable_local_accounts: bool = False
    applications: list[ApplicationSpec] = Field(default_factory=list)
    trusted_ca_bundle: str | None = None

    @field_validator("applications")
    @classmethod
    def _unique_clients(cls, value: list[ApplicationSpec]) -> list[ApplicationSpec]:
        ids = [a.client_id.lower() for a in value]
        if len(set(ids)) != len(ids):
            raise ValueError("two applications have the same client_id")
        return value


class OidcIssuerSpec(_Strict):
    """AKS's OIDC issuer (``oidcIssuerProfile``). The issuer URL defaults to the simulator's own base
    URL; a scenario may name another, served under its path on the same server."""

    enabled: bool = True
    issuer_url: HttpsUrl | None = None
