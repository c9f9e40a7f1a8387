"""The helpers of the whole suite (tests/conftest.py holds only its fixtures and hooks): scenarios, a
running simulator and its observer, reading the simulated cluster, and the flow's command line in its
own process (so that a case can SIGKILL it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import yaml
from kubernetes import client, config

from aksmaint.hostexec import MANAGED_BY
from aksmaint.kube import Kube
from aksmaint.maintenance.budgets import ALL, SlotSet
from aksmaint.maintenance.lock import RebootSlots
from aksmaint.nodestate import PENDING_TAINT_KEY, STATE_ANNOTATION
from aksmaint.params import LockOptions, with_overrides
from aksmaint.report import MaintenanceReport, Outcome
from scripts.prefect_postgres import free_port
from simulator.observe import SimObserver
from simulator.runtime import SimulatedAKS

ROOT = Path(__file__).resolve().parent.parent
DEMO_SCENARIO = ROOT / "scenarios" / "demo.yaml"  # the example plus a one-node Windows pool
EXAMPLE_SCENARIO = ROOT / "scenarios" / "example.yaml"  # the shared example, verbatim


def scenario_dict(
    name: str = "example",
    *,
    time_scale: float | None = None,
    cluster: dict | None = None,
    pools: dict[str, dict] | None = None,
) -> dict:
    """A scenario of scenarios/ as a plain dict, to be adjusted by a test before it starts a simulator:
    ``time_scale`` replaces the scenario's, ``cluster`` is merged into its cluster section and ``pools``
    into each pool it names.

    Most tests build on the shared example (5 Linux nodes); the demo's Windows node is tested where
    Windows pools are the subject."""
    scenario = yaml.safe_load((ROOT / "scenarios" / f"{name}.yaml").read_text())
    if time_scale is not None:
        scenario["time_scale"] = time_scale
    if cluster:
        scenario["cluster"] = {**scenario["cluster"], **cluster}
    for pool in scenario["pools"]:
        pool.update((pools or {}).get(pool["name"], {}))
    return scenario


def pinned_pod(index: int = 0, pool: str = "nodepool1", name: str = "pinned", **changes: object) -> dict:
    """A scenario workload: a bare pod on one node whose PodDisruptionBudget never allows an eviction,
    so a drain of that node can never finish (until a test deletes the budget)."""
    return {
        "kind": "Pod",
        "namespace": "default",
        "name": name,
        "node": {"pool": pool, "index": index},
        "labels": {"app": name},
        "pdb": {"max_unavailable": 0},
        **changes,
    }


class RunningSim:
    def __init__(self, sim: SimulatedAKS):
        self.sim = sim
        self.endpoints = sim.endpoints
        self.observer = SimObserver(sim.endpoints)

    @property
    def kubeconfig(self) -> str:
        return self.endpoints.kubeconfig


def fast_params(sim: RunningSim, **overrides: object) -> dict:
    """Maintenance-flow parameters for a simulated cluster with test-sized timeouts."""
    params: dict = {
        "cluster": {"kubeconfig": sim.kubeconfig},
        "drain": {"timeout_seconds": 30, "eviction_retry_seconds": 0.5},
        "reboot": {"boot_timeout_seconds": 30},
        "lock": {"ttl_seconds": 5, "wait_seconds": 60},
    }
    return with_overrides(params, overrides)


POOL = "nodepool1"
HOST_POD_LABEL = f"app.kubernetes.io/managed-by={MANAGED_BY}"  # the host pods the runs start
PENDING_KERNEL = "5.15.0-1081-azure"


def maintenance_scenario(
    need: int = 3, count: int = 4, replicas: int = 6, api_ready_seconds: float = 2, **pool_changes: object
) -> dict:
    """One pool of ``count`` nodes; the first ``need`` need a reboot; Deployments behind budgets: the
    demo's web (3 replicas, minAvailable 2) and ``replicas`` api pods (maxUnavailable 1). With a long
    ``api_ready_seconds``, replacements take a while to be Ready, so a drain has to wait out refused
    evictions."""
    demo = scenario_dict("example")
    return {
        **demo,
        "time_scale": 0.1,
        "pools": [{**demo["pools"][0], "count": count, **pool_changes}],
        "nodes": [
            {"pool": POOL, "index": i, "reboot_required": True, "pending_kernel": PENDING_KERNEL}
            for i in range(need)
        ],
        "workloads": [
            *(w for w in demo["workloads"] if w["kind"] != "Pod"),  # web and kube-proxy
            {
                "kind": "Deployment",
                "namespace": "shop",
                "name": "api",
                "replicas": replicas,
                "labels": {"app": "api"},
                "pdb": {"max_unavailable": 1},
                "ready_seconds": api_ready_seconds,
                "termination_grace_seconds": 2,
            },
        ],
    }


def events(sim: RunningSim, *names: str) -> list[dict]:
    """The simulator's timeline entries of these kinds (cordoned, rebooted, pod_evicted, ...), in order."""
    return [e for e in sim.observer.timeline() if e["event"] in names]


