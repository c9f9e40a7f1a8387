"""Parameters of the maintenance flows, as pydantic models.

Prefect renders these as forms in the UI (one group per model, with the descriptions below), and the
server rejects invalid values with a message naming the field. The same models validate command-line
and parameters-file input, before any request reaches a cluster.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from aksmaint.azure import AksCluster

_LABEL_SELECTOR = re.compile(r"^[A-Za-z0-9_./\-!=,() ]*$")
_LABEL_KEY = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
_DNS_NAME = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
# HH:MM, 24-hour: also in the JSON schema, so the Prefect server refuses a bad time before a run exists
_CLOCK = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"
_END_CLOCK = r"^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$"

Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
DAYS: tuple[Day, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_selector(value: str) -> str:
    value = value.strip()
    if not _LABEL_SELECTOR.match(value):
        raise ValueError(f"not a label selector: {value!r}")
    if value.count("(") != value.count(")"):
        raise ValueError(f"unbalanced parentheses in label selector {value!r}")
    return value


Selector = Annotated[str, Field(description="A Kubernetes label selector, e.g. `app=web,tier!=batch`.")]

# Limits of top-level node-maintenance parameters, shared by the flow's signature and MaintenanceParams:
# the server enforces them from the flow's JSON schema, the command line through MaintenanceParams.
# Their descriptions for the UI are in the flow's docstring, where Prefect reads them.
# a count of nodes, or a percentage of the nodes in scope ("10%": rounded down, at least 1)
MAX_CONCURRENCY = 1000
PercentOfNodes = Annotated[str, Field(pattern=r"^(100|[1-9][0-9]?)%$")]
Concurrency = Annotated[int, Field(ge=1, le=MAX_CONCURRENCY)] | PercentOfNodes
MaxFailures = Annotated[int, Field(ge=0)]
# whole seconds: what a Prefect pause waits (node-maintenance's approval, the fleet's approval gates)
ApprovalTimeout = Annotated[int, Field(ge=1)]
OutageTolerance = Annotated[float, Field(ge=5, le=86400)]


def _check_labels(labels: dict[str, str]) -> dict[str, str]:
    for key, value in labels.items():
        if not _LABEL_KEY.match(key):
            raise ValueError(f"invalid label key {key!r}")
        if not _LABEL_VALUE.match(value):
            raise ValueError(f"invalid label value {value!r} for {key!r}")
    return labels


class ClusterConnection(_Model):
    """How to reach the cluster's Kubernetes API: a kubeconfig, the in-cluster service account, or an
    AKS cluster by its Azure id (the kubeconfig is then fetched from AKS). The API server's certificate is
    verified against the kubeconfig's CA unless insecure_skip_tls_verify is set explicitly."""

    kubeconfig: str | None = Field(
        None,
        description="Path to a kubeconfig file on the machine that runs the flow. "
        "Leave empty with in_cluster to use the worker pod's service account.",
    )
    context: str | None = Field(
        None, description="Context in the kubeconfig; empty means its current context."
    )
    in_cluster: bool = Field(False, description="Use the service account of the pod the flow runs in.")
    aks: AksCluster | None = Field(
        None, description="An AKS cluster by subscription, resource group and name."
    )
    name: str | None = Field(
        None,
        pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$",
        description="The cluster's name in reports, events and notifications. Empty: the kubeconfig "
        "context's cluster, or the AKS cluster's name. With in_cluster it is required, here or in the "
        "flow pod's variable AKSMAINT_CLUSTER_NAME (set it in the pool's job template).",
    )
    insecure_skip_tls_verify: bool = Field(
        False,
        description="Do not verify the Kubernetes API server's TLS certificate. Unsafe: anyone on the "
        "network path could impersonate the cluster and receive its token. Every run logs a warning. "
        "A kubeconfig's own insecure-skip-tls-verify is ignored unless this is set.",
    )

    @model_validator(mode="after")
    def _one_source(self) -> ClusterConnection:
        if sum([bool(self.kubeconfig), self.in_cluster, self.aks is not None]) != 1:
            raise ValueError("set exactly one of kubeconfig, in_cluster and aks")
        if self.context and not self.kubeconfig:
            raise ValueError("context applies to a kubeconfig")
        return self

    def describe(self) -> str:
        if self.in_cluster:
            return "in-cluster service account"
        if self.aks is not None:
            return f"AKS cluster {self.aks.name} (resource group {self.aks.resource_group})"
        return f"kubeconfig {self.kubeconfig}" + (f" (context {self.context})" if self.context else "")


