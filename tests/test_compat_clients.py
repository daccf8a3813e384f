"""The agent-bus clients, driven against the shim exactly as they are used.

Each client is written here from its contract (DESIGN.md section 4 and the
agent-bus README): ``bus_recv.py NAME`` (a stdlib long-poll listener printing
one ``[HH:MM:SSZ] from NAME:`` / body / ``---`` block per message),
``bus_send.py TO`` (body on stdin, JSON ack on stdout) and the 30-second
``curl | jq`` poller of ``bus_listener.sh``. They run as real subprocesses against
a real ``wsbus serve``; messages also come from ``wsbus send`` and ``wsbus.Client``.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from wsbus import Client

from .helpers import HubProcess, wait_for

UA = "Mozilla/5.0"

# bus_recv.py NAME: the long-poll listener a coding agent's monitor tool runs.
BUS_RECV = r"""
import json
import os
import sys
import time
import urllib.parse
import urllib.request


def main():
    name = sys.argv[1]
    base = os.environ["AGENT_BUS_URL"].rstrip("/")
    channel = os.environ.get("AGENT_BUS_CHANNEL", "default")
    ua = os.environ.get("AGENT_BUS_UA", "Mozilla/5.0")
    since = time.time()
    print(f"listening as {name} on {channel} since {since!r}", file=sys.stderr, flush=True)
    while True:
        url = (
            f"{base}/recv?to={urllib.parse.quote(name)}&since={since!r}"
            f"&block=true&channel={urllib.parse.quote(channel)}"
        )
        req = urllib.request.Request(url, headers={"User-Agent": ua})
        try:
            with urllib.request.urlopen(req, timeout=45) as resp:
                data = json.loads(resp.read().decode("utf-8"))
        except Exception as err:
            print(f"poll failed: {err}; retrying in 2 s", file=sys.stderr, flush=True)
            time.sleep(2)
            continue
        for m in data.get("messages", []):
            ts = float(m.get("ts", 0))
            since = max(since, ts)
            stamp = time.strftime("%H:%M:%SZ", time.gmtime(ts))
            print(f"[{stamp}] from {m.get('from', '?')}:")
            print(m.get("msg", ""))
            print("---", flush=True)
        since = max(since, float(data.get("now", since)))


main()
"""

# bus_send.py TO: one message, body on stdin, prints the bus's JSON answer.
BUS_SEND = r"""
import json
import os
import sys
import urllib.request

to = sys.argv[1]
body = sys.stdin.read().rstrip("\n")
payload = {
    "channel": os.environ.get("AGENT_BUS_CHANNEL", "default"),
    "from": os.environ["AGENT_NAME"],
    "to": to,
    "msg": body,
}
req = urllib.request.Request(
    os.environ["AGENT_BUS_URL"].rstrip("/") + "/send",
    data=json.dumps(payload).encode("utf-8"),
    headers={
        "User-Agent": os.environ.get("AGENT_BUS_UA", "Mozilla/5.0"),
        "Content-Type": "application/json",
    },
    method="POST",
)
with urllib.request.urlopen(req, timeout=15) as resp:
    print(resp.read().decode("utf-8"))
"""

# One iteration of bus_listener.sh's loop (its `sleep 30` left out).
BUS_LISTENER_ONCE = r"""
set -u
CHANNEL="${AGENT_BUS_CHANNEL:-default}"
RESP=$(curl -sS -A "Mozilla/5.0" --max-time 15 \
  "$AGENT_BUS_URL/recv?to=$AGENT_NAME&channel=$CHANNEL&max=50")
