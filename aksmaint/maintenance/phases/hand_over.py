"""The hand-over: the run's own node (in_cluster), cordoned, for a follow-up run that reboots it from
another node (``aksmaint.maintenance.self_host``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from aksmaint.maintenance import cordon as cordon_ops
from aksmaint.maintenance.phases.base import Done, Next, NodeRun, Phase, phase
from aksmaint.nodestate import RecordState
from aksmaint.report import Outcome

if TYPE_CHECKING:
    from aksmaint.maintenance.lifecycle import NodeLifecycle

# starts the follow-up run that reboots the run's own node from another node; returns how to name it
HandOver = Callable[[str], str]
OWN_NODE = "this run's own pod runs on it, so it is not drained from under the run"
NO_FOLLOW_UP = (
    "run the flow from a deployment (it then hands the node over to a follow-up run) or from another node"
)


@phase(
    Phase.hand_over,
    does="the run's own node (in_cluster), cordoned: start a follow-up run and keep the slot for it",
    resumes="the follow-up takes over the `handed-over/<node>` slot and drains the node as usual",
    on_cancel="the record (phase handed-over) stays for the follow-up run",
    retries=1,
)
def hand_over(lc: NodeLifecycle, run: NodeRun) -> Next:
    """Start the follow-up run, record it on the node, and keep the node's slot for it. If no follow-up can
    be started, the node goes back in service, held."""
    assert run.record is not None and lc.hand_over is not None
    try:
        follow_up = lc.hand_over(run.node)
    except Exception as exc:  # Prefect could not start it: nothing is left half done on the node
        lc.uncordon(run, post_labels=False)
        return Done(
            Outcome.held,
            f"{OWN_NODE}; the follow-up run could not be started ({exc}); put back in service",
        )
    reason = f"handed over to flow run {follow_up}: {OWN_NODE}"
    run.record = run.record.model_copy(update={"phase": RecordState.handed_over, "reason": reason})
    cordon_ops.update_record(lc.kube, run.node, run.record)
    run.handed_over = True
    lc.recorder.event("node.handed_over", run.node, run=lc.run_id, follow_up=follow_up)
    lc.tell(run, "handed over to flow run %s, which reboots it from another node", follow_up)
    return Done(Outcome.handed_over, f"cordoned and {reason}")
