"""calbridge's CalDAV provider plugin (RFC 4791 calendars, RFC 6578 sync).

Registers :class:`CalDAVProvider` as ``caldav``. CalDAV cannot push: the polling plugin
(``calbridge_polling``) answers :func:`calbridge.hookspecs.make_change_source` for it, so
CalDAV calendars reach the application through the same change stream, read by
sync-collection every ``poll_interval``. Accounts connect with a user name and an app
password (:func:`connect`), kept in calbridge's token vault.

Parsing and writing iCalendar needs the ``caldav`` extra (``icalendar``,
``recurring-ical-events``): ``pip install "calbridge[caldav]"``.
"""

from __future__ import annotations

import calbridge

from ._connect import caldav_credentials, connect
from ._provider import CalDAVProvider, resource_name

__all__ = [
    "CalDAVProvider",
    "caldav_credentials",
    "connect",
    "register_providers",
    "resource_name",
]


@calbridge.hookimpl
def register_providers(register: calbridge.ProviderRegistrar) -> None:
    """Register the ``caldav`` provider."""
    register(CalDAVProvider)
