"""Typing one message into one agent's tmux pane, and checking that it was submitted.

The text functions are pure: :func:`sanitize` makes a body safe to type (no control
characters, no escape sequences, no bidi overrides, one line) and :func:`message_line`
builds the original tool's line, ``«agent-msg» from=claude 14:23Z | build the parser``.

:class:`Injector` delivers a line: it types it (``send-keys -l``, or a bracketed paste),
waits the agent's ``enter_delay``, presses Enter, then looks at the text left of the
pane's cursor. If the end of the message still sits there, the TUI did not submit it (an
Enter that came too soon after the text is ignored by some TUIs), so it presses Enter
again, a bounded number of times. It never types the text twice. Only the cursor
position is looked at, never the whole screen: TUIs echo what was submitted above the
new prompt.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
import unicodedata
from collections.abc import Callable
from typing import Literal

import msgspec

from .tmux import Tmux, TmuxError

__all__ = [
    "DEFAULT_RETRIES",
    "DEFAULT_VERIFY_DELAY",
    "TAIL_CHARS",
    "Injector",
    "Outcome",
    "Status",
    "cell_width",
    "for_terminal",
    "is_one_line",
    "message_line",
    "sanitize",
    "stamp_hm",
]

DEFAULT_VERIFY_DELAY = 0.3
"""Seconds between an Enter and the look at the pane that checks it submitted."""
DEFAULT_RETRIES = 3
"""Extra Enter presses after the first when the text is still in the composer."""
TAIL_CHARS = 16
"""How many characters from the end of a message identify it left of the cursor."""

# Whole escape sequences first, so their parameters do not survive as text.
_STRING_SEQ = r"\x1b[\]P_^X][^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)"  # OSC, DCS, APC, PM, SOS
_STRING_SEQ_8BIT = r"[\x90\x98\x9d\x9e\x9f][^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)"
_CSI = r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]"
_ESC_OTHER = r"\x1b[ -/]*[0-~]"  # two-byte escapes (with intermediates): ESC 7, ESC ( B
_ESCAPES = re.compile("|".join((_STRING_SEQ, _STRING_SEQ_8BIT, _CSI, _ESC_OTHER)))

_LINE_BREAKS = "\n\r\x0b\x0c\x85\u2028\u2029"
_BIDI = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
# Whitespace and line breaks become one space each; every other control, ESC, DEL, C1,
# bidi control and lone surrogate (which cannot be encoded to send) is removed.
_TO_SPACE = {ord(c): " " for c in "\t" + _LINE_BREAKS}
# Unicode tag characters (U+E0000-E007F) are invisible and can smuggle text an
# agent reads but a person does not see
_TAGS = "".join(chr(c) for c in range(0xE0000, 0xE0080))
_DROP = "".join(chr(c) for c in (*range(0x20), *range(0x7F, 0xA0))) + _BIDI + _TAGS
_TABLE: dict[int, str | None] = {ord(c): None for c in _DROP} | _TO_SPACE
_SURROGATES = re.compile("[\ud800-\udfff]")

# Left of the cursor, whitespace and box-drawing characters are ignored when looking
# for the text: capture trims trailing spaces, wrapping may leave padding at row ends,
# and some composers are drawn inside a box whose borders split wrapped rows.
_IGNORED_ON_SCREEN = re.compile(r"[\s\u2500-\u257f]+")


_KEEP_LINES = {ord(c): None for c in _DROP if c not in "\n\t"}


def for_terminal(text: str) -> str:
    """Text from the bus made safe to print on a person's terminal: escape sequences
    (OSC 52 clipboard writes, title changes, cursor moves) and control characters
    removed, line breaks and tabs kept."""
    return _SURROGATES.sub("", _ESCAPES.sub("", text)).translate(_KEEP_LINES)


def sanitize(text: str) -> str:
    """The text made safe to type into a pane, on one line.

    Escape sequences (CSI, OSC and other string sequences, two-byte ``ESC x``, 8-bit CSI)
    are removed whole; then tab and line breaks become a space each, and every other C0
    control, ESC, DEL, C1 control and bidi control is removed. Normal Unicode is kept.
    """
    text = _ESCAPES.sub("", text)
    text = _SURROGATES.sub("", text)
    return text.translate(_TABLE)


def is_one_line(body: str, max_len: int) -> bool:
    """Whether ``body`` can go into a pane as it is: no line break, at most ``max_len``."""
    return len(body) <= max_len and not any(c in _LINE_BREAKS for c in body)


def stamp_hm(ts: float) -> str:
    """``HH:MMZ`` in UTC."""
    return time.strftime("%H:%MZ", time.gmtime(ts))


def message_line(marker: str, sender: str, ts: float, body: str) -> str:
    """The original tool's line: ``«agent-msg» from=claude 14:23Z | build the parser``."""
    return f"{sanitize(marker)} from={sanitize(sender)} {stamp_hm(ts)} | {sanitize(body)}"


