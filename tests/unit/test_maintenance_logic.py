"""Plain logic of the maintenance flow: windows, drain filters, probe parsing, alert and kured-lock
gates, plan order, and Lease MicroTime serialization. No cluster and no Prefect server needed."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from aksmaint.errors import HostPodGone
from aksmaint.hostexec import MANAGED_BY, HostPodSettings, run_on_host
from aksmaint.maintenance.gates import (
    KURED_LOCK_ANNOTATION,
    active_alerts,
    kured_lock_holder,
    prometheus_blocks,
)
from aksmaint.maintenance.lock import microtime
from aksmaint.maintenance.plan import make_plan
from aksmaint.maintenance.pod_filters import MIRROR_ANNOTATION, select_pods
from aksmaint.maintenance.sentinel import PROBE_SCRIPT, parse_probe, probe_facts, scan_with_host_pods
from aksmaint.params import Blockers, DrainOptions, LockOptions, MaintenanceWindow
from aksmaint.report import NodeFacts
from simulator.hosts import Host, run_host_command

BERLIN = ZoneInfo("Europe/Berlin")


# ---- MaintenanceWindow.is_open -----------------------------------------------------------------
def at(text: str, zone: ZoneInfo = UTC) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=zone)


# 2026-03-04 is a Wednesday, 2026-03-07 a Saturday
@pytest.mark.parametrize(
    ("when", "expected"),
    [
        ("2026-03-04T09:00", True),  # start is inside
        ("2026-03-04T12:30", True),
        ("2026-03-04T08:59", False),
        ("2026-03-04T17:00", False),  # end is outside
        ("2026-03-07T12:00", False),  # Saturday is not a window day
    ],
)
def test_window_same_day(when, expected):
    window = MaintenanceWindow(days=["mon", "tue", "wed", "thu", "fri"], start="09:00", end="17:00")
    assert window.is_open(at(when)) is expected


# 2026-03-06 is a Friday: the window opens Friday night and runs into Saturday morning
@pytest.mark.parametrize(
    ("when", "expected"),
    [
        ("2026-03-06T22:00", True),
        ("2026-03-06T23:59", True),
        ("2026-03-07T00:00", True),  # Saturday, but the window opened on Friday
        ("2026-03-07T03:59", True),
        ("2026-03-07T04:00", False),
        ("2026-03-07T22:30", False),  # Saturday night: Saturday is not an opening day
        ("2026-03-06T03:00", False),  # Friday morning belongs to Thursday's window
        ("2026-03-06T21:59", False),
    ],
)
def test_window_wraps_past_midnight(when, expected):
    window = MaintenanceWindow(days=["fri"], start="22:00", end="04:00")
    assert window.is_open(at(when)) is expected


def test_window_days_list():
    window = MaintenanceWindow(days=["sat", "sun"], start="00:00", end="23:59")
    opened = {day: window.is_open(at(f"2026-03-{day:02d}T12:00")) for day in range(2, 9)}  # Mon 2 .. Sun 8
    assert opened == {2: False, 3: False, 4: False, 5: False, 6: False, 7: True, 8: True}


def test_window_time_zone_follows_daylight_saving():
    """01:00-05:00 Berlin time is 00:00-04:00 UTC in winter and 23:00-03:00 UTC in summer."""
    window = MaintenanceWindow(start="01:00", end="05:00", time_zone="Europe/Berlin")
    assert window.is_open(at("2026-01-15T03:30"))  # 04:30 CET
    assert not window.is_open(at("2026-07-15T03:30"))  # 05:30 CEST
    assert window.is_open(at("2026-07-14T23:30"))  # 01:30 CEST the next day
    assert not window.is_open(at("2026-01-14T23:30"))  # 00:30 CET
    # the night the clocks jump from 02:00 to 03:00 (2026-03-29): the window still ends at 05:00 local
    assert window.is_open(at("2026-03-29T02:59"))  # 04:59 CEST
    assert not window.is_open(at("2026-03-29T03:00"))  # 05:00 CEST
    # the same local time gives the same answer whatever zone the instant is expressed in
    instant = at("2026-07-15T02:30", BERLIN)
    assert window.is_open(instant) and window.is_open(instant.astimezone(ZoneInfo("America/New_York")))


def test_window_days_refer_to_the_local_day():
    """Sunday 23:30 in UTC is already Monday 08:30 in Tokyo."""
    window = MaintenanceWindow(days=["mon"], start="08:00", end="09:00", time_zone="Asia/Tokyo")
    assert window.is_open(at("2026-03-08T23:30"))  # a Sunday in UTC


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"time_zone": "Europe/Atlantis"}, "time_zone"),
        ({"start": "7pm"}, "start"),
        ({"end": "24:30"}, "end"),
        ({"days": []}, "days"),
        ({"days": ["monday"]}, "days"),
    ],
)
def test_window_validation_names_the_field(fields, field):
    with pytest.raises(ValueError, match=rf"(?m)^{field}"):
        MaintenanceWindow(**fields)


# ---- aksmaint.maintenance.pod_filters.select_pods ------------------------------------------------------------
NOW = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)


def pod(
    name: str,
    owner: str | None = "ReplicaSet",
    empty_dir: bool = False,
    mirror: bool = False,
    deleted_seconds_ago: float | None = None,
    phase: str = "Running",
    labels: dict | None = None,
) -> client.V1Pod:
    owners = (
        [
            client.V1OwnerReference(
                api_version="apps/v1", kind=owner, name=f"{name}-owner", uid="u", controller=True
            )
        ]
        if owner
        else None
    )
    return client.V1Pod(
        metadata=client.V1ObjectMeta(
            name=name,
            namespace="default",
            labels=labels or {"app": name},
            annotations={MIRROR_ANNOTATION: "hash"} if mirror else None,
            owner_references=owners,
            deletion_timestamp=NOW - timedelta(seconds=deleted_seconds_ago)
            if deleted_seconds_ago is not None
            else None,
        ),
        spec=client.V1PodSpec(
            containers=[client.V1Container(name="c", image="busybox")],
            volumes=[client.V1Volume(name="scratch", empty_dir=client.V1EmptyDirVolumeSource())]
            if empty_dir
            else None,
        ),
        status=client.V1PodStatus(phase=phase),
    )


def names(pods: list) -> list[str]:
    return [p.metadata.name for p in pods]


def test_select_pods_evicts_replicated_pods_and_skips_daemonsets_mirrors_and_our_host_pods():
    pods = [
        pod("web"),
        pod("proxy", owner="DaemonSet"),
        pod("static", owner="Node", mirror=True),
        pod("scan", owner=None, labels={"app.kubernetes.io/managed-by": MANAGED_BY}),
    ]
    selection = select_pods(pods, DrainOptions(), NOW)
    assert names(selection.evict) == ["web"]
    assert selection.errors == [] and selection.warnings == []


def test_select_pods_reports_errors_for_local_data_and_unmanaged_pods_unless_allowed():
    pods = [pod("cache", empty_dir=True), pod("bare", owner=None), pod("web")]
    strict = select_pods(pods, DrainOptions(delete_emptydir_data=False, force=False), NOW)
    assert names(strict.evict) == ["web"]
    assert strict.errors == [
        "default/cache uses emptyDir data (set delete_emptydir_data to evict)",
        "default/bare is not managed by a controller (set force to evict)",
    ]
    allowed = select_pods(pods, DrainOptions(delete_emptydir_data=True, force=True), NOW)
    assert names(allowed.evict) == ["cache", "bare", "web"]
    assert allowed.errors == []
    assert allowed.warnings == [
        "deleting emptyDir data of default/cache",
        "evicting unmanaged pod default/bare; it will not come back",
    ]


def test_select_pods_filters_apply_in_kubectl_order():
    options = DrainOptions(delete_emptydir_data=False, force=False, skip_wait_for_delete_timeout_seconds=60)
    pods = [
        # deleted long ago: skipped before its (missing) controller could be an error
        pod("stuck", owner=None, deleted_seconds_ago=600),
        # DaemonSet before local storage: its emptyDir is no error
        pod("agent", owner="DaemonSet", empty_dir=True),
        # mirror before unreplicated: a static pod without controller is no error
        pod("static", owner=None, mirror=True),
        # local storage before unreplicated: one error, the first filter's
        pod("scratch", owner=None, empty_dir=True),
    ]
    selection = select_pods(pods, options, NOW)
    assert selection.evict == []
    assert selection.errors == ["default/scratch uses emptyDir data (set delete_emptydir_data to evict)"]
    assert selection.warnings == ["default/stuck is being deleted for too long; not waiting for it"]


def test_select_pods_both_warning_and_error_on_one_pod():
    """emptyDir allowed but force not: the local-storage warning, then the unreplicated error."""
    selection = select_pods([pod("scratch", owner=None, empty_dir=True)], DrainOptions(force=False), NOW)
    assert selection.evict == []
    assert selection.warnings == ["deleting emptyDir data of default/scratch"]
    assert selection.errors == ["default/scratch is not managed by a controller (set force to evict)"]


def test_select_pods_terminating_and_finished_pods():
    options = DrainOptions(delete_emptydir_data=False, force=False, skip_wait_for_delete_timeout_seconds=60)
    pods = [
        pod("recent", deleted_seconds_ago=5),  # being deleted, not for long: still waited for
        pod("done", owner=None, empty_dir=True, phase="Succeeded"),  # finished pods are just deleted
        pod("failed", owner=None, phase="Failed"),
    ]
    selection = select_pods(pods, options, NOW)
    assert names(selection.evict) == ["recent", "done", "failed"]
    assert selection.errors == [] and selection.warnings == []
    # without a skip-wait timeout every terminating pod is waited for, however old
    assert names(select_pods([pod("old", deleted_seconds_ago=10_000)], DrainOptions(), NOW).evict) == ["old"]


# ---- aksmaint.maintenance.sentinel.parse_probe / probe_facts --------------------------------------------------
def facts(**fields) -> NodeFacts:
    return NodeFacts(**{"name": "aks-nodepool1-0", "kernel": "5.15.0-1079-azure", "ready": True, **fields})


def probe_output(**host_fields) -> str:
    """What PROBE_SCRIPT prints on a (simulated) host."""
    host = Host(
        node_name="aks-nodepool1-0",
        pool="nodepool1",
        running_kernel="5.15.0-1079-azure",
        os_image="Ubuntu 22.04.5 LTS",
        boot_seconds=1,
        **host_fields,
    )
    result = run_host_command(host, ["sh", "-c", PROBE_SCRIPT])
    assert result.exit_code == 0
    return result.output


def test_parse_probe_splits_sections_and_drops_blank_lines():
    output = (
        "noise before any section\n### kernel\n 6.8.0-1020-azure \n\n### sentinel\npresent\n### upgradable\n"
    )
    assert parse_probe(output) == {"kernel": ["6.8.0-1020-azure"], "sentinel": ["present"], "upgradable": []}


def test_probe_facts_from_a_host_that_needs_a_reboot():
    output = probe_output(
        reboot_required=True,
        pending_kernel="5.15.0-1081-azure",
        upgradable_packages=3,
        available_kernel="5.15.0-1083-azure",
    )
    result = probe_facts(facts(), output)
    assert result.reboot_required is True
    assert result.upgradable_packages == 3  # the "Listing..." header is not a package
    assert result.kernel == "5.15.0-1079-azure"
    assert result.scan_error is None


def test_probe_facts_from_a_host_that_needs_nothing():
    result = probe_facts(facts(kernel=""), probe_output())
    assert (result.reboot_required, result.upgradable_packages, result.kernel) == (
        False,
        0,
        "5.15.0-1079-azure",
    )


@pytest.mark.parametrize(
    "output",
    [
        "",
        "### kernel\n5.15.0\n",  # cut off before the sentinel answer
        "### sentinel\npresent\nabsent\n",
        "### sentinel\nmaybe\n",
        "sh: 1: nsenter: not found\n",
    ],
)
def test_probe_facts_without_a_clear_sentinel_answer_is_a_scan_error(output):
    result = probe_facts(facts(), output)
    assert result.reboot_required is None
    assert result.scan_error == "probe output had no sentinel answer"


def test_probe_facts_keeps_the_known_kernel_when_the_probe_has_none():
    result = probe_facts(facts(), "### kernel\n### sentinel\nabsent\n")
    assert (result.kernel, result.reboot_required) == ("5.15.0-1079-azure", False)


# ---- aksmaint.maintenance.gates.active_alerts / prometheus_blocks ---------------------------------------------
ALERTS = [
    {"labels": {"alertname": "Watchdog"}, "state": "firing"},
    {"labels": {"alertname": "KubeNodeNotReady", "node": "a"}, "state": "firing"},
    {"labels": {"alertname": "KubeNodeNotReady", "node": "b"}, "state": "firing"},
    {"labels": {"alertname": "HighLatency"}, "state": "pending"},
    {"labels": {"alertname": "RebootWindow"}, "state": "firing"},
]


@pytest.fixture
def prometheus_answers(monkeypatch):
    """Replace httpx.get with a fake Prometheus; returns the list of requested URLs and timeouts."""
    requests: list[tuple[str, float]] = []
    answer = {
        "response": lambda url: httpx.Response(200, json={"status": "success", "data": {"alerts": ALERTS}})
    }

    def fake_get(url: str, timeout: float, **kwargs):
        requests.append((url, timeout))
        response = answer["response"](url)
        response.request = httpx.Request("GET", url)
        return response

    monkeypatch.setattr(httpx, "get", fake_get)
    return SimpleNamespace(requests=requests, answer=answer)


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({}, ["HighLatency", "KubeNodeNotReady", "RebootWindow", "Watchdog"]),
        ({"alert_firing_only": True}, ["KubeNodeNotReady", "RebootWindow", "Watchdog"]),
        # the regexp names alerts to ignore (kured's alert-filter-regexp); it searches, not full-matches
        ({"alert_filter_regexp": "^Watchdog$|Reboot"}, ["HighLatency", "KubeNodeNotReady"]),
        # with match-only, the regexp names the only alerts that count
        ({"alert_filter_regexp": "^Kube", "alert_filter_match_only": True}, ["KubeNodeNotReady"]),
        (
            {
                "alert_filter_regexp": "Latency|Node",
                "alert_filter_match_only": True,
                "alert_firing_only": True,
            },
            ["KubeNodeNotReady"],
        ),
        ({"alert_filter_regexp": "."}, []),
    ],
)
def test_active_alerts_filtering(prometheus_answers, options, expected):
    blockers = Blockers(prometheus_url="http://prometheus:9090", **options)
    assert active_alerts(blockers) == expected


@pytest.mark.parametrize(
    ("base", "url"),
    [
        ("http://prometheus:9090", "http://prometheus:9090/api/v1/alerts"),
        ("http://prometheus:9090/", "http://prometheus:9090/api/v1/alerts"),
        ("https://mon.example/prometheus/", "https://mon.example/prometheus/api/v1/alerts"),
    ],
)
def test_active_alerts_queries_the_alerts_endpoint(prometheus_answers, base, url):
    active_alerts(Blockers(prometheus_url=base, prometheus_timeout_seconds=3))
    assert prometheus_answers.requests == [(url, 3)]


def test_prometheus_blocks_on_alerts_and_on_any_failure(prometheus_answers):
    blockers = Blockers(prometheus_url="http://prometheus:9090", alert_filter_regexp="Watchdog")
    assert (
        prometheus_blocks(blockers) == "active Prometheus alerts: HighLatency, KubeNodeNotReady, RebootWindow"
    )
    prometheus_answers.answer["response"] = lambda url: httpx.Response(200, json={"data": {"alerts": []}})
    assert prometheus_blocks(blockers) is None
    prometheus_answers.answer["response"] = lambda url: httpx.Response(503, text="unavailable")
    assert (
        prometheus_blocks(blockers)
        == "Prometheus at http://prometheus:9090 could not be queried (HTTPStatusError)"
    )
    prometheus_answers.answer["response"] = lambda url: httpx.Response(200, text="<html>login</html>")
    assert "could not be queried" in prometheus_blocks(blockers)

    def refuse(url):
        raise httpx.ConnectError("connection refused")

    prometheus_answers.answer["response"] = refuse
    assert (
        prometheus_blocks(blockers)
        == "Prometheus at http://prometheus:9090 could not be queried (ConnectError)"
    )
    assert prometheus_blocks(Blockers()) is None


# ---- aksmaint.maintenance.gates.kured_lock_holder -------------------------------------------------------------
class FakeApps:
    def __init__(self, annotations: dict | None = None, status: int | None = None):
        self.annotations, self.status, self.read = annotations, status, []

    def read_namespaced_daemon_set(self, name: str, namespace: str) -> client.V1DaemonSet:
        self.read.append(f"{namespace}/{name}")
        if self.status:
            raise ApiException(status=self.status, reason="error")
        return client.V1DaemonSet(
            metadata=client.V1ObjectMeta(name=name, namespace=namespace, annotations=self.annotations),
            spec=client.V1DaemonSetSpec(
                selector=client.V1LabelSelector(match_labels={"name": name}),
                template=client.V1PodTemplateSpec(),
            ),
        )


def kube_with(annotations: dict | None = None, status: int | None = None) -> SimpleNamespace:
    return SimpleNamespace(apps=FakeApps(annotations, status), call=lambda fn, *args, **kw: fn(*args, **kw))


KURED_NOW = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)
HOUR_NS = 3600 * 10**9


def kured_lock(node: str, created: datetime, ttl_ns: int = 0) -> dict:
    """A lock as kured writes it: Go's time.Time (RFC 3339 with nanoseconds) and time.Duration (ns)."""
    stamp = created.strftime("%Y-%m-%dT%H:%M:%S.%f") + "123Z"
    return {"nodeID": node, "metadata": {"unschedulable": False}, "created": stamp, "TTL": ttl_ns}


