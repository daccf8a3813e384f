"""The agent-bus HTTP contract on aiohttp.web, over the same hub and store.

Routes: ``POST /send``, ``GET /recv``, ``GET /inbox``, ``GET /healthz``. Every
answer is JSON; every error is ``{"error": "..."}`` with its status (400 bad
input, 404 unknown path, 405 wrong method, 413 body over ``max_body``, 503 while
shutting down).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from aiohttp import web

from wsbus.client import new_ref
from wsbus.codec import JSON
from wsbus.errors import ErrorCode, FrameError
from wsbus.hub import Hub
from wsbus.schema import Error, Ok, Send
from wsbus.session import Session

from .longpoll import LongPoll
from .messages import InboxResponse, LegacyError, SendAck, parse_recv, parse_send

__all__ = ["HttpShim", "RequestSession"]

log = logging.getLogger("wsbus.compat")

_encode = msgspec.json.Encoder().encode

_STATUS: dict[str, int] = {
    ErrorCode.BODY_TOO_LARGE: 413,
    ErrorCode.SHUTTING_DOWN: 503,
    ErrorCode.STORE_FAILED: 503,
}

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


def _json(payload: Any, status: int = 200) -> web.Response:
    return web.Response(body=_encode(payload), status=status, content_type="application/json")


def _error(status: int, message: str) -> web.Response:
    return _json({"error": message}, status)


class RequestSession(Session):
    """A one-request session: the sender of a ``POST /send``; the hub's answer
    (``ok`` or ``error``) resolves :attr:`result` instead of being written."""

    def __init__(self, name: str) -> None:
        super().__init__(JSON)
        self.names = (name,)
        self.info = {"kind": "agent"}
        self.result: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    def send(self, frame: Any) -> None:
        if not self.result.done():
            self.result.set_result(frame)

    def write(self, payload: bytes) -> None:
        return None

    async def write_async(self, payload: bytes) -> None:
        return None

    def buffered(self) -> int:
        return 0

    def close(self, code: int, reason: str) -> None:
        self.closed = True


class HttpShim:
    """Serves the legacy contract on ``host:port`` until :meth:`stop`."""

    def __init__(self, hub: Hub, host: str, port: int, *, poll_timeout: float = 30.0) -> None:
        self.hub = hub
        self.host = host
        self.port = port
        self.max_body = hub.config.max_body
        self.longpoll = LongPoll(hub, poll_timeout)
        self._runner: web.ServerRunner | None = None
        #: the route table: path -> (method, handler)
        self.routes: dict[str, tuple[str, Handler]] = {
            "/send": ("POST", self.send),
            "/recv": ("GET", self.recv),
            "/inbox": ("GET", self.inbox),
            "/healthz": ("GET", self.healthz),
        }

    async def start(self) -> None:
        # aiohttp's low-level server: its HTTP parser and protocol, without the
        # application layer (four fixed routes need no router or middleware chain)
        server = web.Server(self._handle, access_log=None)
        self._runner = web.ServerRunner(server, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, backlog=4096)
        await site.start()
        addresses = self._runner.addresses  # the real port when asked for port 0
        if addresses:
            self.port = addresses[0][1]

    async def stop(self) -> None:
        """Answer every pending poll, then stop serving."""
        self.longpoll.stop()
        if self._runner is not None:
            await self._runner.cleanup()

    # ------------------------------------------------------------------ dispatch

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        route = self.routes.get(request.path)
        try:
            if route is None:
                raise LegacyError(404, f"not found: {request.path[:100]}")
            method, handler = route
            if request.method != method:
                raise LegacyError(
                    405, f"method {request.method} not allowed on {request.path}; use {method}"
                )
            return await handler(request)
        except LegacyError as err:
            return _error(err.status, err.message)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("HTTP %s %s failed", request.method, request.path)
            return _error(500, "internal error (logged by the hub)")

    async def _body(self, request: web.BaseRequest) -> bytes:
        """The request body, refused (413) as soon as it passes ``max_body``."""
        limit = self.max_body
        if request.content_length is not None and request.content_length > limit:
            raise LegacyError(413, f"body over {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        while True:
            chunk = await request.content.read(65536)
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if size > limit:
                raise LegacyError(413, f"body over {limit} bytes")
            chunks.append(chunk)

    # ------------------------------------------------------------------ handlers

    async def send(self, request: web.BaseRequest) -> web.Response:
        req = parse_send(await self._body(request))
        hub = self.hub
        if not hub.has_room():
            await hub.wait_room()
        session = RequestSession(req.sender)
        frame = Send(ref=new_ref(), to=req.to, body=req.msg, channel=req.channel, from_=req.sender)
        try:
            hub.submit(session, frame)
        except FrameError as err:
            raise LegacyError(_STATUS.get(err.code, 400), err.message) from None
        answer = await session.result
        if isinstance(answer, Error):
            raise LegacyError(_STATUS.get(answer.code, 400), answer.message)
        assert isinstance(answer, Ok)
        return _json(SendAck(ok=True, ts=answer.ts, channel=req.channel, seq=answer.seq))

    async def recv(self, request: web.BaseRequest) -> web.Response:
        params = parse_recv(request.query, self.hub.config.max_history)
        return _json(await self.longpoll.recv(params))

    async def inbox(self, request: web.BaseRequest) -> web.Response:
        out: dict[str, dict[str, int]] = {}
        for (channel, recipient), count in self.hub.counts.items():
            if count > 0:
                out.setdefault(channel, {})[recipient] = count
        return _json(InboxResponse(recipients=out, now=time.time()))

    async def healthz(self, request: web.BaseRequest) -> web.Response:
        return _json({"ok": True, "now": time.time()})
