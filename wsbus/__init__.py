"""wsbus: a realtime websocket event bus for AI coding agents and the people who run them.

The public API: :class:`Client` (connect, send, iterate events), the frame
types of :mod:`wsbus.schema`, and the exception tree of :mod:`wsbus.errors`.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .client import Client, SendResult
from .errors import (
    BadClientSetting,
    BadHubURL,
    ClientError,
    ConnectionLost,
    HubUnreachable,
    SendRefused,
    WsbusError,
)
from .schema import Event, Presence, Receipt

__all__ = [
    "BadClientSetting",
    "BadHubURL",
    "Client",
    "ClientError",
    "ConnectionLost",
    "Event",
    "HubUnreachable",
    "Presence",
    "Receipt",
    "SendRefused",
    "SendResult",
    "WsbusError",
    "__version__",
]
