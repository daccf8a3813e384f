"""Fan-out: a batch of committed events to the sessions that receive them.

Each event is encoded once per codec and the same bytes go to every recipient (see
:mod:`wsbus.broadcast`). A session that reads ``events`` frames (``hello.capabilities``:
``batch``) gets what this batch holds for it as one frame, when that is more than one
event: sessions that receive the same events share that frame's bytes too, so a
burst of k broadcasts to n subscribers is n writes, not k·n. A session still
replaying holds its events (written after the replay, in order); one holding more
than ``max_held`` is a slow consumer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import cast

from .broadcast import Writer
from .loopguard import own_loop
from .metrics import HubMetrics
from .routing import Router
from .schema import BROADCAST, Event, Events, HubFrame
from .session import Session

__all__ = ["BATCH_BYTES", "BATCH_EVENTS", "FanOut", "batches"]

#: at most this many events in one ``events`` frame
BATCH_EVENTS = 256
#: and about this many bytes of bodies (a client's frame limit is 1 MiB by default)
BATCH_BYTES = 256 << 10
#: what an event costs in a frame besides its body (fields, JSON punctuation)
_OVERHEAD = 200


def batches(events: list[Event]) -> Iterator[HubFrame]:
    """``events`` as frames for a session that reads ``events``: one ``event`` alone,
    else ``events`` frames of at most :data:`BATCH_EVENTS` events and about
    :data:`BATCH_BYTES` bytes (a single larger event goes alone)."""
    if len(events) == 1:
        yield events[0]
        return
    chunk: list[Event] = []
    size = 0
    for ev in events:
        cost = len(ev.body) + _OVERHEAD
        if chunk and (len(chunk) >= BATCH_EVENTS or size + cost > BATCH_BYTES):
            yield chunk[0] if len(chunk) == 1 else Events(events=chunk)
            chunk, size = [], 0
        chunk.append(ev)
        size += cost
    if chunk:
        yield chunk[0] if len(chunk) == 1 else Events(events=chunk)


class FanOut:
    """Writes committed events to their recipients (see the module docstring)."""

    def __init__(
        self,
        router: Router,
        writer: Writer,
        metrics: HubMetrics,
        max_held: int,
        slow: Callable[[Session], None],
    ) -> None:
        self.router = router
        self.writer = writer
        self.metrics = metrics
        self.max_held = max_held
        self.slow = slow

    def start(self) -> dict[Session, list[Event]]:
        """A new batch: what batch-reading sessions get, written by :meth:`finish`."""
        return {}

    def event(self, ev: Event, batched: dict[Session, list[Event]]) -> None:
        """Write ``ev`` to its live recipients (batch readers: gathered in ``batched``),
        hold it for those still replaying."""
        targets = self.router.recipients(ev.channel, ev.from_, ev.to)
        if not targets:
            return
        live: list[Session] = []
        for s in cast(list[Session], targets):
            if s.live:
                live.append(s)
            elif not s.closed:
                s.held.append(ev)  # replaying: written after the replay, in order
                if len(s.held) > self.max_held:
                    self.slow(s)
        if not live:
            return
        self.metrics.deliveries.inc(len(live))
        if ev.loop and ev.to == BROADCAST:
            # each recipient learns the count of its own pair only: the others tell who
            # exchanged direct messages with the sender
            by_name = cast(dict[str, set[Session]], self.router.by_name)
            special = {s for n in ev.loop for s in by_name.get(n, ()) if s.live}
            self._write([s for s in live if s not in special], own_loop(ev, ()), batched)
            for one in special.intersection(live):
                self._write([one], own_loop(ev, one.names), batched)
        else:
            self._write(live, ev, batched)

    def _write(
        self, sessions: list[Session], ev: Event, batched: dict[Session, list[Event]]
    ) -> None:
        now: list[Session] = []
        for s in sessions:
            if s.batch:
                kept = batched.get(s)
                if kept is None:
                    batched[s] = [ev]
                else:
                    kept.append(ev)
            else:
                now.append(s)
        if now:
            self.writer.write_all(now, ev)

    def finish(self, batched: dict[Session, list[Event]]) -> None:
        """Write what the batch gathered: sessions that get the very same events share
        each frame's bytes."""
        if not batched:
            return
        groups: dict[tuple[int, ...], tuple[list[Event], list[Session]]] = {}
        for s, evs in batched.items():
            key = tuple(map(id, evs))
            group = groups.get(key)
            if group is None:
                groups[key] = (evs, [s])
            else:
                group[1].append(s)
        for evs, sessions in groups.values():
            for frame in batches(evs):
                self.writer.write_all([s for s in sessions if not s.closed], frame)
