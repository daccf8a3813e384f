"""The legacy agent-bus HTTP scenarios (``POST /send``, ``GET /recv`` long-polls).

Each runs against the HTTP shim of the wsbus hub and, when given, against the
original agent-bus reference server (a thread per request, sleep-polling every
0.5 s). The clients are aiohttp sessions in the harness process (the servers are
subprocesses; their helpers are in bench/legacy_http.py), and for ``POST /send``
throughput also :class:`Http1`, a lean HTTP/1.1 client; every loop is bounded in
count and in time, and a scenario that runs out of time says it is incomplete.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import statistics
import time
from typing import Any, Literal

import aiohttp

from .common import BenchError, body, decode
from .legacy_http import (
    _HEADERS,
    _cursor,
    _delta,
    _encode,
    _gather_bounded,
    _quiet,
    _ramp,
    _recv,
    _send,
    _session,
    _settle,
    _wait_held,
    listen_overflows,
)
from .scenarios import Params, latency_summary, percentile, run_tag
from .servers import ServerProcess

__all__ = ["legacy_burst", "legacy_latency", "legacy_pending", "legacy_sends"]

Wake = Literal["broadcast", "direct"]


# --------------------------------------------------------------------------- delivery latency


async def legacy_latency(server: ServerProcess, p: Params) -> dict[str, Any]:
    """A receiver long-polls (cursor rule) while a sender POSTs one message at a time.

    Each send waits until the receiver got the one before, then a random 0 .. gap
    seconds, so sends land at random points of the receiver's poll cycle (gap: the
    server's own poll interval, 0.5 s for the reference, else ``legacy_latency_gap``).
    A sample is send start -> the receiver's ``/recv`` answer holding it, parsed.
    """
    base = server.http_url
    tag = run_tag()
    channel, bob, alice = f"{tag}-lat", f"{tag}-bob", f"{tag}-alice"
    loop = asyncio.get_running_loop()
    total = p.legacy_latency_warmup + p.legacy_latency_samples
    waiting: dict[str, Any] = {"i": -1, "fut": None}
    async with _session(0) as recv_s, _session(1) as send_s:
        _, cursor = await _recv(recv_s, base, bob, channel, 0.0, block=False)

        async def receiver() -> None:
            since = cursor
            for _ in range(4 * total + 100):  # ends when cancelled; bounded anyway
                messages, now = await _recv(recv_s, base, bob, channel, since)
                got = time.perf_counter_ns()
                since = _cursor(messages, now)
                for m in messages:
                    fut = waiting["fut"]
                    if fut is not None and not fut.done() and m["msg"].startswith(waiting["i"]):
                        fut.set_result(got)

        task = asyncio.create_task(receiver())
        samples: list[float] = []
        lost = 0
        rng = random.Random(1)
        gap = max(server.poll_interval, p.legacy_latency_gap)
        deadline = time.monotonic() + p.legacy_latency_deadline
        try:
            for i in range(total):
                if time.monotonic() > deadline or lost > 20:
                    break
                if task.done():
                    raise BenchError(f"{server.label}: receiver stopped: {task.exception()!r}")
                await asyncio.sleep(rng.uniform(0.0, gap))  # a random phase of the poll cycle
                fut: asyncio.Future[int] = loop.create_future()
                waiting.update(i=f"{i} ", fut=fut)
                sent = time.perf_counter_ns()
                await _send(send_s, base, alice, bob, channel, body(str(i)))
                try:
                    got = await asyncio.wait_for(fut, p.legacy_latency_timeout)
                except TimeoutError:
                    lost += 1
                    continue
                if i >= p.legacy_latency_warmup:
                    samples.append((got - sent) / 1e6)
        finally:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
    return {**latency_summary(samples, lost, p.legacy_latency_samples), "gap_ms": gap * 1e3}


# --------------------------------------------------------------------------- send throughput

Client = Literal["http1", "aiohttp"]


class Http1:
    """A lean HTTP/1.1 client connection: one request at a time, kept alive when the
    server allows (the reference answers HTTP/1.0 and closes: the next request
    reconnects). It spends a third of aiohttp's CPU per request, which matters when
    the load generator shares a few CPUs with the server."""

    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        self.host, self.port = host, int(port)
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.connects = 0

    async def post(self, path: str, data: bytes) -> tuple[int, bytes]:
        if self.writer is None or self.reader is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
            self.connects += 1
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"User-Agent: Mozilla/5.0\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n"
        )
        self.writer.write(head.encode() + data)
        lines = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        version, status = lines[0].split(" ", 2)[:2]
        headers = {
            k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])
        }
        length = headers.get("content-length")
        raw = await (self.reader.readexactly(int(length)) if length else self.reader.read())
        keep = headers.get("connection", "").lower()
        if keep == "close" or (version == "HTTP/1.0" and keep != "keep-alive") or not length:
            self.close()
        return int(status), raw

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def _send_pass(
    server: ServerProcess, p: Params, client: Client, channel: str, sink: str
) -> dict[str, Any]:
    """One timed pass: ``legacy_senders`` connections, each POSTing one after another."""
    base = server.http_url
    senders, quota, warm = p.legacy_senders, p.legacy_sends_per_sender, 5
    barrier = asyncio.Barrier(senders + 1)
    state = {"ok": 0, "last": 0.0}
    errors: list[str] = []
    conns = [Http1(base) for _ in range(senders)]

    async with _session(senders) as session:

        async def post(k: int, text: str) -> None:
            me = f"{channel}-s{k}"
            if client == "aiohttp":
                await _send(session, base, me, sink, channel, text)
                return
            data = _encode({"from": me, "to": sink, "msg": text, "channel": channel})
            status, raw = await conns[k].post("/send", data)
            if status != 200 or b'"ok":true' not in raw.replace(b" ", b""):
                raise BenchError(f"POST /send answered {status}: {raw[:200]!r}")

        async def sender(k: int) -> None:
            for i in range(warm):
                await post(k, body(f"w{k} {i}"))
            await barrier.wait()
            deadline = time.monotonic() + p.legacy_send_deadline
            for i in range(quota):
                if time.monotonic() > deadline:
                    return
                try:
                    await post(k, body(f"{k} {i}"))
                except (BenchError, aiohttp.ClientError, OSError, ValueError) as err:
                    errors.append(repr(err))
                    conns[k].close()
                    if len(errors) > 20:
                        return
                    continue
                state["ok"] += 1
                state["last"] = time.perf_counter()

        tasks = [asyncio.create_task(sender(k)) for k in range(senders)]
        try:
            async with asyncio.timeout(30):
                await barrier.wait()
            cpu0 = server.cpu()
            start = time.perf_counter()
            done, _ = await asyncio.wait(tasks, timeout=p.legacy_send_deadline + 30)
            cpu1 = server.cpu()
            for t in done:
                if t.exception() is not None:
                    raise BenchError(f"{server.label}: sender failed: {t.exception()!r}")
        finally:
            for t in tasks:
                t.cancel()
            for c in conns:
                c.close()
    if errors:
        raise BenchError(f"{server.label}: {len(errors)} sends failed: {errors[:3]}")
    sends = int(state["ok"])
    span = max(state["last"] - start, 1e-9)
    return {
        "sends": sends,
        "span_s": span,
        "sends_per_s": sends / span,
        "cpu_us_per_send": (cpu1 - cpu0) / max(sends, 1) * 1e6,
        "connects": sum(c.connects for c in conns) if client == "http1" else None,
    }


async def legacy_sends(server: ServerProcess, p: Params) -> dict[str, Any]:
    """``POST /send`` throughput: ``legacy_senders`` keep-alive connections, each sending
    one after another, ``legacy_sends_per_sender`` each; first with :class:`Http1`,
    then again with aiohttp sessions.

    wsbus answers a send after its commit, so every counted request is durable.
    Rate = answered sends / (first timed send .. last answer); a warm-up of a few
    sends per connection opens the connections first (not timed).
    """
    tag = run_tag()
    channel, sink = f"{tag}-tp", f"{tag}-sink"
    lean = await _send_pass(server, p, "http1", channel, sink)
    aio = await _send_pass(server, p, "aiohttp", channel, sink)
    stored = None
    with contextlib.suppress(Exception):  # how many the server holds for the sink
        async with _session(1) as s, s.get(f"{server.http_url}/inbox", headers=_HEADERS) as r:
            inbox: Any = decode(await r.read())
        stored = inbox["recipients"].get(channel, {}).get(sink, 0)
    requests = p.legacy_senders * p.legacy_sends_per_sender
    return {
        "senders": p.legacy_senders,
        "requests": requests,
        **lean,
        **{f"aiohttp_{k}": v for k, v in aio.items() if k != "connects"},
        "stored": stored,  # both passes, warm-ups included
        "complete": lean["sends"] == requests and aio["sends"] == requests,
    }


# --------------------------------------------------------------------------- pending polls


async def legacy_pending(server: ServerProcess, p: Params, wake: Wake) -> dict[str, Any]:
    """Hold ``legacy_polls`` blocked ``/recv`` (distinct names), then wake them all.

    They count as pending once the server holds that many connections on its HTTP
    port (or ``legacy_hold_timeout`` passed: incomplete), it went quiet, and none has
    been answered. RSS and threads are read then (RSS growth per held poll);
    the wake is one broadcast ``POST /send`` (``to: "*"``) or one send per name from
    ``legacy_senders`` senders; wake time = first wake send .. last answer parsed.
    """
    base = server.http_url
    tag = run_tag()
    n = p.legacy_polls
    channel = f"{tag}-idle"
    names = [f"{tag}-p{i}" for i in range(n)]
    text = body("wake")
    answered_at: dict[str, float] = {}
    answers: dict[str, list[dict[str, Any]]] = {}
    result: dict[str, Any] = {"polls": n, "wake": wake}
    async with _session(0) as polls_s, _session(p.legacy_senders) as send_s:
        _, cursor = await _recv(polls_s, base, names[0], channel, 0.0, block=False)
        await _quiet(server, 2.0)
        rss0, threads0 = server.rss(), server.threads()

        async def poll(name: str) -> None:
            messages, _ = await _recv(polls_s, base, name, channel, cursor)
            answered_at[name] = time.perf_counter()
            answers[name] = messages

        overflows = listen_overflows()
        opened = time.perf_counter()
        tasks: list[asyncio.Task[None]] = []
        try:
            await _ramp(server, tasks, [poll(name) for name in names], p)
            left = p.legacy_hold_timeout - (time.perf_counter() - opened)
            held = await _wait_held(server, n, max(1.0, left))
            result["open_s"] = time.perf_counter() - opened
            result["quiet_s"] = await _quiet(server, 2.0)
            rss1, threads1 = server.rss(), server.threads()
            early = len(answered_at)
            result.update(
                held=held,
                answered_early=early,
                pending=n - early,
                threads_before=threads0,
                threads_pending=threads1,
                rss_before_mib=rss0 / 2**20,
                rss_after_mib=rss1 / 2**20,
                rss_per_poll_kib=(rss1 - rss0) / 1024 / max(held, 1),
            )
            woke = time.perf_counter()
            if wake == "broadcast":
                await _send(send_s, base, f"{tag}-waker", "*", channel, text)
            else:

                async def waker(k: int) -> None:
                    for name in names[k :: p.legacy_senders]:
                        await _send(send_s, base, f"{tag}-waker", name, channel, text)

                outcome = await _gather_bounded(
                    [waker(k) for k in range(p.legacy_senders)], p.legacy_wake_timeout
                )
                failed = [repr(x) for x in outcome if isinstance(x, BaseException)]
                if failed:
                    raise BenchError(f"{server.label}: wake sends failed: {failed[:3]}")
            await asyncio.wait(tasks, timeout=p.legacy_wake_timeout)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.wait(tasks, timeout=10)
    result["listen_overflows"] = _delta(overflows)  # machine-wide, during the scenario
    result["settle_s"] = await _settle(server, threads0)
    late = [t for t in answered_at.values() if t >= woke]
    got = sum(1 for name in names if any(m.get("msg") == text for m in answers.get(name, [])))
    result.update(
        answered=len(answered_at),
        answered_with_message=got,
        wake_all_ms=(max(late) - woke) * 1e3 if len(late) == n else float("nan"),
        wake_median_ms=(statistics.median(late) - woke) * 1e3 if late else float("nan"),
        complete=got == n and result["held"] == n and result["answered_early"] == 0,
    )
    return result


# --------------------------------------------------------------------------- burst


async def legacy_burst(server: ServerProcess, p: Params) -> dict[str, Any]:
    """``legacy_burst`` receivers start their long-polls together; then one send to each.

    Once the server holds every receiver's connection (or ``legacy_hold_timeout``
    passed), the sends start all at once, each on its own new connection; delay =
    a send's start .. its receiver's answer parsed.
    """
    base = server.http_url
    tag = run_tag()
    n = p.legacy_burst
    channel = f"{tag}-burst"
    names = [f"{tag}-b{i}" for i in range(n)]
    sent_at: dict[str, float] = {}
    got_at: dict[str, float] = {}
    async with _session(0) as recv_s, _session(0) as send_s:
        _, cursor = await _recv(recv_s, base, names[0], channel, 0.0, block=False)
        await _quiet(server, 2.0)
        threads0 = server.threads()

        async def poll(name: str) -> None:
            since = cursor
            for _ in range(3):  # an answer without our message (none expected): poll again
                messages, now = await _recv(recv_s, base, name, channel, since)
                if any(m.get("msg", "").startswith(f"{name} ") for m in messages):
                    got_at[name] = time.perf_counter()
                    return
                since = _cursor(messages, now)

        async def send(name: str) -> None:
            sent_at[name] = time.perf_counter()
            await _send(send_s, base, f"{tag}-sender", name, channel, body(name))

        overflows = listen_overflows()
        began = time.perf_counter()
        polls = [asyncio.create_task(poll(name)) for name in names]
        try:
            held = await _wait_held(server, n, p.legacy_hold_timeout)
        except BaseException:
            for t in polls:
                t.cancel()
            raise
        connect_s = time.perf_counter() - began
        outcome = await _gather_bounded(
            [*polls, *(send(name) for name in names)], p.legacy_burst_timeout
        )
    overflowed = _delta(overflows)
    settle_s = await _settle(server, threads0)
    failed = [repr(x) for x in outcome if isinstance(x, BaseException)]
    delays = sorted(got_at[name] - sent_at[name] for name in names if name in got_at)
    ms = [d * 1e3 for d in delays]
    return {
        "receivers": n,
        "held": held,
        "connect_s": connect_s,
        "answered": len(got_at),
        "failed": failed[:3],
        "worst_ms": ms[-1] if ms else float("nan"),
        "median_ms": statistics.median(ms) if ms else float("nan"),
        "p90_ms": percentile(ms, 90),
        "all_answered_s": (max(got_at.values()) - began) if got_at else float("nan"),
        "sent_s": (max(sent_at.values()) - began) if sent_at else float("nan"),
        "listen_overflows": overflowed,  # machine-wide, during the scenario
        "settle_s": settle_s,
        "complete": len(got_at) == n and held == n and not failed,
    }