def holder(value: object, options: LockOptions | None = None) -> str | None:
    annotations = {KURED_LOCK_ANNOTATION: value if isinstance(value, str) else json.dumps(value)}
    return kured_lock_holder(kube_with(annotations), options or LockOptions(), now=KURED_NOW)


def test_kured_lock_single_holder():
    assert holder(kured_lock("aks-a", KURED_NOW - timedelta(minutes=5))) == "aks-a"
    # without TTL kured's lock never expires
    assert holder(kured_lock("aks-a", KURED_NOW - timedelta(days=30))) == "aks-a"
    # released locks carry no node
    assert holder(kured_lock("", KURED_NOW)) is None


def test_kured_lock_ttl_in_nanoseconds_expires():
    assert holder(kured_lock("aks-a", KURED_NOW - timedelta(minutes=30), ttl_ns=HOUR_NS)) == "aks-a"
    assert holder(kured_lock("aks-a", KURED_NOW - timedelta(minutes=90), ttl_ns=HOUR_NS)) is None


def test_kured_multi_owner_lock_lists_the_live_holders():
    value = {
        "maxOwners": 3,
        "locks": [
            kured_lock("aks-a", KURED_NOW - timedelta(minutes=1), ttl_ns=HOUR_NS),
            kured_lock("aks-b", KURED_NOW - timedelta(hours=2), ttl_ns=HOUR_NS),
            kured_lock("aks-c", KURED_NOW - timedelta(hours=2)),
        ],
    }
    assert holder(value) == "aks-a, aks-c"
    assert holder({"maxOwners": 2, "locks": []}) is None


