"""The state every controller of the simulated cluster shares, and the plumbing around it.

``ClusterState`` owns the store, the hosts, the indexes, the dirty sets the controllers work from, the
timeline and invariants, the simulated clock and timers (``after``), Events, and the request for a
reconcile (``_mark_dirty``). The controllers are mixins over it; ``simulator.cluster.Cluster`` combines
them and decides the order they reconcile in.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Callable
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


class ClusterState(ABC):
    """What the controllers share: the store, the hosts, the indexes and dirty sets, the clock and records."""

    def __init__(self, scenario: Scenario, loop: asyncio.AbstractEventLoop | None = None):
        self.scenario = scenario
        self.scale = scenario.time_scale
        self.loop = loop or asyncio.get_event_loop()
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
        self._owners: dict[str, tuple[ResourceType, str, str]] = {}
        self._deployments_dirty: set[str] = set()  # uids whose ReplicaSets or status may need an update
        self._replicasets_dirty: set[str] = set()  # uids whose pod count or status may need an update
        self._daemonsets_full: set[str] = set()  # uids to check on every node (new, or spec changed)
        self._daemonset_nodes_dirty: set[str] = set()  # nodes to check for every DaemonSet
        self._daemonsets_status_dirty: set[str] = set()  # uids whose pods changed
        self._daemonset_nodes: dict[str, set[str]] = defaultdict(set)  # uid -> nodes it wants a pod on
        self._feasible: dict[str, FeasibleNodes] = {}  # the scheduler's node filter, per pod spec
        self._unschedulable: set[str] = set()
        self._not_ready: set[str] = set()
        self._place_of: dict[str, tuple[str, str]] = {}  # node -> (zone, pool), from its labels
        self._started: set[str] = set()  # uids of pods the kubelet has started
        self._unbound: set[tuple[str, str]] = set()  # pods waiting for the scheduler
        self._to_start: set[tuple[str, str]] = set()  # bound pods the kubelet has not started
        self._nodes_dirty: set[str] = set()  # nodes whose cordon taint may need an update
        self._npd_dirty: set[str] = set()  # nodes whose reboot-required condition may need an update
        self._pdb_namespaces_dirty: set[str] = set()
        self._heartbeat_from: dict[str, datetime] = {}
        self._jobs_dirty: set[str] = set()  # uids of Jobs whose pods or spec changed
        self._job_keys: dict[str, tuple[str, str]] = {}  # Job uid -> (namespace, name)
        self._ttl_scheduled: set[str] = set()  # uids of finished Jobs waiting for their TTL
        # where pods that run as processes reach the API server, and the CA that signed its certificate
        self.api_port = 0
        self.ca_pem = ""
        self._heartbeat_frozen: dict[str, datetime] = {}
        self.invariants: Invariants = {
            "max_unschedulable": 0,
            "max_not_ready": 0,
            "max_disrupted": 0,
            "max_disrupted_per_zone": {},
            "max_disrupted_per_pool": {},
            "pdb_violations": 0,
            "reboots": {},
        }
        self._dirty = False
        self._reconciling = False
        self._ip_counter = 0

    @abstractmethod
    def reconcile(self) -> None:
        """Run the controllers until the cluster settles; ``Cluster`` knows them and their order."""

    @abstractmethod
    def _job_changed(self, old: dict | None, new: dict | None) -> None:
        """A Job was added, changed or deleted (the Job controller's hook)."""

    @abstractmethod
    def _namespace_added(self, namespace: str) -> None:
        """A namespace was created (the hook that fills it with its default objects)."""

    @abstractmethod
    def _pod_removed(self, uid: str) -> None:
        """A pod left the store (the hook that stops its process, if it runs one)."""

    def sim_now(self) -> float:
        """Simulated seconds since the simulator started."""
        return (time.monotonic() - self.started_at) / self.scale

    def after(self, sim_seconds: float, fn: Callable[[], None]) -> None:
        # the changes ``fn`` makes schedule one reconcile (see _mark_dirty), shared by all timers that
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

    def _pods(self, keys) -> list[dict]:
        out = []
        for ns, name in sorted(keys):
            pod = self.store.get(PODS, ns, name)
            if pod is not None:
                out.append(pod)
        return out

    def _owner(self, uid: str) -> dict | None:
        where = self._owners.get(uid)
        return None if where is None else self.store.get(*where)

    def _mark_dirty(self) -> None:
        if not self._dirty:
            self._dirty = True
            if not self._reconciling:
                self.loop.call_soon(self.reconcile)

    @staticmethod
    def _node_ready(node: dict) -> bool:
        for cond in node.get("status", {}).get("conditions", []):
            if cond["type"] == "Ready":
                return cond["status"] == "True"
        return False
