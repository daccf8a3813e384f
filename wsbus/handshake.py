"""What every wsbus client says and concludes when it connects and sends, whatever its
I/O: the asyncio :class:`~wsbus.client.Client` and the one-shot sender of
:mod:`wsbus.oneshot` (``wsbus send``) both build their frames and word their errors
here, so the two never differ.

Light on purpose: no asyncio, no websockets I/O layer (``wsbus send`` starts with it).
"""

from __future__ import annotations

import sys
import types
import urllib.parse
from typing import TYPE_CHECKING, Any

import msgspec

from .codec import Codec
from .errors import (
    FATAL_CLOSE_CODES,
    HELLO_CLOSE_CODES,
    BadClientSetting,
    BadHubURL,
    ClientError,
    CloseCode,
    ConnectionLost,
    ErrorCode,
    HubUnreachable,
    SendRefused,
)
from .refs import new_ref
from .schema import Error as ErrorFrame
from .schema import Hello, Limits, Send, Welcome

if TYPE_CHECKING:
    import ssl

_METADATA = "importlib.metadata"


class _Deferred(types.ModuleType):
    """Stands in for a module not loaded yet; loads it at the first attribute asked."""

    def __getattr__(self, attr: str) -> Any:
        _forget(self)
        import importlib

        return getattr(importlib.import_module(self.__name__), attr)


def _forget(stand_in: types.ModuleType) -> None:
    import importlib

    if sys.modules.get(stand_in.__name__) is stand_in:
        del sys.modules[stand_in.__name__]
    if getattr(importlib, "metadata", None) is stand_in:
        delattr(importlib, "metadata")


def _import_websockets() -> None:
    """Import the websockets package without loading importlib.metadata.

    ``websockets/version.py`` imports importlib.metadata (email, zipfile, csv...: about
    13 ms, a sixth of a whole ``wsbus send``) and uses it only in a development checkout
    of websockets (``released = False``). While the package loads, a stand-in answers
    for importlib.metadata and loads the real module if anything asks it for something;
    once the package is loaded the stand-in is gone, so the next import of
    importlib.metadata loads the real one. tests/test_startup.py checks both.
    """
    if "websockets" in sys.modules or _METADATA in sys.modules:
        return
    import importlib

    stand_in = _Deferred(_METADATA)
    sys.modules[_METADATA] = stand_in
    setattr(importlib, "metadata", stand_in)  # noqa: B010 (the package's attribute too)
    try:
        import websockets  # noqa: F401
    finally:
        _forget(stand_in)


_import_websockets()

from websockets.exceptions import (  # noqa: E402 (after _import_websockets)
    ConnectionClosed,
    InvalidHandshake,
    InvalidStatus,
    InvalidURI,
)

__all__ = [
    "CLIENT_NAME",
    "SendResult",
    "connect_failure",
    "handshake_headers",
    "hello_frame",
    "new_ref",
    "refused_upgrade",
    "send_frame",
    "tls_context",
    "welcome_from",
    "why_unreachable",
]

#: the ``client`` of every hello and the User-Agent of every handshake
CLIENT_NAME = "wsbus-python"


class SendResult(msgspec.Struct, frozen=True):
    """The hub's durable acknowledgement of a send."""

    seq: int
    ts: float
    ref: str
    duplicate: bool = False
    online: bool | None = None
    """direct sends: whether the recipient had a connection on the channel"""


def hello_frame(name: str | None, **fields: Any) -> Hello:
    """The ``hello`` a client opens with (``fields``: the other fields of :class:`Hello`)."""
    return Hello(name=name, client=CLIENT_NAME, **fields)


def handshake_headers(token: str | None) -> dict[str, str]:
    """Headers of the websocket upgrade besides the protocol's own (the User-Agent is
    :data:`CLIENT_NAME`)."""
    return {"Authorization": f"Bearer {token}"} if token else {}


def send_frame(
    codec: Codec,
    limits: Limits | None,
    ref: str,
    to: str,
    body: str,
    **fields: Any,
) -> Send:
    """The ``send`` frame for a body, refused here when it is over the hub's
    ``max_body`` (the hub would refuse it) or its ``meta`` cannot be encoded."""
    if limits is not None and len(body.encode("utf-8", "surrogatepass")) > limits.max_body:
        raise SendRefused(
            ErrorCode.BODY_TOO_LARGE, f"body is over the hub's limit of {limits.max_body} bytes"
        )
    frame = Send(ref=ref, to=to, body=body, **fields)
    codec.encode(frame)  # unencodable meta fails here, before it is sent
    return frame