def _check_time_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {value!r}") from exc
    return value


TimeZone = Annotated[str, AfterValidator(_check_time_zone)]


def _minutes(value: str) -> int:
    """HH:MM (validated by the field's pattern) as minutes since midnight; 24:00 is 1440, the day's end."""
    hours, minutes = value.split(":")
    return int(hours) * 60 + int(minutes)


class MaintenanceWindow(_Model):
    """When reboots may start. A node in progress when the window closes is finished; no new one starts."""

    days: list[Day] = Field(
        default_factory=lambda: list(DAYS),
        description="Days on which the window opens (the day the window starts, for windows past midnight).",
    )
    start: str = Field("00:00", pattern=_CLOCK, description="Local time the window opens, HH:MM (24-hour).")
    end: str = Field(
        "24:00",
        pattern=_END_CLOCK,
        description="Local time the window closes (exclusive), HH:MM; 24:00 is the end of the day. "
        "Earlier than start means the window runs past midnight into the next day.",
    )
    time_zone: TimeZone = Field("UTC", description="IANA time zone of start and end, e.g. Europe/Berlin.")

    @model_validator(mode="after")
    def _opens(self) -> MaintenanceWindow:
        if self.start == self.end:
            raise ValueError(
                f"start and end are both {self.start}: the window would never open "
                "(for the whole day use start 00:00 and end 24:00)"
            )
        return self

    @field_validator("days")
    @classmethod
    def _some_days(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one day is needed")
        return value

    def is_open(self, at: datetime) -> bool:
        """True when ``at`` (timezone-aware) falls inside the window."""
        local = at.astimezone(ZoneInfo(self.time_zone))
        start, end = _minutes(self.start), _minutes(self.end)
        now = local.hour * 60 + local.minute + (local.second + local.microsecond / 1e6) / 60
        today = DAYS[local.weekday()]
        yesterday = DAYS[(local.weekday() - 1) % 7]
        if start < end:
            return today in self.days and start <= now < end
        # past midnight: open from start today, or until end on the morning after an opening day
        return (today in self.days and now >= start) or (yesterday in self.days and now < end)


class RolloutOrder(StrEnum):
    fewest_pods_first = "fewest-pods-first"
    name = "name"


class OnDrainTimeout(StrEnum):
    uncordon_and_skip = "uncordon-and-skip"
    delete_pods = "delete-pods"
    reboot_anyway = "reboot-anyway"
    quarantine = "quarantine"


class DrainOptions(_Model):
    """How pods leave a node before its reboot; the same semantics as `kubectl drain`."""

    grace_period_seconds: int = Field(
        -1,
        ge=-1,
        description="Seconds each pod gets to terminate. -1 uses the pod's own "
        "terminationGracePeriodSeconds.",
    )
    timeout_seconds: float = Field(
        900, gt=0, description="Seconds to wait for a node's pods to leave; after that, on_timeout decides."
    )
    delete_emptydir_data: bool = Field(
        True, description="Evict pods that use emptyDir volumes; their local data is lost."
    )
    force: bool = Field(
        True, description="Evict pods that no controller manages (they are not recreated anywhere)."
    )
    pod_selector: Selector = Field(
        "", description="Only evict pods matching this label selector (empty: all pods)."
    )
    skip_wait_for_delete_timeout_seconds: int = Field(
        0,
        ge=0,
        description="Do not wait for pods whose deletion began more than this many seconds ago "
        "(0: always wait).",
    )
    eviction_retry_seconds: float = Field(
        5, gt=0, description="Wait between evictions refused by a PodDisruptionBudget (kubectl uses 5 s)."
    )
    on_timeout: OnDrainTimeout = Field(
        OnDrainTimeout.uncordon_and_skip,
        description="When a drain times out: uncordon-and-skip leaves the node unrebooted and running; "
        "delete-pods deletes the remaining pods, bypassing their PodDisruptionBudgets; "
        "reboot-anyway reboots with the remaining pods on the node; quarantine leaves the node "
        "cordoned and labelled aksmaint.io/status=quarantined (the reason in its record annotation), "
        "frees its slot and goes on with the rest (AKS's undrainableNodeBehavior: Cordon).",
    )

    @field_validator("pod_selector")
    @classmethod
    def _selector(cls, value: str) -> str:
        return _check_selector(value)


class Blockers(_Model):
    """Conditions that hold back reboots (kured's blocking-pod-selector and Prometheus alerts)."""

    pod_selectors: list[Selector] = Field(
        default_factory=list,
        description="A node is not rebooted while a pod matching any of these label selectors runs on it.",
    )
    prometheus_url: str | None = Field(
        None,
        description="Prometheus base URL. While an alert is active no reboot starts; "
        "an unreachable Prometheus also blocks.",
    )
    alert_filter_regexp: str | None = Field(
        None,
        description="Regular expression over alert names: matching alerts are ignored "
        "(or, with alert_filter_match_only, the only ones that count).",
    )
    alert_firing_only: bool = Field(False, description="Only firing alerts block, not pending ones.")
    alert_filter_match_only: bool = Field(
        False, description="Only alerts matching alert_filter_regexp block."
    )
    prometheus_timeout_seconds: float = Field(10, gt=0, description="Seconds one Prometheus query may take.")

    @field_validator("pod_selectors")
    @classmethod
    def _selectors(cls, value: list[str]) -> list[str]:
        return [_check_selector(s) for s in value]

    @field_validator("alert_filter_regexp")
    @classmethod
    def _regexp(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"invalid regular expression: {exc}") from exc
        return value

    @field_validator("prometheus_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be an http:// or https:// URL")
        return value

    @model_validator(mode="after")
    def _match_only_needs_regexp(self) -> Blockers:
        if self.alert_filter_match_only and not self.alert_filter_regexp:
            raise ValueError("alert_filter_match_only needs alert_filter_regexp")
        return self


class RebootOptions(_Model):
    """How a node is rebooted and how long it may take to come back."""

    command: list[str] = Field(
        default_factory=lambda: ["/bin/systemctl", "reboot"],
        description="Command run on the node (through nsenter into the host's namespaces).",
        min_length=1,
    )
    delay_seconds: float = Field(0, ge=0, description="Seconds to wait between the drain and the reboot.")
    boot_timeout_seconds: float = Field(
        600,
        gt=0,
        description="Seconds a node may take to come back (Ready, new boot id, kubelet heartbeat); "
        "a node not back by then is left cordoned and counted as failed.",
    )
    host_pod_namespace: str = Field(
        "kube-system",
        pattern=_DNS_NAME,
        description="Namespace for the short-lived privileged pods that read and reboot nodes.",
    )
    host_pod_image: str = Field(
        "mcr.microsoft.com/cbl-mariner/busybox:2.0",
        min_length=1,
        description="Image of those pods; it needs nsenter.",
    )


class LockOptions(_Model):
    """The reboot slots: Lease objects that bound how many nodes are down at once, across runs."""

    namespace: str = Field("kube-system", pattern=_DNS_NAME, description="Namespace of the slot Leases.")
    name_prefix: str = Field(
        "aks-maintenance-slot",
        pattern=_DNS_NAME,
        description="Slot Leases are named <prefix>-0, <prefix>-1, ...",
    )
    ttl_seconds: float = Field(
        120,
        ge=5,
        description="A slot not renewed for this long (seen from here) may be taken over; "
        "the holder renews it every third of it.",
    )
    release_delay_seconds: float = Field(
        0, ge=0, description="Seconds to keep the slot after a node is done (kured's lock-release-delay)."
    )
    respect_kured_lock: bool = Field(
        False,
        description="Wait while kured's DaemonSet lock annotation is held, so both can run during "
        "a migration.",
    )
    kured_daemonset: str = Field(
        "kube-system/kured",
        pattern=r"^[a-z0-9-]+/[a-z0-9-]+$",
        description="namespace/name of kured's DaemonSet.",
    )
    wait_seconds: float = Field(
        1800, gt=0, description="Seconds a node waits for a free slot; then it is held for a later run."
    )


class SentinelMode(StrEnum):
    host_pod = "host-pod"
    node_condition = "node-condition"


class SentinelOptions(_Model):
    """How the flow learns that a node needs a reboot."""

    mode: SentinelMode = Field(
        SentinelMode.host_pod,
        description="host-pod checks /var/run/reboot-required with a short-lived pod per node (nothing to "
        "install); node-condition reads a node condition set by node-problem-detector "
        "(one request for the whole cluster).",
    )
    condition_type: str = Field("RebootRequired", description="Node condition type for node-condition mode.")
    parallelism: int = Field(20, ge=1, le=500, description="Nodes scanned at once in host-pod mode.")


class NodeLabels(_Model):
    """Node labels and taints set around reboots."""

    pre_reboot: dict[str, str] = Field(default_factory=dict, description="Labels set before a reboot.")
    post_reboot: dict[str, str] = Field(default_factory=dict, description="Labels set after a reboot.")
    prefer_no_schedule_taint: bool = Field(
        True,
        description="Taint nodes waiting for a reboot PreferNoSchedule, so evicted pods land on "
        "nodes already done and move only once.",
    )

    @field_validator("pre_reboot", "post_reboot")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        return _check_labels(value)


class NotifyOptions(_Model):
    """Where progress messages go. URLs are secrets: they never appear in logs or artifacts."""

    urls: list[SecretStr] = Field(
        default_factory=list,
        description="Apprise URLs, e.g. a Teams or Slack webhook. They are masked in logs and in runs "
        "started from Python or the command line, but a deployment run's parameters are stored by the "
        "Prefect server as entered: for deployments use block instead.",
    )
    block: str | None = Field(
        None,
        pattern=r"^[a-z0-9-]+/[^/]+$",
        description="A Prefect notification block as <block type>/<name>, e.g. slack-webhook/ops-alerts. "
        "Prefer a block to urls for deployments: the webhook stays in the block (stored as a secret) "
        "while run parameters, which the Prefect server keeps as given, hold only the block's name.",
    )
    drain_template: str = Field("Draining node {node} on {cluster}", description="Sent when a drain starts.")
    reboot_template: str = Field("Rebooting node {node} on {cluster}", description="Sent before a reboot.")
    uncordon_template: str = Field(
        "Node {node} on {cluster} is back: kernel {kernel_before} -> {kernel_after}",
        description="Sent when a node is back in service.",
    )
    failure_template: str = Field(
        "Maintenance of node {node} on {cluster} failed: {reason}", description="Sent when a node fails."
    )


class BudgetScope(StrEnum):
    all = "all"
    pool = "pool"
    zone = "zone"


class Budget(_Model):
    """A limit on the nodes disrupted at once, as Karpenter's NodePool disruption budgets: over all nodes
    in scope, per node pool or per availability zone; a count or a percentage; always, or only from each
    time a cron schedule fires for a duration, outside of which the limit is 0. Where several limits
    apply to a node, the strictest in force wins."""

    scope: BudgetScope = Field(
        BudgetScope.all,
        description="all: the nodes in scope together; pool: per node pool; zone: per availability zone "
        "(label topology.kubernetes.io/zone).",
    )
    name: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$",
        description="The pool or zone this limit is for (e.g. userpool, westeurope-1). "
        "Empty: every pool (or zone), each on its own.",
    )
    nodes: (
        Annotated[int, Field(ge=0, le=MAX_CONCURRENCY)]
        | Annotated[str, Field(pattern=r"^(100|[1-9]?[0-9])%$")]
    ) = Field(
        ...,
        description="At most this many nodes disrupted at once: a count, or a percentage of the scope's "
        'nodes ("20%": rounded down, at least 1). 0 allows none.',
    )
    schedule: str | None = Field(
        None,
        description='Cron expression (5 fields, e.g. "0 22 * * mon-fri") of when the limit starts to '
        "apply, for duration_minutes; outside those times the limit is 0. Empty: always.",
    )
    duration_minutes: int | None = Field(
        None, ge=1, le=7 * 24 * 60, description="How long the limit applies after each schedule time."
    )
    time_zone: TimeZone = Field("UTC", description="IANA time zone of the schedule, e.g. Europe/Berlin.")

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                CronSim(value, datetime(2000, 1, 1))
            except CronSimError as exc:
                raise ValueError(f"invalid cron expression {value!r}: {exc}") from exc
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Budget:
        if (self.schedule is None) != (self.duration_minutes is None):
            raise ValueError("schedule and duration_minutes go together")
        if self.name is not None and self.scope == BudgetScope.all:
            raise ValueError("name applies to a pool or zone budget")
        return self

    def in_force(self, now: datetime) -> bool:
        """True when the budget applies at ``now`` (timezone-aware): always without a schedule, else when
        the schedule last fired less than ``duration_minutes`` ago."""
        if self.schedule is None or self.duration_minutes is None:
            return True
        local = now.astimezone(ZoneInfo(self.time_zone))
        since = local - timedelta(minutes=self.duration_minutes)
        return next(CronSim(self.schedule, since)) <= local

    def describe(self) -> str:
        scope = {
            BudgetScope.all: "all nodes",
            BudgetScope.pool: f"pool {self.name}" if self.name else "each pool",
            BudgetScope.zone: f"zone {self.name}" if self.name else "each zone",
        }[self.scope]
        when = (
            f" from {self.schedule} for {self.duration_minutes} min ({self.time_zone}), else 0"
            if self.schedule
            else ""
        )
        return f"{scope}: at most {self.nodes}{when}"


