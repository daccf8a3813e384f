"""The websocket adapter: moves frames between ``websockets`` connections and the hub."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Sequence
from typing import Any, cast

import msgspec
from websockets.asyncio.server import Server, ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed, NegotiationError
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.typing import Subprotocol

from .auth import bearer
from .codec import Codec, codec_for
from .config import Settings
from .connection import Closed, Conversation, StreamSession
from .guards import Guards
from .hub import Hub
from .limits import LISTEN_BACKLOG, ConnectionBudget, RateLimits, connection_budget
from .schema import SUBPROTOCOLS
from .session import Session

__all__ = ["WsServer", "WsSession"]

log = logging.getLogger("wsbus.server")


def _select_subprotocol(
    conn: ServerConnection, offered: Sequence[Subprotocol]
) -> Subprotocol | None:
    """The first subprotocol offered that the hub speaks; none offered: JSON (the default)."""
    for p in offered:
        if p in SUBPROTOCOLS:
            return p
    if not offered:
        return None
    raise NegotiationError(f"no supported subprotocol; offer one of {', '.join(SUBPROTOCOLS)}")


def _peer(conn: ServerConnection) -> str:
    """The client's address ("" when the transport does not say)."""
    peer = conn.remote_address
    return str(peer[0]) if peer else ""


def _forget_handshake(conn: ServerConnection) -> None:
    """Let go of the upgrade's headers once read: a connection keeps them (about
    3 KiB) for its whole life otherwise, and nothing reads them after the upgrade."""
    for message in (conn.request, conn.response):
        if message is not None:
            message.headers.clear()


class WsSession(StreamSession):
    """A hub session on a websockets connection."""

    __slots__ = ("_closing", "_corked", "_text", "conn", "peer")

    def __init__(self, conn: ServerConnection, codec: Codec) -> None:
        super().__init__(codec)
        self.conn = conn
        self.peer = _peer(conn)
        self._text = not codec.binary
        self._closing: asyncio.Task[None] | None = None
        #: frames gathered while corked (None: written at once)
        self._corked: list[bytes] | None = None

    def write(self, payload: bytes) -> None:
        if self._corked is not None:
            self._corked.append(payload)
        else:
            broadcast((self.conn,), payload, text=self._text)

    def cork(self) -> None:
        if self._corked is None:
            self._corked = []

    def uncork(self) -> None:
        frames, self._corked = self._corked, None
        if frames:
            _write_frames(self.conn, frames, self._text)

    async def write_async(self, payload: bytes) -> None:
        self.uncork()
        try:
            await self.conn.send(payload, text=self._text)
        except ConnectionClosed:
            raise Closed from None

    async def receive(self) -> str | bytes:
        try:
            return await self.conn.recv()
        except ConnectionClosed:
            raise Closed from None

    async def shut(self, code: int, reason: str) -> None:
        self.uncork()
        await self.conn.close(code, reason)

    def close_code(self) -> int | None:
        return self.conn.close_code

    def buffered(self) -> int:
        transport = self.conn.transport
        held = sum(map(len, self._corked)) if self._corked else 0
        return held + (transport.get_write_buffer_size() if transport is not None else 0)

    def close(self, code: int, reason: str) -> None:
        self.uncork()
        self.closed = True
        if self._closing is None:
            self._closing = asyncio.get_running_loop().create_task(self.conn.close(code, reason))


def _write_frames(conn: ServerConnection, payloads: list[bytes], text: bool) -> None:
    """Several frames to one connection in one system call (``websockets`` writes
    each frame on its own). Like ``websockets.broadcast``, a connection that is
    closing is skipped."""
    protocol = conn.protocol
    if protocol.state is not State.OPEN or conn.transport is None:
        return
    frame = protocol.send_text if text else protocol.send_binary
    for payload in payloads:
        frame(payload)
    conn.transport.write(b"".join(protocol.data_to_send()))


def ws_broadcast(
    sessions: list[Session], payload: bytes, binary: bool, limit: int
) -> list[Session]:
    """Write the same bytes to many websocket sessions (``websockets.broadcast``) and
    return the sessions whose transport buffer is now over ``limit``. Sessions of
    another transport (``/ws`` on the HTTP port), and corked ones, are written one
    by one."""
    ws = [s for s in sessions if type(s) is WsSession and s._corked is None]
    slow: list[Session] = []
    if len(ws) != len(sessions):
        for other in sessions:
            if type(other) is not WsSession or other._corked is not None:
                other.write(payload)
                if other.buffered() > limit:
                    slow.append(other)
    conns = [s.conn for s in ws]
    broadcast(conns, payload, text=not binary)
    for s, conn in zip(ws, conns, strict=True):
        transport = conn.transport
        if transport is not None and transport.get_write_buffer_size() > limit:
            slow.append(s)
    return slow