printf '%s\n' "$RESP" | jq -c '.messages[]?' >> "$JSONL"
printf '%s\n' "$RESP" | jq -r '.messages[]? | "\(.ts // .timestamp // 0)\t\(.from // "?")\t\((.msg // .body // "") | gsub("\n"; " | ")[:120])"' >> "$LOG"
"""  # noqa: E501

UNICODE_BODY = "résumé ready: 漢字 ok 🚀\nsecond line — done\n  indented third"


def stamp(ts: float) -> str:
    return time.strftime("%H:%M:%SZ", time.gmtime(ts))


def block(sender: str, ts: float, body: str) -> str:
    return f"[{stamp(ts)}] from {sender}:\n{body}\n---\n"


def client_env(env: dict[str, str], hub: HubProcess, **extra: str) -> dict[str, str]:
    e = dict(env, AGENT_BUS_URL=hub.http_url, PYTHONIOENCODING="utf-8")
    e.update(extra)
    return e


def get_json(url: str, timeout: float = 10.0) -> Any:
    req = urllib.request.Request(url, headers={"User-Agent": UA})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read().decode("utf-8"))


def post_send(hub: HubProcess, sender: str, to: str, msg: str, channel: str = "default") -> Any:
    """A ``POST /send`` the way bus_send.py makes it (urllib, json.dumps, Mozilla UA)."""
    payload = {"channel": channel, "from": sender, "to": to, "msg": msg}
    req = urllib.request.Request(
        hub.http_url + "/send",
        data=json.dumps(payload).encode("utf-8"),
        headers={"User-Agent": UA, "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read().decode("utf-8"))


def bus_send(tmp_path: Path, env: dict[str, str], to: str, body: str) -> dict[str, Any]:
    """Run bus_send.py as a subprocess; returns the ack it printed."""
    script = tmp_path / "bus_send.py"
    if not script.exists():
        script.write_text(BUS_SEND, encoding="utf-8")
    r = subprocess.run(
        [sys.executable, str(script), to],
        input=body + "\n",
        env=env,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=20,
    )
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 1, r.stdout
    ack: dict[str, Any] = json.loads(lines[0])
    return ack


def check_ack(ack: dict[str, Any], channel: str = "default") -> float:
    assert ack["ok"] is True, ack
    assert isinstance(ack["ts"], float), ack
    assert ack["channel"] == channel, ack
    assert abs(ack["ts"] - time.time()) < 60
    return float(ack["ts"])


class Listener:
    """A running ``bus_recv.py NAME``: its stdout collected by a reader thread."""

    def __init__(self, proc: subprocess.Popen[str], err_path: Path) -> None:
        self.proc = proc
        self.err_path = err_path
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._lock:
                self.lines.append(line)

    @property
    def text(self) -> str:
        with self._lock:
            return "".join(self.lines)

    @property
    def stderr(self) -> str:
        return self.err_path.read_text(encoding="utf-8") if self.err_path.exists() else ""

    def blocks(self) -> int:
        with self._lock:
            return sum(1 for line in self.lines if line == "---\n")

    def wait_blocks(self, n: int, timeout: float = 10.0) -> str:
        try:
            wait_for(lambda: self.blocks() >= n or self.proc.poll() is not None, timeout)
        except AssertionError:
            raise AssertionError(
                f"listener printed {self.blocks()} blocks, wanted {n}:\n{self.text}\n"
                f"stderr:\n{self.stderr}"
            ) from None
        assert self.proc.poll() is None, f"listener exited: {self.stderr}"
        return self.text


@contextmanager
def listener(
    tmp_path: Path, env: dict[str, str], name: str, tag: str = "main"
) -> Iterator[Listener]:
    script = tmp_path / "bus_recv.py"
    if not script.exists():
        script.write_text(BUS_RECV, encoding="utf-8")
    err_path = tmp_path / f"bus_recv-{name}-{tag}.err"
    with err_path.open("w", encoding="utf-8") as err:
        proc = subprocess.Popen(
            [sys.executable, str(script), name],
            stdout=subprocess.PIPE,
            stderr=err,
            env=env,
            text=True,
            encoding="utf-8",
        )
    try:
        lst = Listener(proc, err_path)
        # its cursor starts at its own time.time(): anything sent after this line is new
        wait_for(lambda: "listening as" in lst.stderr or proc.poll() is not None, 15)
        assert proc.poll() is None, lst.stderr
        yield lst
    finally:
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


# --------------------------------------------------------------------------- 1


def test_bus_recv_prints_exact_blocks_from_every_kind_of_sender(
    hub: HubProcess, env: dict[str, str], tmp_path: Path
) -> None:
    cenv = client_env(env, hub)
    with listener(tmp_path, cenv, "bob") as bob:
        # (a) bus_send.py: body on stdin with newlines, accents, CJK and an emoji
        ack = bus_send(tmp_path, dict(cenv, AGENT_NAME="alice"), "bob", UNICODE_BODY)
        ts_a = check_ack(ack)
        expected = block("alice", ts_a, UNICODE_BODY)
        assert bob.wait_blocks(1) == expected

        # (b) the wsbus CLI
        cli_body = "from the CLI: état ✓"
        r = subprocess.run(
            [sys.executable, "-m", "wsbus", "send", "--as", "alice", "bob", cli_body,
             "--url", hub.url, "--json"],
            env=cenv, capture_output=True, text=True, encoding="utf-8", timeout=30,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        ts_b = json.loads(r.stdout)["ts"]
        expected += block("alice", ts_b, cli_body)
        assert bob.wait_blocks(2) == expected

        # (c) a websocket client
        async def ws_send() -> float:
            async with Client(hub.url, "carol", channels=(), presence=False) as carol:
                res = await carol.send("bob", "over the websocket\nwith 2 lines 😀")
                return res.ts

        ts_c = asyncio.run(ws_send())
        expected += block("carol", ts_c, "over the websocket\nwith 2 lines 😀")
        assert bob.wait_blocks(3) == expected
        assert ts_a < ts_b < ts_c
        assert "poll failed" not in bob.stderr


# --------------------------------------------------------------------------- 2


def test_channels_never_mix_for_the_listener(
    hub_factory: Callable[..., HubProcess], env: dict[str, str], tmp_path: Path
) -> None:
    hub = hub_factory("--poll-timeout", "2")
    cenv = client_env(env, hub)
    alice = dict(cenv, AGENT_NAME="alice")
    alice_other = dict(alice, AGENT_BUS_CHANNEL="other")
    with (
        listener(tmp_path, cenv, "bob", "default") as plain,
        listener(tmp_path, dict(cenv, AGENT_BUS_CHANNEL="other"), "bob", "other") as other,
    ):
        want_plain = want_other = ""
        ts = check_ack(bus_send(tmp_path, alice, "bob", "d1 on default"))
        want_plain += block("alice", ts, "d1 on default")
        ts = check_ack(bus_send(tmp_path, alice_other, "bob", "o1 on other"), "other")
        want_other += block("alice", ts, "o1 on other")
        ts = check_ack(post_send(hub, "alice", "bob", "o2 on other", "other"), "other")
        want_other += block("alice", ts, "o2 on other")
        ts = check_ack(post_send(hub, "alice", "bob", "d2 on default"))
        want_plain += block("alice", ts, "d2 on default")
        # a channel broadcast reaches bob on that channel only
        ts = check_ack(bus_send(tmp_path, alice_other, "*", "o3 everyone on other"), "other")
        want_other += block("alice", ts, "o3 everyone on other")
        # and messages to somebody else are never shown
        check_ack(post_send(hub, "alice", "carol", "not for bob"))
        check_ack(post_send(hub, "alice", "carol", "not for bob either", "other"), "other")
        # markers last: once they are printed, everything before them would have been too
        ts = check_ack(post_send(hub, "alice", "bob", "default marker"))
        want_plain += block("alice", ts, "default marker")
        ts = check_ack(post_send(hub, "alice", "bob", "other marker", "other"), "other")
        want_other += block("alice", ts, "other marker")

        assert plain.wait_blocks(3) == want_plain
        assert other.wait_blocks(4) == want_other
        assert "poll failed" not in plain.stderr + other.stderr


# --------------------------------------------------------------------------- 3


@pytest.mark.skipif(
    shutil.which("curl") is None or shutil.which("jq") is None or shutil.which("bash") is None,
    reason="needs curl, jq and bash on PATH (bus_listener.sh is a curl + jq script)",
)
def test_bus_listener_sh_one_iteration(
    hub: HubProcess, env: dict[str, str], tmp_path: Path
) -> None:
    long_line = "long " + "x" * 150
    bodies = ["plain one", "line one\nligne deux é\n漢字 three", long_line]
    acks = [post_send(hub, "alice", "spark", b) for b in bodies]
    for ack in acks:
        check_ack(ack)
    post_send(hub, "alice", "dell", "for dell")  # another recipient
    post_send(hub, "alice", "spark", "other channel", "other")  # another channel

    jsonl = tmp_path / "bus_spark.jsonl"
    log = tmp_path / "bus_listener_spark.log"
    jsonl.write_text('{"old": true}\n', encoding="utf-8")  # appended to, not replaced
    log.write_text("old\tline\n", encoding="utf-8")
    r = subprocess.run(
        ["bash", "-c", BUS_LISTENER_ONCE],
        env=dict(env, AGENT_BUS_URL=hub.http_url, AGENT_NAME="spark", JSONL=str(jsonl),
                 LOG=str(log)),
        capture_output=True, text=True, encoding="utf-8", timeout=30,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""

    lines = jsonl.read_text(encoding="utf-8").splitlines()
    assert lines[0] == '{"old": true}'
    got = [json.loads(line) for line in lines[1:]]
    assert len(got) == 3, lines
    for msg, body, ack in zip(got, bodies, acks, strict=True):
        assert msg["from"] == "alice"
        assert msg["msg"] == body
        assert msg["ts"] == ack["ts"]
        assert msg["channel"] == "default"
        assert msg["to"] == "spark"
    assert [m["ts"] for m in got] == sorted(m["ts"] for m in got)

    tsv = log.read_text(encoding="utf-8").splitlines()
    assert tsv[0] == "old\tline"
    rows = [line.split("\t") for line in tsv[1:]]
    assert len(rows) == 3, tsv
    for row, body, ack in zip(rows, bodies, acks, strict=True):
        assert len(row) == 3, row
        assert float(row[0]) == ack["ts"]
        assert row[1] == "alice"
        assert row[2] == body.replace("\n", " | ")[:120]
    assert rows[1][2] == "line one | ligne deux é | 漢字 three"
    assert rows[2][2] == ("long " + "x" * 150)[:120]


# --------------------------------------------------------------------------- 4


async def test_inbox_and_healthz(hub: HubProcess) -> None:
    def get(path: str) -> Any:
        return get_json(hub.http_url + path)

    health = await asyncio.to_thread(get, "/healthz")
    assert health["ok"] is True
    assert isinstance(health["now"], float)
    assert abs(health["now"] - time.time()) < 5

    inbox = await asyncio.to_thread(get, "/inbox")
    assert inbox["recipients"] == {}
    assert isinstance(inbox["now"], float)

    for to, channel in [("bob", "default"), ("bob", "default"), ("carol", "default"),
                        ("bob", "other")]:  # fmt: skip
        await asyncio.to_thread(post_send, hub, "alice", to, f"to {to}", channel)
    async with Client(hub.url, "dave", channels=(), presence=False) as dave:
        await dave.send("bob", "from the websocket")  # counted like any other message

    inbox = await asyncio.to_thread(get, "/inbox")
    assert inbox["recipients"] == {"default": {"bob": 3, "carol": 1}, "other": {"bob": 1}}

    # a /recv does not consume anything
    got = await asyncio.to_thread(get, "/recv?to=bob&since=0")
    assert len(got["messages"]) == 3
    assert (await asyncio.to_thread(get, "/inbox"))["recipients"]["default"]["bob"] == 3

    await asyncio.to_thread(post_send, hub, "alice", "bob", "one more", "other")
    inbox2 = await asyncio.to_thread(get, "/inbox")
    assert inbox2["recipients"] == {"default": {"bob": 3, "carol": 1}, "other": {"bob": 2}}
    assert inbox2["now"] >= inbox["now"]

    health2 = await asyncio.to_thread(get, "/healthz")
    assert health2 == {"ok": True, "now": health2["now"]}
    assert health2["now"] >= health["now"]


# --------------------------------------------------------------------------- 5


async def test_websocket_send_wakes_a_blocked_recv_at_once(
    hub_factory: Callable[..., HubProcess],
) -> None:
    hub = hub_factory("--poll-timeout", "30")

    def answer(conn: http.client.HTTPConnection) -> tuple[Any, float]:
        resp = conn.getresponse()
        body = resp.read()
        arrived = time.monotonic()
        assert resp.status == 200, body
        return json.loads(body.decode("utf-8")), arrived

    async with Client(hub.url, "alice", channels=(), presence=False) as alice:
        for i in range(3):
            since = time.time()
            conn = http.client.HTTPConnection("127.0.0.1", hub.http_port, timeout=40)
            try:
                conn.request(
                    "GET",
                    f"/recv?to=bob&since={since!r}&block=true&channel=default",
                    headers={"User-Agent": UA},
                )
                pending = asyncio.ensure_future(asyncio.to_thread(answer, conn))
                # a round trip on another connection: by its answer the hub has read the poll
                await asyncio.to_thread(get_json, hub.http_url + "/healthz")
                assert not pending.done(), "a blocked /recv answered with nothing to say"
                sent = time.monotonic()
                res = await alice.send("bob", f"wake up {i}")
                data, arrived = await asyncio.wait_for(pending, 10)
            finally:
                if conn.sock is not None:  # unblocks the reader thread if anything failed
                    with contextlib.suppress(OSError):
                        conn.sock.shutdown(socket.SHUT_RDWR)
                conn.close()
            latency = arrived - sent
            assert latency < 1.0, f"blocked /recv answered {latency:.3f} s after the send"
            msgs = [(m["from"], m["msg"], m["ts"], m["seq"]) for m in data["messages"]]
            assert msgs == [("alice", f"wake up {i}", res.ts, res.seq)]
            assert data["now"] >= res.ts


# --------------------------------------------------------------------------- 6


def test_cursor_rule_pages_through_everything_with_max(hub: HubProcess) -> None:
    """A client paging with ``max`` and the cursor rule gets every message exactly once
    (invariant 5: an answer cut short by ``max`` has ``now`` = ts of its last message)."""
    acks = [post_send(hub, "alice", "bob", f"page {i}") for i in range(7)]
    since = 0.0
    got: list[tuple[str, float]] = []
    for _ in range(20):
        data = get_json(f"{hub.http_url}/recv?to=bob&since={since!r}&max=3")
        if not data["messages"]:
            break
        assert len(data["messages"]) <= 3
        for m in data["messages"]:
            got.append((m["msg"], m["ts"]))
            since = max(since, m["ts"])
        since = max(since, data["now"])
    assert got == [(f"page {i}", ack["ts"]) for i, ack in enumerate(acks)]


def test_bus_recv_loses_nothing_in_a_burst(
    hub: HubProcess, env: dict[str, str], tmp_path: Path
) -> None:
    """Hundreds of messages committed while the listener polls: each printed once, in order."""
    n = 400
    with listener(tmp_path, client_env(env, hub), "bob") as bob:

        async def burst() -> list[tuple[int, float, str]]:
            async with Client(hub.url, "alice", channels=(), presence=False) as alice:
                bodies = [f"burst {i:03d}" for i in range(n)]
                results = await asyncio.gather(*(alice.send("bob", b) for b in bodies))
                sent = sorted((r.seq, r.ts, b) for r, b in zip(results, bodies, strict=True))
                marker = await alice.send("bob", "end of burst")
                return [*sent, (marker.seq, marker.ts, "end of burst")]

        sent = asyncio.run(burst())
        wait_for(lambda: "end of burst\n---\n" in bob.text, 15)
        assert bob.text == "".join(block("alice", ts, body) for _, ts, body in sent)
