"""Storage engines: every query filter, receipts, refs, pruning and reopening, on each engine."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from wsbus.schema import BROADCAST, Event
from wsbus.store import MemoryStore, Query, ReceiptRecord, SqliteStore, Store

T0 = 1_700_000_000.0

StoreMaker = Callable[[], Store]


@pytest.fixture(params=["memory", "sqlite"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> StoreMaker:
    """A factory; for SQLite every call opens the same file in tmp_path."""
    if request.param == "memory":
        return MemoryStore
    return lambda: SqliteStore(tmp_path / "sub" / "bus.db")


@pytest.fixture
async def store(make_store: StoreMaker) -> AsyncIterator[Store]:
    s = make_store()
    await s.open()
    yield s
    await s.close()


def ev(
    seq: int,
    sender: str,
    to: str,
    body: str | None = None,
    *,
    channel: str = "default",
    thread: str | None = None,
    ref: str | None = None,
    meta: dict[str, Any] | None = None,
    ts: float | None = None,
) -> Event:
    return Event(
        seq=seq,
        ts=T0 + seq if ts is None else ts,
        channel=channel,
        from_=sender,
        to=to,
        body=f"body {seq}" if body is None else body,
        thread=thread,
        kind="agent",
        meta=meta,
        ref=ref,
    )


def rc(
    seq: int, name: str, status: str = "read", final: bool = True, ts: float = 0.0
) -> ReceiptRecord:
    return ReceiptRecord(
        seq=seq,
        channel="default",
        name=name,
        status=status,
        ts=ts or T0 + 1000 + seq,
        reason=None,
        final=final,
    )


#: a fixed history used by the filter tests
HISTORY = [
    ev(1, "alice", "bob", thread="t1"),
    ev(2, "bob", "alice"),
    ev(3, "alice", BROADCAST),
    ev(4, "carol", "bob", channel="ops"),
    ev(5, "bob", BROADCAST, thread="t1"),
    ev(6, "carol", BROADCAST, channel="ops"),
    ev(7, "alice", "carol", thread="t2"),
    ev(8, "carol", "bob"),
]


async def seqs(store: Store, **kw: Any) -> list[int]:
    kw.setdefault("limit", 100)
    return [e.seq for e in await store.query(Query(**kw))]


@pytest.fixture
async def filled(store: Store) -> Store:
    await store.append(HISTORY[:3])
    await store.append(HISTORY[3:])
    return store


# ------------------------------------------------------------------ query filters


async def test_query_everything_in_seq_order(filled: Store) -> None:
    got = await filled.query(Query(limit=100))
    assert got == HISTORY


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        ({"channels": ["ops"]}, [4, 6]),
        ({"channels": ["default", "ops"]}, [1, 2, 3, 4, 5, 6, 7, 8]),
        ({"channels": ["nowhere"]}, []),
        ({"to": "bob"}, [1, 4, 8]),
        ({"to": BROADCAST}, [3, 5, 6]),
        ({"to": "bob", "channels": ["default"]}, [1, 8]),
        ({"sender": "carol"}, [4, 6, 8]),
        ({"sender": "carol", "to": "bob"}, [4, 8]),
        ({"thread": "t1"}, [1, 5]),
        ({"thread": "t2"}, [7]),
        ({"thread": "none"}, []),
        ({"after": 5}, [6, 7, 8]),
        ({"before": 4}, [1, 2, 3]),
        ({"after": 2, "before": 6}, [3, 4, 5]),
        ({"after": 8}, []),
        ({"limit": 3}, [1, 2, 3]),
        ({"limit": 3, "latest": True}, [6, 7, 8]),
        ({"limit": 2, "latest": True, "before": 6}, [4, 5]),
        ({"limit": 2, "after": 3}, [4, 5]),
        ({"limit": 2, "latest": True, "to": "bob"}, [4, 8]),
        ({"limit": 100, "latest": True, "after": 6}, [7, 8]),
    ],
)
async def test_query_filters(filled: Store, kw: dict[str, Any], expected: list[int]) -> None:
    assert await seqs(filled, **kw) == expected


async def test_query_entitled(filled: Store) -> None:
    # bob: his direct events, and broadcasts not sent by bob (5 is his own)
    assert await seqs(filled, entitled=["bob"]) == [1, 3, 4, 6, 8]
    assert await seqs(filled, entitled=["alice"]) == [2, 5, 6]
    assert await seqs(filled, entitled=["carol"]) == [3, 5, 7]
    # several names (a bridge): direct to either, and every broadcast (one name's
    # broadcast is for the others)
    assert await seqs(filled, entitled=["alice", "carol"]) == [2, 3, 5, 6, 7]
    assert await seqs(filled, entitled=["bob"], channels=["default"]) == [1, 3, 8]
    assert await seqs(filled, entitled=["bob"], limit=2, latest=True) == [6, 8]
    assert await seqs(filled, entitled=["nobody"]) == [3, 5, 6]


async def test_threads_count_only_what_the_party_may_read(store: Store) -> None:
    await store.append(
        [
            ev(1, "alice", "bob", thread="plan"),
            ev(2, "alice", BROADCAST, thread="plan"),
            ev(3, "bob", "alice", thread="plan"),
            ev(4, "alice", "bob", thread="secret"),
            ev(5, "carol", BROADCAST, thread="open", channel="ops"),
            ev(6, "carol", "mallory", thread="secret", channel="ops"),
            ev(7, "alice", "bob", thread="plan"),
        ]
    )

    async def listing(channel: str | None = None, party: list[str] | None = None) -> list[Any]:
        found = await store.threads(channel, party)
        return [(t.channel, t.thread, t.entries, t.first_ts - T0, t.last_ts - T0) for t in found]

    assert await listing() == [
        ("default", "plan", 4, 1, 7),
        ("ops", "secret", 1, 6, 6),
        ("ops", "open", 1, 5, 5),
        ("default", "secret", 1, 4, 4),
    ]
    # mallory reads broadcasts and what is to or from mallory: not alice and bob's thread
    assert await listing(party=["mallory"]) == [
        ("ops", "secret", 1, 6, 6),
        ("ops", "open", 1, 5, 5),
        ("default", "plan", 1, 2, 2),
    ]
    assert await listing("default", ["mallory"]) == [("default", "plan", 1, 2, 2)]
    assert await listing("default", ["bob"]) == await listing("default")
    assert await listing("ops", ["alice", "bob"]) == [("ops", "open", 1, 5, 5)]
    assert await listing(party=[]) == [("ops", "open", 1, 5, 5), ("default", "plan", 1, 2, 2)]


async def test_query_pending_only(store: Store) -> None:
    await store.append(
        [
            ev(1, "alice", "bob"),
            ev(2, "alice", "bob"),
            ev(3, "alice", "bob"),
            ev(4, "alice", BROADCAST),
            ev(5, "alice", "bob"),
            ev(6, "alice", "carol"),
            ev(7, "alice", "bob"),
        ]
    )
    pending = {"entitled": ["bob"], "pending_only": True}
    assert await seqs(store, **pending) == [1, 2, 3, 5, 7]
    await store.append(
        [],
        [
            rc(1, "bob", "read"),
            rc(2, "bob", "session_down", final=False),  # not final: still pending
            rc(3, "carol", "read"),  # someone else's receipt does not count
            rc(5, "bob", "failed"),
        ],
    )
    assert await seqs(store, **pending) == [2, 3, 7]
    # a final receipt after a session_down settles it
    await store.append([], [rc(2, "bob", "submitted")])
    assert await seqs(store, **pending) == [3, 7]
    # several names, and the usual filters still apply
    assert await seqs(store, entitled=["bob", "carol"], pending_only=True) == [3, 6, 7]
    assert await seqs(store, entitled=["bob"], pending_only=True, after=3) == [7]
    assert await seqs(store, entitled=["bob"], pending_only=True, limit=1) == [3]


async def test_pending_counts_the_mail_waiting_per_recipient(store: Store) -> None:
    """What `hub_status` reports: direct events without a final receipt by their
    recipient, per (channel, recipient), with the oldest; never broadcasts or lease
    events; only above ``after`` (the bound of the scan)."""
    await store.append(
        [
            ev(1, "alice", "bob"),
            ev(2, "alice", "bob"),
            ev(3, "alice", BROADCAST),
            ev(4, "alice", "bob", channel="ops"),
            ev(5, "carol", "~leases"),
            ev(6, "alice", "carol"),
            ev(7, "alice", "bob"),
        ]
    )
    await store.append([], [rc(1, "bob", "read"), rc(2, "bob", "session_down", final=False)])
    found = {(p.channel, p.recipient): p for p in await store.pending(0)}
    assert set(found) == {("default", "bob"), ("ops", "bob"), ("default", "carol")}
    bob = found[("default", "bob")]
    assert (bob.count, bob.oldest_seq, bob.oldest_ts) == (2, 2, T0 + 2)
    assert found[("ops", "bob")].count == 1
    assert [(p.recipient, p.count) for p in await store.pending(6)] == [("bob", 1)]
    await store.append([], [rc(2, "bob", "failed"), rc(7, "bob", "read"), rc(6, "carol")])
    assert {(p.channel, p.recipient) for p in await store.pending(0)} == {("ops", "bob")}


async def test_recipients_are_the_names_direct_events_went_to(store: Store) -> None:
    """What the hub loads at start to know who may have mail (wsbus/mailnames.py):
    every recipient of a direct event on any channel, never a broadcast or the lease
    book, each once, whatever its receipts; at most ``limit``."""
    assert await store.recipients(10) == []
    await store.append(
        [
            ev(1, "alice", "bob"),
            ev(2, "alice", BROADCAST),
            ev(3, "alice", "bob", channel="ops"),
            ev(4, "carol", "~leases"),
            ev(5, "alice", "carol", channel="zz"),
            ev(6, "bob", "alice", channel="ops"),
            ev(7, "alice", "bob"),
        ]
    )
    await store.append([], [rc(1, "bob", "read"), rc(7, "bob", "read")])
    assert await store.recipients(10) == ["alice", "bob", "carol"]
    assert len(await store.recipients(2)) == 2


# ------------------------------------------------------------------ get, receipts, refs


async def test_get(filled: Store) -> None:
    assert await filled.get(4) == HISTORY[3]
    assert await filled.get(1) == HISTORY[0]
    assert await filled.get(8) == HISTORY[7]
    assert await filled.get(0) is None
    assert await filled.get(9) is None


async def test_get_with_gaps_in_seq(store: Store) -> None:
    await store.append([ev(2, "a", "b"), ev(5, "a", "b"), ev(9, "a", "b")])
    assert await store.get(5) == ev(5, "a", "b")
    for missing in (1, 3, 4, 6, 10):
        assert await store.get(missing) is None
    assert await seqs(store, after=2, before=9) == [5]


async def test_receipts(store: Store) -> None:
    await store.append([ev(1, "alice", "bob"), ev(2, "alice", "bob")])
    assert await store.receipts(1) == []
    first = rc(1, "bob", "session_down", final=False, ts=T0 + 10)
    await store.append([], [first])
    second = ReceiptRecord(
        seq=1, channel="default", name="bob", status="failed", ts=T0 + 20, reason="no tty"
    )
    await store.append([ev(3, "bob", "alice")], [second])
    assert await store.receipts(1) == [first, second]
    assert await store.receipts(2) == []
    assert await store.receipts(3) == []
    got = await store.receipts(1)
    assert got[0].final is False and got[1].final is True
    assert got[1].reason == "no tty"


async def test_recent_refs_newest_last(store: Store) -> None:
    await store.append(
        [
            ev(1, "alice", "bob", ref="r1"),
            ev(2, "bob", "alice"),
            ev(3, "bob", "alice", ref="r3"),
            ev(4, "carol", BROADCAST, ref="r4"),
            ev(5, "alice", "bob"),
            ev(6, "alice", "bob", ref="r6"),
        ]
    )
    assert await store.recent_refs(10) == [
        ("alice", "r1", 1, T0 + 1),
        ("bob", "r3", 3, T0 + 3),
        ("carol", "r4", 4, T0 + 4),
        ("alice", "r6", 6, T0 + 6),
    ]
    assert await store.recent_refs(2) == [("carol", "r4", 4, T0 + 4), ("alice", "r6", 6, T0 + 6)]
    assert await store.recent_refs(1) == [("alice", "r6", 6, T0 + 6)]


# ------------------------------------------------------------------ round trips


async def test_meta_and_non_ascii_round_trip(store: Store) -> None:
    meta = {
        "n": 3,
        "f": 1.5,
        "ok": True,
        "none": None,
        "list": [1, "zwei", {"drei": 3}],
        "nested": {"ключ": "значение", "emoji": "🚀"},
    }
    body = "héllo wörld\nzweite Zeile ✓\n日本語テキスト 🚀\n\ttab and trailing space "
    original = [
        ev(1, "alice", "bob", body, meta=meta, thread="t.1", ref="ref-ü"),
        ev(2, "alice", "bob", "", meta={}),
        ev(3, "alice", "bob", "plain"),
    ]
    await store.append(original)
    got = await store.query(Query(limit=10))
    assert got == original
    assert got[0].meta == meta and got[0].body == body
    assert got[1].meta == {} and got[1].body == ""
    assert got[2].meta is None
    assert await store.get(1) == original[0]


# ------------------------------------------------------------------ pruning


async def test_prune_by_age(store: Store) -> None:
    await store.append([ev(s, "a", "b") for s in range(1, 11)])
    await store.append([], [rc(2, "b"), rc(7, "b")])
    removed, pruned = await store.prune(T0 + 4.5, 0)  # ts < T0+4.5: seqs 1..4
    assert (removed, pruned) == (4, 4)
    assert await seqs(store) == [5, 6, 7, 8, 9, 10]
    assert await store.get(3) is None
    assert await store.receipts(2) == []
    assert len(await store.receipts(7)) == 1
    # nothing older left: nothing removed, pruned_seq unchanged
    assert await store.prune(T0 + 4.5, 0) == (0, 4)
    assert await store.prune(0.0, 0) == (0, 4)


async def test_prune_by_count(store: Store) -> None:
    await store.append([ev(s, "a", "b") for s in range(1, 11)])
    assert await store.prune(0.0, 3) == (7, 7)
    assert await seqs(store) == [8, 9, 10]
    assert await store.prune(0.0, 3) == (0, 7)
    assert await store.prune(0.0, 5) == (0, 7)
    # keep 0 means no count limit
    assert await store.prune(0.0, 0) == (0, 7)
    assert await seqs(store) == [8, 9, 10]


async def test_prune_takes_the_stricter_of_age_and_count(store: Store) -> None:
    await store.append([ev(s, "a", "b") for s in range(1, 11)])
    assert await store.prune(T0 + 2.5, 5) == (5, 5)  # count is stricter
    assert await store.prune(T0 + 8.5, 5) == (3, 8)  # age is stricter
    assert await seqs(store) == [9, 10]


async def test_pruned_seq_never_decreases(store: Store) -> None:
    history: list[int] = []
    seq = 0
    for round_ in range(6):
        await store.append([ev(seq + i, "a", "b") for i in range(1, 5)])
        seq += 4
        # alternate strict and lenient limits, including ones that remove nothing
        if round_ % 2:
            result = await store.prune(T0 + seq - 2.5, 0)
        else:
            result = await store.prune(0.0, 6)
        history.append(result[1])
        result = await store.prune(0.0, 0)
        assert result == (0, history[-1])
        history.append(result[1])
    assert history == sorted(history)
    assert history[-1] > 0


async def test_prune_everything_keeps_last_seq(make_store: StoreMaker) -> None:
    s = make_store()
    await s.open()
    await s.append([ev(1, "a", "b"), ev(2, "a", "b"), ev(3, "a", "b")])
    assert await s.prune(T0 + 100, 0) == (3, 3)
    assert await s.query(Query(limit=10)) == []
    if isinstance(s, MemoryStore):
        info = await s.open()
        assert (info.last_seq, info.pruned_seq, info.count) == (3, 3, 0)
    await s.close()


# ------------------------------------------------------------------ open / reopen


async def test_open_reports_state(make_store: StoreMaker) -> None:
    s = make_store()
    info = await s.open()
    assert (info.last_seq, info.last_ts, info.pruned_seq, info.count) == (0, 0.0, 0, 0)
    assert info.hub_id
    await s.close()


async def test_sqlite_reopen_reports_the_same_state(tmp_path: Path) -> None:
    path = tmp_path / "reopen.db"
    s = SqliteStore(path)
    first = await s.open()
    await s.append([ev(s_, "a", "b") for s_ in range(1, 8)], [rc(6, "b")])
    await s.prune(T0 + 3.5, 0)
    await s.close()

    s = SqliteStore(path)
    info = await s.open()
    assert info.hub_id == first.hub_id
    assert (info.last_seq, info.last_ts, info.pruned_seq, info.count) == (7, T0 + 7, 3, 4)
    assert await seqs(s) == [4, 5, 6, 7]
    assert len(await s.receipts(6)) == 1
    await s.close()

    s = SqliteStore(path)
    again = await s.open()
    assert again == info
    await s.close()


async def test_sqlite_reopen_after_everything_was_pruned(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    s = SqliteStore(path)
    first = await s.open()
    await s.append([ev(1, "a", "b"), ev(2, "a", "b", ts=T0 + 2.25)])
    assert await s.prune(T0 + 10, 0) == (2, 2)
    await s.close()

    s = SqliteStore(path)
    info = await s.open()
    # the seq/ts clock must not restart below what was handed out
    assert (info.hub_id, info.last_seq, info.last_ts, info.pruned_seq, info.count) == (
        first.hub_id,
        2,
        T0 + 2.25,
        2,
        0,
    )
    await s.close()


async def test_hub_ids_differ_between_stores(tmp_path: Path) -> None:
    a, b = SqliteStore(tmp_path / "a.db"), SqliteStore(tmp_path / "b.db")
    ia, ib = await a.open(), await b.open()
    assert ia.hub_id != ib.hub_id
    await a.close()
    await b.close()
    m1, m2 = MemoryStore(), MemoryStore()
    assert (await m1.open()).hub_id != (await m2.open()).hub_id
    # and a memory store keeps its id across open() calls
    assert (await m1.open()).hub_id == (await m1.open()).hub_id


async def test_append_is_durable_across_instances(tmp_path: Path) -> None:
    path = tmp_path / "dur.db"
    s = SqliteStore(path, fsync=True)
    await s.open()
    batch = [ev(1, "alice", "bob", "ü", meta={"k": [1]}), ev(2, "bob", BROADCAST, ref="x")]
    await s.append(batch, [rc(1, "bob")])
    # another connection to the file sees the commit without the store closing
    conn = sqlite3.connect(path)
    assert [r[0] for r in conn.execute("SELECT seq FROM events ORDER BY seq")] == [1, 2]
    assert conn.execute("SELECT name, status FROM receipts").fetchall() == [("bob", "read")]
    conn.close()
    await s.close()
    other = SqliteStore(path)
    await other.open()
    assert await other.query(Query(limit=10)) == batch
    assert await other.receipts(1) == [rc(1, "bob")]
    await other.close()


async def test_failed_batch_commits_nothing(tmp_path: Path) -> None:
    s = SqliteStore(tmp_path / "atomic.db")
    await s.open()
    await s.append([ev(1, "a", "b")])
    with pytest.raises(sqlite3.IntegrityError):
        await s.append([ev(2, "a", "b"), ev(1, "a", "b")])  # duplicate seq
    assert await seqs(s) == [1]
    await s.append([ev(2, "a", "b")])
    assert await seqs(s) == [1, 2]
    await s.close()


def test_sqlite_age_cut_finds_the_last_older_seq_across_gaps(tmp_path: Path) -> None:
    import sqlite3

    from wsbus.store.sqlquery import SCHEMA, last_seq_before

    conn = sqlite3.connect(tmp_path / "gaps.db")
    conn.executescript(SCHEMA)
    seqs = [3, 4, 9, 10, 11, 40, 41, 100]
    conn.executemany(
        "INSERT INTO events (seq, ts, channel, sender, recipient, body) VALUES (?,?,?,?,?,?)",
        [(s, 1000.0 + s, "c", "a", "b", "x") for s in seqs],
    )
    assert last_seq_before(conn, 0.0) == 0
    for cutoff_seq in range(0, 110):
        expected = max((s for s in seqs if 1000.0 + s < 1000.0 + cutoff_seq), default=0)
        assert last_seq_before(conn, 1000.0 + cutoff_seq) == expected
    conn.close()


async def test_sqlite_small_commit_never_blocks_the_loop_on_a_held_writer(tmp_path: Path) -> None:
    """While a long prune holds the writer connection, a small append waits on the
    writer thread, not on the event loop."""
    import asyncio
    import threading

    from wsbus.schema import Event
    from wsbus.store import SqliteStore

    store = SqliteStore(tmp_path / "busy.db")
    await store.open()
    release = threading.Event()
    held = threading.Event()

    def hold() -> None:
        with store._wlock:
            held.set()
            release.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(5)
    ev = Event(seq=1, ts=1.0, channel="c", from_="a", to="b", body="x")
    append = asyncio.create_task(store.append([ev]))
    ticks = 0
    for _ in range(5):  # the loop keeps running while the append waits
        await asyncio.sleep(0.01)
        ticks += 1
    assert ticks == 5 and not append.done()
    release.set()
    await asyncio.wait_for(append, 5)
    holder.join(5)
    assert (await store.get(1)) == ev
    await store.close()


async def test_counts_per_recipient_with_the_last_seq_counted(filled: Store) -> None:
    counts, upto = await filled.counts()
    assert upto == 8
    assert counts == {
        ("default", "bob"): 2,
        ("default", "alice"): 1,
        ("default", "carol"): 1,
        ("default", BROADCAST): 2,
        ("ops", "bob"): 1,
        ("ops", BROADCAST): 1,
    }


async def test_counts_of_an_empty_store(store: Store) -> None:
    assert await store.counts() == ({}, 0)
