"""SQLite store: the embedded default.

One database file in WAL mode. Writes run on one dedicated thread and arrive in
batches (the hub's group commit), one transaction per batch; reads run on a
second thread with their own connection, so a long history query never holds
up a commit. ``synchronous=NORMAL`` (the default) survives a crash of the hub
process; ``fsync=True`` selects ``synchronous=FULL``, which also survives power
loss at the cost of one fsync per commit.

The event loop never waits for a file lock: a small batch commits inline with no
busy wait, and when another process holds the database's write lock it falls
back to the writer thread, which waits up to ``busy_timeout`` seconds. One hub
per database: :meth:`SqliteStore.open` takes an exclusive ``flock`` on
``<db>.lock`` (the kernel releases it when the process dies, even by SIGKILL).
After each commit the database and WAL files are checked to be the ones the
store opened (same inode): a file deleted or replaced under a running hub stops
every later commit (:attr:`SqliteStore.failure`) instead of acknowledging events
into a file that is gone.

The tables, rows and queries are in :mod:`.sqlquery`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from msgspec.structs import astuple

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
from .dbfiles import FileGuard, HubLock, StoreLocked
from .hops import Hops
from .sqlquery import (
    COLUMNS,
    LEASE_EVENTS_SQL,
    PRUNE_EVENTS_SQL,
    RECEIPT_COLUMNS,
    SCHEMA,
    last_seq_before,
    marks,
    member_decode,
    meta_encode,
    recipients,
    row_to_event,
    row_to_receipt,
    select_entitled_sql,
    select_sql,
    where_sql,
)

__all__ = ["SqliteStore", "StoreLocked"]

_INSERT_EVENTS = f"INSERT INTO events ({COLUMNS}) VALUES ({marks(COLUMNS)})"
_SET_APPLIED = "INSERT OR REPLACE INTO meta (key, value) VALUES ('applied_seq', ?)"
_INSERT_RECEIPTS = f"INSERT INTO receipts ({RECEIPT_COLUMNS}) VALUES ({marks(RECEIPT_COLUMNS)})"

log = logging.getLogger("wsbus.store")

T = TypeVar("T")

#: batches up to this many rows commit on the event loop's thread (not with --fsync)
INLINE_ROWS = 64

#: SQLITE_BUSY: another connection holds the lock (the primary result code)
_SQLITE_BUSY = 5


#: what clients are told once the database or WAL file went away (the log names it)
GONE = (
    "the hub's database files were deleted or replaced while it ran; it refuses every "
    "send until it is restarted (the hub's log says which file)"
)


class _FilesMoved(Exception):
    """Found after a batch committed: the database or WAL file is not the one opened
    (the batch went into the file that is gone)."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem


def _is_busy(err: sqlite3.Error) -> bool:
    code = getattr(err, "sqlite_errorcode", None)
    return code is not None and code & 0xFF == _SQLITE_BUSY


def _rollback(conn: sqlite3.Connection) -> None:
    """Roll back what is open, keeping the first error the caller raises.

    SQLite already rolled back on some errors (a full disk, SQLITE_FULL): a
    second ROLLBACK would fail and hide the real cause.
    """
    if not conn.in_transaction:
        return
    try:
        conn.execute("ROLLBACK")
    except sqlite3.Error as err:
        log.warning("rollback failed: %s", err)


