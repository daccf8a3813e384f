"""Authentication, TLS, origins and limits, against real hub processes.

Every attempt the issue lists (no token, a forged sender, a revoked token, a
channel the token does not allow) is made on the websocket and on the HTTP shim,
and each test then checks that what was acknowledged is still there.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trustme
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Subprotocol

from wsbus import Client
from wsbus.auth import TokenStore
from wsbus.errors import ConnectionLost, HubUnreachable, SendRefused

from .helpers import HubProcess, RawClient, wait_for
from .test_cli import wsbus
from .test_compat_clients import bus_send, listener

UA = "Mozilla/5.0"


class Tokens:
    """A token file with one token per role, made the way `wsbus token create` makes them."""

    def __init__(self, path: Path) -> None:
        self.path = path
        store = TokenStore(path).load()
        self.alice = store.create("alice")
        self.bob = store.create("bob")
        self.ops = store.create("opsbot", channels=["ops"])
        self.bridge = store.create("bridge-a", role="bridge", names=["claude", "codex"])
        self.admin = store.create("root", role="admin")

    def revoke(self, env: dict[str, str], who: str) -> None:
        r = subprocess.run(
            [sys.executable, "-m", "wsbus", "token", "revoke", who, "--auth", str(self.path)],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert r.returncode == 0, r.stderr


@pytest.fixture
def tokens(tmp_path: Path) -> Tokens:
    return Tokens(tmp_path / "tokens.json")


@pytest.fixture
def authhub(hub_factory: Callable[..., HubProcess], tokens: Tokens) -> HubProcess:
    return hub_factory("--auth", str(tokens.path))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def http(
    url: str,
    *,
    body: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    context: ssl.SSLContext | None = None,
) -> tuple[int, Any, dict[str, str]]:
    """One HTTP request; (status, JSON answer, headers) whatever the status."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        url,
        data=data,
        headers={"User-Agent": UA, "Content-Type": "application/json", **(headers or {})},
        method="POST" if body is not None else "GET",
    )
    try:
        with urllib.request.urlopen(req, timeout=15, context=context) as resp:
            return resp.status, json.loads(resp.read()), dict(resp.headers)
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read()), dict(err.headers)


def send_body(sender: str, to: str, msg: str, channel: str = "default") -> dict[str, Any]:
    return {"from": sender, "to": to, "msg": msg, "channel": channel}


async def bodies(hub: HubProcess, token: str) -> list[tuple[str, str, str]]:
    """(from, to, body) of every stored event, read with an admin token."""
    async with Client(hub.url, channels=[], token=token) as admin:
        page = await admin.history(limit=1000)
    return [(e.from_, e.to, e.body) for e in page.events]


# --------------------------------------------------------------------------- websocket


async def test_websocket_without_a_valid_token_is_refused(
    authhub: HubProcess, tokens: Tokens
) -> None:
    # no token at all: the hello is answered `unauthorized` and the close is 4001
    raw = RawClient(authhub.url)
    from websockets.asyncio.client import connect as ws_connect

    raw.conn = await ws_connect(authhub.url, subprotocols=["wsbus.v1.json"])  # type: ignore[list-item]
    await raw.send({"op": "hello", "name": "alice"})
    err = await raw.recv()
    assert err["op"] == "error" and err["code"] == "unauthorized", err
    with pytest.raises(ConnectionClosed) as closed:
        await raw.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4001

    # the client library says so once and does not retry
    with pytest.raises(ConnectionLost) as lost:
        async with Client(authhub.url, "alice", token=None):
            pass
    assert lost.value.code == 4001 and "token" in str(lost.value)

    # a wrong token in the header is refused before the upgrade (HTTP 401)
    wrong = tokens.alice[:-4] + "AAAA"
    with pytest.raises(InvalidStatus) as status:
        await connect(authhub.url, additional_headers=bearer(wrong))
    assert status.value.response.status_code == 401
    with pytest.raises(ConnectionLost) as lost:
        async with Client(authhub.url, "alice", token="wsbus_00000000_" + "x" * 43):
            pass
    assert lost.value.code == 4001 and "401" in str(lost.value)


