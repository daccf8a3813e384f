"""``wsbus send --attach FILE`` and ``wsbus verify REF [FILE]``: the reference convention
for sensitive data (the file stays on its host; only path, size and sha256 travel).

The commands run for real, as subprocesses against a live hub; the reference's
parsing is also tested on its own, without sockets.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from wsbus.cli.exits import CliError
from wsbus.cli.verify import Reference, attach_line, digest, from_meta, parse_reference

from wsbus import Client

from .helpers import HubProcess, wait_for
from .test_cli import wsbus

posix_only = pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")

HOST = "build1"


def one_line_error(r: subprocess.CompletedProcess[str]) -> str:
    """The command failed with exactly one line on stderr (no traceback)."""
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("wsbus: "), r.stderr
    assert "Traceback" not in r.stderr
    return lines[0]


@pytest.fixture
def cli_env(env: dict[str, str], hub: HubProcess) -> dict[str, str]:
    asyncio.run(_known(hub.url, "bob"))  # no note about a recipient nobody has seen
    return {**env, "WSBUS_URL": hub.url, "WSBUS_NAME": "alice", "WSBUS_HOSTNAME": HOST}


async def _known(url: str, name: str) -> None:
    """Make ``name`` a member of #default's roster (it stores no event)."""
    async with Client(url, "admin", channels=[], presence=False) as c:
        await c.register("default", name, session=name, host=HOST)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """A 0600 file over two hashing chunks (1 MiB each) long."""
    path = tmp_path / "out" / "hits.csv"
    path.parent.mkdir()
    path.write_bytes(bytes(range(256)) * 9000 + b"tail")
    path.chmod(0o600)
    return path


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def events(env: dict[str, str]) -> list[dict[str, Any]]:
    r = wsbus(env, "history", "--json", "-n", "50")
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines()]


def expected_line(path: Path) -> str:
    size = path.stat().st_size
    return f"attach: {path} size={size} sha256={sha256_of(path)} host={HOST}"


# ------------------------------------------------------------------ send --attach


def test_attach_sends_the_line_and_meta(cli_env: dict[str, str], data: Path) -> None:
    r = wsbus(cli_env, "send", "bob", "--attach", str(data), "the", "hits")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("sent #1 at ") and r.stderr == ""
    [ev] = events(cli_env)
    assert ev["body"] == "the hits\n" + expected_line(data)
    assert ev["meta"]["attach"] == {
        "path": str(data),
        "size": data.stat().st_size,
        "sha256": sha256_of(data),
        "host": HOST,
    }
    assert data.stat().st_size > 2 * (1 << 20)


