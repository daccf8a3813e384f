"""Several hub processes on one bus on a real nats-server: one conversation, whichever
hub a client talks to (websocket or the legacy HTTP shim), and the design's invariants
across hubs (resume on another hub, an idempotent resend to another hub, the legacy
``now`` while alternating hubs)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from websockets.exceptions import ConnectionClosed

from wsbus import Client
from wsbus.errors import SendRefused
from wsbus.schema import Presence, Receipt

from .helpers import HubProcess, RawClient
from .natskit import NatsCluster, NatsServer
from .test_store_files import _hold_write_lock
from .tmuxkit import TMUX, Machine

pytestmark = pytest.mark.own_nats


@pytest.fixture
def two_hubs(
    hub_factory: Callable[..., HubProcess], nats: NatsServer, tmp_path: Path
) -> tuple[HubProcess, HubProcess]:
    engine = ["--engine", nats.url, "--bus", "team"]
    a = hub_factory(*engine, "--db", str(tmp_path / "a.db"))
    b = hub_factory(*engine, "--db", str(tmp_path / "b.db"))
    return a, b


async def recv(http: aiohttp.ClientSession, hub: HubProcess, to: str, since: float,
               block: bool = False) -> dict[str, Any]:  # fmt: skip
    query = f"/recv?to={to}&since={since!r}" + ("&block=true" if block else "")
    async with http.get(hub.http_url + query) as r:
        assert r.status == 200, await r.text()
        return await r.json()  # type: ignore[no-any-return]


async def test_a_websocket_agent_and_a_legacy_client_converse_through_two_hubs(
    two_hubs: tuple[HubProcess, HubProcess],
) -> None:
    a, b = two_hubs
    async with Client(a.url, "alice") as alice, aiohttp.ClientSession() as http:
        assert alice.hub_id is not None
        ok = await alice.send("bob", "hello from hub A", ref="a-1")
        # bob polls hub B's shim, the agent-bus way
        got = await recv(http, b, "bob", 0, block=True)
        assert [(m["seq"], m["msg"], m["from"]) for m in got["messages"]] == [
            (ok.seq, "hello from hub A", "alice")
        ]
        assert got["messages"][0]["ts"] == ok.ts  # the same ts on both hubs
        # and answers through B: alice, on A, receives it live
        reply = {"from": "bob", "to": "alice", "msg": "hi back"}
        async with http.post(b.http_url + "/send", json=reply) as r:
            assert r.status == 200, await r.text()
            answer = await r.json()
        ev = await asyncio.wait_for(anext(alice.events()), 10)
        assert (ev.seq, ev.from_, ev.body) == (answer["seq"], "bob", "hi back")
    async with Client(b.url, "carol") as carol:
        assert carol.hub_id == alice.hub_id  # one bus, one identity


async def test_a_client_resumes_on_the_other_hub_without_gap_or_duplicate(
    two_hubs: tuple[HubProcess, HubProcess],
) -> None:
    a, b = two_hubs
    seen: list[int] = []
    async with Client(a.url, "bob") as bob, Client(b.url, "alice") as alice:
        for i in range(5):
            await alice.send("bob", f"m{i}", ref=f"first-{i}")
        events = bob.events()
        async with asyncio.timeout(10):
            while len(seen) < 5:
                seen.append((await anext(events)).seq)
        cursor, hub_a = bob.last_seq, bob.hub_id
    async with Client(b.url, "alice") as alice:
        for i in range(5):
            await alice.send("bob", f"n{i}", ref=f"second-{i}")
    # bob comes back on hub B with the cursor hub A gave it
    async with Client(b.url, "bob", resume=cursor, hub_id=hub_a) as bob:
        events = bob.events()
        async with asyncio.timeout(10):
            while len(seen) < 10:
                seen.append((await anext(events)).seq)
        assert bob.welcome is not None and bob.welcome.recovered
    assert seen == sorted(seen) and len(set(seen)) == 10


async def test_a_resend_to_the_other_hub_is_stored_once(
    two_hubs: tuple[HubProcess, HubProcess],
) -> None:
    a, b = two_hubs
    async with Client(a.url, "alice") as on_a:
        first = await on_a.send("bob", "once", ref="idem-1")
    async with Client(b.url, "alice") as on_b:
        again = await on_b.send("bob", "once", ref="idem-1")
        history = await on_b.history(limit=100)
    assert (again.seq, again.ts, again.duplicate) == (first.seq, first.ts, True)
    assert [e.body for e in history.events] == ["once"]


async def test_the_legacy_now_never_skips_an_event_while_alternating_hubs(
    two_hubs: tuple[HubProcess, HubProcess],
) -> None:
    a, b = two_hubs
    total = 120
    sent: list[int] = []

    async def senders() -> None:
        async with Client(a.url, "s1") as s1, Client(b.url, "s2") as s2:
            for i in range(total // 2):
                for c in (s1, s2):
                    sent.append((await c.send("bob", f"{c.name}-{i}", ref=f"{c.name}-{i}")).seq)

    got: list[int] = []
    task = asyncio.create_task(senders())
    async with aiohttp.ClientSession() as http:
        since, turn = 0.0, 0
        async with asyncio.timeout(60):
            while len(got) < total:
                hub = (a, b)[turn % 2]  # every poll on the other hub
                turn += 1
                data = await recv(http, hub, "bob", since)
                got += [m["seq"] for m in data["messages"]]
                since = data["now"]
                if not data["messages"]:
                    await asyncio.sleep(0.01)
    await task
    assert sorted(got) == sorted(sent) and len(got) == len(set(got)) == total


def test_serve_refuses_memory_and_an_unreachable_engine_with_one_line(tmp_path: Path) -> None:
    def serve(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "wsbus", "serve", "--port", "0", "--no-http", *args],
            capture_output=True, text=True, timeout=60,
            env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
        )  # fmt: skip

    memory = serve("--engine", "nats://127.0.0.1:1", "--memory")
    assert memory.returncode == 2 and "--memory" in memory.stderr
    assert len(memory.stderr.strip().splitlines()) == 1
    gone = serve("--engine", "nats://127.0.0.1:1", "--db", str(tmp_path / "i.db"))
    assert gone.returncode != 0 and "cannot reach NATS at nats://127.0.0.1:1" in gone.stderr
    assert len(gone.stderr.strip().splitlines()) == 1, gone.stderr
    bad = serve("--engine", "http://127.0.0.1:4222")
    assert bad.returncode == 2 and "nats://" in bad.stderr
    bus = serve("--engine", "nats://127.0.0.1:1", "--bus", "a.b")
    assert bus.returncode == 2 and "--bus 'a.b'" in bus.stderr


async def test_a_hub_started_later_rebuilds_its_index_and_serves_the_same_history(
    two_hubs: tuple[HubProcess, HubProcess],
    hub_factory: Callable[..., HubProcess],
    nats: NatsServer,
    tmp_path: Path,
) -> None:
    a, _ = two_hubs
    async with Client(a.url, "alice") as alice:
        for i in range(30):
            await alice.send("bob", f"m{i}", ref=f"r{i}", thread="t.1" if i % 2 else None)
        on_a = await alice.history(limit=100)
    c = hub_factory("--engine", nats.url, "--bus", "team", "--db", str(tmp_path / "c.db"))
    async with Client(c.url, "alice") as alice:
        on_c = await alice.history(limit=100)
        threads = await alice.threads()
    assert [(e.seq, e.ts, e.body) for e in on_c.events] == [
        (e.seq, e.ts, e.body) for e in on_a.events
    ]
    assert [t.thread for t in threads.threads] == ["t.1"]


async def test_a_cursor_from_a_hub_ahead_is_good_on_a_hub_behind(
    two_hubs: tuple[HubProcess, HubProcess], tmp_path: Path
) -> None:
    """Hub B's index lags (another process holds its write lock): a client resuming
    there with hub A's cursor is not truncated and gets nothing twice; a legacy client
    with A's ``now`` is not sent back."""
    a, b = two_hubs
    async with Client(a.url, "alice") as alice:
        async with Client(a.url, "bob") as bob:
            holder = _hold_write_lock(tmp_path / "b.db", 30)
            try:
                oks = [await alice.send("bob", f"m{i}", ref=f"r{i}") for i in range(5)]
                events = bob.events()
                async with asyncio.timeout(10):
                    seen = [(await anext(events)).seq for _ in oks]
                cursor, bus = bob.last_seq, bob.hub_id
            except BaseException:
                holder.kill()
                raise
        try:
            states: list[str] = []
            again = Client(b.url, "bob", resume=cursor, hub_id=bus,
                           on_state=lambda state, _: states.append(state))  # fmt: skip
            welcome = await again.connect()
            assert welcome.recovered and welcome.seq < seen[-1]  # B is behind
            async with aiohttp.ClientSession() as http:
                legacy = await recv(http, b, "bob", oks[-1].ts)
            assert legacy["messages"] == [] and legacy["now"] >= oks[-1].ts
        finally:
            holder.kill()
            holder.wait(10)
        after = await alice.send("bob", "after", ref="r-after")
        events = again.events()
        async with asyncio.timeout(15):
            ev = await anext(events)
        assert (ev.seq, ev.body) == (after.seq, "after")  # not m0…m4 again
        assert "truncated" not in states
        await again.close()


