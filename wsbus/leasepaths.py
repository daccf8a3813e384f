"""The path rules of file leases: what a lease path may be, what it covers, and when two
overlap (no I/O; docs/LEASES.md states them for users).

Paths are relative to the repository root, ``/`` between parts. In a pattern, ``*``,
``?`` and ``[...]`` match within one part (``fnmatch``'s syntax), a part that is exactly
``**`` matches any number of parts. A pattern covers what it matches **and everything
under it** (a directory), and also its own spelling, so ``app/[slug]/page.tsx`` can be
leased as it is written.

Two patterns **overlap** when they could cover a common path — decided conservatively
(a lock that is too wide beats one that misses): walking both part by part, they
overlap unless two parts at the same depth cannot name the same thing before either
pattern reaches a ``**``. Issue 16's rule — either covers the other's literal part (what
comes before its first wildcard), or both name the same path — is kept on top of it.

Every check is linear in the parts (``fnmatch`` compiles each part once, without
catastrophic backtracking), and :func:`normalize` bounds the parts and wildcards of a
pattern, so no pattern, however hostile, can hold up the hub's event loop.
"""

from __future__ import annotations

import fnmatch
import functools
import re

__all__ = [
    "MAX_PARTS",
    "MAX_WILDCARDS",
    "conflict",
    "covers",
    "literal",
    "normalize",
]

MAX_PARTS = 32
"""The most parts (between ``/``) a lease path may have."""
MAX_WILDCARDS = 16
"""The most wildcard characters (``*``, ``?``, ``[``) in one lease path."""

_WILD = re.compile(r"[*?\[]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def normalize(path: str) -> str:
    """A lease path as stored: ``./``, repeated and trailing ``/`` dropped, ``**/**``
    made one ``**``. Raises ValueError (one sentence) for a path that is empty,
    absolute, climbs out with ``..``, holds control characters or backslashes, or has
    more than :data:`MAX_PARTS` parts or :data:`MAX_WILDCARDS` wildcards."""
    if _CONTROL.search(path):
        raise ValueError(f"lease path {path!r} holds control characters")
    if "\\" in path:
        raise ValueError(f"lease path {path!r} holds a backslash: write paths with '/'")
    if path.startswith("/"):
        raise ValueError(
            f"lease path {path!r} is absolute: paths are relative to the repository root"
        )
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", ".") or (part == "**" and parts and parts[-1] == "**"):
            continue
        parts.append(part)
    if ".." in parts:
        raise ValueError(f"lease path {path!r} climbs out with '..'")
    if not parts:
        raise ValueError(f"lease path {path!r} names nothing")
    if len(parts) > MAX_PARTS:
        raise ValueError(f"lease path {path!r} has more than {MAX_PARTS} parts")
    if len(_WILD.findall(path)) > MAX_WILDCARDS:
        raise ValueError(f"lease path {path!r} has more than {MAX_WILDCARDS} wildcards")
    return "/".join(parts)


def literal(pattern: str) -> str:
    """The part of ``pattern`` before its first wildcard (all of it if it has none)."""
    m = _WILD.search(pattern)
    return pattern if m is None else pattern[: m.start()]


def _wild(part: str) -> bool:
    return _WILD.search(part) is not None


def _part_matches(name: str, part: str) -> bool:
    """Whether one path part ``name`` is matched by one pattern part."""
    return name == part or fnmatch.fnmatchcase(name, part)


def covers(pattern: str, path: str) -> bool:
    """Whether ``pattern`` covers the concrete ``path``: matches it or a directory
    above it, or spells it (or a directory above it) as it is."""
    path = path.strip("/")
    if path == pattern or path.startswith(pattern + "/"):
        return True
    parts = pattern.split("/")
    if parts[-1] != "**":
        parts.append("**")  # and everything under what it matches
    names = path.split("/")
    # the positions in ``names`` the pattern can have reached: a set, not backtracking
    at = {0}
    for part in parts:
        if part == "**":
            at = set(range(min(at), len(names) + 1))
        else:
            at = {i + 1 for i in at if i < len(names) and _part_matches(names[i], part)}
        if not at:
            return False
    return len(names) in at


def _head_tail(part: str) -> tuple[str, str]:
    """A wildcard part's literal text before its first and after its last wildcard."""
    first = _WILD.search(part)
    assert first is not None
    last = max(part.rfind("*"), part.rfind("?"), part.rfind("]") if "[" in part else -1)
    return part[: first.start()], part[last + 1 :]


def _parts_meet(a: str, b: str) -> bool:
    """Whether two pattern parts could match the same name (conservative when both
    have wildcards: their literal heads and tails must agree)."""
    if a == b:
        return True
    wild_a, wild_b = _wild(a), _wild(b)
    if not wild_a and not wild_b:
        return False
    if not wild_a:
        return fnmatch.fnmatchcase(a, b)
    if not wild_b:
        return fnmatch.fnmatchcase(b, a)
    (head_a, tail_a), (head_b, tail_b) = _head_tail(a), _head_tail(b)
    heads = head_a.startswith(head_b) or head_b.startswith(head_a)
    return heads and (tail_a.endswith(tail_b) or tail_b.endswith(tail_a))


@functools.lru_cache(maxsize=4096)
def _split(pattern: str) -> tuple[str, ...]:
    return tuple(pattern.split("/"))


def _meet(a: str, b: str) -> bool:
    for x, y in zip(_split(a), _split(b), strict=False):
        if x == "**" or y == "**":
            return True
        if not _parts_meet(x, y):
            return False
    return True  # one is the other, or a directory above it


def conflict(a: str, b: str) -> bool:
    """Whether two lease patterns overlap (see the module docstring)."""
    return a == b or _meet(a, b) or covers(a, literal(b)) or covers(b, literal(a))
