"""A sync round's change spool: latest change per event, bounded memory, file freed."""

from __future__ import annotations

import types

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import calbridge
from calbridge.sync._spool import ChangeSpool
from calbridge.testing._contract import _survives_the_spool
from tests.sync.support import draft_event, spool_files


def _change(event_id: str, summary: str) -> calbridge.Change:
    if summary == "-":
        return calbridge.Change(
            kind=calbridge.ChangeKind.DELETED, calendar_id="work", event_id=event_id
        )
    return calbridge.Change(
        kind=calbridge.ChangeKind.UPSERTED,
        calendar_id="work",
        event_id=event_id,
        event=draft_event("work", event_id, summary),
    )


def _reference(changes: list[calbridge.Change]) -> list[calbridge.Change]:
    latest: dict[str, calbridge.Change] = {}
    for change in changes:
        latest.pop(change.event_id, None)
        latest[change.event_id] = change
    return list(latest.values())


@settings(max_examples=60, deadline=None)
@given(
    pages=st.lists(
        st.lists(
            st.tuples(st.sampled_from("abcdefgh"), st.sampled_from(["x", "y", "z", "-"])),
            max_size=7,
        ),
        max_size=8,
    ),
    hold=st.integers(min_value=1, max_value=10),
)
def test_latest_is_what_a_dict_keeps_however_it_spills(
    pages: list[list[tuple[str, str]]], hold: int
) -> None:
    flat = [_change(i, s) for page in pages for i, s in page]
    spills = held = 0
    with ChangeSpool(hold=hold) as spool:
        start = 0
        for page in pages:
            spool.add(flat[start : start + len(page)])
            start += len(page)
            held += len(page)
            if held >= hold:  # a full hold goes to the file at once
                spills, held = spills + 1, 0
            assert spool.held == held < hold
        expected = _reference(flat)
        assert list(spool.latest()) == expected
        assert list(spool.latest()) == expected  # a retried commit reads it again
        assert len(spool) == len(expected)
        assert all(c.event_id in spool for c in expected)
        assert "not-seen" not in spool
        assert spool.spilled == spills


def test_small_rounds_stay_in_memory() -> None:
    before = spool_files()
    with ChangeSpool(hold=100) as spool:
        spool.add(_change(f"e{i}", "x") for i in range(99))
        assert spool.spilled == 0
        assert spool_files() == before
        assert len(list(spool.latest())) == 99


def test_spilled_changes_come_back_equal() -> None:
    changes = [_change(f"e{i}", f"summary {i}") for i in range(51)]
    with ChangeSpool(hold=8) as spool:
        for i in range(0, 51, 5):
            spool.add(changes[i : i + 5])
        assert spool.spilled == 5  # every second page of 5 fills the hold
        assert spool.held == 1
        back = list(spool.latest())
    assert back == changes
    assert all(b is not c for b, c in zip(back[:50], changes[:50], strict=True))  # the file's
    assert back[50] is changes[50]  # still held


def test_close_frees_the_file_and_refuses_more() -> None:
    before = spool_files()
    spool = ChangeSpool(hold=2)
    spool.add([_change("a", "x"), _change("b", "y")])
    assert spool_files() == before + 1
    spool.close()
    assert spool_files() == before
    with pytest.raises(RuntimeError):
        spool.add([_change("c", "z")])
    with pytest.raises(RuntimeError):
        list(spool.latest())


def test_hold_must_be_positive() -> None:
    with pytest.raises(ValueError, match="hold"):
        ChangeSpool(hold=0)


def test_changes_that_cannot_be_pickled_stay_in_memory(caplog: pytest.LogCaptureFixture) -> None:
    """A provider whose events carry an unpicklable ``raw`` loses nothing: the round is
    held in memory (and a warning says so)."""
    changes = [_change(f"e{i}", "x") for i in range(3)]
    assert changes[1].event is not None
    odd = attrs.evolve(changes[1].event, raw=types.MappingProxyType({"k": "v"}))
    changes[1] = attrs.evolve(changes[1], event=odd)
    with ChangeSpool(hold=2) as spool:
        spool.add(changes[:2])
        spool.add(changes[2:])
        assert spool.spilled == 0
        assert spool.held == 3
        assert list(spool.latest()) == changes
    assert "cannot be pickled (TypeError)" in caplog.text


def test_the_provider_contract_catches_changes_that_do_not_spill() -> None:
    good = [_change("a", "x"), _change("b", "-"), _change("a", "y")]
    _survives_the_spool(good)
    assert good[0].event is not None
    odd = attrs.evolve(good[0].event, raw=types.MappingProxyType({"k": "v"}))
    with pytest.raises(AssertionError, match="must pickle"):
        _survives_the_spool([attrs.evolve(good[0], event=odd)])