def test_kured_lock_unreadable_or_absent():
    assert holder("not json at all").startswith("unparseable lock")  # held: never guess it is free
    assert kured_lock_holder(kube_with({}), LockOptions(), now=KURED_NOW) is None
    assert kured_lock_holder(kube_with(None), LockOptions(), now=KURED_NOW) is None
    assert kured_lock_holder(kube_with(status=404), LockOptions(), now=KURED_NOW) is None
    with pytest.raises(ApiException):
        kured_lock_holder(kube_with(status=403), LockOptions(), now=KURED_NOW)


def test_kured_lock_reads_the_configured_daemonset():
    kube = kube_with({})
    kured_lock_holder(kube, LockOptions(kured_daemonset="kured-system/kured-daemon"), now=KURED_NOW)
    assert kube.apps.read == ["kured-system/kured-daemon"]


# ---- flows.node_maintenance.make_plan ----------------------------------------------------------
def test_make_plan_resumes_first_then_orders_by_pool_and_name():
    plan = make_plan(
        [
            NodeFacts(name="aks-userpool-vmss000001", pool="userpool", reboot_required=True),
            NodeFacts(name="aks-nodepool1-vmss00000a", pool="nodepool1", reboot_required=True),
            NodeFacts(name="aks-userpool-vmss000000", pool="userpool", reboot_required=False),
            NodeFacts(name="aks-nodepool1-vmss000009", pool="nodepool1", scan_error="node is not Ready"),
            NodeFacts(name="aks-zpool-vmss000000", pool="zpool", reboot_required=True, resume=True),
            NodeFacts(name="aks-apool-vmss000003", pool="apool", reboot_required=None),
            NodeFacts(
                name="aks-nodepool1-vmss000002", pool="nodepool1", resume=True, scan_error="node is not Ready"
            ),
        ]
    )
    assert [(e.node, e.action) for e in plan] == [
        ("aks-nodepool1-vmss000002", "resume"),  # a crashed run's node first, even if it cannot be scanned
        ("aks-zpool-vmss000000", "resume"),
        ("aks-apool-vmss000003", "check"),
        ("aks-nodepool1-vmss000009", "skip"),
        ("aks-nodepool1-vmss00000a", "reboot"),
        ("aks-userpool-vmss000000", "skip"),
        ("aks-userpool-vmss000001", "reboot"),
    ]
    reasons = {e.node: e.reason for e in plan}
    assert reasons["aks-nodepool1-vmss000009"] == "not scanned: node is not Ready"
    assert reasons["aks-userpool-vmss000000"] == "no reboot required"
    assert reasons["aks-nodepool1-vmss00000a"] == "/var/run/reboot-required present"


