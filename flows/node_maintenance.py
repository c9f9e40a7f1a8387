"""Node maintenance: kured's job as a Prefect flow.

connect -> update check -> sentinel scan -> plan -> (approval) -> per node, as a subflow:
gates -> reboot slot -> cordon -> drain -> reboot -> verify -> uncordon -> release -> kernel diff.

Run it from a deployment, from the Prefect UI, or from the command line:
``python -m flows.node_maintenance --kubeconfig PATH [--context NAME] [--concurrency N] [--dry-run]``.
"""

from __future__ import annotations

import contextvars
import queue
import sys
import threading
import time
import uuid
from datetime import UTC, datetime

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, update_progress_artifact
from prefect.events import emit_event
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from prefect.logging.loggers import flow_run_logger
from prefect.runtime import flow_run as current_run
from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
from prefect.states import Completed, Failed

from aksmaint.errors import LockTimeout, MaintenanceError, NodeBusy
from aksmaint.hostexec import HostPodSettings, delete_stale_host_pods, run_on_host
from aksmaint.kube import Kube, kube_for
from aksmaint.nodestate import Phase, has_pending_taint, now_iso, read_record
from aksmaint.params import (
    ApprovalTimeout,
    Blockers,
    ClusterConnection,
    Concurrency,
    DrainOptions,
    LockOptions,
    MaintenanceParams,
    MaintenanceWindow,
    MaxFailures,
    NodeLabels,
    NotifyOptions,
    OnDrainTimeout,
    RebootOptions,
    RolloutOrder,
    SentinelMode,
    SentinelOptions,
)
from aksmaint.report import MaintenanceReport, NodeFacts, NodeReport, Outcome, PlanEntry
from aksmaint.tasking import maintenance_task
from tasks import cordon as cordon_ops
from tasks import notify
from tasks.cancellation import clean_up_cancelled_run
from tasks.drain import DrainResult, delete_pods, drain_node, select_pods
from tasks.gates import gate_reason, window_closed
from tasks.health import check_node, wait_until_back
from tasks.kernel_diff import kernel_diff_report
from tasks.lock import RebootSlots, SlotRenewer, failed_holder
from tasks.reboot import cleanup_reboot_pod, request_reboot
from tasks.sentinel import PROBE_SCRIPT, probe_facts, scan_sentinels
from tasks.update_check import check_updates, list_nodes, node_facts


class Approval(RunInput):
    """Answer to the approval gate, given from the Prefect UI."""

    approve: bool = False
    note: str = ""


def _emit(kube: Kube, event: str, node: str, **payload: object) -> None:
    emit_event(
        event=event,
        resource={
            "prefect.resource.id": f"aks.node.{kube.cluster_name}.{node}",
            "prefect.resource.name": node,
            "aks.cluster": kube.cluster_name,
        },
        payload={k: v for k, v in payload.items() if v is not None},
    )


def host_settings(params: MaintenanceParams) -> HostPodSettings:
    return HostPodSettings(params.reboot.host_pod_namespace, params.reboot.host_pod_image)


# ---- plan ------------------------------------------------------------------------------------
def make_plan(facts: list[NodeFacts], pods_to_move: dict[str, int] | None = None) -> list[PlanEntry]:
    """Order: nodes a previous run left mid-way first, then by pool and, within a pool, the nodes with the
    fewest pods a drain would evict first (``pods_to_move``), then by name. Emptier nodes go first so that
    the pods of fuller ones find nodes already rebooted (and, with the PreferNoSchedule taint on the
    nodes still waiting, go there): each pod moves as few times as possible."""
    moves = pods_to_move or {}
    entries = []
    for f in sorted(facts, key=lambda f: (not f.resume, f.pool, moves.get(f.name, 0), f.name)):
        if f.resume:
            entries.append(
                PlanEntry(node=f.name, action="resume", reason="a previous run left its record here")
            )
        elif f.scan_error:
            entries.append(PlanEntry(node=f.name, action="skip", reason=f"not scanned: {f.scan_error}"))
        elif f.reboot_required is None:
            entries.append(
                PlanEntry(
                    node=f.name, action="check", reason="reboot need unknown (dry run with host-pod scan)"
                )
            )
        elif f.reboot_required:
            reason = "/var/run/reboot-required present"
            if f.name in moves:
                reason += f"; {moves[f.name]} pod(s) to move"
            entries.append(PlanEntry(node=f.name, action="reboot", reason=reason))
        else:
            entries.append(PlanEntry(node=f.name, action="skip", reason="no reboot required"))
    return entries


