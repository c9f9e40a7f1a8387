"""Each node of a rollout as a Prefect task run named after it, and each phase of its lifecycle as a task
run nested under it. Their states say what happened on the cluster, so the run graph tells a failed node
from a rebooted one at a glance.

Prefect is the record here, never a part of the work:

- A node's lifecycle and each attempt of each phase run exactly once, whatever Prefect does. The work is
  handed to the task run by a ticket (task parameters stay plain data). If the task run cannot be set up,
  the work runs without it, and the gap is logged. If Prefect fails after the work ran, the result stands.
- A phase is retried after a transient API error as a Prefect retry (run count above 1, a Retrying state),
  but the attempts are counted by ``aksmaint.maintenance.attempts.StepAttempts``: if Prefect stops retrying, the attempts
  left run without it.
- Phase runs commit their own transaction at once. A node's task run that ends Failed would otherwise roll
  its nested runs back, and Prefect would show a cordon that really happened as "RolledBack".

The mapping of outcomes to states is ``OUTCOME_STATES``; docs/operations.md has it as a table.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import uuid
from collections.abc import Callable
from typing import Any

from prefect import Task, get_run_logger
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State, StateType
from prefect.states import Cancelled, Completed, Failed
from prefect.transactions import CommitMode, transaction

from aksmaint.maintenance.attempts import StepAttempts
from aksmaint.maintenance.phases import Done, Next, NodeRun, Phase
from aksmaint.report import NodeFacts, NodeReport, Outcome, PlanEntry
from tasks.tasking import brief, run_logger

# The state type says whether an operator has something to do: green (Completed) is fine, grey
# (Cancelled) is not done in this run but nothing is broken, red (Failed) needs a person. The name says
# which outcome it was.
OUTCOME_STATES: dict[Outcome, tuple[StateType, str]] = {
    Outcome.rebooted: (StateType.COMPLETED, "Rebooted"),
    Outcome.not_needed: (StateType.COMPLETED, "NotNeeded"),
    Outcome.not_applicable: (StateType.COMPLETED, "NotApplicable"),
    Outcome.planned: (StateType.COMPLETED, "Planned"),
    Outcome.held: (StateType.CANCELLED, "Held"),
    Outcome.skipped: (StateType.CANCELLED, "Skipped"),
    Outcome.gone: (StateType.CANCELLED, "Gone"),
    Outcome.handed_over: (StateType.CANCELLED, "HandedOver"),
    Outcome.quarantined: (StateType.FAILED, "Quarantined"),
    Outcome.failed: (StateType.FAILED, "Failed"),
}

_CONSTRUCTORS: dict[StateType, Callable[..., State]] = {
    StateType.COMPLETED: Completed,
    StateType.CANCELLED: Cancelled,
    StateType.FAILED: Failed,
}

# The phases as their task runs are named in the UI: "<node>/<title>". The gates (window, blockers, alerts,
# kured's lock) are no task run of their own: they run in the node's, whose state says when they held it.
PHASE_TITLES: dict[Phase, str] = {
    Phase.recover: "recover",
    Phase.slot: "reboot-slot",
    Phase.recheck: "re-check",
    Phase.cordon: "cordon",
    Phase.drain: "drain",
    Phase.reboot: "reboot",
    Phase.verify: "health-verify",
    Phase.uncordon: "uncordon",
}

NODE_LOG: contextvars.ContextVar[logging.Logger | logging.LoggerAdapter | None] = contextvars.ContextVar(
    "node_log", default=None
)


def node_logger() -> logging.Logger | logging.LoggerAdapter:
    """The logger of the node's own task run while its lifecycle runs, so that its story is on its page
    whichever phase run is in progress; else the current run's."""
    return NODE_LOG.get() or run_logger()


def outcome_state(outcome: Outcome, reason: str) -> State:
    """The state a node's task run ends in: its reason, and what to do next where there is something."""
    state_type, name = OUTCOME_STATES[outcome]
    message = reason + (f". Next: {outcome.next_step}" if outcome.next_step else "")
    return _CONSTRUCTORS[state_type](name=name, message=message)


def phase_state(result: Next, told: list[str]) -> State:
    """The state a phase's task run ends in: Completed with what it did, or the node's outcome when the
    phase ended the node other than well."""
    if isinstance(result, Done) and result.outcome not in (Outcome.rebooted, Outcome.not_needed):
        return outcome_state(result.outcome, result.reason)
    said = "; ".join(told) or (result.reason if isinstance(result, Done) else "")
    return Completed(message=said or None)


class RetryStep(Exception):
    """A phase's attempt failed on a transient API error and may be tried again: Prefect retries it."""


def _retry_condition(task_obj: Any, task_run: Any, state: Any) -> bool:
    try:
        exc = state.result(raise_on_failure=False)
    except Exception as err:
        exc = err
    return isinstance(exc, RetryStep)


def _never(task_obj: Any, task_run: Any, state: Any) -> bool:
    return False


# work handed to task runs by ticket
_NODES: dict[str, Callable[[], NodeReport]] = {}
_PHASES: dict[str, tuple[NodeRun, StepAttempts[Next]]] = {}


