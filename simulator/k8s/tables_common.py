"""What the server-side tables share: column definitions (the NAME and AGE columns every table has),
reading nested fields, status conditions and timestamps, and formatting a duration as kubectl's AGE
column does; the tables of each kind are built from these in ``tables_nodes_pods`` and
``tables_other``, and put together by ``tables``."""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

Row = list[Any]
Object = Mapping[str, Any]


def human_duration(elapsed: datetime.timedelta) -> str:
    """Format a duration the way kubectl's AGE column does: `45s`, `3m20s`, `2h5m`, `3d4h`, `5y`.

    Mirrors k8s.io/apimachinery/pkg/util/duration.HumanDuration, which keeps
    about two significant units and tolerates up to two seconds of clock skew.
    """
    seconds = int(elapsed.total_seconds())
    if seconds < -1:
        return "<invalid>"
    if seconds < 0:
        return "0s"
    if seconds < 120:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 10:
        return f"{minutes}m{seconds % 60}s" if seconds % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    days = hours // 24
    if hours < 24 * 8:
        return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"
    if days < 365 * 2:
        return f"{days}d"
    if days < 365 * 8:
        return f"{days // 365}y{days % 365}d" if days % 365 else f"{days // 365}y"
    return f"{days // 365}y"


def parse_time(value: Any) -> datetime.datetime | None:
    """Read an RFC 3339 timestamp such as `2026-01-02T03:04:05Z`; None when absent or unreadable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.UTC)


def since(value: Any, now: datetime.datetime) -> str:
    """Time elapsed from a timestamp to `now`, or `<unknown>` without a timestamp."""
    moment = parse_time(value)
    if moment is None:
        return "<unknown>"
    return human_duration(now - moment)


def get_path(obj: Any, *path: str) -> Any:
    """Follow nested keys, giving None as soon as one is missing."""
    for key in path:
        obj = obj.get(key) if isinstance(obj, Mapping) else None
    return obj


def column(name: str, type_: str, description: str, priority: int = 0, format_: str = "") -> dict[str, Any]:
    return {"name": name, "type": type_, "format": format_, "description": description, "priority": priority}


NAME_COLUMN = column("Name", "string", "Name of the object, unique within its namespace.", format_="name")
AGE_COLUMN = column("Age", "string", "Time since the object was created (metadata.creationTimestamp).")


def name_of(obj: Object) -> str:
    return get_path(obj, "metadata", "name") or ""


def age_of(obj: Object, now: datetime.datetime) -> str:
    return since(get_path(obj, "metadata", "creationTimestamp"), now)


def condition(obj: Object, condition_type: str) -> Mapping[str, Any] | None:
    """The status condition of the given type, or None."""
    conditions = get_path(obj, "status", "conditions") or []
    return next((c for c in conditions if c.get("type") == condition_type), None)
