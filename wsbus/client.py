"""The asyncio client: connect, reconnect, resume, send durably, iterate events.

Example::

    from wsbus import Client

    async with Client("ws://127.0.0.1:8765", "alice") as bus:
        ok = await bus.send("bob", "build is green")   # returns after the durable ok
        async for event in bus.events():
            print(event.from_, event.body)

What it guarantees:

- **Reconnects** with exponential backoff and full jitter, forever once it has
  connected (``reconnect=False`` turns it off), and **resumes** from the last
  event it received: no gaps, no duplicates, seq order (events already in the
  local queue survive the reconnect).
- :meth:`Client.send` returns only after the hub has durably stored the event,
  and retries with the same ``ref`` across reconnects, so an event is stored
  once however often it is resent.
- A close code that forbids retrying (bad hello, unauthorized) ends the client
  with :class:`~wsbus.errors.ConnectionLost`.

Authentication and TLS take no extra work: the token comes from ``token=`` or
the ``WSBUS_TOKEN`` environment variable and travels as ``Authorization:
Bearer`` on the handshake; ``wss://`` URLs verify the hub's certificate against
the system's CAs, or the PEM file in ``ca_file=`` / ``WSBUS_CA_FILE``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Sequence
from typing import Any, Generic, TypeVar, overload

from .client_inbox import Inbox, Incoming
from .client_link import Cursor, Link, StateCallback, Writer
from .client_requests import Requests
from .codec import JSON, MSGPACK, Codec
from .errors import ConnectionLost
from .handshake import SendResult, hello_frame, new_ref, send_frame
from .schema import (
    CAP_BATCH,
    DEFAULT_CHANNEL,
    Ack,
    Error,
    Event,
    Events,
    Hello,
    History,
    HistoryResult,
    HubFrame,
    Leases,
    LeasesResult,
    Ok,
    Ping,
    Pong,
    Presence,
    Presences,
    Receipt,
    Register,
    Registered,
    Release,
    Released,
    Reserve,
    Reserved,
    Roster,
    RosterResult,
    Status,
    Synced,
    Threads,
    ThreadsResult,
    Welcome,
)

__all__ = ["Client", "Incoming", "SendResult", "StateCallback", "new_ref"]

T = TypeVar("T")


class _Kept(Generic[T]):
    """An attribute of :class:`Client` kept by one of its parts (read and set there)."""

    def __init__(self, part: str) -> None:
        self._part = part
        self._name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    @overload
    def __get__(self, obj: None, objtype: type | None = None) -> _Kept[T]: ...
    @overload
    def __get__(self, obj: object, objtype: type | None = None) -> T: ...
    def __get__(self, obj: object | None, objtype: type | None = None) -> _Kept[T] | T:
        if obj is None:
            return self
        value: T = getattr(getattr(obj, self._part), self._name)
        return value

    def __set__(self, obj: object, value: T) -> None:
        setattr(getattr(obj, self._part), self._name, value)


class Client:
    """A connection to a wsbus hub that survives hub restarts and network blips.

    Its parts own their state: the link (:class:`~wsbus.client_link.Link`: the
    connection, reconnects, the resume :class:`~wsbus.client_link.Cursor`), the
    requests waiting on the hub (:class:`~wsbus.client_requests.Requests`) and the
    inbox the application iterates (:class:`~wsbus.client_inbox.Inbox`).
    """

    urls = _Kept[list[str]]("_link")
    #: the hub URL in use (or tried next)
    url = _Kept[str]("_link")
    token = _Kept[str | None]("_link")
    ca_file = _Kept[str | None]("_link")
    codec = _Kept[Codec]("_link")
    reconnect = _Kept[bool]("_link")
    backoff_min = _Kept[float]("_link")
    backoff_max = _Kept[float]("_link")
    open_timeout = _Kept[float]("_link")
    on_state = _Kept[StateCallback | None]("_link")
    welcome = _Kept[Welcome | None]("_link")
    hub_id = _Kept[str | None]("_cursor")
    #: seq of the last event received (the resume point)
    last_seq = _Kept[int | None]("_cursor")
    #: seq of the last event handed to the application
    processed_seq = _Kept[int | None]("_cursor")

    def __init__(
        self,
        url: str | Sequence[str] = "ws://127.0.0.1:8765",
        name: str | None = None,
        *,
        names: tuple[str, ...] | list[str] = (),
        channels: tuple[str, ...] | list[str] = (DEFAULT_CHANNEL,),
        resume: int | None = None,
        hub_id: str | None = None,
        kind: str = "agent",
        model: str | None = None,
        role: str | None = None,
        host: str | None = None,
        tmux: str | None = None,
        watch: bool = False,
        presence: bool = True,
        pending: bool = False,
        token: str | None = None,
        ca_file: str | None = None,
        binary: bool = False,
        reconnect: bool = True,
        backoff_min: float = 0.1,
        backoff_max: float = 10.0,
        open_timeout: float = 5.0,
        queue_size: int = 10_000,
        on_state: StateCallback | None = None,
    ) -> None:
        self.name = name
        self.names = list(names)
        self.channels = list(channels)
        self.kind = kind
        self.info = {"model": model, "role": role, "host": host, "tmux": tmux}
        self.watch = watch
        self.presence = presence
        self.pending = pending
        self._cursor = Cursor(resume, hub_id)
        self._inbox = Inbox(self._cursor, queue_size)
        self._link = Link(
            url,
            MSGPACK if binary else JSON,
            self._cursor,
            token=token if token is not None else os.environ.get("WSBUS_TOKEN") or None,
            ca_file=ca_file if ca_file is not None else os.environ.get("WSBUS_CA_FILE") or None,
            reconnect=reconnect,
            backoff_min=backoff_min,
            backoff_max=backoff_max,
            open_timeout=open_timeout,
            on_state=on_state,
            hello=self._hello,
            opened=self._opened,
            received=self._received,
            ended=self._finish,
        )
        self._requests = Requests(self._link.write)

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Client:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self, *, wait: bool = False) -> Welcome:
        """Connect and say hello; returns the hub's ``welcome``.

        With ``wait=False`` a failure of the first attempt raises
        :class:`HubUnreachable`; with ``wait=True`` it retries with backoff until
        the hub answers. Later disconnections always reconnect (unless
        ``reconnect=False``).
        """
        return await self._link.start(wait)

    async def close(self) -> None:
        """Close the connection; unacknowledged sends fail with ConnectionLost."""
        await self._link.close()
        self._finish(ConnectionLost(1000, "client closed"))

    @property
    def connected(self) -> bool:
        return self._link.connected

    # ------------------------------------------------------------------ API

    async def send(
        self,
        to: str,
        body: str,
        *,
        channel: str | None = None,
        thread: str | None = None,
        kind: str | None = None,
        meta: dict[str, Any] | None = None,
        ref: str | None = None,
        from_: str | None = None,
        timeout: float | None = None,
    ) -> SendResult:
        """Publish one event; returns after the hub stored it durably.

        Incoming events wait in a queue (``queue_size``) until the application
        iterates; when it is full the client stops reading, so a client that only
        sends should subscribe to no channels (``channels=()``).

        Resent with the same ``ref`` after a reconnect; raises
        :class:`SendRefused` if the hub refuses it and :class:`TimeoutError`
        after ``timeout`` seconds (the event may then be stored or not: send
        again with the same ``ref`` to find out without creating a duplicate).
        """
        self._link.check()
        ref = ref or new_ref()
        frame = send_frame(
            self.codec,
            self.welcome.limits if self.welcome else None,
            ref,
            to,
            body,
            channel=channel,
            from_=from_,
            thread=thread,
            kind=kind,
            meta=meta,
        )
        return await self._requests.send(frame, timeout)

    async def ack(
        self, seq: int, status: str = "read", *, reason: str | None = None, name: str | None = None
    ) -> None:
        """Tell the sender what happened to event ``seq`` (sent when connected)."""
        frame = Ack(seq=seq, status=status, reason=reason, name=name)  # type: ignore[arg-type]
        await self._requests.ack(frame)  # when disconnected: after the next hello

    async def history(
        self,
        *,
        channel: str | None = None,
        to: str | None = None,
        from_: str | None = None,
        thread: str | None = None,
        after: int | None = None,
        before: int | None = None,
        limit: int = 100,
        pending: bool = False,
        timeout: float | None = 30.0,
    ) -> HistoryResult:
        """Stored events: the latest ``limit`` (or, with ``after``, the next ``limit``).

        ``pending`` (with ``to``): only direct events to ``to`` without a final receipt.
        """
        frame = History(
            ref=new_ref(),
            channel=channel,
            to=to,
            from_=from_,
            thread=thread,
            after=after,
            before=before,
            limit=limit,
            pending=pending,
        )
        result: HistoryResult = await self._ask(frame, timeout)
        return result

    async def roster(
        self, channel: str | None = None, *, all: bool = False, timeout: float | None = 30.0
    ) -> RosterResult:
        """Names connected on ``channel`` right now and its registered members
        (``all``: the registered members of every channel)."""
        frame = Roster(ref=new_ref(), channel=channel, all=all)
        result: RosterResult = await self._ask(frame, timeout)
        return result

    async def register(
        self,
        channel: str,
        name: str,
        *,
        session: str | None = None,
        host: str | None = None,
        model: str | None = None,
        role: str | None = None,
        enter_delay: float | None = None,
        leave: bool = False,
        timeout: float | None = 30.0,
    ) -> Registered:
        """Join (or update, or ``leave``) ``channel``'s roster; the answer holds the
        name given (``-2``... when another session holds ``name``)."""
        frame = Register(
            ref=new_ref(),
            channel=channel,
            name=name,
            session=session,
            host=host,
            model=model,
            role=role,
            enter_delay=enter_delay,
            leave=leave,
        )
        result: Registered = await self._ask(frame, timeout)
        return result

    async def threads(
        self, channel: str | None = None, timeout: float | None = 30.0
    ) -> ThreadsResult:
        """Threads of ``channel`` (or of every channel), most recently active first."""
        result: ThreadsResult = await self._ask(Threads(ref=new_ref(), channel=channel), timeout)
        return result

    async def reserve(
        self,
        paths: Sequence[str],
        ttl: float,
        *,
        exclusive: bool = True,
        reason: str | None = None,
        channel: str | None = None,
        ref: str | None = None,
        timeout: float | None = 30.0,
    ) -> Reserved:
        """Lease ``paths`` (relative to the repository root, globs allowed) for ``ttl``
        seconds; raises :class:`SendRefused` (``lease_conflict``) naming the holder
        when another agent's lease overlaps. Resending the same ``ref`` is safe."""
        frame = Reserve(
            ref=ref or new_ref(),
            paths=list(paths),
            ttl=ttl,
            exclusive=exclusive,
            reason=reason,
            channel=channel,
        )
        result: Reserved = await self._ask(frame, timeout)
        return result

    async def release(
        self,
        *,
        ids: Sequence[int] = (),
        paths: Sequence[str] = (),
        channel: str | None = None,
        timeout: float | None = 30.0,
    ) -> Released:
        """End this name's leases: ``ids``, or those on exactly ``paths``, or all."""
        frame = Release(ref=new_ref(), ids=list(ids), paths=list(paths), channel=channel)
        result: Released = await self._ask(frame, timeout)
        return result

    async def leases(
        self, channel: str | None = None, *, prefix: str | None = None, timeout: float | None = 30.0
    ) -> LeasesResult:
        """The leases in force (on ``channel``, or every channel the token may use)."""
        result: LeasesResult = await self._ask(
            Leases(ref=new_ref(), channel=channel, prefix=prefix), timeout
        )
        return result

    async def status(self, alive: dict[str, bool]) -> None:
        """(Bridges) report which names have a live tmux session; repeated after reconnects."""
        await self._requests.report(Status(alive=dict(alive)))

    async def ping(self, timeout: float | None = 10.0, *, sync: bool = False) -> Pong:
        """A round trip to the hub; with ``sync``, answered once what this client sent
        before (acks included) is committed."""
        result: Pong = await self._ask(Ping(ref=new_ref(), sync=sync), timeout)
        return result

    def __aiter__(self) -> AsyncIterator[Incoming]:
        return self._inbox.items(self._link.ended_by)

    async def events(self) -> AsyncIterator[Event]:
        """Only the events (presence and receipts skipped)."""
        async for item in self:
            if isinstance(item, Event):
                yield item

    # ------------------------------------------------------------------ the parts' wiring

    async def _ask(self, frame: Any, timeout: float | None) -> Any:
        self._link.check()
        return await self._requests.ask(frame, timeout)

    def _hello(self) -> Hello:
        return hello_frame(
            self.name,
            names=self.names,
            channels=self.channels,
            resume=self.last_seq,
            kind=self.kind,
            watch=self.watch,
            presence=self.presence,
            pending=self.pending,
            model=self.info["model"],
            role=self.info["role"],
            host=self.info["host"],
            tmux=self.info["tmux"],
            capabilities=[CAP_BATCH],
        )

    async def _opened(self, send: Writer) -> None:
        await self._requests.resend(send)

    async def _received(self, frame: HubFrame) -> None:
        match frame:
            case Event():
                await self._inbox.event(frame)
            case Events():
                for ev in frame.events:
                    await self._inbox.event(ev)
            case Presences():
                for change in frame.presences():
                    await self._inbox.put(change)
            case Ok():
                self._requests.on_ok(frame)
            case Error():
                self._requests.on_error(frame)
            case Presence() | Receipt():
                await self._inbox.put(frame)
            case (
                HistoryResult()
                | RosterResult()
                | Registered()
                | ThreadsResult()
                | Reserved()
                | Released()
                | LeasesResult()
                | Pong()
            ):
                self._requests.on_answer(frame)
            case Synced():
                self._cursor.synced(frame.seq)
            case _:
                pass

    def _finish(self, err: Exception) -> None:
        self._requests.fail(err)
        self._inbox.close()
