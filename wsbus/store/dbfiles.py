"""Guards around a database file: one hub per file, and files that stay put.

:class:`HubLock` is an exclusive ``flock`` on ``<db>.lock``: a second hub on the
same database refuses to start instead of interleaving ``seq`` numbers with the
first. The kernel releases the lock when its holder dies, even by SIGKILL, so a
crashed hub never leaves a stale lock behind.

:class:`FileGuard` remembers which files (device and inode) the store opened and
tells, cheaply enough for every commit (two ``stat`` calls), when one of them
was deleted or replaced: SQLite keeps writing to the open descriptors of a file
that is gone, and whatever it commits there is lost at the next start.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

__all__ = ["FileGuard", "HubLock", "StoreLocked"]


class StoreLocked(Exception):
    """Another hub holds the database (its ``.lock`` file)."""


class HubLock:
    """An exclusive, non-blocking ``flock`` on ``<db>.lock`` holding the owner's pid."""

    def __init__(self, db: Path) -> None:
        db = db.resolve()  # a symlink to the same database is the same database
        self.path = db.with_name(db.name + ".lock")
        self.db = db
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or raise :class:`StoreLocked` naming who holds it."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            who = f"pid {holder}" if holder.isdigit() else "another process"
            raise StoreLocked(
                f"another wsbus hub ({who}) is serving {self.db} (it holds {self.path.name}); "
                "stop it, or give this hub its own --db"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        try:  # who holds it, for the message above (the lock itself is the flock)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            pass  # a full disk: the lock holds all the same

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None


def _file_id(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


class FileGuard:
    """The database and WAL files a store opened, checked after each commit."""

    def __init__(self, db: Path) -> None:
        resolved = db.resolve()  # SQLite puts the WAL beside the file a symlink points to
        self.db = str(resolved)  # strings: stat() on every commit, no Path conversion
        self.wal = str(resolved.with_name(resolved.name + "-wal"))
        self._ids: tuple[tuple[int, int] | None, tuple[int, int] | None] = (None, None)

    def remember(self) -> None:
        """Record the files as they are now (right after opening)."""
        self._ids = (_file_id(self.db), _file_id(self.wal))

    def database_intact(self) -> bool:
        """Whether the database file is still the one opened (only the WAL moved)."""
        return _file_id(self.db) == self._ids[0]

    def problem(self) -> str | None:
        """Why the files on disk are not the ones opened, or None when they are."""
        db, wal = _file_id(self.db), _file_id(self.wal)
        if self._ids[1] is None and wal is not None and db == self._ids[0]:
            self._ids = (db, wal)  # the WAL was created by the first write
        if (db, wal) == self._ids:
            return None
        gone = self.db if db != self._ids[0] else self.wal
        how = "deleted" if (db if gone == self.db else wal) is None else "replaced"
        return (
            f"{gone} was {how} while the hub was running; commits are refused so that "
            "nothing is acknowledged into a file that is gone: restart the hub"
        )
