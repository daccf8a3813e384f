"""The chat's connection to the hub, and what arrives over it.

:class:`Link` keeps one :class:`~wsbus.client.Client` at a time. ``/channel`` and
``/watch`` close it and open another with a new hello that resumes from the saved
cursor: nothing missed, nothing doubled (:class:`Printed` skips the seqs already
shown). Its receiving task shows the channel's last events on start, then each event,
presence change and receipt as it comes, acknowledges direct messages as ``read`` (as
``wsbus listen`` does) and saves the cursor; :class:`Online` keeps who is online
between a roster's answer and the presence news. Sends run as tasks and are echoed
once the hub has stored them.

Everything it has to say goes through a :class:`Screen` (the chat app prints it above
the prompt); an error is one line there, never a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections import deque
from collections.abc import Coroutine, Iterable
from pathlib import Path
from typing import Any, Protocol

from prompt_toolkit.formatted_text import FormattedText

from wsbus.client import Client
from wsbus.config import Access
from wsbus.errors import ClientError, SendRefused
from wsbus.schema import BROADCAST, Event, Presence, Receipt, RosterResult

from ..cursor import CursorFile
from . import view
from .commands import ChatState, SendText

__all__ = ["MISSED_PAGES", "REMEMBERED", "Link", "Online", "Printed", "Screen", "why"]

MISSED_PAGES = 5
"""History pages of missed events printed on start (the replay prints any beyond)."""
REMEMBERED = 10_000
"""Seqs remembered as printed, so an event is shown once however it arrives."""


class Screen(Protocol):
    """Where the link's lines go (the chat app: above the prompt)."""

    def show(self, text: FormattedText) -> None: ...

    def note(self, text: str) -> None: ...

    def error(self, text: str) -> None: ...


class Printed:
    """The seqs already printed (the latest :data:`REMEMBERED`): an event is shown once,
    whether it comes with the context, the replay, live, or as the echo of a send."""

    def __init__(self, size: int = REMEMBERED) -> None:
        self.size = size
        self._seqs: set[int] = set()
        self._order: deque[int] = deque()

    def mark(self, seq: int) -> bool:
        """Remember ``seq`` as printed; False if it already was."""
        if seq in self._seqs:
            return False
        self._seqs.add(seq)
        self._order.append(seq)
        if len(self._order) > self.size:
            self._seqs.discard(self._order.popleft())
        return True


class Online:
    """Who is online on the channel: a roster's answer, with the presence news that came
    in while the answer was on its way applied again on top of it."""

    def __init__(self) -> None:
        self.names: set[str] = set()
        self._news: dict[str, tuple[int, bool]] = {}
        self._count = 0

    def asking(self) -> int:
        """Call before asking for the roster; give the result to :meth:`answered`."""
        return self._count

    def answered(self, members: Iterable[str], asked: int) -> set[str]:
        """The roster's members online, corrected by the news since ``asked``."""
        online = set(members)
        for name, (count, up) in self._news.items():
            if count > asked:
                (online.add if up else online.discard)(name)
        self.names = online
        return online

    def news(self, name: str, up: bool) -> bool:
        """A presence change; True if it changes who is online."""
        self._count += 1
        self._news[name] = (self._count, up)
        if up and name not in self.names:
            self.names.add(name)
            return True
        if not up and name in self.names:
            self.names.discard(name)
            return True
        return False

    def clear(self) -> None:
        """Another channel: nobody is known to be online until its roster answers."""
        self.names.clear()
        self._news.clear()


def history_limit(client: Client) -> int:
    """The most events one history page may hold on this hub."""
    limits = client.welcome.limits if client.welcome else None
    return limits.max_history if limits else 1000


