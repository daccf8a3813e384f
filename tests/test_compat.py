"""The agent-bus HTTP contract (DESIGN.md §4) against a live hub: one bus, both ways."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import psutil
import pytest

from wsbus import Client

from .helpers import HubProcess, async_wait_for


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(
        connector=conn, headers={"User-Agent": "Mozilla/5.0"}
    ) as session:
        yield session


async def post(http: aiohttp.ClientSession, hub: HubProcess, payload: Any) -> tuple[int, Any]:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    async with http.post(
        hub.http_url + "/send", data=data, headers={"Content-Type": "application/json"}
    ) as r:
        return r.status, await r.json()


async def get(http: aiohttp.ClientSession, hub: HubProcess, path: str) -> tuple[int, Any]:
    async with http.get(hub.http_url + path, timeout=aiohttp.ClientTimeout(total=60)) as r:
        return r.status, await r.json()


async def test_send_reaches_websocket_listener_and_history(
    hub: HubProcess, http: aiohttp.ClientSession
) -> None:
    async with Client(hub.url, "bob") as bob:
        status, ack = await post(http, hub, {"from": "alice", "to": "bob", "msg": "hi ✓"})
        assert status == 200 and ack["ok"] is True and ack["channel"] == "default"
        assert isinstance(ack["ts"], float)
        ev = await asyncio.wait_for(anext(bob.events()), 5)
        assert (ev.from_, ev.to, ev.body, ev.ts) == ("alice", "bob", "hi ✓", ack["ts"])
        page = await bob.history(limit=5)
        assert [e.body for e in page.events] == ["hi ✓"]


async def test_websocket_send_wakes_a_blocked_recv(
    hub: HubProcess, http: aiohttp.ClientSession
) -> None:
    since = time.time()
    poll = asyncio.create_task(get(http, hub, f"/recv?to=bob&since={since}&block=true"))
    await asyncio.sleep(0)
    await async_wait_for(lambda: _pending_polls(hub) >= 1)
    async with Client(hub.url, "alice", channels=[]) as alice:
        sent = time.monotonic()
        ok = await alice.send("bob", "over the websocket", channel="default")
        status, data = await asyncio.wait_for(poll, 10)
    latency = time.monotonic() - sent
    assert status == 200
    assert [(m["from"], m["msg"], m["seq"]) for m in data["messages"]] == [
        ("alice", "over the websocket", ok.seq)
    ]
    assert latency < 1.0, "woken by the commit, not by a timer"  # bench has the real figure


def _pending_polls(hub: HubProcess) -> int:
    """Established connections to the shim's port (each blocked poll holds one)."""
    assert hub.proc is not None
    conns = psutil.Process(hub.proc.pid).net_connections(kind="tcp")
    return sum(
        1 for c in conns if c.status == psutil.CONN_ESTABLISHED and c.laddr.port == hub.http_port
    )


async def test_channels_are_never_mixed(hub: HubProcess, http: aiohttp.ClientSession) -> None:
    await post(http, hub, {"from": "a", "to": "bob", "msg": "default one"})
    await post(http, hub, {"from": "a", "to": "bob", "msg": "other one", "channel": "other"})
    await post(http, hub, {"from": "a", "to": "*", "msg": "everyone", "channel": "other"})
    _, plain = await get(http, hub, "/recv?to=bob")
    assert [m["msg"] for m in plain["messages"]] == ["default one"]
    _, other = await get(http, hub, "/recv?to=bob&channel=other")
    assert [(m["msg"], m["to"]) for m in other["messages"]] == [
        ("other one", "bob"),
        ("everyone", "*"),
    ]
    _, own = await get(http, hub, "/recv?to=a&channel=other")
    assert own["messages"] == []  # a sender does not get its own broadcast back


