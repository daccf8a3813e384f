"""Replay: what a (re)connecting session missed, then what arrived meanwhile.

A session is welcomed with a bound (``session.upto``, the last event the hub had
fanned out); events fanned out after it are held on the session while the stored
ones up to the bound are written, then the held ones, then the session goes live —
so nothing is skipped or written twice, whatever arrives during the replay.
"""

from __future__ import annotations

from .fanout import batches
from .loopguard import own_loop
from .mailnames import MailNames
from .metrics import HubMetrics
from .schema import BROADCAST, Synced
from .session import Session
from .store import Query, Store

__all__ = ["Replay"]


class Replay:
    """Stored events to a session, in pages (see the module docstring)."""

    def __init__(
        self,
        store: Store,
        page: int = 500,
        metrics: HubMetrics | None = None,
        mail: MailNames | None = None,
    ) -> None:
        self.store = store
        self.page = page
        #: who may have direct mail waiting: the others' is not asked for
        self.mail = mail or MailNames()
        #: replayed and held events count as deliveries
        self.metrics = metrics or HubMetrics()

    async def run(self, session: Session, resume: int | None, pending: bool = False) -> None:
        """Send stored events the session missed, then what was held, then go live.

        With ``resume`` every entitled event after it is replayed; without, the
        session's names get their direct events still pending a final receipt.
        ``pending`` with ``resume``: those pending events from before ``resume``
        come first.
        """
        upto = session.upto
        channels = sorted(session.channels)
        entitled = None if session.watch else list(session.names)
        if channels and session.names and pending and resume is not None:
            await self._replay_range(
                session, channels, list(session.names), 0, min(resume, upto) + 1, True
            )
        if channels and (resume is not None or (entitled and self.mail.may_have(entitled))):
            cursor = resume if resume is not None else 0
            await self._replay_range(session, channels, entitled, cursor, upto + 1, resume is None)
        if session.closed:
            return
        held, session.held = session.held, []
        if resume is not None:  # a cursor ahead of this hub's tail: those it has had
            held = [ev for ev in held if ev.seq > resume]
        encode = session.codec.encode
        mine = [
            own_loop(ev, session.names) if ev.loop and ev.to == BROADCAST else ev for ev in held
        ]
        if session.batch:
            for frame in batches(mine):
                session.write(encode(frame))
        else:
            for ev in mine:
                session.write(encode(ev))
        self.metrics.deliveries.inc(len(held))
        session.live = True
        session.send(Synced(seq=max(upto, held[-1].seq if held else upto), channels=channels))
        session.uncork()  # (corked at the hello: with no query, welcome … synced in one write)

    async def _replay_range(
        self,
        session: Session,
        channels: list[str],
        entitled: list[str] | None,
        cursor: int,
        before: int,
        pending_only: bool,
    ) -> None:
        page = self.page
        session.uncork()  # the welcome (and any answer) does not wait for the store
        while not session.closed:
            q = Query(
                limit=page,
                channels=channels,
                entitled=entitled,
                after=cursor,
                before=before,
                pending_only=pending_only,
            )
            events = await self.store.query(q)
            for frame in batches(events) if session.batch else events:
                if session.closed:
                    return
                await session.write_async(session.codec.encode(frame))
            self.metrics.deliveries.inc(len(events))
            if len(events) < page:
                return
            cursor = events[-1].seq