class MaintenanceParams(_Model):
    """Everything the node-maintenance flow needs, validated as one."""

    cluster: ClusterConnection
    node_selector: Selector = ""
    concurrency: Concurrency = 1
    budgets: list[Budget] = Field(default_factory=list)
    retry_quarantined: bool = False
    max_failures: MaxFailures = 0
    window: MaintenanceWindow | None = None
    drain: DrainOptions = Field(default_factory=DrainOptions)
    blockers: Blockers = Field(default_factory=Blockers)
    reboot: RebootOptions = Field(default_factory=RebootOptions)
    lock: LockOptions = Field(default_factory=LockOptions)
    sentinel: SentinelOptions = Field(default_factory=SentinelOptions)
    apply_updates: bool = False
    labels: NodeLabels = Field(default_factory=NodeLabels)
    notify: NotifyOptions = Field(default_factory=NotifyOptions)
    order: RolloutOrder = RolloutOrder.fewest_pods_first
    require_approval: bool = False
    approval_timeout_seconds: ApprovalTimeout = 3600
    orchestration_outage_seconds: OutageTolerance = 120
    respect_os_upgrade_channel: bool = True
    dry_run: bool = False

    @field_validator("node_selector")
    @classmethod
    def _selector(cls, value: str) -> str:
        return _check_selector(value)


def with_overrides(base: dict, overrides: dict) -> dict:
    """``base`` parameters with ``overrides`` laid over them: a group given as a mapping (e.g.
    ``drain={"timeout_seconds": 60}``) changes only the fields it names, at any depth; anything else
    (None too) replaces the value. Neither argument is changed: a merged group is a new mapping."""
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = with_overrides(merged[key], value)
        else:
            merged[key] = value
    return merged
