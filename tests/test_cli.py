"""The ``wsbus`` command line, run for real: subprocesses against live hub processes."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from wsbus.cli.main import build_parser

from wsbus import Client

from .helpers import ENGINE, HubProcess, wait_for

SENT_RE = re.compile(r"^sent #(\d+) at \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z to (\S+) on (\S+)$")
HISTORY_HEAD_RE = re.compile(
    r"^#(\d+) \[\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ\] (\S+): (\S+) -> (\S+)( \[thread \S+\])?$"
)


def wsbus(
    env: dict[str, str], *args: str, stdin: str | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m wsbus ARGS`` to completion."""
    return subprocess.run(
        [sys.executable, "-m", "wsbus", *args],
        env=env,
        input=stdin,
        stdin=subprocess.DEVNULL if stdin is None else None,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=timeout,
    )


class Running:
    """A long-running ``wsbus`` subprocess whose output lines are collected by threads."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "wsbus", *args],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
        )
        self.out: list[str] = []
        self.err: list[str] = []
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._threads = [
            threading.Thread(target=self._pump, args=(self.proc.stdout, self.out), daemon=True),
            threading.Thread(target=self._pump, args=(self.proc.stderr, self.err), daemon=True),
        ]
        for t in self._threads:
            t.start()

    @staticmethod
    def _pump(stream: Any, sink: list[str]) -> None:
        for line in stream:
            sink.append(line.rstrip("\n"))

    def wait_out(self, n: int, timeout: float = 10.0) -> list[str]:
        """The first ``n`` stdout lines, once they have arrived."""
        try:
            wait_for(lambda: len(self.out) >= n or self.proc.poll() is not None, timeout)
        except AssertionError:
            raise AssertionError(
                f"wanted {n} lines, got {self.out!r}; stderr {self.err!r}"
            ) from None
        assert len(self.out) >= n, f"exited {self.proc.returncode}: {self.out!r} {self.err!r}"
        return self.out[:n]

    def wait_err(self, pattern: str, count: int = 1, timeout: float = 10.0) -> list[str]:
        """Wait until ``count`` stderr lines match ``pattern``; return them."""
        rx = re.compile(pattern)

        def found() -> list[str] | None:
            hits = [line for line in self.err if rx.search(line)]
            return hits if len(hits) >= count else None

        try:
            hits = wait_for(found, timeout)
        except AssertionError:
            raise AssertionError(
                f"no {count}x {pattern!r} on stderr: {self.err!r} (exit {self.proc.poll()})"
            ) from None
        assert isinstance(hits, list)
        return hits

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        for t in self._threads:
            t.join(5)


@pytest.fixture
def cli_env(env: dict[str, str], hub: HubProcess) -> dict[str, str]:
    """The isolated environment with WSBUS_URL pointing at the live hub."""
    return {**env, "WSBUS_URL": hub.url}


def free_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def hhmmss(ts: float) -> str:
    return time.strftime("%H:%M:%SZ", time.gmtime(ts))


def block(ts: float, sender: str, body: str) -> list[str]:
    """agent-bus's listener block, as lines."""
    return [f"[{hhmmss(ts)}] from {sender}:", *body.split("\n"), "---"]


def send_json(env: dict[str, str], *args: str, stdin: str | None = None) -> dict[str, Any]:
    r = wsbus(env, "send", "--json", *args, stdin=stdin)
    assert r.returncode == 0, r.stderr
    out: dict[str, Any] = json.loads(r.stdout)
    return out


