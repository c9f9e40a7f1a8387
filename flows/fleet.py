"""Fleet: run the node-maintenance deployment of several clusters and summarise them in one artifact.

select deployments (by name or tag) -> run each with ``run_deployment``, a few at a time -> read each
run's MaintenanceReport -> one ``fleet-summary`` artifact: nodes patched, failed and still pending, and
the kernels each cluster runs now.
"""

from __future__ import annotations

import asyncio
import copy
from typing import Annotated, Any

from prefect import flow, get_run_logger
from prefect.artifacts import acreate_markdown_artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterTags, FlowFilter, FlowFilterName
from prefect.client.schemas.objects import FlowRun
from prefect.deployments.flow_runs import arun_deployment
from prefect.states import Completed, Failed
from pydantic import BaseModel, Field

from aksmaint.report import MaintenanceReport, Outcome

MAINTENANCE_FLOW = "node-maintenance"
ALL_DEPLOYMENTS = "*"


class ClusterSummary(BaseModel):
    """One cluster's line in the fleet summary."""

    deployment: str
    cluster: str
    flow_run_id: str = ""
    state: str
    message: str = ""
    rebooted: int = 0
    failed: int = 0
    still_pending: list[str] = Field(default_factory=list)
    kernels: dict[str, int] = Field(default_factory=dict)
    report_missing: bool = False


class FleetReport(BaseModel):
    clusters: list[ClusterSummary] = Field(default_factory=list)

    @property
    def failed(self) -> list[ClusterSummary]:
        return [c for c in self.clusters if c.state != "Completed" or c.failed or c.report_missing]


def full_name(name: str) -> str:
    """``flow/deployment`` as Prefect names deployments; a bare deployment name is node-maintenance's."""
    return name if "/" in name else f"{MAINTENANCE_FLOW}/{name}"


def deep_merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``changes`` applied; nested mappings are merged key by key, anything else replaced."""
    merged = copy.deepcopy(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def run_parameters(
    deployment: str, defaults: dict[str, Any], overrides: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """The deployment's own parameters, then the overrides for every deployment, then those for this one."""
    short = deployment.split("/", 1)[1]
    params = deep_merge(defaults, overrides.get(ALL_DEPLOYMENTS, {}))
    for key in (short, deployment):
        params = deep_merge(params, overrides.get(key, {}))
    return params


def summarise(deployment: str, run: FlowRun, result: object) -> ClusterSummary:
    state = run.state
    summary = ClusterSummary(
        deployment=deployment,
        cluster=deployment.split("/", 1)[1].removesuffix("-node-maintenance"),
        flow_run_id=str(run.id),
        state=state.name if state else "unknown",
        message=(state.message or "") if state else "",
    )
    if not isinstance(result, MaintenanceReport):
        summary.report_missing = True
        return summary
    summary.cluster = result.cluster
    summary.rebooted = result.count(Outcome.rebooted)
    summary.failed = result.count(Outcome.failed)
    summary.still_pending = list(result.still_need_reboot)
    summary.kernels = dict(result.kernels_after)
    return summary


def summary_markdown(report: FleetReport) -> str:
    lines = [
        "# Fleet node maintenance",
        "",
        f"{len(report.clusters)} cluster(s): {sum(c.rebooted for c in report.clusters)} node(s) patched, "
        f"{sum(c.failed for c in report.clusters)} failed, "
        f"{sum(len(c.still_pending) for c in report.clusters)} still waiting for a reboot.",
        "",
        "| cluster | run | patched | failed | still pending | kernels now |",
        "|---|---|---|---|---|---|",
    ]
    for c in report.clusters:
        kernels = ", ".join(f"{k} x{n}" for k, n in sorted(c.kernels.items())) or "-"
        pending = ", ".join(c.still_pending) or "-"
        run = c.state + (
            " (no report: " + (c.message or "the run left no result") + ")" if c.report_missing else ""
        )
        lines.append(f"| {c.cluster} | {run} | {c.rebooted} | {c.failed} | {pending} | {kernels} |")
    return "\n".join(lines)


async def select_deployments(names: list[str], tag: str | None) -> list[str]:
    """The named deployments plus every node-maintenance deployment carrying ``tag``, in name order."""
    selected = {full_name(n) for n in names}
    if tag:
        async with get_client() as client:
            found = await client.read_deployments(
                flow_filter=FlowFilter(name=FlowFilterName(any_=[MAINTENANCE_FLOW])),
                deployment_filter=DeploymentFilter(tags=DeploymentFilterTags(all_=[tag])),
            )
        selected |= {f"{MAINTENANCE_FLOW}/{d.name}" for d in found}
    return sorted(selected)


@flow(name="fleet")
async def fleet(
    deployments: Annotated[
        list[str],
        Field(
            description="Node-maintenance deployments to run, e.g. prod-weu-node-maintenance "
            "(or flow/deployment). Combined with tag."
        ),
    ] = [],  # noqa: B006 - Prefect copies parameters; the default renders in the UI
    tag: Annotated[
        str | None,
        Field(description="Also run every node-maintenance deployment with this tag, e.g. env:prod."),
    ] = None,
    parallelism: Annotated[int, Field(ge=1, le=50, description="Clusters maintained at the same time.")] = 2,
    overrides: Annotated[
        dict[str, dict[str, Any]],
        Field(
            description="Parameter changes per deployment name, merged into its own parameters; "
            'the key "*" applies to all. Example: {"*": {"dry_run": true}}.'
        ),
    ] = {},  # noqa: B006
    poll_interval_seconds: Annotated[
        float, Field(gt=0, description="How often to check whether a cluster's run has finished.")
    ] = 10,
):
    """Run node maintenance on several clusters, a few at a time, and summarise the fleet."""
    logger = get_run_logger()
    names = await select_deployments(deployments, tag)
    if not names:
        return Failed(message=f"no node-maintenance deployment matches names {deployments} or tag {tag!r}")
    logger.info("Maintaining %d cluster(s), %d at a time: %s", len(names), parallelism, ", ".join(names))
    gate = asyncio.Semaphore(parallelism)

    async def one(name: str) -> ClusterSummary:
        async with gate:
            async with get_client() as client:
                deployment = await client.read_deployment_by_name(name)
            params = run_parameters(name, deployment.parameters, overrides)
            run = await arun_deployment(name, parameters=params, poll_interval=poll_interval_seconds)
            result = None
            if run.state is not None and (run.state.is_completed() or run.state.is_failed()):
                try:
                    result = await run.state.aresult(raise_on_failure=False)
                except Exception as exc:  # a result that was not persisted or cannot be read
                    logger.warning("%s: cannot read the run's report: %s", name, exc)
            summary = summarise(name, run, result)
            logger.info(
                "%s: %s, %d patched, %d failed, %d still pending",
                summary.cluster,
                summary.state,
                summary.rebooted,
                summary.failed,
                len(summary.still_pending),
            )
            return summary

    report = FleetReport(clusters=list(await asyncio.gather(*(one(n) for n in names))))
    await acreate_markdown_artifact(
        key="fleet-summary", markdown=summary_markdown(report), description="Node maintenance across clusters"
    )
    if report.failed:
        return Failed(
            message="clusters needing attention: "
            + ", ".join(f"{c.cluster} ({c.state})" for c in report.failed),
            data=report,
        )
    return Completed(message=f"{len(report.clusters)} cluster(s) maintained", data=report)