async def test_the_token_is_the_sender(authhub: HubProcess, tokens: Tokens) -> None:
    received: list[Any] = []
    async with Client(authhub.url, token=tokens.bob) as bob:  # no name: the token's
        assert bob.welcome is not None and bob.welcome.names == ["bob"]
        async with Client(authhub.url, channels=[], token=tokens.alice) as alice:
            ok = await alice.send("bob", "hello from the real alice")
            with pytest.raises(SendRefused) as forged:
                await alice.send("bob", "i am carol", from_="carol")
            assert forged.value.code == "not_your_name"
        async for ev in bob.events():
            received.append(ev)
            break
    assert received[0].from_ == "alice" and received[0].seq == ok.seq

    # a hello naming someone else is refused and closed (4001), not silently renamed
    with pytest.raises(ConnectionLost) as lost:
        async with Client(authhub.url, "bob", token=tokens.alice):
            pass
    assert lost.value.code == 4001 and "may not act as bob" in str(lost.value)
    assert await bodies(authhub, tokens.admin) == [("alice", "bob", "hello from the real alice")]


async def test_wsbus_send_takes_the_name_the_token_vouches_for(
    authhub: HubProcess, tokens: Tokens, env: dict[str, str]
) -> None:
    """The token is the sender: with WSBUS_TOKEN and no --as/WSBUS_NAME, `wsbus send`
    sends as the token's name; an admin token names nobody: one line, exit 2."""

    def send(token: str, *extra: str) -> subprocess.CompletedProcess[str]:
        cli_env = dict(env, WSBUS_URL=authhub.url, WSBUS_TOKEN=token)
        return wsbus(cli_env, "send", "bob", "who am i", "--json", *extra)

    r = send(tokens.alice)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["from"] == "alice"
    r = send(tokens.admin)
    assert r.returncode == 2 and "--as NAME" in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert send(tokens.admin, "--as", "carol").returncode == 0
    assert [s for s, _, _ in await bodies(authhub, tokens.admin)] == ["alice", "carol"]


async def test_channel_acls(authhub: HubProcess, tokens: Tokens) -> None:
    with pytest.raises(ConnectionLost) as lost:
        async with Client(authhub.url, token=tokens.ops):  # default channel: not allowed
            pass
    assert lost.value.code == 4001 and "channel default" in str(lost.value)
    raw = RawClient(authhub.url, additional_headers=bearer(tokens.ops))
    await raw.open({"channels": ["ops"]})
    await raw.send({"op": "send", "ref": "r1", "to": "*", "body": "deploying", "channel": "ops"})
    assert (await raw.recv_op("ok"))["ref"] == "r1"
    await raw.send({"op": "send", "ref": "r2", "to": "*", "body": "x", "channel": "default"})
    err = await raw.recv_op("error")
    assert err["code"] == "forbidden" and err["ref"] == "r2", err
    await raw.send({"op": "subscribe", "channels": ["default"]})
    assert (await raw.recv_op("error"))["code"] == "forbidden"
    for op in ({"op": "history", "ref": "h", "channel": "default"},
               {"op": "roster", "ref": "ro", "channel": "default"},
               {"op": "threads", "ref": "t", "channel": "default"},
               {"op": "register", "ref": "g", "channel": "default", "name": "opsbot"}):  # fmt: skip
        await raw.send(op)
        err = await raw.recv_op("error")
        assert err["code"] == "forbidden" and err["ref"] == op["ref"], (op, err)
    # still serving this connection after all of that
    await raw.send({"op": "ping", "ref": "p"})
    assert (await raw.recv_op("pong"))["ref"] == "p"
    await raw.close()
    assert await bodies(authhub, tokens.admin) == [("opsbot", "*", "deploying")]


