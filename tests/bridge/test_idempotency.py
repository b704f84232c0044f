"""Idempotency keys: a retry returns the first event; the same key with another draft is an
IdempotencyConflict raised before any provider call, naming the key and never the content."""

from __future__ import annotations

import datetime as dt

import attrs
import pytest

from calbridge import EventDraft, EventTime, errors
from calbridge.store import IdMapEntry

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
    # the id map keeps a fingerprint, never the draft
    (fingerprint,) = b.store.request_fingerprints("bk-2")
    assert len(fingerprint) == 64
    assert int(fingerprint, 16) >= 0  # hex digest only


async def test_rows_without_a_fingerprint_keep_fingerprints_and_are_not_checked(
    rig: BridgeRig,
) -> None:
    """Sync and migration write id-map rows without a fingerprint: they neither erase the
    stored one nor make an unfingerprinted key (written before revision 0007) conflict."""
    store = rig.bridge.store
    entry = IdMapEntry(
        key="bk-3", provider="google", app_user_id="cy", calendar_id="c", event_id="e1"
    )
    store.put_id(entry, request_sha256="a" * 64)
    store.put_id(attrs.evolve(entry, event_id="e2"))  # a later write by sync
    assert store.request_fingerprints("bk-3") == {"a" * 64}
    store.put_id(attrs.evolve(entry, key="bk-4"))
    assert store.request_fingerprints("bk-4") == set()
