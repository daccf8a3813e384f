"""``wsbus chat``: a terminal chat for the people on the bus (prompt_toolkit).

The REPL is ``await session.prompt_async()`` in a loop inside ``patch_stdout()``; a
receiving task beside it prints events above the prompt (``print_formatted_text``
erases the prompt, prints, and redraws it with whatever was half typed), acknowledges
direct messages as ``read`` (as ``wsbus listen`` does) and saves a cursor, so a chat
started again shows what it missed. ``/channel`` and ``/watch`` reopen the connection
with a new hello that resumes from that cursor: nothing missed, nothing doubled (seqs
already printed are skipped). Sends carry ``kind = human`` and are echoed once the
hub has stored them.

What a line means is decided in :mod:`.commands` and how things look in
:mod:`.view`; this module only wires them to the client and the terminal. Errors
become one ``! ...`` line above the prompt, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import logging
import sys
import time
from collections import deque
from collections.abc import Coroutine
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from prompt_toolkit import PromptSession
from prompt_toolkit.formatted_text import FormattedText
from prompt_toolkit.input import Input
from prompt_toolkit.output import Output
from prompt_toolkit.patch_stdout import patch_stdout
from prompt_toolkit.shortcuts import print_formatted_text

from wsbus.client import Client
from wsbus.config import Access, state_dir
from wsbus.errors import ClientError, SendRefused
from wsbus.schema import BROADCAST, DEFAULT_CHANNEL, Event, Presence, Receipt, RosterResult

from ..common import Subcommands, need_name, settings_from
from ..cursor import CursorFile
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
from .prompt import ChatCompleter, chat_key_bindings, continuation, input_history

__all__ = ["ChatApp", "register", "run"]

CONTEXT = 10
"""Events of the channel shown when the chat starts (``--no-history``: none)."""
MISSED_PAGES = 5
"""History pages of missed events printed on start (the replay prints any beyond)."""
REMEMBERED = 10_000
"""Seqs remembered as printed, so an event is shown once however it arrives."""

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
    if urlsplit(settings.url).scheme not in ("ws", "wss"):
        raise CliError(
            f"invalid hub URL {settings.url!r}: it starts with ws:// or wss://", Exit.USAGE
        )
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
    """One chat session: a prompt, a client, and the task that prints what arrives.

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
        self.url = url
        self.access = access or Access(token=None, ca_file=None)
        self.timeout = timeout
        self.context = context
        self.patch = patch
        self.state = ChatState(
            me=name, channel=channel, watch=watch, names={name}, channels={channel}
        )
        self.cursor_root = cursor_root or state_dir() / "chat-cursors"
        #: plain text of every line printed (for tests and for a look back)
        self.lines: deque[str] = deque(maxlen=5000)
        self.online: set[str] = set()
        self.unread = 0
        self.connection = "connecting"
        self.retry_at: float | None = None
        self.client: Client | None = None
        #: set once the current connection's history is shown and events flow
        self.live = asyncio.Event()
        self._generation = 0
        self._receiver: asyncio.Task[None] | None = None
        self._sends: set[asyncio.Task[None]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._printed: set[int] = set()
        self._printed_order: deque[int] = deque()
        self._saved = 0
        self._presence: dict[str, tuple[int, bool]] = {}
        self._presence_count = 0
        self._cursor_failed = False
        self._closing = False
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
        retry = None if self.retry_at is None else max(0.0, self.retry_at - time.monotonic())
        return view.StatusBar(
            connection=self.connection,
            channel=self.state.channel,
            target=self.state.target,
            thread=self.state.thread,
            watch=self.state.watch,
            online=tuple(sorted(self.online)),
            unread=self.unread,
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
                    f"{s.me} on #{s.channel} at {self.url}"
                    f"{' (watching)' if s.watch else ''} — /help for commands, Ctrl-D to leave"
                )
                if self._history_problem:
                    self.error(self._history_problem)
                self._open(context=True)
                try:
                    await self._prompt_loop()
                finally:
                    await self._shutdown()
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
            self.unread = 0
            if _is_command(line):  # the prompt erased it: keep what was asked above
                self.show(view.typed(self.state, line))
            try:
                if not await self.handle(line):
                    return
            except (ClientError, TimeoutError) as err:
                self.error(f"{_what(line)} failed: {_why(err)}")
            except Exception as err:  # never a traceback in the person's face
                self.error(f"{_what(line)} failed: {type(err).__name__}: {err}")

    async def handle(self, line: str) -> bool:
        """Carry out one line; False to leave."""
        s = self.state
        match parse(line, s):
            case SendText() as action:
                self._send(action)
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
                await self._reopen(channel=channel)
            case ToggleWatch():
                await self._reopen(watch=not s.watch)
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

    # ------------------------------------------------------------------ connections

    def _open(self, *, context: bool) -> None:
        """Start a client for the current channel and watch mode, resuming from the cursor."""
        self._generation += 1
        s = self.state
        cursor = CursorFile(self.url, s.me, s.channel, root=self.cursor_root)
        saved = cursor.load()
        seq, hub = saved.seq, saved.hub
        self._saved = seq or 0
        self.connection, self.retry_at = "connecting", None
        self.live.clear()
        self.client = client = Client(
            self.url,
            s.me,
            channels=[s.channel],
            resume=seq,
            hub_id=hub,
            kind="human",
            watch=s.watch,
            presence=True,
            open_timeout=self.timeout,
            on_state=functools.partial(self._on_state, self._generation),
            **self.access,
        )
        self._receiver = asyncio.create_task(self._receive(client, cursor, seq, hub, context))

    async def _close(self) -> None:
        self._generation += 1  # the old client's state changes are no longer news
        task, client = self._receiver, self.client
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if client is not None:
            await client.close()

    async def _reopen(self, *, channel: str | None = None, watch: bool | None = None) -> None:
        """A new hello (channel or watch changed), resuming from the cursor."""
        await self._settle(self.timeout)
        await self._close()
        s = self.state
        if channel is not None:
            s.channel, s.thread = channel, None
            s.channels.add(channel)
            s.threads.clear()
            self.online.clear()
            self._presence.clear()
            self.note(f"now on #{channel}")
        if watch is not None:
            s.watch = watch
            self.note(
                f"watching every event on #{s.channel}, agents' direct messages too"
                if watch
                else f"stopped watching: only what is for you on #{s.channel}"
            )
        self._open(context=channel is not None)

    async def _settle(self, timeout: float) -> int:
        """Wait for sends in flight; how many are still unconfirmed."""
        pending = [t for t in self._sends if not t.done()]
        if not pending:
            return 0
        _, left = await asyncio.wait(pending, timeout=timeout)
        return len(left)

    async def _shutdown(self) -> None:
        connected = self.client is not None and self.client.connected
        left = await self._settle(self.timeout if connected else 0.2)
        if left:
            self.error(f"{left} message(s) not confirmed by the hub: they may not have been sent")
        self._closing = True
        await self._close()
        for task in list(self._tasks | self._sends):
            task.cancel()
        for task in list(self._tasks | self._sends):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._flush()

    def _on_state(self, generation: int, state: str, details: dict[str, Any]) -> None:
        if generation != self._generation or self._closing:
            return
        if state == "connected":
            if self.connection == "reconnecting":
                self.note("reconnected")
            self.connection, self.retry_at = "connected", None
            if self.client is not None:
                self._spawn(self._refresh(self.client))
        elif state == "reconnecting":
            error = _drop_reason(str(details.get("error") or ""))
            if self.connection == "connected":
                self.note(f"connection lost ({error}); reconnecting…")
            elif self.connection == "connecting":
                self.note(f"cannot reach the hub at {self.url} ({error}); retrying…")
            self.connection = "reconnecting"
            self.retry_at = time.monotonic() + float(details.get("delay") or 0.0)
        elif state == "truncated":
            self.error(
                f"history truncated ({details.get('reason')}): some messages are gone; "
                "going on with what the hub kept"
            )
        elif state == "closed":
            self.connection, self.retry_at = "closed", None
            self.error(f"disconnected: {details.get('error')} (/quit and check the hub)")

    async def _refresh(self, client: Client) -> None:
        """Who is online and which threads exist (after each (re)connection)."""
        channel = self.state.channel
        try:
            await self._fetch_roster(client)
            threads = await client.threads(channel, timeout=self.timeout)
        except (ClientError, TimeoutError) as err:
            if client is self.client and not self._closing:
                self.error(f"could not fetch the roster: {_why(err)}")
            return
        if client is self.client:
            self.state.threads |= {t.thread for t in threads.threads if t.channel == channel}

    async def _fetch_roster(self, client: Client) -> RosterResult:
        """The channel's roster; sets who is online, keeping presence news that came in
        while the answer was on its way (applied again on top of it)."""
        asked = self._presence_count
        roster = await client.roster(self.state.channel, timeout=self.timeout)
        if client is self.client:
            online = {m.name for m in roster.members}
            for name, (count, up) in self._presence.items():
                if count > asked:
                    (online.add if up else online.discard)(name)
            self.online = online
            self.state.names |= online | {e.name for e in roster.registered}
        return roster

    # ------------------------------------------------------------------ receiving

    async def _receive(
        self, client: Client, cursor: CursorFile, seq: int | None, hub: str | None, context: bool
    ) -> None:
        try:
            welcome = await client.connect(wait=True)
        except ClientError:
            return  # on_state("closed") said why
        anchor: int | None = seq
        if seq is None:
            anchor = welcome.seq  # a first start: the channel's latest, then live
            self._save(cursor, welcome.seq, client.hub_id)
        elif hub is not None and hub != welcome.hub:
            anchor = None  # another hub: the client replays what it keeps
        if context and self.context and anchor is not None:
            await self._show_context(client, anchor, welcome.seq)
        self.live.set()
        try:
            async for item in client:
                await self._on_item(client, cursor, item)
        except ClientError:
            return  # reported by on_state("closed")
        except Exception as err:  # a bug: say so in one line, keep the prompt usable
            self.error(f"stopped receiving: {type(err).__name__}: {err}")

    async def _show_context(self, client: Client, anchor: int, upto: int) -> None:
        """The channel's last events up to ``anchor`` (the cursor: what the person saw
        last), then everything after it up to ``upto`` (the hub's seq at the hello).

        The second part is what the replay brings too, plus the person's own lines (the
        hub sends nobody their own messages back); printing it here in seq order keeps
        those lines in place, and the replayed copies are skipped as already printed.
        """
        s = self.state
        page_max = self._max_history(client)
        shown: list[Event] = []
        try:
            page = await client.history(
                channel=s.channel,
                before=anchor + 1,
                limit=min(self.context * 5, page_max),
                timeout=self.timeout,
            )
            shown += [e for e in page.events if view.visible(e, s.me, s.watch)][-self.context :]
            after = anchor
            for _ in range(MISSED_PAGES):  # beyond: the replay prints the rest, in order
                if after >= upto:
                    break
                page = await client.history(
                    channel=s.channel, after=after, limit=page_max, timeout=self.timeout
                )
                shown += [
                    e for e in page.events if e.seq <= upto and view.visible(e, s.me, s.watch)
                ]
                if not page.more or not page.events:
                    break
                after = page.events[-1].seq
        except (ClientError, TimeoutError) as err:
            self.error(f"could not load the channel's history: {_why(err)}")
        for ev in shown:
            self._learn(ev)
            if self._mark(ev.seq):
                self.show(view.event_line(ev, s.me))
                if ev.seq > anchor and ev.from_ != s.me:
                    self.unread += 1  # missed while away

    async def _on_item(self, client: Client, cursor: CursorFile, item: Any) -> None:
        me = self.state.me
        match item:
            case Event():
                self._learn(item)
                if self._mark(item.seq):
                    self.show(view.event_line(item, me))
                    if item.from_ != me:
                        self.unread += 1
                if item.to == me:
                    await client.ack(item.seq, "read")
                self._save(cursor, item.seq, client.hub_id)
            case Presence():
                if item.channel != self.state.channel or item.name == me:
                    return
                self.state.names.add(item.name)
                self._presence_count += 1
                self._presence[item.name] = (self._presence_count, item.state == "up")
                if item.state == "up" and item.name not in self.online:
                    self.online.add(item.name)
                    self.show(view.presence_line(item))
                elif item.state == "down" and item.name in self.online:
                    self.online.discard(item.name)
                    self.show(view.presence_line(item))
            case Receipt():
                if item.by != me:
                    self.show(view.receipt_line(item))

    def _mark(self, seq: int) -> bool:
        """Remember ``seq`` as printed; False if it already was."""
        if seq in self._printed:
            return False
        self._printed.add(seq)
        self._printed_order.append(seq)
        if len(self._printed_order) > REMEMBERED:
            self._printed.discard(self._printed_order.popleft())
        return True

    def _learn(self, ev: Event) -> None:
        self.state.names.add(ev.from_)
        if ev.to != BROADCAST:
            self.state.names.add(ev.to)
        if ev.thread and ev.channel == self.state.channel:
            self.state.threads.add(ev.thread)

    def _save(self, cursor: CursorFile, seq: int, hub: str | None) -> None:
        if seq <= self._saved:
            return  # replayed pending messages are older than the cursor: keep it
        self._saved = seq
        try:
            cursor.save(seq, hub)
        except OSError as err:
            if not self._cursor_failed:
                self._cursor_failed = True
                self.error(
                    f"cannot save the cursor at {cursor.path}: {err.strerror or err} "
                    "(a restarted chat may show messages again)"
                )

    # ------------------------------------------------------------------ actions

    def _spawn(
        self, coro: Coroutine[Any, Any, None], group: set[asyncio.Task[None]] | None = None
    ) -> None:
        task = asyncio.create_task(self._guard(coro))
        tasks = self._tasks if group is None else group
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def _guard(self, coro: Coroutine[Any, Any, None]) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception as err:
            self.error(f"{type(err).__name__}: {err}")

    def _send(self, action: SendText) -> None:
        client = self.client
        assert client is not None
        if self.connection == "closed":
            self.error(f"not sent: the connection is closed ({_short(action.body)})")
            return
        if not client.connected:
            self.note("not connected: the message goes out when the hub is back")
        self._spawn(self._deliver(client, action), self._sends)

    async def _deliver(self, client: Client, action: SendText) -> None:
        s = self.state
        channel = client.channels[0]
        try:
            ok = await client.send(
                action.to, action.body, channel=channel, thread=action.thread, kind="human"
            )
        except SendRefused as err:
            self.error(f"not sent: {err.message}")
            return
        except ClientError as err:
            self.error(f"not sent ({_why(err)}): {_short(action.body)}")
            return
        ev = Event(
            seq=ok.seq,
            ts=ok.ts,
            channel=channel,
            from_=s.me,
            to=action.to,
            body=action.body,
            thread=action.thread,
            kind="human",
            ref=ok.ref,
        )
        self._learn(ev)
        if self._mark(ok.seq):
            self.show(view.event_line(ev, s.me))
        if ok.online is False and action.to not in (BROADCAST, s.me):
            self.note(f"{action.to} is not connected: it gets the message when it is")

    def _connected_client(self) -> Client | None:
        if self.client is None or not self.client.connected:
            self.error("not connected to the hub; try again when the toolbar says connected")
            return None
        return self.client

    def _max_history(self, client: Client) -> int:
        limits = client.welcome.limits if client.welcome else None
        return limits.max_history if limits else 1000

    async def _show_events(self, count: int, thread: str | None) -> None:
        """``/history N`` (thread None) and ``/read T N``."""
        client = self._connected_client()
        if client is None:
            return
        s = self.state
        page = await client.history(
            channel=s.channel,
            thread=thread,
            limit=min(count, self._max_history(client)),
            timeout=self.timeout,
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
            self._learn(ev)
            self.show(view.event_line(ev, s.me))

    async def _who(self) -> None:
        client = self._connected_client()
        if client is None:
            return
        roster = await self._fetch_roster(client)
        for row in view.roster_lines(roster, self.state.me):
            self.show(row)


def _is_command(line: str) -> bool:
    text = line.lstrip()
    return text.startswith("/") and not text.startswith("//")


def _what(line: str) -> str:
    word = line.split(None, 1)[0] if line.strip() else ""
    return word if word.startswith("/") else "sending"


def _why(err: BaseException) -> str:
    if isinstance(err, TimeoutError):
        return "timed out waiting for the hub"
    return str(err) or type(err).__name__


def _drop_reason(error: str) -> str:
    if error.startswith("closed (1001)"):
        return "the hub went away"
    if error.startswith("closed ("):
        return "connection dropped"
    return error or "connection lost"


def _short(body: str, width: int = 40) -> str:
    flat = " ".join(body.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"