class Link:
    """The connection: the current client, its state for the toolbar, the receiving
    task, the sends in flight, the cursor, who is online and what was printed."""

    def __init__(
        self,
        screen: Screen,
        state: ChatState,
        url: str,
        *,
        access: Access,
        timeout: float,
        context: int,
        cursor_root: Path,
    ) -> None:
        self.screen = screen
        self.state = state
        self.url = url
        self.access = access
        self.timeout = timeout
        #: events of the channel shown when a connection starts (0: none)
        self.context = context
        self.cursor_root = cursor_root
        self.client: Client | None = None
        self.connection = "connecting"
        self.retry_at: float | None = None
        #: set once the current connection's history is shown and events flow
        self.live = asyncio.Event()
        self.online = Online()
        self.printed = Printed()
        #: events from others printed since the person last typed a line
        self.unread = 0
        self._generation = 0
        self._receiver: asyncio.Task[None] | None = None
        self._sends: set[asyncio.Task[None]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._saved = 0
        self._cursor_failed = False
        self._closing = False

    # ------------------------------------------------------------------ connections

    def open(self, *, context: bool) -> None:
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

    async def reopen(self, *, channel: str | None = None, watch: bool | None = None) -> None:
        """A new hello (channel or watch changed), resuming from the cursor."""
        await self._settle(self.timeout)
        await self._close()
        s = self.state
        if channel is not None:
            s.channel, s.thread = channel, None
            s.channels.add(channel)
            s.threads.clear()
            self.online.clear()
            self.screen.note(f"now on #{channel}")
        if watch is not None:
            s.watch = watch
            self.screen.note(
                f"watching every event on #{s.channel}, agents' direct messages too"
                if watch
                else f"stopped watching: only what is for you on #{s.channel}"
            )
        self.open(context=channel is not None)

    async def _settle(self, timeout: float) -> int:
        """Wait for sends in flight; how many are still unconfirmed."""
        pending = [t for t in self._sends if not t.done()]
        if not pending:
            return 0
        _, left = await asyncio.wait(pending, timeout=timeout)
        return len(left)

    async def shutdown(self) -> None:
        """Wait for the sends in flight (a while), then close and stop every task."""
        connected = self.client is not None and self.client.connected
        left = await self._settle(self.timeout if connected else 0.2)
        if left:
            self.screen.error(
                f"{left} message(s) not confirmed by the hub: they may not have been sent"
            )
        self._closing = True
        await self._close()
        for task in list(self._tasks | self._sends):
            task.cancel()
        for task in list(self._tasks | self._sends):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def _on_state(self, generation: int, state: str, details: dict[str, Any]) -> None:
        if generation != self._generation or self._closing:
            return
        if state == "connected":
            if self.connection == "reconnecting":
                self.screen.note("reconnected")
            self.connection, self.retry_at = "connected", None
            if self.client is not None:
                self._spawn(self._refresh(self.client))
        elif state == "reconnecting":
            error = _drop_reason(str(details.get("error") or ""))
            if self.connection == "connected":
                self.screen.note(f"connection lost ({error}); reconnecting…")
            elif self.connection == "connecting":
                self.screen.note(f"cannot reach the hub at {self.url} ({error}); retrying…")
            self.connection = "reconnecting"
            self.retry_at = time.monotonic() + float(details.get("delay") or 0.0)
        elif state == "truncated":
            self.screen.error(
                f"history truncated ({details.get('reason')}): some messages are gone; "
                "going on with what the hub kept"
            )
        elif state == "closed":
            self.connection, self.retry_at = "closed", None
            self.screen.error(f"disconnected: {details.get('error')} (/quit and check the hub)")

    async def _refresh(self, client: Client) -> None:
        """Who is online and which threads exist (after each (re)connection)."""
        channel = self.state.channel
        try:
            await self.fetch_roster(client)
            threads = await client.threads(channel, timeout=self.timeout)
        except (ClientError, TimeoutError) as err:
            if client is self.client and not self._closing:
                self.screen.error(f"could not fetch the roster: {why(err)}")
            return
        if client is self.client:
            self.state.threads |= {t.thread for t in threads.threads if t.channel == channel}

    async def fetch_roster(self, client: Client) -> RosterResult:
        """The channel's roster; sets who is online (see :class:`Online`)."""
        asked = self.online.asking()
        roster = await client.roster(self.state.channel, timeout=self.timeout)
        if client is self.client:
            online = self.online.answered((m.name for m in roster.members), asked)
            self.state.names |= online | {e.name for e in roster.registered}
        return roster

    def connected_client(self) -> Client | None:
        """The client, if it is connected (else says so and returns None)."""
        if self.client is None or not self.client.connected:
            self.screen.error("not connected to the hub; try again when the toolbar says connected")
            return None
        return self.client

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
            self.screen.error(f"stopped receiving: {type(err).__name__}: {err}")

    async def _show_context(self, client: Client, anchor: int, upto: int) -> None:
        """The channel's last events up to ``anchor`` (the cursor: what the person saw
        last), then everything after it up to ``upto`` (the hub's seq at the hello).

        The second part is what the replay brings too, plus the person's own lines (the
        hub sends nobody their own messages back); printing it here in seq order keeps
        those lines in place, and the replayed copies are skipped as already printed.
        """
        s = self.state
        page_max = history_limit(client)
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
            self.screen.error(f"could not load the channel's history: {why(err)}")
        for ev in shown:
            self.learn(ev)
            if self.printed.mark(ev.seq):
                self.screen.show(view.event_line(ev, s.me))
                if ev.seq > anchor and ev.from_ != s.me:
                    self.unread += 1  # missed while away

    async def _on_item(self, client: Client, cursor: CursorFile, item: Any) -> None:
        me = self.state.me
        match item:
            case Event():
                self.learn(item)
                if self.printed.mark(item.seq):
                    self.screen.show(view.event_line(item, me))
                    if item.from_ != me:
                        self.unread += 1
                if item.to == me:
                    await client.ack(item.seq, "read")
                self._save(cursor, item.seq, client.hub_id)
            case Presence():
                if item.channel != self.state.channel or item.name == me:
                    return
                self.state.names.add(item.name)
                if self.online.news(item.name, item.state == "up"):
                    self.screen.show(view.presence_line(item))
            case Receipt():
                if item.by != me:
                    self.screen.show(view.receipt_line(item))

    def learn(self, ev: Event) -> None:
        """The names and threads an event shows exist (for completion and ``@name``)."""
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
                self.screen.error(
                    f"cannot save the cursor at {cursor.path}: {err.strerror or err} "
                    "(a restarted chat may show messages again)"
                )

    # ------------------------------------------------------------------ sending

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
            self.screen.error(f"{type(err).__name__}: {err}")

    def send(self, action: SendText) -> None:
        """Send in the background (echoed once stored); at once if the link is closed."""
        client = self.client
        assert client is not None
        if self.connection == "closed":
            self.screen.error(f"not sent: the connection is closed ({_short(action.body)})")
            return
        if not client.connected:
            self.screen.note("not connected: the message goes out when the hub is back")
        self._spawn(self._deliver(client, action), self._sends)

    async def _deliver(self, client: Client, action: SendText) -> None:
        s = self.state
        channel = client.channels[0]
        try:
            ok = await client.send(
                action.to, action.body, channel=channel, thread=action.thread, kind="human"
            )
        except SendRefused as err:
            self.screen.error(f"not sent: {err.message}")
            return
        except ClientError as err:
            self.screen.error(f"not sent ({why(err)}): {_short(action.body)}")
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
        self.learn(ev)
        if self.printed.mark(ok.seq):
            self.screen.show(view.event_line(ev, s.me))
        if ok.online is False and action.to not in (BROADCAST, s.me):
            self.screen.note(f"{action.to} is not connected: it gets the message when it is")


def why(err: BaseException) -> str:
    """A failed request's reason, in words."""
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
