"""A one-shot, blocking connection for a single send: ``wsbus send`` without asyncio.

Agents call ``wsbus send`` in loops, so its start-up counts: importing asyncio and
the asyncio websocket client costs more than the whole send. This sender speaks the
same protocol through the ``websockets`` library's sans-I/O :class:`ClientProtocol`
over a plain (TLS) socket, and builds its frames and words its errors with
:mod:`wsbus.handshake`, like :class:`wsbus.client.Client`::

    with OneShot("ws://127.0.0.1:8765", "alice") as bus:
        welcome = bus.connect()
        ok = bus.send(send_frame(JSON, welcome.limits, new_ref(), "bob", "hi"))

It does the common case only: connect, ``hello``, one ``send``, its ``ok``. What the
asyncio client waits out — a refusal to retry (``store_failed``, ``shutting_down``)
or a connection lost before the ``ok`` — raises :class:`Unsettled`: finish the send
with the asyncio client and the same ``ref`` (the hub stores a ref once).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from types import TracebackType
from typing import Any

import msgspec
from websockets.client import ClientProtocol
from websockets.exceptions import InvalidStatus
from websockets.frames import Opcode
from websockets.protocol import State
from websockets.typing import Subprotocol
from websockets.uri import parse_uri

from .codec import JSON, Codec
from .config import hub_urls
from .errors import FATAL_CLOSE_CODES, RETRYABLE_ERRORS, ClientError, ConnectionLost, SendRefused
from .handshake import (
    CLIENT_NAME,
    SendResult,
    connect_failure,
    handshake_headers,
    hello_frame,
    refused_upgrade,
    tls_context,
    welcome_from,
)
from .schema import Error, Ok, Send, Welcome

__all__ = ["OneShot", "Unsettled"]

log = logging.getLogger("wsbus.client")

_DATA = (Opcode.TEXT, Opcode.BINARY, Opcode.CONT)

#: how long :meth:`OneShot.close` waits for the hub's side of the closing handshake
CLOSE_WAIT = 1.0


class Unsettled(ClientError):
    """The send needs what only the asyncio client does (wait for a retry, reconnect):
    send it again with :class:`wsbus.client.Client` and the same ref."""


class OneShot:
    """One blocking connection to a hub: hello, then sends answered one at a time."""

    def __init__(
        self,
        url: str,
        name: str | None,
        *,
        kind: str = "agent",
        token: str | None = None,
        ca_file: str | None = None,
        timeout: float = 10.0,
        codec: Codec = JSON,
    ) -> None:
        #: the hubs to try in turn (several hubs of one bus)
        self.urls = hub_urls(url)
        self.url = self.urls[0]
        self.name = name
        self.kind = kind
        self.token = token
        self.ca_file = ca_file
        self.timeout = timeout
        self.codec = codec
        self.welcome: Welcome | None = None
        self._sock: socket.socket | None = None
        self._protocol: ClientProtocol | None = None
        self._events: list[Any] = []  # received, not yet read
        self._parts: list[bytes] = []  # of a fragmented message

    def __enter__(self) -> OneShot:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    def connect(self) -> Welcome:
        """Connect and say hello, as a send-only client: no channels, no presence;
        with several hub URLs, the first that answers. Raises what
        :meth:`wsbus.client.Client.connect` raises on a first attempt."""
        for i, url in enumerate(self.urls):
            self.url = url
            try:
                self.welcome = self._open()
                return self.welcome
            except Exception as err:
                self.close()
                failure = connect_failure(err, url)
                if failure is None:
                    raise
                error, retry = failure
                if retry and i + 1 < len(self.urls):
                    continue  # another hub of the bus
                raise error from None
        raise AssertionError("no hub URL")  # hub_urls never returns an empty list

    def send(self, frame: Send) -> SendResult:
        """Send ``frame`` (see :func:`wsbus.handshake.send_frame`) and return the hub's
        durable ``ok``. Raises :class:`SendRefused`, :class:`ConnectionLost` (a close
        code that forbids retrying), :class:`TimeoutError` or :class:`Unsettled`."""
        deadline = time.monotonic() + self.timeout
        self._write(frame)
        while True:
            answer = self._answer_to(frame.ref, deadline)
            if answer is None:  # closed before the ok
                protocol = self._protocol
                assert protocol is not None
                code = protocol.close_code
                if code in FATAL_CLOSE_CODES:
                    raise ConnectionLost(code or 0, protocol.close_reason or "")
                raise Unsettled(f"connection closed ({code}) before the ok")
            if isinstance(answer, Ok):
                return SendResult(
                    answer.seq, answer.ts, answer.ref, answer.duplicate, answer.online
                )
            if isinstance(answer, Error):
                if answer.code in RETRYABLE_ERRORS:
                    raise Unsettled(f"{answer.code}: {answer.message}")
                raise SendRefused(answer.code, answer.message)

    def request(self, frame: Any, timeout: float) -> Any:
        """Send a query frame (``roster``, ``history``…) and return the hub's answer
        to its ``ref``. Raises :class:`SendRefused` when the hub answers an error,
        :class:`TimeoutError`, or :class:`ConnectionLost` when the connection closed."""
        return self.requests([frame], timeout)[0]

    def requests(self, frames: list[Any], timeout: float) -> list[Any]:
        """:meth:`request` for several query frames at once (one round trip: all are
        written before any answer is read); the answers in the frames' order."""
        for frame in frames:
            self._write(frame)
        answers = self._answers_to([frame.ref for frame in frames], time.monotonic() + timeout)
        if answers is None:
            protocol = self._protocol
            assert protocol is not None
            raise ConnectionLost(protocol.close_code or 0, protocol.close_reason or "")
        for answer in answers:
            if isinstance(answer, Error):
                raise SendRefused(answer.code, answer.message)
        return answers

    def _answer_to(self, ref: str | None, deadline: float) -> Any:
        """The next frame from the hub carrying ``ref``, or None once closed."""
        answers = self._answers_to([ref], deadline)
        return None if answers is None else answers[0]

    def _answers_to(self, refs: list[str | None], deadline: float) -> list[Any] | None:
        """The frames from the hub carrying ``refs`` (in that order, whatever order
        they came in), or None once closed (frames for other refs are skipped; an
        error among them is logged)."""
        got: dict[str | None, Any] = {}
        while len(got) < len(refs):
            data = self._message(deadline)
            if data is None:
                return None
            try:
                answer = self.codec.decode_hub(data)
            except (msgspec.DecodeError, msgspec.ValidationError) as err:
                log.warning("undecodable frame from hub: %s", err)
                continue
            ref = getattr(answer, "ref", None)
            if ref in refs and ref not in got:
                got[ref] = answer
            elif isinstance(answer, Error):
                log.warning("hub error: %s: %s", answer.code, answer.message)
        return [got[ref] for ref in refs]

    def close(self) -> None:
        """The closing handshake (briefly: the hub answers at once), then the socket."""
        protocol = self._protocol
        if protocol is not None and self._sock is not None and protocol.state is State.OPEN:
            try:
                protocol.send_close(1000)
                self._flush()
                deadline = time.monotonic() + CLOSE_WAIT
                while not self._closed():
                    self._receive(deadline)
            except (OSError, TimeoutError):
                pass
        self._abort()

    # ------------------------------------------------------------------ internals

    def _open(self) -> Welcome:
        uri = parse_uri(self.url)
        tls = None
        if uri.secure:
            tls = tls_context(self.url, self.ca_file)
            if tls is None:
                import ssl

                tls = ssl.create_default_context()
        deadline = time.monotonic() + self.timeout
        # an ASCII host name as bytes: the resolver then needs no IDNA codec (2 ms)
        host = uri.host.encode("ascii") if uri.host.isascii() else uri.host
        sock = socket.create_connection((host, uri.port), self.timeout)  # type: ignore[arg-type]
        self._sock = sock
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls is not None:
            self._sock = sock = tls.wrap_socket(sock, server_hostname=uri.host)
        self._protocol = protocol = ClientProtocol(
            uri, subprotocols=[Subprotocol(self.codec.name)], max_size=None
        )
        request = protocol.connect()
        request.headers.update(handshake_headers(self.token))
        request.headers.setdefault("User-Agent", CLIENT_NAME)
        protocol.send_request(request)
        self._flush()
        while protocol.state is State.CONNECTING and protocol.handshake_exc is None:
            self._events.extend(self._receive(deadline))
        if protocol.handshake_exc is not None:
            exc = protocol.handshake_exc
            if isinstance(exc, InvalidStatus):
                response = exc.response
                refused = refused_upgrade(response.status_code, bytes(response.body), self.token)
                if refused is not None:
                    raise refused
            raise exc
        # the hello bounded by the timeout again, as the asyncio client's
        self._write(hello_frame(self.name, channels=[], kind=self.kind, presence=False))
        data = self._message(time.monotonic() + self.timeout)
        if data is None:
            raise protocol.close_exc
        return welcome_from(self.codec, data)

    def _write(self, frame: Any) -> None:
        protocol = self._protocol
        assert protocol is not None
        data = self.codec.encode(frame)
        if self.codec.binary:
            protocol.send_binary(data)
        else:
            protocol.send_text(data)
        self._flush()

    def _message(self, deadline: float) -> bytes | None:
        """The next whole message from the hub, or None once the connection closed
        (ping, pong and close frames are answered by the protocol itself)."""
        protocol = self._protocol
        assert protocol is not None
        while True:
            while self._events:
                event = self._events.pop(0)
                if getattr(event, "opcode", None) not in _DATA:
                    continue  # the handshake's response, control frames
                self._parts.append(bytes(event.data))
                if event.fin:
                    message, self._parts = b"".join(self._parts), []
                    return message
            if self._closed():
                return None
            self._events.extend(self._receive(deadline))

    def _receive(self, deadline: float) -> list[Any]:
        """Read once from the socket and feed the protocol; its events."""
        sock, protocol = self._sock, self._protocol
        assert sock is not None and protocol is not None
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("timed out")
        sock.settimeout(remaining)
        data = sock.recv(65536)
        if data:
            protocol.receive_data(data)
        else:
            protocol.receive_eof()
        self._flush()
        return protocol.events_received()

    def _flush(self) -> None:
        sock, protocol = self._sock, self._protocol
        assert sock is not None and protocol is not None
        for chunk in protocol.data_to_send():
            if chunk:
                sock.sendall(chunk)
            else:  # the protocol's end of stream: half-close
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_WR)

    def _closed(self) -> bool:
        return self._protocol is None or self._protocol.state is State.CLOSED

    def _abort(self) -> None:
        self._protocol = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
