"""The rollout: up to ``concurrency`` nodes through their lifecycle at once, in plain threads.

A worker takes the next node of the plan unless the rollout has stopped: too many failed nodes
(``max_failures``), a stop request (a cancelled run), or a reason from ``should_halt`` (the flow uses it to
stop starting nodes when its record keeper, the Prefect API, has been unreachable for too long). A node
already started always runs to its outcome, which leaves it at a safe point: back in service, or cordoned
with its record.
"""

from __future__ import annotations

import contextvars
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from aksmaint.report import NodeFacts, NodeReport, Outcome, PlanEntry
from tasks.lifecycle import NodeLifecycle
from tasks.plan import node_report

RunNode = Callable[[PlanEntry, NodeFacts], NodeReport]


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
    ):
        self.lifecycle = lifecycle
        self.params = lifecycle.params
        self.todo = todo
        self.facts = facts
        self.run_node = run_node or lifecycle.run
        self.should_halt = should_halt
        self.on_progress = on_progress
        self.result = RolloutResult()
        self._lock = threading.Lock()
        self._failures = 0
        self._work: queue.Queue[PlanEntry] = queue.Queue()

    @property
    def stop(self) -> threading.Event:
        return self.lifecycle.stop

    def run(self) -> RolloutResult:
        for entry in self.todo:
            self._work.put(entry)
        threads = [
            threading.Thread(
                target=contextvars.copy_context().run, args=(self._worker,), name=f"node-worker-{i}"
            )
            for i in range(min(self.params.concurrency, len(self.todo)))
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
        while True:
            try:
                entry = self._work.get_nowait()
            except queue.Empty:
                return
            if halted := self._halt_reason():
                self._record(entry, self._report(entry, Outcome.held, f"not started: {halted}"))
                continue
            try:
                report = self.run_node(entry, self.facts[entry.node])
            except Exception as exc:  # a worker never dies with a node unreported
                report = self._report(
                    entry, Outcome.failed, f"unexpected error: {type(exc).__name__}: {exc}"[:500]
                )
            self._record(entry, report)

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
