"""The hub core without sockets: sessions are in-memory fakes that record frames."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any

import msgspec
import pytest

from wsbus import mailnames
from wsbus.codec import JSON
from wsbus.errors import CloseCode, ErrorCode, FrameError
from wsbus.hub import Hub, HubConfig
from wsbus.mailnames import MailNames
from wsbus.schema import Ack, Error, Event, Hello, History, Ok, Presence, Receipt, Send, Synced
from wsbus.session import Session
from wsbus.store import MemoryStore, Query, SqliteStore

from .helpers import async_wait_for


class FakeSession(Session):
    def __init__(self) -> None:
        super().__init__(JSON)
        self.frames: list[Any] = []
        self.closed_with: tuple[int, str] | None = None
        self.backlog = 0

    def write(self, payload: bytes) -> None:
        self.frames.append(JSON.decode_hub(payload))

    async def write_async(self, payload: bytes) -> None:
        await asyncio.sleep(0)
        self.write(payload)

    def buffered(self) -> int:
        return self.backlog

    def close(self, code: int, reason: str) -> None:
        self.closed = True
        self.closed_with = (code, reason)

    def of(self, kind: type) -> list[Any]:
        return [f for f in self.frames if isinstance(f, kind)]


async def make_hub(**config: Any) -> Hub:
    hub = Hub(MemoryStore(), HubConfig(prune_interval=0, **config))
    await hub.start()
    return hub


async def join(hub: Hub, name: str | None, resume: int | None = None, **hello: Any) -> FakeSession:
    s = FakeSession()
    hub.open_session(s, Hello(name=name, resume=resume, **hello))
    hub.attach(s)
    await hub.replay(s, resume)
    return s


async def test_send_ok_after_commit_and_delivery() -> None:
    hub = await make_hub()
    alice, bob = await join(hub, "alice"), await join(hub, "bob")
    hub.submit(alice, Send(ref="r1", to="bob", body="hi"))
    assert alice.of(Ok) == []  # nothing acknowledged before the commit
    await async_wait_for(lambda: alice.of(Ok))
    (ok,) = alice.of(Ok)
    (ev,) = bob.of(Event)
    assert (ok.seq, ev.seq, ev.body, ev.from_) == (1, 1, "hi", "alice")
    assert alice.of(Event) == []
    await hub.stop()


async def test_store_failure_is_an_error_not_an_ok() -> None:
    hub = await make_hub()
    alice = await join(hub, "alice")

    async def broken(*_: Any) -> None:
        raise OSError("disk full")

    hub.store.append = broken  # type: ignore[method-assign]
    hub.submit(alice, Send(ref="r1", to="bob", body="hi"))
    await async_wait_for(lambda: alice.of(Error))
    assert alice.of(Ok) == []
    assert alice.of(Error)[0].code == ErrorCode.STORE_FAILED


async def test_an_ack_of_a_pruned_event_is_refused() -> None:
    hub = await make_hub(retention_count=1)
    alice, bob = await join(hub, "alice"), await join(hub, "bob")
    for ref in ("r1", "r2"):
        hub.submit(alice, Send(ref=ref, to="bob", body="hi"))
    await async_wait_for(lambda: len(alice.of(Ok)) == 2)
    assert await hub.prune() == 1
    with pytest.raises(FrameError) as err:  # retention removed it: it is not there
        await hub.ack(bob, Ack(seq=1, status="read"))
    assert err.value.code == ErrorCode.UNKNOWN_EVENT
    await hub.ack(bob, Ack(seq=2, status="read"))
    await async_wait_for(lambda: alice.of(Receipt))
    assert [r.seq for r in alice.of(Receipt)] == [2]
    await hub.stop()


async def test_an_ack_survives_a_commit_the_store_refused() -> None:
    """A receipt in a batch the store refused (busy, full) is kept and committed by a
    later batch: an ack has no ref, so nobody could resend it."""
    hub = await make_hub()
    alice, bob = await join(hub, "alice"), await join(hub, "bob")
    hub.submit(alice, Send(ref="r", to="bob", body="hi"))
    await async_wait_for(lambda: alice.of(Ok))
    append = hub.store.append
    refused: list[int] = []

    async def busy_once(events: Any, receipts: Any = ()) -> None:
        if receipts and not refused:
            refused.append(len(receipts))
            raise OSError("database is locked")
        await append(events, receipts)

    hub.store.append = busy_once  # type: ignore[method-assign]
    await hub.ack(bob, Ack(seq=1, status="read"))
    await async_wait_for(lambda: alice.of(Receipt), timeout=5)  # retried a second later
    assert refused == [1]
    assert [(r.seq, r.by, r.status) for r in alice.of(Receipt)] == [(1, "bob", "read")]
    assert [r.status for r in await hub.store.receipts(1)] == ["read"]
    await hub.stop()


async def test_duplicate_ref_in_flight_and_after_commit() -> None:
    hub = await make_hub()
    alice = await join(hub, "alice")
    hub.submit(alice, Send(ref="same", to="bob", body="1"))
    hub.submit(alice, Send(ref="same", to="bob", body="1"))  # still in flight
    await async_wait_for(lambda: len(alice.of(Ok)) == 2)
    hub.submit(alice, Send(ref="same", to="bob", body="1"))  # committed already
    oks = alice.of(Ok)
    assert {o.seq for o in oks} == {1}
    assert [o.duplicate for o in oks] == [False, True, True]
    page = await hub.history(alice, History(ref="h", limit=10))
    assert [e.seq for e in page.events] == [1]


async def test_seq_and_ts_strictly_increase() -> None:
    hub = await make_hub()
    alice = await join(hub, "alice")
    for i in range(500):
        hub.submit(alice, Send(ref=f"r{i}", to="*", body=str(i)))
    await async_wait_for(lambda: len(alice.of(Ok)) == 500)
    page = await hub.history(alice, History(ref="h", limit=1000))
    seqs = [e.seq for e in page.events]
    ts = [e.ts for e in page.events]
    assert seqs == list(range(1, 501))
    assert all(b > a for a, b in itertools.pairwise(ts))


async def test_legacy_now_never_skips_uncommitted_events() -> None:
    """Invariant 5 at the hub: events not yet visible have ts > every ``now`` handed out."""
    hub = await make_hub()
    alice = await join(hub, "alice")
    gate = asyncio.Event()
    real_append = hub.store.append

    async def slow_append(*a: Any) -> None:
        await gate.wait()
        await real_append(*a)

    hub.store.append = slow_append  # type: ignore[method-assign]
    hub.submit(alice, Send(ref="a", to="bob", body="in flight"))
    await asyncio.sleep(0)
    now = hub.log.watermark()  # taken while "a" is assigned but not committed
    hub.submit(alice, Send(ref="b", to="bob", body="later"))
    gate.set()
    await async_wait_for(lambda: len(alice.of(Ok)) == 2)
    page = await hub.history(alice, History(ref="h", limit=10))
    assert all(e.ts > now for e in page.events)
    after = hub.log.watermark()
    hub.submit(alice, Send(ref="c", to="bob", body="after"))
    await async_wait_for(lambda: len(alice.of(Ok)) == 3)
    assert alice.of(Ok)[-1].ts > after


async def test_replay_then_held_then_live_in_order() -> None:
    hub = await make_hub()
    alice = await join(hub, "alice")
    for i in range(30):
        hub.submit(alice, Send(ref=f"r{i}", to="bob", body=str(i)))
    await async_wait_for(lambda: len(alice.of(Ok)) == 30)
    bob = FakeSession()
    hub.open_session(bob, Hello(name="bob", resume=10))
    hub.attach(bob)
    for i in range(30, 40):  # committed while bob replays: held, then flushed
        hub.submit(alice, Send(ref=f"r{i}", to="bob", body=str(i)))
    replay = asyncio.create_task(hub.replay(bob, 10))
    await async_wait_for(lambda: len(alice.of(Ok)) == 40)
    await replay
    hub.submit(alice, Send(ref="live", to="bob", body="live"))
    await async_wait_for(lambda: len(bob.of(Event)) == 31)
    seqs = [e.seq for e in bob.of(Event)]
    assert seqs == list(range(11, 42))
    synced = bob.of(Synced)
    assert synced and synced[0].seq >= 40


async def test_pending_direct_events_for_a_fresh_subscriber() -> None:
    hub = await make_hub()
    alice = await join(hub, "alice")
    for i in range(3):
        hub.submit(alice, Send(ref=f"r{i}", to="bob", body=str(i)))
    hub.submit(alice, Send(ref="x", to="carol", body="not bob's"))
    await async_wait_for(lambda: len(alice.of(Ok)) == 4)
    bob1 = await join(hub, "bob")
    assert [e.body for e in bob1.of(Event)] == ["0", "1", "2"]
    await hub.ack(bob1, Ack(seq=1, status="read"))
    await hub.ack(bob1, Ack(seq=2, status="session_down"))  # progress, not final
    await async_wait_for(lambda: len(alice.of(Receipt)) == 2)
    bob2 = await join(hub, "bob")
    assert [e.seq for e in bob2.of(Event)] == [2, 3]


async def test_a_name_that_never_had_mail_costs_no_store_query() -> None:
    """A crowd of new names connecting: none of them makes the store look for mail
    (wsbus/mailnames.py); a name a direct event went to does, and gets it."""
    hub = await make_hub()
    asked: list[list[str] | None] = []
    query = hub.store.query

    async def counted(q: Query) -> list[Event]:
        if q.pending_only:
            asked.append(q.entitled)
        return await query(q)

    hub.store.query = counted  # type: ignore[method-assign]
    alice = await join(hub, "alice")
    for i in range(5):
        await join(hub, f"new{i}")
    assert asked == []
    hub.submit(alice, Send(ref="r", to="dave", body="for dave"))
    await async_wait_for(lambda: alice.of(Ok))
    dave = await join(hub, "dave")
    assert asked == [["dave"]]
    assert [e.body for e in dave.of(Event)] == ["for dave"]
    await hub.stop()


async def test_mail_from_before_a_restart_is_known_to_the_new_hub(tmp_path: Path) -> None:
    """The names with mail come from the store at start, not only from what this
    process fanned out: bob's message waits for him across a restart."""
    db = tmp_path / "bus.db"
    hub = Hub(SqliteStore(db), HubConfig(prune_interval=0))
    await hub.start()
    alice = await join(hub, "alice")
    hub.submit(alice, Send(ref="r", to="bob", body="while you were away"))
    await async_wait_for(lambda: alice.of(Ok))
    await hub.stop()
    hub = Hub(SqliteStore(db), HubConfig(prune_interval=0))
    await hub.start()
    try:
        assert hub.mail.may_have(["bob"]) and not hub.mail.may_have(["carol"])
        bob = await join(hub, "bob")
        assert [e.body for e in bob.of(Event)] == ["while you were away"]
        assert [e.body for e in (await join(hub, "carol")).of(Event)] == []
    finally:
        await hub.stop()


