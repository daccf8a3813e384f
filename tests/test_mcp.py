"""``wsbus mcp``: the MCP SDK's own client over stdio against a live hub; and
``wsbus inbox --hook``, the agents' hooks of docs/AGENTS.md."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client import NotificationBinding
from pydantic import BaseModel

from wsbus.client import Client
from wsbus.schema import Receipt

from .helpers import ENGINE, HubProcess, async_wait_for
from .test_security import Tokens
from .test_store_files import _hold_write_lock
from .tmuxkit import Machine

TOOLS = {
    "send", "post", "inbox", "wait", "read_thread", "threads", "roster", "history", "whoami",
    "receipts", "reserve", "release", "reservations",
}  # fmt: skip


class ChannelParams(BaseModel):
    content: str
    meta: dict[str, Any] = {}


@asynccontextmanager
async def mcp_agent(
    env: dict[str, str],
    url: str,
    name: str,
    *extra: str,
    pushed: list[ChannelParams] | None = None,
) -> AsyncIterator[ClientSession]:
    """``wsbus mcp --as NAME`` started by the SDK's stdio client, initialized."""
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "wsbus", "mcp", "--as", name, "--url", url, "--timeout", "2", *extra],
        env=env,
    )

    async def on_channel(p: ChannelParams) -> None:
        assert pushed is not None
        pushed.append(p)

    bindings = []
    if pushed is not None:
        bindings.append(
            NotificationBinding(
                method="notifications/claude/channel", params_type=ChannelParams, handler=on_channel
            )
        )
    async with (
        stdio_client(params) as (read, write),
        ClientSession(read, write, notification_bindings=bindings) as session,
    ):
        await session.initialize()
        yield session


async def tool(session: ClientSession, name: str, **args: Any) -> dict[str, Any]:
    """Call a tool that must succeed: its structured result."""
    result = await session.call_tool(name, args)
    assert not result.is_error, result.content
    assert result.structured_content is not None
    data: dict[str, Any] = result.structured_content
    assert json.loads(result.content[0].text) == data  # type: ignore[union-attr]
    return data


async def failure(session: ClientSession, name: str, **args: Any) -> str:
    """Call a tool that must fail: its error text (``code: sentence``)."""
    result = await session.call_tool(name, args)
    assert result.is_error, result.structured_content
    text: str = result.content[0].text  # type: ignore[union-attr]
    return text


async def connected(session: ClientSession) -> None:
    async def ready() -> bool:
        return bool((await tool(session, "whoami"))["connected"])

    deadline = time.monotonic() + 15
    while not await ready():
        assert time.monotonic() < deadline, "the MCP server did not reach the hub"
        await asyncio.sleep(0.05)


async def test_the_tools_are_listed_with_their_schemas(
    hub: HubProcess, env: dict[str, str]
) -> None:
    async with mcp_agent(env, hub.url, "claude") as s:
        tools = {t.name: t for t in (await s.list_tools()).tools}
        assert set(tools) == TOOLS
        for t in tools.values():
            assert t.description and len(t.description) < 250
            assert t.input_schema["type"] == "object"
            assert t.input_schema["additionalProperties"] is False
            assert "\\Z" not in json.dumps(t.input_schema)  # ECMAScript patterns
        send = tools["send"].input_schema
        assert set(send["required"]) == {"to", "body"}
        assert send["properties"]["thread"]["type"] == "string"  # optional: not "null"
        assert tools["wait"].input_schema["properties"]["timeout_s"]["maximum"] == 600


async def test_two_mcp_agents_converse(hub: HubProcess, env: dict[str, str]) -> None:
    async with (
        mcp_agent(env, hub.url, "claude") as claude,
        mcp_agent(env, hub.url, "codex") as codex,
    ):
        await connected(claude)
        await connected(codex)
        me = await tool(claude, "whoami")
        assert me["name"] == "claude" and me["channel"] == "default"
        roster = await tool(claude, "roster")
        assert {m["name"] for m in roster["online"]} >= {"claude", "codex"}

        sent = await tool(claude, "send", to="codex", body="review parser.py?", thread="t1")
        assert sent["seq"] > 0 and sent["online"] is True
        got = await tool(codex, "wait", timeout_s=10)
        assert [(m["from"], m["body"], m["thread"]) for m in got["messages"]] == [
            ("claude", "review parser.py?", "t1")
        ]
        await tool(codex, "post", thread="t1", body="on it", to="claude")
        mail = await tool(claude, "inbox")
        assert [m["body"] for m in mail["messages"]] == ["on it"]
        assert (await tool(claude, "inbox"))["messages"] == []  # marked read

        thread = await tool(codex, "read_thread", thread="t1")
        assert [m["body"] for m in thread["messages"]] == ["review parser.py?", "on it"]
        threads = await tool(codex, "threads")
        assert [t["thread"] for t in threads["threads"]] == ["t1"]
        history = await tool(codex, "history", **{"from": "claude"})
        assert [m["body"] for m in history["messages"]] == ["review parser.py?"]


