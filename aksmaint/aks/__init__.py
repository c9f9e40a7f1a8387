"""AKS management-API operations: version paths, preflight checks, and waiting on long-running operations.

The rules mirror AKS's own: no "upgrade" to the version already running, no skipped minor version, node
pools never newer than the control plane nor more than three minors behind it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Protocol

from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    ResourceNotModifiedError,
)
from azure.mgmt.containerservice import ContainerServiceClient
from pydantic import BaseModel, ConfigDict

from aksmaint.azure import AksCluster, describe_azure_error
from aksmaint.errors import MaintenanceError
from aksmaint.report import NodeFacts

MAX_POOL_MINOR_SKEW = 3
IN_PROGRESS_STATES = {
    "Upgrading",
    "UpgradingNodeImageVersion",
    "Updating",
    "Creating",
    "Scaling",
    "Deleting",
    "Starting",
    "Stopping",
    "Canceling",
}


class UpgradeMode(StrEnum):
    node_image = "node-image"
    kubernetes_version = "kubernetes-version"


class UpgradeError(MaintenanceError):
    """A rule or AKS itself refused the upgrade; the message says why."""


Version = tuple[int, int, int]


def parse_version(text: str) -> Version:
    parts = text.lstrip("v").split(".")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise UpgradeError(f"{text!r} is not a Kubernetes version like 1.30.5")
    return int(parts[0]), int(parts[1]), int(parts[2])


def fmt(version: Version) -> str:
    return ".".join(str(p) for p in version)


def resolve_target(current: str, available: list[str], target: str) -> str | None:
    """The version to end on, or None when there is nothing to do. Raises UpgradeError for a bad target."""
    cur = parse_version(current)
    versions = sorted({parse_version(v) for v in available})
    if target == "latest-patch":
        same_minor = [v for v in versions if v[:2] == cur[:2] and v > cur]
        return fmt(same_minor[-1]) if same_minor else None
    if target == "next-minor":
        nxt = [v for v in versions if v[:2] == (cur[0], cur[1] + 1)]
        if not nxt:
            raise UpgradeError(
                f"no {cur[0]}.{cur[1] + 1}.x version is offered in this region "
                f"(available: {', '.join(fmt(v) for v in versions)})"
            )
        return fmt(nxt[-1])
    if target == "latest":
        newer = [v for v in versions if v > cur]
        return fmt(newer[-1]) if newer else None
    wanted = parse_version(target)
    if wanted == cur:
        return None
    if wanted < cur:
        raise UpgradeError(f"downgrading from {current} to {target} is not allowed")
    if wanted not in versions:
        raise UpgradeError(
            f"version {target} is not offered in this region "
            f"(available: {', '.join(fmt(v) for v in versions)})"
        )
    return fmt(wanted)


def upgrade_path(current: str, target: str, available: list[str]) -> list[str]:
    """Versions to go through, one minor at a time, each the newest patch of its minor; ends on target."""
    cur, end = parse_version(current), parse_version(target)
    versions = sorted({parse_version(v) for v in available})
    path = []
    for minor in range(cur[1] + 1, end[1]):
        hop = [v for v in versions if v[:2] == (cur[0], minor)]
        if not hop:
            raise UpgradeError(
                f"cannot reach {target} from {current}: no {cur[0]}.{minor}.x version is offered, "
                "and AKS does not skip minor versions"
            )
        path.append(fmt(hop[-1]))
    path.append(target)
    return path


def skew_problem(control_plane: str, pool_version: str) -> str | None:
    cp, pool = parse_version(control_plane), parse_version(pool_version)
    if pool > cp:
        return f"pool version {pool_version} would be newer than the control plane {control_plane}"
    if cp[1] - pool[1] > MAX_POOL_MINOR_SKEW:
        return (
            f"pool version {pool_version} would be more than {MAX_POOL_MINOR_SKEW} minor versions behind "
            f"the control plane {control_plane}"
        )
    return None


class StepKind(StrEnum):
    control_plane = "control-plane"  # the managed cluster's kubernetesVersion
    pool_version = "pool-version"  # an agent pool's orchestratorVersion
    node_image = "node-image"  # an agent pool's node image, the latest of its image family


class UpgradeStep(BaseModel):
    """One AKS operation of an upgrade plan."""

    model_config = ConfigDict(frozen=True)

    kind: StepKind
    pool: str | None = None  # None for the control plane
    from_version: str
    to_version: str

    def describe(self) -> str:
        what = "control plane" if self.kind == StepKind.control_plane else f"pool {self.pool}"
        noun = "node image" if self.kind == StepKind.node_image else "Kubernetes"
        return f"{what}: {noun} {self.from_version} -> {self.to_version}"


class OperationStatus(StrEnum):
    succeeded = "succeeded"
    already_current = "already-current"  # nothing started: AKS (or an earlier run) had done it
    failed = "failed"


class OperationResult(BaseModel):
    """How one step's AKS operation ended."""

    step: UpgradeStep
    status: OperationStatus
    message: str = ""
    seconds: float = 0.0
    waited_for_other_operation: bool = False


