"""The update run's models: its parameters (``Stage`` and the limits of the fleet flow's parameters),
the deployments it can run, and its report (a table per stage, a row per cluster)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

MAINTENANCE_FLOW = "node-maintenance"
UPGRADE_FLOW = "cluster-upgrade"
ALL_DEPLOYMENTS = "*"
CLUSTER_TAG = "cluster:"  # prefect.yaml tags every deployment of a cluster cluster:<key>
RUN_TAG = "fleet-run:"  # the tag of each cluster's flow run in a named update run
STAGE_TAG = "fleet-stage:"
IMPLICIT_STAGE = "all"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"


class RunState(StrEnum):
    """The flow run states the fleet sets or looks for, by their name in Prefect (``StateType`` is
    Prefect's; the core does not import it). A cluster's row keeps any other state's name as it is."""

    not_started = "not started"  # no flow run yet
    completed = "Completed"  # the name of Prefect's Completed state
    failed = "Failed"  # the run could not be started or followed
    unknown = "unknown"  # a flow run with no state


NOT_STARTED = RunState.not_started.value


class DeploymentKind(StrEnum):
    """What a deployment does: prefect.yaml gives each cluster one deployment of each kind, all with the
    cluster's tags, so a tag alone would pick all three."""

    node_maintenance = "node-maintenance"  # the node-maintenance flow: reboots
    node_image_upgrade = "node-image-upgrade"  # the cluster-upgrade flow, mode node-image
    kubernetes_upgrade = "kubernetes-upgrade"  # the cluster-upgrade flow, mode kubernetes-version


class StageApproval(StrEnum):
    """Fleet Manager's approval gates: before a stage starts, after it has finished, or both."""

    none = "none"
    before = "before"
    after = "after"
    before_and_after = "before-and-after"

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: Any, handler: Any) -> dict[str, Any]:
        """Titled "Approval" in the fleet flow's form (the class name would show there)."""
        schema = handler(core_schema)
        handler.resolve_ref_schema(schema)["title"] = "Approval"
        return schema

    @property
    def before_stage(self) -> bool:
        return self in (StageApproval.before, StageApproval.before_and_after)

    @property
    def after_stage(self) -> bool:
        return self in (StageApproval.after, StageApproval.before_and_after)


class Stage(BaseModel):
    """One stage of an update run: its clusters run at most ``max_parallel`` at a time, in order, and the
    next stage starts once all of them have finished (then the wait and the approval it asks for)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        min_length=1, max_length=60, pattern=NAME_PATTERN, description="Stage name, e.g. canary or prod."
    )
    deployments: list[str] = Field(
        default_factory=list,
        description="Deployments of this stage, in the order they start: flow/deployment, e.g. "
        "cluster-upgrade/prod-weu-node-image-upgrade; a bare name is a node-maintenance deployment.",
    )
    tag: str | None = Field(
        None,
        description="Also every deployment of the kind below carrying this tag (e.g. env:prod), in "
        "name order, after the named ones.",
    )
    kind: DeploymentKind = Field(
        DeploymentKind.node_maintenance,
        description="Which kind of deployment the tag selects (each cluster has one of each kind).",
    )
    max_parallel: int = Field(1, ge=1, le=50, description="Clusters of this stage running at the same time.")
    after_stage_wait_seconds: float = Field(
        0,
        ge=0,
        le=86400,
        description="Seconds to wait once the stage has finished, before the next stage (soak time).",
    )
    approval: StageApproval = Field(
        StageApproval.none,
        description="Pause for approval (Resume in the Prefect UI) before the stage starts, after it has "
        "finished, or both.",
    )


# limits of the fleet flow's parameters (the server enforces them from the flow's JSON schema); their
# descriptions for the UI are in the flow's docstring, where Prefect reads them. The approval timeout's
# is aksmaint.params.ApprovalTimeout, shared with node-maintenance.
UpdateRunName = Annotated[str, Field(max_length=60, pattern=r"^([A-Za-z0-9][A-Za-z0-9._-]*)?$")]
MaxFailedClusters = Annotated[int, Field(ge=0)]
Parallelism = Annotated[int, Field(ge=1, le=50)]
PollInterval = Annotated[float, Field(gt=0)]


class FleetDeployment(BaseModel):
    """A node-maintenance or cluster-upgrade deployment an update run can run."""

    name: str  # flow/deployment
    id: str = ""
    flow: str
    kind: DeploymentKind
    cluster: str  # its cluster:<key> tag, else the deployment's name: each cluster runs once per update run
    tags: list[str] = Field(default_factory=list)
    parameters: dict[str, Any] = Field(default_factory=dict)
    parameter_schema: dict[str, Any] = Field(default_factory=dict)


class PlannedStage(BaseModel):
    stage: Stage
    targets: list[FleetDeployment]


class ClusterSummary(BaseModel):
    """One cluster's row in the fleet summary."""

    deployment: str
    cluster: str
    kind: DeploymentKind = DeploymentKind.node_maintenance
    flow_run_id: str = ""
    flow_run_name: str = ""
    state: str = NOT_STARTED  # the name of the Prefect state of its run
    message: str = ""
    earlier_run: bool = False  # finished by an earlier run of the same update run: not run again
    report_missing: bool = False
    rebooted: int = 0
    failed: int = 0  # nodes (node-maintenance) or AKS operations (cluster-upgrade) that failed
    still_pending: list[str] = Field(default_factory=list)
    kernels: dict[str, int] = Field(default_factory=dict)
    changes: list[str] = Field(default_factory=list)  # cluster-upgrade: each AKS operation and its end

    @property
    def started(self) -> bool:
        return self.state != RunState.not_started

    @property
    def ok(self) -> bool:
        return self.state == RunState.completed and not self.failed and not self.report_missing


class StageReport(BaseModel):
    name: str
    max_parallel: int = 1
    after_stage_wait_seconds: float = 0
    approval: StageApproval = StageApproval.none
    clusters: list[ClusterSummary] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)  # waits and approvals, in order


class FleetReport(BaseModel):
    name: str = ""  # the update run's name, for resuming
    stages: list[StageReport] = Field(default_factory=list)
    stopped: str = ""  # why the run stopped before its last stage

    @property
    def clusters(self) -> list[ClusterSummary]:
        return [c for s in self.stages for c in s.clusters]

    @property
    def failed(self) -> list[ClusterSummary]:
        """The clusters whose run in this update run did not end well (a failed state, failed nodes or
        operations, or no report to tell)."""
        return [c for c in self.clusters if c.started and not c.ok]
