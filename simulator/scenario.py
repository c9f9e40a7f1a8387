"""Scenario files: the YAML that describes a simulated AKS cluster.

Every duration is in seconds of simulated time; ``time_scale`` multiplies them all when the
simulator runs (0.1 runs ten times faster than written). Validation is strict: an unknown or
badly typed field is an error that names the field, and nothing starts.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from simulator.scenario_identity import AadSpec, OidcIssuerSpec
from simulator.scenario_pods import WorkloadIdentitySpec

Version = Annotated[str, Field(pattern=r"^\d+\.\d+\.\d+$")]


class ScenarioError(ValueError):
    """A scenario file that cannot be loaded; the message names the file and the field."""


class _FieldError(ValueError):
    """A problem found by a validator that looks across fields, with the path of the field at fault."""

    def __init__(self, loc: tuple[str | int, ...], message: str):
        super().__init__(message)
        self.loc = loc


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class UpgradeSettingsSpec(_Strict):
    """How AKS upgrades the pool (the agent pool's ``upgradeSettings``); AKS's defaults."""

    max_surge: int | str = "10%"  # nodes or a percentage of the pool, rounded up
    max_unavailable: int | str = 0
    drain_timeout_minutes: int = Field(default=30, ge=1, le=1440)
    node_soak_minutes: int = Field(default=0, ge=0, le=30)
    undrainable_node_behavior: Literal["Schedule", "Cordon"] = "Schedule"

    @field_validator("max_surge", "max_unavailable")
    @classmethod
    def _count_or_percent(cls, value: int | str) -> int | str:
        if isinstance(value, int):
            if value < 0:
                raise ValueError("must not be negative")
            return value
        if not re.fullmatch(r"\d+%?", value) or (value.endswith("%") and int(value[:-1]) > 100):
            raise ValueError(f"{value!r} is neither a node count nor a percentage like '33%'")
        return int(value) if value.isdigit() else value


Weekday = Literal["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]


class TimeInWeekSpec(_Strict):
    day: Weekday
    hour_slots: list[Annotated[int, Field(ge=0, le=23)]] = Field(default_factory=list)


class TimeSpanSpec(_Strict):
    start: datetime
    end: datetime


class DateSpanSpec(_Strict):
    start: date
    end: date


class DailySpec(_Strict):
    interval_days: int = Field(ge=1, le=7)


class WeeklySpec(_Strict):
    interval_weeks: int = Field(ge=1, le=4)
    day_of_week: Weekday


class AbsoluteMonthlySpec(_Strict):
    interval_months: int = Field(ge=1, le=6)
    day_of_month: int = Field(ge=1, le=31)


class RelativeMonthlySpec(_Strict):
    interval_months: int = Field(ge=1, le=6)
    week_index: Literal["First", "Second", "Third", "Fourth", "Last"]
    day_of_week: Weekday


class ScheduleSpec(_Strict):
    daily: DailySpec | None = None
    weekly: WeeklySpec | None = None
    absolute_monthly: AbsoluteMonthlySpec | None = None
    relative_monthly: RelativeMonthlySpec | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> ScheduleSpec:
        if (
            sum(
                s is not None for s in (self.daily, self.weekly, self.absolute_monthly, self.relative_monthly)
            )
            != 1
        ):
            raise ValueError("set exactly one of daily, weekly, absolute_monthly and relative_monthly")
        return self


class MaintenanceWindowSpec(_Strict):
    schedule: ScheduleSpec
    duration_hours: int = Field(ge=4, le=24)
    utc_offset: str | None = Field(default=None, pattern=r"^[+-]\d\d:\d\d$")
    start_date: date | None = None
    start_time: str = Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")
    not_allowed_dates: list[DateSpanSpec] = Field(default_factory=list)


class MaintenanceConfigSpec(_Strict):
    """An AKS maintenance configuration: ``default`` uses time_in_week, the managed schedules a window."""

    time_in_week: list[TimeInWeekSpec] = Field(default_factory=list)
    not_allowed_time: list[TimeSpanSpec] = Field(default_factory=list)
    maintenance_window: MaintenanceWindowSpec | None = None


MaintenanceConfigName = Literal["default", "aksManagedAutoUpgradeSchedule", "aksManagedNodeOSUpgradeSchedule"]


class OperationFailureSpec(_Strict):
    """The error the next AKS operation ends with."""

    code: str = "InternalOperationError"
    message: str = "The operation failed (injected by the simulator)."


class ClusterSpec(_Strict):
    name: str = Field(pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_-]{0,62}$")
    subscription_id: str
    resource_group: str
    location: str
    kubernetes_version: Version
    available_versions: list[Version] = Field(default_factory=list)
    maintenance_configurations: dict[MaintenanceConfigName, MaintenanceConfigSpec] = Field(
        default_factory=dict
    )
    control_plane_upgrade_seconds: float = Field(default=30, ge=0)
    # AKS's autoUpgradeProfile.nodeOSUpgradeChannel: who patches the nodes' OS (Unmanaged: the nodes'
    # own unattended-upgrades, which set /var/run/reboot-required; SecurityPatch, NodeImage: AKS)
    node_os_upgrade_channel: Literal["None", "Unmanaged", "SecurityPatch", "NodeImage"] = "Unmanaged"
    aad: AadSpec | None = None
    oidc_issuer: OidcIssuerSpec | None = None
    # the management cluster, where the worker's Jobs run: containers with a command run as local processes
    runs_pods: bool = False
    workload_identity: WorkloadIdentitySpec | None = None

    @field_validator("available_versions", mode="before")
    @classmethod
    def _versions_as_text(cls, value: object) -> object:
        # YAML reads 1.30 as a float; versions are always text here.
        return [str(v) for v in value] if isinstance(value, list) else value

    @field_validator("maintenance_configurations")
    @classmethod
    def _window_where_aks_wants_one(cls, value: dict) -> dict:
        for name, config in value.items():
            if name == "default" and config.maintenance_window is not None:
                raise ValueError(
                    "the default configuration takes time_in_week/not_allowed_time, not a window"
                )
            if name != "default" and config.maintenance_window is None:
                raise ValueError(f"{name} needs a maintenance_window")
        return value


OS_IMAGES = {"Linux": "Ubuntu 22.04.5 LTS", "Windows": "Windows Server 2022 Datacenter"}
CONTAINER_RUNTIMES = {"Linux": "containerd://1.7.25-1", "Windows": "containerd://1.7.20+azure"}


class PoolSpec(_Strict):
    """An agent pool. Windows pools are built as AKS builds them: names of at most 6 characters, nodes
    named ``aks<pool><6-character index>``, Windows Server images whose kernel is the OS build (e.g.
    10.0.20348.2700); they are never system pools, and their nodes never ask for a reboot."""

    name: str = Field(pattern=r"^[a-z][a-z0-9]{0,11}$")
    os_type: Literal["Linux", "Windows"] = "Linux"
    mode: Literal["System", "User"] = "User"
    count: int = Field(ge=0, le=5000)
    zones: list[str] = Field(default_factory=list)
    orchestrator_version: Version
    node_image_version: str
    latest_node_image_version: str | None = None
    os_image: str = ""  # default: Ubuntu 22.04.5 LTS, or Windows Server 2022 Datacenter
    kernel: str
    container_runtime: str = ""  # default: the AKS image's containerd for the OS
    vm_size: str = "Standard_D4s_v5"
    max_pods: int = Field(default=110, ge=1, le=250)
    boot_seconds: float = Field(default=30, ge=0)
    # the kernel of the latest node image (default: derived from ``kernel`` when the image is newer)
    latest_node_image_kernel: str | None = None
    upgrade_settings: UpgradeSettingsSpec = Field(default_factory=UpgradeSettingsSpec)
    node_provision_seconds: float = Field(default=20, ge=0)  # a new (surge) node's time to join Ready

    @model_validator(mode="before")
    @classmethod
    def _os_defaults(cls, raw: object) -> object:
        if not isinstance(raw, dict):
            return raw
        os_type = raw.get("os_type", "Linux")
        defaults = {"os_image": OS_IMAGES.get(os_type), "container_runtime": CONTAINER_RUNTIMES.get(os_type)}
        return {**raw, **{k: v for k, v in defaults.items() if not raw.get(k) and v}}

    @model_validator(mode="after")
    def _windows_rules(self) -> PoolSpec:
        if self.os_type == "Windows":
            if len(self.name) > 6:
                raise _FieldError(("name",), "a Windows pool name has at most 6 characters")
            if self.mode == "System":
                raise _FieldError(("mode",), "a Windows pool cannot be a System pool")
        return self

    @property
    def windows(self) -> bool:
        return self.os_type == "Windows"


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
    # the pods' nodeSelector; a Windows workload selects kubernetes.io/os: windows
    node_selector: dict[str, str] = Field(default_factory=dict)

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
    fail_next_operation: OperationFailureSpec | None = None  # the next AKS operation fails


class NodeProblemDetectorSpec(_Strict):
    """A node-problem-detector custom plugin that mirrors /var/run/reboot-required as a node condition."""

    condition_type: str = Field(default="RebootRequired", pattern=r"^[A-Za-z][A-Za-z0-9]*$")


class SchedulerSpec(_Strict):
    """How the simulated kube-scheduler scores the feasible nodes with room for a pod.

    ``spread`` (the default) stands for kube-scheduler's default profile: after PreferNoSchedule
    taints it prefers the node with the fewest pods of the pod's own controller, then the fewest pods.
    ``bin-pack`` stands for a profile whose NodeResourcesFit plugin scores with MostAllocated: after
    PreferNoSchedule taints it prefers the fullest node. See ``Scheduler._pick_node``.
    """

    scoring: Literal["spread", "bin-pack"] = "spread"


class Scenario(_Strict):
    time_scale: float = Field(default=1.0, gt=0, le=100)
    seed: int = 0
    cluster: ClusterSpec
    pools: list[PoolSpec] = Field(min_length=1)
    nodes: list[NodeSpec] = Field(default_factory=list)
    workloads: list[WorkloadSpec] = Field(default_factory=list)
    faults: FaultSpec = Field(default_factory=FaultSpec)
    node_problem_detector: NodeProblemDetectorSpec | None = None
    scheduler: SchedulerSpec = Field(default_factory=SchedulerSpec)

    @model_validator(mode="after")
    def _references(self) -> Scenario:
        pools: dict[str, PoolSpec] = {}
        for i, pool in enumerate(self.pools):
            if pool.name in pools:
                raise _FieldError(("pools", i, "name"), f"pool name {pool.name!r} is used twice")
            pools[pool.name] = pool
        refs: list[tuple[tuple[str | int, ...], NodeRef]] = [
            (("nodes", i), n) for i, n in enumerate(self.nodes)
        ]
        refs += [(("workloads", i, "node"), w.node) for i, w in enumerate(self.workloads) if w.node]
        for loc, ref in refs:
            target = pools.get(ref.pool)
            if target is None:
                raise _FieldError((*loc, "pool"), f"node reference names unknown pool {ref.pool!r}")
            if target.windows and isinstance(ref, NodeSpec) and (ref.reboot_required or ref.available_kernel):
                raise _FieldError(
                    (*loc, "reboot_required"),
                    f"pool {ref.pool!r} is Windows: its nodes never ask for a reboot (a node image "
                    "upgrade patches them)",
                )
            if ref.index >= target.count:
                raise _FieldError(
                    (*loc, "index"),
                    f"node index {ref.index} is outside pool {ref.pool!r} (count {target.count})",
                )
        seen = set()
        for i, w in enumerate(self.workloads):
            key = (w.kind, w.namespace, w.name)
            if key in seen:
                raise _FieldError(
                    ("workloads", i, "name"), f"workload {w.kind} {w.namespace}/{w.name} is defined twice"
                )
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
            loc, msg = err["loc"], err["msg"]
            cause = (err.get("ctx") or {}).get("error")
            if isinstance(cause, _FieldError):
                loc, msg = (*loc, *cause.loc), str(cause)
            where = ".".join(str(p) for p in loc) or "(top level)"
            problems.append(f"{where}: {msg}")
        raise ScenarioError(f"{source}: invalid scenario:\n  " + "\n  ".join(problems)) from exc
