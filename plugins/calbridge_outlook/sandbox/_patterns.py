"""Graph ``patternedRecurrence`` <-> RFC 5545 ``RRULE``, both ways (the sandbox's own).

The Graph sandbox keeps its own translation, apart from the client's
(``calbridge_outlook._recurrence``), so the two check each other.

==================  ===========================================================
pattern.type        RRULE
==================  ===========================================================
daily               ``FREQ=DAILY;INTERVAL=n``
weekly              ``FREQ=WEEKLY;INTERVAL=n;BYDAY=MO,WE;WKST=SU``
absoluteMonthly     ``FREQ=MONTHLY;INTERVAL=n;BYMONTHDAY=d``
relativeMonthly     ``FREQ=MONTHLY;INTERVAL=n;BYDAY=MO,TU;BYSETPOS=k`` (k: 1-4, -1 last)
absoluteYearly      ``FREQ=YEARLY;INTERVAL=n;BYMONTH=m;BYMONTHDAY=d``
relativeYearly      ``FREQ=YEARLY;INTERVAL=n;BYMONTH=m;BYDAY=..;BYSETPOS=k``
==================  ===========================================================

range ``endDate`` is ``UNTIL`` (a date for all-day series; for timed series the end of
that day in the recurrence zone, in UTC), ``numbered`` is ``COUNT`` and ``noEnd`` has
neither. ``BYDAY=2MO`` (an ordinal inside BYDAY) is read as ``BYDAY=MO;BYSETPOS=2``.
Rules Graph cannot express (BYHOUR, several RRULE lines, RDATE, EXRULE ...) raise
:class:`UnsupportedRecurrence`; EXDATE lines are returned separately for the caller to
turn into deleted occurrences.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

__all__ = [
    "DAYS",
    "INDEXES",
    "UnsupportedRecurrence",
    "pattern_from_rrule",
    "rrule_from_pattern",
]

#: Graph dayOfWeek values in RRULE order
DAYS = {
    "sunday": "SU",
    "monday": "MO",
    "tuesday": "TU",
    "wednesday": "WE",
    "thursday": "TH",
    "friday": "FR",
    "saturday": "SA",
}
_DAYS_BACK = {v: k for k, v in DAYS.items()}
_DAY_ORDER = list(DAYS)
#: Graph weekIndex values -> BYSETPOS
INDEXES = {"first": 1, "second": 2, "third": 3, "fourth": 4, "last": -1}
_INDEXES_BACK = {v: k for k, v in INDEXES.items()}
_FREQ = {
    "daily": "DAILY",
    "weekly": "WEEKLY",
    "absoluteMonthly": "MONTHLY",
    "relativeMonthly": "MONTHLY",
    "absoluteYearly": "YEARLY",
    "relativeYearly": "YEARLY",
}
_ORDINAL_DAY = re.compile(r"^([+-]?\d+)?(SU|MO|TU|WE|TH|FR|SA)$")


class UnsupportedRecurrence(ValueError):
    """The recurrence cannot be expressed in the other format."""


def _days_out(days: list[str]) -> str:
    try:
        ordered = sorted({d.lower() for d in days}, key=_DAY_ORDER.index)
        return ",".join(DAYS[d] for d in ordered)
    except (KeyError, ValueError):
        raise UnsupportedRecurrence(f"unknown daysOfWeek {days!r}") from None


def rrule_from_pattern(
    recurrence: dict[str, Any], *, all_day: bool, tz: dt.tzinfo, start_time: dt.time
) -> str:
    """The ``RRULE:...`` line for a Graph ``patternedRecurrence``.

    Args:
        all_day: whether the series is all-day (UNTIL is then a date).
        tz: the zone the series recurs in (for a timed UNTIL).
        start_time: the wall-clock start of each occurrence (UNTIL includes the last one).
    """
    pattern = recurrence.get("pattern") or {}
    rng = recurrence.get("range") or {}
    kind = pattern.get("type")
    interval = int(pattern.get("interval") or 1)
    parts: list[str] = []
    days = list(pattern.get("daysOfWeek") or [])
    index = INDEXES.get(str(pattern.get("index") or "first").lower())
    if index is None:
        raise UnsupportedRecurrence(f"unknown index {pattern.get('index')!r}")
    freq = _FREQ.get(str(kind))
    if freq is None:
        raise UnsupportedRecurrence(f"unknown pattern type {kind!r}")
    parts.append(f"FREQ={freq}")
    parts.append(f"INTERVAL={interval}")
    if kind == "weekly":
        if not days:
            raise UnsupportedRecurrence("a weekly pattern needs daysOfWeek")
        parts.append(f"BYDAY={_days_out(days)}")
        first = str(pattern.get("firstDayOfWeek") or "sunday").lower()
        if first not in DAYS:
            raise UnsupportedRecurrence(f"unknown firstDayOfWeek {first!r}")
        parts.append(f"WKST={DAYS[first]}")
    elif kind in ("absoluteYearly", "relativeYearly"):
        month = int(pattern.get("month") or 0)
        if not 1 <= month <= 12:
            raise UnsupportedRecurrence(f"a yearly pattern needs month 1-12, not {month}")
        parts.append(f"BYMONTH={month}")
    if kind in ("absoluteMonthly", "absoluteYearly"):
        day = int(pattern.get("dayOfMonth") or 0)
        if not 1 <= day <= 31:
            raise UnsupportedRecurrence(f"dayOfMonth must be 1-31, not {day}")
        parts.append(f"BYMONTHDAY={day}")
    if kind in ("relativeMonthly", "relativeYearly"):
        if not days:
            raise UnsupportedRecurrence(f"a {kind} pattern needs daysOfWeek")
        parts += [f"BYDAY={_days_out(days)}", f"BYSETPOS={index}"]
    rtype = rng.get("type") or "noEnd"
    if rtype == "numbered":
        count = int(rng.get("numberOfOccurrences") or 0)
        if count < 1:
            raise UnsupportedRecurrence("a numbered range needs numberOfOccurrences >= 1")
        parts.append(f"COUNT={count}")
    elif rtype == "endDate":
        end = dt.date.fromisoformat(str(rng.get("endDate")))
        if all_day:
            parts.append(f"UNTIL={end:%Y%m%d}")
        else:
            local = dt.datetime.combine(end, start_time).replace(tzinfo=tz)
            parts.append(f"UNTIL={local.astimezone(dt.UTC):%Y%m%dT%H%M%SZ}")
    elif rtype != "noEnd":
        raise UnsupportedRecurrence(f"unknown range type {rtype!r}")
    return "RRULE:" + ";".join(parts)


def _parse_rrule(line: str) -> dict[str, str]:
    body = line.split(":", 1)[1] if line.upper().startswith("RRULE:") else line
    out: dict[str, str] = {}
    for part in body.split(";"):
        if not part:
            continue
        key, _, value = part.partition("=")
        out[key.strip().upper()] = value.strip().upper()
    return out


_SUPPORTED = frozenset(
    {"FREQ", "INTERVAL", "BYDAY", "WKST", "BYMONTHDAY", "BYMONTH", "BYSETPOS", "COUNT", "UNTIL"}
)


def _until_date(value: str, *, tz: dt.tzinfo) -> dt.date:
    if "T" not in value:
        return dt.datetime.strptime(value, "%Y%m%d").date()
    if value.endswith("Z"):
        instant = dt.datetime.strptime(value, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
        return instant.astimezone(tz).date()
    return dt.datetime.strptime(value, "%Y%m%dT%H%M%S").date()


def pattern_from_rrule(
    lines: tuple[str, ...] | list[str],
    *,
    start: dt.date,
    tz_name: str,
    tz: dt.tzinfo,
) -> tuple[dict[str, Any], list[str]]:
    """A Graph ``patternedRecurrence`` for recurrence lines; also returns the EXDATE lines.

    Args:
        start: the series' first date (``range.startDate``).
        tz_name: the ``recurrenceTimeZone`` to write (Windows name).
        tz: that zone, to read a UTC UNTIL as a local date.
    """
    rrules = [ln for ln in lines if ln.upper().startswith("RRULE:")]
    exdates = [ln for ln in lines if ln.upper().startswith("EXDATE")]
    others = [ln for ln in lines if ln not in rrules and ln not in exdates]
    if len(rrules) != 1 or others:
        raise UnsupportedRecurrence("Graph holds exactly one RRULE (plus EXDATEs) per series")
    rule = _parse_rrule(rrules[0])
    extra = set(rule) - _SUPPORTED
    if extra:
        raise UnsupportedRecurrence(f"Graph cannot express {sorted(extra)}")
    freq = rule.get("FREQ")
    interval = int(rule.get("INTERVAL", "1") or 1)
    days: list[str] = []
    setpos: int | None = int(rule["BYSETPOS"]) if "BYSETPOS" in rule else None
    for token in filter(None, rule.get("BYDAY", "").split(",")):
        m = _ORDINAL_DAY.match(token)
        if m is None:
            raise UnsupportedRecurrence(f"bad BYDAY {token!r}")
        if m.group(1):
            n = int(m.group(1))
            if setpos is not None and setpos != n:
                raise UnsupportedRecurrence("mixed BYDAY ordinals")
            setpos = n
        days.append(_DAYS_BACK[m.group(2)])
    if setpos is not None and setpos not in _INDEXES_BACK:
        raise UnsupportedRecurrence(f"Graph has no week index {setpos}")
    pattern: dict[str, Any] = {"interval": interval}
    monthday = int(rule["BYMONTHDAY"]) if "BYMONTHDAY" in rule else None
    month = int(rule["BYMONTH"]) if "BYMONTH" in rule else None
    if monthday is not None and monthday < 1:
        raise UnsupportedRecurrence("Graph has no negative BYMONTHDAY")
    if freq == "DAILY" and not days and monthday is None and month is None and setpos is None:
        pattern["type"] = "daily"
    elif freq == "WEEKLY" and monthday is None and month is None and setpos is None:
        pattern["type"] = "weekly"
        pattern["daysOfWeek"] = days or [_DAY_ORDER[(start.weekday() + 1) % 7]]
        pattern["firstDayOfWeek"] = _DAYS_BACK.get(rule.get("WKST", "SU"), "sunday")
    elif freq == "MONTHLY" and month is None:
        if days and monthday is None:
            pattern.update(type="relativeMonthly", daysOfWeek=days, index=_index(setpos))
        elif not days and setpos is None:
            pattern.update(type="absoluteMonthly", dayOfMonth=monthday or start.day)
        else:
            raise UnsupportedRecurrence("a monthly rule is by month day or by weekday")
    elif freq == "YEARLY":
        if days and monthday is None:
            pattern.update(
                type="relativeYearly", daysOfWeek=days, index=_index(setpos), month=month or 0
            )
            if month is None:
                raise UnsupportedRecurrence("a relative yearly rule needs BYMONTH")
        elif not days and setpos is None:
            pattern.update(
                type="absoluteYearly",
                dayOfMonth=monthday or start.day,
                month=month or start.month,
            )
        else:
            raise UnsupportedRecurrence("a yearly rule is by month day or by weekday")
    else:
        raise UnsupportedRecurrence(f"Graph cannot express FREQ={freq}")
    rng: dict[str, Any] = {"startDate": start.isoformat(), "recurrenceTimeZone": tz_name}
    if "COUNT" in rule and "UNTIL" in rule:
        raise UnsupportedRecurrence("COUNT and UNTIL together")
    if "COUNT" in rule:
        rng.update(type="numbered", numberOfOccurrences=int(rule["COUNT"]))
    elif "UNTIL" in rule:
        rng.update(type="endDate", endDate=_until_date(rule["UNTIL"], tz=tz).isoformat())
    else:
        rng["type"] = "noEnd"
    return {"pattern": pattern, "range": rng}, exdates


def _index(setpos: int | None) -> str:
    return _INDEXES_BACK[setpos if setpos is not None else 1]
