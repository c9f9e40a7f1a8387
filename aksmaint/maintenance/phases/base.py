"""What every phase of a node's lifecycle shares: the phase names, the spec each handler declares beside
it, what one node's lifecycle knows as it goes (``NodeRun``), and the end of a node (``Done``)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

from aksmaint.nodestate import NodeRecord
from aksmaint.report import NodeFacts, NodeReport, Outcome, PlanEntry

if TYPE_CHECKING:
    from aksmaint.maintenance.lifecycle import NodeLifecycle
    from aksmaint.maintenance.lock import HeldSlots


class Phase(StrEnum):
    """A phase of a node's lifecycle: one handler, one spec (``PhaseSpec``), and, after the gates, one task
    run in the flow. What a phase leaves on the node for the next run is a ``aksmaint.nodestate.RecordState``,
    which is not a phase."""

    gates = "gates"
    recover = "recover"
    slot = "slot"
    recheck = "recheck"
    cordon = "cordon"
    drain = "drain"
    reboot = "reboot"
    verify = "verify"
    uncordon = "uncordon"
    hand_over = "hand-over"


@dataclass(frozen=True)
class Done:
    """The end of a node's lifecycle: its outcome and why."""

    outcome: Outcome
    reason: str


Next = Phase | Done  # what a handler returns: the next phase, or the node's end


@dataclass
class NodeRun:
    """What one node's lifecycle knows as it moves through the phases."""

    entry: PlanEntry
    before: NodeFacts
    run_id: str
    report: NodeReport
    started: float = field(default_factory=time.monotonic)
    held: HeldSlots | None = None  # the node's slots, one per slot set it is in (taken by the slot phase)
    record: NodeRecord | None = None
    earlier_run: str = ""  # the run whose record we found (our cordon makes the record ours)
    rebooted_already: bool = False  # an earlier run's reboot already happened
    rebooted_here: bool = False  # this run started the reboot
    keep_slot: bool = False  # did not come back: the slot stays with the node
    phase: Phase = Phase.gates  # the phase in progress
    boot_started: float = 0.0
    told: list[str] = field(default_factory=list)  # what the phase in progress said it did
    uncordoned: bool = False  # by the uncordon phase, after the reboot
    handed_over: bool = False  # to a follow-up run: the slot stays with the node

    @property
    def node(self) -> str:
        return self.entry.node

    @property
    def holder(self) -> str:
        return f"{self.run_id}/{self.node}"

    @property
    def slots(self) -> list[str]:
        """The names of the slots the node holds (none before the slot phase)."""
        return self.held.names if self.held is not None else []


Handler = Callable[["NodeLifecycle", NodeRun], Next]


@dataclass(frozen=True)
class PhaseSpec:
    """A phase as its module declares it, beside its handler. ``docs/operations.md`` has these as its phase
    table (checked by ``tests/unit/test_phase_specs.py``)."""

    phase: Phase
    handler: Handler
    does: str
    resumes: str  # what it picks up from a run that crashed in or after it
    on_cancel: str  # what a cancelled run does when the cancel arrives here
    retries: int = 3  # transient API errors, with backoff


def phase(name: Phase, *, does: str, resumes: str, on_cancel: str, retries: int = 3):
    """Declares the handler below it as phase ``name``: the handler becomes the phase's ``PhaseSpec``."""

    def spec(handler: Handler) -> PhaseSpec:
        return PhaseSpec(name, handler, does, resumes, on_cancel, retries)

    return spec