class Poller(Protocol):
    """What run_operation uses of the LROPoller an AKS begin_* call returns."""

    def done(self) -> bool: ...

    def status(self) -> str: ...

    def wait(self, timeout: float | None = None) -> None: ...

    def result(self) -> object: ...


def wait_for_idle(get_state: Callable[[], str], timeout: float, poll: float) -> str:
    """Wait while an operation (ours from a crashed run, or someone else's) is in progress."""
    deadline = time.monotonic() + timeout
    state = get_state()
    while state in IN_PROGRESS_STATES:
        if time.monotonic() > deadline:
            raise UpgradeError(f"an operation was still in progress ({state}) after {timeout:.0f}s")
        time.sleep(poll)
        state = get_state()
    return state


class AlreadyDone:
    """The poller of a step found done already when it was to start (a crashed run's operation
    finished it): nothing is started."""

    def done(self) -> bool:
        return True

    def result(self) -> None:
        return None

    def status(self) -> str:
        return "Succeeded"

    def wait(self, timeout: float | None = None) -> None:
        return None


def begin_step(client: ContainerServiceClient, cluster: AksCluster, step: UpgradeStep) -> Poller:
    """Start the step's AKS operation through the SDK ``client``, unless what it would do is done."""
    rg, name = cluster.resource_group, cluster.name
    if step.kind == StepKind.control_plane:
        mc = client.managed_clusters.get(rg, name)
        if (mc.current_kubernetes_version or mc.kubernetes_version) == step.to_version:
            return AlreadyDone()
        mc.kubernetes_version = step.to_version
        return client.managed_clusters.begin_create_or_update(rg, name, mc)
    assert step.pool is not None, "a node-image or pool step names its pool"
    pool = client.agent_pools.get(rg, name, step.pool)
    if step.kind == StepKind.node_image:
        latest = client.agent_pools.get_upgrade_profile(rg, name, step.pool).latest_node_image_version
        if latest and pool.node_image_version == latest:
            return AlreadyDone()
        return client.agent_pools.begin_upgrade_node_image_version(rg, name, step.pool)
    if (pool.current_orchestrator_version or pool.orchestrator_version) == step.to_version:
        return AlreadyDone()
    pool.orchestrator_version = step.to_version
    return client.agent_pools.begin_create_or_update(rg, name, step.pool, pool)


def run_operation(
    step: UpgradeStep,
    begin: Callable[[], Poller],
    get_state: Callable[[], str],
    timeout: float,
    poll: float,
    on_progress: Callable[[str], None] = lambda s: None,
) -> OperationResult:
    """Start one AKS operation and wait for it; 409 "in progress" waits and retries, 304 means current."""
    started = time.monotonic()
    poller, waited = _start(step, begin, get_state, timeout, poll, on_progress)
    if poller is None or isinstance(poller, AlreadyDone):
        return OperationResult(
            step=step,
            status=OperationStatus.already_current,
            message="AKS reports the node image is already the latest"
            if poller is None
            else "already done (by an earlier operation); nothing started",
            seconds=time.monotonic() - started,
            waited_for_other_operation=waited,
        )
    error = _wait(step, poller, get_state, timeout, poll, on_progress)
    return OperationResult(
        step=step,
        status=OperationStatus.failed if error else OperationStatus.succeeded,
        message=error or "",
        seconds=time.monotonic() - started,
        waited_for_other_operation=waited,
    )