def test_past_max_names_every_name_is_asked_about(monkeypatch: pytest.MonkeyPatch) -> None:
    """The set of names with mail is bounded: past MAX_NAMES the hub stops keeping
    it and asks the store for everyone, as it did before it kept any."""
    monkeypatch.setattr(mailnames, "MAX_NAMES", 3)
    mail = MailNames()
    assert mail.may_have(["x"])  # not loaded: not known
    mail._names = set()
    base = Event(seq=1, ts=0.0, channel="c", from_="a", to="*", body="")
    mail.saw([msgspec.structs.replace(base, to=to) for to in ("*", "~leases", "b", "c")])
    assert not mail.may_have(["x", "*", "~leases"]) and mail.may_have(["x", "c"])
    mail.saw([msgspec.structs.replace(base, seq=2, to="d"), msgspec.structs.replace(base, to="e")])
    assert mail.may_have(["x"])  # over the bound: not kept any more


async def test_ack_checks_the_addressee() -> None:
    hub = await make_hub()
    alice, carol = await join(hub, "alice"), await join(hub, "carol")
    hub.submit(alice, Send(ref="r", to="bob", body="for bob"))
    await async_wait_for(lambda: alice.of(Ok))
    # someone else's event and no event at all get the same answer: it does not
    # name the recipient, nor tell whether the seq exists
    refusals = []
    for seq in (1, 99):
        with pytest.raises(FrameError) as err:
            await hub.ack(carol, Ack(seq=seq, status="read"))
        assert err.value.code == ErrorCode.UNKNOWN_EVENT
        refusals.append(err.value.message.replace(str(seq), "N"))
    assert refusals[0] == refusals[1] and "bob" not in refusals[0], refusals
    with pytest.raises(FrameError) as err:  # a name the connection does not have
        await hub.ack(carol, Ack(seq=1, status="read", name="bob"))
    assert err.value.code == ErrorCode.NOT_YOUR_NAME
    await hub.stop()
    assert alice.of(Receipt) == []


