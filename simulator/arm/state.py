"""What ARM knows about the simulated cluster: the managed cluster, its agent pools and operations.

The Kubernetes side (nodes, pods) lives in ``Cluster``; this is the resource-provider view on top of
it, rendered in the wire format of the containerservice API (camelCase, fields under ``properties``).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from simulator.scenario import ClusterSpec, MaintenanceConfigSpec, PoolSpec, UpgradeSettingsSpec

PROVIDER = "Microsoft.ContainerService"
TERMINAL = {"Succeeded", "Failed", "Canceled"}


def new_etag() -> str:
    return str(uuid.uuid4())


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def derived_kernel(kernel: str, image: str = "") -> str:
    """A newer kernel than ``kernel`` for a newer image, e.g. 5.15.0-1079-azure -> 5.15.0-1081-azure.

    A Windows kernel is the OS build, which the image version carries:
    AKSWindows-2022-containerd-20348.2762.241009 runs 10.0.20348.2762."""
    windows = re.fullmatch(r"10\.0\.\d+\.\d+", kernel)
    if windows:
        build = re.search(r"-(\d+)\.(\d+)\.\d+$", image)
        if build:
            return f"10.0.{build.group(1)}.{build.group(2)}"
        head, revision = kernel.rsplit(".", 1)
        return f"{head}.{int(revision) + 1}"
    match = re.fullmatch(r"(.*?-)(\d+)(-.*)?", kernel)
    if match is None:
        return kernel + "+1"
    return f"{match.group(1)}{int(match.group(2)) + 2}{match.group(3) or ''}"


@dataclass
class Operation:
    """One long-running operation, as its ``Azure-AsyncOperation`` URL reports it."""

    id: str
    kind: str  # what it does, e.g. UpgradeNodeImageVersion, UpgradeKubernetesVersion, Abort
    target: str  # the cluster or pool it works on
    status: str = "InProgress"
    started: str = field(default_factory=utc_now)
    ended: str | None = None
    error: dict | None = None
    percent: float = 0.0
    task: asyncio.Task | None = None

    @property
    def done(self) -> bool:
        return self.status in TERMINAL

    def finish(self, status: str, error: dict | None = None) -> None:
        self.status, self.error, self.ended = status, error, utc_now()
        if status == "Succeeded":
            self.percent = 100.0

    def status_body(self) -> dict:
        """The operation status body. AKS's recorded answers carry name, status and startTime, and
        endTime once the operation ended. A failed or canceled one also carries ARM's documented error."""
        body: dict[str, object] = {"name": self.id, "status": self.status, "startTime": self.started}
        if self.ended:
            body["endTime"] = self.ended
        if self.error:
            body["error"] = self.error
        return body


@dataclass
class PoolState:
    """An agent pool: desired and current versions, image, upgrade settings, provisioning state."""

    spec: PoolSpec  # how new nodes of the pool are built (versions, image, kernel)
    latest_image: str
    latest_kernel: str
    orchestrator_version: str  # as requested (may be a minor alias like "1.31")
    settings: dict  # upgradeSettings in wire form
    next_index: int  # VMSS instance ids continue from here
    provisioning_state: str = "Succeeded"
    etag: str = field(default_factory=new_etag)
    operation: Operation | None = None

    @classmethod
    def from_spec(cls, spec: PoolSpec) -> PoolState:
        latest = spec.latest_node_image_version or spec.node_image_version
        kernel = (
            spec.kernel
            if latest == spec.node_image_version
            else (spec.latest_node_image_kernel or derived_kernel(spec.kernel, latest))
        )
        return cls(
            spec=spec,
            latest_image=latest,
            latest_kernel=kernel,
            orchestrator_version=spec.orchestrator_version,
            settings=settings_wire(spec.upgrade_settings),
            next_index=spec.count,
        )

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def current_version(self) -> str:
        return self.spec.orchestrator_version

    @property
    def busy(self) -> bool:
        return self.operation is not None and not self.operation.done

    @property
    def running(self) -> Operation | None:
        """The operation in progress, or None when idle."""
        return self.operation if self.busy else None

    def properties(self) -> dict:
        spec = self.spec
        props = {
            "eTag": self.etag,
            "count": spec.count,
            "vmSize": spec.vm_size,
            "osDiskSizeGB": 128,
            "osDiskType": "Managed",
            "kubeletDiskType": "OS",
            "maxPods": spec.max_pods,
            "type": "VirtualMachineScaleSets",
            "enableAutoScaling": False,
            "scaleDownMode": "Delete",
            "provisioningState": self.provisioning_state,
            "powerState": {"code": "Running"},
            "orchestratorVersion": self.orchestrator_version,
            "currentOrchestratorVersion": spec.orchestrator_version,
            "enableNodePublicIP": False,
            "mode": spec.mode,
            "osType": spec.os_type,
            "osSKU": "Windows2022" if spec.windows else "Ubuntu",
            "nodeImageVersion": spec.node_image_version,
            "upgradeSettings": dict(self.settings),
            "enableFIPS": False,
            "securityProfile": {"sshAccess": "LocalUser"},
        }
        if spec.zones:
            props["availabilityZones"] = list(spec.zones)
        return props


