"""Scenario files: the YAML that describes a simulated AKS cluster.

Every duration is in seconds of simulated time; ``time_scale`` multiplies them all when the
simulator runs (0.1 runs ten times faster than written). Validation is strict: an unknown or
badly typed field is an error that names the field, and nothing starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

Version = Annotated[str, Field(pattern=r"^\d+\.\d+\.\d+$")]


class ScenarioError(ValueError):
    """A scenario file that cannot be loaded; the message names the file and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ClusterSpec(_Strict):
    name: str = Field(pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_-]{0,62}$")
    subscription_id: str
    resource_group: str
    location: str
    kubernetes_version: Version
    available_versions: list[Version] = Field(default_factory=list)

    @field_validator("available_versions", mode="before")
    @classmethod
    def _versions_as_text(cls, value: object) -> object:
        # YAML reads 1.30 as a float; versions are always text here.
        return [str(v) for v in value] if isinstance(value, list) else value


class PoolSpec(_Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9]{0,11}$")
    mode: Literal["System", "User"] = "User"
    count: int = Field(ge=0, le=5000)
    zones: list[str] = Field(default_factory=list)
    orchestrator_version: Version
    node_image_version: str
    latest_node_image_version: str | None = None
    os_image: str = "Ubuntu 22.04.5 LTS"
    kernel: str
    container_runtime: str = "containerd://1.7.25-1"
    vm_size: str = "Standard_D4s_v5"
    max_pods: int = Field(default=110, ge=1, le=250)
    boot_seconds: float = Field(default=30, ge=0)


class NodeRef(_Strict):
    pool: str
    index: int = Field(ge=0)


class NodeSpec(NodeRef):
    """Host state of one node, by pool and 0-based index in name order."""

    reboot_required: bool = False
    pending_kernel: str | None = None
    upgradable_packages: int = Field(default=0, ge=0)
    # a kernel that applying the OS updates installs (the node then needs a reboot)
    available_kernel: str | None = None
    fail_after_reboot: bool = False
    cordoned: bool = False
    labels: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _pending_needs_reboot(self) -> NodeSpec:
        if self.pending_kernel and not self.reboot_required:
            raise ValueError("pending_kernel is set but reboot_required is false")
        return self


class PdbSpec(_Strict):
    min_available: int | str | None = None
    max_unavailable: int | str | None = None
    unhealthy_pod_eviction_policy: Literal["IfHealthyBudget", "AlwaysAllow"] | None = None

    @model_validator(mode="after")
    def _one_of(self) -> PdbSpec:
        if (self.min_available is None) == (self.max_unavailable is None):
            raise ValueError("set exactly one of min_available and max_unavailable")
        return self


class WorkloadSpec(_Strict):
    kind: Literal["Deployment", "DaemonSet", "Pod"]
    namespace: str = "default"
    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    replicas: int = Field(default=1, ge=0)
    labels: dict[str, str] = Field(default_factory=dict)
    pdb: PdbSpec | None = None
    ready_seconds: float = Field(default=1, ge=0)  # readiness probe delay, whole seconds (rounded up)
    termination_grace_seconds: int = Field(default=30, ge=0)
    image: str = "mcr.microsoft.com/azurelinux/base/nginx:1.25"
    node: NodeRef | None = None
    empty_dir: bool = False
    tolerations: list[dict] = Field(default_factory=list)

    @model_validator(mode="after")
    def _kind_fields(self) -> WorkloadSpec:
        if self.kind == "Pod" and self.pdb is not None and not self.labels:
            raise ValueError("a pdb needs labels to select the pods")
        if self.kind != "Pod" and self.node is not None:
            raise ValueError("node can only be set on a Pod")
        if self.kind != "Pod" and not self.labels:
            raise ValueError(f"a {self.kind} needs labels")
        return self


class FaultSpec(_Strict):
    api_error_rate: float = Field(default=0.0, ge=0, le=1)
    api_throttle_rate: float = Field(default=0.0, ge=0, le=1)
    api_latency_ms: float = Field(default=0.0, ge=0)


class Scenario(_Strict):
    time_scale: float = Field(default=1.0, gt=0, le=100)
    seed: int = 0
    cluster: ClusterSpec
    pools: list[PoolSpec] = Field(min_length=1)
    nodes: list[NodeSpec] = Field(default_factory=list)
    workloads: list[WorkloadSpec] = Field(default_factory=list)
    faults: FaultSpec = Field(default_factory=FaultSpec)

    @model_validator(mode="after")
    def _references(self) -> Scenario:
        pools = {p.name: p for p in self.pools}
        if len(pools) != len(self.pools):
            raise ValueError("pool names must be unique")
        for ref in [*self.nodes, *(w.node for w in self.workloads if w.node)]:
            pool = pools.get(ref.pool)
            if pool is None:
                raise ValueError(f"node reference names unknown pool {ref.pool!r}")
            if ref.index >= pool.count:
                raise ValueError(f"node index {ref.index} is outside pool {ref.pool!r} (count {pool.count})")
        seen = set()
        for w in self.workloads:
            key = (w.kind, w.namespace, w.name)
            if key in seen:
                raise ValueError(f"workload {w.kind} {w.namespace}/{w.name} is defined twice")
            seen.add(key)
        return self


def load_scenario(path: str | Path, time_scale: float | None = None) -> Scenario:
    """Read and validate a scenario file; raise ScenarioError naming the field on any problem."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read scenario: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{path}: not valid YAML: {exc}") from exc
    return parse_scenario(raw, source=str(path), time_scale=time_scale)


def parse_scenario(raw: object, source: str = "scenario", time_scale: float | None = None) -> Scenario:
    """Validate an already parsed scenario document."""
    if not isinstance(raw, dict):
        raise ScenarioError(f"{source}: a scenario must be a mapping, got {type(raw).__name__}")
    if time_scale is not None:
        raw = {**raw, "time_scale": time_scale}
    try:
        return Scenario.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "(top level)"
            problems.append(f"{where}: {err['msg']}")
        raise ScenarioError(f"{source}: invalid scenario:\n  " + "\n  ".join(problems)) from exc
