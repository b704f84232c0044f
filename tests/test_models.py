"""Domain model invariants and converter round-trips."""

from __future__ import annotations

import datetime as dt
import inspect
import json
import logging
import zoneinfo
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import calbridge
from calbridge import (
    Account,
    AccountStatus,
    Attendee,
    Calendar,
    Change,
    ChangeKind,
    ChangePage,
    Channel,
    Event,
    EventDraft,
    EventStatus,
    EventTime,
    FreeBusy,
    FreeBusyStatus,
    Person,
    ResponseStatus,
    Secret,
    SeriesRole,
    TimeRange,
    TokenSet,
    Transparency,
    Visibility,
)

CANARY = "canary-7f3a9c1e-DO-NOT-LEAK"
ZONES = ["UTC", "Europe/Paris", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe"]

text = st.text(st.characters(blacklist_categories=["Cs"]), max_size=20)
opt_text = st.none() | text
naive = st.datetimes(min_value=dt.datetime(1970, 1, 2), max_value=dt.datetime(2200, 1, 1))


@st.composite
def zoned_times(draw: st.DrawFn) -> EventTime:
    zone = draw(st.sampled_from(ZONES))
    local = draw(naive)
    return EventTime.zoned(local.replace(tzinfo=zoneinfo.ZoneInfo(zone)), zone)


event_times = st.one_of(
    st.dates(min_value=dt.date(1970, 1, 2)).map(EventTime.all_day),
    naive.map(EventTime.floating),
    zoned_times(),
)
aware = st.datetimes(
    min_value=dt.datetime(1970, 1, 2),
    max_value=dt.datetime(2200, 1, 1),
    timezones=st.just(dt.UTC),
)
props = st.dictionaries(text, text, max_size=3)
raw = st.dictionaries(
    text, st.none() | st.integers() | text | st.lists(st.integers(), max_size=3), max_size=3
)
attendees = st.builds(
    Attendee,
    email=text,
    name=opt_text,
    response=st.sampled_from(ResponseStatus),
    optional=st.booleans(),
    organizer=st.booleans(),
    resource=st.booleans(),
)
recurrence = st.lists(
    st.sampled_from(
        [
            "RRULE:FREQ=WEEKLY;BYDAY=MO,WE;COUNT=10",
            "EXDATE;TZID=Europe/Paris:20261201T090000",
            "RDATE:20261224T100000Z",
            "EXRULE:FREQ=MONTHLY;BYDAY=1FR",
        ]
    ),
    max_size=3,
).map(tuple)


@st.composite
def events(draw: st.DrawFn) -> Event:
    start = draw(event_times)
    if start.is_all_day:
        end = EventTime.all_day(draw(st.dates(min_value=dt.date(1970, 1, 2))))
    else:
        end = draw(st.one_of(naive.map(EventTime.floating), zoned_times()))
    role = draw(st.sampled_from(SeriesRole))
    series = role in (SeriesRole.INSTANCE, SeriesRole.EXCEPTION)
    return Event(
        id=draw(text),
        calendar_id=draw(text),
        provider=draw(text),
        start=start,
        end=end,
        summary=draw(opt_text),
        description=draw(opt_text),
        location=draw(opt_text),
        ical_uid=draw(opt_text),
        status=draw(st.sampled_from(EventStatus)),
        transparency=draw(st.sampled_from(Transparency)),
        visibility=draw(st.sampled_from(Visibility)),
        organizer=draw(st.none() | st.builds(Person, email=opt_text, name=opt_text)),
        attendees=tuple(draw(st.lists(attendees, max_size=3))),
        recurrence=draw(recurrence),
        series_role=role,
        recurring_event_id=draw(text.filter(bool)) if series else None,
        original_start=draw(event_times) if series else None,
        created=draw(st.none() | aware),
        updated=draw(st.none() | aware),
        etag=draw(opt_text),
        properties=draw(props),
        raw=draw(raw),
    )


secrets_ = text.filter(bool).map(Secret)
models = st.one_of(
    events(),
    st.builds(
        Calendar,
        id=text,
        provider=text,
        name=text,
        primary=st.booleans(),
        read_only=st.booleans(),
        time_zone=st.none() | st.sampled_from(ZONES),
        raw=raw,
    ),
    aware.flatmap(
        lambda s: st.builds(TimeRange, start=st.just(s), end=st.just(s + dt.timedelta(hours=1)))
    ),
    st.builds(
        FreeBusy, calendar_id=text, start=aware, end=aware, status=st.sampled_from(FreeBusyStatus)
    ),
    events().map(
        lambda e: Change(
            kind=ChangeKind.UPSERTED, calendar_id=e.calendar_id, event_id=e.id, event=e, cursor="c1"
        )
    ),
    st.builds(
        Change, kind=st.just(ChangeKind.DELETED), calendar_id=text, event_id=text, cursor=opt_text
    ),
    st.builds(
        Channel,
        provider=text,
        id=text,
        callback_url=text,
        account_id=opt_text,
        calendar_ids=st.lists(text, max_size=2).map(tuple),
        filters=props,
        expires_at=st.none() | st.integers(0, 2**40),
        secret=st.none() | secrets_,
        resource_id=opt_text,
        raw=raw,
    ),
    st.builds(
        TokenSet,
        access_token=secrets_,
        refresh_token=st.none() | secrets_,
        expires_at=st.none() | st.integers(0, 2**40),
        scope=st.lists(text, max_size=3).map(tuple),
        extra=props,
    ),
    st.builds(
        Account,
        app_user_id=text,
        provider=text,
        provider_account_id=text,
        status=st.sampled_from(AccountStatus),
        email=opt_text,
        id=opt_text,
    ),
)


@settings(max_examples=300, deadline=None)
@given(models)
def test_every_model_round_trips_through_the_converter(value: Any) -> None:
    """Unstructure -> JSON text -> structure gives an equal value (with the store's converter)."""
    conv = calbridge.make_converter(reveal_secrets=True)
    data = json.loads(json.dumps(conv.unstructure(value)))
    back = conv.structure(data, type(value))
    assert back == value
    assert dict(getattr(back, "raw", {})) == dict(getattr(value, "raw", {}))


def test_change_page_round_trips() -> None:
    """Pages nest changes and keep the cursor."""
    conv = calbridge.make_converter()
    page = ChangePage(
        changes=(Change(kind=ChangeKind.DELETED, calendar_id="c", event_id="e"),),
        cursor="42",
        full=True,
    )
    assert conv.structure(json.loads(json.dumps(conv.unstructure(page))), ChangePage) == page


def _holders() -> list[object]:
    token = TokenSet(access_token=CANARY, refresh_token=CANARY)
    return [
        Secret(CANARY),
        token,
        Channel(provider="p", id="c", callback_url="https://x", secret=CANARY),
        calbridge.ProviderSettings(client_id="id", client_secret=CANARY),
        calbridge.StaticTokenSource(tokens=token),
    ]


@pytest.mark.parametrize("holder", _holders(), ids=lambda h: type(h).__name__)
def test_canary_secret_never_printed(holder: object, caplog: pytest.LogCaptureFixture) -> None:
    """A canary is absent from repr, str, f-strings, logs, exceptions and converter output."""
    conv = calbridge.make_converter()
    assert CANARY not in repr(holder)
    assert CANARY not in str(holder)
    assert CANARY not in f"{holder}"
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("calbridge.test").info("holder %s %r", holder, holder)
    assert CANARY not in caplog.text
    err = calbridge.errors.ProviderError(f"failed with {holder!r}", provider="p")
    assert CANARY not in str(err)
    if attrs.has(type(holder)) or isinstance(holder, Secret):
        assert CANARY not in json.dumps(conv.unstructure(holder))


def test_secret_semantics() -> None:
    """Secrets compare by value, are immutable, refuse pickling and reveal on demand."""
    import pickle

    s = Secret(CANARY)
    assert s == Secret(CANARY)
    assert s != Secret("other")
    assert s.reveal() == CANARY
    with pytest.raises(AttributeError):
        s._value = "x"
    with pytest.raises(TypeError):
        pickle.dumps(s)
    with pytest.raises(TypeError):
        Secret(123)  # type: ignore[arg-type]


def test_event_time_keeps_kinds_apart() -> None:
    """All-day, floating and zoned times validate their shapes."""
    with pytest.raises(ValueError, match="naive"):
        EventTime.floating(dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    with pytest.raises(ValueError, match="aware"):
        EventTime.zoned(dt.datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="date"):
        EventTime.all_day(dt.datetime(2026, 1, 1))
    paris = zoneinfo.ZoneInfo("Europe/Paris")
    t = EventTime.zoned(dt.datetime(2026, 7, 1, 9, tzinfo=paris))
    assert t.tzid == "Europe/Paris"
    assert t.as_utc() == dt.datetime(2026, 7, 1, 7, tzinfo=dt.UTC)
    assert EventTime.all_day(dt.date(2026, 7, 1)).as_utc() == dt.datetime(2026, 7, 1, tzinfo=dt.UTC)


class _NoOffset(dt.tzinfo):
    """A tzinfo that knows no offset: a datetime carrying it is naive all the same."""

    def utcoffset(self, d: dt.datetime | None) -> None:
        return None

    def dst(self, d: dt.datetime | None) -> None:
        return None

    def tzname(self, d: dt.datetime | None) -> str:
        return "nowhere"


def test_zoned_times_check_awareness_whatever_the_zone() -> None:
    """UTC (the common case, checked without utcoffset()), offsets and zones are aware;
    no tzinfo, or one that gives no offset, is naive."""
    for instant in (
        dt.datetime(2026, 1, 1, 9, tzinfo=dt.UTC),
        dt.datetime.fromisoformat("2026-01-01T09:00:00Z"),
        dt.datetime.fromisoformat("2026-01-01T09:00:00+00:00"),
        dt.datetime(2026, 1, 1, 10, tzinfo=dt.timezone(dt.timedelta(hours=1))),
        dt.datetime(2026, 1, 1, 10, tzinfo=zoneinfo.ZoneInfo("Europe/Paris")),
    ):
        t = EventTime.zoned(instant, "Europe/Paris")
        assert (t.kind, t.date, t.datetime, t.tzid) == (
            calbridge.TimeKind.ZONED,
            None,
            instant,
            "Europe/Paris",
        )
        assert t == EventTime(kind=calbridge.TimeKind.ZONED, datetime=instant, tzid="Europe/Paris")
        assert t.as_utc() == dt.datetime(2026, 1, 1, 9, tzinfo=dt.UTC)
    assert EventTime.zoned(dt.datetime(2026, 1, 1, tzinfo=dt.UTC)).tzid == "UTC"
    for naive_instant in (
        dt.datetime(2026, 1, 1, 9),
        dt.datetime(2026, 1, 1, 9, tzinfo=_NoOffset()),
    ):
        with pytest.raises(ValueError, match="aware"):
            EventTime.zoned(naive_instant, "UTC")
        with pytest.raises(ValueError, match="aware"):
            EventTime(kind=calbridge.TimeKind.ZONED, datetime=naive_instant, tzid="UTC")
        with pytest.raises(ValueError, match="aware"):
            TimeRange(start=naive_instant, end=dt.datetime(2026, 1, 2, tzinfo=dt.UTC))
    with pytest.raises(ValueError, match="tzid"):
        EventTime.zoned(dt.datetime(2026, 1, 1, 9, tzinfo=dt.UTC), "")


def test_series_occurrences_need_their_series() -> None:
    """Instances and exceptions name their series; singles and masters need not."""
    timed = EventTime.zoned(dt.datetime(2026, 1, 1, 9, tzinfo=dt.UTC))
    for role in (SeriesRole.INSTANCE, SeriesRole.EXCEPTION):
        with pytest.raises(ValueError, match="recurring_event_id"):
            Event(id="e", calendar_id="c", provider="p", start=timed, end=timed, series_role=role)
        ev = Event(
            id="e",
            calendar_id="c",
            provider="p",
            start=timed,
            end=timed,
            series_role=role,
            recurring_event_id="s",
        )
        assert (ev.series_role, ev.recurring_event_id) == (role, "s")
    for role in (SeriesRole.SINGLE, SeriesRole.MASTER):
        ev = Event(id="e", calendar_id="c", provider="p", start=timed, end=timed, series_role=role)
        assert ev.series_role is role


def test_event_and_draft_validation() -> None:
    """Mixed all-day/timed, DTSTART lines, orphan instances and backwards drafts are refused."""
    day = EventTime.all_day(dt.date(2026, 1, 1))
    timed = EventTime.zoned(dt.datetime(2026, 1, 1, 9, tzinfo=dt.UTC))
    with pytest.raises(ValueError, match="all-day"):
        Event(id="e", calendar_id="c", provider="p", start=day, end=timed)
    with pytest.raises(ValueError, match="DTSTART"):
        EventDraft(
            start=day, end=EventTime.all_day(dt.date(2026, 1, 2)), recurrence=("DTSTART:20260101",)
        )
    with pytest.raises(ValueError, match="recurrence line"):
        EventDraft(
            start=day, end=EventTime.all_day(dt.date(2026, 1, 2)), recurrence=("FREQ=DAILY",)
        )
    with pytest.raises(ValueError, match="recurring_event_id"):
        Event(
            id="e",
            calendar_id="c",
            provider="p",
            start=timed,
            end=timed,
            series_role=SeriesRole.INSTANCE,
        )
    with pytest.raises(ValueError, match="end after"):
        EventDraft(start=timed, end=timed)
    with pytest.raises(ValueError, match="IANA"):
        EventDraft(
            start=EventTime.floating(dt.datetime(2026, 1, 1, 9)),
            end=EventTime.floating(dt.datetime(2026, 1, 1, 10)),
            recurrence=("RRULE:FREQ=DAILY",),
        )
    with pytest.raises(ValueError, match="after start"):
        TimeRange(start=timed.as_utc(), end=timed.as_utc())
    with pytest.raises(TypeError):
        EventDraft(start=day, end=EventTime.all_day(dt.date(2026, 1, 2)), properties={"a": 1})  # type: ignore[dict-item]


def test_event_takes_every_field_and_checks_them() -> None:
    """Event(...) with every field set keeps them (recurrence lines trimmed, properties
    copied) and refuses mixed all-day/timed times, an instance without its series, a
    DTSTART in a recurrence line and non-str properties; events are frozen."""
    start = EventTime.zoned(dt.datetime(2026, 1, 1, 9, tzinfo=dt.UTC), "Europe/Paris")
    end = EventTime.zoned(dt.datetime(2026, 1, 1, 10, tzinfo=dt.UTC), "Europe/Paris")
    values: dict[str, Any] = {
        "id": "e1",
        "calendar_id": "c",
        "provider": "p",
        "start": start,
        "end": end,
        "summary": "s",
        "description": "d",
        "location": "l",
        "ical_uid": "u@x",
        "status": EventStatus.TENTATIVE,
        "transparency": Transparency.TRANSPARENT,
        "visibility": Visibility.PRIVATE,
        "organizer": Person(email="o@x"),
        "attendees": (Attendee(email="a@x"),),
        "recurrence": [" RRULE:FREQ=DAILY "],
        "series_role": SeriesRole.EXCEPTION,
        "recurring_event_id": "master",
        "original_start": start,
        "created": dt.datetime(2025, 1, 1, tzinfo=dt.UTC),
        "updated": dt.datetime(2025, 1, 2, tzinfo=dt.UTC),
        "etag": "v1",
        "properties": {"k": "v"},
        "raw": {"id": "e1"},
    }
    fast = Event(**values)
    assert attrs.asdict(fast, recurse=False) == {
        **values,
        "recurrence": ("RRULE:FREQ=DAILY",),
    }
    assert fast.properties == {"k": "v"} and fast.properties is not values["properties"]  # noqa: PT018
    day = EventTime.all_day(dt.date(2026, 1, 1))
    with pytest.raises(ValueError, match="both be all-day"):
        Event(**{**values, "end": day})
    with pytest.raises(ValueError, match="recurring_event_id"):
        Event(**{**values, "recurring_event_id": None})
    with pytest.raises(ValueError, match="DTSTART"):
        Event(**{**values, "recurrence": ["RRULE;DTSTART=1:FREQ=DAILY"]})
    with pytest.raises(TypeError):
        Event(**{**values, "properties": {"k": 1}})
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        fast.summary = "changed"  # type: ignore[misc]


def test_event_init_matches_its_fields() -> None:
    """Event's __init__ takes exactly its fields, keyword-only, in order; ``None`` for
    ``properties`` or ``raw`` is an empty mapping, and every event gets its own."""
    params = list(inspect.signature(Event.__init__).parameters.values())[1:]
    fields: list[attrs.Attribute[Any]] = list(attrs.fields(Event))
    assert [p.name for p in params] == [f.name for f in fields]
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params)
    for p, f in zip(params, fields, strict=True):
        required = f.default is attrs.NOTHING
        assert (p.default is inspect.Parameter.empty) is required, f.name
    timed = EventTime.zoned(dt.datetime(2026, 1, 1, 9, tzinfo=dt.UTC))
    ev = Event(id="e", calendar_id="c", provider="p", start=timed, end=timed)
    assert ev.raw == {} and ev.properties == {} and ev.recurrence == ()  # noqa: PT018
    nones = Event(
        id="e", calendar_id="c", provider="p", start=timed, end=timed, properties=None, raw=None
    )
    assert nones == ev and nones.raw == {} and nones.properties == {}  # noqa: PT018
    assert ev.raw is not Event(id="e", calendar_id="c", provider="p", start=timed, end=timed).raw
    # converters still copy and check what the caller passes
    props = {"k": "v"}
    ev = attrs.evolve(ev, properties=props, recurrence=[" RRULE:FREQ=DAILY "])
    assert ev.properties == props and ev.properties is not props  # noqa: PT018
    assert ev.recurrence == ("RRULE:FREQ=DAILY",)
    with pytest.raises(TypeError):
        attrs.evolve(ev, properties={"k": 1})  # type: ignore[dict-item]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        ev.summary = "changed"  # type: ignore[misc]


def test_token_expiry() -> None:
    """expired() honours the leeway."""
    t = TokenSet(access_token="a", expires_at=1000)
    assert t.expired(now=950)
    assert not t.expired(now=900)
    assert not TokenSet(access_token="a").expired(now=10**12)


@pytest.mark.parametrize(
    "local",
    [
        dt.datetime(2010, 3, 14, 2, 0),  # a DST gap in New York: 02:00 never happened
        dt.datetime(2010, 11, 7, 1, 30),  # a fold: 01:30 happened twice
        dt.datetime(2010, 11, 7, 1, 30, fold=1),
        dt.datetime(2010, 7, 1, 9, 0),
    ],
)
def test_zoned_times_in_dst_gaps_and_folds_round_trip(local: dt.datetime) -> None:
    """A zoned time read back from storage (a fixed offset, not the zone object) equals
    the one written, also in a DST gap or fold (found by the round-trip property above:
    Python's inter-zone equality is always False there, PEP 495)."""
    zone = zoneinfo.ZoneInfo("America/New_York")
    value = EventTime.zoned(local.replace(tzinfo=zone), "America/New_York")
    conv = calbridge.make_converter()
    back = conv.structure(json.loads(json.dumps(conv.unstructure(value))), EventTime)
    assert back == value
    assert hash(back) == hash(value)
    assert back.datetime is not None and value.datetime is not None  # noqa: PT018
    assert back.datetime.utcoffset() == value.datetime.utcoffset()
    later = EventTime.zoned(
        value.datetime.astimezone(dt.UTC) + dt.timedelta(hours=1), "America/New_York"
    )
    assert later != value
    elsewhere = EventTime.zoned(value.datetime, "Europe/Paris")
    assert elsewhere != value  # the same instant shown in another zone is another time
