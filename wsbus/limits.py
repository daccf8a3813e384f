"""Rate limits as token buckets: plain arithmetic on a clock the caller passes in.

A websocket connection is *throttled*: when its bucket is empty the hub stops
reading from it until the bucket refills (TCP pushes back on the client, no
frame is dropped), tells it once with a ``rate_limited`` error, and closes it
with 4029 when it stays throttled for ``abuse`` seconds in a row. An HTTP
caller is *refused* with 429 and ``Retry-After`` instead (a request cannot wait
in a socket the way a frame can).
"""

from __future__ import annotations

import msgspec

__all__ = ["Bucket", "RateLimits", "Throttle"]


class Bucket:
    """``rate`` units per second, holding at most ``rate * burst`` (``rate`` 0: no limit)."""

    __slots__ = ("capacity", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.capacity = rate * burst
        self.tokens = self.capacity
        self.stamp = now

    def _refill(self, now: float) -> None:
        if now > self.stamp:
            self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def charge(self, amount: float, now: float) -> float:
        """Take ``amount`` (the balance may go negative); the seconds until it is
        back to zero, which is how long the caller should wait."""
        if self.rate <= 0:
            return 0.0
        self._refill(now)
        self.tokens -= amount
        return -self.tokens / self.rate if self.tokens < 0 else 0.0

    def short(self, amount: float, now: float) -> float:
        """Seconds until ``amount`` is available (0: it is now). Takes nothing."""
        if self.rate <= 0:
            return 0.0
        self._refill(now)
        return 0.0 if self.tokens >= amount else (amount - self.tokens) / self.rate


class Throttle:
    """Frames per second and bytes per second for one connection or caller.

    :meth:`charge` returns how long to wait before reading on; :attr:`warned`
    is set the first time a wait starts (so the caller can say so once);
    :meth:`abusive` is true once every frame for ``abuse`` seconds had to wait.
    """

    __slots__ = ("abuse", "bytes", "events", "since", "warned")

    def __init__(
        self, events: float, bytes_: float, burst: float, abuse: float, now: float
    ) -> None:
        self.events = Bucket(events, burst, now)
        self.bytes = Bucket(bytes_, burst, now)
        self.abuse = abuse
        self.since: float | None = None  # when the current run of throttled frames began
        self.warned = False

    @property
    def enabled(self) -> bool:
        return self.events.rate > 0 or self.bytes.rate > 0

    def charge(self, size: int, now: float) -> float:
        """Account for one frame of ``size`` bytes; seconds to wait before the next read."""
        wait = max(self.events.charge(1, now), self.bytes.charge(size, now))
        if wait <= 0:
            self.since = None
        elif self.since is None:
            self.since = now
        return wait

    def abusive(self, now: float) -> bool:
        return self.abuse > 0 and self.since is not None and now - self.since >= self.abuse

    def try_take(self, size: int, now: float) -> float:
        """(HTTP) take one request of ``size`` bytes, or return the seconds to retry after."""
        wait = max(self.events.short(1, now), self.bytes.short(size, now))
        if wait <= 0:
            self.events.charge(1, now)
            self.bytes.charge(size, now)
        return wait


class RateLimits(msgspec.Struct, frozen=True):
    """Per-connection rate: frames/s and bytes/s (0: no limit), a bucket holding
    ``burst`` seconds of each, and ``abuse``: seconds throttled in a row before 4029."""

    events: float = 1000.0
    bytes: float = 4 << 20
    burst: float = 5.0
    abuse: float = 30.0

    def throttle(self, now: float) -> Throttle:
        return Throttle(self.events, self.bytes, self.burst, self.abuse, now)
