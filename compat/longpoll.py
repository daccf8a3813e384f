"""Long-polls woken by commits, not by sleeping: the heart of the legacy ``/recv``.

A blocked ``/recv`` registers a waiter for its ``(channel, name)`` *before* it
looks for messages, so a commit that lands in between still wakes it. The hub
calls :meth:`LongPoll.committed` with every committed batch; a direct event
wakes its addressee's waiters, a broadcast wakes every waiter on the channel.

Invariant 5 (the legacy ``now`` never skips): ``now`` is taken with
:meth:`wsbus.log.Log.watermark` *before* the lookup, so every event with
``ts <= now`` was committed when the lookup ran and is in the answer; when
``max`` cuts the answer short, ``now`` is the ``ts`` of the last message
returned, so the cursor rule ``since = max(max(ts), now)`` resumes right after it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

from wsbus.hub import Hub
from wsbus.schema import BROADCAST, Event
from wsbus.store import Query

from .inbox import InboxCounts
from .messages import LegacyMessage, RecvParams, RecvResponse, legacy_message
from .window import RecentEvents

__all__ = ["LongPoll", "Waiters"]


class Waiters:
    """Futures of blocked long-polls, by channel then name."""

    def __init__(self) -> None:
        self._by_channel: dict[str, dict[str, set[asyncio.Future[None]]]] = {}

    def add(self, channel: str, name: str) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._by_channel.setdefault(channel, {}).setdefault(name, set()).add(fut)
        return fut

    def discard(self, channel: str, name: str, fut: asyncio.Future[None]) -> None:
        names = self._by_channel.get(channel)
        if names is None:
            return
        futs = names.get(name)
        if futs is None:
            return
        futs.discard(fut)
        if not futs:
            del names[name]
            if not names:
                del self._by_channel[channel]

    def wake(self, events: Iterable[Event]) -> None:
        for ev in events:
            names = self._by_channel.get(ev.channel)
            if not names:
                continue
            if ev.to == BROADCAST:
                for name, futs in names.items():
                    if name != ev.from_:
                        _set_all(futs)
            else:
                direct = names.get(ev.to)
                if direct:
                    _set_all(direct)

    def wake_all(self) -> None:
        for names in self._by_channel.values():
            for futs in names.values():
                _set_all(futs)

    def __len__(self) -> int:
        return sum(len(f) for names in self._by_channel.values() for f in names.values())


def _set_all(futs: set[asyncio.Future[None]]) -> None:
    for fut in futs:
        if not fut.done():
            fut.set_result(None)


class LongPoll:
    """Answers ``/recv`` from the hub's committed events, blocking without polling."""

    def __init__(
        self,
        hub: Hub,
        timeout: float = 30.0,
        *,
        cache_events: int = 20_000,
        cache_bytes: int = 16 << 20,
    ) -> None:
        self.hub = hub
        self.timeout = timeout
        self.waiters = Waiters()
        self.recent = RecentEvents(hub.committed_ts, cache_events, cache_bytes)
        self._pruned_seq = hub.pruned_seq
        #: the /inbox counts (loaded by :meth:`start`, kept from the batches)
        self.inbox = InboxCounts()
        self._counted_pruned = hub.pruned_seq
        self.stopping = False
        hub.listeners.append(self.committed)
        hub.access.listeners.append(self.waiters.wake_all)  # pollers re-check their token

    def committed(self, events: list[Event]) -> None:
        """Called by the hub with each batch its tail yields (after fan-out)."""
        self.recent.add(events)
        self.inbox.add(events)
        self.waiters.wake(events)

    async def start(self) -> None:
        """Read the /inbox counts (before the shim takes requests)."""
        await self.inbox.load(self.hub.store)

    async def counts(self) -> dict[tuple[str, str], int]:
        """The /inbox counts, read again once retention removed events."""
        pruned = self.hub.pruned_seq
        if pruned != self._counted_pruned:
            self._counted_pruned = pruned
            await self.inbox.load(self.hub.store)
        return self.inbox.counts

    def stop(self) -> None:
        """Answer every pending poll now (the hub is shutting down)."""
        self.stopping = True
        self.waiters.wake_all()

    async def fetch(self, p: RecvParams) -> list[LegacyMessage]:
        """From the window when it covers ``since`` (the usual case), else from the
        store, on its reader thread."""
        if self.hub.pruned_seq > self._pruned_seq:  # retention ran since the last poll
            self._pruned_seq = self.hub.pruned_seq
            self.recent.drop_through(self._pruned_seq)
        if self.recent.covers(p.since):
            found = self.recent.fetch(p.channel, p.to, p.since, p.max)
            if found is not None:
                return found
        store = self.hub.store
        after = max(await store.seq_at_ts(p.since), self.hub.pruned_seq)
        q = Query(limit=p.max, channels=[p.channel], entitled=[p.to], after=after)
        return [legacy_message(e) for e in await store.query(q)]

    async def recv(
        self, p: RecvParams, still_valid: Callable[[], bool] | None = None
    ) -> RecvResponse | None:
        """The messages for ``p``, waiting up to the timeout when ``p.block``; None
        when ``still_valid`` turns false meanwhile (the caller's token was revoked)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        while True:
            if still_valid is not None and not still_valid():
                return None
            fut = self.waiters.add(p.channel, p.to) if p.block else None
            try:
                now = self.hub.log.watermark()  # invariant 5
                if self.hub.log.shared:  # a cursor from a hub ahead of this one: not back
                    now = max(now, p.since)
                events = await self.fetch(p)
                left = deadline - loop.time()
                if events or fut is None or self.stopping or left <= 0:
                    if len(events) >= p.max:
                        now = events[-1].ts  # cut short: resume right after the last one
                    return RecvResponse(events, now)
                await asyncio.wait([fut], timeout=left)
            finally:
                if fut is not None:
                    self.waiters.discard(p.channel, p.to, fut)
