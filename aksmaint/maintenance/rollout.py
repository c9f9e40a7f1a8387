"""The rollout: up to ``concurrency`` nodes through their lifecycle at once, in plain threads.

A worker takes the first node of the plan whose budgets (``aksmaint.maintenance.budgets``: all nodes, its pool, its zone)
have room in this run, so that no more workers wait on the slot Leases than the budgets let through; the
Leases then hold the limits across runs. A node under a limit of 0 now (a budget outside its schedule) is
held without waiting.

A worker takes the next node of the plan unless the rollout has stopped: too many failed nodes
(``max_failures``), a stop request (a cancelled run), or a reason from ``should_halt`` (the flow uses it to
stop starting nodes when its record keeper, the Prefect API, has been unreachable for too long). A node
already started always runs to its outcome, which leaves it at a safe point: back in service, or cordoned
with its record. The run's own node (in_cluster) starts only once every other node has ended: its
hand-over keeps a slot until a follow-up run takes it.
"""

from __future__ import annotations

import contextvars
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from aksmaint.maintenance.budgets import SlotSet, blocked_by, closed_reason
from aksmaint.maintenance.lifecycle import NodeLifecycle
from aksmaint.maintenance.plan import node_report
from aksmaint.report import NodeFacts, NodeReport, Outcome, PlanEntry

RunNode = Callable[[PlanEntry, NodeFacts], NodeReport]
ReportNode = Callable[[PlanEntry, NodeReport], NodeReport]


@dataclass
class RolloutResult:
    reports: dict[str, NodeReport] = field(default_factory=dict)
    halted: str = ""


class Rollout:
    def __init__(
        self,
        lifecycle: NodeLifecycle,
        todo: list[PlanEntry],
        facts: dict[str, NodeFacts],
        run_node: RunNode | None = None,
        should_halt: Callable[[], str | None] = lambda: None,
        on_progress: Callable[[int, int], None] = lambda done, total: None,
        report_unstarted: ReportNode = lambda entry, report: report,
    ):
        self.lifecycle = lifecycle
        self.params = lifecycle.params
        self.todo = todo
        self.facts = facts
        self.run_node = run_node or lifecycle.run
        self.should_halt = should_halt
        self.on_progress = on_progress
        self.report_unstarted = report_unstarted  # a node held before its lifecycle started
        self.result = RolloutResult()
        self._lock = threading.Lock()
        self._failures = 0
        self.budgets = lifecycle.budgets
        self._pending = list(todo)
        self._in_use: Counter[str] = Counter()  # nodes of this run in progress, per slot set
        self._room = threading.Condition()  # guards _pending and _in_use; notified when a node ends

    @property
    def stop(self) -> threading.Event:
        return self.lifecycle.stop

    def run(self) -> RolloutResult:
        threads = [
            threading.Thread(
                target=contextvars.copy_context().run, args=(self._worker,), name=f"node-worker-{i}"
            )
            for i in range(min(self.budgets.concurrency, len(self.todo)))
        ]
        try:
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        except BaseException:
            # cancelled or terminated: nodes in progress stop at the next safe point (before a reboot) and
            # are put back in service; Prefect's grace period is 30 s, the cancellation hook does the rest
            self.stop.set()
            for t in threads:
                t.join(timeout=20)
            raise
        return self.result

    def _halt_reason(self) -> str:
        with self._lock:
            if self.result.halted:
                return self.result.halted
        reason = "run cancelled" if self.stop.is_set() else self.lifecycle.halt_reason or self.should_halt()
        if reason:
            with self._lock:
                self.result.halted = self.result.halted or reason
        return reason or ""

    def _worker(self) -> None:
        while (picked := self._next()) is not None:
            entry, sets, held = picked
            if held:
                self._record(entry, self.report_unstarted(entry, self._report(entry, Outcome.held, held)))
                continue
            try:
                report = self.run_node(entry, self.facts[entry.node])
            except Exception as exc:  # a worker never dies with a node unreported
                report = self._report(
                    entry, Outcome.failed, f"unexpected error: {type(exc).__name__}: {exc}"[:500]
                )
            finally:
                with self._room:
                    self._in_use.subtract(s.key for s in sets)
                    self._room.notify_all()
            self._record(entry, report)

    def _next(self) -> tuple[PlanEntry, list[SlotSet], str] | None:
        """The next node to start with the slot sets it counts against, or to hold with the reason (a
        halted rollout, a limit of 0 now); None when no node is left. Waits while every node left is
        under a limit this run's nodes in progress fill."""
        with self._room:
            while self._pending:
                if halted := self._halt_reason():
                    return self._pending.pop(0), [], f"not started: {halted}"
                now, by_place = datetime.now(UTC), {}
                for i, entry in enumerate(self._pending):
                    if entry.node == self.lifecycle.own_node and (len(self._pending) > 1 or +self._in_use):
                        continue  # the run's own node is handed over once every other node has ended
                    facts = self.facts[entry.node]
                    if (place := (facts.pool, facts.zone)) not in by_place:
                        by_place[place] = self.budgets.sets_for(facts, now)
                    sets = by_place[place]
                    if closed := closed_reason(sets):
                        del self._pending[i]
                        return entry, [], closed
                    if blocked_by(sets, self._in_use) is None:
                        del self._pending[i]
                        self._in_use.update(s.key for s in sets)
                        return entry, sets, ""
                self._room.wait(timeout=1.0)  # a schedule may open, a halt may come
            return None

    def _report(self, entry: PlanEntry, outcome: Outcome, reason: str) -> NodeReport:
        """A node's report when its lifecycle did not run (or did not finish): held, or failed."""
        return node_report(entry, self.facts[entry.node], outcome, reason)

    def _record(self, entry: PlanEntry, report: NodeReport) -> None:
        with self._lock:
            self.result.reports[entry.node] = report
            if report.outcome == Outcome.failed:
                self._failures += 1
                if self._failures > self.params.max_failures and not self.result.halted:
                    self.result.halted = (
                        f"rollout halted after {self._failures} failed node(s) "
                        f"(max_failures={self.params.max_failures})"
                    )
                    self.lifecycle.recorder.warning("%s", self.result.halted)
            done = len(self.result.reports)
        self.lifecycle.recorder.info("%s: %s (%s)", entry.node, report.outcome.value, report.reason)
        self.on_progress(done, len(self.todo))
