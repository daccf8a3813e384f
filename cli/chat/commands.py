"""What one line typed into ``wsbus chat`` means: pure, synchronous parsing.

:func:`parse` turns a line and the chat's :class:`ChatState` into one action:

- plain text goes to the current target (the channel, or the ``/to`` name), inside the
  current ``/thread`` if one is set;
- ``@name text`` is a direct message to a name the chat knows (from the roster,
  presence or what it has seen); an unknown name gets a hint instead, and ``/to name``
  followed by plain text sends to it anyway;
- ``/command args`` is one of :data:`COMMANDS`; a line starting with ``\\`` or ``//``
  is sent as text (``//tmp`` sends ``/tmp``, ``\\@home`` sends ``@home``);
- anything wrong becomes a :class:`Hint`: one line, with a did-you-mean where one fits.

Nothing here does I/O or imports prompt_toolkit; ``cli/chat/app.py`` carries the actions out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Literal

from wsbus.schema import BROADCAST, NAME_RULE, THREAD_RULE, valid_name, valid_thread

from ..suggest import closest, did_you_mean

__all__ = [
    "COMMANDS",
    "DEFAULT_COUNT",
    "MAX_COUNT",
    "Action",
    "ChatState",
    "Command",
    "Hint",
    "Nothing",
    "Quit",
    "ReadThread",
    "SendText",
    "SetTarget",
    "SetThread",
    "ShowHelp",
    "ShowHistory",
    "SwitchChannel",
    "ToggleWatch",
    "Who",
    "parse",
]

DEFAULT_COUNT = 20
"""Events shown by ``/history`` and ``/read`` without a count."""
MAX_COUNT = 1000
"""The most ``/history N`` and ``/read T N`` ask for (the hub's default max_history)."""

CompletionSource = Literal["names", "threads", "channels"] | None
"""Where a command's argument is completed from (``None``: nowhere)."""


@dataclass(frozen=True)
class Command:
    """One slash command: its name, argument synopsis, help line and what completes it."""

    name: str
    args: str
    help: str
    complete: CompletionSource = None


COMMANDS: tuple[Command, ...] = (
    Command("/to", "NAME", "send plain lines to NAME from now on (direct messages)", "names"),
    Command("/all", "", "send plain lines to the whole channel again"),
    Command(
        "/thread", "[T]", "send plain lines into thread T (alone: leave the thread)", "threads"
    ),
    Command("/post", "T TEXT", "post TEXT to thread T of the channel", "threads"),
    Command(
        "/read", "T [N]", f"show the last N posts of thread T (default {DEFAULT_COUNT})", "threads"
    ),
    Command("/who", "", "who is here: online names and the roster, with model and role"),
    Command("/history", "[N]", f"show the last N events of the channel (default {DEFAULT_COUNT})"),
    Command("/channel", "C", "switch to channel C (resumes where you left it)", "channels"),
    Command("/watch", "", "toggle seeing every event of the channel, agents' direct messages too"),
    Command("/help", "", "list these commands"),
    Command("/quit", "", "leave the chat (Ctrl-D too)"),
)
_BY_NAME = {c.name: c for c in COMMANDS}


@dataclass
class ChatState:
    """What a line is parsed against: who and where the chat is, and whom it knows."""

    me: str
    channel: str
    target: str | None = None
    """``None``: the channel (``*``); else the name plain lines go to"""
    thread: str | None = None
    watch: bool = False
    names: set[str] = field(default_factory=set)
    """names seen in the roster, in presence frames or in events"""
    threads: set[str] = field(default_factory=set)
    channels: set[str] = field(default_factory=set)

    @property
    def to(self) -> str:
        """Where plain lines go: a name, or ``*``."""
        return self.target or BROADCAST


# --------------------------------------------------------------------------- actions


@dataclass(frozen=True)
class SendText:
    """Send ``body`` to ``to`` (a name or ``*``), in ``thread`` if set."""

    to: str
    body: str
    thread: str | None = None


@dataclass(frozen=True)
class SetTarget:
    """Plain lines go to ``to`` from now on (``None``: the channel)."""

    to: str | None
    known: bool = True


@dataclass(frozen=True)
class SetThread:
    """Plain lines go into ``thread`` from now on (``None``: no thread)."""

    thread: str | None


@dataclass(frozen=True)
class ReadThread:
    thread: str
    count: int = DEFAULT_COUNT


@dataclass(frozen=True)
class Who:
    pass


@dataclass(frozen=True)
class ShowHistory:
    count: int = DEFAULT_COUNT


@dataclass(frozen=True)
class SwitchChannel:
    channel: str


@dataclass(frozen=True)
class ToggleWatch:
    pass


@dataclass(frozen=True)
class ShowHelp:
    pass


@dataclass(frozen=True)
class Quit:
    pass


@dataclass(frozen=True)
class Hint:
    """Nothing to do but tell the person something: one line.

    ``keep``: the line carried a message (``@name text``, ``/post T text``...), so it
    comes back in the prompt to be fixed; any other line (an unknown command, a bad
    argument) is cleared, so what is typed next is not appended to it.
    """

    text: str
    keep: bool = False


@dataclass(frozen=True)
class Nothing:
    """An empty line."""


Action = (
    SendText
    | SetTarget
    | SetThread
    | ReadThread
    | Who
    | ShowHistory
    | SwitchChannel
    | ToggleWatch
    | ShowHelp
    | Quit
    | Hint
    | Nothing
)

# --------------------------------------------------------------------------- parsing

_COMMAND_RE = re.compile(r"/(\S*)\s*(.*)", re.S)
_MENTION_RE = re.compile(r"@(\S*)\s*(.*)", re.S)


def parse(line: str, state: ChatState) -> Action:
    """What ``line`` asks for, given ``state``; never raises."""
    text = line.strip()
    if not text:
        return Nothing()
    if text.startswith("\\"):
        return _plain(text[1:], state)
    if text.startswith("//"):
        return _plain(text[1:], state)
    if text.startswith("/"):
        return _command(text, state)
    if text.startswith("@"):
        return _keeping(_mention(text, state))
    return _plain(text, state)


def _keeping(action: Action) -> Action:
    """``action``; a hint keeps the line (it carried a message to fix, not retype)."""
    return replace(action, keep=True) if isinstance(action, Hint) else action


def _plain(body: str, state: ChatState) -> Action:
    if not body.strip():
        return Nothing()
    return SendText(state.to, body, state.thread)


def _mention(text: str, state: ChatState) -> Action:
    m = _MENTION_RE.fullmatch(text)
    assert m is not None  # the pattern matches anything starting with "@"
    name, body = m.group(1), m.group(2).strip()
    if not name:
        return Hint("@ needs a name: @NAME TEXT (start the line with \\ to send it as it is)")
    if not valid_name(name):
        return Hint(f"invalid name {name!r}: allowed {NAME_RULE}")
    if name not in state.names and name != state.me:
        return Hint(_unknown_name(name, state))
    if not body:
        return Hint(
            f"nothing to send to {name}: @{name} TEXT (or /to {name} to keep talking to it)"
        )
    return SendText(name, body, state.thread)


def _unknown_name(name: str, state: ChatState) -> str:
    guess = did_you_mean(name, state.names)
    return f"unknown name {name!r}{guess} (/who lists who is here; use /to {name} to send anyway)"


def _command(text: str, state: ChatState) -> Action:
    m = _COMMAND_RE.fullmatch(text)
    assert m is not None
    word, rest = "/" + m.group(1).lower(), m.group(2).strip()
    if word == "/":
        return Hint("/help lists the commands")
    if word not in _BY_NAME:
        close = closest(word, _BY_NAME)
        if close:
            return Hint(f"unknown command {word} — did you mean {close}? (/help lists them)")
        return Hint(f"unknown command {word} (/help lists them; start with // to send it as text)")
    args = rest.split()
    match word:
        case "/to":
            return _to(args, state)
        case "/all":
            return _no_args(word, args) or SetTarget(None)
        case "/thread":
            return _thread(args)
        case "/post":
            return _keeping(_post(rest, state))
        case "/read":
            return _read(args)
        case "/who":
            return _no_args(word, args) or Who()
        case "/history":
            return _history(args)
        case "/channel":
            return _channel(args, state)
        case "/watch":
            return _no_args(word, args) or ToggleWatch()
        case "/help":
            return ShowHelp()
        case _:  # "/quit"
            return _no_args(word, args) or Quit()


def _usage(word: str) -> str:
    cmd = _BY_NAME[word]
    return f"{cmd.name} {cmd.args}".rstrip()


def _no_args(word: str, args: list[str]) -> Hint | None:
    return Hint(f"{word} takes no arguments") if args else None


def _to(args: list[str], state: ChatState) -> Action:
    if not args:
        return Hint("/to needs a name: /to NAME (/all to talk to the whole channel again)")
    if len(args) > 1:
        return Hint(
            f"/to takes one name (to send one message: @{args[0]} {' '.join(args[1:])})",
            keep=True,
        )
    name = args[0].lstrip("@")
    if name == BROADCAST:
        return SetTarget(None)
    if not valid_name(name):
        return Hint(f"invalid name {name!r}: allowed {NAME_RULE}")
    return SetTarget(name, known=name in state.names or name == state.me)


def _thread_hint(thread: str) -> Hint:
    return Hint(f"invalid thread {thread!r}: allowed {THREAD_RULE}")


def _thread(args: list[str]) -> Action:
    if not args:
        return SetThread(None)
    if len(args) > 1:
        return Hint(
            f"/thread takes one thread name (to post once: /post {args[0]} {' '.join(args[1:])})",
            keep=True,
        )
    thread = args[0].removeprefix("#")  # threads show as #name
    return SetThread(thread) if valid_thread(thread) else _thread_hint(thread)


def _post(rest: str, state: ChatState) -> Action:
    parts = rest.split(None, 1)
    if len(parts) < 2:
        return Hint(f"/post needs a thread and a text: {_usage('/post')}")
    thread, body = parts[0].removeprefix("#"), parts[1].strip()
    if not valid_thread(thread):
        return _thread_hint(thread)
    return SendText(BROADCAST, body, thread)


def _count(word: str, value: str) -> int | Hint:
    try:
        n = int(value)
    except ValueError:
        n = 0
    if not 1 <= n <= MAX_COUNT:
        return Hint(f"{word}: N must be a number from 1 to {MAX_COUNT}, not {value!r}")
    return n


def _read(args: list[str]) -> Action:
    if not args or len(args) > 2:
        return Hint(f"/read needs a thread: {_usage('/read')}")
    thread = args[0].removeprefix("#")
    if not valid_thread(thread):
        return _thread_hint(thread)
    if len(args) == 1:
        return ReadThread(thread)
    n = _count("/read", args[1])
    return n if isinstance(n, Hint) else ReadThread(thread, n)


def _history(args: list[str]) -> Action:
    if not args:
        return ShowHistory()
    if len(args) > 1:
        return Hint(f"/history takes at most one number: {_usage('/history')}")
    n = _count("/history", args[0])
    return n if isinstance(n, Hint) else ShowHistory(n)


def _channel(args: list[str], state: ChatState) -> Action:
    if len(args) != 1:
        return Hint(f"/channel needs one channel name: {_usage('/channel')}")
    channel = args[0].lstrip("#")
    if not valid_name(channel):
        return Hint(f"invalid channel {channel!r}: allowed {NAME_RULE}")
    if channel == state.channel:
        return Hint(f"already on #{channel}")
    return SwitchChannel(channel)
