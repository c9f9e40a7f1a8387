"""The update run's plan: which deployments each stage runs, with which merged parameters, and every
problem found before anything runs (unknown names, tags matching nothing, a cluster in two stages,
overrides matching nothing, parameters a deployment's schema refuses)."""

from __future__ import annotations

import copy
import fnmatch
from collections import Counter
from collections.abc import Callable
from typing import Any

from aksmaint.aks.operations import UpgradeMode
from aksmaint.fleet.models import (
    ALL_DEPLOYMENTS,
    CLUSTER_TAG,
    IMPLICIT_STAGE,
    MAINTENANCE_FLOW,
    ClusterSummary,
    DeploymentKind,
    FleetDeployment,
    FleetReport,
    PlannedStage,
    Stage,
    StageReport,
)
from aksmaint.params import with_overrides

# what a deployment's parameter schema refuses in the parameters it would run with
ParameterCheck = Callable[[FleetDeployment, dict[str, Any]], list[str]]


# ---- which deployments run with which parameters --------------------------------------------------
def full_name(name: str) -> str:
    """``flow/deployment`` as Prefect names deployments; a bare deployment name is node-maintenance's."""
    return name if "/" in name else f"{MAINTENANCE_FLOW}/{name}"


def kind_of(flow_name: str, parameters: dict[str, Any]) -> DeploymentKind:
    if flow_name == MAINTENANCE_FLOW:
        return DeploymentKind.node_maintenance
    if parameters.get("mode") == UpgradeMode.kubernetes_version:
        return DeploymentKind.kubernetes_upgrade
    return DeploymentKind.node_image_upgrade  # the cluster-upgrade flow's default mode


def cluster_of(name: str, tags: list[str]) -> str:
    """The cluster a deployment works on: its ``cluster:<key>`` tag, else its own name."""
    keys = [t.removeprefix(CLUSTER_TAG) for t in tags if t.startswith(CLUSTER_TAG)]
    return keys[0] if keys else name.split("/", 1)[1]


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
        params = with_overrides(params, overrides[key])
    return params


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


def select_stage(stage: Stage, catalogue: list[FleetDeployment]) -> tuple[list[FleetDeployment], list[str]]:
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


def override_problems(
    targets: list[FleetDeployment], overrides: dict[str, dict[str, Any]], check: ParameterCheck
) -> list[str]:
    """Override keys that match no deployment of the run, and parameters the deployments would refuse
    (``check``: the deployment's parameter schema)."""
    used = {k for t in targets for k in override_keys(t.name, overrides)}
    problems = [f"overrides: {k!r} matches no deployment of this run" for k in overrides if k not in used]
    for t in targets:
        problems += check(t, run_parameters(t.name, t.parameters, overrides))
    return problems


def plan_update_run(
    stages: list[Stage],
    catalogue: list[FleetDeployment],
    overrides: dict[str, dict[str, Any]],
    check: ParameterCheck,
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
    problems += override_problems([t for p in planned for t in p.targets], overrides, check)
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
