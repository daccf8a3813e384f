"""The legacy ``/inbox`` counts: retained messages per ``(channel, recipient)``.

The shim's own state, kept from what the hub's tail yields: a snapshot of the index
at start (and again after retention removed events), plus every event above the
snapshot's last seq. While a snapshot is read, arriving events wait in a short list,
so none is counted twice or missed.
"""

from __future__ import annotations

from wsbus.leases import BOOK
from wsbus.schema import Event
from wsbus.store import Store

__all__ = ["InboxCounts"]


class InboxCounts:
    """Per ``(channel, recipient)`` counts of retained events (``*``: broadcasts)."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], int] = {}
        #: the highest seq the counts include
        self.upto = 0
        #: events that arrived while a snapshot was read (None: not reading one)
        self._arrived: list[Event] | None = []

    def add(self, events: list[Event]) -> None:
        """Count a batch the hub's tail yielded."""
        if self._arrived is not None:
            self._arrived.extend(events)
            return
        self._count(events)

    def _count(self, events: list[Event]) -> None:
        for ev in events:
            if ev.seq > self.upto:
                if ev.to != BOOK:  # lease events are no one's messages
                    key = (ev.channel, ev.to)
                    self.counts[key] = self.counts.get(key, 0) + 1
                self.upto = ev.seq

    async def load(self, store: Store) -> None:
        """Read the counts from the index (at start, and after retention)."""
        if self._arrived is None:
            self._arrived = []
        try:
            counts, self.upto = await store.counts()
            self.counts = {k: n for k, n in counts.items() if k[1] != BOOK}
        finally:
            arrived, self._arrived = self._arrived, None
        self._count(arrived)
