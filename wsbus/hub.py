"""The hub: accepts sends, commits them in groups, fans events out, tracks presence.

It knows nothing about sockets or HTTP: transports hand it :class:`Session`
objects and decoded frames. Life of a send:

1. :meth:`Hub.submit` (synchronous) validates, deduplicates by ``(sender,
   ref)`` and queues the event for the writer;
2. the writer task appends everything queued to the log (:mod:`wsbus.log`) as
   one batch (group commit: while one batch commits, the next accumulates); the
   log assigns ``seq``/``ts``, and the hub answers ``ok`` to the senders;
3. the hub fans out what the log's tail yields — on one node pushed in-process by
   the commit and taken in the same turn as the ``ok``s (``Tail.ready``), with
   several hubs every hub's events alike: each event is encoded
   once per subprotocol and the same bytes are written to every recipient; a
   recipient whose unread bytes pass ``send_queue`` is closed as a slow consumer
   (it resumes from its cursor without loss).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from typing import Any, assert_never

from . import hubstatus
from .access import Access
from .auth import Gate
from .broadcast import Broadcaster, Writer, default_broadcast
from .errors import HELLO_CLOSE_CODES, CloseCode, ErrorCode, FrameError
from .fanout import FanOut
from .hubconfig import HubConfig
from .ingest import Ingest, ReceiptFor
from .log import LocalLog, Log, Tail
from .mailnames import MailNames
from .metrics import HubMetrics
from .presence import Announcer
from .queries import Queries
from .receipts import Receipts, tell_senders
from .replay import Replay
from .reservations import Reservations
from .rosters import Rosters
from .routing import Router
from .schema import (
    CAP_BATCH,
    CAPABILITIES,
    Ack,
    ClientFrame,
    Error,
    Event,
    Hello,
    History,
    HistoryResult,
    HubStatus,
    Leases,
    Limits,
    Ping,
    Pong,
    Register,
    Registered,
    Release,
    Reserve,
    Roster,
    Send,
    Status,
    Subscribe,
    Subscribed,
    Threads,
    Unsubscribe,
    Welcome,
)
from .session import Session
from .store import Store
from .upkeep import Upkeep
from .version import __version__

__all__ = ["Broadcaster", "Hub", "HubConfig", "default_broadcast"]

logger = logging.getLogger("wsbus.hub")


class Hub:
    """Routing, durability, fan-out, presence and receipts for one store."""

    def __init__(
        self,
        store: Store,
        config: HubConfig | None = None,
        broadcast: Broadcaster = default_broadcast,
        *,
        gate: Gate | None = None,
        find_secret: Callable[[str], str | None] | None = None,
        log: Log | None = None,
    ) -> None:
        self.store = store
        self.config = config or HubConfig()
        #: orders the events (one node: the store's own database; docs/STORE.md)
        self.log: Log = log or LocalLog(store, self.config.ref_window)
        #: writes one frame to many sessions, with the transport's ``broadcast`` (the
        #: websocket server's ``ws_broadcast``), else one write per session
        self.writer = Writer(broadcast, self.config.send_queue, self.slow)
        #: authentication, the channel and name checks, revocation
        self.access = Access(gate, self.config.max_identity_connections)
        self.router = Router()
        #: what Prometheus scrapes (``/metrics``)
        self.metrics = HubMetrics()
        self.started = time.time()
        self.hub_id = ""
        #: the last event the tail yielded (fanned out); replays stop there
        self.committed_seq = 0
        self._writer: asyncio.Task[None] | None = None
        self._tailer: asyncio.Task[None] | None = None
        self._tail: Tail | None = None
        self._stopping = False
        self.sessions: set[Session] = set()
        #: called with each batch the tail yields, after fan-out (e.g. the HTTP shim)
        self.listeners: list[Callable[[list[Event]], None]] = []
        #: ts of the last event the tail yielded
        self.committed_ts = 0.0
        self._joining: dict[Session, list[str]] = {}
        #: the ack check and its cache of recent events
        self.receipts = Receipts(store, self.config.ref_window)
        #: history and threads, within what a token may read
        self.queries = Queries(store, self.access, self.config.max_history)
        #: the names that may have direct mail waiting (the others' is not asked for)
        self.mail = MailNames()
        #: what a (re)connecting session missed, then what arrived meanwhile
        self.replayer = Replay(store, self.config.replay_page, self.metrics, self.mail)
        #: presence frames to each channel's members
        self.presence = Announcer(self.router, self.writer)
        #: committed events to their recipients (one frame each, or batches)
        self.fanout = FanOut(
            self.router, self.writer, self.metrics, self.config.max_held, self.slow
        )
        #: registered members and bridge claims
        self.rosters = Rosters(store, self.router, self.access, self.presence)
        #: retention, checkpoints, token-file checks
        self.upkeep = Upkeep(
            store,
            self.config,
            committed=lambda: self.committed_seq,
            check_tokens=self.check_tokens if gate is not None else None,
            retain=self.log.retain,
        )
        # on a shared log the receipts come from the log, whichever hub took the ack
        self.log.on_receipts = self._tell_senders
        #: validation, the write queue and group commit
        self.ingest = Ingest(
            self.log,
            self.config,
            self.access,
            in_channel=self.rosters.in_channel,
            online=self.presence.connected,
            on_receipts=self._tell_senders,
            on_committed=self._fan_out_ready,
            find_secret=find_secret,
            metrics=self.metrics,
        )
        #: file leases (reserve, release, leases), kept from the log's lease events
        self.reservations = Reservations(
            self.ingest, self.access, live_tokens=gate.live_ids if gate is not None else None
        )
        self.access.listeners.append(self.reservations.tokens_changed)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Open the log and the store, restore counters, start tasks."""
        info = await self.log.open()
        self.hub_id = info.hub_id
        self.committed_seq = info.last_seq
        self.committed_ts = info.last_ts
        self.upkeep.pruned_seq = info.pruned_seq
        await self.prune()
        await self.reservations.load(self.store, info.last_seq)
        await self.mail.load(self.store)
        await self.rosters.load(self.log.shared_members())
        shared = self.log.shared_presence()
        if shared is not None:
            self.presence.share(shared)
            self.rosters.share_claims(shared)
        self._writer = asyncio.create_task(self.ingest.run(), name="wsbus-writer")
        self._tail = self.log.tail(info.last_seq)  # registered now: the watermark counts it
        self._tailer = asyncio.create_task(self._tail_loop(), name="wsbus-tail")
        self.upkeep.start()
        self.reservations.start()
        engine = "nats" if self.log.shared else "sqlite"
        self.metrics.info.labels(__version__, engine, self.hub_id).set(1)

    async def stop(self) -> None:
        """Commit what is queued, tell every client to reconnect, close the store."""
        await self.drain()
        await self.close_store()

    async def drain(self) -> None:
        """Stop taking sends, commit what is queued, tell every client to reconnect."""
        self._stopping = True
        self.ingest.stop()  # refuses sends from now on; its writer commits the queue
        await self.upkeep.stop()
        # what was committed reaches its recipients before they are told to reconnect;
        # a task that failed is logged, and the clients are told all the same
        for task, then in ((self._writer, self.log.seal), (self._tailer, None)):
            if task is not None:
                (failed,) = await asyncio.gather(task, return_exceptions=True)
                if isinstance(failed, Exception):
                    logger.error("%s had failed: %r", task.get_name(), failed)
            if then is not None:
                then()
        for s in list(self.sessions):
            s.close(CloseCode.GOING_AWAY, "hub shutting down; reconnect and resume")

    async def close_store(self) -> None:
        """Close the log and the store (after the transports stopped using the hub)."""
        await self.log.close()
        await self.store.close()

    def health(self) -> tuple[int, dict[str, Any]]:
        """``/healthz``: 200 ``{"ok": true, "now"}``, or 503 with why the hub cannot
        store sends (its store's failure; on NATS, NATS unreachable)."""
        failure = self.log.problem()
        if failure is not None:
            return 503, {"ok": False, "error": failure, "now": time.time()}
        return 200, {"ok": True, "now": time.time()}

    async def refresh_gauges(self) -> None:
        """Before a scrape: the gauges the store and the engine answer (cached)."""
        await self.metrics.refresh(lambda: hubstatus.gauges(self))

    @functools.cached_property
    def _limits(self) -> Limits:
        c = self.config
        return Limits(
            max_body=c.max_body,
            max_frame=c.max_frame,
            max_history=c.max_history,
            max_channels=c.max_channels,
        )

    def limits(self) -> Limits:
        """What the hub accepts, told in every ``welcome`` (the config does not change)."""
        return self._limits

    # ------------------------------------------------------------------ sessions

    def open_session(self, session: Session, hello: Hello) -> Welcome:
        """Attach a session after its ``hello``; the caller then runs :meth:`replay`.

        Raises :class:`FrameError` (the transport closes with the matching
        :data:`~wsbus.errors.HELLO_CLOSE_CODES` code) when the hello is refused.
        """
        names: list[str] = []
        for n in ([hello.name] if hello.name else []) + hello.names:
            if n not in names:
                names.append(n)
        channels = list(dict.fromkeys(hello.channels))  # empty: a send/query-only connection
        if len(channels) > self.config.max_channels:
            raise FrameError(
                ErrorCode.TOO_MANY_CHANNELS,
                f"{len(channels)} channels requested; at most {self.config.max_channels}",
            )
        names, refused = self.access.authenticate(session, hello, names, channels)
        if hello.kind == "bridge":
            names, claimed, replaced = self.rosters.claim(session, names, channels, hello.host)
            refused += claimed
            for old in replaced:
                self.close_session(old)
                old.close(CloseCode.REPLACED, "a newer bridge connection from this host took over")
        session.names = tuple(names)
        self.router.add_names(session)
        self.access.opened(session)
        session.watch = hello.watch
        session.wants_presence = hello.presence
        granted = [c for c in CAPABILITIES if c in hello.capabilities]
        session.batch = CAP_BATCH in granted
        session.info = {
            "kind": hello.kind,
            "model": hello.model,
            "role": hello.role,
            "host": hello.host,
            "tmux": hello.tmux,
        }
        recovered = True
        # a resume point past what this hub holds: a store it never had — unless other
        # hubs share the log and this one has not indexed that far yet (it sends those
        # events when it has, and the client skips what it already had)
        if hello.resume is not None and (
            hello.resume < self.pruned_seq
            or (hello.resume > self.committed_seq and not self.log.shared)
        ):
            recovered = False
        self.sessions.add(session)
        session.live = False
        session.channels = set()
        self._joining[session] = channels
        session.upto = self.committed_seq  # replay bound; later commits arrive held
        return Welcome(
            hub=self.hub_id,
            seq=self.committed_seq,
            names=list(session.names),
            channels=channels,
            recovered=recovered,
            server=f"wsbus/{__version__}",
            limits=self.limits(),
            refused=refused,
            capabilities=granted,
        )

    def hello(self, session: Session, hello: Hello) -> tuple[int, str] | None:
        """The hello sequence: ``welcome``, a refusal per name a bridge may not serve,
        and the session attached — the caller then runs :meth:`replay`. A refused
        hello gets its ``error`` frame, and the close code and reason the transport
        ends the connection with are returned."""
        try:
            welcome = self.open_session(session, hello)
        except FrameError as err:
            if err.code in (ErrorCode.UNAUTHORIZED, ErrorCode.FORBIDDEN):
                # (the unauthorized sentence quotes the header's name, which the
                # redaction of tokens would take for a token)
                why = "no valid token" if err.code == ErrorCode.UNAUTHORIZED else err.message
                peer = getattr(session, "peer", "")
                self.metrics.auth_failed(err.code, peer, f"hello session={session.id}", why)
            session.send(Error(code=err.code, message=err.message))
            return HELLO_CLOSE_CODES.get(err.code, CloseCode.BAD_HELLO), err.message
        session.send(welcome)
        for name in welcome.refused:
            session.send(self.rosters.refusal(name, session))
        self.attach(session)
        return None

    async def handle(self, session: Session, frame: ClientFrame) -> None:
        """One frame of a welcomed session: answered on the session, or FrameError."""
        match frame:
            case Send():
                if not self.has_room():
                    await self.wait_room()
                self.submit(session, frame)
            case Ack():
                await self.ack(session, frame)
            case History():
                session.send(await self.history(session, frame))
            case Roster():
                session.send(self.rosters.roster(session, frame))
            case Register():
                session.send(await self.register(session, frame))
            case Status():
                self.rosters.status(session, frame)
            case Threads():
                self._running(frame.ref)
                session.send(await self.queries.threads(session, frame))
            case Reserve():
                self._running(frame.ref)
                session.send(await self.reservations.reserve(session, frame))
            case Release():
                self._running(frame.ref)
                session.send(await self.reservations.release(session, frame))
            case Leases():
                session.send(self.reservations.leases(session, frame))
            case HubStatus():
                session.send(await hubstatus.status(self, session, frame))
            case Ping():
                if frame.sync:  # what came before it is committed first
                    await self.ingest.settled()
                session.send(Pong(ts=time.time(), ref=frame.ref))
            case Subscribe():
                self.subscribe(session, frame)
            case Unsubscribe():
                self.unsubscribe(session, frame)
            case Hello():
                raise FrameError(ErrorCode.ALREADY_HELLO, "hello was already received")
            case _:
                assert_never(frame)

    def attach(self, session: Session) -> None:
        """Subscribe a welcomed session to its channels and announce it (before replay)."""
        channels = self._joining.pop(session, [])
        self.presence.announce(self.router.attach(session, channels), session.info)

    async def replay(self, session: Session, resume: int | None, pending: bool = False) -> None:
        """Send stored events the session missed, then what was held, then go live
        (:class:`wsbus.replay.Replay`)."""
        await self.replayer.run(session, resume, pending)

    def close_session(self, session: Session) -> None:
        """Forget a session that disconnected; report names gone down."""
        self._joining.pop(session, None)
        if session not in self.sessions:
            return
        session.closed = True
        self.sessions.discard(session)
        self.access.closed(session)
        self.router.drop_names(session)
        if session.info.get("kind") == "bridge":
            self.rosters.release(session)
        self.presence.announce(self.router.detach(session), session.info)

    def subscribe(self, session: Session, frame: Subscribe) -> None:
        """Add channels to a session, live from now on."""
        new = [c for c in dict.fromkeys(frame.channels) if c not in session.channels]
        self.access.check_channels(session, new)
        if len(session.channels) + len(new) > self.config.max_channels:
            raise FrameError(
                ErrorCode.TOO_MANY_CHANNELS, f"at most {self.config.max_channels} channels"
            )
        if session.info.get("kind") == "bridge":  # claims hold per channel, here too
            self.rosters.claim_channels(session, new)
        self.presence.announce(self.router.attach(session, new), session.info)
        session.send(Subscribed(channels=sorted(session.channels)))

    def unsubscribe(self, session: Session, frame: Unsubscribe) -> None:
        self.presence.announce(self.router.detach(session, frame.channels), session.info)
        session.send(Subscribed(channels=sorted(session.channels)))

    # ------------------------------------------------------------------ sends

    def has_room(self) -> bool:
        return self.ingest.has_room()

    async def wait_room(self) -> None:
        """Wait until the write queue has room (backpressure on publishers)."""
        await self.ingest.wait_room()

    def submit(self, session: Session, send: Send) -> None:
        """Accept a send for commit; ``ok`` (or ``error``) follows asynchronously."""
        self.ingest.submit(session, send)

    def _tell_senders(self, receipts: list[ReceiptFor]) -> None:
        """Push committed receipts to the senders of the events they acknowledge."""
        tell_senders(receipts, self.router, self.writer)

    async def _tail_loop(self) -> None:
        """Fan out what the log's tail yields until the log is sealed. Reading it may
        fail (the index, an engine's connection): then it is read again from the
        last event fanned out, a second later — never given up."""
        while True:
            tail = self._tail
            assert tail is not None
            try:
                async for batch in tail:
                    self._deliver(batch)
                return
            except Exception:
                logger.exception("reading the log failed; again after seq %d", self.committed_seq)
                await tail.aclose()
                self._tail = self.log.tail(self.committed_seq)  # registered before the pause
                await asyncio.sleep(1.0)

    def _fan_out_ready(self) -> None:
        """Right after a commit of this hub's writer: fan out what the tail has now,
        in the same turn of the loop as the ``ok``s (the tail task would take it
        one turn later)."""
        if self._tail is not None:
            for batch in self._tail.ready():
                self._deliver(batch)

    def _deliver(self, events: list[Event]) -> None:
        """Fan out a batch the tail yielded (whichever hub committed it)."""
        metrics = self.metrics
        now = time.time()
        if self.presence.gathered:  # presence changes go before the events after them
            self.presence.flush()
        self.mail.saw(events)  # before any replay can read them (wsbus/mailnames.py)
        fanout = self.fanout
        batched = fanout.start()
        for ev in events:
            try:
                self.receipts.remember(ev)
                fanout.event(ev, batched)
                metrics.events_out.inc(ev.channel)
                metrics.delivery_latency.observe(max(0.0, now - ev.ts))
            except Exception:  # never let one event stop the tail
                logger.exception("delivering event %d failed", ev.seq)
        try:
            fanout.finish(batched)
        except Exception:
            logger.exception("writing a batch of %d events failed", len(events))
        self.committed_seq = events[-1].seq
        self.committed_ts = events[-1].ts
        try:
            self.reservations.applied(events)
        except Exception:  # never let a lease stop the tail
            logger.exception("applying lease events failed")
        for listener in self.listeners:
            try:
                listener(events)
            except Exception:
                logger.exception("commit listener failed")

    def slow(self, s: Session) -> None:
        """Close a session that does not read what it is sent (4008); it resumes from
        its cursor without loss."""
        if s.closed:
            return
        logger.info(
            "closing slow consumer session=%s names=%s",
            s.id,
            ",".join(s.names) or "-",
            extra={"event": "slow_consumer", "session": s.id},
        )
        self.metrics.slow_consumers.inc()
        s.held = []
        self.close_session(s)
        s.close(CloseCode.SLOW_CONSUMER, "slow consumer: reconnect and resume from your cursor")

    # ------------------------------------------------------------------ acks

    def _running(self, ref: str | None = None) -> None:
        """Refuse (``shutting_down``) what comes in once the hub is draining."""
        if self._stopping:
            raise FrameError(ErrorCode.SHUTTING_DOWN, "hub is shutting down", ref)

    async def ack(self, session: Session, ack: Ack) -> None:
        """Record a recipient's acknowledgement; the sender is told once it is stored."""
        self._running()
        record, sender = await self.receipts.check(session, ack, self.pruned_seq)
        self.ingest.receipt(record, sender)
        self.metrics.acked(session, record)

    # ------------------------------------------------------------------ queries

    async def history(self, session: Session, h: History) -> HistoryResult:
        self._running(h.ref)
        return await self.queries.history(session, h)

    async def register(self, session: Session, r: Register) -> Registered:
        """Add, update or remove a roster member (durably, before answering)."""
        self._running(r.ref)
        result = await self.rosters.register(session, r)
        if result.left:  # a name that leaves the roster gives up its leases
            self.reservations.release_all(r.channel, r.name, "left the roster")
        return result

    # ------------------------------------------------------------------ retention

    @property
    def pruned_seq(self) -> int:
        """The highest seq retention removed (0: none)."""
        return self.upkeep.pruned_seq

    async def prune(self) -> int:
        """Apply retention now; returns how many events were removed."""
        return await self.upkeep.prune()

    # ------------------------------------------------------------------ tokens

    def check_tokens(self) -> int:
        """Re-read the token file if it changed and close every session whose token
        is gone or revoked (4001); returns how many were closed."""
        gone = self.access.revoked(self.sessions)
        for session in gone:
            self.close_session(session)
            session.close(CloseCode.UNAUTHORIZED, "token revoked")
        return len(gone)