async def test_legacy_cursor_never_skips_under_concurrent_senders(
    hub: HubProcess, http: aiohttp.ClientSession
) -> None:
    """Invariant 5: clients following since=max(max(ts), now) get every message once,
    also with a small max that cuts batches short, while senders hammer the hub."""
    receivers = {"r1": 100, "r2": 3, "r3": 1}  # name -> max per /recv
    per_sender = 150
    senders = ["s1", "s2", "s3", "s4"]
    expected = {name: len(senders) * per_sender for name in receivers}
    got: dict[str, list[str]] = {name: [] for name in receivers}
    start = time.time() - 1
    done = asyncio.Event()

    async def receive(name: str, max_: int) -> None:
        since = start
        deadline = time.monotonic() + 60
        while len(got[name]) < expected[name] and time.monotonic() < deadline:
            _, data = await get(http, hub, f"/recv?to={name}&since={since}&block=true&max={max_}")
            for m in data["messages"]:
                got[name].append(m["msg"])
                since = max(since, m["ts"])
            since = max(since, data["now"])

    async def send(sender: str) -> None:
        for i in range(per_sender):
            for name in receivers:
                status, _ = await post(http, hub, {"from": sender, "to": name,
                                                   "msg": f"{sender}-{i}"})  # fmt: skip
                assert status == 200

    tasks = [asyncio.create_task(receive(n, m)) for n, m in receivers.items()]
    await asyncio.gather(*(send(s) for s in senders))
    done.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 90)
    for name in receivers:
        assert len(got[name]) == expected[name], (name, len(got[name]))
        assert len(set(got[name])) == expected[name], f"{name} got duplicates"


async def test_many_blocked_polls_without_a_thread_each(
    hub: HubProcess, http: aiohttp.ClientSession
) -> None:
    n = 300
    since = time.time()
    polls = [
        asyncio.create_task(get(http, hub, f"/recv?to=w{i}&since={since}&block=true"))
        for i in range(n)
    ]
    await async_wait_for(lambda: _pending_polls(hub) >= n, 30)
    assert hub.proc is not None
    threads = psutil.Process(hub.proc.pid).num_threads()
    assert threads < 20, f"{threads} threads for {n} pending polls"
    assert not any(p.done() for p in polls)
    status, _ = await post(http, hub, {"from": "boss", "to": "*", "msg": "wake up"})
    assert status == 200
    answers = await asyncio.wait_for(asyncio.gather(*polls), 30)
    assert all(s == 200 and [m["msg"] for m in d["messages"]] == ["wake up"] for s, d in answers)


async def test_simultaneous_receivers_all_answered(
    hub: HubProcess, http: aiohttp.ClientSession
) -> None:
    n = 100
    since = time.time()
    polls = [
        asyncio.create_task(get(http, hub, f"/recv?to=b{i}&since={since}&block=true"))
        for i in range(n)
    ]
    await async_wait_for(lambda: _pending_polls(hub) >= n, 30)
    sends = [post(http, hub, {"from": "x", "to": f"b{i}", "msg": f"for b{i}"}) for i in range(n)]
    await asyncio.gather(*sends)
    answers = await asyncio.wait_for(asyncio.gather(*polls), 30)
    for i, (status, data) in enumerate(answers):
        assert status == 200 and [m["msg"] for m in data["messages"]] == [f"for b{i}"]


async def test_blocked_recv_times_out_empty(
    hub_factory: Callable[..., HubProcess], http: aiohttp.ClientSession
) -> None:
    hub = hub_factory("--poll-timeout", "1")
    started = time.monotonic()
    status, data = await get(http, hub, f"/recv?to=nobody&since={time.time()}&block=true")
    elapsed = time.monotonic() - started
    assert status == 200 and data["messages"] == [] and isinstance(data["now"], float)
    assert 0.9 <= elapsed < 10


