"""Fleet: a staged update run across clusters, modelled on Azure Kubernetes Fleet Manager's update runs.

check every stage, name, tag and override before anything runs -> skip the clusters an earlier run of
the same update-run ``name`` finished -> stage by stage: an approval gate before it if it asks for one,
its clusters' deployments (node-maintenance or cluster-upgrade) with ``run_deployment``, ``max_parallel``
at a time, its wait and an approval gate after it -> stop once more than ``max_failures`` clusters failed
-> one ``fleet-summary`` artifact: a table per stage, a row per cluster.

An approval gate is a Prefect pause (key ``approve-before-<stage>`` or ``approve-after-<stage>``): the run
shows *Paused* with a *Resume* button in the UI, the process keeps waiting, and the fleet-summary so far is
written first so that whoever approves sees what the earlier stages did. Not resumed within
``approval_timeout_seconds``, the run stops there: the summary says so, and the run ends Failed with the
message Prefect gives any expired pause ("The flow was failed and never resumed.").

Resuming: with a ``name``, every cluster's flow run is tagged ``fleet-run:<name>``. A later run with the
same name reads those flow runs back from Prefect and does not run again a cluster whose run completed
(not a dry run, with a report showing no failure): the summary marks it "done in an earlier run" with
that run's figures. The flow runs are the record, so there is nothing else to keep in step with them,
and a cluster whose run finished after the fleet run itself crashed counts as done all the same.

This module runs the stages; the parameters, the checks, the plan and the summary are plain data and
functions in ``aksmaint.fleet``, and the reads of deployments and earlier flow runs are in
``tasks.fleet_runs``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import acreate_markdown_artifact
from prefect.deployments.flow_runs import arun_deployment
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import apause_flow_run
from prefect.states import Completed, Failed, State

from aksmaint.fleet.models import (
    RUN_TAG,
    STAGE_TAG,
    ClusterSummary,
    FleetReport,
    MaxFailedClusters,
    Parallelism,
    PlannedStage,
    PollInterval,
    RunState,
    Stage,
    StageReport,
    UpdateRunName,
)
from aksmaint.fleet.plan import new_report, plan_update_run, run_parameters, stages_from_parameters
from aksmaint.fleet.summary import cluster_state, summarise, summary_markdown
from aksmaint.params import ApprovalTimeout
from tasks.fleet_runs import mark_earlier_runs, parameter_problems, read_catalogue, read_result
from tasks.result_storage import acheck_result_storage
from tasks.tasking import brief


def final_state(report: FleetReport) -> State:
    if report.stopped:
        return Failed(message=report.stopped, data=report)
    if report.failed:
        return Failed(
            message="clusters needing attention: "
            + ", ".join(f"{c.cluster} ({c.state})" for c in report.failed),
            data=report,
        )
    earlier = sum(c.earlier_run for c in report.clusters)
    return Completed(
        message=f"{len(report.clusters)} cluster(s) done"
        + (f", {earlier} of them in an earlier run" if earlier else ""),
        data=report,
    )


# ---- running the stages --------------------------------------------------------------------------
async def run_stage(
    stage: StageReport,
    max_parallel: int,
    run_one: Callable[[ClusterSummary], Awaitable[ClusterSummary]],
    stop: Callable[[], bool],
) -> None:
    """Start the stage's clusters in order, at most ``max_parallel`` at a time, skipping those done in an
    earlier run. Once ``stop()`` is true no further cluster starts; those running finish, the rest stay
    "not started"."""
    queue = [i for i, c in enumerate(stage.clusters) if not c.earlier_run]

    async def worker() -> None:
        while queue and not stop():
            i = queue.pop(0)
            stage.clusters[i] = await run_one(stage.clusters[i])

    await asyncio.gather(*(worker() for _ in range(min(max_parallel, len(queue)))))


class UpdateRun:
    """One fleet run: its stages in order, with the gates, waits and the failure limit between them."""

    def __init__(
        self,
        report: FleetReport,
        run_one: Callable[[ClusterSummary], Awaitable[ClusterSummary]],
        approve: Callable[[StageReport, str], Awaitable[bool]],
        max_failures: int,
    ):
        self.report = report
        self.run_one = run_one
        self.approve = approve
        self.max_failures = max_failures

    def too_many_failures(self) -> bool:
        return len(self.report.failed) > self.max_failures

    async def run(self) -> None:
        """A stage whose clusters were all done in an earlier run is not run again: no wait, no gate before
        it; its gate after it is still asked for when a later stage has clusters to run."""
        stages = self.report.stages
        for i, stage in enumerate(stages):
            todo = any(not c.earlier_run for c in stage.clusters)
            later = any(not c.earlier_run for s in stages[i + 1 :] for c in s.clusters)
            if todo and not await self.stage(stage, later):
                return
            if stage.approval.after_stage and (todo or later) and not await self.approve(stage, "after"):
                return

    async def stage(self, stage: StageReport, later: bool) -> bool:
        """Run one stage; False when the run stops here."""
        if stage.approval.before_stage and not await self.approve(stage, "before"):
            return False
        await run_stage(stage, stage.max_parallel, self.run_one, self.too_many_failures)
        if self.too_many_failures():
            failed = [c.cluster for c in self.report.failed]
            waiting = sum(not c.started for c in self.report.clusters)
            self.report.stopped = (
                f"stopped in stage {stage.name}: {len(failed)} cluster(s) failed ({', '.join(failed)}), "
                f"more than max_failures={self.max_failures}; {waiting} cluster(s) not started"
            )
            return False
        if later and stage.after_stage_wait_seconds:
            await asyncio.sleep(stage.after_stage_wait_seconds)
            stage.notes.append(f"waited {stage.after_stage_wait_seconds:g} s after the stage")
        return True


# ---- Prefect: the summary artifact, the clusters' runs, the pause -----------------------------------
async def write_summary(report: FleetReport) -> None:
    """The fleet-summary artifact; one that cannot be written is logged, and the run goes on."""
    try:
        await acreate_markdown_artifact(
            key="fleet-summary",
            markdown=summary_markdown(report),
            description=f"Update run {report.name or '(no name)'}: stages and clusters",
        )
    except Exception as exc:
        get_run_logger().warning("Could not write the fleet-summary artifact: %s", brief(exc))


def cluster_runner(
    planned: list[PlannedStage], name: str, overrides: dict[str, dict[str, Any]], poll_interval: float
) -> Callable[[ClusterSummary], Awaitable[ClusterSummary]]:
    """Run one cluster's deployment as a child flow run, wait for it and summarise it."""
    targets = {t.name: t for p in planned for t in p.targets}
    stage_of = {t.name: p.stage.name for p in planned for t in p.targets}

    async def run_one(row: ClusterSummary) -> ClusterSummary:
        logger = get_run_logger()
        target = targets[row.deployment]
        tags = [STAGE_TAG + stage_of[row.deployment]] + ([RUN_TAG + name] if name else [])
        try:
            run = await arun_deployment(
                target.name,
                parameters=run_parameters(target.name, target.parameters, overrides),
                poll_interval=poll_interval,
                tags=tags,
            )
        except Exception as exc:  # the server refused the run, or the API went away while waiting
            logger.error("%s: the run could not be started or followed: %s", target.name, brief(exc))
            return row.model_copy(
                update={"state": RunState.failed.value, "message": brief(exc), "report_missing": True}
            )
        done = summarise(row, run, await read_result(run))
        logger.info(
            "%s: %s, %d patched, %d failed", done.cluster, cluster_state(done), done.rebooted, done.failed
        )
        return done

    return run_one


