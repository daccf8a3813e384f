"""The SQLite store's SQL: the tables, the row of an event, and the queries built from a
:class:`~wsbus.store.base.Query` (the engine that runs them, its threads and
transactions, is :mod:`.sqlite`). Who may receive or read an event is
:mod:`wsbus.entitlement`'s rule, in its SQL form.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import msgspec

from ..entitlement import may_read_sql, receives_arms, receives_sql
from ..leases import BOOK
from ..schema import BROADCAST, Event
from .base import MemberRecord, Query, ReceiptRecord

__all__ = [
    "COLUMNS",
    "LEASE_EVENTS_SQL",
    "PRUNE_EVENTS_SQL",
    "RECEIPT_COLUMNS",
    "SCHEMA",
    "last_seq_before",
    "marks",
    "member_decode",
    "meta_encode",
    "recipients",
    "row_to_event",
    "row_to_receipt",
    "select_entitled_sql",
    "select_sql",
    "where_sql",
]

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    channel TEXT NOT NULL,
    sender TEXT NOT NULL,
    recipient TEXT NOT NULL,
    thread TEXT,
    kind TEXT,
    body TEXT NOT NULL,
    meta BLOB,
    ref TEXT
);
CREATE INDEX IF NOT EXISTS events_recipient ON events (channel, recipient, seq);
CREATE INDEX IF NOT EXISTS events_thread ON events (channel, thread, seq)
    WHERE thread IS NOT NULL;
DROP INDEX IF EXISTS events_ts;
CREATE INDEX IF NOT EXISTS events_leases ON events (seq) WHERE recipient = '{BOOK}';
CREATE TABLE IF NOT EXISTS receipts (
    seq INTEGER NOT NULL,
    channel TEXT NOT NULL,
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    ts REAL NOT NULL,
    reason TEXT,
    final INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS receipts_seq ON receipts (seq, name);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS members (
    channel TEXT NOT NULL,
    name TEXT NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (channel, name)
);
"""

#: Event's fields, in order: all but ``loop`` (live events only) are stored, one column each
_EVENT_FIELDS = tuple(f.name for f in msgspec.structs.fields(Event))
if _EVENT_FIELDS[-1] != "loop":
    raise TypeError("Event has a new field: give it a column (and a migration), or not")
#: the events table's columns in Event's field order: a row converts to an Event by position
COLUMNS = ", ".join({"from_": "sender", "to": "recipient"}.get(n, n) for n in _EVENT_FIELDS[:-1])
_META = _EVENT_FIELDS.index("meta")
#: the receipts table's columns: ReceiptRecord's fields (a row is ``astuple(record)``)
RECEIPT_COLUMNS = ", ".join(f.name for f in msgspec.structs.fields(ReceiptRecord))

#: the lease events since a ts up to a seq (the partial index ``events_leases``)
LEASE_EVENTS_SQL = (
    f"SELECT {COLUMNS} FROM events WHERE recipient = '{BOOK}' AND seq <= ? AND ts > ? ORDER BY seq"
)

#: retention's delete up to a seq, but for the lease events newer than a ts
PRUNE_EVENTS_SQL = f"DELETE FROM events WHERE seq <= ? AND NOT (recipient = '{BOOK}' AND ts > ?)"

meta_encode = msgspec.json.Encoder().encode
_meta_decode = msgspec.json.Decoder(dict[str, Any]).decode
member_decode = msgspec.json.Decoder(MemberRecord).decode


def marks(columns: str) -> str:
    """The ``?`` placeholders of a VALUES list for ``columns``."""
    return ",".join("?" * len(columns.split(",")))


def row_to_event(row: tuple[Any, ...]) -> Event:
    """The event a row of :data:`COLUMNS` holds (``meta`` is stored as JSON)."""
    meta = row[_META]
    if meta is None:
        return Event(*row)
    values = list(row)
    values[_META] = _meta_decode(meta)
    return Event(*values)


def row_to_receipt(row: tuple[Any, ...]) -> ReceiptRecord:
    """The receipt a row of :data:`RECEIPT_COLUMNS` holds (``final`` is stored as 0 or 1)."""
    values = list(row)
    values[-1] = bool(values[-1])
    return ReceiptRecord(*values)


