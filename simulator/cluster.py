"""The simulated cluster: nodes with hosts, a kubelet, the controllers that matter for drains.

Everything here runs on the simulator's event loop. API handlers call the ``Cluster`` methods that
need more than plain storage (pod deletion, eviction, Lease rules); controllers react to store changes
through a listener and reconcile once per loop turn. Timed behaviour (pods becoming Ready, graceful
termination, reboots) is scheduled on the loop with the scenario's durations times ``time_scale``.

``Cluster`` is the facade the API server, the ARM emulator and the runtime use. Each controller is an
object in its own module under ``simulator.controllers``, given the shared state
(``simulator.controllers.state``) and the other controllers it calls; ``Cluster`` builds them and runs
them in order in ``reconcile``. The names they share live in ``simulator.controllers.common``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from simulator.controllers.admission import Admission
from simulator.controllers.build import ScenarioBuilder
from simulator.controllers.changes import ChangeTracking
from simulator.controllers.common import LEASES, NODES
from simulator.controllers.disruption import DisruptionBudgets
from simulator.controllers.jobs import JobController
from simulator.controllers.kubelet import Kubelet
from simulator.controllers.nodes import NodeController
from simulator.controllers.pods import PodLifecycle
from simulator.controllers.problem_detector import ProblemDetector
from simulator.controllers.processes import PodProcesses
from simulator.controllers.scheduler import Scheduler
from simulator.controllers.state import ClusterState
from simulator.controllers.workloads import WorkloadControllers
from simulator.hosts import Host
from simulator.k8s.store import Store
from simulator.podruntime.logs import PodLogs
from simulator.scenario import PoolSpec, Scenario
from simulator.service_accounts import ServiceAccountIssuer

RECONCILE_ROUNDS = 20  # rounds of one reconcile; a cluster still changing goes on in the next loop turn


class Cluster:
    """The simulated AKS cluster: its state, and its controllers run in the order a reconcile needs.

    ``base_url`` is where the API server is served; it is the service-account issuer unless the
    scenario's ``oidc_issuer`` names another. ``service_accounts`` issues and checks those tokens.
    ``kubernetes_version`` is the version the API server runs; the ARM emulator changes it when it
    upgrades the control plane (the scenario stays as it was given).
    """

    def __init__(self, scenario: Scenario, loop: asyncio.AbstractEventLoop | None = None, base_url: str = ""):
        self.state = state = ClusterState(scenario, loop, self.reconcile)
        self.kubernetes_version = scenario.cluster.kubernetes_version
        oidc = scenario.cluster.oidc_issuer
        issuer = (oidc.issuer_url if oidc else None) or base_url
        self.service_accounts = ServiceAccountIssuer(
            issuer,
            api_audiences=list(dict.fromkeys(a for a in (issuer, base_url) if a)),
            node_uid=self._node_uid,
        )
        self.budgets = DisruptionBudgets(state)
        self.admission = Admission(state)
        self.processes = PodProcesses(state, self.admission, self.service_accounts)
        self.pod_lifecycle = PodLifecycle(state, self.admission, self.budgets, self.processes)
        self.builder = ScenarioBuilder(state, self.pod_lifecycle)
        self.detector = ProblemDetector(state)
        self.nodes = NodeController(state, self.builder, self.budgets, self.detector)
        self.kubelet = Kubelet(state, self.nodes, self.detector, self.processes)
        self.scheduler = Scheduler(state)
        self.workloads = WorkloadControllers(state, self.pod_lifecycle)
        self.jobs = JobController(state, self.pod_lifecycle)
        self.changes = ChangeTracking(state, self.jobs, self.admission, self.processes)
        state.store.add_listener(self.changes.on_change)
        state.store.add_view(LEASES, self.nodes.lease_view)
        self.builder.build()
        for name in state.hosts:
            self.detector.host_changed(name)
        self.reconcile()

    def _node_uid(self, name: str) -> str | None:
        node = self.state.store.get(NODES, "", name)
        return node["metadata"]["uid"] if node else None

    def reconcile(self) -> None:
        state = self.state
        if state.reconciling:
            return
        state.reconciling = True
        try:
            for _ in range(RECONCILE_ROUNDS):
                if not state.dirty:
                    break
                state.dirty = False
                self.nodes.reconcile_taints()
                self.detector.reconcile()
                self.workloads.reconcile_deployments()
                self.workloads.reconcile_replicasets()
                self.workloads.reconcile_daemonsets()
                self.jobs.reconcile()
                self.scheduler.reconcile()
                self.kubelet.reconcile()
                self.budgets.reconcile()
        finally:
            state.reconciling = False
            if state.dirty:  # still changing after the last round: go on in the next loop turn
                state.dirty = False
                state.mark_dirty()

    # ---- what the rest of the simulator reads -------------------------------------------
    @property
    def scenario(self) -> Scenario:
        return self.state.scenario

    @property
    def scale(self) -> float:
        return self.state.scale

    @property
    def store(self) -> Store:
        return self.state.store

    @property
    def hosts(self) -> dict[str, Host]:
        return self.state.hosts

    @property
    def timeline(self) -> list[dict]:
        return self.state.timeline

    @property
    def logs(self) -> dict[str, str]:
        """The output of pods' host commands, by pod uid."""
        return self.state.logs

    @property
    def pod_logs(self) -> PodLogs:
        """The output of pods that run as local processes."""
        return self.processes.pod_logs

    @property
    def started_at(self) -> float:
        return self.state.started_at

    def sim_now(self) -> float:
        return self.state.sim_now()

    def record(self, event: str, node: str | None = None, **details: object) -> None:
        self.state.record(event, node, **details)

    def invariants_report(self) -> dict:
        return self.budgets.invariants_report()

    # ---- pods, budgets, Jobs and Leases (the API server's calls) --------------------------
    def create_pod(self, pod: dict) -> dict:
        return self.pod_lifecycle.create_pod(pod)

    def delete_pod(self, namespace: str, name: str, grace: int | None, preconditions: dict | None) -> dict:
        return self.pod_lifecycle.delete_pod(namespace, name, grace, preconditions)

    def evict(self, namespace: str, name: str, body: dict) -> None:
        self.pod_lifecycle.evict(namespace, name, body)

    def pdb_status(self, pdb: dict) -> dict:
        return self.budgets.pdb_status(pdb)

    def pdbs_for(self, pod: dict, for_eviction: bool) -> list[dict]:
        return self.budgets.pdbs_for(pod, for_eviction)

    def create_job(self, body: dict) -> dict:
        return self.jobs.create_job(body)

    def delete_job(
        self, namespace: str, name: str, propagation: str | None, preconditions: dict | None
    ) -> dict:
        return self.jobs.delete_job(namespace, name, propagation, preconditions)

    @staticmethod
    def check_lease(lease: dict) -> None:
        NodeController.check_lease(lease)

    # ---- nodes and hosts ---------------------------------------------------------------------
    def host_changed(self, name: str) -> None:
        self.detector.host_changed(name)

    def repair_node(self, name: str) -> None:
        self.nodes.repair_node(name)

    def add_node(self, pool: PoolSpec, index: int) -> str:
        name = self.nodes.add_node(pool, index)
        self.reconcile()
        return name

    def remove_node(
        self, name: str, cause: str = "node removed with the pod on it", count_violations: bool = True
    ) -> None:
        self.nodes.remove_node(name, cause, count_violations)
        self.reconcile()

    # ---- pods as local processes (the runtime's calls) ----------------------------------------
    def attach_runtime(self, api_port: int, ca_pem: str, state_dir: Path) -> None:
        self.processes.attach_runtime(api_port, ca_pem, state_dir)

    def stop_processes(self) -> None:
        self.processes.stop_processes()
