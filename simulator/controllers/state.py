"""The state every controller of the simulated cluster shares, and the plumbing around it.

``ClusterState`` owns the store, the hosts, the indexes, the dirty sets the controllers work from, the
timeline and invariants, the simulated clock and timers (``after``), Events, and the request for a
reconcile (``mark_dirty``). Each controller is an object that gets this state in its constructor;
``simulator.cluster.Cluster`` builds them and decides the order they reconcile in.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

from simulator.controllers.common import (
    EVENTS,
    PODS,
    FeasibleNodes,
    Invariants,
)
from simulator.hosts import Host
from simulator.indexes import (
    PdbIndex,
    PodIndex,
)
from simulator.k8s.resources import ResourceType
from simulator.k8s.store import Store, now_rfc3339
from simulator.scenario import PoolSpec, Scenario


class ClusterState:
    """What the controllers share: the store, the hosts, the indexes and dirty sets, the clock and records.

    ``reconcile`` runs the controllers until the cluster settles; ``mark_dirty`` schedules it."""

    def __init__(
        self,
        scenario: Scenario,
        loop: asyncio.AbstractEventLoop | None,
        reconcile: Callable[[], None],
    ):
        self.scenario = scenario
        self.scale = scenario.time_scale
        self.loop = loop or asyncio.get_event_loop()
        self.reconcile = reconcile
        self.rng = random.Random(scenario.seed)
        self.store = Store()
        self.hosts: dict[str, Host] = {}
        self.pool_of: dict[str, PoolSpec] = {}
        self.started_at = time.monotonic()
        self.timeline: list[dict] = []
        self.logs: dict[str, str] = {}  # pod uid -> log text
        self.pods = PodIndex()
        self.pdb_members = PdbIndex()
        # uid of a Deployment, ReplicaSet or DaemonSet -> (resource type, namespace, name)
        self.owners: dict[str, tuple[ResourceType, str, str]] = {}
        self.deployments_dirty: set[str] = set()  # uids whose ReplicaSets or status may need an update
        self.replicasets_dirty: set[str] = set()  # uids whose pod count or status may need an update
        self.daemonsets_full: set[str] = set()  # uids to check on every node (new, or spec changed)
        self.daemonset_nodes_dirty: set[str] = set()  # nodes to check for every DaemonSet
        self.daemonsets_status_dirty: set[str] = set()  # uids whose pods changed
        self.feasible: dict[str, FeasibleNodes] = {}  # the scheduler's node filter, per pod spec
        self.unschedulable: set[str] = set()
        self.not_ready: set[str] = set()
        self.place_of: dict[str, tuple[str, str]] = {}  # node -> (zone, pool), from its labels
        self.started: set[str] = set()  # uids of pods the kubelet has started
        self.unbound: set[tuple[str, str]] = set()  # pods waiting for the scheduler
        self.to_start: set[tuple[str, str]] = set()  # bound pods the kubelet has not started
        self.nodes_dirty: set[str] = set()  # nodes whose cordon taint may need an update
        self.npd_dirty: set[str] = set()  # nodes whose reboot-required condition may need an update
        self.pdb_namespaces_dirty: set[str] = set()
        self.jobs_dirty: set[str] = set()  # uids of Jobs whose pods or spec changed
        # node -> when its heartbeat Lease started being renewed, and the last renewal of a node down
        self.heartbeat_from: dict[str, datetime] = {}
        self.heartbeat_frozen: dict[str, datetime] = {}
        # where pods that run as processes reach the API server, and the CA that signed its certificate
        self.api_port = 0
        self.ca_pem = ""
        self.ip_counter = 0  # pod IPs handed out so far
        self.invariants: Invariants = {
            "max_unschedulable": 0,
            "max_not_ready": 0,
            "max_disrupted": 0,
            "max_disrupted_per_zone": {},
            "max_disrupted_per_pool": {},
            "pdb_violations": 0,
            "reboots": {},
        }
        self.dirty = False
        self.reconciling = False

    def sim_now(self) -> float:
        """Simulated seconds since the simulator started."""
        return (time.monotonic() - self.started_at) / self.scale

    def after(self, sim_seconds: float, fn: Callable[[], None]) -> None:
        # the changes ``fn`` makes schedule one reconcile (see mark_dirty), shared by all timers that
        # fire in the same loop turn: a thousand pods starting together reconcile once, not a thousand times
        self.loop.call_later(max(0.0, sim_seconds * self.scale), fn)

    def record(self, event: str, node: str | None = None, **details: object) -> None:
        self.timeline.append(
            {
                "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
                "t": round(self.sim_now(), 3),
                "event": event,
                "node": node,
                "details": details,
            }
        )

    def emit_event(
        self, involved: dict, reason: str, message: str, type_: str = "Normal", component: str = "kubelet"
    ) -> None:
        meta = involved["metadata"]
        namespace = meta.get("namespace") or "default"
        stamp = now_rfc3339()
        self.store.create(
            EVENTS,
            {
                "metadata": {"name": f"{meta['name']}.{uuid.uuid4().hex[:16]}", "namespace": namespace},
                "involvedObject": {
                    "kind": involved["kind"],
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "namespace": meta.get("namespace", ""),
                    "apiVersion": involved["apiVersion"],
                },
                "reason": reason,
                "message": message,
                "type": type_,
                "count": 1,
                "firstTimestamp": stamp,
                "lastTimestamp": stamp,
                "source": {"component": component},
                "reportingComponent": component,
            },
        )

    def pods_at(self, keys: Iterable[tuple[str, str]]) -> list[dict]:
        """The pods with these (namespace, name) keys that exist, in key order."""
        out = []
        for ns, name in sorted(keys):
            pod = self.store.get(PODS, ns, name)
            if pod is not None:
                out.append(pod)
        return out

    def owner(self, uid: str) -> dict | None:
        """The Deployment, ReplicaSet or DaemonSet with this uid, if it exists."""
        where = self.owners.get(uid)
        return None if where is None else self.store.get(*where)

    def mark_dirty(self) -> None:
        if not self.dirty:
            self.dirty = True
            if not self.reconciling:
                self.loop.call_soon(self.reconcile)
