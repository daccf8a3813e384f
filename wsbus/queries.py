"""Queries: history and threads from the index, within what a token may read.

The hub's part that turns a ``history`` or ``threads`` frame into an index query:
its limits, and for a token that does not read everything, its channels and the
events it is a party to (broadcasts, and direct events to or from its names).
"""

from __future__ import annotations

from .access import Access
from .auth import may_use_channel, party_of, reads_all
from .errors import ErrorCode, FrameError
from .schema import BROADCAST, History, HistoryResult, Receipt, Threads, ThreadsResult
from .session import Session
from .store import Query, Store

__all__ = ["Queries"]


class Queries:
    """History and threads (see the module docstring)."""

    def __init__(self, store: Store, access: Access, max_history: int) -> None:
        self.store = store
        self.access = access
        self.max_history = max_history

    async def history(self, session: Session, h: History) -> HistoryResult:
        if h.limit > self.max_history:
            raise FrameError(
                ErrorCode.LIMIT_TOO_LARGE,
                f"limit {h.limit} is over max_history {self.max_history}",
                h.ref,
            )
        if h.pending and h.to in (None, BROADCAST):
            raise FrameError(ErrorCode.INVALID_FRAME, "pending needs a name in `to`", h.ref)
        channels = [h.channel] if h.channel else None
        party = None
        grant = session.grant
        if grant is not None and not reads_all(grant):
            self.access.check_channels(session, [h.channel], h.ref)
            if h.pending and h.to is not None:
                self.access.check_name(session, h.to, h.ref)
            channels = channels or (list(grant.channels) or None)
            party = party_of(grant)
        q = Query(
            limit=h.limit,
            channels=channels,
            party=party,
            entitled=[h.to] if h.pending and h.to else None,
            pending_only=h.pending,
            to=h.to,
            sender=h.from_,
            thread=h.thread,
            after=h.after,
            before=h.before,
            latest=h.after is None,
        )
        events = await self.store.query(q)
        result = HistoryResult(ref=h.ref, events=events, more=len(events) == h.limit)
        if h.receipts and events:
            # as pushed live: to the senders (an admin reads them all, as a watcher)
            senders = None if party is None else set(party)
            seqs = [e.seq for e in events if senders is None or e.from_ in senders]
            result.receipts = [
                Receipt(
                    seq=r.seq,
                    channel=r.channel,
                    by=r.name,
                    status=r.status,
                    ts=r.ts,
                    reason=r.reason,
                )
                for r in await self.store.receipts_of(seqs)
            ]
        return result

    async def threads(self, session: Session, t: Threads) -> ThreadsResult:
        self.access.check_channels(session, [t.channel], t.ref)
        grant = session.grant
        # counted over what the token may read: others' direct events do not show
        threads = await self.store.threads(
            t.channel, party_of(grant) if grant is not None else None
        )
        if grant is not None:
            threads = [th for th in threads if may_use_channel(grant, th.channel)]
        return ThreadsResult(ref=t.ref, threads=threads)
