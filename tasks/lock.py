"""Reboot slots: one coordination.k8s.io/v1 Lease per node allowed down at once.

A slot is taken by writing our holder identity into a free Lease with its resourceVersion (a stale one
is a 409, so two runs can never both win). A slot whose holder stopped renewing may be taken over only
after it has looked unchanged, from here, for a whole lease duration: client-go's rule, which needs no
trust in anyone's clock but our own.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

from kubernetes.client import V1Lease
from kubernetes.client.exceptions import ApiException

from aksmaint.errors import LockTimeout
from aksmaint.kube import Kube, meta, node_gone, spec_of
from aksmaint.params import LockOptions


def microtime(dt: datetime | None = None) -> datetime:
    """A time for a Lease MicroTime field. The client serializes datetimes with isoformat(), which drops
    the fraction when it is .000000, and a real API server rejects a MicroTime without six fractional
    digits; one microsecond later keeps the fraction."""
    dt = (dt or datetime.now(UTC)).astimezone(UTC)
    return dt.replace(microsecond=1) if dt.microsecond == 0 else dt


def slot_names(options: LockOptions, concurrency: int) -> list[str]:
    return [f"{options.name_prefix}-{i}" for i in range(concurrency)]


FAILED_HOLD_SECONDS = 365 * 24 * 3600


def failed_holder(node: str) -> str:
    return f"failed/{node}"


class SlotObserver:
    """Remembers when each slot's record last changed, in local monotonic time."""

    def __init__(self) -> None:
        self._seen: dict[str, tuple[tuple, float]] = {}

    def expired(self, name: str, lease) -> bool:
        spec = lease.spec
        record = (spec.holder_identity, str(spec.renew_time), spec.lease_duration_seconds)
        now = time.monotonic()
        seen = self._seen.get(name)
        if seen is None or seen[0] != record:
            self._seen[name] = (record, now)
            return False
        return now - seen[1] > (spec.lease_duration_seconds or 0)


