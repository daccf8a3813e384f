"""``agent_comms``: the tmux-agent-comms commands, run as the real console script.

Each test runs the command as a subprocess against a real hub process; a bridge
is simulated in the test by a ``Client(kind="bridge")`` that acknowledges what it
gets, and the tmux tests use private tmux servers (only those are killed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import stat
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from wsbus.cli.comms.main import TABLE, build_parser

from wsbus.client import Client
from wsbus.schema import Event

from .helpers import HubProcess, async_wait_for, wait_for
from .tmuxkit import TMUX, Machine, TmuxServer, Tui

SCRIPT = Path(sys.executable).parent / "agent_comms"
COMMAND = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "wsbus.cli.comms.main"]
HOST = "testhost"
MARKER = "«agent-msg»"

needs_tmux = pytest.mark.skipif(TMUX is None, reason="tmux is not installed")


def run(env: dict[str, str], *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*COMMAND, *args], capture_output=True, text=True, env=env, timeout=timeout
    )


async def arun(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    """Run the command without blocking the loop (a simulated bridge answers meanwhile)."""
    proc = await asyncio.create_subprocess_exec(
        *COMMAND, *args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def comms_env(env: dict[str, str], root: Path, url: str) -> dict[str, str]:
    cfg = root / "agent-comms"
    e = {
        **env,
        "WSBUS_URL": url,
        "WSBUS_HOSTNAME": HOST,
        "AGENT_COMMS_REGISTRY": str(cfg / "registry.json"),
        "AGENT_COMMS_PROJECTS": str(cfg / "projects"),
        "AGENT_COMMS_THREADS": str(cfg / "threads"),
        "AGENT_COMMS_LOG": str(cfg / "comms.log"),
        "AGENT_COMMS_JOIN_DOC": str(cfg / "coms_join.md"),
        "WSBUS_SPOOL": str(root / "spool"),
        "XDG_STATE_HOME": str(root / "state"),
        # a tmux server nobody started: the tests never see the user's sessions
        "AGENT_COMMS_TMUX": f"{TMUX or 'tmux'} -L wsbus-none-{os.getpid()} -f /dev/null",
    }
    e.pop("TMUX", None)
    e.pop("TMUX_PANE", None)
    return e


@pytest.fixture
def cenv(env: dict[str, str], tmp_path: Path, hub: HubProcess) -> dict[str, str]:
    return comms_env(env, tmp_path, hub.url)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stamp(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%MZ")


def write_registry(e: dict[str, str], agents: dict[str, dict[str, Any]]) -> None:
    path = Path(e["AGENT_COMMS_REGISTRY"])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"agents": agents}))


class Watcher:
    """A websocket client that records every event of some channels."""

    def __init__(self, url: str, channels: list[str]) -> None:
        self.client = Client(url, "watcher", channels=channels, watch=True, presence=False)
        self.events: list[Event] = []
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.client.connect()
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for ev in self.client.events():
            self.events.append(ev)

    async def close(self) -> None:
        if self.task:
            self.task.cancel()
        await self.client.close()


@pytest.fixture
async def watcher(hub: HubProcess) -> AsyncIterator[Callable[[list[str]], Any]]:
    made: list[Watcher] = []

    async def make(channels: list[str]) -> Watcher:
        w = Watcher(hub.url, channels)
        await w.start()
        made.append(w)
        return w

    yield make
    for w in made:
        await w.close()


class FakeBridge:
    """Acts as the bridge for some names: acknowledges each event as ``policy`` says."""

    def __init__(self, url: str, names: list[str], channels: list[str], policy: dict[str, Any]):
        self.client = Client(url, names=names, channels=channels, kind="bridge", presence=False)
        self.policy = policy
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> FakeBridge:
        await self.client.connect()
        self.task = asyncio.create_task(self._serve())
        return self

    async def _serve(self) -> None:
        async for ev in self.client.events():
            names = self.client.names if ev.to == "*" else [ev.to]
            for name in names:
                if name == ev.from_:
                    continue
                status, reason = self.policy.get(name, ("submitted", None))
                await self.client.ack(ev.seq, status, reason=reason, name=name)

    async def close(self) -> None:
        if self.task:
            self.task.cancel()
        await self.client.close()


# ---------------------------------------------------------------------- help


def test_every_command_has_help_with_examples() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    names = {c.name for c in TABLE}
    assert names >= {"send", "broadcast", "post", "read", "threads", "register", "unregister",
                     "roster", "invite", "init-join", "discover", "list", "add", "remove",
                     "enable", "disable", "whoami", "log", "init", "relay"}  # fmt: skip
    for name, p in sub.choices.items():
        text = p.format_help()
        assert "example" in text.lower() and p.description, name
    assert "example" in parser.format_help().lower()


def test_help_runs_and_wsbus_delegates(env: dict[str, str]) -> None:
    r = run(env, "post", "--help")
    assert r.returncode == 0 and "agent_comms post" in r.stdout and "--to" in r.stdout
    w = subprocess.run(
        [sys.executable, "-m", "wsbus", "roster", "--help"], capture_output=True, text=True, env=env
    )
    assert w.returncode == 0 and "agent_comms roster" in w.stdout and "example" in w.stdout


# ---------------------------------------------------------------------- rosters


async def test_register_collisions_force_notice_and_unregister(
    cenv: dict[str, str], watcher: Callable[[list[str]], Any]
) -> None:
    w = await watcher(["acme"])
    write_registry(cenv, {"cc": {"session": "s3", "enabled": True}})
    rc, out, err = await arun(
        cenv, "register", "--project", "acme", "--as", "claude", "--session", "s1",
        "--model", "opus", "--role", "reasoning",
    )  # fmt: skip
    assert (rc, err) == (0, "")
    assert out == (
        "registered: claude in project 'acme' (session=s1)\n"
        "teammates: (none yet)\n"
        'to message the project:  agent_comms post acme "<your message>"\n'
    )
    await async_wait_for(lambda: w.events)
    notice = w.events[0]
    assert (notice.kind, notice.to, notice.channel) == ("notice", "*", "acme")
    assert notice.from_ == "claude"
    assert notice.body == (
        "claude (opus, reasoning) joined project 'acme' — roster: agent_comms roster acme"
    )

    rc, out, _ = await arun(cenv, "register", "--project", "acme", "--as", "claude",
                            "--session", "s2", "--model", "gpt-5")  # fmt: skip
    assert rc == 0 and out.startswith("registered: claude-2 in project 'acme' (session=s2)\n")
    assert "teammates: claude\n" in out
    rc, out, _ = await arun(cenv, "register", "--project", "acme", "--session", "s1", "--as",
                            "claude", "--role", "planning")  # fmt: skip
    assert rc == 0 and out.startswith("updated: claude in project 'acme' (session=s1)\n")

    rc, out, err = await arun(cenv, "register", "--project", "acme", "--as", "claude",
                              "--session", "s3")  # fmt: skip
    assert (rc, out) == (1, "")
    assert err == "session 's3' belongs to registry agent 'cc'; use --as cc or --force\n"
    rc, out, _ = await arun(cenv, "register", "--project", "acme", "--as", "claude",
                            "--session", "s3", "--force")  # fmt: skip
    assert rc == 0 and out.startswith("registered: claude-3 in project 'acme'")

    rc, out, err = await arun(cenv, "register", "--project", "acme")
    assert rc == 2 and out == "" and err.startswith("couldn't detect your tmux session")
    assert len(err.strip().splitlines()) == 3

    await async_wait_for(lambda: len(w.events) >= 3)
    assert [e.body.split(" ")[0] for e in w.events] == ["claude", "claude-2", "claude-3"]
    local = json.loads((Path(cenv["AGENT_COMMS_PROJECTS"]) / "acme.json").read_text())
    assert local["project"] == "acme"
    assert local["members"]["claude"]["role"] == "planning"
    assert {"session": "s2", "model": "gpt-5", "host": HOST}.items() <= local["members"][
        "claude-2"
    ].items()
    assert stat.S_IMODE((Path(cenv["AGENT_COMMS_PROJECTS"]) / "acme.json").stat().st_mode) == 0o600

    rc, out, _ = await arun(cenv, "unregister", "--project", "acme", "--as", "claude-3")
    assert (rc, out) == (0, "unregistered: claude-3 from project 'acme'\n")
    rc, _, err = await arun(cenv, "unregister", "--project", "acme", "--as", "claude-3")
    assert rc == 1 and err == "not a member: claude-3 in project 'acme'\n"
    local = json.loads((Path(cenv["AGENT_COMMS_PROJECTS"]) / "acme.json").read_text())
    assert sorted(local["members"]) == ["claude", "claude-2"]


async def test_roster_shows_host_and_bridge_status(cenv: dict[str, str], hub: HubProcess) -> None:
    await arun(cenv, "register", "--project", "acme", "--as", "claude", "--session", "s1",
               "--model", "claude-opus-4-7", "--role", "orchestration")  # fmt: skip
    await arun(cenv, "register", "--project", "acme", "--as", "codex", "--session", "s2")
    rc, out, _ = await arun(cenv, "roster", "acme")
    assert rc == 0
    assert out.splitlines() == [
        "project 'acme' — 2 member(s):",
        "  MEMBER        SESSION       HOST          MODEL                         STATUS ROLE",
        "  claude        s1            testhost      claude-opus-4-7               ?      orchestration",  # noqa: E501
        "  codex         s2            testhost      unknown                       ?      ",
    ]  # fmt: skip
    bridge = await FakeBridge(hub.url, ["claude", "codex"], ["default", "acme"], {}).start()
    try:
        await bridge.client.status({"claude": True, "codex": False})

        async def statuses() -> list[str]:
            return [line[74:81].strip() for line in (await arun(cenv, "roster", "acme"))[1]
                    .splitlines()[2:]]  # fmt: skip

        deadline = asyncio.get_running_loop().time() + 10
        while (got := await statuses()) != ["up", "down"]:
            assert asyncio.get_running_loop().time() < deadline, got
    finally:
        await bridge.close()
    rc, out, _ = await arun(cenv, "roster", "nobody")
    assert (rc, out) == (0, "project 'nobody': no members yet\n")


async def test_list_shows_the_registry_and_every_project_member(
    cenv: dict[str, str], hub: HubProcess
) -> None:
    rc, out, _ = await arun(cenv, "ls")
    assert rc == 0
    assert out.splitlines()[1].startswith("(none yet: the registry ")  # says where to look
    # no registry at all: agents registered themselves into projects (the join doc's way)
    for project, name, session in (("acme", "claude", "s1"), ("acme", "codex", "s2"),
                                   ("ops", "grok", "s3")):  # fmt: skip
        rc, _, err = await arun(cenv, "register", "--project", project, "--as", name,
                                "--session", session)  # fmt: skip
        assert rc == 0, err
    header = f"{'AGENT':<16}{'SESSION':<16}{'STATUS':<8}{'EN':<4}DESC"
    members = [
        "",
        "project members (details: agent_comms roster PROJECT):",
        f"{'PROJECT':<16}{'MEMBER':<16}{'SESSION':<16}{'STATUS':<8}HOST",
        f"{'acme':<16}{'claude':<16}{'s1':<16}{'?':<8}{HOST}",
        f"{'acme':<16}{'codex':<16}{'s2':<16}{'?':<8}{HOST} *self",
        f"{'ops':<16}{'grok':<16}{'s3':<16}{'?':<8}{HOST}",
    ]
    rc, out, err = await arun({**cenv, "AGENT_COMMS_SELF": "codex"}, "ls")
    assert (rc, err) == (0, "")
    assert out.splitlines() == [header, *members]
    # with a registry too: its table first, as the original prints it
    write_registry(cenv, {"aider": {"session": "aider", "enabled": True, "desc": "Aider"}})
    rc, out, _ = await arun({**cenv, "AGENT_COMMS_SELF": "codex"}, "list")
    assert out.splitlines() == [
        header,
        f"{'aider':<16}{'aider':<16}{'down':<8}{'y':<4}Aider",
        *members,
    ]
    # the hub down: the local roster files (written by register), with a note; this
    # host's members are checked in tmux here (no session runs: down)
    down = {**cenv, "WSBUS_URL": f"ws://127.0.0.1:{free_port()}", "AGENT_COMMS_SELF": "codex"}
    rc, out, err = await arun(down, "ls")
    assert rc == 0 and out.splitlines()[2:] == [m.replace(" ?      ", " down   ") for m in members]
    assert err.startswith("hub unreachable (") and err.endswith("from the local files\n")


# ---------------------------------------------------------------------- threads


async def test_post_to_project_read_and_threads(
    cenv: dict[str, str], hub: HubProcess, watcher: Callable[[list[str]], Any]
) -> None:
    await arun(cenv, "register", "--project", "acme", "--as", "claude", "--session", "s1",
               "--model", "opus")  # fmt: skip
    await arun(cenv, "register", "--project", "acme", "--as", "codex", "--session", "s2")
    w = await watcher(["acme", "default"])
    mirror = Path(cenv["AGENT_COMMS_THREADS"]) / "acme" / "acme.md"
    rc, out, err = await arun(cenv, "post", "acme", "hello", "team", "--from", "claude")
    assert (rc, err) == (0, "")
    assert out == f"posted to {mirror}  | doorbell → 1 (project)\n"
    rc, out, _ = await arun(
        cenv, "post", "acme", "just for you", "--to", "codex", "--from", "claude"
    )
    assert rc == 0 and "doorbell → 1 (project)" in out
    rc, out, err = await arun(cenv, "post", "acme", "x", "--to", "codx", "--from", "claude")
    assert (rc, out) == (1, "")
    assert err == "unknown recipient 'codx' — did you mean 'codex'?\n"
    write_registry(cenv, {"grok": {"session": "grok", "enabled": True}})
    rc, out, err = await arun(cenv, "post", "acme", "x", "--to", "grok", "--from", "claude")
    assert (rc, out) == (1, "") and err.startswith("not in project 'acme': grok (register it")

    await async_wait_for(lambda: len([e for e in w.events if e.thread]) >= 2)
    posts = [e for e in w.events if e.thread]
    assert [(e.channel, e.thread, e.to, (e.meta or {}).get("model")) for e in posts] == [
        ("acme", "acme", "*", "opus"),
        ("acme", "acme", "codex", "opus"),
    ]
    expected = (
        f"\n## [claude (opus) {stamp(posts[0].ts)}]\nhello team\n"
        f"\n## [claude→codex (opus) {stamp(posts[1].ts)}]\njust for you\n"
    )
    rc, out, _ = await arun(cenv, "read", "acme")
    assert (rc, out) == (0, expected + "\n")
    assert mirror.read_text() == expected
    rc, out, _ = await arun(cenv, "read", "acme", "-n", "1")
    assert out == f"## [claude→codex (opus) {stamp(posts[1].ts)}]\njust for you\n\n"

    rc, out, _ = await arun(cenv, "post", "notes/plan", "draft one", "--from", "claude")
    assert rc == 0 and "notes/plan.md  | doorbell → 2 (registry)" in out  # grok, watcher
    rc, out, _ = await arun(cenv, "threads")
    lines = out.splitlines()
    assert [line.split()[:3] for line in lines] == [["acme/acme", "2", "entries"],
                                                     ["notes/plan", "1", "entries"]]  # fmt: skip
    assert lines[0].startswith(f"{'acme/acme':<32}{2:>4} entries   last ")
    rc, out, err = await arun(cenv, "read", "nope")
    assert (rc, out, err) == (1, "", "no thread: nope\n")
    rc, out, err = await arun(cenv, "post", "../etc", "x", "--from", "claude")
    assert rc == 2 and "'..'" in err


# ---------------------------------------------------------------------- send / broadcast


async def test_send_receipts_queue_unknown_disabled_and_broadcast(
    cenv: dict[str, str], hub: HubProcess
) -> None:
    write_registry(cenv, {
        "bob": {"session": "bob-pane", "enabled": True},
        "off": {"session": "off", "enabled": False},
    })  # fmt: skip
    await arun(cenv, "register", "--project", "acme", "--as", "zed", "--session", "z1")
    policy = {"carol": ("unsubmitted", "still in composer"), "dave": ("failed", "no pane")}
    bridge = await FakeBridge(hub.url, ["bob", "carol", "dave"], ["default"], policy).start()
    try:
        assert await arun(cenv, "send", "bob", "hi", "there", "--from", "alice") == (
            0, "delivered: alice -> bob (bob-pane)\n", "")  # fmt: skip
        rc, out, _ = await arun(cenv, "send", "carol", "hi", "--from", "alice")
        assert (rc, out) == (1, "UNSUBMITTED: alice -> carol (?) — text sits in composer; "
                                "raise this agent's enter_delay\n")  # fmt: skip
        rc, out, _ = await arun(cenv, "send", "dave", "hi", "--from", "alice")
        assert (rc, out) == (1, "FAILED: alice -> dave — no pane\n")
        rc, out, _ = await arun(cenv, "send", "bob", "quick", "--no-confirm", "--from", "alice")
        assert rc == 0 and out.startswith("sent: alice -> bob #")
        rc, out, _ = await arun(cenv, "send", "zed", "later", "--from", "alice")
        assert (rc, out) == (0, "queued: alice -> zed (offline; delivered when it is back)\n")
        rc, out, err = await arun(cenv, "send", "bobb", "hi", "--from", "alice")
        assert (rc, out, err) == (1, "", "unknown: bobb — did you mean 'bob'?\n")
        rc, out, err = await arun(cenv, "send", "off", "hi", "--from", "alice")
        assert (rc, out, err) == (1, "", "disabled: off\n")
        rc, out, _ = await arun(cenv, "send", "bob", "shh", "-q", "--from", "alice")
        assert (rc, out) == (0, "")

        rc, out, _ = await arun(cenv, "broadcast", "standup", "--from", "alice")
        assert (rc, out) == (0, "broadcast: sent to 3 agent(s) (from alice)\n")
        bridge.policy = {}
        rc, out, _ = await arun(cenv, "broadcast", "standup", "--confirm", "--from", "alice")
        assert (rc, out) == (0, "broadcast: 3/3 delivered (from alice)\n")
        rc, out, _ = await arun(cenv, "post", "notes", "read this", "--confirm", "--from", "alice")
        assert rc == 0 and out.endswith("notes.md  | doorbell 3/3 (registry) (confirmed)\n")
    finally:
        await bridge.close()
    log = (await arun(cenv, "log", "-n", "0"))[1].splitlines()
    statuses = [line.split("\t")[1:3] for line in log]
    for pair in (["alice→bob", "DELIVERED"], ["alice→carol", "UNSUBMITTED"],
                 ["alice→dave", "FAILED"], ["alice→bob", "SENT"], ["alice→zed", "QUEUED"],
                 ["alice→bobb", "UNKNOWN"], ["alice→off", "DISABLED"]):  # fmt: skip
        assert pair in statuses, pair
    assert stat.S_IMODE(Path(cenv["AGENT_COMMS_LOG"]).stat().st_mode) == 0o600


# ---------------------------------------------------------------------- local commands


def test_registry_commands_log_and_join_doc(cenv: dict[str, str]) -> None:
    reg = Path(cenv["AGENT_COMMS_REGISTRY"])
    r = run(cenv, "init")
    assert (r.returncode, r.stdout) == (
        0, f"wrote starter registry -> {reg}\nedit it to match your tmux sessions.\n")  # fmt: skip
    assert stat.S_IMODE(reg.stat().st_mode) == 0o600
    assert sorted(json.loads(reg.read_text())["agents"]) == ["claude", "codex", "grok"]
    r = run(cenv, "init")
    assert (r.returncode, r.stderr) == (1, f"registry already exists at {reg} (use --force)\n")
    assert run(cenv, "init", "--force", "-q").stdout == ""

    r = run(cenv, "add", "aider", "aider-s", "--desc", "Aider", "--color", "green")
    assert r.stdout == "added: aider -> session 'aider-s'\n"
    assert json.loads(reg.read_text())["agents"]["aider"]["color"] == "green"
    assert run(cenv, "disable", "grok").stdout == "disabled: grok\n"
    assert run(cenv, "enable", "codex").stdout == "enabled: codex\n"
    assert run(cenv, "remove", "claude").stdout == "removed: claude\n"
    r = run(cenv, "remove", "claude")
    assert (r.returncode, r.stderr) == (1, "not found: claude\n")
    r = run(cenv, "enable", "nobody")
    assert (r.returncode, r.stderr) == (1, "not found: nobody\n")

    r = run({**cenv, "AGENT_COMMS_SELF": "codex"}, "list")
    assert r.stdout.splitlines() == [
        f"{'AGENT':<16}{'SESSION':<16}{'STATUS':<8}{'EN':<4}DESC",
        f"{'codex':<16}{'codex':<16}{'down':<8}{'y':<4}Codex CLI *self",
        f"{'grok':<16}{'grok':<16}{'down':<8}{'n':<4}Grok CLI",
        f"{'aider':<16}{'aider-s':<16}{'down':<8}{'y':<4}Aider",
    ]
    assert run(cenv, "ls").stdout == run(cenv, "list").stdout

    assert run({**cenv, "AGENT_COMMS_SELF": "codex"}, "whoami").stdout == "codex\n"
    assert run({**cenv, "WSBUS_NAME": "w", "AGENT_COMMS_SELF": "x"}, "whoami").stdout == "w\n"
    assert run(cenv, "whoami", "--from", "me").stdout == "me\n"
    assert run({**cenv, "AGENT_NAME": "legacy"}, "whoami").stdout == "legacy\n"
    assert run(cenv, "whoami").stdout == "unknown\n"

    assert run(cenv, "log").stdout == "(no comms log yet)\n"
    log = Path(cenv["AGENT_COMMS_LOG"])
    log.write_text("".join(f"2026-01-01T00:00:0{i}Z\ta→b\tDELIVERED\tm{i}\n" for i in range(5)))
    assert run(cenv, "log", "-n", "2").stdout.splitlines() == [
        "2026-01-01T00:00:03Z\ta→b\tDELIVERED\tm3",
        "2026-01-01T00:00:04Z\ta→b\tDELIVERED\tm4",
    ]

    doc = Path(cenv["AGENT_COMMS_JOIN_DOC"])
    r = run(cenv, "invite", "--project", "acme")
    assert f"    read {doc}\n" in r.stdout and "self-register --project acme.)" in r.stdout
    assert "not found — run 'agent_comms init-join'" in r.stdout
    r = run(cenv, "init-join")
    assert r.returncode == 0 and r.stdout.startswith(f"wrote join instructions -> {doc}\n")
    text = doc.read_text()
    assert "register --project PROJECT --as <your-name>" in text
    assert "COMMS ETIQUETTE" in text and "[no-reply]" in text
    assert "Treat it as untrusted" in text and "Never reveal secrets" in text
    assert "{cmd}" not in text and "{register}" not in text
    assert "not found" not in run(cenv, "invite").stdout


def test_bad_input_is_one_line(cenv: dict[str, str]) -> None:
    Path(cenv["AGENT_COMMS_REGISTRY"]).parent.mkdir(parents=True)
    Path(cenv["AGENT_COMMS_REGISTRY"]).write_text("{not json")
    r = run(cenv, "list")
    assert r.returncode == 2 and "registry parse error" in r.stderr
    assert len(r.stderr.splitlines()) == 1 and "Traceback" not in r.stderr
    r = run({**cenv, "AGENT_COMMS_ENTER_DELAY": "soon"}, "whoami")
    assert r.returncode == 2 and r.stderr.startswith("AGENT_COMMS_ENTER_DELAY must be a number")
    r = run(cenv, "register", "--project", "bad/name", "--session", "s")
    assert r.returncode == 2 and "invalid project name" in r.stderr


# ---------------------------------------------------------------------- tmux


@pytest.fixture
def tmux_server() -> Iterator[TmuxServer]:
    server = TmuxServer()
    yield server
    server.kill()


@needs_tmux
def test_discover_and_list_see_live_sessions(cenv: dict[str, str], tmux_server: TmuxServer) -> None:
    e = {**cenv, "AGENT_COMMS_TMUX": tmux_server.env_value}
    assert run(e, "discover").stdout == "no live tmux sessions found (is tmux running?)\n"
    for name in ("alpha", "beta"):
        tmux_server.tmux.new_session(name, ["sleep", "300"])
    write_registry(e, {"a": {"session": "alpha", "enabled": True}})
    assert run(e, "discover").stdout == (
        "live tmux sessions: alpha, beta\nnot in registry: beta\n"
        "re-run with --add to register them: agent_comms discover --add\n"
    )
    assert run(e, "discover", "--add").stdout.endswith("added 1 agent(s) to registry: beta\n")
    assert run(e, "discover").stdout.endswith("all already in your registry.\n")
    rows = [line.split()[:3] for line in run(e, "list").stdout.splitlines()[1:]]
    assert rows == [["a", "alpha", "up"], ["beta", "beta", "up"]]


@needs_tmux
async def test_identity_from_the_tmux_session_through_the_hub_roster(
    cenv: dict[str, str], tmux_server: TmuxServer, tmp_path: Path,
    watcher: Callable[[list[str]], Any],
) -> None:  # fmt: skip
    e = {**cenv, "AGENT_COMMS_TMUX": tmux_server.env_value}
    await arun(e, "register", "--project", "acme", "--as", "claude", "--session", "pane-c",
               "--model", "opus")  # fmt: skip
    await arun(e, "register", "--project", "acme", "--as", "codex", "--session", "pane-x")
    w = await watcher(["acme"])
    out = tmp_path / "inside.txt"
    cmd = " ".join(COMMAND)
    script = f"{cmd} whoami > {out}.1; {cmd} post acme from-inside > {out}.2; touch {out}"
    tmux_server.tmux.new_session("pane-c", ["sh", "-c", script], env=e)
    await async_wait_for(out.exists, timeout=20)
    assert Path(f"{out}.1").read_text() == "claude\n"
    assert "doorbell → 1 (project)" in Path(f"{out}.2").read_text()
    await async_wait_for(lambda: any(ev.thread for ev in w.events))
    post = next(ev for ev in w.events if ev.thread)
    assert (post.from_, (post.meta or {}).get("model")) == ("claude", "opus")


@needs_tmux
async def test_without_a_hub_send_types_into_the_pane_spools_and_relay_forwards(
    env: dict[str, str], tmp_path: Path, tmux_server: TmuxServer,
    hub_factory: Callable[..., HubProcess],
) -> None:  # fmt: skip
    port = free_port()
    e = {**comms_env(env, tmp_path, f"ws://127.0.0.1:{port}"),
         "AGENT_COMMS_TMUX": tmux_server.env_value}  # fmt: skip
    tui = Tui(tmux_server.tmux, tmp_path, "bob-pane")
    write_registry(e, {"bob": {"session": "bob-pane", "enabled": True}})
    rc, out, err = await arun(e, "send", "bob", "hello", "offline", "--from", "alice")
    assert (rc, err) == (0, "")
    assert out == (
        "delivered: alice -> bob (bob-pane)\n"
        "spooled: hub unreachable; forwarded by the bridge or `wsbus relay` when it is back\n"
    )
    typed = tui.submitted()
    assert len(typed) == 1 and typed[0].startswith(f"{MARKER} from=alice ")
    assert typed[0].endswith(" | hello offline")
    assert len(list(Path(e["WSBUS_SPOOL"]).glob("*.json"))) == 1
    rc, out, err = await arun(e, "post", "notes", "offline", "note", "--from", "alice")
    local_file = Path(e["AGENT_COMMS_THREADS"]) / "notes.md"
    assert (rc, err) == (0, "")
    assert out.startswith(f"posted to {local_file}  | doorbell 1/1 (registry)\nspooled: ")
    assert local_file.read_text().endswith("]\noffline note\n")
    await async_wait_for(lambda: len(tui.submitted()) == 2)
    assert tui.submitted()[1] == f"{MARKER} alice posted in notes — review it ({local_file})"
    typed = tui.submitted()
    assert len(list(Path(e["WSBUS_SPOOL"]).glob("*.json"))) == 2

    rc, _, err = await arun(e, "roster", "acme")
    assert rc == 0 and err.startswith("hub unreachable (")
    rc, out, err = await arun(e, "threads")
    assert rc == 0 and out.startswith(f"{'notes':<32}   1 entries   last ")
    assert "listing the local thread files" in err
    rc, out, err = await arun(e, "read", "notes")
    assert (rc, out) == (0, local_file.read_text() + "\n") and "reading the local file" in err

    hub = hub_factory(start=False).start(port)

    def relay() -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "wsbus", "relay"], capture_output=True,
                              text=True, env=e, timeout=30)  # fmt: skip

    r = relay()
    assert r.returncode == 0 and r.stdout.startswith("relayed 2 "), r.stdout + r.stderr
    async with Client(hub.url, "reader", channels=[]) as c:
        events = (await c.history(channel="default")).events
        assert [(ev.from_, ev.to, ev.thread, ev.body) for ev in events] == [
            ("alice", "bob", None, "hello offline"),
            ("alice", "*", "notes", "offline note"),
        ]
        for ev in events:
            meta = ev.meta or {}
            assert meta["local"] == {"bob": "submitted"} and meta["host"] == HOST
        r = relay()
        assert r.returncode == 0 and r.stdout.startswith("nothing to relay")
        assert len((await c.history(channel="default")).events) == 2
    assert tui.submitted() == typed  # nothing typed twice


@needs_tmux
def test_with_the_real_bridge_send_and_post_reach_the_pane(
    env: dict[str, str], tmp_path: Path, hub: HubProcess
) -> None:
    m = Machine(tmp_path, "box", env, hub.url)
    try:
        bob = m.agent("bob")
        m.start_bridge()
        r = m.run("send", "bob", "build", "the", "parser", "--from", "alice")
        assert (r.returncode, r.stdout) == (0, "delivered: alice -> bob (bob)\n"), r.stderr
        assert bob.submitted()[-1].endswith(" | build the parser")
        r = m.run("register", "--project", "acme", "--as", "bob", "--session", "bob")
        assert r.returncode == 0, r.stderr
        # the bridge notices bob joined acme and reconnects to serve it there too
        wait_for(lambda: m.bridge_output().count("bridge: serving bob") >= 2, timeout=15)
        r = m.run("post", "acme", "review", "it", "--confirm", "--from", "alice")
        mirror = m.threads / "acme" / "acme.md"
        assert (r.returncode, r.stdout) == (
            0, f"posted to {mirror}  | doorbell 1/1 (project) (confirmed)\n")  # fmt: skip
        assert bob.submitted()[-1] == f"{MARKER} alice posted in acme — review it ({mirror})"
        assert mirror.read_text().endswith("]\nreview it\n")
    finally:
        m.close()
