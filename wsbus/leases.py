"""File leases: the path rules and the book of leases in force (no I/O).

A lease is an event in the log, of kind :data:`KIND`, addressed to :data:`BOOK` (a
``to`` no name can have, so no one receives it as a message; watchers and history
see it as the audit trail). Its ``meta["lease"]`` says what it does: reserve paths
(:class:`ReserveOp`) or release leases (:class:`ReleaseOp`). Every hub applies these
events in ``seq`` order to its :class:`LeaseBook`, judging each reservation at its
event's ``ts`` — so every hub of a bus reaches the same verdict, and two hubs that
granted conflicting reservations at once agree on which one won (the first in the
log). A lease's id is the ``seq`` of the event that granted it.

The path rules — what a lease path may be, what it covers, when two overlap — are in
:mod:`wsbus.leasepaths`. The book is bounded (:data:`MAX_HELD`, :data:`MAX_PATHS`):
a reservation past a bound is refused, in the same way on every hub.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Iterable

import msgspec

from .leasepaths import conflict
from .schema_hub import Event, Lease

__all__ = [
    "BOOK",
    "KIND",
    "MAX_HELD",
    "MAX_PATHS",
    "MAX_TTL",
    "LeaseBook",
    "LeaseOp",
    "ReleaseOp",
    "ReserveOp",
    "Verdict",
    "describe",
    "token_digest",
    "until_text",
]

log = logging.getLogger("wsbus.hub")

KIND = "lease"
"""The ``kind`` of lease events."""
BOOK = "~leases"
"""The ``to`` of lease events: never a name (names start with a letter or digit)."""
MAX_TTL = 86_400.0
"""The longest lease, in seconds (a day); the book is rebuilt from this far back."""
VERDICTS_KEPT = 4096
"""Verdicts remembered for requests that ask after their event was applied."""
MAX_HELD = 64
"""The most leases one holder may have in force on one channel."""
MAX_PATHS = 256
"""The most paths in force on one channel, all leases together (bounds the work of a
conflict check: a reservation of 32 paths is compared with at most 256)."""


class ReserveOp(msgspec.Struct, tag="reserve", omit_defaults=True):
    paths: list[str]
    ttl: float
    exclusive: bool = True
    reason: str | None = None
    token: str | None = None
    """a digest of the id of the token that reserved (its revocation ends the lease;
    the id itself is not written: :func:`token_digest`)"""


class ReleaseOp(msgspec.Struct, tag="release", omit_defaults=True):
    ids: list[int] = []
    """the leases to end; none: every lease of the sender on the channel"""
    paths: list[str] = []
    """(with no ids) the leases on exactly these paths"""
    why: str | None = None


LeaseOp = ReserveOp | ReleaseOp


class Verdict(msgspec.Struct, omit_defaults=True):
    """What applying one lease event did: granted ``lease`` (``renewed``: in place of
    the holder's lease on the same paths), refused for ``conflicts`` or past a bound
    (``limit``: why), or ``released``."""

    lease: Lease | None = None
    renewed: bool = False
    conflicts: list[Lease] = []
    limit: str | None = None
    released: list[Lease] = []


# ---------------------------------------------------------------------------- words


def until_text(ts: float) -> str:
    """When a lease ends, as people read it: ``2026-12-07T01:00:53Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def token_digest(token_id: str) -> str:
    """What a lease event keeps of the token that reserved it."""
    return hashlib.sha256(f"wsbus-lease:{token_id}".encode()).hexdigest()[:16]


def describe(lease: Lease) -> str:
    """One clause naming a lease: ``src/** (exclusive, codex, reason: …)``."""
    kind = "exclusive" if lease.exclusive else "shared"
    why = f"; {lease.reason}" if lease.reason else ""
    return f"{', '.join(lease.paths)} ({kind}, by {lease.holder}{why})"


# ---------------------------------------------------------------------------- the book


class LeaseBook:
    """The leases in force, per channel, as the log's lease events made them."""

    def __init__(self) -> None:
        self._channels: dict[str, dict[int, Lease]] = {}
        #: the token that reserved each lease (id -> its token's digest), for revocation
        self._tokens: dict[int, str] = {}
        self._verdicts: OrderedDict[int, Verdict] = OrderedDict()
        #: the last event applied (a replayed or repeated one is skipped)
        self.applied_seq = 0

    # -- reading (never changes the book: only the log's events do, at their ts)

    def in_force(self, channel: str, now: float) -> list[Lease]:
        """The channel's leases not expired at ``now``, oldest first."""
        book = self._channels.get(channel)
        return [x for x in book.values() if x.until > now] if book else []

    def channels(self) -> list[str]:
        return sorted(self._channels)

    def conflicts(
        self, channel: str, holder: str, paths: Iterable[str], exclusive: bool, now: float
    ) -> list[Lease]:
        """Leases of other holders that a reservation of ``paths`` would conflict with."""
        wanted = list(paths)
        return [
            lease
            for lease in self.in_force(channel, now)
            if lease.holder != holder
            and (exclusive or lease.exclusive)
            and any(conflict(a, b) for a in wanted for b in lease.paths)
        ]

    def over_limit(self, channel: str, holder: str, paths: list[str], now: float) -> str | None:
        """Why a reservation of ``paths`` would pass a bound of the book (None: it fits);
        a renewal (the same paths) replaces a lease, so it always fits."""
        leases = self.in_force(channel, now)
        mine = [x for x in leases if x.holder == holder]
        if any(x.paths == paths for x in mine):
            return None
        if len(mine) >= MAX_HELD:
            return (
                f"{holder} already holds {MAX_HELD} leases on #{channel}, the most one "
                "holder may: release some (or reserve a directory or a glob instead)"
            )
        in_force = sum(len(x.paths) for x in leases)
        if in_force + len(paths) > MAX_PATHS:
            return (
                f"#{channel} has {in_force} leased paths in force; {len(paths)} more would "
                f"pass the most a channel holds ({MAX_PATHS}): lease directories or globs"
            )
        return None

    def held(self, channel: str, holder: str, now: float) -> list[Lease]:
        return [lease for lease in self.in_force(channel, now) if lease.holder == holder]

    def by_token(self, token: str, now: float) -> list[Lease]:
        """The leases in force reserved with the token of digest ``token``."""
        return [
            lease
            for channel in self._channels
            for lease in self.in_force(channel, now)
            if self._tokens.get(lease.id) == token
        ]

    def tokens(self) -> set[str]:
        return set(self._tokens.values())

    def verdict(self, seq: int) -> Verdict | None:
        """What applying event ``seq`` did (recent ones), or None."""
        return self._verdicts.get(seq)

    # -- applying the log

    def apply(self, ev: Event) -> Verdict | None:
        """Apply one event of the log (only lease events change the book); returns
        its verdict, None for any other event or one applied already. Never raises:
        an event that cannot be applied is skipped (the log cannot be unwritten)."""
        if ev.seq <= self.applied_seq:
            return None
        self.applied_seq = ev.seq
        if ev.kind != KIND or ev.to != BOOK or not ev.meta or "lease" not in ev.meta:
            return None
        try:
            op = msgspec.convert(ev.meta["lease"], LeaseOp)
            self._expire(ev.channel, ev.ts)
            verdict = self._reserve(ev, op) if isinstance(op, ReserveOp) else self._release(ev, op)
        except Exception as err:  # not one of ours, or a bug: skipped, never fatal
            log.warning("lease event %d skipped: %s", ev.seq, err)
            verdict = Verdict(limit=f"this lease event could not be applied: {err}")
        self._verdicts[ev.seq] = verdict
        while len(self._verdicts) > VERDICTS_KEPT:
            self._verdicts.popitem(last=False)
        return verdict

    def _expire(self, channel: str, ts: float) -> None:
        """Forget the channel's leases that ended by ``ts`` (the event's time)."""
        book = self._channels.get(channel)
        if not book:
            return
        for i in [i for i, lease in book.items() if lease.until <= ts]:
            del book[i]
            self._tokens.pop(i, None)
        if not book:
            del self._channels[channel]

    def _reserve(self, ev: Event, op: ReserveOp) -> Verdict:
        paths = sorted(set(op.paths))
        conflicts = self.conflicts(ev.channel, ev.from_, paths, op.exclusive, ev.ts)
        if conflicts:
            return Verdict(conflicts=conflicts)
        limit = self.over_limit(ev.channel, ev.from_, paths, ev.ts)
        if limit is not None:
            return Verdict(limit=limit)
        lease = Lease(
            id=ev.seq,
            channel=ev.channel,
            holder=ev.from_,
            paths=paths,
            exclusive=op.exclusive,
            since=ev.ts,
            until=ev.ts + min(op.ttl, MAX_TTL),
            reason=op.reason,
        )
        book = self._channels.setdefault(ev.channel, {})
        same = [i for i, old in book.items() if old.holder == ev.from_ and old.paths == paths]
        for i in same:  # a renewal replaces the holder's lease on the same paths
            del book[i]
            self._tokens.pop(i, None)
        book[lease.id] = lease
        if op.token:
            self._tokens[lease.id] = op.token
        return Verdict(lease=lease, renewed=bool(same))

    def _release(self, ev: Event, op: ReleaseOp) -> Verdict:
        mine = {lease.id: lease for lease in self.held(ev.channel, ev.from_, ev.ts)}
        if op.ids:
            ended = [i for i in dict.fromkeys(op.ids) if i in mine]
        elif op.paths:
            wanted = sorted(set(op.paths))
            ended = [i for i, lease in mine.items() if lease.paths == wanted]
        else:
            ended = list(mine)
        book = self._channels.get(ev.channel, {})
        released = [book.pop(i) for i in ended if i in book]
        for i in ended:
            self._tokens.pop(i, None)
        if not book:
            self._channels.pop(ev.channel, None)
        return Verdict(released=released)
