"""Reboot slots: one coordination.k8s.io/v1 Lease per node allowed down at once, per slot set.

A slot is taken by writing our holder identity into a free Lease with its resourceVersion (a stale one
is a 409, so two runs can never both win). A slot whose holder stopped renewing may be taken over only
after it has looked unchanged, from here, for a whole lease duration: client-go's rule, which needs no
trust in anyone's clock but our own.

Each slot set (``aksmaint.maintenance.budgets``: all nodes, a pool, a zone) has its own Leases, found with one LIST. A
holder takes slot i of a set only when i is below the set's limit now and fewer than the limit are busy,
counting every Lease of the set: a slot above the limit, taken while a schedule allowed more, still
counts until it is freed. A node takes a slot in each of its sets, or none (what it took is given back).
Runs that share the Leases should share their budgets: each run's own limit bounds the nodes it starts.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

from kubernetes.client import V1Lease
from kubernetes.client.exceptions import ApiException

from aksmaint.errors import LockTimeout
from aksmaint.kube import Kube, meta, node_gone, spec_of
from aksmaint.maintenance.budgets import ALL, SlotSet, closed_reason
from aksmaint.params import LockOptions


def microtime(dt: datetime | None = None) -> datetime:
    """A time for a Lease MicroTime field. The client serializes datetimes with isoformat(), which drops
    the fraction when it is .000000, and a real API server rejects a MicroTime without six fractional
    digits; one microsecond later keeps the fraction."""
    dt = (dt or datetime.now(UTC)).astimezone(UTC)
    return dt.replace(microsecond=1) if dt.microsecond == 0 else dt


FAILED_HOLD_SECONDS = 365 * 24 * 3600


def failed_holder(node: str) -> str:
    return f"failed/{node}"


def handed_over_holder(node: str) -> str:
    """Who keeps the slots of a node cordoned and handed over to a follow-up run (``aksmaint.maintenance.self_host``)."""
    return f"handed-over/{node}"


def kept_for(holder: str) -> str | None:
    """The node a slot is kept for (failed, or handed over), or None for a run's own holder."""
    for keeper in (failed_holder(""), handed_over_holder("")):
        if holder.startswith(keeper):
            return holder.removeprefix(keeper)
    return None


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


@dataclass
class SetView:
    """One slot set as one LIST of the Leases showed it: the slots a holder could take, and how many are
    busy (held by a live holder, ours excepted, or kept by a node that did not come back)."""

    free: list[tuple[str, V1Lease | None]] = field(default_factory=list)  # free first, then expired
    busy: int = 0
    above_limit: int = 0  # busy slots at or above the limit: taken while a limit was higher
    kept_by_failed: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class SlotAttempt:
    """What one pass at the slots came to. ``taken`` holds the slots taken, one per set, or is None when
    the node got none. ``full`` is the set that had no room, if that was why. ``kept_by_failed`` names
    the nodes that did not come back and keep slots of that set."""

    taken: list[str] | None
    full: SlotSet | None = None
    kept_by_failed: tuple[str, ...] = ()


