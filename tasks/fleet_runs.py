"""The fleet's reads of Prefect: the node-maintenance and cluster-upgrade deployments, the parameters a
deployment's schema refuses, and the flow runs of an earlier run of the same update run with their
results. The plan and the summary themselves are plain functions in ``aksmaint.fleet``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from prefect import get_run_logger
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
    FlowRunFilterTags,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.client.schemas.sorting import FlowRunSort
from prefect.utilities.schema_tools.validation import CircularSchemaRefError, ValidationError, validate

from aksmaint.fleet.models import (
    MAINTENANCE_FLOW,
    RUN_TAG,
    UPGRADE_FLOW,
    FleetDeployment,
    FleetReport,
    PlannedStage,
)
from aksmaint.fleet.plan import cluster_of, kind_of
from aksmaint.fleet.summary import summarise
from tasks.tasking import brief

PAGE = 200


def parameter_problems(target: FleetDeployment, params: dict[str, Any]) -> list[str]:
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


def latest_finished(runs: list[Any]) -> dict[str, Any]:
    """Per deployment id, the latest of ``runs`` (FlowRuns) that completed and was not a dry run."""
    done: dict[str, Any] = {}
    for run in sorted(runs, key=lambda r: (r.end_time is not None, r.end_time), reverse=True):
        completed = run.state is not None and run.state.type == StateType.COMPLETED
        if completed and not run.parameters.get("dry_run") and str(run.deployment_id) not in done:
            done[str(run.deployment_id)] = run
    return done


async def read_all(read: Callable[[int], Awaitable[list[Any]]]) -> list[Any]:
    """Every page of a Prefect list call ``read(offset)`` (the server answers at most PAGE at a time)."""
    found: list[Any] = []
    while page := await read(len(found)):
        found += page
        if len(page) < PAGE:
            break
    return found


async def read_catalogue() -> list[FleetDeployment]:
    """Every node-maintenance and cluster-upgrade deployment on the server."""
    async with get_client() as client:
        flows = await client.read_flows(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[MAINTENANCE_FLOW, UPGRADE_FLOW]))
        )
        names = {f.id: f.name for f in flows}
        if not names:
            return []
        deployments = await read_all(
            lambda offset: client.read_deployments(
                flow_filter=FlowFilter(name=FlowFilterName(any_=list(names.values()))),
                limit=PAGE,
                offset=offset,
            )
        )
    return [
        FleetDeployment(
            name=f"{names[d.flow_id]}/{d.name}",
            id=str(d.id),
            flow=names[d.flow_id],
            kind=kind_of(names[d.flow_id], d.parameters),
            cluster=cluster_of(f"{names[d.flow_id]}/{d.name}", list(d.tags)),
            tags=list(d.tags),
            parameters=dict(d.parameters),
            parameter_schema=dict(d.parameter_openapi_schema or {}),
        )
        for d in deployments
        if d.flow_id in names
    ]


async def read_result(run: FlowRun) -> object:
    """The persisted result of a finished run, or None when there is none to read."""
    if run.state is None or not (run.state.is_completed() or run.state.is_failed()):
        return None
    try:
        return await run.state.aresult(raise_on_failure=False)
    except Exception as exc:  # a result that was not persisted or cannot be read
        get_run_logger().warning("%s: cannot read the run's report: %s", run.name, brief(exc))
        return None


async def mark_earlier_runs(report: FleetReport, name: str, planned: list[PlannedStage]) -> None:
    """Mark the clusters an earlier run of update run ``name`` finished: not run again."""
    ids = [t.id for p in planned for t in p.targets]
    async with get_client() as client:
        runs = await read_all(
            lambda offset: client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    tags=FlowRunFilterTags(all_=[RUN_TAG + name]),
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.COMPLETED])),
                ),
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=ids)),
                sort=FlowRunSort.END_TIME_DESC,
                limit=PAGE,
                offset=offset,
            )
        )
    finished = latest_finished(runs)
    by_name = {t.name: t.id for p in planned for t in p.targets}
    for stage in report.stages:
        for i, row in enumerate(stage.clusters):
            run = finished.get(by_name[row.deployment])
            if run is not None and (done := summarise(row, run, await read_result(run))).ok:
                stage.clusters[i] = done.model_copy(update={"earlier_run": True})
