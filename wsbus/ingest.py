"""Ingest: sends and acknowledgements on their way into the log.

The hub's part that validates a send (its name, size, meta, the credential guard,
its channel), keeps one queue entry per ``(sender, ref)`` (a resend while the first
is queued waits with it; one already in the log is answered at once), and commits
what is queued as one batch (group commit: while one batch commits, the next
accumulates), then answers ``ok`` or ``error`` to every sender of it. Receipts
(acknowledgements) ride in the same batches.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import msgspec

from .access import Access
from .codec import JSON, meta_problem
from .errors import ErrorCode, FrameError
from .log import Log, Stamp
from .loopguard import LoopGuard
from .metrics import HubMetrics
from .schema import BROADCAST, DEFAULT_CHANNEL, Error, Event, Ok, Send
from .session import Session
from .store import ReceiptRecord

if TYPE_CHECKING:
    from .hubconfig import HubConfig

__all__ = ["Ingest"]

logger = logging.getLogger("wsbus.hub")

#: receipts kept for a retry while the store refuses commits (the oldest dropped beyond)
MAX_KEPT_RECEIPTS = 10_000


class _Pending(msgspec.Struct):
    event: Event
    waiters: list[Session]
    #: the hub's own drafts (leases) wait here instead of a session
    futures: list[asyncio.Future[Stamp]] = msgspec.field(default_factory=list)


#: a receipt and the sender of the event it acknowledges (who is told)
ReceiptFor = tuple[ReceiptRecord, str]


class Ingest:
    """Validation, the write queue and group commit (see the module docstring)."""

    def __init__(
        self,
        log: Log,
        config: HubConfig,
        access: Access,
        *,
        in_channel: Callable[[str, str], bool],
        online: Callable[[str, str], bool],
        on_receipts: Callable[[list[ReceiptFor]], None],
        on_committed: Callable[[], None] = lambda: None,
        metrics: HubMetrics | None = None,
        find_secret: Callable[[str], str | None] | None = None,
    ) -> None:
        self.log = log
        self.config = config
        self.access = access
        #: whether a name is a member of (or connected on) a channel: the loop guard's
        self._in_channel = in_channel
        #: whether a recipient is connected now (``ok.online``)
        self._online = online
        #: told of each committed batch's receipts (the hub pushes them to senders)
        self._on_receipts = on_receipts
        #: called after each commit's answers (the hub fans out what its tail has now)
        self._on_committed = on_committed
        #: commit latency, events in
        self.metrics = metrics or HubMetrics()
        #: ``--block-secrets``: names the kind of credential a body carries, or None
        self.find_secret = find_secret
        self.loops = LoopGuard(config.loop_window)
        self._queue: list[_Pending] = []
        self._receipts: list[ReceiptFor] = []
        #: (sender, ref) -> its send, queued or committing (a resend waits with it)
        self._queued: dict[tuple[str, str], _Pending] = {}
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._store_error: str | None = None
        self.stopping = False
        #: flushes begun and ended (:meth:`settled` waits on them)
        self._begun = 0
        self._ended = 0
        self._flushed = asyncio.Condition()

    # ------------------------------------------------------------------ sends

    def queued(self) -> int:
        """Sends waiting for the next commit."""
        return len(self._queue)

    def has_room(self) -> bool:
        return len(self._queue) < self.config.max_pending_writes

    async def wait_room(self) -> None:
        """Wait until the write queue has room (backpressure on publishers)."""
        while not self.has_room():
            self._room.clear()
            await self._room.wait()

    def _check(self, session: Session, send: Send, sender: str | None) -> str:
        """The sender's name, once the send passed every check (else FrameError)."""
        if sender is None:
            raise FrameError(
                ErrorCode.NOT_YOUR_NAME, "this connection has no name; say one in hello", send.ref
            )
        if sender not in session.names:
            raise FrameError(
                ErrorCode.NOT_YOUR_NAME,
                f"{sender!r} is not a name of this connection ({', '.join(session.names)})",
                send.ref,
            )
        size = len(send.body.encode("utf-8", "surrogatepass"))
        if size > self.config.max_body:
            raise FrameError(
                ErrorCode.BODY_TOO_LARGE,
                f"body is {size} bytes; the limit is {self.config.max_body}",
                send.ref,
            )
        if send.meta is not None:
            problem = meta_problem(send.meta)
            if problem is not None:
                raise FrameError(
                    ErrorCode.INVALID_FRAME,
                    f"meta must be plain JSON (objects, arrays, strings, 64-bit numbers): "
                    f"{problem}",
                    send.ref,
                )
        if self.find_secret is not None:
            found = self.find_secret(send.body)
            if found is None and send.meta:
                found = self.find_secret(JSON.encode(send.meta).decode())
            if found is not None:
                raise FrameError(
                    ErrorCode.SECRET_IN_BODY,
                    f"the body looks like it carries a {found}; secrets stay off the bus: "
                    "send a reference instead (wsbus send --attach FILE sends its path, "
                    "size and sha256)",
                    send.ref,
                )
        return sender

    def submit(self, session: Session, send: Send) -> None:
        """Accept a send for commit; ``ok`` (or ``error``) follows asynchronously."""
        if self.stopping:
            raise FrameError(ErrorCode.SHUTTING_DOWN, "hub is shutting down", send.ref)
        sender = self._check(session, send, send.from_ or session.name)
        key = (sender, send.ref)
        queued = self._queued.get(key)
        if queued is not None:
            queued.waiters.append(session)
            return
        seen = self.log.known(sender, send.ref)
        if seen is not None:
            session.send(Ok(ref=send.ref, seq=seen.seq, ts=seen.ts, duplicate=True))
            return
        channel = send.channel or (min(session.channels) if len(session.channels) == 1 else None)
        channel = channel or DEFAULT_CHANNEL
        self.access.check_channels(session, [channel], send.ref)
        loop = None
        if send.kind != "notice":
            now = time.time()  # the loop guard's clock; the log stamps the event
            if send.to == BROADCAST:
                loop = self.loops.record_broadcast(
                    now, sender, channel, lambda n: self._in_channel(channel, n)
                )
            else:
                loop = self.loops.record(now, sender, [send.to], channel)
            loop = loop or None
        draft = Event(
            seq=0,
            ts=0.0,
            channel=channel,
            from_=sender,
            to=send.to,
            body=send.body,
            thread=send.thread,
            kind=send.kind or session.info.get("kind"),
            meta=send.meta,
            ref=send.ref,
            loop=loop,
        )
        self._enqueue(key, _Pending(draft, [session]))

    def submit_event(self, draft: Event) -> asyncio.Future[Stamp]:
        """Queue an event the hub wrote itself (a lease, for its sender, with a
        ``ref``): the future gets its stamp once committed (``duplicate`` for a
        ``(sender, ref)`` the log holds), or a FrameError (``store_failed``)."""
        assert draft.ref is not None
        done: asyncio.Future[Stamp] = asyncio.get_running_loop().create_future()
        if self.stopping:
            raise FrameError(ErrorCode.SHUTTING_DOWN, "hub is shutting down", draft.ref)
        key = (draft.from_, draft.ref)
        queued = self._queued.get(key)
        if queued is not None:
            queued.futures.append(done)
            return done
        seen = self.log.known(draft.from_, draft.ref)
        if seen is not None:
            done.set_result(seen)
            return done
        self._enqueue(key, _Pending(draft, [], [done]))
        return done

    def _enqueue(self, key: tuple[str, str], pending: _Pending) -> None:
        self._queue.append(pending)
        self._queued[key] = pending
        self._wake.set()

    def receipt(self, record: ReceiptRecord, sender: str) -> None:
        """Queue a receipt for the next batch; ``sender`` is told once it is stored."""
        self._receipts.append((record, sender))
        self._wake.set()

    async def settled(self) -> None:
        """Until what is queued now (sends, receipts) has been through a commit (the
        ``pong`` to a ``ping`` with ``sync`` waits for it: a client that acked, then
        pinged, knows its receipts are stored)."""
        if self._queue or self._receipts:
            target = self._begun + 1
        elif self._begun > self._ended:
            target = self._begun
        else:
            return
        async with self._flushed:
            await self._flushed.wait_for(lambda: self._ended >= target)

    # ------------------------------------------------------------------ commits

    async def run(self) -> None:
        """The writer: commit what is queued until :meth:`stop` and the queue is empty."""
        while True:
            await self._wake.wait()
            # one turn of the loop lets requests that are already readable join this
            # batch: bigger group commits for the same latency
            await asyncio.sleep(0)
            self._wake.clear()
            while self._queue or self._receipts:
                if not await self._flush_once() and not self._queue:
                    break  # only receipts left, kept for a retry: not in a tight loop
            if self.stopping:
                return

    def stop(self) -> None:
        """Take no more sends; :meth:`run` returns once the queue is committed."""
        self.stopping = True
        self._wake.set()

    async def _flush_once(self) -> bool:
        """Commit one batch and answer it; False when the store refused it."""
        self._begun += 1
        try:
            return await self._flush()
        finally:
            self._ended += 1
            async with self._flushed:
                self._flushed.notify_all()

    async def _flush(self) -> bool:
        batch = self._queue[: self.config.batch_max]
        del self._queue[: len(batch)]
        receipts, self._receipts = self._receipts, []
        began = time.perf_counter()
        try:
            stamps = await self.log.append(
                [p.event for p in batch], [r for r, _ in receipts], [s for _, s in receipts]
            )
        except Exception as err:  # the store refused: nothing of the batch is acknowledged
            self._refused(batch, receipts, err)
            return False
        metrics = self.metrics
        metrics.commit_seconds.observe(time.perf_counter() - began)
        self._store_error = None
        for p, stamp in zip(batch, stamps, strict=True):
            ev = p.event
            assert ev.ref is not None
            if not stamp.duplicate:
                metrics.events_in.inc(ev.channel)
            self._queued.pop((ev.from_, ev.ref), None)
            for i, done in enumerate(p.futures):
                if not done.done():
                    done.set_result(stamp._replace(duplicate=stamp.duplicate or i > 0))
            if not p.waiters:
                continue
            try:  # never let one answer stop the writer
                online = None if ev.to == BROADCAST else self._online(ev.channel, ev.to)
                for i, s in enumerate(p.waiters):
                    dup = stamp.duplicate or i > 0
                    s.send(Ok(ref=ev.ref, seq=stamp.seq, ts=stamp.ts, duplicate=dup, online=online))
            except Exception:
                logger.exception("answering the send of seq %d failed", stamp.seq)
        if receipts and not self.log.shared:  # a shared log tells every hub itself
            try:
                self._on_receipts(receipts)
            except Exception:
                logger.exception("telling senders of %d receipts failed", len(receipts))
        try:
            self._on_committed()
        except Exception:
            logger.exception("fanning out the commit failed")
        if self.has_room():
            self._room.set()
        return True

    def _refused(self, batch: list[_Pending], receipts: list[ReceiptFor], err: Exception) -> None:
        if str(err) != self._store_error:  # once per cause, not once per batch
            self._store_error = str(err)
            logger.error("store commit failed: %s", err)
        # (a log that cannot tell whether it stored the batch says so: a resend with
        # the same ref is answered as a duplicate if it was)
        said = "not confirmed" if getattr(err, "maybe_stored", False) else "not stored"
        for p in batch:
            assert p.event.ref is not None
            self._queued.pop((p.event.from_, p.event.ref), None)
            message = f"{said}: {err}"
            for s in p.waiters:
                s.send(Error(code=ErrorCode.STORE_FAILED, message=message, ref=p.event.ref))
            for done in p.futures:
                if not done.done():
                    done.set_exception(FrameError(ErrorCode.STORE_FAILED, message, p.event.ref))
        if receipts and self.log.failure is None:
            # acks have no ref to answer: keep them (newest 10,000) for a retry
            self._receipts = (receipts + self._receipts)[-MAX_KEPT_RECEIPTS:]
            asyncio.get_running_loop().call_later(1.0, self._wake.set)
        self._room.set()
