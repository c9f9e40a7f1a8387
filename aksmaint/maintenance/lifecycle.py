"""One node's maintenance, driven through its phases (``aksmaint.maintenance.phases``), with no Prefect in it.

gates -> slot -> recheck -> cordon -> drain -> reboot -> verify -> uncordon, then release (always, once a
slot is held). Each phase is a handler that does one step on the cluster and names the next phase, or ends
the node with an outcome; each phase's module declares, beside its handler, what it does, what it resumes
after a crash and what a cancel does there. What decides a node's outcome is only what happened on the
cluster: the run's record keeping (Prefect) is the ``Recorder``, whose failures never reach a handler.

Transient API errors are retried per phase with backoff; anything else ends the node as failed, with its
record left on it for the next run.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Protocol

from aksmaint.errors import MaintenanceError
from aksmaint.hostexec import HostPodSettings
from aksmaint.kube import Kube, node_gone
from aksmaint.maintenance import cordon as cordon_ops
from aksmaint.maintenance import notify
from aksmaint.maintenance.attempts import StepAttempts
from aksmaint.maintenance.budgets import Budgets
from aksmaint.maintenance.lock import HeldSlots, RebootSlots, failed_holder, handed_over_holder
from aksmaint.maintenance.phases import PHASES
from aksmaint.maintenance.phases.base import Done, Next, NodeRun, Phase, PhaseSpec
from aksmaint.maintenance.phases.hand_over import HandOver
from aksmaint.maintenance.reboot import remove_reboot_pods
from aksmaint.params import MaintenanceParams
from aksmaint.report import NodeFacts, NodeReport, Outcome, PlanEntry


class Recorder(Protocol):
    """Where a node's progress is reported (the Prefect run, in the flow). Never raises."""

    def event(self, name: str, node: str, **payload: object) -> None: ...

    def info(self, message: str, *args: object) -> None: ...

    def warning(self, message: str, *args: object) -> None: ...

    def error(self, message: str, *args: object) -> None: ...


class PhaseRunner(Protocol):
    """Drives the attempts of one phase of one node (``StepAttempts``) and returns how the phase ended.
    The flow records each phase as a Prefect task run; without it the attempts simply run in a loop."""

    def __call__(self, run: NodeRun, phase: Phase, attempts: StepAttempts[Next]) -> Next: ...


def run_in_loop(run: NodeRun, phase: Phase, attempts: StepAttempts[Next]) -> Next:
    return attempts.finish()


