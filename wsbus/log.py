"""The log: the one place that orders events.

The store has two roles. The **log** (this module) assigns every event its ``seq``
and ``ts`` when it commits it, remembers which ``(sender, ref)`` it already holds,
and hands every committed event — whoever wrote it — to its tails, in ``seq``
order. The **index** (:class:`wsbus.store.Store`) answers the queries: history,
pending inboxes, threads, rosters, receipts, retention.

Contract (what any engine — this local one, or one on a shared stream — keeps):

- :meth:`Log.append` commits a batch durably and returns one :class:`Stamp` per
  draft: the ``seq`` and ``ts`` the log gave it, strictly increasing together; a
  draft whose ``(sender, ref)`` the log already holds is not appended again and
  gets the original's stamp with ``duplicate`` set. The idempotency window is the
  last ``ref_window`` refs (100,000 by default), kept across restarts.
- :meth:`Log.tail` yields every committed event after a ``seq``, in order, in
  batches (catching up from the index first when the caller is behind).
- :meth:`Log.watermark` is a ``ts`` below the ``ts`` of every event the tails have
  not yielded yet, and of every event the log will stamp later: the legacy
  long-poll ``now`` (invariant 5) never skips an event.

:class:`LocalLog` is the one-node engine: the index's own database is the log
(one transaction per batch), and the tail is pushed in-process by the commit —
never polled — so a delivery waits for nothing but the commit.
"""

from __future__ import annotations

import abc
import asyncio
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NamedTuple, Protocol

import msgspec

from .schema import Event

if TYPE_CHECKING:
    from .presence import SharedPresence
    from .rosters import SharedClaims

    class SharedBus(SharedPresence, SharedClaims, Protocol):
        """What the hubs of a shared log share besides it: presence and claims."""


from .store import MemberStore, Query, ReceiptRecord, Store, StoreInfo

__all__ = ["IndexedLog", "LocalLog", "Log", "Stamp", "Tail"]

#: events read per page when a tail catches up from the index
CATCH_UP_PAGE = 500


class Stamp(NamedTuple):
    """Where the log put a draft: its ``seq`` and ``ts``; ``duplicate`` when the
    log already held an event with the same ``(sender, ref)``."""

    seq: int
    ts: float
    duplicate: bool = False


class Log(abc.ABC):
    """The order of events (see the module docstring for the contract)."""

    #: where the events live (printed by ``wsbus serve``; a store's location when it
    #: is the log)
    location: str = ""
    #: other hubs append to the same log: this node's tail may be behind a cursor
    #: another hub gave a client
    shared: bool = False
    #: (a shared log) told of every receipt it indexed, whichever hub took the ack,
    #: with the sender of the event it acknowledges: the hub pushes it to the sender
    on_receipts: Callable[[list[tuple[ReceiptRecord, str]]], None] | None = None
    #: the seq and ts of the last committed event
    committed_seq: int = 0
    committed_ts: float = 0.0

    @abc.abstractmethod
    async def open(self) -> StoreInfo:
        """Open the log (and its index) and report their state."""

    @abc.abstractmethod
    def known(self, sender: str, ref: str) -> Stamp | None:
        """The stamp of a committed event with this ``(sender, ref)`` in the window."""

    @abc.abstractmethod
    async def append(
        self,
        drafts: Sequence[Event],
        receipts: Sequence[ReceiptRecord] = (),
        senders: Sequence[str] = (),
    ) -> list[Stamp]:
        """Commit ``drafts`` (their ``seq``/``ts`` are ignored) and ``receipts`` as
        one durable batch; raise when nothing was stored. ``senders``: who sent each
        receipt's event (a shared log tells every hub, :attr:`on_receipts`)."""

    @abc.abstractmethod
    def tail(self, after_seq: int) -> Tail:
        """Every committed event with ``seq > after_seq``, in order, in batches; ends
        after :meth:`seal` once everything committed was yielded. The reader counts
        for the watermark from the call on (iterate it: it holds what it has not
        yielded)."""

    @abc.abstractmethod
    def watermark(self) -> float:
        """A ``ts`` below every event not yet yielded by the tails (invariant 5)."""

    @abc.abstractmethod
    def seal(self) -> None:
        """No more appends: tails end once they yielded what was committed."""

    @property
    @abc.abstractmethod
    def failure(self) -> str | None:
        """Why the log refuses every commit from now on (None: it takes them)."""

    @abc.abstractmethod
    async def retain(self, older_than_ts: float, keep: int) -> tuple[int, int]:
        """Apply retention: events older than ``older_than_ts`` or beyond the newest
        ``keep`` go (``Store.prune``'s answer: how many, and the highest seq removed).
        A shared log also trims the shared stream."""

    def problem(self) -> str | None:
        """Why sends cannot be stored now (``/healthz`` answers 503), or None."""
        return self.failure

    async def lag(self) -> int | None:
        """How many events the log of record holds that this hub has not indexed yet
        (None: the log is the index, it cannot lag)."""
        return None

    async def close(self) -> None:
        """Let go of what the log holds besides its index (the index is closed by its
        owner after this)."""
        return None

    def shared_presence(self) -> SharedBus | None:
        """The bus's presence and bridge claims, shared by the hubs of a shared log
        (None: one hub)."""
        return None

    def shared_members(self) -> MemberStore | None:
        """Where the hubs of a shared log keep the registered roster members (None:
        in the index, one hub)."""
        return None


