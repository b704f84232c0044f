"""Idempotency keys: a retry returns the first event; the same key with another draft is an
IdempotencyConflict raised before any provider call, naming the key and never the content."""

from __future__ import annotations

import asyncio
import datetime as dt

import attrs
import pytest

from calbridge import Event, EventDraft, EventTime, errors
from calbridge.store import schema

from .conftest import BridgeRig


def draft(rig: BridgeRig, summary: str, hours: float = 26) -> EventDraft:
    start = (rig.world.clock.now() + dt.timedelta(hours=hours)).replace(
        minute=0, second=0, microsecond=0
    )
    return EventDraft(
        summary=summary,
        start=EventTime.zoned(start, "UTC"),
        end=EventTime.zoned(start + dt.timedelta(hours=1), "UTC"),
    )


async def test_same_draft_retry_returns_the_first_event(rig: BridgeRig) -> None:
    b = rig.bridge
    await rig.connect("ann", "google", "ann@example.com")
    first = await b.create_event("ann", "primary", draft(rig, "Dentist"), key="bk-1")
    # an equal draft built again (not the same object) is the same request
    again = await b.create_event("ann", "primary", draft(rig, "Dentist"), key="bk-1")
    assert again.id == first.id
    native_cal = rig.world.primary_calendar("ann@example.com").id
    assert [e.summary for e in rig.world.events(native_cal)] == ["Dentist"]


@pytest.mark.parametrize(
    "change",
    ["summary", "start", "calendar", "properties"],
)
async def test_key_reused_with_a_different_draft_is_a_conflict(rig: BridgeRig, change: str) -> None:
    b = rig.bridge
    await rig.connect("bo", "google", "bo@example.com")
    original = draft(rig, "Private therapy session")
    first = await b.create_event("bo", "primary", original, key="bk-2")
    other, calendar = original, "primary"
    if change == "summary":
        other = attrs.evolve(original, summary="Team lunch")
    elif change == "start":
        other = draft(rig, "Private therapy session", hours=27)
    elif change == "properties":
        other = attrs.evolve(original, properties={"room": "4"})
    else:
        calendar = "work"
    native_cal = rig.world.primary_calendar("bo@example.com").id
    before = rig.world.events(native_cal)
    with pytest.raises(errors.IdempotencyConflict) as caught:
        await b.create_event("bo", calendar, other, key="bk-2")
    err = caught.value
    assert isinstance(err, errors.CalbridgeError)
    assert err.key == "bk-2"
    assert "'bk-2'" in str(err)
    for secret in ("therapy", "Team lunch", "room"):
        assert secret not in str(err)
    # nothing was created or changed; the first event stands and a same-draft retry works
    assert rig.world.events(native_cal) == before
    assert (await b.create_event("bo", "primary", original, key="bk-2")).id == first.id
    # the store keeps a fingerprint of the first request, never the draft
    fingerprint = b.store.ids.key_fingerprint("bk-2")
    assert fingerprint is not None
    assert len(fingerprint) == 64
    assert int(fingerprint, 16) >= 0  # hex digest only


async def test_concurrent_first_creates_bind_the_key_once(rig: BridgeRig) -> None:
    """Two first creates under one key at once, with different drafts: exactly one makes
    the event, the other is a conflict and changes nothing at the provider."""
    b = rig.bridge
    await rig.connect("di", "google", "di@example.com")
    drafts = [draft(rig, "Board meeting"), draft(rig, "Offsite", hours=30)]
    results = await asyncio.gather(
        *(b.create_event("di", "primary", d, key="bk-5") for d in drafts),
        return_exceptions=True,
    )
    made = [r for r in results if isinstance(r, Event)]
    refused = [r for r in results if isinstance(r, errors.IdempotencyConflict)]
    assert len(made) == 1, results
    assert len(refused) == 1, results
    native_cal = rig.world.primary_calendar("di@example.com").id
    assert [e.summary for e in rig.world.events(native_cal)] == [made[0].summary]
    # the same two at once with equal drafts: one event, both answers name it
    same = await asyncio.gather(
        *(b.create_event("di", "primary", draft(rig, "Standup", 40), key="bk-6") for _ in "ab")
    )
    assert same[0].id == same[1].id
    assert sorted(str(e.summary) for e in rig.world.events(native_cal)) == sorted(
        [str(made[0].summary), "Standup"]
    )


async def test_a_refused_create_releases_its_key(rig: BridgeRig) -> None:
    """The provider refused the draft (nothing was made): the key may be used again with
    a corrected draft. A failure before the provider call releases it too; after a 5xx
    the event may exist, so the key stays bound to its draft."""
    b = rig.bridge
    await rig.connect("ed", "google", "ed@example.com")
    good = draft(rig, "Review")
    rig.world.faults.fail_next("google", 400, path_prefix="/calendar/v3/calendars/")
    with pytest.raises(errors.InvalidRequest):
        await b.create_event("ed", "primary", draft(rig, "Reveiw"), key="bk-7")
    assert b.store.ids.key_fingerprint("bk-7") is None
    with pytest.raises(errors.NotFound):  # no such calendar: refused before the provider
        await b.create_event("ed", "no-such-calendar", good, key="bk-7")
    assert b.store.ids.key_fingerprint("bk-7") is None
    made = await b.create_event("ed", "primary", good, key="bk-7")
    assert made.summary == "Review"
    assert b.store.ids.key_fingerprint("bk-7") is not None

    rig.world.faults.fail_next("google", 503, times=-1, path_prefix="/calendar/v3/calendars/")
    with pytest.raises(errors.Unavailable):
        await b.create_event("ed", "primary", draft(rig, "Retro", 30), key="bk-8")
    rig.world.faults.plan("google").errors.clear()
    with pytest.raises(errors.IdempotencyConflict):
        await b.create_event("ed", "primary", draft(rig, "Other", 30), key="bk-8")
    assert (await b.create_event("ed", "primary", draft(rig, "Retro", 30), key="bk-8")).id


async def test_keys_without_a_claim_are_bound_by_their_next_create(rig: BridgeRig) -> None:
    """Sync and migration write id-map rows without binding a key, and keys written before
    revision 0007 have no claim: the next create binds them, a later different one
    conflicts; deleting the event unbinds its key."""
    b = rig.bridge
    await rig.connect("cy", "google", "cy@example.com")
    first = await b.create_event("cy", "primary", draft(rig, "Lunch"), key="bk-3")
    with b.runtime.engine.begin() as conn:  # as an older calbridge left it
        conn.execute(schema.idempotency_keys.delete())
    again = await b.create_event("cy", "primary", draft(rig, "Lunch"), key="bk-3")
    assert again.id == first.id
    with pytest.raises(errors.IdempotencyConflict):
        await b.create_event("cy", "primary", draft(rig, "Dinner"), key="bk-3")
    await b.delete_event("cy", "bk-3")
    assert b.store.ids.key_fingerprint("bk-3") is None
    assert (await b.create_event("cy", "primary", draft(rig, "Dinner"), key="bk-3")).id
