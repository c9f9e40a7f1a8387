"""The update run's plan and record, as plain functions over the data Prefect holds about deployments and
flow runs (``flows.fleet`` makes the API calls and runs the stages).

The parameters (``Stage``: deployments or a tag of one kind, ``max_parallel``, the wait and approval
gates), the checks made before anything runs (unknown names, tags matching nothing, a cluster in two
stages, overrides matching nothing, parameters a deployment's schema refuses), which deployment gets
which merged parameters, and the ``fleet-summary``: a table per stage, a row per cluster, read from each
cluster's MaintenanceReport or UpgradeReport.
"""

from __future__ import annotations

import copy
import fnmatch
from collections import Counter
from enum import StrEnum
from typing import Annotated, Any

from prefect.client.schemas.objects import StateType
from prefect.utilities.schema_tools.validation import CircularSchemaRefError, ValidationError, validate
from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as ModelError

from aksmaint.aks.operations import OperationStatus
from aksmaint.report import MaintenanceReport, Outcome, UpgradeReport

MAINTENANCE_FLOW = "node-maintenance"
UPGRADE_FLOW = "cluster-upgrade"
ALL_DEPLOYMENTS = "*"
CLUSTER_TAG = "cluster:"  # prefect.yaml tags every deployment of a cluster cluster:<key>
RUN_TAG = "fleet-run:"  # the tag of each cluster's flow run in a named update run
STAGE_TAG = "fleet-stage:"
NOT_STARTED = "not started"
IMPLICIT_STAGE = "all"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
PAGE = 200


class DeploymentKind(StrEnum):
    """What a deployment does: prefect.yaml gives each cluster one deployment of each kind, all with the
    cluster's tags, so a tag alone would pick all three."""

    node_maintenance = "node-maintenance"  # the node-maintenance flow: reboots
    node_image_upgrade = "node-image-upgrade"  # the cluster-upgrade flow, mode node-image
    kubernetes_upgrade = "kubernetes-upgrade"  # the cluster-upgrade flow, mode kubernetes-version


class Approval(StrEnum):
    """Fleet Manager's approval gates: before a stage starts, after it has finished, or both."""

    none = "none"
    before = "before"
    after = "after"
    before_and_after = "before-and-after"

    @property
    def before_stage(self) -> bool:
        return self in (Approval.before, Approval.before_and_after)

    @property
    def after_stage(self) -> bool:
        return self in (Approval.after, Approval.before_and_after)


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
    approval: Approval = Field(
        Approval.none,
        description="Pause for approval (Resume in the Prefect UI) before the stage starts, after it has "
        "finished, or both.",
    )


# limits of the fleet flow's parameters (the server enforces them from the flow's JSON schema); their
# descriptions for the UI are in the flow's docstring, where Prefect reads them
UpdateRunName = Annotated[str, Field(max_length=60, pattern=r"^([A-Za-z0-9][A-Za-z0-9._-]*)?$")]
MaxFailedClusters = Annotated[int, Field(ge=0)]
ApprovalTimeout = Annotated[int, Field(ge=1)]
Parallelism = Annotated[int, Field(ge=1, le=50)]
PollInterval = Annotated[float, Field(gt=0)]


class Target(BaseModel):
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
    targets: list[Target]


class ClusterSummary(BaseModel):
    """One cluster's row in the fleet summary."""

    deployment: str
    cluster: str
    kind: DeploymentKind = DeploymentKind.node_maintenance
    flow_run_id: str = ""
    flow_run_name: str = ""
    state: str = NOT_STARTED  # the Prefect state of its run
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
        return self.state != NOT_STARTED

    @property
    def ok(self) -> bool:
        return self.state == "Completed" and not self.failed and not self.report_missing


class StageReport(BaseModel):
    name: str
    max_parallel: int = 1
    after_stage_wait_seconds: float = 0
    approval: Approval = Approval.none
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


# ---- which deployments run with which parameters --------------------------------------------------
def full_name(name: str) -> str:
    """``flow/deployment`` as Prefect names deployments; a bare deployment name is node-maintenance's."""
    return name if "/" in name else f"{MAINTENANCE_FLOW}/{name}"


def kind_of(flow_name: str, parameters: dict[str, Any]) -> DeploymentKind:
    if flow_name == MAINTENANCE_FLOW:
        return DeploymentKind.node_maintenance
    if parameters.get("mode") == "kubernetes-version":
        return DeploymentKind.kubernetes_upgrade
    return DeploymentKind.node_image_upgrade  # the cluster-upgrade flow's default mode


def cluster_of(name: str, tags: list[str]) -> str:
    """The cluster a deployment works on: its ``cluster:<key>`` tag, else its own name."""
    keys = [t.removeprefix(CLUSTER_TAG) for t in tags if t.startswith(CLUSTER_TAG)]
    return keys[0] if keys else name.split("/", 1)[1]