def _start(
    step: UpgradeStep,
    begin: Callable[[], Poller],
    get_state: Callable[[], str],
    timeout: float,
    poll: float,
    on_progress: Callable[[str], None],
) -> tuple[Poller | None, bool]:
    """The operation's poller (None: AKS says 304, nothing to do) and whether another operation in
    progress had to be waited out first (409)."""
    started = time.monotonic()
    waited = False
    while True:
        try:
            return begin(), waited
        except ResourceNotModifiedError:
            return None, waited
        except ResourceExistsError as exc:
            waited = True
            if time.monotonic() - started > timeout:
                raise UpgradeError(
                    f"{step.describe()}: AKS still reports another operation in progress after "
                    f"{timeout:.0f}s ({describe_azure_error(exc)})"
                ) from exc
            on_progress(f"another operation is in progress ({describe_azure_error(exc)}); waiting")
            time.sleep(poll)  # the state can read idle a moment before AKS accepts a new operation
            wait_for_idle(get_state, timeout, poll)
        except HttpResponseError as exc:
            if exc.status_code and 400 <= exc.status_code < 500:
                raise UpgradeError(f"AKS refused {step.describe()}: {describe_azure_error(exc)}") from exc
            raise


def _wait(
    step: UpgradeStep,
    poller: Poller,
    get_state: Callable[[], str],
    timeout: float,
    poll: float,
    on_progress: Callable[[str], None],
) -> str | None:
    """Wait for the operation to end: None when it succeeded, else AKS's error code and message."""
    deadline = time.monotonic() + timeout
    while not poller.done():
        if time.monotonic() > deadline:
            raise UpgradeError(
                f"{step.describe()} did not finish within {timeout:.0f}s (status {poller.status()})"
            )
        on_progress(get_state())
        try:
            poller.wait(poll)
        except HttpResponseError:
            break  # the operation ended Failed or Canceled; result() raises the same error again
    try:
        poller.result()
    except HttpResponseError as exc:
        error = exc.error if exc.error is not None and exc.error.code else None
        return f"{error.code}: {error.message}" if error else describe_azure_error(exc)
    return None


# ---- the nodes of a pool after its operation ------------------------------------------------------------
@dataclass
class NodeCheck:
    """Which nodes of a pool run what after a step, and what is wrong with any of them."""

    pool: str
    target: str = ""  # what every node should run
    groups: dict[str, list[str]] = field(default_factory=dict)  # what they run -> node names
    off_target: list[str] = field(default_factory=list)  # nodes not on the target
    unwell: list[str] = field(default_factory=list)  # "<node> is not Ready", "<node> is still cordoned"
    problems: list[str] = field(default_factory=list)  # all of it, a line per problem

    def describe(self) -> str:
        """E.g. "3 node(s) on AKSUbuntu-2204gen2containerd-202502.05.0: a, b, c; 1 on ...: d"."""
        if not self.groups:
            return f"pool {self.pool} has no nodes"
        ordered = sorted(self.groups.items(), key=lambda item: (-len(item[1]), item[0]))
        parts = [f"{len(nodes)} on {what}: {', '.join(sorted(nodes))}" for what, nodes in ordered]
        parts[0] = parts[0].replace(" on ", " node(s) on ", 1)
        return "; ".join(parts)

    def describe_problems(self) -> str:
        """What is not done, e.g. "Not on 1.31.4: a, b. c is not Ready"; empty when nothing."""
        parts = [f"Not on {self.target}: {', '.join(sorted(self.off_target))}"] if self.off_target else []
        return ". ".join(parts + self.unwell)


def node_problems(facts: NodeFacts, step: UpgradeStep) -> tuple[list[str], list[str]]:
    """What keeps one node of the step's pool from counting as done: (not on the target, not well)."""
    unwell = []
    if not facts.ready:
        unwell.append(f"{facts.name} is not Ready")
    if facts.unschedulable:
        unwell.append(f"{facts.name} is still cordoned")
    wanted, off = step.to_version, []
    if step.kind == StepKind.node_image and wanted != "latest" and facts.node_image_version != wanted:
        off.append(f"{facts.name} runs image {facts.node_image_version}, not {wanted}")
    if step.kind == StepKind.pool_version and facts.kubelet_version.lstrip("v") != wanted:
        off.append(f"{facts.name} runs kubelet {facts.kubelet_version}, not {wanted}")
    return off, unwell


