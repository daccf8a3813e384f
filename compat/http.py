"""The agent-bus HTTP contract on aiohttp.web, over the same hub and store.

Routes: ``POST /send``, ``GET /recv``, ``GET /inbox``, ``GET /healthz``; besides the
legacy contract, ``GET /metrics`` (Prometheus), ``/ui/`` (the dashboard's files,
``wsbus/webui.py``) and ``/ws`` (the websocket protocol, ``wsbus/webws.py``). Every
answer but those three is JSON; every error is ``{"error": "..."}`` with its status (400 bad
input, 401 no valid token, 403 token does not allow it or browser origin not
allowed, 404 unknown path, 405 wrong method, 408 body too slow, 413 body over
``max_body``, 429 over a rate or poll limit, 503 while shutting down).

With ``--auth`` the token comes as ``Authorization: Bearer TOKEN`` or, for the
unmodified agent-bus clients that cannot set headers, as a path prefix of the
base URL: ``AGENT_BUS_URL=https://hub:8080/t/TOKEN`` makes them request
``/t/TOKEN/recv?...``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import ssl
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import msgspec
from aiohttp import web

from wsbus.access import channels_refused, names_refused
from wsbus.auth import (
    TokenRecord,
    bearer,
    may_scrape,
    may_use_channel,
    party_of,
)
from wsbus.codec import JSON
from wsbus.errors import ErrorCode, FrameError
from wsbus.guards import Guards
from wsbus.hub import Hub
from wsbus.limits import LISTEN_BACKLOG, RateLimits, Throttle
from wsbus.metrics import CONTENT_TYPE_LATEST
from wsbus.redact import redact
from wsbus.refs import new_ref
from wsbus.schema import BROADCAST, Error, Ok, Send
from wsbus.session import Session
from wsbus.webui import StaticUi
from wsbus.webws import WebSocketRoute

from .longpoll import LongPoll
from .messages import InboxResponse, LegacyError, SendAck, parse_recv, parse_send

__all__ = ["HttpShim", "RequestSession"]

log = logging.getLogger("wsbus.compat")


class _ClientFaults(logging.Filter):
    """aiohttp logs every malformed request as an ERROR with a traceback: bad input
    from a client is not a hub fault, and must not let anyone fill the log. Such a
    record becomes one INFO line (dropped at the default WARNING level), its tokens
    redacted before it is cut short (aiohttp quotes the request line: ``/t/TOKEN``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith("Error handling request"):
            return True
        if not parser_log.isEnabledFor(logging.INFO):
            return False
        exc = record.exc_info[1] if record.exc_info else None
        remote = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
        detail = " ".join(redact(str(exc)).split())[:200]
        record.msg = "bad request from %s: %s: %s"
        record.args = (remote, type(exc).__name__, detail)
        record.exc_info = None
        record.exc_text = None
        record.levelno, record.levelname = logging.INFO, "INFO"
        return True


#: the logger aiohttp's protocol handler writes to for this shim
parser_log = logging.getLogger("wsbus.compat.http")
parser_log.addFilter(_ClientFaults())

_encode = msgspec.json.Encoder().encode

_STATUS: dict[str, int] = {
    ErrorCode.BODY_TOO_LARGE: 413,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.SHUTTING_DOWN: 503,
    ErrorCode.STORE_FAILED: 503,
}

Handler = Callable[[web.BaseRequest, TokenRecord | None], Awaitable[web.StreamResponse]]

#: how many callers' rate buckets are remembered (least recently used dropped first)
MAX_CALLERS = 10_000
#: paths answered without a token: health, and the public CA certificate of --share
PUBLIC = ("/healthz", "/ca.pem")

#: a rate budget's key: ("token", id), or ("addr", address, name) without ``--auth``
Caller = tuple[str, ...]


def _json(payload: Any, status: int = 200) -> web.Response:
    return web.Response(body=_encode(payload), status=status, content_type="application/json")


def _error(status: int, message: str) -> web.Response:
    return _json({"error": message}, status)


class RequestSession(Session):
    """A one-request session: the sender of a ``POST /send``; the hub's answer
    (``ok`` or ``error``) resolves :attr:`result` instead of being written."""

    def __init__(self, name: str, grant: TokenRecord | None = None) -> None:
        super().__init__(JSON)
        self.names = (name,)
        self.grant = grant
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

    def __init__(
        self,
        hub: Hub,
        host: str,
        port: int,
        *,
        poll_timeout: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
        allow_origins: Sequence[str] = (),
        request_timeout: float = 10.0,
        rates: RateLimits | None = None,
        max_polls: int = 16,
        cache_events: int = 20_000,
        cache_bytes: int = 16 << 20,
        ca_pem: bytes | None = None,
        websocket: WebSocketRoute | None = None,
        ui: StaticUi | None = None,
    ) -> None:
        self.hub = hub
        #: ``/ws``: the websocket protocol on this port (None: not served)
        self.websocket = websocket
        #: ``/ui/``: the dashboard's files (None: not served)
        self.ui = ui
        #: the CA of ``serve --share``, served at ``/ca.pem`` for ``wsbus join``
        self.ca_pem = ca_pem
        self.host = host
        self.port = port
        self.max_body = hub.config.max_body
        self.longpoll = LongPoll(
            hub, poll_timeout, cache_events=cache_events, cache_bytes=cache_bytes
        )
        self.ssl_context = ssl_context
        #: the Host and Origin checks (the websocket server makes the same)
        self.guards = Guards(
            host, authenticated=hub.access.gate is not None, allow_origins=allow_origins
        )
        #: seconds to receive a whole request (headers and body); idle keep-alive too
        self.request_timeout = request_timeout
        self.rates = rates or RateLimits()
        self.max_polls = max_polls
        self._callers: OrderedDict[Caller, Throttle] = OrderedDict()
        self._polls: dict[str, int] = {}
        #: shutting down: new requests are answered 503
        self.closing = False
        self._runner: web.ServerRunner | None = None
        #: the route table: path -> (method, handler)
        self.routes: dict[str, tuple[str, Handler]] = {
            "/send": ("POST", self.send),
            "/recv": ("GET", self.recv),
            "/inbox": ("GET", self.inbox),
            "/healthz": ("GET", self.healthz),
        }
        if ca_pem is not None:
            self.routes["/ca.pem"] = ("GET", self.ca)
        self.routes["/metrics"] = ("GET", self.metrics)
        if websocket is not None:
            self.routes["/ws"] = ("GET", self.ws)

    async def start(self) -> None:
        await self.longpoll.start()
        self.hub.metrics.longpolls.set_function(lambda: sum(self._polls.values()))
        # aiohttp's low-level server: its HTTP parser and protocol, without the
        # application layer (four fixed routes need no router or middleware chain)
        # keepalive_timeout also bounds a connection that never completes its first
        # request (aiohttp >= 3.14.4): a stalled partial request is dropped
        # lingering_time: how long an unread body is drained after an early answer
        # (413, 408) before the connection is closed
        server = web.Server(
            self._handle,
            access_log=None,
            keepalive_timeout=self.request_timeout,
            lingering_time=1.0,
            logger=parser_log,
        )
        # at shutdown the hub has drained already: what a handler still holds (a peer
        # that does not read) is not waited for long
        self._runner = web.ServerRunner(server, handle_signals=False, shutdown_timeout=3.0)
        await self._runner.setup()
        site = web.TCPSite(
            self._runner, self.host, self.port, backlog=LISTEN_BACKLOG, ssl_context=self.ssl_context
        )
        await site.start()
        addresses = self._runner.addresses  # the real port when asked for port 0
        if addresses:
            self.port = addresses[0][1]

    def stop_taking(self) -> None:
        """The first step of a shutdown: answer every pending poll, and 503 to new
        requests (``/healthz`` but). ``/ws`` connections stay: the hub's drain commits
        what they sent and then closes them (1001), as on the websocket port."""
        self.closing = True
        self.longpoll.stop()

    async def stop(self) -> None:
        """Stop serving (after :meth:`stop_taking` and the hub's drain); a ``/ws``
        client still connected is told to reconnect."""
        self.stop_taking()
        if self.websocket is not None:
            await self.websocket.close_all()
        if self._runner is not None:
            await self._runner.cleanup()

    # ------------------------------------------------------------------ dispatch

    @property
    def scheme(self) -> str:
        return "https" if self.ssl_context is not None else "http"

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        path, path_token = _split_token(request.path)
        route = self.routes.get(path)
        try:
            path_is_ui = path == "/ui" or path.startswith("/ui/")
            if route is None and self.ui is not None and path_is_ui:
                route = ("GET", self.static)
            if route is None:
                raise LegacyError(404, f"not found: {path[:100]}")
            method, handler = route
            if self.closing and path != "/healthz":
                raise LegacyError(503, "the hub is shutting down; retry", retry_after=1.0)
            if request.method != method and not (request.method == "HEAD" and path_is_ui):
                raise LegacyError(
                    405, f"method {request.method} not allowed on {path}; use {method}"
                )
            self._guard(request)
            if path in PUBLIC or handler == self.static or handler == self.ws:
                return await handler(request, None)  # /ws: the hello carries the token
            grant = self._authenticate(request, path_token)
            return await handler(request, grant)
        except LegacyError as err:
            response = _error(err.status, err.message)
            if err.status == 401:
                self.hub.metrics.auth_failed(
                    "unauthorized", request.remote or "", f"http {path[:64]}", err.message
                )
                response.headers["WWW-Authenticate"] = 'Bearer realm="wsbus"'
            elif err.status == 429:
                self.hub.metrics.rate_limited_on("http")
            if err.retry_after is not None:
                response.headers["Retry-After"] = str(max(1, math.ceil(err.retry_after)))
            return response
        except web.HTTPException as answer:  # a redirect
            return answer
        except asyncio.CancelledError:
            raise
        except ConnectionError as err:  # the client went away mid-request: nobody to answer
            log.info("HTTP %s %s: client gone: %s", request.method, path, err)
            return _error(400, "connection lost while reading the request")
        except Exception:
            log.exception("HTTP %s %s failed", request.method, path)  # never the /t/TOKEN
            return _error(500, "internal error (logged by the hub)")

    def _guard(self, request: web.BaseRequest) -> None:
        """403 for a browser origin that is neither this port's own nor allowed, or a
        Host the hub does not answer to."""
        hosts = request.headers.getall("Host", [None])
        origin = request.headers.get("Origin")
        # a page this port served (the dashboard) is at home here (Guards.own_origin)
        own = self.guards.own_origin(origin, hosts, self.scheme)
        refused = None if own else self.guards.origin_refused(origin)
        if refused is not None:
            self.hub.metrics.auth_failed("origin", request.remote or "", "http", refused)
            raise LegacyError(403, refused)
        refused = self.guards.host_refused(hosts)
        if refused is not None:
            self.hub.metrics.auth_failed("host", request.remote or "", "http", refused)
            raise LegacyError(403, refused)

    def _authenticate(self, request: web.BaseRequest, path_token: str | None) -> TokenRecord | None:
        """The caller's token record (None when the hub runs without ``--auth``)."""
        gate = self.hub.access.gate
        if gate is None:
            return None
        token = bearer(request.headers.get("Authorization")) or path_token
        grant = gate.verify(token)
        if grant is None:
            raise LegacyError(
                401,
                "a valid token is required: Authorization: Bearer TOKEN, or the base URL "
                "AGENT_BUS_URL=<hub>/t/TOKEN (none given, or it is unknown or revoked)",
            )
        return grant

    def _allow(self, grant: TokenRecord | None, name: str, channel: str) -> None:
        """403 unless the token may act as ``name`` on ``channel``."""
        if grant is None:
            return
        refused = names_refused(grant, [name], quoted=True) or channels_refused(
            grant, [channel], quoted=True
        )
        if refused is not None:
            raise LegacyError(403, refused)

    def _charge(self, key: Caller, size: int) -> None:
        """429 when the caller (see :meth:`_caller`) is over its rate."""
        throttle = self._callers.get(key)
        now = time.monotonic()
        if throttle is None:
            throttle = self._callers[key] = self.rates.throttle(now)
            if len(self._callers) > MAX_CALLERS:
                self._callers.popitem(last=False)
        else:
            self._callers.move_to_end(key)
        if not throttle.enabled:
            return
        wait = throttle.try_take(size, now)
        if wait > 0:
            raise LegacyError(
                429,
                f"too many requests: over {self.rates.events:g} requests/s or "
                f"{self.rates.bytes:g} bytes/s; retry in {wait:.1f} s",
                retry_after=wait,
            )

    def _caller(
        self, request: web.BaseRequest, grant: TokenRecord | None, name: str = ""
    ) -> Caller:
        """Whose rate budget a request spends: its token; without ``--auth``, its
        address and the name it speaks for (``from`` of ``/send``, ``to`` of
        ``/recv``), since every local agent shares 127.0.0.1; ``""`` when there is
        no name (``/inbox``, or a request that does not parse: not free either)."""
        if grant is not None:
            return ("token", grant.id)
        return ("addr", request.remote or "", name)

    async def _body(self, request: web.BaseRequest) -> bytes:
        """The request body, refused (413) as soon as it passes ``max_body``, and
        (408) when it does not arrive within the request timeout."""
        try:
            async with asyncio.timeout(self.request_timeout):
                return await self._read_body(request)
        except TimeoutError:
            raise LegacyError(
                408, f"request body not received within {self.request_timeout:g} s"
            ) from None

    async def _read_body(self, request: web.BaseRequest) -> bytes:
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

    async def send(self, request: web.BaseRequest, grant: TokenRecord | None) -> web.Response:
        body = await self._body(request)
        try:
            req = parse_send(body)
        except LegacyError:
            self._charge(self._caller(request, grant), len(body))
            raise
        self._charge(self._caller(request, grant, req.sender), len(body))
        self._allow(grant, req.sender, req.channel)
        hub = self.hub
        if not hub.has_room():
            await hub.wait_room()
        session = RequestSession(req.sender, grant)
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

    async def recv(self, request: web.BaseRequest, grant: TokenRecord | None) -> web.Response:
        try:
            params = parse_recv(request.query, self.hub.config.max_history)
        except LegacyError:
            self._charge(self._caller(request, grant), 0)
            raise
        self._charge(self._caller(request, grant, params.to), 0)
        self._allow(grant, params.to, params.channel)
        if not params.block:
            return _json(await self.longpoll.recv(params))
        # pending polls per token (without --auth: per name and channel)
        key = f"token:{grant.id}" if grant is not None else f"name:{params.channel}/{params.to}"
        if self._polls.get(key, 0) >= self.max_polls:
            raise LegacyError(
                429,
                f"too many pending polls for {key.partition(':')[2]} (max_polls {self.max_polls})",
                retry_after=1.0,
            )
        self._polls[key] = self._polls.get(key, 0) + 1
        gate = self.hub.access.gate
        still_valid = None if grant is None or gate is None else (lambda: gate.valid(grant))
        try:
            answer = await self.longpoll.recv(params, still_valid)
        finally:
            left = self._polls[key] - 1
            if left:
                self._polls[key] = left
            else:
                del self._polls[key]
        if answer is None:
            raise LegacyError(401, "token revoked")
        return _json(answer)

    async def inbox(self, request: web.BaseRequest, grant: TokenRecord | None) -> web.Response:
        self._charge(self._caller(request, grant), 0)
        # a token that does not read everything counts broadcasts and its own names
        party = None if grant is None else party_of(grant)
        seen = None if party is None else {BROADCAST, *party}
        out: dict[str, dict[str, int]] = {}
        for (channel, recipient), count in (await self.longpoll.counts()).items():
            if count <= 0 or (seen is not None and recipient not in seen):
                continue
            if grant is None or may_use_channel(grant, channel):
                out.setdefault(channel, {})[recipient] = count
        return _json(InboxResponse(recipients=out, now=time.time()))

    async def healthz(self, request: web.BaseRequest, grant: TokenRecord | None) -> web.Response:
        status, health = self.hub.health()
        return _json(health, status)

    async def metrics(self, request: web.BaseRequest, grant: TokenRecord | None) -> web.Response:
        """Prometheus' text format; with ``--auth``, for a metrics or admin token."""
        if grant is not None and not may_scrape(grant):
            self.hub.metrics.auth_failed(
                "forbidden", request.remote or "", "http /metrics", "not a metrics token"
            )
            raise LegacyError(
                403,
                "/metrics needs a metrics or admin token "
                "(wsbus token create prometheus --role metrics)",
            )
        await self.hub.refresh_gauges()
        return web.Response(
            body=self.hub.metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def ws(self, request: web.BaseRequest, grant: TokenRecord | None) -> web.StreamResponse:
        """``/ws``: the hub's websocket protocol on this port."""
        assert self.websocket is not None  # the route exists only with it
        refused = self.websocket.refusal(request)
        if refused is not None:
            status, message, retry_after = refused
            raise LegacyError(status, message, retry_after=retry_after)
        return await self.websocket.serve(request)

    async def static(self, request: web.BaseRequest, grant: TokenRecord | None) -> web.Response:
        assert self.ui is not None  # the route exists only with it
        return self.ui.answer(_split_token(request.path)[0])

    async def ca(self, request: web.BaseRequest, grant: TokenRecord | None) -> web.Response:
        assert self.ca_pem is not None  # the route exists only with it
        return web.Response(body=self.ca_pem, content_type="application/x-pem-file")


def _split_token(path: str) -> tuple[str, str | None]:
    """``/t/TOKEN/recv`` -> (``/recv``, ``TOKEN``); other paths unchanged."""
    if not path.startswith("/t/"):
        return path, None
    token, slash, rest = path[3:].partition("/")
    return slash + rest, token or None
