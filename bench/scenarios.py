"""The scenarios, each run the same way against the hub and the bare server.

Every loop is bounded in count and in time: a scenario that runs out of time
reports what it measured and says it is incomplete.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from .common import (
    BenchError,
    Mode,
    body,
    decode,
    event_frame,
    events_of,
    handshake,
    open_ws,
    send_frame,
)
from .servers import ServerProcess
from .workers import Worker, share_out

__all__ = ["Params", "durable_publish", "fanout", "latency", "percentile", "run_tag"]

_run = 0


def run_tag() -> str:
    """A prefix unique in this run, so refs and names never repeat across scenarios."""
    global _run
    _run += 1
    return f"r{_run}"


@dataclass
class Params:
    latency_samples: int = 2000
    latency_warmup: int = 200
    latency_timeout: float = 2.0
    # (subscribers, events, events per second); the largest runs first, so its RSS
    # reading is taken before other fan-outs have left freed memory to reuse
    fanout: list[tuple[int, int, float]] = field(
        default_factory=lambda: [(1000, 200, 200.0), (100, 1000, 500.0)]
    )
    fanout_deadline: float = 60.0
    connect_timeout: float = 90.0
    durable_events: int = 20000
    durable_fsync_events: int = 20000
    durable_conns: int = 4
    durable_window: int = 16
    durable_deadline: float = 60.0
    workers: int = 4
    repeat: int = 3
    # the legacy agent-bus HTTP path (bench/legacy.py)
    legacy_latency_samples: int = 500
    legacy_latency_warmup: int = 20
    legacy_latency_timeout: float = 5.0
    legacy_latency_gap: float = 0.005
    legacy_latency_deadline: float = 300.0
    legacy_senders: int = 8
    legacy_sends_per_sender: int = 2500
    legacy_send_deadline: float = 60.0
    legacy_polls: int = 1000
    legacy_open_window: int = 4
    legacy_hold_timeout: float = 20.0
    legacy_wake_timeout: float = 20.0
    legacy_burst: int = 100
    legacy_burst_timeout: float = 20.0

    @classmethod
    def quick(cls) -> Params:
        return cls(
            latency_samples=300,
            latency_warmup=50,
            fanout=[(1000, 20, 200.0), (100, 100, 500.0)],
            fanout_deadline=30.0,
            connect_timeout=60.0,
            durable_events=2000,
            durable_fsync_events=1000,
            durable_deadline=30.0,
            repeat=1,
            legacy_latency_samples=100,
            legacy_latency_warmup=10,
            legacy_latency_deadline=60.0,
            legacy_sends_per_sender=250,
            legacy_send_deadline=20.0,
        )


async def _drain(ws: ClientConnection, on_frame: Any = None) -> None:
    """Read and parse every frame of a connection until it closes."""
    with contextlib.suppress(ConnectionClosed):
        while True:
            frame = decode(await ws.recv(decode=False))
            if on_frame is not None:
                on_frame(frame)


async def _close(*conns: ClientConnection) -> None:
    for ws in conns:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ws.close(), 10)


def _cancel(*tasks: asyncio.Task[None]) -> None:
    for t in tasks:
        t.cancel()


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), round(q / 100 * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


def latency_summary(samples: list[float], lost: int, wanted: int) -> dict[str, Any]:
    """The figures of a latency run (``samples`` in ms, any order)."""
    samples = sorted(samples)
    return {
        "samples": len(samples),
        "lost": lost,
        "p50_ms": percentile(samples, 50),
        "p90_ms": percentile(samples, 90),
        "p99_ms": percentile(samples, 99),
        "max_ms": samples[-1] if samples else float("nan"),
        "mean_ms": sum(samples) / len(samples) if samples else float("nan"),
        "complete": len(samples) == wanted,
    }


def _publish_frame(mode: Mode, seq: int, ref: str, text: str) -> bytes:
    """What a publisher sends: a wsbus ``send``, or to the bare server the ``event`` it delivers."""
    return send_frame(ref, text) if mode == "wsbus" else event_frame(seq, ref, text)


# --------------------------------------------------------------------------- latency


async def latency(
    server: ServerProcess, p: Params, sub_server: ServerProcess | None = None
) -> dict[str, Any]:
    """One publisher, one subscriber, one process: send, wait for delivery, repeat
    (``sub_server``: the subscriber on another hub of the same bus)."""
    mode = server.mode
    tag = run_tag()
    loop = asyncio.get_running_loop()
    on = sub_server or server
    sub = await open_ws(on.url, mode, **on.connect_kw)
    pub = await open_ws(server.url, mode, publisher=True, **server.connect_kw)
    tasks: list[asyncio.Task[None]] = []
    try:
        await handshake(sub, mode, f"{tag}-sub")
        await handshake(pub, mode, "pub")
        waiting: dict[str, Any] = {"i": -1, "fut": None}
        errors: list[Any] = []

        def on_sub(frame: Any) -> None:
            for ev in events_of(frame):
                now = time.perf_counter_ns()  # after parsing the frame
                i, sent, _ = ev["body"].split(" ", 2)
                fut = waiting["fut"]
                if int(i) == waiting["i"] and fut is not None and not fut.done():
                    fut.set_result(now - int(sent))

        def on_pub(frame: Any) -> None:
            if frame.get("op") == "error":
                errors.append(frame)

        tasks = [asyncio.create_task(_drain(sub, on_sub)), asyncio.create_task(_drain(pub, on_pub))]
        samples: list[float] = []
        lost = 0
        total = p.latency_warmup + p.latency_samples
        budget = max(30.0, total * 0.01)
        deadline = time.monotonic() + budget
        with contextlib.suppress(TimeoutError):  # the outer bound: a send that never returns
            async with asyncio.timeout(budget + p.latency_timeout + 1):
                for i in range(total):
                    if time.monotonic() > deadline or lost > 20:
                        break
                    fut: asyncio.Future[int] = loop.create_future()
                    waiting.update(i=i, fut=fut)
                    sent = time.perf_counter_ns()
                    frame = _publish_frame(mode, i + 1, f"{tag}-{i}", body(f"{i} {sent}"))
                    await pub.send(frame, text=True)
                    try:
                        ns = await asyncio.wait_for(fut, p.latency_timeout)
                    except TimeoutError:
                        lost += 1
                        continue
                    if i >= p.latency_warmup:
                        samples.append(ns / 1e6)
        if errors:
            raise BenchError(f"{server.label}: hub answered errors: {errors[:3]}")
        return latency_summary(samples, lost, p.latency_samples)
    finally:
        await _close(pub, sub)
        _cancel(*tasks)


# --------------------------------------------------------------------------- fan-out


async def fanout(
    server: ServerProcess,
    workers: list[Worker],
    subs: int,
    events: int,
    rate: float,
    p: Params,
    spread: list[ServerProcess] | None = None,
) -> dict[str, Any]:
    """``subs`` subscriber connections spread over the worker processes; a paced publisher.

    Before measuring, one warm-up event is delivered to every subscriber, so the
    server has flushed everything the connections caused (wsbus: presence). The
    server's CPU time and the deliveries are counted from the first measured send
    until every subscriber counted every event (or the deadline). ``spread``: the
    hubs of one bus the workers' subscribers connect to in turn (the publisher on
    ``server``); CPU and RSS are then their sums.
    """
    mode = server.mode
    hubs = spread or [server]
    tag = run_tag()
    active = share_out(subs, workers)
    result: dict[str, Any] = {"subscribers": subs, "events": events, "rate": rate}
    rss0 = sum(h.rss() for h in hubs)
    cpu0 = sum(h.cpu() for h in hubs)
    t0 = time.monotonic()
    pub: ClientConnection | None = None
    tasks: list[asyncio.Task[None]] = []
    try:
        await asyncio.gather(
            *(
                w.call(
                    {
                        "cmd": "connect",
                        "url": hubs[i % len(hubs)].url,
                        "mode": mode,
                        "n": n,
                        "prefix": f"{tag}-w{w.index}-",
                        "timeout": p.connect_timeout,
                    },
                    p.connect_timeout + 15,
                )
                for i, (w, n) in enumerate(active)
            )
        )
        result["connect_s"] = time.monotonic() - t0
        result["connect_cpu_s"] = sum(h.cpu() for h in hubs) - cpu0  # server CPU of the storm
        pub = await open_ws(server.url, mode, publisher=True, **server.connect_kw)
        await handshake(pub, mode, "pub")
        oks: list[int] = [0]
        errors: list[Any] = []

        def on_pub(frame: Any) -> None:
            op = frame.get("op")
            if op == "ok":
                oks[0] += 1
            elif op == "error":
                errors.append(frame)

        tasks.append(asyncio.create_task(_drain(pub, on_pub)))

        async def wait_all(target: int, timeout: float) -> list[dict[str, Any]]:
            return await asyncio.gather(
                *(
                    w.call({"cmd": "wait", "target": target, "timeout": timeout}, timeout + 15)
                    for w, _ in active
                )
            )

        # warm-up: one event to everyone flushes what connecting caused
        warm_frame = _publish_frame(mode, 1, f"{tag}-warm", body("warm"))
        await asyncio.wait_for(pub.send(warm_frame, text=True), p.fanout_deadline)
        warm = await wait_all(1, p.fanout_deadline)
        warm_events = sum(r["events"] for r in warm)
        if min(r["min"] for r in warm) < 1:
            raise BenchError(f"{server.label}: warm-up event not delivered to every subscriber")
        rss1 = sum(h.rss() for h in hubs)
        result["rss_per_conn_kib"] = (rss1 - rss0) / 1024 / subs
        result["rss_before_mib"] = rss0 / 2**20
        result["rss_after_mib"] = rss1 / 2**20

        cpu0 = sum(h.cpu() for h in hubs)
        start = time.monotonic()
        try:
            async with asyncio.timeout(events / rate + p.fanout_deadline):
                for i in range(events):
                    delay = start + i / rate - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    frame = _publish_frame(mode, i + 2, f"{tag}-{i}", body(f"{i}"))
                    await pub.send(frame, text=True)
        except TimeoutError:
            result["send_timed_out"] = True
        sent_s = time.monotonic() - start
        done = await wait_all(1 + events, p.fanout_deadline)
        cpu1 = sum(h.cpu() for h in hubs)
        if errors:
            raise BenchError(f"{server.label}: hub answered errors: {errors[:3]}")
        deliveries = sum(r["events"] for r in done) - warm_events
        last = max(r["last"] for r in done)
        span = max(last - start, 1e-9)
        result.update(
            deliveries=deliveries,
            expected=events * subs,
            complete=deliveries == events * subs,
            closed_by_server=sum(r["closed"] for r in done),
            send_s=sent_s,
            span_s=span,
            deliveries_per_s=deliveries / span,
            cpu_s=cpu1 - cpu0,
            cpu_us_per_delivery=(cpu1 - cpu0) / max(deliveries, 1) * 1e6,
            oks=oks[0] if mode == "wsbus" else None,
        )
        return result
    finally:
        if pub is not None:
            await _close(pub)
        _cancel(*tasks)
        await asyncio.gather(
            *(w.call({"cmd": "close"}, 60) for w, _ in active), return_exceptions=True
        )


# --------------------------------------------------------------------------- durable publish


async def durable_publish(server: ServerProcess, events: int, p: Params) -> dict[str, Any]:
    """``durable_conns`` publishers with ``durable_window`` sends in flight each; one subscriber.

    wsbus: a send is done at its ``ok`` (durably committed); rate = events / (first
    send .. last ok). Bare: no ok exists, so a send is done when the counting
    subscriber received it; rate = events / (first send .. last delivery).
    """
    mode = server.mode
    tag = run_tag()
    conns = p.durable_conns
    quota = [events // conns + (1 if i < events % conns else 0) for i in range(conns)]
    sub = await open_ws(server.url, mode, **server.connect_kw)
    pubs: list[ClientConnection] = []
    tasks: list[asyncio.Task[None]] = []
    try:
        await handshake(sub, mode, f"{tag}-sub")
        for _ in range(conns):
            ws = await open_ws(server.url, mode, publisher=True, **server.connect_kw)
            pubs.append(ws)
            await handshake(ws, mode, "pub")
        credit = [asyncio.Semaphore(p.durable_window) for _ in range(conns)]
        state = {"done": 0, "delivered": 0, "last": 0.0}
        errors: list[Any] = []
        all_done = asyncio.Event()

        def finish(k: int) -> None:
            credit[k].release()
            state["done"] += 1
            state["last"] = time.perf_counter()
            if state["done"] >= events:
                all_done.set()

        def on_sub(frame: Any) -> None:
            for ev in events_of(frame):
                state["delivered"] += 1
                if mode == "bare":
                    finish(int(ev["ref"].split("-")[1]))

        def on_pub(k: int) -> Any:
            def handle(frame: Any) -> None:
                op = frame.get("op")
                if op == "ok":
                    finish(k)
                elif op == "error":
                    errors.append(frame)
                    credit[k].release()

            return handle

        tasks.append(asyncio.create_task(_drain(sub, on_sub)))
        tasks += [asyncio.create_task(_drain(ws, on_pub(k))) for k, ws in enumerate(pubs)]
        deadline = time.monotonic() + p.durable_deadline

        async def publish(k: int) -> None:
            ws = pubs[k]
            for i in range(quota[k]):
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                try:
                    await asyncio.wait_for(credit[k].acquire(), left)
                except TimeoutError:
                    return
                frame = _publish_frame(mode, k * events + i + 1, f"{tag}-{k}-{i}", body(f"{k} {i}"))
                await ws.send(frame, text=True)

        cpu0 = server.cpu()
        client0 = time.process_time()
        start = time.perf_counter()
        with contextlib.suppress(TimeoutError):  # the outer bound: a send that never returns
            async with asyncio.timeout(p.durable_deadline + 5):
                await asyncio.gather(*(publish(k) for k in range(conns)))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_done.wait(), max(0.1, deadline - time.monotonic()))
        cpu1 = server.cpu()
        client1 = time.process_time()
        if errors:
            raise BenchError(f"{server.label}: hub answered errors: {errors[:3]}")
        span = max(state["last"] - start, 1e-9)
        # wsbus: let the subscriber catch up (not timed) to check every event arrived
        settle = time.monotonic() + 10
        while mode == "wsbus" and state["delivered"] < state["done"] and time.monotonic() < settle:
            await asyncio.sleep(0.01)
        return {
            "events": events,
            "done": state["done"],
            "delivered": state["delivered"],
            "complete": state["done"] == events,
            "span_s": span,
            "events_per_s": state["done"] / span,
            "cpu_us_per_event": (cpu1 - cpu0) / max(int(state["done"]), 1) * 1e6,
            "client_cpu_us_per_event": (client1 - client0) / max(int(state["done"]), 1) * 1e6,
            "in_flight": conns * p.durable_window,
        }
    finally:
        await _close(*pubs, sub)
        _cancel(*tasks)
