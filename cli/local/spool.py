"""The disk spool of events that could not reach the hub.

A sender that cannot reach the hub (a sandboxed CLI, a hub that is down) writes
the event here, one JSON file per event; the bridge or ``wsbus relay`` forwards
the files in order once the hub answers and removes each one the hub accepted.

Files are named ``<time_ns, 20 digits>-<ref>.json`` so name order is spool
order. Each is written to a hidden temporary file and then linked into place, so
readers never see half a record and concurrent writers never overwrite each
other. No network code lives here.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import msgspec

from .paths import private_dir

__all__ = ["Spool", "SpoolRecord"]

#: the name it had before cli/local/ (the bridge prints it before each warning)
log = logging.getLogger("wsbus.cli.spool")

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class SpoolRecord(msgspec.Struct, kw_only=True):
    """One event waiting for the hub.

    ``delivered`` maps a name to the status of the direct local delivery done
    when the event was spooled (so the relay does not deliver it twice).
    """

    ref: str
    sender: str
    to: str
    body: str
    channel: str = "default"
    thread: str | None = None
    kind: str | None = None
    meta: dict[str, Any] | None = None
    spooled_at: float
    delivered: dict[str, str] = {}


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(SpoolRecord).decode

_clock_lock = threading.Lock()
_last_ns = 0


def _next_ns() -> int:
    """A wall-clock nanosecond stamp, strictly increasing within this process."""
    global _last_ns
    with _clock_lock:
        _last_ns = max(time.time_ns(), _last_ns + 1)
        return _last_ns


def _safe_ref(ref: str) -> str:
    return _UNSAFE.sub("_", ref).strip("._")[:64] or "event"


class Spool:
    """A directory of spooled events (created 0700, files 0600)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def put(self, rec: SpoolRecord) -> Path:
        """Write ``rec`` as the newest spooled event and return its file."""
        private_dir(self.directory)
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".put-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(_encode(rec))
                fh.flush()
                os.fsync(fh.fileno())
            return self._publish(Path(tmp), _safe_ref(rec.ref))
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def _publish(self, tmp: Path, ref: str) -> Path:
        while True:
            path = self.directory / f"{_next_ns():020d}-{ref}.json"
            try:
                os.link(tmp, path)  # never replaces a file another writer published
            except FileExistsError:
                continue
            except OSError:  # a filesystem without hard links
                if path.exists():
                    continue
                os.replace(tmp, path)
            return path

    def _files(self) -> list[Path]:
        try:
            return sorted(p for p in self.directory.glob("*.json") if not p.name.startswith("."))
        except OSError:
            return []

    def items(self) -> list[tuple[Path, SpoolRecord]]:
        """Every readable record, oldest first; unreadable files move to ``bad/``."""
        out: list[tuple[Path, SpoolRecord]] = []
        for path in self._files():
            try:
                out.append((path, _decode(path.read_bytes())))
            except FileNotFoundError:
                continue  # taken by a concurrent relay
            except (OSError, msgspec.DecodeError, msgspec.ValidationError) as err:
                self.set_aside(path, err)
        return out

    def set_aside(self, path: Path, err: Exception) -> None:
        """Move a record that cannot be read or was refused to ``bad/`` (kept, not sent)."""
        bad = self.directory / "bad"
        log.warning("spool: cannot read %s (%s); moving it to %s", path, err, bad)
        try:
            private_dir(bad)
            os.replace(path, bad / path.name)
        except OSError as move_err:
            log.warning("spool: cannot move %s aside: %s", path, move_err)

    def remove(self, path: Path) -> None:
        """Forget a record the hub accepted (a file already gone is fine)."""
        with contextlib.suppress(FileNotFoundError):
            path.unlink()

    def __len__(self) -> int:
        return len(self._files())
