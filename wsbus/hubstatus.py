"""``hub_status``: how the hub is doing, for ``wsbus status``, the dashboard and
``/metrics``' gauges that need the store or the engine.

The mail still waiting for a final receipt is counted over the newest
:data:`PENDING_WINDOW` events only: the answer costs the same however much history
the store keeps.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from typing import TYPE_CHECKING, Any

import msgspec

from .auth import may_use_channel, party_of
from .errors import ErrorCode, FrameError
from .rosters import member_of
from .schema import HubStatus, HubStatusResult, Member, Waiting
from .session import Session
from .store import Pending
from .version import __version__

if TYPE_CHECKING:
    from .hub import Hub

__all__ = ["PENDING_WINDOW", "gauges", "status"]

#: how many of the newest events the pending-mail count looks at
PENDING_WINDOW = 100_000
#: seconds an answer of the store, or a walk of the connections, is reused: a client
#: asking many times a second (each frame is allowed) costs one scan a second
REUSE = 1.0


#: seconds a connection waits between two ``hub_status`` (each answer may be large)
PER_CONNECTION = 0.5


class _Reused:
    """The last scans and answers, and when they were made (one per hub)."""

    def __init__(self) -> None:
        self.pending: tuple[float, list[Pending]] | None = None
        self.everyone: tuple[float, dict[str, dict[str, list[Any]]]] | None = None
        #: token id (None: no --auth) -> (when, the answer built for that token)
        self.answers: dict[str | None, tuple[float, HubStatusResult]] = {}
        #: when each connection last asked
        self.asked: weakref.WeakKeyDictionary[Session, float] = weakref.WeakKeyDictionary()
        self.lock = asyncio.Lock()


_reused: weakref.WeakKeyDictionary[Hub, _Reused] = weakref.WeakKeyDictionary()


def _cache(hub: Hub) -> _Reused:
    cache = _reused.get(hub)
    if cache is None:
        cache = _reused[hub] = _Reused()
    return cache


async def _pending(hub: Hub) -> list[Pending]:
    cache = _cache(hub)
    async with cache.lock:  # concurrent askers share one scan
        now = time.monotonic()
        if cache.pending is not None and now - cache.pending[0] < REUSE:
            return cache.pending[1]
        after = max(hub.pruned_seq, hub.committed_seq - PENDING_WINDOW)
        found = await hub.store.pending(after)
        cache.pending = (time.monotonic(), found)
        return found


def _everyone(hub: Hub) -> dict[str, dict[str, list[Any]]]:
    cache = _cache(hub)
    now = time.monotonic()
    if cache.everyone is None or now - cache.everyone[0] >= REUSE:
        cache.everyone = (now, hub.router.everyone())
    return cache.everyone[1]


async def gauges(hub: Hub) -> None:
    """Set the gauges a scrape cannot count as it goes (store, engine, mail)."""
    m = hub.metrics
    m.healthy.set(0 if hub.log.problem() else 1)
    m.store_bytes.set(await hub.store.size() or 0)
    lag = await hub.log.lag()
    m.engine_lag.set(lag or 0)
    m.pending.set(sum(p.count for p in await _pending(hub)))


async def status(hub: Hub, session: Session, frame: HubStatus) -> HubStatusResult:
    """The answer to ``hub_status``: in full without ``--auth`` or for an admin token;
    else the token's channels and its names' mail only. One answer per token is built
    at most every :data:`REUSE` seconds, and a connection asks at most every
    :data:`PER_CONNECTION` seconds (else ``rate_limited``)."""
    cache = _cache(hub)
    now = time.monotonic()
    last = cache.asked.get(session)
    if last is not None and now - last < PER_CONNECTION:
        raise FrameError(
            ErrorCode.RATE_LIMITED,
            f"hub_status at most every {PER_CONNECTION:g} s per connection; "
            f"retry in {PER_CONNECTION - (now - last):.1f} s",
            frame.ref,
        )
    cache.asked[session] = now
    scope = session.grant.id if session.grant is not None else None
    kept = cache.answers.get(scope)
    if kept is not None and now - kept[0] < REUSE:
        return msgspec.structs.replace(kept[1], ref=frame.ref)
    answer = await _build(hub, session, frame)
    if len(cache.answers) >= 1000:  # tokens come and go: keep the recent ones
        cache.answers.clear()
    cache.answers[scope] = (time.monotonic(), answer)
    return answer


async def _build(hub: Hub, session: Session, frame: HubStatus) -> HubStatusResult:
    grant = session.grant
    party = None if grant is None else party_of(grant)
    full = party is None

    def visible(channel: str) -> bool:
        return grant is None or may_use_channel(grant, channel)

    channels: dict[str, list[Member]] = {
        channel: [member_of(name, sessions) for name, sessions in sorted(names.items())]
        for channel, names in sorted(_everyone(hub).items())
        if visible(channel)
    }
    waiting = [
        Waiting(p.channel, p.recipient, p.count, p.oldest_seq, p.oldest_ts)
        for p in await _pending(hub)
        if visible(p.channel) and (party is None or p.recipient in party)
    ]
    waiting.sort(key=lambda w: (w.channel, w.name))
    problem = hub.log.problem()
    engine = "sqlite" if not hub.log.shared else "nats"
    return HubStatusResult(
        ref=frame.ref,
        version=__version__,
        hub=hub.hub_id,
        engine=engine,
        uptime=round(time.time() - hub.started, 3),
        healthy=problem is None,
        problem=problem,
        seq=hub.committed_seq,
        pruned_seq=hub.pruned_seq,
        retention_days=hub.config.retention_days,
        retention_count=hub.config.retention_count,
        connections=len(hub.sessions),
        queued=hub.ingest.queued() if full else 0,
        channels=channels,
        pending=waiting,
        pending_window=PENDING_WINDOW,
        full=full,
        store=(hub.log.location or hub.store.location) if full else None,
        store_bytes=await hub.store.size() if full else None,
        lag=await hub.log.lag() if full else None,
        oldest_pending=min(waiting, key=lambda w: w.oldest_seq, default=None),
    )
