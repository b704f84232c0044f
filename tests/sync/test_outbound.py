"""Outbound Standard Webhooks: signing vectors, verification helper, delivery with retries."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from calbridge import Secret
from calbridge.sandbox import serve_in_thread
from calbridge.sync import (
    OutboundWebhook,
    SyncService,
    WebhookVerificationError,
    batch_from_json,
    generate_webhook_secret,
    sign_standard_webhook,
    verify_standard_webhook,
)
from calbridge.sync._engine import SyncEngine
from tests.sync.support import draft_event, memory_env

KEY = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
MSG = "msg_p5jXN8AQM9LWM0D4loKWxJek"
TS = 1614265330
BODY = b'{"test": 2432232314}'
SIG = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def _headers(sig: str = SIG, ts: int = TS, msg: str = MSG) -> dict[str, str]:
    return {"webhook-id": msg, "webhook-timestamp": str(ts), "webhook-signature": sig}


def test_known_vector_and_tolerance() -> None:
    """W1: the spec's vector verifies at ts; at ts +- 301 s it does not."""
    assert sign_standard_webhook(KEY, msg_id=MSG, timestamp=TS, body=BODY) == SIG
    assert verify_standard_webhook(KEY, _headers(), BODY, now=TS) == {"test": 2432232314}
    assert verify_standard_webhook(KEY.removeprefix("whsec_"), _headers(), BODY, now=TS)
    for now in (TS - 301, TS + 301):
        with pytest.raises(WebhookVerificationError):
            verify_standard_webhook(KEY, _headers(), BODY, now=now)


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        (_headers(), b'{"test": 2432232315}'),
        ({"webhook-timestamp": str(TS), "webhook-signature": SIG}, BODY),
        ({"webhook-id": MSG, "webhook-signature": SIG}, BODY),
        ({"webhook-id": MSG, "webhook-timestamp": str(TS)}, BODY),
        (_headers(ts=0) | {"webhook-timestamp": "12a"}, BODY),
    ],
)
def test_tampered_or_incomplete_deliveries_fail(headers: dict[str, str], body: bytes) -> None:
    """W2: tampered body, each header missing, non-numeric timestamp."""
    with pytest.raises(WebhookVerificationError):
        verify_standard_webhook(KEY, headers, body, now=TS)
    other = generate_webhook_secret()
    with pytest.raises(WebhookVerificationError):
        verify_standard_webhook(other, _headers(), BODY, now=TS)


@settings(max_examples=200, deadline=None)
@given(sig=st.one_of(st.sampled_from(["garbage", "v1,@@@", "v1,AAAA v2", "v1,"]), st.text()))
def test_fuzzed_signatures_only_raise_verification_errors(sig: str) -> None:
    """W3: malformed entries never escape as ValueError (the standardwebhooks pitfall)."""
    with pytest.raises(WebhookVerificationError):
        verify_standard_webhook(KEY, _headers(sig=sig), BODY, now=TS)


def test_rotation_accepts_old_and_new() -> None:
    """W4: several signatures in one header; a [new, old] secret list accepts either."""
    new = generate_webhook_secret()
    new_sig = sign_standard_webhook(new, msg_id=MSG, timestamp=TS, body=BODY)
    both = f"{new_sig} {SIG}"
    assert verify_standard_webhook(KEY, _headers(sig=both), BODY, now=TS)
    assert verify_standard_webhook([new, Secret(KEY)], _headers(sig=SIG), BODY, now=TS)
    assert verify_standard_webhook([new, Secret(KEY)], _headers(sig=new_sig), BODY, now=TS)
    with pytest.raises(WebhookVerificationError):
        verify_standard_webhook([new], _headers(sig=SIG), BODY, now=TS)


def test_replay_outside_the_window_is_refused() -> None:
    """W11: a captured delivery replayed after 6 minutes fails; within the window it verifies
    (the receiver deduplicates on webhook-id, which is the batch id)."""
    assert verify_standard_webhook(KEY, _headers(), BODY, now=TS + 120)
    with pytest.raises(WebhookVerificationError):
        verify_standard_webhook(KEY, _headers(), BODY, now=TS + 360)


def test_short_or_non_base64_secrets_are_refused() -> None:
    with pytest.raises(WebhookVerificationError):
        sign_standard_webhook(
            "whsec_" + base64.b64encode(b"short").decode(), msg_id="m", timestamp=1, body=b""
        )
    with pytest.raises(WebhookVerificationError):
        sign_standard_webhook("whsec_***", msg_id="m", timestamp=1, body=b"")


async def test_batches_are_posted_signed_with_retries_over_loopback(sqlite_url: str) -> None:
    """Committed batches reach the app's URL over real HTTP, signed; a 503 is retried with
    backoff through the job queue and the retry carries the same webhook-id."""
    secret = generate_webhook_secret()
    received: list[tuple[dict[str, str], bytes]] = []
    answers = [503, 200]

    async def endpoint(request: Request) -> Response:
        received.append((dict(request.headers), await request.body()))
        return Response(status_code=answers.pop(0) if answers else 200)

    app = Starlette(routes=[Route("/hook", endpoint, methods=["POST"])])
    with serve_in_thread(app) as server:
        async with memory_env(sqlite_url) as env:
            service = SyncService(
                env.runtime, outbound=OutboundWebhook(url=f"{server.base_url}/hook", secret=secret)
            )
            env.worker.handlers = service.handlers
            assert isinstance(service.engine, SyncEngine)
            env.backend.put(draft_event("work", "o1", "outbound"))
            assert env.account.id is not None
            await service.engine.sync(env.account.id, "work")
            await env.drain()
            env.clock.advance(600)
            await env.drain()
            now = env.clock()
    assert len(received) == 2
    (h1, b1), (h2, b2) = received
    assert h1["webhook-id"] == h2["webhook-id"]
    assert b1 == b2
    data: dict[str, Any] = verify_standard_webhook(secret, h2, b2, now=now)
    batch = batch_from_json(data)
    assert batch.id == h2["webhook-id"]
    assert [e.summary for e in batch.upserted] == ["outbound"]