def settings_wire(settings: UpgradeSettingsSpec) -> dict:
    return {
        "maxSurge": str(settings.max_surge),
        "maxUnavailable": str(settings.max_unavailable),
        "drainTimeoutInMinutes": settings.drain_timeout_minutes,
        "nodeSoakDurationInMinutes": settings.node_soak_minutes,
        "undrainableNodeBehavior": settings.undrainable_node_behavior,
    }


@dataclass
class ManagedClusterState:
    """The managed cluster resource."""

    spec: ClusterSpec
    kubernetes_version: str  # as requested
    current_version: str
    provisioning_state: str = "Succeeded"
    etag: str = field(default_factory=new_etag)
    operation: Operation | None = None
    resource_uid: str = field(default_factory=lambda: uuid.uuid4().hex[:24])
    issuer_url: str = ""  # the cluster's service-account issuer, shown when its OIDC issuer is enabled

    @property
    def id(self) -> str:
        s = self.spec
        return (
            f"/subscriptions/{s.subscription_id}/resourcegroups/{s.resource_group}/providers/{PROVIDER}/"
            f"managedClusters/{s.name}"
        )

    @property
    def busy(self) -> bool:
        return self.operation is not None and not self.operation.done

    @property
    def running(self) -> Operation | None:
        """The operation in progress, or None when idle."""
        return self.operation if self.busy else None

    def fqdn(self, kind: str = "hcp") -> str:
        s = self.spec
        digest = hashlib.sha256(f"{s.subscription_id}/{s.resource_group}/{s.name}".encode()).hexdigest()[:8]
        return f"{s.name}-dns-{digest}.{kind}.{s.location}.azmk8s.io"

    def _aad_profile(self) -> dict:
        aad = self.spec.aad
        if aad is None or not aad.enabled:
            return {}
        return {"aadProfile": {"managed": True, "enableAzureRBAC": False, "tenantID": aad.tenant_id}}

    def _identity_profiles(self) -> dict:
        """``oidcIssuerProfile`` (AKS shows ``enabled: false`` when off) and, with workload identity on,
        ``securityProfile.workloadIdentity``; the field names of azure-mgmt-containerservice's models."""
        oidc = self.spec.oidc_issuer
        profiles: dict = {"oidcIssuerProfile": {"enabled": False}}
        if oidc is not None and oidc.enabled:
            profiles["oidcIssuerProfile"] = {"enabled": True, "issuerURL": self.issuer_url}
        if self.spec.workload_identity is not None:
            profiles["securityProfile"] = {"workloadIdentity": {"enabled": True}}
        return profiles

    def render(self, pools: list[PoolState]) -> dict:
        s = self.spec
        return {
            "id": self.id,
            "location": s.location,
            "name": s.name,
            "type": f"{PROVIDER}/ManagedClusters",
            "eTag": self.etag,
            "sku": {"name": "Base", "tier": "Free"},
            "identity": {"type": "SystemAssigned"},
            "properties": {
                "provisioningState": self.provisioning_state,
                "powerState": {"code": "Running"},
                "maxAgentPools": 100,
                "kubernetesVersion": self.kubernetes_version,
                "currentKubernetesVersion": self.current_version,
                "dnsPrefix": f"{s.name}-dns",
                "fqdn": self.fqdn(),
                "azurePortalFQDN": self.fqdn("portal.hcp"),
                "agentPoolProfiles": [{"name": p.name, **p.properties()} for p in pools],
                "nodeResourceGroup": f"MC_{s.resource_group}_{s.name}_{s.location}",
                "enableRBAC": True,
                "supportPlan": "KubernetesOfficial",
                "disableLocalAccounts": bool(s.aad and s.aad.disable_local_accounts),
                **self._aad_profile(),
                **self._identity_profiles(),
                "networkProfile": {
                    "networkPlugin": "azure",
                    "networkPluginMode": "overlay",
                    "podCidr": "10.244.0.0/16",
                    "serviceCidr": "10.0.0.0/16",
                    "dnsServiceIP": "10.0.0.10",
                    "outboundType": "loadBalancer",
                    "loadBalancerSku": "standard",
                },
                "autoUpgradeProfile": {
                    "upgradeChannel": "none",
                    "nodeOSUpgradeChannel": s.node_os_upgrade_channel,
                },
                "resourceUID": self.resource_uid,
            },
        }

    def render_pool(self, pool: PoolState) -> dict:
        return {
            "id": f"{self.id}/agentPools/{pool.name}",
            "name": pool.name,
            "type": f"{PROVIDER}/managedClusters/agentPools",
            "properties": pool.properties(),
        }


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _wire(value: object) -> object:
    """Scenario models to ARM JSON: camelCase keys, ISO dates, no unset fields."""
    if hasattr(value, "model_dump"):
        value = value.model_dump(exclude_none=True)
    if isinstance(value, dict):
        return {_camel(k): _wire(v) for k, v in value.items() if v is not None and v != []}
    if isinstance(value, list):
        return [_wire(v) for v in value]
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if value.tzinfo else value.isoformat()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def render_maintenance_configuration(cluster_id: str, name: str, config: MaintenanceConfigSpec) -> dict:
    """As AKS answers it in azure-cli's recorded sessions: id, name and properties, no type."""
    return {
        "id": f"{cluster_id}/maintenanceConfigurations/{name}",
        "name": name,
        "properties": _wire(config),
    }
