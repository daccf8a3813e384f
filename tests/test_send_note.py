"""``wsbus send`` to a name nobody has seen: stored anyway, with a note on stderr.

Against a real hub process on a loopback port: known names (a sender, a roster
member, a connected listener, a reader of its messages) get no note; a typo gets
the note with the closest known name; a name like no other gets it without one;
``-q``, ``*`` and oneself get nothing. Every send exits 0 and is stored.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Subprotocol
from wsbus.cli.suggest import closest, did_you_mean
from wsbus.cli.unseen import Answer, Query, note_line, unseen_note, unseen_note_blocking

from wsbus import Client
from wsbus.codec import JSON
from wsbus.schema import Error, HistoryResult, Ok, RosterResult, Welcome

from .helpers import HubProcess, wait_for
from .test_cli import Running, wsbus

NOTE = "note: nobody named {!r} has been seen on #{}"


@pytest.fixture
def cli_env(env: dict[str, str], hub: HubProcess) -> dict[str, str]:
    return {**env, "WSBUS_URL": hub.url, "WSBUS_NAME": "alice"}


async def _seed(url: str) -> None:
    """bob has spoken on #default, carol is registered in its roster; neither is online."""
    async with Client(url, "bob", channels=[], presence=False) as bob:
        await bob.send("alice", "hi alice")
    async with Client(url, "alice", channels=[], presence=False) as alice:
        await alice.register("default", "carol", session="carol", host="devbox")


def stored(env: dict[str, str]) -> list[tuple[str, str, str]]:
    r = wsbus(env, "history", "--json", "-n", "100")
    assert r.returncode == 0, r.stderr
    events = [json.loads(line) for line in r.stdout.splitlines()]
    return [(e["from"], e["to"], e["body"]) for e in events]


def send(env: dict[str, str], *args: str) -> tuple[str, str]:
    """``wsbus send ARGS``: exit 0, and its stdout and stderr."""
    r = wsbus(env, "send", *args)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    return r.stdout, r.stderr


def test_known_names_get_no_note(hub: HubProcess, cli_env: dict[str, str]) -> None:
    asyncio.run(_seed(hub.url))
    for to in ("bob", "carol", "*", "alice"):  # a sender, a member, everyone, oneself
        out, err = send(cli_env, to, f"to {to}")
        assert out.startswith("sent #"), out
        assert err == "", (to, err)
    assert stored(cli_env)[-4:] == [("alice", t, f"to {t}") for t in ("bob", "carol", "*", "alice")]


def test_a_typo_gets_the_note_with_the_closest_name(
    hub: HubProcess, cli_env: dict[str, str]
) -> None:
    asyncio.run(_seed(hub.url))
    out, err = send(cli_env, "bobb", "are you there?")
    assert out.startswith("sent #2 at "), out  # stored as usual: it may connect later
    assert err == NOTE.format("bobb", "default") + " — did you mean 'bob'?\n"
    out, err = send(cli_env, "carl", "and you?")
    assert err == NOTE.format("carl", "default") + " — did you mean 'carol'?\n"
    # a second message to the typo is still noted: being written to is not being seen
    _, err = send(cli_env, "bobb", "hello?")
    assert err.startswith(NOTE.format("bobb", "default"))
    assert [t for _, t, _ in stored(cli_env)] == ["alice", "bobb", "carl", "bobb"]


def test_a_name_like_no_other_gets_the_note_alone(hub: HubProcess, cli_env: dict[str, str]) -> None:
    asyncio.run(_seed(hub.url))
    _, err = send(cli_env, "zed", "welcome, when you come")
    assert err == NOTE.format("zed", "default") + "\n"
    # on another channel bob and carol were never seen: no suggestion from #default
    _, err = send(cli_env, "--channel", "ops", "bobb", "here?")
    assert err == NOTE.format("bobb", "ops") + "\n"
    _, err = send(cli_env, "--channel", "ops", "bob", "here?")
    assert err == NOTE.format("bob", "ops") + "\n"
    assert ("alice", "zed", "welcome, when you come") in stored(cli_env)


def test_quiet_prints_nothing(hub: HubProcess, cli_env: dict[str, str]) -> None:
    asyncio.run(_seed(hub.url))
    r = wsbus(cli_env, "send", "-q", "bobb", "quietly")
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    assert stored(cli_env)[-1] == ("alice", "bobb", "quietly")


def test_a_connected_listener_and_a_past_reader_are_seen(
    hub: HubProcess, cli_env: dict[str, str]
) -> None:
    # dave listens now: online when the message is stored
    dave = Running(cli_env, "listen", "dave", "--no-cursor")
    try:
        _listener_and_reader(hub, cli_env, dave)
    finally:
        dave.stop()


def _listener_and_reader(hub: HubProcess, cli_env: dict[str, str], dave: Running) -> None:
    wait_for(lambda: _online(hub.url, "dave"), timeout=15)
    _, err = send(cli_env, "dave", "ping")
    assert err == ""
    assert dave.wait_out(1)[0].endswith("from alice:")
    # erin only ever read what was sent to her (`wsbus inbox --mark-read`), now offline
    _, err = send(cli_env, "erin", "first")
    assert err.startswith(NOTE.format("erin", "default"))
    r = wsbus(cli_env, "inbox", "erin", "--unread", "--mark-read")
    assert r.returncode == 0 and "first" in r.stdout, r
    _, err = send(cli_env, "erin", "second")
    assert err == ""


