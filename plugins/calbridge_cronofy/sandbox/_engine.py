"""What the Cronofy sandbox does behind its HTTP surface.

It keeps its own cache of each account's native calendars, fed by the native provider's
push (a short delay after a native write) and by polling every 5 minutes; it treats the
native calendars as the truth; it applies integrator writes asynchronously (after the 202)
by writing the native calendar; and it notifies channels of changes it discovers, never
of the app's own writes.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import secrets
import threading
from typing import Any, Literal

from calbridge import EventStatus
from calbridge.sandbox import (
    Consent,
    DeliveryAttempt,
    DeliveryPolicy,
    Grant,
    GrantServer,
    NativeChange,
    NativeEvent,
    PkceChallenge,
    TokenShapes,
    World,
)

from ._state import (
    DEFAULT_SCOPE,
    Account,
    CachedEvent,
    Channel,
    CronofyCalendar,
    ManagedLink,
    PendingWrite,
    SandboxSettings,
    is_service_account,
    new_id,
    new_token,
)
from ._wire import event_uid_for

__all__ = ["PROVIDER", "CronofyEngine", "engine_for"]

PROVIDER = "cronofy"
_ORIGIN = "cronofy:"


def _code() -> str:
    return secrets.token_hex(16)


def _shown(event: NativeEvent) -> bool:
    """Whether Cronofy shows the event: live, and not a cancelled occurrence of a series."""
    return not event.deleted and not (event.is_exception and event.status is EventStatus.CANCELLED)


def engine_for(world: World) -> CronofyEngine:
    """The world's one Cronofy engine (created on first use; every app shares it)."""
    engine = world.views.get(PROVIDER)
    if engine is None:
        engine = world.views.setdefault(PROVIDER, CronofyEngine(world))
    assert isinstance(engine, CronofyEngine)
    return engine


