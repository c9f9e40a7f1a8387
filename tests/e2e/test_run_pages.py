"""What an operator sees of a rollout in the Prefect UI: a deployment run through a real worker on a cluster
where nodes end rebooted, not-needed, held, quarantined and failed. The REST API must hold each node's task
run in the state of its outcome, with the phases nested under it; then headless Chromium opens the flow
run's page and the failed node's task-run page and reads what they render. Screenshots go to out/."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from simulator.controllers.common import node_name
from tests.e2e.conftest import PrefectServer
from tests.e2e.test_deployments import MAINTENANCE, OUT, chromium, run_deployment
from tests.flows.test_gates_and_policies import db_pods_on
from tests.flows.test_task_run_states import mixed_scenario

pytestmark = pytest.mark.e2e

CLUSTER = "aks-prod-weu"
QUARANTINED, NOT_NEEDED = node_name(CLUSTER, "nodepool1", 0), node_name(CLUSTER, "nodepool1", 1)
REBOOTED, FAILED = node_name(CLUSTER, "userpool", 0), node_name(CLUSTER, "userpool", 1)
HELD = node_name(CLUSTER, "heldpool", 0)
PHASES = ["reboot-slot", "re-check", "cordon", "drain", "reboot", "health-verify"]


def task_runs(server: PrefectServer, flow_run_id: str, done: int, timeout: float = 180) -> dict[str, dict]:
    """The flow run's task runs by name, once ``done`` are in a final state. Task-run states reach the
    server as events, which its task-run recorder writes in batches: on a loaded machine the last ones
    land a while after the flow run's own final state."""
    deadline = time.monotonic() + timeout
    while True:
        runs = httpx_post(
            server, "/task_runs/filter", {"flow_runs": {"id": {"any_": [flow_run_id]}}, "limit": 200}
        )
        final = [r for r in runs if r["state"] and r["state"]["type"] in ("COMPLETED", "FAILED", "CANCELLED")]
        if len(final) >= done or time.monotonic() > deadline:
            return {r["name"]: r for r in runs}
        time.sleep(0.5)


def httpx_post(server: PrefectServer, path: str, body: dict) -> list[dict]:
    answer = server.post(path, body)
    assert isinstance(answer, list), answer
    return answer