async def test_wait_wakes_within_a_second_and_the_sender_gets_a_read_receipt(
    hub: HubProcess, env: dict[str, str]
) -> None:
    async with (
        mcp_agent(env, hub.url, "codex") as codex,
        Client(hub.url, "alice", channels=[]) as alice,
    ):
        await connected(codex)
        waiting = asyncio.create_task(tool(codex, "wait", timeout_s=30))
        await asyncio.sleep(0.3)  # let the wait block (it returns at once if mail is there)
        assert not waiting.done()
        ok = await alice.send("codex", "ping")
        sent_at = time.monotonic()
        got = await asyncio.wait_for(waiting, 10)
        assert time.monotonic() - sent_at < 1.0
        assert [m["seq"] for m in got["messages"]] == [ok.seq]

        async def receipt() -> Receipt:
            async for item in alice:
                if isinstance(item, Receipt):
                    return item
            raise AssertionError("no receipt")

        r = await asyncio.wait_for(receipt(), 10)
        assert (r.seq, r.by, r.status) == (ok.seq, "codex", "read")


async def test_wait_times_out_cleanly(hub: HubProcess, env: dict[str, str]) -> None:
    async with mcp_agent(env, hub.url, "codex") as codex:
        await connected(codex)
        began = time.monotonic()
        got = await tool(codex, "wait", timeout_s=0.5)
        took = time.monotonic() - began
        assert got == {"messages": [], "count": 0}
        assert 0.5 <= took < 3.0
        assert (await tool(codex, "whoami"))["connected"]  # still serving


async def test_mail_is_handed_out_once_across_restarts_of_the_server(
    hub: HubProcess, env: dict[str, str]
) -> None:
    async with Client(hub.url, "alice", channels=[]) as alice:
        for body in ("one", "two"):
            await alice.send("codex", body)
        async with mcp_agent(env, hub.url, "codex") as codex:
            await connected(codex)
            got = await tool(codex, "wait", timeout_s=5)
            assert [m["body"] for m in got["messages"]] == ["one", "two"]
        await alice.send("codex", "three")
        async with mcp_agent(env, hub.url, "codex") as codex:
            await connected(codex)
            assert [m["body"] for m in (await tool(codex, "inbox"))["messages"]] == ["three"]
            assert (await tool(codex, "wait", timeout_s=0.2))["messages"] == []
            everything = await tool(codex, "inbox", unread_only=False)
            assert [m["body"] for m in everything["messages"]] == ["one", "two", "three"]


async def test_a_waiting_server_outlives_a_hub_restart(
    hub: HubProcess, env: dict[str, str]
) -> None:
    async with mcp_agent(env, hub.url, "codex") as codex:
        await connected(codex)
        waiting = asyncio.create_task(tool(codex, "wait", timeout_s=60))
        await asyncio.sleep(0.2)
        await asyncio.to_thread(hub.restart)
        async with Client(hub.url, "alice", channels=[]) as alice:
            await alice.send("codex", "back")
        got = await asyncio.wait_for(waiting, 30)
        assert [m["body"] for m in got["messages"]] == ["back"]
        await connected(codex)
        assert (await tool(codex, "send", to="alice", body="thanks"))["seq"] > 0


async def test_a_server_started_before_the_hub_says_not_connected_then_works(
    hub_factory: Any, env: dict[str, str]
) -> None:
    hub = hub_factory(start=False)
    from tests.natskit import free_port

    port = free_port()
    async with mcp_agent(env, f"ws://127.0.0.1:{port}", "codex") as codex:
        text = await failure(codex, "send", to="bob", body="hi")
        assert text.startswith("not_connected: ") and f"127.0.0.1:{port}" in text
        await asyncio.to_thread(hub.start, port)
        await connected(codex)
        assert (await tool(codex, "send", to="bob", body="hi"))["seq"] > 0


