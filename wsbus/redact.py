"""Keep tokens out of the hub's log, at every level and from every library.

Tokens reach log records in many shapes: aiohttp quotes a malformed request line
(``GET /t/TOKEN/recv``) or header line, websockets logs every handshake header
(``Authorization: Bearer TOKEN``) and every frame (``hello.token``) at DEBUG, and
an exception's message may carry any of them into a traceback. :class:`RedactTokens`
sits on the root logger's handlers (:func:`install`, called by ``wsbus serve``): a
handler sees every record that reaches it, whichever logger made it, whereas a
logger's own filters do not apply to records propagating from its children.

It rewrites the finished record (message with its arguments, traceback, stack)
through :func:`redact`. A websockets frame argument is redacted *before* it is
turned into text, because websockets shows only the two ends of a long frame: a
token cut in two would leave its tail with nothing around it to recognize it by.

The token id (``wsbus_<id>_``) is public and kept, so a log still says which
token it was; everything secret becomes :data:`MARK`.
"""

from __future__ import annotations

import dataclasses
import logging
import re

from websockets.frames import Frame

__all__ = ["MARK", "RedactTokens", "install", "redact", "redact_bytes"]

MARK = "<redacted>"

_RULES: list[tuple[re.Pattern[str], str]] = [
    # the legacy base URL: /t/TOKEN/recv
    (re.compile(r"(/t/)[^/\s?#'\"\\]+"), rf"\g<1>{MARK}"),
    # an (Proxy-)Authorization header, whatever its scheme: `Name: value`, a
    # Python mapping ('Name': 'value') or pair ('Name', 'value')
    (re.compile(r"(authorization['\"]?\s*[:=,]\s*['\"]?)[^'\"\r\n]+", re.I), rf"\g<1>{MARK}"),
    # a bearer credential quoted without its header name (not a challenge's realm)
    (re.compile(r"(\bbearer\s+)(?!realm=)[^\s'\",;]+", re.I), rf"\g<1>{MARK}"),
    # a token field: JSON or Python ("token": "…"), a query or variable (token=…)
    (re.compile(r"""(["']token["']\s*:\s*["'])(?:[^"'\\]|\\.)*""", re.I), rf"\g<1>{MARK}"),
    (re.compile(r"((?<![A-Za-z0-9])token=['\"]?)[^&\s'\"]+", re.I), rf"\g<1>{MARK}"),
    # the token format itself, anywhere, even cut short
    (re.compile(r"(wsbus_[0-9a-f]{8}_)[A-Za-z0-9_-]+"), rf"\g<1>{MARK}"),
]

#: a MessagePack ``token`` key (fixstr of 5 bytes), as latin-1 text
_MSGPACK_TOKEN = "\xa5token"

#: a frame longer than twice this is scanned at its two ends only (websockets shows
#: at most a few hundred bytes of each end; a window this wide also holds any
#: token that straddles what is shown)
FRAME_WINDOW = 4096


def redact(text: str) -> str:
    """``text`` with every token, ``Authorization`` value and token field replaced."""
    for pattern, replacement in _RULES:
        text = pattern.sub(replacement, text)
    return text


def _msgpack_str_span(text: str, start: int) -> tuple[int, int] | None:
    """Where the content of the MessagePack string whose header is at ``start`` begins
    and ends (None: no string header there)."""
    if start >= len(text):
        return None
    head = ord(text[start])
    if 0xA0 <= head <= 0xBF:  # fixstr
        return start + 1, start + 1 + (head & 0x1F)
    size = {0xD9: 1, 0xDA: 2, 0xDB: 4}.get(head)  # str8, str16, str32
    if size is None or start + 1 + size > len(text):
        return None
    first = start + 1 + size
    length = int.from_bytes(text[start + 1 : first].encode("latin-1"), "big")
    return first, first + length


def redact_bytes(data: bytes) -> bytes:
    """:func:`redact` for a raw frame: JSON text, or MessagePack whose ``token`` value
    is first masked in place (``*``, same length: the map around it stays readable)."""
    text = data.decode("latin-1")  # byte for byte: ASCII patterns match as in text
    at = text.find(_MSGPACK_TOKEN)
    while at >= 0:
        after = at + len(_MSGPACK_TOKEN)
        span = _msgpack_str_span(text, after)
        if span is not None:
            first, end = span[0], min(span[1], len(text))
            text = text[:first] + "*" * (end - first) + text[end:]
            after = end
        at = text.find(_MSGPACK_TOKEN, after)
    return redact(text).encode("latin-1")


def _redact_frame(frame: Frame) -> Frame:
    data = frame.data
    if len(data) <= 2 * FRAME_WINDOW:
        return dataclasses.replace(frame, data=redact_bytes(bytes(data)))
    # the middle is never shown, so it is not scanned either: zeros keep the length
    head = redact_bytes(bytes(data[:FRAME_WINDOW]))
    tail = redact_bytes(bytes(data[-FRAME_WINDOW:]))
    middle = bytes(max(0, len(data) - len(head) - len(tail)))
    return dataclasses.replace(frame, data=head + middle + tail)


def _argument(arg: object) -> object:
    if isinstance(arg, Frame):
        return _redact_frame(arg)
    if isinstance(arg, bytes | bytearray | memoryview):
        return redact_bytes(bytes(arg))
    return arg


class RedactTokens(logging.Filter):
    """Rewrites each record so that no token survives in what any handler writes."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            self._redact(record)
        except Exception:  # never let a log call fail, never let a token through
            record.msg = "(log message withheld: it could not be checked for tokens)"
            record.args = None
            record.exc_info = record.exc_text = record.stack_info = None
        return True

    @staticmethod
    def _redact(record: logging.LogRecord) -> None:
        if isinstance(record.args, tuple):
            record.args = tuple(_argument(a) for a in record.args)
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: show both halves, as logging would
            message = f"{record.msg!s} % {record.args!r}"
        record.msg = redact(message)
        record.args = None  # formatted already: a % in the result must stay as it is
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
            record.exc_info = None  # no handler may render the raw exception again
        if record.stack_info:
            record.stack_info = redact(record.stack_info)


def install(logger: logging.Logger | None = None) -> None:
    """Put one :class:`RedactTokens` on every handler of ``logger`` (the root logger)."""
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, RedactTokens) for f in handler.filters):
            handler.addFilter(RedactTokens())
