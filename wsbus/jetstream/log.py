"""The log of a bus on NATS JetStream: many hubs, one order.

A hub publishes each send to the bus's stream (``Nats-Msg-Id`` = a digest of ``sender``
and ``ref``: a
resend within the stream's duplicate window is not stored twice) and each receipt
beside it. Every hub — the one that published included — tails the stream with an
ordered consumer from the last position its index holds, writes what it reads into
its **local index** (a SQLite file: :class:`wsbus.store.Store`, one transaction per
batch, with the stream position), and only then hands the events to its tails: one
code path for local and remote events. A hub answers ``ok`` once its own index holds
the event, so the ``ok`` carries the event's ``ts`` and a query on that hub sees it.

``seq`` is the stream sequence. ``ts`` comes from the stream too, the same on every
hub: the time the stream stored the message, raised to the previous event's ``ts`` +
1 µs when that is not above it (a stream leader whose clock is behind its
predecessor's), so ``ts`` strictly increases with ``seq``. The watermark (the legacy
``now``) is the ``ts`` of the last event indexed: every later event's ``ts`` is above
it whichever clock stamps it.

Idempotency holds beyond the stream's window: the index's ref window (the last
100,000 refs, across restarts) answers a resend before anything is published.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from ..log import IndexedLog, Stamp
from ..schema import Event
from ..store import MemberStore, Query, ReceiptRecord, Store, StoreInfo
from .engine import EngineConfig, EngineError, bus_identity, connect, ensure_stream
from .names import EVENTS, RECEIPTS, bucket_name, msg_id, stream_name, subject, subjects
from .presence import BusPresence
from .shared import SharedMembers

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS
    from nats.aio.msg import Msg
    from nats.js import JetStreamContext

__all__ = ["JetStreamLog"]

log = logging.getLogger("wsbus.engine")

#: messages written to the index in one transaction at most
INDEX_BATCH = 1000
#: messages received and not yet indexed at most (then the consumer waits)
INBOX_MAX = 10 * INDEX_BATCH
#: seconds between tries when the index refuses a batch
INDEX_RETRY = 0.5
#: seconds between the stream's heartbeats to this hub's consumer: two missed, and the
#: consumer is made again from the last position indexed
HEARTBEAT = 1.0
#: the header of a migrated event that carries its ``ts`` (wsbus migrate)
TS_HEADER = "Wsbus-Ts"
#: the smallest step ``ts`` takes from one event to the next
TICK = 1e-6


class SharedReceipt(msgspec.Struct, array_like=True):
    """A receipt as the stream holds it: the record, and the sender of the event it
    acknowledges (every hub tells that sender's connections)."""

    receipt: ReceiptRecord
    sender: str


_encode = msgspec.msgpack.Encoder().encode
_floor = msgspec.msgpack.Decoder(tuple[int, float]).decode
#: the bus's bucket key of the first event its stream keeps after a trim: (seq, ts)
FLOOR_KEY = "floor"
_event = msgspec.msgpack.Decoder(Event).decode
_receipt = msgspec.msgpack.Decoder(SharedReceipt).decode


def next_ts(stored: float, last: float) -> float:
    """An event's ``ts``: the time the stream stored it, raised above the previous
    event's ``ts`` (``last``) when it is not — the same on every hub."""
    return stored if stored > last else last + TICK


class JetStreamLog(IndexedLog):
    """The log of record on a JetStream stream, indexed into this hub's ``store``."""

    shared = True

    def __init__(self, store: Store, config: EngineConfig, ref_window: int = 100_000) -> None:
        super().__init__(store, ref_window)
        self.config = config
        self.bus_id = ""
        self._nc: NATS | None = None
        self._js: JetStreamContext | None = None
        self._sub: Any = None
        self._indexer: asyncio.Task[None] | None = None
        self._inbox: deque[Msg] = deque()
        self._arrived = asyncio.Event()
        self._drained = asyncio.Event()
        #: the stream time of the last message indexed, and how many followed it then
        self._indexed_at = 0.0
        self._pending = 0
        #: the stream position the index holds (events and receipts)
        self.applied = 0
        #: the ts of the last event indexed: the next one's is above it
        self._last_ts = 0.0
        #: seq -> futures of appends waiting for the index to reach it
        self._waiting: dict[int, list[asyncio.Future[None]]] = {}
        self._index_failure: str | None = None
        self._closing = False
        #: (seq, ts) of the first event the stream keeps, when it was trimmed past
        #: what this hub's index held at start
        self._floor: tuple[int, float] | None = None
        self._members: SharedMembers | None = None
        self._presence: BusPresence | None = None
        #: where the events live (printed by ``wsbus serve``)
        self.location = (
            f"bus {config.bus} on NATS {','.join(config.servers)} "
            f"(stream {stream_name(config.bus)}, {config.replicas} replica(s))"
        )

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> StoreInfo:
        self._nc = await connect(
            self.config,
            error_cb=self._nats_error,
            disconnected_cb=self._nats_down,
            reconnected_cb=self._nats_up,
        )
        try:
            return await self._open()
        except BaseException:
            await self.close()  # no heartbeat, no connection left behind
            raise

    async def _open(self) -> StoreInfo:
        assert self._nc is not None
        self._js = self._nc.jetstream(timeout=self.config.publish_timeout)
        stream = await ensure_stream(self._js, self.config)
        self.bus_id = await bus_identity(self._js, self.config)
        self._members = SharedMembers(await self._js.key_value(bucket_name(self.config.bus)))
        await self._members.open()
        try:
            self._presence = await BusPresence.open(self._js, self.config.bus, self.config.replicas)
        except Exception as err:
            raise EngineError(f"cannot share presence on NATS: {err}") from None
        info = await self.store.open(hub_id=self.bus_id)
        floor = await self._floor_of_bus()
        if floor is not None and info.last_seq < floor[0]:
            # the stream was trimmed past what this index holds: start at the bus's
            # floor, whose ts is known exactly (every hub then derives the same ts)
            self._floor = floor
            info = msgspec.structs.replace(
                info, last_seq=floor[0] - 1, pruned_seq=max(info.pruned_seq, floor[0] - 1)
            )
        self.applied = info.last_seq
        self.committed_seq = info.last_seq
        self.committed_ts = self._last_ts = info.last_ts
        await self._load_refs()
        self._indexer = asyncio.create_task(self._index_loop(), name="wsbus-indexer")
        await self._subscribe(info.last_seq)
        # serve once the index holds what the stream held when this hub started: a
        # client resuming from a cursor another hub gave it finds its place here
        if stream.state.messages:
            behind = stream.state.last_seq - self.applied
            if behind > INDEX_BATCH:
                log.warning("indexing %d messages of the bus before serving", behind)
            await self._until_indexed(stream.state.last_seq, timeout=None)
        return msgspec.structs.replace(
            info, hub_id=self.bus_id, last_seq=self.applied, last_ts=self.committed_ts
        )

    async def _subscribe(self, after: int) -> None:
        from nats.js import api

        assert self._js is not None
        self._sub = await self._js.subscribe(
            subjects(self.config.bus),
            stream=stream_name(self.config.bus),
            cb=self._received,
            ordered_consumer=True,
            idle_heartbeat=HEARTBEAT,
            config=api.ConsumerConfig(
                deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=after + 1
            ),
        )

    async def _received(self, msg: Msg) -> None:
        # a full inbox holds the consumer up (flow control), so rebuilding an index
        # from a long stream takes a bounded amount of memory
        while len(self._inbox) >= INBOX_MAX:
            self._drained.clear()
            await self._drained.wait()
        self._inbox.append(msg)
        self._arrived.set()

    async def close(self) -> None:
        """Stop tailing the stream and close the connection to NATS."""
        self._closing = True
        if self._members is not None:
            await self._members.close()
        if self._presence is not None:
            await self._presence.close()
        if self._indexer is not None:
            self._indexer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._indexer
        if self._nc is not None and not self._nc.is_closed:
            with contextlib.suppress(Exception):
                await self._nc.close()

    def shared_members(self) -> MemberStore | None:
        return self._members

    # ------------------------------------------------------------------ retention

    async def retain(self, older_than_ts: float, keep: int) -> tuple[int, int]:
        """Prune this hub's index, then trim the stream below the first event the
        index keeps — after recording that event's ``seq`` and ``ts`` as the bus's
        floor (only ever raised), so a hub that starts later on the trimmed stream
        derives every ``ts`` exactly as the others did."""
        removed, pruned = await self.store.prune(older_than_ts, keep)
        if not pruned:
            return removed, pruned
        first = await self.store.query(Query(limit=1))
        if not first:  # everything went: trim at the next turn, once an event follows
            return removed, pruned
        try:
            if await self._raise_floor(first[0].seq, first[0].ts):
                assert self._js is not None
                await self._js.purge_stream(stream_name(self.config.bus), seq=first[0].seq)
        except Exception as err:  # the stream keeps them until the next turn
            log.warning("trimming the bus's stream failed: %s", err)
        return removed, pruned

    async def _raise_floor(self, seq: int, ts: float) -> bool:
        """Record (seq, ts) as the bus's floor unless it is already at or past it."""
        from nats.js.errors import KeyDeletedError, KeyNotFoundError, KeyWrongLastSequenceError

        assert self._js is not None
        kv = await self._js.key_value(bucket_name(self.config.bus))
        for _ in range(3):
            try:
                entry = await kv.get(FLOOR_KEY)
            except (KeyNotFoundError, KeyDeletedError):
                entry = None
            try:
                if entry is None or not entry.value:
                    await kv.create(FLOOR_KEY, _encode((seq, ts)))
                    return True
                if _floor(entry.value)[0] >= seq:
                    return True  # another hub got there first: trim to it all the same
                await kv.update(FLOOR_KEY, _encode((seq, ts)), last=entry.revision)
                return True
            except KeyWrongLastSequenceError:
                continue
        return False

    async def _floor_of_bus(self) -> tuple[int, float] | None:
        from nats.js.errors import KeyDeletedError, KeyNotFoundError

        assert self._js is not None
        kv = await self._js.key_value(bucket_name(self.config.bus))
        try:
            value = (await kv.get(FLOOR_KEY)).value
        except (KeyNotFoundError, KeyDeletedError):
            return None
        return _floor(value) if value else None

    def shared_presence(self) -> BusPresence | None:
        return self._presence

    # ------------------------------------------------------------------ NATS state

    async def _nats_error(self, err: Exception) -> None:
        if self._nc is not None:  # before, open() says in one line why it failed
            log.warning("NATS: %s", err)

    async def _nats_down(self) -> None:
        if not self._closing:
            log.warning(
                "NATS connection lost: sends are refused until it is back",
                extra={"event": "engine_disconnect"},
            )

    async def _nats_up(self) -> None:
        # (a consumer the restarted server lost misses its heartbeats: the ordered
        # consumer is made again from the last message received, and again until
        # it works)
        log.warning("NATS connection back: catching up", extra={"event": "engine_reconnect"})

    def _refuse_now(self) -> str | None:
        """Why a send cannot be stored right now (retryable), or None. (An index that
        refuses a write for a moment is not a reason: the stream takes the send, and
        the append waits a while for the index.)"""
        nc = self._nc
        if nc is None or not nc.is_connected:
            return "NATS is unreachable; retry"
        if self._pending and time.time() - self._indexed_at > self.config.duplicate_window / 2:
            # far behind the stream (after NATS was away): a resend of an event the
            # stream took that long ago would pass both the stream's duplicate window
            # and the index's ref window
            return "this hub is catching up with the bus; retry in a moment"
        return self.failure

    async def lag(self) -> int | None:
        """The stream's last seq less the last one indexed here; None while NATS is
        unreachable."""
        nc, js = self._nc, self._js
        if nc is None or js is None or not nc.is_connected:
            return None
        try:
            info = await js.stream_info(stream_name(self.config.bus))
        except Exception:  # NATS went away meanwhile: the health says so
            return None
        return max(0, info.state.last_seq - self.applied)

    def problem(self) -> str | None:
        nc = self._nc
        if nc is None or not nc.is_connected:
            return "NATS is unreachable: sends are refused until it is back"
        return self.failure

    # ------------------------------------------------------------------ append

    async def append(
        self,
        drafts: Sequence[Event],
        receipts: Sequence[ReceiptRecord] = (),
        senders: Sequence[str] = (),
    ) -> list[Stamp]:
        if self._sealed:
            raise RuntimeError("the log is sealed")
        why = self._refuse_now()
        if why is not None:
            raise EngineError(why)
        stamps: list[Stamp | None] = []
        published: list[tuple[int, Event, asyncio.Future[Any]]] = []
        made: list[asyncio.Future[Any]] = []  # cancelled if the batch fails
        try:
            acks = await self._publish(drafts, receipts, senders, stamps, published, made)
        except TimeoutError:
            raise EngineError(
                f"NATS did not confirm within {self.config.publish_timeout:g} s; retry "
                "with the same ref",
                maybe_stored=True,
            ) from None
        except Exception as err:  # part of the batch may be in the stream
            raise EngineError(
                f"NATS refused the batch: {err}; retry with the same ref", maybe_stored=True
            ) from None
        finally:
            for future in made:  # an unanswered one holds a slot of the client's window
                if not future.done():
                    future.cancel()
        if acks:
            await self._until_indexed(max(ack.seq for ack in acks))
        firsts: set[int] = set()
        for (i, draft, _), result in zip(published, acks, strict=False):
            again = result.seq in firsts  # the second copy of a ref in this batch
            firsts.add(result.seq)
            stamps[i] = await self._stamp_of(draft, result.seq, bool(result.duplicate) or again)
        return [s for s in stamps if s is not None]

    async def _publish(
        self,
        drafts: Sequence[Event],
        receipts: Sequence[ReceiptRecord],
        senders: Sequence[str],
        stamps: list[Stamp | None],
        published: list[tuple[int, Event, asyncio.Future[Any]]],
        made: list[asyncio.Future[Any]],
    ) -> list[Any]:
        """Publish a batch, pipelined: each draft not already known (its stamp in
        ``stamps``, or None and its future in ``published``), then the receipts; the
        stream's acknowledgements, drafts' first."""
        js, bus = self._js, self.config.bus
        assert js is not None
        batch_keys: dict[tuple[str, str], asyncio.Future[Any]] = {}
        for draft in drafts:
            key = (draft.from_, draft.ref) if draft.ref is not None else None
            if key is not None:
                seen = self.known(*key)
                if seen is not None:
                    stamps.append(seen)
                    continue
                first = batch_keys.get(key)
                if first is not None:  # twice in one batch: published once
                    stamps.append(None)
                    published.append((len(stamps) - 1, draft, first))
                    continue
            headers = {"Nats-Msg-Id": msg_id(*key)} if key is not None else None
            ack = await js.publish_async(
                subject(bus, EVENTS, draft.channel), _encode(draft), headers=headers
            )
            made.append(ack)
            if key is not None:
                batch_keys[key] = ack
            stamps.append(None)
            published.append((len(stamps) - 1, draft, ack))
        receipt_acks = []
        for r, sender in zip(receipts, senders or [""] * len(receipts), strict=True):
            ack = await js.publish_async(
                subject(bus, RECEIPTS, r.channel), _encode(SharedReceipt(r, sender))
            )
            made.append(ack)
            receipt_acks.append(ack)
        futures = [ack for _, _, ack in published] + receipt_acks
        return await asyncio.wait_for(asyncio.gather(*futures), self.config.publish_timeout)

    async def _stamp_of(self, draft: Event, seq: int, duplicate: bool) -> Stamp:
        """The stamp of a published draft, once the index holds ``seq``."""
        if draft.ref is not None:
            seen = self._refs.get((draft.from_, draft.ref))
            if seen is not None:
                return Stamp(seen[0], seen[1], duplicate)
        stored = await self.store.get(seq)
        return Stamp(seq, stored.ts if stored is not None else self.committed_ts, duplicate)

    async def _until_indexed(self, seq: int, timeout: float | None = -1.0) -> None:
        """Wait until the index holds stream position ``seq`` (``timeout`` -1: the
        publish timeout; None: no limit)."""
        if self.applied >= seq:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(seq, []).append(future)
        limit = self.config.publish_timeout if timeout == -1.0 else timeout
        try:
            await asyncio.wait_for(future, limit)
        except TimeoutError:
            behind = f" ({self._index_failure})" if self._index_failure else ""
            raise EngineError(
                f"the bus's stream holds it, but this hub's index is behind{behind}; "
                "retry with the same ref",
                maybe_stored=True,
            ) from None

    # ------------------------------------------------------------------ the index

    async def _index_loop(self) -> None:
        """Write what the stream delivers into the index, then to the tails."""
        while True:
            await self._arrived.wait()
            self._arrived.clear()
            while self._inbox:
                batch = [self._inbox.popleft() for _ in range(min(INDEX_BATCH, len(self._inbox)))]
                self._drained.set()
                while True:  # never drop a batch: the index would miss it for good
                    try:
                        await self._index(batch)
                        break
                    except asyncio.CancelledError:
                        raise
                    except Exception:
                        log.exception("indexing %d stream messages failed; retrying", len(batch))
                        await asyncio.sleep(INDEX_RETRY)

    async def _index(self, batch: list[Msg]) -> None:
        events: list[Event] = []
        receipts: list[SharedReceipt] = []
        refs: dict[tuple[str, str], tuple[int, float]] = {}
        last_ts = self._last_ts
        upto = self.applied
        replace = msgspec.structs.replace
        for msg in batch:
            meta = msg.metadata
            seq = meta.sequence.stream
            self._pending, self._indexed_at = meta.num_pending, meta.timestamp.timestamp()
            if seq <= upto:
                continue  # delivered again after a consumer reset
            upto = seq
            what = msg.subject.split(".", 3)[2]
            try:
                if what == EVENTS:
                    stored = meta.timestamp.timestamp()
                    if msg.headers and TS_HEADER in msg.headers:  # migrated: its own ts
                        stored = float(msg.headers[TS_HEADER])
                    if self._floor is not None and seq == self._floor[0]:
                        ts = last_ts = self._floor[1]  # the bus's floor: known exactly
                    else:
                        ts = last_ts = next_ts(stored, last_ts)
                    ev = replace(_event(msg.data), seq=seq, ts=ts)
                    events.append(ev)
                    if ev.ref is not None:
                        refs[(ev.from_, ev.ref)] = (seq, ts)
                elif what == RECEIPTS:
                    receipts.append(_receipt(msg.data))
            except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as err:
                log.error("stream message %d (%s) is not a wsbus record: %s", seq, msg.subject, err)
        if upto == self.applied:
            return
        while True:
            try:
                await self.store.append(events, [r.receipt for r in receipts], upto=upto)
                break
            except asyncio.CancelledError:
                raise
            except Exception as err:
                self._index_failure = f"the index refuses writes: {err}"
                log.error("%s; retrying", self._index_failure)
                await asyncio.sleep(INDEX_RETRY)
        self._index_failure = None
        self.applied = upto
        self._last_ts = last_ts
        self._indexed(events, refs)
        if receipts and self.on_receipts is not None:
            try:
                self.on_receipts([(r.receipt, r.sender) for r in receipts if r.sender])
            except Exception:
                log.exception("telling senders of %d receipts failed", len(receipts))
        for seq in [s for s in self._waiting if s <= upto]:
            for future in self._waiting.pop(seq):
                if not future.done():
                    future.set_result(None)

    def _idle_watermark(self) -> float:
        return self.committed_ts