def deep_merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``changes`` applied; nested mappings are merged key by key, anything else replaced."""
    merged = copy.deepcopy(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def override_keys(deployment: str, overrides: dict[str, Any]) -> list[str]:
    """The keys of ``overrides`` that apply to ``deployment``, least specific first: ``*``, then patterns
    such as ``cluster-upgrade/*`` or ``prod-*`` (on the full or the bare name), then its bare name, then
    its full name."""
    short = deployment.split("/", 1)[1]
    patterns = [
        k
        for k in overrides
        if k != ALL_DEPLOYMENTS
        and "*" in k
        and (fnmatch.fnmatchcase(deployment, k) or fnmatch.fnmatchcase(short, k))
    ]
    exact = [k for k in (short, deployment) if k in overrides]
    return ([ALL_DEPLOYMENTS] if ALL_DEPLOYMENTS in overrides else []) + patterns + exact


def run_parameters(
    deployment: str, defaults: dict[str, Any], overrides: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """The deployment's own parameters with the overrides that apply to it merged in, in the order of
    ``override_keys``."""
    params = copy.deepcopy(defaults)
    for key in override_keys(deployment, overrides):
        params = deep_merge(params, overrides[key])
    return params


def parameter_problems(target: Target, params: dict[str, Any]) -> list[str]:
    """What the server would refuse in ``params`` for this deployment (its parameter schema), and the
    parameters its flow does not have: said before any cluster's run starts."""
    schema = target.parameter_schema
    unknown = sorted(set(params) - set(schema.get("properties", {}))) if schema else []
    if unknown:
        return [f"{target.name}: {', '.join(unknown)}: no such parameter of the {target.flow} flow"]
    try:
        validate(params, schema, raise_on_error=True)
    except (ValidationError, CircularSchemaRefError) as exc:
        return [f"{target.name}: {exc}"]
    return []


# ---- the plan: stages, checked --------------------------------------------------------------------
def stages_from_parameters(
    stages: list[Stage], deployments: list[str], tag: str | None, parallelism: int
) -> tuple[list[Stage], list[str]]:
    """The stages to run: ``stages``, or one stage named "all" from the single-stage parameters."""
    if stages and (deployments or tag):
        given = f"deployments {deployments}" if deployments else f"tag {tag!r}"
        return [], [f"give either stages or deployments/tag, not both (also given: {given}; clear it)"]
    if stages:
        return list(stages), []
    if not deployments and not tag:
        return [], ["nothing to run: give stages, or deployments or a tag"]
    return [Stage(name=IMPLICIT_STAGE, deployments=deployments, tag=tag, max_parallel=parallelism)], []


def select_stage(stage: Stage, catalogue: list[Target]) -> tuple[list[Target], list[str]]:
    """The stage's deployments: the named ones in order, then those of its kind with its tag by name."""
    by_name = {t.name: t for t in catalogue}
    wanted = [full_name(n) for n in stage.deployments]
    problems = []
    if not stage.deployments and not stage.tag:
        problems.append(f"stage {stage.name}: give deployments or a tag")
    if unknown := [n for n in wanted if n not in by_name]:
        problems.append(
            f"stage {stage.name}: no node-maintenance or cluster-upgrade deployment named {', '.join(unknown)}"
        )
    tagged = sorted(
        (t for t in catalogue if stage.tag in t.tags and t.kind == stage.kind), key=lambda t: t.name
    )
    if stage.tag and not tagged:
        problems.append(f"stage {stage.name}: no {stage.kind.value} deployment has the tag {stage.tag!r}")
    targets = list({t.name: t for t in [by_name[n] for n in wanted if n in by_name] + tagged}.values())
    return targets, problems


def repeated_clusters(planned: list[PlannedStage]) -> list[str]:
    """A cluster runs once in an update run: in one stage, by one deployment."""
    seen: dict[str, list[str]] = {}
    for p in planned:
        for t in p.targets:
            seen.setdefault(t.cluster, []).append(f"{t.name} in stage {p.stage.name}")
    return [
        f"cluster {cluster} is in the update run more than once ({', '.join(where)}); it belongs in one stage"
        for cluster, where in seen.items()
        if len(where) > 1
    ]


def override_problems(targets: list[Target], overrides: dict[str, dict[str, Any]]) -> list[str]:
    """Override keys that match no deployment of the run, and parameters the deployments would refuse."""
    used = {k for t in targets for k in override_keys(t.name, overrides)}
    problems = [f"overrides: {k!r} matches no deployment of this run" for k in overrides if k not in used]
    for t in targets:
        problems += parameter_problems(t, run_parameters(t.name, t.parameters, overrides))
    return problems


def plan_update_run(
    stages: list[Stage], catalogue: list[Target], overrides: dict[str, dict[str, Any]]
) -> tuple[list[PlannedStage], list[str]]:
    """Every stage's deployments, and every problem found: unknown names, tags that match nothing, a stage
    with nothing to run, a stage name or a cluster given twice, overrides the deployments would refuse."""
    names = Counter(s.name for s in stages)
    problems = [f"stage name {n!r} is used {count} times" for n, count in names.items() if count > 1]
    planned = []
    for stage in stages:
        targets, found = select_stage(stage, catalogue)
        problems += found
        planned.append(PlannedStage(stage=stage, targets=targets))
    problems += repeated_clusters(planned)
    problems += override_problems([t for p in planned for t in p.targets], overrides)
    return planned, problems


def new_report(name: str, planned: list[PlannedStage]) -> FleetReport:
    """Every cluster of the run, not started yet."""
    return FleetReport(
        name=name,
        stages=[
            StageReport(
                name=p.stage.name,
                max_parallel=p.stage.max_parallel,
                after_stage_wait_seconds=p.stage.after_stage_wait_seconds,
                approval=p.stage.approval,
                clusters=[
                    ClusterSummary(deployment=t.name, cluster=t.cluster, kind=t.kind) for t in p.targets
                ],
            )
            for p in planned
        ],
    )


# ---- reading a cluster's run -------------------------------------------------------------------------
def parse_report(kind: DeploymentKind, result: object) -> MaintenanceReport | UpgradeReport | None:
    """The run's result as its flow's report, however it was stored (the model, or its JSON form)."""
    if isinstance(result, BaseModel):
        result = result.model_dump(mode="json")
    if not isinstance(result, dict):
        return None
    model = MaintenanceReport if kind == DeploymentKind.node_maintenance else UpgradeReport
    try:
        return model.model_validate(result)
    except ModelError:
        return None


def summarise(row: ClusterSummary, run: Any, result: object) -> ClusterSummary:
    """``row`` with the state and figures of the cluster's run ``run`` (a FlowRun) and its ``result``."""
    state = run.state
    row = row.model_copy(
        update={
            "flow_run_id": str(run.id),
            "flow_run_name": getattr(run, "name", "") or "",
            "state": state.name if state else "unknown",
            "message": (state.message or "") if state else "",
        }
    )
    report = parse_report(row.kind, result)
    if report is None:
        row.report_missing = True
        return row
    row.cluster = report.cluster
    row.kernels = dict(report.kernels_after)
    if isinstance(report, MaintenanceReport):
        row.rebooted = report.count(Outcome.rebooted)
        row.failed = report.count(Outcome.failed)
        row.still_pending = list(report.still_need_reboot)
    else:
        row.failed = sum(1 for op in report.operations if op.status == OperationStatus.failed)
        row.changes = [f"{op.step.describe()}: {op.status.value}" for op in report.operations]
        row.changes += report.verify_problems or ([] if report.operations else [report.outcome])
    return row


def latest_finished(runs: list[Any]) -> dict[str, Any]:
    """Per deployment id, the latest of ``runs`` (FlowRuns) that completed and was not a dry run."""
    done: dict[str, Any] = {}
    for run in sorted(runs, key=lambda r: (r.end_time is not None, r.end_time), reverse=True):
        completed = run.state is not None and run.state.type == StateType.COMPLETED
        if completed and not run.parameters.get("dry_run") and str(run.deployment_id) not in done:
            done[str(run.deployment_id)] = run
    return done


# ---- the summary artifact ----------------------------------------------------------------------------
def cluster_state(c: ClusterSummary) -> str:
    if c.earlier_run:
        return "done in an earlier run"
    if c.report_missing and c.started:
        return f"{c.state} (no report: {c.message or 'the run left no result'})"
    return c.state


def cluster_row(c: ClusterSummary) -> str:
    upgrade = c.kind != DeploymentKind.node_maintenance
    cells = [
        c.cluster,
        cluster_state(c),
        "-" if upgrade or not c.started else str(c.rebooted),
        str(c.failed) if c.started else "-",
        ", ".join(c.still_pending) or "-",
        ", ".join(f"{k} x{n}" for k, n in sorted(c.kernels.items())) or "-",
        "; ".join(c.changes) or "-",
        c.deployment,
        c.flow_run_name or "-",
    ]
    return "| " + " | ".join(cell.replace("|", "/") for cell in cells) + " |"


def stage_heading(i: int, s: StageReport) -> str:
    gate = "" if s.approval == Approval.none else f", approval {s.approval.value}"
    return f"## Stage {i}: {s.name} ({len(s.clusters)} cluster(s), {s.max_parallel} at a time{gate})"


def summary_markdown(report: FleetReport) -> str:
    clusters = report.clusters
    title = f"# Fleet update run {report.name}" if report.name else "# Fleet update run"
    lines = [
        title,
        "",
        f"{len(clusters)} cluster(s) in {len(report.stages)} stage(s): "
        f"{sum(c.ok for c in clusters)} done ({sum(c.earlier_run for c in clusters)} in an earlier run), "
        f"{len(report.failed)} failed, {sum(not c.started for c in clusters)} not started. "
        f"{sum(c.rebooted for c in clusters)} node(s) patched, {sum(c.failed for c in clusters)} failed, "
        f"{sum(len(c.still_pending) for c in clusters)} still waiting for a reboot.",
    ]
    if report.stopped:
        lines += ["", f"**Stopped:** {report.stopped}"]
    for i, s in enumerate(report.stages, 1):
        lines += ["", stage_heading(i, s), ""]
        lines += [
            "| cluster | state | patched | failed | still pending | kernels now | upgrades | deployment | run |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        lines += [cluster_row(c) for c in s.clusters]
        if s.notes:
            lines += ["", *(f"- {n}" for n in s.notes)]
    return "\n".join(lines)