def tls_context(url: str, ca_file: str | None) -> ssl.SSLContext | None:
    """The TLS context for a ``wss://`` hub verified with ``ca_file`` (None: the
    system's CAs, or not TLS)."""
    if ca_file is None or not url.startswith("wss:"):
        return None
    import ssl

    try:
        return ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as err:
        why = getattr(err, "strerror", None) or str(err)
        raise BadClientSetting(
            f"cannot load the CA file {ca_file} (WSBUS_CA_FILE): {why}"
        ) from None


def refused_upgrade(status: int, body: bytes | None, token: str | None) -> ConnectionLost | None:
    """The hub refused the websocket upgrade for want of a valid token (401, 403)."""
    if status not in (401, 403):
        return None
    why = body.decode(errors="replace").strip() if body else ""
    hint = "" if token else " (set WSBUS_TOKEN, or `wsbus join CODE`)"
    return ConnectionLost(CloseCode.UNAUTHORIZED, f"HTTP {status}: {why or 'unauthorized'}{hint}")


def welcome_from(codec: Codec, data: str | bytes) -> Welcome:
    """The hub's answer to ``hello``: its ``welcome``, or the error that ends the
    attempt (:class:`ConnectionLost` when retrying unchanged is pointless,
    :class:`OSError` when a later try may work)."""
    try:
        frame = codec.decode_hub(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as err:
        raise ConnectionLost(4002, f"not a wsbus hub: {err}") from None
    if isinstance(frame, ErrorFrame):
        # the same close code the hub sends after this error: fatal ones end the
        # client, the others (4029: too many connections) are retried with backoff
        code = HELLO_CLOSE_CODES.get(frame.code, CloseCode.BAD_HELLO)
        if code not in FATAL_CLOSE_CODES:
            raise OSError(f"{frame.code}: {frame.message}")
        raise ConnectionLost(code, f"{frame.code}: {frame.message}")
    if not isinstance(frame, Welcome):
        raise ConnectionLost(4002, f"expected welcome, got {type(frame).__name__}")
    return frame


def connect_failure(err: BaseException, url: str) -> tuple[ClientError, bool] | None:
    """What a failed connection attempt means: the error to report and whether
    trying again may work (None: not a connection failure, let it propagate)."""
    if isinstance(err, ClientError):  # ConnectionLost, BadClientSetting: said already
        return err, False
    if _untrusted(err):  # an SSLCertVerificationError is a ValueError too: before it
        why = getattr(err, "verify_message", None) or err
        return (
            HubUnreachable(
                f"the hub's TLS certificate at {url} is not trusted ({why}): set "
                "WSBUS_CA_FILE to the CA file that signed it, or join a shared hub with "
                "`wsbus join CODE`"
            ),
            False,
        )
    if isinstance(err, ValueError | InvalidURI):  # e.g. a port out of range
        return BadHubURL(f"invalid hub URL {url!r}: {_url_hint(url, err)}"), False
    if isinstance(err, OSError | TimeoutError | InvalidHandshake | ConnectionClosed):
        return (
            HubUnreachable(
                f"cannot reach the hub at {url}: {why_unreachable(err, url)}",
                refused=isinstance(err, ConnectionRefusedError),
            ),
            True,
        )
    return None


def _untrusted(err: BaseException) -> bool:
    if not isinstance(err, ValueError):
        return False
    import ssl  # only on this failure: a ws:// send never loads ssl

    return isinstance(err, ssl.SSLCertVerificationError)


def _url_hint(url: str, err: BaseException) -> str:
    """Why a URL cannot be a hub's, and what was probably meant."""
    try:
        parts = urllib.parse.urlsplit(url if "://" in url else f"//{url}")
        given = parts.port
    except ValueError:  # not even a URL (an unclosed [, a port out of range)
        return str(err)
    if parts.scheme in ("http", "https"):
        ws = "ws" if parts.scheme == "http" else "wss"
        port = given if given not in (None, 8080) else 8765
        return (
            f"a hub URL starts with ws:// or wss://; did you mean {ws}://{parts.hostname}:{port}? "
            "(:8080 is the agent-bus HTTP shim)"
        )
    if not parts.scheme:
        return f"a hub URL starts with ws:// or wss:// (ws://{url}?)"
    return str(err)


def why_unreachable(err: BaseException, url: str = "") -> str:
    """Why a connection attempt failed, in a few words."""
    if isinstance(err, ConnectionRefusedError):
        return "connection refused"
    if isinstance(err, TimeoutError):
        return "timed out"
    if isinstance(err, InvalidStatus):  # the hub says why in one line (503, 429 before hello)
        response = err.response
        body = response.body.decode(errors="replace").strip() if response.body else ""
        return f"HTTP {response.status_code}" + (f": {body.splitlines()[0][:200]}" if body else "")
    if (
        isinstance(err, InvalidHandshake)
        and url.startswith("ws://")
        and "HTTP response" in str(err)
    ):
        return f"{err} (a TLS port? try wss://{url[len('ws://') :]})"
    text = str(err) or type(err).__name__
    return text
