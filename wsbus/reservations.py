"""The hub's part for file leases: ``reserve``, ``release`` and ``leases`` frames.

A reservation is checked against the book (:class:`~wsbus.leases.LeaseBook`) and
refused at once when it conflicts; otherwise it becomes a lease event, goes through
the ingest like a send (its ``ref`` makes a resend idempotent) and is answered once
the hub's tail has applied it to the book — the verdict every hub of the bus reaches
(with several hubs, two reservations that raced are judged in log order there).
Releases are events too. The hub releases a name's leases itself when the name
leaves a channel's roster, and a token's leases when the token is revoked.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import msgspec

from .access import Access
from .auth import may_use_channel
from .errors import ErrorCode, FrameError
from .leasepaths import conflict
from .leasepaths import normalize as normalize_path
from .leases import (
    BOOK,
    KIND,
    MAX_TTL,
    LeaseBook,
    ReleaseOp,
    ReserveOp,
    Verdict,
    describe,
    token_digest,
    until_text,
)
from .refs import new_ref
from .schema import (
    DEFAULT_CHANNEL,
    Event,
    Lease,
    Leases,
    LeasesResult,
    Release,
    Released,
    Reserve,
    Reserved,
)
from .session import Session

if TYPE_CHECKING:
    from .ingest import Ingest
    from .store import Store

__all__ = ["Reservations"]

log = logging.getLogger("wsbus.hub")

#: how long a request waits for its event to be applied (the tail of a shared log)
APPLY_TIMEOUT = 30.0
#: what the refs of lease events start with: a reservation's ``ref`` and a message's
#: are the client's own, in two spaces (the log's window holds ``(sender, ref)``)
REF_PREFIX = "lease:"
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class Reservations:
    """Leases: requests in, lease events out, the book kept from the log."""

    def __init__(
        self,
        ingest: Ingest,
        access: Access,
        *,
        live_tokens: Callable[[], list[str]] | None = None,
    ) -> None:
        self.ingest = ingest
        self.access = access
        self.book = LeaseBook()
        #: the ids of the tokens in force (None: no tokens, nothing to revoke)
        self._live_tokens = live_tokens
        self._waiting: dict[int, list[asyncio.Future[Verdict]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ the log

    async def load(self, store: Store, upto: int) -> None:
        """Rebuild the book from the lease events of the last day (up to seq ``upto``;
        the tail brings the rest)."""
        events = await store.lease_events(time.time() - MAX_TTL, upto)
        for ev in events:
            self.book.apply(ev)
        self.book.applied_seq = max(self.book.applied_seq, upto)
        if events:
            log.info("leases: %d events of the last day read", len(events))

    def start(self) -> None:
        """Once the hub runs: end the leases of tokens revoked while it was down."""
        self.tokens_changed()

    def applied(self, events: Sequence[Event]) -> None:
        """Apply the lease events of a batch the tail yielded (the book learns how far
        the batch went); answer the requests waiting for them."""
        for ev in events:
            if ev.to != BOOK:  # the fan-out's hot path: one comparison per message
                continue
            verdict = self.book.apply(ev)
            if verdict is None:
                continue
            for done in self._waiting.pop(ev.seq, ()):
                if not done.done():
                    done.set_result(verdict)
        if events:
            self.book.applied_seq = max(self.book.applied_seq, events[-1].seq)

    async def _verdict(self, seq: int, ref: str) -> Verdict:
        known = self.book.verdict(seq)
        if known is not None:
            return known
        if seq <= self.book.applied_seq:  # judged too long ago to remember the verdict
            now = time.time()
            for channel in self.book.channels():
                for lease in self.book.in_force(channel, now):
                    if lease.id == seq:
                        return Verdict(lease=lease)
            raise FrameError(
                ErrorCode.LEASE_PENDING,
                f"lease event {seq} was judged too long ago to recall the verdict and is "
                "not in force: list the leases, or reserve again with a new ref",
                ref,
            )
        done: asyncio.Future[Verdict] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(seq, []).append(done)
        try:
            return await asyncio.wait_for(done, APPLY_TIMEOUT)
        except TimeoutError:
            raise FrameError(
                ErrorCode.LEASE_PENDING,
                f"the lease event is in the log (seq {seq}) but this hub has not read it "
                "back yet: resend it with the same ref to learn the verdict",
                ref,
            ) from None
        finally:
            waiting = self._waiting.get(seq)
            if waiting is not None and done in waiting:
                waiting.remove(done)
                if not waiting:
                    del self._waiting[seq]

    async def _write(
        self, channel: str, holder: str, ref: str, op: ReserveOp | ReleaseOp, body: str
    ) -> Verdict:
        draft = Event(
            seq=0,
            ts=0.0,
            channel=channel,
            from_=holder,
            to=BOOK,
            body=body,
            kind=KIND,
            meta={"lease": msgspec.to_builtins(op)},
            ref=REF_PREFIX + ref,
        )
        if not self.ingest.has_room():
            await self.ingest.wait_room()
        stamp = await self.ingest.submit_event(draft)
        return await self._verdict(stamp.seq, ref)

    # ------------------------------------------------------------------ requests

    def _who(
        self, session: Session, name: str | None, channel: str | None, ref: str
    ) -> tuple[str, str]:
        """The holder and channel of a request (checked like a send's)."""
        holder = name or session.name
        if holder is None:
            raise FrameError(
                ErrorCode.NOT_YOUR_NAME, "this connection has no name; say one in hello", ref
            )
        if holder not in session.names:
            raise FrameError(
                ErrorCode.NOT_YOUR_NAME,
                f"{holder!r} is not a name of this connection ({', '.join(session.names)})",
                ref,
            )
        one = min(session.channels) if len(session.channels) == 1 else None
        where = channel or one or DEFAULT_CHANNEL
        self.access.check_channels(session, [where], ref)
        return holder, where

    async def reserve(self, session: Session, r: Reserve) -> Reserved:
        holder, channel = self._who(session, r.name, r.channel, r.ref)
        paths = self._paths(r.paths, r.ref)
        if r.reason is not None and _CONTROL.search(r.reason):
            raise FrameError(ErrorCode.INVALID_FRAME, "reason holds control characters", r.ref)
        if self.ingest.log.known(holder, REF_PREFIX + r.ref) is None:
            # judged here first (a resend is answered from its verdict instead)
            now = time.time()
            conflicts = self.book.conflicts(channel, holder, paths, r.exclusive, now)
            if conflicts:
                raise FrameError(ErrorCode.LEASE_CONFLICT, self._refusal(paths, conflicts), r.ref)
            limit = self.book.over_limit(channel, holder, paths, now)
            if limit is not None:
                raise FrameError(ErrorCode.LEASE_LIMIT, limit, r.ref)
        grant = session.grant
        op = ReserveOp(
            paths=paths,
            ttl=r.ttl,
            exclusive=r.exclusive,
            reason=r.reason,
            token=token_digest(grant.id) if grant is not None else None,
        )
        kind = "exclusive" if r.exclusive else "shared"
        body = f"reserve {', '.join(paths)} ({kind}, {r.ttl:g} s)" + (
            f": {r.reason}" if r.reason else ""
        )
        verdict = await self._write(channel, holder, r.ref, op, body)
        if verdict.lease is not None:
            return Reserved(ref=r.ref, lease=verdict.lease, renewed=verdict.renewed)
        if verdict.conflicts:
            raise FrameError(
                ErrorCode.LEASE_CONFLICT, self._refusal(paths, verdict.conflicts), r.ref
            )
        raise FrameError(ErrorCode.LEASE_LIMIT, verdict.limit or "refused", r.ref)

    @staticmethod
    def _paths(given: list[str], ref: str) -> list[str]:
        try:
            return sorted({normalize_path(p) for p in given})
        except ValueError as err:
            raise FrameError(ErrorCode.BAD_PATH, str(err), ref) from None

    @staticmethod
    def _refusal(paths: list[str], conflicts: list[Lease]) -> str:
        first = conflicts[0]
        more = f" (and {len(conflicts) - 1} more leases)" if len(conflicts) > 1 else ""
        shared = (
            ""
            if any(x.exclusive for x in conflicts)
            else (", or reserve shared (not exclusive) if you only read")
        )
        return (
            f"{', '.join(paths)} overlaps {describe(first)} until {until_text(first.until)}"
            f"{more}: wait for it to end or ask {first.holder} to release it{shared}"
        )

    async def release(self, session: Session, r: Release) -> Released:
        holder, channel = self._who(session, r.name, r.channel, r.ref)
        if r.ids and r.paths:
            raise FrameError(ErrorCode.INVALID_FRAME, "release takes ids or paths, not both", r.ref)
        paths = self._paths(r.paths, r.ref)
        op = ReleaseOp(ids=list(dict.fromkeys(r.ids)), paths=paths)
        what = f"leases {', '.join(map(str, r.ids))}" if r.ids else ", ".join(paths) or "all"
        verdict = await self._write(channel, holder, r.ref, op, f"release {what}")
        return Released(ref=r.ref, leases=verdict.released)

    def leases(self, session: Session, q: Leases) -> LeasesResult:
        """The leases in force, within the channels the token may use."""
        grant = session.grant
        if q.channel is not None:
            self.access.check_channels(session, [q.channel], q.ref)
            channels = [q.channel]
        else:
            channels = self.book.channels()
            if grant is not None:
                channels = [c for c in channels if may_use_channel(grant, c)]
        now = time.time()
        found = [lease for c in channels for lease in self.book.in_force(c, now)]
        if q.prefix:
            prefix = self._paths([q.prefix], q.ref)[0]
            found = [x for x in found if any(conflict(prefix, p) for p in x.paths)]
        found.sort(key=lambda lease: lease.id)
        return LeasesResult(ref=q.ref, leases=found)

    # ------------------------------------------------------------------ the hub's own

    def release_all(self, channel: str, holder: str, why: str) -> None:
        """End every lease of ``holder`` on ``channel`` (it left the roster)."""
        if self.book.held(channel, holder, time.time()):
            self._spawn(channel, holder, ReleaseOp(why=why), f"release all: {why}")

    def tokens_changed(self) -> None:
        """The token file was re-read: end the leases reserved with a revoked token."""
        if self._live_tokens is None:
            return
        live = {token_digest(i) for i in self._live_tokens()}
        now = time.time()
        for token in self.book.tokens() - live:
            ended: dict[tuple[str, str], list[int]] = {}
            for lease in self.book.by_token(token, now):
                ended.setdefault((lease.channel, lease.holder), []).append(lease.id)
            for (channel, holder), ids in ended.items():
                op = ReleaseOp(ids=ids, why="token revoked")
                self._spawn(channel, holder, op, "release: token revoked")

    def _spawn(self, channel: str, holder: str, op: ReleaseOp, body: str) -> None:
        async def run() -> None:
            try:
                await self._write(channel, holder, new_ref(), op, body)
            except Exception as err:  # the book keeps them until they expire
                log.warning("releasing %s's leases on %s failed: %s", holder, channel, err)

        task = asyncio.get_running_loop().create_task(run(), name="wsbus-lease-release")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
