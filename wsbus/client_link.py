"""The asyncio client's connection to its hub (:class:`~wsbus.client.Client`'s part):
one connection at a time, reopened with backoff, and the resume cursor checked against
every ``welcome``.

:class:`Link` opens a connection (the websocket upgrade, ``hello``, ``welcome``: the
frames and the wording of failures come from :mod:`wsbus.handshake`), reads the hub's
frames until it closes and reconnects; the client's other parts plug in as callbacks.
:class:`Cursor` is where the client resumes: the hub it reads from and the last event
received.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from .codec import Codec
from .config import hub_urls
from .errors import FATAL_CLOSE_CODES, ClientError, ConnectionLost
from .handshake import (
    CLIENT_NAME,
    connect_failure,
    handshake_headers,
    refused_upgrade,
    tls_context,
    welcome_from,
    why_unreachable,
)
from .schema import Hello, HubFrame, Welcome

__all__ = ["Cursor", "Link", "StateCallback", "Writer"]

log = logging.getLogger("wsbus.client")

StateCallback = Callable[[str, dict[str, Any]], None]
"""Called with ``("connected" | "reconnecting" | "truncated" | "closed", details)``."""

Writer = Callable[[Any], Awaitable[None]]
"""Writes one frame on the connection just opened (raises ConnectionClosed)."""


class Cursor:
    """Where the client resumes: the hub (its store) and the seq of the last event
    received from it; and the seq of the last event handed to the application."""

    def __init__(self, resume: int | None, hub_id: str | None) -> None:
        self.hub_id = hub_id
        #: seq of the last event received (the resume point)
        self.last_seq: int | None = resume
        #: seq of the last event handed to the application
        self.processed_seq: int | None = resume

    def take(self, seq: int) -> bool:
        """Whether the event ``seq`` is new (and now the resume point); False: seen."""
        if self.last_seq is not None and seq <= self.last_seq:
            return False
        self.last_seq = seq
        return True

    def synced(self, seq: int) -> None:
        """Everything up to ``seq`` the client is entitled to has been sent."""
        self.last_seq = max(self.last_seq or 0, seq)


class Link:
    """The connection to the hub: opens it, reads it, reopens it after a drop.

    Reconnects with exponential backoff and full jitter, forever once it has connected
    (unless ``reconnect`` is False); a close code that forbids retrying ends it. The
    callbacks: ``hello`` builds the opening frame (at each connection: it carries the
    resume point), ``opened`` says again what waits on the hub once ``welcome`` came,
    ``received`` takes each hub frame, ``ended`` hears the error that ends the client.
    """

    def __init__(
        self,
        url: str | Sequence[str],
        codec: Codec,
        cursor: Cursor,
        *,
        token: str | None,
        ca_file: str | None,
        reconnect: bool,
        backoff_min: float,
        backoff_max: float,
        open_timeout: float,
        on_state: StateCallback | None,
        hello: Callable[[], Hello],
        opened: Callable[[Writer], Awaitable[None]],
        received: Callable[[HubFrame], Awaitable[None]],
        ended: Callable[[Exception], None],
    ) -> None:
        #: the hubs to try in turn (several hubs of one bus: failover)
        self.urls = hub_urls(url)
        self._at = 0
        self.codec = codec
        self.cursor = cursor
        self.token = token
        self.ca_file = ca_file
        self.reconnect = reconnect
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        self.open_timeout = open_timeout
        self.on_state = on_state
        self.welcome: Welcome | None = None
        self._hello = hello
        self._opened = opened
        self._received = received
        self._ended = ended
        self._ssl: dict[str, ssl.SSLContext | None] = {}
        self._conn: ClientConnection | None = None
        self._connected = asyncio.Event()
        self._first: asyncio.Future[Welcome] | None = None
        self._task: asyncio.Task[None] | None = None
        #: close() was called
        self.closing = False
        #: the error that ended the link
        self.fatal: Exception | None = None

    @property
    def url(self) -> str:
        """The hub URL this link uses now (or tries next)."""
        return self.urls[self._at]

    @url.setter
    def url(self, url: str | Sequence[str]) -> None:
        self.urls = hub_urls(url)
        self._at = 0

    def _next_url(self) -> None:
        self._at = (self._at + 1) % len(self.urls)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def start(self, wait: bool) -> Welcome:
        """Start the connection task; returns the first ``welcome``."""
        self._first = first = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._run(wait), name="wsbus-client")
        return await asyncio.shield(first)

    async def close(self) -> None:
        """Close the connection and stop reconnecting."""
        self.closing = True
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    def ended_by(self) -> Exception | None:
        """The error that ended the link, unless close() ended it."""
        return self.fatal if not self.closing else None

    def check(self) -> None:
        """Raise the error that ended the link, if any."""
        if self.fatal is not None:
            raise self.fatal

    async def write(self, frame: Any) -> bool:
        """Write now if connected; False when it must wait for the next hello."""
        conn = self._conn
        if conn is None or not self.connected:
            return False  # said again by ``opened`` after the next hello
        try:
            await conn.send(self.codec.encode(frame), text=not self.codec.binary)
        except ConnectionClosed:
            return False
        return True

    def state(self, state: str, **details: Any) -> None:
        if self.on_state is not None:
            try:
                self.on_state(state, details)
            except Exception:
                log.exception("on_state callback failed")

    def fail(self, err: Exception) -> None:
        """End the link with ``err``: connect() raises it, ``ended`` hears it."""
        self.fatal = err
        if self._first is not None and not self._first.done():
            self._first.set_exception(err)
            self._first.exception()  # mark retrieved: connect() re-raises it
        self._ended(err)
        self.state("closed", error=str(err))

    # ------------------------------------------------------------------ internals

    def _delay(self, attempt: int) -> float:
        cap = min(self.backoff_max, self.backoff_min * (2**attempt))
        return random.uniform(self.backoff_min, max(self.backoff_min, cap))

    def _tls(self) -> ssl.SSLContext | None:
        """The TLS context for ``wss://`` (None: websockets' default, system CAs)."""
        if self.url not in self._ssl:
            self._ssl[self.url] = tls_context(self.url, self.ca_file)
        return self._ssl[self.url]

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
            self.fail(ClientError(f"client failed: {err}"))

    def _resumable(self, welcome: Welcome) -> bool:
        """Move the cursor to what this hub can resume; False: reconnect at once (a
        different hub, the cursor reset)."""
        cursor = self.cursor
        if cursor.hub_id is not None and welcome.hub != cursor.hub_id and cursor.last_seq:
            # a different store behind the same URL: our cursor means nothing there
            self.state("truncated", reason="hub changed", hub=welcome.hub)
            cursor.hub_id = welcome.hub
            cursor.last_seq = 0
            return False
        cursor.hub_id = welcome.hub
        if not welcome.recovered:
            if cursor.last_seq is not None and cursor.last_seq > welcome.seq:
                # the hub never had our resume point: take its events from here on
                cursor.last_seq = welcome.seq
                self.state("truncated", reason="resume point unknown to this hub")
            else:
                self.state("truncated", reason="resume point older than retention")
        return True

    async def _loop(self, wait: bool) -> None:
        attempt = 0
        ever = False
        failed = 0  # URLs that failed in a row: the next one is tried at once
        while not self.closing:
            try:
                conn, welcome = await self._open()
            except asyncio.CancelledError:
                raise
            except Exception as err:
                failure = connect_failure(err, self.url)
                if failure is None:
                    raise
                error, retry = failure
                why = why_unreachable(err, self.url)
                if retry and failed + 1 < len(self.urls):  # another hub of the bus first
                    failed += 1
                    log.info("hub %s unreachable (%s): trying the next one", self.url, why)
                    self._next_url()
                    continue
                if not retry or not (wait or (ever and self.reconnect)):
                    self.fail(error)
                    return
                failed = 0
                self._next_url()
                delay = self._delay(attempt)
                attempt += 1
                self.state("reconnecting", delay=delay, error=why, attempt=attempt)
                await asyncio.sleep(delay)
                continue
            failed = 0
            self.welcome = welcome
            if not self._resumable(welcome):
                await conn.close()
                continue
            ever = True
            up_since = time.monotonic()
            self._conn = conn
            self._connected.set()
            self.state("connected", hub=welcome.hub, seq=welcome.seq, url=self.url)
            if self._first is not None and not self._first.done():
                self._first.set_result(welcome)
            try:
                await self._opened(functools.partial(self._send, conn))
                await self._read(conn)
            except ConnectionClosed:
                pass
            finally:
                self._connected.clear()
                self._conn = None
            code = conn.close_code
            if code in FATAL_CLOSE_CODES:
                self.fail(ConnectionLost(code or 0, conn.close_reason or ""))
                return
            if self.closing or not self.reconnect:
                self.fail(ConnectionLost(code or 1006, conn.close_reason or "connection closed"))
                return
            # back off harder when connections keep dropping right after they open
            attempt = 0 if time.monotonic() - up_since > 5.0 else attempt + 1
            delay = self._delay(attempt)
            self.state("reconnecting", delay=delay, error=f"closed ({code})", attempt=attempt + 1)
            await asyncio.sleep(delay)

    async def _send(self, conn: ClientConnection, frame: Any) -> None:
        await conn.send(self.codec.encode(frame), text=not self.codec.binary)

    async def _read(self, conn: ClientConnection) -> None:
        decode = self.codec.decode_hub
        received = self._received
        async for data in conn:
            try:
                frame = decode(data)
            except (msgspec.DecodeError, msgspec.ValidationError) as err:
                log.warning("undecodable frame from hub: %s", err)
                continue
            await received(frame)
