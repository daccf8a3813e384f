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
    "MSGPACK",
    "Codec",
    "codec_for",
    "encode_json",
    "encode_msgpack",
]

encode_json = msgspec.json.Encoder().encode
encode_msgpack = msgspec.msgpack.Encoder().encode

_client_json = msgspec.json.Decoder(ClientFrame)
_client_msgpack = msgspec.msgpack.Decoder(ClientFrame)
_hub_json = msgspec.json.Decoder(HubFrame)
_hub_msgpack = msgspec.msgpack.Decoder(HubFrame)


def _explain(err: msgspec.ValidationError) -> FrameError:
    text = str(err)
    if "`$.op`" in text and text.startswith("Invalid value"):
        return FrameError(ErrorCode.UNKNOWN_OP, f"unknown op ({text})")
    if "missing required field `op`" in text:
        return FrameError(ErrorCode.INVALID_FRAME, "a frame must be an object with an `op` field")
    if "matching regex" in text:
        rule = THREAD_RULE if "thread" in text else NAME_RULE
        field = text.rsplit(" - at ", 1)[-1] if " - at " in text else "a field"
        return FrameError(ErrorCode.INVALID_FRAME, f"invalid name at {field}: allowed {rule}")
    return FrameError(ErrorCode.INVALID_FRAME, text)


class Codec:
    """One subprotocol: how frames are encoded and decoded on it."""

    def __init__(self, name: str, binary: bool) -> None:
        self.name = name
        self.binary = binary
        self.encode = encode_msgpack if binary else encode_json
        self._client = _client_msgpack if binary else _client_json
        self._hub = _hub_msgpack if binary else _hub_json

    def decode_client(self, data: str | bytes) -> Any:
        """Decode one client frame, raising :class:`FrameError` with a code."""
        if isinstance(data, str) == self.binary:
            kind = "text" if isinstance(data, str) else "binary"
            raise FrameError(ErrorCode.WRONG_FRAME_TYPE, f"{kind} frame on subprotocol {self.name}")
        try:
            return self._client.decode(cast(bytes, data))
        except msgspec.ValidationError as err:
            raise _explain(err) from None
        except msgspec.DecodeError as err:
            code = ErrorCode.INVALID_MSGPACK if self.binary else ErrorCode.INVALID_JSON
            raise FrameError(code, f"could not decode frame: {err}") from None

    def decode_hub(self, data: str | bytes) -> Any:
        """Decode one hub frame (used by the client)."""
        return self._hub.decode(cast(bytes, data))


JSON = Codec("wsbus.v1.json", binary=False)
MSGPACK = Codec(SUBPROTOCOL_MSGPACK, binary=True)


def codec_for(subprotocol: str | None) -> Codec:
    """The codec of a negotiated subprotocol (JSON when none was negotiated)."""
    return MSGPACK if subprotocol == SUBPROTOCOL_MSGPACK else JSON
