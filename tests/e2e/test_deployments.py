"""End to end through a real Prefect server: deploy prefect.yaml, run deployments with real workers against
simulated AKS clusters, refuse bad parameters, cancel a run mid-drain, check schedules across daylight
saving time, and look at the custom-run form in a real browser.

The server, the process pool and every deployment are set up once per session (tests/e2e/conftest.py);
each test starts the simulated clusters it needs, with their kubeconfigs where the deployments look.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from kubernetes import client, config

from aksmaint.nodestate import STATE_ANNOTATION
from aksmaint.params import MaintenanceWindow
from simulator.controllers.common import node_name
from tests.e2e.conftest import NEW_KERNEL, POOL, PrefectServer, demo_scenario, prefect_yaml
from tests.support import ROOT, pinned_pod

pytestmark = pytest.mark.e2e

OUT = ROOT / "out"
CLUSTERS = ("prod-weu", "staging-eus")
MAINTENANCE = "node-maintenance/{}-node-maintenance"
SLOT_LEASE = "aks-maintenance-slot-0"


def run_deployment(server: PrefectServer, name: str, *params: str) -> str:
    """`prefect deployment run NAME --param k=v ...`; the new flow run's id."""
    args = ["deployment", "run", name]
    for p in params:
        args += ["--param", p]
    out = server.cli(*args).stdout
    match = re.search(r"UUID: ([0-9a-f-]{36})", out)
    assert match, out
    return match.group(1)


def core_api(kubeconfig: str) -> client.CoreV1Api:
    return client.CoreV1Api(config.new_client_from_config(config_file=kubeconfig))


# ---- deploy --------------------------------------------------------------------------------------------
def test_deploy_all_creates_three_deployments_per_cluster_from_the_clusters_section(prefect_server):
    clusters = prefect_yaml()["definitions"]["clusters"]
    assert set(clusters) == set(CLUSTERS)
    for key, block in clusters.items():
        maintenance = prefect_server.deployment(MAINTENANCE.format(key))
        image = prefect_server.deployment(f"cluster-upgrade/{key}-node-image-upgrade")
        kubernetes = prefect_server.deployment(f"cluster-upgrade/{key}-kubernetes-upgrade")
        for d in (maintenance, image, kubernetes):
            assert d["work_pool_name"] == POOL
            assert d["enforce_parameter_schema"] is True
            assert f"cluster:{key}" in d["tags"] and any(t.startswith("env:") for t in d["tags"])
            assert d["global_concurrency_limit"]["limit"] == 1
            assert d["concurrency_options"]["collision_strategy"] == "ENQUEUE"
            # the pull step names the project folder by a run-time variable, never by an absolute path
            directory = d["pull_steps"][0]["prefect.deployments.steps.set_working_directory"]["directory"]
            assert directory == "{{ $AKSMAINT_PROJECT_DIR }}"
        # deploy-time variables filled in per machine: the kubeconfig path of this test profile
        assert maintenance["parameters"]["cluster"] == {
            "kubeconfig": f"{prefect_server.env['AKSMAINT_KUBECONFIG_DIR']}/{key}.kubeconfig"
        }
        assert maintenance["parameters"]["window"] == block["window"]
        assert image["parameters"]["cluster"]["credential"] == "static-token"
        (nightly,) = maintenance["schedules"]
        (weekly,) = image["schedules"]
        assert (
            nightly["schedule"]["timezone"] == weekly["schedule"]["timezone"] == block["window"]["time_zone"]
        )
        assert nightly["active"] and weekly["active"]
        assert weekly["schedule"]["cron"].split()[4] in ("0", "6", "sun", "sat")
        assert kubernetes["schedules"] == []  # manual only
        assert kubernetes["parameters"]["mode"] == "kubernetes-version"


# ---- deployment runs through a worker -----------------------------------------------------------------
NEW_IMAGE = "AKSUbuntu-2204gen2containerd-202502.05.0"


