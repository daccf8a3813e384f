"""Loop guard: how often two names exchanged messages within a recent window.

Two agents that answer every message loop forever. The hub counts the events
between each pair (either direction) over a sliding window; recipients of a new
event learn the count for their pair (``Event.loop``) and can warn the agent.
Only an *exchange* is reported — messages went both ways within the window — so
a one-way burst (a person handing out work) is not mistaken for a loop.
Plain synchronous code, tested without sockets.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

__all__ = ["LoopGuard"]


class LoopGuard:
    """Sliding-window counts of events per unordered pair of names."""

    def __init__(self, window: float = 180.0, max_pairs: int = 100_000) -> None:
        self.window = window
        self.max_pairs = max_pairs
        #: unordered pair -> (time, sent by the pair's first name) per event
        self._pairs: dict[tuple[str, str], deque[tuple[float, bool]]] = {}

    @staticmethod
    def _key(a: str, b: str) -> tuple[str, str]:
        return (a, b) if a <= b else (b, a)

    def record(self, now: float, sender: str, recipients: Iterable[str]) -> dict[str, int]:
        """Count one event from ``sender`` to each recipient; return, for each
        recipient that has also written to ``sender`` within the window, how many
        events went between the two (this one included)."""
        if self.window <= 0:
            return {}
        cutoff = now - self.window
        out: dict[str, int] = {}
        for r in recipients:
            if r == sender:
                continue
            key = self._key(sender, r)
            times = self._pairs.get(key)
            if times is None:
                if len(self._pairs) >= self.max_pairs:
                    self._evict(cutoff)
                times = self._pairs[key] = deque()
            while times and times[0][0] <= cutoff:
                times.popleft()
            forward = sender == key[0]
            times.append((now, forward))
            if any(f != forward for _, f in times):
                out[r] = len(times)
        return out

    def count(self, now: float, a: str, b: str) -> int:
        """Events between ``a`` and ``b`` within the window ending at ``now``."""
        times = self._pairs.get(self._key(a, b))
        if not times:
            return 0
        cutoff = now - self.window
        return sum(1 for t, _ in times if t > cutoff)

    def _evict(self, cutoff: float) -> None:
        stale = [k for k, t in self._pairs.items() if not t or t[-1][0] <= cutoff]
        for k in stale:
            del self._pairs[k]
        if len(self._pairs) >= self.max_pairs:  # still full: drop the oldest half
            by_age = sorted(self._pairs, key=lambda k: self._pairs[k][-1][0])
            for k in by_age[: max(1, len(by_age) // 2)]:
                del self._pairs[k]