@maintenance_task(name="plan")
def plan_rollout(kube: Kube, facts: list[NodeFacts], params: MaintenanceParams) -> list[PlanEntry]:
    needing = {f.name for f in facts if f.reboot_required and not f.resume and not f.scan_error}
    by_pods = params.order == RolloutOrder.fewest_pods_first and needing
    plan = make_plan(facts, pods_to_move(kube, needing, params.drain) if by_pods else None)
    by_name = {f.name: f for f in facts}
    lines = [
        f"# Maintenance plan for {kube.cluster_name}",
        "",
        f"Concurrency {params.concurrency}, max failures {params.max_failures}, "
        f"drain timeout {params.drain.timeout_seconds:.0f}s (then {params.drain.on_timeout.value}), "
        f"sentinel {params.sentinel.mode.value}, order {params.order.value}"
        f"{', dry run' if params.dry_run else ''}.",
        "",
        "| # | node | pool | kernel | action | why |",
        "|---|---|---|---|---|---|",
    ]
    for i, e in enumerate(plan, 1):
        f = by_name[e.node]
        lines.append(f"| {i} | {e.node} | {f.pool} | {f.kernel} | {e.action} | {e.reason} |")
    create_markdown_artifact(
        key="maintenance-plan", markdown="\n".join(lines), description=f"Plan for {kube.cluster_name}"
    )
    get_run_logger().info(
        "Plan: %d to reboot, %d to resume, %d skipped",
        sum(e.action == "reboot" for e in plan),
        sum(e.action == "resume" for e in plan),
        sum(e.action == "skip" for e in plan),
    )
    return plan


def pods_to_move(kube: Kube, nodes: set[str], options: DrainOptions) -> dict[str, int]:
    """Per node, the pods a drain would evict now (kubectl's filters), from one LIST of all pods."""
    on_node: dict[str, list] = {name: [] for name in nodes}
    for pod in kube.call(kube.core.list_pod_for_all_namespaces).items:
        if pod.spec.node_name in on_node:
            on_node[pod.spec.node_name].append(pod)
    return {name: len(select_pods(pods, options).evict) for name, pods in on_node.items()}


# ---- per-node steps (tasks) -----------------------------------------------------------------
@maintenance_task(name="acquire-reboot-slot", retries=2)
def acquire_reboot_slot(kube: Kube, params: MaintenanceParams, holder: str) -> str:
    slots = RebootSlots(kube, params.lock, params.concurrency)
    return slots.acquire(holder, params.lock.wait_seconds, keep_waiting=lambda: window_closed(params.window))


@maintenance_task(name="release-reboot-slot")
def release_reboot_slot(kube: Kube, params: MaintenanceParams, slot: str, holder: str) -> None:
    if params.lock.release_delay_seconds:
        time.sleep(params.lock.release_delay_seconds)
    RebootSlots(kube, params.lock, params.concurrency).release(slot, holder)


@maintenance_task(name="recheck-node")
def recheck_node(kube: Kube, node: str, params: MaintenanceParams, slots: RebootSlots, holder: str) -> dict:
    """Under the slot: wait out another live run's work on this node, then check again whether it
    still needs a reboot (another run may have done it meanwhile)."""
    deadline = time.monotonic() + params.lock.wait_seconds
    while True:
        current = kube.call(kube.core.read_node, node)
        record = read_record(current)
        if record is None or record.holder == holder or not slots.holder_alive(record.holder):
            break
        if time.monotonic() > deadline:
            raise NodeBusy(f"node {node} is being handled by {record.holder}")
        time.sleep(1)
    facts = node_facts(current)
    if params.sentinel.mode == SentinelMode.node_condition:
        cond = next(
            (c for c in current.status.conditions or [] if c.type == params.sentinel.condition_type), None
        )
        facts.reboot_required = bool(cond and cond.status == "True")
    else:
        result = run_on_host(kube, node, PROBE_SCRIPT, "scan", host_settings(params))
        facts = probe_facts(facts, result.output)
    return {"facts": facts, "record": record}


