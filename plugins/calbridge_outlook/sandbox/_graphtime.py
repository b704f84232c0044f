"""Time zones and ``dateTimeTimeZone`` values as Microsoft Graph writes them (the sandbox's own).

The Graph sandbox emulates the service, so it reads and writes Graph's time values with its
own code, never the client's (``calbridge_outlook._tz``): a bug in one is then caught by the
other instead of being shared.

Graph names zones the Windows way (``"Pacific Standard Time"``) and accepts IANA names
as input. The mapping is CLDR's ``windowsZones.xml`` as shipped, generated, in
``tzlocal.windows_tz`` (``win_tz``: Windows -> IANA for the "001" territory; ``tz_win``:
every IANA name CLDR lists -> Windows); it is never typed by hand here.

A ``dateTimeTimeZone`` carries a wall-clock time without offset and with seven fractional
digits (``"2026-01-05T09:00:00.0000000"``) plus the zone it is read in.
"""

from __future__ import annotations

import datetime as dt
import functools
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from tzlocal import windows_tz

__all__ = [
    "WINDOWS_TO_IANA",
    "format_graph_datetime",
    "parse_graph_datetime",
    "to_iana",
    "to_windows",
    "zone",
]

#: Windows zone name -> canonical IANA name (CLDR windowsZones, territory "001")
WINDOWS_TO_IANA: dict[str, str] = dict(windows_tz.win_tz)
_IANA_TO_WINDOWS: dict[str, str] = dict(windows_tz.tz_win)
_UTC_NAMES = frozenset({"utc", "etc/utc", "gmt", "etc/gmt", "z", "coordinated universal time"})


@functools.lru_cache(maxsize=1)
def _iana_names() -> frozenset[str]:
    return frozenset(available_timezones())


def to_iana(name: str | None) -> str:
    """An IANA zone name for a Windows or IANA ``name``; ``"UTC"`` when unknown or custom.

    ``tzone://Microsoft/Custom`` and other names no mapping knows fall back to UTC (the
    instant stays right; only the display zone is lost).
    """
    if not name:
        return "UTC"
    text = name.strip()
    if text.lower() in _UTC_NAMES:
        return "UTC"
    if text in WINDOWS_TO_IANA:
        iana = WINDOWS_TO_IANA[text]
        return "UTC" if iana == "Etc/UTC" else iana
    if text in _iana_names():
        return text
    return "UTC"


def to_windows(iana: str | None) -> str:
    """The Windows zone name for an IANA name (``"UTC"`` for UTC and unknown names)."""
    if not iana or iana.lower() in _UTC_NAMES:
        return "UTC"
    found = _IANA_TO_WINDOWS.get(iana)
    if found is not None:
        return found
    # an IANA link CLDR does not list (e.g. "US/Pacific"): compare the rules by key
    try:
        key = ZoneInfo(iana).key
    except (ZoneInfoNotFoundError, ValueError):
        return "UTC"
    return _IANA_TO_WINDOWS.get(key, "UTC")


def zone(name: str | None) -> dt.tzinfo:
    """A ``tzinfo`` for a Windows or IANA name (UTC when unknown)."""
    iana = to_iana(name)
    if iana == "UTC":
        return dt.UTC
    return ZoneInfo(iana)


def format_graph_datetime(value: dt.datetime) -> str:
    """A naive (wall-clock) datetime as Graph writes it: no offset, seven fractional digits."""
    base = value.replace(tzinfo=None, microsecond=0).isoformat()
    return f"{base}.{value.microsecond:06d}0"


def parse_graph_datetime(text: str, tz_name: str | None) -> dt.datetime:
    """An aware datetime from a Graph ``dateTime`` read in ``tz_name`` (Windows or IANA).

    Accepts any number of fractional digits (Graph writes seven; Python reads six) and an
    explicit offset or ``Z`` when a client sends one.
    """
    raw = text.strip().replace("Z", "+00:00")
    offset = ""
    if len(raw) > 19 and raw[-6] in "+-" and raw[-3] == ":":
        raw, offset = raw[:-6], raw[-6:]
    if "." in raw:
        head, frac = raw.split(".", 1)
        raw = f"{head}.{(frac + '000000')[:6]}"
    value = dt.datetime.fromisoformat(raw + offset)
    if value.tzinfo is None:
        value = value.replace(tzinfo=zone(tz_name))
    return value
