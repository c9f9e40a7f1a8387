"""One node's maintenance as an explicit phase table, with no Prefect in it.

gates -> slot -> recheck -> cordon -> drain -> reboot -> verify -> uncordon, then release (always, once a
slot is held). Each phase is a handler that does one step on the cluster and names the next phase, or ends
the node with an outcome. What decides a node's outcome is only what happened on the cluster: the run's
record keeping (Prefect) is the ``Recorder``, whose failures never reach a handler.

The table says, for each phase, what it does, what it picks up from a run that crashed there (the node
record annotation and the slot Leases live in the cluster, so the next run can see them), and what a
cancelled run does there. Transient API errors are retried per phase with backoff; anything else ends the
node as failed, with its record left on it for the next run.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Protocol

from aksmaint.errors import LockTimeout, MaintenanceError, NodeBusy
from aksmaint.hostexec import HostPodSettings
from aksmaint.kube import Kube, node_gone, node_info
from aksmaint.maintenance import cordon as cordon_ops
from aksmaint.maintenance import notify
from aksmaint.maintenance.attempts import StepAttempts
from aksmaint.maintenance.budgets import Budgets
from aksmaint.maintenance.drain import DrainResult, delete_pods, drain_node
from aksmaint.maintenance.gates import gate_reason, window_closed
from aksmaint.maintenance.health import check_node, wait_until_back
from aksmaint.maintenance.lock import RebootSlots, SlotRenewer, failed_holder, handed_over_holder
from aksmaint.maintenance.reboot import already_requested, reboot_pods, remove_reboot_pods, request_reboot
from aksmaint.maintenance.sentinel import recheck_node
from aksmaint.maintenance.taints import set_pending_taint
from aksmaint.nodestate import NodeRecord, Phase, now_iso, read_record
from aksmaint.params import MaintenanceParams, OnDrainTimeout
from aksmaint.report import NodeFacts, NodeReport, Outcome, PlanAction, PlanEntry


class Recorder(Protocol):
    """Where a node's progress is reported (the Prefect run, in the flow). Never raises."""

    def event(self, name: str, node: str, **payload: object) -> None: ...

    def info(self, message: str, *args: object) -> None: ...

    def warning(self, message: str, *args: object) -> None: ...

    def error(self, message: str, *args: object) -> None: ...


class Step(StrEnum):
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


@dataclass
class NodeRun:
    """What one node's lifecycle knows as it moves through the phases."""

    entry: PlanEntry
    before: NodeFacts
    run_id: str
    report: NodeReport
    started: float = field(default_factory=time.monotonic)
    slots: list[str] = field(default_factory=list)  # one slot Lease per slot set the node is in
    renewer: SlotRenewer | None = None
    record: NodeRecord | None = None
    earlier_run: str = ""  # the run whose record we found (our cordon makes the record ours)
    rebooted_already: bool = False  # an earlier run's reboot already happened
    rebooted_here: bool = False  # this run started the reboot
    keep_slot: bool = False  # did not come back: the slot stays with the node
    phase: str = "gates"  # the phase in progress
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


Handler = Callable[["NodeLifecycle", NodeRun], "Step | Done"]
# starts the follow-up run that reboots the run's own node from another node; returns how to name it
HandOver = Callable[[str], str]
OWN_NODE = "this run's own pod runs on it, so it is not drained from under the run"
NO_FOLLOW_UP = (
    "run the flow from a deployment (it then hands the node over to a follow-up run) or from another node"
)


class StepRunner(Protocol):
    """Drives the attempts of one phase of one node (``StepAttempts``) and returns how the phase ended.
    The flow records each phase as a Prefect task run; without it the attempts simply run in a loop."""

    def __call__(self, run: NodeRun, step: Step, attempts: StepAttempts[Step | Done]) -> Step | Done: ...


def run_in_loop(run: NodeRun, step: Step, attempts: StepAttempts[Step | Done]) -> Step | Done:
    return attempts.finish()


@dataclass(frozen=True)
class PhaseSpec:
    step: Step
    handler: Handler
    does: str
    resumes: str  # what it picks up from a run that crashed in or after it
    on_cancel: str  # what a cancelled run does when the cancel arrives here
    retries: int = 3  # transient API errors, with backoff


