"""The HTTP shim's window of recent events (compat/window.py), without sockets."""

from __future__ import annotations

import random
import sys
import tracemalloc

from wsbus.compat.messages import legacy_message
from wsbus.compat.window import KEEP_BODY, MESSAGE_COST, RecentEvents

from wsbus.schema import BROADCAST, Event


def ev(seq: int, sender: str, to: str, body: str = "x", channel: str = "c") -> Event:
    return Event(seq=seq, ts=1000.0 + seq / 10, channel=channel, from_=sender, to=to, body=body)


def expected(events: list[Event], channel: str, name: str, since: float, limit: int) -> list[int]:
    """What /recv must return, by brute force over everything."""
    out = [
        e.seq
        for e in events
        if e.channel == channel
        and e.ts > since
        and (e.to == name or (e.to == BROADCAST and e.from_ != name))
    ]
    return out[:limit]


def test_fetch_matches_a_full_scan() -> None:
    rng = random.Random(7)
    names = ["ann", "bob", "cy", "dee"]
    events = [
        ev(seq, rng.choice(names), rng.choice([*names, BROADCAST]), channel=rng.choice("ab"))
        for seq in range(1, 3001)
    ]
    window = RecentEvents(0.0, max_events=1000)
    for i in range(0, len(events), 37):
        window.add(events[i : i + 37])
    assert len(window) == 1000
    assert window.floor_ts == events[-1001].ts  # every event after the floor is held
    for _ in range(300):
        name, channel = rng.choice(names), rng.choice("ab")
        since = window.floor_ts + rng.random() * 110
        limit = rng.choice([1, 5, 100, 1000])
        got = window.fetch(channel, name, since, limit)
        assert got is not None
        assert [m.seq for m in got] == expected(events, channel, name, since, limit)
    assert not window.covers(window.floor_ts - 0.01)


def test_bounded_by_bytes_whatever_the_count() -> None:
    body = "y" * 4000
    assert sys.getsizeof(body) <= KEEP_BODY
    window = RecentEvents(0.0, max_events=40_000, max_bytes=1 << 20)
    for seq in range(1, 1001):
        window.add([ev(seq, "a", "b", body)])
        assert window.bytes <= 1 << 20
    per = MESSAGE_COST + sys.getsizeof(body)
    assert len(window) == (1 << 20) // per
    assert window.bytes == len(window) * per
    # the floor rose with what was dropped: older polls go to the store
    assert window.floor_ts == ev(1000 - len(window), "a", "b").ts
    # a message larger than the whole budget is not kept at all
    tiny = RecentEvents(0.0, max_bytes=1000)
    tiny.add([ev(1, "a", "b", body)])
    assert len(tiny) == 0 and tiny.bytes == 0 and tiny.floor_ts == ev(1, "a", "b").ts


def test_large_bodies_stay_in_the_store() -> None:
    """A body over KEEP_BODY costs the window its place only; a poll whose answer
    holds one goes to the store (None), others are still answered from memory."""
    window = RecentEvents(0.0, max_bytes=1 << 20)
    large = "z" * 65536
    window.add([ev(seq, "a", "b", large) for seq in range(1, 1001)])
    assert len(window) == 1000 and window.bytes == 1000 * MESSAGE_COST
    window.add([ev(1001, "a", "c", "small")])
    assert window.fetch("c", "b", 0.0, 10) is None
    got = window.fetch("c", "c", 0.0, 10)
    assert got is not None and [(m.seq, m.msg) for m in got] == [(1001, "small")]


def test_accounted_bytes_cover_what_is_held() -> None:
    """MESSAGE_COST is not an underestimate: what the window allocates (bodies
    included, as the window is what keeps them alive) stays under its account."""
    events = [
        ev(seq, f"s{seq % 9}", f"r{seq % 13}", f"body number {seq}") for seq in range(1, 20001)
    ]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        window = RecentEvents(0.0, max_events=10**9, max_bytes=1 << 40)
        window.add(events)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    bodies = sum(sys.getsizeof(e.body) for e in events)
    assert grown + bodies <= window.bytes


def test_own_broadcasts_in_the_way_hand_the_poll_to_the_store() -> None:
    window = RecentEvents(0.0, max_skip=10)
    window.add([ev(seq, "loud", BROADCAST) for seq in range(1, 50)])
    window.add([ev(50, "other", "loud")])
    assert window.fetch("c", "loud", 0.0, 10) is None
    got = window.fetch("c", "loud", ev(45, "", "").ts, 10)  # few in the way: answered
    assert got is not None and [m.seq for m in got] == [50]
    assert [m.seq for m in window.fetch("c", "quiet", 0.0, 3) or []] == [1, 2, 3]


def test_drop_through_forgets_what_retention_removed() -> None:
    window = RecentEvents(0.0)
    window.add([ev(seq, "a", "b") for seq in range(1, 11)])
    window.drop_through(4)
    assert len(window) == 6 and window.floor_ts == ev(4, "a", "b").ts
    assert not window.covers(0.0)
    assert [m.seq for m in window.fetch("c", "b", window.floor_ts, 100) or []] == list(range(5, 11))


def test_messages_are_the_legacy_shape() -> None:
    e = Event(seq=3, ts=5.0, channel="c", from_="a", to="b", body="hi", thread="t", kind="agent",
              meta={"big": "x" * 1000})  # fmt: skip
    window = RecentEvents(0.0)
    window.add([e])
    assert window.fetch("c", "b", 0.0, 10) == [legacy_message(e)]


def test_dropped_messages_are_freed_at_once() -> None:
    """Spread over many recipients, every run drops its oldest now and then: what the
    window dropped must not stay referenced by its run (memory within the budget)."""
    budget = 1 << 20
    window = RecentEvents(0.0, max_events=10**9, max_bytes=budget)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for seq in range(1, 20_001):
            # a new body each time (as the hub's are), so a dropped one can be freed
            window.add([ev(seq, "a", f"r{seq % 100}", f"{seq:08d}" + "x" * 3000)])
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert window.bytes <= budget
    assert held < 2 * budget, f"{held / 2**20:.1f} MiB held for a {budget >> 20} MiB window"