class RebootSlots:
    """The slot Leases of every slot set (``aksmaint.maintenance.budgets``): ``<prefix>-<i>`` for the set of all nodes,
    ``<prefix>-<set key>-<i>`` for a pool's or a zone's. A node holds one slot in each of its sets."""

    def __init__(self, kube: Kube, options: LockOptions):
        self.kube = kube
        self.options = options
        self.observer = SlotObserver()
        self._pattern = re.compile(
            rf"^{re.escape(options.name_prefix)}-(?:((?:pool|zone)-[a-z0-9-]+)-)?(\d+)$"
        )

    def lease_name(self, key: str, index: int) -> str:
        return f"{self.options.name_prefix}-{key + '-' if key else ''}{index}"

    def _parse(self, name: str) -> tuple[str, int] | None:
        match = self._pattern.match(name)
        return (match.group(1) or ALL, int(match.group(2))) if match else None

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

    def _slot_leases(self) -> dict[str, V1Lease]:
        """Every slot Lease of every set, from one LIST of the namespace's Leases."""
        leases = self.kube.call(self.kube.coordination.list_namespaced_lease, self.options.namespace).items
        named = ((meta(lease).name or "", lease) for lease in leases)
        return {name: lease for name, lease in named if self._parse(name)}

    def _view(self, slots: SlotSet, leases: dict[str, V1Lease], holder: str) -> SetView:
        view = SetView()
        expired: list[tuple[str, V1Lease | None]] = []
        for name, lease in leases.items():
            parsed = self._parse(name)
            if parsed is None or parsed[0] != slots.key:
                continue
            current = spec_of(lease).holder_identity or ""
            busy = False
            if (node := kept_for(current)) is not None:
                if node_gone(self.kube, node):  # it no longer counts against the limit
                    self.release(name, current)
                else:
                    if current == failed_holder(node):
                        view.kept_by_failed.append(node)
                    busy = True
            elif current and current != holder and not self.observer.expired(name, lease):
                busy = True
            elif parsed[1] < slots.limit:
                (expired if current and current != holder else view.free).append((name, lease))
            view.busy += busy
            view.above_limit += busy and parsed[1] >= slots.limit
        view.free += [
            (n, None) for i in range(slots.limit) if (n := self.lease_name(slots.key, i)) not in leases
        ]
        # a slot whose holder only looks dead (its renewals may just be late) is taken over last
        view.free += expired
        return view

    def _take(self, name: str, lease: V1Lease | None, holder: str) -> bool:
        """Write ``holder`` into the slot: a create, or a replace under the resourceVersion read; False when
        someone else wrote first (409)."""
        coord, ns = self.kube.coordination, self.options.namespace
        try:
            if lease is None:
                self.kube.call(coord.create_namespaced_lease, ns, self._body(name, holder, 0))
            else:
                spec = spec_of(lease)
                transitions = (spec.lease_transitions or 0) + (0 if spec.holder_identity == holder else 1)
                body = self._body(name, holder, transitions, meta(lease).resource_version)
                self.kube.call(coord.replace_namespaced_lease, name, ns, body)
            return True
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise

    def try_acquire(self, holder: str, sets: list[SlotSet]) -> SlotAttempt:
        """One pass: a slot in each of ``sets``, all or none, and what came of it. The verdict is returned,
        not stored, because one RebootSlots serves every rollout thread. A set with a busy slot above its
        limit counts as full until that slot is freed. Only then do distinct slots below the limit prove
        the limit, whatever order the runs write in."""
        leases = self._slot_leases()
        views = []
        for slots in sets:
            view = self._view(slots, leases, holder)
            if view.busy >= slots.limit or view.above_limit or not view.free:
                return SlotAttempt(None, slots, tuple(view.kept_by_failed))
            views.append(view)
        taken: list[str] = []
        for view in views:
            name = next((n for n, lease in view.free if self._take(n, lease, holder)), None)
            if name is None:  # every free slot of the set went to someone else meanwhile
                for done in taken:
                    self.release(done, holder)
                return SlotAttempt(None)
            taken.append(name)
        return SlotAttempt(taken)

    def acquire(
        self,
        holder: str,
        sets_now: Callable[[], list[SlotSet]],
        timeout: float,
        poll: float = 1.0,
        keep_waiting: Callable[[], str | None] = lambda: None,
    ) -> list[str]:
        """Wait for a slot in each of the node's sets (worked out again at each try: a scheduled budget
        changes). ``keep_waiting`` returns a reason to stop waiting (e.g. window closed)."""
        deadline = time.monotonic() + timeout
        while True:
            sets = sets_now()
            if closed := closed_reason(sets):
                raise LockTimeout(closed)
            attempt = self.try_acquire(holder, sets)
            if attempt.taken is not None:
                return attempt.taken
            full = attempt.full
            if full is not None and len(attempt.kept_by_failed) >= full.limit:
                raise LockTimeout(
                    f"every reboot slot of {full.where} is kept by a node that did not come back "
                    f"({', '.join(attempt.kept_by_failed)}); fix those nodes first"
                )
            if reason := keep_waiting():
                raise LockTimeout(f"stopped waiting for a reboot slot: {reason}")
            if time.monotonic() > deadline:
                holders = self.holders(full.key if full else ALL)
                raise LockTimeout(
                    f"no reboot slot free within {timeout:.0f}s"
                    + (f" under {full.why}" if full else "")
                    + f" (held by: {', '.join(holders) or 'nobody'})"
                )
            time.sleep(poll)

    def existing(self) -> Iterator[tuple[str, V1Lease]]:
        """(slot name, Lease) for every slot Lease of every set that exists."""
        yield from sorted(self._slot_leases().items())

    def holders(self, key: str | None = None) -> list[str]:
        """``slot=holder`` for the held slots (of one set, given its key)."""
        return [
            f"{name}={spec_of(lease).holder_identity}"
            for name, lease in self.existing()
            if spec_of(lease).holder_identity and (key is None or (self._parse(name) or ("?",))[0] == key)
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

    def keep_for_node(self, name: str, holder: str, keeper: str) -> None:
        """Hand our slot to ``keeper``: a node that did not come back (``failed_holder``) or one handed
        over to a follow-up run (``handed_over_holder``). The node stays disrupted, so it keeps counting
        against the concurrency until a later run takes it on (or an operator deletes the Lease)."""

        def kept(lease: V1Lease) -> dict:
            transitions = (spec_of(lease).lease_transitions or 0) + 1
            body = self._body(name, keeper, transitions, meta(lease).resource_version)
            body["spec"]["leaseDurationSeconds"] = FAILED_HOLD_SECONDS
            return body

        self._replace_if_held(name, holder, kept)

    def take_over(self, keeper: str, holder: str) -> list[str]:
        """Take every slot ``keeper`` keeps for a node, under the resourceVersion read, so the node never
        stops counting against the concurrency; the names taken (none if nothing was kept)."""
        taken = []
        for name, lease in self.existing():
            if spec_of(lease).holder_identity != keeper:
                continue
            transitions = spec_of(lease).lease_transitions or 0

            def ours(lease: V1Lease, name: str = name, transitions: int = transitions) -> dict:
                return self._body(name, holder, transitions + 1, meta(lease).resource_version)

            if self._replace_if_held(name, keeper, ours):
                taken.append(name)
        return taken

    def release_all_held_by(self, run_prefix: str) -> list[str]:
        """Free every slot whose holder starts with ``run_prefix`` (cleanup after a cancelled run)."""
        freed = []
        for name, lease in self.existing():
            holder = spec_of(lease).holder_identity or ""
            if holder.startswith(run_prefix):
                self.release(name, holder)
                freed.append(name)
        return freed


class HeldSlots:
    """The reboot slots of one node, a context manager around its lifecycle: from ``take`` until the ``with``
    ends they are renewed in the background every third of their TTL; ``free`` then gives them up."""

    def __init__(self, slots: RebootSlots, holder: str):
        self.slots, self.holder = slots, holder
        self.names: list[str] = []
        self.lost = False  # a renewal found a slot no longer ours: another holder took it over
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def take(self, names: list[str]) -> None:
        self.names = names
        self._thread = threading.Thread(target=self._renew, daemon=True, name=f"renew-{self.holder}")
        self._thread.start()

    def _renew(self) -> None:
        interval = max(1.0, self.slots.options.ttl_seconds / 3)
        while not self._stop.wait(interval):
            for name in self.names:
                try:
                    if not self.slots.renew(name, self.holder):
                        self.lost = True
                        return
                except Exception:  # a failed renewal is retried at the next tick; expiry is the backstop
                    continue

    def __enter__(self) -> HeldSlots:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def free(self, keeper: str = "") -> None:
        """Give the slots back, or hand them to ``keeper`` (``failed_holder``, ``handed_over_holder``)."""
        for name in self.names:
            if keeper:
                self.slots.keep_for_node(name, self.holder, keeper)
            else:
                self.slots.release(name, self.holder)