class SqliteStore(Store):
    """Events and receipts in one SQLite database file."""

    def __init__(
        self, path: str | os.PathLike[str], *, fsync: bool = False, busy_timeout: float = 5.0
    ) -> None:
        self.path = Path(path)
        self.fsync = fsync
        #: seconds a commit off the loop waits for another process's write lock
        self.busy_timeout = busy_timeout
        self.location = f"{self.path} (SQLite, WAL, synchronous={'FULL' if fsync else 'NORMAL'})"
        self.lock = HubLock(self.path)
        self.files = FileGuard(self.path)
        #: why commits are refused for good (the database or WAL file went away)
        self.failure: str | None = None
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="wsbus-sqlite-w")
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="wsbus-sqlite-r")
        #: reads go to their thread several per hop (a crowd's mail queries: hops.py)
        self._reads = Hops(self._reader)
        self._checkpointer = ThreadPoolExecutor(1, thread_name_prefix="wsbus-sqlite-c")
        self._wlock = threading.Lock()
        self._w: sqlite3.Connection | None = None
        self._r: sqlite3.Connection | None = None
        self._c: sqlite3.Connection | None = None

    # -- plumbing

    def _connect(self, busy_ms: int) -> sqlite3.Connection:
        # the writer connection is used from its thread and, for small commits, from the
        # event loop's thread, never at once (self._wlock)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout={busy_ms}")  # first: journal_mode may wait too
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={'FULL' if self.fsync else 'NORMAL'}")
        return conn

    async def _on(self, pool: ThreadPoolExecutor, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(pool, fn)

    def _wconn(self) -> sqlite3.Connection:
        assert self._w is not None, "store is not open"
        return self._w

    def _rconn(self) -> sqlite3.Connection:
        if self._r is None:
            self._r = self._connect(self._busy_ms)
        return self._r

    @property
    def _busy_ms(self) -> int:
        return max(0, round(self.busy_timeout * 1000))

    def _fail(self, problem: str) -> bool:
        """Refuse every commit from now on; when only the WAL went away, first copy what
        it holds into the database (the writer still has the deleted file open), so the
        events acknowledged before are kept. Returns whether that copy was complete.
        Runs on the writer thread, under ``_wlock``."""
        self.failure = GONE
        saved = False
        intact = self.files.database_intact()
        if intact:
            try:
                busy, frames, copied = (
                    self._wconn().execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
                )
                saved = busy == 0 and frames == copied
            except sqlite3.Error as err:
                log.error("copying the deleted WAL into %s failed: %s", self.path, err)
        if saved:
            outcome = "the deleted WAL was copied into the database first: nothing is lost"
        elif intact:
            outcome = "the deleted WAL could not be copied whole: recent events may be lost"
        else:
            outcome = "the database file it opened is gone: restore it from a copy"
        log.error("store failed: %s; %s", problem, outcome)
        return saved

    def _write(self, work: Callable[[], T]) -> T:
        """Run ``work`` on the writer connection, waiting up to ``busy_timeout`` for
        another process's write lock (the writer thread only)."""
        with self._wlock:
            conn = self._wconn()
            conn.execute(f"PRAGMA busy_timeout={self._busy_ms}")
            try:
                return work()
            finally:
                conn.execute("PRAGMA busy_timeout=0")

    # -- interface

    async def open(self, hub_id: str | None = None) -> StoreInfo:
        def work() -> StoreInfo:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.lock.acquire()
            try:
                return self._open(hub_id)
            except BaseException:
                if self._w is not None:
                    self._w.close()
                    self._w = None
                self.lock.release()
                raise

        return await self._on(self._writer, work)

    def _open(self, hub_id: str | None) -> StoreInfo:
        # the database holds every message: readable by its owner only
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        # opening waits for locks (off the loop); then no busy wait by default: inline
        # commits must not hold up the event loop
        self._w = conn = self._connect(self._busy_ms)
        # checkpoints run on their own thread (checkpoint()), not inside commits
        conn.execute("PRAGMA wal_autocheckpoint=0")
        conn.executescript(SCHEMA)
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        if "hub_id" not in meta:
            meta["hub_id"] = hub_id or uuid.uuid4().hex[:12]
            conn.execute("INSERT INTO meta (key, value) VALUES ('hub_id', ?)", (meta["hub_id"],))
        elif hub_id is not None and meta["hub_id"] != hub_id:
            raise StoreMismatch(
                f"{self.path} holds hub or bus {meta['hub_id']}, not bus {hub_id}: an index "
                "is a file of its own (pass another --db; delete a stale index and the hub "
                "rebuilds it from the stream)"
            )
        pruned = int(meta.get("pruned_seq", 0))
        applied = int(meta.get("applied_seq", 0))
        row = conn.execute("SELECT seq, ts FROM events ORDER BY seq DESC LIMIT 1").fetchone()
        count = conn.execute("SELECT count(*) FROM events").fetchone()[0]
        conn.execute("PRAGMA busy_timeout=0")
        self.files.remember()
        return StoreInfo(
            hub_id=meta["hub_id"],
            last_seq=max(row[0] if row else pruned, applied),
            last_ts=row[1] if row else float(meta.get("pruned_ts", 0.0)),
            pruned_seq=pruned,
            count=count,
        )

    async def append(
        self,
        events: Sequence[Event],
        receipts: Sequence[ReceiptRecord] = (),
        upto: int | None = None,
    ) -> None:
        if self.failure is not None:
            raise sqlite3.OperationalError(self.failure)
        # in COLUMNS' order (Event's fields); spelled out, as on this hot path a tuple
        # built here is faster than msgspec.structs.astuple with meta re-encoded
        ev_rows = [
            (
                e.seq,
                e.ts,
                e.channel,
                e.from_,
                e.to,
                e.body,
                e.thread,
                e.kind,
                meta_encode(e.meta) if e.meta is not None else None,
                e.ref,
            )
            for e in events
        ]
        rc_rows = [astuple(r) for r in receipts]

        def work() -> None:
            conn = self._wconn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                if ev_rows:
                    conn.executemany(_INSERT_EVENTS, ev_rows)
                if rc_rows:
                    conn.executemany(_INSERT_RECEIPTS, rc_rows)
                if upto is not None:
                    conn.execute(_SET_APPLIED, (str(upto),))
                conn.execute("COMMIT")
            except BaseException:
                _rollback(conn)
                raise
            # a file gone before or during this commit: this batch is in the deleted WAL
            # with those before it; _fail copies them all into the database if it can
            moved = self.files.problem()
            if moved is not None:
                raise _FilesMoved(moved)

        small = not self.fsync and len(ev_rows) + len(rc_rows) <= INLINE_ROWS
        # a small batch without fsync commits right here, cheaper than a thread round
        # trip; never wait for a lock on the loop: not ours (a long prune may hold it),
        # not another process's (SQLITE_BUSY at once: the writer thread waits instead)
        try:
            if small and self._wlock.acquire(blocking=False):
                try:
                    work()
                    return
                except sqlite3.OperationalError as err:
                    if not _is_busy(err):
                        raise
                finally:
                    self._wlock.release()
                log.info("database busy (another process writes to it): committing off the loop")
            await self._on(self._writer, lambda: self._write(work))
            return
        except _FilesMoved as moved:
            problem = moved.problem
        saved = await self._on(self._writer, lambda: self._write(lambda: self._fail(problem)))
        if saved:
            return  # this batch too was copied into the database: it is stored
        raise sqlite3.OperationalError(GONE)

    async def query(self, q: Query) -> list[Event]:
        order = "DESC" if q.latest else "ASC"
        sql, args = select_entitled_sql(q) or select_sql(q)
        sql += f" ORDER BY seq {order} LIMIT ?"
        args.append(q.limit)

        def work() -> list[Event]:
            rows = self._rconn().execute(sql, args).fetchall()
            if q.latest:
                rows.reverse()
            return [row_to_event(r) for r in rows]

        return await self._reads.run(work)

    async def get(self, seq: int) -> Event | None:
        def work() -> Event | None:
            row = (
                self._rconn()
                .execute(f"SELECT {COLUMNS} FROM events WHERE seq = ?", (seq,))
                .fetchone()
            )
            return row_to_event(row) if row else None

        return await self._reads.run(work)

    async def lease_events(self, since_ts: float, upto: int) -> list[Event]:
        def work() -> list[Event]:
            rows = self._rconn().execute(LEASE_EVENTS_SQL, (upto, since_ts)).fetchall()
            return [row_to_event(r) for r in rows]

        return await self._reads.run(work)

    async def receipts(self, seq: int) -> list[ReceiptRecord]:
        def work() -> list[ReceiptRecord]:
            rows = (
                self._rconn()
                .execute(
                    f"SELECT {RECEIPT_COLUMNS} FROM receipts WHERE seq = ? ORDER BY ts", (seq,)
                )
                .fetchall()
            )
            return [row_to_receipt(r) for r in rows]

        return await self._reads.run(work)

    async def receipts_of(self, seqs: Sequence[int]) -> list[ReceiptRecord]:
        wanted = sorted(set(seqs))

        def work() -> list[ReceiptRecord]:
            out: list[ReceiptRecord] = []
            conn = self._rconn()
            for i in range(0, len(wanted), 500):  # SQLite's bound on parameters
                part = wanted[i : i + 500]
                rows = conn.execute(
                    f"SELECT {RECEIPT_COLUMNS} FROM receipts WHERE seq IN "
                    f"({','.join('?' * len(part))}) ORDER BY seq, ts",
                    part,
                ).fetchall()
                out += [row_to_receipt(r) for r in rows]
            return out

        return await self._reads.run(work)

    async def recent_refs(self, limit: int) -> list[tuple[str, str, int, float]]:
        def work() -> list[tuple[str, str, int, float]]:
            rows = (
                self._rconn()
                .execute(
                    "SELECT sender, ref, seq, ts FROM events WHERE ref IS NOT NULL"
                    " ORDER BY seq DESC LIMIT ?",
                    (limit,),
                )
                .fetchall()
            )
            rows.reverse()
            return [(r[0], r[1], r[2], r[3]) for r in rows]

        return await self._reads.run(work)

    async def counts(self) -> tuple[dict[tuple[str, str], int], int]:
        def work() -> tuple[dict[tuple[str, str], int], int]:
            rows = (
                self._rconn()
                .execute(  # one statement: one snapshot of both answers
                    "SELECT channel, recipient, count(*), max(seq) FROM events"
                    " GROUP BY channel, recipient"
                )
                .fetchall()
            )
            return {(r[0], r[1]): r[2] for r in rows}, max((r[3] for r in rows), default=0)

        return await self._reads.run(work)

    async def pending(self, after: int) -> list[Pending]:
        def work() -> list[Pending]:
            rows = (
                self._rconn()
                .execute(
                    "SELECT channel, recipient, count(*), min(seq), min(ts) FROM events"
                    " WHERE seq > ? AND recipient != ? AND recipient != ?"
                    " AND NOT EXISTS (SELECT 1 FROM receipts r WHERE r.seq = events.seq"
                    " AND r.name = events.recipient AND r.final = 1)"
                    " GROUP BY channel, recipient",
                    (after, BROADCAST, BOOK),
                )
                .fetchall()
            )
            return [Pending(*row) for row in rows]

        return await self._reads.run(work)

    async def recipients(self, limit: int) -> list[str]:
        return await self._reads.run(lambda: recipients(self._rconn(), limit))

    async def size(self) -> int | None:
        total = 0
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(OSError):  # no WAL file between checkpoints
                total += os.stat(f"{self.path}{suffix}").st_size
        return total

    async def seq_at_ts(self, ts: float) -> int:
        bound = math.nextafter(ts, math.inf)  # "at most ts" = "below the next float"
        return await self._reads.run(lambda: last_seq_before(self._rconn(), bound))

    async def prune(self, older_than_ts: float, keep: int) -> tuple[int, int]:
        def work() -> tuple[int, int]:
            conn = self._wconn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                cut = last_seq_before(conn, older_than_ts)
                if keep > 0:
                    row = conn.execute(
                        "SELECT seq FROM events ORDER BY seq DESC LIMIT 1 OFFSET ?", (keep,)
                    ).fetchone()
                    if row:
                        cut = max(cut, row[0])
                old = conn.execute("SELECT value FROM meta WHERE key = 'pruned_seq'").fetchone()
                if cut <= 0:
                    conn.execute("COMMIT")
                    return 0, int(old[0]) if old else 0
                ts = conn.execute("SELECT ts FROM events WHERE seq = ?", (cut,)).fetchone()
                # the lease events of the last day stay: the book is rebuilt from them
                n = conn.execute(PRUNE_EVENTS_SQL, (cut, time.time() - MAX_TTL)).rowcount
                conn.execute("DELETE FROM receipts WHERE seq <= ?", (cut,))
                conn.executemany(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                    [("pruned_seq", str(cut)), ("pruned_ts", repr(ts[0] if ts else 0.0))],
                )
                conn.execute("COMMIT")
                return n, cut
            except BaseException:
                _rollback(conn)
                raise

        return await self._on(self._writer, lambda: self._write(work))

    async def threads(
        self, channel: str | None, party: list[str] | None = None
    ) -> list[ThreadInfo]:
        q = Query(limit=0, channels=[channel] if channel is not None else None, party=party)
        where, args = where_sql(q)  # the same filters as history's
        where += (" AND " if where else " WHERE ") + "thread IS NOT NULL"
        sql = (
            "SELECT channel, thread, count(*), min(ts), max(ts) FROM events"
            f"{where} GROUP BY channel, thread ORDER BY max(ts) DESC"
        )

        def work() -> list[ThreadInfo]:
            rows = self._rconn().execute(sql, args).fetchall()
            return [ThreadInfo(c, t, n, first, last) for c, t, n, first, last in rows]

        return await self._reads.run(work)

    async def members(self) -> list[MemberRecord]:
        def work() -> list[MemberRecord]:
            rows = self._rconn().execute("SELECT data FROM members").fetchall()
            return [member_decode(r[0]) for r in rows]

        return await self._reads.run(work)

    async def put_member(self, member: MemberRecord) -> None:
        data = meta_encode(member)

        def work() -> None:
            self._wconn().execute(
                "INSERT OR REPLACE INTO members (channel, name, data) VALUES (?, ?, ?)",
                (member.channel, member.name, data),
            )

        await self._on(self._writer, lambda: self._write(work))

    async def remove_member(self, channel: str, name: str) -> None:
        def work() -> None:
            self._wconn().execute(
                "DELETE FROM members WHERE channel = ? AND name = ?", (channel, name)
            )

        await self._on(self._writer, lambda: self._write(work))

    async def checkpoint(self) -> None:
        """Copy the WAL into the database without blocking writers (PASSIVE)."""

        if self.failure is not None:
            return  # a new connection would make a new WAL beside the deleted one

        def work() -> None:
            if self._c is None:
                self._c = self._connect(self._busy_ms)
            self._c.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()

        await self._on(self._checkpointer, work)

    async def close(self) -> None:
        def close_checkpointer() -> None:
            if self._c is not None:
                self._c.close()
                self._c = None

        def close_writer() -> None:
            with self._wlock:
                if self._w is not None:
                    self._w.close()
                    self._w = None

        def close_reader() -> None:
            if self._r is not None:
                self._r.close()
                self._r = None

        await self._on(self._checkpointer, close_checkpointer)
        await self._reads.run(close_reader)
        # the last connection to close checkpoints the WAL
        await self._on(self._writer, close_writer)
        for pool in (self._checkpointer, self._reader, self._writer):
            pool.shutdown(wait=True)
        self.lock.release()