@maintenance_task(name="cordon")
def cordon_node(kube: Kube, node: str, run_id: str, holder: str, slots: RebootSlots, reason: str):
    record = cordon_ops.cordon(kube, node, run_id, holder, reason, slots.holder_alive)
    _emit(kube, "node.cordoned", node, run=run_id, operator_cordoned=not record.cordoned_by_us)
    return record


@maintenance_task(name="drain", retries=1)
def drain(kube: Kube, node: str, options: DrainOptions) -> DrainResult:
    logger = get_run_logger()
    result = drain_node(kube, node, options)
    for warning in result.warnings:
        logger.warning("%s: %s", node, warning)
    if result.refusals:
        logger.info(
            "%s: %d eviction(s) refused by PodDisruptionBudgets while replacements got ready",
            node,
            result.refusals,
        )
    if result.complete:
        logger.info("%s drained: %d pod(s) evicted", node, len(result.evicted))
    else:
        logger.warning(
            "%s not fully drained: %s remaining%s%s",
            node,
            len(result.remaining),
            f"; blocking budgets: {', '.join(result.blocking)}" if result.blocking else "",
            f"; errors: {'; '.join(result.errors)}" if result.errors else "",
        )
    return result


@maintenance_task(name="reboot", retries=2)
def reboot_node(kube: Kube, node: str, record, params: MaintenanceParams):
    """Record the boot we expect to leave, then start the reboot. Idempotent: a node already on a new
    boot is not rebooted again."""
    current = kube.call(kube.core.read_node, node)
    if record.boot_id_before and current.status.node_info.boot_id != record.boot_id_before:
        return record
    if params.reboot.delay_seconds:
        time.sleep(params.reboot.delay_seconds)
    record = record.model_copy(
        update={
            "phase": Phase.rebooting,
            "reboot_requested_at": now_iso(),
            "boot_id_before": current.status.node_info.boot_id,
        }
    )
    cordon_ops.update_record(kube, node, record)
    request_reboot(kube, node, params.reboot.command, host_settings(params))
    _emit(kube, "node.rebooting", node, kernel_before=record.kernel_before)
    return record


@maintenance_task(name="verify-health")
def verify_health(kube: Kube, node: str, record, params: MaintenanceParams):
    return wait_until_back(kube, node, record.boot_id_before or "", params.reboot.boot_timeout_seconds)


@maintenance_task(name="uncordon")
def uncordon_node(kube: Kube, node: str, record, params: MaintenanceParams) -> bool:
    schedulable = cordon_ops.uncordon(kube, node, record, params.labels.post_reboot)
    _emit(kube, "node.uncordoned", node, left_cordoned_for_operator=not schedulable)
    return schedulable


@maintenance_task(name="mark-failed")
def mark_node_failed(kube: Kube, node: str, record, reason: str) -> None:
    cordon_ops.mark_failed(kube, node, record, reason)
    _emit(kube, "node.failed", node, reason=reason)


_STOPS: dict[str, threading.Event] = {}  # run id -> set when the run is being cancelled


def stop_requested(run_id: str) -> bool:
    event = _STOPS.get(run_id)
    return event is not None and event.is_set()


