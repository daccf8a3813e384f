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
    """The prompt's row: the last one that starts like it (commands typed stay above)."""
    return next((row for row in reversed(rows(tmux)) if row.startswith(PROMPT.rstrip())), None)


async def on_screen(tmux: TmuxServer, check: str, timeout: float = 10.0) -> None:
    try:
        await async_wait_for(lambda: any(check in row for row in rows(tmux)), timeout, 0.05)
    except AssertionError:
        screen = "\n".join(rows(tmux))
        raise AssertionError(f"{check!r} not on screen:\n{screen}") from None


async def start_chat(
    hub: HubProcess, env: dict[str, str], tmp_path: Path, tmux: TmuxServer
) -> None:
    """``wsbus chat --as alice`` in the test's tmux server, connected, its prompt empty."""
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
    tmux.tmux.new_session(SESSION, command, width=100, height=HEIGHT)
    await on_screen(tmux, "connected │ #default", timeout=20)
    await async_wait_for(lambda: prompt_row(tmux) == PROMPT.rstrip(), 10, 0.05)


async def prompt_is(tmux: TmuxServer, text: str) -> None:
    """Wait until the prompt holds exactly ``text``."""
    want = (PROMPT + text).rstrip()
    try:
        await async_wait_for(lambda: prompt_row(tmux) == want, 10, 0.05)
    except AssertionError:
        screen = "\n".join(rows(tmux))
        raise AssertionError(f"the prompt is not {want!r}:\n{screen}") from None


async def test_chat_in_tmux_sends_and_keeps_half_typed_input(
    hub: HubProcess, env: dict[str, str], tmp_path: Path, tmux: TmuxServer
) -> None:
    async with Client(hub.url, "bob") as bob:
        await start_chat(hub, env, tmp_path, tmux)

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
        # tty itself would swallow a ^D (and a key typed then may be flushed when the
        # next prompt takes the terminal): first make sure the next prompt reads keys,
        # typing an "x" until one shows, then erasing what was typed.
        for _ in range(10):
            tmux.tmux.send_literal(SESSION, "x")
            try:
                await async_wait_for(
                    lambda: (prompt_row(tmux) or "").startswith(PROMPT + "x"), 2, 0.05
                )
                break
            except AssertionError:
                continue
        else:
            raise AssertionError("the prompt never took a key:\n" + "\n".join(rows(tmux)))
        for _ in range(20):
            row = prompt_row(tmux)
            if row == PROMPT.rstrip():
                break
            tmux.tmux.run("send-keys", "-t", f"={SESSION}:", "BSpace")
            await async_wait_for(lambda row=row: prompt_row(tmux) != row, 10, 0.05)
        await prompt_is(tmux, "")
        tmux.tmux.run("send-keys", "-t", f"={SESSION}:", "C-d")
        await async_wait_for(lambda: not tmux.tmux.has_session(SESSION), 10, 0.05)


async def test_an_unknown_command_clears_the_prompt_a_message_comes_back(
    hub: HubProcess, env: dict[str, str], tmp_path: Path, tmux: TmuxServer
) -> None:
    async with Client(hub.url, "bob") as bob:
        await start_chat(hub, env, tmp_path, tmux)
        await on_screen(tmux, "online: alice, bob")  # bob is known: @bobb gets a did-you-mean
        tmux.tmux.send_literal(SESSION, "/tread build")
        tmux.tmux.send_enter(SESSION)
        await on_screen(tmux, "! unknown command /tread — did you mean /thread?")
        # the error is shown and the prompt is empty: the next command stands alone
        await prompt_is(tmux, "")
        tmux.tmux.send_literal(SESSION, "/who")
        tmux.tmux.send_enter(SESSION)
        await on_screen(tmux, "● bob")
        assert not any("/tread build/who" in row for row in rows(tmux)), "\n".join(rows(tmux))
        await prompt_is(tmux, "")  # (the next prompt may be drawn a moment after the output)

        # a message to a mistyped name comes back in the prompt, to be fixed
        tmux.tmux.send_literal(SESSION, "@bobb the build is green")
        tmux.tmux.send_enter(SESSION)
        await on_screen(tmux, "! unknown name 'bobb' — did you mean 'bob'?")
        await prompt_is(tmux, "@bobb the build is green")
        for _ in range(len("bobb the build is green")):
            tmux.tmux.run("send-keys", "-t", f"={SESSION}:", "Left")
        tmux.tmux.run("send-keys", "-t", f"={SESSION}:", "Right", "Right", "Right", "Right")
        tmux.tmux.run("send-keys", "-t", f"={SESSION}:", "BSpace")  # @bob the build...
        tmux.tmux.send_enter(SESSION)
        got = await next_event(bob)
        assert (got.to, got.body) == ("bob", "the build is green")
