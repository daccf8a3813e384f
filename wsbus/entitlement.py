"""Who receives an event, and who may read it back: each rule once, in Python and, beside
it, in SQL over the events table (``recipient``, ``sender``). ``tests/test_entitlement.py``
checks both forms against one table of cases.

- :func:`receives` (fan-out, replay, the pending inbox, the HTTP shim's ``/recv``): a
  session acting for ``names`` receives the direct events addressed to one of them and
  the broadcasts (``to`` = ``*``), except the broadcasts of its only name (a session
  acting for several names gets one name's broadcasts for the others). A watcher
  receives everything: the router checks ``watch`` first, the store's queries then
  carry no entitlement at all.
- :func:`may_read` (history and threads for a token that does not read everything):
  the broadcasts and the direct events to *or from* one of ``party``.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from .schema import BROADCAST

__all__ = ["may_read", "may_read_sql", "receives", "receives_arms", "receives_sql"]


def receives(names: Collection[str], sender: str, to: str) -> bool:
    """Whether a session acting for ``names`` receives an event from ``sender`` to ``to``."""
    if to == BROADCAST:
        return set(names) != {sender}
    return to in names


def receives_sql(names: Sequence[str]) -> tuple[str, list[Any]]:
    """:func:`receives` as a WHERE clause and its arguments."""
    marks = ",".join("?" * len(names))
    if len(set(names)) == 1:
        # broadcasts, except back to a session acting for their sender alone
        return (
            f"(recipient IN ({marks}) OR (recipient = ? AND sender != ?))",
            [*names, BROADCAST, names[0]],
        )
    return f"(recipient IN ({marks}) OR recipient = ?)", [*names, BROADCAST]


def receives_arms(name: str) -> list[tuple[str, str, list[Any]]]:
    """:func:`receives` for one name as two disjoint arms, each one range of the
    ``(channel, recipient, seq)`` index: ``(recipient, extra condition, its args)`` —
    the direct events to ``name``, the broadcasts not from ``name``."""
    return [(name, "", []), (BROADCAST, " AND sender != ?", [name])]


def may_read(party: Collection[str], sender: str, to: str) -> bool:
    """Whether a token reading for ``party`` may read back an event from ``sender`` to ``to``."""
    return to == BROADCAST or to in party or sender in party


def may_read_sql(party: Sequence[str]) -> tuple[str, list[Any]]:
    """:func:`may_read` as a WHERE clause and its arguments."""
    marks = ",".join("?" * len(party))
    return (
        f"(recipient = ? OR recipient IN ({marks}) OR sender IN ({marks}))",
        [BROADCAST, *party, *party],
    )
