"""The names that may have direct mail waiting, known without asking the store.

A connection without ``resume`` gets its names' direct events still pending a final
receipt: a query on the store's reader thread, and handing it there and back. When a
crowd of new names connects at once, those queries were a sixth of the hub's CPU,
nearly all of it for names that never had a direct message. So the hub keeps a
superset of the names with mail: the store's recipients at start (one index seek per
channel and recipient, not a scan of the history), then the recipient of every
direct event it fans out — whichever hub committed it, before any session can be
told it exists (a replay reads up to ``session.upto``, the last event fanned out).
A name is never taken out (after its receipts or a prune it is asked about in vain,
as before). Past :data:`MAX_NAMES` the hub stops keeping them and always asks.
"""

from __future__ import annotations

from collections.abc import Iterable

from .leases import BOOK
from .schema import BROADCAST, Event
from .store import Store

__all__ = ["MAX_NAMES", "MailNames"]

#: names kept at most (about 6 MiB); beyond, every connection asks the store
MAX_NAMES = 100_000


class MailNames:
    """A superset of the names with direct mail pending (see the module docstring)."""

    __slots__ = ("_names",)

    def __init__(self) -> None:
        #: None: not known (before :meth:`load`, or past MAX_NAMES): ask the store
        self._names: set[str] | None = None

    async def load(self, store: Store) -> None:
        """The recipients of the store's direct events (call before the first tail batch)."""
        found = await store.recipients(MAX_NAMES + 1)
        self._names = set(found) if len(found) <= MAX_NAMES else None

    def saw(self, events: Iterable[Event]) -> None:
        """Events fanned out: their recipients may have mail from now on."""
        names = self._names
        if names is None:
            return
        for ev in events:
            to = ev.to
            if to != BROADCAST and to != BOOK:
                names.add(to)
        if len(names) > MAX_NAMES:
            self._names = None

    def may_have(self, names: Iterable[str]) -> bool:
        """Whether any of ``names`` may have direct mail waiting (True: ask the store)."""
        known = self._names
        return known is None or any(name in known for name in names)
