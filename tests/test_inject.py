"""Delivery into tmux panes: the text functions, and the Injector against real tmux.

Every tmux test runs its own tmux server (``tmux -L <unique socket> -f /dev/null``) with
``tests/fake_tui.py`` — a prompt_toolkit prompt that records each submitted line — in a
session, and kills only that server at the end.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from wsbus.cli.bridge.inject import (
    Injector,
    Outcome,
    cell_width,
    is_one_line,
    message_line,
    sanitize,
    stamp_hm,
)
from wsbus.cli.bridge.tmux import Tmux, TmuxError, pane_target, session_target

from .helpers import wait_for
from .tmuxkit import TmuxServer, Tui

TMUX = shutil.which("tmux")
MARKER = "«agent-msg»"
TS = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC


# -- pure text functions ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("plain text", "plain text"),
        ("stop\x03now", "stopnow"),  # Ctrl-C byte
        ("a\x00b\x07c\x08d\x1ae", "abcde"),
        ("clear\x1b[2Jscreen", "clearscreen"),  # CSI, parameters removed with it
        ("\x1b[1;31mred\x1b[0m", "red"),
        ("t\x1b]0;title\x07x", "tx"),  # OSC ended by BEL
        ("t\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\", "tlink"),  # OSC ended by ST
        ("a\x1bPq#0;2\x1b\\b", "ab"),  # DCS
        ("a\x1b7b\x1b(Bc", "abc"),  # two-byte escapes
        ("a\x9b2Jb", "ab"),  # 8-bit CSI
        ("lone\x1b", "lone"),
        ("del\x7fete", "delete"),  # DEL would erase the sender tag
        ("c1\x80\x90\x9fx", "c1x"),
        ("x\u202eevil\u202c\u2066i\u2069\u200e\u200f\u061cy", "xeviliy"),
        ("see\U000e0041\U000e0042\U000e007fit", "seeit"),  # invisible tag characters
        ("tab\there", "tab here"),
        ("two\nlines", "two lines"),
        ("crlf\r\nend", "crlf  end"),
        ("sep\u2028par\u2029nel\x85vt\x0bff\x0c", "sep par nel vt ff "),
        ("«quotes» café 😀 日本 ∑", "«quotes» café 😀 日本 ∑"),  # normal Unicode stays
        ("lone \ud800 surrogate", "lone  surrogate"),
    ],
)
def test_sanitize(raw: str, clean: str) -> None:
    assert sanitize(raw) == clean


def test_sanitize_leaves_nothing_dangerous() -> None:
    everything = "".join(chr(c) for c in range(0x00, 0xA0)) + "\u202a\u202b\u202d\u2067\u2068"
    out = sanitize(everything)
    assert all(0x20 <= ord(c) < 0x7F or ord(c) >= 0xA0 for c in out)
    assert "\x1b" not in out and "\x7f" not in out
    assert is_one_line(out, 10_000)
    assert sanitize(out) == out  # idempotent


def test_is_one_line() -> None:
    assert is_one_line("hello world", 11)
    assert not is_one_line("hello world", 10)
    assert is_one_line("", 0)
    for brk in ("\n", "\r", "\u2028", "\u2029", "\x0b", "\x0c", "\x85"):
        assert not is_one_line(f"a{brk}b", 100), repr(brk)
    assert is_one_line("tab\tis fine", 100)


def test_message_line_format() -> None:
    assert stamp_hm(TS) == "22:13Z"
    assert stamp_hm(0) == "00:00Z"
    assert message_line(MARKER, "claude", TS, "build the parser") == (
        "«agent-msg» from=claude 22:13Z | build the parser"
    )
    assert message_line(MARKER, "codex", TS, "a\nb\x1b[2J\x03c") == (
        "«agent-msg» from=codex 22:13Z | a bc"
    )


def test_cell_width() -> None:
    assert [cell_width(c) for c in "a«é😀日\u0301\u200b"] == [1, 1, 1, 2, 2, 0, 0]


def test_target_syntax() -> None:
    assert session_target("claude") == "=claude"
    assert pane_target("claude") == "=claude:"
    for explicit in ("work:2", "work:2.1", "%5", "$1", "@3"):
        assert pane_target(explicit) == explicit


def test_tmux_command_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENT_COMMS_TMUX", "/opt/tmux -L 'my sock'")
    assert Tmux().command == ["/opt/tmux", "-L", "my sock"]
    monkeypatch.delenv("AGENT_COMMS_TMUX")
    assert Tmux().command == [TMUX or "tmux"]


def test_missing_binary_is_one_sentence() -> None:
    t = Tmux(["/nonexistent/tmux"])
    with pytest.raises(TmuxError, match="not found"):
        t.run("list-sessions")
    assert not t.has_session("x")
    assert t.list_sessions() == []
    with pytest.raises(TmuxError):
        t.send_literal("x", "hi")


class _StubTmux(Tmux):
    """tmux that accepts typing but cannot be read: the one failure real tmux can't stage."""

    def __init__(self) -> None:
        super().__init__(["tmux"])
        self.typed: list[str] = []
        self.enters = 0

    def has_session(self, session: str) -> bool:
        return True

    def send_literal(self, target: str, text: str) -> None:
        self.typed.append(text)

    def send_enter(self, target: str) -> None:
        self.enters += 1

    def cursor(self, target: str) -> tuple[int, int, int]:
        raise TmuxError("tmux display-message failed: no pane")


