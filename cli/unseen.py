"""The note ``wsbus send`` prints after sending to a name nobody has seen.

A message to a name that has never been on the channel is still stored (an agent
may connect later and get it), but a typo (``bobb``) would wait there forever
unnoticed, so ``send`` says so on stderr::

    note: nobody named 'bobb' has been seen on #default — did you mean 'bob'?

A name has been *seen* on a channel when it is connected to it now (presence),
registered in its roster, has sent something there, or has acknowledged a direct
message there (a listener that only reads). The did-you-mean comes from
:mod:`.suggest`, over the names seen (minus the sender).

The lookup runs after the hub acknowledged the send, on the connection that sent
it, within :data:`BUDGET` seconds; any error or a timeout means no note (the
send itself succeeded). The decision is plain code (:func:`Seen`,
:func:`note_line`), the queries take any client with ``roster`` and ``history``
(:class:`Queries`, which :class:`wsbus.client.Client` is).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from .suggest import did_you_mean

if TYPE_CHECKING:
    from wsbus.schema import HistoryResult, RosterResult

__all__ = ["BUDGET", "RECENT", "Queries", "Seen", "note_line", "unseen_note"]

BUDGET = 2.0
"""The most seconds the lookup may add to a send; past it, no note."""
RECENT = 200
"""Events of the channel whose senders are suggestion candidates."""
_TO_CHECK = 20
"""Latest direct events to the name checked for an acknowledgement by it."""


class Queries(Protocol):
    """The queries the lookup needs (an async client's ``roster`` and ``history``)."""

    async def roster(
        self, channel: str | None = None, *, all: bool = False, timeout: float | None = 30.0
    ) -> RosterResult: ...

    async def history(
        self,
        *,
        channel: str | None = None,
        to: str | None = None,
        from_: str | None = None,
        thread: str | None = None,
        after: int | None = None,
        before: int | None = None,
        limit: int = 100,
        pending: bool = False,
        timeout: float | None = 30.0,
    ) -> HistoryResult: ...


@dataclass
class Seen:
    """What the channel knows of the names on it, gathered from the hub's answers."""

    names: set[str] = field(default_factory=set)
    """names seen: connected, registered, senders (and names known to have acknowledged)"""

    def add_roster(self, roster: RosterResult) -> None:
        self.names.update(m.name for m in roster.members)
        self.names.update(e.name for e in roster.registered)

    def add_senders(self, history: HistoryResult) -> None:
        self.names.update(ev.from_ for ev in history.events)

    def __contains__(self, name: object) -> bool:
        return name in self.names


def acknowledged(to_name: HistoryResult, pending: HistoryResult) -> bool:
    """Whether one of the latest direct events to a name has a final receipt by it
    (``to_name``: its latest events, ``pending``: the latest of those still pending)."""
    waiting = {ev.seq for ev in pending.events}
    return any(ev.seq not in waiting for ev in to_name.events)


def note_line(name: str, channel: str, candidates: Iterable[str]) -> str:
    """The note for ``name``, never seen on ``channel``."""
    return (
        f"note: nobody named {name!r} has been seen on #{channel}{did_you_mean(name, candidates)}"
    )


async def unseen_note(
    client: Queries,
    to: str,
    channel: str,
    *,
    me: str | None,
    seq: int,
    online: bool | None = None,
    budget: float = BUDGET,
) -> str | None:
    """The note to print after event ``seq`` was sent to ``to`` by ``me``, or None
    (seen, a broadcast, oneself, or the hub did not answer within ``budget``)."""
    if to in ("*", me) or online:
        return None
    with contextlib.suppress(Exception):  # a note is a courtesy: never fail the send
        async with asyncio.timeout(budget):
            return await _lookup(client, to, channel, me, seq, budget)
    return None


async def _lookup(
    client: Queries, to: str, channel: str, me: str | None, seq: int, budget: float
) -> str | None:
    recent_limit = min(RECENT, _max_history(client))
    roster, spoke, recent, to_name = await asyncio.gather(
        client.roster(channel, timeout=budget),
        client.history(channel=channel, from_=to, before=seq, limit=1, timeout=budget),
        client.history(channel=channel, before=seq, limit=recent_limit, timeout=budget),
        client.history(channel=channel, to=to, before=seq, limit=_TO_CHECK, timeout=budget),
    )
    seen = Seen()
    seen.add_roster(roster)
    seen.add_senders(recent)
    if to in seen or spoke.events:
        return None
    if to_name.events:
        pending = await client.history(
            channel=channel, to=to, before=seq, limit=_TO_CHECK, pending=True, timeout=budget
        )
        if acknowledged(to_name, pending):
            return None
    return note_line(to, channel, seen.names - {me} if me else seen.names)


def _max_history(client: object) -> int:
    """The hub's ``max_history`` if the client knows it (from its ``welcome``)."""
    welcome = getattr(client, "welcome", None)
    limits = getattr(welcome, "limits", None)
    return int(getattr(limits, "max_history", None) or RECENT)
