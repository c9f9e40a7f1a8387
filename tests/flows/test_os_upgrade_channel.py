"""AKS's node OS upgrade channel decides whether kured-style reboots belong on a cluster: under
SecurityPatch or NodeImage AKS patches or reimages the nodes itself, and node-maintenance reboots
nothing unless told to; under Unmanaged (and None) it goes on as always."""

from __future__ import annotations

import subprocess
import sys

import pytest

from aksmaint.report import MaintenanceReport, Outcome
from flows.cluster_upgrade import cluster_upgrade
from flows.node_maintenance import node_maintenance
from tests.flows.test_cluster_upgrade import NAME, RG, SUB, aks_cluster
from tests.support import ROOT, cli_env, fast_params, needing_reboot, scenario_dict

WINDOW = {
    "maintenance_window": {
        "schedule": {"weekly": {"interval_weeks": 1, "day_of_week": "Saturday"}},
        "duration_hours": 4,
        "start_time": "02:00",
        "utc_offset": "+01:00",
    }
}


def demo(channel: str | None, schedule: bool = False) -> dict:
    cluster: dict = {}
    if channel is not None:
        cluster["node_os_upgrade_channel"] = channel
    if schedule:
        cluster["maintenance_configurations"] = {"aksManagedNodeOSUpgradeSchedule": WINDOW}
    return scenario_dict(cluster=cluster)


def maintain(sim, monkeypatch, **overrides) -> MaintenanceReport:
    monkeypatch.setenv("AZURE_ACCESS_TOKEN", sim.endpoints.token)
    params = fast_params(sim, **overrides)
    params["cluster"] = {"aks": aks_cluster(sim).model_dump(mode="json")}
    state = node_maintenance(**params, return_state=True)
    assert state.is_completed(), state.message
    return state.result()


@pytest.mark.parametrize(
    ("channel", "does"), [("NodeImage", "reimages the nodes"), ("SecurityPatch", "applies security patches")]
)
def test_a_channel_where_aks_patches_itself_holds_every_reboot(
    start_sim, prefect_api, monkeypatch, channel, does
):
    sim = start_sim(demo(channel, schedule=True))
    needed = needing_reboot(sim)
    report = maintain(sim, monkeypatch)
    assert report.node_os_upgrade_channel == channel
    held = {n.node: n for n in report.nodes if n.node in needed}
    assert {n: r.outcome for n, r in held.items()} == dict.fromkeys(needed, Outcome.held)
    for r in held.values():
        assert f"node OS upgrade channel is {channel}" in r.reason, r.reason
        assert does in r.reason and "respect_os_upgrade_channel" in r.reason
        assert "Saturday" in r.reason and "02:00" in r.reason, "the reason names AKS's own window"
    assert report.still_need_reboot == needed
    # the scan looked (its host pods come and go); no node was cordoned, tainted, drained or rebooted
    assert [e for e in sim.observer.mutating_requests() if e["resource"] != "pods" or e["subresource"]] == []
    assert {e["event"] for e in sim.observer.timeline()} & {"cordoned", "pod_evicted", "rebooted"} == set()


def test_the_channel_can_be_overridden(start_sim, prefect_api, monkeypatch):
    sim = start_sim(demo("NodeImage"))
    needed = needing_reboot(sim)
    report = maintain(sim, monkeypatch, respect_os_upgrade_channel=False)
    assert report.node_os_upgrade_channel == "NodeImage"
    assert {n.node: n.outcome for n in report.nodes if n.node in needed} == dict.fromkeys(
        needed, Outcome.rebooted
    )
    assert sim.observer.invariants()["reboots"] == dict.fromkeys(needed, 1)


@pytest.mark.parametrize("channel", [None, "Unmanaged", "None"])
def test_unmanaged_and_none_go_on_as_always(start_sim, prefect_api, monkeypatch, channel):
    sim = start_sim(demo(channel))
    needed = needing_reboot(sim)
    report = maintain(sim, monkeypatch)
    assert report.node_os_upgrade_channel == (channel or "Unmanaged")
    assert {n.node: n.outcome for n in report.nodes if n.node in needed} == dict.fromkeys(
        needed, Outcome.rebooted
    )


def test_without_an_aks_connection_the_channel_is_unknown_and_the_run_goes_on(start_sim, prefect_api):
    sim = start_sim(demo("NodeImage"))
    needed = needing_reboot(sim)
    state = node_maintenance(**fast_params(sim), return_state=True)
    report = state.result()
    assert report.node_os_upgrade_channel == ""
    assert {n.node: n.outcome for n in report.nodes if n.node in needed} == dict.fromkeys(
        needed, Outcome.rebooted
    )


def test_the_cluster_upgrade_report_shows_the_channel(start_sim, prefect_api, monkeypatch):
    sim = start_sim(demo("SecurityPatch"))
    monkeypatch.setenv("AZURE_ACCESS_TOKEN", sim.endpoints.token)
    state = cluster_upgrade(cluster=aks_cluster(sim), mode="node-image", dry_run=True, return_state=True)
    report = state.result()
    assert report.node_os_upgrade_channel == "SecurityPatch"


def test_the_command_line_reaches_the_cluster_by_its_aks_id_and_says_why_nothing_reboots(
    start_sim, prefect_api, tmp_path
):
    sim = start_sim(demo("NodeImage"))
    needed = needing_reboot(sim)
    command = [
        sys.executable,
        "-m",
        "flows.node_maintenance",
        *("--subscription-id", SUB, "--resource-group", RG, "--name", NAME),
        *("--credential", "static-token", "--arm-endpoint", sim.endpoints.arm),
        *("--ca-bundle", sim.endpoints.ca_bundle),
    ]
    env = {**cli_env(tmp_path), "AZURE_ACCESS_TOKEN": sim.endpoints.token}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)

    assert done.returncode == 0, done.stdout + done.stderr
    assert "Node OS upgrade channel: NodeImage" in done.stdout
    for name in needed:
        line = next(line for line in done.stdout.splitlines() if name in line)
        assert " held " in line and "node OS upgrade channel is NodeImage" in line, line
    assert {e["event"] for e in sim.observer.timeline()} & {"cordoned", "rebooted"} == set()

    again = subprocess.run(
        [*command, "--ignore-os-upgrade-channel"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert sim.observer.invariants()["reboots"] == dict.fromkeys(needed, 1)
