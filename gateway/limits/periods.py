"""Budget periods on calendar boundaries in a time zone: daily, weekly (ISO, Monday), monthly, none."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

GRACE_S = 7 * 86400  # a period's record outlives its end by a week (usage reports on the last period)


@dataclass(slots=True, frozen=True)
class Period:
    id: str  # "2026-11-21" | "2026-W47" | "2026-11" | "all"
    ends_at: float | None  # unix time of the next boundary; None = never


def period_of(kind: str, now: float, tz: ZoneInfo) -> Period:
    t = datetime.fromtimestamp(now, tz)
    if kind == "none":
        return Period("all", None)
    start = t.replace(hour=0, minute=0, second=0, microsecond=0)
    if kind == "daily":
        pid, end = t.strftime("%Y-%m-%d"), _add_days(start, 1)
    elif kind == "weekly":
        year, week, weekday = t.isocalendar()
        pid, end = f"{year}-W{week:02d}", _add_days(start, 8 - weekday)
    elif kind == "monthly":
        first = start.replace(day=1)
        pid = t.strftime("%Y-%m")
        end = first.replace(year=first.year + 1, month=1) if first.month == 12 else first.replace(month=first.month + 1)
    else:
        raise ValueError(f"unknown period {kind!r}")
    return Period(pid, end.timestamp())


def _add_days(midnight: datetime, days: int) -> datetime:
    """Midnight `days` later in the same zone (wall clock, so DST days are 23 or 25 hours)."""
    d = (midnight.replace(tzinfo=None) + timedelta(days=days)).replace(tzinfo=midnight.tzinfo)
    return d


def ttl_of(period: Period, now: float) -> int | None:
    return None if period.ends_at is None else int(period.ends_at - now) + GRACE_S