class NodeLifecycle:
    """Runs one node through the phase table. Shared by all the nodes of a run (it holds no node state)."""

    def __init__(
        self,
        kube: Kube,
        params: MaintenanceParams,
        run_id: str,
        recorder: Recorder,
        stop: threading.Event | None = None,
        retry_delay: float = 1.0,
        budgets: Budgets | None = None,
        run_step: StepRunner = run_in_loop,
        own_node: str = "",
        hand_over: HandOver | None = None,
    ):
        self.kube = kube
        self.params = params
        self.run_id = run_id
        self.recorder = recorder
        self.stop = stop or threading.Event()
        self.retry_delay = retry_delay
        self.settings = HostPodSettings(params.reboot.host_pod_namespace, params.reboot.host_pod_image)
        self.slots = RebootSlots(kube, params.lock)
        self.budgets = budgets or Budgets(params, [])
        self.run_step = run_step
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
        step: Step | Done = Step.gates
        try:
            try:
                while isinstance(step, Step):
                    run.phase = step
                    step = self._attempt(PHASES[step], run)
            except MaintenanceError as exc:
                step = Done(Outcome.failed, str(exc))
            except Exception as exc:  # the node's record (if any) stays on it for the next run
                step = Done(Outcome.failed, f"unexpected error: {type(exc).__name__}: {exc}"[:500])
            step = self._unless_gone(run, step)
        finally:
            if run.slots:
                self._release(run)
        return self._finish(run, step)

    def _unless_gone(self, run: NodeRun, done: Done) -> Done:
        """A node that did not end well may simply have been deleted (scale-in, auto-repair, a spot
        eviction): then it is gone, not failed, and its slot is freed, not kept."""
        if done.outcome in (Outcome.rebooted, Outcome.not_needed) or not node_gone(self.kube, run.node):
            return done
        run.keep_slot = False
        self.recorder.info("%s was deleted from the cluster during %s", run.node, run.phase)
        return Done(Outcome.gone, f"deleted from the cluster during {run.phase} ({done.reason})"[:500])

    def _attempt(self, phase: PhaseSpec, run: NodeRun) -> Step | Done:
        """One phase, retried after transient API errors, driven by ``run_step``."""

        def retrying(attempt: int, exc: BaseException, wait: float) -> None:
            self.recorder.warning(
                "%s: %s failed (%s); attempt %d in %.0fs", run.node, phase.step, exc, attempt, wait
            )

        run.told = []
        attempts = StepAttempts(lambda: phase.handler(self, run), phase.retries, self.retry_delay, retrying)
        return self.run_step(run, phase.step, attempts)

    def _tell(self, run: NodeRun, message: str, *args: object) -> None:
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
        """Always, once a slot is held: stop renewing, remove our reboot pod, free the slot (or hand it to
        a node that did not come back, so it keeps counting against the concurrency)."""
        try:
            if run.renewer is not None:
                run.renewer.__exit__()
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
            for name in run.slots:
                if run.keep_slot:
                    self.slots.keep_for_failed_node(name, run.holder, run.node)
                elif run.handed_over:
                    self.slots.keep_for_node(name, run.holder, handed_over_holder(run.node))
                else:
                    self.slots.release(name, run.holder)
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

    def _notify(self, template: str, node: str, **values: object) -> None:
        notify.send(self.params.notify, template, node=node, cluster=self.kube.cluster_name, **values)

    def _uncordon(self, run: NodeRun, post_labels: bool = True) -> bool:
        labels = self.params.labels.post_reboot if post_labels else None
        schedulable = cordon_ops.uncordon(self.kube, run.node, run.record, labels)
        self.recorder.event("node.uncordoned", run.node, left_cordoned_for_operator=not schedulable)
        return schedulable

    # ---- the phases ------------------------------------------------------------------------------
    def gates(self, run: NodeRun) -> Step | Done:
        params = self.params
        if reason := gate_reason(self.kube, run.node, params.window, params.blockers, params.lock):
            return Done(Outcome.held, reason)
        if run.entry.action == PlanAction.resume:
            record = read_record(self.kube.call(self.kube.core.read_node, run.node))
            if record is not None and record.phase == Phase.failed:
                run.record = record
                return Step.recover
        if run.node == self.own_node and self.hand_over is None:
            return Done(Outcome.held, f"{OWN_NODE}; {NO_FOLLOW_UP}")
        return Step.slot

    def recover(self, run: NodeRun) -> Step | Done:
        """A node an earlier run left failed: back in service once healthy, with the slot it kept freed."""
        record = run.record
        assert record is not None
        health = check_node(self.kube, run.node, record.boot_id_before or "")
        if not health.healthy:
            return Done(
                Outcome.held,
                f"left failed by run {record.run_id} and still not healthy ({health.reason}): {record.reason}",
            )
        self._uncordon(run)
        self.slots.release_all_held_by(failed_holder(run.node))
        run.report.kernel_after, run.report.boot_id_changed = health.kernel, True
        return Done(
            Outcome.rebooted, f"came back after run {record.run_id} gave up on it; kernel {health.kernel}"
        )

    def slot(self, run: NodeRun) -> Step | Done:
        waiting = time.monotonic()
        # a node an earlier run handed over (a node with a record: resumed) keeps its slots until this run
        # takes them; other nodes skip that read of the slot Leases
        resumed = run.entry.action == PlanAction.resume
        if resumed and (taken := self.slots.take_over(handed_over_holder(run.node), run.holder)):
            run.slots = taken
            run.renewer = SlotRenewer(self.slots, run.slots, run.holder).__enter__()
            self._tell(run, "took over reboot slot %s, kept for it since its hand-over", ", ".join(taken))
            return Step.recheck
        try:
            run.slots = self.slots.acquire(
                run.holder,
                lambda: self.budgets.sets_for(run.before, datetime.now(UTC)),
                self.params.lock.wait_seconds,
                keep_waiting=self._stop_waiting,
            )
        except LockTimeout as exc:
            return Done(Outcome.held, str(exc))
        run.renewer = SlotRenewer(self.slots, run.slots, run.holder).__enter__()
        self._tell(
            run, "took reboot slot %s after waiting %.1fs", ", ".join(run.slots), time.monotonic() - waiting
        )
        return Step.recheck

    def _stop_waiting(self) -> str | None:
        if self.stop.is_set():
            return "the run is stopping"
        return window_closed(self.params.window)

    def recheck(self, run: NodeRun) -> Step | Done:
        """Under the slot: wait out another live run's work on the node, then look again whether it still
        needs a reboot (another run may have done it meanwhile)."""
        try:
            current, record = self._wait_for_other_runs(run)
        except NodeBusy as exc:
            return Done(Outcome.held, str(exc))
        if record is not None and record.phase == Phase.failed:
            return Done(Outcome.held, f"left failed by an earlier run: {record.reason}")
        now = self._probe(current)
        if now.scan_error or now.reboot_required is None:
            return Done(Outcome.held, f"re-check under the slot failed: {now.scan_error or 'no answer'}")
        run.rebooted_already = bool(
            record is not None and record.boot_id_before and now.boot_id != record.boot_id_before
        )
        if (
            record is not None
            and record.phase == Phase.rebooting
            and not run.rebooted_already
            and now.ready
            and not reboot_pods(self.kube, run.node, self.settings)
        ):
            # the earlier run stopped between recording the reboot and starting it: start over
            record = record.model_copy(update={"phase": Phase.cordoned})
            cordon_ops.update_record(self.kube, run.node, record)
        if not now.reboot_required and not run.rebooted_already:
            if record is not None:
                cordon_ops.uncordon(self.kube, run.node, record)
                return Done(Outcome.not_needed, "no reboot required; cleaned up after an earlier run")
            set_pending_taint(self.kube, run.node, False)
            return Done(Outcome.not_needed, "no reboot required any more")
        run.earlier_run = record.run_id if record is not None else ""
        run.told.append(f"still needs a reboot (kernel {now.kernel or 'unknown'} running)")
        return Step.cordon

    def _wait_for_other_runs(self, run: NodeRun):
        deadline = time.monotonic() + self.params.lock.wait_seconds
        while True:
            current = self.kube.call(self.kube.core.read_node, run.node)
            record = read_record(current)
            if record is None or record.holder == run.holder or not self.slots.holder_alive(record.holder):
                return current, record
            if time.monotonic() > deadline:
                raise NodeBusy(f"node {run.node} is being handled by {record.holder}")
            time.sleep(1)

    def _probe(self, current) -> NodeFacts:
        return recheck_node(self.kube, current, self.params.sentinel, self.settings)

    def cordon(self, run: NodeRun) -> Step | Done:
        try:
            run.record = cordon_ops.cordon(
                self.kube,
                run.node,
                self.run_id,
                run.holder,
                "kernel update needs a reboot",
                self.slots.holder_alive,
            )
        except NodeBusy as exc:  # another run cordoned it between our re-check and our cordon
            return Done(Outcome.held, str(exc))
        self.recorder.event(
            "node.cordoned", run.node, run=self.run_id, operator_cordoned=not run.record.cordoned_by_us
        )
        self._tell(
            run,
            "cordoned"
            if run.record.cordoned_by_us
            else "already cordoned by an operator; it stays cordoned after",
        )
        if run.rebooted_already or run.record.phase == Phase.rebooting:
            self.recorder.info("%s: resuming after the reboot requested by %s", run.node, run.earlier_run)
            run.boot_started = time.monotonic()
            return Step.verify
        if run.node == self.own_node:
            return Step.hand_over
        return Step.drain

    def drain(self, run: NodeRun) -> Step | Done:
        assert run.record is not None
        params = self.params
        if run.record.phase != Phase.draining:
            cordon_ops.set_labels(self.kube, run.node, params.labels.pre_reboot)
            self._notify(params.notify.drain_template, run.node)
            run.record = run.record.model_copy(update={"phase": Phase.draining})
            cordon_ops.update_record(self.kube, run.node, run.record)
        self.recorder.event("node.draining", run.node, run=self.run_id, slots=list(run.slots))
        started = time.monotonic()
        result = drain_node(self.kube, run.node, params.drain)
        run.report.evicted_pods = len(result.evicted)
        run.report.drain_seconds = round(time.monotonic() - started, 2)
        self._log_drain(run, result)
        if not result.complete and (done := self._drain_incomplete(run, result)):
            return done
        self.recorder.event(
            "node.drained",
            run.node,
            evicted=len(result.evicted),
            complete=result.complete,
            duration_seconds=run.report.drain_seconds,
        )
        if run.renewer is not None and run.renewer.lost:
            # another holder saw our renewals stop and took a slot over: it counts on our node being
            # back, so the reboot must not happen; the node goes back in service for a later run
            self._uncordon(run, post_labels=False)
            return Done(
                Outcome.held,
                f"lost its reboot slot ({', '.join(run.slots)}) before the reboot: its renewals were "
                "late and another holder took it over; put back in service",
            )
        if self.stop.is_set():
            self._uncordon(run)
            return Done(Outcome.held, "run stopped before the reboot; node put back in service")
        return Step.reboot

    def _log_drain(self, run: NodeRun, result: DrainResult) -> None:
        for warning in result.warnings:
            self.recorder.warning("%s: %s", run.node, warning)
        if not result.complete:
            return
        slowest = f"; slowest {result.slowest[0]} in {result.slowest[1]:.1f}s" if result.slowest else ""
        refused = (
            f"; PodDisruptionBudgets refused {result.refusals} eviction(s) while replacements got ready"
            if result.refusals
            else ""
        )
        self._tell(
            run,
            "drained: %d pod(s) evicted in %.1fs%s%s",
            len(result.evicted),
            run.report.drain_seconds,
            slowest,
            refused,
        )

    def _drain_incomplete(self, run: NodeRun, result: DrainResult) -> Done | None:
        """The drain timed out or hit an error: skip the node, or go on as ``drain.on_timeout`` says."""
        options = self.params.drain
        why = "; ".join(result.errors) or (
            f"drain timed out after {options.timeout_seconds:.0f}s with {len(result.remaining)} pod(s) left"
            + (f" (blocked by PodDisruptionBudget {', '.join(result.blocking)})" if result.blocking else "")
        )
        self.recorder.warning("%s not fully drained: %s", run.node, why)
        if options.on_timeout == OnDrainTimeout.quarantine:
            assert run.record is not None
            run.record = cordon_ops.quarantine(self.kube, run.node, run.record, why)
            return Done(
                Outcome.quarantined,
                f"{why}; quarantined: left cordoned with label aksmaint.io/status=quarantined",
            )
        if result.errors or options.on_timeout == OnDrainTimeout.uncordon_and_skip:
            self._uncordon(run, post_labels=False)
            return Done(Outcome.skipped, f"{why}; uncordoned and left unrebooted")
        if options.on_timeout == OnDrainTimeout.delete_pods:
            self.recorder.warning("%s: deleting the remaining pods (bypassing their budgets)", run.node)
            left = delete_pods(self.kube, result.remaining, options.grace_period_seconds, 120)
            if left:
                self.recorder.warning("%s: pods still present after deletion: %s", run.node, ", ".join(left))
        else:
            self.recorder.warning("%s: rebooting anyway as configured", run.node)
        return None

    def reboot(self, run: NodeRun) -> Step | Done:
        """Record the boot we expect to leave, then start the reboot. Idempotent: a node already on a new
        boot is not rebooted again."""
        assert run.record is not None
        run.boot_started = time.monotonic()
        current = self.kube.call(self.kube.core.read_node, run.node)
        boot_id = node_info(current).boot_id
        if already_requested(self.kube, run.node, run.record, boot_id or "", self.settings):
            return Step.verify  # a retry after the reboot was requested: never a second reboot
        if self.params.reboot.delay_seconds:
            time.sleep(self.params.reboot.delay_seconds)
        self._notify(self.params.notify.reboot_template, run.node)
        run.record = run.record.model_copy(
            update={"phase": Phase.rebooting, "reboot_requested_at": now_iso(), "boot_id_before": boot_id}
        )
        cordon_ops.update_record(self.kube, run.node, run.record)
        run.rebooted_here = True
        request_reboot(self.kube, run.node, self.params.reboot.command, self.settings)
        self.recorder.event(
            "node.rebooting", run.node, kernel_before=run.record.kernel_before, boot_id_before=boot_id
        )
        self._tell(
            run, "reboot requested; leaving boot id %s on kernel %s", boot_id, run.record.kernel_before
        )
        return Step.verify

    def verify(self, run: NodeRun) -> Step | Done:
        record = run.record
        assert record is not None
        health = wait_until_back(
            self.kube, run.node, record.boot_id_before or "", self.params.reboot.boot_timeout_seconds
        )
        report = run.report
        report.boot_seconds = round(time.monotonic() - run.boot_started, 2)
        report.kernel_after = health.kernel
        report.boot_id_changed = bool(health.boot_id and health.boot_id != record.boot_id_before)
        if not health.healthy:
            cordon_ops.mark_failed(self.kube, run.node, record, health.reason)
            run.keep_slot = True
            self._notify(self.params.notify.failure_template, run.node, reason=health.reason)
            return Done(
                Outcome.failed,
                f"{health.reason}; left cordoned with a record in annotation aksmaint.io/maintenance",
            )
        self._tell(
            run,
            "back Ready on kernel %s after %.0fs (boot id %s)",
            health.kernel,
            report.boot_seconds,
            health.boot_id,
        )
        self.recorder.event(
            "node.rebooted",
            run.node,
            kernel_before=record.kernel_before,
            kernel_after=health.kernel,
            boot_seconds=report.boot_seconds,
            duration_seconds=report.boot_seconds,
        )
        return Step.uncordon

    def uncordon(self, run: NodeRun) -> Step | Done:
        record = run.record
        assert record is not None
        # told with the slot's release, in one line (``_free_slot``)
        if self._uncordon(run):
            run.told.append("uncordoned")
            run.uncordoned = True
        else:
            self._tell(run, "left cordoned: an operator had cordoned it before the run")
        report = run.report
        self._notify(
            self.params.notify.uncordon_template,
            run.node,
            kernel_before=record.kernel_before or run.before.kernel,
            kernel_after=report.kernel_after,
        )
        if record.kernel_before:
            report.kernel_before = record.kernel_before
        if not run.rebooted_here:
            return Done(Outcome.rebooted, f"verified after the reboot run {run.earlier_run} requested")
        return Done(
            Outcome.rebooted,
            f"drained ({report.evicted_pods} pod(s) evicted, {report.drain_seconds:.0f}s), "
            f"back after {report.boot_seconds:.0f}s",
        )

    def hand_over_node(self, run: NodeRun) -> Step | Done:
        """The run's own node, cordoned: start the follow-up run, record it on the node, and keep the
        node's slot for it. If no follow-up can be started, the node goes back in service, held."""
        assert run.record is not None and self.hand_over is not None
        try:
            follow_up = self.hand_over(run.node)
        except Exception as exc:  # Prefect could not start it: nothing is left half done on the node
            self._uncordon(run, post_labels=False)
            return Done(
                Outcome.held,
                f"{OWN_NODE}; the follow-up run could not be started ({exc}); put back in service",
            )
        reason = f"handed over to flow run {follow_up}: {OWN_NODE}"
        run.record = run.record.model_copy(update={"phase": Phase.handed_over, "reason": reason})
        cordon_ops.update_record(self.kube, run.node, run.record)
        run.handed_over = True
        self.recorder.event("node.handed_over", run.node, run=self.run_id, follow_up=follow_up)
        self._tell(run, "handed over to flow run %s, which reboots it from another node", follow_up)
        return Done(Outcome.handed_over, f"cordoned and {reason}")


