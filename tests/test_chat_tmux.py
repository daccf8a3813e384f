"""``wsbus chat`` in a real terminal: a private tmux server, keys typed with send-keys.

The chat runs as ``python -m wsbus chat --as alice`` in a tmux pane, with a clean
environment pointing at a hub process. What it sends is checked with a client on the bus;
what it shows, with ``capture-pane``. Only this test's tmux server is stopped.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from wsbus import Client

from .helpers import HubProcess, async_wait_for
from .test_chat import next_event
from .tmuxkit import TMUX, TmuxServer

pytestmark = pytest.mark.skipif(TMUX is None, reason="tmux is not installed")

SESSION = "chat"
HEIGHT = 24
PROMPT = "#default> "


@pytest.fixture
def tmux() -> Iterator[TmuxServer]:
    server = TmuxServer()
    try:
        yield server
    finally:
        server.kill()


def rows(tmux: TmuxServer) -> list[str]:
    return [row.rstrip() for row in tmux.tmux.capture_rows(SESSION, 0, HEIGHT - 1)]


def prompt_row(tmux: TmuxServer) -> str | None:
    return next((row for row in rows(tmux) if row.startswith(PROMPT.rstrip())), None)


async def on_screen(tmux: TmuxServer, check: str, timeout: float = 10.0) -> None:
    try:
        await async_wait_for(lambda: any(check in row for row in rows(tmux)), timeout, 0.05)
    except AssertionError:
        screen = "\n".join(rows(tmux))
        raise AssertionError(f"{check!r} not on screen:\n{screen}") from None


async def test_chat_in_tmux_sends_and_keeps_half_typed_input(
    hub: HubProcess, env: dict[str, str], tmp_path: Path, tmux: TmuxServer
) -> None:
    chat_env = {
        **env,
        "WSBUS_URL": hub.url,
        "XDG_STATE_HOME": str(tmp_path / "state"),
        "TERM": "xterm-256color",
    }
    command = [
        "env", "-i", *(f"{k}={v}" for k, v in chat_env.items()),
        sys.executable, "-m", "wsbus", "chat", "--as", "alice",
    ]  # fmt: skip
    async with Client(hub.url, "bob") as bob:
        tmux.tmux.new_session(SESSION, command, width=100, height=HEIGHT)
        await on_screen(tmux, "connected │ #default", timeout=20)
        await async_wait_for(lambda: prompt_row(tmux) == PROMPT.rstrip(), 10, 0.05)

        tmux.tmux.send_literal(SESSION, "hello from tmux")
        tmux.tmux.send_enter(SESSION)
        got = await next_event(bob)
        assert (got.from_, got.to, got.body, got.kind) == ("alice", "*", "hello from tmux", "human")
        await on_screen(tmux, "alice (human): hello from tmux")

        tmux.tmux.send_literal(SESSION, "half typed")
        await async_wait_for(lambda: prompt_row(tmux) == PROMPT + "half typed", 10, 0.05)
        await bob.send("alice", "ping alice")
        await on_screen(tmux, "bob → you: ping alice")
        screen = rows(tmux)
        assert prompt_row(tmux) == PROMPT + "half typed", "\n".join(screen)
        message = next(i for i, row in enumerate(screen) if "bob → you: ping alice" in row)
        prompt = next(i for i, row in enumerate(screen) if row.startswith(PROMPT.rstrip()))
        assert message < prompt  # printed above the prompt, the input left alone

        tmux.tmux.send_literal(SESSION, " and finished")
        tmux.tmux.send_enter(SESSION)
        got = await next_event(bob)
        assert (got.to, got.body) == ("*", "half typed and finished")

        # Ctrl-D leaves. Between two prompts the terminal is in cooked mode, where the
        # tty itself would swallow a ^D: first make sure the next prompt reads keys.
        tmux.tmux.send_literal(SESSION, "x")
        await async_wait_for(lambda: prompt_row(tmux) == PROMPT + "x", 10, 0.05)
        tmux.tmux.run("send-keys", "-t", f"={SESSION}:", "BSpace")
        await async_wait_for(lambda: prompt_row(tmux) == PROMPT.rstrip(), 10, 0.05)
        tmux.tmux.run("send-keys", "-t", f"={SESSION}:", "C-d")
        await async_wait_for(lambda: not tmux.tmux.has_session(SESSION), 10, 0.05)
