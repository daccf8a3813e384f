"""Loop guard: how often two names exchanged messages within a recent window.

Two agents that answer every message loop forever. The hub counts the events
between each pair (either direction) over a sliding window; recipients of a new
event learn the count for their pair (``Event.loop``) and can warn the agent.
Only an *exchange* is reported — messages went both ways within the window — so
a one-way burst (a person handing out work) is not mistaken for a loop.

Broadcasts (a project post to everyone) count too, per channel, without touching
every member of the channel: only names that wrote to the sender, or broadcast in
the channel, within the window can be in an exchange with it, so only they are
looked at. Every update is O(1) amortized per pair (a window keeps a count per
direction), so a busy pair costs no more than a quiet one. Plain synchronous
code, tested without sockets.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Sequence

import msgspec

from .schema import Event

__all__ = ["LoopGuard"]


class _Window:
    """Times of the events between one pair, and how many went from its first name."""

    __slots__ = ("forward", "times")

    def __init__(self) -> None:
        self.times: deque[tuple[float, bool]] = deque()
        self.forward = 0

    def trim(self, cutoff: float) -> None:
        times = self.times
        while times and times[0][0] <= cutoff:
            if times.popleft()[1]:
                self.forward -= 1

    def add(self, now: float, forward: bool) -> None:
        self.times.append((now, forward))
        if forward:
            self.forward += 1

    def sent(self, forward: bool) -> int:
        """Events in the window sent by the first name (``forward``) or the second."""
        return self.forward if forward else len(self.times) - self.forward


class LoopGuard:
    """Sliding-window counts of events per unordered pair of names."""

    def __init__(self, window: float = 180.0, max_pairs: int = 100_000) -> None:
        self.window = window
        self.max_pairs = max_pairs
        #: unordered pair -> its direct events in the window
        self._pairs: dict[tuple[str, str], _Window] = {}
        #: (channel, sender) -> times of its broadcasts
        self._bcasts: dict[tuple[str, str], deque[float]] = {}
        #: channel -> names that broadcast there (last time)
        self._chan_senders: dict[str, dict[str, float]] = {}
        #: name -> names it exchanged direct events with (last time)
        self._partners: dict[str, dict[str, float]] = {}

    @staticmethod
    def _key(a: str, b: str) -> tuple[str, str]:
        return (a, b) if a <= b else (b, a)

    def record(
        self, now: float, sender: str, recipients: Iterable[str], channel: str | None = None
    ) -> dict[str, int]:
        """Count one direct event from ``sender`` to each recipient; return, for each
        recipient that has also written to ``sender`` within the window, how many
        events went between the two (this one included). With ``channel``, the two
        names' broadcasts in that channel count as well."""
        if self.window <= 0:
            return {}
        cutoff = now - self.window
        out: dict[str, int] = {}
        for r in recipients:
            if r == sender:
                continue
            key = self._key(sender, r)
            pair = self._pairs.get(key)
            if pair is None:
                if len(self._pairs) >= self.max_pairs:
                    self._evict(cutoff)
                pair = self._pairs[key] = _Window()
            pair.trim(cutoff)
            forward = sender == key[0]
            pair.add(now, forward)
            self._partners.setdefault(sender, {})[r] = now
            self._partners.setdefault(r, {})[sender] = now
            theirs = mine = 0
            if channel is not None:
                theirs = self._live_bcasts(channel, r, cutoff)
                mine = self._live_bcasts(channel, sender, cutoff)
            if theirs or pair.sent(not forward):
                out[r] = len(pair.times) + theirs + mine
        return out

    def record_broadcast(
        self, now: float, sender: str, channel: str, is_member: Callable[[str], bool]
    ) -> dict[str, int]:
        """Count a broadcast from ``sender`` in ``channel``; return, for each member
        in an exchange with the sender (direct events either way, or broadcasts of
        both in this channel), the events between the two within the window."""
        if self.window <= 0:
            return {}
        cutoff = now - self.window
        mine = self._bcasts.get((channel, sender))
        if mine is None:
            if len(self._bcasts) >= self.max_pairs:
                self._evict(cutoff)
            mine = self._bcasts[(channel, sender)] = deque()
        _trim(mine, cutoff)
        mine.append(now)
        senders = self._chan_senders.setdefault(channel, {})
        senders[sender] = now
        candidates = {n for n, t in senders.items() if t > cutoff}
        candidates.update(n for n, t in self._partners.get(sender, {}).items() if t > cutoff)
        candidates.discard(sender)
        out: dict[str, int] = {}
        for r in candidates:
            if not is_member(r):
                continue
            theirs = self._live_bcasts(channel, r, cutoff)
            key = self._key(sender, r)
            pair = self._pairs.get(key)
            directs = back = 0
            if pair is not None:
                pair.trim(cutoff)
                directs = len(pair.times)
                back = pair.sent(r == key[0])
            if theirs or back:
                out[r] = len(mine) + theirs + directs
        return out

    def count(self, now: float, a: str, b: str) -> int:
        """Direct events between ``a`` and ``b`` within the window ending at ``now``."""
        pair = self._pairs.get(self._key(a, b))
        if pair is None:
            return 0
        cutoff = now - self.window
        return sum(1 for t, _ in pair.times if t > cutoff)

    def _live_bcasts(self, channel: str, name: str, cutoff: float) -> int:
        times = self._bcasts.get((channel, name))
        if not times:
            return 0
        _trim(times, cutoff)
        return len(times)

    def _evict(self, cutoff: float) -> None:
        stale = [k for k, p in self._pairs.items() if not p.times or p.times[-1][0] <= cutoff]
        for k in stale:
            del self._pairs[k]
        for key in [k for k, b in self._bcasts.items() if not b or b[-1] <= cutoff]:
            del self._bcasts[key]
        for table in (*self._chan_senders.values(), *self._partners.values()):
            for name in [n for n, t in table.items() if t <= cutoff]:
                del table[name]
        for outer in (self._chan_senders, self._partners):
            for key2 in [k for k, v in outer.items() if not v]:
                del outer[key2]
        if len(self._pairs) >= self.max_pairs:  # still full: drop the oldest half
            by_age = sorted(self._pairs, key=lambda k: self._pairs[k].times[-1][0])
            for k in by_age[: max(1, len(by_age) // 2)]:
                del self._pairs[k]
        if len(self._bcasts) >= self.max_pairs:
            olds = sorted(self._bcasts, key=lambda k: self._bcasts[k][-1])
            for k2 in olds[: max(1, len(olds) // 2)]:
                del self._bcasts[k2]


def _trim(times: deque[float], cutoff: float) -> None:
    while times and times[0] <= cutoff:
        times.popleft()


def own_loop(ev: Event, names: Sequence[str]) -> Event:
    """``ev`` with only the loop-guard counts of ``names`` (a broadcast's ``loop``
    holds one count per member in an exchange with its sender)."""
    assert ev.loop is not None
    mine = {n: c for n, c in ev.loop.items() if n in names}
    return msgspec.structs.replace(ev, loop=mine or None)
