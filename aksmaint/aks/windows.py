"""AKS maintenance configurations: whether a planned-maintenance window allows work now."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

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
