"""The phases of one node's lifecycle, one module each, every handler declared with its spec: what the
phase does, what it picks up from a run that crashed there (the node record annotation and the slot Leases
live in the cluster, so the next run can see them), and what a cancelled run does there.

gates -> slot -> recheck -> cordon -> drain -> reboot -> verify -> uncordon; a node an earlier run left
failed goes from its gates to recover, and the run's own node from its cordon to hand-over. The engine that
runs them, and releases the slot at the end, is ``aksmaint.maintenance.lifecycle``.
"""

from __future__ import annotations

from collections.abc import Mapping

from aksmaint.maintenance.phases.base import Done, Next, NodeRun, Phase, PhaseSpec
from aksmaint.maintenance.phases.cordon import cordon
from aksmaint.maintenance.phases.drain import drain
from aksmaint.maintenance.phases.gates import gates
from aksmaint.maintenance.phases.hand_over import hand_over
from aksmaint.maintenance.phases.reboot import reboot
from aksmaint.maintenance.phases.recheck import recheck
from aksmaint.maintenance.phases.recover import recover
from aksmaint.maintenance.phases.slot import slot
from aksmaint.maintenance.phases.uncordon import uncordon
from aksmaint.maintenance.phases.verify import verify

# in the order a node goes through them (recover and hand-over where they branch off)
PHASES: Mapping[Phase, PhaseSpec] = {
    spec.phase: spec
    for spec in (gates, recover, slot, recheck, cordon, drain, reboot, verify, hand_over, uncordon)
}

__all__ = ["PHASES", "Done", "Next", "NodeRun", "Phase", "PhaseSpec"]