class CronofyEngine:
    """The Cronofy sandbox's state and behaviour (one per world)."""

    def __init__(self, world: World, settings: SandboxSettings | None = None) -> None:
        self.world = world
        self.settings = settings or SandboxSettings()
        self.lock = threading.RLock()
        self.accounts: dict[str, Account] = {}  # sub -> account
        self.by_email: dict[str, str] = {}  # email -> sub
        #: codes, grants and tokens (Cronofy's refresh tokens live as long as their grant;
        #: the code grant's ``redirect_uri`` is compared only when sent)
        self.oauth = GrantServer(
            world.clock.timestamp,
            tokens=TokenShapes(code=_code, access=new_token, refresh=new_token),
            redirect_uri_required=False,
        )
        self.calendars: dict[str, CronofyCalendar] = {}  # cronofy id -> calendar
        self.by_native: dict[str, CronofyCalendar] = {}  # native calendar id -> calendar
        self.cache: dict[str, dict[str, CachedEvent]] = {}  # native cal -> native id -> cached
        self.cursor: dict[str, int] = {}  # native cal -> world sequence seen
        self.links: dict[tuple[str, str, str], ManagedLink] = {}  # (client, cal, event_id)
        self.managed: dict[tuple[str, str], ManagedLink] = {}  # (native cal, native id)
        self.channels: dict[str, Channel] = {}
        self._sync_pending: set[str] = set()
        from ._enterprise import EnterpriseConnect

        self.enterprise = EnterpriseConnect(self)
        world.subscribe(self._on_native_change)
        for action, handler in (
            ("expire_tokens", self.expire_tokens),
            ("revoke_tokens", self.revoke_tokens),
            ("disconnect_profile", self.disconnect_profile),
            ("reconnect_profile", self.reconnect_profile),
        ):
            world.faults.on(PROVIDER, action, handler)

    # -- accounts and OAuth ----------------------------------------------------------

    def account_for(
        self, email: str, native: Literal["google", "microsoft"] | None = None
    ) -> Account:
        """The Cronofy account of ``email``, created (with its world user) on first sight."""
        key = email.lower()
        with self.lock:
            sub = self.by_email.get(key)
            if sub is not None:
                return self.accounts[sub]
            user = self.world.add_user(key, native=native or self.settings.default_native)
            google = user.native == "google"
            account = Account(
                sub=new_id("acc_"),
                email=user.email,
                name=user.name or user.email,
                profile_id=new_id("pro_", 6),
                provider_name="google" if google else "exchange",
                provider_service="gsuite" if google else "office365",
                time_zone=user.time_zone,
            )
            self.accounts[account.sub] = account
            self.by_email[key] = account.sub
        delay = self.settings.initial_sync_delay
        if delay <= 0:
            self._initial_sync(account, notify=False)
        else:
            self.world.clock.call_later(
                delay, lambda: self._initial_sync(account, notify=True), name="initial sync"
            )
        return account

    def _initial_sync(self, account: Account, *, notify: bool) -> None:
        """First sync of a new account (silent); then polling starts."""
        self.sync_account(account, notify=False)
        account.initial_sync_done = True
        if notify:
            self.notify(account.sub, "profile_initial_sync_completed")
        self._schedule_poll(account)

    def issue_code(
        self,
        client_id: str,
        redirect_uri: str,
        sub: str,
        scope: str,
        *,
        kind: str = "user",
        challenge: PkceChallenge | None = None,
    ) -> str:
        """A single-use authorization code for account (or service account) ``sub``,
        valid 10 minutes (``scope``: the default scopes when empty)."""
        return self.oauth.issue_code(
            Consent(client_id=client_id, subject=sub, scope=scope or DEFAULT_SCOPE, kind=kind),
            redirect_uri,
            challenge,
        )

    def mint_access(self, grant: Grant) -> str:
        """A new access token of ``grant`` (a service account's lives shorter)."""
        return self.oauth.mint_access(grant, self.token_ttl(grant))

    def token_ttl(self, grant: Grant) -> int:
        """``expires_in`` for the grant's access tokens."""
        if is_service_account(grant):
            return self.settings.service_account_token_ttl
        return self.settings.access_token_ttl

    def authenticate(self, token: str) -> Grant | None:
        """The live grant of an access token (None if unknown, expired or revoked)."""
        return self.oauth.authenticate(token)

    def revoke(self, client_id: str, *, token: str | None = None, sub: str | None = None) -> None:
        """Revoke the authorization a token belongs to (or every one of ``sub``)."""
        if token:
            grant = self.oauth.revoke(token, client_id=client_id)
            revoked = [] if grant is None else [grant]
        elif sub:
            revoked = self.oauth.revoke_subject(sub, client_id=client_id)
        else:
            revoked = []
        self._close_channels(revoked)

    def _close_channels(self, grants: list[Grant]) -> None:
        """A revoked authorization's channels close."""
        with self.lock:
            for grant in grants:
                for channel in self.channels.values():
                    if channel.sub == grant.subject and channel.client_id == grant.client_id:
                        channel.closed = True

    def expire_tokens(self, email: str) -> None:
        """Fault: every access token of ``email`` expires now (refresh still works)."""
        sub = self.by_email.get(email.lower())
        if sub is not None:
            self.oauth.expire_access(sub)

    def revoke_tokens(self, email: str) -> None:
        """Fault: the user revoked every application (refresh answers invalid_grant)."""
        sub = self.by_email.get(email.lower())
        if sub is not None:
            self._close_channels(self.oauth.revoke_subject(sub))

    def disconnect_profile(self, email: str) -> None:
        """Fault: Cronofy lost access to the native calendar (``profile_disconnected``)."""
        account = self.accounts[self.by_email[email.lower()]]
        account.profile_connected = False
        self.notify(account.sub, "profile_disconnected")

    def reconnect_profile(self, email: str) -> None:
        """Undo :meth:`disconnect_profile` and sync."""
        account = self.accounts[self.by_email[email.lower()]]
        account.profile_connected = True
        self.sync_account(account)

    # -- calendars and the cache -----------------------------------------------------

    def account_calendars(self, account: Account) -> list[CronofyCalendar]:
        """Cronofy calendars of an account (new native calendars get ids on first sight)."""
        out = []
        with self.lock:
            for native in self.world.calendars(account.email):
                cal = self.by_native.get(native.id)
                if cal is None:
                    suffix = secrets.token_hex(6)
                    cal = CronofyCalendar(
                        calendar_id=f"cal_{account.profile_id[4:]}_{suffix}",
                        native_id=native.id,
                        sub=account.sub,
                    )
                    self.calendars[cal.calendar_id] = cal
                    self.by_native[native.id] = cal
                out.append(cal)
        return out

    def window(self) -> tuple[dt.datetime, dt.datetime]:
        """The sync window around now."""
        now = self.world.clock.now()
        return (
            now - dt.timedelta(days=self.settings.window_past_days),
            now + dt.timedelta(days=self.settings.window_future_days),
        )

    def _in_window(self, event: NativeEvent, lo: dt.datetime, hi: dt.datetime) -> bool:
        if event.recurrence:
            return event.start.as_utc() < hi  # a series reaching into the window
        return event.start.as_utc() < hi and event.end.as_utc() > lo

    def sync_account(self, account: Account, *, notify: bool = True) -> None:
        """Bring the cache of every calendar of ``account`` up to date."""
        if not account.profile_connected:
            return
        for cal in self.account_calendars(account):
            self.sync_calendar(cal.native_id, notify=notify)

    def sync_calendar(self, native_id: str, *, notify: bool = True) -> None:
        """Compare the native calendar with the cache; notify channels of what changed.

        Events entering the sync window only because time passed are cached silently.
        """
        cal = self.by_native.get(native_id)
        if cal is None:
            return
        now = self.world.clock.now()
        lo, hi = self.window()
        changed: list[tuple[CachedEvent, str]] = []
        with self.lock:
            self._sync_pending.discard(native_id)
            seen = self.cursor.get(native_id, 0)
            cached_events = self.cache.setdefault(native_id, {})
            for event in self.world.events(native_id, include_deleted=True):
                cached = cached_events.get(event.id)
                if cached is not None and cached.native.version == event.version:
                    continue
                managed = (native_id, event.recurring_event_id or event.id) in self.managed
                if event.deleted:
                    if cached is not None and not cached.deleted:
                        cached.deleted = True
                        cached.last_modified = now
                        changed.append((cached, event.origin))
                    if cached is not None:
                        cached.native = event
                    continue
                if cached is None:
                    if not (managed or self._in_window(event, lo, hi)):
                        continue
                    cached = CachedEvent(
                        event_uid=event_uid_for(native_id, event.id),
                        native=event,
                        last_modified=now,
                        last_shown=event if _shown(event) else None,
                    )
                    cached_events[event.id] = cached
                    if event.sequence > seen:
                        changed.append((cached, event.origin))
                    continue
                cached.native = event
                cached.deleted = False
                cached.last_modified = now
                if _shown(event):
                    cached.last_shown = event
                changed.append((cached, event.origin))
            self.cursor[native_id] = self.world.sequence(native_id)
        if notify and changed:
            self._notify_changes(cal, changed, now)

    def _on_native_change(self, change: NativeChange) -> None:
        cal = self.by_native.get(change.calendar_id)
        if cal is None:
            return
        if change.origin.startswith(_ORIGIN):
            return  # Cronofy's own write: apply_write refreshes the cache right after it
        with self.lock:
            if not self.settings.native_push or change.calendar_id in self._sync_pending:
                return
            self._sync_pending.add(change.calendar_id)
        account = self.accounts[cal.sub]

        def pushed() -> None:
            if account.profile_connected:
                self.sync_calendar(change.calendar_id)
            else:
                self._sync_pending.discard(change.calendar_id)

        self.world.clock.call_later(self.settings.native_push_delay, pushed, name="native push")

    def _schedule_poll(self, account: Account) -> None:
        def poll() -> None:
            self.sync_account(account)
            self._schedule_poll(account)

        self.world.clock.call_later(self.settings.poll_interval, poll, name="cronofy poll")

    # -- integrator writes -------------------------------------------------------------

    def accept(self, write: PendingWrite) -> None:
        """Queue a write accepted with 202; it reaches the native calendar after a delay."""
        self.world.clock.call_later(
            self.settings.write_delay, lambda: self._apply(write), name="cronofy write"
        )

    def _apply(self, write: PendingWrite) -> None:
        from ._writes import apply_write

        apply_write(self, write, _ORIGIN + write.client_id)

    def find_by_uid(self, sub: str, calendar_id: str, event_uid: str) -> CachedEvent | None:
        """A cached live event of the calendar by ``event_uid``."""
        cal = self.calendars.get(calendar_id)
        if cal is None or cal.sub != sub:
            return None
        for cached in self.cache.get(cal.native_id, {}).values():
            if cached.event_uid == event_uid and not cached.deleted:
                return cached
        return None

    # -- channels and notifications ----------------------------------------------------

    def _notify_changes(
        self, cal: CronofyCalendar, changed: list[tuple[CachedEvent, str]], now: dt.datetime
    ) -> None:
        for channel in list(self.channels.values()):
            if channel.closed or channel.sub != cal.sub:
                continue
            if channel.calendar_ids and cal.calendar_id not in channel.calendar_ids:
                continue
            relevant = False
            for cached, origin in changed:
                if origin == _ORIGIN + channel.client_id:
                    continue  # never notify an app of its own writes
                if channel.only_managed:
                    # the app's own managed events: a single event, or any part of a series
                    native = cached.native
                    link = self.managed.get((cal.native_id, native.recurring_event_id or native.id))
                    if link is None or link.client_id != channel.client_id:
                        continue
                relevant = True
            if relevant:
                self.send(channel, "change", changes_since=now)

    def notify(self, sub: str, kind: str) -> None:
        """Send a notification of ``kind`` to every open channel of the account."""
        for channel in list(self.channels.values()):
            if channel.sub == sub and not channel.closed:
                self.send(channel, kind)

    def sign(self, client_id: str, body: bytes) -> str:
        """``Cronofy-HMAC-SHA256``: base64 HMAC-SHA256 of the raw body with each active
        client secret, comma-separated during a rotation."""
        return ",".join(
            base64.b64encode(
                hmac.new(secret.reveal().encode(), body, hashlib.sha256).digest()
            ).decode()
            for secret in self.world.application_secrets(client_id)
        )

    def send(self, channel: Channel, kind: str, changes_since: dt.datetime | None = None) -> None:
        """POST one signed notification to the channel's callback URL."""
        from ._wire import iso_z

        notification: dict[str, Any] = {"type": kind}
        if changes_since is not None:
            notification["changes_since"] = iso_z(changes_since)
        body = json.dumps(
            {"notification": notification, "channel": channel.json()}, separators=(",", ":")
        ).encode()
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "Cronofy-HMAC-SHA256": self.sign(channel.client_id, body),
            "User-Agent": "Cronofy sandbox (calbridge)",
        }

        def on_result(attempt: DeliveryAttempt) -> None:
            self._delivery_result(channel, attempt)

        self.world.delivery.deliver(
            PROVIDER,
            channel.callback_url,
            body,
            headers,
            policy=DeliveryPolicy(give_up_after=self.settings.channel_failure_window),
            on_result=on_result,
            keep_trying=lambda: not channel.closed,
        )

    def _delivery_result(self, channel: Channel, attempt: DeliveryAttempt) -> None:
        """Close the channel once none of its notifications has succeeded for
        ``channel_failure_window`` seconds.

        The window runs from the first failure after the channel's latest success, whichever
        notification failed: one notification giving up after its own 24 hours of retries
        closes nothing while others got through meanwhile.
        """
        with self.lock:
            if attempt.ok:
                channel.failing_since = None
                return
            if channel.failing_since is None:
                channel.failing_since = attempt.at
            failing_for = (attempt.at - channel.failing_since).total_seconds()
            if failing_for >= self.settings.channel_failure_window:
                channel.closed = True

    def open_channels(self, client_id: str, sub: str) -> list[Channel]:
        """The app's open channels for an account."""
        return [
            c
            for c in self.channels.values()
            if c.client_id == client_id and c.sub == sub and not c.closed
        ]
