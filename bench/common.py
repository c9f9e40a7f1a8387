"""What the benchmarks share: a Prefect server, simulated clusters, the flow run in its own process,
and readings of the simulator's timeline and audit log.

The flow runs as its own process (``python -m flows.node_maintenance``), as it does under a worker: the
simulator in this process does not compete with it for the GIL, and its peak RSS is its own.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from aksmaint.params import with_overrides
from simulator.observe import SimObserver
from simulator.runtime import SimulatedAKS
from simulator.scenario import parse_scenario

ROOT = Path(__file__).resolve().parent.parent
PENDING_KERNEL = "5.15.0-1081-azure"
KERNEL = "5.15.0-1079-azure"
CLUSTER = {
    "name": "aks-bench",
    "subscription_id": "00000000-0000-0000-0000-000000000000",
    "resource_group": "rg-bench",
    "location": "westeurope",
    "kubernetes_version": "1.30.5",
    "available_versions": ["1.30.5", "1.31.2"],
}

KUBE_PROXY = {
    "kind": "DaemonSet",
    "namespace": "kube-system",
    "name": "kube-proxy",
    "labels": {"k8s-app": "kube-proxy"},
}


def pool(name: str, count: int, boot_seconds: float, max_pods: int = 30, system: bool = False) -> dict:
    """A scenario pool on today's node image and kernel, over 3 zones."""
    return {
        "name": name,
        "mode": "System" if system else "User",
        "count": count,
        "zones": ["1", "2", "3"],
        "orchestrator_version": "1.30.5",
        "node_image_version": "AKSUbuntu-2204gen2containerd-202501.12.0",
        "kernel": KERNEL,
        "max_pods": max_pods,
        "boot_seconds": boot_seconds,
    }


def deployment(
    name: str, replicas: int, pdb: dict, ready_seconds: float, grace_seconds: float, namespace: str = "shop"
) -> dict:
    """A scenario Deployment labelled ``app=<name>`` behind the budget ``pdb``."""
    return {
        "kind": "Deployment",
        "namespace": namespace,
        "name": name,
        "replicas": replicas,
        "labels": {"app": name},
        "pdb": pdb,
        "ready_seconds": ready_seconds,
        "termination_grace_seconds": grace_seconds,
    }


@contextlib.contextmanager
def prefect_server() -> Iterator[str]:
    """A throw-away Prefect server (SQLite in a temp dir) for the whole benchmark; yields its API URL."""
    from prefect.settings import PREFECT_API_URL, PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    with (
        prefect_test_harness(server_startup_timeout=120),
        temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}),
    ):
        yield PREFECT_API_URL.value()


class Sim:
    """A simulated AKS cluster in this process, with its observer."""

    def __init__(self, scenario: dict, state_dir: Path):
        self.scenario = parse_scenario(scenario)
        self.aks = SimulatedAKS(self.scenario, state_dir=state_dir)
        self.endpoints = self.aks.start()
        self.observer = SimObserver(self.endpoints)
        self.scale = self.scenario.time_scale

    @property
    def kubeconfig(self) -> str:
        return self.endpoints.kubeconfig

    def needing_reboot(self) -> list[str]:
        return sorted(n for n, h in self.observer.hosts().items() if h["reboot_required"])

    def close(self) -> None:
        self.observer.close()
        self.aks.stop()

    def __enter__(self) -> Sim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class FlowRun:
    """One run of the flow's command line in its own process."""

    exit_code: int
    wall_seconds: float
    peak_rss_mb: float
    report: dict | None
    output: str
    audit_from: int  # audit-log index at the start of the run
    timeline_from: int
    audit: list[dict] = field(default_factory=list)
    timeline: list[dict] = field(default_factory=list)


def start_flow_process(params_file: Path, env: dict[str, str], out, **popen: Any) -> subprocess.Popen:
    """``python -m flows.node_maintenance --params FILE --json`` from the project's folder, its output to
    ``out``."""
    return subprocess.Popen(
        [sys.executable, "-m", "flows.node_maintenance", "--params", str(params_file), "--json"],
        cwd=ROOT,
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
        **popen,
    )


def run_flow_process(sim: Sim, params: dict, api_url: str | None, workdir: Path, name: str) -> FlowRun:
    """Run ``python -m flows.node_maintenance`` to the end; its peak RSS comes from wait4's rusage.
    ``api_url`` None: no PREFECT_API_URL, so the command line starts its temporary local server."""
    workdir.mkdir(parents=True, exist_ok=True)
    params_file = workdir / f"{name}.yaml"
    params_file.write_text(yaml.safe_dump(params))
    env = {
        **os.environ,
        "PREFECT_HOME": str(workdir / "prefect-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "INFO",  # Prefect's default, as operators run it: the logs are part of the cost
    }
    env.pop("PREFECT_API_URL", None)
    if api_url is not None:
        env["PREFECT_API_URL"] = api_url
    audit_from = len(sim.observer.audit())
    timeline_from = len(sim.observer.timeline())
    out_path = workdir / f"{name}.out"
    started = time.perf_counter()
    with out_path.open("w") as out:
        proc = start_flow_process(params_file, env, out)
        _, status, rusage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    output = out_path.read_text()
    return FlowRun(
        exit_code=proc.returncode,
        wall_seconds=wall,
        peak_rss_mb=rusage.ru_maxrss / 1024,  # kilobytes on Linux
        report=_report_from(output),
        output=output,
        audit_from=audit_from,
        timeline_from=timeline_from,
        audit=sim.observer.audit(audit_from),
        timeline=sim.observer.timeline(timeline_from),
    )


def _report_from(output: str) -> dict | None:
    """The JSON report the command line prints last (logs may come before it)."""
    start = output.find("{\n")
    while start != -1:
        try:
            return json.loads(output[start:])
        except ValueError:
            start = output.find("{\n", start + 1)
    return None


def flow_run_params(sim: Sim, **overrides: object) -> dict:
    """Flow parameters for a benchmark run: generous timeouts (nothing should time out), and kubectl's
    5 s between refused evictions scaled like the scenario's durations."""
    params: dict = {
        "cluster": {"kubeconfig": sim.kubeconfig},
        "drain": {"timeout_seconds": 600, "eviction_retry_seconds": 5 * sim.scale},
        "reboot": {"boot_timeout_seconds": 600},
        "lock": {"ttl_seconds": 30, "wait_seconds": 1800},
    }
    return with_overrides(params, overrides)


def print_table(title: str, header: list[str], rows: list[list[object]], notes: list[str] = ()) -> None:
    cells = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    print(f"\n{title}\n{'=' * len(title)}")
    print("  ".join(c.ljust(w) for c, w in zip(cells[0], widths, strict=True)).rstrip())
    print("  ".join("-" * w for w in widths))
    for row in cells[1:]:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    for note in notes:
        print(f"  * {note}")
    sys.stdout.flush()
