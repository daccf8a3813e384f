"""The tmux-agent-comms files: paths, registry, rosters, threads, spool and audit log."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import stat
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from wsbus.cli.local.audit import audit, exchange_count, tail
from wsbus.cli.local.paths import (
    CommsPaths,
    CommsTunables,
    private_dir,
    write_atomic,
)
from wsbus.cli.local.registry import (
    STARTER_REGISTRY,
    AgentEntry,
    Registry,
    RegistryError,
    all_rosters,
    editing,
    find_member,
    load_roster,
    locked,
    roster_path,
    safe_relpath,
    save_roster,
    unique_member_name,
)
from wsbus.cli.local.spool import Spool, SpoolRecord
from wsbus.cli.local.threadfiles import (
    append_entry,
    entry,
    format_threads,
    last_entries,
    list_threads,
    render,
    thread_file,
    write_mirror,
)


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def leftovers(d: Path) -> list[str]:
    return sorted(p.name for p in d.rglob("*") if p.name.endswith(".tmp"))


def ts(text: str) -> float:
    """A UTC timestamp from 'YYYY-MM-DD HH:MM:SS'."""
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC).timestamp()


@pytest.fixture
def held_lock() -> Iterator[list[int]]:
    """Open file descriptors holding flocks, released after the test."""
    fds: list[int] = []
    yield fds
    for fd in fds:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def hold(fds: list[int], path: Path) -> None:
    fd = os.open(path.with_name(path.name + ".lock"), os.O_WRONLY | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    fds.append(fd)


# ---------- paths ----------


def test_paths_default_to_the_original_locations(tmp_path: Path) -> None:
    p = CommsPaths.from_env({"HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "xdg")})
    base = tmp_path / ".config" / "agent-comms"
    assert p.registry == base / "registry.json"
    assert p.projects == base / "projects"
    assert p.threads == base / "threads"
    assert p.log == base / "comms.log"
    assert p.join_doc == base / "coms_join.md"
    assert p.state == tmp_path / ".local" / "state" / "wsbus"
    assert p.spool == tmp_path / ".local" / "state" / "wsbus" / "spool"


def test_paths_env_overrides(tmp_path: Path) -> None:
    env = {
        "HOME": str(tmp_path),
        "AGENT_COMMS_REGISTRY": "/r/reg.json",
        "AGENT_COMMS_PROJECTS": "/r/proj",
        "AGENT_COMMS_THREADS": "/r/thr",
        "AGENT_COMMS_LOG": "/r/log",
        "AGENT_COMMS_JOIN_DOC": "/r/join.md",
        "XDG_STATE_HOME": "/s",
    }
    p = CommsPaths.from_env(env)
    assert (p.registry, p.projects, p.threads, p.log, p.join_doc) == (
        Path("/r/reg.json"),
        Path("/r/proj"),
        Path("/r/thr"),
        Path("/r/log"),
        Path("/r/join.md"),
    )
    assert p.state == Path("/s/wsbus")
    assert p.spool == Path("/s/wsbus/spool")
    assert CommsPaths.from_env({**env, "WSBUS_SPOOL": "/sp"}).spool == Path("/sp")


def test_paths_empty_values_count_as_unset(tmp_path: Path) -> None:
    p = CommsPaths.from_env({"HOME": str(tmp_path), "AGENT_COMMS_LOG": "", "XDG_STATE_HOME": ""})
    assert p.log == tmp_path / ".config" / "agent-comms" / "comms.log"
    assert p.state == tmp_path / ".local" / "state" / "wsbus"


def test_paths_read_os_environ_and_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "h"))
    monkeypatch.setenv("AGENT_COMMS_THREADS", str(tmp_path / "t"))
    monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    p = CommsPaths.from_env()
    assert p.threads == tmp_path / "t"
    assert p.registry == tmp_path / "h" / ".config" / "agent-comms" / "registry.json"
    # an env without HOME falls back to Path.home()
    assert CommsPaths.from_env({}).log == tmp_path / "h" / ".config" / "agent-comms" / "comms.log"


def test_tunables_defaults_match_the_original() -> None:
    t = CommsTunables.from_env({})
    assert t.marker == "«agent-msg»"
    assert (t.enter_delay, t.max_msg_len, t.one_line_max, t.lock_timeout) == (0.4, 4000, 500, 5)
    assert (t.loop_warn_count, t.loop_window_sec) == (4, 180)
    assert (t.revive_timeout, t.revive_grace, t.verify_delay, t.verify_lines) == (30, 6, 0.3, 3)


def test_tunables_env_overrides() -> None:
    t = CommsTunables.from_env(
        {
            "AGENT_COMMS_MARKER": "[bus]",
            "AGENT_COMMS_ENTER_DELAY": "0.8",
            "AGENT_COMMS_MAX_MSG_LEN": "100",
            "WSBUS_ONE_LINE_MAX": "50",
            "AGENT_COMMS_LOCK_TIMEOUT": "1.5",
            "AGENT_COMMS_LOOP_WARN_COUNT": "7",
            "AGENT_COMMS_LOOP_WINDOW_SEC": "60",
            "AGENT_COMMS_REVIVE_TIMEOUT": "9",
            "AGENT_COMMS_REVIVE_GRACE": "2",
            "AGENT_COMMS_VERIFY_DELAY": "0.1",
            "AGENT_COMMS_VERIFY_LINES": "5",
        }
    )
    assert t == CommsTunables(
        marker="[bus]",
        enter_delay=0.8,
        max_msg_len=100,
        one_line_max=50,
        lock_timeout=1.5,
        loop_warn_count=7,
        loop_window_sec=60,
        revive_timeout=9,
        revive_grace=2,
        verify_delay=0.1,
        verify_lines=5,
    )


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("AGENT_COMMS_ENTER_DELAY", "fast"),
        ("AGENT_COMMS_ENTER_DELAY", "-1"),
        ("AGENT_COMMS_LOCK_TIMEOUT", "nan"),
        ("AGENT_COMMS_MAX_MSG_LEN", "4k"),
        ("AGENT_COMMS_MAX_MSG_LEN", "2"),
        ("WSBUS_ONE_LINE_MAX", "1.5"),
        ("AGENT_COMMS_LOOP_WARN_COUNT", "0"),
        ("AGENT_COMMS_REVIVE_GRACE", "inf"),
    ],
)
def test_tunables_malformed_number_names_the_variable(key: str, value: str) -> None:
    with pytest.raises(ValueError, match=key) as info:
        CommsTunables.from_env({key: value})
    assert str(info.value).endswith(".")


def test_tunables_clip() -> None:
    t = CommsTunables(max_msg_len=10)
    assert t.clip("x" * 10) == "x" * 10
    assert t.clip("x" * 11) == "xxxxxxx..."
    assert len(t.clip("y" * 5000)) == 10


def test_private_dir_creates_missing_dirs_0700(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    private_dir(tmp_path / "a" / "b")
    assert mode(tmp_path / "a") == 0o700
    assert mode(tmp_path / "a" / "b") == 0o700
    assert mode(tmp_path) == 0o755  # existing directories are left alone


def test_write_atomic_replaces_privately(tmp_path: Path) -> None:
    target = tmp_path / "d" / "f.json"
    write_atomic(target, b"one")
    target.chmod(0o644)
    write_atomic(target, b"two")
    assert target.read_bytes() == b"two"
    assert mode(target) == 0o600
    assert mode(target.parent) == 0o700
    assert leftovers(tmp_path) == []


def test_write_atomic_failure_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "f"
    write_atomic(target, b"old")

    def boom(*_: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        write_atomic(target, b"new")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]


# ---------- registry ----------


def test_registry_missing_file_is_empty(tmp_path: Path) -> None:
    reg = Registry.load(tmp_path / "none.json")
    assert reg.agents() == {}
    assert reg.names() == []
    assert reg.agent("claude") is None


def test_registry_bad_json_is_one_readable_error(tmp_path: Path) -> None:
    path = tmp_path / "registry.json"
    path.write_text('{"agents": {')
    with pytest.raises(RegistryError, match=r"^registry parse error in .*registry\.json: "):
        Registry.load(path)
    path.write_text("[1, 2]")
    with pytest.raises(RegistryError, match="registry parse error in"):
        Registry.load(path)
    path.write_text('{"agents": {"a": "sess"}}')
    with pytest.raises(RegistryError, match="agent 'a' is not an object"):
        Registry.load(path)


def test_registry_preserves_unknown_fields_and_order(tmp_path: Path) -> None:
    path = tmp_path / "registry.json"
    original = {
        "version": 3,
        "agents": {
            "zed": {"session": "z", "x-custom": [1, 2], "enabled": True, "paste": True},
            "amy": {"host": "box", "session": "a", "enter_delay": 0.8, "note": "keep me"},
        },
        "extra": {"nested": "«yes»"},
    }
    path.write_text(json.dumps(original))
    reg = Registry.load(path)
    assert reg.set_enabled("zed", False)
    reg.add("bob", "b", desc="Bob")
    reg.save()
    saved = json.loads(path.read_text())
    assert list(saved) == ["version", "agents", "extra"]
    assert list(saved["agents"]) == ["zed", "amy", "bob"]
    assert saved["agents"]["zed"] == {
        "session": "z",
        "x-custom": [1, 2],
        "enabled": False,
        "paste": True,
    }
    assert list(saved["agents"]["amy"]) == ["host", "session", "enter_delay", "note"]
    assert saved["extra"] == {"nested": "«yes»"}


def test_registry_save_uses_the_original_layout_privately(tmp_path: Path) -> None:
    path = tmp_path / "cfg" / "agent-comms" / "registry.json"
    reg = Registry(path, json.loads(json.dumps(STARTER_REGISTRY)))
    reg.save()
    # byte-identical to the original's save_registry (json.dumps indent=2)
    assert path.read_text() == json.dumps(STARTER_REGISTRY, indent=2)
    assert mode(path) == 0o600
    assert mode(path.parent) == 0o700
    assert mode(path.parent.parent) == 0o700
    assert leftovers(tmp_path) == []


def test_starter_registry_is_the_originals() -> None:
    assert STARTER_REGISTRY == {
        "agents": {
            "claude": {
                "session": "claude",
                "color": "red",
                "enabled": True,
                "desc": "Claude Code",
                "revive_cmd": None,
            },
            "codex": {
                "session": "codex",
                "color": "blue",
                "enabled": True,
                "desc": "Codex CLI",
                "revive_cmd": None,
            },
            "grok": {
                "session": "grok",
                "color": "magenta",
                "enabled": True,
                "desc": "Grok CLI",
                "revive_cmd": None,
            },
        }
    }


def test_registry_agent_typed_view(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "r.json")
    reg.agents()["a"] = {"session": "sa"}
    reg.agents()["b"] = {
        "session": "sb",
        "color": "red",
        "enabled": False,
        "desc": "B",
        "revive_cmd": "tmux new -d -s sb",
        "enter_delay": 1,
        "paste": True,
        "host": "box",
        "unknown": 1,
    }
    assert reg.agent("a") == AgentEntry(name="a", session="sa")
    b = reg.agent("b")
    assert b is not None
    assert (b.color, b.enabled, b.desc, b.revive_cmd) == ("red", False, "B", "tmux new -d -s sb")
    assert (b.enter_delay, b.paste, b.host) == (1.0, True, "box")
    reg.agents()["c"] = {"session": 5}
    with pytest.raises(RegistryError, match="agent 'c' is invalid"):
        reg.agent("c")


def test_registry_add_remove_enable_by_session(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "r.json")
    reg.add("aider", "aider-sess", color="green", desc="Aider", revive_cmd="aider")
    assert reg.agents()["aider"] == {
        "session": "aider-sess",
        "color": "green",
        "enabled": True,
        "desc": "Aider",
        "revive_cmd": "aider",
    }
    reg.agents()["aider"]["enter_delay"] = 0.9
    reg.set_enabled("aider", False)
    reg.add("aider", "new-sess")
    assert reg.agents()["aider"]["session"] == "new-sess"
    assert reg.agents()["aider"]["enabled"] is True
    assert reg.agents()["aider"]["enter_delay"] == 0.9  # kept
    assert reg.by_session("new-sess") == "aider"
    assert reg.by_session("nope") is None
    assert reg.set_enabled("ghost", True) is False
    assert reg.remove("aider") is True
    assert reg.remove("aider") is False
    assert reg.names() == []
    with pytest.raises(RegistryError):
        reg.add("", "s")


def test_editing_saves_only_on_success(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    with editing(path, 1) as reg:
        reg.add("a", "sa")
    assert Registry.load(path).names() == ["a"]
    with pytest.raises(RuntimeError), editing(path, 1) as reg:
        reg.add("b", "sb")
        raise RuntimeError
    assert Registry.load(path).names() == ["a"]


def test_locked_serialises_and_times_out(tmp_path: Path, held_lock: list[int]) -> None:
    path = tmp_path / "thing.md"
    with locked(path, 1) as held:
        assert held
        assert (tmp_path / "thing.md.lock").exists()
    hold(held_lock, path)
    start = time.monotonic()
    with locked(path, 0.3) as held:
        assert not held  # best-effort after the timeout
    assert time.monotonic() - start >= 0.3


def test_locked_waits_for_the_holder(tmp_path: Path) -> None:
    path = tmp_path / "x"
    order: list[str] = []
    inside = threading.Event()

    def holder() -> None:
        with locked(path, 5):
            inside.set()
            time.sleep(0.3)
            order.append("first")

    t = threading.Thread(target=holder)
    t.start()
    inside.wait()
    with locked(path, 5) as held:
        order.append("second")
    t.join()
    assert held
    assert order == ["first", "second"]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("hermes/pmxt-execution", "hermes/pmxt-execution"),
        ("notes.md", "notes"),
        ("a//b/./c/", "a/b/c"),
        ("  spaced  ", "spaced"),
        ("...", "..."),
        ("ünï/cødé", "ünï/cødé"),
    ],
)
def test_safe_relpath_accepts(name: str, expected: str) -> None:
    assert safe_relpath(name) == expected


@pytest.mark.parametrize(
    "name",
    [
        "../x",
        "/etc/passwd",
        "a/../../b",
        "x/..",
        "..",
        "",
        "   ",
        ".md",
        "/",
        "a\x00b",
        "a\nb",
        "\x1b[31mred",
        "x\x7f",
        "y\x85",
        "s" * 300,
    ],
)
def test_safe_relpath_refuses(name: str) -> None:
    with pytest.raises(ValueError, match=r"^invalid name .*\.$"):
        safe_relpath(name)


# ---------- rosters ----------


def test_roster_round_trip(tmp_path: Path) -> None:
    projects = tmp_path / "projects"
    assert load_roster(projects, "acme") == {"project": "acme", "members": {}}
    roster = load_roster(projects, "acme")
    roster["members"]["claude"] = {
        "session": "claude",
        "model": "claude-opus-4-7",
        "role": "orchestration",
        "joined": "2026-05-28T15:49:03Z",
        "last_active": "2026-05-28T15:49:03Z",
        "enter_delay": 0.8,
    }
    roster["custom"] = True
    save_roster(projects, roster)
    path = projects / "acme.json"
    assert path.read_text() == json.dumps(roster, indent=2)
    assert mode(path) == 0o600
    assert mode(projects) == 0o700
    assert load_roster(projects, "acme") == roster
    assert leftovers(tmp_path) == []


def test_roster_names_are_safe(tmp_path: Path) -> None:
    assert roster_path(tmp_path, "team/web") == tmp_path / "team" / "web.json"
    for bad in ("../x", "/etc/passwd", "a/../../b"):
        with pytest.raises(ValueError):
            load_roster(tmp_path, bad)
        with pytest.raises(ValueError):
            save_roster(tmp_path, {"project": bad, "members": {}})


def test_roster_bad_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "acme.json").write_text("{oops")
    with pytest.raises(RegistryError, match="roster parse error in"):
        load_roster(tmp_path, "acme")
    (tmp_path / "acme.json").write_text('{"members": []}')
    with pytest.raises(RegistryError, match="not a project roster"):
        load_roster(tmp_path, "acme")


def test_unique_member_name() -> None:
    members = {"claude": {"session": "s1"}, "claude-2": {"session": "s2"}}
    assert unique_member_name(members, "claude", "s1") == "claude"
    assert unique_member_name(members, "other", "s2") == "claude-2"  # keeps its name
    assert unique_member_name(members, "claude", "s3") == "claude-3"
    assert unique_member_name(members, "grok", "s3") == "grok"
    assert unique_member_name({}, "x", "s") == "x"
    assert unique_member_name({"x": {"session": "a"}, "x-3": {}}, "x", "b") == "x-2"


def test_all_rosters_and_find_member(tmp_path: Path) -> None:
    save_roster(tmp_path, {"project": "b-proj", "members": {"grok": {"session": "g"}}})
    save_roster(
        tmp_path,
        {"project": "a-proj", "members": {"grok": {"session": "g0"}, "nosess": {"model": "m"}}},
    )
    save_roster(tmp_path, {"project": "team/web", "members": {"codex": {"session": "c"}}})
    (tmp_path / "broken.json").write_text("{")
    (tmp_path / "._b-proj.json").write_text("{}")
    (tmp_path / "nameless.json").write_text('{"members": {"aider": {"session": "ai"}}}')
    rosters = all_rosters(tmp_path)
    assert sorted(rosters) == ["a-proj", "b-proj", "nameless", "team/web"]
    assert find_member(tmp_path, "grok") == ("a-proj", {"session": "g0"})
    assert find_member(tmp_path, "codex") == ("team/web", {"session": "c"})
    assert find_member(tmp_path, "aider") == ("nameless", {"session": "ai"})
    assert find_member(tmp_path, "nosess") is None
    assert find_member(tmp_path, "ghost") is None
    assert all_rosters(tmp_path / "missing") == {}


# ---------- thread files ----------


def test_thread_file_layout(tmp_path: Path) -> None:
    assert thread_file(tmp_path, "default", "parser") == tmp_path / "parser.md"
    assert (
        thread_file(tmp_path, "default", "hermes/pmxt-execution.md")
        == tmp_path / "hermes" / "pmxt-execution.md"
    )
    assert thread_file(tmp_path, "ops", "parser") == tmp_path / "ops" / "parser.md"
    assert thread_file(tmp_path, "ops", "a/b") == tmp_path / "ops" / "a" / "b.md"


@pytest.mark.parametrize("bad", ["../x", "/etc/passwd", "a/../../b", ""])
def test_thread_file_refuses_traversal(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ValueError):
        thread_file(tmp_path, "default", bad)
    with pytest.raises(ValueError):
        thread_file(tmp_path, bad or "..", "t")


def test_thread_file_refuses_a_symlink_out(tmp_path: Path) -> None:
    threads = tmp_path / "threads"
    threads.mkdir()
    (tmp_path / "elsewhere").mkdir()
    (threads / "out").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ValueError, match="outside"):
        thread_file(threads, "default", "out/x")


SEED = (
    "## [claude→grok 2026-05-28 15:49Z]\n"
    "daily_report.py is in local fallback; deploy to /opt/…\n"
    "\n"
    "## [grok→claude 2026-05-28 15:55Z]\n"
    "deployed, dry-run green"
)


def test_entry_matches_the_seed_example() -> None:
    got = entry(
        "claude",
        "grok",
        None,
        ts("2026-05-28 15:49:59"),
        "daily_report.py is in local fallback; deploy to /opt/…",
    )
    assert got == (
        "\n## [claude→grok 2026-05-28 15:49Z]\n"
        "daily_report.py is in local fallback; deploy to /opt/…\n"
    )
    text = render(
        [
            (
                "claude",
                "grok",
                None,
                ts("2026-05-28 15:49:03"),
                "daily_report.py is in local fallback; deploy to /opt/…",
            ),
            ("grok", "claude", "unknown", ts("2026-05-28 15:55:00"), "deployed, dry-run green"),
        ]
    )
    assert text == "\n" + SEED + "\n"


def test_entry_addressing_and_model() -> None:
    t = ts("2026-01-02 03:04:05")
    assert entry("a", None, None, t, "x") == "\n## [a 2026-01-02 03:04Z]\nx\n"
    assert entry("a", "*", None, t, "x") == "\n## [a 2026-01-02 03:04Z]\nx\n"
    assert entry("a", "", None, t, "x") == "\n## [a 2026-01-02 03:04Z]\nx\n"
    assert entry("a", "b", "gpt-5", t, "x") == "\n## [a→b (gpt-5) 2026-01-02 03:04Z]\nx\n"
    assert entry("a", "*", "gpt-5", t, "x") == "\n## [a (gpt-5) 2026-01-02 03:04Z]\nx\n"
    assert entry("a", "b", "unknown", t, "x") == "\n## [a→b 2026-01-02 03:04Z]\nx\n"
    assert render([]) == ""


def test_last_entries_is_read_n() -> None:
    text = "\n" + SEED + "\n"
    assert last_entries(text, 0) == text
    assert last_entries(text, 1) == "## [grok→claude 2026-05-28 15:55Z]\ndeployed, dry-run green\n"
    assert last_entries(text, 2) == SEED + "\n"
    assert last_entries(text, 9) == SEED + "\n"
    assert last_entries("no entries here\n", 3) == "no entries here\n"
    # a preamble before the first entry is dropped, as the original's read -n does
    assert last_entries("# title\n" + text, 5) == SEED + "\n"


def test_write_mirror_is_atomic_and_private(tmp_path: Path) -> None:
    path = thread_file(tmp_path / "threads", "ops", "a/b")
    write_mirror(path, "one")
    write_mirror(path, "two")
    assert path.read_text() == "two"
    assert mode(path) == 0o600
    assert mode(tmp_path / "threads") == 0o700
    assert mode(tmp_path / "threads" / "ops" / "a") == 0o700
    assert leftovers(tmp_path) == []


def test_append_entry(tmp_path: Path) -> None:
    path = tmp_path / "threads" / "t.md"
    e1 = entry("a", "b", None, ts("2026-01-01 00:00:00"), "one")
    e2 = entry("b", "a", None, ts("2026-01-01 00:01:00"), "two")
    append_entry(path, e1, 1)
    append_entry(path, e2, 1)
    assert path.read_text() == e1 + e2
    assert mode(path) == 0o600
    assert mode(path.parent) == 0o700
    assert (tmp_path / "threads" / "t.md.lock").exists()  # the original's lock file


def test_append_entry_concurrent_writers(tmp_path: Path) -> None:
    path = tmp_path / "t.md"
    bodies = [f"w{w}-{i}-" + "z" * 3000 for w in range(6) for i in range(20)]

    def writer(w: int) -> None:
        for i in range(20):
            append_entry(path, entry("a", None, None, 0, f"w{w}-{i}-" + "z" * 3000), 5)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    text = path.read_text()
    assert text.count("\n## [") == len(bodies)
    assert sorted(text.split("\n## [a 1970-01-01 00:00Z]\n")[1:]) == sorted(
        b + "\n" for b in bodies
    )


def test_append_entry_proceeds_after_lock_timeout(tmp_path: Path, held_lock: list[int]) -> None:
    path = tmp_path / "t.md"
    hold(held_lock, path)
    start = time.monotonic()
    append_entry(path, "\n## [a 2026-01-01 00:00Z]\nx\n", 0.2)
    assert time.monotonic() - start >= 0.2
    assert path.read_text() == "\n## [a 2026-01-01 00:00Z]\nx\n"


def test_list_and_format_threads(tmp_path: Path) -> None:
    assert list_threads(tmp_path / "missing") == []
    assert format_threads([]) == ["(no threads yet)"]
    write_mirror(tmp_path / "parser.md", render([("a", None, None, 0, "x")] * 3))
    write_mirror(tmp_path / "hermes" / "pmxt-execution.md", "no entries")
    (tmp_path / "notes.txt").write_text("ignored")
    when = ts("2026-05-28 15:49:30")
    for f in (tmp_path / "parser.md", tmp_path / "hermes" / "pmxt-execution.md"):
        os.utime(f, (when, when))
    rows = list_threads(tmp_path)
    assert rows == [("hermes/pmxt-execution", 0, when), ("parser", 3, when)]
    assert format_threads(rows) == [
        "hermes/pmxt-execution              0 entries   last 05-28 15:49Z",
        "parser                             3 entries   last 05-28 15:49Z",
    ]


# ---------- spool ----------


def rec(ref: str, **kw: Any) -> SpoolRecord:
    fields: dict[str, Any] = {"sender": "a", "to": "b", "body": "hi", "spooled_at": 1.0}
    fields.update(kw)
    return SpoolRecord(ref=ref, **fields)


def test_spool_put_and_items(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "state" / "spool")
    assert len(spool) == 0
    assert spool.items() == []
    first = rec(
        "r1",
        channel="ops",
        thread="t",
        kind="task",
        meta={"k": [1]},
        delivered={"grok": "DELIVERED"},
    )
    path = spool.put(first)
    spool.put(rec("r2"))
    assert path.parent == spool.directory
    assert path.name.endswith("-r1.json") and len(path.name.split("-")[0]) == 20
    assert mode(path) == 0o600
    assert mode(spool.directory) == 0o700
    assert leftovers(tmp_path) == []
    items = spool.items()
    assert [r for _, r in items] == [first, rec("r2")]
    assert items[1][1].delivered == {} and items[1][1].channel == "default"
    assert len(spool) == 2
    spool.remove(items[0][0])
    spool.remove(items[0][0])  # already gone: fine
    assert [r.ref for _, r in spool.items()] == ["r2"]


def test_spool_keeps_order_and_unsafe_refs_inside(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    refs = ["../../etc/x", "same", "same", "same", "/abs", ""]
    paths = [spool.put(rec(r)) for r in refs]
    assert len(set(paths)) == len(refs)
    assert all(p.parent == tmp_path for p in paths)
    assert [r.ref for _, r in spool.items()] == refs


def test_spool_concurrent_writers_and_reader(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    stop = threading.Event()
    seen_bad: list[str] = []

    def reader() -> None:
        while not stop.is_set():
            spool.items()
            if (spool.directory / "bad").exists():
                seen_bad.append("bad")

    def writer(w: int) -> None:
        for i in range(40):
            spool.put(rec(f"w{w}-{i}", body="x" * 20000))

    r = threading.Thread(target=reader)
    r.start()
    writers = [threading.Thread(target=writer, args=(w,)) for w in range(6)]
    for t in writers:
        t.start()
    for t in writers:
        t.join()
    stop.set()
    r.join()
    refs = [x.ref for _, x in spool.items()]
    assert len(refs) == 240 and len(set(refs)) == 240
    for w in range(6):  # each writer's records stay in the order it put them
        mine = [ref for ref in refs if ref.startswith(f"w{w}-")]
        assert mine == [f"w{w}-{i}" for i in range(40)]
    assert seen_bad == []
    assert leftovers(tmp_path) == []


def test_spool_sets_bad_files_aside(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    spool = Spool(tmp_path)
    good = spool.put(rec("good"))
    (tmp_path / "00000000000000000001-broken.json").write_text("{not json")
    (tmp_path / "00000000000000000002-wrong.json").write_text('{"ref": 1}')
    with caplog.at_level(logging.WARNING, logger="wsbus.cli.spool"):
        items = spool.items()
    assert [p for p, _ in items] == [good]
    assert sorted(p.name for p in (tmp_path / "bad").iterdir()) == [
        "00000000000000000001-broken.json",
        "00000000000000000002-wrong.json",
    ]
    assert "broken.json" in caplog.text
    assert len(spool) == 1


# ---------- audit ----------


def test_audit_line_format(tmp_path: Path) -> None:
    log = tmp_path / "agent-comms" / "comms.log"
    t = ts("2026-05-28 15:49:03")
    audit(log, "claude", "grok", "DELIVERED", "hi\nthere\r\nyou", ts=t)
    audit(log, "grok", "claude", "DOORBELL:hermes/pmxt", "ok\u2028done", ts=t + 1)
    assert log.read_text() == (
        "2026-05-28T15:49:03Z\tclaude→grok\tDELIVERED\thi there  you\n"
        "2026-05-28T15:49:04Z\tgrok→claude\tDOORBELL:hermes/pmxt\tok done\n"
    )
    assert mode(log) == 0o600
    assert mode(log.parent) == 0o700


def test_audit_uses_the_current_time(tmp_path: Path) -> None:
    log = tmp_path / "comms.log"
    audit(log, "a", "b", "DELIVERED", "m")
    stamp = log.read_text().split("\t")[0]
    written = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    assert abs(written - time.time()) < 5


def test_audit_narrows_wide_permissions(tmp_path: Path) -> None:
    log = tmp_path / "comms.log"
    log.write_text("old\n")
    log.chmod(0o644)
    audit(log, "a", "b", "DELIVERED", "m")
    assert mode(log) == 0o600
    assert log.read_text().startswith("old\n")


def test_audit_never_raises(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    audit(blocker / "comms.log", "a", "b", "X", "m")  # parent is a file
    audit(tmp_path / "bad\x00name", "a", "b", "X", "m")
    assert blocker.read_text() == ""


def test_tail(tmp_path: Path) -> None:
    log = tmp_path / "comms.log"
    assert tail(log, 5) == []
    for i in range(3000):  # well over one 64 KiB read
        audit(log, "a", "b", "DELIVERED", f"message {i} " + "p" * 40, ts=float(i))
    last = tail(log, 3)
    assert [line.split("\t")[3].split()[1] for line in last] == ["2997", "2998", "2999"]
    assert len(tail(log, 2000)) == 2000
    assert tail(log, 2000)[0].split("\t")[3].startswith("message 1000 ")
    assert len(tail(log, 0)) == 3000


def test_exchange_count(tmp_path: Path) -> None:
    log = tmp_path / "comms.log"
    now = ts("2026-05-28 16:00:00")
    audit(log, "a", "b", "DOORBELL:t", "1", ts=now - 10)
    audit(log, "b", "a", "DOORBELL:t", "2", ts=now - 20)
    audit(log, "a", "b", "DOORBELL:t", "old", ts=now - 1000)
    audit(log, "a", "b", "DELIVERED", "not a doorbell", ts=now - 5)
    audit(log, "a", "c", "DOORBELL:t", "other pair", ts=now - 5)
    assert exchange_count(log, "a", "b", 180, now=now) == 2
    assert exchange_count(log, "b", "a", 2000, now=now) == 3
    assert exchange_count(tmp_path / "none", "a", "b", 180, now=now) == 0
