"""The SQLite store against the world outside it: a second hub on its file, another
process holding the write lock, a full disk, and files deleted under it."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from wsbus.schema import Event
from wsbus.store import Query, SqliteStore, StoreLocked
from wsbus.store.dbfiles import FileGuard, HubLock


def ev(seq: int, body: str = "x") -> Event:
    return Event(seq=seq, ts=1000.0 + seq, channel="c", from_="a", to="b", body=body, ref=f"r{seq}")


# ---------------------------------------------------------------- one hub per database


async def test_a_second_store_on_the_same_file_is_refused(tmp_path: Path) -> None:
    first = SqliteStore(tmp_path / "bus.db")
    await first.open()
    second = SqliteStore(tmp_path / "bus.db")
    with pytest.raises(StoreLocked) as refused:
        await second.open()
    message = str(refused.value)
    assert f"pid {os.getpid()}" in message and "--db" in message
    await first.close()
    await second.open()  # the lock went with the first store
    await second.close()


def test_the_lock_is_released_when_its_holder_is_killed(tmp_path: Path) -> None:
    db = tmp_path / "bus.db"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from wsbus.store.dbfiles import HubLock;"
            "HubLock(Path(sys.argv[1])).acquire(); print('held', flush=True); time.sleep(60)",
            str(db),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(StoreLocked, match=f"pid {holder.pid}"):
            HubLock(db).acquire()
    finally:
        holder.kill()
        holder.wait(10)
    lock = HubLock(db)
    lock.acquire()  # SIGKILL left no stale lock behind
    assert (tmp_path / "bus.db.lock").read_text() == f"{os.getpid()}\n"
    assert (tmp_path / "bus.db.lock").stat().st_mode & 0o777 == 0o600
    lock.release()


# ---------------------------------------------------------------- another writer


def _hold_write_lock(db: Path, seconds: float) -> subprocess.Popen[str]:
    """A foreign process that holds the database's write lock for ``seconds``."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sqlite3, sys, time; c = sqlite3.connect(sys.argv[1], isolation_level=None);"
            "c.execute('BEGIN IMMEDIATE'); print('locked', flush=True);"
            "time.sleep(float(sys.argv[2])); c.execute('COMMIT')",
            str(db),
            str(seconds),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


async def _loop_stall_while(task: asyncio.Task[object]) -> float:
    """The longest the event loop went without running a 10 ms timer until ``task`` ends."""
    worst = 0.0
    while not task.done():
        start = time.monotonic()
        await asyncio.sleep(0.01)
        worst = max(worst, time.monotonic() - start - 0.01)
    return worst


async def test_a_foreign_write_lock_never_stalls_the_loop(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "bus.db", busy_timeout=10)
    await store.open()
    await store.append([ev(1)])
    holder = _hold_write_lock(store.path, 1.5)
    try:
        start = time.monotonic()
        append = asyncio.ensure_future(store.append([ev(2)]))  # small: the inline path
        stall = await _loop_stall_while(append)
        await append
        waited = time.monotonic() - start
    finally:
        holder.wait(10)
    # it waited for the lock (off the loop), then committed
    assert waited > 0.5
    assert stall < 0.3, f"the event loop stalled {stall * 1000:.0f} ms"
    assert [e.seq for e in await store.query(Query(limit=10))] == [1, 2]
    await store.close()


async def test_a_commit_gives_up_after_busy_timeout(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "bus.db", busy_timeout=0.3)
    await store.open()
    holder = _hold_write_lock(store.path, 3)
    try:
        start = time.monotonic()
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            await store.append([ev(1)])
        assert 0.2 < time.monotonic() - start < 2.5
    finally:
        holder.kill()
        holder.wait(10)
    await store.append([ev(1)])  # retrying the same batch works once the lock is gone
    assert [e.seq for e in await store.query(Query(limit=10))] == [1]
    assert store.failure is None
    await store.close()


# ---------------------------------------------------------------- a full disk


async def test_a_full_disk_is_reported_as_such(tmp_path: Path) -> None:
    """SQLite rolls back by itself on SQLITE_FULL; the error is the full disk, not the
    failed second ROLLBACK."""
    store = SqliteStore(tmp_path / "bus.db")
    await store.open()
    assert store._w is not None
    store._w.execute("PRAGMA max_page_count=30")  # the file cannot grow past 30 pages
    big = "x" * 3000
    with pytest.raises(sqlite3.OperationalError) as full:
        for seq in range(1, 200):
            await store.append([ev(seq, big)])
    assert "database or disk is full" in str(full.value)
    # nothing half-done: what was committed reads back, the store takes smaller batches
    kept = await store.query(Query(limit=1000))
    assert kept and all(e.body == big for e in kept)
    assert store.failure is None
    await store.close()


# ---------------------------------------------------------------- files deleted or replaced


@pytest.mark.parametrize("victim", ["bus.db-wal", "bus.db"])
async def test_a_deleted_file_stops_every_commit(
    tmp_path: Path, victim: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The commit that finds a file gone went into the deleted WAL with those before
    it: when only the WAL went, they are all copied into the database (and that
    commit stands); when the database went, nothing can be saved and it is refused.
    Every later commit is refused."""
    store = SqliteStore(tmp_path / "bus.db")
    await store.open()
    await store.append([ev(1)])
    (tmp_path / victim).unlink()
    if victim == "bus.db-wal":
        await store.append([ev(2)])  # copied into the database: stored
    else:
        with pytest.raises(sqlite3.OperationalError, match="deleted or replaced while it ran"):
            await store.append([ev(2)])
    assert store.failure is not None and "restarted" in store.failure
    assert str(tmp_path) not in store.failure  # clients are not told where the files are
    assert any(victim in r.getMessage() and r.levelname == "ERROR" for r in caplog.records)
    with pytest.raises(sqlite3.OperationalError, match="restarted"):
        await store.append([ev(3)])  # for good, even though the files look fine again
    await store.close()
    if victim == "bus.db-wal":
        # what was acknowledged was copied out of the deleted WAL; nothing refused was
        again = SqliteStore(tmp_path / "bus.db")
        await again.open()
        assert [e.seq for e in await again.query(Query(limit=10))] == [1, 2]
        await again.close()


async def test_a_replaced_database_stops_every_commit(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "bus.db")
    await store.open()
    await store.append([ev(1)])
    (tmp_path / "bus.db").rename(tmp_path / "moved.db")
    (tmp_path / "bus.db").write_bytes((tmp_path / "moved.db").read_bytes())
    with pytest.raises(sqlite3.OperationalError, match="deleted or replaced"):
        await store.append([ev(2)])
    await store.close()


async def test_a_symlink_to_the_database_is_the_same_database(tmp_path: Path) -> None:
    first = SqliteStore(tmp_path / "bus.db")
    await first.open()
    (tmp_path / "link.db").symlink_to(tmp_path / "bus.db")
    with pytest.raises(StoreLocked):
        await SqliteStore(tmp_path / "link.db").open()
    await first.close()


def test_file_guard_learns_the_wal_created_by_the_first_write(tmp_path: Path) -> None:
    db = tmp_path / "x.db"
    db.write_bytes(b"")
    guard = FileGuard(db)
    guard.remember()  # no WAL yet
    (tmp_path / "x.db-wal").write_bytes(b"")
    assert guard.problem() is None
    (tmp_path / "x.db-wal").unlink()
    assert "x.db-wal was deleted" in (guard.problem() or "")
