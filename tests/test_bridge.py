"""The tmux bridge end to end: a hub process, real tmux servers, fake agent TUIs.

Each test builds one or two simulated machines (tests/tmuxkit.py): a private tmux
server, a registry and a ``wsbus bridge`` process, all talking to one hub.
Assertions are on what the fake TUIs actually received as submitted lines.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from wsbus.cli.bridge.inject import stamp_hm
from wsbus.cli.conventions import wait_receipt

from wsbus.client import Client, SendResult

from .helpers import HubProcess, async_wait_for, wait_for
from .tmuxkit import FAKE_TUI, TMUX, Machine

pytestmark = pytest.mark.skipif(TMUX is None, reason="tmux is not installed")

MARKER = "«agent-msg»"


async def until(check: Callable[[], Awaitable[bool]], timeout: float) -> None:
    """Poll an async condition with a deadline."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.05)


async def sender(hub: HubProcess, name: str) -> Client:
    c = Client(hub.url, name, channels=[], presence=False)
    await c.connect()
    return c


async def submitted(hub: HubProcess, to: str, body: str, timeout: float = 20) -> SendResult:
    """Send ``body`` from claude to ``to`` and wait until its bridge reports it submitted."""
    c = await sender(hub, "claude")
    try:
        ok = await c.send(to, body)
        got = await wait_receipt(c, ok.seq, {to}, timeout=timeout)
        assert got[to].status == "submitted", got
    finally:
        await c.close()
    return ok


async def test_short_message_is_one_submitted_line_with_a_receipt(
    hub: HubProcess, machines: Callable[[str], Machine]
) -> None:
    m = machines("alpha")
    codex = m.agent("codex")
    m.start_bridge()
    ok = await submitted(hub, "codex", "build the parser")
    assert ok.online is True
    line = f"{MARKER} from=claude {stamp_hm(ok.ts)} | build the parser"
    assert codex.submitted() == [line]


async def test_multiline_body_arrives_as_one_doorbell_line_pointing_at_a_copy(
    hub: HubProcess, machines: Callable[[str], Machine]
) -> None:
    m = machines("alpha")
    codex = m.agent("codex")
    m.start_bridge()
    body = "step 1: parse\nstep 2: build\nstep 3: ship"
    ok = await submitted(hub, "codex", body)
    lines = codex.submitted()
    assert len(lines) == 1, lines
    line = lines[0]
    assert line.startswith(f"{MARKER} from=claude {stamp_hm(ok.ts)} | long message (3 lines")
    assert f"wsbus show {ok.seq}" in line
    copy = Path(line.split("read it: ")[1].split(" or ")[0])
    assert copy.read_text().endswith(body + "\n")
    shown = m.wsbus("show", str(ok.seq), "--body")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == body + "\n"


async def test_control_characters_neither_interrupt_nor_corrupt(
    hub: HubProcess, machines: Callable[[str], Machine]
) -> None:
    m = machines("alpha")
    codex = m.agent("codex")
    m.start_bridge()
    evil = "stop\x03 now\x1b[2J\x1b]0;pwned\x07 \x7fdone\u202e!"
    ok = await submitted(hub, "codex", evil)
    assert codex.submitted() == [f"{MARKER} from=claude {stamp_hm(ok.ts)} | stop now done!"]
    assert "<interrupt>" not in codex.records()


async def test_fast_enter_is_retried_until_the_message_is_submitted(
    hub: HubProcess, machines: Callable[[str], Machine]
) -> None:
    # this TUI takes an Enter within 200 ms of typing as nothing; the agent's
    # enter_delay (0.05 s) is shorter, so only the submission check saves it
    m = machines("alpha")
    codex = m.agent("codex", "--ignore-fast-enter-ms", "200", enter_delay=0.05)
    m.start_bridge()
    ok = await submitted(hub, "codex", "submit me once")
    assert codex.submitted() == [f"{MARKER} from=claude {stamp_hm(ok.ts)} | submit me once"]


async def test_a_message_for_a_down_session_is_delivered_when_it_starts(
    hub: HubProcess, machines: Callable[[str], Machine]
) -> None:
    m = machines("alpha")
    codex = m.agent("codex")
    codex.stop()
    m.start_bridge()
    c = await sender(hub, "claude")
    try:
        ok = await c.send("codex", "are you there?")
        got = await wait_receipt(c, ok.seq, {"codex"}, timeout=20)
        assert got["codex"].status == "session_down", got
        codex.start()
        got = await wait_receipt(c, ok.seq, {"codex"}, timeout=20)
        assert got["codex"].status == "submitted", got
    finally:
        await c.close()
    assert codex.submitted() == [f"{MARKER} from=claude {stamp_hm(ok.ts)} | are you there?"]


