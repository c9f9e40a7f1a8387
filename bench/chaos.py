"""Chaos at scale: the 300-node rollout of the scale runs at concurrency 30, on a Kubernetes API that
answers 3 % of requests 500 and 3 % 429 and adds 15 ms to every one, interrupted after a third of the
reboots in one of two ways:

- ``kill``: the flow's whole process group gets SIGKILL (no ``finally``, no hook: its slot Leases, its
  cordoned nodes and its nodes mid-reboot stay as they were); the same command then runs again until it
  exits 0, at most MAX_RUNS times in all;
- ``restart``: the PostgreSQL-backed Prefect server is stopped for OUTAGE_SECONDS and started again on
  the same port and database, while the flow goes on.

Each variant reports the runs it took, how many times each node rebooted, PodDisruptionBudget
violations, the disrupted peak, what was left behind (cordoned nodes, held slot Leases, our records,
taints and pods), and the wall time; for ``kill``, how long the rerun waited for the dead run's slots.

``python -m bench --only chaos`` runs both at full size and writes their figures to bench/results.json.
``python -m bench.chaos --nodes 30 --concurrency 3`` runs them at another size and only prints.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from aksmaint.nodestate import PENDING_TAINT_KEY, STATE_ANNOTATION
from bench import concurrency
from bench.common import PENDING_KERNEL, Sim, flow_run_params, print_table, start_flow_process

NODES = 300
CONCURRENCY = 30
TIME_SCALE = 0.1  # as the scale runs: a 60 s boot takes 6 s
ERROR_RATE = 0.03  # answered 500
THROTTLE_RATE = 0.03  # answered 429 with Retry-After: 1
LATENCY_MS = 15
MAX_RUNS = 5  # the first run and at most four reruns
OUTAGE_SECONDS = 20  # the Prefect server stays stopped this long before it starts again
RUN_TIMEOUT = 1200  # a run still going after this long is killed and counts as failed
SLOT_PREFIX = "aks-maintenance-slot"
LOCK_NAMESPACE = "kube-system"
MANAGED_BY = "app.kubernetes.io/managed-by=aks-node-maintenance"
VARIANTS = ("kill", "restart")
# the figures each variant writes to bench/results.json as chaos_<variant>_<figure>, in this order
# (slot_wait_s only for kill, outage_s only for restart)
FIGURES = (
    "runs",
    "rebooted_once",
    "rebooted_twice",
    "never_rebooted",
    "pdb_violations",
    "max_disrupted",
    "left_cordoned",
    "leases_held",
    "wall_s",
    "slot_wait_s",
    "outage_s",
)


@dataclass
class Attempt:
    """One run of the command line."""

    exit_code: int  # -9: killed by us
    wall_seconds: float
    rebooted: int  # 'rebooted' events while it ran
    audit_from: int
    audit_to: int
    interrupted_at: float | None = None  # seconds into the run
    rebooted_before_interrupt: int = 0
    output: str = ""
    prefect_state: str = "unknown"  # the flow run's state in Prefect after the last run

    @property
    def ended(self) -> str:
        if self.exit_code == -signal.SIGKILL:
            return "killed"
        return f"exit {self.exit_code}"

    @property
    def plan(self) -> str:
        """The plan task's summary line ("30 to reboot, 0 to resume, ...")."""
        found = re.search(r"Plan: (.*)", self.output)
        return found.group(1).strip() if found else "no plan logged"

    @property
    def longest_slot_wait(self) -> float | None:
        """The longest wait for a reboot slot the run logged ("took reboot slot ... after waiting 30.1s")."""
        waits = [float(w) for w in re.findall(r"took reboot slot \S+ after waiting ([\d.]+)s", self.output)]
        return max(waits) if waits else None

    @property
    def flow_run_id(self) -> str | None:
        found = re.search(r"/runs/flow-run/([0-9a-f-]{36})", self.output)
        return found.group(1) if found else None

    def prefect_outage(self) -> float | None:
        """How long the run's own log says the Prefect API did not answer (its first warning to the
        first "answers again"), in seconds."""
        down = re.search(r"^(\d\d:\d\d:\d\d\.\d+) .*Prefect API .* does not answer", self.output, re.M)
        back = re.search(r"^(\d\d:\d\d:\d\d\.\d+) .*Prefect API .* answers again", self.output, re.M)
        if not (down and back):
            return None
        seconds = [
            sum(float(x) * m for x, m in zip(t.split(":"), (3600, 60, 1), strict=True))
            for t in (down[1], back[1])
        ]
        return (seconds[1] - seconds[0]) % 86400


