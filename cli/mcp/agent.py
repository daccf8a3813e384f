"""The bus side of ``wsbus mcp``: one agent's connection to the hub and its mail.

:class:`Agent` holds one :class:`wsbus.Client` for the agent's name on its channel
(reconnecting and resuming like every client), follows the channel's live events and
answers the tools' questions (:mod:`.tools`). It imports nothing of MCP: the SDK
adapter is :mod:`.server`.

*Mail* is what is addressed to this agent by name (``to`` is its name, a thread post
included); broadcasts (``*``) are not mail, read them with ``history``. Unread mail is
the direct messages without a final receipt, as the hub keeps them (``history`` with
``pending``), so what :meth:`Agent.take_mail` hands out it first marks ``read``, and
nothing is handed out twice, across restarts of the server too. With ``push``, each
message that arrives is given to the push callback (an MCP notification) and marked
``submitted``, the bridge's status for a message put into an agent's input.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from wsbus.client import Client
from wsbus.config import Access
from wsbus.errors import ClientError, ConnectionLost
from wsbus.schema import Event, Receipt, Welcome

from ..render import stamp

__all__ = ["MAX_WAIT", "Agent", "NotReady", "message"]

log = logging.getLogger("wsbus.mcp")

MAX_WAIT = 600.0
"""The longest a ``wait`` blocks, in seconds."""
HANDED_KEPT = 10_000
"""Messages remembered as handed out (their receipts may still be on their way)."""
UNREAD_SLACK = 20
"""Unread messages asked for beyond the limit (some may be handed out already)."""
RECEIPTS_KEPT = 500
"""Messages of this agent's whose receipts are kept (the latest ones)."""
QUERY_TIMEOUT = 30.0
"""How long a tool waits for the hub's answer to one query."""

Push = Callable[[Event], Awaitable[None]]


class NotReady(Exception):
    """The hub has not been reached yet (or the connection ended for good)."""


def message(ev: Event) -> dict[str, Any]:
    """An event as a tool returns it: what an agent needs to read and answer it."""
    out: dict[str, Any] = {
        "seq": ev.seq,
        "time": stamp(ev.ts),
        "channel": ev.channel,
        "from": ev.from_,
        "to": ev.to,
        "body": ev.body,
    }
    if ev.thread:
        out["thread"] = ev.thread
    if ev.kind and ev.kind != "agent":
        out["kind"] = ev.kind
    if ev.meta:
        out["meta"] = ev.meta
    return out


