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

import asyncio
import contextlib
import logging
import os
import random
import ssl
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from .codec import JSON, MSGPACK, Codec
from .errors import (
    FATAL_CLOSE_CODES,
    RETRYABLE_ERRORS,
    ClientError,
    ConnectionLost,
    ErrorCode,
    SendRefused,
)
from .handshake import (
    CLIENT_NAME,
    SendResult,
    connect_failure,
    handshake_headers,
    hello_frame,
    new_ref,
    refused_upgrade,
    send_frame,
    tls_context,
    welcome_from,
    why_unreachable,
)
from .schema import (
    DEFAULT_CHANNEL,
    Ack,
    Error,
    Event,
    Hello,
    History,
    HistoryResult,
    Ok,
    Ping,
    Pong,
    Presence,
    Receipt,
    Register,
    Registered,
    Roster,
    RosterResult,
    Send,
    Status,
    Synced,
    Threads,
    ThreadsResult,
    Welcome,
)

__all__ = ["Client", "Incoming", "SendResult", "StateCallback", "new_ref"]

log = logging.getLogger("wsbus.client")

Incoming = Event | Presence | Receipt
StateCallback = Callable[[str, dict[str, Any]], None]
"""Called with ``("connected" | "reconnecting" | "truncated" | "closed", details)``."""

_CLOSED = object()


