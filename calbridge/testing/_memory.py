"""An in-memory reference provider: the contract's executable specification.

:class:`MemoryBackend` holds calendars like a remote service would (ids, etags, a change
sequence with tombstones); :class:`MemoryProvider` talks to it without HTTP. It passes
:class:`calbridge.testing.ProviderContract`, and it is the model a new plugin can copy.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import itertools
import json
import secrets
from collections.abc import AsyncIterator, Sequence
from typing import ClassVar

import attrs

from .. import errors
from ..models import (
    Calendar,
    Change,
    ChangeKind,
    ChangePage,
    Channel,
    Event,
    EventDraft,
    EventStatus,
    FreeBusy,
    TimeRange,
    TokenSet,
    Transparency,
)
from ..provider import (
    AuthorizationRequest,
    Capabilities,
    ChannelLookup,
    ChannelRequest,
    Notification,
    NotificationKind,
    Provider,
    Session,
    TokenGrant,
    WebhookRequest,
)

__all__ = ["MemoryBackend", "MemoryProvider", "sign_memory_notification"]

SIGNATURE_HEADER = "x-memory-signature"
CHANNEL_HEADER = "x-memory-channel"


@attrs.define
class _Stored:
    event: Event
    seq: int
    deleted: bool = False


@attrs.define
class MemoryBackend:
    """The 'remote service' behind :class:`MemoryProvider`."""

    calendars: dict[str, Calendar] = attrs.field(factory=dict)
    events: dict[str, dict[str, _Stored]] = attrs.field(factory=dict)
    keys: dict[tuple[str, str], str] = attrs.field(factory=dict)
    channels: dict[str, Channel] = attrs.field(factory=dict)
    tokens: dict[str, str] = attrs.field(factory=dict)  # access token -> account
    seq: itertools.count[int] = attrs.field(factory=lambda: itertools.count(1))
    token_calls: int = 0

    def add_calendar(self, cal_id: str, name: str, *, primary: bool = False) -> Calendar:
        """Create a calendar."""
        cal = Calendar(id=cal_id, provider="memory", name=name, primary=primary)
        self.calendars[cal_id] = cal
        self.events.setdefault(cal_id, {})
        return cal

    def put(self, event: Event) -> Event:
        """Store an event (new version, new etag, new sequence number)."""
        seq = next(self.seq)
        stored = attrs.evolve(event, etag=f'"{seq}"', updated=dt.datetime.now(dt.UTC))
        self.events.setdefault(event.calendar_id, {})[event.id] = _Stored(stored, seq)
        return stored

    def remove(self, cal_id: str, event_id: str) -> bool:
        """Tombstone an event; False when it was not there."""
        found = self.events.get(cal_id, {}).get(event_id)
        if found is None or found.deleted:
            return False
        found.deleted = True
        found.seq = next(self.seq)
        return True

    def live(self, cal_id: str) -> list[_Stored]:
        """Live events of a calendar, in id order."""
        return sorted(
            (s for s in self.events.get(cal_id, {}).values() if not s.deleted),
            key=lambda s: s.event.id,
        )


def sign_memory_notification(secret: str, body: bytes) -> str:
    """The signature header value the memory service sends."""
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def _cal(backend: MemoryBackend, cal_id: str) -> None:
    if cal_id not in backend.calendars:
        raise errors.NotFound(f"calendar {cal_id!r} not found", provider="memory", status=404)


class MemoryProvider(Provider):
    """A provider backed by a :class:`MemoryBackend` (set ``settings.options["backend"]``)."""

    name: ClassVar[str] = "memory"
    capabilities: ClassVar[Capabilities] = Capabilities(
        push=True,
        incremental_sync=True,
        free_busy=True,
        write=True,
        idempotent_create=True,
        server_side_expansion=False,
        pkce=True,
    )

    @property
    def backend(self) -> MemoryBackend:
        """The backing store."""
        backend = self.settings.option("backend")
        assert isinstance(backend, MemoryBackend), "settings.options['backend'] is required"
        return backend

    async def _check(self, session: Session) -> None:
        tokens = await session.access_token()
        if tokens.access_token.reveal() not in self.backend.tokens:
            fresh = await session.refresh(tokens)
            if fresh.access_token.reveal() not in self.backend.tokens:
                raise errors.ReauthRequired("token refused", provider=self.name, status=401)

    # -- OAuth

    def authorization_url(self, request: AuthorizationRequest) -> str:
        """A fake consent URL carrying state and challenge."""
        return (
            f"memory://authorize?state={request.state}&redirect_uri={request.redirect_uri}"
            f"&code_challenge={request.code_challenge or ''}"
        )

    async def exchange_code(
        self, *, code: str, redirect_uri: str, code_verifier: str | None = None
    ) -> TokenGrant:
        """Any code ``user:<id>`` yields tokens for that user."""
        self.backend.token_calls += 1
        if not code.startswith("user:"):
            raise errors.ReauthRequired("invalid_grant", provider=self.name, status=400)
        access = secrets.token_urlsafe(16)
        self.backend.tokens[access] = code[5:]
        return TokenGrant(
            tokens=TokenSet(
                access_token=access,
                refresh_token=secrets.token_urlsafe(16),
                expires_at=int(dt.datetime.now(dt.UTC).timestamp()) + 3600,
            ),
            provider_account_id=code[5:],
        )

    async def refresh_tokens(self, tokens: TokenSet) -> TokenSet:
        """Issue a new access token, keeping the refresh token."""
        self.backend.token_calls += 1
        account = self.backend.tokens.pop(tokens.access_token.reveal(), "someone")
        access = secrets.token_urlsafe(16)
        self.backend.tokens[access] = account
        return attrs.evolve(tokens, access_token=access)

    async def revoke_tokens(self, tokens: TokenSet) -> None:
        """Forget the access token."""
        self.backend.tokens.pop(tokens.access_token.reveal(), None)

    # -- reads

    async def list_calendars(self, session: Session) -> list[Calendar]:
        """All calendars."""
        await self._check(session)
        return list(self.backend.calendars.values())

    async def list_events(
        self,
        session: Session,
        calendar_id: str,
        window: TimeRange,
        *,
        page_size: int | None = None,
    ) -> AsyncIterator[Sequence[Event]]:
        """Events overlapping the window, ``page_size`` at a time."""
        await self._check(session)
        _cal(self.backend, calendar_id)
        size = page_size or 100
        hits = [
            s.event
            for s in self.backend.live(calendar_id)
            if window.overlaps(s.event.start.as_utc(), s.event.end.as_utc())
        ]
        for i in range(0, len(hits), size):
            yield hits[i : i + size]

    async def changes(
        self,
        session: Session,
        calendar_id: str,
        cursor: str | None,
        *,
        window: TimeRange | None = None,
        page_size: int | None = None,
    ) -> AsyncIterator[ChangePage]:
        """Changes after sequence number ``cursor``; tombstones become deletions."""
        await self._check(session)
        _cal(self.backend, calendar_id)
        if cursor is not None and (not cursor.isdigit()):
            raise errors.SyncCursorExpired("unknown cursor", provider=self.name, status=410)
        since = int(cursor or 0)
        top = max((s.seq for s in self.backend.events[calendar_id].values()), default=since)
        stored = sorted(
            (s for s in self.backend.events[calendar_id].values() if s.seq > since),
            key=lambda s: s.seq,
        )
        if cursor is None:
            stored = [s for s in stored if not s.deleted]
        out = [
            Change(kind=ChangeKind.DELETED, calendar_id=calendar_id, event_id=s.event.id)
            if s.deleted
            else Change(
                kind=ChangeKind.UPSERTED,
                calendar_id=calendar_id,
                event_id=s.event.id,
                event=s.event,
            )
            for s in stored
        ]
        size = page_size or 100
        chunks = [out[i : i + size] for i in range(0, len(out), size)] or [[]]
        for n, chunk in enumerate(chunks):
            last = n == len(chunks) - 1
            yield ChangePage(
                changes=tuple(chunk),
                cursor=str(max(top, since)) if last else None,
                full=cursor is None,
            )

    # -- writes

    def _event(self, cal_id: str, event_id: str, draft: EventDraft) -> Event:
        return Event(
            id=event_id,
            calendar_id=cal_id,
            provider=self.name,
            start=draft.start,
            end=draft.end,
            summary=draft.summary,
            description=draft.description,
            location=draft.location,
            status=draft.status,
            transparency=draft.transparency,
            visibility=draft.visibility,
            attendees=draft.attendees,
            recurrence=draft.recurrence,
            properties=draft.properties,
            ical_uid=f"{event_id}@memory",
        )

    async def create_event(
        self, session: Session, calendar_id: str, draft: EventDraft, *, idempotency_key: str
    ) -> Event:
        """Create once per idempotency key."""
        await self._check(session)
        _cal(self.backend, calendar_id)
        existing = self.backend.keys.get((calendar_id, idempotency_key))
        if existing is not None:
            found = self.backend.events[calendar_id][existing]
            if not found.deleted:
                return found.event
        event_id = "m" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:20]
        self.backend.keys[(calendar_id, idempotency_key)] = event_id
        return self.backend.put(self._event(calendar_id, event_id, draft))

    async def update_event(
        self,
        session: Session,
        calendar_id: str,
        event_id: str,
        draft: EventDraft,
        *,
        etag: str | None = None,
    ) -> Event:
        """Replace the event; a stale etag is a Conflict."""
        await self._check(session)
        _cal(self.backend, calendar_id)
        found = self.backend.events[calendar_id].get(event_id)
        if found is None or found.deleted:
            raise errors.NotFound(f"event {event_id!r} not found", provider=self.name, status=404)
        if etag is not None and etag != found.event.etag:
            raise errors.Conflict("etag mismatch", provider=self.name, status=412)
        return self.backend.put(self._event(calendar_id, event_id, draft))

    async def delete_event(self, session: Session, calendar_id: str, event_id: str) -> None:
        """Tombstone the event; deleting twice succeeds."""
        await self._check(session)
        _cal(self.backend, calendar_id)
        self.backend.remove(calendar_id, event_id)

    async def free_busy(
        self, session: Session, calendar_ids: Sequence[str], window: TimeRange
    ) -> list[FreeBusy]:
        """Opaque, non-cancelled events as busy blocks."""
        await self._check(session)
        out: list[FreeBusy] = []
        for cal_id in calendar_ids:
            _cal(self.backend, cal_id)
            for s in self.backend.live(cal_id):
                ev = s.event
                start, end = ev.start.as_utc(), ev.end.as_utc()
                if (
                    ev.transparency is Transparency.OPAQUE
                    and ev.status is not EventStatus.CANCELLED
                    and window.overlaps(start, end)
                ):
                    out.append(FreeBusy(calendar_id=cal_id, start=start, end=end))
        return out

    # -- push

    async def subscribe(self, session: Session, request: ChannelRequest) -> Channel:
        """Open a channel signed with a fresh secret."""
        await self._check(session)
        channel = Channel(
            provider=self.name,
            id="chn_" + secrets.token_hex(8),
            callback_url=request.callback_url,
            calendar_ids=request.calendar_ids,
            secret=request.secret or secrets.token_urlsafe(24),
            account_id=session.account.provider_account_id,
            expires_at=int(dt.datetime.now(dt.UTC).timestamp()) + (request.ttl_seconds or 86400),
        )
        self.backend.channels[channel.id] = channel
        return channel

    async def renew(self, session: Session, channel: Channel) -> Channel:
        """Extend the channel by a day."""
        await self._check(session)
        if channel.id not in self.backend.channels:
            raise errors.NotFound("channel closed", provider=self.name, status=404)
        renewed = attrs.evolve(channel, expires_at=(channel.expires_at or 0) + 86400)
        self.backend.channels[channel.id] = renewed
        return renewed

    async def unsubscribe(self, session: Session, channel: Channel) -> None:
        """Close the channel."""
        await self._check(session)
        self.backend.channels.pop(channel.id, None)

    def notification_for(self, channel: Channel, seq: int) -> WebhookRequest:
        """What the memory service POSTs for a change (used by tests)."""
        body = json.dumps(
            {"channel": channel.id, "seq": seq, "calendars": list(channel.calendar_ids)}
        ).encode()
        assert channel.secret is not None
        return WebhookRequest.build(
            headers={
                CHANNEL_HEADER: channel.id,
                SIGNATURE_HEADER: sign_memory_notification(channel.secret.reveal(), body),
            },
            body=body,
        )

    async def verify_notification(
        self, request: WebhookRequest, channels: ChannelLookup
    ) -> list[Notification]:
        """HMAC of the raw body with the channel secret, channel must be known."""
        channel_id = request.headers.get(CHANNEL_HEADER, "")
        channel = await channels(channel_id) if channel_id else None
        if channel is None or channel.secret is None:
            raise errors.NotificationRejected("unknown channel", provider=self.name, status=404)
        expected = sign_memory_notification(channel.secret.reveal(), request.body)
        given = request.headers.get(SIGNATURE_HEADER, "")
        if not hmac.compare_digest(expected.encode(), given.encode()):
            raise errors.NotificationRejected("bad signature", provider=self.name)
        try:
            payload = json.loads(request.body)
        except ValueError:
            raise errors.NotificationRejected(
                "malformed body", provider=self.name, status=400
            ) from None
        if payload.get("channel") != channel.id:
            raise errors.NotificationRejected("channel mismatch", provider=self.name)
        return [
            Notification(
                provider=self.name,
                kind=NotificationKind.CHANGE,
                delivery_key=f"{channel.id}:{payload.get('seq')}",
                channel_id=channel.id,
                account_id=channel.account_id,
                calendar_ids=channel.calendar_ids,
                raw=payload,
            )
        ]
