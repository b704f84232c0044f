"""The CalDAV provider (RFC 4791, RFC 6578), proven against Radicale.

Settings (``ProviderSettings``):

* ``base_urls``: ``api``, the server's URL (its root or any URL under which
  ``current-user-principal`` is found, e.g. ``https://caldav.example.com/dav/``). An
  account connected with its own server URL (``tokens.extra["server"]``) uses that one.
* ``options``: ``page_size`` (resources fetched per calendar-multiget, default 50),
  ``free_busy`` (``"auto"``: the server's free-busy-query when it offers one, else built
  from the events; ``"events"``: always from the events), ``poll_interval`` (seconds, read
  by the polling plugin: CalDAV cannot push).

Credentials: the account's user name and app password (HTTP Basic), stored in the vault as
a :class:`calbridge.TokenSet` (``access_token`` = the password, ``extra["username"]``,
optionally ``extra["server"]``): see :func:`calbridge_caldav.connect`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, ClassVar
from urllib.parse import quote

import httpx

from calbridge import (
    Calendar,
    Capabilities,
    Change,
    ChangeKind,
    ChangePage,
    Channel,
    Event,
    EventDraft,
    EventStatus,
    FreeBusy,
    FreeBusyStatus,
    Provider,
    ProviderSettings,
    RetryPolicy,
    Session,
    TimeRange,
    TokenSet,
    Transparency,
)
from calbridge.errors import (
    ConfigurationError,
    NotFound,
    ProviderResponseError,
    ReauthRequired,
)

from ._dav import (
    CALDAV,
    DAV,
    ICAL,
    DavClient,
    DavResponse,
    multistatus,
    sync_token_of,
    xml_body,
)

if TYPE_CHECKING:
    from ._convert import Resource

__all__ = ["CalDAVProvider", "resource_name"]

_EPS = dt.timedelta(seconds=1)
_FB = {
    "BUSY": FreeBusyStatus.BUSY,
    "BUSY-TENTATIVE": FreeBusyStatus.TENTATIVE,
    "BUSY-UNAVAILABLE": FreeBusyStatus.UNAVAILABLE,
}
_REDIRECTS = frozenset({301, 302, 307, 308})
_DISCOVERY_MISSES = frozenset({*_REDIRECTS, 400, 403, 404, 405, 501})
_CALENDAR_PROPS = (
    "<d:prop><d:resourcetype/><d:displayname/><i:calendar-color/>"
    "<d:current-user-privilege-set/><c:calendar-timezone/><d:supported-report-set/>"
    "<c:supported-calendar-component-set/></d:prop>"
)


def resource_name(idempotency_key: str) -> tuple[str, str]:
    """(UID, resource name) derived from the app's idempotency key: the same key always
    names the same resource, so a repeated create finds the first one."""
    digest = hashlib.sha256(idempotency_key.encode("utf-8")).hexdigest()[:40]
    uid = f"calbridge-{digest}"
    return uid, f"{uid}.ics"


def _privileges(response: DavResponse) -> set[str]:
    element = response.props.get(f"{{{DAV}}}current-user-privilege-set")
    if element is None:
        return set()
    return {
        child.tag.rsplit("}", 1)[-1]
        for privilege in element.findall(f"{{{DAV}}}privilege")
        for child in privilege
    }


def _reports(response: DavResponse) -> set[str]:
    element = response.props.get(f"{{{DAV}}}supported-report-set")
    if element is None:
        return set()
    return {
        child.tag.rsplit("}", 1)[-1]
        for report in element.iter(f"{{{DAV}}}report")
        for child in report
    }


def _is_event_calendar(response: DavResponse) -> bool:
    kinds = response.props.get(f"{{{DAV}}}resourcetype")
    if kinds is None or kinds.find(f"{{{CALDAV}}}calendar") is None:
        return False
    comps = response.props.get(f"{{{CALDAV}}}supported-calendar-component-set")
    if comps is None:
        return True
    return any(c.get("name") == "VEVENT" for c in comps)


class CalDAVProvider(Provider):
    """Any CalDAV server (Radicale, Nextcloud, Fastmail, iCloud ...), by Basic auth."""

    name = "caldav"
    capabilities = Capabilities(
        push=False,
        incremental_sync=True,
        free_busy=True,
        write=True,
        idempotent_create=True,
        server_side_expansion=False,
        pkce=False,
        rotating_refresh_tokens=False,
        channel_expiry=False,
    )
    #: how calls are retried (tests may lower it)
    retry_policy: ClassVar[RetryPolicy] = RetryPolicy()

    def __init__(self, *, http: httpx.AsyncClient, settings: ProviderSettings) -> None:
        super().__init__(http=http, settings=settings)
        try:
            from . import _convert  # noqa: F401 - icalendar and recurring-ical-events
        except ImportError as exc:
            raise ConfigurationError(
                f"the caldav provider needs {exc.name}: install calbridge[caldav]"
            ) from None
        self.dav = DavClient(
            http=http,
            provider=self.name,
            default_server=settings.base_urls.get("api"),
            policy=self.retry_policy,
        )
        self.page_size = max(1, int(settings.option("page_size", 50)))
        self.free_busy_mode = str(settings.option("free_busy", "auto"))

    # -- credentials -------------------------------------------------------------------

    async def refresh_tokens(self, tokens: TokenSet) -> TokenSet:
        """An app password is not refreshed: ask the server whether it still works.

        calbridge calls this when the stored credentials are an hour old, and after a 401:
        a refusal raises :class:`~calbridge.errors.ReauthRequired` (the account then
        needs re-connecting); otherwise the same credentials are kept.
        """
        await self.principal_of(tokens)
        return tokens

    async def revoke_tokens(self, tokens: TokenSet) -> None:
        """Nothing to call: CalDAV has no revocation endpoint. calbridge forgets the app
        password (the account becomes ``revoked``); the user deletes it at the server."""

    async def unsubscribe(self, session: Session, channel: Channel) -> None:
        """Nothing to close: CalDAV opens no channels (``subscribe`` raises NotSupported).

        calbridge closes the records of its own polling (``poll:<account>``) through here
        when it retires a legacy account; they need no call to the server.
        """

    async def principal_of(self, tokens: TokenSet) -> str:
        """The principal URL of the credentials' user (``current-user-principal``)."""
        from calbridge import Account, StaticTokenSource

        session = Session(
            account=Account(app_user_id="", provider=self.name, provider_account_id=""),
            tokens=StaticTokenSource(tokens),
        )
        return await self._principal(session)

    async def _principal(self, session: Session) -> str:
        """``current-user-principal`` at the server URL, else at ``/.well-known/caldav``
        (RFC 6764), following one redirect of each."""
        body = xml_body("d:propfind", "<d:prop><d:current-user-principal/></d:prop>")
        for start in ("", "/.well-known/caldav"):
            href = start
            for _ in range(2):
                response = await self.dav.request(
                    session, "PROPFIND", href, body=body, depth="0",
                    what="current-user-principal", accept=_DISCOVERY_MISSES,
                )  # fmt: skip
                location = response.headers.get("location")
                if response.status_code in _REDIRECTS and location:
                    href = str(response.url.join(location))
                    continue
                break
            if response.status_code != 207:
                continue
            for item in multistatus(response.content, what="current-user-principal"):
                element = item.props.get(f"{{{DAV}}}current-user-principal")
                found = None if element is None else element.findtext(f"{{{DAV}}}href")
                if found:
                    return found.strip()
        raise ReauthRequired(
            "the server names no current-user-principal for these credentials",
            provider=self.name,
        )

    async def _home(self, session: Session) -> str:
        principal = await self._principal(session)
        body = xml_body("d:propfind", "<d:prop><c:calendar-home-set/></d:prop>")
        response = await self.dav.request(
            session, "PROPFIND", principal, body=body, depth="0", what="calendar-home-set"
        )
        for item in multistatus(response.content, what="calendar-home-set"):
            element = item.props.get(f"{{{CALDAV}}}calendar-home-set")
            found = None if element is None else element.findtext(f"{{{DAV}}}href")
            if found:
                return found.strip()
        raise ProviderResponseError("the principal has no calendar-home-set", provider=self.name)

    # -- reads -------------------------------------------------------------------------

    async def _calendar_responses(self, session: Session) -> list[DavResponse]:
        home = await self._home(session)
        response = await self.dav.request(
            session, "PROPFIND", home, body=xml_body("d:propfind", _CALENDAR_PROPS),
            depth="1", what="calendars",
        )  # fmt: skip
        return [r for r in multistatus(response.content, what="calendars") if _is_event_calendar(r)]

    async def list_calendars(self, session: Session) -> list[Calendar]:
        """The event calendars under the user's calendar-home-set (PROPFIND depth 1).

        ``read_only`` comes from ``current-user-privilege-set`` (no ``write`` /
        ``write-content`` / ``all``); the first calendar (by href) is the primary one.
        """
        out: list[Calendar] = []
        for item in sorted(await self._calendar_responses(session), key=lambda r: r.href):
            privileges = _privileges(item)
            writable = bool(privileges & {"write", "write-content", "all"}) or not privileges
            color = item.text(f"{{{ICAL}}}calendar-color")
            out.append(
                Calendar(
                    id=item.href,
                    provider=self.name,
                    name=item.text(f"{{{DAV}}}displayname") or item.href.rstrip("/").split("/")[-1],
                    primary=not out,
                    read_only=not writable,
                    time_zone=_calendar_zone(item.text(f"{{{CALDAV}}}calendar-timezone")),
                    raw={
                        "href": item.href,
                        "color": color,
                        "privileges": sorted(privileges),
                        "reports": sorted(_reports(item)),
                    },
                )
            )
        return out

    async def _hrefs_in(self, session: Session, calendar_id: str, window: TimeRange) -> list[str]:
        from ._convert import window_filter

        body = xml_body(
            "c:calendar-query",
            "<d:prop><d:getetag/></d:prop>" + window_filter(window.start, window.end),
        )
        response = await self.dav.request(
            session, "REPORT", calendar_id, body=body, depth="1", what="calendar-query"
        )
        return sorted(
            r.href
            for r in multistatus(response.content, what="calendar-query")
            if r.href.rstrip("/") != calendar_id.rstrip("/")
        )

    async def _multiget(
        self, session: Session, calendar_id: str, hrefs: Sequence[str]
    ) -> list[tuple[str, str | None, str | None]]:
        """(href, etag, calendar-data or None when gone) of each href."""
        inner = "<d:prop><d:getetag/><c:calendar-data/></d:prop>" + "".join(
            f"<d:href>{_xml_escape(quote(h))}</d:href>" for h in hrefs
        )
        response = await self.dav.request(
            session, "REPORT", calendar_id, body=xml_body("c:calendar-multiget", inner),
            depth="1", what="calendar-multiget",
        )  # fmt: skip
        out: list[tuple[str, str | None, str | None]] = []
        for item in multistatus(response.content, what="calendar-multiget"):
            data = item.props.get(f"{{{CALDAV}}}calendar-data")
            out.append(
                (item.href, item.text(f"{{{DAV}}}getetag"), None if data is None else data.text)
            )
        return out

    async def _resources(
        self, session: Session, calendar_id: str, hrefs: Sequence[str], page_size: int
    ) -> AsyncIterator[list[tuple[str, str | None, str | None]]]:
        for i in range(0, len(hrefs), page_size):
            yield await self._multiget(session, calendar_id, hrefs[i : i + page_size])

    async def list_events(
        self,
        session: Session,
        calendar_id: str,
        window: TimeRange,
        *,
        page_size: int | None = None,
    ) -> AsyncIterator[Sequence[Event]]:
        """Events overlapping ``window``: a calendar-query (time-range) names the
        resources, calendar-multiget fetches ``page_size`` of them per page, and series are
        expanded here into their occurrences (overrides, EXDATEs, time zones, all-day)."""
        from ._convert import parse_resource

        hrefs = await self._hrefs_in(session, calendar_id, window)
        size = max(1, page_size or self.page_size)
        async for batch in self._resources(session, calendar_id, hrefs, size):
            page: list[Event] = []
            for href, etag, text in batch:
                if text is not None:
                    page.extend(parse_resource(href, etag, text).expanded(calendar_id, window))
            yield page

    async def get_event(self, session: Session, calendar_id: str, event_id: str) -> Event:
        """One stored event (a single event, series master, or an override) by id."""
        from ._convert import split_event_id

        resource_id, suffix = split_event_id(event_id)
        resource = await self._get(session, calendar_id, resource_id)
        for event in resource.stored(calendar_id):
            if event.id == event_id:
                return event
        if suffix is not None:
            raise NotFound(f"occurrence {event_id!r} has no override", provider=self.name)
        raise NotFound(f"event {event_id!r} not found", provider=self.name, status=404)

    async def changes(
        self,
        session: Session,
        calendar_id: str,
        cursor: str | None,
        *,
        window: TimeRange | None = None,
        page_size: int | None = None,
    ) -> AsyncIterator[ChangePage]:
        """sync-collection (RFC 6578) from ``cursor`` (a full read when None).

        Changed resources are fetched by calendar-multiget, ``page_size`` per page; each
        gives its master or single event and its overrides; a removed resource is a
        deletion of its id. An invalid token (``DAV:valid-sync-token``) raises
        :class:`~calbridge.errors.SyncCursorExpired`; calbridge then reads in full.
        ``window`` filters single events client-side (series always pass): in an
        incremental round one that left the window is reported deleted.
        """
        from ._convert import parse_resource

        full = cursor is None
        token, known = split_cursor(cursor)
        if full:
            known = {}
        body = xml_body(
            "d:sync-collection",
            f"<d:sync-token>{_xml_escape(token)}</d:sync-token>"
            "<d:sync-level>1</d:sync-level><d:prop><d:getetag/></d:prop>",
        )
        response = await self.dav.request(
            session, "REPORT", calendar_id, body=body, depth="0", what="sync-collection",
        )  # fmt: skip
        fresh = sync_token_of(response.content, what="sync-collection")
        if not fresh:
            raise ProviderResponseError("sync-collection gave no sync-token", provider=self.name)
        changed: list[str] = []
        removed: list[Change] = []
        for item in multistatus(response.content, what="sync-collection"):
            if item.href.rstrip("/") == calendar_id.rstrip("/"):
                continue
            if item.status == 404:
                removed.extend(_gone(calendar_id, _name(item.href), known))
            else:
                changed.append(item.href)
        size = max(1, page_size or self.page_size)
        batches = [sorted(changed)[i : i + size] for i in range(0, len(changed), size)]
        if removed or not batches:
            last = not batches
            cursor_out = join_cursor(fresh, known) if last else None
            yield ChangePage(changes=tuple(removed), cursor=cursor_out, full=full)
        for n, hrefs in enumerate(batches):
            page: list[Change] = []
            for href, etag, text in await self._multiget(session, calendar_id, hrefs):
                name = _name(href)
                if text is None:
                    page.extend(_gone(calendar_id, name, known))
                    continue
                resource = parse_resource(href, etag, text)
                overrides = resource.override_starts()
                # overrides the resource no longer has: their occurrences are plain again
                for suffix in sorted(set(known.pop(name, ())) - overrides):
                    page.append(
                        Change(
                            kind=ChangeKind.DELETED,
                            calendar_id=calendar_id,
                            event_id=f"{name}_{suffix}",
                        )
                    )
                if overrides:
                    known[name] = sorted(overrides)
                for event in resource.stored(calendar_id):
                    change = _change(event, calendar_id, window, full)
                    if change is not None:
                        page.append(change)
            last = n == len(batches) - 1
            cursor_out = join_cursor(fresh, known) if last else None
            yield ChangePage(changes=tuple(page), cursor=cursor_out, full=full)

    # -- writes ------------------------------------------------------------------------

    def _href(self, calendar_id: str, resource: str) -> str:
        base = calendar_id if calendar_id.endswith("/") else calendar_id + "/"
        return base + quote(resource, safe="@._-")

    async def _get(self, session: Session, calendar_id: str, resource_id: str) -> Resource:
        from ._convert import parse_resource

        href = self._href(calendar_id, resource_id)
        response = await self.dav.request(session, "GET", href, what="GET event")
        etag = response.headers.get("etag")
        return parse_resource(href, etag, response.text)

    async def _put(
        self,
        session: Session,
        calendar_id: str,
        resource_id: str,
        text: bytes,
        *,
        if_match: str | None = None,
        if_none_match: bool = False,
        what: str,
    ) -> httpx.Response:
        headers: dict[str, str] = {}
        if if_match:
            headers["If-Match"] = if_match
        if if_none_match:
            headers["If-None-Match"] = "*"
        return await self.dav.request(
            session, "PUT", self._href(calendar_id, resource_id), body=text, headers=headers,
            what=what, content_type="text/calendar; charset=utf-8",
            accept=frozenset({412}) if if_none_match else frozenset(),
        )  # fmt: skip

    async def create_event(
        self, session: Session, calendar_id: str, draft: EventDraft, *, idempotency_key: str
    ) -> Event:
        """PUT ``If-None-Match: *`` of a resource named after ``idempotency_key`` (UID too):
        a 412 means the key already made it, and that event is returned."""
        from ._convert import resource_from_draft

        uid, name = resource_name(idempotency_key)
        body = resource_from_draft(draft, uid=uid).to_ical()
        await self._put(session, calendar_id, name, body, if_none_match=True, what="PUT create")
        return await self.get_event(session, calendar_id, name)

    async def update_event(
        self,
        session: Session,
        calendar_id: str,
        event_id: str,
        draft: EventDraft,
        *,
        etag: str | None = None,
    ) -> Event:
        """Replace an event, a series (its overrides kept) or one occurrence (an override,
        RECURRENCE-ID), with ``If-Match``: the caller's ``etag`` when given (a stale one
        raises :class:`~calbridge.errors.Conflict`), else the one just read."""
        from ._convert import put_occurrence, resource_from_draft, split_event_id

        resource_id, suffix = split_event_id(event_id)
        current = await self._get(session, calendar_id, resource_id)
        if suffix is None:
            master = current.master()
            uid = str(master["UID"]) if master is not None and "UID" in master else resource_id
            calendar = resource_from_draft(draft, uid=uid, existing=current)
        else:
            calendar = put_occurrence(current, suffix, draft)
        await self._put(
            session, calendar_id, resource_id, calendar.to_ical(),
            if_match=etag or current.etag, what="PUT update",
        )  # fmt: skip
        return await self.get_event(session, calendar_id, event_id)

    async def delete_event(self, session: Session, calendar_id: str, event_id: str) -> None:
        """DELETE the resource; an occurrence id cancels that occurrence (EXDATE). Deleting
        what is already gone succeeds."""
        from ._convert import cancel_occurrence, split_event_id

        resource_id, suffix = split_event_id(event_id)
        if suffix is None:
            await self.dav.request(
                session, "DELETE", self._href(calendar_id, resource_id), what="DELETE event",
                accept=frozenset({404, 410}),
            )  # fmt: skip
            return
        try:
            current = await self._get(session, calendar_id, resource_id)
        except NotFound:
            return
        calendar = cancel_occurrence(current, suffix)
        await self._put(
            session, calendar_id, resource_id, calendar.to_ical(), if_match=current.etag,
            what="PUT cancel occurrence",
        )  # fmt: skip

    # -- free/busy ---------------------------------------------------------------------

    async def free_busy(
        self, session: Session, calendar_ids: Sequence[str], window: TimeRange
    ) -> list[FreeBusy]:
        """free-busy-query (RFC 4791 7.10) where the server offers it, else the opaque,
        not cancelled events (series expanded) of each calendar."""
        out: list[FreeBusy] = []
        for calendar_id in calendar_ids:
            blocks = None
            if self.free_busy_mode != "events":
                blocks = await self._free_busy_query(session, calendar_id, window)
            if blocks is None:
                blocks = await self._free_busy_from_events(session, calendar_id, window)
            out.extend(blocks)
        return out

    async def _free_busy_query(
        self, session: Session, calendar_id: str, window: TimeRange
    ) -> list[FreeBusy] | None:
        from ._convert import free_busy_periods

        fmt = "%Y%m%dT%H%M%SZ"
        body = xml_body(
            "c:free-busy-query",
            f'<c:time-range start="{window.start.astimezone(dt.UTC).strftime(fmt)}" '
            f'end="{window.end.astimezone(dt.UTC).strftime(fmt)}"/>',
        )
        response = await self.dav.request(
            session, "REPORT", calendar_id, body=body, depth="1", what="free-busy-query",
            accept=frozenset({400, 403, 405, 415, 501}),
        )  # fmt: skip
        if response.status_code != 200 or "calendar" not in response.headers.get(
            "content-type", ""
        ):
            return None
        return [
            FreeBusy(
                calendar_id=calendar_id,
                start=start,
                end=end,
                status=_FB.get(kind, FreeBusyStatus.BUSY),
            )
            for start, end, kind in free_busy_periods(response.text)
            if kind != "FREE"
        ]

    async def _free_busy_from_events(
        self, session: Session, calendar_id: str, window: TimeRange
    ) -> list[FreeBusy]:
        out: list[FreeBusy] = []
        async for page in self.list_events(session, calendar_id, window):
            for event in page:
                if event.transparency is Transparency.TRANSPARENT:
                    continue
                if event.status is EventStatus.CANCELLED:
                    continue
                status = (
                    FreeBusyStatus.TENTATIVE
                    if event.status is EventStatus.TENTATIVE
                    else FreeBusyStatus.BUSY
                )
                out.append(
                    FreeBusy(
                        calendar_id=calendar_id,
                        start=max(event.start.as_utc(), window.start),
                        end=min(event.end.as_utc(), window.end),
                        status=status,
                    )
                )
        return sorted(out, key=lambda b: (b.start, b.end))


