"""The event filter shared by engines that filter in Python."""

from __future__ import annotations

from ..entitlement import may_read, receives
from .base import Query

__all__ = ["matches"]


def matches(q: Query, channel: str, sender: str, to: str, thread: str | None) -> bool:
    """Whether one event passes ``q``'s field filters (not its seq range)."""
    if q.channels is not None and channel not in q.channels:
        return False
    if q.to is not None and to != q.to:
        return False
    if q.sender is not None and sender != q.sender:
        return False
    if q.thread is not None and thread != q.thread:
        return False
    if q.party is not None and not may_read(q.party, sender, to):
        return False
    return q.entitled is None or receives(q.entitled, sender, to)