def check_pool_nodes(nodes: list[NodeFacts], step: UpgradeStep) -> NodeCheck:
    """The nodes of the step's pool grouped by what they run (the node image; for a Kubernetes version
    step the kubelet too), and their problems."""
    pool = step.pool or ""
    check = NodeCheck(pool=pool, target=step.to_version)
    for facts in (n for n in nodes if n.pool == pool):
        runs = facts.node_image_version or "an unknown image"
        if step.kind == StepKind.pool_version:
            runs = f"{facts.kubelet_version} with {runs}"
        check.groups.setdefault(runs, []).append(facts.name)
        off, unwell = node_problems(facts, step)
        check.off_target += [facts.name] if off else []
        check.unwell += unwell
        check.problems += unwell + off
    return check


# ---- AKS maintenance configurations ----------------------------------------------------------------------
DAY_NAMES = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
WEEK_INDEX = {"First": 0, "Second": 1, "Third": 2, "Fourth": 3}


def _offset(text: str | None) -> timedelta:
    if not text:
        return timedelta(0)
    sign = -1 if text.startswith("-") else 1
    hours, _, minutes = text.lstrip("+-").partition(":")
    return sign * timedelta(hours=int(hours), minutes=int(minutes or 0))


@dataclass
class WindowCheck:
    open: bool
    description: str = ""
    details: list[str] = field(default_factory=list)


def _scheduled_on(schedule, day: datetime) -> bool:
    """Whether a window of ``schedule`` starts on ``day`` (intervals of more than one are not checked)."""
    weekday = DAY_NAMES[day.weekday()]
    if schedule.weekly is not None:
        return weekday == schedule.weekly.day_of_week
    if schedule.absolute_monthly is not None:
        return day.day == schedule.absolute_monthly.day_of_month
    if schedule.relative_monthly is not None:
        rule = schedule.relative_monthly
        if weekday != rule.day_of_week:
            return False
        if rule.week_index == "Last":
            return (day + timedelta(days=7)).month != day.month
        return (day.day - 1) // 7 == WEEK_INDEX[rule.week_index]
    return True  # daily


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def maintenance_window_open(config, now: datetime | None = None) -> WindowCheck:
    """Whether an AKS maintenance configuration allows work now (a scheduled window, or timeInWeek)."""
    now = now or datetime.now(UTC)
    if config is None:
        return WindowCheck(True, "no maintenance configuration: any time")
    window = getattr(config, "maintenance_window", None)
    if window is not None and window.schedule is not None:
        return _scheduled_window_open(window, now)
    return _default_configuration_open(config, now)


def _scheduled_window_open(window, now: datetime) -> WindowCheck:
    """A maintenanceWindow: not on a not-allowed date, and inside a window that began in the last week."""
    local = now + _offset(window.utc_offset)
    zone = f"UTC{window.utc_offset or '+00:00'}"
    for span in window.not_allowed_dates or []:
        if span.start <= local.date() <= span.end:
            return WindowCheck(
                False, f"{local:%Y-%m-%d} ({zone}) is in the not-allowed dates {span.start} to {span.end}"
            )
    start_h, start_m = (int(x) for x in window.start_time.split(":"))
    duration = timedelta(hours=window.duration_hours)
    for days_back in range(0, 8):
        day = local - timedelta(days=days_back)
        begins = day.replace(hour=start_h, minute=start_m, second=0, microsecond=0)
        if _scheduled_on(window.schedule, begins) and begins <= local < begins + duration:
            return WindowCheck(True, f"inside the window that began {begins:%a %H:%M} ({zone})")
    return WindowCheck(
        False,
        f"outside the maintenance window (starts {window.start_time}, {window.duration_hours}h, {zone})",
    )


def _default_configuration_open(config, now: datetime) -> WindowCheck:
    """The ``default`` configuration: outside its notAllowedTime, inside its timeInWeek hours if any."""
    for span in getattr(config, "not_allowed_time", None) or []:
        if _utc(span.start) <= now <= _utc(span.end):
            return WindowCheck(
                False,
                f"inside the not-allowed time {span.start:%Y-%m-%d %H:%M} to {span.end:%Y-%m-%d %H:%M} (UTC)",
            )
    slots = getattr(config, "time_in_week", None) or []
    if not slots:
        return WindowCheck(True, "the maintenance configuration sets no window")
    today = DAY_NAMES[now.weekday()]
    if any(slot.day == today and now.hour in (slot.hour_slots or []) for slot in slots):
        return WindowCheck(True, f"inside {today} hour {now.hour} (UTC)")
    return WindowCheck(False, "outside the allowed hours of the default maintenance configuration")