def test_make_plan_of_nothing():
    assert make_plan([]) == []


# ---- aksmaint.maintenance.lock.microtime ----------------------------------------------------------------------
SIX_DIGITS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}(Z|\+00:00)$")


def serialized(dt: datetime) -> str:
    """How the kubernetes client writes a Lease's renewTime."""
    spec = client.V1LeaseSpec(holder_identity="x", renew_time=dt, acquire_time=dt)
    body = client.ApiClient().sanitize_for_serialization(client.V1Lease(spec=spec))
    assert body["spec"]["renewTime"] == body["spec"]["acquireTime"]
    return body["spec"]["renewTime"]


def test_microtime_on_a_whole_second_keeps_six_digits():
    whole = datetime(2026, 3, 4, 12, 0, 0, tzinfo=UTC)
    assert serialized(whole) == "2026-03-04T12:00:00+00:00"  # what a real API server rejects
    assert serialized(microtime(whole)) == "2026-03-04T12:00:00.000001+00:00"


def test_microtime_is_utc_and_keeps_the_instant():
    local = datetime(2026, 7, 1, 14, 30, 15, 250000, tzinfo=BERLIN)
    assert serialized(microtime(local)) == "2026-07-01T12:30:15.250000+00:00"
    assert SIX_DIGITS.match(serialized(microtime()))


