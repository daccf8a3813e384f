"""Scale: a crowd of idle connections, a hub restart under a crowd, latency beside one.

Each scenario runs against a hub of its own and a bare websockets server of its
own (bench/bare_server.py), the crowd in worker processes:

- **idle crowd**: ``idle`` subscribers connect (presence on, as clients connect by
  default); the server's RSS growth per connection once a warm-up event reached all
  of them; then ``broadcasts`` events, one at a time, each to all of them: send ->
  the last delivery;
- **restart**: ``restart_subs`` subscribers that reconnect whenever the server
  closes them (wsbus: ``resume`` at their last seq, as the Python client does); the
  server is stopped (SIGTERM) and started again on the same port; SIGTERM -> the last
  subscriber handshaken again. On the hub an event is sent as soon as it listens
  again, before the crowd is back: every subscriber must get it exactly once (the
  resume replays it), and nothing twice;
- **latency beside a crowd**: the latency scenario (bench/scenarios.py) while
  ``background`` idle connections are held (wsbus: subscribers of another channel;
  bare: on ``/idle``, never sent anything).

``python -m bench.scale [--idle N] [--background N] [--restart N]`` runs it alone.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .common import IDLE_CHANNEL, BenchError, alone, body, handshake, open_ws, step
from .report import Row, _get, _ratio, _section
from .scenarios import Params, _drain, _publish_frame, latency, run_tag
from .servers import ServerProcess
from .workers import Worker, share_out

__all__ = ["ScaleParams", "scale_rows", "section"]

SECTION = (
    "**Scale** (a hub and a bare websockets server of their own each; the crowd in worker "
    "processes)"
)
UNLIMITED = ("--rate-events", "0", "--rate-bytes", "0")


@dataclass
class ScaleParams:
    idle: int = 10_000
    broadcasts: int = 5
    restart_subs: int = 1000
    background: int = 1000
    workers: int = 4
    connect_timeout: float = 300.0
    deadline: float = 120.0

    @classmethod
    def quick(cls) -> ScaleParams:
        return cls(idle=1000, broadcasts=3, restart_subs=200, background=200, deadline=60.0)


async def _connect(
    s: ServerProcess, workers: list[Worker], n: int, sp: ScaleParams, **extra: Any
) -> list[tuple[Worker, int]]:
    active = share_out(n, workers)
    tag = run_tag()

    def cmd(w: Worker, k: int) -> dict[str, Any]:
        return {"cmd": "connect", "url": s.url, "mode": s.mode, "n": k,
                "prefix": f"{tag}-w{w.index}-", "timeout": sp.connect_timeout, **extra}  # fmt: skip

    await asyncio.gather(*(w.call(cmd(w, k), sp.connect_timeout + 30) for w, k in active))
    return active


async def _close(active: list[tuple[Worker, int]]) -> None:
    await asyncio.gather(*(w.call({"cmd": "close"}, 120) for w, _ in active))


async def _wait(active: list[tuple[Worker, int]], target: int, timeout: float) -> dict[str, Any]:
    """Every connection counted ``target`` events (or the timeout): totals, and when
    the last event arrived (time.monotonic, system-wide)."""
    got = await asyncio.gather(
        *(w.call({"cmd": "wait", "target": target, "timeout": timeout}, timeout + 30)
          for w, _ in active)
    )  # fmt: skip
    return {
        "events": sum(r["events"] for r in got),
        "min": min(r["min"] for r in got),
        "closed": sum(r["closed"] for r in got),
        "last": max(r["last"] for r in got),
    }


class _Publisher:
    """One send-only connection; for wsbus, each send waits for its ``ok``."""

    def __init__(self, s: ServerProcess) -> None:
        self.s = s
        self.oks: asyncio.Queue[Any] = asyncio.Queue()
        self.seq = 0

    async def __aenter__(self) -> _Publisher:
        self.ws = await open_ws(self.s.url, self.s.mode, publisher=True, **self.s.connect_kw)
        await handshake(self.ws, self.s.mode, "pub")
        self.task = asyncio.create_task(_drain(self.ws, self._frame))
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.task.cancel()
        await self.ws.close()

    def _frame(self, frame: Any) -> None:
        if frame.get("op") in ("ok", "error"):
            self.oks.put_nowait(frame)

    async def send(self, text: str, timeout: float = 30.0) -> float:
        """Send one event to the channel; the ``time.monotonic()`` it was sent."""
        self.seq += 1
        sent = time.monotonic()
        await self.ws.send(_publish_frame(self.s.mode, self.seq, run_tag(), body(text)), text=True)
        if self.s.mode == "wsbus":
            answer = await asyncio.wait_for(self.oks.get(), timeout)
            if answer.get("op") != "ok":
                raise BenchError(f"{self.s.label}: send refused: {answer}")
        return sent


async def idle_crowd(s: ServerProcess, workers: list[Worker], sp: ScaleParams) -> dict[str, Any]:
    n = sp.idle
    rss0, cpu0, t0 = s.rss(), s.cpu(), time.monotonic()
    active = await _connect(s, workers, n, sp)
    out: dict[str, Any] = {"connections": n, "connect_s": time.monotonic() - t0}
    out["connect_cpu_s"] = s.cpu() - cpu0
    try:
        async with _Publisher(s) as pub:
            await pub.send("warm")
            warm = await _wait(active, 1, sp.deadline)
            if warm["min"] < 1:
                raise BenchError(f"{s.label}: the warm-up event did not reach every connection")
            rss1 = s.rss()
            out.update(rss_per_conn_kib=(rss1 - rss0) / 1024 / n, rss_after_mib=rss1 / 2**20)
            out["open_files"] = s.num_fds()
            times = []
            for i in range(sp.broadcasts):
                sent = await pub.send(f"all {i}")
                done = await _wait(active, 2 + i, sp.deadline)
                if done["min"] < 2 + i:
                    out["complete"] = False
                    break
                times.append((done["last"] - sent) * 1e3)
            out["broadcast_ms"] = statistics.median(times) if times else float("nan")
            out["broadcast_max_ms"] = max(times, default=float("nan"))
            out["deliveries"] = (await _wait(active, 0, 1))["events"]
            out.setdefault("complete", out["deliveries"] == n * (1 + sp.broadcasts))
    finally:
        await _close(active)
    return out


async def restart(s: ServerProcess, workers: list[Worker], sp: ScaleParams) -> dict[str, Any]:
    n = sp.restart_subs
    active = await _connect(s, workers, n, sp, reconnect=True)
    out: dict[str, Any] = {"subscribers": n}
    try:
        async with _Publisher(s) as pub:
            await pub.send("before")
            if (await _wait(active, 1, sp.deadline))["min"] < 1:
                raise BenchError(f"{s.label}: the first event did not reach every subscriber")
        t0 = time.monotonic()
        await asyncio.to_thread(s.restart)
        out["listening_s"] = time.monotonic() - t0
        if s.mode == "wsbus":  # sent before the crowd is back: only a resume brings it
            async with _Publisher(s) as pub:
                await pub.send("while away")
        live = await asyncio.gather(
            *(w.call({"cmd": "live", "since": t0, "timeout": sp.deadline}, sp.deadline + 30)
              for w, _ in active)
        )  # fmt: skip
        back = sum(r["live"] for r in live)
        out.update(live=back, live_s=max(r["last"] for r in live) - t0)
        if s.mode == "bare":  # the bare server has no history: check the crowd is served
            async with _Publisher(s) as pub:
                await pub.send("after")
        done = await _wait(active, 2, sp.deadline)
        # exactly two events each: none missed (the resume), none twice
        out.update(
            resumed=done["events"] == 2 * n and done["min"] == 2,
            events=done["events"],
            complete=back == n and done["events"] == 2 * n,
        )
    finally:
        await _close(active)
    return out


async def crowd_latency(
    s: ServerProcess, workers: list[Worker], sp: ScaleParams, p: Params
) -> dict[str, Any]:
    idle = {"idle": True} if s.mode == "bare" else {"channel": IDLE_CHANNEL}
    active = await _connect(s, workers, sp.background, sp, **idle)
    try:
        out = await latency(s, p)
    finally:
        await _close(active)
    out["background"] = sp.background
    return out


async def section(
    runs: dict[str, Any],
    errors: list[str],
    tmp: Path,
    env: dict[str, str],
    sp: ScaleParams,
    p: Params,
) -> None:
    workers = [await Worker.start(100 + i, env, tmp / f"scale{i}.log") for i in range(sp.workers)]
    scenarios = [
        ("scale_idle", lambda s: idle_crowd(s, workers, sp)),
        ("scale_restart", lambda s: restart(s, workers, sp)),
        ("scale_latency", lambda s: crowd_latency(s, workers, sp, p)),
    ]
    try:
        for key, run in scenarios:
            for server in (
                ServerProcess.hub(f"scale-{key}", tmp, env, *UNLIMITED),
                ServerProcess.bare(tmp, env),
            ):
                server.start()
                try:
                    await step(runs, errors, key, server.key, run(server))
                finally:
                    server.stop()
                for i, w in enumerate(workers):  # a worker out of step is replaced
                    if w.broken:
                        await w.stop()
                        workers[i] = await Worker.start(w.index, env, tmp / f"scale{i}.log")
    finally:
        await asyncio.gather(*(w.stop() for w in workers), return_exceptions=True)


def scale_rows(results: dict[str, Any]) -> list[Row]:
    out = [_section(SECTION)]

    def pair(name: str, key: str, field: str) -> None:
        a, at = _get(results, key, "wsbus", field)
        b, bt = _get(results, key, "bare", field)
        out.append(Row(name, at, bt, _ratio(a, b)))

    def of(key: str, field: str) -> Any:
        return (results.get(key, {}).get("wsbus") or {}).get(field, "?")

    n = of("scale_idle", "connections")
    n_text = f"{n:,}" if isinstance(n, int) else n
    pair(f"{n_text} idle connections: RSS per connection (KiB)", "scale_idle", "rss_per_conn_kib")
    pair(f"{n_text} idle connections: connect all, presence on (s)", "scale_idle", "connect_s")
    pair(f"{n_text} idle connections: server CPU to connect (s)", "scale_idle", "connect_cpu_s")
    pair(f"broadcast to {n_text}: send -> last delivery (ms, median)", "scale_idle", "broadcast_ms")
    r = of("scale_restart", "subscribers")
    resumed = of("scale_restart", "resumed")
    pair(f"restart with {r} subscribers: SIGTERM -> the last one live again (s; all resumed: "
         f"{'yes' if resumed is True else 'NO' if resumed is False else '?'})",
         "scale_restart", "live_s")  # fmt: skip
    pair("restart: SIGTERM -> listening again (s)", "scale_restart", "listening_s")
    b = of("scale_latency", "background")
    for q in ("p50", "p99"):
        pair(f"latency {q} beside {b} idle connections (ms)", "scale_latency", f"{q}_ms")
    return out


async def _alone(sp: ScaleParams, p: Params) -> int:
    return await alone(
        "scale", lambda runs, errors, tmp, env: section(runs, errors, tmp, env, sp, p), scale_rows
    )


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="small counts")
    ap.add_argument("--idle", type=int, help=f"idle connections (default {ScaleParams.idle})")
    ap.add_argument("--background", type=int, help="idle connections beside the latency run")
    ap.add_argument("--restart", type=int, help="subscribers through the restart")
    args = ap.parse_args()
    sp = ScaleParams.quick() if args.quick else ScaleParams()
    p = Params.quick() if args.quick else Params()
    sp.idle = args.idle or sp.idle
    sp.background = args.background or sp.background
    sp.restart_subs = args.restart or sp.restart_subs
    try:
        return asyncio.run(_alone(sp, p))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