@pytest.mark.parametrize(
    ("name", "args", "says"),
    [
        ("send", {"to": "bob"}, "bad_argument: Object missing required field `body`"),
        ("send", {"to": "bob", "body": 5}, "bad_argument: Expected `str`, got `int` - at `$.body`"),
        ("send", {"to": "no spaces", "body": "x"}, "bad_argument: Expected `str` matching"),
        ("send", {"to": "bob", "body": ""}, "bad_argument: Expected `str` of length >= 1"),
        ("send", {"to": "bob", "body": "x", "cc": "eve"}, "unknown field `cc`"),
        ("post", {"thread": "../etc", "body": "x"}, "bad_argument: Expected `str` matching"),
        ("inbox", {"limit": 0}, "bad_argument: Expected `int` >= 1 - at `$.limit`"),
        ("inbox", {"limit": 10_000}, "bad_argument: Expected `int` <= 200 - at `$.limit`"),
        ("wait", {"timeout_s": 601}, "bad_argument: Expected `float` <= 600.0"),
        ("wait", {"timeout_s": "soon"}, "bad_argument: Expected `float`, got `str`"),
        ("read_thread", {}, "bad_argument: Object missing required field `thread`"),
        ("history", {"after": -1}, "bad_argument: Expected `int` >= 0"),
        ("roster", {"channel": "#x"}, "bad_argument: Expected `str` matching"),
        ("launch", {}, "unknown_tool: no tool named 'launch'"),
    ],
)
async def test_bad_arguments_are_tool_errors(
    hub: HubProcess, env: dict[str, str], name: str, args: dict[str, Any], says: str
) -> None:
    async with mcp_agent(env, hub.url, "codex") as codex:
        await connected(codex)
        assert says in await failure(codex, name, **args)
        assert (await tool(codex, "whoami"))["connected"]  # the server carries on


async def test_hub_refusals_come_back_with_the_hubs_code(
    hub_factory: Any, env: dict[str, str]
) -> None:
    hub = hub_factory("--max-body", "1024")
    async with mcp_agent(env, hub.url, "codex") as codex:
        await connected(codex)
        text = await failure(codex, "send", to="bob", body="x" * 2000)
        assert text.startswith("body_too_large: "), text
        assert (await tool(codex, "send", to="bob", body="short"))["seq"] > 0


async def test_push_declares_the_channel_and_pushes_each_message(
    hub: HubProcess, env: dict[str, str]
) -> None:
    pushed: list[ChannelParams] = []
    async with Client(hub.url, "alice", channels=[]) as alice:
        early = await alice.send("claude", "while you were away")
        async with mcp_agent(env, hub.url, "claude", "--push", pushed=pushed) as claude:
            await connected(claude)
            ok = await alice.send("claude", "build is green", thread="ci")
            await alice.send("*", "a broadcast is not mail")
            await async_wait_for(lambda: len(pushed) >= 2, 10)
            assert [(p.content, p.meta["from"], p.meta["seq"]) for p in pushed] == [
                ("while you were away", "alice", str(early.seq)),
                ("build is green", "alice", str(ok.seq)),
            ]
            assert pushed[1].meta["thread"] == "ci"
            # pushed = submitted: wait does not hand them out again
            assert (await tool(claude, "wait", timeout_s=0.3))["messages"] == []


async def test_push_is_off_by_default(hub: HubProcess, env: dict[str, str]) -> None:
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "wsbus", "mcp", "--as", "c", "--url", hub.url], env=env
    )
    async with stdio_client(params) as (read, write), ClientSession(read, write) as s:
        init = await s.initialize()
        assert not (init.capabilities.experimental or {})
    pushed: list[ChannelParams] = []
    async with mcp_agent(env, hub.url, "claude", "--push", pushed=pushed) as claude:
        caps = claude.server_capabilities
        assert caps is not None and "claude/channel" in (caps.experimental or {})


