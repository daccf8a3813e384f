"""MCP: how soon an agent on ``wsbus mcp`` hears of a message, and what a tool costs.

Against a hub of its own: an MCP server (``wsbus mcp --as carol``, started by the MCP
SDK's stdio client, as a coding agent starts it) and, as the baseline, ``wsbus listen
bob`` (a subprocess whose stdout is read). One message at a time, alternating:

- ``wait`` wake-up: a ``wait`` tool call is blocked, a Python client sends to carol;
  the time from the send to the tool's result (which also marks it read);
- ``wsbus listen``: the time from a send to bob until the listener printed its block;
- a tool call's round trip: ``roster`` through MCP against the same query from the
  Python client; ``whoami`` (answered by the MCP server alone) shows MCP's own cost.

``python -m bench.mcp [--messages N]`` runs this section alone.
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

from .common import alone, step
from .report import Row, _get, _ratio, _section
from .scenarios import percentile
from .servers import ServerProcess

__all__ = ["McpParams", "mcp_rows", "section"]

SECTION = (
    "**MCP** (`wsbus mcp`, driven by the MCP SDK's stdio client; baseline as named, same "
    "hub, same run)"
)
#: the pause that lets a ``wait`` call block before the send (so the wake-up is measured)
SETTLE = 0.05


@dataclass
class McpParams:
    messages: int = 100
    calls: int = 300

    @classmethod
    def quick(cls) -> McpParams:
        return cls(messages=15, calls=40)


def _stats(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(statistics.median(ordered) * 1e3, 2),
        "p99_ms": round(percentile(ordered, 99) * 1e3, 2),
    }


async def _listened(proc: asyncio.subprocess.Process, deadline: float) -> None:
    """Until the listener printed the end of a block (``---``)."""
    assert proc.stdout is not None
    while True:
        line = await asyncio.wait_for(proc.stdout.readline(), deadline - time.monotonic())
        if not line:
            raise RuntimeError("wsbus listen exited")
        if line.rstrip() == b"---":
            return


async def mcp_scenario(hub: ServerProcess, env: dict[str, str], mp: McpParams) -> dict[str, Any]:
    from mcp import ClientSession, StdioServerParameters, stdio_client

    from wsbus import Client

    run_env = dict(env, WSBUS_URL=hub.url)
    listener = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "wsbus", "listen", "bob", "--no-cursor", "-q",
        env=run_env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "wsbus", "mcp", "--as", "carol"], env=run_env
    )
    waits: list[float] = []
    listens: list[float] = []
    try:
        async with (
            stdio_client(params) as (read, write),
            ClientSession(read, write) as session,
            Client(hub.url, "alice", channels=[]) as alice,
        ):
            await session.initialize()
            deadline = time.monotonic() + 30
            while not (await session.call_tool("whoami", {})).structured_content["connected"]:
                if time.monotonic() > deadline:
                    raise RuntimeError("the MCP server did not reach the hub")
                await asyncio.sleep(0.05)
            await alice.send("bob", "warm-up")  # the listener is connected once it prints
            await _listened(listener, time.monotonic() + 30)
            for i in range(mp.messages):
                call = asyncio.create_task(session.call_tool("wait", {"timeout_s": 30}))
                await asyncio.sleep(SETTLE)
                began = time.perf_counter()
                await alice.send("carol", f"wake {i}")
                result = await asyncio.wait_for(call, 30)
                waits.append(time.perf_counter() - began)
                if result.is_error or not result.structured_content["messages"]:
                    raise RuntimeError(f"wait returned {result.content}")
                began = time.perf_counter()
                await alice.send("bob", f"wake {i}")
                await _listened(listener, time.monotonic() + 30)
                listens.append(time.perf_counter() - began)
            through_mcp, direct, local = [], [], []
            for _ in range(mp.calls):
                began = time.perf_counter()
                await session.call_tool("roster", {})
                through_mcp.append(time.perf_counter() - began)
                began = time.perf_counter()
                await alice.roster("default")
                direct.append(time.perf_counter() - began)
                began = time.perf_counter()
                await session.call_tool("whoami", {})
                local.append(time.perf_counter() - began)
    finally:
        if listener.returncode is None:
            listener.terminate()
            await listener.wait()
    out: dict[str, Any] = {"messages": mp.messages, "calls": mp.calls}
    for label, samples in (
        ("wait", waits),
        ("listen", listens),
        ("roster_mcp", through_mcp),
        ("roster_client", direct),
        ("whoami", local),
    ):
        for k, v in _stats(samples).items():
            out[f"{label}_{k}"] = v
    return out


async def section(
    runs: dict[str, Any], errors: list[str], tmp: Path, env: dict[str, str], mp: McpParams
) -> None:
    hub = ServerProcess.hub("mcp", tmp, env, "--rate-events", "0", "--rate-bytes", "0")
    hub.start()
    try:
        await step(runs, errors, "mcp", "wsbus", mcp_scenario(hub, env, mp))
    finally:
        hub.stop()


def mcp_rows(results: dict[str, Any]) -> list[Row]:
    out = [_section(SECTION)]

    def pair(name: str, field: str, base: str | None) -> None:
        a, at = _get(results, "mcp", "wsbus", field)
        if base is None:
            out.append(Row(name, at, "n/a", "-"))
            return
        b, bt = _get(results, "mcp", "wsbus", base)
        out.append(Row(name, at, bt, _ratio(a, b)))

    for q in ("p50", "p99"):
        pair(f"`wait` wake-up, send → tool result {q} (ms; baseline `wsbus listen`: send → "
             "block printed)", f"wait_{q}_ms", f"listen_{q}_ms")  # fmt: skip
    for q in ("p50", "p99"):
        pair(f"tool call `roster` round trip {q} (ms; baseline the same query from the "
             "Python client)", f"roster_mcp_{q}_ms", f"roster_client_{q}_ms")  # fmt: skip
    pair("tool call `whoami` (no hub) p50 (ms): MCP's own cost", "whoami_p50_ms", None)
    return out


async def _alone(mp: McpParams) -> int:
    return await alone(
        "mcp", lambda runs, errors, tmp, env: section(runs, errors, tmp, env, mp), mcp_rows
    )


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.mcp", description=__doc__)
    ap.add_argument("--messages", type=int, default=McpParams.messages)
    ap.add_argument("--calls", type=int, default=McpParams.calls)
    args = ap.parse_args()
    mp = McpParams(messages=max(1, args.messages), calls=max(1, args.calls))
    try:
        return asyncio.run(_alone(mp))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
