"""The websocket adapter: moves frames between ``websockets`` connections and the hub."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

import msgspec
from websockets.asyncio.server import Server, ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from .codec import Codec, codec_for
from .errors import CloseCode, ErrorCode, FrameError
from .hub import Hub
from .schema import (
    SUBPROTOCOLS,
    Ack,
    Error,
    Hello,
    History,
    Ping,
    Register,
    Roster,
    Send,
    Status,
    Subscribe,
    Threads,
    Unsubscribe,
)
from .session import Session

__all__ = ["WsServer", "WsSession"]

log = logging.getLogger("wsbus.server")


class _RefOnly(msgspec.Struct):
    ref: Any = None


_ref_json = msgspec.json.Decoder(_RefOnly)
_ref_msgpack = msgspec.msgpack.Decoder(_RefOnly)


def _salvage_ref(data: str | bytes, binary: bool) -> str | None:
    """The ``ref`` of a frame that failed validation, so the error can name it."""
    try:
        ref = (_ref_msgpack if binary else _ref_json).decode(cast(bytes, data)).ref
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    return ref if isinstance(ref, str) and len(ref) <= 128 else None


class WsSession(Session):
    """A hub session on a websockets connection."""

    def __init__(self, conn: ServerConnection, codec: Codec) -> None:
        super().__init__(codec)
        self.conn = conn
        self._text = not codec.binary
        self._closing: asyncio.Task[None] | None = None

    def write(self, payload: bytes) -> None:
        broadcast((self.conn,), payload, text=self._text)

    async def write_async(self, payload: bytes) -> None:
        await self.conn.send(payload, text=self._text)

    def buffered(self) -> int:
        transport = self.conn.transport
        return transport.get_write_buffer_size() if transport is not None else 0

    def close(self, code: int, reason: str) -> None:
        self.closed = True
        if self._closing is None:
            self._closing = asyncio.get_running_loop().create_task(self.conn.close(code, reason))


def ws_broadcast(
    sessions: list[Session], payload: bytes, binary: bool, limit: int
) -> list[Session]:
    """Write the same bytes to many websocket sessions (``websockets.broadcast``) and
    return the sessions whose transport buffer is now over ``limit``."""
    conns = [cast(WsSession, s).conn for s in sessions]
    broadcast(conns, payload, text=not binary)
    slow: list[Session] = []
    for s, conn in zip(sessions, conns, strict=True):
        transport = conn.transport
        if transport is not None and transport.get_write_buffer_size() > limit:
            slow.append(s)
    return slow


def _health(conn: ServerConnection, request: Request) -> Response | None:
    if request.path == "/healthz":
        return conn.respond(200, '{"ok": true}\n')
    return None


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
    ) -> None:
        self.hub = hub
        self.host = host
        self.port = port
        self.hello_timeout = hello_timeout
        self.max_bad_frames = max_bad_frames
        self.ping_interval = ping_interval
        self.shutdown_grace = shutdown_grace
        self._server: Server | None = None
        self._sessions: set[WsSession] = set()
        hub.broadcast = ws_broadcast

    async def start(self) -> None:
        self._server = await serve(
            self._handle,
            self.host,
            self.port,
            subprotocols=[cast(Any, p) for p in SUBPROTOCOLS],
            max_size=self.hub.config.max_frame,
            compression=None,
            ping_interval=self.ping_interval,
            ping_timeout=self.ping_interval,
            process_request=_health,
            server_header="wsbus",
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

    # ------------------------------------------------------------------ connections

    async def _handle(self, conn: ServerConnection) -> None:
        codec = codec_for(conn.subprotocol)
        session = WsSession(conn, codec)
        self._sessions.add(session)
        replay: asyncio.Task[None] | None = None
        try:
            hello = await self._hello(conn, session)
            if hello is None:
                return
            try:
                welcome = self.hub.open_session(session, hello)
            except FrameError as err:
                session.send(Error(code=err.code, message=err.message))
                await conn.close(CloseCode.BAD_HELLO, err.message[:120])
                return
            session.send(welcome)
            for name in welcome.refused:
                session.send(self.hub.refusal(name))
            self.hub.attach(session)
            replay = asyncio.create_task(self._replay(session, hello.resume, hello.pending))
            bad = 0
            async for data in conn:
                if session.closed:
                    continue  # closing: drain what the peer still sends until its close frame
                try:
                    frame = codec.decode_client(data)
                    await self._dispatch(session, frame)
                    bad = 0
                except FrameError as err:
                    ref = err.ref or _salvage_ref(data, codec.binary)
                    session.send(Error(code=err.code, message=err.message, ref=ref))
                    bad += 1
                    if bad >= self.max_bad_frames:
                        self.hub.close_session(session)
                        session.close(
                            CloseCode.POLICY_VIOLATION, f"{bad} bad frames in a row; closing"
                        )
                except ConnectionClosed:
                    raise
                except Exception:  # a hub bug must not take the connection down silently
                    log.exception("frame from session %s failed", session.id)
                    ref = _salvage_ref(data, codec.binary)
                    message = "the hub failed to handle this frame; it was logged"
                    session.send(Error(code=ErrorCode.INTERNAL, message=message, ref=ref))
        except ConnectionClosed:
            pass
        finally:
            self._sessions.discard(session)
            self.hub.close_session(session)
            session.closed = True
            if replay is not None:
                replay.cancel()

    async def _replay(self, session: WsSession, resume: int | None, pending: bool) -> None:
        try:
            await self.hub.replay(session, resume, pending)
        except ConnectionClosed:
            pass
        except Exception:
            log.exception("replay failed for session %s", session.id)
            session.close(CloseCode.GOING_AWAY, "replay failed; reconnect and resume")

    async def _hello(self, conn: ServerConnection, session: WsSession) -> Hello | None:
        try:
            data = await asyncio.wait_for(conn.recv(), self.hello_timeout)
        except TimeoutError:
            await conn.close(CloseCode.HELLO_TIMEOUT, "no hello within the handshake timeout")
            return None
        try:
            frame = session.codec.decode_client(data)
        except FrameError as err:
            session.send(Error(code=err.code, message=err.message))
            await conn.close(CloseCode.BAD_HELLO, err.message[:120])
            return None
        if not isinstance(frame, Hello):
            message = "the first frame must be hello"
            session.send(Error(code=ErrorCode.HELLO_REQUIRED, message=message))
            await conn.close(CloseCode.BAD_HELLO, message)
            return None
        return frame

    async def _dispatch(self, session: WsSession, frame: Any) -> None:
        hub = self.hub
        match frame:
            case Send():
                if not hub.has_room():
                    await hub.wait_room()
                hub.submit(session, frame)
            case Ack():
                await hub.ack(session, frame)
            case History():
                session.send(await hub.history(session, frame))
            case Roster():
                session.send(hub.roster(session, frame))
            case Register():
                session.send(await hub.register(session, frame))
            case Status():
                hub.status(session, frame)
            case Threads():
                session.send(await hub.threads(session, frame))
            case Ping():
                session.send(hub.ping(frame))
            case Subscribe():
                hub.subscribe(session, frame)
            case Unsubscribe():
                hub.unsubscribe(session, frame)
            case Hello():
                raise FrameError(ErrorCode.ALREADY_HELLO, "hello was already received")