# ---- per-node subflow -----------------------------------------------------------------------
@flow(name="maintain-node", flow_run_name="{node}", validate_parameters=False)
def maintain_node(
    node: str, entry: PlanEntry, before: NodeFacts, params: MaintenanceParams, run_id: str
) -> NodeReport:
    """One node, start to finish, holding a reboot slot the whole time it is disrupted."""
    kube = kube_for(params.cluster)
    logger = get_run_logger()
    started = time.monotonic()
    holder = f"{run_id}/{node}"
    settings = host_settings(params)
    cluster = kube.cluster_name
    report = NodeReport(node=node, pool=before.pool, outcome=Outcome.failed, kernel_before=before.kernel)

    def done(outcome: Outcome, reason: str, **extra: object) -> NodeReport:
        report.outcome, report.reason = outcome, reason
        report.duration_seconds = round(time.monotonic() - started, 2)
        for key, value in extra.items():
            setattr(report, key, value)
        return report

    slots = RebootSlots(kube, params.lock, params.concurrency)
    if entry.action == "resume":
        record = read_record(kube.call(kube.core.read_node, node))
        if record is not None and record.phase == Phase.failed:
            return recover_failed_node(kube, node, record, slots, params, done)
    try:
        slot = acquire_reboot_slot(kube, params, holder)
    except LockTimeout as exc:
        return done(Outcome.held, str(exc))
    reboot_pod = None
    failed = False
    try:
        with SlotRenewer(slots, slot, holder) as renewer:
            try:
                checked = recheck_node(kube, node, params, slots, holder)
            except NodeBusy as exc:
                return done(Outcome.held, str(exc))
            record = checked["record"]
            now = checked["facts"]
            if record is not None and record.phase == Phase.failed:
                return done(Outcome.held, f"left failed by an earlier run: {record.reason}")
            rebooted_already = (
                record is not None and record.boot_id_before and now.boot_id != record.boot_id_before
            )
            if (
                record is not None
                and record.phase == Phase.rebooting
                and not rebooted_already
                and now.ready
                and not _reboot_pods(kube, node, settings)
            ):
                # the earlier run stopped between recording the reboot and starting it: start over
                record = record.model_copy(update={"phase": Phase.cordoned})
                cordon_ops.update_record(kube, node, record)
            if not now.reboot_required and not rebooted_already:
                if record is not None:
                    cordon_ops.uncordon(kube, node, record)
                    return done(Outcome.not_needed, "no reboot required; cleaned up after an earlier run")
                cordon_ops.set_pending_taint(kube, node, False)
                return done(Outcome.not_needed, "no reboot required any more")
            # the run that left the record (the cordon below makes the record ours)
            earlier_run = record.run_id if record is not None else ""
            try:
                record = cordon_node(kube, node, run_id, holder, slots, "kernel update needs a reboot")
            except NodeBusy as exc:  # another run cordoned it between our re-check and our cordon
                return done(Outcome.held, str(exc))
            if not rebooted_already and record.phase not in (Phase.rebooting, Phase.verifying):
                cordon_ops.set_labels(kube, node, params.labels.pre_reboot)
                notify.send(params.notify, params.notify.drain_template, node=node, cluster=cluster)
                record = record.model_copy(update={"phase": Phase.draining})
                cordon_ops.update_record(kube, node, record)
                drain_started = time.monotonic()
                result = drain(kube, node, params.drain)
                report.evicted_pods = len(result.evicted)
                report.drain_seconds = round(time.monotonic() - drain_started, 2)
                if not result.complete:
                    why = "; ".join(result.errors) or (
                        f"drain timed out after {params.drain.timeout_seconds:.0f}s with "
                        f"{len(result.remaining)} pod(s) left"
                        + (
                            f" (blocked by PodDisruptionBudget {', '.join(result.blocking)})"
                            if result.blocking
                            else ""
                        )
                    )
                    policy = params.drain.on_timeout
                    if result.errors or policy == OnDrainTimeout.uncordon_and_skip:
                        uncordon_node(
                            kube,
                            node,
                            record,
                            params.model_copy(update={"labels": NodeLabels(prefer_no_schedule_taint=False)}),
                        )
                        _emit(kube, "node.skipped", node, reason=why)
                        return done(Outcome.skipped, f"{why}; uncordoned and left unrebooted")
                    if policy == OnDrainTimeout.delete_pods:
                        logger.warning(
                            "%s: %s; deleting the remaining pods (bypassing their budgets)", node, why
                        )
                        left = delete_pods(kube, result.remaining, params.drain.grace_period_seconds, 120)
                        if left:
                            logger.warning("%s: pods still present after deletion: %s", node, ", ".join(left))
                    else:
                        logger.warning("%s: %s; rebooting anyway as configured", node, why)
                if renewer.lost:
                    raise LockTimeout(f"lost reboot slot {slot} before rebooting {node}")
                if stop_requested(run_id):
                    uncordon_node(kube, node, record, params)
                    return done(Outcome.held, "run cancelled before the reboot; node put back in service")
                notify.send(params.notify, params.notify.reboot_template, node=node, cluster=cluster)
                boot_started = time.monotonic()
                record = reboot_node(kube, node, record, params)
                reboot_pod = True
            else:
                boot_started = time.monotonic()
                logger.info("%s: resuming after the reboot requested by %s", node, earlier_run)
            health = verify_health(kube, node, record, params)
            report.boot_seconds = round(time.monotonic() - boot_started, 2)
            report.kernel_after = health.kernel
            report.boot_id_changed = bool(health.boot_id and health.boot_id != record.boot_id_before)
            if not health.healthy:
                mark_node_failed(kube, node, record, health.reason)
                failed = True
                notify.send(
                    params.notify,
                    params.notify.failure_template,
                    node=node,
                    cluster=cluster,
                    reason=health.reason,
                )
                return done(
                    Outcome.failed,
                    f"{health.reason}; left cordoned with a record in annotation aksmaint.io/maintenance",
                )
            _emit(kube, "node.rebooted", node, kernel_before=record.kernel_before, kernel_after=health.kernel)
            uncordon_node(kube, node, record, params)
            notify.send(
                params.notify,
                params.notify.uncordon_template,
                node=node,
                cluster=cluster,
                kernel_before=record.kernel_before or before.kernel,
                kernel_after=health.kernel,
            )
            if record.kernel_before:
                report.kernel_before = record.kernel_before
            if not reboot_pod:  # this run did not reboot the node: an earlier one did
                return done(Outcome.rebooted, f"verified after the reboot run {earlier_run} requested")
            return done(
                Outcome.rebooted,
                f"drained ({report.evicted_pods} pod(s) evicted, {report.drain_seconds:.0f}s), "
                f"back after {report.boot_seconds:.0f}s",
            )
    except MaintenanceError as exc:
        return done(Outcome.failed, str(exc))
    finally:
        try:
            if reboot_pod:
                _cleanup_reboot_pods(kube, node, settings)
        finally:
            if failed:  # still down: it keeps its slot, so it keeps counting against the concurrency
                slots.keep_for_failed_node(slot, holder, node)
            else:
                release_reboot_slot(kube, params, slot, holder)


