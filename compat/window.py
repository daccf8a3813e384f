"""The shim's window of recent events, so most ``/recv`` polls never touch the store.

Bounded twice, whichever comes first: ``max_events`` events and ``max_bytes`` of
accounted memory (each body's size plus a fixed cost per message), so the hub's
memory does not grow with the bodies it stores, whether or not a legacy client
ever polls. Events older than the window are read from the store, off the loop.
Bodies over ``KEEP_BODY`` bytes are not kept at all, only their event's place:
a poll that would return one is answered from the store. (Keeping a few hundred
64 KiB bodies alive among the hub's short-lived buffers fragments the heap: 16
MiB of them held the hub's RSS 85 MiB up; not keeping them, 5.)

Indexed, never scanned: messages are kept in *runs*, one per ``(channel,
recipient)`` (``*`` for broadcasts), each in ``ts`` order. A poll for ``name`` on
``channel`` bisects two runs — its direct messages and the channel's broadcasts
— and merges them, so its cost depends on what it returns, not on the window's
size. Only the poller's own broadcasts are skipped one by one; past
``max_skip`` of them the poll is handed to the store instead.
"""

from __future__ import annotations

import bisect
import sys
from collections import deque

from wsbus.leases import BOOK
from wsbus.schema import BROADCAST, Event

from .messages import LegacyMessage, legacy_message

__all__ = ["KEEP_BODY", "MESSAGE_COST", "RecentEvents"]

#: accounted bytes per held message besides its body: the struct, its list slots,
#: its ts float and its place in the eviction order (measured with tracemalloc)
MESSAGE_COST = 320

#: bodies larger than this (``sys.getsizeof``, bytes) stay in the store only
KEEP_BODY = 4096

#: the ``msg`` of a held message whose body is in the store only (compared by identity)
_IN_STORE = "\x00(in the store)"


class _Run:
    """The messages of one ``(channel, recipient)``, oldest first. Dropping the oldest
    clears its slot and moves ``head`` (so a dropped body is freed at once); the
    lists are compacted when half of them is dropped slots."""

    __slots__ = ("head", "msgs", "ts")

    def __init__(self) -> None:
        self.msgs: list[LegacyMessage | None] = []
        self.ts: list[float] = []
        self.head = 0

    def __len__(self) -> int:
        return len(self.msgs) - self.head

    def append(self, msg: LegacyMessage) -> None:
        self.msgs.append(msg)
        self.ts.append(msg.ts)

    def first(self) -> LegacyMessage:
        msg = self.msgs[self.head]
        assert msg is not None
        return msg

    def drop_first(self) -> None:
        self.msgs[self.head] = None
        self.head += 1
        if self.head >= 64 and 2 * self.head >= len(self.msgs):
            del self.msgs[: self.head]
            del self.ts[: self.head]
            self.head = 0

    def after(self, since: float) -> int:
        """Index of the first message with ``ts > since``."""
        return bisect.bisect_right(self.ts, since, self.head)


class RecentEvents:
    """The latest committed events as legacy messages; every event with ``ts >
    floor_ts`` is held, older ones are looked up in the store."""

    def __init__(
        self,
        floor_ts: float,
        max_events: int = 20_000,
        max_bytes: int = 16 << 20,
        max_skip: int = 1000,
    ) -> None:
        self.floor_ts = floor_ts
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.max_skip = max_skip
        #: accounted bytes of what is held
        self.bytes = 0
        self._runs: dict[tuple[str, str], _Run] = {}
        #: (run key, accounted bytes) of every held message, oldest first
        self._order: deque[tuple[tuple[str, str], int]] = deque()

    def __len__(self) -> int:
        return len(self._order)

    def add(self, events: list[Event]) -> None:
        runs = self._runs
        order = self._order
        for ev in events:
            if ev.to == BOOK:  # lease events are no one's messages
                continue
            key = (ev.channel, ev.to)
            run = runs.get(key)
            if run is None:
                run = runs[key] = _Run()
            size = sys.getsizeof(ev.body)
            msg = legacy_message(ev)
            if size > KEEP_BODY:
                msg.msg = _IN_STORE
                size = 0
            run.append(msg)
            cost = MESSAGE_COST + size
            order.append((key, cost))
            self.bytes += cost
        while order and (len(order) > self.max_events or self.bytes > self.max_bytes):
            self._evict()

    def _evict(self) -> None:
        key, cost = self._order.popleft()
        run = self._runs[key]
        self.floor_ts = run.first().ts
        run.drop_first()
        if not run:
            del self._runs[key]
        self.bytes -= cost

    def drop_through(self, seq: int) -> None:
        """Forget every event up to ``seq`` (retention removed them from the store)."""
        while self._order and self._runs[self._order[0][0]].first().seq <= seq:
            self._evict()

    def covers(self, since: float) -> bool:
        return since >= self.floor_ts

    def fetch(
        self, channel: str, name: str, since: float, limit: int
    ) -> list[LegacyMessage] | None:
        """Messages for ``name`` on ``channel`` with ``ts > since``, oldest first: its
        direct messages and the channel's broadcasts except its own. None when the
        store must answer: a body in the answer is kept there only, or more than
        ``max_skip`` of the poller's own broadcasts were in the way."""
        direct = self._runs.get((channel, name))
        shared = self._runs.get((channel, BROADCAST))
        # slots before a run's head are dropped (None); i and j start at or after it
        d_msgs: list[LegacyMessage | None] = direct.msgs if direct is not None else []
        b_msgs: list[LegacyMessage | None] = shared.msgs if shared is not None else []
        i = direct.after(since) if direct is not None else 0
        j = shared.after(since) if shared is not None else 0
        out: list[LegacyMessage] = []
        skipped = 0
        while len(out) < limit:
            d = d_msgs[i] if i < len(d_msgs) else None
            b = b_msgs[j] if j < len(b_msgs) else None
            if b is None or (d is not None and d.seq < b.seq):
                if d is None:
                    break
                if d.msg is _IN_STORE:
                    return None
                out.append(d)
                i += 1
                continue
            j += 1
            if b.from_ == name:
                skipped += 1
                if skipped > self.max_skip:
                    return None
                continue
            if b.msg is _IN_STORE:
                return None
            out.append(b)
        return out