def approval_gate(
    report: FleetReport, timeout: int, poll_interval: float
) -> Callable[[StageReport, str], Awaitable[bool]]:
    """Pause the run until someone resumes it in the Prefect UI; False when nobody did in time."""

    async def approve(stage: StageReport, when: str) -> bool:
        await write_summary(report)  # what the approver looks at
        get_run_logger().info(
            "Approval needed %s stage %s: resume this flow run (Resume in the Prefect UI) within %d s",
            when,
            stage.name,
            timeout,
        )
        try:
            await apause_flow_run(
                timeout=timeout,
                poll_interval=max(1, round(poll_interval)),
                key=f"approve-{when}-{stage.name}",
            )
        except FlowPauseTimeout:
            report.stopped = f"stage {stage.name}: not approved {when} the stage within {timeout} s"
            return False
        stage.notes.append(f"approved {when} the stage")
        return True

    return approve


@flow(name="fleet")
async def fleet(
    stages: list[Stage] = [],  # noqa: B006 - Prefect copies parameters; the default renders in the UI
    name: UpdateRunName = "",
    max_failures: MaxFailedClusters = 0,
    approval_timeout_seconds: ApprovalTimeout = 86400,
    deployments: list[str] = [],  # noqa: B006
    tag: str | None = None,
    parallelism: Parallelism = 2,
    overrides: dict[str, dict[str, Any]] = {},  # noqa: B006
    poll_interval_seconds: PollInterval = 10,
):
    """Run node-maintenance and cluster-upgrade deployments across clusters, stage by stage, and summarise
    the fleet.

    Args:
        stages: The update run's stages, in order: each names deployments (or a tag and a kind), how many
            clusters run at once, a wait after it and approval gates. Empty: one stage from deployments,
            tag and parallelism below.
        name: Update-run name, e.g. 2025-03-patch. A rerun with the same name skips the clusters an
            earlier run of it finished. Empty: every cluster runs.
        max_failures: Failed clusters allowed in this run, over all stages. One more and no further
            cluster starts (those running finish) and the run ends Failed. 0: stop at the first failure.
        approval_timeout_seconds: How long an approval gate waits for Resume before the run stops.
        deployments: Without stages: node-maintenance deployments to run, e.g.
            prod-weu-node-maintenance (or flow/deployment). Combined with tag.
        tag: Without stages: also every node-maintenance deployment with this tag, e.g. env:prod.
        parallelism: Without stages: clusters maintained at the same time.
        overrides: Parameter changes merged into each deployment's own parameters, by deployment name
            ("*" for all, or a pattern such as "node-maintenance/*"). Example: {"*": {"dry_run": true}}.
        poll_interval_seconds: How often to check whether a cluster's run has finished or the run was
            resumed.
    """
    logger = get_run_logger()
    await acheck_result_storage()  # the clusters' reports are read from there
    chosen, problems = stages_from_parameters(stages, deployments, tag, parallelism)
    planned, found = (
        plan_update_run(chosen, await read_catalogue(), overrides, parameter_problems) if chosen else ([], [])
    )
    if problems or found:
        return Failed(message="nothing run: " + "; ".join(problems + found))
    report = new_report(name, planned)
    if name:
        await mark_earlier_runs(report, name, planned)
    for p in report.stages:
        logger.info(
            "Stage %s, %d at a time: %s", p.name, p.max_parallel, ", ".join(c.deployment for c in p.clusters)
        )
    await UpdateRun(
        report,
        cluster_runner(planned, name, overrides, poll_interval_seconds),
        approval_gate(report, approval_timeout_seconds, poll_interval_seconds),
        max_failures,
    ).run()
    await write_summary(report)
    return final_state(report)
