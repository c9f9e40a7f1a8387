"""The fleet flow's plain parts: which parameters each cluster's run gets, and how a run is summarised."""

from __future__ import annotations

from types import SimpleNamespace

from aksmaint.report import MaintenanceReport, NodeReport, Outcome
from flows.fleet import FleetReport, deep_merge, full_name, run_parameters, summarise, summary_markdown


def test_bare_deployment_names_are_node_maintenance_deployments():
    assert full_name("prod-weu-node-maintenance") == "node-maintenance/prod-weu-node-maintenance"
    assert full_name("node-maintenance/x") == "node-maintenance/x"


def test_overrides_merge_into_the_deployments_parameters_key_by_key():
    defaults = {
        "cluster": {"kubeconfig": "/k"},
        "drain": {"timeout_seconds": 900, "on_timeout": "uncordon-and-skip"},
    }
    overrides = {
        "*": {"dry_run": True, "drain": {"timeout_seconds": 60}},
        "prod-weu-node-maintenance": {"dry_run": False, "concurrency": 2},
        "node-maintenance/other": {"concurrency": 9},
    }
    params = run_parameters("node-maintenance/prod-weu-node-maintenance", defaults, overrides)
    assert params == {
        "cluster": {"kubeconfig": "/k"},
        "drain": {"timeout_seconds": 60, "on_timeout": "uncordon-and-skip"},
        "dry_run": False,
        "concurrency": 2,
    }
    assert defaults["drain"]["timeout_seconds"] == 900  # the deployment's own parameters are not changed
    assert run_parameters("node-maintenance/other", defaults, overrides)["concurrency"] == 9


def test_an_override_can_clear_a_value():
    assert deep_merge({"window": {"start": "01:00"}}, {"window": None}) == {"window": None}


def run(state_name: str, message: str = "") -> SimpleNamespace:
    return SimpleNamespace(id="r1", state=SimpleNamespace(name=state_name, message=message))


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
    prod = summarise("node-maintenance/prod-weu-node-maintenance", run("Failed", "halted"), report)
    assert (prod.cluster, prod.rebooted, prod.failed, prod.still_pending) == (
        "aks-prod-weu",
        2,
        1,
        ["c", "d"],
    )
    crashed = summarise("node-maintenance/staging-eus-node-maintenance", run("Crashed", "worker died"), None)
    assert crashed.report_missing and crashed.cluster == "staging-eus"
    fleet = FleetReport(clusters=[prod, crashed])
    assert [c.cluster for c in fleet.failed] == ["aks-prod-weu", "staging-eus"]
    markdown = summary_markdown(fleet)
    assert "2 cluster(s): 2 node(s) patched, 1 failed, 2 still waiting for a reboot." in markdown
    assert "| aks-prod-weu | Failed | 2 | 1 | c, d | 5.15.0-1079-azure x2, 5.15.0-1081-azure x2 |" in markdown
    assert "| staging-eus | Crashed (no report: worker died) | 0 | 0 | - | - |" in markdown