def test_a_listener_sees_the_reference(cli_env: dict[str, str], data: Path) -> None:
    r = wsbus(cli_env, "send", "bob", "--attach", str(data))
    assert r.returncode == 0, r.stderr
    listener = subprocess.Popen(
        [sys.executable, "-m", "wsbus", "listen", "bob", "--json", "--from-start", "--no-cursor"],
        env=cli_env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    lines: list[str] = []
    assert listener.stdout is not None
    reader = threading.Thread(target=lambda: lines.extend(listener.stdout or ()), daemon=True)
    reader.start()
    try:
        wait_for(lambda: lines, timeout=20)
    finally:
        listener.kill()
        listener.wait(10)
    ev = json.loads(lines[0])
    assert ev["body"] == expected_line(data)
    assert ev["meta"]["attach"]["sha256"] == sha256_of(data)


def test_attach_with_stdin_note_json_and_quiet(cli_env: dict[str, str], data: Path) -> None:
    r = wsbus(cli_env, "send", "bob", "--attach", str(data), "--json", stdin="line one\nline two\n")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["seq"] == 1 and out["attach"]["sha256"] == sha256_of(data)
    assert out["attach"]["path"] == str(data)
    r = wsbus(cli_env, "send", "bob", "--attach", str(data), "-q")
    assert r.returncode == 0 and r.stdout == "" and r.stderr == "", r
    bodies = [e["body"] for e in events(cli_env)]
    assert bodies == ["line one\nline two\n" + expected_line(data), expected_line(data)]


def test_attach_does_not_wait_on_an_idle_stdin(cli_env: dict[str, str], data: Path) -> None:
    proc = subprocess.Popen(  # stdin: a pipe nobody writes to or closes (an agent's shell)
        [sys.executable, "-m", "wsbus", "send", "bob", "--attach", str(data)],
        env=cli_env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        out, err = proc.communicate(timeout=10)  # also closes the pipe
    assert out.startswith("sent #1 "), err
    assert [e["body"] for e in events(cli_env)] == [expected_line(data)]


def test_path_with_spaces_is_one_shell_word(cli_env: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "my results.csv"
    path.write_bytes(b"x")
    path.chmod(0o600)
    assert wsbus(cli_env, "send", "bob", "--attach", str(path)).returncode == 0
    [ev] = events(cli_env)
    assert f"attach: '{path}' size=1 " in ev["body"]
    assert ev["meta"]["attach"]["path"] == str(path)
    r = wsbus(cli_env, "verify", ev["body"])  # the text form finds the quoted path
    assert r.returncode == 0 and r.stdout.startswith(f"OK '{path}' "), r


def test_relative_path_is_sent_absolute(cli_env: dict[str, str], data: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "wsbus", "send", "bob", "--attach", "out/hits.csv"],
        env=cli_env,
        cwd=data.parent.parent,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 0, r.stderr
    assert events(cli_env)[0]["meta"]["attach"]["path"] == str(data)


@posix_only
def test_a_file_others_can_read_is_sent_with_a_warning(cli_env: dict[str, str], data: Path) -> None:
    data.chmod(0o644)
    r = wsbus(cli_env, "send", "bob", "--attach", str(data))
    assert r.returncode == 0
    line = one_line_error(r)
    assert "readable by group or others (mode 0644)" in line and "chmod 600" in line
    assert len(events(cli_env)) == 1


def test_missing_file_errors_and_sends_nothing(cli_env: dict[str, str], tmp_path: Path) -> None:
    r = wsbus(cli_env, "send", "bob", "--attach", str(tmp_path / "nope.csv"), "hi")
    assert r.returncode == 2 and r.stdout == ""
    assert one_line_error(r) == f"wsbus: cannot attach {tmp_path / 'nope.csv'}: no such file"
    assert events(cli_env) == []


def test_directory_errors_and_sends_nothing(cli_env: dict[str, str], tmp_path: Path) -> None:
    r = wsbus(cli_env, "send", "bob", "--attach", str(tmp_path), "hi")
    assert r.returncode == 2 and r.stdout == ""
    assert one_line_error(r) == f"wsbus: cannot attach {tmp_path}: it is a directory"
    assert events(cli_env) == []


@posix_only
@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads anything")
def test_unreadable_file_errors(cli_env: dict[str, str], data: Path) -> None:
    data.chmod(0o000)
    r = wsbus(cli_env, "send", "bob", "--attach", str(data))
    assert r.returncode == 2
    assert one_line_error(r).endswith(": permission denied")
    assert events(cli_env) == []


def test_spooled_attachment_keeps_its_meta(
    env: dict[str, str], hub: HubProcess, data: Path, tmp_path: Path
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"ws://127.0.0.1:{s.getsockname()[1]}"
    spool_env = {
        **env,
        "WSBUS_NAME": "alice",
        "WSBUS_HOSTNAME": HOST,
        "WSBUS_SPOOL": str(tmp_path / "spool"),
    }
    r = wsbus({**spool_env, "WSBUS_URL": dead}, "send", "bob", "--attach", str(data), "--spool")
    assert r.returncode == 0 and r.stdout.startswith("spooled: "), r
    live = {**spool_env, "WSBUS_URL": hub.url}
    r = wsbus(live, "relay")
    assert r.returncode == 0, r.stderr
    [ev] = events(live)
    assert ev["meta"]["attach"]["sha256"] == sha256_of(data)
    assert wsbus(live, "verify", "1").returncode == 0


# ------------------------------------------------------------------ verify


def test_verify_seq_ok_then_mismatch(cli_env: dict[str, str], data: Path) -> None:
    assert wsbus(cli_env, "send", "bob", "--attach", str(data)).returncode == 0
    size, digest_hex = data.stat().st_size, sha256_of(data)

    r = wsbus(cli_env, "verify", "1")
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"OK {data} sha256={digest_hex} size={size}\n"

    r = wsbus(cli_env, "verify", "#1", "--json")
    assert r.returncode == 0
    assert json.loads(r.stdout) == {
        "ok": True,
        "path": str(data),
        "size": size,
        "sha256": digest_hex,
        "expected": {"size": size, "sha256": digest_hex},
        "host": HOST,
        "seq": 1,
    }

    content = bytearray(data.read_bytes())
    content[-1] ^= 1  # same size, other bytes
    data.write_bytes(bytes(content))
    r = wsbus(cli_env, "verify", "1")
    assert r.returncode == 1
    assert r.stdout == (f"MISMATCH {data}: expected sha256={digest_hex} got {sha256_of(data)}\n")

    with data.open("ab") as f:
        f.write(b"more")
    r = wsbus(cli_env, "verify", "1")
    assert r.returncode == 1
    assert r.stdout == f"MISMATCH {data}: expected size={size} got {size + 4}\n"
    r = wsbus(cli_env, "verify", "1", "--json")
    assert r.returncode == 1 and json.loads(r.stdout)["ok"] is False
    r = wsbus(cli_env, "verify", "1", "-q")
    assert (r.returncode, r.stdout, r.stderr) == (1, "", "")


def test_verify_a_fetched_copy(cli_env: dict[str, str], data: Path, tmp_path: Path) -> None:
    assert wsbus(cli_env, "send", "bob", "--attach", str(data)).returncode == 0
    copy = tmp_path / "fetched.csv"
    copy.write_bytes(data.read_bytes())
    data.unlink()  # the original is on the producer's host
    r = wsbus(cli_env, "verify", "1", str(copy))
    assert r.returncode == 0 and r.stdout.startswith(f"OK {copy} "), r


def test_verify_text_forms(cli_env: dict[str, str], data: Path) -> None:
    digest_hex, size = sha256_of(data), data.stat().st_size
    for ref in (f"sha256={digest_hex}", digest_hex.upper(), f"got it: sha256={digest_hex} ok"):
        r = wsbus(cli_env, "verify", ref, str(data))
        assert r.returncode == 0 and r.stdout.startswith(f"OK {data} "), (ref, r)
    r = wsbus(cli_env, "verify", f"sha256={digest_hex} size={size + 1}", str(data))
    assert r.returncode == 1 and "expected size=" in r.stdout
    r = wsbus(cli_env, "verify", f"sha256={'0' * 64}", str(data))
    assert r.returncode == 1 and r.stdout.startswith(f"MISMATCH {data}: expected sha256=000")
    # the attach line names the file; read from stdin with -
    r = wsbus(cli_env, "verify", "-", stdin="the hits\n" + expected_line(data) + "\n")
    assert r.returncode == 0 and r.stdout.startswith(f"OK {data} "), r


def test_verify_falls_back_to_the_body(cli_env: dict[str, str], data: Path) -> None:
    # an event without meta (sent by hand, or by an older client): the attach line counts
    assert wsbus(cli_env, "send", "bob", "fyi\n" + expected_line(data)).returncode == 0
    assert events(cli_env)[0].get("meta") is None
    r = wsbus(cli_env, "verify", "1")
    assert r.returncode == 0 and r.stdout.startswith(f"OK {data} "), r


def test_verify_errors_are_one_line(cli_env: dict[str, str], data: Path, tmp_path: Path) -> None:
    assert wsbus(cli_env, "send", "bob", "no attachment here").returncode == 0
    assert wsbus(cli_env, "send", "bob", "--attach", str(data)).returncode == 0
    cases = {
        ("verify", "9"): "no event #9",
        ("verify", "1"): "event #1 carries no attachment",
        ("verify", "nothing to see"): "no sha256=HEX in REF",
        ("verify", f"sha256={'a' * 64}"): "names no file: give the FILE",
        ("verify", f"sha256={'a' * 64} sha256={'b' * 64}", "f"): "several sha256",
        ("verify", "2", str(tmp_path / "gone.csv")): "gone.csv: no such file",
        ("verify", "2", str(tmp_path)): "it is a directory",
    }
    for args, wanted in cases.items():
        r = wsbus(cli_env, *args)
        assert r.returncode == 2 and r.stdout == "", (args, r)
        assert wanted in one_line_error(r), (args, r.stderr)


def test_verify_a_missing_file_from_another_host(cli_env: dict[str, str], data: Path) -> None:
    assert wsbus(cli_env, "send", "bob", "--attach", str(data)).returncode == 0
    data.unlink()
    r = wsbus({**cli_env, "WSBUS_HOSTNAME": "laptop"}, "verify", "1")
    assert r.returncode == 2
    assert one_line_error(r).endswith(
        f"no such file (it is on {HOST}: fetch it, then `wsbus verify REF FILE`)"
    )


def test_verify_without_a_hub(env: dict[str, str], data: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"ws://127.0.0.1:{s.getsockname()[1]}"
    offline = {**env, "WSBUS_URL": dead, "WSBUS_TIMEOUT": "2"}
    r = wsbus(offline, "verify", f"sha256={sha256_of(data)}", str(data))  # text: no hub
    assert r.returncode == 0, r.stderr
    r = wsbus(offline, "verify", "1")
    assert r.returncode == 3
    one_line_error(r)


def test_verify_help_has_examples(env: dict[str, str]) -> None:
    r = wsbus(env, "verify", "--help")
    assert r.returncode == 0 and "examples:" in r.stdout and "wsbus verify" in r.stdout
    r = wsbus(env, "send", "--help")
    assert "--attach FILE" in r.stdout


# ------------------------------------------------------------------ the reference, alone

SHA = "ab" * 32


def test_attach_line_round_trips() -> None:
    for path in ("/tmp/x.csv", "/tmp/my file.csv", "/tmp/it's.csv", "/tmp/ü 日本.csv"):
        ref = Reference(sha256=SHA, size=12, path=path, host="h1")
        line = attach_line(ref)
        assert "\n" not in line
        assert parse_reference(f"note\n{line}\n") == ref
        assert parse_reference(line.replace(SHA, SHA.upper())) == Reference(
            sha256=SHA.upper(), size=12, path=path, host="h1"
        )


def test_parse_reference_text_forms() -> None:
    assert parse_reference(f"sha256={SHA}") == Reference(sha256=SHA)
    assert parse_reference(f"size=3 sha256:{SHA}") == Reference(sha256=SHA, size=3)
    assert parse_reference(f"  {SHA}\n") == Reference(sha256=SHA)
    assert parse_reference(f"sha256={SHA} and again sha256={SHA}") == Reference(sha256=SHA)
    assert parse_reference(f"sha256={SHA} size=1 size=2") == Reference(sha256=SHA)
    for nothing in ("", "hello", f"sha256={SHA[:-1]}", f"xsha256={SHA}", f"sha256={SHA}0"):
        assert parse_reference(nothing) is None, nothing
    with pytest.raises(CliError):
        parse_reference(f"sha256={SHA} sha256={'cd' * 32}")


def test_from_meta_validates() -> None:
    good = {"attach": {"path": "/x", "size": 1, "sha256": SHA, "host": "h"}}
    assert from_meta(good) == Reference(sha256=SHA, size=1, path="/x", host="h")
    for bad in (
        None,
        {},
        {"attach": "nope"},
        {"attach": {"sha256": "xyz"}},
        {"attach": {"sha256": SHA, "size": -1}},
        {"attach": {"sha256": SHA, "size": "12"}},
    ):
        assert from_meta(bad) is None, bad  # type: ignore[arg-type]


def test_digest_streams_across_chunks(tmp_path: Path) -> None:
    for n in (0, 1, (1 << 20) - 1, 1 << 20, (1 << 20) + 1, 3 << 20):
        path = tmp_path / f"f{n}"
        path.write_bytes(os.urandom(n))
        assert digest(path) == (n, hashlib.sha256(path.read_bytes()).hexdigest())


@posix_only
def test_digest_refuses_what_is_not_a_regular_file(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    start = time.monotonic()
    with pytest.raises(OSError, match="not a regular file"):
        digest(fifo)  # never opened: opening a FIFO would block
    assert time.monotonic() - start < 5
    with pytest.raises(IsADirectoryError):
        digest(tmp_path)
    assert stat.S_ISFIFO(fifo.stat().st_mode)