class Browser:
    """Debian's Chromium driven by Playwright. WebGL goes through SwiftShader, so the run graph is drawn."""

    def __init__(self, playwright, tmp_path: Path):
        self.browser = playwright.chromium.launch(
            executable_path=chromium(),
            args=[
                "--no-sandbox",
                "--use-gl=angle",
                "--use-angle=swiftshader",
                "--enable-unsafe-swiftshader",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        self.page = self.browser.new_page(viewport={"width": 1600, "height": 1300})

    def open(self, url: str, wait_for: str, tab: str | None = None) -> None:
        self.page.goto(url)
        if tab is not None:
            self.page.get_by_role("tab", name=tab).or_(self.page.get_by_text(tab, exact=True)).first.click()
        self.page.get_by_text(wait_for).first.wait_for(timeout=60_000)

    def text(self, name: str) -> str:
        """The page's text as rendered, kept with a screenshot in out/."""
        OUT.mkdir(exist_ok=True)
        self.page.screenshot(path=str(OUT / f"{name}.png"), full_page=True)
        html = self.page.content()
        (OUT / f"{name}.html").write_text(html)
        return self.page.inner_text("body")


def test_the_run_pages_show_each_node_in_the_state_of_what_happened(prefect_server, sim_cluster, tmp_path):
    sim = sim_cluster("prod-weu", mixed_scenario())
    sim.observer.wait_for(lambda: len(db_pods_on(sim, QUARANTINED)) == 1, timeout=30)
    budgets = [
        {"scope": "pool", "name": "heldpool", "nodes": 1, "schedule": "0 0 1 1 *", "duration_minutes": 1}
    ]
    run_id = run_deployment(
        prefect_server,
        MAINTENANCE.format("prod-weu"),
        "window=null",
        "concurrency=2",
        "max_failures=1",
        "order=name",
        'drain={"timeout_seconds": 1.5, "eviction_retry_seconds": 0.25, "on_timeout": "quarantine"}',
        'reboot={"boot_timeout_seconds": 2}',
        'labels={"prefer_no_schedule_taint": false}',
        f"budgets={json.dumps(budgets)}",
    )
    worker = subprocess.run(
        [*prefect_server_worker(), "--run-once"],
        env=prefect_server.env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    try:
        run = prefect_server.wait_for_state(
            run_id, {"FAILED", "COMPLETED", "CRASHED", "CANCELLED"}, timeout=120
        )
    except AssertionError:
        pytest.fail(f"the run never ended; worker:\n{worker.stdout[-3000:]}\n{worker.stderr[-3000:]}")
    assert run["state"]["type"] == "FAILED", run["state"]

    runs = task_runs(prefect_server, run_id, done=6 + 3 * len(PHASES))
    assert {
        n: (runs[n]["state"]["type"], runs[n]["state"]["name"])
        for n in (REBOOTED, NOT_NEEDED, HELD, QUARANTINED, FAILED)
    } == {
        REBOOTED: ("COMPLETED", "Rebooted"),
        NOT_NEEDED: ("COMPLETED", "NotNeeded"),
        HELD: ("CANCELLED", "Held"),
        QUARANTINED: ("FAILED", "Quarantined"),
        FAILED: ("FAILED", "Failed"),
    }
    for node in (REBOOTED, FAILED):
        for phase in PHASES:
            step = runs[f"{node}/{phase}"]
            assert step["task_inputs"]["__parents__"] == [{"input_type": "task_run", "id": runs[node]["id"]}]
    assert runs[f"{FAILED}/health-verify"]["state"]["type"] == "FAILED"
    assert runs[f"{FAILED}/reboot"]["state"]["name"] == "Completed", (
        "the failed node's reboot is not rolled back"
    )
    assert runs[f"{REBOOTED}/uncordon"]["state"]["type"] == "COMPLETED"

    with sync_playwright() as playwright:
        browser = Browser(playwright, tmp_path)
        # the flow run's page: the graph, then the task runs tab with every node and phase by name
        browser.open(f"{prefect_server.url}/runs/flow-run/{run_id}", wait_for="Connected to")
        browser.page.wait_for_timeout(5000)  # the run graph is drawn on a canvas once its data is in
        browser.text("flow-run-graph")
        browser.open(f"{prefect_server.url}/runs/flow-run/{run_id}", wait_for=FAILED, tab="Task Runs")
        flow_page = browser.text("flow-run-task-runs")
        assert "Oops" not in flow_page and "Can't connect to Server API" not in flow_page
        for name in (REBOOTED, FAILED, QUARANTINED, HELD, f"{FAILED}/health-verify", f"{REBOOTED}/cordon"):
            assert name in flow_page, (
                f"{name} not on the flow run's page; see {OUT / 'flow-run-task-runs.png'}"
            )
        for state_name in ("Rebooted", "Failed", "Quarantined", "Held", "NotNeeded"):
            assert state_name in flow_page, state_name

        # the failed node's own page: Failed, why, and what to do next
        browser.open(
            f"{prefect_server.url}/runs/task-run/{runs[FAILED]['id']}", wait_for="did not come back healthy"
        )
        failed_page = browser.text("failed-node-task-run")
        assert FAILED in failed_page and "Failed" in failed_page
        assert "Next: the node stays cordoned" in failed_page, f"see {OUT / 'failed-node-task-run.png'}"
        browser.browser.close()
    assert (OUT / "failed-node-task-run.png").stat().st_size > 20_000


def prefect_server_worker() -> list[str]:
    from tests.e2e.conftest import POOL, PREFECT

    return [PREFECT, "worker", "start", "--pool", POOL]
