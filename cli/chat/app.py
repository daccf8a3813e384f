"""``wsbus chat``: a terminal chat for the people on the bus (prompt_toolkit).

The REPL is ``await session.prompt_async()`` in a loop inside ``patch_stdout()``; a
receiving task beside it prints events above the prompt (``print_formatted_text``
erases the prompt, prints, and redraws it with whatever was half typed), acknowledges
direct messages as ``read`` (as ``wsbus listen`` does) and saves a cursor, so a chat
started again shows what it missed. ``/channel`` and ``/watch`` reopen the connection
with a new hello that resumes from that cursor: nothing missed, nothing doubled (seqs
already printed are skipped). Sends carry ``kind = human`` and are echoed once the
hub has stored them.

This module is the terminal side: the command's parser, the prompt, printing above
it, and carrying out what a line means. The connection to the hub, and what arrives
over it, is :mod:`.link`; what a line means is decided in :mod:`.commands` and how
things look in :mod:`.view`. Errors become one ``! ...`` line above the prompt, never
a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
import time
from collections import deque
from pathlib import Path
from urllib.parse import urlsplit

from prompt_toolkit import PromptSession
from prompt_toolkit.formatted_text import FormattedText
from prompt_toolkit.input import Input
from prompt_toolkit.output import Output
from prompt_toolkit.patch_stdout import patch_stdout
from prompt_toolkit.shortcuts import print_formatted_text

from wsbus.config import Access, state_dir
from wsbus.errors import ClientError, SendRefused
from wsbus.schema import DEFAULT_CHANNEL

from ..common import Subcommands, need_name, settings_from
from ..exits import CliError, Exit
from ..suggest import did_you_mean
from . import view
from .commands import (
    ChatState,
    Hint,
    Nothing,
    Quit,
    ReadThread,
    SendText,
    SetTarget,
    SetThread,
    ShowHelp,
    ShowHistory,
    SwitchChannel,
    ToggleWatch,
    Who,
    parse,
)
from .link import Link, history_limit, why
from .prompt import ChatCompleter, chat_key_bindings, continuation, input_history

__all__ = ["ChatApp", "register", "run"]

CONTEXT = 10
"""Events of the channel shown when the chat starts (``--no-history``: none)."""

EXAMPLES = """\
examples:
  wsbus chat --as alice                    # join the default channel as a person
  wsbus chat --as alice -c acme --watch    # see every event, agents' direct messages too
  WSBUS_NAME=alice wsbus chat --no-history

in the chat:
  hello all                 to the channel (or to the name chosen with /to)
  @codex run the tests      a direct message to codex
  /to codex   /all   /thread T   /post T TEXT   /read T [N]   /who   /history [N]
  /channel C   /watch   /help   /quit
  Tab completes commands, @names and threads; Alt-Enter (or Esc Enter) starts a new
  line; Ctrl-C clears the line; Ctrl-D leaves.
