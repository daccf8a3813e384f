"""``/ws`` on the HTTP port: the hub's websocket protocol through aiohttp.

The same frames, subprotocols, hello, limits and close codes as the websocket port
(:class:`wsbus.connection.Conversation` runs both), so a page served by the hub
(``/ui``) talks to it from its own origin, and one public URL serves everything.

aiohttp writes a websocket frame with a coroutine; the hub writes synchronously
(fan-out writes one frame to many sessions in one turn). So a session queues what
the hub writes and one task per connection sends it in order; what is queued counts
as unread bytes, and a session over ``send_queue`` is a slow consumer as on the
websocket port.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging

from aiohttp import WSMsgType, web

from .auth import bearer
from .codec import codec_for
from .connection import Closed, Conversation, StreamSession
from .errors import CloseCode
from .limits import ConnectionBudget
from .schema import SUBPROTOCOLS

__all__ = ["WebSocketRoute", "WebWsSession"]

log = logging.getLogger("wsbus.server")

#: seconds a close may take before the connection is dropped
CLOSE_GRACE = 3.0


class WebWsSession(StreamSession):
    """A hub session on an aiohttp websocket."""

    transport = "http"

    def __init__(self, ws: web.WebSocketResponse, request: web.BaseRequest) -> None:
        super().__init__(codec_for(ws.ws_protocol))
        self.ws = ws
        self.peer = request.remote or ""
        self._transport = request.transport
        self._opcode = WSMsgType.BINARY if self.codec.binary else WSMsgType.TEXT
        self._out: collections.deque[bytes] = collections.deque()
        self._queued = 0
        self._wake = asyncio.Event()
        self._empty = asyncio.Event()
        self._empty.set()
        self._gone = False
        self._code: int | None = None
        self._closing: asyncio.Task[None] | None = None
        self._pump = asyncio.get_running_loop().create_task(self._send_queued())

    def write(self, payload: bytes) -> None:
        if self._gone:
            return
        self._out.append(payload)
        self._queued += len(payload)
        self._empty.clear()
        self._wake.set()

    async def write_async(self, payload: bytes) -> None:
        self.write(payload)
        await self._empty.wait()
        if self._gone:
            raise Closed

    def buffered(self) -> int:
        transport = self._transport
        return self._queued + (transport.get_write_buffer_size() if transport else 0)

    def close(self, code: int, reason: str) -> None:
        self.closed = True
        if self._closing is None:
            self._closing = asyncio.get_running_loop().create_task(self.shut(code, reason))

    async def receive(self) -> str | bytes:
        msg = await self.ws.receive()
        if msg.type is WSMsgType.TEXT or msg.type is WSMsgType.BINARY:
            data: str | bytes = msg.data
            return data
        raise Closed

    async def shut(self, code: int, reason: str) -> None:
        # what was queued before the close goes first, as on the websocket port
        if not self._gone:
            with contextlib.suppress(TimeoutError):  # a peer that does not read
                await asyncio.wait_for(self._empty.wait(), 1.0)
        self._code = code
        try:  # a peer that does not read: aiohttp's close waits on the drain, unbounded
            await asyncio.wait_for(self.ws.close(code=code, message=reason.encode()), CLOSE_GRACE)
        except (TimeoutError, ConnectionError):
            if self._transport is not None:
                self._transport.abort()
        self.stop()

    def close_code(self) -> int | None:
        # the code the hub closed with (aiohttp reports 1000 for any close it answered)
        return self._code if self._code is not None else self.ws.close_code

    def stop(self) -> None:
        """Drop what is still queued and end the sending task."""
        self._gone = True
        self._out.clear()
        self._queued = 0
        self._empty.set()
        self._pump.cancel()

    async def _send_queued(self) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._out:
                    payload = self._out.popleft()
                    self._queued -= len(payload)
                    await self.ws.send_frame(payload, self._opcode)
                self._empty.set()
        except (ConnectionError, RuntimeError):  # the peer went away
            self._gone = True
            self._out.clear()
            self._queued = 0
            self._empty.set()


class WebSocketRoute:
    """Takes websocket upgrades on the HTTP port and runs them like the websocket port."""

    def __init__(
        self,
        conversation: Conversation,
        budget: ConnectionBudget,
        *,
        ping_interval: float = 20.0,
        max_frame: int = 1 << 20,
    ) -> None:
        self.conversation = conversation
        self.budget = budget
        self.ping_interval = ping_interval
        self.max_frame = max_frame
        self.sessions: set[WebWsSession] = set()

    def refusal(self, request: web.BaseRequest) -> tuple[int, str, float | None] | None:
        """Why this upgrade is refused before it happens: (status, sentence, retry
        after), or None. The token check is the hello's (a browser cannot set
        ``Authorization``), but a header that is there must be valid."""
        offered = [
            p.strip()
            for h in request.headers.getall("Sec-WebSocket-Protocol", [])
            for p in h.split(",")
            if p.strip()
        ]
        if offered and not any(p in SUBPROTOCOLS for p in offered):
            return 400, f"no supported subprotocol; offer one of {', '.join(SUBPROTOCOLS)}", None
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return 426, "this path takes websocket upgrades only (Upgrade: websocket)", None
        gate = self.conversation.hub.access.gate
        header = request.headers.get("Authorization")
        if gate is not None and header is not None and self._token_id(header) is None:
            return 401, "unauthorized: unknown, malformed or revoked token", None
        refused = self.budget.refusal(request.remote or "", self._token_id(header))
        if refused is not None:
            return refused.status, refused.message, refused.retry_after
        return None

    def _token_id(self, header: str | None) -> str | None:
        gate = self.conversation.hub.access.gate
        if gate is None or header is None:
            return None
        grant = gate.verify(bearer(header))
        return grant.id if grant is not None else None

    async def serve(self, request: web.BaseRequest) -> web.WebSocketResponse:
        """Upgrade (after :meth:`refusal` said None) and serve until the close."""
        ws = web.WebSocketResponse(
            protocols=SUBPROTOCOLS,
            heartbeat=self.ping_interval,
            max_msg_size=self.max_frame,
            compress=False,
            timeout=CLOSE_GRACE,  # a peer that does not answer our close frame
        )
        await ws.prepare(request)
        header = request.headers.get("Authorization")
        session = WebWsSession(ws, request)
        session.token = bearer(header)
        ticket = self.budget.admit(session.peer, self._token_id(header))
        self.sessions.add(session)
        try:
            await self.conversation.run(session, ticket.authenticated)
        finally:
            ticket.close()
            self.sessions.discard(session)
            if not ws.closed:
                await session.shut(CloseCode.GOING_AWAY, "closing")
            session.stop()
        return ws

    async def close_all(self) -> None:
        """Tell every connection to reconnect (1001), as the hub's drain does."""
        for session in list(self.sessions):
            session.close(CloseCode.GOING_AWAY, "hub shutting down; reconnect and resume")