def where_sql(q: Query) -> tuple[str, list[Any]]:
    """``q``'s filters (not its order or limit) as a WHERE clause and its arguments."""
    clauses: list[str] = []
    args: list[Any] = []
    if q.after is not None:
        clauses.append("seq > ?")
        args.append(q.after)
    if q.before is not None:
        clauses.append("seq < ?")
        args.append(q.before)
    if q.channels is not None:
        clauses.append(f"channel IN ({','.join('?' * len(q.channels))})")
        args.extend(q.channels)
    if q.to is not None:
        clauses.append("recipient = ?")
        args.append(q.to)
    if q.sender is not None:
        clauses.append("sender = ?")
        args.append(q.sender)
    if q.thread is not None:
        clauses.append("thread = ?")
        args.append(q.thread)
    if q.party is not None:
        clause, party_args = may_read_sql(q.party)
        clauses.append(clause)
        args.extend(party_args)
    if q.entitled is not None:
        if q.pending_only:
            # the direct events to those names (what they receive, less the broadcasts)
            # that no final receipt by their recipient acknowledges
            clauses.append(f"recipient IN ({','.join('?' * len(q.entitled))})")
            args.extend(q.entitled)
            clauses.append(
                "NOT EXISTS (SELECT 1 FROM receipts r WHERE r.seq = events.seq"
                " AND r.name = events.recipient AND r.final = 1)"
            )
        else:
            clause, entitled_args = receives_sql(q.entitled)
            clauses.append(clause)
            args.extend(entitled_args)
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", args


def select_sql(q: Query) -> tuple[str, list[Any]]:
    """The events matching ``q`` (no order, no limit)."""
    clause, args = where_sql(q)
    return f"SELECT {COLUMNS} FROM events{clause}", args


def select_entitled_sql(q: Query) -> tuple[str, list[Any]] | None:
    """What one name may receive on one channel, as two index ranges merged in seq
    order — its direct events, the channel's broadcasts but its own — instead of
    walking every event of the channel (``entitled``'s OR reads them all: 65 ms for
    a name with no messages among 200,000 events; this: under 1 ms). None when the
    query is not of that shape."""
    if q.pending_only or q.entitled is None or len(set(q.entitled)) != 1:
        return None
    if q.channels is None or len(q.channels) != 1:
        return None
    arms: list[str] = []
    args: list[Any] = []
    for to, extra, extra_args in receives_arms(q.entitled[0]):
        if q.to is not None and q.to != to:
            continue
        # where_sql always has clauses here (channel, to): an extra condition is an AND
        sql, arm_args = select_sql(msgspec.structs.replace(q, entitled=None, to=to))
        arms.append(sql + extra)
        args += arm_args + extra_args
    if not arms:
        return None
    return " UNION ALL ".join(arms), args


def last_seq_before(conn: sqlite3.Connection, ts: float) -> int:
    """The highest seq whose ts is below ``ts`` (0 if none).

    ``ts`` grows with ``seq``, so a binary search over the primary key finds it
    in a few dozen point reads, without an index on ``ts`` that every commit
    would have to update.
    """
    # two subqueries: min() and max() in one SELECT scan the table, alone each is a seek
    lo_hi = conn.execute(
        "SELECT (SELECT min(seq) FROM events), (SELECT max(seq) FROM events)"
    ).fetchone()
    if lo_hi[0] is None:
        return 0
    lo, hi = lo_hi
    best = 0
    while lo <= hi:
        mid = (lo + hi) // 2
        row = conn.execute(
            "SELECT seq, ts FROM events WHERE seq >= ? ORDER BY seq LIMIT 1", (mid,)
        ).fetchone()
        if row is None or row[0] > hi:
            hi = mid - 1
        elif row[1] < ts:
            best = row[0]
            lo = row[0] + 1
        else:
            hi = mid - 1
    return best


def recipients(conn: sqlite3.Connection, limit: int) -> list[str]:
    """The names of the direct events' recipients, at most ``limit`` of them.

    A skip-scan of the ``(channel, recipient, seq)`` index: one seek per channel and
    per recipient in it, whatever the number of events (a ``DISTINCT`` reads them all).
    """
    found: set[str] = set()
    channel = ""
    while len(found) < limit:
        row = conn.execute(
            "SELECT channel FROM events WHERE channel > ? ORDER BY channel LIMIT 1", (channel,)
        ).fetchone()
        if row is None:
            break
        channel, recipient = row[0], ""
        while len(found) < limit:
            row = conn.execute(
                "SELECT recipient FROM events WHERE channel = ? AND recipient > ?"
                " ORDER BY recipient LIMIT 1",
                (channel, recipient),
            ).fetchone()
            if row is None:
                break
            recipient = row[0]
            if recipient != BROADCAST and recipient != BOOK:
                found.add(recipient)
    return sorted(found)