async def test_history_and_watch_show_only_what_the_token_may_read(
    authhub: HubProcess, tokens: Tokens
) -> None:
    async with Client(authhub.url, channels=[], token=tokens.bob) as bob:
        await bob.send("carol", "bob to carol, private")
        await bob.send("alice", "bob to alice")
        await bob.send("*", "bob to everyone")
    async with Client(authhub.url, channels=[], token=tokens.alice) as alice:
        mine = await alice.history(limit=100)
        assert [e.body for e in mine.events] == ["bob to alice", "bob to everyone"]
        assert (await alice.history(from_="bob", to="carol")).events == []
        with pytest.raises(SendRefused) as refused:
            await alice.history(to="carol", pending=True)
        assert refused.value.code == "forbidden"
    with pytest.raises(ConnectionLost) as lost:
        async with Client(authhub.url, token=tokens.alice, watch=True):
            pass
    assert "admin" in str(lost.value)
    # an admin watches everything, others' direct events included
    async with Client(authhub.url, token=tokens.admin, watch=True) as admin:
        async with Client(authhub.url, channels=[], token=tokens.bob) as bob:
            await bob.send("carol", "seen by the admin")
        ev = await asyncio.wait_for(anext(admin.events()), 10)
        assert (ev.from_, ev.to, ev.body) == ("bob", "carol", "seen by the admin")


async def test_a_bridge_token_serves_only_its_names(authhub: HubProcess, tokens: Tokens) -> None:
    raw = RawClient(authhub.url, additional_headers=bearer(tokens.bridge))
    welcome = await raw.open({"kind": "bridge", "names": ["claude", "codex", "grok"]})
    assert welcome["names"] == ["claude", "codex"] and welcome["refused"] == ["grok"]
    err = await raw.recv_op("error")
    assert err["code"] == "forbidden" and "grok" in str(err["message"])
    await raw.send({"op": "send", "ref": "g", "to": "claude", "body": "x", "from": "grok"})
    assert (await raw.recv_op("error"))["code"] == "not_your_name"
    await raw.send({"op": "send", "ref": "c", "to": "alice", "body": "hi", "from": "codex"})
    assert (await raw.recv_op("ok"))["ref"] == "c"
    await raw.close()
    assert await bodies(authhub, tokens.admin) == [("codex", "alice", "hi")]


async def test_revocation_closes_open_connections(
    authhub: HubProcess, tokens: Tokens, env: dict[str, str]
) -> None:
    closed: list[str] = []

    def on_state(state: str, details: dict[str, Any]) -> None:
        closed.append(f"{state} {details}")

    alice = Client(authhub.url, token=tokens.alice, on_state=on_state)
    await alice.connect()
    ok = await alice.send("bob", "sent before the revocation")
    tokens.revoke(env, "alice")
    with pytest.raises(ConnectionLost) as lost:
        await asyncio.wait_for(anext(alice.events()), 15)
    assert lost.value.code == 4001 and "revoked" in lost.value.reason
    await alice.close()
    with pytest.raises(ConnectionLost):
        async with Client(authhub.url, token=tokens.alice):
            pass
    # bob is unaffected, and the acknowledged event is kept
    async with Client(authhub.url, channels=[], token=tokens.bob) as bob:
        assert [e.seq for e in (await bob.history(to="bob")).events] == [ok.seq]


async def test_token_in_hello_for_browsers(authhub: HubProcess, tokens: Tokens) -> None:
    raw = RawClient(authhub.url)
    welcome = await raw.open({"token": tokens.alice})
    assert welcome["names"] == ["alice"]
    await raw.close()


# --------------------------------------------------------------------------- HTTP


