"""In-memory store for tests and throwaway hubs (``wsbus serve --memory``)."""

from __future__ import annotations

import bisect
import time
import uuid
from collections.abc import Sequence

from ..leases import BOOK, MAX_TTL
from ..schema import BROADCAST, Event, ThreadInfo
from .base import (
    MemberRecord,
    Pending,
    Query,
    ReceiptRecord,
    Store,
    StoreInfo,
    StoreMismatch,
)
from .filters import matches

__all__ = ["MemoryStore"]


class MemoryStore(Store):
    """Keeps everything in lists; nothing survives the process."""

    location = "memory (nothing is kept after the hub stops)"

    def __init__(self) -> None:
        self._events: list[Event] = []
        self._seqs: list[int] = []
        self._receipts: dict[int, list[ReceiptRecord]] = {}
        self._pruned_seq = 0
        self._members: dict[tuple[str, str], MemberRecord] = {}
        self._hub_id = uuid.uuid4().hex[:12]
        self._applied = 0  # the shared log's position (append's upto)

    async def open(self, hub_id: str | None = None) -> StoreInfo:
        if hub_id is not None and hub_id != self._hub_id:
            if self._events or self._applied:
                raise StoreMismatch(f"this store holds hub {self._hub_id}, not {hub_id}")
            self._hub_id = hub_id
        last = self._events[-1] if self._events else None
        return StoreInfo(
            hub_id=self._hub_id,
            last_seq=max(last.seq if last else self._pruned_seq, self._applied),
            last_ts=last.ts if last else 0.0,
            pruned_seq=self._pruned_seq,
            count=len(self._events),
        )

    async def append(
        self,
        events: Sequence[Event],
        receipts: Sequence[ReceiptRecord] = (),
        upto: int | None = None,
    ) -> None:
        if upto is not None:
            self._applied = max(self._applied, upto)
        for ev in events:
            self._events.append(ev)
            self._seqs.append(ev.seq)
        for r in receipts:
            self._receipts.setdefault(r.seq, []).append(r)

    def _acked(self, ev: Event) -> bool:
        return any(r.final and r.name == ev.to for r in self._receipts.get(ev.seq, ()))

    async def query(self, q: Query) -> list[Event]:
        lo = bisect.bisect_right(self._seqs, q.after) if q.after is not None else 0
        hi = bisect.bisect_left(self._seqs, q.before) if q.before is not None else len(self._seqs)
        rng = range(hi - 1, lo - 1, -1) if q.latest else range(lo, hi)
        out: list[Event] = []
        for i in rng:
            ev = self._events[i]
            if not matches(q, ev.channel, ev.from_, ev.to, ev.thread):
                continue
            if q.pending_only and (ev.to == BROADCAST or self._acked(ev)):
                continue
            out.append(ev)
            if len(out) >= q.limit:
                break
        if q.latest:
            out.reverse()
        return out

    async def recipients(self, limit: int) -> list[str]:
        names = {ev.to for ev in self._events if ev.to not in (BROADCAST, BOOK)}
        return sorted(names)[:limit]

    async def pending(self, after: int) -> list[Pending]:
        found: dict[tuple[str, str], Pending] = {}
        for i in range(bisect.bisect_right(self._seqs, after), len(self._seqs)):
            ev = self._events[i]
            if ev.to in (BROADCAST, BOOK) or self._acked(ev):
                continue
            key = (ev.channel, ev.to)
            seen = found.get(key)
            found[key] = (
                Pending(ev.channel, ev.to, 1, ev.seq, ev.ts)
                if seen is None
                else Pending(ev.channel, ev.to, seen.count + 1, seen.oldest_seq, seen.oldest_ts)
            )
        return list(found.values())

    async def get(self, seq: int) -> Event | None:
        i = bisect.bisect_left(self._seqs, seq)
        if i < len(self._seqs) and self._seqs[i] == seq:
            return self._events[i]
        return None

    async def lease_events(self, since_ts: float, upto: int) -> list[Event]:
        return [e for e in self._events if e.to == BOOK and e.seq <= upto and e.ts > since_ts]

    async def receipts(self, seq: int) -> list[ReceiptRecord]:
        return list(self._receipts.get(seq, ()))

    async def recent_refs(self, limit: int) -> list[tuple[str, str, int, float]]:
        out: list[tuple[str, str, int, float]] = []
        for ev in reversed(self._events):
            if ev.ref is not None:
                out.append((ev.from_, ev.ref, ev.seq, ev.ts))
                if len(out) >= limit:
                    break
        out.reverse()
        return out

    async def counts(self) -> tuple[dict[tuple[str, str], int], int]:
        out: dict[tuple[str, str], int] = {}
        for ev in self._events:
            key = (ev.channel, ev.to)
            out[key] = out.get(key, 0) + 1
        return out, self._events[-1].seq if self._events else 0

    async def seq_at_ts(self, ts: float) -> int:
        i = bisect.bisect_right([e.ts for e in self._events], ts)
        return self._seqs[i - 1] if i > 0 else 0

    async def prune(self, older_than_ts: float, keep: int) -> tuple[int, int]:
        cut = bisect.bisect_left([e.ts for e in self._events], older_than_ts)
        cut = max(cut, len(self._events) - keep) if keep > 0 else cut
        if cut <= 0:
            return 0, self._pruned_seq
        self._pruned_seq = max(self._pruned_seq, self._seqs[cut - 1])
        lease_since = time.time() - MAX_TTL  # lease events of the last day stay
        kept = [e for e in self._events[:cut] if e.to == BOOK and e.ts > lease_since]
        for ev in self._events[:cut]:
            self._receipts.pop(ev.seq, None)
        self._events[:cut] = kept
        self._seqs[:cut] = [e.seq for e in kept]
        return cut - len(kept), self._pruned_seq

    async def threads(
        self, channel: str | None, party: list[str] | None = None
    ) -> list[ThreadInfo]:
        q = Query(limit=0, channels=[channel] if channel is not None else None, party=party)
        found: dict[tuple[str, str], ThreadInfo] = {}
        for ev in self._events:
            if ev.thread is None or not matches(q, ev.channel, ev.from_, ev.to, ev.thread):
                continue
            key = (ev.channel, ev.thread)
            info = found.get(key)
            if info is None:
                found[key] = ThreadInfo(ev.channel, ev.thread, 1, ev.ts, ev.ts)
            else:
                info.entries += 1
                info.last_ts = ev.ts
        return sorted(found.values(), key=lambda t: t.last_ts, reverse=True)

    async def members(self) -> list[MemberRecord]:
        return list(self._members.values())

    async def put_member(self, member: MemberRecord) -> None:
        self._members[(member.channel, member.name)] = member

    async def remove_member(self, channel: str, name: str) -> None:
        self._members.pop((channel, name), None)

    async def close(self) -> None:
        return None
