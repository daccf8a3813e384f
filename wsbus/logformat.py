"""How the hub's log lines look: ``--log-format text`` (the default) or ``json``.

JSON lines carry ``ts``, ``level``, ``logger``, ``msg`` and, for the lines an
operator follows (connect, disconnect, auth failure, slow consumer, bridge failure,
engine disconnect), ``event`` and the fields the message names (``session``...).
Tokens are redacted from every line (:mod:`wsbus.redact`) whichever format.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import msgspec

from .redact import redact

__all__ = ["FORMATS", "JsonFormatter", "TextFormatter", "setup"]

FORMATS = ("text", "json")
TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

#: attributes of every LogRecord: what is not among them came in ``extra``
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
}
_encode = msgspec.json.Encoder().encode


#: control characters (C0, DEL, C1) as ``\\xNN``: what a peer put in a name, a reason
#: or a path can neither start a line of its own nor drive the terminal
_ESCAPES = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))}


class TextFormatter(logging.Formatter):
    """The text format, one line per record (a traceback's own lines follow it)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return super().formatMessage(record).translate(_ESCAPES)


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": round(record.created, 6),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key in _STANDARD or key.startswith("_"):
                continue
            # what a library passes in ``extra`` may be any object: only plain values
            if isinstance(value, bool | int | float) or value is None:
                line[key] = value
            elif isinstance(value, str):
                line[key] = redact(value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exc"] = record.exc_text
        return _encode(line).decode()


def setup(level: str, fmt: str = "text") -> None:
    """Log to stderr at ``level`` in ``fmt``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter(TEXT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, str(level).upper(), logging.WARNING))