def _run_node(node: str, action: str, ticket: str) -> State:
    """One node through its lifecycle. Its parameters are plain data: the work comes by ticket."""
    token = NODE_LOG.set(get_run_logger())
    try:
        report = _NODES[ticket]()
    finally:
        NODE_LOG.reset(token)
    return outcome_state(report.outcome, report.reason)


def _run_phase(node: str, phase: str, ticket: str) -> State:
    """One attempt of one phase; a transient error raises ``RetryStep`` for Prefect to retry it."""
    run, attempts = _PHASES[ticket]
    try:
        result = attempts.attempt()
    except Exception as exc:
        if not attempts.ended:
            raise RetryStep(brief(exc)) from exc
        return Failed(message=brief(exc))
    return phase_state(result, run.told)


# A node task run that ends Failed with no retries left makes Prefect log "NoneType: None" as if it had a
# traceback; one retry that the condition never grants keeps that line out of the node's log.
maintain_node: Task[..., State] = Task(
    fn=_run_node,
    name="maintain-node",
    task_run_name="{node}",
    retries=1,
    retry_condition_fn=_never,
    cache_policy=NO_CACHE,
    persist_result=False,
)


class _QuietPhaseEnds(logging.Filter):
    """Drops Prefect's "Finished in state Completed()" line of a phase run: the run's state says it, and a
    line per phase would double what a node writes to the Prefect API. A phase that fails keeps its line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            record.levelno == logging.INFO
            and getattr(record, "task_name", None) in _PHASE_NAMES
            and str(record.msg).startswith("Finished in state")
        )


_PHASE_NAMES = frozenset(PHASE_TITLES.values())
logging.getLogger("prefect.task_runs").addFilter(_QuietPhaseEnds())

_phase_tasks: dict[tuple[Phase, int], Task[..., State]] = {}
_phase_tasks_lock = threading.Lock()


def _phase_task(phase: Phase, retries: int) -> Task[..., State]:
    with _phase_tasks_lock:
        if (phase, retries) not in _phase_tasks:
            _phase_tasks[(phase, retries)] = Task(
                fn=_run_phase,
                name=PHASE_TITLES[phase],
                task_run_name="{node}/{phase}",
                retries=retries,
                retry_delay_seconds=0,  # StepAttempts waits its own backoff before the next attempt
                retry_condition_fn=_retry_condition,
                cache_policy=NO_CACHE,
                persist_result=False,
            )
        return _phase_tasks[(phase, retries)]


def run_phase_recorded(run: NodeRun, phase: Phase, attempts: StepAttempts[Next]) -> Next:
    """``aksmaint.maintenance.lifecycle.PhaseRunner``: the phase's attempts in a task run nested under the node's."""
    if phase not in PHASE_TITLES:
        return attempts.finish()
    ticket = uuid.uuid4().hex
    _PHASES[ticket] = (run, attempts)
    try:
        with transaction(commit_mode=CommitMode.EAGER):
            _phase_task(phase, attempts.retries)(run.node, PHASE_TITLES[phase], ticket, return_state=True)
    except Exception as exc:
        if attempts.count == 0:
            node_logger().warning(
                "%s: the task run of %s could not be started (%s); running it without one",
                run.node,
                PHASE_TITLES[phase],
                brief(exc),
            )
    finally:
        _PHASES.pop(ticket, None)
    return attempts.finish()


class _Once:
    """A body that runs at most once, remembering whether it started and how it ended."""

    def __init__(self, body: Callable[[], NodeReport]):
        self.body = body
        self.started = False
        self.report: NodeReport | None = None
        self.error: Exception | None = None

    def __call__(self) -> NodeReport:
        if not self.started:
            self.started = True
            try:
                self.report = self.body()
            except Exception as exc:
                self.error = exc
        if self.error is not None:
            raise self.error
        assert self.report is not None
        return self.report


def recorded(
    entry: PlanEntry, before: NodeFacts, body: Callable[[PlanEntry, NodeFacts], NodeReport]
) -> NodeReport:
    """Run ``body`` for the node inside its Prefect task run; exactly once, whatever Prefect does."""
    return _in_node_run(entry, lambda: body(entry, before))


def _in_node_run(entry: PlanEntry, work: Callable[[], NodeReport]) -> NodeReport:
    once = _Once(work)
    ticket = uuid.uuid4().hex
    _NODES[ticket] = once
    try:
        maintain_node(entry.node, entry.action, ticket, return_state=True)
    except Exception as exc:
        if not once.started:
            run_logger().warning(
                "%s: its Prefect task run could not be started (%s); maintaining it without one",
                entry.node,
                brief(exc),
            )
    finally:
        _NODES.pop(ticket, None)
    return once()


def record_outcome(entry: PlanEntry, report: NodeReport) -> NodeReport:
    """A node that was not taken through its lifecycle (not needed, Windows, held before it started) as a
    task run of its own in the state of its outcome, so every node of the plan shows in the graph."""

    def told() -> NodeReport:
        if report.outcome.next_step:
            node_logger().info(
                "%s %s: %s. Next: %s",
                report.node,
                report.outcome.value,
                report.reason,
                report.outcome.next_step,
            )
        return report

    return _in_node_run(entry, told)