class RebootSlots:
    def __init__(self, kube: Kube, options: LockOptions, concurrency: int):
        self.kube = kube
        self.options = options
        self.names = slot_names(options, concurrency)
        self.observer = SlotObserver()
        self.kept_by_failed: list[str] = []  # nodes whose slot was kept because they did not come back

    def _body(
        self, name: str, holder: str, transitions: int, rv: str | None = None, acquire: bool = True
    ) -> dict:
        now = microtime()
        spec = {
            "holderIdentity": holder,
            "leaseDurationSeconds": int(self.options.ttl_seconds),
            "renewTime": now,
            "leaseTransitions": transitions,
        }
        if acquire:
            spec["acquireTime"] = now
        meta = {
            "name": name,
            "namespace": self.options.namespace,
            "labels": {"app.kubernetes.io/managed-by": "aks-node-maintenance"},
        }
        if rv:
            meta["resourceVersion"] = rv
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta, "spec": spec}

    def try_acquire(self, holder: str) -> str | None:
        """One pass over the slots; the slot taken, or None when all are busy."""
        coord = self.kube.coordination
        ns = self.options.namespace
        self.kept_by_failed = []
        for name in self.names:
            try:
                lease = self.kube.call(coord.read_namespaced_lease, name, ns)
            except ApiException as exc:
                if exc.status != 404:
                    raise
                try:
                    self.kube.call(coord.create_namespaced_lease, ns, self._body(name, holder, 0))
                    return name
                except ApiException as exc2:
                    if exc2.status == 409:
                        continue
                    raise
            spec = spec_of(lease)
            current = spec.holder_identity or ""
            if current.startswith(failed_holder("")):
                node = current.removeprefix(failed_holder(""))
                if node_gone(self.kube, node):  # it no longer counts against the concurrency
                    self.release(name, current)
                else:
                    self.kept_by_failed.append(node)
                continue
            if current and current != holder and not self.observer.expired(name, lease):
                continue
            transitions = (spec.lease_transitions or 0) + (0 if current == holder else 1)
            try:
                self.kube.call(
                    coord.replace_namespaced_lease,
                    name,
                    ns,
                    self._body(name, holder, transitions, meta(lease).resource_version),
                )
                return name
            except ApiException as exc:
                if exc.status == 409:
                    continue
                raise
        return None

    def acquire(
        self,
        holder: str,
        timeout: float,
        poll: float = 1.0,
        keep_waiting: Callable[[], str | None] = lambda: None,
    ) -> str:
        """Wait for a slot. ``keep_waiting`` returns a reason to stop waiting (e.g. window closed)."""
        deadline = time.monotonic() + timeout
        while True:
            slot = self.try_acquire(holder)
            if slot is not None:
                return slot
            if len(self.kept_by_failed) == len(self.names):
                raise LockTimeout(
                    f"every reboot slot is kept by a node that did not come back "
                    f"({', '.join(self.kept_by_failed)}); fix those nodes first"
                )
            if reason := keep_waiting():
                raise LockTimeout(f"stopped waiting for a reboot slot: {reason}")
            if time.monotonic() > deadline:
                holders = self.holders()
                raise LockTimeout(
                    f"no reboot slot free within {timeout:.0f}s (held by: {', '.join(holders) or 'nobody'})"
                )
            time.sleep(poll)

    def existing(self) -> Iterator[tuple[str, V1Lease]]:
        """(slot name, Lease) for every slot Lease that exists."""
        for name in self.names:
            try:
                yield (
                    name,
                    self.kube.call(
                        self.kube.coordination.read_namespaced_lease, name, self.options.namespace
                    ),
                )
            except ApiException as exc:
                if exc.status != 404:
                    raise

    def holders(self) -> list[str]:
        return [
            f"{name}={spec_of(lease).holder_identity}"
            for name, lease in self.existing()
            if spec_of(lease).holder_identity
        ]

    def holder_alive(self, holder: str) -> bool:
        """True when ``holder`` holds one of the slots and has not been seen to let it expire."""
        for name, lease in self.existing():
            if spec_of(lease).holder_identity == holder:
                return not self.observer.expired(name, lease)
        return False

    def _replace_if_held(
        self, name: str, holder: str, body_for: Callable[[V1Lease], dict], missing_ok: bool = False
    ) -> bool:
        """Read the slot and, while ``holder`` holds it, replace it with ``body_for(lease)`` under the
        resourceVersion read: a 409 (someone wrote in between) reads again, up to three times. False
        when the slot is not (or no longer) held by ``holder``; a missing Lease is that too when
        ``missing_ok``, else an error."""
        coord = self.kube.coordination
        for _ in range(3):
            try:
                lease = self.kube.call(coord.read_namespaced_lease, name, self.options.namespace)
            except ApiException as exc:
                if missing_ok and exc.status == 404:
                    return False
                raise
            if spec_of(lease).holder_identity != holder:
                return False
            try:
                self.kube.call(coord.replace_namespaced_lease, name, self.options.namespace, body_for(lease))
                return True
            except ApiException as exc:
                if exc.status != 409:
                    raise
        return False

    def renew(self, name: str, holder: str) -> bool:
        """Renew our slot; False if it is no longer ours."""

        def renewed(lease: V1Lease) -> dict:
            spec = spec_of(lease)
            body = self._body(
                name, holder, spec.lease_transitions or 0, meta(lease).resource_version, acquire=False
            )
            body["spec"]["acquireTime"] = microtime(spec.acquire_time) if spec.acquire_time else microtime()
            return body

        return self._replace_if_held(name, holder, renewed)

    def release(self, name: str, holder: str) -> None:
        """Free our slot (idempotent: a slot no longer ours, or gone, is left alone)."""

        def freed(lease: V1Lease) -> dict:
            transitions = spec_of(lease).lease_transitions or 0
            body = self._body(name, "", transitions, meta(lease).resource_version, acquire=False)
            body["spec"]["leaseDurationSeconds"] = 1
            return body

        self._replace_if_held(name, holder, freed, missing_ok=True)

    def keep_for_failed_node(self, name: str, holder: str, node: str) -> None:
        """Hand our slot to a node that did not come back: it stays disrupted, so it keeps counting
        against the concurrency until a later run sees it healthy again (or an operator deletes the Lease)."""

        def kept(lease: V1Lease) -> dict:
            transitions = (spec_of(lease).lease_transitions or 0) + 1
            body = self._body(name, failed_holder(node), transitions, meta(lease).resource_version)
            body["spec"]["leaseDurationSeconds"] = FAILED_HOLD_SECONDS
            return body

        self._replace_if_held(name, holder, kept)

    def release_all_held_by(self, run_prefix: str) -> list[str]:
        """Free every slot whose holder starts with ``run_prefix`` (cleanup after a cancelled run)."""
        freed = []
        for name, lease in self.existing():
            holder = spec_of(lease).holder_identity or ""
            if holder.startswith(run_prefix):
                self.release(name, holder)
                freed.append(name)
        return freed


class SlotRenewer:
    """Renews a held slot from a background thread every third of its TTL."""

    def __init__(self, slots: RebootSlots, name: str, holder: str):
        self.slots, self.name, self.holder = slots, name, holder
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"renew-{name}")

    def _run(self) -> None:
        interval = max(1.0, self.slots.options.ttl_seconds / 3)
        while not self._stop.wait(interval):
            try:
                if not self.slots.renew(self.name, self.holder):
                    self.lost = True
                    return
            except Exception:  # a failed renewal is retried at the next tick; expiry is the backstop
                continue

    def __enter__(self) -> SlotRenewer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
