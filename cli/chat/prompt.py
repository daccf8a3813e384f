"""The prompt_toolkit parts of ``wsbus chat``: completion, keys and input history.

- :class:`ChatCompleter`: ``/commands`` (with their help as meta), their arguments
  (names, threads, channels) through a ``NestedCompleter``, and ``@names`` at the start
  of a line; the words come live from the chat's :class:`ChatState`.
- :func:`chat_key_bindings`: Alt-Enter / Esc Enter insert a new line; Enter sends.
- :func:`input_history`: what was typed, kept across runs in a file only you can read.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

from prompt_toolkit.completion import (
    CompleteEvent,
    Completer,
    Completion,
    NestedCompleter,
    WordCompleter,
)
from prompt_toolkit.document import Document
from prompt_toolkit.history import FileHistory, History, InMemoryHistory
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent

from .commands import COMMANDS, ChatState

__all__ = ["ChatCompleter", "chat_key_bindings", "continuation", "input_history"]


class ChatCompleter(Completer):
    """Tab completion: ``/commands``, their arguments (names, threads, channels) through a
    ``NestedCompleter``, and ``@names`` at the start of a line."""

    def __init__(self, state: ChatState) -> None:
        self.state = state
        sources = {
            "names": self.names,
            "threads": lambda: sorted(state.threads),
            "channels": lambda: sorted(state.channels),
        }
        # the first word is matched whole ("/t" -> /to, /thread): NestedCompleter's own
        # first-word matching splits "/t" into "/" and "t" and finds nothing
        self.commands = WordCompleter(
            [c.name for c in COMMANDS], WORD=True, meta_dict={c.name: c.help for c in COMMANDS}
        )
        self.arguments = NestedCompleter(
            {
                c.name: WordCompleter(sources[c.complete], WORD=True) if c.complete else None
                for c in COMMANDS
            }
        )

    def names(self) -> list[str]:
        """Names to complete: everyone the chat knows but you."""
        return sorted(self.state.names - {self.state.me})

    def get_completions(
        self, document: Document, complete_event: CompleteEvent
    ) -> Iterable[Completion]:
        text = document.text_before_cursor
        if text.startswith("/"):
            if re.fullmatch(r"/\S*", text):
                yield from self.commands.get_completions(document, complete_event)
            else:
                yield from self.arguments.get_completions(document, complete_event)
            return
        m = re.fullmatch(r"@(\S*)", text)
        if m is None:
            return
        typed = m.group(1).lower()
        for name in self.names():
            if name.lower().startswith(typed):
                yield Completion("@" + name, start_position=-len(text))


def chat_key_bindings() -> KeyBindings:
    """Alt-Enter / Esc Enter insert a new line (Enter sends)."""
    kb = KeyBindings()

    @kb.add("escape", "enter")
    def _newline(event: KeyPressEvent) -> None:
        event.current_buffer.insert_text("\n")

    return kb


def input_history(path: Path) -> tuple[History, str | None]:
    """A persistent input history readable only by you, or an in-memory one and why."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
        os.chmod(path, 0o600)
    except OSError as err:
        return InMemoryHistory(), f"input history not kept ({path}: {err.strerror or err})"
    return FileHistory(str(path)), None


def continuation(width: int, line_number: int, wrap_count: int) -> str:
    """Further lines of a message start under the first (no prompt in front)."""
    return " " * width