@dataclass
class ChaosRun:
    variant: str
    nodes: int
    concurrency: int
    ttl: float  # the slot Leases' lease duration (lock.ttl_seconds)
    attempts: list[Attempt]
    wall_seconds: float  # the first run's start to the last run's exit
    reboots: dict[str, int]  # every node of the cluster: how many times it rebooted
    invariants: dict
    left_cordoned: list[str]
    leases_held: list[str]
    left_marked: list[str]  # nodes still carrying our record or our reboot-pending taint
    left_pods: list[str]  # our pods not finished (reboot or scan pods)
    wrong_kernel: list[str]  # nodes not running the pending kernel at the end
    rebooted_at_interrupt: int = 0
    slots_held_at_kill: dict[str, str] = field(default_factory=dict)
    slot_wait: dict[str, float] = field(default_factory=dict)  # see measure_slot_wait
    outage_seconds: float | None = None  # restart: the Prefect server's stop to its health again

    def count(self, times: int) -> int:
        return sum(1 for n in self.reboots.values() if n == times)

    @property
    def more_than_twice(self) -> int:
        return sum(1 for n in self.reboots.values() if n > 2)

    @property
    def runs(self) -> int:
        return len(self.attempts)

    @property
    def converged(self) -> bool:
        return bool(self.attempts) and self.attempts[-1].exit_code == 0

    @property
    def met(self) -> bool:
        """The targets: every node exactly once, nothing left behind, at most 2 runs."""
        return (
            self.converged
            and self.count(1) == self.nodes
            and not (self.left_cordoned or self.leases_held or self.left_marked or self.left_pods)
            and self.runs <= 2
        )


def scenario(nodes: int, concurrency_: int) -> dict:
    faults = {"api_error_rate": ERROR_RATE, "api_throttle_rate": THROTTLE_RATE, "api_latency_ms": LATENCY_MS}
    return {**concurrency.scenario(nodes, concurrency_, TIME_SCALE), "faults": faults}


def kube_client(sim: Sim) -> client.ApiClient:
    return config.new_client_from_config(config_file=sim.kubeconfig)


def with_retries(call: Callable[[], object], tries: int = 20) -> object:
    """A read of ours against the faulty API: the injected 500s and 429s are retried."""
    for i in range(tries):
        try:
            return call()
        except ApiException as exc:
            if exc.status not in (429, 500) or i == tries - 1:
                raise
            time.sleep(0.2)
    raise AssertionError("unreachable")


def held_slots(api: client.ApiClient) -> dict[str, str]:
    """The slot Leases that name a holder, with the holder."""
    coord = client.CoordinationV1Api(api)
    leases = with_retries(lambda: coord.list_namespaced_lease(LOCK_NAMESPACE)).items
    return {
        lease.metadata.name: lease.spec.holder_identity
        for lease in leases
        if lease.metadata.name.startswith(SLOT_PREFIX) and lease.spec.holder_identity
    }


