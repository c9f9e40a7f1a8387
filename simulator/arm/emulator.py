"""The containerservice resource provider of the simulated AKS: resources, rules and operations.

Mutating requests are checked against AKS's rules, then run as operations: asyncio tasks on the
simulator's loop that change the simulated Kubernetes side (control-plane version, nodes replaced by
``PoolUpgrade``). Each operation has the status its ``Azure-AsyncOperation`` URL reports.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from simulator.arm import versions
from simulator.arm.errors import ArmError, OperationError, not_allowed
from simulator.arm.state import (
    ManagedClusterState,
    Operation,
    PoolState,
    new_etag,
    render_maintenance_configuration,
)
from simulator.arm.upgrade import NodeVersions, PoolUpgrade
from simulator.scenario import OperationFailureSpec

if TYPE_CHECKING:
    from simulator.simulation import Simulation

PENDING_OPERATION = "https://aka.ms/aks-pending-operation"
INJECTED_FAILURE_SECONDS = 2.0  # how long an operation made to fail runs before it fails

Work = Callable[[Operation], Awaitable[None]]


class ArmEmulator:
    """The managed cluster, its agent pools and their operations, for one simulated cluster."""

    def __init__(self, sim: Simulation, kube_api: str, ca_pem: bytes):
        self.sim = sim
        self.cluster = sim.cluster
        self.kube_api = kube_api
        self.ca_pem = ca_pem
        scenario = self.cluster.scenario
        # the emulator's own copies: what it changes is never the scenario the run was given
        spec = scenario.cluster.model_copy(deep=True)
        self.mc = ManagedClusterState(
            spec=spec,
            kubernetes_version=spec.kubernetes_version,
            current_version=spec.kubernetes_version,
            issuer_url=self.cluster.service_accounts.issuer,
        )
        self.pools = {p.name: PoolState.from_spec(p.model_copy(deep=True)) for p in scenario.pools}
        self.region = versions.Region(
            [
                *spec.available_versions,
                spec.kubernetes_version,
                *(p.orchestrator_version for p in scenario.pools),
            ]
        )
        self.operations: dict[str, Operation] = {}
        self.fail_next: OperationFailureSpec | None = scenario.faults.fail_next_operation

    # ---- reading -----------------------------------------------------------------------
    def pool(self, name: str) -> PoolState:
        for pool in self.pools.values():
            if pool.name.lower() == name.lower():
                return pool
        raise ArmError(
            404, "NotFound", f"Agent pool {name} not found in managed cluster {self.mc.spec.name}."
        )

    def render_cluster(self) -> dict:
        return self.mc.render(list(self.pools.values()))

    def render_pool(self, pool: PoolState) -> dict:
        return self.mc.render_pool(pool)

    def maintenance_configurations(self) -> list[dict]:
        configs = self.mc.spec.maintenance_configurations
        return [
            render_maintenance_configuration(self.mc.id, name, config) for name, config in configs.items()
        ]

    def maintenance_configuration(self, name: str) -> dict:
        for config in self.maintenance_configurations():
            if config["name"].lower() == name.lower():
                return config
        raise ArmError(
            404,
            "NotFound",
            f"Maintenance configuration {name} not found in managed cluster {self.mc.spec.name}.",
        )

    # ---- rules -------------------------------------------------------------------------
    def check_idle(self, pool: str | None = None) -> None:
        """409 OperationNotAllowed while any operation runs on the cluster or one of its pools."""
        if self.mc.running is not None:
            raise not_allowed(
                f"Operation is not allowed: Another operation ({self.mc.running.kind}) is in "
                f"progress, please wait for it to finish before starting a new operation. See "
                f"{PENDING_OPERATION} for more details",
                status=409,
            )
        for p in self.pools.values():
            if p.running is not None:
                prefix = (
                    "Operation is not allowed: Another agentpool operation"
                    if pool
                    else "Managed cluster operation not allowed: Another operation"
                )
                raise not_allowed(
                    f"{prefix} ({p.running.kind}) is in progress on agent pool ({p.name}), please "
                    f"wait for it to finish before starting a new operation. See "
                    f"{PENDING_OPERATION} for more details",
                    status=409,
                )

    # ---- mutating requests -------------------------------------------------------------
    def put_cluster(self, body: dict) -> Operation:
        """A managed cluster PUT: a new kubernetesVersion upgrades the control plane, a pool profile with a
        new orchestratorVersion upgrades that pool afterwards; unchanged versions are a no-op."""
        props = body.get("properties") or {}
        self.check_idle()
        requested = props.get("kubernetesVersion") or self.mc.kubernetes_version
        target = self.region.resolve(requested)
        current = self.mc.current_version
        if target != current:
            versions.check_control_plane(self.region, current, target)
        pool_targets, settings = self._pool_profiles(props.get("agentPoolProfiles") or [], target)
        for name, value in settings.items():
            self.pools[name].settings = {**self.pools[name].settings, **value}
        if target == current and not pool_targets:
            return self._noop("UpdateManagedCluster", self.mc.spec.name)
        self.mc.kubernetes_version = requested
        for name, version in pool_targets.items():
            self.pools[name].orchestrator_version = version

        async def work(op: Operation) -> None:
            if target != current:
                await asyncio.sleep(self.mc.spec.control_plane_upgrade_seconds * self.cluster.scale)
                self._set_control_plane(target)
            for i, (name, version) in enumerate(pool_targets.items()):
                await self._upgrade_pool(op, self.pools[name], version, share=(i, len(pool_targets)))

        states = [self.mc, *(self.pools[n] for n in pool_targets)]
        return self.start(
            "UpgradeKubernetesVersion",
            self.mc.spec.name,
            states,
            "Upgrading",
            work,
            {"from": current, "to": target, "pools": dict(pool_targets)},
        )

    def _pool_profiles(self, profiles: list[dict], target: str) -> tuple[dict[str, str], dict[str, dict]]:
        """Check the pool profiles of a managed cluster PUT against a control plane on ``target``.

        Returns the pools to upgrade (name -> version) and the upgradeSettings given per pool; a pool
        that keeps its version must still be within the version skew ``target`` allows."""
        pool_targets: dict[str, str] = {}
        settings: dict[str, dict] = {}
        for profile in profiles:
            pool = self.pool(profile.get("name", ""))
            self._check_unmodelled(pool, profile)
            if profile.get("upgradeSettings"):
                settings[pool.name] = profile["upgradeSettings"]
            wanted = self.region.resolve(profile.get("orchestratorVersion") or pool.current_version)
            if wanted != pool.current_version:
                versions.check_pool(self.region, pool.name, pool.current_version, wanted, target)
                pool_targets[pool.name] = wanted
        for pool in self.pools.values():
            if pool.name not in pool_targets:
                versions.check_skew(pool.name, pool.current_version, target)
        return pool_targets, settings

    def put_pool(self, pool: PoolState, body: dict) -> Operation:
        """An agent pool PUT: a new orchestratorVersion upgrades the pool; upgradeSettings are kept."""
        props = body.get("properties") or {}
        self.check_idle(pool.name)
        self._check_unmodelled(pool, props)
        wanted = self.region.resolve(props.get("orchestratorVersion") or pool.current_version)
        if wanted != pool.current_version:
            versions.check_pool(self.region, pool.name, pool.current_version, wanted, self.mc.current_version)
        if props.get("upgradeSettings"):
            pool.settings = {**pool.settings, **props["upgradeSettings"]}
        if wanted == pool.current_version:
            return self._noop("UpdateAgentPool", pool.name)
        current = pool.current_version
        pool.orchestrator_version = props.get("orchestratorVersion") or wanted

        async def work(op: Operation) -> None:
            await self._upgrade_pool(op, pool, wanted)

        return self.start(
            "UpgradeAgentPoolKubernetesVersion",
            pool.name,
            [pool],
            "Upgrading",
            work,
            {"pool": pool.name, "from": current, "to": wanted},
        )

    def upgrade_node_image(self, pool: PoolState) -> Operation:
        """Node image upgrade of one pool. A pool already on the latest image gets an operation too, as
        on real AKS (202, UpgradingNodeImageVersion); it replaces no node and ends Succeeded."""
        self.check_idle(pool.name)

        async def work(op: Operation) -> None:
            await self._upgrade_pool(op, pool, pool.current_version)

        return self.start(
            "UpgradeNodeImageVersion",
            pool.name,
            [pool],
            "UpgradingNodeImageVersion",
            work,
            {"pool": pool.name, "from": pool.spec.node_image_version, "to": pool.latest_image},
        )

    def abort(self, pool: PoolState | None) -> Operation:
        """Cancel the running operation (of the pool, or any on the cluster); it ends Canceled."""
        everything: list[ManagedClusterState | PoolState] = [self.mc, *self.pools.values()]
        states = [pool] if pool is not None else everything
        running = {id(s.running): s.running for s in states if s.running is not None}
        if not running:
            raise not_allowed(
                "There is no running operation to abort: the latest operation has already completed.",
                status=409,
            )
        for state in everything:
            if state.busy and id(state.operation) in running:
                state.provisioning_state = "Canceling"
        abort = self._record(
            Operation(id=str(uuid.uuid4()), kind="Abort", target=pool.name if pool else self.mc.spec.name)
        )

        async def cancel() -> None:
            tasks = [op.task for op in running.values() if op.task is not None]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            abort.finish("Succeeded")

        abort.task = asyncio.get_running_loop().create_task(cancel())
        return abort

    def _check_unmodelled(self, pool: PoolState, props: dict) -> None:
        if "count" in props and props["count"] != pool.spec.count:
            raise ArmError(
                400,
                "NotSupportedBySimulator",
                f"Scaling agent pool {pool.name} is not modelled by the simulated AKS.",
            )

    # ---- operations --------------------------------------------------------------------
    def _record(self, op: Operation) -> Operation:
        self.operations[op.id] = op
        return op

    def _noop(self, kind: str, target: str) -> Operation:
        op = self._record(Operation(id=str(uuid.uuid4()), kind=kind, target=target))
        op.finish("Succeeded")
        return op

    def start(
        self, kind: str, target: str, states: list, provisioning: str, work: Work, details: dict
    ) -> Operation:
        op = self._record(Operation(id=str(uuid.uuid4()), kind=kind, target=target))
        for state in states:
            state.operation, state.provisioning_state, state.etag = op, provisioning, new_etag()
        failure, self.fail_next = self.fail_next, None
        op.task = asyncio.get_running_loop().create_task(self._run(op, states, work, failure, details))
        return op

    async def _run(
        self, op: Operation, states: list, work: Work, failure: OperationFailureSpec | None, details: dict
    ) -> None:
        self.cluster.record(
            "upgrade_started", None, operation=op.id, kind=op.kind, target=op.target, **details
        )
        status, error = "Succeeded", None
        try:
            if failure is not None:
                await asyncio.sleep(INJECTED_FAILURE_SECONDS * self.cluster.scale)
                raise OperationError(failure.code, failure.message)
            await work(op)
        except OperationError as exc:
            status, error = "Failed", {"code": exc.code, "message": exc.message}
        except asyncio.CancelledError:
            status, error = (
                "Canceled",
                {"code": "OperationCanceled", "message": "The operation was canceled by an abort request."},
            )
        except Exception as exc:  # a simulator defect: the operation fails, the timeline says why
            self.cluster.record("simulator_error", None, operation=op.id, error=repr(exc))
            status, error = (
                "Failed",
                {"code": "InternalOperationError", "message": f"Internal error: {exc!r}"},
            )
        op.finish(status, error)
        for state in states:
            state.provisioning_state, state.etag = status, new_etag()
        extra = {"error": error} if error else {}
        self.cluster.record(
            "upgrade_finished", None, operation=op.id, kind=op.kind, target=op.target, status=status, **extra
        )
        self.cluster.reconcile()

    async def _upgrade_pool(
        self, op: Operation, pool: PoolState, version: str, share: tuple[int, int] = (0, 1)
    ) -> None:
        done, parts = share

        def progress(fraction: float) -> None:
            op.percent = 100.0 * (done + fraction) / parts

        target = NodeVersions(version, pool.latest_image, pool.latest_kernel)
        await PoolUpgrade(self.cluster, pool, target, progress).run()
        pool.spec = pool.spec.model_copy(
            update={
                "orchestrator_version": version,
                "node_image_version": pool.latest_image,
                "kernel": pool.latest_kernel,
            }
        )
        pool.etag = new_etag()

    def _set_control_plane(self, version: str) -> None:
        """The API server now runs ``version``: ``/version`` of the Kubernetes API says so."""
        self.cluster.kubernetes_version = version
        self.mc.current_version = version
        self.mc.etag = new_etag()
        self.cluster.record("control_plane_upgraded", None, kubernetes_version=version)
