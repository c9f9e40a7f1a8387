"""Typed results of a maintenance run (per node and for the cluster) and of a cluster upgrade."""

from __future__ import annotations

from collections import Counter
from enum import StrEnum

from pydantic import BaseModel, Field

from aksmaint.aks.operations import OperationResult, UpgradeMode, UpgradeStep


class Outcome(StrEnum):
    rebooted = "rebooted"  # drained, rebooted, back on a new boot id, uncordoned
    not_needed = "not-needed"  # no reboot required
    held = "held"  # a gate held it back: window closed, blocker, slot not free, rollout halted
    skipped = "skipped"  # could not be drained in time; uncordoned and left running
    failed = "failed"  # did not come back or a step failed; left cordoned with a record
    quarantined = "quarantined"  # could not be drained: left cordoned and labelled, the rollout went on
    gone = "gone"  # deleted from the cluster during the run (scale-in, auto-repair, spot eviction)
    not_applicable = "not-applicable"  # a Windows node: a node image upgrade patches it, not a reboot
    planned = "planned"  # dry run: would be rebooted
    # this run's own pod runs on it (in_cluster): cordoned and left to a follow-up run on another node
    handed_over = "handed-over"

    @property
    def next_step(self) -> str:
        """What an operator does about a node that ended so; empty when nothing is to be done."""
        return NEXT_STEPS.get(self, "")


NEXT_STEPS = {
    Outcome.held: "nothing was changed on the node and it still needs its reboot; "
    "the next run takes it once what held it back clears",
    Outcome.skipped: "the node is back in service but not rebooted; "
    "fix what kept its pods from leaving (see the reason), then run again",
    Outcome.quarantined: "the node stays cordoned and labelled aksmaint.io/status=quarantined; "
    "fix what blocks its drain, then run with retry_quarantined (--retry-quarantined)",
    Outcome.handed_over: "nothing: the follow-up run named in the reason drains and reboots it once this "
    "run has ended; if that run never starts, start the deployment again (the node stays cordoned until then)",
    Outcome.failed: "the node stays cordoned and keeps its reboot slot, so no other node takes its place; "
    "look at it (kubectl describe node); once it is Ready again, the next run uncordons it and frees the slot",
}


class NodeFacts(BaseModel):
    """What the update check and sentinel scan found on a node."""

    name: str
    pool: str = ""
    zone: str = ""  # topology.kubernetes.io/zone
    kernel: str = ""
    os_image: str = ""
    node_image_version: str = ""
    os: str = "linux"  # the node's kubernetes.io/os
    kubelet_version: str = ""
    boot_id: str = ""
    ready: bool = False
    unschedulable: bool = False
    reboot_required: bool | None = None  # None: could not be determined
    upgradable_packages: int | None = None
    scan_error: str | None = None
    resume: bool = False  # a previous run left its record on this node
    quarantined: str | None = None  # why an earlier run quarantined it (its record's reason)

    @property
    def windows(self) -> bool:
        return self.os == "windows"


class PlanAction(StrEnum):
    """What the plan does with a node."""

    reboot = "reboot"  # it needs a reboot: through its whole lifecycle
    resume = "resume"  # a previous run left its record here: finish what it started
    hold = "hold"  # it needs a reboot that does not belong on this cluster now (e.g. AKS patches it)
    skip = "skip"  # no reboot required, or it could not be scanned
    check = "check"  # a dry run cannot tell (host-pod scans make pods)
    not_applicable = "not-applicable"  # a Windows node: a node image upgrade patches it
    quarantined = "quarantined"  # an earlier run quarantined it; left alone unless retry_quarantined

    @property
    def runs(self) -> bool:
        """True for the actions that take the node through its lifecycle; the others only report it."""
        return self in (PlanAction.reboot, PlanAction.resume)


class PlanEntry(BaseModel):
    node: str
    action: PlanAction
    reason: str


class NodeReport(BaseModel):
    node: str
    pool: str = ""
    outcome: Outcome
    reason: str = ""
    kernel_before: str = ""
    kernel_after: str = ""
    node_image_version: str = ""
    boot_id_changed: bool = False
    duration_seconds: float = 0.0
    evicted_pods: int = 0
    drain_seconds: float = 0.0
    boot_seconds: float = 0.0


class MaintenanceReport(BaseModel):
    cluster: str
    flow_run_id: str | None = None
    dry_run: bool = False
    tls_verified: bool = True
    node_os_upgrade_channel: str = ""  # AKS's, when the cluster was reached through Azure
    started_at: str
    finished_at: str = ""
    halted: bool = False
    halt_reason: str = ""
    nodes: list[NodeReport] = Field(default_factory=list)
    kernels_after: dict[str, int] = Field(default_factory=dict)  # Linux nodes
    # Windows nodes, kept apart: their kernel is the OS build a node image brings ("<build> (<image>)")
    windows_after: dict[str, int] = Field(default_factory=dict)
    still_need_reboot: list[str] = Field(default_factory=list)
    lagging_kernel: list[str] = Field(default_factory=list)

    def count(self, outcome: Outcome) -> int:
        return sum(1 for n in self.nodes if n.outcome == outcome)

    @property
    def failed(self) -> bool:
        return self.halted or self.count(Outcome.failed) > 0

    def summary_line(self) -> str:
        counts = Counter(n.outcome.value for n in self.nodes)
        parts = [f"{counts[o.value]} {o.value}" for o in Outcome if counts[o.value]]
        return (
            f"{self.cluster}: "
            + (", ".join(parts) or "no nodes")
            + (f"; halted: {self.halt_reason}" if self.halted else "")
        )


class UpgradePlan(BaseModel):
    """The cluster upgrade's plan: its AKS operations in order, and what the preflight found."""

    steps: list[UpgradeStep] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    blocking_pdbs: list[str] = Field(default_factory=list)
    window: str = ""
    window_open: bool = True
    node_os_upgrade_channel: str = ""  # who patches the nodes' OS between node image upgrades


class UpgradeReport(BaseModel):
    cluster: str
    mode: UpgradeMode
    dry_run: bool
    started_at: str
    finished_at: str = ""
    plan: UpgradePlan
    operations: list[OperationResult] = Field(default_factory=list)
    verified: bool = False
    verify_problems: list[str] = Field(default_factory=list)
    kernels_after: dict[str, int] = Field(default_factory=dict)  # Linux nodes
    windows_after: dict[str, int] = Field(
        default_factory=dict
    )  # "<OS build> (<node image>)" of Windows nodes
    outcome: str = ""

    @property
    def node_os_upgrade_channel(self) -> str:
        return self.plan.node_os_upgrade_channel
