"""Rate limits as token buckets, and the websocket connection budget: plain
arithmetic on a clock the caller passes in.

A websocket connection is *throttled*: when its bucket is empty the hub stops
reading from it until the bucket refills (TCP pushes back on the client, no
frame is dropped), tells it once with a ``rate_limited`` error, and closes it
with 4029 when it stays throttled for ``abuse`` seconds in a row. An HTTP
caller is *refused* with 429 and ``Retry-After`` instead (a request cannot wait
in a socket the way a frame can).

:class:`ConnectionBudget` decides, before the websocket upgrade, whether a new
connection may open: ``max_connections`` in all, of which at most
``max_unauthenticated`` (and ``max_unauthenticated_per_address`` from one address)
may be connections that have not yet proven who they are, so a flood of silent
sockets cannot lock out clients that hold a token.
"""

from __future__ import annotations

import functools
import gc
import ipaddress
import math
import resource

import msgspec

from .config import DEFAULT_MAX_CONNECTIONS, Settings

__all__ = [
    "LISTEN_BACKLOG",
    "Bucket",
    "ConnectionBudget",
    "RateLimits",
    "Refusal",
    "Throttle",
    "Ticket",
    "address_key",
    "connection_budget",
    "fit_connections",
    "raise_nofile",
]

#: open files a hub keeps for everything but its websocket connections (the store,
#: its listening sockets, HTTP requests and long-polls): this many, or a quarter of
#: a smaller limit
FILES_BESIDES_CONNECTIONS = 1024
#: what macOS lets a process ask for when its hard limit says "unlimited"
_OPEN_MAX = 10240


