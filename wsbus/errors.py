"""Error codes and close codes: the stable part of every failure wsbus reports.

Exception tree::

    WsbusError                 root of everything wsbus raises on purpose
    +-- FrameError             a frame the hub or client could not accept (has a code)
    +-- ClientError            client-side failures
        +-- HubUnreachable     could not connect (after the allowed tries)
        |   +-- BadHubURL      a URL no hub can answer (scheme, port): fix it, no retry
        +-- BadClientSetting   a client setting that cannot be used (a CA file)
        +-- SendRefused        the hub answered a send with an ``error`` frame
        +-- ConnectionLost     the connection closed for good (fatal close code)
"""

from __future__ import annotations

from enum import IntEnum, StrEnum

__all__ = [
    "HELLO_CLOSE_CODES",
    "BadClientSetting",
    "BadHubURL",
    "ClientError",
    "CloseCode",
    "ConnectionLost",
    "ErrorCode",
    "FrameError",
    "HubUnreachable",
    "SendRefused",
    "WsbusError",
]


class ErrorCode(StrEnum):
    """Codes carried by ``error`` frames. Each has a one-sentence meaning."""

    INVALID_JSON = "invalid_json"
    INVALID_MSGPACK = "invalid_msgpack"
    INVALID_FRAME = "invalid_frame"
    UNKNOWN_OP = "unknown_op"
    WRONG_FRAME_TYPE = "wrong_frame_type"
    BODY_TOO_LARGE = "body_too_large"
    HELLO_REQUIRED = "hello_required"
    ALREADY_HELLO = "already_hello"
    NOT_YOUR_NAME = "not_your_name"
    TOO_MANY_CHANNELS = "too_many_channels"
    UNKNOWN_EVENT = "unknown_event"
    LIMIT_TOO_LARGE = "limit_too_large"
    NAME_CLAIMED = "name_claimed"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    RATE_LIMITED = "rate_limited"
    TOO_MANY_CONNECTIONS = "too_many_connections"
    SECRET_IN_BODY = "secret_in_body"
    UNKNOWN_MEMBER = "unknown_member"
    LEASE_CONFLICT = "lease_conflict"
    LEASE_LIMIT = "lease_limit"
    LEASE_PENDING = "lease_pending"
    BAD_PATH = "bad_path"
    STORE_FAILED = "store_failed"
    SHUTTING_DOWN = "shutting_down"
    INTERNAL = "internal"


ERROR_MEANINGS: dict[ErrorCode, str] = {
    ErrorCode.INVALID_JSON: "A text frame was not valid UTF-8 JSON.",
    ErrorCode.INVALID_MSGPACK: "A binary frame was not valid MessagePack.",
    ErrorCode.INVALID_FRAME: "A field is missing, has the wrong type or breaks its rule.",
    ErrorCode.UNKNOWN_OP: "The `op` is not one this hub knows.",
    ErrorCode.WRONG_FRAME_TYPE: "Text frame on the msgpack subprotocol, or binary on JSON.",
    ErrorCode.BODY_TOO_LARGE: "The body is over the hub's `max_body` (UTF-8 bytes).",
    ErrorCode.HELLO_REQUIRED: "The first frame of a connection must be `hello`.",
    ErrorCode.ALREADY_HELLO: "A second `hello` on one connection.",
    ErrorCode.NOT_YOUR_NAME: "`from` or `name` is not one of this connection's names.",
    ErrorCode.TOO_MANY_CHANNELS: "More channels than `max_channels` on one connection.",
    ErrorCode.UNKNOWN_EVENT: "`ack` of a seq this name may not acknowledge: none such (or "
    "pruned), another name's, or on a channel the token may not use (one answer for all).",
    ErrorCode.LIMIT_TOO_LARGE: "A history `limit` above `max_history`.",
    ErrorCode.NAME_CLAIMED: "Another connected bridge already serves this name in the channel.",
    ErrorCode.UNAUTHORIZED: "No valid token: missing, unknown, malformed or revoked.",
    ErrorCode.FORBIDDEN: "The token does not allow this name, channel or operation.",
    ErrorCode.RATE_LIMITED: "Over the connection's rate (`rate_events`/s or `rate_bytes`/s).",
    ErrorCode.TOO_MANY_CONNECTIONS: "The token already has `max_identity_connections` open.",
    ErrorCode.SECRET_IN_BODY: "The body looks like it carries a credential (`block_secrets`).",
    ErrorCode.UNKNOWN_MEMBER: "`register` with `leave` for a name not in the roster.",
    ErrorCode.LEASE_CONFLICT: "`reserve` of paths another holder leases (exclusive on "
    "either side); the message names the holder, the reason and until when.",
    ErrorCode.LEASE_LIMIT: "`reserve` past a bound of the channel's leases (per holder, or "
    "paths in force); the message says which.",
    ErrorCode.LEASE_PENDING: "The lease event is in the log but its verdict is not known "
    "here yet (or any more): resend with the same `ref`, or list `leases`.",
    ErrorCode.BAD_PATH: "A lease path that is absolute, climbs with `..`, holds control "
    "characters or backslashes, or has too many parts or wildcards.",
    ErrorCode.STORE_FAILED: "The store could not commit; the send was not accepted.",
    ErrorCode.SHUTTING_DOWN: "The hub is stopping; retry after reconnecting.",
    ErrorCode.INTERNAL: "The hub failed on this frame (a bug, logged); retrying may work.",
}


