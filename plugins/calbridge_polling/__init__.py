"""Polling fallback: observes changes by periodic incremental reads.

It implements :func:`calbridge.hookspecs.make_change_source` with ``trylast=True`` and
always answers, so every provider that cannot push (or has no public callback URL) is
polled. The interval comes from the provider's ``poll_interval`` option (seconds,
default 300).
"""

from __future__ import annotations

import calbridge

DEFAULT_INTERVAL = 300.0


@calbridge.hookimpl(trylast=True)
def make_change_source(
    provider: calbridge.Provider, callback_url: str | None
) -> calbridge.ChangeSource:
    """Poll every ``poll_interval`` seconds (jittered by the scheduler)."""
    interval = float(provider.settings.option("poll_interval", DEFAULT_INTERVAL))
    why = "no public callback URL" if callback_url else "provider cannot push"
    return calbridge.ChangeSource(kind="poll", interval_seconds=interval, reason=why)
