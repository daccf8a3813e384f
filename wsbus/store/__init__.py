"""Storage engines behind the hub (one small interface, several engines)."""

from __future__ import annotations

from .base import (
    MemberRecord,
    MemberStore,
    Pending,
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
    "Pending",
    "Query",
    "ReceiptRecord",
    "SqliteStore",
    "Store",
    "StoreInfo",
    "StoreLocked",
    "StoreMismatch",
]