async def test_concurrent_senders_never_interleave_in_one_pane(
    hub: HubProcess, machines: Callable[[str], Machine]
) -> None:
    m = machines("alpha")
    codex = m.agent("codex", enter_delay=0.05)
    m.start_bridge()
    a, b = await sender(hub, "alice"), await sender(hub, "bob")
    n = 6
    try:
        sends = [a.send("codex", f"alice message {i} " + "a" * 60) for i in range(n)]
        sends += [b.send("codex", f"bob message {i} " + "b" * 60) for i in range(n)]
        oks = await asyncio.gather(*sends)
        assert len({ok.seq for ok in oks}) == 2 * n
        wait_for(lambda: len(codex.submitted()) >= 2 * n, timeout=60)
    finally:
        await a.close()
        await b.close()
    lines = codex.submitted()
    assert len(lines) == 2 * n, lines
    for who, ch in (("alice", "a"), ("bob", "b")):
        mine = [ln for ln in lines if f"from={who} " in ln]
        assert [ln.split("| ", 1)[1] for ln in mine] == [
            f"{who} message {i} " + ch * 60 for i in range(n)
        ]


async def test_bridge_restart_types_nothing_twice_and_delivers_what_waited(
    hub: HubProcess, machines: Callable[[str], Machine]
) -> None:
    m = machines("alpha")
    codex = m.agent("codex", enter_delay=0.05)
    m.start_bridge()
    c = await sender(hub, "claude")
    try:
        first = await c.send("codex", "before the restart")
        assert (await wait_receipt(c, first.seq, {"codex"}, 20))["codex"].status == "submitted"
        m.stop_bridge()
        later = await c.send("codex", "while the bridge was away")
        assert later.online is False
        m.start_bridge()
        got = await wait_receipt(c, later.seq, {"codex"}, timeout=20)
        assert got["codex"].status == "submitted"
    finally:
        await c.close()
    bodies = [ln.split("| ", 1)[1] for ln in codex.submitted()]
    assert bodies == ["before the restart", "while the bridge was away"]


async def test_broadcast_reaches_the_other_local_agents_not_the_sender(
    hub: HubProcess, machines: Callable[[str], Machine]
) -> None:
    m = machines("alpha")
    tuis = {n: m.agent(n, enter_delay=0.05) for n in ("claude", "codex", "grok")}
    m.start_bridge()
    c = await sender(hub, "claude")
    try:
        ok = await c.send("*", "standup in 5")
        got = await wait_receipt(c, ok.seq, {"codex", "grok"}, timeout=30)
        assert {n: r.status for n, r in got.items()} == {"codex": "submitted", "grok": "submitted"}
    finally:
        await c.close()
    line = f"{MARKER} from=claude {stamp_hm(ok.ts)} | standup in 5"
    assert tuis["codex"].submitted() == [line]
    assert tuis["grok"].submitted() == [line]
    assert tuis["claude"].submitted() == []


async def test_thread_post_rings_a_doorbell_at_a_local_mirror(
    hub: HubProcess, machines: Callable[[str], Machine]
) -> None:
    m = machines("alpha")
    grok = m.agent("grok", enter_delay=0.05)
    m.start_bridge()
    c = await sender(hub, "claude")
    try:
        ok = await c.send(
            "grok",
            "daily_report.py is in local fallback [no-reply]",
            thread="hermes/pmxt-execution",
            meta={"model": "claude-opus-4-7"},
        )
        got = await wait_receipt(c, ok.seq, {"grok"}, timeout=20)
        assert got["grok"].status == "submitted"
    finally:
        await c.close()
    mirror = m.threads / "hermes" / "pmxt-execution.md"
    day = time.strftime("%Y-%m-%d %H:%MZ", time.gmtime(ok.ts))
    assert mirror.read_text() == (
        f"\n## [claude→grok (claude-opus-4-7) {day}]\n"
        "daily_report.py is in local fallback [no-reply]\n"
    )
    assert grok.submitted() == [
        f"{MARKER} claude posted in hermes/pmxt-execution — review it ({mirror}) (no reply needed)"
    ]