class NodeLifecycle:
    """Runs one node through its phases. Shared by all the nodes of a run (it holds no node state).
    ``phases`` and ``slots`` are the real ones unless a test passes its own."""

    def __init__(
        self,
        kube: Kube,
        params: MaintenanceParams,
        run_id: str,
        recorder: Recorder,
        stop: threading.Event | None = None,
        retry_delay: float = 1.0,
        budgets: Budgets | None = None,
        run_phase: PhaseRunner = run_in_loop,
        own_node: str = "",
        hand_over: HandOver | None = None,
        phases: Mapping[Phase, PhaseSpec] = PHASES,
        slots: RebootSlots | None = None,
    ):
        self.kube = kube
        self.params = params
        self.run_id = run_id
        self.recorder = recorder
        self.stop = stop or threading.Event()
        self.retry_delay = retry_delay
        self.settings = HostPodSettings(params.reboot.host_pod_namespace, params.reboot.host_pod_image)
        self.slots = slots or RebootSlots(kube, params.lock)
        self.budgets = budgets or Budgets(params, [])
        self.run_phase = run_phase
        self.phases = phases
        # in_cluster: the node this run's pod is on, never drained from under it; ``hand_over`` starts
        # the follow-up run that will reboot it (None: no follow-up can be started, the node is held)
        self.own_node = own_node
        self.hand_over = hand_over
        self.halt_reason = ""  # set when going on would no longer be safe; the rollout starts no new node

    # ---- the engine ------------------------------------------------------------------------------
    def run(self, entry: PlanEntry, before: NodeFacts) -> NodeReport:
        """The node from its gates to its outcome. Never raises: an error ends the node as failed."""
        run = NodeRun(
            entry,
            before,
            self.run_id,
            NodeReport(
                node=entry.node, pool=before.pool, outcome=Outcome.failed, kernel_before=before.kernel
            ),
        )
        try:
            with HeldSlots(self.slots, run.holder) as run.held:  # leaving it stops the renewals
                done = self._unless_gone(run, self._through_phases(run))
        finally:
            if run.slots:
                self._release(run)
        return self._finish(run, done)

    def _through_phases(self, run: NodeRun) -> Done:
        step: Next = Phase.gates
        try:
            while isinstance(step, Phase):
                run.phase = step
                step = self._attempt(self.phases[step], run)
        except MaintenanceError as exc:
            step = Done(Outcome.failed, str(exc))
        except Exception as exc:  # the node's record (if any) stays on it for the next run
            step = Done(Outcome.failed, f"unexpected error: {type(exc).__name__}: {exc}"[:500])
        return step

    def _unless_gone(self, run: NodeRun, done: Done) -> Done:
        """A node that did not end well may simply have been deleted (scale-in, auto-repair, a spot
        eviction): then it is gone, not failed, and its slot is freed, not kept."""
        if done.outcome in (Outcome.rebooted, Outcome.not_needed) or not node_gone(self.kube, run.node):
            return done
        run.keep_slot = False
        self.recorder.info("%s was deleted from the cluster during %s", run.node, run.phase)
        return Done(Outcome.gone, f"deleted from the cluster during {run.phase} ({done.reason})"[:500])

    def _attempt(self, phase: PhaseSpec, run: NodeRun) -> Next:
        """One phase, retried after transient API errors, driven by ``run_phase``."""

        def retrying(attempt: int, exc: BaseException, wait: float) -> None:
            self.recorder.warning(
                "%s: %s failed (%s); attempt %d in %.0fs", run.node, phase.phase, exc, attempt, wait
            )

        run.told = []
        attempts = StepAttempts(lambda: phase.handler(self, run), phase.retries, self.retry_delay, retrying)
        return self.run_phase(run, phase.phase, attempts)

    def tell(self, run: NodeRun, message: str, *args: object) -> None:
        """A line of the node's story: logged, and kept as what the phase in progress did."""
        self.recorder.info("%s " + message, run.node, *args)
        run.told.append(message % args if args else message)

    def _finish(self, run: NodeRun, done: Done) -> NodeReport:
        report = run.report
        report.outcome, report.reason = done.outcome, done.reason
        report.duration_seconds = round(time.monotonic() - run.started, 2)
        self._tell_end(run, done)
        if done.outcome in (Outcome.skipped, Outcome.failed, Outcome.gone, Outcome.quarantined):
            self.recorder.event(
                f"node.{done.outcome.value}",
                run.node,
                reason=done.reason,
                phase=str(run.phase),
                duration_seconds=report.duration_seconds,
            )
        return report

    def _tell_end(self, run: NodeRun, done: Done) -> None:
        """The last line of a node's story when it did not end rebooted: what happened and what to do."""
        if done.outcome == Outcome.rebooted:
            return
        line = f"%s {done.outcome.value}: %s" + (
            f". Next: {done.outcome.next_step}" if done.outcome.next_step else ""
        )
        if done.outcome == Outcome.failed:
            self.recorder.error(line, run.node, done.reason)
        elif done.outcome in (Outcome.skipped, Outcome.quarantined):
            self.recorder.warning(line, run.node, done.reason)
        else:
            self.recorder.info(line, run.node, done.reason)

    def _release(self, run: NodeRun) -> None:
        """Always, once a slot is held, after its renewals stopped: remove our reboot pod, free the slot (or
        hand it to a node that did not come back, so it keeps counting against the concurrency)."""
        try:
            if run.rebooted_here:
                remove_reboot_pods(self.kube, run.node, self.settings)
        except Exception as exc:  # the node's outcome is decided; leftovers are logged, not fatal
            self.recorder.warning("%s: could not clean up after the node (%s)", run.node, exc)
        finally:
            self._free_slot(run)

    def _free_slot(self, run: NodeRun) -> None:
        """A slot that cannot be written now is not lost: nobody renews it, so it expires after its
        lease duration and counts against the concurrency until then, which is the safe side."""
        if not run.keep_slot and self.params.lock.release_delay_seconds:
            time.sleep(self.params.lock.release_delay_seconds)
        try:
            assert run.held is not None
            keeper = handed_over_holder(run.node) if run.handed_over else ""
            run.held.free(failed_holder(run.node) if run.keep_slot else keeper)
            kept = "kept for it, as it did not come back" if run.keep_slot else "released"
            kept = "kept for it until the follow-up run takes it" if run.handed_over else kept
            back = "uncordoned; " if run.uncordoned else ""
            self.recorder.info("%s %sreboot slot %s %s", run.node, back, ", ".join(run.slots), kept)
        except Exception as exc:
            if run.keep_slot:  # once it expires the down node no longer counts: start no other node
                self.halt_reason = (
                    f"the slot of {run.node}, which did not come back, could not be kept ({exc}); "
                    "no further node is started"
                )
                self.recorder.warning("%s", self.halt_reason)
                return
            self.recorder.warning(
                "%s: slots %s could not be released (%s); they expire in %.0fs",
                run.node,
                ", ".join(run.slots),
                exc,
                self.params.lock.ttl_seconds,
            )

    def notify(self, template: str, node: str, **values: object) -> None:
        notify.send(self.params.notify, template, node=node, cluster=self.kube.cluster_name, **values)

    def uncordon(self, run: NodeRun, post_labels: bool = True) -> bool:
        """The node back in service (unless an operator had cordoned it: then False), its record dropped."""
        labels = self.params.labels.post_reboot if post_labels else None
        schedulable = cordon_ops.uncordon(self.kube, run.node, run.record, labels)
        self.recorder.event("node.uncordoned", run.node, left_cordoned_for_operator=not schedulable)
        return schedulable
