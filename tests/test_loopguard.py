"""The loop guard: ``wsbus.loopguard.LoopGuard`` alone, then ``event.loop`` on a live hub.

``event.loop`` maps each recipient in an *exchange* with the sender — messages went
both ways within the hub's ``loop_window`` — to the number of events between the two
(either direction, this one included); a one-way burst is left out, notices are not
counted.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wsbus.hub import Hub, HubConfig
from wsbus.loopguard import LoopGuard
from wsbus.schema import Event, Hello, Register, Send
from wsbus.store import MemoryStore

from .helpers import HubProcess, async_wait_for
from .test_hub import FakeSession
from .test_rosters import Peer

# ------------------------------------------------------------------ LoopGuard alone


def test_a_one_way_burst_is_not_reported_an_exchange_is() -> None:
    g = LoopGuard(window=60)
    assert g.record(0.0, "alice", ["bob"]) == {}
    assert g.record(1.0, "alice", ["bob"]) == {}  # one way: a person handing out work
    assert g.record(2.0, "alice", ["bob"]) == {}
    assert g.count(2.0, "alice", "bob") == 3
    assert g.record(3.0, "bob", ["alice"]) == {"alice": 4}  # the first reply: an exchange
    assert g.record(4.0, "alice", ["bob"]) == {"bob": 5}


def test_pairs_are_unordered() -> None:
    g = LoopGuard(window=60)
    assert g.record(0.0, "alice", ["bob"]) == {}
    assert g.record(1.0, "bob", ["alice"]) == {"alice": 2}  # the reply counts for the pair
    assert g.record(2.0, "alice", ["bob"]) == {"bob": 3}
    assert g.count(2.0, "alice", "bob") == g.count(2.0, "bob", "alice") == 3


def test_pairs_are_independent_and_self_is_skipped() -> None:
    g = LoopGuard(window=60)
    assert g.record(0.0, "alice", ["bob", "carol", "alice"]) == {}
    assert g.record(1.0, "bob", ["alice"]) == {"alice": 2}
    assert g.record(2.0, "carol", ["alice", "bob"]) == {"alice": 2}
    assert g.count(2.0, "alice", "alice") == 0  # messages to oneself are never counted
    assert (g.count(2.0, "alice", "bob"), g.count(2.0, "bob", "carol")) == (2, 1)
    assert g.record(3.0, "carol", ["bob"]) == {}  # carol-bob went one way only


def test_sliding_window_expiry() -> None:
    g = LoopGuard(window=60)
    g.record(0.0, "alice", ["bob"])
    assert g.record(30.0, "bob", ["alice"]) == {"alice": 2}
    # at 61 the event at 0 is out of the window: only 30 and 61 remain
    assert g.record(61.0, "alice", ["bob"]) == {"bob": 2}
    assert g.count(61.0, "alice", "bob") == 2
    assert g.count(90.0, "alice", "bob") == 1  # 30 is exactly `window` old at 90: out
    assert g.count(121.0, "alice", "bob") == 0
    # an event exactly `window` after the last one starts a new conversation
    assert g.record(121.0, "bob", ["alice"]) == {}
    assert g.record(121.5, "alice", ["bob"]) == {"bob": 2}


def test_zero_window_counts_nothing() -> None:
    g = LoopGuard(window=0)
    for i in range(5):
        assert g.record(float(i), "alice", ["bob"]) == {}
        assert g.record(i + 0.5, "bob", ["alice"]) == {}
    assert g.count(5.0, "alice", "bob") == 0


def live_pairs(g: LoopGuard, now: float, names: list[str]) -> int:
    """Pairs the guard still counts (public API only)."""
    return sum(1 for i, a in enumerate(names) for b in names[i + 1 :] if g.count(now, a, b) > 0)


@pytest.mark.parametrize("max_pairs", [1, 2, 3, 10])
def test_pairs_are_bounded(max_pairs: int) -> None:
    """However many names talk within the window, at most ``max_pairs`` pairs are kept."""
    g = LoopGuard(window=1e9, max_pairs=max_pairs)
    names = [f"n{i}" for i in range(12)]
    for t, name in enumerate(names[1:]):
        g.record(float(t), names[0], [name])
        assert live_pairs(g, float(t), names) <= max_pairs
        assert g.count(float(t), names[0], name) == 1  # the newest pair is always kept


def test_eviction_drops_stale_pairs_first() -> None:
    g = LoopGuard(window=10, max_pairs=4)
    g.record(0.0, "a", ["b"])
    g.record(50.0, "a", ["c"])  # a-b is stale from now on (outside the window)
    g.record(51.0, "a", ["d"])
    g.record(52.0, "a", ["e"])
    g.record(53.0, "a", ["f"])  # full: only the stale pair goes, every live pair stays
    assert [g.count(53.0, "a", n) for n in "bcdef"] == [0, 1, 1, 1, 1]
    assert g.record(54.0, "c", ["a"]) == {"a": 2}


def test_eviction_when_full_of_live_pairs_drops_the_oldest() -> None:
    g = LoopGuard(window=1000, max_pairs=4)
    for t, name in enumerate(["b", "c", "d", "e"], start=1):
        g.record(float(t), "a", [name])
    g.record(5.0, "a", ["f"])  # full and nothing stale: the oldest half (a-b, a-c) goes
    assert [g.count(5.0, "a", n) for n in "bcdef"] == [0, 0, 1, 1, 1]
    assert g.record(6.0, "b", ["a"]) == {}  # a-b starts over
    assert g.record(7.0, "e", ["a"]) == {"a": 2}  # a-e kept its history


events_strategy = st.lists(
    st.tuples(
        st.floats(min_value=0.0, max_value=5.0),  # time step
        st.sampled_from("abcd"),
        st.lists(st.sampled_from("abcd"), max_size=3),
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(events=events_strategy, window=st.sampled_from([0.0, 1.0, 3.5, 10.0]))
def test_matches_a_brute_force_model(
    events: list[tuple[float, str, list[str]]], window: float
) -> None:
    """Against a log of every (time, pair): record() and count() agree with a scan."""
    g = LoopGuard(window=window)
    log: list[tuple[float, str, str]] = []  # (time, sender, recipient)
    now = 0.0

    def scan(a: str, b: str) -> int:
        if window <= 0:
            return 0
        return sum(1 for t, s, r in log if {s, r} == {a, b} and t > now - window)

    def both_ways(a: str, b: str) -> bool:
        ways = {(s, r) for t, s, r in log if {s, r} == {a, b} and t > now - window}
        return len(ways) == 2

    for step, sender, recipients in events:
        now += step
        expected: dict[str, int] = {}
        for r in recipients:
            if r == sender:
                continue
            if window > 0:
                log.append((now, sender, r))
            n = scan(sender, r)
            if window > 0 and both_ways(sender, r):
                expected[r] = n
        assert g.record(now, sender, recipients) == expected
        for a in "abcd":
            for b in "abcd":
                if a != b:
                    assert g.count(now, a, b) == scan(a, b)


# ------------------------------------------------------------------ the hub core


async def make_hub(**config: Any) -> Hub:
    hub = Hub(MemoryStore(), HubConfig(prune_interval=0, **config))
    await hub.start()
    return hub


async def join(hub: Hub, name: str, **hello: Any) -> FakeSession:
    s = FakeSession()
    hub.open_session(s, Hello(name=name, **hello))
    hub.attach(s)
    await hub.replay(s, None)
    return s


async def test_hub_counts_a_broadcast_for_registered_and_connected_names() -> None:
    hub = await make_hub()
    alice, bob = await join(hub, "alice"), await join(hub, "bob")
    watch = await join(hub, "watch", watch=True)
    await hub.register(alice, Register(ref="g", channel="default", name="carol"))
    await hub.register(bob, Register(ref="g2", channel="default", name="carol2"))
    hub.submit(alice, Send(ref="b1", to="*", body="hello all"))
    hub.submit(bob, Send(ref="d2", to="alice", body="bob answers the broadcast"))
    hub.open_session(carol := FakeSession(), Hello(name="carol", channels=[]))
    hub.submit(carol, Send(ref="d1", to="alice", body="carol, registered, answers too"))
    hub.submit(alice, Send(ref="d3", to="dave", body="dave is neither"))
    await async_wait_for(lambda: len(watch.of(Event)) == 4)
    loops = [e.loop for e in watch.of(Event)]
    assert loops == [None, {"alice": 2}, {"alice": 2}, None]
    await hub.stop()


async def test_hub_with_zero_window_sends_no_loop() -> None:
    hub = await make_hub(loop_window=0)
    alice, bob = await join(hub, "alice"), await join(hub, "bob")
    for i in range(3):
        hub.submit(alice, Send(ref=f"a{i}", to="bob", body="ping"))
        hub.submit(bob, Send(ref=f"b{i}", to="alice", body="pong"))
    await async_wait_for(lambda: len(bob.of(Event)) == 3 and len(alice.of(Event)) == 3)
    assert [e.loop for e in alice.of(Event) + bob.of(Event)] == [None] * 6
    await hub.stop()


# ------------------------------------------------------------------ a live hub


@contextlib.asynccontextmanager
async def peers(url: str, *hellos: dict[str, Any]) -> AsyncIterator[list[Peer]]:
    opened: list[Peer] = []
    try:
        for hello in hellos:
            opened.append(await Peer(url).open(hello))
        yield opened
    finally:
        for p in opened:
            await p.close()


async def test_live_loop_counts_direct_and_broadcast(hub: HubProcess) -> None:
    hellos = [{"name": n, "channels": ["acme"]} for n in ("alice", "bob", "dave")]
    async with peers(hub.url, *hellos) as (alice, bob, dave):
        ok = await alice.send("bob", "first message", channel="acme")
        assert "loop" not in await bob.event(ok["seq"])  # a first message is not a loop
        ok = await bob.send("alice", "answer", channel="acme")
        assert (await alice.event(ok["seq"]))["loop"] == {"alice": 2}
        ok = await alice.send("bob", "again", channel="acme")
        assert (await bob.event(ok["seq"]))["loop"] == {"bob": 3}
        # a broadcast counts for every name of the channel: bob 4, dave 1 (left out);
        # each member sees only its own count (not who else wrote to the sender)
        ok = await alice.send("*", "to everyone", channel="acme")
        assert (await bob.event(ok["seq"]))["loop"] == {"bob": 4}
        assert "loop" not in await dave.event(ok["seq"])
        ok = await dave.send("alice", "dave answers", channel="acme")
        assert (await alice.event(ok["seq"]))["loop"] == {"alice": 2}
        # replayed events carry no loop: it is not stored
        async with peers(hub.url, {"name": "bob", "channels": ["acme"], "resume": 0}) as (late,):
            await async_wait_for(lambda: any(f["op"] == "synced" for f in late.frames), 5)
            assert late.events() and all("loop" not in e for e in late.events())


async def test_live_loop_counts_registered_members_and_skips_notices(hub: HubProcess) -> None:
    hellos: list[dict[str, Any]] = [
        {"name": "alice", "channels": ["acme"]},
        {"name": "watch", "channels": ["acme"], "watch": True},
    ]
    async with peers(hub.url, *hellos) as (alice, watch):
        await alice.raw.send({"op": "register", "ref": "g1", "channel": "acme", "name": "carol"})
        await async_wait_for(lambda: any(f["op"] == "registered" for f in alice.frames), 5)
        ok = await alice.send("*", "carol is only registered", channel="acme")
        assert "carol" not in ((await watch.event(ok["seq"])).get("loop") or {})
        async with peers(hub.url, {"name": "carol", "channels": []}) as (carol,):
            ok = await carol.send("alice", "carol answers the broadcast", channel="acme")
            assert (await watch.event(ok["seq"]))["loop"] == {"alice": 2}
        # notices neither carry nor add to the count
        for i in range(3):
            ok = await alice.send("carol", f"notice {i}", channel="acme", kind="notice")
            assert "loop" not in await watch.event(ok["seq"])
        ok = await alice.send("carol", "after the notices", channel="acme")
        assert (await watch.event(ok["seq"]))["loop"] == {"carol": 3}


@pytest.mark.parametrize(
    "variables",
    [
        {"WSBUS_LOOP_WINDOW": "0"},
        {"AGENT_COMMS_LOOP_WINDOW_SEC": "0"},
        {"WSBUS_LOOP_WINDOW": "0", "AGENT_COMMS_LOOP_WINDOW_SEC": "600"},  # WSBUS_ first
    ],
    ids=["wsbus", "agent-comms", "wsbus-wins"],
)
async def test_zero_loop_window_from_the_environment(
    env: dict[str, str], hub_factory: Callable[..., HubProcess], variables: dict[str, str]
) -> None:
    env.update(variables)
    hub = hub_factory()
    hellos = [{"name": "alice"}, {"name": "bob"}]
    async with peers(hub.url, *hellos) as (alice, bob):
        for i in range(3):
            ok = await alice.send("bob", f"ping {i}")
            assert "loop" not in await bob.event(ok["seq"])
            ok = await bob.send("alice", f"pong {i}")
            assert "loop" not in await alice.event(ok["seq"])


async def test_loop_window_from_the_environment_expires(
    env: dict[str, str], hub_factory: Callable[..., HubProcess]
) -> None:
    window = 1.0
    env["AGENT_COMMS_LOOP_WINDOW_SEC"] = str(window)
    hub = hub_factory()
    async with peers(hub.url, {"name": "alice"}, {"name": "bob"}) as (alice, bob):
        first = await alice.send("bob", "first")
        # wait for the clock, not for the hub: the first event leaves the window
        await async_wait_for(lambda: time.time() > first["ts"] + window + 0.05, 5)
        late = await bob.send("alice", "too late to count as a reply")
        assert "loop" not in await alice.event(late["seq"])
        ok = await alice.send("bob", "a quick reply counts")
        assert ok["ts"] - late["ts"] < window  # (else this machine is far too slow)
        assert (await bob.event(ok["seq"]))["loop"] == {"bob": 2}


def test_broadcasts_count_per_channel_and_only_between_correspondents() -> None:
    g = LoopGuard(window=60)
    members = {"alice", "bob", "carol"}
    everyone = members.__contains__
    # a one-way burst of posts is not a loop
    for t in range(3):
        assert g.record_broadcast(float(t), "alice", "acme", everyone) == {}
    # bob posts back to the project: an exchange of 4 posts between the two
    assert g.record_broadcast(3.0, "bob", "acme", everyone) == {"alice": 4}
    assert g.record_broadcast(4.0, "alice", "acme", everyone) == {"bob": 5}
    # another channel is another conversation; carol never wrote: never reported
    assert g.record_broadcast(5.0, "alice", "other", everyone) == {}
    # a direct answer to a post counts with the posts of that channel
    assert g.record(6.0, "carol", ["alice"], "acme") == {"alice": 5}
    # only members of the channel are reported
    assert g.record_broadcast(7.0, "alice", "acme", {"alice", "bob"}.__contains__) == {"bob": 6}
    # past the window everything is forgotten
    assert g.record_broadcast(100.0, "bob", "acme", everyone) == {}
