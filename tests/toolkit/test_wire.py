"""calbridge.toolkit's wire functions: decode_wire, wire_dict, encode_wire and WireStruct."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from calbridge import Secret
from calbridge.errors import ProviderResponseError
from calbridge.toolkit import WireStruct, decode_wire, encode_wire, wire_dict

CANARY = "canary-token-7f3a"


class When(WireStruct, frozen=True, rename="camel", gc=False):
    date_time: str
    time_zone: str | None = None


class Token(WireStruct, frozen=True):
    access_token: Secret
    refresh_token: Secret | None = None
    expires_in: int | None = None
    token_type: str = "bearer"


class Item(WireStruct, frozen=True, rename="camel"):
    item_id: str
    start: When
    next_link: str | None = msgspec.field(default=None, name="@odata.nextLink")
    tags: tuple[str, ...] = ()
    extra: dict[str, Any] | None = None


class Page(WireStruct, frozen=True):
    items: list[msgspec.Raw]


ITEM = {
    "itemId": "i1",
    "start": {"dateTime": "2026-01-05T09:00:00", "timeZone": "Europe/Paris"},
    "@odata.nextLink": "https://example.test/next",
    "tags": ["a", "b"],
    "somethingNew": {"nested": [1, 2]},  # unknown keys are ignored
}


@pytest.mark.parametrize("form", ["bytes", "str", "raw", "mapping"])
def test_reads_text_and_decoded_json_alike(form: str) -> None:
    text = json.dumps(ITEM)
    data: Any = {
        "bytes": text.encode(),
        "str": text,
        "raw": msgspec.Raw(text.encode()),
        "mapping": json.loads(text),
    }[form]
    item = decode_wire(data, Item, provider="example")
    assert item == Item(
        item_id="i1",
        start=When(date_time="2026-01-05T09:00:00", time_zone="Europe/Paris"),
        next_link="https://example.test/next",
        tags=("a", "b"),
    )


def test_round_trip_uses_json_names_and_leaves_defaults_out() -> None:
    item = decode_wire(json.dumps(ITEM).encode(), Item, provider="example")
    out = wire_dict(item)
    assert json.loads(json.dumps(out)) == {
        "itemId": "i1",
        "start": {"dateTime": "2026-01-05T09:00:00", "timeZone": "Europe/Paris"},
        "@odata.nextLink": "https://example.test/next",
        "tags": ["a", "b"],
    }
    assert json.loads(encode_wire(item)) == json.loads(json.dumps(out))
    assert decode_wire(encode_wire(item), Item, provider="example") == item
    assert decode_wire(out, Item, provider="example") == item


def test_none_and_default_fields_are_omitted() -> None:
    item = Item(item_id="i2", start=When(date_time="2026-01-05T09:00:00"))
    assert wire_dict(item) == {"itemId": "i2", "start": {"dateTime": "2026-01-05T09:00:00"}}
    assert encode_wire(item) == b'{"itemId":"i2","start":{"dateTime":"2026-01-05T09:00:00"}}'


def test_the_page_keeps_items_as_text() -> None:
    page = decode_wire(json.dumps({"items": [ITEM, ITEM]}).encode(), Page, provider="example")
    assert all(isinstance(text, msgspec.Raw) for text in page.items)
    assert decode_wire(page.items[1], Item, provider="example").item_id == "i1"


@pytest.mark.parametrize(
    ("data", "where"),
    [
        (b"{not json", "malformed"),
        (b"", "truncated"),
        (b'{"itemId": 5, "start": {"dateTime": "x"}}', "$.itemId"),
        (b'{"start": {"dateTime": "x"}}', "itemId"),
        ({"itemId": "i", "start": {"timeZone": "UTC"}}, "dateTime"),
        ({"itemId": "i", "start": "2026-01-05"}, "$.start"),
        ([ITEM], "array"),
        (None, "null"),
    ],
)
def test_unreadable_input_is_a_typed_error(data: Any, where: str) -> None:
    with pytest.raises(ProviderResponseError, match=r"\[example\] unreadable calendar item: ") as e:
        decode_wire(data, Item, provider="example", what="calendar item")
    assert e.value.provider == "example"
    assert where in str(e.value)
    assert e.value.__cause__ is None  # msgspec's exception is not chained along


def test_what_defaults_to_the_class_name() -> None:
    with pytest.raises(ProviderResponseError, match=r"\[example\] unreadable Item: "):
        decode_wire(b"[]", Item, provider="example")


def test_secrets_are_read_as_secrets_and_never_print() -> None:
    body = {"access_token": CANARY, "refresh_token": CANARY + "-r", "expires_in": 60}
    for data in (body, json.dumps(body).encode()):
        token = decode_wire(data, Token, provider="example")
        assert isinstance(token.access_token, Secret)
        assert token.access_token.reveal() == CANARY
        assert token.refresh_token is not None
        assert token.refresh_token.reveal() == CANARY + "-r"
        assert CANARY not in repr(token)
        assert CANARY not in str(token)
    # an already-built Secret is taken as it is
    same = decode_wire({"access_token": Secret(CANARY)}, Token, provider="example")
    assert same.access_token == Secret(CANARY)


@pytest.mark.parametrize(
    "data",
    [
        {"access_token": CANARY, "expires_in": CANARY},
        {"access_token": {"value": CANARY}},
        {"access_token": [CANARY]},
        {"refresh_token": CANARY},
        json.dumps({"access_token": CANARY, "expires_in": "soon"}).encode(),
        json.dumps({"access_token": 42, "refresh_token": CANARY}).encode(),
        (json.dumps({"access_token": CANARY})[:-3]).encode(),
    ],
)
def test_errors_never_echo_a_secret(data: Any) -> None:
    with pytest.raises(ProviderResponseError) as e:
        decode_wire(data, Token, provider="example", what="token answer")
    assert CANARY not in str(e.value)
    assert CANARY not in repr(e.value)
    assert e.value.__cause__ is None
    assert e.value.__context__ is None or CANARY not in str(e.value.__context__)


def test_writing_a_secret_is_deliberate() -> None:
    token = Token(access_token=Secret(CANARY), expires_in=60)
    with pytest.raises(TypeError, match="reveal_secrets=True") as e:
        wire_dict(token)
    assert CANARY not in str(e.value)
    with pytest.raises(TypeError, match="reveal_secrets=True"):
        encode_wire(token)
    assert wire_dict(token, reveal_secrets=True) == {"access_token": CANARY, "expires_in": 60}
    assert json.loads(encode_wire(token, reveal_secrets=True)) == {
        "access_token": CANARY,
        "expires_in": 60,
    }
    back = decode_wire(encode_wire(token, reveal_secrets=True), Token, provider="example")
    assert back == token


def test_wire_structs_are_frozen() -> None:
    when = When(date_time="2026-01-05T09:00:00")
    with pytest.raises(AttributeError):
        when.date_time = "x"  # type: ignore[misc]
    assert hash(when) == hash(When(date_time="2026-01-05T09:00:00"))


def test_decoders_are_cached_per_type() -> None:
    from calbridge.toolkit import _wire

    decode_wire(b'{"dateTime": "x"}', When, provider="example")
    first = _wire._decoders[When]
    decode_wire(b'{"dateTime": "y"}', When, provider="example")
    assert _wire._decoders[When] is first
