"""``wsbus serve`` behaviour, retention, the msgpack subprotocol and the public API."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import wsbus
from wsbus import Client, Event

from .helpers import HubProcess, wait_for


def test_public_api_is_exported() -> None:
    for name in wsbus.__all__:
        assert hasattr(wsbus, name), name
    assert {"Client", "Event", "SendResult", "SendRefused", "HubUnreachable"} <= set(wsbus.__all__)


def test_non_loopback_without_insecure_is_refused(env: dict[str, str], tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "wsbus", "serve", "--host", "0.0.0.0", "--port", "0",
           "--db", str(tmp_path / "x.db")]  # fmt: skip
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "--insecure" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "x.db").exists()


def test_serve_says_where_it_listens_and_where_data_lives(hub: HubProcess) -> None:
    text = "".join(hub.output)
    assert hub.url.startswith("ws://127.0.0.1:")
    assert str(hub.db) in text
    mode = stat.S_IMODE(os.stat(hub.db).st_mode)
    assert mode == 0o600, oct(mode)


def test_port_in_use_is_one_clear_line(hub: HubProcess, env: dict[str, str]) -> None:
    cmd = [sys.executable, "-m", "wsbus", "serve", "--memory", "--port", str(hub.port),
           "--no-http"]  # fmt: skip
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert "cannot listen" in r.stderr and "Traceback" not in r.stderr


def test_sigint_stops_cleanly(hub: HubProcess) -> None:
    import signal

    status, output = hub.stop(signal.SIGINT)
    assert status == 0
    assert "Traceback" not in output
    assert "stopped" in output


async def test_retention_by_count_and_truncation_is_reported(
    hub_factory: Callable[..., HubProcess],
) -> None:
    hub = hub_factory("--retention-count", "5")
    async with Client(hub.url, "alice") as alice:
        for i in range(20):
            await alice.send("bob", f"m{i}")
    hub.restart()  # retention is applied at start (and hourly)
    states: list[str] = []
    bob = Client(hub.url, "bob", resume=2, on_state=lambda s, d: states.append(s))
    welcome = await bob.connect()
    assert welcome.recovered is False
    assert "truncated" in states
    got: list[int] = []
    async for ev in bob.events():
        got.append(ev.seq)
        if ev.seq == 20:
            break
    await bob.close()
    assert got == [16, 17, 18, 19, 20]


async def test_listen_says_plainly_when_history_was_truncated(
    hub_factory: Callable[..., HubProcess], env: dict[str, str]
) -> None:
    hub = hub_factory("--retention-count", "3")
    async with Client(hub.url, "alice") as alice:
        for i in range(10):
            await alice.send("bob", f"m{i}")
    hub.restart()
    proc = subprocess.Popen(
        [sys.executable, "-m", "wsbus", "listen", "bob", "--since", "1", "--url", hub.url],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        lines: list[str] = []
        wait_for(lambda: lines.append(proc.stderr.readline()) or "truncated" in lines[-1], 20)  # type: ignore[union-attr]
    finally:
        proc.terminate()
        proc.wait(10)


async def test_msgpack_subprotocol_end_to_end(hub: HubProcess) -> None:
    async with (
        Client(hub.url, "bob", binary=True) as bob,
        Client(hub.url, "alice") as alice,
    ):
        ok = await alice.send("bob", "über msgpack", meta={"n": 1, "xs": [1, 2]})
        async for item in bob:
            if isinstance(item, Event):
                assert (item.seq, item.body, item.meta) == (
                    ok.seq,
                    "über msgpack",
                    {"n": 1, "xs": [1, 2]},
                )
                break
        sent = await bob.send("alice", "binary back")
        page = await alice.history(limit=5)
        assert [e.seq for e in page.events] == [ok.seq, sent.seq]


async def test_client_iteration_ends_after_close_even_with_a_full_queue(hub: HubProcess) -> None:
    async with Client(hub.url, "alice") as alice:
        bob = Client(hub.url, "bob", queue_size=3, presence=False)
        await bob.connect()
        for i in range(6):
            await alice.send("bob", f"m{i}")
        await bob.close()
        got = [item async for item in bob]
        assert 0 < len(got) <= 3


def test_send_with_an_invalid_url_fails_fast(env: dict[str, str]) -> None:
    for url in ("ws://127.0.0.1:99999", "ws://[::1", "http://127.0.0.1:1/"):
        r = subprocess.run(
            [sys.executable, "-m", "wsbus", "send", "--as", "a", "b", "x", "--url", url],
            env=env, capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert r.returncode == 2, (url, r.stderr)  # a usage error: fix the URL
        assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
        assert "invalid hub URL" in r.stderr and "running?" not in r.stderr


#: ``python -c`` that runs ``wsbus`` as if detect-secrets were not installed
WITHOUT_DETECT_SECRETS = """
import sys

class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == "detect_secrets":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Refuse())
from wsbus.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def test_block_secrets_without_the_extra_names_it(env: dict[str, str], tmp_path: Path) -> None:
    """detect-secrets is the extra ``wsbus[secrets]``: without it, --block-secrets is
    one line that says how to install it (exit 2), before the hub opens anything."""
    db = tmp_path / "x.db"
    cmd = [sys.executable, "-c", WITHOUT_DETECT_SECRETS, "serve", "--block-secrets",
           "--port", "0", "--no-http", "--db", str(db)]  # fmt: skip
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    assert "pip install 'wsbus[secrets]'" in r.stderr and "--block-secrets" in r.stderr
    assert not db.exists()
    # the same when the environment asks for it
    env_cmd = [*cmd[:3], "serve", "--port", "0", "--no-http", "--db", str(db)]
    r = subprocess.run(env_cmd, env=dict(env, WSBUS_BLOCK_SECRETS="1"), capture_output=True,
                       text=True, timeout=30)  # fmt: skip
    assert r.returncode == 2 and "wsbus[secrets]" in r.stderr, r.stderr
