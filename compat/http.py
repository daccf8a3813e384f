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

_STATUS = {
    ErrorCode.BODY_TOO_LARGE: 413,
    ErrorCode.SHUTTING_DOWN: 503,
    ErrorCode.STORE_FAILED: 503,
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


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
        self._runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.max_body, middlewares=[self._errors])
        app.add_routes(
            [
                web.post("/send", self.send),
                web.get("/recv", self.recv),
                web.get("/inbox", self.inbox),
                web.get("/healthz", self.healthz),
            ]
        )
        return app

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
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

    # ------------------------------------------------------------------ middleware

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except LegacyError as err:
            return _error(err.status, err.message)
        except web.HTTPRequestEntityTooLarge:
            return _error(413, f"body over {self.max_body} bytes")
        except web.HTTPException as err:
            if err.status < 400:
                raise
            return _error(err.status, err.reason.lower())
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("HTTP %s %s failed", request.method, request.path)
            return _error(500, "internal error (logged by the hub)")

    # ------------------------------------------------------------------ handlers

    async def send(self, request: web.Request) -> web.Response:
        if request.content_length is not None and request.content_length > self.max_body:
            raise LegacyError(413, f"body over {self.max_body} bytes")
        body = await request.read()
        req = parse_send(body)
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
            raise LegacyError(_STATUS.get(ErrorCode(answer.code), 400), answer.message)
        assert isinstance(answer, Ok)
        return _json(SendAck(ok=True, ts=answer.ts, channel=req.channel, seq=answer.seq))

    async def recv(self, request: web.Request) -> web.Response:
        params = parse_recv(request.query, self.hub.config.max_history)
        return _json(await self.longpoll.recv(params))

    async def inbox(self, request: web.Request) -> web.Response:
        out: dict[str, dict[str, int]] = {}
        for (channel, recipient), count in self.hub.counts.items():
            if count > 0:
                out.setdefault(channel, {})[recipient] = count
        return _json(InboxResponse(recipients=out, now=time.time()))

    async def healthz(self, request: web.Request) -> web.Response:
        return _json({"ok": True, "now": time.time()})
