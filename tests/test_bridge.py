"""The tmux bridge end to end: a hub process, real tmux servers, fake agent TUIs.

Each test builds one or two simulated machines (tests/tmuxkit.py): a private tmux
server, a registry and a ``wsbus bridge`` process, all talking to one hub.
Assertions are on what the fake TUIs actually received as submitted lines.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from wsbus.cli.inject import stamp_hm
from wsbus.cli.wire import wait_receipt
from wsbus.client import Client

from .helpers import HubProcess, async_wait_for, wait_for
from .tmuxkit import TMUX, Machine

pytestmark = pytest.mark.skipif(TMUX is None, reason="tmux is not installed")

MARKER = "«agent-msg»"


@pytest.fixture
def machines(
    tmp_path: Path, env: dict[str, str], hub: HubProcess
) -> Iterator[Callable[[str], Machine]]:
    made: list[Machine] = []

    def make(host: str) -> Machine:
        m = Machine(tmp_path, host, env, hub.url)
        made.append(m)
        return m

    yield make
    for m in made:
        m.close()


async def sender(hub: HubProcess, name: str) -> Client:
    c = Client(hub.url, name, channels=[], presence=False)
    await c.connect()
    return c


async def test_short_message_is_one_submitted_line_with_a_receipt(
    hub: HubProcess, machines: Callable[[str], Machine]
) -> None:
    m = machines("alpha")
    codex = m.agent("codex")
    m.start_bridge()
    c = await sender(hub, "claude")
    try:
        ok = await c.send("codex", "build the parser")
        assert ok.online is True
        got = await wait_receipt(c, ok.seq, {"codex"}, timeout=20)
        assert got["codex"].status == "submitted", got
    finally:
        await c.close()
    line = f"{MARKER} from=claude {stamp_hm(ok.ts)} | build the parser"
    assert codex.submitted() == [line]
