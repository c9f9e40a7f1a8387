"""Node pool upgrades on the simulated cluster, the way AKS runs them.

For each batch of old nodes: surge nodes on the new image join Ready, the old nodes are cordoned and
drained through the eviction subresource (PodDisruptionBudgets respected, refusals retried), left to
soak, and deleted. ``maxSurge`` nodes are added before a batch is drained and ``maxUnavailable`` more
may be drained without a replacement in place, so the pool never has fewer schedulable Ready nodes than
its count minus ``maxUnavailable``. A node that does not drain within ``drainTimeoutInMinutes`` fails
the operation with ``UpgradeFailed`` (``Schedule``: it is made schedulable again, not upgraded) or is
quarantined while the rest of the pool is upgraded (``Cordon``).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import dataclass

from simulator.arm.errors import OperationError
from simulator.arm.state import PoolState
from simulator.cluster import Cluster
from simulator.controllers.common import NODES, PODS
from simulator.indexes import controller_of, is_terminating
from simulator.k8s.errors import ApiError

EVICTION_RETRY_SECONDS = 5.0  # kubectl's pause before evicting a pod again after a 429
DRAIN_POLL_SECONDS = 1.0
QUARANTINE_LABEL = "kubernetes.azure.com/upgrade-status"
MIRROR_ANNOTATION = "kubernetes.io/config.mirror"
DEBUG_DRAIN = "http://aka.ms/aks/debugdrainfailures"
NOTHING_TO_REPLACE_SECONDS = 30.0  # how long an upgrade that finds every node current still runs


@dataclass(frozen=True)
class NodeVersions:
    """What a node of an upgraded pool runs: its Kubernetes version, node image and kernel."""

    kubernetes_version: str
    node_image_version: str
    kernel: str


class DrainBlocked(Exception):
    """A node that did not drain in time, with the reason AKS reports."""

    def __init__(self, node: str, message: str):
        super().__init__(message)
        self.node = node
        self.message = message


def count_of(value: str | int, total: int) -> int:
    """A maxSurge/maxUnavailable value as a node count; percentages of the pool round up."""
    text = str(value).strip()
    if text.endswith("%"):
        return math.ceil(int(text[:-1]) * total / 100)
    return int(text or 0)


class PoolUpgrade:
    """Replace every node of one pool that is not on ``target`` by a new node that is."""

    def __init__(
        self,
        cluster: Cluster,
        pool: PoolState,
        target: NodeVersions,
        progress: Callable[[float], None] = lambda share: None,
    ):
        self.cluster = cluster
        self.pool = pool
        self.target = target
        self.progress = progress
        self.new_spec = pool.spec.model_copy(
            update={
                "orchestrator_version": target.kubernetes_version,
                "node_image_version": target.node_image_version,
                "kernel": target.kernel,
                "latest_node_image_version": pool.latest_image,
            }
        )

    # ---- time --------------------------------------------------------------------------
    async def _sleep(self, sim_seconds: float) -> None:
        await asyncio.sleep(sim_seconds * self.cluster.scale)

    def _now(self) -> float:
        return self.cluster.sim_now()

    # ---- nodes -------------------------------------------------------------------------
    def pool_nodes(self) -> list[dict]:
        return [
            n
            for n in self.cluster.store.list(NODES)
            if (n["metadata"].get("labels") or {}).get("kubernetes.azure.com/agentpool") == self.pool.name
        ]

    def _outdated(self, node: dict) -> bool:
        labels = node["metadata"].get("labels") or {}
        return (
            labels.get("kubernetes.azure.com/node-image-version") != self.target.node_image_version
            or node["status"]["nodeInfo"]["kubeletVersion"] != f"v{self.target.kubernetes_version}"
        )

    async def _provision(self, count: int) -> list[str]:
        if count <= 0:
            return []
        indexes = list(range(self.pool.next_index, self.pool.next_index + count))
        self.pool.next_index += count
        await self._sleep(self.pool.spec.node_provision_seconds)
        return [self.cluster.add_node(self.new_spec, index) for index in indexes]

    def _set_node(self, name: str, change: Callable[[dict], dict]) -> None:
        node = self.cluster.store.get(NODES, "", name)
        if node is not None:
            self.cluster.store.update_internal(NODES, change(node))
            self.cluster.reconcile()

    def _cordon(self, name: str, unschedulable: bool = True) -> None:
        def change(node: dict) -> dict:
            spec = {**node["spec"], "unschedulable": True}
            if not unschedulable:
                spec.pop("unschedulable")
            return {**node, "spec": spec}

        self._set_node(name, change)

    def _quarantine(self, name: str) -> None:
        def change(node: dict) -> dict:
            labels = {**(node["metadata"].get("labels") or {}), QUARANTINE_LABEL: "Quarantined"}
            return {**node, "metadata": {**node["metadata"], "labels": labels}}

        self._set_node(name, change)

    # ---- drain -------------------------------------------------------------------------
    def _pods_to_drain(self, name: str) -> list[dict]:
        return [
            p
            for p in self.cluster.store.list(PODS)
            if p["spec"].get("nodeName") == name
            and (controller_of(p) or {}).get("kind") != "DaemonSet"
            and MIRROR_ANNOTATION not in (p["metadata"].get("annotations") or {})
        ]

    async def _drain(self, name: str, timeout_minutes: float) -> None:
        """Evict every pod but DaemonSet and mirror pods and wait until they are gone."""
        deadline = self._now() + timeout_minutes * 60
        refused: dict[tuple[str, str], float] = {}
        blocked: str | None = None
        while True:
            pods = self._pods_to_drain(name)
            if not pods:
                return
            for pod in pods:
                meta = pod["metadata"]
                key = (meta["namespace"], meta["name"])
                if is_terminating(pod) or self._now() - refused.get(key, -math.inf) < EVICTION_RETRY_SECONDS:
                    continue
                try:
                    self.cluster.evict(
                        *key,
                        {
                            "apiVersion": "policy/v1",
                            "kind": "Eviction",
                            "metadata": {"name": key[1], "namespace": key[0]},
                        },
                    )
                except ApiError as exc:
                    if exc.code == 404:
                        continue
                    refused[key] = self._now()
                    blocked = self._refusal(name, pod, exc)
            self.cluster.reconcile()
            if self._now() >= deadline:
                if blocked is None:
                    pod = pods[0]["metadata"]
                    blocked = (
                        f"Drain node {name} failed: timed out after {timeout_minutes:g} minutes waiting for "
                        f"pod {pod['namespace']}/{pod['name']} to terminate. See {DEBUG_DRAIN}."
                    )
                raise DrainBlocked(name, blocked)
            await self._sleep(DRAIN_POLL_SECONDS)

    def _refusal(self, node: str, pod: dict, exc: ApiError) -> str:
        meta = pod["metadata"]
        pdbs = self.cluster.pdbs_for(pod, for_eviction=True)
        if exc.code != 429 or not pdbs:
            return f"Drain node {node} failed when evicting pod {meta['name']}: {exc.message}. See {DEBUG_DRAIN}."
        pdb = pdbs[0]
        status = self.cluster.pdb_status(pdb)
        unready = max(0, status["expectedPods"] - status["currentHealthy"])
        return (
            f"Drain node {node} failed when evicting pod {meta['name']} failed with Too Many Requests error. "
            f"This is often caused by a restrictive Pod Disruption Budget (PDB) policy. See {DEBUG_DRAIN}. "
            f"Original error: {exc.message}. PDB debug info: {meta['namespace']}/{meta['name']} blocked by "
            f"pdb {pdb['metadata']['name']} with {unready} unready pods."
        )

    # ---- the upgrade -------------------------------------------------------------------
    async def run(self) -> None:
        settings = self.pool.settings
        surge, unavailable = self._batch_limits()
        drain_minutes = float(settings.get("drainTimeoutInMinutes") or 30)
        soak_minutes = float(settings.get("nodeSoakDurationInMinutes") or 0)
        cordon_blocked = settings.get("undrainableNodeBehavior") == "Cordon"
        old = self._nodes_to_upgrade()
        if not old:  # AKS runs the operation all the same; it is never over the moment it starts
            await self._sleep(NOTHING_TO_REPLACE_SECONDS)
        total = max(1, len(old))
        quarantined: list[DrainBlocked] = []
        while old:
            batch, old = old[: surge + unavailable], old[surge + unavailable :]
            surged = await self._provision(min(len(batch), surge))
            drained, blocked = await self._drain_batch(batch, drain_minutes)
            if drained:
                await self._sleep(soak_minutes * 60)
                for name in drained:
                    self.cluster.remove_node(name)
            await self._provision(len(drained) - len(surged))
            self.progress((total - len(old)) / total)
            if blocked and cordon_blocked:
                for b in blocked:
                    self._quarantine(b.node)
                quarantined += blocked
            elif blocked:
                for b in blocked:
                    self._cordon(b.node, unschedulable=False)
                await self._remove_spare(surged[len(drained) :], drain_minutes)
                raise OperationError("UpgradeFailed", blocked[0].message)
        if quarantined:
            names = ", ".join(b.node for b in quarantined)
            raise OperationError(
                "UpgradeFailed",
                f"{len(quarantined)} node(s) could not be drained and were "
                f"cordoned and labeled {QUARANTINE_LABEL}=Quarantined ({names}). "
                f"{quarantined[0].message}",
            )

    def _batch_limits(self) -> tuple[int, int]:
        """The pool's maxSurge and maxUnavailable as node counts; at least one of them is not 0."""
        settings = self.pool.settings
        count = self.pool.spec.count
        surge = count_of(settings.get("maxSurge") or "10%", count)
        unavailable = count_of(settings.get("maxUnavailable") or 0, count)
        if surge == 0 and unavailable == 0:
            surge = 1
        return surge, unavailable

    def _nodes_to_upgrade(self) -> list[str]:
        """The names of the pool's nodes not on the target, sorted; quarantined nodes are left alone."""
        return sorted(
            n["metadata"]["name"]
            for n in self.pool_nodes()
            if self._outdated(n)
            and (n["metadata"].get("labels") or {}).get(QUARANTINE_LABEL) != "Quarantined"
        )

    async def _drain_batch(
        self, batch: list[str], drain_minutes: float
    ) -> tuple[list[str], list[DrainBlocked]]:
        """Cordon and drain a batch of nodes together: the nodes that drained, and those that did not."""
        for name in batch:
            self._cordon(name)
        results = await asyncio.gather(
            *(self._drain(name, drain_minutes) for name in batch), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, DrainBlocked):
                raise result
        drained = [name for name, r in zip(batch, results, strict=True) if r is None]
        blocked = [r for r in results if isinstance(r, DrainBlocked)]
        return drained, blocked

    async def _remove_spare(self, names: list[str], drain_minutes: float) -> None:
        """Best effort: surge nodes no longer needed go, unless they do not drain."""
        for name in names:
            self._cordon(name)
            try:
                await self._drain(name, min(drain_minutes, 1.0))
            except DrainBlocked:
                self._cordon(name, unschedulable=False)
                continue
            self.cluster.remove_node(name)
