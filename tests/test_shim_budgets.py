"""The HTTP shim within its budgets, against a real hub: its memory does not grow
with the bodies stored, and legacy polls with old cursors never stall the loop."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

import psutil
import pytest

from bench.hostile import POLLERS

from .helpers import HubProcess, RawClient
from .test_invariants import publish
from .test_store_faults import _ping_rtts

MiB = 1 << 20


async def test_hub_memory_does_not_grow_with_stored_bodies(
    hub_factory: Callable[..., HubProcess],
) -> None:
    """1500 bodies of 64 KiB (94 MiB) on a channel nobody polls: the shim's window
    keeps none of them (they are read from the store when polled)."""
    hub = hub_factory("--rate-events", "0", "--rate-bytes", "0")
    assert hub.proc is not None
    proc = psutil.Process(hub.proc.pid)
    await publish(hub.url, "warmup", 50, body="w" * 65000, in_flight=16)
    before = proc.memory_info().rss
    count = 1500
    seqs = await publish(hub.url, "alice", count, body="b" * 65000, in_flight=16)
    assert len(seqs) == count
    grown = proc.memory_info().rss - before
    print(f"hub RSS grew {grown / MiB:.1f} MiB for {count * 65000 / MiB:.0f} MiB of bodies")
    assert grown < 32 * MiB, f"hub RSS grew {grown / MiB:.0f} MiB"


@pytest.mark.sqlite_budget
async def test_old_cursor_polls_do_not_stall_the_loop(
    hub_factory: Callable[..., HubProcess],
) -> None:
    """39,000 events, none for the pollers; rounds of 400 concurrent /recv with an
    old cursor (before the window was indexed, each scanned the whole window on the
    loop; now the window bisects, and older cursors go to the store's thread) while
    pings go round on a websocket."""
    hub = hub_factory("--rate-events", "0", "--rate-bytes", "0")
    await publish(hub.url, "alice", 39_000, to="bob", in_flight=256)
    raw = RawClient(hub.url)
    await raw.open({"name": "carol"})
    await raw.send({"op": "history", "ref": "h", "after": 29_999, "limit": 1})
    recent = (await raw.recv_op("history_result"))["events"][0]["ts"]  # type: ignore[index]

    async def worst_ping_during(path: str) -> float:
        pollers = subprocess.Popen(
            [sys.executable, "-c", POLLERS, hub.http_url, path, "3", "400", repr(recent)],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert pollers.stdout is not None and pollers.stdout.readline().strip() == "ready"
            rtts = await _ping_rtts(raw, lambda: pollers.poll() is not None, 60)
            assert pollers.wait(60) == 0
        finally:
            if pollers.poll() is None:
                pollers.kill()
                pollers.wait(10)
        return max(rtts)

    # the baseline: what 3 x 400 concurrent requests cost aiohttp itself
    floor = await worst_ping_during("/healthz")
    worst = await worst_ping_during("/recv")
    print(f"worst ping: {worst * 1000:.0f} ms during old-cursor polls, "
          f"{floor * 1000:.0f} ms during as many /healthz")  # fmt: skip
    # before: 2 s against 50 ms (each poll scanned the window on the loop); now about
    # twice the floor (a /recv does more than a /healthz)
    assert worst < 3 * floor + 0.05, f"a ping waited {worst * 1000:.0f} ms"
    await raw.close()
