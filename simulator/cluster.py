"""The simulated cluster: nodes with hosts, a kubelet, the controllers that matter for drains.

Everything here runs on the simulator's event loop. API handlers call the ``Cluster`` methods that
need more than plain storage (pod deletion, eviction, Lease rules); controllers react to store changes
through a listener and reconcile once per loop turn. Timed behaviour (pods becoming Ready, graceful
termination, reboots) is scheduled on the loop with the scenario's durations times ``time_scale``.

``Cluster`` is the facade the API server, the ARM emulator and the runtime use. Each controller lives
in its own module under ``simulator.controllers`` as a mixin over the shared state
(``simulator.controllers.state``); ``Cluster`` combines them and runs them in order in ``reconcile``.
The shared constants and helpers live in ``simulator.controllers.common`` and are re-exported here.
"""

from __future__ import annotations

import asyncio

from simulator.controllers.changes import ChangeTracking
from simulator.controllers.common import (
    CONTAINER_START_SECONDS,
    DAEMONSET_TOLERATIONS,
    DAEMONSETS,
    DEPLOYMENTS,
    EVENTS,
    HEARTBEAT_SECONDS,
    JOBS,
    LEASES,
    MICROTIME,
    NAMESPACES,
    NODE_LEASE_NS,
    NODE_LEASE_SECONDS,
    NODES,
    NOT_READY_TAINTS,
    OS_LABEL,
    PDBS,
    PODS,
    REPLICASETS,
    SYSTEM_TAINT_KEYS,
    UNREACHABLE_TAINTS,
    UNSCHEDULABLE_TAINT_KEY,
    ContainerStart,
    FeasibleNodes,
    Invariants,
    check_preconditions,
    microtime,
    name_suffix,
    node_name,
    runs_on,
    scaled_int,
    tolerates,
    windows_build,
)
from simulator.controllers.jobs import JobController
from simulator.controllers.processes import PodProcesses
from simulator.controllers.scheduler import Scheduler
from simulator.controllers.workloads import WorkloadControllers
from simulator.indexes import controller_of, is_ready, is_terminal, is_terminating
from simulator.k8s.store import now_rfc3339
from simulator.scenario import Scenario
from simulator.service_accounts import ServiceAccountIssuer

__all__ = [
    "check_preconditions",
    "Cluster",
    "CONTAINER_START_SECONDS",
    "ContainerStart",
    "controller_of",
    "DAEMONSET_TOLERATIONS",
    "DAEMONSETS",
    "DEPLOYMENTS",
    "EVENTS",
    "FeasibleNodes",
    "HEARTBEAT_SECONDS",
    "Invariants",
    "is_ready",
    "is_terminal",
    "is_terminating",
    "JOBS",
    "LEASES",
    "MICROTIME",
    "microtime",
    "name_suffix",
    "NAMESPACES",
    "NODE_LEASE_NS",
    "NODE_LEASE_SECONDS",
    "node_name",
    "NODES",
    "NOT_READY_TAINTS",
    "now_rfc3339",
    "OS_LABEL",
    "PDBS",
    "PODS",
    "REPLICASETS",
    "runs_on",
    "scaled_int",
    "SYSTEM_TAINT_KEYS",
    "tolerates",
    "UNREACHABLE_TAINTS",
    "UNSCHEDULABLE_TAINT_KEY",
    "windows_build",
]


class Cluster(PodProcesses, JobController, WorkloadControllers, Scheduler, ChangeTracking):
    """The simulated AKS cluster: its state, and its controllers run in the order a reconcile needs.

    ``base_url`` is where the API server is served; it is the service-account issuer unless the
    scenario's ``oidc_issuer`` names another. ``service_accounts`` issues and checks those tokens.
    """

    def __init__(self, scenario: Scenario, loop: asyncio.AbstractEventLoop | None = None, base_url: str = ""):
        super().__init__(scenario, loop)
        oidc = scenario.cluster.oidc_issuer
        issuer = (oidc.issuer_url if oidc else None) or base_url
        self.service_accounts = ServiceAccountIssuer(
            issuer,
            api_audiences=list(dict.fromkeys(a for a in (issuer, base_url) if a)),
            node_uid=self._node_uid,
        )
        self.store.add_listener(self._on_change)
        self.store.add_view(LEASES, self._lease_view)
        self._build()
        for name in self.hosts:
            self.host_changed(name)
        self.reconcile()

    def _node_uid(self, name: str) -> str | None:
        node = self.store.get(NODES, "", name)
        return node["metadata"]["uid"] if node else None

    def reconcile(self) -> None:
        if self._reconciling:
            return
        self._reconciling = True
        try:
            for _ in range(20):
                if not self._dirty:
                    break
                self._dirty = False
                self._reconcile_node_taints()
                self._reconcile_problem_detector()
                self._reconcile_deployments()
                self._reconcile_replicasets()
                self._reconcile_daemonsets()
                self._reconcile_jobs()
                self._schedule_pods()
                self._kubelet_start_pods()
                self._reconcile_pdbs()
        finally:
            self._reconciling = False
            if self._dirty:  # still changing after 20 rounds: go on in the next loop turn
                self._dirty = False
                self._mark_dirty()