class CloseCode(IntEnum):
    """WebSocket close codes the hub uses (4000-4999 are wsbus's own)."""

    GOING_AWAY = 1001
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    UNAUTHORIZED = 4001
    BAD_HELLO = 4002
    HELLO_TIMEOUT = 4003
    SLOW_CONSUMER = 4008
    REPLACED = 4009
    RATE_LIMITED = 4029


CLOSE_MEANINGS: dict[CloseCode, str] = {
    CloseCode.GOING_AWAY: "The hub is shutting down; reconnect and resume.",
    CloseCode.POLICY_VIOLATION: "Too many bad frames in a row; fix the client before retrying.",
    CloseCode.MESSAGE_TOO_BIG: "A frame over `max_frame` bytes (sent by the websocket layer).",
    CloseCode.UNAUTHORIZED: "No valid token, a token revoked while connected, or a `hello` "
    "asking for names or channels the token does not allow; do not retry unchanged.",
    CloseCode.BAD_HELLO: "The first frame was not a valid `hello`; do not retry unchanged.",
    CloseCode.HELLO_TIMEOUT: "No `hello` within the handshake timeout.",
    CloseCode.SLOW_CONSUMER: "Unread frames exceeded the send queue; reconnect and resume.",
    CloseCode.REPLACED: "A newer bridge connection from the same host took over its names.",
    CloseCode.RATE_LIMITED: "Throttled for `rate_abuse` seconds in a row, or over "
    "`max_identity_connections`; reconnect later (with backoff).",
}

#: the close code that follows an ``error`` answering ``hello`` (BAD_HELLO otherwise)
HELLO_CLOSE_CODES: dict[str, CloseCode] = {
    ErrorCode.UNAUTHORIZED: CloseCode.UNAUTHORIZED,
    ErrorCode.FORBIDDEN: CloseCode.UNAUTHORIZED,
    ErrorCode.TOO_MANY_CONNECTIONS: CloseCode.RATE_LIMITED,
}

#: error codes after which a client keeps a send queued and retries it
RETRYABLE_ERRORS = frozenset({ErrorCode.SHUTTING_DOWN, ErrorCode.STORE_FAILED, ErrorCode.INTERNAL})

#: close codes after which a client must not reconnect unchanged
FATAL_CLOSE_CODES = frozenset(
    {CloseCode.POLICY_VIOLATION, CloseCode.UNAUTHORIZED, CloseCode.BAD_HELLO, CloseCode.REPLACED}
)


class WsbusError(Exception):
    """Root of every exception wsbus raises on purpose."""


class FrameError(WsbusError):
    """A frame could not be accepted; ``code`` is an :class:`ErrorCode`."""

    def __init__(self, code: ErrorCode, message: str, ref: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.ref = ref


class ClientError(WsbusError):
    """A failure seen by :mod:`wsbus.client`."""


class HubUnreachable(ClientError):
    """The hub could not be reached; ``refused``: nothing listens there (is a hub
    running?)."""

    def __init__(self, message: str, *, refused: bool = False) -> None:
        super().__init__(message)
        self.refused = refused


class BadClientSetting(ClientError):
    """A client setting that cannot be used, e.g. a CA file that cannot be read."""


class BadHubURL(HubUnreachable):
    """A hub URL no hub can answer: not ``ws://`` or ``wss://``, or a bad port."""


class SendRefused(ClientError):
    """The hub refused a send; ``code`` and ``message`` come from its ``error`` frame."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class ConnectionLost(ClientError):
    """The hub closed the connection with a code that forbids reconnecting."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"connection closed ({code}): {reason}")
        self.code = code
        self.reason = reason