def _unread_by_hub(http_port: int, client_ports: set[int]) -> int:
    """How many of these client connections still have request bytes the hub has not
    read (the receive queue of the hub's end, from /proc/net/tcp)."""
    unread = 0
    with open("/proc/net/tcp") as table:
        next(table)
        for line in table:
            fields = line.split()
            local, remote, queues = fields[1], fields[2], fields[4]
            if int(local.split(":")[1], 16) != http_port:
                continue
            if int(remote.split(":")[1], 16) in client_ports and int(queues.split(":")[1], 16):
                unread += 1
    return unread


async def _raw_get(
    host: str, port: int, path: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Send a whole GET request on a fresh connection (keep the writer: dropping it
    closes the connection)."""
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    return reader, writer


async def test_shutdown_answers_every_pending_poll(hub: HubProcess) -> None:
    since = time.time()
    opened = [await _raw_get("127.0.0.1", hub.http_port, f"/recv?to=p{i}&since={since}&block=true")
              for i in range(20)]  # fmt: skip
    ports = {w.get_extra_info("sockname")[1] for _, w in opened}
    # every request was read by the hub (and, being a blocked poll, is pending there)
    await async_wait_for(
        lambda: _pending_polls(hub) >= 20 and _unread_by_hub(hub.http_port, ports) == 0, 30
    )
    started = time.monotonic()
    assert hub.proc is not None
    hub.proc.send_signal(signal.SIGTERM)
    answers = await asyncio.wait_for(asyncio.gather(*(r.read() for r, _ in opened)), 20)
    for _, writer in opened:
        writer.close()
    for raw in answers:
        head, _, body = raw.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), raw[:200]
        assert json.loads(body)["messages"] == []
    assert time.monotonic() - started < 10
    await asyncio.to_thread(hub.proc.wait, 20)  # a second SIGTERM would force-quit it
    status, output = await asyncio.to_thread(hub.stop)
    assert status == 0 and "Traceback" not in output


async def test_inbox_and_healthz(hub: HubProcess, http: aiohttp.ClientSession) -> None:
    for to, channel in (("bob", "default"), ("bob", "default"), ("eve", "ops"), ("*", "ops")):
        await post(http, hub, {"from": "a", "to": to, "msg": "x", "channel": channel})
    status, inbox = await get(http, hub, "/inbox")
    assert status == 200
    assert inbox["recipients"] == {"default": {"bob": 2}, "ops": {"eve": 1, "*": 1}}
    _, recv = await get(http, hub, "/recv?to=bob")
    assert len(recv["messages"]) == 2
    _, again = await get(http, hub, "/inbox")
    assert again["recipients"]["default"]["bob"] == 2  # /recv does not consume
    status, health = await get(http, hub, "/healthz")
    assert status == 200 and health["ok"] is True and isinstance(health["now"], float)


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "needle"),
    [
        ("GET", "/recv", None, 400, "to= required"),
        ("GET", "/recv?to=bob&since=abc", None, 400, "since"),
        ("GET", "/recv?to=bob&since=nan", None, 400, "since"),
        ("GET", "/recv?to=bob&max=lots", None, 400, "max"),
        ("GET", "/recv?to=bob&max=0", None, 400, "max"),
        ("GET", "/recv?to=b%2Fad", None, 400, "invalid to"),
        ("POST", "/send", b"{not json", 400, "invalid JSON"),
        ("POST", "/send", b"\xff\xfe{}", 400, "invalid JSON"),
        ("POST", "/send", b"[1, 2]", 400, "object"),
        ("POST", "/send", b'{"to": "bob", "msg": "x"}', 400, "from, to, msg required"),
        ("POST", "/send", b'{"from": "a", "msg": "x"}', 400, "from, to, msg required"),
        ("POST", "/send", b'{"from": "a", "to": "b", "msg": 5}', 400, "msg"),
        ("POST", "/send", b'{"from": "a", "to": "b", "msg": "x", "channel": 7}', 400, "channel"),
        ("POST", "/send", b'{"from": "a b", "to": "b", "msg": "x"}', 400, "invalid from"),
        ("POST", "/send", b"{" + b'"msg": "' + b"x" * 70000 + b'"}', 413, "body over"),
        ("GET", "/nope", None, 404, "not found"),
        ("GET", "/send", None, 405, "not allowed"),
        ("DELETE", "/recv", None, 405, "not allowed"),
    ],
)
async def test_bad_requests_get_a_json_error(
    hub: HubProcess,
    http: aiohttp.ClientSession,
    method: str,
    path: str,
    body: bytes | None,
    status: int,
    needle: str,
) -> None:
    async with http.request(method, hub.http_url + path, data=body) as r:
        assert r.status == status
        data = await r.json()
    assert needle.lower() in data["error"].lower(), data
    # the hub keeps serving, and unknown query parameters are ignored
    code, ok = await post(http, hub, {"from": "a", "to": "bob", "msg": "still fine"})
    assert code == 200 and ok["ok"] is True
    code, recv = await get(http, hub, "/recv?to=bob&whatever=1&block=false")
    assert code == 200 and recv["messages"][-1]["msg"] == "still fine"


def test_oversized_body_is_refused_without_reading_it(hub: HubProcess) -> None:
    """A client announcing 10 MB gets 413 at once; the hub does not wait for the bytes."""
    with socket.create_connection(("127.0.0.1", hub.http_port), timeout=10) as s:
        s.sendall(
            b"POST /send HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 10000000\r\n\r\n{"from": "a"'
        )
        reply = b""
        deadline = time.monotonic() + 10
        while b"\r\n\r\n" not in reply and time.monotonic() < deadline:
            chunk = s.recv(4096)
            if not chunk:
                break
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 413"), reply[:80]


async def test_recv_returns_broadcasts_with_to_and_extra_fields(
    hub: HubProcess, http: aiohttp.ClientSession
) -> None:
    async with Client(hub.url, "alice", channels=[]) as alice:
        await alice.send("*", "to all", thread="plan")
    _, data = await get(http, hub, "/recv?to=bob&since=0")
    (m,) = data["messages"]
    assert (m["from"], m["to"], m["msg"], m["thread"], m["channel"]) == (
        "alice", "*", "to all", "plan", "default",
    )  # fmt: skip
    assert isinstance(m["ts"], float) and isinstance(m["seq"], int)


async def test_without_auth_the_http_rate_is_per_name_not_per_address(
    hub_factory: Callable[..., HubProcess], env: dict[str, str], http: aiohttp.ClientSession
) -> None:
    """Every local agent is 127.0.0.1: one flooding name must not get another's /send
    or /recv refused (429). Requests that name nobody (garbage, /inbox) share the
    address's own budget, so garbage is not free either."""
    env.update(WSBUS_RATE_BURST="4")
    # a bucket of 2 requests per caller, refilled in 2 s: nothing here waits that long
    hub = hub_factory("--memory", "--rate-events", "0.5")

    async def until_refused(call: Callable[[], Any]) -> list[int]:
        statuses: list[int] = []
        for _ in range(20):  # bounded: the bucket holds 2
            statuses.append((await call())[0])
            if statuses[-1] == 429:
                break
        return statuses

    flood = {"from": "flood", "to": "x", "msg": "spam"}
    assert (await until_refused(lambda: post(http, hub, flood)))[-1] == 429
    status, ack = await post(http, hub, {"from": "alice", "to": "bob", "msg": "innocent"})
    assert status == 200 and ack["ok"] is True, ack

    assert (await until_refused(lambda: get(http, hub, "/recv?to=flood")))[-1] == 429
    status, data = await get(http, hub, "/recv?to=bob")
    assert status == 200 and [m["msg"] for m in data["messages"]] == ["innocent"]

    garbage = await until_refused(lambda: post(http, hub, b"not json"))
    assert garbage[0] == 400 and garbage[-1] == 429
    assert (await get(http, hub, "/inbox"))[0] == 429  # the address's nameless budget
    status, _ = await post(http, hub, {"from": "alice", "to": "bob", "msg": "still fine"})
    assert status == 200
