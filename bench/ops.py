"""Operating the bus: ``/ws`` on the HTTP port, and what watching a busy hub costs.

Against a hub of its own holding ``idle`` open connections (in worker processes):

- publish → deliver latency to a subscriber on ``/ws`` (aiohttp, the dashboard's
  path), against a subscriber on the websocket port (``websockets``), alternating,
  from one publisher on the websocket port;
- one ``/metrics`` scrape (Prometheus' text, the gauges that ask the store
  included), against ``GET /healthz`` on the same port (the HTTP stack's floor);
- one ``hub_status`` round trip (every channel's connections, the mail waiting),
  against a ``ping`` round trip on the same connection.

``python -m bench.ops [--idle N] [--messages N]`` runs this section alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wsbus.hubstatus import REUSE

from .common import alone, step
from .report import Row, _get, _ratio, _section
from .scenarios import percentile
from .servers import ServerProcess
from .workers import Worker

__all__ = ["OpsParams", "ops_rows", "section"]

SECTION = (
    "**Operations** (`/ws` on the HTTP port, `/metrics`, `hub_status`; a hub holding idle "
    "connections; baseline as named, same hub, same run)"
)


@dataclass
class OpsParams:
    idle: int = 500
    messages: int = 300
    scrapes: int = 50
    statuses: int = 8

    @classmethod
    def quick(cls) -> OpsParams:
        return cls(idle=100, messages=60, scrapes=15, statuses=2)


def _ms(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(statistics.median(ordered) * 1e3, 3),
        "p99_ms": round(percentile(ordered, 99) * 1e3, 3),
    }


async def _answer(conn: Any, op: str) -> None:
    """Until the frame ``op`` arrives; an ``error`` instead is the scenario's failure."""
    while True:
        frame = json.loads(await conn.recv())
        if frame["op"] == op:
            return
        if frame["op"] == "error":
            raise RuntimeError(f"the hub answered {frame}")


def _get_url(url: str) -> float:
    began = time.perf_counter()
    with urllib.request.urlopen(url, timeout=30) as r:
        r.read()
    return time.perf_counter() - began


async def ops_scenario(
    hub: ServerProcess, op: OpsParams, env: dict[str, str], tmp: Path
) -> dict[str, Any]:
    from websockets.asyncio.client import connect

    http = hub.http_url
    ws_on_http = http.replace("http://", "ws://", 1) + "/ws"
    worker = await Worker.start(0, env, tmp / "ops-worker.log")
    try:
        cmd = {"cmd": "connect", "url": hub.url, "mode": "wsbus", "n": op.idle, "prefix": "idle-"}
        ready = await worker.call({**cmd, "timeout": 120}, 150)
        if not ready["ok"]:
            raise RuntimeError(f"idle connections: {ready}")
        hello = {"op": "hello", "channels": ["default"]}
        kw: dict[str, Any] = {"subprotocols": ["wsbus.v1.json"], "compression": None}
        async with (
            connect(hub.url, **kw) as pub,
            connect(hub.url, **kw) as sub_port,
            connect(ws_on_http, **kw) as sub_http,
        ):
            for conn, name in ((pub, "pub"), (sub_port, "sub-port"), (sub_http, "sub-http")):
                await conn.send(json.dumps({**hello, "name": name}))
                while json.loads(await conn.recv())["op"] != "synced":
                    pass
            delays: dict[str, list[float]] = {"port": [], "http": []}
            for i in range(op.messages):
                for label, conn, name in (
                    ("port", sub_port, "sub-port"),
                    ("http", sub_http, "sub-http"),
                )[:: 1 if i % 2 else -1]:
                    began = time.perf_counter()
                    frame = {"op": "send", "ref": f"{label}{i}", "to": name, "body": str(i)}
                    await pub.send(json.dumps(frame))
                    while json.loads(await conn.recv())["op"] not in ("event", "events"):
                        pass
                    delays[label].append(time.perf_counter() - began)
            scrapes, healths, statuses, pings = [], [], [], []
            for _ in range(op.scrapes):
                scrapes.append(await asyncio.to_thread(_get_url, http + "/metrics"))
                healths.append(await asyncio.to_thread(_get_url, http + "/healthz"))
            for i in range(op.statuses):
                # each answer built anew: the hub reuses one for a second (REUSE)
                await asyncio.sleep(REUSE)
                began = time.perf_counter()
                await pub.send(json.dumps({"op": "hub_status", "ref": f"s{i}"}))
                await _answer(pub, "hub_status_result")
                statuses.append(time.perf_counter() - began)
                began = time.perf_counter()
                await pub.send(json.dumps({"op": "ping", "ref": f"p{i}"}))
                await _answer(pub, "pong")
                pings.append(time.perf_counter() - began)
    finally:
        await worker.call({"cmd": "close"}, 60)
        await worker.stop()
    out: dict[str, Any] = {"idle": op.idle, "messages": op.messages}
    for label, samples in (
        ("ws_http", delays["http"]),
        ("ws_port", delays["port"]),
        ("metrics", scrapes),
        ("healthz", healths),
        ("status", statuses),
        ("ping", pings),
    ):
        for k, v in _ms(samples).items():
            out[f"{label}_{k}"] = v
    return out


async def section(
    runs: dict[str, Any], errors: list[str], tmp: Path, env: dict[str, str], op: OpsParams
) -> None:
    hub = ServerProcess.hub("ops", tmp, env, "--rate-events", "0", "--rate-bytes", "0")
    hub.start()
    try:
        await step(runs, errors, "ops", "wsbus", ops_scenario(hub, op, env, tmp))
    finally:
        hub.stop()


def ops_rows(results: dict[str, Any]) -> list[Row]:
    out = [_section(SECTION)]
    idle = (results.get("ops", {}).get("wsbus") or {}).get("idle", "?")

    def pair(name: str, field: str, base: str) -> None:
        a, at = _get(results, "ops", "wsbus", field)
        b, bt = _get(results, "ops", "wsbus", base)
        out.append(Row(name, at, bt, _ratio(a, b)))

    for q in ("p50", "p99"):
        pair(f"latency to a `/ws` subscriber {q} (ms; baseline a subscriber on the websocket "
             f"port; {idle} idle connections)", f"ws_http_{q}_ms", f"ws_port_{q}_ms")  # fmt: skip
    pair(f"`/metrics` scrape p50 (ms; baseline `GET /healthz`; {idle} idle connections)",
         "metrics_p50_ms", "healthz_p50_ms")  # fmt: skip
    pair(f"`hub_status` round trip, answer built anew, p50 (ms; baseline `ping`; {idle} idle "
         "connections)",
         "status_p50_ms", "ping_p50_ms")  # fmt: skip
    return out


async def _alone(op: OpsParams) -> int:
    return await alone(
        "ops", lambda runs, errors, tmp, env: section(runs, errors, tmp, env, op), ops_rows
    )


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.ops", description=__doc__)
    ap.add_argument("--idle", type=int, default=OpsParams.idle)
    ap.add_argument("--messages", type=int, default=OpsParams.messages)
    ap.add_argument("--scrapes", type=int, default=OpsParams.scrapes)
    args = ap.parse_args()
    op = OpsParams(
        idle=max(0, args.idle), messages=max(1, args.messages), scrapes=max(1, args.scrapes)
    )
    try:
        return asyncio.run(_alone(op))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