# ---- the node OS upgrade channel -------------------------------------------------------------------------
class OsUpgradeChannel(StrEnum):
    """AKS's autoUpgradeProfile.nodeOSUpgradeChannel: who keeps the nodes' OS patched."""

    none = "None"  # nobody: no updates at all
    unmanaged = "Unmanaged"  # the nodes' own unattended-upgrades; reboots are ours (kured's job)
    security_patch = "SecurityPatch"  # AKS applies security patches itself, rebooting when it must
    node_image = "NodeImage"  # AKS reimages the nodes with each new node image


AKS_PATCHES: dict[str, str] = {
    OsUpgradeChannel.security_patch: "applies security patches to the nodes",
    OsUpgradeChannel.node_image: "reimages the nodes with each new node image",
}
NODE_OS_SCHEDULE = "aksManagedNodeOSUpgradeSchedule"


@dataclass
class OsUpgradeSettings:
    """What AKS says about patching the cluster's nodes. ``channel`` is "" when unknown (the flow reached
    the cluster by kubeconfig, not through Azure)."""

    channel: str = ""
    schedule: str = ""  # the aksManagedNodeOSUpgradeSchedule window, described

    def aks_patches(self) -> str | None:
        """Who patches the nodes when it is AKS itself (the channel, what AKS does, when), else None."""
        does = AKS_PATCHES.get(self.channel)  # StrEnum members compare and hash as their text
        if does is None:
            return None
        when = f" in its window ({self.schedule})" if self.schedule else ""
        return f"the cluster's node OS upgrade channel is {self.channel}: AKS {does} itself{when}"

    def hold_reason(self) -> str | None:
        """Why reboots by hand do not belong on this cluster, or None when they do."""
        patches = self.aks_patches()
        if patches is None:
            return None
        return (
            f"{patches}, and reboots by hand would work against it "
            "(set respect_os_upgrade_channel to false to reboot anyway)"
        )


def describe_schedule(config) -> str:
    """An AKS managed maintenance window in a line, e.g. "weekly on Saturday, 02:00 for 4h (UTC+01:00)"."""
    window = getattr(config, "maintenance_window", None)
    if window is None or window.schedule is None:
        return ""
    schedule = window.schedule
    if schedule.weekly is not None:
        every = (
            "weekly"
            if (schedule.weekly.interval_weeks or 1) == 1
            else f"every {schedule.weekly.interval_weeks} weeks"
        )
        when = f"{every} on {_text(schedule.weekly.day_of_week)}"
    elif schedule.absolute_monthly is not None:
        when = f"monthly on day {schedule.absolute_monthly.day_of_month}"
    elif schedule.relative_monthly is not None:
        rule = schedule.relative_monthly
        when = f"monthly on the {_text(rule.week_index).lower()} {_text(rule.day_of_week)}"
    else:
        when = "daily"
    return f"{when}, {window.start_time} for {window.duration_hours}h (UTC{window.utc_offset or '+00:00'})"


def _text(value: object) -> str:
    """An SDK enum member as AKS spells it (its value), or the text itself."""
    return str(getattr(value, "value", value))


def read_os_upgrade_settings(client, resource_group: str, name: str) -> OsUpgradeSettings:
    """The managed cluster's channel and AKS's node OS maintenance window, if one is configured."""
    try:
        mc = client.managed_clusters.get(resource_group, name)
        channel = node_os_upgrade_channel_of(mc)
        try:
            config = client.maintenance_configurations.get(resource_group, name, NODE_OS_SCHEDULE)
        except ResourceNotFoundError:
            config = None
    except HttpResponseError as exc:
        raise MaintenanceError(
            f"could not read the node OS upgrade channel: {describe_azure_error(exc)}"
        ) from exc
    return OsUpgradeSettings(channel=channel, schedule=describe_schedule(config) if config else "")


def node_os_upgrade_channel_of(mc) -> str:
    """The managed cluster's channel as AKS spells it; unset means Unmanaged (clusters made before the
    channel existed)."""
    profile = mc.auto_upgrade_profile
    channel = profile.node_os_upgrade_channel if profile else None
    return _text(channel) if channel else OsUpgradeChannel.unmanaged.value