def one_line_error(r: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("wsbus: "), lines[0]
    assert r.stdout == ""
    return lines[0]


def cursor_files(env: dict[str, str], name: str) -> list[Path]:
    root = Path(env["HOME"]) / ".local" / "state" / "wsbus" / "cursors"
    return sorted(root.glob(f"{name}-*.json"))


@pytest.fixture
def running() -> Iterator[list[Running]]:
    """Every Running started through it is killed at the end, pass or fail."""
    procs: list[Running] = []
    yield procs
    for p in procs:
        p.stop()


# ------------------------------------------------------------------ help


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("no subcommands")


def test_every_subcommand_help_has_examples() -> None:
    commands = subcommands()
    assert {"serve", "send", "listen", "history"} <= set(commands)
    for name, sub in commands.items():
        assert "example" in sub.format_help().lower(), name
        # an example continued on the next line keeps its backslash (a bare one in
        # the source joins the lines with a run of spaces)
        for line in (sub.epilog or "").splitlines():
            assert not re.search(r"\S {5,}--", line), (name, line)
    assert "example" in build_parser().format_help().lower()


def test_help_runs_as_a_command(env: dict[str, str]) -> None:
    r = wsbus(env, "send", "--help")
    assert r.returncode == 0
    assert "example" in r.stdout.lower() and "wsbus send" in r.stdout


# ------------------------------------------------------------------ send


def test_send_with_args_and_stdin(cli_env: dict[str, str]) -> None:
    r = wsbus(cli_env, "send", "--as", "alice", "bob", "hello", "there", "wörld")
    assert r.returncode == 0, r.stderr
    m = SENT_RE.match(r.stdout.rstrip("\n"))
    assert m, r.stdout
    assert (m.group(1), m.group(2), m.group(3)) == ("1", "bob", "default")
    assert r.stdout.count("\n") == 1

    body = "línea uno\nzweite Zeile ✓\n\n日本語テキスト 🚀"
    r = wsbus({**cli_env, "WSBUS_NAME": "alice"}, "send", "bob", stdin=body + "\n")
    assert r.returncode == 0, r.stderr
    m = SENT_RE.match(r.stdout.rstrip("\n"))
    assert m and m.group(1) == "2", r.stdout

    r = wsbus(cli_env, "history", "--json", "-n", "10")
    assert r.returncode == 0, r.stderr
    events = [json.loads(line) for line in r.stdout.splitlines()]
    assert [(e["seq"], e["from"], e["to"], e["body"]) for e in events] == [
        (1, "alice", "bob", "hello there wörld"),
        (2, "alice", "bob", body),
    ]


def test_send_json(cli_env: dict[str, str]) -> None:
    before = time.time()
    out = send_json(cli_env, "--as", "alice", "*", "standup", "in", "5")
    out2 = send_json(cli_env, "--as", "alice", "--thread", "parser", "bob", "see PR 12")
    assert out["seq"] == 1 and out2["seq"] == 2
    assert isinstance(out["ts"], float) and before - 5 < out["ts"] < out2["ts"] < time.time() + 5
    assert (out["ok"], out["from"], out["to"], out["channel"]) == (True, "alice", "*", "default")
    assert out2["to"] == "bob"


def test_send_documented_example_with_options_after_recipient(cli_env: dict[str, str]) -> None:
    # verbatim from `wsbus send --help`:
    #   wsbus send --as alice bob --thread parser --json "see PR 12"
    r = wsbus(cli_env, "send", "--as", "alice", "bob", "--thread", "parser", "--json", "see PR 12")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert (out["seq"], out["to"]) == (1, "bob")
    r = wsbus(cli_env, "history", "--thread", "parser", "--json")
    assert [json.loads(line)["body"] for line in r.stdout.splitlines()] == ["see PR 12"]


def test_send_to_a_hub_that_is_not_running(env: dict[str, str]) -> None:
    url = f"ws://127.0.0.1:{free_port()}"
    r = wsbus(env, "send", "--url", url, "--timeout", "3", "--as", "alice", "bob", "hi")
    assert r.returncode == 3
    line = one_line_error(r)
    assert url in line


@pytest.mark.parametrize(
    "args",
    [
        ["send", "--as", "alice", "bad name", "hi"],
        ["send", "--as", "alice", "bob!", "hi"],
        ["send", "--as", "b@d", "bob", "hi"],
        ["send", "--as=-alice", "bob", "hi"],
        ["send", "bob", "hi"],
        ["listen"],
        ["send", "--as", "alice", "--thread", "../etc", "bob", "hi"],
        ["send", "--as", "alice", "-c", "bad/channel", "bob", "hi"],
    ],
    ids=[
        "recipient-space",
        "recipient-bang",
        "as-at",
        "as-dash",
        "send-no-name",
        "listen-no-name",
        "bad-thread",
        "bad-channel",
    ],
)
def test_usage_errors_exit_2_with_one_line(env: dict[str, str], args: list[str]) -> None:
    # the URL points nowhere: a usage error must be caught before connecting (else exit 3)
    r = wsbus({**env, "WSBUS_URL": f"ws://127.0.0.1:{free_port()}"}, *args)
    assert r.returncode == 2, r.stderr
    one_line_error(r)


def test_bad_environment_value_exits_2_naming_the_variable(env: dict[str, str]) -> None:
    r = wsbus({**env, "WSBUS_TIMEOUT": "soon"}, "send", "--as", "alice", "bob", "hi")
    assert r.returncode == 2, r.stderr
    assert "WSBUS_TIMEOUT" in one_line_error(r)
    r = wsbus({**env, "WSBUS_NAME": "not valid"}, "send", "bob", "hi")
    assert r.returncode == 2, r.stderr
    assert "not valid" in one_line_error(r)


def test_bad_config_file_exits_2_naming_the_file(env: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('url = "ws://127.0.0.1:1"\nnmae = "alice"\n', encoding="utf-8")
    r = wsbus({**env, "WSBUS_CONFIG": str(path)}, "send", "--as", "alice", "bob", "hi")
    assert r.returncode == 2, r.stderr
    assert str(path) in one_line_error(r)


def test_non_utf8_config_file_exits_2_without_traceback(
    env: dict[str, str], tmp_path: Path
) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes('name = "jos\xe9"\n'.encode("latin-1"))
    r = wsbus({**env, "WSBUS_CONFIG": str(path)}, "send", "--as", "alice", "bob", "hi")
    assert r.returncode == 2, r.stderr
    assert str(path) in one_line_error(r)


# ------------------------------------------------------------------ listen


def test_listen_prints_blocks_and_resumes_from_its_cursor(
    cli_env: dict[str, str], running: list[Running]
) -> None:
    first = Running(cli_env, "listen", "bob")
    running.append(first)
    first.wait_err(r"listening as bob on default")
    body1 = "first line\nsecond líne ✓"
    ok1 = send_json(cli_env, "--as", "alice", "bob", stdin=body1 + "\n")
    assert first.wait_out(4) == block(ok1["ts"], "alice", body1)

    # the cursor is on disk, private, and points at what was printed
    def saved() -> dict[str, Any] | None:
        files = cursor_files(cli_env, "bob")
        if not files:
            return None
        data: dict[str, Any] = json.loads(files[0].read_text())
        return data if data.get("seq") == ok1["seq"] else None

    wait_for(saved)
    (path,) = cursor_files(cli_env, "bob")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    first.stop()
    assert first.proc.returncode != 0  # killed, not finished

    ok2 = send_json(cli_env, "--as", "alice", "bob", "two")
    ok3 = send_json(cli_env, "--as", "carol", "*", "three for everyone")
    second = Running(cli_env, "listen", "bob")
    running.append(second)
    expected = block(ok2["ts"], "alice", "two") + block(ok3["ts"], "carol", "three for everyone")
    assert second.wait_out(len(expected)) == expected
    # then live again; nothing else was replayed in between
    second.wait_err(r"listening as bob")
    ok4 = send_json(cli_env, "--as", "alice", "bob", "four")
    expected += block(ok4["ts"], "alice", "four")
    assert second.wait_out(len(expected)) == expected
    assert ok1["seq"] < ok2["seq"] < ok3["seq"] < ok4["seq"]
    if ENGINE == "sqlite":  # (on NATS, bob's receipts take seqs between them)
        assert ok4["seq"] == ok1["seq"] + 3
    assert second.proc.poll() is None


def test_listen_json(cli_env: dict[str, str], running: list[Running]) -> None:
    listener = Running(cli_env, "listen", "dave", "--json")
    running.append(listener)
    listener.wait_err(r"listening as dave")
    ok1 = send_json(cli_env, "--as", "alice", "dave", stdin="multi\nline ü\n")
    ok2 = send_json(cli_env, "--as", "erin", "*", "to all")
    lines = listener.wait_out(2)
    objs = [json.loads(line) for line in lines]
    assert all(isinstance(o, dict) for o in objs)
    assert [(o["seq"], o["from"], o["to"], o["body"]) for o in objs] == [
        (ok1["seq"], "alice", "dave", "multi\nline ü"),
        (ok2["seq"], "erin", "*", "to all"),
    ]
    assert objs[0]["ts"] == pytest.approx(ok1["ts"])


def test_listen_reconnects_after_hub_restart(
    hub: HubProcess, cli_env: dict[str, str], running: list[Running]
) -> None:
    listener = Running(cli_env, "listen", "frank")
    running.append(listener)
    listener.wait_err(r"listening as frank")
    ok1 = send_json(cli_env, "--as", "alice", "frank", "before")
    assert listener.wait_out(3) == block(ok1["ts"], "alice", "before")

    hub.restart()
    listener.wait_err(r"retrying", timeout=15)
    listener.wait_err(r"listening as frank", count=2, timeout=15)
    assert listener.proc.poll() is None
    ok2 = send_json(cli_env, "--as", "alice", "frank", "after the restart")
    expected = block(ok1["ts"], "alice", "before") + block(ok2["ts"], "alice", "after the restart")
    assert listener.wait_out(len(expected)) == expected
    assert ok2["seq"] > ok1["seq"]
    if ENGINE == "sqlite":  # (on NATS, the listener's receipt takes a seq between them)
        assert ok2["seq"] == ok1["seq"] + 1


# ------------------------------------------------------------------ history


async def _send_all(url: str, messages: list[tuple[str, str, str]]) -> list[int]:
    seqs = []
    async with Client(url, "alice", names=["carol"]) as c:
        for sender, to, body in messages:
            seqs.append((await c.send(to, body, from_=sender)).seq)
    return seqs


def test_history(hub: HubProcess, cli_env: dict[str, str]) -> None:
    messages = [("alice", "bob", f"message {i}") for i in range(1, 5)]
    messages.append(("carol", "*", "last one"))
    seqs = asyncio.run(_send_all(hub.url, messages))
    assert seqs == [1, 2, 3, 4, 5]

    r = wsbus(cli_env, "history", "-n", "3")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    heads = [HISTORY_HEAD_RE.match(line) for line in lines if line.startswith("#")]
    assert all(heads), lines
    got = [(int(m.group(1)), m.group(3), m.group(4)) for m in heads if m]
    assert got == [(3, "alice", "bob"), (4, "alice", "bob"), (5, "carol", "all")]
    assert lines[1::3] == ["message 3", "message 4", "last one"]
    assert lines[2::3] == ["---"] * 3
    assert len(lines) == 9

    r = wsbus(cli_env, "history", "-n", "2", "--json")
    assert r.returncode == 0, r.stderr
    objs = [json.loads(line) for line in r.stdout.splitlines()]
    assert [(o["seq"], o["body"]) for o in objs] == [(4, "message 4"), (5, "last one")]

    r = wsbus(cli_env, "history", "-n", "50", "--json")
    assert [json.loads(line)["seq"] for line in r.stdout.splitlines()] == seqs

    r = wsbus(cli_env, "history", "--from", "carol", "--json")
    assert [json.loads(line)["seq"] for line in r.stdout.splitlines()] == [5]

    r = wsbus(cli_env, "history", "-n", "0")
    assert r.returncode == 2
    one_line_error(r)


def test_history_pages_through_a_small_max_history(
    env: dict[str, str], hub_factory: Callable[..., HubProcess]
) -> None:
    env["WSBUS_MAX_HISTORY"] = "2"  # read by the hub started below
    hub = hub_factory()
    messages = [("alice", "bob", f"m{i}") for i in range(1, 8)]
    assert asyncio.run(_send_all(hub.url, messages)) == list(range(1, 8))
    cli_env = {**env, "WSBUS_URL": hub.url}
    for n, expected in [(5, [3, 4, 5, 6, 7]), (7, list(range(1, 8))), (50, list(range(1, 8)))]:
        r = wsbus(cli_env, "history", "-n", str(n), "--json")
        assert r.returncode == 0, r.stderr
        assert [json.loads(line)["seq"] for line in r.stdout.splitlines()] == expected, n


def test_bodies_too_large_point_to_attach(hub: HubProcess, env: dict[str, str]) -> None:
    """Over the hub's max_body: refused by the hub (exit 4); over what any hub takes on
    stdin: refused before connecting (exit 2), without reading the whole pipe. Both
    say what to do instead: --attach."""
    env = dict(env, WSBUS_URL=hub.url, WSBUS_NAME="alice")
    r = wsbus(env, "send", "bob", stdin="x" * 70_000)
    assert r.returncode == 4 and "body_too_large" in r.stderr and "--attach FILE" in r.stderr
    assert r.stderr.count("\n") == 1, r.stderr
    r = wsbus(env, "send", "bob", stdin="y" * (3 << 20))
    assert r.returncode == 2 and "over 1 MiB" in r.stderr and "--attach FILE" in r.stderr
    assert r.stderr.count("\n") == 1, r.stderr


def test_help_lists_the_tmux_agent_comms_commands(env: dict[str, str]) -> None:
    from wsbus.cli.comms import COMMAND_NAMES

    r = wsbus(env, "--help")
    assert r.returncode == 0
    listed = r.stdout.split("tmux-agent-comms commands", 1)[1].split("examples:", 1)[0]
    missing = [
        n for n in COMMAND_NAMES if not re.search(rf"(?<![\w-]){re.escape(n)}(?![\w-])", listed)
    ]
    assert not missing, listed


@pytest.mark.parametrize(
    ("args", "help_of"),
    [
        (("serve", "--port", "x"), "wsbus serve"),
        (("token", "create"), "wsbus token create"),
        (("nosuchcommand",), "wsbus"),
    ],
)
def test_usage_errors_are_one_line(
    env: dict[str, str], args: tuple[str, ...], help_of: str
) -> None:
    r = wsbus(env, *args)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("wsbus: "), r.stderr
    assert f"(see `{help_of} --help`)" in r.stderr


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://127.0.0.1:8080", "did you mean ws://127.0.0.1:8765?"),
        ("https://hub.example:9000", "did you mean wss://hub.example:9000?"),
        ("127.0.0.1:8765", "(ws://127.0.0.1:8765?)"),
        ("ws://127.0.0.1:99999", "out of range"),
    ],
)
def test_a_bad_hub_url_is_a_usage_error(env: dict[str, str], url: str, says: str) -> None:
    r = wsbus(dict(env, WSBUS_NAME="alice"), "send", "--url", url, "bob", "hi")
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "invalid hub URL" in r.stderr and says in r.stderr, r.stderr
    assert "wsbus serve` running" not in r.stderr