@given(st.datetimes(timezones=st.just(UTC), min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)))
def test_microtime_always_serializes_with_six_fractional_digits(dt):
    value = microtime(dt)
    assert SIX_DIGITS.match(serialized(value)), serialized(value)
    assert abs(value - dt) <= timedelta(microseconds=1)


@pytest.mark.parametrize(
    ("when", "expected"),
    [("2026-03-04T00:00", True), ("2026-03-04T23:59:30", True), ("2026-03-05T00:00", False)],
)
def test_window_until_the_end_of_the_day(when, expected):
    """end 24:00 covers the day's last minute; the default window is the whole of every day."""
    assert MaintenanceWindow(days=["wed"], start="00:00", end="24:00").is_open(at(when)) is expected
    assert MaintenanceWindow().is_open(at(when)) is True


@pytest.mark.parametrize(("start", "end"), [("22:00", "22:00"), ("00:00", "00:00")])
def test_window_that_never_opens_is_refused(start, end):
    with pytest.raises(ValidationError, match="would never open"):
        MaintenanceWindow(start=start, end=end)


def test_24_00_is_only_an_end():
    with pytest.raises(ValidationError, match="start"):
        MaintenanceWindow(start="24:00", end="06:00")


def test_make_plan_takes_the_emptiest_nodes_of_a_pool_first():
    """Pods of fuller nodes then find nodes already rebooted: fewer moves per pod."""
    facts = [
        NodeFacts(name=f"aks-nodepool1-vmss00000{i}", pool="nodepool1", reboot_required=True)
        for i in range(3)
    ] + [NodeFacts(name="aks-apool-vmss000000", pool="apool", reboot_required=True)]
    moves = {
        "aks-nodepool1-vmss000000": 7,
        "aks-nodepool1-vmss000001": 0,
        "aks-nodepool1-vmss000002": 2,
        "aks-apool-vmss000000": 9,
    }
    plan = make_plan(facts, moves)
    assert [e.node for e in plan] == [
        "aks-apool-vmss000000",  # pools stay in order
        "aks-nodepool1-vmss000001",
        "aks-nodepool1-vmss000002",
        "aks-nodepool1-vmss000000",
    ]
    assert plan[-1].reason == "/var/run/reboot-required present; 7 pod(s) to move"


