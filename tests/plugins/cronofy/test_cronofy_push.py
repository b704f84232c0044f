"""Cronofy push verification: HMAC vectors, rotation lists, forgeries, notification types."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest
from calbridge_cronofy import CronofyProvider, sign_notification, signature_valid

import calbridge
from calbridge.errors import NotificationRejected

# (secret, body, expected) from docs.cronofy.com (via hookdeck), cronofy-ruby and pycronofy
VECTORS = [
    ("CRN_NggYusqPGLxwjw5FHOJYOqSrTPNXy8WQf14OID", "5DxentQi5YSXODEzTVv06sRwJ3pULIz1KrYv20qxEK0="),
    ("CRN_nGlYDFXwfSXgB9rvGNBJyfE454GGPtWIbNuPwr", "BmQmWVuZ70ILWjr1CAt5oC7YOolgnku4WZtlrKfx/6k="),
    ("pDY0Oi7TJSP2hfNmZNkm5", "6r2/HjBkqymGegX0wOfifieeUXbbHwtV/LohHS+jv6c="),
    ("opposable thumbs", "38ArsN7+J/O8joGsgirVEdV16a/+eb+5QgHGIiuv4hk="),
]
BODY = b'{"example":"well-known"}'

CHANNEL = calbridge.Channel(
    provider="cronofy",
    id="chn_54cf7c7cb4ad4c1027000001",
    callback_url="https://app.example/hook",
    account_id="a-1",
    calendar_ids=("cal_1",),
)


async def known(channel_id: str) -> calbridge.Channel | None:
    return CHANNEL if channel_id == CHANNEL.id else None


async def nobody(channel_id: str) -> calbridge.Channel | None:
    return None


def _no_http(request: httpx.Request) -> httpx.Response:
    raise AssertionError(f"verification called Cronofy: {request.url}")


def _provider(secret: str, **options: object) -> CronofyProvider:
    return CronofyProvider(
        http=httpx.AsyncClient(transport=httpx.MockTransport(_no_http)),
        settings=calbridge.ProviderSettings(client_id="c", client_secret=secret, options=options),
    )


def _body(kind: str, **extra: object) -> bytes:
    note: dict[str, object] = {"type": kind, **extra}
    return json.dumps(
        {
            "notification": note,
            "channel": {
                "channel_id": CHANNEL.id,
                "callback_url": CHANNEL.callback_url,
                "filters": {"calendar_ids": ["cal_1"]},
            },
        },
        separators=(",", ":"),
    ).encode()


def _request(body: bytes, signature: str | None) -> calbridge.WebhookRequest:
    headers = {"Content-Type": "application/json; charset=utf-8"}
    if signature is not None:
        headers["Cronofy-HMAC-SHA256"] = signature
    return calbridge.WebhookRequest.build(headers=headers, body=body)


@pytest.mark.parametrize(("secret", "expected"), VECTORS)
def test_known_vectors(secret: str, expected: str) -> None:
    assert sign_notification(BODY, secret) == expected
    assert signature_valid(expected, BODY, [calbridge.Secret(secret)])
    assert not signature_valid(expected, BODY + b" ", [calbridge.Secret(secret)])


def test_rotation_list_and_several_secrets() -> None:
    (s1, v1), (s2, v2) = VECTORS[0], VECTORS[1]
    assert signature_valid(f"{v2},{v1}", BODY, [calbridge.Secret(s1)])
    assert signature_valid(f"{v1}, {v2}", BODY, [calbridge.Secret(s2)])
    assert signature_valid(v2, BODY, [calbridge.Secret(s1), calbridge.Secret(s2)])
    assert not signature_valid(f"{v2},{v2}", BODY, [calbridge.Secret(s1)])
    assert not signature_valid("", BODY, [calbridge.Secret(s1)])
    assert not signature_valid(None, BODY, [calbridge.Secret(s1)])
    assert not signature_valid(v1, BODY, [])


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("verification", calbridge.NotificationKind.VERIFICATION),
        ("change", calbridge.NotificationKind.CHANGE),
        ("profile_disconnected", calbridge.NotificationKind.PROFILE_DISCONNECTED),
        ("profile_initial_sync_completed", calbridge.NotificationKind.INITIAL_SYNC_COMPLETED),
        ("gdpr_requested", calbridge.NotificationKind.IGNORED),
        ("brand_new_type", calbridge.NotificationKind.IGNORED),
    ],
)
async def test_notification_types(kind: str, expected: calbridge.NotificationKind) -> None:
    provider = _provider("opposable thumbs")
    extra = {"changes_since": "2026-01-05T09:24:16Z"} if kind == "change" else {}
    body = _body(kind, **extra)
    (note,) = await provider.verify_notification(
        _request(body, sign_notification(body, "opposable thumbs")), known
    )
    assert note.kind is expected
    assert note.provider == "cronofy"
    assert note.channel_id == CHANNEL.id
    assert note.account_id == "a-1"
    assert note.calendar_ids == ("cal_1",)
    assert 200 <= note.reply.status < 300
    assert note.changes_since == ("2026-01-05T09:24:16Z" if kind == "change" else None)
    assert note.delivery_key.startswith("cronofy:")


async def test_duplicate_delivery_has_the_same_key() -> None:
    provider = _provider("s")
    body = _body("change", changes_since="2026-01-05T09:24:16Z")
    req = _request(body, sign_notification(body, "s"))
    (a,) = await provider.verify_notification(req, known)
    (b,) = await provider.verify_notification(req, known)
    other = _body("change", changes_since="2026-01-05T09:30:00Z")
    (c,) = await provider.verify_notification(_request(other, sign_notification(other, "s")), known)
    assert a.delivery_key == b.delivery_key != c.delivery_key


async def test_rotated_secret_configured_as_extra() -> None:
    provider = _provider("new-secret", client_secrets=["old-secret"])
    body = _body("change", changes_since="2026-01-05T09:24:16Z")
    for secret in ("old-secret", "new-secret"):
        await provider.verify_notification(_request(body, sign_notification(body, secret)), known)
    both = f"{sign_notification(body, 'elsewhere')},{sign_notification(body, 'old-secret')}"
    assert await provider.verify_notification(_request(body, both), known)


@pytest.mark.parametrize(
    "forge",
    [
        lambda body, sig: (body, None),  # no header
        lambda body, sig: (body, ""),
        lambda body, sig: (body, sign_notification(body, "wrong secret")),
        lambda body, sig: (body + b"\n", sig),  # tampered body
        # the same JSON re-serialised (spaces, key order) no longer matches
        lambda body, sig: (json.dumps(json.loads(body), indent=1).encode(), sig),
        lambda body, sig: (json.dumps(json.loads(body), sort_keys=True).encode(), sig),
        lambda body, sig: (body, sig.lower()),
        lambda body, sig: (body, sig[:-4]),
    ],
)
async def test_forgeries_are_rejected(
    forge: Callable[[bytes, str], tuple[bytes, str | None]],
) -> None:
    provider = _provider("opposable thumbs")
    body = _body("change", changes_since="2026-01-05T09:24:16Z")
    good = sign_notification(body, "opposable thumbs")
    bad_body, bad_sig = forge(body, good)
    with pytest.raises(NotificationRejected) as info:
        await provider.verify_notification(_request(bad_body, bad_sig), known)
    assert "opposable" not in str(info.value)


async def test_unknown_channel_and_bad_payloads() -> None:
    provider = _provider("s")
    body = _body("change", changes_since="2026-01-05T09:24:16Z")
    with pytest.raises(NotificationRejected, match="channel"):
        await provider.verify_notification(_request(body, sign_notification(body, "s")), nobody)
    for junk in (b"not json", b"[]", b'{"notification": {}}'):
        with pytest.raises(NotificationRejected):
            await provider.verify_notification(_request(junk, sign_notification(junk, "s")), known)
    get = calbridge.WebhookRequest.build(method="GET", headers={}, body=b"")
    with pytest.raises(NotificationRejected):
        await provider.verify_notification(get, known)


async def test_no_secret_configured_rejects() -> None:
    provider = CronofyProvider(
        http=httpx.AsyncClient(transport=httpx.MockTransport(_no_http)),
        settings=calbridge.ProviderSettings(client_id="c"),
    )
    body = _body("verification")
    with pytest.raises(NotificationRejected):
        await provider.verify_notification(_request(body, sign_notification(body, "")), known)