def test_unreadable_pane_is_not_assumed_submitted() -> None:
    stub = _StubTmux()
    out = Injector(stub, sleep=lambda _: None).deliver("a", "hello", 0.1)
    assert out == Outcome("failed", "could not read the pane to verify", 1)
    assert stub.typed == ["hello"] and stub.enters == 1


def test_empty_message_is_not_typed() -> None:
    stub = _StubTmux()
    out = Injector(stub, sleep=lambda _: None).deliver("a", "\x1b[2J\x03 ", 0.1)
    assert out.status == "failed" and stub.typed == [] and stub.enters == 0


# -- real tmux -------------------------------------------------------------------------

needs_tmux = pytest.mark.skipif(TMUX is None, reason="tmux is not installed")


@pytest.fixture
def tmux(monkeypatch: pytest.MonkeyPatch) -> Iterator[Tmux]:
    """A private tmux server (own socket, no user config); only it is killed afterwards."""
    monkeypatch.delenv("TMUX", raising=False)
    monkeypatch.delenv("TMUX_PANE", raising=False)
    server = TmuxServer()
    yield server.tmux
    server.kill()


@needs_tmux
def test_session_names_match_exactly(tmux: Tmux, tmp_path: Path) -> None:
    assert tmux.list_sessions() == [] and not tmux.has_session("claude")  # no server
    tui = Tui(tmux, tmp_path, "claude-2")
    assert tmux.list_sessions() == ["claude-2"]
    assert tmux.has_session("claude-2")
    assert not tmux.has_session("claude")  # tmux alone would prefix-match
    with pytest.raises(TmuxError):
        tmux.send_literal("claude", "x")
    with pytest.raises(TmuxError):
        tmux.cursor("claude")
    assert tmux.cursor("claude-2")[2] == 200
    out = Injector(tmux).deliver("claude", "wrong pane", 0.05)
    assert out.status == "session_down" and out.enters == 0
    assert "wrong pane" not in tui.screen()
    assert tmux.current_session() is None  # $TMUX unset


@needs_tmux
def test_no_session_is_session_down(tmux: Tmux) -> None:
    out = Injector(tmux).deliver("nobody", "hello", 0.05)
    assert out.status == "session_down"


@needs_tmux
def test_short_message_is_submitted_once(tmux: Tmux, tmp_path: Path) -> None:
    tui = Tui(tmux, tmp_path, "agent")
    out = Injector(tmux).deliver("agent", "build the parser", 0.1)
    assert out == Outcome("submitted", None, 1)
    wait_for(tui.submitted)
    assert tui.submitted() == ["build the parser"]


@needs_tmux
def test_text_tmux_would_interpret_arrives_literally(tmux: Tmux, tmp_path: Path) -> None:
    # A trailing ";" ends a tmux command; "C-c", "Enter", "-l" are key names and flags.
    tui = Tui(tmux, tmp_path, "agent")
    inj = Injector(tmux)
    texts = ["-l C-c Enter #{pane_id} $HOME", "ends with a semicolon;", "héllo «wörld» 😀 日本"]
    for text in texts:
        assert inj.deliver("agent", text, 0.1).status == "submitted"
    wait_for(lambda: len(tui.submitted()) == 3)
    assert tui.submitted() == texts


