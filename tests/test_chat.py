"""``wsbus chat``: the line parser and the view (pure), then the app itself, driven with
``create_pipe_input()`` and ``DummyOutput()`` against a real hub process.

The app keeps the plain text of every line it printed (``ChatApp.lines``); what it
sent is checked with real clients on the bus (a watcher sees every event).
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document
from prompt_toolkit.input import PipeInput, create_pipe_input
from prompt_toolkit.output import DummyOutput
from wsbus.cli.chat import view
from wsbus.cli.chat.app import ChatApp
from wsbus.cli.chat.commands import (
    COMMANDS,
    MAX_COUNT,
    ChatState,
    Hint,
    Nothing,
    Quit,
    ReadThread,
    SendText,
    SetTarget,
    SetThread,
    ShowHelp,
    ShowHistory,
    SwitchChannel,
    ToggleWatch,
    Who,
    parse,
)
from wsbus.cli.chat.prompt import ChatCompleter

from wsbus import Client
from wsbus.schema import (
    NAME_RULE,
    THREAD_RULE,
    Event,
    Member,
    Presence,
    Receipt,
    RosterEntry,
    RosterResult,
)

from .helpers import HubProcess, async_wait_for

# --------------------------------------------------------------------------- parser


def state(**kw: object) -> ChatState:
    s = ChatState(me="alice", channel="default", names={"alice", "bob", "codex"})
    for key, value in kw.items():
        setattr(s, key, value)
    return s


@pytest.mark.parametrize(
    ("line", "action"),
    [
        ("hello all", SendText("*", "hello all")),
        ("  padded  ", SendText("*", "padded")),
        ("@bob hi there", SendText("bob", "hi there")),
        ("@bob line 1\nline 2", SendText("bob", "line 1\nline 2")),
        ("/to bob", SetTarget("bob", known=True)),
        ("/to @codex", SetTarget("codex", known=True)),
        ("/to carol", SetTarget("carol", known=False)),
        ("/to *", SetTarget(None)),
        ("/all", SetTarget(None)),
        ("/thread build", SetThread("build")),
        ("/thread hermes/pmxt-execution", SetThread("hermes/pmxt-execution")),
        ("/thread", SetThread(None)),
        ("/thread #build", SetThread("build")),
        ("/read #ci 3", ReadThread("ci", 3)),
        ("/post #ci done", SendText("*", "done", "ci")),
        ("/post ci the build is green", SendText("*", "the build is green", "ci")),
        ("/post ci step 1\nstep 2", SendText("*", "step 1\nstep 2", "ci")),
        ("/read ci", ReadThread("ci", 20)),
        ("/read ci 5", ReadThread("ci", 5)),
        ("/who", Who()),
        ("/history", ShowHistory(20)),
        ("/history 7", ShowHistory(7)),
        (f"/history {MAX_COUNT}", ShowHistory(MAX_COUNT)),
        ("/channel ops", SwitchChannel("ops")),
        ("/channel #ops", SwitchChannel("ops")),
        ("/watch", ToggleWatch()),
        ("/help", ShowHelp()),
        ("/quit", Quit()),
        ("/QUIT", Quit()),
        ("//tmp is full", SendText("*", "/tmp is full")),
        ("\\@home is where I am", SendText("*", "@home is where I am")),
        ("\\/who", SendText("*", "/who")),
        ("", Nothing()),
        ("   \n ", Nothing()),
        ("\\", Nothing()),
    ],
)
def test_parse(line: str, action: object) -> None:
    assert parse(line, state()) == action


def test_plain_text_follows_the_target_and_the_thread() -> None:
    assert parse("hi", state(target="bob")) == SendText("bob", "hi")
    assert parse("hi", state(thread="build")) == SendText("*", "hi", "build")
    assert parse("hi", state(target="bob", thread="b")) == SendText("bob", "hi", "b")
    assert parse("@codex go", state(thread="b")) == SendText("codex", "go", "b")
    # /to an unknown name, then plain text: sent anyway (the way to force it)
    assert parse("are you there?", state(target="carol")) == SendText("carol", "are you there?")


def test_every_command_parses_with_its_arguments() -> None:
    samples = {"NAME": "bob", "[T]": "build", "T": "build", "TEXT": "hello", "[N]": "3"}
    samples["C"] = "ops"
    for cmd in COMMANDS:
        args = " ".join(samples[a] for a in cmd.args.split())
        action = parse(f"{cmd.name} {args}".strip(), state())
        assert not isinstance(action, Hint), (cmd.name, action)


def hint(line: str, **kw: object) -> str:
    action = parse(line, state(**kw))
    assert isinstance(action, Hint), action
    text = str(action.text)
    assert "\n" not in text
    return text


def test_unknown_names_get_a_did_you_mean_and_are_not_sent() -> None:
    assert hint("@bobb hey") == (
        "unknown name 'bobb' — did you mean 'bob'? "
        "(/who lists who is here; use /to bobb to send anyway)"
    )
    assert hint("@zed hey") == (
        "unknown name 'zed' (/who lists who is here; use /to zed to send anyway)"
    )


def test_hints_for_bad_names_threads_and_arguments() -> None:
    assert hint("@bad!name hi") == f"invalid name 'bad!name': allowed {NAME_RULE}"
    assert hint("/to bad!name") == f"invalid name 'bad!name': allowed {NAME_RULE}"
    assert hint("/channel bad!") == f"invalid channel 'bad!': allowed {NAME_RULE}"
    assert hint("/thread ../etc") == f"invalid thread '../etc': allowed {THREAD_RULE}"
    assert hint("/post /x hi") == f"invalid thread '/x': allowed {THREAD_RULE}"
    assert hint("@ hi").startswith("@ needs a name")
    assert hint("@bob") == "nothing to send to bob: @bob TEXT (or /to bob to keep talking to it)"
    assert hint("/to").startswith("/to needs a name")
    assert hint("/to bob hi there") == "/to takes one name (to send one message: @bob hi there)"
    assert hint("/thread a b") == "/thread takes one thread name (to post once: /post a b)"
    assert hint("/post").startswith("/post needs a thread and a text: /post T TEXT")
    assert hint("/post ci").startswith("/post needs a thread and a text")
    assert hint("/read").startswith("/read needs a thread")
    assert hint("/read ci x") == f"/read: N must be a number from 1 to {MAX_COUNT}, not 'x'"
    assert hint("/history 0") == f"/history: N must be a number from 1 to {MAX_COUNT}, not '0'"
    assert hint(f"/history {MAX_COUNT + 1}").startswith("/history: N must be")
    assert hint("/who me") == "/who takes no arguments"
    assert hint("/channel") == "/channel needs one channel name: /channel C"
    assert hint("/channel default") == "already on #default"
    assert hint("/") == "/help lists the commands"


def test_unknown_commands_get_a_did_you_mean() -> None:
    assert (
        hint("/tread build") == "unknown command /tread — did you mean /thread? (/help lists them)"
    )
    assert hint("/quti") == "unknown command /quti — did you mean /quit? (/help lists them)"
    assert hint("/tmp/x is full") == (
        "unknown command /tmp/x (/help lists them; start with // to send it as text)"
    )


def test_only_a_line_carrying_a_message_comes_back_after_a_hint() -> None:
    def kept(line: str) -> bool:
        action = parse(line, state())
        assert isinstance(action, Hint), action
        return action.keep

    # a message to fix rather than retype
    for line in ("@bobb hey", "@ hey", "@bad!name hey", "@bob", "/post /x the text",
                 "/post ci", "/to bob hi there", "/thread ci the text"):  # fmt: skip
        assert kept(line), line
    # a command: the error is shown and the prompt is clear for the next one
    for line in ("/tread build", "/tmp/x is full", "/", "/history 0", "/who me",
                 "/to", "/channel", "/read ci x", "/thread ../etc"):  # fmt: skip
        assert not kept(line), line


# --------------------------------------------------------------------------- view


def ev(
    body: str = "hi", frm: str = "bob", to: str = "*", thread: str | None = None, **kw: object
) -> Event:
    return Event(seq=42, ts=1_700_000_000.0, channel="default", from_=frm, to=to, body=body,
                 thread=thread, **kw)  # type: ignore[arg-type]  # fmt: skip


def test_name_colours_are_stable_and_spread() -> None:
    for name in ("alice", "bob", "codex", "claude"):
        expected = view.PALETTE[zlib.crc32(name.encode()) % len(view.PALETTE)]
        assert view.name_colour(name) == expected
    # the same in another process (no per-process hash seed)
    out = subprocess.run(
        [sys.executable, "-c", "from wsbus.cli.chat.view import name_colour as c; print(c('bob'))"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == view.name_colour("bob")
    names = [f"agent-{i}" for i in range(40)]
    assert len({view.name_colour(n) for n in names}) >= 6
    assert len(view.PALETTE) == 10


def styles(text: object) -> dict[str, str]:
    return {t: s for s, t in text}  # type: ignore[attr-defined]


def test_event_lines_mark_direct_broadcast_thread_and_human() -> None:
    clock = view.clock(1_700_000_000.0)
    assert re.fullmatch(r"\d\d:\d\d:\d\d", clock)
    broadcast = view.event_line(ev(), "alice")
    assert view.plain(broadcast) == f"{clock} bob: hi"
    assert styles(broadcast)["bob"] == f"bold fg:{view.name_colour('bob')}"
    to_me = view.event_line(ev(to="alice"), "alice")
    assert view.plain(to_me) == f"{clock} bob → you: hi"
    assert styles(to_me)["→ you"] == view.YOU
    to_other = view.event_line(ev(to="carol", thread="build"), "alice")
    assert view.plain(to_other) == f"{clock} bob → carol #build: hi"
    assert styles(to_other)["carol"] == f"italic fg:{view.name_colour('carol')}"
    human = view.event_line(ev(frm="alice", kind="human"), "bob")
    assert view.plain(human) == f"{clock} alice (human): hi"
    other_kind = view.event_line(ev(kind="notice"), "alice")
    assert view.plain(other_kind) == f"{clock} bob [notice]: hi"


def test_multiline_bodies_are_indented_and_control_characters_dropped() -> None:
    text = view.plain(view.event_line(ev("line 1\nline 2\r\n\x1b[2Jline 3\x07"), "alice"))
    assert text.splitlines() == [
        f"{view.clock(1_700_000_000.0)} bob: line 1",
        f"{view.INDENT}line 2",
        f"{view.INDENT}line 3",
    ]
    assert "\x1b" not in text and "\x07" not in text


def test_receipts_and_presence_are_quiet_lines() -> None:
    read = view.receipt_line(Receipt(seq=42, channel="d", by="bob", status="read", ts=1.0))
    assert view.plain(read) == "✓ bob read #42"
    assert read[0][0] == "dim"
    failed = Receipt(seq=7, channel="d", by="codex", status="failed", ts=1.0, reason="no pane")
    assert view.plain(view.receipt_line(failed)) == "✗ codex failed #7 (no pane)"
    up = Presence(channel="d", name="codex", state="up", ts=1.0, model="gpt-5", role="builder")
    assert view.plain(view.presence_line(up)) == "· codex is up (gpt-5 · builder)"
    down = Presence(channel="d", name="codex", state="down", ts=1.0)
    assert view.plain(view.presence_line(down)) == "· codex is down"
    assert view.presence_line(down)[0][0] == "dim"


def test_toolbar_shows_connection_place_people_and_unread() -> None:
    bar = view.StatusBar(
        connection="connected",
        channel="default",
        online=("alice", "bob", "codex", "dave", "eve"),
        unread=2,
    )
    assert view.plain(view.toolbar(bar)) == (
        " connected │ #default │ to all │ 5 online: alice, bob, codex, dave +1 │ 2 unread "
    )
    bar = view.StatusBar(
        connection="reconnecting",
        retry_in=1.23,
        channel="ops",
        target="bob",
        thread="build",
        watch=True,
    )
    assert view.plain(view.toolbar(bar)) == (
        " reconnecting in 1.2s │ #ops │ to bob │ thread build │ watching │ 0 online "
    )


def test_prompt_says_where_a_line_goes() -> None:
    assert view.plain(view.prompt_message(state())) == "#default> "
    assert view.plain(view.prompt_message(state(target="bob", thread="b"))) == "@bob [b]> "


def test_roster_lines() -> None:
    roster = RosterResult(
        ref="r",
        channel="default",
        members=[
            Member(name="alice", connections=1, kind="human"),
            Member(name="codex", connections=1, kind="bridge", model="gpt-5", role="builder"),
        ],
        registered=[
            RosterEntry(channel="default", name="codex", joined=1, last_active=1, state="up"),
            RosterEntry(channel="default", name="grok", joined=1, last_active=1, host="laptop"),
        ],
    )
    lines = [view.plain(x) for x in view.roster_lines(roster, "alice")]
    assert lines == [
        "· #default: 2 online, 2 in the roster",
        "  ● alice (you)  human",
        "  ● codex  bridge · session up · gpt-5 · builder",
        "  ○ grok  offline · laptop",
    ]


# --------------------------------------------------------------------------- completion


def completions(app_state: ChatState, text: str) -> list[str]:
    found = ChatCompleter(app_state).get_completions(
        Document(text), CompleteEvent(completion_requested=True)
    )
    return [c.text for c in found]


def test_completion_of_names_commands_and_threads() -> None:
    s = state(threads={"build", "bugs", "ci"}, channels={"default", "ops"})
    assert completions(s, "@b") == ["@bob"]
    assert completions(s, "@") == ["@bob", "@codex"]  # not yourself
    assert completions(s, "/t") == ["/to", "/thread"]
    assert completions(s, "/to c") == ["codex"]
    assert completions(s, "/read b") == ["bugs", "build"]
    assert completions(s, "/post c") == ["ci"]
    assert completions(s, "/channel o") == ["ops"]
    assert completions(s, "hello b") == []
    assert completions(s, "hi @b") == []  # @names only start a line


# --------------------------------------------------------------------------- the app


@dataclass
class Chat:
    app: ChatApp
    pipe: PipeInput
    task: asyncio.Task[int]

    def type(self, text: str) -> None:
        self.pipe.send_text(text)

    def count(self, pattern: str) -> int:
        return sum(1 for line in self.app.lines if re.search(pattern, line, re.M))

    async def shows(self, pattern: str, timeout: float = 10.0) -> None:
        try:
            await async_wait_for(lambda: self.count(pattern), timeout)
        except AssertionError:
            raise AssertionError(f"{pattern!r} not shown in {list(self.app.lines)}") from None

    async def live(self) -> None:
        await asyncio.wait_for(self.app.live.wait(), 10)

    async def knows(self, name: str) -> None:
        await async_wait_for(lambda: name in self.app.state.names)


@asynccontextmanager
async def chat(hub: HubProcess, tmp: Path, name: str = "alice") -> AsyncIterator[Chat]:
    with create_pipe_input() as pipe:
        app = ChatApp(
            hub.url,
            name,
            cursor_root=tmp / "cursors",
            history_path=tmp / "input-history",
            input=pipe,
            output=DummyOutput(),
            timeout=5.0,
        )
        c = Chat(app, pipe, asyncio.create_task(app.run()))
        try:
            await c.live()
            yield c
        finally:
            if not c.task.done():
                c.task.cancel()
            await asyncio.gather(c.task, return_exceptions=True)


@asynccontextmanager
async def client(hub: HubProcess, name: str, **kw: object) -> AsyncIterator[Client]:
    c = Client(hub.url, name, **kw)  # type: ignore[arg-type]
    await c.connect()
    try:
        yield c
    finally:
        await c.close()


async def next_event(c: Client, timeout: float = 10.0) -> Event:
    async def first() -> Event:
        async for item in c:
            if isinstance(item, Event):
                return item
        raise AssertionError("client closed")

    return await asyncio.wait_for(first(), timeout)


async def test_a_typed_line_goes_to_the_channel_as_a_person(
    hub: HubProcess, tmp_path: Path
) -> None:
    async with client(hub, "bob") as bob, chat(hub, tmp_path) as c:
        c.type("hello all\r")
        got = await next_event(bob)
        assert (got.from_, got.to, got.body, got.kind) == ("alice", "*", "hello all", "human")
        await c.shows(r"alice \(human\): hello all$")  # echoed once stored
        assert c.count("hello all") == 1


async def test_at_name_to_all_thread_and_post(hub: HubProcess, tmp_path: Path) -> None:
    async with (
        client(hub, "watcher", watch=True) as w,
        client(hub, "bob"),
        chat(hub, tmp_path) as c,
    ):
        await c.knows("bob")
        steps = [
            ("@bob hi\r", ("bob", "hi", None)),
            ("/to bob\rjust you\r", ("bob", "just you", None)),
            ("/all\reveryone\r", ("*", "everyone", None)),
            ("/thread build\rin the thread\r", ("*", "in the thread", "build")),
            ("/thread\rout of it\r", ("*", "out of it", None)),
            ("/post ci the build is green\r", ("*", "the build is green", "ci")),
        ]
        for typed, (to, body, thread) in steps:
            c.type(typed)
            got = await next_event(w)
            assert (got.from_, got.to, got.body, got.thread, got.kind) == (
                "alice", to, body, thread, "human"
            ), typed  # fmt: skip
        await c.shows(r"alice \(human\) → bob: hi$")
        await c.shows(r"alice \(human\) #ci: the build is green$")
        await c.shows(r"^· talking to bob")
        await c.shows(r"^#default> /to bob$")  # commands stay visible


async def test_unknown_name_is_not_sent_until_forced_with_to(
    hub: HubProcess, tmp_path: Path
) -> None:
    async with (
        client(hub, "watcher", watch=True) as w,
        client(hub, "bob"),
        chat(hub, tmp_path) as c,
    ):
        await c.knows("bob")
        c.type("@bobb are you there?\r")
        await c.shows(r"^! unknown name 'bobb' — did you mean 'bob'\?")
        c.type("\x03")  # the line came back to be fixed; Ctrl-C clears it
        c.type("/to carol\r")
        await c.shows(r"talking to carol \(not seen on #default yet")
        c.type("forced\r")
        got = await next_event(w)  # the first event: nothing went to bobb
        assert (got.to, got.body) == ("carol", "forced")


async def test_incoming_messages_print_are_acked_and_counted_unread(
    hub: HubProcess, tmp_path: Path
) -> None:
    async with chat(hub, tmp_path) as c, client(hub, "bob") as bob:
        await c.shows(r"^· bob is up")
        ok = await bob.send("alice", "hello alice\nsecond line")
        await bob.send("*", "hello all", thread="build")
        await c.shows(r"bob → you: hello alice$")
        await c.shows(r"bob #build: hello all$")
        assert c.count("second line") == 1
        async for item in bob:  # the chat read it: bob gets the receipt
            if isinstance(item, Receipt) and item.seq == ok.seq:
                assert (item.by, item.status) == ("alice", "read")
                break
        assert c.app.status().unread == 2
        assert "2 unread" in view.plain(c.app.toolbar())
        assert "bob" in view.plain(c.app.toolbar())
        c.type("/help\r")
        await c.shows(r"/post T TEXT")
        assert c.app.status().unread == 0


async def test_quit_and_ctrl_d_end_the_chat(hub: HubProcess, tmp_path: Path) -> None:
    async with chat(hub, tmp_path) as c:
        c.type("/quit\r")
        assert await asyncio.wait_for(c.task, 10) == 0
    async with chat(hub, tmp_path) as c:
        c.type("\x04")
        assert await asyncio.wait_for(c.task, 10) == 0
    assert (tmp_path / "input-history").stat().st_mode & 0o777 == 0o600


async def test_ctrl_c_clears_the_line_and_alt_enter_adds_one(
    hub: HubProcess, tmp_path: Path
) -> None:
    async with client(hub, "watcher", watch=True) as w, chat(hub, tmp_path) as c:
        c.type("never sent\x03")
        c.type("line 1\x1b\rline 2\r")
        got = await next_event(w)
        assert got.body == "line 1\nline 2"


async def test_tab_completes_a_name_in_the_prompt(hub: HubProcess, tmp_path: Path) -> None:
    async with (
        client(hub, "watcher", watch=True) as w,
        client(hub, "bob"),
        chat(hub, tmp_path) as c,
    ):
        await c.knows("bob")
        buffer = c.app.session.default_buffer
        c.type("@b")
        await async_wait_for(lambda: buffer.complete_state)  # the menu, while typing
        c.type("\t")
        await async_wait_for(lambda: buffer.text == "@bob")
        c.type(" hi\r")
        got = await next_event(w)
        assert (got.to, got.body) == ("bob", "hi")


async def test_who_history_read_and_hints(hub: HubProcess, tmp_path: Path) -> None:
    async with client(hub, "codex", model="gpt-5", role="builder") as codex:
        await codex.send("*", "post one", thread="build")
        await codex.send("*", "chatter")
        await codex.reserve(["src/parser/**"], 600, reason="lexer")
        async with chat(hub, tmp_path) as c:
            c.type("/who\r")
            await c.shows(r"^  ● codex  agent · gpt-5 · builder$")
            await c.shows(r"^· 1 file lease in force$")
            await c.shows(r"^  ⚑ codex  src/parser/\*\*  exclusive, until \d\d:\d\d:\d\d: lexer$")
            c.type("/read build\r")
            await c.shows(r"^· thread build: the last 1$")
            c.type("/read biuld\r")
            await c.shows(r"^! no posts in thread 'biuld' on #default — did you mean 'build'\?$")
            c.type("\x03/history 5\r")
            await c.shows(r"^· #default: the last 2$")
            c.type("/tread x\r")
            await c.shows(r"^! unknown command /tread — did you mean /thread\?")
            assert not any("Traceback" in line for line in c.app.lines)


async def test_watch_shows_the_agents_direct_messages_once(hub: HubProcess, tmp_path: Path) -> None:
    async with client(hub, "carol") as carol, client(hub, "bob"), chat(hub, tmp_path) as c:
        await carol.send("bob", "psst one")
        await carol.send("*", "marker")
        await c.shows("carol: marker")
        assert c.count("psst one") == 0
        c.type("/watch\r")
        await c.shows(r"watching every event on #default")
        await c.live()
        await carol.send("bob", "psst two")
        await c.shows(r"carol → bob: psst two$")
        assert c.count("psst") == 1  # the replay starts after what was shown
        assert c.count("marker") == 1
        c.type("mine\r")
        await c.shows(r"alice \(human\): mine$")
        await carol.send("*", "after mine")  # by now the watched copy of "mine" came too
        await c.shows("carol: after mine")
        assert c.count(": mine$") == 1, "\n".join(c.app.lines)
        assert "watching" in view.plain(c.app.toolbar())


async def test_channel_switch(hub: HubProcess, tmp_path: Path) -> None:
    async with client(hub, "bob", channels=["ops"]) as bob, chat(hub, tmp_path) as c:
        await bob.send("*", "earlier on ops")
        c.type("/channel ops\r")
        await c.shows(r"^· now on #ops$")
        await c.shows(r"bob: earlier on ops$")  # the new channel's history
        await c.live()
        c.type("hi ops\r")
        got = await next_event(bob)
        assert (got.channel, got.body) == ("ops", "hi ops")
        assert "#ops" in view.plain(c.app.toolbar())


async def test_hub_restart_nothing_missed_nothing_doubled(hub: HubProcess, tmp_path: Path) -> None:
    async with client(hub, "watcher", watch=True) as w, client(hub, "bob") as bob:
        async with chat(hub, tmp_path) as c:
            await bob.send("alice", "before")
            await c.shows("bob → you: before")
            seen: list[str] = []

            async def watch_toolbar() -> None:
                while True:
                    seen.append(view.plain(c.app.toolbar()))
                    await asyncio.sleep(0.01)

            watcher = asyncio.create_task(watch_toolbar())
            try:
                await asyncio.to_thread(hub.restart)
                await async_wait_for(lambda: c.app.connection == "connected", 15)
            finally:
                watcher.cancel()
            assert any(re.match(r" reconnecting in \d+\.\ds", s) for s in seen), seen[-3:]
            await c.shows(r"^· reconnected$")
            for i in range(3):
                await bob.send("alice", f"after {i}")
            await c.shows("bob → you: after 2")
            c.type("back again\r")
            while (await next_event(w)).body != "back again":
                pass
        assert c.count("before$") == 1
        for i in range(3):
            assert c.count(f"after {i}$") == 1


async def test_a_restarted_chat_shows_what_it_missed_once(hub: HubProcess, tmp_path: Path) -> None:
    async with client(hub, "bob") as bob:
        async with chat(hub, tmp_path) as c:
            await bob.send("alice", "first")
            await c.shows("bob → you: first")
            c.type("my last words\r")
            await c.shows(r"alice \(human\): my last words$")
            c.type("/quit\r")
            await asyncio.wait_for(c.task, 10)
        await bob.send("alice", "while away")
        await bob.send("*", "also while away")
        async with chat(hub, tmp_path) as c:
            await c.shows("bob: also while away")
            for text in ("first", "my last words", "while away", "also while away"):
                assert c.count(f": {text}$") == 1, (text, list(c.app.lines))
            order = [line for line in c.app.lines if re.search(r"\d\d:\d\d:\d\d ", line)]
            assert [line.split(": ", 1)[1] for line in order] == [
                "first", "my last words", "while away", "also while away"
            ]  # fmt: skip
            assert c.app.status().unread == 2  # missed while away


def test_cli_needs_a_name_and_a_terminal(env: dict[str, str]) -> None:
    def run(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "wsbus", "chat", *args],
            env={**env, **extra},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=30,
        )

    r = run()
    assert r.returncode == 2
    assert r.stderr == (
        "wsbus: chat needs a name: pass --as NAME or set WSBUS_NAME (or AGENT_NAME)\n"
    )
    r = run("--as", "alice", "--url", "http://127.0.0.1:8765")
    assert r.returncode == 2
    assert "invalid hub URL 'http://127.0.0.1:8765'" in r.stderr
    r = run(AGENT_NAME="alice")
    assert r.returncode == 2
    assert "chat needs a terminal" in r.stderr
    assert "Traceback" not in r.stderr
    r = run("--help")
    assert r.returncode == 0 and "examples:" in r.stdout and "--watch" in r.stdout