def _online(url: str, name: str) -> bool:
    async def ask() -> bool:
        async with Client(url, "probe", channels=[], presence=False) as c:
            roster = await c.roster("default")
        return any(m.name == name for m in roster.members)

    return asyncio.run(ask())


# ------------------------------------------------------------------ the rule, without a hub


def test_one_did_you_mean_rule() -> None:
    assert closest("bobb", {"bob", "carol"}) == "bob"
    assert closest("codx", ["grok", "codex", "claude"]) == "codex"
    assert closest("zzzz", ["claude", "codex"]) is None
    assert closest("bob", ["bob"]) is None  # never the word itself
    assert closest("x", []) is None
    assert closest("ab", ["abc", "abd"]) == "abc"  # ties: the first in sorted order
    assert did_you_mean("codx", ["claude", "codex", "grok"]) == " — did you mean 'codex'?"
    assert did_you_mean("zzzz", ["claude"]) == ""
    assert note_line("bobb", "ops", ["bob"]) == (
        "note: nobody named 'bobb' has been seen on #ops — did you mean 'bob'?"
    )


class _Stuck:
    """An asyncio client whose queries never answer."""

    async def roster(self, *a: Any, **kw: Any) -> RosterResult:
        await asyncio.sleep(3600)
        raise AssertionError

    async def history(self, *a: Any, **kw: Any) -> HistoryResult:
        await asyncio.sleep(3600)
        raise AssertionError


class _Failing(_Stuck):
    async def roster(self, *a: Any, **kw: Any) -> RosterResult:
        raise ConnectionError("gone")


def test_the_lookup_is_bounded_and_silent_on_errors() -> None:
    async def lookup(client: Any, **kw: Any) -> tuple[str | None, float]:
        start = time.monotonic()
        note = await unseen_note(client, "bobb", "default", me="alice", seq=5, **kw)
        return note, time.monotonic() - start

    note, took = asyncio.run(lookup(_Stuck(), budget=0.2))
    assert note is None and took < 1.0
    note, took = asyncio.run(lookup(_Failing()))
    assert note is None and took < 1.0
    # no query at all for a broadcast, oneself or a recipient online when stored
    for to, online in (("*", None), ("alice", None), ("bob", True)):
        assert asyncio.run(unseen_note(_Failing(), to, "default", me="alice", seq=5,
                                       online=online)) is None  # fmt: skip

    def stuck(queries: list[Query], timeout: float) -> list[Answer]:
        time.sleep(timeout)
        raise TimeoutError

    def failing(queries: list[Query], timeout: float) -> list[Answer]:
        raise ConnectionError("gone")

    for request in (stuck, failing):
        start = time.monotonic()
        note = unseen_note_blocking(
            request, "bobb", "default", me="alice", seq=5, max_history=1000, budget=0.2
        )
        assert note is None and time.monotonic() - start < 1.0


class Blocking:
    """A blocking client, as a one-shot sender is: websockets' sync client, a round's
    queries written at once, their answers matched by ref."""

    def __init__(self, conn: ClientConnection, name: str) -> None:
        self.conn = conn
        hello = {"op": "hello", "name": name, "channels": [], "presence": False}
        self.conn.send(json.dumps(hello))
        self.welcome: Welcome = JSON.decode_hub(self.conn.recv(timeout=10))

    def requests(self, queries: list[Query], timeout: float) -> list[Answer]:
        deadline = time.monotonic() + timeout
        for query in queries:
            self.conn.send(JSON.encode(query).decode())  # a text frame
        got: dict[str, Answer] = {}
        while len(got) < len(queries):
            answer = JSON.decode_hub(self.conn.recv(timeout=max(0.0, deadline - time.monotonic())))
            if isinstance(answer, Error):
                raise RuntimeError(answer.message)
            if isinstance(answer, RosterResult | HistoryResult):
                got[answer.ref] = answer
        return [got[query.ref] for query in queries]

    def send(self, to: str, body: str) -> Ok:
        self.conn.send(json.dumps({"op": "send", "ref": f"b-{time.time_ns()}", "to": to,
                                   "body": body}))  # fmt: skip
        while not isinstance(answer := JSON.decode_hub(self.conn.recv(timeout=10)), Ok):
            pass
        return answer


def test_a_blocking_client_runs_the_same_lookup(hub: HubProcess) -> None:
    asyncio.run(_seed(hub.url))
    with connect(hub.url, subprotocols=[Subprotocol(JSON.name)]) as conn:
        alice = Blocking(conn, "alice")
        max_history = alice.welcome.limits.max_history

        def note(to: str) -> str | None:
            ok = alice.send(to, "hi")
            return unseen_note_blocking(alice.requests, to, "default", me="alice", seq=ok.seq,
                                        online=ok.online, max_history=max_history)  # fmt: skip

        assert note("bob") is None and note("carol") is None and note("*") is None
        assert note("bobb") == NOTE.format("bobb", "default") + " — did you mean 'bob'?"
        assert note("zed") == NOTE.format("zed", "default")