def cell_width(ch: str) -> int:
    """How many terminal cells one character takes (0, 1 or 2), as tmux counts them."""
    if unicodedata.combining(ch) or unicodedata.category(ch) in ("Mn", "Me", "Cf"):
        return 0
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


def _left_of(row: str, cells: int) -> str:
    """The characters of ``row`` that occupy its first ``cells`` cells."""
    used = 0
    for i, ch in enumerate(row):
        used += cell_width(ch)
        if used > cells:
            return row[:i]
    return row


def _squash(text: str) -> str:
    return _IGNORED_ON_SCREEN.sub("", text)


Status = Literal["submitted", "unsubmitted", "failed", "session_down"]


class Outcome(msgspec.Struct, frozen=True):
    """What happened to one delivery; ``enters`` counts the Enter presses."""

    status: Status
    reason: str | None = None
    enters: int = 0


class Injector:
    """Deliver one line at a time into tmux panes and verify it was submitted."""

    def __init__(
        self,
        tmux: Tmux,
        *,
        verify_delay: float = DEFAULT_VERIFY_DELAY,
        retries: int = DEFAULT_RETRIES,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.tmux = tmux
        self.verify_delay = verify_delay
        self.retries = max(0, retries)
        self.sleep = sleep

    def deliver(
        self, session: str, text: str, enter_delay: float, *, paste: bool = False
    ) -> Outcome:
        """Type ``text`` into ``session``'s active pane, press Enter, check it submitted."""
        text = sanitize(text)
        if not text.strip():
            return Outcome("failed", "the message is empty once control characters are removed")
        if not self.tmux.has_session(session):
            return Outcome("session_down", f"no tmux session {session}")
        try:
            if paste:
                self.tmux.paste(session, text)
            else:
                self.tmux.send_literal(session, text)
        except TmuxError as e:
            return Outcome("failed", str(e))
        self.sleep(max(0.0, enter_delay))
        enters = 0
        while True:
            try:
                self.tmux.send_enter(session)
            except TmuxError as e:
                return Outcome("failed", str(e), enters)
            enters += 1
            self.sleep(self.verify_delay)
            try:
                waiting = self.in_composer(session, text)
            except TmuxError:
                return Outcome("failed", "could not read the pane to verify", enters)
            if not waiting:
                return Outcome("submitted", None, enters)
            if enters > self.retries:
                return Outcome(
                    "unsubmitted",
                    f"text still in the composer after {enters} Enter presses; "
                    "raise this agent's enter_delay",
                    enters,
                )

    async def deliver_async(
        self, session: str, text: str, enter_delay: float, *, paste: bool = False
    ) -> Outcome:
        """:meth:`deliver` in a worker thread, for the asyncio bridge."""
        return await asyncio.to_thread(self.deliver, session, text, enter_delay, paste=paste)

    def in_composer(self, session: str, text: str) -> bool:
        """Whether the end of ``text`` sits immediately left of the pane's cursor.

        Reads the cursor row and the rows above it that the text could occupy when
        wrapped; the earlier rows are taken whole, the cursor row up to the cursor.
        """
        x, y, width = self.tmux.cursor(session)
        needle = _squash(text)[-TAIL_CHARS:]
        if not needle:
            return False
        cells = sum(cell_width(c) for c in text)
        first = max(0, y - (math.ceil(cells / max(1, width)) + 1))
        rows = self.tmux.capture_rows(session, first, y)
        if len(rows) != y - first + 1:
            raise TmuxError(f"tmux returned {len(rows)} rows for {y - first + 1}")
        screen = "".join(rows[:-1]) + _left_of(rows[-1], x)
        return _squash(screen).endswith(needle)
