"""Polling fallback: observes changes by periodic incremental reads.

It implements :func:`calbridge.hookspecs.make_change_source` with ``trylast=True`` and
always answers, so every provider that cannot push (or has no public callback URL) is
polled. Provider plugins answer first with ``"push"`` when they can.

How polling runs (``calbridge.sync.ChannelManager``): each polled calendar gets a
recurring ``poll`` job every ``interval_seconds`` (the provider's ``poll_interval``
option, else the bridge's ``poll_interval``, default 300 s), its first run placed at a
random point of the first interval so calendars do not poll in lock-step. A ``poll`` job
only enqueues the calendar's ordinary ``sync`` job (coalesced with any webhook-triggered
one), so a polled calendar produces exactly the change stream a pushed one does. A
provider's rate limit (``RateLimited.retry_after``) or pause reschedules the sync job
instead of hammering the provider, and ``poll_min_interval`` (seconds, default 60)
keeps a misconfigured interval from doing so.
"""

from __future__ import annotations

import calbridge

__all__ = ["DEFAULT_INTERVAL", "MIN_INTERVAL", "make_change_source"]

#: the bridge's default (``BridgeConfig.poll_interval``)
DEFAULT_INTERVAL = 300.0
#: the shortest interval honoured unless the provider sets ``poll_min_interval``
MIN_INTERVAL = 60.0


@calbridge.hookimpl(trylast=True)
def make_change_source(
    provider: calbridge.Provider, callback_url: str | None
) -> calbridge.ChangeSource:
    """Poll every ``poll_interval`` seconds (jittered by the channel manager).

    ``interval_seconds`` is None when the provider sets no ``poll_interval`` option: the
    bridge's own ``poll_interval`` applies then.
    """
    option = provider.settings.option("poll_interval")
    interval: float | None = None
    if option is not None:
        floor = float(provider.settings.option("poll_min_interval", MIN_INTERVAL))
        interval = max(float(option), floor)
    why = "provider cannot push" if callback_url else "no public callback URL"
    return calbridge.ChangeSource(kind="poll", interval_seconds=interval, reason=why)