def recover_failed_node(
    kube: Kube, node: str, record, slots: RebootSlots, params: MaintenanceParams, done
) -> NodeReport:
    """A node an earlier run left failed: if it is healthy again, put it back in service and free the slot
    it kept; otherwise leave it as it is (cordoned, recorded, holding its slot)."""
    health = check_node(kube, node, record.boot_id_before or "")
    if not health.healthy:
        return done(
            Outcome.held,
            f"left failed by run {record.run_id} and still not healthy ({health.reason}): {record.reason}",
        )
    uncordon_node(kube, node, record, params)
    slots.release_all_held_by(failed_holder(node))
    return done(
        Outcome.rebooted,
        f"came back after run {record.run_id} gave up on it; kernel {health.kernel}",
        kernel_after=health.kernel,
        boot_id_changed=True,
    )


def _reboot_pods(kube: Kube, node: str, settings: HostPodSettings) -> list:
    return kube.call(
        kube.core.list_namespaced_pod,
        settings.namespace,
        label_selector=f"aksmaint.io/purpose=reboot,aksmaint.io/node={node}",
    ).items


def _cleanup_reboot_pods(kube: Kube, node: str, settings: HostPodSettings) -> None:
    for pod in _reboot_pods(kube, node, settings):
        cleanup_reboot_pod(kube, pod.metadata.name, settings)


# ---- the flow --------------------------------------------------------------------------------
INSECURE_WARNING = (
    "TLS verification of the Kubernetes API of %s is OFF (cluster.insecure_skip_tls_verify): "
    "the server is not authenticated and its token could be sent to an impostor"
)


@maintenance_task(name="connect")
def connect_cluster(cluster: ClusterConnection) -> Kube:
    kube = kube_for(cluster)
    logger = get_run_logger()
    logger.info("Connected to %s through %s", kube.cluster_name, cluster.describe())
    if not kube.tls_verified:
        logger.warning(INSECURE_WARNING, kube.cluster_name)
    return kube