async def test_http_send_and_recv_need_the_right_token(
    authhub: HubProcess, tokens: Tokens, env: dict[str, str]
) -> None:
    base = authhub.http_url
    status, answer, headers = http(base + "/send", body=send_body("alice", "bob", "x"))
    assert status == 401 and "token" in answer["error"] and "Bearer" in headers["WWW-Authenticate"]
    status, answer, _ = http(
        base + "/send", body=send_body("alice", "bob", "hi bob"), headers=bearer(tokens.alice)
    )
    assert status == 200 and answer["ok"] is True
    stored = answer["seq"]
    status, answer, _ = http(
        base + "/send", body=send_body("carol", "bob", "forged"), headers=bearer(tokens.alice)
    )
    assert status == 403 and "may not act as 'carol'" in answer["error"]
    status, answer, _ = http(
        base + "/send",
        body=send_body("opsbot", "bob", "wrong channel", "default"),
        headers=bearer(tokens.ops),
    )
    assert status == 403 and "channel" in answer["error"]
    # /t/TOKEN as the base URL, for clients that cannot set headers
    status, answer, _ = http(f"{base}/t/{tokens.bob}/recv?to=bob&since=0")
    assert status == 200 and [m["msg"] for m in answer["messages"]] == ["hi bob"]
    status, answer, _ = http(f"{base}/t/{tokens.alice}/recv?to=bob&since=0")
    assert status == 403, answer  # reading someone else's inbox
    status, _, _ = http(f"{base}/t/not-a-token/recv?to=bob&since=0")
    assert status == 401
    status, answer, _ = http(base + "/healthz")
    assert status == 200 and answer["ok"] is True
    # revoked: refused from the next request on, and a pending poll is answered 401
    loop = asyncio.get_running_loop()
    poll = loop.run_in_executor(
        None, http, f"{base}/t/{tokens.bob}/recv?to=bob&since={time.time()}&block=true"
    )
    await asyncio.sleep(0)  # let the executor start the request
    tokens.revoke(env, "bob")
    status, answer, _ = await asyncio.wait_for(poll, 20)
    assert status == 401 and "revoked" in answer["error"], answer
    status, _, _ = http(f"{base}/t/{tokens.bob}/recv?to=bob&since=0")
    assert status == 401
    assert [e.seq for e in await _events(authhub, tokens.admin)] == [stored]


async def _events(hub: HubProcess, token: str) -> list[Any]:
    async with Client(hub.url, channels=[], token=token) as admin:
        return list((await admin.history(limit=1000)).events)


def test_agent_bus_clients_work_through_a_token_base_url(
    authhub: HubProcess, tokens: Tokens, env: dict[str, str], tmp_path: Path
) -> None:
    good = dict(env, AGENT_BUS_URL=f"{authhub.http_url}/t/{tokens.bob}", PYTHONIOENCODING="utf-8")
    sender = dict(good, AGENT_BUS_URL=f"{authhub.http_url}/t/{tokens.alice}", AGENT_NAME="alice")
    with listener(tmp_path, good, "bob") as lst:
        ack = bus_send(tmp_path, sender, "bob", "through the token URL")
        assert ack["ok"] is True
        text = lst.wait_blocks(1)
        assert "from alice:\nthrough the token URL\n---\n" in text
    # without a token: bus_send.py fails (HTTP 401), bus_recv.py reports failed polls
    bare = dict(env, AGENT_BUS_URL=authhub.http_url, AGENT_NAME="alice")
    script = tmp_path / "bus_send.py"
    r = subprocess.run(
        [sys.executable, str(script), "bob"],
        input="no token\n",
        env=bare,
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert r.returncode != 0 and "401" in r.stderr
    with listener(tmp_path, dict(env, AGENT_BUS_URL=authhub.http_url), "bob", "bare") as lst:
        wait_for(lambda: "401" in lst.stderr, 15)
        assert lst.blocks() == 0


# --------------------------------------------------------------------------- TLS


@pytest.fixture
def ca(tmp_path: Path) -> tuple[trustme.CA, Path, Path, Path]:
    authority = trustme.CA()
    cert = authority.issue_cert("127.0.0.1", "localhost")
    ca_pem = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(ca_pem))
    chain = tmp_path / "hub.pem"
    key = tmp_path / "hub-key.pem"
    cert.private_key_pem.write_to_path(str(key))
    for i, blob in enumerate(cert.cert_chain_pems):
        blob.write_to_path(str(chain), append=i > 0)
    return authority, ca_pem, chain, key