def test_only_a_refused_connection_asks_whether_a_hub_runs(env: dict[str, str]) -> None:
    port = free_port()
    r = wsbus(dict(env, WSBUS_NAME="alice"), "send", "--url", f"ws://127.0.0.1:{port}", "bob", "x")
    assert r.returncode == 3 and "connection refused (is `wsbus serve` running?)" in r.stderr


def test_listen_gives_up_before_its_first_connection_unless_wait(
    env: dict[str, str],
    hub_factory: Callable[..., HubProcess],
    running: list[Running],
) -> None:
    url = f"ws://127.0.0.1:{free_port()}"
    started = time.monotonic()
    r = wsbus(env, "listen", "bob", "--url", url, "--timeout", "1")
    assert r.returncode == 3 and time.monotonic() - started < 15
    last = r.stderr.splitlines()[-1]
    assert "within 1 s" in last and "running?" in last and "--wait" in last, r.stderr
    # --wait: started before the hub, it connects when the hub comes up
    port = free_port()
    listener = Running(env, "listen", "bob", "--url", f"ws://127.0.0.1:{port}", "--wait",
                       "--timeout", "1")  # fmt: skip
    running.append(listener)
    listener.wait_err(r"retrying", count=3, timeout=15)
    hub_factory(start=False).start(port)
    listener.wait_err(r"listening as bob", timeout=20)
    assert listener.proc.poll() is None


def test_a_missing_ca_file_is_one_line_naming_it(env: dict[str, str], tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "ca.pem"
    r = wsbus(dict(env, WSBUS_NAME="alice", WSBUS_CA_FILE=str(missing)),
              "send", "--url", f"wss://127.0.0.1:{free_port()}", "bob", "x")  # fmt: skip
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert str(missing) in r.stderr and "WSBUS_CA_FILE" in r.stderr
