"""Rollout threads share one RebootSlots. Two threads interleaved step by step must each get the verdict
of their own pass at the slots, whatever the other thread's pass found in between."""

from __future__ import annotations

import threading

from aksmaint.errors import LockTimeout
from aksmaint.maintenance.budgets import SlotSet
from aksmaint.maintenance.lock import RebootSlots, failed_holder
from aksmaint.params import LockOptions
from tests.unit.fake_api import FakeApi, fake_kube

NODE = "aks-nodepool1-08642115-vmss000003"
ZONE_1 = SlotSet("zone-1", 1, "zone 1: 1 at once", "zone 1")
ZONE_2 = SlotSet("zone-2", 1, "zone 2: 1 at once", "zone 2")
ZONE_3 = SlotSet("zone-3", 1, "zone 3: 1 at once", "zone 3")
KEPT_BY_FAILED = (
    f"every reboot slot of zone 2 is kept by a node that did not come back ({NODE}); fix those nodes first"
)
LOOKED_ONCE = "stopped waiting for a reboot slot: the test looked once"


def filled() -> RebootSlots:
    """Zone 1's only slot held by a live run, zone 2's kept by a node that did not come back (and is still
    there). Returns a fresh RebootSlots over them, for the threads to share."""
    api = FakeApi()
    api.add_node(NODE)
    setup = RebootSlots(fake_kube(api), LockOptions())
    setup.acquire("run-other/1", lambda: [ZONE_1], 1)
    (zone_2_slot,) = setup.acquire("run-lost/1", lambda: [ZONE_2], 1)
    setup.keep_for_node(zone_2_slot, "run-lost/1", failed_holder(NODE))
    return RebootSlots(fake_kube(api), LockOptions())


def race(monkeypatch, shared: RebootSlots, first: SlotSet, second: SlotSet) -> dict[str, str | list[str]]:
    """Two threads wait for a slot through one RebootSlots, as rollout threads do. The first stops right
    after its pass at the slots until the second has made its own pass. Each looks once and gives up
    (``keep_waiting``). Returns what each got: the slots, or the message it stopped with."""
    one_pass = shared.try_acquire
    first_passed, second_passed = threading.Event(), threading.Event()

    def pass_in_turn(holder: str, sets: list[SlotSet]) -> object:
        attempt = one_pass(holder, sets)
        if holder == "first":
            first_passed.set()
            second_passed.wait(5)
        else:
            second_passed.set()
        return attempt

    monkeypatch.setattr(shared, "try_acquire", pass_in_turn)
    got: dict[str, str | list[str]] = {}

    def wait_for_slot(holder: str, slot_set: SlotSet) -> None:
        try:
            got[holder] = shared.acquire(
                holder, lambda: [slot_set], 60, keep_waiting=lambda: "the test looked once"
            )
        except LockTimeout as exc:
            got[holder] = str(exc)

    first_thread = threading.Thread(target=wait_for_slot, args=("first", first))
    first_thread.start()
    assert first_passed.wait(5)
    wait_for_slot("second", second)
    first_thread.join(5)
    return got


def test_a_thread_is_not_held_for_another_threads_full_set(monkeypatch):
    """The first thread's zone is merely busy; the second's is kept by a node that did not come back.
    Only the second may be told to fix that node."""
    got = race(monkeypatch, filled(), ZONE_1, ZONE_2)
    assert got == {"first": LOOKED_ONCE, "second": KEPT_BY_FAILED}


def test_a_thread_is_held_for_its_own_full_set_whatever_another_thread_found(monkeypatch):
    """The first thread's zone is kept by a node that did not come back; the second takes a slot in a
    free zone meanwhile. The first must still stop at once and say why."""
    got = race(monkeypatch, filled(), ZONE_2, ZONE_3)
    assert got == {"first": KEPT_BY_FAILED, "second": ["aks-maintenance-slot-zone-3-0"]}
