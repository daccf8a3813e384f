"""Many hubs, one bus: the log of record on NATS JetStream (``wsbus serve --engine
nats://…``; docs/DEPLOY.md). Needs the extra ``wsbus[nats]``."""

from __future__ import annotations

from .engine import EngineConfig, EngineError
from .log import JetStreamLog

__all__ = ["EngineConfig", "EngineError", "JetStreamLog"]
