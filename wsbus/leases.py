"""File leases: the path rules and the book of leases in force (no I/O).

A lease is an event in the log, of kind :data:`KIND`, addressed to :data:`BOOK` (a
``to`` no name can have, so no one receives it as a message; watchers and history
see it as the audit trail). Its ``meta["lease"]`` says what it does: reserve paths
(:class:`ReserveOp`) or release leases (:class:`ReleaseOp`). Every hub applies these
events in ``seq`` order to its :class:`LeaseBook`, judging each reservation at its
event's ``ts`` — so every hub of a bus reaches the same verdict, and two hubs that
granted conflicting reservations at once agree on which one won (the first in the
log). A lease's id is the ``seq`` of the event that granted it.

The overlap rule (paths are relative to the repository root): two patterns conflict
when either *covers* the other's literal part (what comes before its first wildcard)
or both name the same path. A pattern covers a path when it matches it as a glob
(``*`` and ``?`` within one path segment, ``**`` across segments, ``[...]``), and a
pattern without wildcards covers that path and everything under it (a directory).
"""

from __future__ import annotations

import functools
import re
from collections import OrderedDict
from collections.abc import Iterable

import msgspec

from .schema_hub import Event, Lease

__all__ = [
    "BOOK",
    "KIND",
    "MAX_TTL",
    "LeaseBook",
    "LeaseOp",
    "ReleaseOp",
    "ReserveOp",
    "Verdict",
    "conflict",
    "covers",
    "describe",
    "literal",
    "normalize",
]

KIND = "lease"
"""The ``kind`` of lease events."""
BOOK = "~leases"
"""The ``to`` of lease events: never a name (names start with a letter or digit)."""
MAX_TTL = 86_400.0
"""The longest lease, in seconds (a day); the book is rebuilt from this far back."""
VERDICTS_KEPT = 4096
"""Verdicts remembered for requests that ask after their event was applied."""

_WILD = re.compile(r"[*?\[]")


class ReserveOp(msgspec.Struct, tag="reserve", omit_defaults=True):
    paths: list[str]
    ttl: float
    exclusive: bool = True
    reason: str | None = None
    token: str | None = None
    """the id of the token that reserved (its revocation ends the lease)"""


class ReleaseOp(msgspec.Struct, tag="release", omit_defaults=True):
    ids: list[int] = []
    """the leases to end; none: every lease of the sender on the channel"""
    paths: list[str] = []
    """(with no ids) the leases on exactly these paths"""
    why: str | None = None


LeaseOp = ReserveOp | ReleaseOp


class Verdict(msgspec.Struct, omit_defaults=True):
    """What applying one lease event did: granted ``lease`` (``renewed``: in place of
    the holder's lease on the same paths), refused for ``conflicts``, or ``released``."""

    lease: Lease | None = None
    renewed: bool = False
    conflicts: list[Lease] = []
    released: list[Lease] = []


# ---------------------------------------------------------------------------- paths


def normalize(path: str) -> str:
    """A lease path as stored: ``./`` and repeated or trailing ``/`` dropped. Raises
    ValueError (one sentence) for a path that is empty, absolute, climbs out with
    ``..``, or holds control characters or backslashes."""
    if any(ord(c) < 32 or c == "\x7f" for c in path):
        raise ValueError(f"lease path {path!r} holds control characters")
    if "\\" in path:
        raise ValueError(f"lease path {path!r} holds a backslash: write paths with '/'")
    if path.startswith("/"):
        raise ValueError(
            f"lease path {path!r} is absolute: paths are relative to the repository root"
        )
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ValueError(f"lease path {path!r} climbs out with '..'")
    if not parts:
        raise ValueError(f"lease path {path!r} names nothing")
    return "/".join(parts)


def literal(pattern: str) -> str:
    """The part of ``pattern`` before its first wildcard (all of it if it has none)."""
    m = _WILD.search(pattern)
    return pattern if m is None else pattern[: m.start()]


