"""Receipts: which acknowledgements a connection may give, and for whom.

The hub's part that checks an ``ack`` (its name is the connection's; the event
exists, is addressed to that name or to everyone, on a channel the token may use)
and turns it into a :class:`~wsbus.store.ReceiptRecord` for the ingest's next
batch. It keeps the channel, sender and recipient of the most recent events (as
many as the idempotency window) so most acks need no read of the index.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Collection
from typing import cast

from .auth import may_use_channel
from .broadcast import Writer
from .errors import ErrorCode, FrameError
from .routing import Router
from .schema import BROADCAST, FINAL_STATUSES, Ack, Event, Receipt
from .session import Session
from .store import ReceiptRecord, Store

__all__ = ["Receipts", "tell_senders"]


def tell_senders(receipts: list[tuple[ReceiptRecord, str]], router: Router, writer: Writer) -> None:
    """Push committed receipts to the connections of the senders of the events they
    acknowledge, whatever their channels — but never to a token that may not use the
    event's channel (a name can have several tokens) — and to the connections that
    watch the event's channel (they read every event of it: the dashboard)."""
    for record, sender in receipts:
        frame = Receipt(
            seq=record.seq,
            channel=record.channel,
            by=record.name,
            status=record.status,
            ts=record.ts,
            reason=record.reason,
        )
        targets = {
            s
            for s in cast(set[Session], router.by_name.get(sender, ()))
            if s.grant is None or may_use_channel(s.grant, record.channel)
        }
        targets.update(cast(Collection[Session], router.watchers(record.channel)))
        writer.push(targets, frame)


class Receipts:
    """The ack check and its cache of recent events (see the module docstring)."""

    def __init__(self, store: Store, window: int = 100_000) -> None:
        self.store = store
        self.window = window
        #: seq -> (channel, sender, recipient) of the newest events
        self._recent: OrderedDict[int, tuple[str, str, str]] = OrderedDict()

    def remember(self, ev: Event) -> None:
        """Note an event the tail yielded (acks for it need no index read)."""
        self._recent[ev.seq] = (ev.channel, ev.from_, ev.to)
        if len(self._recent) > self.window:
            self._recent.popitem(last=False)

    async def check(self, session: Session, ack: Ack, pruned_seq: int) -> tuple[ReceiptRecord, str]:
        """The receipt ``ack`` gives and the sender to tell, or FrameError.

        An event the name may not acknowledge (addressed to another name, or on a
        channel the token may not use) gets the answer a missing one gets: the
        refusal tells nothing about events the connection may not read.
        """
        name = ack.name or session.name
        if name is None or name not in session.names:
            raise FrameError(ErrorCode.NOT_YOUR_NAME, f"{name!r} is not a name of this connection")
        known = None
        if ack.seq > pruned_seq:  # a pruned event is gone, even while the cache has it
            known = self._recent.get(ack.seq)
            if known is None:
                ev = await self.store.get(ack.seq)
                known = (ev.channel, ev.from_, ev.to) if ev is not None else None
        grant = session.grant
        if (
            known is None
            or known[2] not in (name, BROADCAST)
            or (grant is not None and not may_use_channel(grant, known[0]))
        ):
            raise FrameError(
                ErrorCode.UNKNOWN_EVENT,
                f"no event with seq {ack.seq} that {name!r} may acknowledge",
            )
        channel, sender, _ = known
        record = ReceiptRecord(
            seq=ack.seq,
            channel=channel,
            name=name,
            status=ack.status,
            ts=time.time(),
            reason=ack.reason,
            final=ack.status in FINAL_STATUSES,
        )
        return record, sender
