from __future__ import annotations

from tests.sync.support import draft_event, memory_env


async def test_push_roundtrip(sqlite_url: str) -> None:
    async with memory_env(sqlite_url) as env:
        ch = env.push_channel()
        env.backend.put(draft_event("work", "e1", "one"))
        r = await env.post(env.provider.notification_for(ch, seq=1))
        assert r.status_code == 202, r.text
        await env.drain()
        assert env.cache("work") == {"e1": "one"} == env.mirror.view("work")
