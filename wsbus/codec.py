"""Encoders and decoders for both subprotocols, created once and reused."""

from __future__ import annotations

from typing import Any, cast

import msgspec

from .errors import ErrorCode, FrameError
from .schema import (
    NAME_RULE,
    SUBPROTOCOL_MSGPACK,
    THREAD_RULE,
    ClientFrame,
    HubFrame,
)

__all__ = [
    "JSON",
    "MAX_META_DEPTH",
    "MSGPACK",
    "Codec",
    "codec_for",
    "encode_json",
    "encode_msgpack",
    "meta_problem",
    "quote",
]

#: deepest nesting accepted in ``send.meta`` (a history page nests events deeper still)
MAX_META_DEPTH = 32
#: longest piece of a client's input quoted back in an error message
QUOTE_MAX = 120

encode_json = msgspec.json.Encoder().encode
encode_msgpack = msgspec.msgpack.Encoder().encode

Decoder = msgspec.json.Decoder[Any] | msgspec.msgpack.Decoder[Any]


def quote(text: str, limit: int = QUOTE_MAX) -> str:
    """``text`` made safe to echo in one error line: controls escaped, length capped."""
    if len(text) > limit:
        text = text[:limit] + f"... ({len(text)} characters)"
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def meta_problem(value: Any, depth: int = 0) -> str | None:
    """Why ``value`` is not plain JSON that every codec stores unchanged, or None."""
    if depth > MAX_META_DEPTH:
        return f"nested deeper than {MAX_META_DEPTH} levels"
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                return "object keys must be strings"
            found = meta_problem(v, depth + 1)
            if found:
                return found
    elif isinstance(value, list):
        for v in value:
            found = meta_problem(v, depth + 1)
            if found:
                return found
    elif isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return "NaN and infinities are not JSON"
    elif isinstance(value, int) and not isinstance(value, bool):
        if not -(2**63) <= value < 2**64:
            return "integers must fit in 64 bits"
    elif value is not None and not isinstance(value, str | bool):
        return f"{type(value).__name__} values are not JSON"
    return None


def _explain(err: msgspec.ValidationError) -> FrameError:
    raw = str(err)
    text = quote(raw, 300)  # msgspec quotes the bad value: cap it, escape it
    if raw.endswith("`$.op`") and raw.startswith("Invalid value"):
        return FrameError(ErrorCode.UNKNOWN_OP, f"unknown op ({text})")
    if "missing required field `op`" in text:
        return FrameError(ErrorCode.INVALID_FRAME, "a frame must be an object with an `op` field")
    if "matching regex" in text:
        rule = THREAD_RULE if "thread" in text else NAME_RULE
        field = text.rsplit(" - at ", 1)[-1] if " - at " in text else "a field"
        return FrameError(ErrorCode.INVALID_FRAME, f"invalid name at {field}: allowed {rule}")
    return FrameError(ErrorCode.INVALID_FRAME, text)


class Codec:
    """One subprotocol: how frames are encoded and decoded on it. Each decoder is
    created on first use (``wsbus send`` needs one of the four), then reused."""

    def __init__(self, name: str, binary: bool) -> None:
        self.name = name
        self.binary = binary
        self.encode = encode_msgpack if binary else encode_json
        self._client_decoder: Decoder | None = None
        self._hub_decoder: Decoder | None = None

    def _decoder(self, frames: Any) -> Decoder:
        if self.binary:
            return msgspec.msgpack.Decoder(frames)
        return msgspec.json.Decoder(frames)

    @property
    def _client(self) -> Decoder:
        if self._client_decoder is None:
            self._client_decoder = self._decoder(ClientFrame)
        return self._client_decoder

    @property
    def _hub(self) -> Decoder:
        if self._hub_decoder is None:
            self._hub_decoder = self._decoder(HubFrame)
        return self._hub_decoder

    def decode_client(self, data: str | bytes) -> ClientFrame:
        """Decode one client frame, raising :class:`FrameError` with a code."""
        if isinstance(data, str) == self.binary:
            kind = "text" if isinstance(data, str) else "binary"
            raise FrameError(ErrorCode.WRONG_FRAME_TYPE, f"{kind} frame on subprotocol {self.name}")
        code = ErrorCode.INVALID_MSGPACK if self.binary else ErrorCode.INVALID_JSON
        try:
            frame: ClientFrame = self._client.decode(cast(bytes, data))
            return frame
        except msgspec.ValidationError as err:
            raise _explain(err) from None
        except msgspec.DecodeError as err:
            raise FrameError(code, f"could not decode frame: {quote(str(err))}") from None
        except RecursionError:
            raise FrameError(code, "could not decode frame: nested too deeply") from None
        except UnicodeDecodeError:
            raise FrameError(code, "could not decode frame: a string is not valid UTF-8") from None

    def decode_hub(self, data: str | bytes) -> Any:
        """Decode one hub frame (used by the client)."""
        return self._hub.decode(cast(bytes, data))


JSON = Codec("wsbus.v1.json", binary=False)
MSGPACK = Codec(SUBPROTOCOL_MSGPACK, binary=True)


def codec_for(subprotocol: str | None) -> Codec:
    """The codec of a negotiated subprotocol (JSON when none was negotiated)."""
    return MSGPACK if subprotocol == SUBPROTOCOL_MSGPACK else JSON
