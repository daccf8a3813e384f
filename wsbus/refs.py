"""Idempotency keys (``ref``): made by clients, and by the HTTP shim for the sends it
makes on behalf of legacy clients. Its own module, so server code imports no client."""

from __future__ import annotations

import itertools
import os
import secrets

__all__ = ["new_ref"]

_REF_PREFIX = secrets.token_hex(8)
_ref_counter = itertools.count(1)


def new_ref() -> str:
    """A fresh idempotency key: a random per-process prefix and a counter (unique
    across processes without a system call per send)."""
    return f"{_REF_PREFIX}-{next(_ref_counter)}"


def _reseed_refs() -> None:
    global _REF_PREFIX, _ref_counter
    _REF_PREFIX = secrets.token_hex(8)
    _ref_counter = itertools.count(1)


os.register_at_fork(after_in_child=_reseed_refs)  # a forked child must not reuse refs
