"""What a token learns about events it may not read: nothing. Acks, threads and
receipts on a hub with ``--auth``, tokens made by ``wsbus token create``."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from .helpers import HubProcess, RawClient
from .test_auth import wsbus
from .test_security import bearer, http


class AuthHub:
    """An ``--auth`` hub and its tokens; connections as :class:`RawClient`."""

    def __init__(self, process: HubProcess, tokens: dict[str, str]) -> None:
        self.process = process
        self.tokens = tokens
        self.clients: list[RawClient] = []

    async def connect(self, token: str, **hello: Any) -> RawClient:
        auth = {"Authorization": f"Bearer {self.tokens[token]}"}
        client = RawClient(self.process.url, additional_headers=auth)
        self.clients.append(client)
        await client.open(hello)
        return client

    def receipts(self, seq: int) -> list[tuple[str, str]]:
        """(channel, name) of the receipts stored for ``seq``, read from the database."""
        with sqlite3.connect(f"file:{self.process.db}?mode=ro", uri=True) as db:
            rows = db.execute("SELECT channel, name FROM receipts WHERE seq = ?", (seq,))
            return list(rows.fetchall())


@pytest.fixture
async def bus(hub_factory: Callable[..., HubProcess], env: dict[str, str], tmp_path: Path) -> Any:
    auth = tmp_path / "tokens.json"
    made = {}
    for key, *args in (
        ("alice", "alice"),
        ("alice-alpha", "alice", "-c", "alpha"),  # a second token for alice, one channel
        ("bob", "bob"),
        ("carol-alpha", "carol", "-c", "alpha"),
        ("mallory", "mallory"),
        ("admin", "root", "--role", "admin"),
    ):
        r = wsbus(env, "token", "create", *args, "--auth", str(auth))
        assert r.returncode == 0, r.stderr
        made[key] = r.stdout.strip()
    h = AuthHub(hub_factory("--auth", str(auth)), made)
    yield h
    for client in h.clients:
        await client.close()


async def send(client: RawClient, ref: str, to: str, channel: str, **more: Any) -> int:
    await client.send({"op": "send", "ref": ref, "to": to, "body": ref, "channel": channel, **more})
    ok = await client.recv_op("ok")
    assert ok["ref"] == ref, ok
    return int(ok["seq"])  # type: ignore[call-overload]


async def refused_ack(client: RawClient, seq: int, **more: Any) -> dict[str, Any]:
    await client.send({"op": "ack", "seq": seq, "status": "read", **more})
    return await client.recv_op("error")


async def test_a_channel_restricted_token_acks_only_in_its_channels(bus: AuthHub) -> None:
    alice = await bus.connect("alice", channels=["alpha", "beta"])
    carol = await bus.connect("carol-alpha", channels=["alpha"])
    news = await send(alice, "beta-news", "*", "beta")
    direct = await send(alice, "beta-direct", "carol", "beta")
    mine = await send(alice, "alpha-news", "*", "alpha")

    # a broadcast and a direct event in beta: refused as if they did not exist
    seqs = (news, direct, 10**6)
    answers = [await refused_ack(carol, seq) for seq in seqs]
    assert [a["code"] for a in answers] == ["unknown_event"] * 3, answers
    texts = {a["message"].replace(str(s), "N") for a, s in zip(answers, seqs, strict=True)}
    assert len(texts) == 1 and "beta" not in texts.pop(), answers

    # carol's own channel still works; the first receipt alice gets is that one
    await carol.send({"op": "ack", "seq": mine, "status": "read"})
    receipt = await alice.recv_op("receipt")
    assert (receipt["seq"], receipt["by"], receipt["channel"]) == (mine, "carol", "alpha")
    assert bus.receipts(news) == [] and bus.receipts(direct) == []
    assert bus.receipts(mine) == [("alpha", "carol")]


async def test_ack_says_nothing_about_other_peoples_events(bus: AuthHub) -> None:
    alice = await bus.connect("alice", channels=["default"])
    bob = await bus.connect("bob", channels=["default"])
    mallory = await bus.connect("mallory", channels=["default"])
    seq = await send(alice, "for-bob", "bob", "default")
    answers = [await refused_ack(mallory, s) for s in (seq, 10**6)]
    assert [a["code"] for a in answers] == ["unknown_event"] * 2, answers
    assert answers[0]["message"].replace(str(seq), "N") == answers[1]["message"].replace(
        str(10**6), "N"
    )
    assert "bob" not in answers[0]["message"] and "alice" not in answers[0]["message"]
    # a name the connection does not have: about the connection, not the event
    assert (await refused_ack(mallory, seq, name="bob"))["code"] == "not_your_name"
    # bob may: alice's first receipt is bob's
    await bob.send({"op": "ack", "seq": seq, "status": "read"})
    receipt = await alice.recv_op("receipt")
    assert (receipt["seq"], receipt["by"]) == (seq, "bob")
    assert bus.receipts(seq) == [("default", "bob")]


async def test_threads_count_only_what_the_token_may_read(bus: AuthHub) -> None:
    alice = await bus.connect("alice", channels=["default"])
    await send(alice, "p1", "bob", "default", thread="plan")
    await send(alice, "p2", "*", "default", thread="plan")
    await send(alice, "s1", "bob", "default", thread="secret")
    await send(alice, "o1", "*", "alpha", thread="alpha-only")

    async def threads(token: str) -> list[tuple[str, str, int]]:
        client = await bus.connect(token, channels=[])
        await client.send({"op": "threads", "ref": "t"})
        answer = await client.recv_op("threads_result")
        return sorted((t["channel"], t["thread"], t["entries"]) for t in answer["threads"])

    everything = [("alpha", "alpha-only", 1), ("default", "plan", 2), ("default", "secret", 1)]
    assert await threads("admin") == everything
    assert await threads("bob") == everything
    # mallory: the broadcast only; no thread made of alice and bob's direct messages
    assert await threads("mallory") == [("alpha", "alpha-only", 1), ("default", "plan", 1)]
    assert await threads("carol-alpha") == [("alpha", "alpha-only", 1)]


async def test_receipts_go_only_to_connections_that_may_use_the_channel(bus: AuthHub) -> None:
    # alice's channel-alpha token must not learn of her events in beta through receipts
    alice = await bus.connect("alice", channels=["alpha", "beta"])
    alice_alpha = await bus.connect("alice-alpha", channels=["alpha"])
    bob = await bus.connect("bob", channels=["alpha", "beta"])
    in_beta = await send(alice, "in-beta", "bob", "beta")
    in_alpha = await send(alice, "in-alpha", "bob", "alpha")
    for seq in (in_beta, in_alpha):
        await bob.send({"op": "ack", "seq": seq, "status": "read"})
    assert [(await alice.recv_op("receipt"))["seq"] for _ in range(2)] == [in_beta, in_alpha]
    receipt = await alice_alpha.recv_op("receipt")
    assert (receipt["seq"], receipt["channel"]) == (in_alpha, "alpha"), receipt


# Leaks found while checking: the loop-guard counts of a broadcast, and /inbox.


async def test_a_broadcast_does_not_tell_others_who_wrote_to_its_sender(bus: AuthHub) -> None:
    alice = await bus.connect("alice", channels=["default"])
    bob = await bus.connect("bob", channels=["default"])
    mallory = await bus.connect("mallory", channels=["default"])
    await send(bob, "to-alice", "alice", "default")  # bob and alice: a direct exchange
    seq = await send(alice, "news", "*", "default")
    event = await mallory.recv_op("event")
    assert event["seq"] == seq
    assert "bob" not in (event.get("loop") or {}), event  # mallory may not read bob's DMs
    mine = await bob.recv_op("event")
    assert mine["seq"] == seq and mine["loop"] == {"bob": 2}, mine  # bob learns his own


async def test_inbox_counts_only_what_the_token_may_read(bus: AuthHub) -> None:
    alice = await bus.connect("alice", channels=["default"])
    await send(alice, "to-bob", "bob", "default")
    status, inbox, _ = await asyncio.to_thread(
        http, f"{bus.process.http_url}/inbox", headers=bearer(bus.tokens["mallory"])
    )
    assert status == 200 and "bob" not in inbox["recipients"].get("default", {}), inbox
