"""A fake agent TUI for the tmux tests: a prompt_toolkit prompt that records what it gets.

Usage: ``python tests/fake_tui.py OUTFILE [--ignore-fast-enter-ms N] [--prompt "> "]``

Every submitted line is appended to OUTFILE as one JSON string per line, then echoed on
the screen as ``got: <line>`` (real TUIs echo what was submitted). ``"<ready>"`` is
appended once the first prompt is drawn and reading keys, ``"<interrupt>"`` for Ctrl-C
and ``"<eof>"`` for Ctrl-D; neither ends the program, so a stray control key is visible
in OUTFILE instead of killing the pane. An empty Enter submits nothing, as in real agent
TUIs.

With ``--ignore-fast-enter-ms N``, an Enter that comes less than N ms after the text last
changed (typed keys or a bracketed paste) is ignored, like TUIs that take a fast Enter
for part of a paste.
"""

from __future__ import annotations

import argparse
import json
import time

from prompt_toolkit import PromptSession
from prompt_toolkit.buffer import Buffer
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from prompt_toolkit.keys import Keys

__all__ = ["main"]


def record(path: str, line: str) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(line) + "\n")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("outfile")
    p.add_argument("--ignore-fast-enter-ms", type=float, default=0.0)
    p.add_argument("--prompt", default="> ")
    args = p.parse_args(argv)

    last_change = [time.monotonic()]

    def changed(_: Buffer) -> None:
        last_change[0] = time.monotonic()

    bindings = KeyBindings()
    if args.ignore_fast_enter_ms > 0:

        @bindings.add(Keys.Enter, eager=True)
        def _enter(event: KeyPressEvent) -> None:
            if (time.monotonic() - last_change[0]) * 1000 < args.ignore_fast_enter_ms:
                return
            event.current_buffer.validate_and_handle()

    session: PromptSession[str] = PromptSession(key_bindings=bindings)
    session.default_buffer.on_text_changed += changed

    def ready(_: object) -> None:
        session.app.after_render -= ready
        record(args.outfile, "<ready>")

    session.app.after_render += ready
    while True:
        try:
            line = session.prompt(args.prompt)
        except KeyboardInterrupt:
            record(args.outfile, "<interrupt>")
            continue
        except EOFError:
            record(args.outfile, "<eof>")
            continue
        if not line:
            continue
        record(args.outfile, line)
        print(f"got: {line}", flush=True)


if __name__ == "__main__":
    main()