def release_after_cancel(flow, flow_run, state) -> None:
    """on_cancellation hook (possibly in another process): put interrupted nodes back in service,
    keep the record of nodes already rebooting for the next run, and release the run's reboot slots."""
    cleanup = clean_up_cancelled_run(flow_run.parameters, flow_run.id)
    flow_run_logger(flow_run, flow).warning("Cancelled: %s", cleanup.describe())


@flow(name="node-maintenance", log_prints=False, on_cancellation=[release_after_cancel])
def node_maintenance(
    cluster: ClusterConnection,
    node_selector: str = "",
    concurrency: Concurrency = 1,
    max_failures: MaxFailures = 0,
    window: MaintenanceWindow | None = None,
    drain: DrainOptions = DrainOptions(),  # noqa: B008 - immutable pydantic defaults render in the UI
    blockers: Blockers = Blockers(),  # noqa: B008
    reboot: RebootOptions = RebootOptions(),  # noqa: B008
    lock: LockOptions = LockOptions(),  # noqa: B008
    sentinel: SentinelOptions = SentinelOptions(),  # noqa: B008
    apply_updates: bool = False,
    labels: NodeLabels = NodeLabels(),  # noqa: B008
    notify: NotifyOptions = NotifyOptions(),  # noqa: B008
    order: RolloutOrder = RolloutOrder.fewest_pods_first,
    require_approval: bool = False,
    approval_timeout_seconds: ApprovalTimeout = 3600,
    dry_run: bool = False,
) -> MaintenanceReport:
    """Reboot the nodes that need it, one reboot slot at a time, and report kernels before and after.

    Args:
        cluster: How to reach the cluster: a kubeconfig file on the worker machine, the worker pod's own
            service account (in_cluster), or an AKS cluster by subscription, resource group and name.
        node_selector: Only maintain nodes matching this label selector, e.g.
            `kubernetes.azure.com/agentpool=userpool`. Empty: every node.
        concurrency: How many nodes may be cordoned, drained or rebooting at the same time, across all
            runs on this cluster (the number of reboot slots).
        max_failures: Stop starting new nodes once more than this many nodes failed to come back
            healthy. 0 halts at the first failure.
        window: When reboots may start (days, local times, time zone). Empty: any time.
        drain: How pods leave a node before its reboot, and what happens when they cannot.
        blockers: What holds reboots back: pods matching a selector, active Prometheus alerts.
        reboot: The reboot command and how long a node may take to come back.
        lock: The reboot slots (Lease objects) and cooperation with a kured still installed.
        sentinel: How the flow finds out which nodes need a reboot.
        apply_updates: Install pending OS updates (apt-get upgrade) on every node before checking
            whether it needs a reboot.
        labels: Node labels set before and after a reboot, and the taint on nodes still waiting.
        notify: Where to send progress messages (Teams, Slack, ... webhooks).
        order: The order of the nodes within a pool (pools go one after the other, by name):
            fewest-pods-first takes the nodes with the fewest pods to evict first, so that the pods of
            fuller nodes move once, onto nodes already rebooted; name is alphabetical.
        require_approval: Pause after the plan until someone approves it in the Prefect UI (the plan is
            the maintenance-plan artifact).
        approval_timeout_seconds: How long to wait for that approval; no answer means nothing is
            rebooted.
        dry_run: Scan and plan only: report what would be rebooted and change nothing on the cluster.
    """
    params = MaintenanceParams(
        cluster=cluster,
        node_selector=node_selector,
        concurrency=concurrency,
        max_failures=max_failures,
        window=window,
        drain=drain,
        blockers=blockers,
        reboot=reboot,
        lock=lock,
        sentinel=sentinel,
        apply_updates=apply_updates,
        labels=labels,
        notify=notify,
        order=order,
        require_approval=require_approval,
        approval_timeout_seconds=approval_timeout_seconds,
        dry_run=dry_run,
    )
    return run_maintenance(params)