def test_deployment_runs_through_a_worker_patch_and_upgrade_the_simulated_clusters(
    prefect_server, sim_cluster
):
    """One worker poll picks up two runs: prod-weu's node maintenance and staging-eus's node-image upgrade
    (its Azure endpoint given as a run parameter, since each simulator has its own)."""
    prod = sim_cluster("prod-weu", demo_scenario([("nodepool1", 0), ("userpool", 1)]))
    staging = sim_cluster("staging-eus", demo_scenario([]))
    maintenance_run = run_deployment(
        prefect_server, MAINTENANCE.format("prod-weu"), "window=null", "concurrency=2"
    )
    azure = {
        **prefect_server.deployment("cluster-upgrade/staging-eus-node-image-upgrade")["parameters"][
            "cluster"
        ],
        "arm_endpoint": staging.endpoints.arm,
        "ca_bundle": staging.endpoints.ca_bundle,
    }
    upgrade_run = run_deployment(
        prefect_server,
        "cluster-upgrade/staging-eus-node-image-upgrade",
        f"cluster={json.dumps(azure)}",
        'pools=["nodepool1"]',
        "respect_maintenance_window=false",
        "poll_interval_seconds=0.5",
    )
    worker = subprocess.run(
        [*prefect_server_worker_cmd(), "--run-once"],
        env={**prefect_server.env, "AZURE_ACCESS_TOKEN": staging.endpoints.token},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    log = worker.stdout[-3000:] + worker.stderr[-3000:]

    run = prefect_server.flow_run(maintenance_run)
    assert run["state"]["type"] == "COMPLETED", log
    assert run["state"]["message"] == "aks-prod-weu: 2 rebooted, 3 not-needed"
    patched = {node_name("aks-prod-weu", "nodepool1", 0), node_name("aks-prod-weu", "userpool", 1)}
    kernels = prod.kernels()
    assert {n for n, k in kernels.items() if k == NEW_KERNEL} == patched
    assert prod.observer.invariants()["pdb_violations"] == 0
    nodes = {n.metadata.name: n for n in core_api(prod.kubeconfig).list_node().items}
    assert {n: nodes[n].status.node_info.kernel_version for n in patched} == dict.fromkeys(
        patched, NEW_KERNEL
    )
    assert not any(n.spec.unschedulable for n in nodes.values())

    run = prefect_server.flow_run(upgrade_run)
    assert run["state"]["type"] == "COMPLETED", (run["state"], log)
    images = {
        n.metadata.labels["kubernetes.azure.com/node-image-version"]
        for n in core_api(staging.kubeconfig).list_node().items
        if n.metadata.labels["kubernetes.azure.com/agentpool"] == "nodepool1"
    }
    assert images == {NEW_IMAGE}
    assert staging.observer.invariants()["pdb_violations"] == 0


def prefect_server_worker_cmd() -> list[str]:
    from tests.e2e.conftest import PREFECT

    return [PREFECT, "worker", "start", "--pool", POOL]


# ---- bad parameters ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("param", "field"),
    [
        ("concurrency=0", "concurrency"),
        ('drain={"on_timeout": "explode"}', "on_timeout"),
        ('window={"start": "25:00", "end": "04:00", "time_zone": "UTC"}', "start"),
    ],
)
def test_bad_parameters_are_refused_by_the_server_naming_the_field(prefect_server, sim_cluster, param, field):
    sim = sim_cluster("prod-weu", demo_scenario([("nodepool1", 0)]))
    deployment = prefect_server.deployment(MAINTENANCE.format("prod-weu"))
    before = {r["id"] for r in prefect_server.runs_of(deployment["id"])}
    result = prefect_server.cli(
        "deployment", "run", MAINTENANCE.format("prod-weu"), "--param", param, check=False
    )
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "Validation failed" in output or "validation" in output.lower(), output
    assert field in output, output
    # the API says the same to any client, and nothing was created or sent to the cluster
    key, value = param.split("=", 1)
    value = json.loads(value)
    response = prefect_server.http.post(
        f"/deployments/{deployment['id']}/create_flow_run", json={"parameters": {key: value}}
    )
    assert response.status_code in (409, 422) and field in response.text, response.text
    assert {r["id"] for r in prefect_server.runs_of(deployment["id"])} == before
    assert [e for e in sim.observer.audit() if "aks-node-maintenance" in e["user_agent"]] == []


