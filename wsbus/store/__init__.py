"""Storage engines behind the hub (one small interface, several engines)."""

from __future__ import annotations

from .base import (
    MemberRecord,
    MemberStore,
    Query,
    ReceiptRecord,
    Store,
    StoreInfo,
    StoreMismatch,
)
from .dbfiles import StoreLocked
from .memory import MemoryStore
from .sqlite import SqliteStore

__all__ = [
    "MemberRecord",
    "MemberStore",
    "MemoryStore",
    "Query",
    "ReceiptRecord",
    "SqliteStore",
    "Store",
    "StoreInfo",
    "StoreLocked",
    "StoreMismatch",
]