class WsServer:
    """Serves the hub on one websocket endpoint."""

    def __init__(
        self,
        hub: Hub,
        host: str,
        port: int,
        *,
        hello_timeout: float = 10.0,
        max_bad_frames: int = 20,
        ping_interval: float = 20.0,
        shutdown_grace: float = 3.0,
        ssl_context: ssl.SSLContext | None = None,
        allow_origins: Sequence[str] = (),
        rates: RateLimits | None = None,
        budget: ConnectionBudget | None = None,
        ca_pem: bytes | None = None,
    ) -> None:
        self.hub = hub
        #: the CA of ``serve --share``, served at ``/ca.pem`` for ``wsbus join``
        self.ca_pem = ca_pem
        self.host = host
        self.port = port
        self.hello_timeout = hello_timeout
        self.ping_interval = ping_interval
        self.shutdown_grace = shutdown_grace
        self.ssl_context = ssl_context
        #: the Host and Origin checks (the HTTP shim makes the same)
        self.guards = Guards(
            host, authenticated=hub.access.gate is not None, allow_origins=allow_origins
        )
        #: hello, replay, frames: the same for ``/ws`` on the HTTP port
        self.conversation = Conversation(
            hub, hello_timeout=hello_timeout, max_bad_frames=max_bad_frames, rates=rates
        )
        #: who may open a connection: in all, and not yet authenticated
        self.budget = budget or connection_budget(Settings(hello_timeout=hello_timeout))
        self._server: Server | None = None
        self._sessions: set[WsSession] = set()

    async def start(self) -> None:
        self._server = await serve(
            self._handle,
            self.host,
            self.port,
            subprotocols=[cast(Any, p) for p in SUBPROTOCOLS],
            select_subprotocol=_select_subprotocol,
            max_size=self.hub.config.max_frame,
            compression=None,
            ping_interval=self.ping_interval,
            ping_timeout=self.ping_interval,
            open_timeout=self.hello_timeout,
            process_request=self._process_request,
            server_header="wsbus",
            origins=cast(Any, self.guards.websocket_origins()),
            ssl=self.ssl_context,
            backlog=LISTEN_BACKLOG,
        )
        sock = next(iter(self._server.sockets))
        self.port = sock.getsockname()[1]

    async def stop(self) -> None:
        """Commit pending writes, tell clients to reconnect (1001), stop listening."""
        if self._server is None:
            return
        self._server.close(close_connections=False)
        await self.hub.drain()
        self._server.close(close_connections=True)
        try:
            await asyncio.wait_for(self._server.wait_closed(), self.shutdown_grace)
        except TimeoutError:
            # peers that do not read cannot take part in the closing handshake
            for session in list(self._sessions):
                if session.conn.transport is not None:
                    session.conn.transport.abort()
            await self._server.wait_closed()
        await self.hub.close_store()

    @property
    def scheme(self) -> str:
        return "wss" if self.ssl_context is not None else "ws"

    def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        """Answer plain HTTP before the upgrade: health checks, a bad token, a full hub.

        The budget is checked here and counted in :meth:`_handle`, so a connection
        whose handshake fails afterwards holds nothing. websockets runs the two in one
        task with no wait in between (writing the 101 waits only on a full socket
        buffer, which a new connection does not have), so no other check slips in."""
        if request.path == "/healthz":
            status, health = self.hub.health()
            return conn.respond(status, msgspec.json.encode(health).decode() + "\n")
        if request.path == "/ca.pem" and self.ca_pem is not None:
            return conn.respond(200, self.ca_pem.decode())
        refused = self.guards.host_refused(request.headers.get_all("Host") or [None])
        if refused is not None:
            self.hub.metrics.auth_failed("host", _peer(conn), "websocket", refused)
            return conn.respond(403, refused + "\n")
        # (websockets checks the Origin too, with the same rule: this one is counted)
        refused = self.guards.origin_refused(request.headers.get("Origin"))
        if refused is not None:
            self.hub.metrics.auth_failed("origin", _peer(conn), "websocket", refused)
            return conn.respond(403, refused + "\n")
        gate = self.hub.access.gate
        header = request.headers.get("Authorization")
        token = self._token_id(header)
        if gate is not None and header is not None and token is None:
            self.hub.metrics.auth_failed(
                "unauthorized", _peer(conn), "websocket", "unknown, malformed or revoked token"
            )
            response = conn.respond(401, "unauthorized: unknown, malformed or revoked token\n")
            response.headers["WWW-Authenticate"] = 'Bearer realm="wsbus"'
            return response
        refusal = self.budget.refusal(_peer(conn), token)
        if refusal is None:
            return None
        response = conn.respond(refusal.status, refusal.message + "\n")
        if refusal.retry_after is not None:
            response.headers["Retry-After"] = str(refusal.retry_after)
        return response

    def _token_id(self, header: str | None) -> str | None:
        """The id of the valid token the upgrade carried (``Authorization: Bearer``),
        which authenticates the connection; None without one (a ``hello.token`` is
        checked only at the hello)."""
        gate = self.hub.access.gate
        if gate is None or header is None:
            return None
        grant = gate.verify(bearer(header))
        return grant.id if grant is not None else None

    # ------------------------------------------------------------------ connections

    async def _handle(self, conn: ServerConnection) -> None:
        session = WsSession(conn, codec_for(conn.subprotocol))
        header = conn.request.headers.get("Authorization") if conn.request else None
        session.token = bearer(header)
        _forget_handshake(conn)
        ticket = self.budget.admit(session.peer, self._token_id(header))
        self._sessions.add(session)
        try:
            await self.conversation.run(session, ticket.authenticated)
        finally:
            ticket.close()
            self._sessions.discard(session)
