"""AKS upgrade rules as plain functions: target versions, one-minor-at-a-time paths, version skew, and
maintenance windows read from AKS maintenance configurations (as the Azure SDK models them)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from azure.mgmt.containerservice.models import MaintenanceConfiguration

from aksmaint.aks.versions import UpgradeError, resolve_target, skew_problem, upgrade_path
from aksmaint.aks.windows import maintenance_window_open

REGION = ["1.29.9", "1.30.5", "1.30.7", "1.31.2", "1.31.4", "1.32.1"]


# ---- resolve_target ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("current", "target", "expected"),
    [
        ("1.30.5", "latest-patch", "1.30.7"),
        ("1.30.7", "latest-patch", None),  # newest patch already: nothing to do
        ("1.30.5", "next-minor", "1.31.4"),  # the newest patch of the next minor
        ("1.31.2", "next-minor", "1.32.1"),
        ("1.30.5", "latest", "1.32.1"),
        ("1.32.1", "latest", None),
        ("1.30.5", "1.31.2", "1.31.2"),
        ("1.30.5", "1.32.1", "1.32.1"),  # an explicit target may be several minors away
        ("1.30.5", "1.30.5", None),  # the same version: nothing to do
        ("1.30.5", "v1.31.4", "1.31.4"),  # kubectl's "v" prefix is accepted, AKS's form returned
    ],
)
def test_resolve_target(current, target, expected):
    assert resolve_target(current, REGION, target) == expected


@pytest.mark.parametrize(
    ("current", "target", "message"),
    [
        ("1.30.5", "1.29.9", "downgrading from 1.30.5 to 1.29.9 is not allowed"),
        ("1.31.4", "1.30.7", "downgrading from 1.31.4 to 1.30.7 is not allowed"),
        ("1.30.5", "1.31.3", "version 1.31.3 is not offered in this region (available: 1.29.9, 1.30.5, "),
        ("1.32.1", "next-minor", "no 1.33.x version is offered in this region"),
        ("1.30.5", "1.31", "'1.31' is not a Kubernetes version like 1.30.5"),
        ("1.30.5", "newest", "'newest' is not a Kubernetes version"),
    ],
)
def test_resolve_target_refuses_with_a_clear_message(current, target, message):
    with pytest.raises(UpgradeError) as refused:
        resolve_target(current, REGION, target)
    assert message in str(refused.value)


# ---- upgrade_path ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("current", "target", "path"),
    [
        ("1.30.5", "1.30.7", ["1.30.7"]),
        ("1.30.5", "1.31.2", ["1.31.2"]),
        ("1.30.5", "1.32.1", ["1.31.4", "1.32.1"]),  # through the newest patch of 1.31
        ("1.29.9", "1.32.1", ["1.30.7", "1.31.4", "1.32.1"]),
        ("1.30.7", "1.31.4", ["1.31.4"]),
    ],
)
def test_upgrade_path_goes_one_minor_at_a_time(current, target, path):
    assert upgrade_path(current, target, REGION) == path


def test_upgrade_path_refuses_a_gap_in_the_offered_minors():
    with pytest.raises(UpgradeError) as refused:
        upgrade_path("1.29.9", "1.32.1", ["1.29.9", "1.30.5", "1.32.1"])
    assert "no 1.31.x version is offered" in str(refused.value)
    assert "AKS does not skip minor versions" in str(refused.value)


# ---- skew_problem ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("control_plane", "pool", "problem"),
    [
        ("1.31.4", "1.31.4", None),
        ("1.31.4", "1.30.5", None),
        ("1.31.4", "1.28.9", None),  # three minors behind is the limit
        (
            "1.32.1",
            "1.28.9",
            "pool version 1.28.9 would be more than 3 minor versions behind the control plane 1.32.1",
        ),
        ("1.30.5", "1.31.4", "pool version 1.31.4 would be newer than the control plane 1.30.5"),
        ("1.31.2", "1.31.4", "pool version 1.31.4 would be newer than the control plane 1.31.2"),
    ],
)
def test_skew_problem(control_plane, pool, problem):
    assert skew_problem(control_plane, pool) == problem


# ---- maintenance_window_open -------------------------------------------------------------------------
def config(**properties: object) -> MaintenanceConfiguration:
    """A maintenance configuration as the SDK deserialises it from AKS's wire JSON."""
    return MaintenanceConfiguration({"name": "aksManagedNodeOSUpgradeSchedule", "properties": properties})


def window(
    schedule: dict, start: str = "02:00", hours: int = 4, offset: str | None = "+01:00", **more
) -> dict:
    body = {"schedule": schedule, "durationHours": hours, "startTime": start, **more}
    if offset is not None:
        body["utcOffset"] = offset
    return {"maintenanceWindow": body}


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


SUNDAYS = {"weekly": {"intervalWeeks": 1, "dayOfWeek": "Sunday"}}