async def test_two_machines_talk_through_one_hub_and_see_each_other_up(
    hub: HubProcess, machines: Callable[[str], Machine]
) -> None:
    a, b = machines("alpha"), machines("beta")
    claude = a.agent("claude", enter_delay=0.05)
    grok = b.agent("grok", enter_delay=0.05)
    a.start_bridge()
    b.start_bridge()
    ca, cb = await sender(hub, "claude"), await sender(hub, "grok")
    try:
        to_grok = await ca.send("grok", "hello from alpha")
        to_claude = await cb.send("claude", "hello from beta")
        assert (await wait_receipt(ca, to_grok.seq, {"grok"}, 20))["grok"].status == "submitted"
        assert (await wait_receipt(cb, to_claude.seq, {"claude"}, 20))[
            "claude"
        ].status == "submitted"
    finally:
        await ca.close()
        await cb.close()
    assert [ln.split("| ", 1)[1] for ln in grok.submitted()] == ["hello from alpha"]
    assert [ln.split("| ", 1)[1] for ln in claude.submitted()] == ["hello from beta"]
    # a second bridge cannot take a name the first one serves
    b.agent("claude", registry=True)  # beta's registry now claims claude too
    wait_for(lambda: "the hub refused 'claude'" in b.bridge_output(), timeout=20)


async def test_roster_state_follows_the_pane(
    hub: HubProcess, machines: Callable[[str], Machine]
) -> None:
    m = machines("alpha")
    codex = m.agent("codex")
    c = Client(hub.url, "codex", channels=[], presence=False)
    await c.connect()
    try:
        await c.register("acme", "codex", session="codex", host="alpha", model="gpt-5-codex")
        m.start_bridge()

        async def state() -> str | None:
            r = await c.roster("acme")
            return next(e.state for e in r.registered if e.name == "codex")

        def is_(value: str | None) -> Callable[[], Awaitable[bool]]:
            async def check() -> bool:
                return await state() == value

            return check

        await until(is_("up"), timeout=20)
        codex.stop()
        await until(is_("down"), timeout=20)
        m.stop_bridge()
        await until(is_(None), timeout=20)
    finally:
        await c.close()
    assert json.loads(m.registry.read_text())["agents"]["codex"]["session"] == "codex"


async def test_a_registration_reaches_the_bridge_at_once(
    hub: HubProcess, machines: Callable[[str], Machine]
) -> None:
    """``register`` then ``roster``: the member shows up (not ``?``) without waiting for
    the bridge's periodic rescan (set to a minute here); so does a registry agent added
    while the bridge runs."""
    m = machines("alpha")
    m.agent("codex", registry=False)
    grok = m.agent("grok", registry=False)
    m.start_bridge("--scan-interval", "60")  # the last --scan-interval wins

    def status(name: str) -> str | None:
        r = m.run("roster", "acme")
        assert r.returncode == 0, r.stderr
        rows = [ln.split() for ln in r.stdout.splitlines()[2:]]
        return next((row[4] for row in rows if row[0] == name), None)

    r = m.run("register", "--project", "acme", "--as", "codex", "--session", "codex")
    assert r.returncode == 0, r.stderr
    wait_for(lambda: status("codex") == "up", timeout=10)
    assert "serving codex" in m.bridge_output()
    # the registry, too: grok is added to it (as `agent_comms add` does) and is served
    registry = {"agents": {"grok": {"session": "grok", "enabled": True, "enter_delay": 0.05}}}
    m.registry.parent.mkdir(parents=True, exist_ok=True)
    m.registry.write_text(json.dumps(registry))
    wait_for(lambda: "serving codex, grok" in m.bridge_output(), timeout=10)
    await submitted(hub, "grok", "served at once")
    assert [ln.split("| ", 1)[1] for ln in grok.submitted()] == ["served at once"]


async def test_revive_cmd_from_the_registry_brings_the_session_back(
    hub: HubProcess, machines: Callable[[str], Machine]
) -> None:
    m = machines("alpha")
    codex = m.agent("codex")
    codex.stop()
    # the registry (local config, never a message) says how to start it again
    revive = f"{m.server.env_value} new-session -d -s codex -x 200 -y 30 " + " ".join(
        f"'{w}'" for w in (sys.executable, str(FAKE_TUI), str(codex.out))
    )
    m.agent_entry("codex", revive_cmd=revive, enter_delay=0.05)
    m.start_bridge()
    ready = codex.records().count("<ready>")
    await submitted(hub, "codex", "wake up", timeout=30)
    assert codex.records().count("<ready>") == ready + 1  # started by the revive_cmd
    # the receipt comes from the pane's screen; the agent's record of it may lag a little
    await async_wait_for(lambda: codex.submitted() and codex.submitted()[-1].endswith("| wake up"))