def run_maintenance(params: MaintenanceParams):
    logger = get_run_logger()
    run_id = str(current_run.id or uuid.uuid4())[:8]
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    kube = connect_cluster(params.cluster)
    settings = host_settings(params)
    facts = check_updates(
        kube,
        params.node_selector,
        params.apply_updates,
        params.dry_run,
        settings,
        params.sentinel.parallelism,
    )
    facts = scan_sentinels(kube, facts, params.sentinel, settings, params.dry_run)
    plan = plan_rollout(kube, facts, params)
    by_name = {f.name: f for f in facts}
    report = MaintenanceReport(
        cluster=kube.cluster_name,
        flow_run_id=str(current_run.id or ""),
        dry_run=params.dry_run,
        started_at=started_at,
        tls_verified=kube.tls_verified,
    )
    todo = [e for e in plan if e.action in ("reboot", "resume")]
    if not params.dry_run:
        clean_up_leftovers(kube, [e.node for e in plan if e.action == "skip"], settings)
    reports: dict[str, NodeReport] = {}
    for e in plan:
        if e.action in ("skip", "check"):
            outcome = (
                Outcome.planned
                if e.action == "check"
                # a node that could not be scanned is held back, never reported as needing nothing
                else Outcome.held
                if by_name[e.node].scan_error
                else Outcome.not_needed
            )
            reports[e.node] = NodeReport(
                node=e.node,
                pool=by_name[e.node].pool,
                outcome=outcome,
                reason=e.reason,
                kernel_before=by_name[e.node].kernel,
            )
    if params.dry_run:
        for e in todo:
            reason = gate_reason(kube, e.node, params.window, params.blockers, params.lock)
            reports[e.node] = NodeReport(
                node=e.node,
                pool=by_name[e.node].pool,
                kernel_before=by_name[e.node].kernel,
                outcome=Outcome.held if reason else Outcome.planned,
                reason=reason or f"would {e.action}: {e.reason}",
            )
    elif todo and not _approved(params, plan, logger):
        for e in todo:
            reports[e.node] = NodeReport(
                node=e.node,
                pool=by_name[e.node].pool,
                outcome=Outcome.held,
                reason="not approved",
                kernel_before=by_name[e.node].kernel,
            )
    elif todo:
        reports.update(_execute(kube, params, todo, by_name, run_id, report))
    report.nodes = [reports[e.node] for e in plan]
    still = [
        n.node
        for n in report.nodes
        if n.outcome in (Outcome.held, Outcome.skipped, Outcome.failed) and by_name[n.node].reboot_required
    ]
    diff = kernel_diff_report(kube, params.node_selector, facts, report.nodes, still)
    report.kernels_after = diff["summary"]["kernels"]
    report.lagging_kernel = diff["summary"]["lagging"]
    report.still_need_reboot = still
    report.finished_at = datetime.now(UTC).isoformat(timespec="seconds")
    logger.info(report.summary_line())
    if report.failed:
        failed = [f"{n.node}: {n.reason}" for n in report.nodes if n.outcome == Outcome.failed]
        message = (report.halt_reason + ". " if report.halted else "") + "Failed nodes: " + "; ".join(failed)
        return Failed(message=message, data=report)
    return Completed(message=report.summary_line(), data=report)


@maintenance_task(name="clean-up-leftovers")
def clean_up_leftovers(kube: Kube, nodes: list[str], settings: HostPodSettings) -> list[str]:
    """Remove what a killed run left behind: finished host pods, and the reboot-pending taint on nodes
    that no longer need a reboot."""
    delete_stale_host_pods(kube, settings)
    tainted = [
        n.metadata.name
        for n in list_nodes(kube, "")
        if n.metadata.name in set(nodes) and has_pending_taint(n)
    ]
    for name in tainted:
        cordon_ops.set_pending_taint(kube, name, False)
    return tainted


def _approved(params: MaintenanceParams, plan: list[PlanEntry], logger) -> bool:
    if not params.require_approval:
        return True
    nodes = ", ".join(e.node for e in plan if e.action in ("reboot", "resume"))
    logger.info("Waiting for approval to reboot: %s (see the maintenance-plan artifact)", nodes)
    answer = pause_flow_run(
        wait_for_input=Approval.with_initial_data(description=f"Approve rebooting {nodes}?", approve=False),
        timeout=int(params.approval_timeout_seconds),
        poll_interval=2,
    )
    logger.info(
        "Approval answer: %s%s",
        "approved" if answer.approve else "rejected",
        f" ({answer.note})" if answer.note else "",
    )
    return answer.approve