async def test_a_listener_fails_over_when_its_hub_is_killed(
    two_hubs: tuple[HubProcess, HubProcess],
) -> None:
    """Hub A is SIGKILLed while a sender on hub B publishes 5,000 events: the listener
    (given both URLs) goes on from B and gets every event once, in order."""
    a, b = two_hubs
    total, sent, got = 5000, [], []

    async def publish() -> None:
        async with Client(b.url, "alice") as alice:
            window = asyncio.Semaphore(64)

            async def one(i: int) -> None:
                async with window:
                    sent.append((await alice.send("bob", f"m{i}", ref=f"m{i}")).seq)

            await asyncio.gather(*(one(i) for i in range(total)))

    async with Client([a.url, b.url], "bob", backoff_min=0.05, backoff_max=0.5) as bob:
        assert bob.url == a.url
        task = asyncio.create_task(publish())
        events = bob.events()
        async with asyncio.timeout(120):
            while len(got) < total:
                got.append((await anext(events)).seq)
                if len(got) == 500:
                    a.kill()  # SIGKILL: no goodbye to its clients
        await task
        assert bob.url == b.url
    assert got == sorted(sent)  # every event once, in order


def test_send_takes_the_next_hub_when_the_first_is_down(
    two_hubs: tuple[HubProcess, HubProcess], env: dict[str, str]
) -> None:
    a, b = two_hubs
    a.kill()
    urls = f"{a.url},{b.url}"
    r = subprocess.run(
        [sys.executable, "-m", "wsbus", "send", "--url", urls, "--as", "alice", "bob", "hi"],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("sent #")


async def test_a_three_node_cluster_loses_the_stream_leader_mid_stream(
    hub_factory: Callable[..., HubProcess], tmp_path: Path
) -> None:
    """Two hubs on a 3-node NATS cluster, the stream kept in 3 replicas: the node that
    leads the stream is killed mid-stream, then restarted. The bus keeps taking and
    delivering sends; nothing acknowledged is lost or doubled."""
    import nats

    cluster = NatsCluster(tmp_path / "cluster").start()
    try:
        await cluster.ready()
        engine = ["--engine", ",".join(cluster.urls), "--bus", "ha", "--replicas", "3"]
        a = hub_factory(*engine, "--db", str(tmp_path / "a.db"))
        b = hub_factory(*engine, "--db", str(tmp_path / "b.db"))
        total, sent, got = 1500, [], []
        nc = await nats.connect(servers=cluster.urls)
        leader = (await nc.jetstream().stream_info("WSBUS_ha")).cluster.leader
        await nc.close()
        killed = cluster.node(leader)

        async def publish() -> None:
            async with Client(a.url, "alice") as alice:
                window = asyncio.Semaphore(32)

                async def one(i: int) -> None:
                    async with window:
                        ok = await alice.send("bob", f"m{i}", ref=f"m{i}", timeout=60)
                        sent.append(ok.seq)
                        if len(sent) == 300:
                            killed.kill()  # the stream's leader, mid-stream
                        elif len(sent) == 900:
                            killed.start()  # back, catching up from the others

                await asyncio.gather(*(one(i) for i in range(total)))

        async with Client(b.url, "bob") as bob:
            task = asyncio.create_task(publish())
            events = bob.events()
            async with asyncio.timeout(150):
                while len(got) < total:
                    got.append((await anext(events)).seq)
            await task
        assert len(sent) == total
        assert got == sorted(sent)  # every acknowledged event once, in order, on hub B
        async with Client(a.url, "carol") as carol:
            history = await carol.history(limit=1)
            assert history.events[-1].seq == max(sent)
    finally:
        cluster.stop()


async def test_nats_stopped_refuses_sends_as_retryable_and_the_hub_recovers(
    two_hubs: tuple[HubProcess, HubProcess], nats: NatsServer
) -> None:
    a, b = two_hubs
    raw = RawClient(a.url)
    await raw.open({"name": "alice"})
    async with Client(b.url, "bob") as bob:
        await raw.send({"op": "send", "ref": "before", "to": "bob", "body": "before"})
        before = await raw.recv_op("ok")
        nats.stop()
        await raw.send({"op": "send", "ref": "during", "to": "bob", "body": "during"})
        refused = await raw.recv_op("error", timeout=15)
        assert refused["code"] == "store_failed" and refused["ref"] == "during"
        assert "retry" in str(refused["message"])
        async with aiohttp.ClientSession() as http, http.get(a.http_url + "/healthz") as r:
            assert r.status == 503 and "NATS is unreachable" in (await r.json())["error"]
        async with (  # the index still answers
            aiohttp.ClientSession() as http,
            http.get(b.http_url + "/recv?to=bob&since=0") as r,
        ):
            assert [m["msg"] for m in (await r.json())["messages"]] == ["before"]
        nats.start()  # same port and store: the hubs reconnect by themselves
        deadline = asyncio.get_running_loop().time() + 30
        while True:  # what a client does with store_failed: the same ref again
            await raw.send({"op": "send", "ref": "during", "to": "bob", "body": "during"})
            answer = await raw.recv(15)
            if answer["op"] == "ok":
                break
            assert answer["code"] == "store_failed"
            assert asyncio.get_running_loop().time() < deadline, answer
            await asyncio.sleep(0.2)
        events = bob.events()
        async with asyncio.timeout(15):
            got = [(await anext(events)).seq for _ in range(2)]
        assert got == [before["seq"], answer["seq"]]
    await raw.close()


async def test_a_receipt_taken_on_one_hub_reaches_the_sender_on_the_other(
    two_hubs: tuple[HubProcess, HubProcess],
) -> None:
    a, b = two_hubs
    async with Client(b.url, "alice") as alice, Client(a.url, "bob") as bob:
        ok = await alice.send("bob", "please read", ref="ask-1")
        event = await asyncio.wait_for(anext(bob.events()), 10)
        await bob.ack(event.seq, "read")
        async with asyncio.timeout(10):
            async for item in alice:
                if isinstance(item, Receipt):
                    break
        assert (item.seq, item.by, item.status) == (ok.seq, "bob", "read")
        pending = await alice.history(to="bob", pending=True, limit=10)
        assert pending.events == []  # hub B's index has the receipt too


async def test_the_roster_is_the_same_on_every_hub(
    two_hubs: tuple[HubProcess, HubProcess],
    hub_factory: Callable[..., HubProcess],
    nats: NatsServer,
    tmp_path: Path,
) -> None:
    a, b = two_hubs
    async with Client(a.url, "alice") as on_a, Client(b.url, "alice") as on_b:
        await on_a.register("team.x", "codex", session="s1", host="m1", model="gpt", role="dev")
        # a second session asking for the same name on the other hub gets codex-2
        second = await on_b.register("team.x", "codex", session="s2", host="m2")
        assert second.name == "codex-2"

        async def registered(client: Client) -> list[tuple[str, str | None]]:
            result = await client.roster("team.x")
            return [(m.name, m.host) for m in result.registered]

        want = [("codex", "m1"), ("codex-2", "m2")]
        for _ in range(100):  # the other hub follows the bucket within moments
            if await registered(on_a) == want and await registered(on_b) == want:
                break
            await asyncio.sleep(0.05)
        assert await registered(on_a) == await registered(on_b) == want
        await on_a.register("team.x", "codex-2", leave=True)
        for _ in range(100):
            if await registered(on_b) == [("codex", "m1")]:
                break
            await asyncio.sleep(0.05)
        assert await registered(on_b) == [("codex", "m1")]
    # a hub started later reads the roster from the bucket
    c = hub_factory("--engine", nats.url, "--bus", "team", "--db", str(tmp_path / "c.db"))
    async with Client(c.url, "alice") as on_c:
        result = await on_c.roster("team.x")
        assert [(m.name, m.model, m.role) for m in result.registered] == [("codex", "gpt", "dev")]


async def test_presence_agrees_on_every_hub_and_a_dead_hubs_names_go_down(
    two_hubs: tuple[HubProcess, HubProcess],
) -> None:
    """A name connected to hub A is up for a watcher on hub B (roster and presence
    frames); when A is SIGKILLed, B's watcher sees it go down within the bound."""
    from wsbus.jetstream.presence import HEARTBEAT, TTL

    a, b = two_hubs
    async with Client(b.url, "watcher") as watcher:
        items = aiter(watcher)

        async def next_presence(name: str) -> Presence:
            while True:
                item = await anext(items)
                if isinstance(item, Presence) and item.name == name:
                    return item

        agent = Client(a.url, "codex", model="gpt-5", host="m1")
        await agent.connect()
        async with asyncio.timeout(10):
            up = await next_presence("codex")
        assert (up.state, up.model, up.host) == ("up", "gpt-5", "m1")
        for client in (watcher, agent):  # the same roster from both hubs
            members = (await client.roster()).members
            assert sorted(m.name for m in members) == ["codex", "watcher"]
        # a second connection of the same name on B: still one name, up all along
        async with Client(b.url, "codex"):
            await agent.close()
            await asyncio.sleep(HEARTBEAT)
            assert "codex" in [m.name for m in (await watcher.roster()).members]
        async with asyncio.timeout(10):
            assert (await next_presence("codex")).state == "down"
        agent = Client(a.url, "codex")
        await agent.connect()
        async with asyncio.timeout(10):
            assert (await next_presence("codex")).state == "up"
        start = time.monotonic()
        a.kill()  # no goodbye: its heartbeat lapses
        async with asyncio.timeout(TTL + 3 * HEARTBEAT + 5):
            assert (await next_presence("codex")).state == "down"
        took = time.monotonic() - start
        print(f"down after {took:.1f} s")
        assert took <= TTL + 2 * HEARTBEAT + 2, took
        assert [m.name for m in (await watcher.roster()).members] == ["watcher"]
        await agent.close()


async def test_a_hub_started_later_and_a_cleared_name_see_presence_right(
    two_hubs: tuple[HubProcess, HubProcess],
    hub_factory: Callable[..., HubProcess],
    nats: NatsServer,
    tmp_path: Path,
) -> None:
    """A hub that starts while a name is connected to another hub counts it; a hub
    whose presence key another hub cleared (as after a heartbeat lapse) writes it back."""
    import nats as nats_py

    a, _ = two_hubs
    async with Client(a.url, "codex"):
        c = hub_factory("--engine", nats.url, "--bus", "team", "--db", str(tmp_path / "c.db"))
        async with Client(c.url, "watcher") as watcher:

            async def names() -> list[str]:
                return sorted(m.name for m in (await watcher.roster()).members)

            assert await names() == ["codex", "watcher"]
            nc = await nats_py.connect(nats.url)
            kv = await nc.jetstream().key_value("wsbus_team_presence")
            (key,) = [k for k in await kv.keys() if k.startswith("p.") and k.endswith(".codex")]
            await kv.delete(key)  # what a hub does when it takes another for dead
            for _ in range(200):
                if await names() == ["codex", "watcher"] and key in await kv.keys():
                    break
                await asyncio.sleep(0.05)
            assert await names() == ["codex", "watcher"] and key in await kv.keys()
            await nc.close()


async def test_two_bridges_on_two_hubs_cannot_both_claim_a_name(
    two_hubs: tuple[HubProcess, HubProcess],
) -> None:
    a, b = two_hubs

    def bridge(host: str) -> dict[str, object]:
        return {"names": ["codex", "gemini"], "kind": "bridge", "host": host,
                "channels": ["default"]}  # fmt: skip

    first = RawClient(a.url)
    assert not (await first.open(bridge("m1"))).get("refused")
    other = RawClient(b.url)  # another machine's bridge, on the other hub
    for _ in range(100):  # hub B sees A's claims within moments
        welcome = await other.open(bridge("m2"))
        if len(welcome.get("refused") or []) == 2:  # type: ignore[arg-type]
            break
        await other.close()  # (a name B granted before it saw A's claim: B takes it back)
        other = RawClient(b.url)
        await asyncio.sleep(0.05)
    assert sorted(welcome["refused"]) == ["codex", "gemini"]  # type: ignore[arg-type]
    refusal = await other.recv_op("error")
    assert refusal["code"] == "name_claimed" and "host m1" in str(refusal["message"])
    await other.close()
    # the same bridge (host and token) reconnecting through hub B takes over
    again = RawClient(b.url)
    assert not (await again.open(bridge("m1"))).get("refused")
    async with asyncio.timeout(10):
        while True:
            try:
                await first.recv(10)
            except ConnectionClosed as closed:
                assert closed.rcvd is not None and closed.rcvd.code == 4009
                break
    # a message to codex sent on hub A reaches the bridge on hub B
    async with Client(a.url, "alice") as alice:
        ok = await alice.send("codex", "build it", ref="to-codex")
    event = await again.recv_op("event")
    assert (event["seq"], event["to"]) == (ok.seq, "codex")
    await again.close()


async def test_migrate_moves_a_hub_onto_nats_and_every_cursor_goes_on(
    hub_factory: Callable[..., HubProcess], nats: NatsServer, tmp_path: Path, env: dict[str, str]
) -> None:
    old = hub_factory("--db", str(tmp_path / "old.db"))
    async with Client(old.url, "alice") as alice, Client(old.url, "bob") as bob:
        oks = [await alice.send("bob", f"m{i}", ref=f"r{i}", thread="t.1") for i in range(30)]
        events = bob.events()
        async with asyncio.timeout(10):
            for _ in range(10):
                await bob.ack((await anext(events)).seq, "read")
        await alice.register("default", "codex", session="s1", host="m1")
        cursor, old_id = bob.last_seq, bob.hub_id
        before = await alice.history(limit=100)
        pending = await alice.history(to="bob", pending=True, limit=100)
    old.stop()

    def migrate() -> str:
        r = subprocess.run(
            [sys.executable, "-m", "wsbus", "migrate", "--from", str(tmp_path / "old.db"),
             "--engine", nats.url, "--bus", "moved", "-q"],
            capture_output=True, text=True, timeout=120, env=env,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        return r.stdout

    first = migrate()
    assert "30 events (0 already there), 10 receipts (0 already there), 1 roster" in first
    again = migrate()  # run twice: nothing doubles
    assert "0 events (30 already there), 0 receipts (10 already there)" in again
    new = hub_factory("--engine", nats.url, "--bus", "moved", "--db", str(tmp_path / "i.db"))
    async with Client(new.url, "alice") as alice:
        after = await alice.history(limit=100)
        assert [(e.seq, e.ts, e.body) for e in after.events] == [
            (e.seq, e.ts, e.body) for e in before.events
        ]
        still = await alice.history(to="bob", pending=True, limit=100)
        assert [e.seq for e in still.events] == [e.seq for e in pending.events]
        assert [m.name for m in (await alice.roster()).registered] == ["codex"]
        later = await alice.send("bob", "after the move", ref="moved-1")
        assert later.seq > oks[-1].seq
    # bob's cursor from the old hub is good on the bus: nothing again, nothing lost
    async with Client(new.url, "bob", resume=cursor, hub_id=old_id) as bob:
        assert bob.hub_id == old_id and bob.welcome is not None and bob.welcome.recovered
        assert cursor is not None
        want = [ok.seq for ok in oks if ok.seq > cursor] + [later.seq]
        events = bob.events()
        async with asyncio.timeout(10):
            got = [(await anext(events)).seq for _ in want]
        assert got == want
    # a legacy cursor (since = a ts the old hub gave) too
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{new.http_url}/recv?to=bob&since={oks[28].ts!r}") as r,
    ):
        assert [m["msg"] for m in (await r.json())["messages"]] == ["m29", "after the move"]


@pytest.mark.skipif(TMUX is None, reason="tmux is not installed")
async def test_a_bridge_on_hub_a_delivers_a_message_sent_through_hub_b(
    two_hubs: tuple[HubProcess, HubProcess], tmp_path: Path, env: dict[str, str]
) -> None:
    """The bridge types into a real tmux pane a message sent on the other hub; the
    sender, on hub B, gets the bridge's `submitted` receipt from hub A."""
    from wsbus.cli.conventions import wait_receipt

    a, b = two_hubs
    machine = Machine(tmp_path, "alpha", env, a.url)
    try:
        codex = machine.agent("codex")
        machine.start_bridge()
        async with Client(b.url, "claude", channels=[], presence=False) as claude:
            ok = await claude.send("codex", "build the parser", ref="cross-1")
            got = await wait_receipt(claude, ok.seq, {"codex"}, timeout=30)
        assert got["codex"].status == "submitted", got
        (line,) = codex.submitted()
        assert line.endswith("| build the parser") and "from=claude" in line
    finally:
        machine.close()


async def test_leases_agree_across_hubs_and_a_race_has_one_winner(
    two_hubs: tuple[HubProcess, HubProcess],
) -> None:
    a, b = two_hubs
    async with Client(a.url, "claude") as claude, Client(b.url, "codex") as codex:
        held = await claude.reserve(["src/**"], 600, reason="big change")
        with pytest.raises(SendRefused) as refused:
            await codex.reserve(["src/a.py"], 60)
        assert refused.value.code == "lease_conflict" and "by claude" in refused.value.message
        assert [x.id for x in (await codex.leases()).leases] == [held.lease.id]
        await claude.release()
        # both ask for the same file at once, one on each hub: the log decides
        for attempt in range(5):
            path = [f"race/{attempt}.py"]
            results = await asyncio.gather(
                claude.reserve(path, 60), codex.reserve(path, 60), return_exceptions=True
            )
            won = [r for r in results if not isinstance(r, BaseException)]
            lost = [r for r in results if isinstance(r, SendRefused)]
            assert len(won) == 1 and len(lost) == 1, results
            holders = {(await c.leases(prefix=path[0])).leases[0].holder for c in (claude, codex)}
            assert holders == {won[0].lease.holder}
