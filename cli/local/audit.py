"""The private audit log (``~/.config/agent-comms/comms.log``), in the original's format.

One line per delivery attempt, tab-separated::

    2026-05-28T15:49:03Z	claude→grok	DOORBELL:hermes/pmxt-execution	deploy it

The file is created 0600 (and narrowed to 0600 if it is wider). Writing it never
raises: an audit line is not worth failing a delivery for.
"""

from __future__ import annotations

import contextlib
import os
from datetime import UTC, datetime
from pathlib import Path

from .paths import private_dir

__all__ = ["audit", "exchange_count", "tail"]

# Every character str.splitlines() breaks on: a message must stay on its line.
_LINE_BREAKS = str.maketrans(dict.fromkeys("\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029", " "))
_TAIL_CHUNK = 64 * 1024


def _stamp(ts: float | None = None) -> str:
    when = datetime.now(UTC) if ts is None else datetime.fromtimestamp(ts, UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def audit(
    log_path: Path, sender: str, target: str, status: str, message: str, *, ts: float | None = None
) -> None:
    """Append one line ``TIME<TAB>sender→target<TAB>STATUS<TAB>message`` to the log."""
    fields = f"{sender}→{target}\t{status}\t{message}".translate(_LINE_BREAKS)
    line = f"{_stamp(ts)}\t{fields}\n"
    try:
        private_dir(log_path.parent)
        fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_mode & 0o077:
                os.fchmod(fd, 0o600)
            os.write(fd, line.encode("utf-8", "replace"))
        finally:
            os.close(fd)
    except (OSError, ValueError):
        pass


def tail(log_path: Path, n: int) -> list[str]:
    """The last ``n`` lines of the log (``n <= 0``: all, as the original's ``log -n 0``)."""
    try:
        with log_path.open("rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            start = size
            data = b""
            while start > 0 and (n <= 0 or data.count(b"\n") <= n):
                step = min(_TAIL_CHUNK, start)
                start -= step
                fh.seek(start)
                data = fh.read(step) + data
    except OSError:
        return []
    lines = data.decode("utf-8", "replace").splitlines()
    if start > 0:
        lines = lines[1:]  # the first line read may be partial
    return lines if n <= 0 else lines[-n:]


def exchange_count(
    log_path: Path, a: str, b: str, window_sec: float, *, now: float | None = None
) -> int:
    """How many doorbells went between ``a`` and ``b`` (either way) in the last window.

    The original's loop-guard signal: it reads the last 400 log lines and counts
    ``DOORBELL`` lines for the pair.
    """
    cutoff = (datetime.now(UTC).timestamp() if now is None else now) - window_sec
    pair, count = {a, b}, 0
    for line in tail(log_path, 400):
        parts = line.split("\t")
        if len(parts) < 3 or not parts[2].startswith("DOORBELL") or "→" not in parts[1]:
            continue
        frm, to = parts[1].split("→", 1)
        if {frm, to} != pair:
            continue
        with contextlib.suppress(ValueError):
            if datetime.fromisoformat(parts[0].replace("Z", "+00:00")).timestamp() >= cutoff:
                count += 1
    return count