@pytest.mark.parametrize(
    ("now", "is_open"),
    [
        # Sunday 02:00-06:00 at UTC+01:00 is Sunday 01:00-05:00 UTC (2026-11-29 is a Sunday)
        ("2026-11-29T00:59:00", False),
        ("2026-11-29T01:00:00", True),
        ("2026-11-29T03:30:00", True),
        ("2026-11-29T04:59:00", True),
        ("2026-11-29T05:00:00", False),
        ("2026-11-28T02:00:00", False),  # Saturday at the same hours
        ("2026-11-30T02:00:00", False),  # Monday
    ],
)
def test_weekly_window_with_utc_offset(now, is_open):
    check = maintenance_window_open(config(**window(SUNDAYS)), now=at(now))
    assert check.open is is_open
    assert "UTC+01:00" in check.description


def test_weekly_window_with_a_negative_offset_crosses_midnight_utc():
    # Sunday 22:00-02:00 at UTC-05:00 is Monday 03:00-07:00 UTC
    sunday_night = config(**window(SUNDAYS, start="22:00", hours=4, offset="-05:00"))
    assert maintenance_window_open(sunday_night, now=at("2026-11-30T03:30:00")).open
    assert maintenance_window_open(sunday_night, now=at("2026-11-30T06:59:00")).open
    assert not maintenance_window_open(sunday_night, now=at("2026-11-30T07:00:00")).open
    assert not maintenance_window_open(sunday_night, now=at("2026-11-29T22:30:00")).open  # 17:30 local


def test_window_past_local_midnight_belongs_to_the_day_it_starts():
    saturday_late = config(
        **window({"weekly": {"intervalWeeks": 1, "dayOfWeek": "Saturday"}}, "23:00", 6, None)
    )
    assert maintenance_window_open(saturday_late, now=at("2026-11-29T03:00:00")).open  # Sunday 03:00
    assert not maintenance_window_open(saturday_late, now=at("2026-11-30T03:00:00")).open  # Monday 03:00


def test_daily_window():
    daily = config(**window({"daily": {"intervalDays": 1}}, "01:00", 4, "+00:00"))
    assert maintenance_window_open(daily, now=at("2026-11-25T02:00:00")).open
    assert not maintenance_window_open(daily, now=at("2026-11-25T06:00:00")).open


def test_monthly_windows_open_only_on_their_day():
    fifteenth = config(
        **window({"absoluteMonthly": {"intervalMonths": 1, "dayOfMonth": 15}}, offset="+00:00")
    )
    assert maintenance_window_open(fifteenth, now=at("2026-12-15T03:00:00")).open
    assert not maintenance_window_open(fifteenth, now=at("2026-12-16T03:00:00")).open
    first_monday = config(
        **window({"relativeMonthly": {"intervalMonths": 1, "weekIndex": "First", "dayOfWeek": "Monday"}})
    )
    assert maintenance_window_open(first_monday, now=at("2026-12-07T02:00:00")).open  # 03:00 local
    assert not maintenance_window_open(first_monday, now=at("2026-12-14T02:00:00")).open  # second Monday
    last_friday = config(
        **window({"relativeMonthly": {"intervalMonths": 1, "weekIndex": "Last", "dayOfWeek": "Friday"}})
    )
    assert maintenance_window_open(last_friday, now=at("2026-11-27T02:00:00")).open
    assert not maintenance_window_open(last_friday, now=at("2026-11-20T02:00:00")).open


def test_not_allowed_dates_close_the_window():
    frozen = config(**window(SUNDAYS, notAllowedDates=[{"start": "2026-12-24", "end": "2026-12-27"}]))
    check = maintenance_window_open(frozen, now=at("2026-12-27T02:00:00"))  # a Sunday inside the freeze
    assert not check.open and "not-allowed dates 2026-12-24 to 2026-12-27" in check.description
    assert maintenance_window_open(frozen, now=at("2027-01-03T02:00:00")).open


def test_time_in_week_slots_are_utc_hours():
    default = MaintenanceConfiguration(
        {"name": "default", "properties": {"timeInWeek": [{"day": "Saturday", "hourSlots": [1, 2, 3]}]}}
    )
    assert maintenance_window_open(default, now=at("2026-11-28T01:00:00")).open
    assert maintenance_window_open(default, now=at("2026-11-28T03:59:00")).open
    assert not maintenance_window_open(default, now=at("2026-11-28T04:00:00")).open
    assert not maintenance_window_open(default, now=at("2026-11-28T00:59:00")).open
    assert not maintenance_window_open(default, now=at("2026-11-29T02:00:00")).open  # Sunday


def test_not_allowed_time_overrides_time_in_week():
    default = MaintenanceConfiguration(
        {
            "name": "default",
            "properties": {
                "timeInWeek": [{"day": "Saturday", "hourSlots": [1, 2, 3]}],
                "notAllowedTime": [{"start": "2026-11-28T00:00:00Z", "end": "2026-11-28T02:30:00Z"}],
            },
        }
    )
    assert not maintenance_window_open(default, now=at("2026-11-28T01:30:00")).open
    assert maintenance_window_open(default, now=at("2026-11-28T03:00:00")).open


def test_no_configuration_or_no_window_means_any_time():
    assert maintenance_window_open(None, now=at("2026-11-25T12:00:00")).open
    empty = MaintenanceConfiguration({"name": "default", "properties": {}})
    assert maintenance_window_open(empty, now=at("2026-11-25T12:00:00")).open