class Tail(abc.ABC):
    """A reader of the log (:meth:`Log.tail`): iterate it, or :meth:`aclose` it —
    until then it holds what it has not yielded, and the watermark waits for it."""

    def __aiter__(self) -> Tail:
        return self

    @abc.abstractmethod
    async def __anext__(self) -> list[Event]: ...

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Stop reading (a tail that ends by itself, after :meth:`Log.seal`, is closed)."""

    def ready(self) -> list[list[Event]]:
        """The batches there are now, taken without waiting (none while catching up):
        a writer on the same node fans its commit out at once, in the same turn of
        the loop as its ``ok``s, instead of one turn later."""
        return []


class _IndexTail(Tail):
    """A reader of an :class:`IndexedLog`: catches up from the index, then takes each
    batch as it is pushed."""

    def __init__(self, log: IndexedLog, after_seq: int) -> None:
        self._log = log
        self.batches: deque[list[Event]] = deque()
        self.waiter: asyncio.Future[None] | None = None
        #: the last seq yielded (or asked to start after)
        self.last = after_seq
        #: while catching up from the index: below every event not read yet (the ts
        #: of the last one yielded; 0.0 before the first page)
        self.floor: float | None = 0.0 if after_seq < log.committed_seq else None
        self._upto = log.committed_seq  # what the catch-up reads; commits come pushed
        self._closed = False
        self._wake_soon = False
        log._tails.append(self)  # now, not at the first step: nothing committed is missed

    def push(self, batch: list[Event] | None) -> None:
        if batch is None:  # sealed or closed: wake the reader now
            self._wake()
            return
        self.batches.append(batch)
        if self.waiter is not None and not self._wake_soon:
            # soon, not now: a writer that takes the batch with ready() in this turn
            # spares the reader a wake-up for nothing
            self._wake_soon = True
            asyncio.get_running_loop().call_soon(self._wake_if_pending)

    def _wake_if_pending(self) -> None:
        self._wake_soon = False
        if self.batches:
            self._wake()

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def __anext__(self) -> list[Event]:
        log = self._log
        while not self._closed:
            if self.last < self._upto:  # behind: catch up from the index
                page = await log.store.query(
                    Query(limit=CATCH_UP_PAGE, after=self.last, before=self._upto + 1)
                )
                if page:
                    self.last = page[-1].seq
                    self.floor = page[-1].ts
                    while self.batches and self.batches[0][-1].seq <= self.last:
                        self.batches.popleft()  # pushed meanwhile, read here: not pending
                    return page
                self._upto = self.last  # retention removed the rest
            self.floor = None
            batch = self._take()
            if batch is not None:
                return batch
            if log._sealed:
                break
            self.waiter = asyncio.get_running_loop().create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None
        await self.aclose()
        raise StopAsyncIteration

    def _take(self) -> list[Event] | None:
        """The next pushed batch, less what the catch-up already read; None: none."""
        while self.batches:
            batch = self.batches.popleft()
            if batch[-1].seq <= self.last:
                continue  # read during the catch-up
            if batch[0].seq <= self.last:
                batch = [ev for ev in batch if ev.seq > self.last]
            self.last = batch[-1].seq
            return batch
        return None

    def ready(self) -> list[list[Event]]:
        if self._closed or self.last < self._upto:
            return []
        out = []
        while (batch := self._take()) is not None:
            out.append(batch)
        return out

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self.batches.clear()
            self._log._tails.remove(self)
            self.push(None)


class IndexedLog(Log):
    """A log whose events reach this node's index before its tails see them: the
    tails, the idempotency window and the watermark every engine shares. An engine
    stamps and stores a batch, then calls :meth:`_indexed` with it."""

    def __init__(self, store: Store, ref_window: int = 100_000) -> None:
        self.store = store
        self.ref_window = ref_window
        self._refs: OrderedDict[tuple[str, str], tuple[int, float]] = OrderedDict()
        #: stamped, committing: below the watermark until the tails have them
        self._committing: list[Event] = []
        self._tails: list[_IndexTail] = []
        self._sealed = False

    async def _load_refs(self) -> None:
        for sender, ref, seq, ts in await self.store.recent_refs(self.ref_window):
            self._refs[(sender, ref)] = (seq, ts)

    def known(self, sender: str, ref: str) -> Stamp | None:
        seen = self._refs.get((sender, ref))
        return Stamp(seen[0], seen[1], True) if seen is not None else None

    def _indexed(self, fresh: list[Event], refs: dict[tuple[str, str], tuple[int, float]]) -> None:
        """``fresh`` is in the index (``refs``: their ``(sender, ref)``): remember the
        refs, and hand the batch to every tail."""
        window = self._refs
        window.update(refs)
        while len(window) > self.ref_window:
            window.popitem(last=False)
        if fresh:
            self.committed_seq = fresh[-1].seq
            self.committed_ts = fresh[-1].ts
            for tail in self._tails:
                tail.push(fresh)

    def tail(self, after_seq: int) -> Tail:
        return _IndexTail(self, after_seq)

    async def retain(self, older_than_ts: float, keep: int) -> tuple[int, int]:
        return await self.store.prune(older_than_ts, keep)

    def watermark(self) -> float:
        firsts = [tail.batches[0][0].ts for tail in self._tails if tail.batches]
        # a reader catching up has not read what follows the last event it yielded
        firsts += [math.nextafter(t.floor, math.inf) for t in self._tails if t.floor is not None]
        if self._committing:
            firsts.append(self._committing[0].ts)
        if firsts:
            return math.nextafter(min(firsts), -math.inf)
        return self._idle_watermark()

    @abc.abstractmethod
    def _idle_watermark(self) -> float:
        """The watermark once the tails yielded everything stamped."""

    @property
    def failure(self) -> str | None:
        return self.store.failure

    def seal(self) -> None:
        self._sealed = True
        for tail in self._tails:
            tail.push(None)


class LocalLog(IndexedLog):
    """One node: the index's database orders the events (see the module docstring)."""

    def __init__(self, store: Store, ref_window: int = 100_000) -> None:
        super().__init__(store, ref_window)
        self._next_seq = 1
        self._last_ts = 0.0
        self._appending = False

    async def open(self) -> StoreInfo:
        info = await self.store.open()
        self.committed_seq = info.last_seq
        self.committed_ts = info.last_ts
        self._next_seq = info.last_seq + 1
        self._last_ts = info.last_ts
        await self._load_refs()
        return info

    def _stamp(self) -> float:
        ts = time.time()
        if ts <= self._last_ts:
            ts = self._last_ts + 1e-6
        self._last_ts = ts
        return ts

    async def append(
        self,
        drafts: Sequence[Event],
        receipts: Sequence[ReceiptRecord] = (),
        senders: Sequence[str] = (),
    ) -> list[Stamp]:
        # one batch at a time (the hub's single writer): no lock on the hot path
        if self._appending:
            raise RuntimeError("LocalLog.append is not reentrant: one batch at a time")
        if self._sealed:
            raise RuntimeError("the log is sealed")
        stamps: list[Stamp] = []
        fresh: list[Event] = []
        refs = self._refs
        batch_refs: dict[tuple[str, str], tuple[int, float]] = {}
        replace = msgspec.structs.replace
        for draft in drafts:
            key = (draft.from_, draft.ref) if draft.ref is not None else None
            if key is not None:
                seen = refs.get(key) or batch_refs.get(key)
                if seen is not None:
                    stamps.append(Stamp(seen[0], seen[1], True))
                    continue
            ev = replace(draft, seq=self._next_seq, ts=self._stamp())
            self._next_seq += 1
            fresh.append(ev)
            stamps.append(Stamp(ev.seq, ev.ts))
            if key is not None:
                batch_refs[key] = (ev.seq, ev.ts)
        self._committing = fresh
        self._appending = True
        try:
            await self.store.append(fresh, receipts)
        except Exception:
            if fresh:
                self._next_seq = fresh[0].seq  # nothing was stored: no gap in seq
            raise
        # (cancelled: the commit may still land on its thread, so the seqs stay used)
        finally:
            self._committing = []
            self._appending = False
        self._indexed(fresh, batch_refs)
        return stamps

    def _idle_watermark(self) -> float:
        # everything stamped was yielded: at least the last stamp (a clock that
        # stepped back must not hand out a ``now`` below events already seen), and
        # every later stamp is above what was handed out
        self._last_ts = max(time.time(), self._last_ts)
        return self._last_ts