async def test_tls_with_auth_serves_wss_https_and_every_client(
    hub_factory: Callable[..., HubProcess],
    tokens: Tokens,
    ca: tuple[trustme.CA, Path, Path, Path],
    env: dict[str, str],
    tmp_path: Path,
) -> None:
    _, ca_pem, chain, key = ca
    hub = hub_factory("--auth", str(tokens.path), "--tls-cert", str(chain), "--tls-key", str(key))
    assert hub.url.startswith("wss://") and hub.http_url.startswith("https://")

    # the library: verifies the certificate against the CA file
    async with Client(hub.url, token=tokens.bob, ca_file=str(ca_pem)) as bob:
        async with Client(hub.url, channels=[], token=tokens.alice, ca_file=str(ca_pem)) as a:
            await a.send("bob", "over wss")
        ev = await asyncio.wait_for(anext(bob.events()), 10)
        assert ev.body == "over wss"
    # without the CA the certificate is not trusted: refused, not silently accepted
    with pytest.raises(HubUnreachable) as unreachable:
        async with Client(hub.url, token=tokens.bob):
            pass
    assert "certificate" in str(unreachable.value).lower()

    # the CLI: WSBUS_TOKEN and WSBUS_CA_FILE, no flags
    cli_env = dict(
        env,
        WSBUS_URL=hub.url,
        WSBUS_NAME="alice",
        WSBUS_TOKEN=tokens.alice,
        WSBUS_CA_FILE=str(ca_pem),
    )
    r = subprocess.run(
        [sys.executable, "-m", "wsbus", "send", "bob", "from the CLI", "--json"],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 0, r.stderr
    r = subprocess.run(
        [sys.executable, "-m", "wsbus", "send", "bob", "no token"],
        env=dict(cli_env, WSBUS_TOKEN=""),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode != 0 and r.stderr.count("\n") == 1 and "token" in r.stderr, r.stderr
    r = wsbus(dict(cli_env, WSBUS_TOKEN="wsbus_00000000_notarealsecret"), "send", "bob", "x")
    # one line, said once: "the hub refused the connection: HTTP 401: ..."
    assert r.returncode == 4 and r.stderr.count("refused the connection") == 1, r.stderr
    assert "HTTP 401" in r.stderr and r.stderr.count("\n") == 1, r.stderr
    # no CA: the certificate is not trusted, and the line says how to trust it
    untrusted = {k: v for k, v in cli_env.items() if k != "WSBUS_CA_FILE"}
    r = wsbus(untrusted, "send", "bob", "x")
    assert r.returncode == 3 and r.stderr.count("\n") == 1, r.stderr
    assert "not trusted" in r.stderr and "WSBUS_CA_FILE" in r.stderr, r.stderr
    assert "invalid hub URL" not in r.stderr and "running?" not in r.stderr, r.stderr
    # ws:// to the TLS port: try wss://
    plain = dict(cli_env, WSBUS_URL=hub.url.replace("wss://", "ws://"))
    r = wsbus(plain, "send", "bob", "x")
    assert r.returncode == 3 and "try wss://" in r.stderr, r.stderr

    # the agent-bus clients over https, trusting the CA through SSL_CERT_FILE
    legacy = dict(env, SSL_CERT_FILE=str(ca_pem), PYTHONIOENCODING="utf-8")
    with listener(tmp_path, dict(legacy, AGENT_BUS_URL=f"{hub.http_url}/t/{tokens.bob}"), "bob"):
        pass
    sender = dict(legacy, AGENT_BUS_URL=f"{hub.http_url}/t/{tokens.alice}", AGENT_NAME="alice")
    assert bus_send(tmp_path, sender, "bob", "over https")["ok"] is True
    assert [b for _, _, b in await _bodies_tls(hub, tokens.admin, ca_pem)] == [
        "over wss",
        "from the CLI",
        "over https",
    ]


async def _bodies_tls(hub: HubProcess, token: str, ca_pem: Path) -> list[tuple[str, str, str]]:
    async with Client(hub.url, channels=[], token=token, ca_file=str(ca_pem)) as admin:
        page = await admin.history(limit=100)
    return [(e.from_, e.to, e.body) for e in page.events]


def test_tls_needs_both_files_and_readable_ones(
    env: dict[str, str], tmp_path: Path, ca: tuple[trustme.CA, Path, Path, Path]
) -> None:
    _, _, chain, _ = ca
    for extra in (["--tls-cert", str(chain)], ["--tls-cert", str(chain), "--tls-key", "/nope"]):
        r = subprocess.run(
            [sys.executable, "-m", "wsbus", "serve", "--memory", "--port", "0", *extra],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and "tls" in r.stderr.lower()


def test_non_loopback_needs_auth_or_insecure(env: dict[str, str], tokens: Tokens) -> None:
    base = [sys.executable, "-m", "wsbus", "serve", "--host", "0.0.0.0", "--port", "0"]
    r = subprocess.run(
        [*base, "--memory", "--no-http"], env=env, capture_output=True, text=True, timeout=30
    )
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "--auth" in r.stderr and "--insecure" in r.stderr
    missing = tokens.path.parent / "missing.json"
    r = subprocess.run(
        [*base, "--memory", "--no-http", "--auth", str(missing)],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert str(missing) in r.stderr and "wsbus token create" in r.stderr


# --------------------------------------------------------------------------- browsers


async def test_browser_origins(hub_factory: Callable[..., HubProcess]) -> None:
    hub = hub_factory("--allow-origin", "https://app.example")
    with pytest.raises(InvalidStatus) as refused:
        await connect(hub.url, origin="https://evil.example")  # type: ignore[arg-type]
    assert refused.value.response.status_code == 403
    for origin in ("https://app.example", None):
        conn = await connect(hub.url, origin=origin, subprotocols=["wsbus.v1.json"])  # type: ignore[arg-type,list-item]
        await conn.close()
    status, answer, _ = http(
        hub.http_url + "/send",
        body=send_body("alice", "bob", "csrf"),
        headers={"Origin": "https://evil.example"},
    )
    assert status == 403 and "origin" in answer["error"]
    status, _, _ = http(
        hub.http_url + "/send",
        body=send_body("alice", "bob", "from the app"),
        headers={"Origin": "https://app.example"},
    )
    assert status == 200


# --------------------------------------------------------------------------- limits


async def test_a_flooding_connection_is_slowed_then_closed_and_loses_nothing(
    hub_factory: Callable[..., HubProcess], env: dict[str, str]
) -> None:
    env.update(WSBUS_RATE_BURST="1", WSBUS_RATE_ABUSE="2")
    hub = hub_factory("--rate-events", "100")
    async with Client(hub.url, "watcher") as watcher:
        raw = RawClient(hub.url)
        await raw.open({"name": "flood", "channels": []})
        oks: list[int] = []
        warned: list[dict[str, Any]] = []

        async def read() -> int | None:
            while True:
                try:
                    frame = await raw.recv(20)
                except ConnectionClosed as closed:
                    return closed.rcvd.code if closed.rcvd else None
                if frame["op"] == "ok":
                    oks.append(int(frame["seq"]))  # type: ignore[call-overload]
                elif frame["op"] == "error":
                    warned.append(frame)

        reader = asyncio.create_task(read())
        started = time.monotonic()
        try:
            for i in range(2000):  # bounded: the hub closes us long before the end
                await raw.send({"op": "send", "ref": f"f{i}", "to": "watcher", "body": f"{i}"})
                if reader.done():
                    break
        except ConnectionClosed:
            pass
        code = await asyncio.wait_for(reader, 30)
        assert code == 4029, (code, warned)
        assert time.monotonic() - started < 20
        assert warned and warned[0]["code"] == "rate_limited"
        # the well-behaved client still works, and every acknowledged event is stored
        ok = await watcher.send("watcher", "still here")
        stored = {e.seq for e in (await watcher.history(to="watcher", limit=1000)).events}
        assert set(oks) <= stored and ok.seq in stored and len(oks) >= 100


async def test_http_rate_and_poll_limits(
    hub_factory: Callable[..., HubProcess], env: dict[str, str]
) -> None:
    env.update(WSBUS_RATE_BURST="1", WSBUS_MAX_POLLS="2")
    hub = hub_factory("--rate-events", "10", "--poll-timeout", "5")
    answers = [http(hub.http_url + "/send", body=send_body("a", "b", f"m{i}")) for i in range(30)]
    refused = [a for a in answers if a[0] == 429]
    accepted = [a[1]["seq"] for a in answers if a[0] == 200]
    assert refused and accepted and len(refused) + len(accepted) == 30
    assert int(refused[0][2]["Retry-After"]) >= 1 and "too many requests" in refused[0][1]["error"]
    async with Client(hub.url, channels=[], name="b") as b:
        stored = [e.seq for e in (await b.history(to="b", limit=100)).events]
    assert stored == accepted

    # pending long-polls per name: of three at once, one is refused at once
    env.update(WSBUS_RATE_BURST="5")
    hub2 = hub_factory("--memory", "--poll-timeout", "3")
    loop = asyncio.get_running_loop()
    url = f"{hub2.http_url}/recv?to=b&since={time.time()}&block=true"
    polls = [loop.run_in_executor(None, http, url) for _ in range(3)]
    answers = await asyncio.wait_for(asyncio.gather(*polls), 20)
    assert sorted(s for s, _, _ in answers) == [200, 200, 429]
    assert any("max_polls" in str(a) for _, a, _ in answers)


async def test_connection_limits(
    hub_factory: Callable[..., HubProcess], tokens: Tokens, env: dict[str, str]
) -> None:
    env.update(WSBUS_MAX_IDENTITY_CONNECTIONS="2")
    hub = hub_factory("--auth", str(tokens.path), "--max-connections", "4")
    first = [Client(hub.url, channels=[], token=tokens.alice) for _ in range(2)]
    for c in first:
        await c.connect()
    # a third with the token in the handshake: 429 before the upgrade; a client retries
    # later, with backoff
    with pytest.raises(HubUnreachable) as busy:
        async with Client(hub.url, channels=[], token=tokens.alice):
            pass
    assert "HTTP 429" in str(busy.value) and "max_identity_connections" in str(busy.value)
    # with the token in hello (browsers): counted at the hello, too_many_connections, 4029
    async with connect(hub.url, subprotocols=[Subprotocol("wsbus.v1.json")]) as ws:
        await ws.send(json.dumps({"op": "hello", "token": tokens.alice, "channels": []}))
        refused = json.loads(await ws.recv())
        assert refused["code"] == "too_many_connections", refused
        with pytest.raises(ConnectionClosed):
            await ws.recv()
        assert ws.close_code == 4029
    more = [Client(hub.url, channels=[], token=tokens.bob) for _ in range(2)]
    for c in more:
        await c.connect()
    with pytest.raises(InvalidStatus) as full:
        await connect(hub.url, additional_headers=bearer(tokens.admin))
    assert full.value.response.status_code == 503
    for c in first + more:
        await c.close()
    # room again once they are gone
    admin = Client(hub.url, channels=[], token=tokens.admin, backoff_max=0.5)
    await asyncio.wait_for(admin.connect(wait=True), 20)
    assert (await admin.ping()).ts > 0
    await admin.close()


# --------------------------------------------------------------------------- secrets


async def test_block_secrets_refuses_credentials_on_every_entry_point(
    hub_factory: Callable[..., HubProcess],
) -> None:
    hub = hub_factory("--block-secrets")
    # assembled at run time, so this file does not itself look like it leaks a key
    key = "-----BEGIN " + "OPENSSH PRIVATE KEY-----\n" + "b3BlbnNzaC1rZXktdjEAAAAA" * 3
    aws = "AKIA" + "Q" * 16
    async with Client(hub.url, "alice", channels=[]) as alice:
        for body in (key, f"creds: {aws}"):
            with pytest.raises(SendRefused) as refused:
                await alice.send("bob", body)
            assert refused.value.code == "secret_in_body"
            assert "--attach" in refused.value.message
        with pytest.raises(SendRefused) as refused:
            await alice.send("bob", "see meta", meta={"creds": {"aws": aws}})
        assert refused.value.code == "secret_in_body"
        ok = await alice.send("bob", "the key is in ~/.ssh/id_ed25519 (sha256=" + "ab" * 32 + ")")
    status, answer, _ = http(hub.http_url + "/send", body=send_body("alice", "bob", key))
    assert status == 400 and "private key" in answer["error"]
    async with Client(hub.url, "bob", channels=[]) as bob:
        assert [e.seq for e in (await bob.history(to="bob")).events] == [ok.seq]


# --------------------------------------------------------------------------- review fixes


async def test_a_loopback_hub_without_auth_refuses_other_host_names(hub: HubProcess) -> None:
    """DNS rebinding: a page whose name now resolves to 127.0.0.1 sends its own Host."""
    upgrade = (
        f"GET / HTTP/1.1\r\nHost: evil.example:{hub.port}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", hub.port)
    writer.write(upgrade.encode())
    status_line = await asyncio.wait_for(reader.readline(), 10)
    writer.close()
    assert b" 403 " in status_line, status_line
    status, answer, _ = http(
        f"{hub.http_url}/recv?to=bob", headers={"Host": f"evil.example:{hub.http_port}"}
    )
    assert status == 403 and "Host" in answer["error"]
    for host in (f"localhost:{hub.http_port}", f"127.0.0.1:{hub.http_port}", "[::1]"):
        assert http(f"{hub.http_url}/recv?to=bob", headers={"Host": host})[0] == 200, host
    conn = await connect(hub.url.replace("127.0.0.1", "localhost"))
    await conn.close()


async def test_only_the_same_token_takes_over_a_bridge(authhub: HubProcess, tokens: Tokens) -> None:
    bridge = RawClient(authhub.url, additional_headers=bearer(tokens.bridge))
    welcome = await bridge.open({"kind": "bridge", "names": ["claude"], "host": "alpha"})
    assert welcome["names"] == ["claude"]
    # another token (here an admin's, which may act as claude) posing as alpha's bridge
    rogue = RawClient(authhub.url, additional_headers=bearer(tokens.admin))
    welcome = await rogue.open({"kind": "bridge", "names": ["claude"], "host": "alpha"})
    assert welcome["refused"] == ["claude"]
    await bridge.send({"op": "ping", "ref": "still"})
    assert (await bridge.recv_op("pong"))["ref"] == "still"  # the real bridge stays
    # the same token from the same host does take over (a restarted bridge)
    again = RawClient(authhub.url, additional_headers=bearer(tokens.bridge))
    welcome = await again.open({"kind": "bridge", "names": ["claude"], "host": "alpha"})
    assert welcome["names"] == ["claude"]
    with pytest.raises(ConnectionClosed) as closed:
        await bridge.recv_op("never", timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4009
    await rogue.close()
    await again.close()


def test_token_commands_use_the_hubs_token_file(env: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "hub-tokens.json"
    r = subprocess.run(
        [sys.executable, "-m", "wsbus", "token", "create", "alice"],
        env=dict(env, WSBUS_AUTH=str(path)),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 0, r.stderr
    assert TokenStore(path).load().verify(r.stdout.strip()) is not None