def _execute(
    kube: Kube,
    params: MaintenanceParams,
    todo: list[PlanEntry],
    by_name: dict[str, NodeFacts],
    run_id: str,
    report: MaintenanceReport,
) -> dict[str, NodeReport]:
    """Run the per-node subflows, at most ``concurrency`` at once, checking gates before each node."""
    logger = get_run_logger()
    if params.labels.prefer_no_schedule_taint:
        for e in todo:
            cordon_ops.set_pending_taint(kube, e.node, True)
    progress = create_progress_artifact(
        progress=0.0, key="maintenance-progress", description=f"Nodes done on {kube.cluster_name}"
    )
    work: queue.Queue[PlanEntry] = queue.Queue()
    for e in todo:
        work.put(e)
    results: dict[str, NodeReport] = {}
    lock = threading.Lock()
    state = {"failures": 0, "halted": ""}

    def hold(entry: PlanEntry, reason: str) -> None:
        results[entry.node] = NodeReport(
            node=entry.node,
            pool=by_name[entry.node].pool,
            outcome=Outcome.held,
            reason=reason,
            kernel_before=by_name[entry.node].kernel,
        )

    def worker() -> None:
        while True:
            try:
                entry = work.get_nowait()
            except queue.Empty:
                return
            with lock:
                halted = state["halted"]
            if stop_requested(run_id):
                halted = "run cancelled"
            if halted:
                hold(entry, f"not started: {halted}")
                continue
            if reason := gate_reason(kube, entry.node, params.window, params.blockers, params.lock):
                logger.info("%s held: %s", entry.node, reason)
                hold(entry, reason)
                continue
            try:
                node_report = maintain_node(entry.node, entry, by_name[entry.node], params, run_id)
            except Exception as exc:  # the node's record (if any) stays on it for the next run
                node_report = NodeReport(
                    node=entry.node,
                    pool=by_name[entry.node].pool,
                    outcome=Outcome.failed,
                    reason=f"unexpected error: {type(exc).__name__}: {exc}"[:500],
                    kernel_before=by_name[entry.node].kernel,
                )
            with lock:
                results[entry.node] = node_report
                if node_report.outcome == Outcome.failed:
                    state["failures"] += 1
                    if state["failures"] > params.max_failures:
                        state["halted"] = (
                            f"rollout halted after {state['failures']} failed node(s) "
                            f"(max_failures={params.max_failures})"
                        )
                        logger.error(state["halted"])
                update_progress_artifact(progress, 100.0 * len(results) / len(todo))
            logger.info("%s: %s (%s)", entry.node, node_report.outcome.value, node_report.reason)

    def worker_without_subflow_heartbeats() -> None:
        # per-node subflows skip their own heartbeats: the parent run's heartbeat covers them. Entered once
        # per thread rather than per node: building the settings takes about 0.15 s each time.
        with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
            worker()

    threads = [
        threading.Thread(
            target=contextvars.copy_context().run,
            args=(worker_without_subflow_heartbeats,),
            name=f"slot-worker-{i}",
        )
        for i in range(min(params.concurrency, len(todo)))
    ]
    _STOPS[run_id] = threading.Event()
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    except BaseException:
        # cancelled or terminated: nodes in progress stop at the next safe point (before a reboot) and
        # are put back in service; Prefect's grace period is 30 s, the cancellation hook does the rest
        _STOPS[run_id].set()
        for t in threads:
            t.join(timeout=20)
        raise
    finally:
        _STOPS.pop(run_id, None)
    if params.labels.prefer_no_schedule_taint:
        for node, r in results.items():
            if r.outcome != Outcome.failed:
                cordon_ops.set_pending_taint(kube, node, False)
    if state["halted"]:
        report.halted, report.halt_reason = True, state["halted"]
    return results


if __name__ == "__main__":
    from flows.cli import maintenance_main

    sys.exit(maintenance_main())
