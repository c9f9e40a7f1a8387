"""Cordon and the reboot slots on their own, against an in-memory API that checks resourceVersions:
what each writes, what it keeps of an earlier run's record, and what it does when someone else writes
between its read and its write."""

from __future__ import annotations

import pytest

import aksmaint.maintenance.lock as lock_module
from aksmaint.errors import NodeBusy
from aksmaint.maintenance import cordon as cordon_ops
from aksmaint.maintenance.lock import SlotAttempt, failed_holder
from aksmaint.maintenance.taints import set_pending_taint
from aksmaint.nodestate import PENDING_TAINT_KEY, STATE_ANNOTATION, NodeRecord, RecordState, read_record
from aksmaint.params import LockOptions
from tests.support import SingleSetSlots
from tests.unit.fake_api import FakeApi, fake_kube

NODE = "aks-nodepool1-08642115-vmss000000"
NS = "kube-system"


@pytest.fixture
def api() -> FakeApi:
    fake = FakeApi()
    fake.add_node(NODE)
    return fake


def record_of(api: FakeApi) -> NodeRecord | None:
    return read_record(api.read_node(NODE))


def cordon(api: FakeApi, holder: str = "run-a/slot-0", alive: bool = False) -> NodeRecord:
    return cordon_ops.cordon(fake_kube(api), NODE, "run-a", holder, "kernel update", lambda h: alive)


# ---- cordon ----------------------------------------------------------------------------------
def test_cordon_marks_the_node_unschedulable_and_records_why_in_the_same_write(api):
    record = cordon(api)
    assert api.writes == 1
    assert api.node(NODE)["spec"]["unschedulable"] is True
    assert record_of(api) == record
    assert (record.phase, record.cordoned_by_us, record.reason) == (
        RecordState.cordoned,
        True,
        "kernel update",
    )
    assert (record.boot_id_before, record.kernel_before) == ("boot-1", "5.15.0-1079-azure")


def test_a_node_an_operator_cordoned_stays_cordoned_after_our_uncordon(api):
    api.add_node(NODE, unschedulable=True)
    record = cordon(api)
    assert record.cordoned_by_us is False
    schedulable = cordon_ops.uncordon(fake_kube(api), NODE, record)
    assert schedulable is False
    assert api.node(NODE)["spec"].get("unschedulable") is True
    assert STATE_ANNOTATION not in api.node(NODE)["metadata"]["annotations"]


def test_uncordon_puts_our_node_back_drops_the_record_and_the_pending_taint(api):
    other = {"key": "sku", "value": "gpu", "effect": "NoSchedule"}
    api.add_node(
        NODE, taints=[other, {"key": PENDING_TAINT_KEY, "value": "true", "effect": "PreferNoSchedule"}]
    )
    record = cordon(api)
    assert cordon_ops.uncordon(fake_kube(api), NODE, record, {"aksmaint.io/rebooted": "yes"}) is True
    node = api.node(NODE)
    assert "unschedulable" not in node["spec"] and record_of(api) is None
    assert [t["key"] for t in node["spec"]["taints"]] == ["sku"]
    assert node["metadata"]["labels"]["aksmaint.io/rebooted"] == "yes"


def test_a_cordon_by_an_operator_between_our_read_and_our_write_is_seen(api):
    """Our write carries the resourceVersion we read: the operator's cordon makes it a 409, we read
    again, and our record says the cordon is not ours (so our uncordon will leave it)."""

    def operator_cordons_the_node():
        api.nodes[NODE]["spec"]["unschedulable"] = True
        api.nodes[NODE]["metadata"]["resourceVersion"] = api._next_rv()

    api.before_write = operator_cordons_the_node
    record = cordon(api)
    assert record.cordoned_by_us is False and record_of(api) == record
    assert cordon_ops.uncordon(fake_kube(api), NODE, record) is False
    assert api.node(NODE)["spec"]["unschedulable"] is True


def test_a_live_holder_keeps_its_node(api):
    cordon(api, holder="run-b/slot-1")
    with pytest.raises(NodeBusy, match="being handled by run-b/slot-1"):
        cordon(api, holder="run-a/slot-0", alive=True)
    assert record_of(api).holder == "run-b/slot-1"


def test_the_record_of_a_run_gone_is_taken_over_with_what_it_knew(api):
    first = cordon(api, holder="run-b/slot-1")
    rebooting = first.model_copy(update={"phase": RecordState.rebooting})
    cordon_ops.update_record(fake_kube(api), NODE, rebooting)
    api.nodes[NODE]["status"]["nodeInfo"]["bootID"] = "boot-2"  # the node rebooted meanwhile
    taken = cordon(api, holder="run-a/slot-0", alive=False)
    assert taken.holder == "run-a/slot-0" and taken.phase == RecordState.rebooting
    assert taken.cordoned_by_us is True and taken.boot_id_before == "boot-1"


def test_the_pending_taint_is_set_once_removed_once_and_a_deleted_node_needs_none(api):
    kube = fake_kube(api)
    set_pending_taint(kube, NODE, True)
    set_pending_taint(kube, NODE, True)
    assert api.writes == 1
    assert [t["key"] for t in api.node(NODE)["spec"]["taints"]] == [PENDING_TAINT_KEY]
    set_pending_taint(kube, NODE, False)
    assert "taints" not in api.node(NODE)["spec"]
    set_pending_taint(kube, "aks-gone-000000", True)  # 404: nothing to do


# ---- reboot slots ----------------------------------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(lock_module.time, "monotonic", c)
    return c