class Agent:
    """One agent's presence on the bus, for the tools of an MCP server."""

    def __init__(
        self,
        urls: list[str],
        name: str | None,
        channel: str,
        *,
        access: Access | None = None,
        model: str | None = None,
        role: str | None = None,
        host: str | None = None,
        open_timeout: float = 10.0,
        push: Push | None = None,
    ) -> None:
        self.urls = urls
        self.name = name
        self.channel = channel
        self._access: Access = access or Access(token=None, ca_file=None)
        self.model, self.role, self.host = model, role, host
        self._open_timeout = open_timeout
        self.push = push
        self.client: Client | None = None
        self.problem = "not connected to the hub yet"
        self._ready = asyncio.Event()
        self._mail = asyncio.Condition()  # notified when mail arrives
        self._arrived = 0  # mail events seen live (the condition's generation)
        self._taking = asyncio.Lock()  # one hand-out of mail at a time
        self._tasks: list[asyncio.Task[None]] = []
        #: the messages handed out (returned or pushed) lately: never handed out again,
        #: even before the hub has their receipts
        self._handed: OrderedDict[int, None] = OrderedDict()
        #: seq of a message of this agent's -> recipient -> its latest receipt
        self.receipts: OrderedDict[int, dict[str, dict[str, str]]] = OrderedDict()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Reach the hub in the background (tools answer "not connected" until then)."""
        self._tasks.append(asyncio.create_task(self._run(), name="wsbus-mcp-agent"))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.client is not None:
            await self.client.close()

    def _state(self, state: str, details: dict[str, Any]) -> None:
        if state == "reconnecting":
            self.problem = f"the hub is not reachable right now ({details.get('error')}); retrying"
        elif state == "connected":
            self.problem = ""
            log.info("connected as %s on %s at %s", self.name, self.channel, details.get("url"))

    async def _run(self) -> None:
        try:
            if self.name is None:
                self.name = await self._token_name()
            self.client = Client(
                self.urls,
                self.name,
                channels=[self.channel],
                kind="agent",
                pending=self.push is not None,  # pushes what waited while it was away
                on_state=self._state,
                open_timeout=self._open_timeout,
                model=self.model,
                role=self.role,
                host=self.host,
                **self._access,
            )
            await self.client.connect(wait=True)
            self.problem = ""
            self._ready.set()
            await self._follow(self.client)
        except ConnectionLost as err:  # refused for good (a bad token, a name not ours)
            self._ready.clear()
            self.problem = f"the hub refused the connection: {err.reason} ({err.code})"
            log.error("%s", self.problem)
        except NotReady as err:
            self.problem = str(err)
            log.error("%s", self.problem)

    async def _token_name(self) -> str:
        """With a token and no name: the first name the token vouches for."""
        probe = Client(
            self.urls,
            None,
            channels=[],
            presence=False,
            on_state=self._state,
            open_timeout=self._open_timeout,
            **self._access,
        )
        try:
            welcome: Welcome = await probe.connect(wait=True)
        finally:
            await probe.close()
        if not welcome.names:
            raise NotReady("this token names nobody to act as (an admin token): pass --as NAME")
        return welcome.names[0]

    async def _follow(self, client: Client) -> None:
        """Read what the hub pushes (the client's queue must not fill up): keep the
        receipts of this agent's messages, wake the waiters when mail comes, push it
        when asked to."""
        async for ev in client:
            if isinstance(ev, Receipt):
                self._receipt(ev)
                continue
            if not isinstance(ev, Event) or ev.to != self.name or ev.from_ == self.name:
                continue
            if self.push is not None and ev.seq not in self._handed:
                self._hand_out([ev])  # pushed: not for `wait` too
                try:
                    await self.push(ev)
                    await client.ack(ev.seq, "submitted", name=self.name)
                    continue
                except Exception as err:  # the MCP client went away: the mail stays unread
                    log.warning("could not push #%d: %s", ev.seq, err)
                    self._handed.pop(ev.seq, None)
            async with self._mail:
                self._arrived += 1
                self._mail.notify_all()

    def _hand_out(self, events: list[Event]) -> None:
        for ev in events:
            self._handed[ev.seq] = None
        while len(self._handed) > HANDED_KEPT:
            self._handed.popitem(last=False)

    def _receipt(self, r: Receipt) -> None:
        kept = self.receipts.pop(r.seq, {})
        kept[r.by] = {"status": r.status, "time": stamp(r.ts)}
        if r.reason:
            kept[r.by]["reason"] = r.reason
        self.receipts[r.seq] = kept  # the latest at the end
        while len(self.receipts) > RECEIPTS_KEPT:
            self.receipts.popitem(last=False)

    # ------------------------------------------------------------------ for the tools

    def connected(self) -> Client:
        """The client, once the hub has been reached; else :class:`NotReady`."""
        if self.client is None or not self._ready.is_set():
            raise NotReady(f"{self.problem or 'not connected'} (hub {', '.join(self.urls)})")
        return self.client

    async def unread(self, limit: int) -> list[Event]:
        """The oldest ``limit`` messages to this agent without a final receipt (and not
        handed out by this server already)."""
        client = self.connected()
        page = await client.history(
            channel=self.channel,
            to=self.name,
            pending=True,
            after=0,
            limit=limit + UNREAD_SLACK,
            timeout=QUERY_TIMEOUT,
        )
        return [ev for ev in page.events if ev.seq not in self._handed][:limit]

    async def mark_read(self, events: list[Event]) -> None:
        """Acknowledge ``events`` as read, then wait for the hub to have stored the
        receipts (its ``pong`` comes after them). The events are handed out all the
        same when that wait fails: the acks are sent once the hub is back."""
        if not events:
            return
        client = self.connected()
        for ev in events:
            await client.ack(ev.seq, "read", name=self.name)
        try:
            await client.ping(timeout=QUERY_TIMEOUT, sync=True)
        except (ClientError, TimeoutError) as err:
            log.warning("receipts of %d messages not confirmed yet: %s", len(events), err)

    async def take_mail(self, limit: int) -> list[Event]:
        """The unread mail (up to ``limit``), marked read."""
        async with self._taking:
            events = await self.unread(limit)
            self._hand_out(events)
            await self.mark_read(events)
            return events

    async def wait_mail(self, timeout: float, limit: int) -> list[Event]:
        """Unread mail at once if there is any, else the first that arrives within
        ``timeout`` seconds (an empty list then); marked read."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(max(timeout, 0.0), MAX_WAIT)
        while True:
            seen = self._arrived
            events = await self.take_mail(limit)
            if events:
                return events
            left = deadline - loop.time()
            if left <= 0:
                return []
            with contextlib.suppress(TimeoutError):
                await self._mail_after(seen, left)

    async def _mail_after(self, seen: int, timeout: float) -> None:
        """Until mail arrives live after ``seen`` arrivals (TimeoutError after ``timeout``)."""
        async with self._mail:
            await asyncio.wait_for(self._mail.wait_for(lambda: self._arrived != seen), timeout)

    async def recent_mail(self, limit: int) -> list[Event]:
        """The latest ``limit`` direct messages to this agent, read or not; the unread
        among them marked read."""
        client = self.connected()
        page = await client.history(
            channel=self.channel, to=self.name, limit=limit, timeout=QUERY_TIMEOUT
        )
        if not page.events:
            return []
        async with self._taking:  # the unread in the page, not what came after it
            pending = await client.history(
                channel=self.channel,
                to=self.name,
                pending=True,
                after=page.events[0].seq - 1,
                limit=limit,
                timeout=QUERY_TIMEOUT,
            )
            shown = {ev.seq for ev in page.events}
            unread = [ev for ev in pending.events if ev.seq in shown]
            self._hand_out(unread)
            await self.mark_read(unread)
        return page.events

    def whoami(self) -> dict[str, Any]:
        client = self.client
        welcome = client.welcome if client is not None else None
        return {
            "name": self.name,
            "channel": self.channel,
            "hub": client.url if client is not None else self.urls[0],
            "bus": welcome.hub if welcome is not None else None,
            "connected": bool(client is not None and client.connected),
            "problem": self.problem or None,
        }
