"""The fleet flow's plain parts: which deployments each stage runs with which parameters, what is refused
before anything runs, how a stage starts its clusters and where an update run stops or waits, which
clusters an earlier run of the same name finished, and the fleet-summary tables."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest
from prefect.client.schemas.objects import StateType
from prefect.utilities.callables import parameter_schema

from aksmaint.aks.operations import OperationResult, OperationStatus, StepKind, UpgradeMode, UpgradeStep
from aksmaint.fleet.models import (
    NOT_STARTED,
    ClusterSummary,
    DeploymentKind,
    FleetDeployment,
    FleetReport,
    Stage,
    StageApproval,
    StageReport,
)
from aksmaint.fleet.plan import (
    cluster_of,
    full_name,
    kind_of,
    new_report,
    plan_update_run,
    run_parameters,
    stages_from_parameters,
)
from aksmaint.fleet.summary import summarise, summary_markdown
from aksmaint.params import with_overrides
from aksmaint.report import MaintenanceReport, NodeReport, Outcome, UpgradePlan, UpgradeReport
from flows.cluster_upgrade import cluster_upgrade
from flows.fleet import UpdateRun, final_state, run_stage
from flows.node_maintenance import node_maintenance
from tasks.fleet_runs import latest_finished, parameter_problems

MAINTENANCE_SCHEMA = parameter_schema(node_maintenance).model_dump_for_openapi()
UPGRADE_SCHEMA = parameter_schema(cluster_upgrade).model_dump_for_openapi()


# ---- parameters ------------------------------------------------------------------------------------
def test_bare_deployment_names_are_node_maintenance_deployments():
    assert full_name("prod-weu-node-maintenance") == "node-maintenance/prod-weu-node-maintenance"
    assert full_name("cluster-upgrade/x") == "cluster-upgrade/x"


def test_overrides_merge_into_the_deployments_parameters_key_by_key():
    defaults = {
        "cluster": {"kubeconfig": "/k"},
        "drain": {"timeout_seconds": 900, "on_timeout": "uncordon-and-skip"},
    }
    overrides = {
        "node-maintenance/prod-weu-node-maintenance": {"concurrency": 3},  # the full name wins
        "prod-weu-node-maintenance": {"dry_run": False, "concurrency": 2},
        "*": {"dry_run": True, "drain": {"timeout_seconds": 60}},
        "node-maintenance/*": {"window": None},
        "node-maintenance/other": {"concurrency": 9},
    }
    params = run_parameters("node-maintenance/prod-weu-node-maintenance", defaults, overrides)
    assert params == {
        "cluster": {"kubeconfig": "/k"},
        "drain": {"timeout_seconds": 60, "on_timeout": "uncordon-and-skip"},
        "dry_run": False,
        "concurrency": 3,
        "window": None,
    }
    assert defaults["drain"]["timeout_seconds"] == 900  # the deployment's own parameters are not changed
    assert run_parameters("node-maintenance/other", defaults, overrides)["concurrency"] == 9
    assert "window" not in run_parameters("cluster-upgrade/prod-weu-node-image-upgrade", {}, overrides)


def test_an_override_can_clear_a_value():
    assert with_overrides({"window": {"start": "01:00"}}, {"window": None}) == {"window": None}


def test_kind_and_cluster_of_a_deployment():
    assert kind_of("node-maintenance", {}) == DeploymentKind.node_maintenance
    assert kind_of("cluster-upgrade", {"mode": "kubernetes-version"}) == DeploymentKind.kubernetes_upgrade
    assert kind_of("cluster-upgrade", {}) == DeploymentKind.node_image_upgrade
    assert cluster_of("cluster-upgrade/a-node-image-upgrade", ["env:prod", "cluster:a"]) == "a"
    assert cluster_of("node-maintenance/lab", ["lab"]) == "lab"


# ---- the plan and what is refused before anything runs --------------------------------------------
def maintenance(key: str, env: str) -> FleetDeployment:
    name = f"node-maintenance/{key}-node-maintenance"
    return FleetDeployment(
        name=name,
        id=f"id-{key}-nm",
        flow="node-maintenance",
        kind=DeploymentKind.node_maintenance,
        cluster=key,
        tags=["aks-maintenance", f"cluster:{key}", f"env:{env}"],
        parameters={"cluster": {"kubeconfig": f"/k/{key}"}, "concurrency": 1},
        parameter_schema=MAINTENANCE_SCHEMA,
    )


def upgrade(key: str, env: str, mode: str = "node-image") -> FleetDeployment:
    suffix = "node-image-upgrade" if mode == "node-image" else "kubernetes-upgrade"
    return FleetDeployment(
        name=f"cluster-upgrade/{key}-{suffix}",
        id=f"id-{key}-{suffix}",
        flow="cluster-upgrade",
        kind=kind_of("cluster-upgrade", {"mode": mode}),
        cluster=key,
        tags=["aks-maintenance", f"cluster:{key}", f"env:{env}"],
        parameters={"cluster": {"subscription_id": "s", "resource_group": "rg", "name": key}, "mode": mode},
        parameter_schema=UPGRADE_SCHEMA,
    )


CATALOGUE = [
    t
    for key, env in [("prod-weu", "prod"), ("prod-neu", "prod"), ("staging-eus", "staging"), ("dev", "dev")]
    for t in (maintenance(key, env), upgrade(key, env), upgrade(key, env, "kubernetes-version"))
]


def names(planned) -> list[list[str]]:
    return [[t.name for t in p.targets] for p in planned]


def test_stages_select_named_deployments_in_order_then_their_kind_with_the_tag():
    stages = [
        Stage(
            name="canary",
            deployments=["dev-node-maintenance", "cluster-upgrade/staging-eus-node-image-upgrade"],
        ),
        Stage(name="prod", tag="env:prod", max_parallel=2),
        Stage(name="prod-k8s", tag="env:staging", kind=DeploymentKind.kubernetes_upgrade),
    ]
    # staging-eus twice (two stages): refused below; here only the selection is looked at
    planned, problems = plan_update_run(stages, CATALOGUE, {}, parameter_problems)
    assert names(planned) == [
        ["node-maintenance/dev-node-maintenance", "cluster-upgrade/staging-eus-node-image-upgrade"],
        ["node-maintenance/prod-neu-node-maintenance", "node-maintenance/prod-weu-node-maintenance"],
        ["cluster-upgrade/staging-eus-kubernetes-upgrade"],
    ]
    assert problems == [
        "cluster staging-eus is in the update run more than once "
        "(cluster-upgrade/staging-eus-node-image-upgrade in stage canary, "
        "cluster-upgrade/staging-eus-kubernetes-upgrade in stage prod-k8s); it belongs in one stage"
    ]


def test_the_single_stage_parameters_make_one_stage_and_cannot_be_mixed_with_stages():
    (stage,), problems = stages_from_parameters([], ["prod-weu-node-maintenance"], "env:staging", 3)
    assert problems == []
    assert (stage.name, stage.max_parallel, stage.kind) == ("all", 3, DeploymentKind.node_maintenance)
    planned, problems = plan_update_run([stage], CATALOGUE, {}, parameter_problems)
    assert names(planned) == [
        ["node-maintenance/prod-weu-node-maintenance", "node-maintenance/staging-eus-node-maintenance"]
    ]
    assert problems == []
    assert stages_from_parameters([], [], None, 2) == (
        [],
        ["nothing to run: give stages, or deployments or a tag"],
    )
    _, problems = stages_from_parameters([Stage(name="a", tag="x")], [], "aks-maintenance", 2)
    assert problems == [
        "give either stages or deployments/tag, not both (also given: tag 'aks-maintenance'; clear it)"
    ]


def test_every_problem_is_named_before_anything_runs():
    stages = [
        Stage(name="a", deployments=["nope-node-maintenance", "fleet/fleet-node-maintenance"]),
        Stage(name="b", tag="env:qa"),
        Stage(name="c"),
        Stage(name="a", deployments=["prod-weu-node-maintenance"]),
        Stage(name="d", tag="env:prod"),
    ]
    overrides = {
        "prod-wue-node-maintenance": {"concurrency": 2},
        "prod-neu-node-maintenance": {"concurency": 2},
        "node-maintenance/*": {"concurrency": 0},
    }
    _, problems = plan_update_run(stages, CATALOGUE, overrides, parameter_problems)
    assert problems[:5] == [
        "stage name 'a' is used 2 times",
        "stage a: no node-maintenance or cluster-upgrade deployment named "
        "node-maintenance/nope-node-maintenance, fleet/fleet-node-maintenance",
        "stage b: no node-maintenance deployment has the tag 'env:qa'",
        "stage c: give deployments or a tag",
        "cluster prod-weu is in the update run more than once (node-maintenance/prod-weu-node-maintenance "
        "in stage a, node-maintenance/prod-weu-node-maintenance in stage d); it belongs in one stage",
    ]
    assert problems[5] == "overrides: 'prod-wue-node-maintenance' matches no deployment of this run"
    assert (
        "node-maintenance/prod-weu-node-maintenance: Validation failed for field 'concurrency'" in problems[6]
    )
    assert problems[7] == (
        "node-maintenance/prod-neu-node-maintenance: concurency: no such parameter of the node-maintenance flow"
    )
    assert len(problems) == 9  # prod-weu-node-maintenance is checked once per stage it is in


def test_an_override_for_every_deployment_must_suit_both_flows():
    planned, problems = plan_update_run(
        [Stage(name="s", deployments=["dev-node-maintenance", "cluster-upgrade/dev-node-image-upgrade"])],
        CATALOGUE,
        {"*": {"window": None}},
        parameter_problems,
    )
    assert problems == [
        "cluster dev is in the update run more than once (node-maintenance/dev-node-maintenance in stage s, "
        "cluster-upgrade/dev-node-image-upgrade in stage s); it belongs in one stage",
        "cluster-upgrade/dev-node-image-upgrade: window: no such parameter of the cluster-upgrade flow",
    ]


# ---- one cluster's run, summarised -----------------------------------------------------------------
def run(state_name: str, message: str = "", **fields) -> SimpleNamespace:
    state_type = StateType.COMPLETED if state_name == "Completed" else StateType.FAILED
    return SimpleNamespace(
        id="r1",
        name="crimson-fox",
        state=SimpleNamespace(name=state_name, message=message, type=state_type),
        **fields,
    )


def row(key: str, kind: DeploymentKind = DeploymentKind.node_maintenance) -> ClusterSummary:
    return ClusterSummary(deployment=f"{kind.value}/{key}", cluster=key, kind=kind)


def test_summary_counts_patched_failed_and_pending_nodes_per_cluster():
    report = MaintenanceReport(
        cluster="aks-prod-weu",
        started_at="t",
        nodes=[
            NodeReport(node="a", outcome=Outcome.rebooted),
            NodeReport(node="b", outcome=Outcome.rebooted),
            NodeReport(node="c", outcome=Outcome.failed),
            NodeReport(node="d", outcome=Outcome.held),
        ],
        still_need_reboot=["c", "d"],
        kernels_after={"5.15.0-1081-azure": 2, "5.15.0-1079-azure": 2},
    )
    prod = summarise(row("prod-weu"), run("Failed", "halted"), report)
    assert (prod.cluster, prod.rebooted, prod.failed, prod.still_pending, prod.ok) == (
        "aks-prod-weu",
        2,
        1,
        ["c", "d"],
        False,
    )
    # the report as stored in JSON reads the same
    assert summarise(row("prod-weu"), run("Failed"), report.model_dump(mode="json")).rebooted == 2
    crashed = summarise(row("staging-eus"), run("Crashed", "worker died"), None)
    assert crashed.report_missing and crashed.cluster == "staging-eus" and not crashed.ok


def test_an_upgrade_run_is_summarised_by_its_operations():
    step = UpgradeStep(kind=StepKind.node_image, pool="nodepool1", from_version="old", to_version="new")
    report = UpgradeReport(
        cluster="aks-dev",
        mode=UpgradeMode.node_image,
        dry_run=False,
        started_at="t",
        plan=UpgradePlan(steps=[step]),
        operations=[OperationResult(step=step, status=OperationStatus.succeeded)],
        kernels_after={"5.15.0-1081-azure": 3},
        outcome="upgraded",
    )
    done = summarise(row("dev", DeploymentKind.node_image_upgrade), run("Completed", "upgraded"), report)
    assert (done.cluster, done.failed, done.ok) == ("aks-dev", 0, True)
    assert done.changes == ["pool nodepool1: node image old -> new: succeeded"]
    nothing = report.model_copy(update={"operations": [], "outcome": "nothing to do"})
    assert summarise(row("dev", DeploymentKind.node_image_upgrade), run("Completed"), nothing).changes == [
        "nothing to do"
    ]


def test_an_earlier_run_counts_when_it_completed_and_was_not_a_dry_run():
    def earlier(deployment: str, state: str, hour: int, dry_run: bool = False) -> SimpleNamespace:
        return run(
            state,
            deployment_id=deployment,
            end_time=datetime(2025, 3, 1, hour, tzinfo=UTC),
            parameters={"dry_run": dry_run},
        )

    runs = [
        earlier("a", "Completed", 1),
        earlier("a", "Completed", 3),
        earlier("b", "Completed", 4, dry_run=True),
        earlier("c", "Failed", 5),
    ]
    finished = latest_finished(runs)
    assert list(finished) == ["a"] and finished["a"].end_time.hour == 3


# ---- a stage, and the run across stages ------------------------------------------------------------
def stage_of(*keys: str, approval: StageApproval = StageApproval.none) -> StageReport:
    return StageReport(
        name="-".join(keys), max_parallel=2, approval=approval, clusters=[row(k) for k in keys]
    )


def fake_runner(failing: set[str], log: list[str], delay: float = 0.01):
    running = {"now": 0, "most": 0}

    async def run_one(r: ClusterSummary) -> ClusterSummary:
        log.append(f"start {r.cluster}")
        running["now"] += 1
        running["most"] = max(running["most"], running["now"])
        await asyncio.sleep(delay)
        running["now"] -= 1
        log.append(f"end {r.cluster}")
        return r.model_copy(update={"state": "Failed" if r.cluster in failing else "Completed"})

    return run_one, running


def test_a_stage_starts_its_clusters_in_order_at_most_max_parallel_at_a_time():
    stage = stage_of("a", "b", "c", "d", "e")
    stage.clusters[1].earlier_run = True
    log: list[str] = []
    run_one, running = fake_runner(set(), log)
    asyncio.run(run_stage(stage, 2, run_one, lambda: False))
    assert [e for e in log if e.startswith("start")] == ["start a", "start c", "start d", "start e"]
    assert running["most"] == 2
    assert [c.state for c in stage.clusters] == [
        "Completed",
        NOT_STARTED,
        "Completed",
        "Completed",
        "Completed",
    ]


def test_a_stage_starts_no_more_clusters_once_failures_exceed_the_limit_and_those_running_finish():
    stage = stage_of("a", "b", "c", "d")
    log: list[str] = []
    run_one, _ = fake_runner({"a"}, log)
    report = FleetReport(stages=[stage])
    asyncio.run(run_stage(stage, 2, run_one, lambda: len(report.failed) > 0))
    assert log == ["start a", "start b", "end a", "end b"]
    assert [c.state for c in stage.clusters] == ["Failed", "Completed", NOT_STARTED, NOT_STARTED]


def update_run(report: FleetReport, failing: set[str], answers: dict[str, bool], max_failures: int = 0):
    log: list[str] = []
    run_one, _ = fake_runner(failing, log)

    async def approve(stage: StageReport, when: str) -> bool:
        log.append(f"approve {when} {stage.name}")
        if not answers.get(f"{when} {stage.name}", True):
            report.stopped = f"stage {stage.name}: not approved"
            return False
        return True

    asyncio.run(UpdateRun(report, run_one, approve, max_failures).run())
    return log


def test_stages_run_in_order_with_their_approval_gates():
    report = FleetReport(
        stages=[
            stage_of("a", "b", approval=StageApproval.after),
            stage_of("c", approval=StageApproval.before_and_after),
        ]
    )
    log = update_run(report, set(), {})
    assert log == [
        "start a",
        "start b",
        "end a",
        "end b",
        "approve after a-b",
        "approve before c",
        "start c",
        "end c",
        "approve after c",
    ]
    assert final_state(report).message == "3 cluster(s) done"


def test_the_run_stops_at_the_stage_whose_failures_exceed_max_failures():
    report = FleetReport(
        stages=[stage_of("a", "b", approval=StageApproval.after), stage_of("c", "d"), stage_of("e")]
    )
    log = update_run(report, {"b", "c"}, {}, max_failures=1)
    assert "start e" not in log and "approve after a-b" in log
    assert report.stopped == (
        "stopped in stage c-d: 2 cluster(s) failed (b, c), more than max_failures=1; 1 cluster(s) not started"
    )
    state = final_state(report)
    assert state.is_failed() and state.message == report.stopped


def test_an_unapproved_gate_stops_the_run_before_the_next_stage():
    report = FleetReport(stages=[stage_of("a", approval=StageApproval.after), stage_of("b")])
    log = update_run(report, set(), {"after a": False})
    assert log == ["start a", "end a", "approve after a"]
    assert report.stages[1].clusters[0].state == NOT_STARTED
    assert final_state(report).is_failed()


def test_a_rerun_skips_what_an_earlier_run_finished_but_still_asks_the_gate_guarding_what_is_left():
    first = stage_of("a", "b", approval=StageApproval.before_and_after)
    second = stage_of("c", "d", approval=StageApproval.after)
    for c in [*first.clusters, second.clusters[0]]:
        c.state, c.earlier_run = "Completed", True
    report = FleetReport(name="march", stages=[first, second])
    log = update_run(report, set(), {})
    # stage a-b is not run again, nor gated before; its gate after it guards stage c-d, where d is left
    assert log == ["approve after a-b", "start d", "end d", "approve after c-d"]
    assert final_state(report).message == "4 cluster(s) done, 3 of them in an earlier run"
    # and a rerun with nothing left asks nothing
    report.stages[1].clusters[1].earlier_run = True
    assert update_run(report, set(), {}) == []


# ---- the fleet-summary artifact --------------------------------------------------------------------
def test_the_summary_has_a_table_per_stage_and_a_row_per_cluster():
    prod = summarise(
        row("prod-weu"),
        run("Completed"),
        MaintenanceReport(
            cluster="aks-prod-weu",
            started_at="t",
            nodes=[NodeReport(node="a", outcome=Outcome.rebooted)],
            kernels_after={"5.15.0-1081-azure": 1, "5.15.0-1079-azure": 2},
        ),
    )
    earlier = prod.model_copy(update={"cluster": "aks-staging-eus", "earlier_run": True})
    crashed = summarise(row("prod-neu"), run("Crashed", "worker died"), None)
    report = new_report("march", [])
    report.stages = [
        StageReport(
            name="staging",
            approval=StageApproval.after,
            clusters=[earlier],
            notes=["approved after the stage"],
        ),
        StageReport(name="prod", max_parallel=2, clusters=[prod, crashed, row("dev")]),
    ]
    report.stopped = "stopped in stage prod: 1 cluster(s) failed"
    markdown = summary_markdown(report)
    assert markdown.startswith("# Fleet update run march\n")
    assert (
        "4 cluster(s) in 2 stage(s): 2 done (1 in an earlier run), 1 failed, 1 not started. "
        "2 node(s) patched, 0 failed, 0 still waiting for a reboot." in markdown
    )
    assert "**Stopped:** stopped in stage prod: 1 cluster(s) failed" in markdown
    assert "## Stage 1: staging (1 cluster(s), 1 at a time, approval after)" in markdown
    assert "- approved after the stage" in markdown
    assert "## Stage 2: prod (3 cluster(s), 2 at a time)" in markdown
    assert (
        "| aks-staging-eus | done in an earlier run | 1 | 0 | - | 5.15.0-1079-azure x2, 5.15.0-1081-azure x1 | - "
        "| node-maintenance/prod-weu | crimson-fox |" in markdown
    )
    assert "| aks-prod-weu | Completed | 1 | 0 | - |" in markdown
    assert (
        "| prod-neu | Crashed (no report: worker died) | 0 | 0 | - | - | - | node-maintenance/prod-neu |"
        in markdown
    )
    assert "| dev | not started | - | - | - | - | - | node-maintenance/dev | - |" in markdown


@pytest.mark.parametrize(
    ("states", "message"),
    [
        (["Completed", "Failed"], "clusters needing attention: b (Failed)"),
        (["Completed", "Completed"], "2 cluster(s) done"),
    ],
)
def test_the_runs_final_state_names_the_clusters_needing_attention(states, message):
    stage = stage_of("a", "b")
    for c, s in zip(stage.clusters, states, strict=True):
        c.state = s
    assert final_state(FleetReport(stages=[stage])).message == message