def split_cursor(cursor: str | None) -> tuple[str, dict[str, list[str]]]:
    """(sync token, resource -> original starts of its overrides) of a cursor.

    The cursor is the server's sync token, followed (after a newline) by the overrides
    of each series seen: a resource the server reports removed then takes the overrides
    calbridge cached with it (sync-collection names only the resource).
    """
    if not cursor:
        return "", {}
    token, _, tail = cursor.partition("\n")
    if not tail:
        return token, {}
    try:
        data = json.loads(tail)
    except ValueError:
        return token, {}
    if not isinstance(data, dict):
        return token, {}
    return token, {str(k): [str(x) for x in v] for k, v in data.items() if isinstance(v, list)}


def join_cursor(token: str, overrides: dict[str, list[str]]) -> str:
    """The cursor of :func:`split_cursor`."""
    if not overrides:
        return token
    return token + "\n" + json.dumps(overrides, sort_keys=True, separators=(",", ":"))


def _gone(calendar_id: str, name: str, known: dict[str, list[str]]) -> list[Change]:
    """A removed resource: its event and the overrides it had."""
    ids = [name, *(f"{name}_{suffix}" for suffix in known.pop(name, ()))]
    return [Change(kind=ChangeKind.DELETED, calendar_id=calendar_id, event_id=i) for i in ids]


def _name(href: str) -> str:
    from urllib.parse import unquote

    return unquote(href.rstrip("/").rsplit("/", 1)[-1])


def _xml_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _calendar_zone(text: str | None) -> str | None:
    if not text:
        return None
    for line in text.splitlines():
        if line.upper().startswith("TZID:"):
            return line.split(":", 1)[1].strip() or None
    return None


def _change(event: Event, calendar_id: str, window: TimeRange | None, full: bool) -> Change | None:
    if window is not None and not event.recurrence and event.recurring_event_id is None:
        start, end = event.start.as_utc(), event.end.as_utc()
        if not window.overlaps(start, max(end, start + _EPS)):
            if full:
                return None
            return Change(kind=ChangeKind.DELETED, calendar_id=calendar_id, event_id=event.id)
    return Change(kind=ChangeKind.UPSERTED, calendar_id=calendar_id, event_id=event.id, event=event)