class Client:
    """A connection to a wsbus hub that survives hub restarts and network blips."""

    def __init__(
        self,
        url: str = "ws://127.0.0.1:8765",
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
        self.url = url
        self.name = name
        self.names = list(names)
        self.channels = list(channels)
        self.kind = kind
        self.info = {"model": model, "role": role, "host": host, "tmux": tmux}
        self.watch = watch
        self.presence = presence
        self.pending = pending
        self.token = token if token is not None else os.environ.get("WSBUS_TOKEN") or None
        self.ca_file = ca_file if ca_file is not None else os.environ.get("WSBUS_CA_FILE") or None
        self._ssl: ssl.SSLContext | None = None
        self.codec: Codec = MSGPACK if binary else JSON
        self.reconnect = reconnect
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        self.open_timeout = open_timeout
        self.on_state = on_state
        self.hub_id = hub_id
        self.welcome: Welcome | None = None
        #: seq of the last event received (the resume point)
        self.last_seq: int | None = resume
        #: seq of the last event handed to the application
        self.processed_seq: int | None = resume
        self._queue: asyncio.Queue[Any] = asyncio.Queue(queue_size)
        self._conn: ClientConnection | None = None
        self._connected = asyncio.Event()
        self._first: asyncio.Future[Welcome] | None = None
        self._unacked: dict[str, tuple[Send, asyncio.Future[SendResult]]] = {}
        self._requests: dict[str, tuple[Any, asyncio.Future[Any]]] = {}
        self._acks: list[Ack] = []
        self._status: Status | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._done = False
        self._fatal: Exception | None = None

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
        self._first = first = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._run(wait), name="wsbus-client")
        return await asyncio.shield(first)

    async def close(self) -> None:
        """Close the connection; unacknowledged sends fail with ConnectionLost."""
        self._closing = True
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        self._finish(ConnectionLost(1000, "client closed"))

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

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
        self._check_fatal()
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
        existing = self._unacked.get(ref)
        if existing is not None:
            fut = existing[1]
        else:
            fut = asyncio.get_running_loop().create_future()
            self._unacked[ref] = (frame, fut)
            await self._write(frame)
        try:
            return await asyncio.wait_for(asyncio.shield(fut), timeout)
        except asyncio.CancelledError:
            self._unacked.pop(ref, None)  # the caller gave up: stop resending it
            raise
        finally:
            if fut.done() or timeout is not None:
                self._unacked.pop(ref, None)

    async def ack(
        self, seq: int, status: str = "read", *, reason: str | None = None, name: str | None = None
    ) -> None:
        """Tell the sender what happened to event ``seq`` (sent when connected)."""
        frame = Ack(seq=seq, status=status, reason=reason, name=name)  # type: ignore[arg-type]
        if not await self._write(frame):
            self._acks.append(frame)  # sent after the next hello

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
        result: HistoryResult = await self._request(frame, timeout)
        return result

    async def roster(
        self, channel: str | None = None, *, all: bool = False, timeout: float | None = 30.0
    ) -> RosterResult:
        """Names connected on ``channel`` right now and its registered members
        (``all``: the registered members of every channel)."""
        frame = Roster(ref=new_ref(), channel=channel, all=all)
        result: RosterResult = await self._request(frame, timeout)
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
        result: Registered = await self._request(frame, timeout)
        return result

    async def threads(
        self, channel: str | None = None, timeout: float | None = 30.0
    ) -> ThreadsResult:
        """Threads of ``channel`` (or of every channel), most recently active first."""
        result: ThreadsResult = await self._request(
            Threads(ref=new_ref(), channel=channel), timeout
        )
        return result

    async def status(self, alive: dict[str, bool]) -> None:
        """(Bridges) report which names have a live tmux session; repeated after reconnects."""
        self._status = Status(alive=dict(alive))
        await self._write(self._status)

    async def ping(self, timeout: float | None = 10.0) -> Pong:
        result: Pong = await self._request(Ping(ref=new_ref()), timeout)
        return result

    def __aiter__(self) -> AsyncIterator[Incoming]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Incoming]:
        while True:
            if self._done and self._queue.empty():
                if self._fatal is not None and not self._closing:
                    raise self._fatal
                return
            item = await self._queue.get()
            if item is _CLOSED:
                self._queue.put_nowait(_CLOSED)
                if self._fatal is not None and not self._closing:
                    raise self._fatal
                return
            if isinstance(item, Event):
                self.processed_seq = item.seq
            yield item

    async def events(self) -> AsyncIterator[Event]:
        """Only the events (presence and receipts skipped)."""
        async for item in self:
            if isinstance(item, Event):
                yield item

    # ------------------------------------------------------------------ internals

    def _check_fatal(self) -> None:
        if self._fatal is not None:
            raise self._fatal

    def _state(self, state: str, **details: Any) -> None:
        if self.on_state is not None:
            try:
                self.on_state(state, details)
            except Exception:
                log.exception("on_state callback failed")

    async def _write(self, frame: Any) -> bool:
        """Write now if connected; False when it must wait for the next hello."""
        conn = self._conn
        if conn is None or not self.connected:
            return False  # sent by _resend() after the next hello
        try:
            await conn.send(self.codec.encode(frame), text=not self.codec.binary)
        except ConnectionClosed:
            return False
        return True

    async def _request(self, frame: Any, timeout: float | None) -> Any:
        self._check_fatal()
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._requests[frame.ref] = (frame, fut)
        try:
            await self._write(frame)
            return await asyncio.wait_for(fut, timeout)
        finally:
            self._requests.pop(frame.ref, None)

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
        )

    def _delay(self, attempt: int) -> float:
        cap = min(self.backoff_max, self.backoff_min * (2**attempt))
        return random.uniform(self.backoff_min, max(self.backoff_min, cap))

    def _tls(self) -> ssl.SSLContext | None:
        """The TLS context for ``wss://`` (None: websockets' default, system CAs)."""
        if self._ssl is None:
            self._ssl = tls_context(self.url, self.ca_file)
        return self._ssl

    async def _open(self) -> tuple[ClientConnection, Welcome]:
        headers = handshake_headers(self.token) or None
        tls = self._tls()
        extra: dict[str, Any] = {"ssl": tls} if tls is not None else {}
        try:
            conn = await connect(
                self.url,
                subprotocols=[self.codec.name],  # type: ignore[list-item]
                open_timeout=self.open_timeout,
                max_size=None,
                compression=None,
                max_queue=64,
                user_agent_header=CLIENT_NAME,
                additional_headers=headers,
                **extra,
            )
        except InvalidStatus as err:
            refused = refused_upgrade(
                err.response.status_code, bytes(err.response.body), self.token
            )
            if refused is not None:
                raise refused from None
            raise
        try:
            await conn.send(self.codec.encode(self._hello()), text=not self.codec.binary)
            data = await asyncio.wait_for(conn.recv(), self.open_timeout)
        except BaseException:
            conn.transport.abort()
            raise
        try:
            return conn, welcome_from(self.codec, data)
        except (ConnectionLost, OSError):
            await conn.close()
            raise

    async def _run(self, wait: bool) -> None:
        try:
            await self._loop(wait)
        except asyncio.CancelledError:
            raise
        except Exception as err:  # never leave callers waiting on a dead task
            log.exception("wsbus client failed")
            self._fail(ClientError(f"client failed: {err}"))

    async def _loop(self, wait: bool) -> None:
        attempt = 0
        ever = False
        while not self._closing:
            try:
                conn, welcome = await self._open()
            except asyncio.CancelledError:
                raise
            except Exception as err:
                failure = connect_failure(err, self.url)
                if failure is None:
                    raise
                error, retry = failure
                if not retry or not (wait or (ever and self.reconnect)):
                    self._fail(error)
                    return
                delay = self._delay(attempt)
                attempt += 1
                why = why_unreachable(err, self.url)
                self._state("reconnecting", delay=delay, error=why, attempt=attempt)
                await asyncio.sleep(delay)
                continue
            self.welcome = welcome
            if self.hub_id is not None and welcome.hub != self.hub_id and self.last_seq:
                # a different store behind the same URL: our cursor means nothing there
                self._state("truncated", reason="hub changed", hub=welcome.hub)
                self.hub_id = welcome.hub
                self.last_seq = 0
                await conn.close()
                continue
            self.hub_id = welcome.hub
            if not welcome.recovered:
                if self.last_seq is not None and self.last_seq > welcome.seq:
                    # the hub never had our resume point: take its events from here on
                    self.last_seq = welcome.seq
                    self._state("truncated", reason="resume point unknown to this hub")
                else:
                    self._state("truncated", reason="resume point older than retention")
            ever = True
            up_since = time.monotonic()
            self._conn = conn
            self._connected.set()
            self._state("connected", hub=welcome.hub, seq=welcome.seq)
            if self._first is not None and not self._first.done():
                self._first.set_result(welcome)
            try:
                await self._resend(conn)
                await self._read(conn)
            except ConnectionClosed:
                pass
            finally:
                self._connected.clear()
                self._conn = None
            code = conn.close_code
            if code in FATAL_CLOSE_CODES:
                self._fail(ConnectionLost(code or 0, conn.close_reason or ""))
                return
            if self._closing or not self.reconnect:
                self._fail(ConnectionLost(code or 1006, conn.close_reason or "connection closed"))
                return
            # back off harder when connections keep dropping right after they open
            attempt = 0 if time.monotonic() - up_since > 5.0 else attempt + 1
            delay = self._delay(attempt)
            self._state("reconnecting", delay=delay, error=f"closed ({code})", attempt=attempt + 1)
            await asyncio.sleep(delay)

    async def _resend(self, conn: ClientConnection) -> None:
        binary = self.codec.binary
        for frame, fut in list(self._unacked.values()):
            if not fut.done():
                await conn.send(self.codec.encode(frame), text=not binary)
        for req, _ in list(self._requests.values()):
            await conn.send(self.codec.encode(req), text=not binary)
        acks, self._acks = self._acks, []
        for ack in acks:
            await conn.send(self.codec.encode(ack), text=not binary)
        if self._status is not None:
            await conn.send(self.codec.encode(self._status), text=not binary)

    async def _read(self, conn: ClientConnection) -> None:
        decode = self.codec.decode_hub
        async for data in conn:
            try:
                frame = decode(data)
            except (msgspec.DecodeError, msgspec.ValidationError) as err:
                log.warning("undecodable frame from hub: %s", err)
                continue
            match frame:
                case Event():
                    if self.last_seq is not None and frame.seq <= self.last_seq:
                        continue
                    self.last_seq = frame.seq
                    await self._queue.put(frame)
                case Ok():
                    entry = self._unacked.get(frame.ref)
                    if entry is not None and not entry[1].done():
                        entry[1].set_result(
                            SendResult(
                                frame.seq, frame.ts, frame.ref, frame.duplicate, frame.online
                            )
                        )
                case Error():
                    self._on_error(frame)
                case Presence() | Receipt():
                    await self._queue.put(frame)
                case HistoryResult() | RosterResult() | Registered() | ThreadsResult() | Pong():
                    req = self._requests.get(frame.ref or "")
                    if req is not None and not req[1].done():
                        req[1].set_result(frame)
                case Synced():
                    # everything up to frame.seq we are entitled to has been sent
                    self.last_seq = max(self.last_seq or 0, frame.seq)
                case _:
                    pass

    def _on_error(self, frame: Error) -> None:
        if frame.ref is not None:
            entry = self._unacked.get(frame.ref)
            if entry is not None and not entry[1].done():
                if frame.code in RETRYABLE_ERRORS:
                    # keep it queued: resent after the next hello, or in a moment
                    if frame.code != ErrorCode.SHUTTING_DOWN:
                        asyncio.get_running_loop().call_later(
                            1.0, lambda: asyncio.ensure_future(self._retry(frame.ref or ""))
                        )
                    return
                entry[1].set_exception(SendRefused(frame.code, frame.message))
                return
            req = self._requests.get(frame.ref)
            if req is not None and not req[1].done():
                if frame.code == ErrorCode.SHUTTING_DOWN:
                    return  # asked again after the next hello (_resend)
                req[1].set_exception(SendRefused(frame.code, frame.message))
                return
        log.warning("hub error: %s: %s", frame.code, frame.message)

    async def _retry(self, ref: str) -> None:
        entry = self._unacked.get(ref)
        if entry is not None and not entry[1].done():
            await self._write(entry[0])

    def _fail(self, err: Exception) -> None:
        self._fatal = err
        if self._first is not None and not self._first.done():
            self._first.set_exception(err)
            self._first.exception()  # mark retrieved: connect() re-raises it
        self._finish(err)
        self._state("closed", error=str(err))

    def _finish(self, err: Exception) -> None:
        self._done = True
        for _, fut in self._unacked.values():
            if not fut.done():
                fut.set_exception(err)
        for _, fut in self._requests.values():
            if not fut.done():
                fut.set_exception(err)
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(_CLOSED)