async def test_send_rules() -> None:
    hub = await make_hub(max_body=10)
    alice = await join(hub, "alice")
    nameless = await join(hub, None)
    with pytest.raises(FrameError) as err:
        hub.submit(alice, Send(ref="r", to="bob", body="x" * 11))
    assert err.value.code == ErrorCode.BODY_TOO_LARGE
    with pytest.raises(FrameError) as err:
        hub.submit(alice, Send(ref="r", to="bob", body="x", from_="mallory"))
    assert err.value.code == ErrorCode.NOT_YOUR_NAME
    with pytest.raises(FrameError) as err:
        hub.submit(nameless, Send(ref="r", to="bob", body="x"))
    assert err.value.code == ErrorCode.NOT_YOUR_NAME


async def test_presence_up_and_down_pushed_to_channel() -> None:
    hub = await make_hub()
    watcher = await join(hub, "watcher")
    bob = await join(hub, "bob")
    bob2 = await join(hub, "bob")
    hub.close_session(bob)
    hub.close_session(bob2)
    states = [(p.name, p.state) for p in watcher.of(Presence) if p.name == "bob"]
    assert states == [("bob", "up"), ("bob", "down")]


async def test_slow_consumer_closed_fast_one_served() -> None:
    hub = await make_hub(send_queue=1000)
    alice, fast, slow = await join(hub, "alice"), await join(hub, "fast"), await join(hub, "slow")
    slow.backlog = 5000  # its socket stopped draining
    hub.submit(alice, Send(ref="r", to="*", body="x"))
    await async_wait_for(lambda: fast.of(Event))
    assert slow.closed_with is not None and slow.closed_with[0] == CloseCode.SLOW_CONSUMER
    hub.submit(alice, Send(ref="r2", to="*", body="y"))
    await async_wait_for(lambda: len(fast.of(Event)) == 2)
    assert len(slow.of(Event)) == 1