# ---- cancellation mid-drain -------------------------------------------------------------------------
def test_cancel_while_a_node_is_drained_uncordons_it_and_releases_the_slot(prefect_server, sim_cluster):
    scenario = demo_scenario([("nodepool1", 0)])
    scenario["workloads"].append(pinned_pod())  # the drain can never finish
    sim = sim_cluster("prod-weu", scenario)
    node = node_name("aks-prod-weu", "nodepool1", 0)
    core = core_api(sim.kubeconfig)
    coordination = client.CoordinationV1Api(core.api_client)
    prefect_server.start_worker()
    run_id = run_deployment(
        prefect_server,
        MAINTENANCE.format("prod-weu"),
        "window=null",
        'drain={"timeout_seconds": 600, "eviction_retry_seconds": 0.5}',
    )

    def draining() -> bool:
        n = core.read_node(node)
        record = json.loads((n.metadata.annotations or {}).get(STATE_ANNOTATION, "{}"))
        return bool(n.spec.unschedulable) and record.get("phase") == "draining"

    sim.observer.wait_for(draining, timeout=180, interval=0.5)
    holder = coordination.read_namespaced_lease(SLOT_LEASE, "kube-system").spec.holder_identity
    assert holder == f"{run_id[:8]}/{node}"

    prefect_server.post(
        f"/flow_runs/{run_id}/set_state",
        {"state": {"type": "CANCELLING", "name": "Cancelling"}, "force": True},
    )
    prefect_server.wait_for_state(run_id, {"CANCELLED"}, timeout=120)

    def cleaned_up() -> bool:
        n = core.read_node(node)
        lease = coordination.read_namespaced_lease(SLOT_LEASE, "kube-system")
        return (
            not n.spec.unschedulable
            and STATE_ANNOTATION not in (n.metadata.annotations or {})
            and not lease.spec.holder_identity
        )

    try:
        sim.observer.wait_for(cleaned_up, timeout=90, interval=0.5)
    except TimeoutError:
        pytest.fail(
            f"node or slot not cleaned up after cancel; worker log:\n{prefect_server.worker_log()[-4000:]}"
        )
    # nothing rebooted, and the node stays uncordoned (the cancelled drain did not resume)
    time.sleep(2)
    assert not core.read_node(node).spec.unschedulable
    assert sim.observer.invariants()["reboots"].get(node, 0) == 0


# ---- fleet ---------------------------------------------------------------------------------------------
def test_fleet_runs_every_clusters_deployment_and_writes_one_summary(prefect_server, sim_cluster):
    sims = {
        "prod-weu": sim_cluster("prod-weu", demo_scenario([("nodepool1", 0), ("userpool", 1)])),
        "staging-eus": sim_cluster("staging-eus", demo_scenario([("nodepool1", 1)])),
    }
    if not any(w.poll() is None for w in prefect_server.workers):
        prefect_server.start_worker()
    run_id = run_deployment(
        prefect_server,
        "fleet/fleet-node-maintenance",
        'overrides={"*": {"window": null}, "prod-weu-node-maintenance": {"concurrency": 2}}',
        "poll_interval_seconds=1",
    )
    run = prefect_server.wait_for_state(run_id, {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}, timeout=300)
    assert run["state"]["type"] == "COMPLETED", (run["state"], prefect_server.worker_log()[-4000:])
    (artifact,) = prefect_server.post(
        "/artifacts/filter",
        {"artifacts": {"key": {"any_": ["fleet-summary"]}, "flow_run_id": {"any_": [run_id]}}},
    )
    rows = {
        cells[0]: cells
        for line in artifact["data"].splitlines()
        if line.startswith("| aks-")
        for cells in [[c.strip() for c in line.strip("|").split("|")]]
    }
    assert rows["aks-prod-weu"][1:5] == ["Completed", "2", "0", "-"]
    assert rows["aks-prod-weu"][5] == f"5.15.0-1079-azure x3, {NEW_KERNEL} x2"
    assert rows["aks-staging-eus"][1:5] == ["Completed", "1", "0", "-"]
    for key, sim in sims.items():
        assert NEW_KERNEL in sim.kernels().values(), key
    # the children are the clusters' own deployments, run with the overrides merged into their parameters
    children = prefect_server.post(
        "/flow_runs/filter", {"flow_runs": {"parent_flow_run_id": {"any_": [run_id]}}}
    )
    by_deployment = {c["deployment_id"]: c for c in children}
    prod = prefect_server.deployment(MAINTENANCE.format("prod-weu"))
    assert by_deployment[prod["id"]]["parameters"]["concurrency"] == 2
    assert by_deployment[prod["id"]]["parameters"]["window"] is None
    assert by_deployment[prod["id"]]["parameters"]["drain"] == prod["parameters"]["drain"]


