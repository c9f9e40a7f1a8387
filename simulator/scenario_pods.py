"""Scenario models for pods that really run: AKS's workload identity webhook, which hands a pod what
it needs to sign in to Entra ID with its service account's token. ``simulator.scenario`` re-exports
them; ``ClusterSpec.runs_pods`` says which cluster runs its pods as local processes."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

GUID_PATTERN = r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$"
PUBLIC_AUTHORITY = "https://login.microsoftonline.com/"


class WorkloadIdentitySpec(BaseModel):
    """AKS's workload identity: the mutating webhook that injects ``AZURE_*`` variables and a projected
    token into pods labelled ``azure.workload.identity/use: "true"``.

    ``tenant_id`` is the tenant a service account without its own tenant annotation signs in to.
    ``authority_host`` is Entra ID's URL (``AZURE_AUTHORITY_HOST``); a test may point it at another
    simulator's token service.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    tenant_id: str = Field(pattern=GUID_PATTERN)
    authority_host: str = Field(default=PUBLIC_AUTHORITY, pattern=r"^https://")