async def test_held_overflow_closes_a_replaying_session() -> None:
    hub = await make_hub(max_held=5)
    alice = await join(hub, "alice")
    bob = FakeSession()
    hub.open_session(bob, Hello(name="bob", resume=0))
    hub.attach(bob)  # replay not started: everything is held
    for i in range(6):
        hub.submit(alice, Send(ref=f"r{i}", to="bob", body=str(i)))
    await async_wait_for(lambda: bob.closed_with is not None)
    assert bob.closed_with is not None and bob.closed_with[0] == CloseCode.SLOW_CONSUMER


async def test_stop_commits_what_is_queued() -> None:
    hub = await make_hub()
    alice = await join(hub, "alice")
    for i in range(50):
        hub.submit(alice, Send(ref=f"r{i}", to="bob", body=str(i)))
    await hub.stop()
    assert len(alice.of(Ok)) == 50
    assert alice.closed_with is not None and alice.closed_with[0] == CloseCode.GOING_AWAY
    with pytest.raises(FrameError):
        hub.submit(alice, Send(ref="late", to="bob", body="x"))


async def test_events_committed_during_a_replay_query_come_once() -> None:
    """The replay is bounded by the seq at attach; later commits arrive held, once."""
    hub = await make_hub()
    alice = await join(hub, "alice")
    for i in range(5):
        hub.submit(alice, Send(ref=f"a{i}", to="bob", body=str(i)))
    await async_wait_for(lambda: len(alice.of(Ok)) == 5)
    gate = asyncio.Event()
    real_query = hub.store.query

    async def gated_query(q: Any) -> Any:
        await gate.wait()
        return await real_query(q)

    hub.store.query = gated_query  # type: ignore[method-assign]
    bob = FakeSession()
    hub.open_session(bob, Hello(name="bob", resume=0))
    hub.attach(bob)
    replay = asyncio.create_task(hub.replay(bob, 0))
    for i in range(5, 10):  # committed while the replay query is in progress
        hub.submit(alice, Send(ref=f"a{i}", to="bob", body=str(i)))
    await async_wait_for(lambda: len(alice.of(Ok)) == 10)
    gate.set()
    await replay
    assert [e.seq for e in bob.of(Event)] == list(range(1, 11))


async def test_events_committed_between_welcome_and_replay_are_delivered() -> None:
    """The replay bound is the seq announced in welcome, not the seq when replay starts."""
    hub = await make_hub()
    alice = await join(hub, "alice")
    bob = FakeSession()
    welcome = hub.open_session(bob, Hello(name="bob"))
    hub.attach(bob)
    hub.submit(alice, Send(ref="between", to="*", body="sent before bob's replay ran"))
    await async_wait_for(lambda: alice.of(Ok))
    await hub.replay(bob, None)
    assert [e.body for e in bob.of(Event)] == ["sent before bob's replay ran"]
    assert bob.of(Synced)[0].seq >= welcome.seq + 1