# ---- schedules across daylight saving time -------------------------------------------------------------
@pytest.mark.parametrize(
    ("key", "start", "end"),
    [
        ("prod-weu", "2027-03-22T00:00:00Z", "2027-04-03T00:00:00Z"),  # Europe/Berlin: CEST from 28 March
        ("staging-eus", "2027-03-08T00:00:00Z", "2027-03-20T00:00:00Z"),  # New York: EDT from 14 March
    ],
)
def test_scheduled_runs_keep_their_local_time_across_daylight_saving(prefect_server, key, start, end):
    block = prefect_yaml()["definitions"]["clusters"][key]
    deployment = prefect_server.deployment(MAINTENANCE.format(key))
    prefect_server.post(
        f"/deployments/{deployment['id']}/schedule",
        {
            "start_time": start,
            "end_time": end,
            "min_time": (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds(),
            "min_runs": 1,
            "max_runs": 100,
        },
    )
    runs = prefect_server.post(
        "/flow_runs/filter",
        {
            "deployments": {"id": {"any_": [deployment["id"]]}},
            "flow_runs": {"expected_start_time": {"after_": start, "before_": end}},
        },
    )
    cron = block["maintenance"]["schedules"][0]["cron"].split()
    zone = ZoneInfo(block["window"]["time_zone"])
    window = MaintenanceWindow(**block["window"])
    local = [datetime.fromisoformat(r["expected_start_time"]).astimezone(zone) for r in runs]
    assert len(local) >= 8
    assert {(t.hour, t.minute) for t in local} == {(int(cron[1]), int(cron[0]))}
    assert {t.strftime("%a").lower() for t in local} <= set(window.days)
    assert all(window.is_open(t) for t in local)
    # the same local time is a different UTC time on either side of the change
    assert len({t.utcoffset() for t in local}) == 2
    assert len({datetime.fromisoformat(r["expected_start_time"]).hour for r in runs}) == 2


# ---- the custom-run form in a real browser -------------------------------------------------------------
def chromium() -> str:
    subprocess.run([str(ROOT / "scripts" / "ensure-chromium.sh")], check=True, capture_output=True)
    path = shutil.which("chromium")
    assert path, "chromium is not installed"
    return path


def test_custom_run_form_shows_our_parameter_groups_in_a_real_browser(prefect_server, tmp_path):
    browser = chromium()
    deployment = prefect_server.deployment(MAINTENANCE.format("prod-weu"))
    url = f"{prefect_server.url}/deployments/deployment/{deployment['id']}/run"
    OUT.mkdir(exist_ok=True)
    screenshot = OUT / "custom-run-form.png"
    common = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--hide-scrollbars",
        f"--user-data-dir={tmp_path / 'chromium'}",
        "--window-size=1400,5000",
        "--virtual-time-budget=30000",
    ]
    dom = subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
    subprocess.run([*common, f"--screenshot={screenshot}", url], capture_output=True, timeout=120, check=True)
    (OUT / "custom-run-form.html").write_text(dom)
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom))
    assert "Can't connect to Server API" not in text
    # one group per parameter model, with the model's and its fields' descriptions
    for expected in (
        "How many nodes may be cordoned, drained or rebooting at the same time",
        "More limits (all nodes, per pool, per zone",
        "How pods leave a node before its reboot",
        "Seconds to wait for a node's pods to leave",
        "When reboots may start",
        "IANA time zone",
        "The reboot slots",
        "Wait while kured",
        "How the flow finds out which nodes need a reboot",
    ):
        assert expected in text, f"{expected!r} not on the form; see {OUT / 'custom-run-form.html'}"
    # a form with fields, not one raw JSON box
    assert dom.count("<input") >= 10, "the parameters are not rendered as a form"
    assert screenshot.stat().st_size > 20_000
