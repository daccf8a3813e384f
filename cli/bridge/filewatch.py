"""Notice when local files change, by polling their ``stat`` (no dependency, any OS).

The bridge serves the agents of the registry and of the project rosters; both
are files that ``agent_comms register``, ``add``, ``enable``... rewrite. Instead of
waiting for its next periodic rescan, the bridge waits on a :class:`FileWatch`
and rescans as soon as one of them changed, so a member who just registered is
served (and shown up or down in ``roster``) within a fraction of a second.

A poll costs one ``stat`` per watched file (and a directory listing per watched
directory): :data:`POLL` apart, that is nothing next to the rescan it replaces.
Files are written atomically (a rename), so a change shows as a new inode,
modification time or size.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterable
from pathlib import Path

__all__ = ["POLL", "FileWatch"]

POLL = 0.2
"""Seconds between two looks at the watched files."""

_Stat = tuple[str, int, int, int]


class FileWatch:
    """Files (a path) and ``*.json`` files under directories (recursively) to watch."""

    def __init__(
        self, files: Iterable[Path] = (), dirs: Iterable[Path] = (), *, poll: float = POLL
    ) -> None:
        self.files = list(files)
        self.dirs = list(dirs)
        self.poll = poll
        self._last = self.signature()

    def signature(self) -> frozenset[_Stat]:
        """What the watched files look like now (a missing file is simply absent)."""
        found: set[_Stat] = set()
        paths = list(self.files)
        for d in self.dirs:
            try:
                paths.extend(d.rglob("*.json"))
            except OSError:
                continue
        for path in paths:
            try:
                st = os.stat(path)
            except OSError:
                continue
            found.add((str(path), st.st_ino, st.st_mtime_ns, st.st_size))
        return frozenset(found)

    def changed(self) -> bool:
        """Whether something changed since the last call (or since the watch began)."""
        now = self.signature()
        if now == self._last:
            return False
        self._last = now
        return True

    async def wait(self, timeout: float) -> bool:
        """Return after ``timeout`` seconds, or as soon as a watched file changed (True)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            await asyncio.sleep(min(self.poll, left))
            if self.changed():
                return True
