"""Listener cursors: the last seq a listener printed, per (hub URL, name, channel).

Kept as small JSON files under ``~/.local/state/wsbus/cursors/`` (mode 0600),
replaced atomically on every update so a crash never leaves half a file.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path

import msgspec

from wsbus.config import hub_urls, state_dir

__all__ = ["Cursor", "CursorFile"]


class Cursor(msgspec.Struct):
    url: str
    name: str
    channel: str
    seq: int | None = None
    hub: str | None = None


class CursorFile:
    """One listener's cursor on disk."""

    def __init__(self, url: str, name: str, channel: str, root: Path | None = None) -> None:
        # several hubs of one bus share a cursor (whichever answers, the same seqs)
        hubs = ",".join(sorted(set(hub_urls(url))))
        key = hashlib.sha256(f"{hubs}\n{name}\n{channel}".encode()).hexdigest()[:20]
        self.path = (root or state_dir() / "cursors") / f"{name}-{key}.json"
        self.cursor = Cursor(url=url, name=name, channel=channel)

    def load(self) -> Cursor:
        with contextlib.suppress(FileNotFoundError, msgspec.DecodeError, msgspec.ValidationError):
            self.cursor = msgspec.json.decode(self.path.read_bytes(), type=Cursor)
        return self.cursor

    def save(self, seq: int, hub: str | None) -> None:
        self.cursor.seq = seq
        self.cursor.hub = hub
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(msgspec.json.encode(self.cursor))
        os.replace(tmp, self.path)
