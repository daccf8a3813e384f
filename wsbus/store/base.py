"""The store interface: what the hub needs from any storage engine.

An engine keeps events (stamped with ``seq``/``ts`` by the log, :mod:`wsbus.log`) and
receipts, answers queries in seq order, and prunes by age and count. ``append``
is one durable commit: when it returns, the batch survives a crash of the
process. Engines: :mod:`.sqlite` (embedded default), :mod:`.memory` (tests).
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Protocol

import msgspec

from ..schema_hub import Event, RegisteredMember, ThreadInfo

__all__ = [
    "MemberRecord",
    "MemberStore",
    "Query",
    "ReceiptRecord",
    "Store",
    "StoreInfo",
    "StoreMismatch",
]


class StoreMismatch(Exception):
    """The store holds the data of another bus or hub (:meth:`Store.open`'s ``hub_id``)."""


class StoreInfo(msgspec.Struct):
    """What the hub learns when it opens a store."""

    hub_id: str
    last_seq: int
    last_ts: float
    pruned_seq: int
    """highest seq ever removed by retention (0 when nothing was pruned)"""
    count: int


class ReceiptRecord(msgspec.Struct):
    """A stored acknowledgement of event ``seq`` by ``name``."""

    seq: int
    channel: str
    name: str
    status: str
    ts: float
    reason: str | None = None
    final: bool = True


class Pending(msgspec.Struct, frozen=True):
    """Direct events to one recipient on one channel that no final receipt of theirs
    acknowledges yet: how many, and the oldest of them."""

    channel: str
    recipient: str
    count: int
    oldest_seq: int
    oldest_ts: float


class MemberRecord(RegisteredMember, omit_defaults=True):
    """A registered member of a channel's roster (kept until it leaves): the wire
    struct's fields, stored as they are."""


class Query(msgspec.Struct):
    """A range of events, filtered; results always ascend by seq.

    ``entitled`` keeps what those names may receive: events addressed to one of
    them, and broadcasts (``to == "*"``), except a single name's own broadcasts.
    ``latest`` takes the last ``limit`` events of the range instead of the first.
    ``party`` keeps what those names may read back: broadcasts and direct events
    to *or from* one of them (history for a token that does not read everything).
    (Both rules, in Python and SQL: :mod:`wsbus.entitlement`.)
    """

    limit: int
    channels: list[str] | None = None
    entitled: list[str] | None = None
    to: str | None = None
    sender: str | None = None
    thread: str | None = None
    after: int | None = None
    before: int | None = None
    latest: bool = False
    pending_only: bool = False
    """only direct events to ``entitled`` names that lack a final receipt by them"""
    party: list[str] | None = None


class MemberStore(Protocol):
    """Where the registered roster members are kept: the index (:class:`Store`), or
    with several hubs the bus's shared bucket (:mod:`wsbus.jetstream.shared`)."""

    async def members(self) -> list[MemberRecord]: ...

    async def put_member(self, member: MemberRecord) -> None: ...

    async def add_member(self, member: MemberRecord) -> bool: ...

    async def remove_member(self, channel: str, name: str) -> None: ...


class Store(abc.ABC):
    """One storage engine behind the hub."""

    #: a human description of where data lives (printed by ``wsbus serve``)
    location: str = ""
    #: why the store refuses every commit from now on (None: it takes them); the hub
    #: reports it on ``/healthz`` (503)
    failure: str | None = None

    @abc.abstractmethod
    async def open(self, hub_id: str | None = None) -> StoreInfo:
        """Open or create the store and report its state.

        ``hub_id``: the id the store must carry (the index of a bus on a shared log):
        a new store takes it, a store that holds another raises :class:`StoreMismatch`.
        Without it a new store makes up its own."""

    @abc.abstractmethod
    async def append(
        self,
        events: Sequence[Event],
        receipts: Sequence[ReceiptRecord] = (),
        upto: int | None = None,
    ) -> None:
        """Durably commit a batch (one transaction); raise on failure. ``upto``: the
        position in a shared log the batch takes the store to (an index counts the
        log's receipts too); :attr:`StoreInfo.last_seq` reports it after a restart."""

    @abc.abstractmethod
    async def query(self, q: Query) -> list[Event]:
        """Events matching ``q`` in ascending seq order."""

    @abc.abstractmethod
    async def get(self, seq: int) -> Event | None:
        """One event by seq, or None."""

    @abc.abstractmethod
    async def lease_events(self, since_ts: float, upto: int) -> list[Event]:
        """The lease events (``to`` = :data:`wsbus.leases.BOOK`) newer than
        ``since_ts`` up to seq ``upto``, in seq order: what the lease book is rebuilt
        from (an index of their own: a scan of them only)."""

    @abc.abstractmethod
    async def receipts(self, seq: int) -> list[ReceiptRecord]:
        """Receipts stored for event ``seq``."""

    async def receipts_of(self, seqs: Sequence[int]) -> list[ReceiptRecord]:
        """Receipts stored for the events ``seqs`` (in seq, then time order)."""
        out: list[ReceiptRecord] = []
        for seq in sorted(set(seqs)):
            out += await self.receipts(seq)
        return out

    @abc.abstractmethod
    async def recent_refs(self, limit: int) -> list[tuple[str, str, int, float]]:
        """``(sender, ref, seq, ts)`` of the newest ``limit`` events that carry a ref."""

    @abc.abstractmethod
    async def counts(self) -> tuple[dict[tuple[str, str], int], int]:
        """How many retained events each ``(channel, recipient)`` has (``*``:
        broadcasts), and the highest seq counted (0: none): one snapshot, so a reader
        that follows the log adds exactly the events above it."""

    @abc.abstractmethod
    async def pending(self, after: int) -> list[Pending]:
        """The direct events after seq ``after`` still waiting for a final receipt by
        their recipient, per (channel, recipient) (lease events are no mail). The
        caller bounds ``after``: the work is a scan of the events above it."""

    @abc.abstractmethod
    async def recipients(self, limit: int) -> list[str]:
        """The names the retained direct events are addressed to (broadcasts and lease
        events aside), sorted, at most ``limit`` of them (``wsbus.mailnames``). SQLite:
        one index seek per channel and name, not a read of every event."""

    async def size(self) -> int | None:
        """Bytes the store takes on disk (None: it is not on disk)."""
        return None

    @abc.abstractmethod
    async def seq_at_ts(self, ts: float) -> int:
        """The highest seq whose ``ts`` is at most ``ts`` (0 if none is retained)."""

    @abc.abstractmethod
    async def prune(self, older_than_ts: float, keep: int) -> tuple[int, int]:
        """Remove events older than ``older_than_ts`` or beyond the newest ``keep``
        (``keep`` 0: no count limit). Returns ``(removed, pruned_seq)``."""

    @abc.abstractmethod
    async def threads(
        self, channel: str | None, party: list[str] | None = None
    ) -> list[ThreadInfo]:
        """Threads with retained events (of ``channel``, or all), most recent first.

        ``party`` (as in :class:`Query`): count only broadcasts and the direct events
        to or from those names; a thread with none of them is not listed.
        """

    @abc.abstractmethod
    async def members(self) -> list[MemberRecord]:
        """Every registered roster member."""

    @abc.abstractmethod
    async def put_member(self, member: MemberRecord) -> None:
        """Durably add or replace a roster member (keyed by channel and name)."""

    async def add_member(self, member: MemberRecord) -> bool:
        """Add a member that the caller saw no one registered under; False when
        another one is (a store shared by several hubs). One hub's index is written by
        that hub alone: it adds."""
        await self.put_member(member)
        return True

    @abc.abstractmethod
    async def remove_member(self, channel: str, name: str) -> None:
        """Durably remove a roster member."""

    async def checkpoint(self) -> None:
        """Housekeeping off the commit path, called about once a second (default: none)."""
        return None

    @abc.abstractmethod
    async def close(self) -> None:
        """Flush and close."""
