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
it, within :data:`BUDGET` seconds; any error or a timeout means no note (the send
itself succeeded). It is written without I/O (:func:`lookup`: it yields the query
frames to ask and is sent their answers), so any client can run it:

- :func:`unseen_note`: an asyncio :class:`wsbus.client.Client` (each round's
  queries at once);
- :func:`unseen_note_blocking`: a blocking ``requests(frames, timeout) -> answers``
  (a one-shot client), each round's queries written at once.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import time
from collections.abc import Awaitable, Callable, Generator, Iterable
from typing import TYPE_CHECKING, Any, Protocol

from wsbus.schema import History, HistoryResult, Roster, RosterResult

from .suggest import did_you_mean

if TYPE_CHECKING:
    from wsbus.schema import Event

__all__ = [
    "BUDGET",
    "RECENT",
    "Answer",
    "Queries",
    "Query",
    "lookup",
    "note_line",
    "unseen_note",
    "unseen_note_blocking",
]

BUDGET = 2.0
"""The most seconds the lookup may add to a send; past it, no note."""
RECENT = 200
"""Events of the channel whose senders are suggestion candidates (at most the hub's
``max_history``)."""
TO_CHECK = 20
"""Latest direct events to the name checked for an acknowledgement by it."""

Query = Roster | History
"""A question :func:`lookup` asks the hub (a frame with its own ``ref``)."""
Answer = RosterResult | HistoryResult
"""The hub's answer to a :data:`Query`."""
Exchange = Generator[list[Query], list[Answer], str | None]
""":func:`lookup`: yields a round of queries, is sent their answers in the same order."""

_refs = itertools.count(1)
_REF_PREFIX = f"unseen-{os.getpid():x}"


def _ref() -> str:
    return f"{_REF_PREFIX}-{next(_refs)}"


# ---------------------------------------------------------------------------- the rule


def lookup(to: str, channel: str, *, me: str | None, seq: int, max_history: int) -> Exchange:
    """Whether ``to`` was seen on ``channel`` before event ``seq`` (``me``'s send), as
    rounds of queries; returns the note to print, or None."""
    if to in ("*", me):
        return None
    answers = yield [
        Roster(ref=_ref(), channel=channel),
        History(ref=_ref(), channel=channel, from_=to, before=seq, limit=1),
        History(ref=_ref(), channel=channel, before=seq, limit=min(RECENT, max_history)),
        History(ref=_ref(), channel=channel, to=to, before=seq, limit=TO_CHECK),
    ]
    roster, spoke, recent, to_name = answers
    assert isinstance(roster, RosterResult) and isinstance(spoke, HistoryResult)
    assert isinstance(recent, HistoryResult) and isinstance(to_name, HistoryResult)
    seen = {m.name for m in roster.members} | {e.name for e in roster.registered}
    seen |= {ev.from_ for ev in recent.events}
    if to in seen or spoke.events:
        return None
    if to_name.events:
        (pending,) = yield [
            History(ref=_ref(), channel=channel, to=to, before=seq, limit=TO_CHECK, pending=True)
        ]
        assert isinstance(pending, HistoryResult)
        if acknowledged(to_name.events, pending.events):
            return None
    return note_line(to, channel, seen - {me} if me else seen)


def acknowledged(to_name: list[Event], pending: list[Event]) -> bool:
    """Whether one of the latest direct events to a name has a final receipt by it
    (``to_name``: its latest events, ``pending``: the latest of those still pending)."""
    waiting = {ev.seq for ev in pending}
    return any(ev.seq not in waiting for ev in to_name)


def note_line(name: str, channel: str, candidates: Iterable[str]) -> str:
    """The note for ``name``, never seen on ``channel``."""
    return (
        f"note: nobody named {name!r} has been seen on #{channel}{did_you_mean(name, candidates)}"
    )


# ---------------------------------------------------------------------------- drivers


class Queries(Protocol):
    """What :func:`unseen_note` needs of an asyncio client (:class:`wsbus.client.Client`)."""

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
    (seen, online when stored, a broadcast, oneself, or no answer within ``budget``)."""
    if online:
        return None
    import asyncio  # here: a blocking sender imports this module without asyncio

    exchange = lookup(to, channel, me=me, seq=seq, max_history=_max_history(client))

    async def ask(query: Query) -> Answer:
        if isinstance(query, Roster):
            return await client.roster(query.channel, all=query.all, timeout=budget)
        return await client.history(
            channel=query.channel,
            to=query.to,
            from_=query.from_,
            thread=query.thread,
            after=query.after,
            before=query.before,
            limit=query.limit,
            pending=query.pending,
            timeout=budget,
        )

    async def each_round(queries: list[Query]) -> list[Answer]:
        return list(await asyncio.gather(*(ask(q) for q in queries)))

    with contextlib.suppress(Exception):  # a note is a courtesy: never fail the send
        async with asyncio.timeout(budget):
            return await _drive_async(exchange, each_round)
    return None


def unseen_note_blocking(
    requests: Callable[[list[Query], float], list[Answer]],
    to: str,
    channel: str,
    *,
    me: str | None,
    seq: int,
    max_history: int,
    online: bool | None = None,
    budget: float = BUDGET,
) -> str | None:
    """:func:`unseen_note` for a blocking client: ``requests(frames, timeout)`` sends a
    round's query frames at once and returns the hub's answers to their ``ref`` in
    order (raising on an error or after ``timeout`` seconds)."""
    if online:
        return None
    deadline = time.monotonic() + budget
    exchange = lookup(to, channel, me=me, seq=seq, max_history=max_history)
    try:
        queries = next(exchange)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            queries = exchange.send(requests(queries, left))
    except StopIteration as done:
        return _note(done.value)
    except Exception:  # a note is a courtesy: never fail the send
        return None


async def _drive_async(
    exchange: Exchange, each_round: Callable[[list[Query]], Awaitable[list[Answer]]]
) -> str | None:
    try:
        queries = next(exchange)
        while True:
            queries = exchange.send(await each_round(queries))
    except StopIteration as done:
        return _note(done.value)


def _note(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _max_history(client: object) -> int:
    """The hub's ``max_history`` if the client knows it (from its ``welcome``)."""
    return max_history_of(getattr(client, "welcome", None))


def max_history_of(welcome: object) -> int:
    """The ``max_history`` a ``welcome`` announces (``RECENT`` when it says none)."""
    limits = getattr(welcome, "limits", None)
    return int(getattr(limits, "max_history", None) or RECENT)