def slots(api: FakeApi, concurrency: int = 2, ttl: float = 30) -> SingleSetSlots:
    return SingleSetSlots(fake_kube(api), LockOptions(ttl_seconds=ttl), concurrency)


def holder_of(api: FakeApi, slot: str) -> str:
    return api.lease(NS, slot)["spec"]["holderIdentity"]


def test_never_more_holders_than_slots(api, clock):
    s = slots(api)
    assert s.take("run-a/1") == "aks-maintenance-slot-0"
    assert s.take("run-b/1") == "aks-maintenance-slot-1"
    assert s.take("run-c/1") is None
    assert s.take("run-a/1") == "aks-maintenance-slot-0"  # its own slot again
    assert api.lease(NS, "aks-maintenance-slot-0")["spec"]["leaseTransitions"] == 0


def test_a_slot_created_by_someone_else_first_sends_us_to_the_next(api, clock):
    s = slots(api)
    api.before_write = lambda: slots(api).take("run-b/1")
    assert s.take("run-a/1") == "aks-maintenance-slot-1"
    assert holder_of(api, "aks-maintenance-slot-0") == "run-b/1"


def test_a_slot_whose_holder_stopped_renewing_is_taken_only_after_a_whole_ttl_seen_from_here(api, clock):
    slots(api, concurrency=1).take("run-b/1")  # run-b then dies
    s = slots(api, concurrency=1)
    assert s.take("run-a/1") is None  # first seen now
    clock.now += 29
    assert s.take("run-a/1") is None
    clock.now += 2
    assert s.take("run-a/1") == "aks-maintenance-slot-0"
    lease = api.lease(NS, "aks-maintenance-slot-0")
    assert lease["spec"]["holderIdentity"] == "run-a/1" and lease["spec"]["leaseTransitions"] == 1


def test_a_renewal_keeps_the_slot_from_looking_expired(api, clock):
    b = slots(api, concurrency=1)
    b.take("run-b/1")
    a = slots(api, concurrency=1)
    a.take("run-a/1")
    for _ in range(5):
        clock.now += 20
        assert b.renew("aks-maintenance-slot-0", "run-b/1") is True
        assert a.take("run-a/1") is None


def test_release_frees_only_our_own_slot(api, clock):
    s = slots(api, concurrency=1)
    s.take("run-b/1")
    s.release("aks-maintenance-slot-0", "run-a/1")
    assert holder_of(api, "aks-maintenance-slot-0") == "run-b/1"
    s.release("aks-maintenance-slot-0", "run-b/1")
    assert holder_of(api, "aks-maintenance-slot-0") == ""
    assert s.take("run-a/1") == "aks-maintenance-slot-0"


def test_a_node_that_did_not_come_back_keeps_its_slot_until_it_is_deleted(api, clock):
    s = slots(api, concurrency=1)
    s.take("run-a/1")
    s.keep_for_node("aks-maintenance-slot-0", "run-a/1", failed_holder(NODE))
    assert holder_of(api, "aks-maintenance-slot-0") == failed_holder(NODE)
    clock.now += 10_000
    assert s.try_acquire("run-b/1", s.sets()) == SlotAttempt(None, s.sets()[0], (NODE,))
    del api.nodes[NODE]  # AKS replaced it: the pass that sees it gone frees the slot, the next takes it
    s.take("run-b/1")
    assert holder_of(api, "aks-maintenance-slot-0") in ("", "run-b/1")
    assert s.take("run-b/1") == "aks-maintenance-slot-0"


def test_a_renewal_that_meets_a_write_reads_again_and_sees_whether_the_slot_is_still_ours(api, clock):
    s = slots(api, concurrency=1)
    s.take("run-a/1")

    def relabelled() -> None:  # someone touched the Lease, it is still ours
        lease = api.leases[(NS, "aks-maintenance-slot-0")]
        lease["metadata"]["labels"]["team"] = "payments"
        lease["metadata"]["resourceVersion"] = api._next_rv()

    api.before_write = relabelled
    assert s.renew("aks-maintenance-slot-0", "run-a/1") is True

    def taken_over() -> None:  # another run took the slot over in between
        lease = api.leases[(NS, "aks-maintenance-slot-0")]
        lease["spec"]["holderIdentity"] = "run-b/1"
        lease["metadata"]["resourceVersion"] = api._next_rv()

    api.before_write = taken_over
    assert s.renew("aks-maintenance-slot-0", "run-a/1") is False
    s.release("aks-maintenance-slot-0", "run-a/1")  # not ours any more: left alone
    assert holder_of(api, "aks-maintenance-slot-0") == "run-b/1"


def test_a_free_slot_is_taken_before_one_whose_holder_only_looks_dead(api, clock):
    """Renewals can be late under load: a slot that merely looks expired is taken over only when no
    slot is free, so a run never takes a live holder's slot while it has room elsewhere."""
    slots(api, concurrency=2).take("run-b/1")  # slot 0, then run-b stops renewing
    s = slots(api, concurrency=2)
    assert s.take("run-a/1") == "aks-maintenance-slot-1"  # slot 0 first seen now
    s.release("aks-maintenance-slot-1", "run-a/1")
    clock.now += 31  # slot 0 has looked unchanged for longer than its TTL
    assert s.take("run-a/2") == "aks-maintenance-slot-1", "the free slot, not the expired one"
    assert holder_of(api, "aks-maintenance-slot-0") == "run-b/1"
    assert s.take("run-a/3") == "aks-maintenance-slot-0", "no slot free: the expired one is taken over"