"""


def register(sub: Subcommands) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "chat",
        help="a terminal chat for people: follow and steer the agents",
        description=(
            "Chat on a channel as a person (messages carry kind=human): events print above "
            "the prompt, plain lines go to the channel or the /to name, @NAME sends a direct "
            "message. Reconnects and resumes by itself; a restarted chat shows what it missed."
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--as", dest="as_name", metavar="NAME", help="your name (env WSBUS_NAME)")
    p.add_argument(
        "--channel",
        "-c",
        help="channel (env WSBUS_CHANNEL or AGENT_BUS_CHANNEL; default default)",
    )
    p.add_argument("--url", help="hub websocket URL (env WSBUS_URL; default ws://127.0.0.1:8765)")
    p.add_argument(
        "--watch",
        action="store_true",
        help="see every event of the channel, agents' direct messages to each other too",
    )
    p.add_argument(
        "--no-history",
        action="store_true",
        help=f"do not show the channel's last {CONTEXT} events on start",
    )
    p.add_argument(
        "--timeout", type=float, help="seconds to wait for the hub (env WSBUS_TIMEOUT; default 10)"
    )
    p.set_defaults(func=run)
    return p


async def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    name = need_name(settings, "chat")
    bad = [u for u in settings.urls() if urlsplit(u).scheme not in ("ws", "wss")]
    if bad:
        raise CliError(f"invalid hub URL {bad[0]!r}: it starts with ws:// or wss://", Exit.USAGE)
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise CliError(
            "chat needs a terminal (in scripts use `wsbus send` and `wsbus listen`)", Exit.USAGE
        )
    app = ChatApp(
        settings.url,
        name,
        settings.channel,
        watch=args.watch,
        context=0 if args.no_history else CONTEXT,
        timeout=settings.timeout,
        access=settings.access(),
    )
    return await app.run()


# --------------------------------------------------------------------------- the app


class _ToLines(logging.Handler):
    """Warnings of the wsbus loggers become ``! ...`` lines instead of stderr noise."""

    def __init__(self, app: ChatApp) -> None:
        super().__init__(logging.WARNING)
        self.app = app

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            self.app.error(record.getMessage())


class ChatApp:
    """One chat session: a prompt, and the :class:`~.link.Link` to the hub whose task
    prints what arrives.

    ``input``/``output`` are prompt_toolkit's (tests pass ``create_pipe_input()`` and
    ``DummyOutput()``); ``lines`` keeps the plain text of everything printed.
    """

    def __init__(
        self,
        url: str,
        name: str,
        channel: str = DEFAULT_CHANNEL,
        *,
        watch: bool = False,
        context: int = CONTEXT,
        timeout: float = 10.0,
        cursor_root: Path | None = None,
        history_path: Path | None = None,
        input: Input | None = None,
        output: Output | None = None,
        patch: bool = True,
        access: Access | None = None,
    ) -> None:
        self.patch = patch
        self.state = ChatState(
            me=name, channel=channel, watch=watch, names={name}, channels={channel}
        )
        #: plain text of every line printed (for tests and for a look back)
        self.lines: deque[str] = deque(maxlen=5000)
        self.link = Link(
            self,
            self.state,
            url,
            access=access or Access(token=None, ca_file=None),
            timeout=timeout,
            context=context,
            cursor_root=cursor_root or state_dir() / "chat-cursors",
        )
        self._batch: list[FormattedText] = []
        self._refill = ""
        history, self._history_problem = input_history(history_path or state_dir() / "chat_history")
        self.completer = ChatCompleter(self.state)
        self.session: PromptSession[str] = PromptSession(
            message=lambda: view.prompt_message(self.state),
            bottom_toolbar=self.toolbar,
            completer=self.completer,
            complete_while_typing=True,
            key_bindings=chat_key_bindings(),
            history=history,
            multiline=False,
            erase_when_done=True,
            prompt_continuation=continuation,
            refresh_interval=0.5,
            input=input,
            output=output,
        )

    @property
    def connection(self) -> str:
        """``connecting``, ``connected``, ``reconnecting`` or ``closed``."""
        return self.link.connection

    @property
    def live(self) -> asyncio.Event:
        """Set once the current connection's history is shown and events flow."""
        return self.link.live

    # ------------------------------------------------------------------ printing

    def show(self, text: FormattedText) -> None:
        """Print a line above the prompt (batched: one redraw for a burst of events)."""
        self.lines.append(view.plain(text))
        self._batch.append(text)
        if len(self._batch) == 1:
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        batch, self._batch = self._batch, []
        if batch:
            print_formatted_text(*batch, sep="\n", output=self.session.output)

    def note(self, text: str) -> None:
        self.show(view.notice(text))

    def error(self, text: str) -> None:
        self.show(view.problem(text))

    def status(self) -> view.StatusBar:
        link = self.link
        retry = None if link.retry_at is None else max(0.0, link.retry_at - time.monotonic())
        return view.StatusBar(
            connection=link.connection,
            channel=self.state.channel,
            target=self.state.target,
            thread=self.state.thread,
            watch=self.state.watch,
            online=tuple(sorted(link.online.names)),
            unread=link.unread,
            retry_in=retry,
        )

    def toolbar(self) -> FormattedText:
        return view.toolbar(self.status())

    # ------------------------------------------------------------------ the loop

    async def run(self) -> int:
        """Chat until ``/quit`` or Ctrl-D."""
        logger = logging.getLogger("wsbus")
        handler, propagate = _ToLines(self), logger.propagate
        logger.addHandler(handler)
        logger.propagate = False
        try:
            with patch_stdout() if self.patch else contextlib.nullcontext():
                s = self.state
                self.note(
                    f"{s.me} on #{s.channel} at {self.link.url}"
                    f"{' (watching)' if s.watch else ''} — /help for commands, Ctrl-D to leave"
                )
                if self._history_problem:
                    self.error(self._history_problem)
                self.link.open(context=True)
                try:
                    await self._prompt_loop()
                finally:
                    await self.link.shutdown()
                    self._flush()
        finally:
            logger.removeHandler(handler)
            logger.propagate = propagate
        return Exit.OK

    async def _prompt_loop(self) -> None:
        self._flush()  # the greeting above the first prompt
        while True:
            refill, self._refill = self._refill, ""
            try:
                line = await self.session.prompt_async(default=refill)
            except KeyboardInterrupt:  # Ctrl-C: the line is dropped, the chat goes on
                continue
            except EOFError:  # Ctrl-D on an empty line
                return
            self.link.unread = 0
            if _is_command(line):  # the prompt erased it: keep what was asked above
                self.show(view.typed(self.state, line))
            try:
                if not await self.handle(line):
                    return
            except (ClientError, TimeoutError) as err:
                self.error(f"{_what(line)} failed: {why(err)}")
            except Exception as err:  # never a traceback in the person's face
                self.error(f"{_what(line)} failed: {type(err).__name__}: {err}")

    async def handle(self, line: str) -> bool:
        """Carry out one line; False to leave."""
        s = self.state
        match parse(line, s):
            case SendText() as action:
                self.link.send(action)
            case SetTarget(to=None):
                s.target = None
                self.note(f"talking to everyone on #{s.channel}")
            case SetTarget(to=str(name), known=known):
                s.target = name
                self.note(
                    f"talking to {name}"
                    + ("" if known else f" (not seen on #{s.channel} yet: messages wait for it)")
                    + " — /all to talk to everyone again"
                )
            case SetThread(thread=None):
                self.note(f"left thread {s.thread}" if s.thread else "not in a thread")
                s.thread = None
            case SetThread(thread=str(thread)):
                s.thread = thread
                s.threads.add(thread)
                self.note(f"in thread {thread}: plain lines go there (/thread alone to leave)")
            case ReadThread(thread=thread, count=count):
                await self._show_events(count, thread)
            case Who():
                await self._who()
            case ShowHistory(count=count):
                await self._show_events(count, None)
            case SwitchChannel(channel=channel):
                await self.link.reopen(channel=channel)
            case ToggleWatch():
                await self.link.reopen(watch=not s.watch)
            case ShowHelp():
                for row in view.help_lines():
                    self.show(row)
            case Quit():
                return False
            case Hint(text=text, keep=keep):
                self.error(text)
                if keep:  # a message: back in the prompt, to fix (else the prompt is clear)
                    self._refill = line.strip()
            case Nothing():
                pass
        return True

    # ------------------------------------------------------------------ queries

    async def _show_events(self, count: int, thread: str | None) -> None:
        """``/history N`` (thread None) and ``/read T N``."""
        client = self.link.connected_client()
        if client is None:
            return
        s = self.state
        page = await client.history(
            channel=s.channel,
            thread=thread,
            limit=min(count, history_limit(client)),
            timeout=self.link.timeout,
        )
        events = [e for e in page.events if view.visible(e, s.me, s.watch)]
        if not events:
            if thread is None:
                self.note(f"nothing on #{s.channel} yet")
            else:
                guess = did_you_mean(thread, s.threads)
                self.error(f"no posts in thread {thread!r} on #{s.channel}{guess}")
            return
        where = f"thread {thread}" if thread else f"#{s.channel}"
        self.note(f"{where}: the last {len(events)}")
        for ev in events:
            self.link.learn(ev)
            self.show(view.event_line(ev, s.me))

    async def _who(self) -> None:
        client = self.link.connected_client()
        if client is None:
            return
        roster = await self.link.fetch_roster(client)
        for row in view.roster_lines(roster, self.state.me):
            self.show(row)
        try:
            leases = await client.leases(self.state.channel, timeout=self.link.timeout)
        except SendRefused:  # a hub without leases (older), or a token that may not
            return
        for row in view.lease_lines(leases.leases):
            self.show(row)


def _is_command(line: str) -> bool:
    text = line.lstrip()
    return text.startswith("/") and not text.startswith("//")


def _what(line: str) -> str:
    word = line.split(None, 1)[0] if line.strip() else ""
    return word if word.startswith("/") else "sending"