def run_once(
    sim: Sim,
    params_file: Path,
    api_url: str,
    workdir: Path,
    name: str,
    interrupt: Callable[[subprocess.Popen], None] | None = None,
    after_reboots: int = 0,
) -> Attempt:
    """The flow's command line in a process group of its own, to the end. With ``interrupt``, the
    simulator's timeline is watched and ``interrupt(process)`` called once ``after_reboots`` nodes have
    rebooted during this run."""
    env = {
        **os.environ,
        "PREFECT_API_URL": api_url,
        "PREFECT_HOME": str(workdir / "prefect-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "INFO",
    }
    audit_from = len(sim.observer.audit())
    seen = len(sim.observer.timeline())
    rebooted = rebooted_before_interrupt = 0
    interrupted_at = None
    out_path = workdir / f"{name}.out"
    started = time.perf_counter()
    with out_path.open("w") as out:
        # its own process group, so that the kill takes all of it
        proc = start_flow_process(params_file, env, out, start_new_session=True)
    try:
        while proc.poll() is None:
            new = sim.observer.timeline(seen)
            seen += len(new)
            rebooted += sum(1 for e in new if e["event"] == "rebooted")
            if interrupt is not None and interrupted_at is None and rebooted >= after_reboots:
                interrupted_at = time.perf_counter() - started
                rebooted_before_interrupt = rebooted
                interrupt(proc)
                continue
            if time.perf_counter() - started > RUN_TIMEOUT:
                print(f"  ! {name} still running after {RUN_TIMEOUT} s: killed", flush=True)
                os.killpg(proc.pid, signal.SIGKILL)
            time.sleep(0.1)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    wall = time.perf_counter() - started
    rebooted += sum(1 for e in sim.observer.timeline(seen) if e["event"] == "rebooted")
    return Attempt(
        exit_code=proc.returncode,
        wall_seconds=wall,
        rebooted=rebooted,
        audit_from=audit_from,
        audit_to=len(sim.observer.audit()),
        interrupted_at=interrupted_at,
        rebooted_before_interrupt=rebooted_before_interrupt,
        output=out_path.read_text(),
    )


def measure_slot_wait(audit: list[dict], dead: dict[str, str], rerun: Attempt) -> dict[str, float]:
    """How long the rerun waited for the slots the killed run held, from the simulator's audit log (real
    seconds). A slot whose holder is gone is taken over only once it has looked unchanged for a whole
    lease duration, counted from the first time the new run read it (aksmaint/maintenance/lock.py, client-go's rule).

    - ``look``: the rerun's start (its first API request) to its first LIST of the Leases;
    - ``first``/``last``: that LIST to the first and to the last takeover of a dead run's slot;
    - ``idle``: per dead slot, its last renewal by the killed run to its takeover, the longest (how long
      a slot stood unused).
    """
    entries = audit[rerun.audit_from : rerun.audit_to]
    if not entries or not dead:
        return {}
    start = entries[0]["t"]
    looks = [
        e["t"]
        for e in entries
        if e["resource"] == "leases" and e["verb"] == "list" and e["namespace"] == LOCK_NAMESPACE
    ]
    taken: dict[str, float] = {}
    for e in entries:
        if (
            e["resource"] == "leases"
            and e["verb"] == "update"
            and e["status"] == 200
            and e["name"] in dead
            and e["name"] not in taken
        ):
            taken[e["name"]] = e["t"]
    if not looks or not taken:
        return {}
    renewed: dict[str, float] = {}
    for e in audit[: rerun.audit_from]:
        if e["resource"] == "leases" and e["verb"] in ("update", "create") and e["status"] in (200, 201):
            renewed[e["name"]] = e["t"]
    idle = [t - renewed[name] for name, t in taken.items() if name in renewed]
    return {
        "look": looks[0] - start,
        "first": min(taken.values()) - looks[0],
        "last": max(taken.values()) - looks[0],
        "idle": max(idle) if idle else float("nan"),
        "taken": len(taken),
    }


def flow_run_state(api_url: str, flow_run_id: str | None) -> str:
    """The flow run's state name as the Prefect server has it."""
    if flow_run_id is None:
        return "no flow run"
    try:
        response = httpx.get(f"{api_url}/flow_runs/{flow_run_id}", timeout=30)
        response.raise_for_status()
        return (response.json().get("state") or {}).get("name") or "no state"
    except httpx.HTTPError as exc:
        return f"unreadable ({exc.__class__.__name__})"


def leftovers(sim: Sim) -> tuple[list[str], list[str], list[str], list[str]]:
    """Cordoned nodes, held slot Leases, nodes with our record or taint, and our unfinished pods."""
    api = kube_client(sim)
    try:
        core = client.CoreV1Api(api)
        nodes = with_retries(core.list_node).items
        cordoned = sorted(n.metadata.name for n in nodes if n.spec.unschedulable)
        marked = sorted(
            n.metadata.name
            for n in nodes
            if STATE_ANNOTATION in (n.metadata.annotations or {})
            or any(t.key == PENDING_TAINT_KEY for t in n.spec.taints or [])
        )
        pods = with_retries(lambda: core.list_pod_for_all_namespaces(label_selector=MANAGED_BY)).items
        unfinished = sorted(
            f"{p.metadata.namespace}/{p.metadata.name}"
            for p in pods
            if p.status.phase not in ("Succeeded", "Failed")
        )
        return cordoned, sorted(held_slots(api)), marked, unfinished
    finally:
        api.close()


def run_variant(workdir: Path, postgres, variant: str, nodes: int, concurrency_: int) -> ChaosRun:
    """One variant on a fresh cluster: the first run interrupted after a third of the reboots, then the same
    command again until it exits 0 (at most MAX_RUNS runs)."""
    name = f"chaos-{variant}-{nodes}-c{concurrency_}"
    print(f"  {name}: starting", flush=True)
    with Sim(scenario(nodes, concurrency_), workdir / f"sim-{name}") as sim:
        if len(sim.needing_reboot()) != nodes:
            raise RuntimeError("every node must need a reboot")
        params_file = workdir / f"{name}.yaml"
        params = flow_run_params(sim, concurrency=concurrency_)
        params_file.write_text(yaml.safe_dump(params))
        api = kube_client(sim)
        state: dict = {}

        def kill(proc: subprocess.Popen) -> None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            state["held"] = held_slots(api)

        def restart(proc: subprocess.Popen) -> None:
            stopped = time.perf_counter()
            postgres.restart_server(OUTAGE_SECONDS)
            state["outage"] = time.perf_counter() - stopped

        attempts: list[Attempt] = []
        started = time.perf_counter()
        try:
            while len(attempts) < MAX_RUNS and not (attempts and attempts[-1].exit_code == 0):
                first = not attempts
                attempt = run_once(
                    sim,
                    params_file,
                    postgres.api_url,
                    workdir,
                    f"{name}-run{len(attempts) + 1}",
                    interrupt=(kill if variant == "kill" else restart) if first else None,
                    after_reboots=max(1, nodes // 3),
                )
                attempts.append(attempt)
                print(
                    f"  {name} run {len(attempts)}: {attempt.ended} after {attempt.wall_seconds:.0f} s, "
                    f"{attempt.rebooted} reboots; plan: {attempt.plan}"
                    + (
                        f" (interrupted at {attempt.interrupted_at:.0f} s)"
                        if attempt.interrupted_at is not None
                        else ""
                    ),
                    flush=True,
                )
            wall = time.perf_counter() - started
        finally:
            api.close()
        for attempt in attempts:
            attempt.prefect_state = flow_run_state(postgres.api_url, attempt.flow_run_id)
        # the checks read the cluster as it was left, without the injected faults in the way
        sim.observer.faults(error_rate=0, throttle_rate=0, latency_ms=0)
        cordoned, leases, marked, pods = leftovers(sim)
        invariants = sim.observer.invariants()
        hosts = sim.observer.hosts()
        audit = sim.observer.audit()
    reboots = {node: invariants["reboots"].get(node, 0) for node in hosts}
    run = ChaosRun(
        variant=variant,
        nodes=nodes,
        concurrency=concurrency_,
        ttl=params["lock"]["ttl_seconds"],
        attempts=attempts,
        wall_seconds=wall,
        reboots=reboots,
        invariants=invariants,
        left_cordoned=cordoned,
        leases_held=leases,
        left_marked=marked,
        left_pods=pods,
        wrong_kernel=sorted(n for n, h in hosts.items() if h["running_kernel"] != PENDING_KERNEL),
        rebooted_at_interrupt=attempts[0].rebooted_before_interrupt,
        slots_held_at_kill=state.get("held", {}),
        outage_seconds=state.get("outage"),
    )
    if variant == "kill" and len(attempts) > 1:
        run.slot_wait = measure_slot_wait(audit, run.slots_held_at_kill, attempts[1])
    for i, attempt in enumerate(attempts):
        if attempt.exit_code not in (0, -signal.SIGKILL) or (i and attempt.exit_code != 0):
            (workdir / f"{name}-run{i + 1}.tail").write_text(attempt.output[-5000:])
            print(f"  ! {name} run {i + 1} ended {attempt.ended}; its output ends:\n{attempt.output[-2500:]}")
    return run


def run_chaos(
    workdir: Path, nodes: int = NODES, concurrency_: int = CONCURRENCY, variants: tuple[str, ...] = VARIANTS
) -> list[ChaosRun]:
    from scripts.prefect_postgres import PostgresPrefect

    # PostgreSQL gets a temporary folder of its own: the postgres user cannot enter the benchmark's
    with PostgresPrefect(server_log=workdir / "prefect-postgres-chaos.log") as postgres:
        return [run_variant(workdir, postgres, v, nodes, concurrency_) for v in variants]


def slot_wait_text(r: ChaosRun) -> str:
    w = r.slot_wait
    if r.variant != "kill":
        return "n/a"
    if not w:
        return "not measured"
    return f"{w['first']:.0f} ({w['last']:.0f} for the last)"


def print_chaos(runs: list[ChaosRun]) -> None:
    first = runs[0]
    ttl = first.ttl
    print_table(
        f"Chaos at scale: {first.nodes} nodes at concurrency {first.concurrency}, "
        f"{ERROR_RATE:.0%} of API requests 500, {THROTTLE_RATE:.0%} 429, {LATENCY_MS} ms added",
        [
            "interruption",
            "runs",
            "rebooted once",
            "twice",
            "never",
            "PDB violations",
            "disrupted peak",
            "left cordoned",
            "slot Leases held",
            "wall time (s)",
            "slot wait (s)",
        ],
        [
            [
                (
                    f"SIGKILL of the process group after {r.rebooted_at_interrupt} reboots"
                    if r.variant == "kill"
                    else f"Prefect server down {r.outage_seconds or 0:.0f} s after {r.rebooted_at_interrupt} reboots"
                ),
                f"{r.runs} ({', '.join(a.ended for a in r.attempts)})",
                f"{r.count(1)}/{r.nodes}",
                r.count(2) + r.more_than_twice,
                r.count(0),
                r.invariants["pdb_violations"],
                r.invariants["max_disrupted"],
                len(r.left_cordoned),
                len(r.leases_held),
                f"{r.wall_seconds:.0f}",
                slot_wait_text(r),
            ]
            for r in runs
        ],
        [
            f"The flow runs as its own command (python -m flows.node_maintenance) against Prefect on PostgreSQL, "
            f"at time scale {TIME_SCALE} (a 60 s boot takes {60 * TIME_SCALE:g} s). The interruption comes once a "
            "third of the nodes have rebooted (the simulator's 'rebooted' events). After it, the same command runs "
            f"again until it exits 0, at most {MAX_RUNS} runs; targets: every node rebooted exactly once, nothing "
            "left behind, at most 2 runs.",
            "kill: os.killpg(SIGKILL) on the flow's process group: nothing is released. "
            f"restart: the Prefect server gets SIGTERM, stays down {OUTAGE_SECONDS} s, then starts again on the "
            "same port and database; the time shown runs until its /api/health answers again.",
            "Reboots, PDB violations and the disrupted peak (most nodes cordoned or NotReady at once) are the "
            "simulator's invariants over all runs. Left cordoned and slot Leases held are read from the cluster "
            "after the last run, with the faults turned off.",
            "wall time: the first run's start to the last run's exit, the interruption and the wait between "
            "included.",
            f"slot wait: from the rerun's first LIST of the slot Leases to its first takeover of a slot the killed "
            f"run held (and to the last), from the simulator's audit log. A slot whose holder is gone is taken "
            f"over once it has looked unchanged for a whole lease duration (lock.ttl_seconds, {ttl:g} s here, "
            "120 s by default) from the new run's first look.",
        ],
    )
    print_table(
        "Chaos at scale: the runs one by one",
        [
            "interruption",
            "run",
            "ended",
            "wall time (s)",
            "reboots",
            "plan",
            "longest slot wait logged (s)",
            "Prefect API silent, per its log (s)",
            "flow run state in Prefect",
        ],
        [
            [
                r.variant,
                i + 1,
                a.ended,
                f"{a.wall_seconds:.0f}",
                a.rebooted,
                a.plan,
                "-" if a.longest_slot_wait is None else f"{a.longest_slot_wait:.1f}",
                "-" if (o := a.prefect_outage()) is None else f"{o:.0f}",
                a.prefect_state,
            ]
            for r in runs
            for i, a in enumerate(r.attempts)
        ],
        [
            "plan: the run's plan line, as it logged it. longest slot wait logged: the longest 'took reboot slot ... after waiting' of the run. "
            "Prefect API silent: from the run's warning that the API does not answer to its 'answers again'.",
        ],
    )
    for r in runs:
        w = r.slot_wait
        if w:
            print(
                f"  {r.variant}: the killed run held {len(r.slots_held_at_kill)} slot(s). The rerun listed the "
                f"Leases {w['look']:.1f} s after its first request. It took over {w['taken']} of the dead slots "
                f"{w['first']:.1f} to {w['last']:.1f} s after that first look. The longest a dead slot went "
                f"unrenewed: {w['idle']:.1f} s."
            )
        extra = {
            "nodes with our record or taint": r.left_marked,
            "our pods not finished": r.left_pods,
            "nodes not on the pending kernel": r.wrong_kernel,
            "nodes rebooted twice or more": sorted(n for n, k in r.reboots.items() if k > 1),
            "nodes never rebooted": sorted(n for n, k in r.reboots.items() if k == 0),
            "left cordoned": r.left_cordoned,
            "slot Leases held": r.leases_held,
        }
        for what, items in extra.items():
            if items:
                print(f"  ! {r.variant}: {what}: {len(items)}: {', '.join(items[:10])}")
        print(f"  {r.variant}: targets {'met' if r.met else 'NOT met'}")


def bench_chaos(workdir: Path, results: dict) -> None:
    runs = run_chaos(workdir)
    print_chaos(runs)
    for r in runs:
        key = f"chaos_{r.variant}"
        results.update(
            {
                f"{key}_runs": r.runs,
                f"{key}_rebooted_once": r.count(1),
                f"{key}_rebooted_twice": r.count(2) + r.more_than_twice,
                f"{key}_never_rebooted": r.count(0),
                f"{key}_pdb_violations": r.invariants["pdb_violations"],
                f"{key}_max_disrupted": r.invariants["max_disrupted"],
                f"{key}_left_cordoned": len(r.left_cordoned),
                f"{key}_leases_held": len(r.leases_held),
                f"{key}_wall_s": round(r.wall_seconds, 1),
            }
        )
        if r.slot_wait:
            results[f"{key}_slot_wait_s"] = round(r.slot_wait["first"], 1)
        if r.outage_seconds is not None:
            results[f"{key}_outage_s"] = round(r.outage_seconds, 1)


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.chaos", description="chaos at another size; prints only"
    )
    parser.add_argument("--nodes", type=int, default=NODES)
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY)
    parser.add_argument("--only", choices=VARIANTS, help="one variant")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="aksmaint-chaos-"))
    print(f"work folder: {workdir}", flush=True)
    variants = (args.only,) if args.only else VARIANTS
    print_chaos(run_chaos(workdir, args.nodes, args.concurrency, variants))


if __name__ == "__main__":
    main()
