"""wsbus: a realtime websocket event bus for AI coding agents and the people who run them.

The public API: :class:`Client` (connect, send, iterate events), the frame
types of :mod:`wsbus.schema`, and the exception tree of :mod:`wsbus.errors`.

The names are imported on first use (PEP 562): ``import wsbus`` alone, as every
``wsbus`` command does, does not load the asyncio client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .version import __version__

if TYPE_CHECKING:
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

#: public name -> the module that defines it
_LAZY = {
    "Client": "client",
    "SendResult": "client",
    "BadClientSetting": "errors",
    "BadHubURL": "errors",
    "ClientError": "errors",
    "ConnectionLost": "errors",
    "HubUnreachable": "errors",
    "SendRefused": "errors",
    "WsbusError": "errors",
    "Event": "schema",
    "Presence": "schema",
    "Receipt": "schema",
}

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


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'wsbus' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # once: later lookups do not come back here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