@needs_tmux
def test_control_characters_never_reach_the_pane(tmux: Tmux, tmp_path: Path) -> None:
    tui = Tui(tmux, tmp_path, "agent")
    body = "stop\x03 now\x1b[2J clear\x1b]0;title\x07 rm\x7f \u202eevil\u202c tab\there\nnext"
    line = message_line(MARKER, "claude", TS, body)
    assert line == "«agent-msg» from=claude 22:13Z | stop now clear rm evil tab here next"
    out = Injector(tmux).deliver("agent", line, 0.1)
    assert out.status == "submitted"
    wait_for(tui.submitted)
    assert tui.submitted() == [line]  # no "<interrupt>", one line


@needs_tmux
def test_ignored_fast_enter_is_pressed_again(tmux: Tmux, tmp_path: Path) -> None:
    tui = Tui(tmux, tmp_path, "agent", "--ignore-fast-enter-ms", "400")
    inj = Injector(tmux, verify_delay=0.6)
    out = inj.deliver("agent", "fast enter is ignored", 0.05)
    assert out.status == "submitted" and out.enters >= 2
    wait_for(tui.submitted)
    assert tui.submitted() == ["fast enter is ignored"]


@needs_tmux
def test_never_submitted_is_unsubmitted_and_typed_once(tmux: Tmux, tmp_path: Path) -> None:
    tui = Tui(tmux, tmp_path, "agent", "--ignore-fast-enter-ms", "100000")
    text = "this one stays in the composer"
    out = Injector(tmux, verify_delay=0.2, retries=2).deliver("agent", text, 0.05)
    assert out.status == "unsubmitted" and out.enters == 3
    assert out.reason is not None and "enter_delay" in out.reason
    assert tui.submitted() == []
    assert tui.screen().count(text) == 1  # never re-typed


@needs_tmux
def test_paste_is_submitted_once(tmux: Tmux, tmp_path: Path) -> None:
    tui = Tui(tmux, tmp_path, "agent")
    text = message_line(MARKER, "codex", TS, "pasted «in one piece» 😀")
    out = Injector(tmux).deliver("agent", text, 0.1, paste=True)
    assert out.status == "submitted"
    wait_for(tui.submitted)
    assert tui.submitted() == [text]
    assert tmux.run("list-buffers").stdout == ""  # the paste buffer was deleted


@needs_tmux
def test_long_wrapped_message_is_submitted_once(tmux: Tmux, tmp_path: Path) -> None:
    tui = Tui(tmux, tmp_path, "agent", width=80)
    text = " ".join(f"word{i:03d}" for i in range(38))  # 303 chars: wraps over 4 rows
    assert len(text) > 300
    inj = Injector(tmux)
    tmux.send_literal("agent", text)
    assert wait_for(lambda: inj.in_composer("agent", text))  # seen across wrapped rows
    tmux.send_enter("agent")
    wait_for(tui.submitted)
    assert tui.submitted() == [text]
    # the echo above the prompt does not count (once the TUI has redrawn its prompt,
    # which may come a moment after it recorded the line)
    assert wait_for(lambda: not inj.in_composer("agent", text))

    second = text.replace("word", "next")
    out = inj.deliver("agent", second, 0.1)
    assert out == Outcome("submitted", None, 1)
    wait_for(lambda: len(tui.submitted()) == 2)
    assert tui.submitted() == [text, second]


@needs_tmux
def test_deliver_async(tmux: Tmux, tmp_path: Path) -> None:
    import asyncio

    tui = Tui(tmux, tmp_path, "agent")
    started = time.monotonic()
    out = asyncio.run(Injector(tmux).deliver_async("agent", "from the loop", 0.05))
    assert out.status == "submitted" and time.monotonic() - started < 5
    wait_for(tui.submitted)
    assert tui.submitted() == ["from the loop"]


def test_for_terminal_keeps_lines_drops_escapes() -> None:
    from wsbus.cli.bridge.inject import for_terminal

    assert for_terminal("a\x1b]52;c;ZXZpbA==\x07b\nc\td\x1b[2J\r\x07e") == "ab\nc\tde"
    assert for_terminal("«ok» 😀\n") == "«ok» 😀\n"