def outcomes(report: MaintenanceReport) -> dict[str, Outcome]:
    return {n.node: n.outcome for n in report.nodes}


def core_api(sim: RunningSim) -> client.CoreV1Api:
    return client.CoreV1Api(config.new_client_from_config(config_file=sim.kubeconfig))


def slot_holders(sim: RunningSim) -> dict[str, str]:
    """The reboot-slot Leases, each with its holder ("" for a free slot)."""
    core = core_api(sim)
    try:
        leases = client.CoordinationV1Api(core.api_client).list_namespaced_lease("kube-system").items
    finally:
        core.api_client.close()
    return {
        lease.metadata.name: lease.spec.holder_identity or ""
        for lease in leases
        if lease.metadata.name.startswith("aks-maintenance-slot-")
    }


def assert_left_clean(
    sim: RunningSim, operator_cordoned: frozenset[str] = frozenset(), deleted: frozenset[str] = frozenset()
) -> None:
    """Nothing of ours left on the cluster: no node cordoned by us (those the operator cordoned stay so),
    no record annotation, no pending taint, no host pod, no slot held; the ``deleted`` nodes are gone
    (budget violations are each test's own check: a drain policy may cause one on purpose)."""
    assert sim.observer.invariants()["unschedulable_now"] == sorted(operator_cordoned)
    core = core_api(sim)
    try:
        nodes = {n.metadata.name: n for n in core.list_node().items}
        host_pods = core.list_pod_for_all_namespaces(label_selector=HOST_POD_LABEL).items
    finally:
        core.api_client.close()
    assert not deleted & set(nodes)
    for name, n in nodes.items():
        assert STATE_ANNOTATION not in (n.metadata.annotations or {}), name
        assert not any(t.key == PENDING_TAINT_KEY for t in n.spec.taints or []), name
        assert bool(n.spec.unschedulable) == (name in operator_cordoned), name
    assert [pod.metadata.name for pod in host_pods] == []
    assert {lease: holder for lease, holder in slot_holders(sim).items() if holder} == {}


def needing_reboot(sim: RunningSim) -> list[str]:
    return sorted(name for name, host in sim.observer.hosts().items() if host["reboot_required"])


def report_of(state) -> MaintenanceReport:
    report = state.result(raise_on_failure=False)
    assert isinstance(report, MaintenanceReport), (state, report)
    return report


def report_in(output: str) -> dict:
    """The JSON report the command line prints (``--json``), wherever it sits among the log lines."""
    start = output.find("{\n")
    assert start >= 0, f"no JSON report in the output:\n{output}"
    report, _ = json.JSONDecoder().raw_decode(output[start:])
    return report