PHASES: dict[Step, PhaseSpec] = {
    spec.step: spec
    for spec in (
        PhaseSpec(
            Step.gates,
            NodeLifecycle.gates,
            does="maintenance window, blocking pods, Prometheus alerts, kured's lock",
            resumes="a node an earlier run left failed goes to recover instead of a new slot",
            on_cancel="the node is not started (held)",
        ),
        PhaseSpec(
            Step.recover,
            NodeLifecycle.recover,
            does="a node left failed: uncordon it once healthy and free the slot it kept",
            resumes="the failed/<node> slot holder and the failed record",
            on_cancel="nothing to undo: it only puts a healthy node back",
        ),
        PhaseSpec(
            Step.slot,
            NodeLifecycle.slot,
            does="take a reboot slot Lease (never more nodes disrupted than the slots), renewed in the background",
            resumes="a slot of a dead holder is taken over once it has looked unchanged for its TTL",
            on_cancel="stops waiting; the node is held",
            retries=2,
        ),
        PhaseSpec(
            Step.recheck,
            NodeLifecycle.recheck,
            does="under the slot, wait out another live run on the node and probe again whether it needs a reboot",
            resumes="reads the record an earlier run left: its phase, boot id and kernel before",
            on_cancel="the node was not touched: released and held",
        ),
        PhaseSpec(
            Step.cordon,
            NodeLifecycle.cordon,
            does="cordon and write the record in one patch (never cordoned by us without a record)",
            resumes="takes over the record, keeping whether an operator had cordoned the node",
            on_cancel="the cancellation hook uncordons it (phase cordoned)",
        ),
        PhaseSpec(
            Step.drain,
            NodeLifecycle.drain,
            does="pre-reboot labels, evict the pods (budgets respected), then drain.on_timeout if it cannot finish",
            resumes="a record in phase draining drains again",
            on_cancel="stops before the reboot and puts the node back in service",
            retries=1,
        ),
        PhaseSpec(
            Step.reboot,
            NodeLifecycle.reboot,
            does="record the boot id to leave, then start the reboot command in a host pod",
            resumes="a node already on a new boot is not rebooted again",
            on_cancel="the record stays (phase rebooting); the next run verifies the node",
            retries=2,
        ),
        PhaseSpec(
            Step.verify,
            NodeLifecycle.verify,
            does="wait until Ready on a new boot id with a fresh heartbeat; else leave it failed with its slot",
            resumes="verifies against the boot id the record holds",
            on_cancel="the record stays; the next run verifies the node",
        ),
        PhaseSpec(
            Step.hand_over,
            NodeLifecycle.hand_over_node,
            does="the run's own node (in_cluster), cordoned: start a follow-up run and keep the slot for it",
            resumes="the follow-up takes over the handed-over/<node> slot and drains the node as usual",
            on_cancel="the record (phase handed-over) stays for the follow-up run",
            retries=1,
        ),
        PhaseSpec(
            Step.uncordon,
            NodeLifecycle.uncordon,
            does="uncordon (unless an operator had cordoned it), post-reboot labels, drop the record",
            resumes="idempotent: a node already uncordoned stays so",
            on_cancel="finishes: the node is healthy",
        ),
    )
}