async def test_an_mcp_agent_and_a_tmux_agent_converse_with_receipts(
    hub: HubProcess, env: dict[str, str], machines: Callable[[str], Machine]
) -> None:
    m = machines("alpha")
    codex = m.agent("codex")
    m.start_bridge()
    async with mcp_agent(env, hub.url, "claude") as claude:
        await connected(claude)
        sent = await tool(claude, "send", to="codex", body="build the parser")

        async def submitted() -> bool:
            got = await tool(claude, "receipts", seq=sent["seq"])
            by = got["receipts"][0]["by"]
            return by.get("codex", {}).get("status") == "submitted"

        deadline = time.monotonic() + 20
        while not await submitted():
            assert time.monotonic() < deadline, await tool(claude, "receipts")
            await asyncio.sleep(0.1)
        assert any(line.endswith("| build the parser") for line in codex.submitted())

        reply = await asyncio.to_thread(m.wsbus, "send", "--as", "codex", "claude", "parser built")
        assert reply.returncode == 0, reply.stderr
        got = await tool(claude, "wait", timeout_s=10)
        assert [(x["from"], x["body"]) for x in got["messages"]] == [("codex", "parser built")]


def test_without_the_mcp_extra_the_error_names_it(env: dict[str, str]) -> None:
    code = (
        "import sys; sys.modules['mcp'] = None; from wsbus.cli.main import main; "
        "sys.exit(main(['mcp', '--as', 'claude']))"
    )
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert (r.returncode, r.stderr) == (
        2,
        "wsbus: wsbus mcp needs the MCP SDK, which is not installed: pip install 'wsbus[mcp]'\n",
    )


async def test_mcp_agents_lease_files(hub: HubProcess, env: dict[str, str]) -> None:
    async with (
        mcp_agent(env, hub.url, "claude") as claude,
        mcp_agent(env, hub.url, "codex") as codex,
    ):
        await connected(claude)
        await connected(codex)
        got = await tool(claude, "reserve", paths=["src/parser/**"], ttl_s=600, reason="lexer")
        lease = got["lease"]
        assert (lease["holder"], lease["paths"], got["renewed"]) == (
            "claude",
            ["src/parser/**"],
            False,
        )
        assert lease["until"].endswith("Z")
        text = await failure(codex, "reserve", paths=["src/parser/lexer.py"])
        assert text.startswith("lease_conflict: src/parser/lexer.py overlaps src/parser/** ")
        assert "by claude; lexer" in text
        listed = await tool(codex, "reservations", path_prefix="src/")
        assert [x["id"] for x in listed["leases"]] == [lease["id"]]
        assert "bad_path: " in await failure(claude, "reserve", paths=["/abs"])
        assert "bad_argument: " in await failure(claude, "reserve", paths=[])
        ended = await tool(claude, "release", id=lease["id"])
        assert [x["id"] for x in ended["released"]] == [lease["id"]]
        assert (await tool(codex, "reserve", paths=["src/parser/lexer.py"]))["lease"][
            "holder"
        ] == "codex"


async def test_with_a_token_and_no_name_the_server_acts_as_the_tokens_name(
    hub_factory: Any, env: dict[str, str], tmp_path: Path
) -> None:
    tokens = Tokens(tmp_path / "tokens.json")
    hub = hub_factory("--auth", str(tokens.path))
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "wsbus", "mcp", "--url", hub.url],
        env={**env, "WSBUS_TOKEN": tokens.alice},
    )
    async with stdio_client(params) as (read, write), ClientSession(read, write) as s:
        await s.initialize()
        await connected(s)
        assert (await tool(s, "whoami"))["name"] == "alice"
        assert (await tool(s, "send", to="bob", body="from alice"))["seq"] > 0
    params.env = {**env, "WSBUS_TOKEN": tokens.ops}  # opsbot: #ops only
    params.args = [*params.args, "--channel", "ops"]
    async with stdio_client(params) as (read, write), ClientSession(read, write) as s:
        await s.initialize()
        await connected(s)
        assert (await tool(s, "whoami"))["name"] == "opsbot"
        refused = await failure(s, "roster", channel="default")
        assert refused.startswith("forbidden: "), refused
        assert (await failure(s, "history", channel="default")).startswith("forbidden: ")
    params.env = {**env, "WSBUS_TOKEN": "wsb_not_a_token"}
    async with stdio_client(params) as (read, write), ClientSession(read, write) as s:
        await s.initialize()
        deadline = time.monotonic() + 15
        while "refused" not in (text := await failure(s, "send", to="bob", body="x")):
            assert time.monotonic() < deadline, text
            await asyncio.sleep(0.1)
        assert text.startswith("not_connected: the hub refused the connection: ")


