"""Integrator writes: validating upsert bodies (422s) and applying them to the native calendar."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from calbridge import Attendee, ResponseStatus, Transparency, Visibility
from calbridge.sandbox import Grant, NativeEvent, UnknownEvent

from ._state import ManagedLink, PendingWrite, granted_scopes
from ._wire import FieldError, parse_event_time

if TYPE_CHECKING:
    from ._engine import CronofyEngine

__all__ = ["accept_event_write", "apply_write", "parse_upsert"]

_FREQ = {"daily": "DAILY", "weekly": "WEEKLY", "monthly": "MONTHLY", "yearly": "YEARLY"}


def _recurrence(value: Any) -> tuple[str, ...]:
    rules = value.get("rules") if isinstance(value, dict) else None
    if not isinstance(rules, list):
        raise FieldError("recurrence", "errors.invalid", "recurrence needs rules")
    lines = []
    for rule in rules:
        freq = _FREQ.get(str(rule.get("frequency", "")).lower())
        if freq is None:
            raise FieldError("recurrence", "errors.invalid", "unknown frequency")
        parts = [f"FREQ={freq}"]
        if rule.get("interval"):
            parts.append(f"INTERVAL={int(rule['interval'])}")
        if rule.get("count"):
            parts.append(f"COUNT={int(rule['count'])}")
        if rule.get("until"):
            until = dt.date.fromisoformat(str(rule["until"])[:10])
            parts.append(f"UNTIL={until:%Y%m%d}")
        if rule.get("by_day"):
            parts.append("BYDAY=" + ",".join(str(d)[:2].upper() for d in rule["by_day"]))
        lines.append("RRULE:" + ";".join(parts))
    return tuple(lines)


def parse_upsert(body: dict[str, Any], *, creating: bool) -> dict[str, Any]:
    """Native event fields from an upsert body; raises :class:`FieldError` (422)."""
    tzid = str(body.get("tzid") or "Etc/UTC")
    fields: dict[str, Any] = {}
    summary = body.get("summary")
    if summary is None and creating:
        raise FieldError("summary", "errors.required", "required")
    if summary is not None:
        if not isinstance(summary, str) or len(summary) > 1024:
            raise FieldError("summary", "errors.too_long", "summary is at most 1024 characters")
        fields["summary"] = summary
    if "description" in body:
        description = str(body["description"] or "")
        if len(description) > 4096:
            raise FieldError("description", "errors.too_long", "at most 4096 characters")
        fields["description"] = description
    for name in ("start", "end"):
        if name in body or creating:
            fields[name] = parse_event_time(body.get(name), tzid, name)
    if "start" in fields and "end" in fields:
        start, end = fields["start"], fields["end"]
        if start.is_all_day != end.is_all_day:
            raise FieldError("end", "errors.invalid", "start and end must be of the same kind")
        if end.as_utc() <= start.as_utc():
            raise FieldError("end", "errors.invalid", "end must be after start")
    if isinstance(body.get("location"), dict):
        fields["location"] = body["location"].get("description")
    if "transparency" in body:
        value = str(body["transparency"])
        if value not in ("opaque", "transparent"):
            raise FieldError("transparency", "errors.invalid", "opaque or transparent")
        fields["transparency"] = Transparency(value)
    if "event_private" in body:
        private = bool(body["event_private"])
        fields["visibility"] = Visibility.PRIVATE if private else Visibility.DEFAULT
    invites = (body.get("attendees") or {}).get("invite") if body.get("attendees") else None
    if invites:
        fields["attendees"] = tuple(
            Attendee(email=str(a["email"]), name=a.get("display_name")) for a in invites
        )
    if body.get("recurrence"):
        fields["recurrence"] = _recurrence(body["recurrence"])
    return fields


def _merge_attendees(
    old: tuple[Attendee, ...], fields: dict[str, Any], reject: list[str]
) -> dict[str, Any]:
    if "attendees" in fields or reject:
        merged = {a.email.lower(): a for a in old}
        for a in fields.get("attendees", ()):
            merged.setdefault(a.email.lower(), a)
        for email in reject:
            merged.pop(email.lower(), None)
        fields["attendees"] = tuple(merged.values())
    return fields


def _update_if_changed(
    engine: CronofyEngine,
    native_calendar_id: str,
    current: NativeEvent,
    fields: dict[str, Any],
    origin: str,
) -> None:
    """Write the fields that differ from ``current`` to the native calendar, if any
    (Cronofy calls the calendar only when a change is required: an upsert equal to the
    stored event bumps no version and notifies no one)."""
    changes = {name: value for name, value in fields.items() if getattr(current, name) != value}
    if changes:
        engine.world.update_event(native_calendar_id, current.id, origin=origin, **changes)


def apply_write(engine: CronofyEngine, write: PendingWrite, origin: str) -> None:
    """Reconcile an accepted write with the native calendar, then refresh the cache
    (Cronofy knows its own writes at once; they notify no channel of the writing app)."""
    try:
        _apply(engine, write, origin)
    finally:
        cal = engine.calendars.get(write.calendar_id)
        if cal is not None:
            engine.sync_calendar(cal.native_id)


def _apply(engine: CronofyEngine, write: PendingWrite, origin: str) -> None:
    world = engine.world
    cal = engine.calendars.get(write.calendar_id)
    if cal is None:
        return
    fields = dict(write.body.get("fields", {}))  # type: ignore[call-overload]
    reject = [str(e) for e in write.body.get("reject", [])]  # type: ignore[attr-defined]
    status = write.body.get("status")
    if write.event_id is not None:
        key = (write.client_id, write.calendar_id, write.event_id)
        link = engine.links.get(key)
        native_id = link.native_id if link is not None else None
        alive = False
        if native_id is not None:
            try:
                old = world.event(cal.native_id, native_id)
                alive = True
            except UnknownEvent:
                alive = False
        if write.op == "delete":
            if alive and native_id is not None:
                world.delete_event(cal.native_id, native_id, origin=origin)
            return
        if alive and native_id is not None:
            fields = _merge_attendees(old.attendees, fields, reject)
            _update_if_changed(engine, cal.native_id, old, fields, origin)
            return
        if "start" not in fields or "summary" not in fields:
            return  # an update of an event that no longer exists and cannot be recreated
        link = ManagedLink(
            client_id=write.client_id, calendar_id=write.calendar_id, event_id=write.event_id
        )
        engine.links[key] = link
        created = world.insert_event(cal.native_id, origin=origin, **fields)
        link.native_id = created.id
        engine.managed[(cal.native_id, created.id)] = link
        return
    cached = engine.find_by_uid(write.sub, write.calendar_id, write.event_uid or "")
    if cached is None:
        return
    target = cached.native.id
    try:
        current = world.event(cal.native_id, target)
    except UnknownEvent:
        return
    if write.op == "delete":
        world.delete_event(cal.native_id, target, origin=origin)
    elif status is not None:
        email = engine.accounts[write.sub].email
        response = ResponseStatus(str(status))
        attendees = tuple(
            Attendee(email=a.email, name=a.name, response=response)
            if a.email.lower() == email
            else a
            for a in current.attendees
        )
        _update_if_changed(engine, cal.native_id, current, {"attendees": attendees}, origin)
    else:
        fields = _merge_attendees(current.attendees, fields, reject)
        _update_if_changed(engine, cal.native_id, current, fields, origin)


def accept_event_write(
    engine: CronofyEngine, grant: Grant, calendar_id: str, method: str, body: dict[str, Any]
) -> int:
    """Validate an upsert (``POST``) or delete (``DELETE``) of
    ``/v1/calendars/{calendar_id}/events`` and queue it; the status to answer (202 when
    accepted). Raises :class:`FieldError` for a 422."""
    cal = engine.calendars.get(calendar_id)
    if cal is None or cal.sub != grant.subject:
        return 404
    event_id, event_uid = body.get("event_id"), body.get("event_uid")
    if method == "DELETE":
        if "delete_event" not in granted_scopes(grant):
            return 403
        if not event_id and not event_uid:
            raise FieldError("event_id", "errors.required", "required")
        op: Any = "delete"
        fields: dict[str, Any] = {}
        reject: list[str] = []
    else:
        if "create_event" not in granted_scopes(grant):
            return 403
        if engine.world.calendar(cal.native_id).read_only:
            raise FieldError("calendar_id", "errors.calendar_readonly", "calendar is read-only")
        attendees = body.get("attendees") or {}
        reject = [
            str(a["email"]) for a in attendees.get("reject", []) + attendees.get("remove", [])
        ]
        if event_id:
            key = (grant.client_id, cal.calendar_id, str(event_id))
            fields = parse_upsert(body, creating=key not in engine.links)
            engine.links.setdefault(
                key,
                ManagedLink(
                    client_id=grant.client_id, calendar_id=cal.calendar_id, event_id=str(event_id)
                ),
            )
        elif event_uid:
            if engine.find_by_uid(grant.subject, cal.calendar_id, str(event_uid)) is None:
                raise FieldError("event_uid", "errors.not_found", "unknown event_uid")
            fields = parse_upsert(body, creating=False)
        else:
            raise FieldError("event_id", "errors.required", "required")
        op = "upsert"
    engine.accept(
        PendingWrite(
            client_id=grant.client_id,
            sub=grant.subject,
            calendar_id=cal.calendar_id,
            op=op,
            event_id=str(event_id) if event_id else None,
            event_uid=None if event_id else str(event_uid),
            body={"fields": fields, "reject": reject},
        )
    )
    return 202
