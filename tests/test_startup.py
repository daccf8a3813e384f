"""Start-up cost of the ``wsbus`` command (issue 13, item 6): what each command loads.

Agents call ``wsbus send`` in loops, so a command must not import what it does not
use. These tests look at ``sys.modules`` in a fresh interpreter after a command ran;
they time nothing (the bench's CLI start-up rows do: ``python -m bench``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import textwrap
from typing import Any

import pytest
from wsbus.cli.main import COMMANDS, OneLineParser, load_command

from .helpers import HubProcess

#: never loaded by ``wsbus --help``, ``wsbus send --help`` or a plain ``wsbus send``
HEAVY = (
    "aiohttp",
    "prompt_toolkit",
    "detect_secrets",
    "cryptography",
    "wsbus.hub",
    "wsbus.server",
    "wsbus.store",
    "wsbus.compat",
)
#: the asyncio client and what it pulls, on top of HEAVY for the one-shot send
ASYNC = (
    "asyncio",
    "websockets.asyncio",
    "wsbus.client",
    "wsbus.client_inbox",
    "wsbus.client_link",
    "wsbus.client_requests",
    "uvloop",
)

RUN_MAIN = textwrap.dedent(
    """
    import json, sys
    from wsbus.cli.main import main
    try:
        status = main(sys.argv[1:])
    except SystemExit as done:  # --help exits from argparse
        status = done.code
    print(json.dumps({"status": status, "modules": sorted(sys.modules)}), file=sys.stderr)
    """
)


def loaded(*args: str, env: dict[str, str] | None = None) -> tuple[int, set[str]]:
    """Run ``wsbus ARGS`` in a fresh interpreter: its exit status and every module
    imported by then."""
    r = subprocess.run(
        [sys.executable, "-c", RUN_MAIN, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    last = r.stderr.strip().splitlines()[-1]
    result = json.loads(last)
    return result["status"], set(result["modules"])


def _found(modules: set[str], names: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == n or m.startswith(f"{n}.") for n in names))


@pytest.mark.parametrize("args", [("--help",), ("send", "--help")])
def test_help_loads_nothing_heavy(args: tuple[str, ...]) -> None:
    status, modules = loaded(*args)
    assert status == 0
    assert not _found(modules, HEAVY + ASYNC), _found(modules, HEAVY + ASYNC)


def test_help_imports_no_command_module() -> None:
    _, modules = loaded("--help")
    commands = {f"wsbus.cli.{target.partition(':')[0]}" for target, _ in COMMANDS.values()}
    assert not commands & modules, commands & modules
    # ``send --help`` imports send, and no other command
    _, modules = loaded("send", "--help")
    assert "wsbus.cli.send" in modules and not (commands - {"wsbus.cli.send"}) & modules


def test_a_plain_send_needs_no_asyncio(hub: HubProcess, env: dict[str, str]) -> None:
    """The one-shot sender: no asyncio, no asyncio websockets client, no
    importlib.metadata left behind by the websockets import."""
    status, modules = loaded(
        "send", "--as", "alice", "bob", "light", env={**env, "WSBUS_URL": hub.url}
    )
    assert status == 0
    assert not _found(modules, HEAVY + ASYNC), _found(modules, HEAVY + ASYNC)
    assert "wsbus.oneshot" in modules and "importlib.metadata" not in modules


def test_the_websockets_import_leaves_a_working_importlib_metadata() -> None:
    code = textwrap.dedent(
        """
        import sys
        import wsbus.handshake, websockets.version
        assert "importlib.metadata" not in sys.modules, "stand-in left behind"
        import importlib, importlib.metadata
        assert type(sys.modules["importlib.metadata"]) is type(sys), "not the real module"
        assert importlib.metadata is sys.modules["importlib.metadata"]
        print(importlib.metadata.version("websockets") == websockets.version.version)
        """
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "True", r.stdout + r.stderr


def test_each_help_line_is_the_modules_own() -> None:
    """``wsbus --help`` lists COMMANDS' help lines without importing the modules: each
    must be the help its module gives ``add_parser``, and name the parser it adds."""
    for name, (_, help_line) in COMMANDS.items():
        parser = OneLineParser(prog="wsbus")
        sub = parser.add_subparsers(dest="command")
        added = load_command(name)(sub)
        assert added.prog == f"wsbus {name}", (name, added.prog)
        (choice,) = (a for a in sub._choices_actions if a.dest == name)
        assert choice.help == help_line, (name, choice.help, help_line)
        assert isinstance(added, argparse.ArgumentParser)


class FakeHub:
    """A websocket server that speaks just enough wsbus for one send: it answers the
    first ``send`` as told (an error frame, or by dropping the connection), and every
    later one with ``ok``; it records the refs it got, one entry per connection."""

    def __init__(self, first: str) -> None:
        self.first = first
        self.sends: list[str] = []
        self.connections = 0

    async def handle(self, ws: Any) -> None:
        self.connections += 1
        hello = json.loads(await ws.recv())
        assert hello["op"] == "hello" and hello["presence"] is False, hello
        await ws.send(json.dumps({"op": "welcome", "hub": "fake", "seq": 0,
                                  "names": [hello["name"]], "channels": []}))  # fmt: skip
        async for data in ws:
            frame = json.loads(data)
            if frame["op"] != "send":  # the note's queries (wsbus send: who is bob?)
                await ws.send(json.dumps({"op": "error", "code": "forbidden",
                                          "message": "no", "ref": frame["ref"]}))  # fmt: skip
                continue
            self.sends.append(frame["ref"])
            if len(self.sends) == 1 and self.first == "drop":
                await ws.close(1011, "gone")
                return
            if len(self.sends) == 1:
                error = {"op": "error", "code": self.first, "message": "later", "ref": frame["ref"]}
                await ws.send(json.dumps(error))
                continue
            await ws.send(json.dumps({"op": "ok", "ref": frame["ref"], "seq": 7,
                                      "ts": 1.5, "duplicate": True}))  # fmt: skip


@pytest.mark.parametrize("first", ["store_failed", "drop"])
async def test_what_the_one_shot_sender_cannot_wait_out_goes_on_with_the_same_ref(
    env: dict[str, str], first: str
) -> None:
    """A refusal to retry, or a connection lost before the ok: ``wsbus send`` finishes
    the send through the asyncio client, with the same ref (stored once)."""
    from websockets.asyncio.server import serve

    fake = FakeHub(first)
    async with serve(fake.handle, "127.0.0.1", 0, subprotocols=["wsbus.v1.json"]) as server:
        port = server.sockets[0].getsockname()[1]
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "wsbus", "send", "--as", "alice", "bob", "hi", "--json",
            env={**env, "WSBUS_URL": f"ws://127.0.0.1:{port}"},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    result = json.loads(out)
    assert result["seq"] == 7 and result["duplicate"] is True
    assert len(fake.sends) == 2 and fake.sends[0] == fake.sends[1] == result["ref"]
    # the one-shot connection, then the asyncio client's
    assert fake.connections == 2
