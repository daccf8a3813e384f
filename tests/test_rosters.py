"""Rosters, bridges, status, threads, pending inboxes, ``ok.online``, receipts and routing,
against a live hub process (real sockets, SQLite on disk); see docs/PROTOCOL.md,
"Rosters, bridges and threads".

Frames are checked as they are on the wire (raw JSON: a field equal to its default is
absent). "Does not arrive" is checked with a marker: a later event the connection does
receive, in order, so nothing is waited for with a fixed sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from wsbus import Client
from wsbus.hub import Hub, HubConfig
from wsbus.schema import Register
from wsbus.store import MemoryStore

from .helpers import HubProcess, RawClient, async_wait_for

_refs = itertools.count(1)


class Peer:
    """A raw JSON connection; a reader task records every frame the hub sends."""

    def __init__(self, url: str) -> None:
        self.raw = RawClient(url)
        self.welcome: dict[str, Any] = {}
        self.frames: list[dict[str, Any]] = []
        self._reader: asyncio.Task[None] | None = None

    async def open(self, hello: dict[str, Any]) -> Peer:
        self.welcome = await self.raw.open(hello)
        self._reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for data in self.raw.conn:  # type: ignore[attr-defined]
                self.frames.append(json.loads(data))

    def of(self, op: str, **match: Any) -> list[dict[str, Any]]:
        return [
            f for f in self.frames if f["op"] == op and all(f.get(k) == v for k, v in match.items())
        ]

    def events(self) -> list[dict[str, Any]]:
        return self.of("event")

    def seqs(self) -> list[int]:
        return [e["seq"] for e in self.events()]

    async def wait(self, op: str, timeout: float = 5.0, **match: Any) -> dict[str, Any]:
        """The first frame with this op (and these field values), once it arrived."""
        await async_wait_for(lambda: self.of(op, **match), timeout)
        return self.of(op, **match)[0]

    async def event(self, seq: int) -> dict[str, Any]:
        return await self.wait("event", seq=seq)

    async def ask(self, frame: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
        """Send a frame with a fresh ``ref``; returns the answer (or error) with that ref."""
        ref = f"q{next(_refs)}"
        await self.raw.send({**frame, "ref": ref})

        def answers() -> list[dict[str, Any]]:
            return [f for f in self.frames if f.get("ref") == ref and f["op"] != "event"]

        await async_wait_for(answers, timeout)
        (answer,) = answers()
        return answer

    async def send(self, to: str, body: str, **fields: Any) -> dict[str, Any]:
        """Send one event; returns its ``ok``."""
        ok = await self.ask({"op": "send", "to": to, "body": body, **fields})
        assert ok["op"] == "ok", ok
        return ok

    async def roster(self, **fields: Any) -> dict[str, Any]:
        answer = await self.ask({"op": "roster", **fields})
        assert answer["op"] == "roster_result", answer
        return answer

    async def register(self, channel: str, name: str, **fields: Any) -> dict[str, Any]:
        answer = await self.ask({"op": "register", "channel": channel, "name": name, **fields})
        assert answer["op"] == "registered", answer
        return answer

    async def close(self) -> None:
        await self.raw.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader


@pytest.fixture
async def connect(hub: HubProcess) -> AsyncIterator[Callable[..., Any]]:
    """``await connect(hello)``: an open :class:`Peer`, closed after the test."""
    opened: list[Peer] = []

    async def open_(hello: dict[str, Any]) -> Peer:
        peer = await Peer(hub.url).open(hello)
        opened.append(peer)
        return peer

    yield open_
    for peer in opened:
        with contextlib.suppress(Exception):
            await peer.close()


async def until(check: Callable[[], Awaitable[object]], timeout: float = 5.0) -> object:
    """Await ``check()`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        assert time.monotonic() < deadline, f"condition not met within {timeout}s"
        await asyncio.sleep(0.01)


def registered(roster: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Roster entries by name."""
    return {e["name"]: e for e in roster.get("registered", [])}


def connected(roster: dict[str, Any]) -> set[str]:
    return {m["name"] for m in roster["members"]}


# ------------------------------------------------------------------ 1. register


async def test_register_join_update_leave(connect: Callable[..., Any]) -> None:
    ops = await connect({"name": "ops", "channels": []})
    joined = await ops.register(
        "acme", "claude", session="claude", host="devbox", model="opus", role="lead"
    )
    assert (joined["channel"], joined["name"], joined["existed"]) == ("acme", "claude", False)
    assert "left" not in joined
    (entry,) = joined["members"]
    assert entry["channel"] == "acme" and entry["name"] == "claude"
    assert (entry["session"], entry["host"], entry["model"], entry["role"]) == (
        "claude",
        "devbox",
        "opus",
        "lead",
    )
    assert entry["joined"] == entry["last_active"]

    # the same member again: an update that keeps what it does not say
    updated = await ops.register(
        "acme", "claude", session="claude", host="devbox", model="opus-2", enter_delay=1.5
    )
    assert (updated["name"], updated["existed"]) == ("claude", True)
    (entry2,) = updated["members"]
    assert (entry2["model"], entry2["role"], entry2["enter_delay"]) == ("opus-2", "lead", 1.5)
    assert entry2["joined"] == entry["joined"] and entry2["last_active"] >= entry["last_active"]

    both = await ops.register("acme", "codex", session="codex", host="devbox")
    assert [e["name"] for e in both["members"]] == ["claude", "codex"]
    other = await ops.register("other", "gemini")
    assert [e["name"] for e in other["members"]] == ["gemini"]  # only that channel's roster

    left = await ops.register("acme", "claude", leave=True)
    assert (left["name"], left["left"], left["existed"]) == ("claude", True, True)
    assert [e["name"] for e in left["members"]] == ["codex"]
    assert set(registered(await ops.roster(channel="acme"))) == {"codex"}

    for channel, name in [("acme", "claude"), ("other", "codex"), ("acme", "nobody")]:
        err = await ops.ask({"op": "register", "channel": channel, "name": name, "leave": True})
        assert (err["op"], err["code"]) == ("error", "unknown_member"), err
    assert set(registered(await ops.roster(channel="acme"))) == {"codex"}


async def test_register_names_by_host_and_session(connect: Callable[..., Any]) -> None:
    ops = await connect({"name": "ops", "channels": []})

    async def name_for(session: str, host: str = "devbox", channel: str = "acme") -> str:
        answer = await ops.register(channel, "claude", session=session, host=host)
        return str(answer["name"])

    assert await name_for("s1") == "claude"
    assert await name_for("s2") == "claude-2"  # the name is held by another session
    assert await name_for("s3") == "claude-3"
    assert await name_for("s1") == "claude"  # the same host and session keep their name
    assert await name_for("s2") == "claude-2"
    assert await name_for("s1", host="laptop") == "claude-4"  # another host's s1
    assert await name_for("s2", channel="other") == "claude"  # rosters are per channel
    roster = await ops.roster(channel="acme")
    sessions = {n: (e["session"], e["host"]) for n, e in registered(roster).items()}
    assert sessions == {
        "claude": ("s1", "devbox"),
        "claude-2": ("s2", "devbox"),
        "claude-3": ("s3", "devbox"),
        "claude-4": ("s1", "laptop"),
    }


async def test_register_long_name_held_by_another_session(connect: Callable[..., Any]) -> None:
    """A name at the length limit still gets a distinct valid name, never another's."""
    ops = await connect({"name": "ops", "channels": []})
    base = "a" * 60 + "bcde"  # 64 characters, the longest valid name
    given = [
        (await ops.register("acme", base, session=f"s{i}", host="h"))["name"] for i in range(4)
    ]
    assert len(set(given)) == 4, given
    assert all(len(n) <= 64 for n in given)
    assert given[0] == base
    roster = registered(await ops.roster(channel="acme"))
    assert {n: e["session"] for n, e in roster.items()} == {n: f"s{i}" for i, n in enumerate(given)}


async def test_roster_survives_a_hub_restart(hub: HubProcess) -> None:
    async with contextlib.AsyncExitStack() as stack:
        ops = await Peer(hub.url).open({"name": "ops", "channels": []})
        stack.push_async_callback(ops.close)
        await ops.register("acme", "claude", session="s1", host="devbox", model="m", role="r")
        await ops.register("acme", "codex", session="s2", host="devbox", enter_delay=2.0)
        await ops.register("acme", "gone", session="s3", host="devbox")
        await ops.register("other", "gemini", session="s4", host="laptop")
        await ops.register("acme", "gone", leave=True)
        before = registered(await ops.roster(channel="acme"))
    hub.restart()  # SIGKILL: registrations were durable when answered
    ops = await Peer(hub.url).open({"name": "ops", "channels": []})
    try:
        after = registered(await ops.roster(channel="acme"))
        assert after == before and set(after) == {"claude", "codex"}
        assert (after["claude"]["model"], after["codex"]["enter_delay"]) == ("m", 2.0)
        everyone = await ops.roster(all=True)
        assert [(e["channel"], e["name"]) for e in everyone["registered"]] == [
            ("acme", "claude"),
            ("acme", "codex"),
            ("other", "gemini"),
        ]
        # names are still given by host and session after the restart
        assert (await ops.register("acme", "claude", session="s1", host="devbox"))["name"] == (
            "claude"
        )
        assert (await ops.register("acme", "claude", session="s9", host="devbox"))["name"] == (
            "claude-2"
        )
    finally:
        await ops.close()


async def test_register_is_answered_with_its_ref_and_checked(connect: Callable[..., Any]) -> None:
    ops = await connect({"name": "ops", "channels": []})
    bad = await ops.ask({"op": "register", "channel": "acme", "name": "../etc"})
    assert (bad["op"], bad["code"]) == ("error", "invalid_frame")
    assert (await ops.roster(all=True)).get("registered", []) == []


# ------------------------------------------------------------------ 2. roster


async def test_roster_connected_and_registered(connect: Callable[..., Any]) -> None:
    ops = await connect({"name": "ops", "channels": ["acme"]})
    await ops.register("acme", "claude", session="claude", host="devbox")
    await ops.register("acme", "codex", session="codex", host="devbox")
    await ops.register("other", "gemini", session="gemini", host="devbox")
    claude = await connect(
        {"name": "claude", "channels": ["acme"], "model": "opus", "host": "devbox"}
    )
    await connect({"name": "bob", "channels": ["acme"]})
    roster = await ops.roster(channel="acme")
    assert roster["channel"] == "acme"
    assert connected(roster) == {"ops", "claude", "bob"}
    member = next(m for m in roster["members"] if m["name"] == "claude")
    assert (member["connections"], member["model"], member["host"]) == (1, "opus", "devbox")
    entries = registered(roster)
    assert set(entries) == {"claude", "codex"}  # bob is connected, not registered
    assert entries["claude"]["connected"] is True
    assert "connected" not in entries["codex"]  # false: omitted on the wire
    assert all("state" not in e for e in entries.values())  # no bridge serves them
    assert list(registered(await ops.roster())) == ["claude", "codex"]  # its only channel

    everyone = await ops.roster(all=True)
    assert (everyone["channel"], everyone["members"]) == ("*", [])
    assert [(e["channel"], e["name"]) for e in everyone["registered"]] == [
        ("acme", "claude"),
        ("acme", "codex"),
        ("other", "gemini"),
    ]

    await claude.close()
    await ops.wait("presence", name="claude", state="down")
    roster = await ops.roster(channel="acme")
    assert "connected" not in registered(roster)["claude"]
    assert connected(roster) == {"ops", "bob"}


# ------------------------------------------------------------------ 3. bridge claims


async def test_second_bridge_is_refused_a_claimed_name(connect: Callable[..., Any]) -> None:
    watch = await connect({"name": "watch", "channels": ["acme"]})
    first = await connect(
        {
            "kind": "bridge",
            "names": ["claude", "codex"],
            "channels": ["acme", "backend"],
            "host": "box1",
        }
    )
    assert first.welcome["names"] == ["claude", "codex"]
    assert "refused" not in first.welcome
    second = await connect(
        {"kind": "bridge", "names": ["codex", "gemini"], "channels": ["acme"], "host": "box2"}
    )
    assert (second.welcome["names"], second.welcome["refused"]) == (["gemini"], ["codex"])
    error = await second.wait("error", code="name_claimed")
    assert "codex" in error["message"]
    assert len(second.of("error")) == 1  # gemini was granted
    assert first.of("error") == []

    # codex's events go to the first bridge only; the second may not speak for it
    ok_codex = await watch.send("codex", "for codex")
    ok_gemini = await watch.send("gemini", "for gemini")
    await first.event(ok_codex["seq"])
    await second.event(ok_gemini["seq"])
    assert second.seqs() == [ok_gemini["seq"]]
    refused = await second.ask({"op": "send", "to": "watch", "body": "x", "from": "codex"})
    assert (refused["op"], refused["code"]) == ("error", "not_your_name")

    # a claim holds in each of the bridge's channels; another channel is another claim
    backend = await connect({"kind": "bridge", "names": ["claude"], "channels": ["backend"]})
    assert (backend.welcome["names"], backend.welcome["refused"]) == ([], ["claude"])
    await backend.wait("error", code="name_claimed")
    elsewhere = await connect({"kind": "bridge", "names": ["codex"], "channels": ["other"]})
    assert elsewhere.welcome["names"] == ["codex"] and "refused" not in elsewhere.welcome
    # the first bridge leaves: codex can be claimed again
    await first.close()
    await watch.wait("presence", name="codex", state="down")
    third = await connect({"kind": "bridge", "names": ["codex"], "channels": ["acme"]})
    assert third.welcome["names"] == ["codex"] and "refused" not in third.welcome
    ok = await watch.send("codex", "for the new bridge")
    await third.event(ok["seq"])
    assert third.of("error") == []


async def test_agents_do_not_claim_names(connect: Callable[..., Any]) -> None:
    """Only bridges claim: listeners for a name never refuse (or are refused by) a bridge."""
    listener = await connect({"name": "codex", "channels": ["acme"]})
    bridge = await connect({"kind": "bridge", "names": ["codex"], "channels": ["acme"]})
    assert bridge.welcome["names"] == ["codex"] and "refused" not in bridge.welcome
    listener2 = await connect({"name": "codex", "channels": ["acme"]})
    ok = await listener.send("codex", "to every subscriber of codex")
    for peer in (listener, bridge, listener2):
        await peer.event(ok["seq"])


async def test_a_bridge_cannot_subscribe_around_a_claim(connect: Callable[..., Any]) -> None:
    holder = await connect({"kind": "bridge", "names": ["codex"], "channels": ["acme"]})
    other = await connect({"kind": "bridge", "names": ["codex"], "channels": ["other"]})
    assert other.welcome["names"] == ["codex"]
    answer = await other.ask({"op": "subscribe", "channels": ["acme"]})
    assert (answer["op"], answer["code"]) == ("error", "name_claimed")
    watch = await connect({"name": "watch", "channels": ["acme"]})
    ok = await watch.send("codex", "for codex on acme", channel="acme")
    await holder.event(ok["seq"])
    assert ok["seq"] not in other.seqs()  # never delivered twice
    # a free channel can be added, and it is claimed from then on
    await other.raw.send({"op": "subscribe", "channels": ["backend"]})
    await other.wait("subscribed")
    third = await connect({"kind": "bridge", "names": ["codex"], "channels": ["backend"]})
    assert third.welcome["refused"] == ["codex"]


async def test_roster_state_comes_from_the_bridge_serving_that_channel(
    connect: Callable[..., Any],
) -> None:
    ops = await connect({"name": "ops", "channels": []})
    await ops.register("acme", "claude", session="claude", host="a")
    await ops.register("zzz", "claude", session="claude", host="b")
    on_acme = await connect({"kind": "bridge", "names": ["claude"], "channels": ["acme"]})
    on_zzz = await connect({"kind": "bridge", "names": ["claude"], "channels": ["zzz"]})
    await on_acme.raw.send({"op": "status", "alive": {"claude": True}})
    await on_zzz.raw.send({"op": "status", "alive": {"claude": False}})
    assert registered(await on_acme.roster(channel="acme"))["claude"]["state"] == "up"
    assert registered(await on_zzz.roster(channel="zzz"))["claude"]["state"] == "down"


async def test_only_a_bridge_reports_status(connect: Callable[..., Any]) -> None:
    agent = await connect({"name": "claude", "channels": ["acme"]})
    await agent.register("acme", "claude", session="claude")
    answer = await agent.ask({"op": "status", "alive": {"claude": True}, "ref": "s"})
    assert (answer["op"], answer["code"]) == ("error", "invalid_frame")
    assert "state" not in registered(await agent.roster(channel="acme"))["claude"]


# ------------------------------------------------------------------ 4. status


async def test_bridge_status_sets_roster_state(connect: Callable[..., Any]) -> None:
    ops = await connect({"name": "ops", "channels": ["acme"]})
    for name in ("claude", "codex", "gemini"):
        await ops.register("acme", name, session=name, host="devbox")
    bridge = await connect({"kind": "bridge", "names": ["claude", "codex"], "channels": ["acme"]})
    entries = registered(await bridge.roster(channel="acme"))
    assert all("state" not in e for e in entries.values())  # no report yet
    assert entries["claude"]["connected"] is True

    # frames of one connection are handled in order: its roster follows its status
    await bridge.raw.send(
        {"op": "status", "alive": {"claude": True, "codex": False, "gemini": True}}
    )
    entries = registered(await bridge.roster(channel="acme"))
    states = {n: e.get("state") for n, e in entries.items()}
    assert states == {"claude": "up", "codex": "down", "gemini": None}  # gemini is not its name
    assert bridge.of("error") == []

    await bridge.raw.send({"op": "status", "alive": {"claude": False}})
    entries = registered(await bridge.roster(channel="acme"))
    assert (entries["claude"]["state"], entries["codex"]["state"]) == ("down", "down")

    # a bridge refused claude cannot report on it
    rival = await connect({"kind": "bridge", "names": ["claude"], "channels": ["acme"]})
    assert rival.welcome["refused"] == ["claude"]
    await rival.raw.send({"op": "status", "alive": {"claude": True}})
    assert registered(await rival.roster(channel="acme"))["claude"]["state"] == "down"
    await rival.close()

    # the bridge goes: so does the state
    await bridge.close()
    await ops.wait("presence", name="claude", state="down")
    entries = registered(await ops.roster(channel="acme"))
    assert all("state" not in e and "connected" not in e for e in entries.values())


async def test_status_through_the_client(hub: HubProcess) -> None:
    async with Client(hub.url, "ops", channels=()) as ops:
        await ops.register("acme", "claude", session="claude")
        async with Client(hub.url, names=["claude"], channels=["acme"], kind="bridge") as bridge:
            await bridge.status({"claude": True})

            async def state() -> str | None:
                return (await ops.roster("acme")).registered[0].state

            # the report comes on another connection: poll until the hub handled it
            await until(lambda: _equals(state(), "up"))
            await bridge.status({"claude": False})
            await until(lambda: _equals(state(), "down"))
        await until(lambda: _equals(state(), None))  # the bridge is gone: no state


async def _equals(value: Awaitable[object], expected: object) -> bool:
    return await value == expected


# ------------------------------------------------------------------ 5. threads


async def test_threads_listing(connect: Callable[..., Any]) -> None:
    alice = await connect({"name": "alice", "channels": []})
    t = "hermes/pmxt-execution"
    e1 = await alice.send("*", "1", channel="acme", thread="ci")
    e2 = await alice.send("bob", "2", channel="acme", thread=t)
    e3 = await alice.send("*", "3", channel="other", thread="ci")
    e4 = await alice.send("*", "4", channel="acme", thread=t)
    await alice.send("*", "no thread", channel="acme")
    await alice.send("*", "5", channel="acme", thread="a.b/c_d/e-f.g")

    async def threads(**fields: Any) -> list[tuple[str, str, int, float, float]]:
        answer = await alice.ask({"op": "threads", **fields})
        assert answer["op"] == "threads_result", answer
        return [
            (x["channel"], x["thread"], x["entries"], x["first_ts"], x["last_ts"])
            for x in answer["threads"]
        ]

    acme = await threads(channel="acme")
    assert [x[:3] for x in acme] == [
        ("acme", "a.b/c_d/e-f.g", 1),
        ("acme", t, 2),
        ("acme", "ci", 1),
    ]
    assert acme[1][3:] == (e2["ts"], e4["ts"]) and acme[2][3:] == (e1["ts"], e1["ts"])
    everywhere = await threads()
    assert [x[:2] for x in everywhere] == [
        ("acme", "a.b/c_d/e-f.g"),
        ("acme", t),
        ("other", "ci"),
        ("acme", "ci"),
    ]
    assert everywhere[2][3:] == (e3["ts"], e3["ts"])
    assert await threads(channel="empty") == []
    page = await alice.ask({"op": "history", "thread": t, "channel": "acme", "limit": 10})
    assert [e["seq"] for e in page["events"]] == [e2["seq"], e4["seq"]]


@pytest.mark.parametrize(
    "thread",
    ["..", "../etc", "a/../b", "a..b", "/abs", "a/", "a//b", "./a", "a/.b", "a b", "a\\b",
     "x" * 129, ""],
)  # fmt: skip
async def test_bad_thread_names_are_refused(connect: Callable[..., Any], thread: str) -> None:
    alice = await connect({"name": "alice", "channels": []})
    err = await alice.ask({"op": "send", "to": "*", "body": "x", "thread": thread})
    assert (err["op"], err["code"]) == ("error", "invalid_frame"), err
    err = await alice.ask({"op": "history", "thread": thread})
    assert (err["op"], err["code"]) == ("error", "invalid_frame"), err
    page = await alice.ask({"op": "history"})
    assert page["events"] == []  # nothing was stored


# ------------------------------------------------------------------ 6. history pending


async def test_history_pending_is_the_unread_inbox(connect: Callable[..., Any]) -> None:
    alice = await connect({"name": "alice", "channels": []})
    bob = await connect({"name": "bob", "channels": []})
    statuses = ["read", "submitted", "unsubmitted", "failed", "session_down", None]
    to_bob = [(await alice.send("bob", f"m{i}", channel="acme"))["seq"] for i in statuses]
    await alice.send("*", "a broadcast", channel="acme")
    await alice.send("carol", "not bob's", channel="acme")
    elsewhere = (await alice.send("bob", "other channel", channel="other"))["seq"]
    for seq, status in zip(to_bob, statuses, strict=True):
        if status is not None:
            await bob.raw.send({"op": "ack", "seq": seq, "status": status})
    # receipts are stored with the commit that precedes their push to the sender
    await async_wait_for(lambda: len(alice.of("receipt")) == 5, 5)

    async def pending(**fields: Any) -> list[int]:
        answer = await alice.ask({"op": "history", "pending": True, **fields})
        assert answer["op"] == "history_result", answer
        return [e["seq"] for e in answer["events"]]

    assert await pending(to="bob") == [to_bob[4], to_bob[5], elsewhere]
    assert await pending(to="bob", channel="acme") == [to_bob[4], to_bob[5]]
    assert await pending(to="carol") == [to_bob[5] + 2]
    assert await pending(to="nobody") == []
    plain = await alice.ask({"op": "history", "to": "bob", "channel": "acme"})
    assert [e["seq"] for e in plain["events"]] == to_bob
    for fields in ({}, {"to": "*"}, {"channel": "acme"}):
        err = await alice.ask({"op": "history", "pending": True, **fields})
        assert (err["op"], err["code"]) == ("error", "invalid_frame"), err


async def test_history_pending_through_the_client(hub: HubProcess) -> None:
    async with Client(hub.url, "alice", channels=()) as alice:
        first = await alice.send("bob", "one")
        second = await alice.send("bob", "two")
        async with Client(hub.url, "bob", channels=()) as bob:
            await bob.ack(first.seq, "read")

            async def inbox() -> list[int]:
                return [e.seq for e in (await bob.history(to="bob", pending=True)).events]

            assert await inbox() in ([first.seq, second.seq], [second.seq])
            await until(lambda: _equals(inbox(), [second.seq]))  # once the receipt commits


# ------------------------------------------------------------------ 7. hello.pending


async def test_pending_with_resume_replays_what_waited_then_the_rest(
    connect: Callable[..., Any],
) -> None:
    alice = await connect({"name": "alice", "channels": []})
    acker = await connect({"name": "bob", "channels": []})

    async def send(to: str, ack: str | None = None, channel: str = "default") -> int:
        seq = int((await alice.send(to, f"to {to}", channel=channel))["seq"])
        if ack is not None:
            await acker.raw.send({"op": "ack", "seq": seq, "status": ack})
        return seq

    e1 = await send("bob")
    await send("bob", ack="read")
    e3 = await send("*")
    e4 = await send("carol")
    e5 = await send("bob", ack="session_down")  # progress only: still pending
    await send("bob", channel="elsewhere")  # not on the bridge's channels
    e7 = await send("bob", ack="failed")
    resume = e7
    e8 = await send("bob")
    e9 = await send("*")
    e10 = await send("bob", ack="read")  # after resume: replayed although acknowledged
    await send("carol")
    await async_wait_for(lambda: len(alice.of("receipt")) == 4, 5)
    assert e3 < e4 < e5  # (e3, e4: before resume, not pending for bob)

    bridge = await connect(
        {"kind": "bridge", "names": ["bob"], "channels": ["default"], "resume": resume,
         "pending": True}
    )  # fmt: skip
    synced = await bridge.wait("synced")
    expected = [e1, e5, e8, e9, e10]
    assert bridge.seqs() == expected
    assert synced["seq"] >= e10

    live = await alice.send("bob", "live")
    await bridge.event(live["seq"])
    assert bridge.seqs() == [*expected, live["seq"]]  # once each, in seq order

    # control: resume without pending replays only what came after it
    plain = await connect({"name": "bob", "channels": ["default"], "resume": resume})
    await plain.wait("synced")
    assert plain.seqs() == [e8, e9, e10, live["seq"]]
    # and pending without resume: every pending event, nothing acknowledged
    fresh = await connect({"name": "bob", "channels": ["default"], "pending": True})
    await fresh.wait("synced")
    assert fresh.seqs() == [e1, e5, e8, live["seq"]]


async def test_pending_with_resume_for_several_names(connect: Callable[..., Any]) -> None:
    alice = await connect({"name": "alice", "channels": []})
    to_bob = (await alice.send("bob", "for bob"))["seq"]
    to_dave = (await alice.send("dave", "for dave"))["seq"]
    to_erin = (await alice.send("erin", "for erin"))["seq"]
    after = (await alice.send("dave", "after resume"))["seq"]
    bridge = await connect(
        {"kind": "bridge", "names": ["bob", "dave"], "resume": to_erin, "pending": True}
    )
    await bridge.wait("synced")
    assert bridge.seqs() == [to_bob, to_dave, after]


# ------------------------------------------------------------------ 9. ok.online


async def test_ok_online(connect: Callable[..., Any]) -> None:
    alice = await connect({"name": "alice", "channels": []})
    watch = await connect({"name": "watch", "channels": ["acme"], "watch": True})

    async def online(to: str = "bob") -> object:
        ok = await alice.send(to, "x", channel="acme")
        return ok.get("online", "absent")

    assert await online() is False  # nobody
    await connect({"name": "bob", "channels": ["other"]})
    await connect({"name": "bob", "channels": []})
    assert await online() is False  # bob is connected, but not on acme
    bob = await connect({"name": "bob", "channels": ["acme"]})
    assert await online() is True
    assert await online("*") == "absent"  # broadcasts: no online field
    await bob.close()
    await watch.wait("presence", name="bob", state="down")
    assert await online() is False
    bridge = await connect({"kind": "bridge", "names": ["carol", "bob"], "channels": ["acme"]})
    assert await online() is True  # a bridge serving bob counts
    assert bridge.welcome["names"] == ["carol", "bob"]


async def test_send_result_online_through_the_client(hub: HubProcess) -> None:
    async with Client(hub.url, "alice", channels=()) as alice:
        assert (await alice.send("bob", "x")).online is False
        async with Client(hub.url, "bob"):
            assert (await alice.send("bob", "x")).online is True
            assert (await alice.send("*", "x")).online is None


# ------------------------------------------------------------------ 10. receipts


async def test_receipts_reach_every_connection_of_the_sender(connect: Callable[..., Any]) -> None:
    sender = await connect({"name": "alice", "channels": []})  # send-only
    listener = await connect({"name": "alice", "channels": ["other"]})
    bystander = await connect({"name": "carol", "channels": ["acme"]})
    bob = await connect({"name": "bob", "channels": ["acme"]})
    ok = await sender.send("bob", "please read", channel="acme")
    await bob.event(ok["seq"])
    await bob.raw.send({"op": "ack", "seq": ok["seq"], "status": "read"})
    for peer in (sender, listener):
        receipt = await peer.wait("receipt")
        assert (receipt["seq"], receipt["channel"], receipt["by"], receipt["status"]) == (
            ok["seq"],
            "acme",
            "bob",
            "read",
        )
    marker = await sender.send("*", "marker", channel="acme")
    await bystander.event(marker["seq"])
    assert bystander.of("receipt") == [] and bob.of("receipt") == []


async def test_send_only_client_waits_for_its_receipt(hub: HubProcess) -> None:
    async with Client(hub.url, "alice", channels=()) as alice, Client(hub.url, "bob") as bob:
        ok = await alice.send("bob", "hi")
        await bob.ack(ok.seq, "submitted")

        async def first_receipt() -> Any:
            async for item in alice:
                return item
            return None

        receipt = await asyncio.wait_for(first_receipt(), 5)
        assert (receipt.seq, receipt.by, receipt.status) == (ok.seq, "bob", "submitted")


# ------------------------------------------------------------------ 11. routing


async def test_broadcast_of_one_name_reaches_a_bridge_for_others(
    connect: Callable[..., Any],
) -> None:
    alice = await connect({"name": "alice", "channels": ["acme"]})
    bridge = await connect({"kind": "bridge", "names": ["alice", "bob"], "channels": ["acme"]})
    carol = await connect({"name": "carol", "channels": ["acme"]})
    ok = await alice.send("*", "from alice to all", channel="acme")
    await bridge.event(ok["seq"])  # it delivers to bob
    await carol.event(ok["seq"])
    marker = await carol.send("alice", "marker", channel="acme")
    await alice.event(marker["seq"])
    assert alice.seqs() == [marker["seq"]]  # alice's own broadcast did not come back
    # the bridge's broadcast as bob reaches alice's own connection
    ok2 = await bridge.send("*", "from bob", channel="acme", **{"from": "bob"})
    await alice.event(ok2["seq"])

    # the replay agrees with live routing
    again = await connect(
        {"kind": "bridge", "names": ["alice", "bob"], "channels": ["acme"], "resume": 0}
    )
    alone = await connect({"name": "alice", "channels": ["acme"], "resume": 0})
    await again.wait("synced")
    await alone.wait("synced")
    assert ok["seq"] in again.seqs() and ok["seq"] not in alone.seqs()


# ------------------------------------------------------------------ the hub core


async def test_core_register_long_names_never_overwrite_a_member() -> None:
    hub = Hub(MemoryStore(), HubConfig(prune_interval=0))
    await hub.start()
    base = "b" * 64
    given = []
    for i in range(5):
        answer = await hub.register(
            None,  # type: ignore[arg-type]
            Register(ref="g", channel="c", name=base, session=f"s{i}", host="h"),
        )
        given.append(answer.name)
    assert len(set(given)) == 5 and all(len(n) <= 64 for n in given)
    assert {(m.name, m.session) for m in hub.rosters.members.values()} == {
        (n, f"s{i}") for i, n in enumerate(given)
    }
    await hub.stop()


async def test_a_bridge_from_the_same_host_takes_over(connect: Callable[..., Any]) -> None:
    """A reconnect that outruns the hub noticing the old connection's drop (or a second
    bridge started on the same host) takes the names over; the old one is closed (4009)."""
    old = await connect({"kind": "bridge", "names": ["codex"], "channels": ["acme"], "host": "box"})
    new = await connect({"kind": "bridge", "names": ["codex"], "channels": ["acme"], "host": "box"})
    assert new.welcome["names"] == ["codex"] and "refused" not in new.welcome
    conn: Any = old.raw.conn
    await async_wait_for(lambda: conn.close_code == 4009, 5)
    watch = await connect({"name": "watch", "channels": ["acme"]})
    ok = await watch.send("codex", "to the new bridge", channel="acme")
    await new.event(ok["seq"])