@functools.lru_cache(maxsize=1024)
def _glob(pattern: str) -> re.Pattern[str]:
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**", i):
            i += 2
            if pattern.startswith("/", i):  # a/**/b: also a/b
                out.append("(?:.*/)?")
                i += 1
            else:
                out.append(".*")
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = pattern.find("]", i + 2)
            if end < 0:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1 : end]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append(f"[{body.replace(chr(92), chr(92) * 2)}]")
                i = end
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out))


def covers(pattern: str, path: str) -> bool:
    """Whether ``pattern`` covers ``path`` (see the module docstring)."""
    if _WILD.search(pattern) is None:
        path = path.rstrip("/")
        return path == pattern or path.startswith(pattern + "/")
    if _glob(pattern).fullmatch(path) is not None:
        return True
    # a/** covers the directory a itself, and a literal part ending in '/' is a directory
    return pattern.endswith("/**") and path.rstrip("/") == pattern[:-3]


def conflict(a: str, b: str) -> bool:
    """Whether two patterns overlap: one covers the other's literal part, or equal."""
    return a == b or covers(a, literal(b)) or covers(b, literal(a))


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
        #: the token that reserved each lease (id -> token id), for revocation
        self._tokens: dict[int, str] = {}
        self._verdicts: OrderedDict[int, Verdict] = OrderedDict()
        #: the last event applied (a replayed or repeated one is skipped)
        self.applied_seq = 0

    # -- reading

    def in_force(self, channel: str, now: float) -> list[Lease]:
        """The channel's leases not expired at ``now``, oldest first (expired ones are
        forgotten on the way)."""
        book = self._channels.get(channel)
        if not book:
            return []
        gone = [i for i, lease in book.items() if lease.until <= now]
        for i in gone:
            del book[i]
            self._tokens.pop(i, None)
        if not book:
            del self._channels[channel]
        return list(book.values())

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

    def held(self, channel: str, holder: str, now: float) -> list[Lease]:
        return [lease for lease in self.in_force(channel, now) if lease.holder == holder]

    def by_token(self, token: str) -> list[Lease]:
        """The leases reserved with token ``token`` (any channel, maybe expired)."""
        found = []
        for leases in self._channels.values():
            found += [lease for i, lease in leases.items() if self._tokens.get(i) == token]
        return found

    def tokens(self) -> set[str]:
        return set(self._tokens.values())

    def verdict(self, seq: int) -> Verdict | None:
        """What applying event ``seq`` did (recent ones), or None."""
        return self._verdicts.get(seq)

    # -- applying the log

    def apply(self, ev: Event) -> Verdict | None:
        """Apply one event of the log (only lease events change the book); returns
        its verdict, None for any other event or one applied already."""
        if ev.seq <= self.applied_seq:
            return None
        self.applied_seq = ev.seq
        if ev.kind != KIND or ev.to != BOOK or not ev.meta or "lease" not in ev.meta:
            return None
        try:
            op = msgspec.convert(ev.meta["lease"], LeaseOp)
        except msgspec.ValidationError:
            return None  # not one of ours: an event cannot be unwritten, only skipped
        verdict = self._reserve(ev, op) if isinstance(op, ReserveOp) else self._release(ev, op)
        self._verdicts[ev.seq] = verdict
        while len(self._verdicts) > VERDICTS_KEPT:
            self._verdicts.popitem(last=False)
        return verdict

    def _reserve(self, ev: Event, op: ReserveOp) -> Verdict:
        paths = sorted(set(op.paths))
        conflicts = self.conflicts(ev.channel, ev.from_, paths, op.exclusive, ev.ts)
        if conflicts:
            return Verdict(conflicts=conflicts)
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
        book = self._channels.get(ev.channel, {})
        if op.ids:
            ended = [i for i in op.ids if i in mine]
        elif op.paths:
            wanted = sorted(set(op.paths))
            ended = [i for i, lease in mine.items() if lease.paths == wanted]
        else:
            ended = list(mine)
        released = [book.pop(i) for i in ended]
        for i in ended:
            self._tokens.pop(i, None)
        if not book and ev.channel in self._channels:
            del self._channels[ev.channel]
        return Verdict(released=released)