class FlowProcess:
    """The flow's command line in its own process, so that a case can SIGKILL it mid-step."""

    def __init__(
        self,
        sim: RunningSim,
        workdir: Path,
        api_url: str | None,
        name: str,
        kubeconfig: str = "",
        env_changes: dict[str, str] | None = None,
        **overrides: object,
    ):
        params = fast_params(sim, **overrides)
        if kubeconfig:
            params["cluster"] = {"kubeconfig": kubeconfig}
        params_file = workdir / f"{name}.yaml"
        params_file.write_text(yaml.safe_dump(params))
        self.log = workdir / f"{name}.log"
        env = {
            **os.environ,
            "PREFECT_HOME": str(workdir / "prefect-home"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_LOGGING_LEVEL": "INFO",
        }
        env.pop("PREFECT_API_URL", None)
        if api_url is not None:  # else the command line starts its temporary local server
            env["PREFECT_API_URL"] = api_url
        env.update(env_changes or {})
        with self.log.open("w") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "flows.node_maintenance", "--params", str(params_file), "--json"],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def wait(self, timeout: float = 120) -> int:
        return self.proc.wait(timeout)

    def kill(self) -> int:
        """SIGKILL: no finally block, no hook, nothing released."""
        self.proc.kill()
        return self.proc.wait(10)

    def output(self) -> str:
        return self.log.read_text()


def flow_processes(workdir: Path, api_url: str | None) -> Iterator[Callable[..., FlowProcess]]:
    """For a fixture: start the flow's command line against ``api_url`` (``start(sim, name, **overrides)``);
    processes still running at the end are killed."""
    started: list[FlowProcess] = []

    def start(sim: RunningSim, name: str, **overrides: object) -> FlowProcess:
        process = FlowProcess(sim, workdir, api_url, name, **overrides)
        started.append(process)
        return process

    yield start
    for process in started:
        if process.proc.poll() is None:
            process.kill()


def wait_for(sim: RunningSim, matches, process: FlowProcess | None = None, timeout: float = 60) -> dict:
    """The first new timeline or audit entry for which ``matches(kind, entry)`` holds, watched closely so
    that the process can be stopped right after it; ``kind`` is "timeline" or "audit"."""
    seen = {"timeline": len(sim.observer.timeline()), "audit": len(sim.observer.audit())}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for kind, read in (("timeline", sim.observer.timeline), ("audit", sim.observer.audit)):
            entries = read(seen[kind])
            seen[kind] += len(entries)
            for entry in entries:
                if matches(kind, entry):
                    return entry
        if process is not None and process.proc.poll() is not None:
            raise AssertionError(f"the flow exited ({process.proc.returncode}) first:\n{process.output()}")
        time.sleep(0.01)
    raise AssertionError("the awaited step never came" + (f":\n{process.output()}" if process else ""))


def timeline_event(event: str):
    """A ``wait_for`` matcher: the first timeline entry of ``event``."""
    return lambda kind, entry: kind == "timeline" and entry["event"] == event


def cli_env(tmp_path: Path, local_server: bool = False, **changes: str) -> dict[str, str]:
    """The environment of a command-line run in a test: a private PREFECT_HOME (``tmp_path/prefect-home``)
    and the session's Prefect server, or with ``local_server`` no PREFECT_API_URL, so that the command
    line starts its own local server; ``changes`` are set last."""
    from prefect.settings import PREFECT_API_URL

    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    if not local_server:
        env["PREFECT_API_URL"] = PREFECT_API_URL.value()
    return {
        **env,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        **changes,
    }


class SingleSetSlots(RebootSlots):
    """The slot Leases of the set of all nodes with a fixed limit, as before budgets existed: ``take`` is
    one pass and ``wait`` waits; each returns the one slot taken (or None)."""

    def __init__(self, kube: Kube, options: LockOptions, limit: int):
        super().__init__(kube, options)
        self.limit = limit

    def sets(self) -> list[SlotSet]:
        return [SlotSet(ALL, self.limit, f"all nodes: {self.limit} at once")]

    def take(self, holder: str) -> str | None:
        taken = self.try_acquire(holder, self.sets()).taken
        return taken[0] if taken else None

    def wait(self, holder: str, timeout: float) -> str:
        return self.acquire(holder, self.sets, timeout)[0]


def closed_port() -> int:
    """A port on 127.0.0.1 that nobody listens on: the address of a server that is down."""
    return free_port()


def run_module(
    module: str, args: list[str], env: dict[str, str], timeout: float
) -> subprocess.CompletedProcess:
    """``python -m module args`` from the project's folder, its output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