async def test_inbox_prints_unread_and_marks_read(
    hub: HubProcess, machines: Callable[[str], Machine]
) -> None:
    m = machines("alpha")  # no bridge: a hook reads the inbox instead
    c = await sender(hub, "claude")
    try:
        first = await c.send("codex", "first")
        await c.send("codex", "second\nwith two lines")
        out = m.wsbus("inbox", "codex", "--unread")
        assert out.returncode == 0, out.stderr
        assert out.stdout.count("from claude:") == 2 and "second\nwith two lines\n---" in out.stdout
        marked = m.wsbus("inbox", "codex", "--unread", "--mark-read")
        assert marked.stdout == out.stdout
        got = await wait_receipt(c, first.seq, {"codex"}, timeout=10)
        assert got["codex"].status == "read"
        assert m.wsbus("inbox", "codex", "--unread").stdout == ""
        assert m.wsbus("inbox", "codex", "-n", "1").stdout.count("from claude:") == 1
    finally:
        await c.close()


def test_wsbus_send_spools_only_when_asked_and_relay_forwards_once(
    hub: HubProcess, machines: Callable[[str], Machine]
) -> None:
    m = machines("alpha")
    down = dict(m.env, WSBUS_URL="ws://127.0.0.1:9", WSBUS_TIMEOUT="1")
    plain = subprocess.run(
        [sys.executable, "-m", "wsbus", "send", "--as", "claude", "codex", "hi"],
        capture_output=True, text=True, env=down, timeout=60,
    )  # fmt: skip
    assert plain.returncode == 3 and "Traceback" not in plain.stderr
    spooled = subprocess.run(
        [sys.executable, "-m", "wsbus", "send", "--as", "claude", "codex", "--spool", "hi"],
        capture_output=True, text=True, env=down, timeout=60,
    )  # fmt: skip
    assert spooled.returncode == 0 and spooled.stdout.startswith("spooled:"), spooled
    assert len(list(m.spool.glob("*.json"))) == 1
    relayed = m.wsbus("relay")
    assert relayed.returncode == 0 and relayed.stdout.startswith("relayed 1"), relayed
    assert m.wsbus("relay").stdout.startswith("nothing to relay")
    hist = m.wsbus("history", "--to", "codex", "--json")
    assert [json.loads(line)["body"] for line in hist.stdout.splitlines()] == ["hi"]


async def test_a_second_bridge_on_the_same_host_takes_over_and_the_first_stops(
    hub: HubProcess, machines: Callable[[str], Machine]
) -> None:
    m = machines("alpha")
    codex = m.agent("codex", enter_delay=0.05)
    m.start_bridge()
    first = m.bridge
    assert first is not None
    m.bridge = None
    m.start_bridge()  # e.g. `wsbus bridge` typed twice
    assert first.wait(20) == 1
    assert "another bridge for host alpha took over" in m.bridge_output()
    assert "Traceback" not in m.bridge_output()
    await submitted(hub, "codex", "exactly once")
    assert [ln.split("| ", 1)[1] for ln in codex.submitted()] == ["exactly once"]


async def test_a_bridge_moved_to_another_hub_does_not_type_its_history(
    hub: HubProcess, hub_factory: Callable[..., HubProcess], machines: Callable[[str], Machine]
) -> None:
    m = machines("alpha")
    codex = m.agent("codex", enter_delay=0.05)
    m.start_bridge()
    ok = await submitted(hub, "codex", "on hub one")
    m.stop_bridge()
    other = hub_factory("--memory")  # a new database: a different hub id, seqs from 1
    c2 = await sender(other, "claude")
    try:
        for i in range(3):
            await c2.send("*", f"old news {i}")  # before the bridge came: not for it
        m.env["WSBUS_URL"] = other.url
        m.start_bridge()
        wait_for(lambda: "different hub" in m.bridge_output(), timeout=20)
        ok = await c2.send("codex", "fresh")
        assert (await wait_receipt(c2, ok.seq, {"codex"}, 20))["codex"].status == "submitted"
    finally:
        await c2.close()
    assert [ln.split("| ", 1)[1] for ln in codex.submitted()] == ["on hub one", "fresh"]


async def test_show_on_a_terminal_strips_escape_sequences_a_pipe_keeps_them(
    hub: HubProcess, machines: Callable[[str], Machine]
) -> None:
    import os
    import pty

    m = machines("alpha")
    c = await sender(hub, "mallory")
    try:
        ok = await c.send("alice", "hi\x1b]52;c;cGF5bG9hZA==\x07 there\x1b[2J")
    finally:
        await c.close()
    piped = m.wsbus("show", str(ok.seq), "--body")
    assert piped.stdout == "hi\x1b]52;c;cGF5bG9hZA==\x07 there\x1b[2J\n"  # bytes for scripts
    leader, follower = pty.openpty()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "wsbus", "show", str(ok.seq), "--body"],
            stdout=follower, stderr=subprocess.PIPE, env=m.env, timeout=60,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        seen = os.read(leader, 4096).decode()
    finally:
        os.close(leader)
        os.close(follower)
    assert seen.replace("\r\n", "\n") == "hi there\n"  # nothing reaches the terminal