def raise_nofile() -> int:
    """Raise the open-file soft limit to the hard one; return the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    unlimited = hard == resource.RLIM_INFINITY
    for target in (max(soft, 1 << 20), _OPEN_MAX) if unlimited else (hard,):
        if soft >= target:
            return soft
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            return target
        except (ValueError, OSError):
            continue
    return soft


def freeze_startup_heap() -> None:
    """Put what start-up made (modules, settings, the store's caches: most of a
    hub's objects) out of the garbage collector's reach. A crowd connecting
    triggers full collections, and each walked all of those: 7% of a hub's CPU
    in a storm of 1000 connections, profiled (``docs/SCALE.md``). What start-up
    made and later drops in a cycle is not collected: a one-time, bounded cost."""
    gc.collect()
    gc.freeze()


def fit_connections(settings: Settings, nofile: int) -> tuple[Settings, str | None]:
    """``max_connections`` against the open-file limit ``nofile``: when not set, the
    default, lowered to what fits; a number set above it is kept, with the warning
    to print."""
    fits = max(1, nofile - min(FILES_BESIDES_CONNECTIONS, nofile // 4))
    if settings.max_connections is None:
        return msgspec.structs.replace(
            settings, max_connections=min(DEFAULT_MAX_CONNECTIONS, fits)
        ), None
    if settings.max_connections <= fits:
        return settings, None
    return settings, (
        f"max_connections ({settings.max_connections}) is above what the open-file limit "
        f"({nofile}) allows: connections past about {fits} will fail; raise the hard limit "
        "(ulimit -Hn, systemd LimitNOFILE=) or lower --max-connections"
    )


#: connections the kernel may hold not yet accepted, on both ports (capped by
#: net.core.somaxconn): a crowd reconnecting after a restart arrives at once, and a
#: SYN dropped from a full queue is retried by the client's TCP only a second later
LISTEN_BACKLOG = 4096


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


_DEFAULTS = Settings()


class RateLimits(msgspec.Struct, frozen=True):
    """Per-connection rate: frames/s and bytes/s (0: no limit), a bucket holding
    ``burst`` seconds of each, and ``abuse``: seconds throttled in a row before 4029.
    Each is the setting ``rate_<name>``, and its default is that setting's."""

    events: float = _DEFAULTS.rate_events
    bytes: float = _DEFAULTS.rate_bytes
    burst: float = _DEFAULTS.rate_burst
    abuse: float = _DEFAULTS.rate_abuse

    @classmethod
    def of(cls, settings: Settings) -> RateLimits:
        """The rates ``settings`` set (``rate_events``, ``rate_bytes``…)."""
        names = (f.name for f in msgspec.structs.fields(cls))
        return cls(**{name: getattr(settings, f"rate_{name}") for name in names})

    def throttle(self, now: float) -> Throttle:
        return Throttle(self.events, self.bytes, self.burst, self.abuse, now)


class Refusal(msgspec.Struct, frozen=True):
    """A connection refused before the upgrade: HTTP ``status``, one sentence, and
    the seconds for ``Retry-After`` (None: no header)."""

    status: int
    message: str
    retry_after: int | None = None


@functools.lru_cache(maxsize=1024)  # asked twice per connection; ipaddress parses slowly
def address_key(host: str) -> str | None:
    """What the per-address cap counts by: an IPv4 address, or the /64 of an IPv6
    one (a single host is usually given a whole /64). None for loopback, which is
    not capped: it is this machine's own clients, or a proxy in front of the hub
    that hides the real addresses (``max_unauthenticated`` still holds)."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class ConnectionBudget:
    """Open websocket connections: ``total`` in all, of which at most
    ``unauthenticated`` (and ``per_address`` from one address) not yet authenticated.

    A connection is *unauthenticated* from its upgrade until its ``hello`` is
    accepted, unless the upgrade carried a valid ``Authorization: Bearer`` token
    (checked before the upgrade). Without ``--auth`` no connection has a token,
    so the budget holds the connections that have not yet said ``hello``.
    Refused: the hub is full (503), the unauthenticated budget is full (503,
    ``Retry-After``), or the address has ``per_address`` unauthenticated
    connections open (429, ``Retry-After``; loopback is not capped, see
    :func:`address_key`). ``retry_after`` is the hello
    timeout: by then every connection now waiting has said hello or been dropped.
    """

    __slots__ = (
        "by_address",
        "by_token",
        "open",
        "per_address",
        "per_token",
        "retry_after",
        "total",
        "unauthenticated",
        "waiting",
    )

    def __init__(
        self,
        total: int,
        unauthenticated: int,
        per_address: int,
        retry_after: float,
        per_token: int = 64,
    ) -> None:
        self.total = total
        self.unauthenticated = unauthenticated
        self.per_address = per_address
        #: connections one header token may hold open (``max_identity_connections``)
        self.per_token = per_token
        #: token id -> its open connections that showed it in the handshake
        self.by_token: dict[str, int] = {}
        self.retry_after = max(1, math.ceil(retry_after))
        #: connections open, and those of them not yet authenticated
        self.open = 0
        self.waiting = 0
        #: address key -> its unauthenticated connections (no entry at zero)
        self.by_address: dict[str, int] = {}

    def refusal(self, address: str, token: str | None) -> Refusal | None:
        """Why a new connection from ``address`` may not open now (None: it may);
        ``token``: the id of the valid token its handshake carried."""
        if self.open >= self.total:
            return Refusal(503, "hub full: max_connections reached; retry later")
        if token is not None:
            if self.by_token.get(token, 0) >= self.per_token:
                return Refusal(
                    429,
                    f"token {token} already has {self.per_token} connections open "
                    "(max_identity_connections); close some, or retry later",
                    self.retry_after,
                )
            return None
        if self.waiting >= self.unauthenticated:
            return Refusal(
                503,
                f"too many connections waiting to authenticate (max_unauthenticated "
                f"{self.unauthenticated}); send the token as Authorization: Bearer, "
                "or retry later",
                self.retry_after,
            )
        key = address_key(address)
        if key is not None and self.by_address.get(key, 0) >= self.per_address:
            return Refusal(
                429,
                f"too many connections from {address} waiting to authenticate "
                f"(max_unauthenticated_per_address {self.per_address}); retry later",
                self.retry_after,
            )
        return None

    def admit(self, address: str, token: str | None) -> Ticket:
        """Count a connection that opened (after :meth:`refusal` let it)."""
        self.open += 1
        key = address_key(address)
        if token is not None:
            self.by_token[token] = self.by_token.get(token, 0) + 1
        else:
            self.waiting += 1
            if key is not None:
                self.by_address[key] = self.by_address.get(key, 0) + 1
        return Ticket(self, key, token, waiting=token is None)

    def _closed(self, token: str | None) -> None:
        self.open -= 1
        if token is not None:
            left = self.by_token[token] - 1
            if left:
                self.by_token[token] = left
            else:
                del self.by_token[token]

    def _authenticated(self, key: str | None) -> None:
        self.waiting -= 1
        if key is None:
            return
        left = self.by_address[key] - 1
        if left:
            self.by_address[key] = left
        else:
            del self.by_address[key]


def connection_budget(settings: Settings) -> ConnectionBudget:
    """The budget the settings describe (defaults: ``Settings()``)."""
    return ConnectionBudget(
        total=settings.connections(),
        unauthenticated=settings.unauthenticated_budget(),
        per_address=settings.max_unauthenticated_per_address,
        retry_after=settings.hello_timeout,
        per_token=settings.max_identity_connections,
    )


class Ticket:
    """One connection's place in a :class:`ConnectionBudget`. :meth:`authenticated`
    (its hello was accepted) and :meth:`close` may each be called more than once."""

    __slots__ = ("budget", "key", "open", "token", "waiting")

    def __init__(
        self, budget: ConnectionBudget, key: str | None, token: str | None, *, waiting: bool
    ) -> None:
        self.budget = budget
        self.key = key
        self.token = token
        self.waiting = waiting
        self.open = True

    def authenticated(self) -> None:
        """Leave the unauthenticated budget (the connection still counts in the total)."""
        if self.waiting:
            self.waiting = False
            self.budget._authenticated(self.key)

    def close(self) -> None:
        """The connection is gone: give back everything it held."""
        self.authenticated()
        if self.open:
            self.open = False
            self.budget._closed(self.token)