SETTINGS = HostPodSettings("kube-system", "mcr.microsoft.com/cbl-mariner/busybox:2.0")


class _HostPodApi:
    """Just enough of Kube for run_on_host: pods finish at once; the first ``logs_gone`` log reads find
    the pod deleted (404), as when another run rebooted the node meanwhile."""

    def __init__(self, output: str, logs_gone: int):
        self.output, self.logs_gone, self.created = output, logs_gone, []
        finished = SimpleNamespace(
            phase="Succeeded",
            container_statuses=[
                SimpleNamespace(state=SimpleNamespace(terminated=SimpleNamespace(exit_code=0)))
            ],
        )
        self.core = SimpleNamespace(
            create_namespaced_pod=lambda ns, body: self.created.append(body["metadata"]["name"]),
            read_namespaced_pod=lambda name, ns: SimpleNamespace(status=finished),
            read_namespaced_pod_log=self._log,
            delete_namespaced_pod=lambda name, ns, **kw: None,
        )

    def _log(self, name, ns):
        if self.logs_gone:
            self.logs_gone -= 1
            raise ApiException(status=404, reason="Not Found")
        return self.output

    def call(self, fn, *args, **kwargs):
        kwargs.pop("_request_timeout", None)
        return fn(*args, **kwargs)


def test_a_host_pod_deleted_before_its_log_is_read_is_reported_as_gone():
    with pytest.raises(HostPodGone, match="disappeared before its result was read"):
        run_on_host(_HostPodApi("", logs_gone=1), "aks-nodepool1-0", "true", "scan", SETTINGS)


def test_the_scan_looks_once_more_when_its_pod_was_deleted():
    api = _HostPodApi(probe_output(reboot_required=True, pending_kernel="5.15.0-1081-azure"), logs_gone=1)
    [scanned] = scan_with_host_pods(api, [facts()], SETTINGS, parallelism=1)
    assert (scanned.reboot_required, scanned.scan_error) == (True, None)
    assert len(api.created) == 2
    [twice] = scan_with_host_pods(_HostPodApi("", logs_gone=2), [facts()], SETTINGS, parallelism=1)
    assert "disappeared" in twice.scan_error