@pytest.mark.parametrize(
    ("event", "shape"),
    [
        ("Stop", lambda m: m["decision"] == "block" and m["reason"]),
        ("followup", lambda m: m["followup_message"]),
        (
            "UserPromptSubmit",
            lambda m: (
                m["hookSpecificOutput"]["hookEventName"] == "UserPromptSubmit"
                and m["hookSpecificOutput"]["additionalContext"]
            ),
        ),
    ],
)
async def test_inbox_hook_output_for_agents_hooks(
    hub: HubProcess, env: dict[str, str], event: str, shape: Callable[[dict[str, Any]], Any]
) -> None:
    """`wsbus inbox NAME --hook EVENT`: the mail as a hook's JSON, marked read; then
    nothing; a hub that cannot be reached: nothing, exit 0."""
    env = {**env, "WSBUS_URL": hub.url}
    async with Client(hub.url, "alice", channels=[]) as alice:
        await alice.send("claude", "please rebase")

    def run(*more: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "wsbus", "inbox", "claude", "--hook", event, *more]
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30)

    r = await asyncio.to_thread(run)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert shape(out), out
    text = json.dumps(out)
    assert "from alice:" in text and "please rebase" in text and "not instructions" in text
    r = await asyncio.to_thread(run)
    assert (r.returncode, r.stdout) == (0, "")  # marked read: nothing new
    from tests.natskit import free_port

    env["WSBUS_URL"] = f"ws://127.0.0.1:{free_port()}"
    r = await asyncio.to_thread(run)
    assert (r.returncode, r.stdout) == (0, "") and r.stderr.startswith("wsbus: no mail check: ")


async def test_concurrent_wait_and_inbox_never_hand_out_a_message_twice(
    hub: HubProcess, env: dict[str, str]
) -> None:
    async with (
        mcp_agent(env, hub.url, "codex") as codex,
        Client(hub.url, "alice", channels=[]) as alice,
    ):
        await connected(codex)
        sent = {(await alice.send("codex", f"n{i}")).seq for i in range(30)}
        got: list[int] = []

        async def take(name: str, **args: Any) -> None:
            deadline = time.monotonic() + 30
            while len(got) < len(sent) and time.monotonic() < deadline:
                result = await tool(codex, name, **args)
                got.extend(m["seq"] for m in result["messages"])

        await asyncio.gather(
            take("wait", timeout_s=0.3, limit=3),
            take("inbox", limit=2),
            take("wait", timeout_s=0.3, limit=4),
        )
        assert sorted(got) == sorted(sent)  # each once


async def test_pushed_messages_are_not_returned_by_wait_too(
    hub: HubProcess, env: dict[str, str]
) -> None:
    pushed: list[ChannelParams] = []
    async with (
        mcp_agent(env, hub.url, "claude", "--push", pushed=pushed) as claude,
        Client(hub.url, "alice", channels=[]) as alice,
    ):
        await connected(claude)
        waited: list[int] = []
        stop = asyncio.Event()

        async def listen() -> None:
            while not stop.is_set():
                result = await tool(claude, "wait", timeout_s=0.2)
                waited.extend(m["seq"] for m in result["messages"])

        listener = asyncio.create_task(listen())
        sent = {(await alice.send("claude", f"p{i}")).seq for i in range(20)}
        await async_wait_for(lambda: len(pushed) + len(waited) >= len(sent), 20)
        stop.set()
        await listener
        handed = [int(p.meta["seq"]) for p in pushed] + waited
        assert sorted(handed) == sorted(sent)  # each exactly once, pushed or waited


@pytest.mark.skipif(ENGINE == "nats", reason="holds the SQLite store's write lock")
async def test_a_sync_ping_comes_after_the_acks_before_it(hub: HubProcess) -> None:
    """What `wait`, `inbox` and `wsbus inbox --mark-read` rely on: after acks, a ping
    with sync is answered once the receipts are stored — here while another process
    holds the database's write lock, so the commit waits for it."""
    async with (
        Client(hub.url, "alice", channels=[]) as alice,
        Client(hub.url, "codex", channels=[]) as codex,
    ):
        seqs = [(await alice.send("codex", f"m{i}")).seq for i in range(5)]
        holder = await asyncio.to_thread(_hold_write_lock, hub.db, 1.0)
        try:
            for seq in seqs:
                await codex.ack(seq, "read")
            await codex.ping(sync=True, timeout=30)
            left = await codex.history(to="codex", pending=True, after=0)
        finally:
            await asyncio.to_thread(holder.wait, 10)
        assert left.events == [], [e.seq for e in left.events]
