"""The HTTP port beyond the legacy shim: ``/ws`` (the websocket protocol), ``/ui/``
(the dashboard's files), ``/metrics`` (Prometheus), and ``wsbus status``; the hub's
log lines. Real hub processes, real websocket and HTTP clients."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from wsbus.auth import TokenStore
from wsbus.metrics import HubMetrics
from wsbus.webui import CSP, StaticUi

from .helpers import RawClient, async_wait_for, wait_for
from .natskit import NatsServer

WS = "wsbus.v1.json"


def http(
    url: str, headers: dict[str, str] | None = None, method: str = "GET"
) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def metric(body: bytes, name: str, labels: str = "") -> float:
    """The value of one sample in the text format (0 when absent)."""
    key = f"{name}{{{labels}}}" if labels else name
    for line in body.decode().splitlines():
        if line.startswith(key + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def ws_url(hub: Any) -> str:
    return f"ws://127.0.0.1:{hub.http_port}/ws"


def wsbus(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wsbus", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


# ---------------------------------------------------------------------- /ws


async def test_ws_on_the_http_port_speaks_the_protocol_with_the_websocket_port(hub: Any) -> None:
    """A client on /ws and one on the websocket port are on one bus: each receives the
    other's message, presence crosses, and a resend of a ref is a duplicate."""
    web, port = RawClient(ws_url(hub)), RawClient(hub.url)
    welcome = await web.open({"name": "alice", "kind": "human"})
    assert welcome["names"] == ["alice"]
    await port.open({"name": "bob"})
    presence = await web.recv_until(lambda f: f.get("op") == "presence" and f["name"] == "bob")
    assert presence["state"] == "up"
    await web.send({"op": "send", "ref": "r1", "to": "bob", "body": "from the browser port"})
    ok = await web.recv_until(lambda f: f.get("op") == "ok")
    event = await port.recv_until(lambda f: f.get("op") == "event")
    assert event["body"] == "from the browser port" and event["seq"] == ok["seq"]
    await port.send({"op": "send", "ref": "r2", "to": "alice", "body": "back"})
    back = await web.recv_until(lambda f: f.get("op") == "event")
    assert back["body"] == "back" and back["from"] == "bob"
    await web.send({"op": "ack", "seq": back["seq"], "status": "read"})
    receipt = await port.recv_until(lambda f: f.get("op") == "receipt")
    assert receipt["by"] == "alice" and receipt["status"] == "read"
    await web.send({"op": "send", "ref": "r1", "to": "bob", "body": "from the browser port"})
    dup = await web.recv_until(lambda f: f.get("op") == "ok")
    assert dup["duplicate"] is True and dup["seq"] == ok["seq"]
    await web.close()
    gone = await port.recv_until(lambda f: f.get("op") == "presence" and f["name"] == "alice")
    assert gone["state"] == "down"
    await port.close()


async def test_ws_msgpack_and_bad_frames_as_on_the_websocket_port(hub: Any) -> None:
    async with connect(ws_url(hub), subprotocols=["wsbus.v1.msgpack"]) as conn:  # type: ignore[list-item]
        assert conn.subprotocol == "wsbus.v1.msgpack"
        await conn.send(msgspec.msgpack.encode({"op": "hello", "name": "carol"}))
        welcome = msgspec.msgpack.decode(await conn.recv())
        assert welcome["op"] == "welcome"
        await conn.send("a text frame")
        error: dict[str, Any] = {}
        while error.get("op") != "error":
            error = msgspec.msgpack.decode(await conn.recv())
        assert error["code"] == "wrong_frame_type"
    raw = RawClient(ws_url(hub))
    await raw.open({"name": "dave"})
    for _ in range(20):  # max_bad_frames in a row: closed with 1008
        await raw.send("{not json")
    with pytest.raises(Exception, match="1008"):
        for _ in range(100):
            await raw.recv(timeout=5)


def test_ws_refusals_before_the_upgrade(hub: Any) -> None:
    base = f"http://127.0.0.1:{hub.http_port}/ws"
    status, _, body = http(base)  # a plain GET
    assert status == 426 and b"websocket upgrades only" in body
    upgrade = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": "13",
    }
    status, _, body = http(base, {**upgrade, "Sec-WebSocket-Protocol": "chat.v2"})
    assert status == 400 and b"wsbus.v1.json" in body
    status, _, body = http(base, {**upgrade, "Origin": "https://evil.example"})
    assert status == 403 and b"not allowed" in body
    status, _, body = http(base, method="POST")
    assert status == 405


async def test_ws_admits_the_page_own_origin_only(hub: Any) -> None:
    """The dashboard's origin is the HTTP port's own: accepted without --allow-origin;
    the websocket port and other origins still refuse it."""
    own = f"http://127.0.0.1:{hub.http_port}"
    raw = RawClient(ws_url(hub), origin=own)
    assert (await raw.open({"name": "erin"}))["op"] == "welcome"
    await raw.close()
    with pytest.raises(InvalidStatus, match="403"):
        await connect(hub.url, origin=own)  # type: ignore[arg-type]
    # DNS rebinding: a page of `evil` (a single-label name a resolver may rebind to
    # 127.0.0.1) asks with its own name as Host and Origin: not at home here
    base = f"http://127.0.0.1:{hub.http_port}"
    for name in ("evil", f"evil:{hub.http_port}", "evil.example"):
        status, _, body = http(base + "/ws", {"Host": name, "Origin": f"http://{name}"})
        assert status == 403, (name, body)
        status, _, _ = http(base + "/metrics", {"Host": name, "Origin": f"http://{name}"})
        assert status == 403
    with pytest.raises(InvalidStatus, match="403"):
        await connect(ws_url(hub), origin=f"http://127.0.0.1:{hub.port}")  # type: ignore[arg-type]


async def test_ws_clients_reconnect_and_resume_after_a_hub_restart(
    hub_factory: Callable[..., Any],
) -> None:
    hub = hub_factory()
    raw = RawClient(ws_url(hub))
    await raw.open({"name": "frank"})
    code, _ = hub.stop()
    assert code == 0
    with pytest.raises(Exception, match="1001"):
        for _ in range(100):
            await raw.recv(timeout=5)
    hub.start(hub.port)
    subprocess.run(
        [sys.executable, "-m", "wsbus", "send", "frank", "after the restart", "--url", hub.url],
        env={**hub.env, "WSBUS_NAME": "gina"},
        check=True,
        capture_output=True,
        timeout=30,
    )
    again = RawClient(ws_url(hub))
    await again.open({"name": "frank", "resume": 0})
    event = await again.recv_until(lambda f: f.get("op") == "event")
    assert event["body"] == "after the restart"
    await again.close()


async def test_watchers_get_every_receipt_of_their_channels(hub: Any) -> None:
    """The dashboard watches: it sees the receipts of others' messages too."""
    watcher = RawClient(ws_url(hub))
    await watcher.open({"name": "ops", "kind": "human", "watch": True, "channels": ["team"]})
    alice, bob = RawClient(hub.url), RawClient(hub.url)
    await alice.open({"name": "alice", "channels": ["team"]})
    await bob.open({"name": "bob", "channels": ["team"]})
    await alice.send({"op": "send", "ref": "a1", "to": "bob", "channel": "team", "body": "x"})
    event = await bob.recv_until(lambda f: f.get("op") == "event")
    await bob.send({"op": "ack", "seq": event["seq"], "status": "submitted"})
    seen = await watcher.recv_until(lambda f: f.get("op") == "receipt")
    assert (seen["seq"], seen["by"], seen["status"]) == (event["seq"], "bob", "submitted")
    for c in (watcher, alice, bob):
        await c.close()


async def test_history_carries_the_receipts_a_token_may_see(
    hub_factory: Callable[..., Any], auth: tuple[Path, dict[str, str]]
) -> None:
    """`history.receipts`: the receipts of what the token's names sent; an admin's
    history carries every receipt (the dashboard's view of older messages)."""
    path, tokens = auth
    hub = hub_factory("--auth", str(path))
    jo, bob = RawClient(hub.url), RawClient(hub.url)
    await jo.open({"token": tokens["agent"], "channels": ["ops"]})
    await bob.open({"token": tokens["bob"], "channels": ["ops"]})
    await jo.send({"op": "send", "ref": "j1", "to": "bob", "channel": "ops", "body": "to bob"})
    to_bob = await bob.recv_until(lambda f: f.get("op") == "event")
    await bob.send({"op": "ack", "seq": to_bob["seq"], "status": "read"})
    await bob.send({"op": "send", "ref": "b1", "to": "*", "channel": "ops", "body": "all"})
    everyone = await jo.recv_until(lambda f: f.get("op") == "event" and f["to"] == "*")
    await jo.send({"op": "ack", "seq": everyone["seq"], "status": "read"})
    await bob.recv_until(lambda f: f.get("op") == "receipt" and f["by"] == "jo")  # stored

    async def history(client: RawClient) -> dict[str, Any]:
        await client.send({"op": "history", "ref": "h", "channel": "ops", "receipts": True})
        return await client.recv_until(lambda f: f.get("op") == "history_result")

    mine = await history(jo)
    assert [(r["seq"], r["by"]) for r in mine["receipts"]] == [(to_bob["seq"], "bob")]
    theirs = await history(bob)  # bob sent the broadcast: jo's receipt of it
    assert [(r["seq"], r["by"]) for r in theirs["receipts"]] == [(everyone["seq"], "jo")]
    root = RawClient(hub.url)
    await root.open({"token": tokens["admin"], "channels": ["ops"]})
    assert len((await history(root))["receipts"]) == 2
    for c in (jo, bob, root):
        await c.close()


# ---------------------------------------------------------------------- /ui


def test_ui_files_come_with_a_strict_policy(hub: Any) -> None:
    base = f"http://127.0.0.1:{hub.http_port}"
    status, headers, body = http(base + "/ui/")
    assert status == 200 and b"<html" in body.lower()
    assert headers["Content-Security-Policy"] == CSP
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Content-Type"].startswith("text/html")
    req = urllib.request.Request(base + "/ui")
    opener = urllib.request.build_opener(NoRedirect)
    with pytest.raises(urllib.error.HTTPError) as redirect:
        opener.open(req, timeout=10)
    assert redirect.value.code == 308 and redirect.value.headers["Location"] == "/ui/"
    for bad in ("/ui/../pyproject.toml", "/ui/%2e%2e/hub.py", "/ui/nope.js", "/ui/.hidden"):
        status, headers, _ = http(base + bad)
        assert status == 404, bad
    status, _, body = http(base + "/ui/", {"Origin": "https://evil.example"})
    assert status == 403


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def test_static_ui_reads_only_the_files_that_are_there(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("<html></html>")
    (tmp_path / "app.js").write_text("export {}")
    (tmp_path / "Bad Name.js").write_text("x")
    (tmp_path / "sub").mkdir()
    ui = StaticUi(tmp_path)
    assert set(ui.files) == {"index.html", "app.js"}
    assert ui.files["app.js"][1] == "text/javascript"
    assert ui.answer("/ui/sub").status == 404
    assert StaticUi(tmp_path / "missing").answer("/ui/").status == 404


# ---------------------------------------------------------------------- /metrics


async def test_metrics_count_what_flows(hub: Any) -> None:
    url = f"http://127.0.0.1:{hub.http_port}/metrics"
    status, headers, body = http(url)
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    assert metric(body, "wsbus_healthy") == 1
    assert 'wsbus_info{engine="' in body.decode()
    sender, receiver = RawClient(hub.url), RawClient(ws_url(hub))
    await sender.open({"name": "hank", "kind": "agent", "channels": ["ops"]})
    await receiver.open({"name": "ivy", "kind": "human", "channels": ["ops"]})
    for i in range(3):
        await sender.send(
            {"op": "send", "ref": f"m{i}", "to": "ivy", "channel": "ops", "body": "x"}
        )
    for _ in range(3):
        ev = await receiver.recv_until(lambda f: f.get("op") == "event")
    await receiver.send({"op": "ack", "seq": ev["seq"], "status": "read"})
    await sender.recv_until(lambda f: f.get("op") == "receipt")
    _, _, body = http(url)
    assert metric(body, "wsbus_events_in_total", 'channel="ops"') == 3
    assert metric(body, "wsbus_events_out_total", 'channel="ops"') == 3
    assert metric(body, "wsbus_deliveries_total") >= 3
    assert metric(body, "wsbus_connections", 'kind="agent"') == 1
    assert metric(body, "wsbus_connections", 'kind="human"') == 1
    assert metric(body, "wsbus_receipts_total", 'status="read"') == 1
    assert metric(body, "wsbus_delivery_latency_seconds_count") >= 3
    assert metric(body, "wsbus_commit_seconds_count") >= 1
    assert metric(body, "process_resident_memory_bytes") > 0
    await receiver.close()
    await sender.close()

    def gone() -> bool:
        return metric(http(url)[2], "wsbus_connections", 'kind="human"') == 0

    await async_wait_for(gone)


def test_metrics_channel_labels_are_capped() -> None:
    m = HubMetrics(max_channel_labels=3)
    for i in range(10):
        m.events_in.inc(f"c{i}")
    text = m.exposition().decode()
    labelled = [line for line in text.splitlines() if line.startswith("wsbus_events_in_total{")]
    assert len(labelled) == 4  # c0, c1, c2 and other
    assert metric(m.exposition(), "wsbus_events_in_total", 'channel="other"') == 7


@pytest.fixture
def auth(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    store = TokenStore(tmp_path / "tokens.json").load()
    tokens = {
        "admin": store.create("root", role="admin"),
        "agent": store.create("jo", channels=["ops"]),
        "metrics": store.create("prometheus", role="metrics"),
        "bob": store.create("bob", channels=["ops"]),
    }
    return store.path, tokens


def test_metrics_need_an_admin_token_with_auth(
    hub_factory: Callable[..., Any], auth: tuple[Path, dict[str, str]]
) -> None:
    path, tokens = auth
    hub = hub_factory("--auth", str(path))
    url = f"http://127.0.0.1:{hub.http_port}/metrics"
    assert http(url)[0] == 401
    status, _, body = http(url, {"Authorization": f"Bearer {tokens['agent']}"})
    assert status == 403 and b"admin token" in body
    status, _, body = http(url, {"Authorization": f"Bearer {tokens['admin']}"})
    assert status == 200
    status, _, body = http(url, {"Authorization": f"Bearer {tokens['metrics']}"})
    assert status == 200
    assert metric(body, "wsbus_auth_failures_total", 'reason="unauthorized"') >= 1
    assert metric(body, "wsbus_auth_failures_total", 'reason="forbidden"') >= 1
    # a metrics token does nothing else: no send on the shim, no inbox counts
    send = f"http://127.0.0.1:{hub.http_port}/send"
    req = urllib.request.Request(
        send,
        data=json.dumps({"from": "prometheus", "to": "x", "msg": "hi"}).encode(),
        headers={"Authorization": f"Bearer {tokens['metrics']}"},
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(req, timeout=10)
    assert refused.value.code == 403
    inbox = http(
        f"http://127.0.0.1:{hub.http_port}/inbox",
        {"Authorization": f"Bearer {tokens['metrics']}"},
    )
    assert inbox[0] == 200 and json.loads(inbox[2])["recipients"] == {}


async def test_ws_with_auth_takes_the_token_in_hello(
    hub_factory: Callable[..., Any], auth: tuple[Path, dict[str, str]]
) -> None:
    path, tokens = auth
    hub = hub_factory("--auth", str(path))
    raw = RawClient(ws_url(hub))
    welcome = await raw.open({"token": tokens["agent"], "channels": ["ops"], "kind": "human"})
    assert welcome["names"] == ["jo"]
    await raw.close()
    refused = RawClient(ws_url(hub))
    with pytest.raises(AssertionError, match="unauthorized"):
        await refused.open({"token": "wsb_nope", "channels": ["ops"]})
    watcher = RawClient(ws_url(hub))
    with pytest.raises(AssertionError, match="admin token"):
        await watcher.open({"token": tokens["agent"], "channels": ["ops"], "watch": True})
    with pytest.raises(InvalidStatus, match="401"):
        await connect(ws_url(hub), additional_headers={"Authorization": "Bearer wsb_bad"})
    scraper = RawClient(ws_url(hub))
    with pytest.raises(AssertionError, match="metrics token"):
        await scraper.open({"token": tokens["metrics"], "channels": []})


# ---------------------------------------------------------------------- wsbus status


def test_status_says_who_is_on_and_what_waits(hub: Any, env: dict[str, str]) -> None:
    sent = wsbus(
        "send", "kim", "are you there?", "--url", hub.url, env={**env, "WSBUS_NAME": "lee"}
    )
    assert sent.returncode == 0, sent.stderr
    listener = subprocess.Popen(
        [sys.executable, "-m", "wsbus", "listen", "mo", "--url", hub.url],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:

        def listed() -> subprocess.CompletedProcess[str] | None:
            done = wsbus("status", "--url", hub.url, env=env)
            return done if "mo" in done.stdout else None

        done = wait_for(listed, timeout=20)
        assert isinstance(done, subprocess.CompletedProcess)
        assert done.returncode == 0
        assert "healthy" in done.stdout and "#default" in done.stdout
        assert "kim  1 message" in done.stdout
        assert "oldest unacknowledged" in done.stdout
        as_json = wsbus("status", "--json", "--url", hub.url, env=env)
        answer = json.loads(as_json.stdout)
        assert answer["healthy"] is True and answer["full"] is True
        assert [w["name"] for w in answer["pending"]] == ["kim"]
        assert any(c["name"] == "mo" for c in answer["channels"]["default"])
        quiet = wsbus("status", "-q", "--url", hub.url, env=env)
        assert quiet.returncode == 0 and quiet.stdout == ""
    finally:
        listener.terminate()
        listener.wait(10)


def test_status_exit_codes_unreachable_and_refused(
    hub_factory: Callable[..., Any], auth: tuple[Path, dict[str, str]], env: dict[str, str]
) -> None:
    down = wsbus("status", "--url", "ws://127.0.0.1:9", "--timeout", "2", env=env)
    assert down.returncode == 3 and down.stderr.count("\n") == 1
    path, tokens = auth
    hub = hub_factory("--auth", str(path))
    refused = wsbus("status", "--url", hub.url, env={**env, "WSBUS_TOKEN": "wsb_x_y"})
    assert refused.returncode == 4, refused.stderr
    mine = wsbus("status", "--json", "--url", hub.url, env={**env, "WSBUS_TOKEN": tokens["agent"]})
    assert mine.returncode == 0, mine.stderr
    answer = json.loads(mine.stdout)
    assert answer["full"] is False and "store" not in answer
    root = wsbus("status", "--json", "--url", hub.url, env={**env, "WSBUS_TOKEN": tokens["admin"]})
    assert json.loads(root.stdout)["full"] is True


# ---------------------------------------------------------------------- logs


async def test_json_logs_name_connects_and_auth_failures_without_secrets(
    hub_factory: Callable[..., Any], auth: tuple[Path, dict[str, str]]
) -> None:
    path, tokens = auth
    hub = hub_factory("--auth", str(path), "--log-level", "info", "--log-format", "json")
    secret_body = "the-body-must-not-be-logged"
    raw = RawClient(hub.url)
    await raw.open({"token": tokens["agent"], "channels": ["ops"]})
    await raw.send(
        {"op": "send", "ref": "s1", "to": "nobody", "channel": "ops", "body": secret_body}
    )
    await raw.recv_until(lambda f: f.get("op") == "ok")
    await raw.close()
    bad = RawClient(hub.url)
    with pytest.raises(AssertionError):
        await bad.open({"token": tokens["agent"] + "x", "channels": ["ops"]})

    def lines() -> list[dict[str, Any]]:
        out = []
        for line in "".join(hub.output).splitlines():
            if line.startswith("{"):
                out.append(json.loads(line))
        return out

    def seen() -> bool:
        events = {line.get("event") for line in lines()}
        return {"connect", "disconnect", "auth_failure"} <= events

    await async_wait_for(seen)
    text = "".join(hub.output)
    assert secret_body not in text
    assert tokens["agent"] not in text and tokens["agent"].split("_")[-1] not in text
    disconnect = next(line for line in lines() if line.get("event") == "disconnect")
    assert "code=1000" in disconnect["msg"]
    assert all({"ts", "level", "logger", "msg"} <= set(line) for line in lines())


@pytest.mark.own_nats
def test_status_and_metrics_say_degraded_when_nats_is_gone(
    hub_factory: Callable[..., Any], nats: NatsServer, env: dict[str, str]
) -> None:
    """A hub of a bus on NATS: healthy with its lag on /metrics; NATS stopped: `wsbus
    status` exits 1 naming the cause, /metrics says wsbus_healthy 0; back: 0 again."""
    hub = hub_factory("--engine", nats.url, "--bus", "statusbus")
    sent = wsbus("send", "pat", "hello", "--url", hub.url, env={**env, "WSBUS_NAME": "quinn"})
    assert sent.returncode == 0, sent.stderr
    answer = json.loads(wsbus("status", "--json", "--url", hub.url, env=env).stdout)
    assert answer["engine"] == "nats" and answer["lag"] == 0 and answer["healthy"] is True
    body = http(f"http://127.0.0.1:{hub.http_port}/metrics")[2]
    assert (
        metric(body, "wsbus_engine_lag_events") == 0 and "wsbus_engine_lag_events" in body.decode()
    )
    nats.stop()

    def degraded() -> subprocess.CompletedProcess[str] | None:
        done = wsbus("status", "--url", hub.url, env=env)
        return done if done.returncode == 1 else None

    done = wait_for(degraded, timeout=20, interval=0.2)
    assert isinstance(done, subprocess.CompletedProcess)
    assert "DEGRADED: NATS is unreachable" in done.stdout
    wait_for(
        lambda: metric(http(f"http://127.0.0.1:{hub.http_port}/metrics")[2], "wsbus_healthy") == 0,
        timeout=15,
        interval=0.5,
    )
    nats.start()
    wait_for(lambda: wsbus("status", "-q", "--url", hub.url, env=env).returncode == 0, timeout=30)


# ---------------------------------------------------------------------- hostile clients


@pytest.mark.parametrize("port", ["websocket", "http"])
async def test_a_client_that_asks_and_never_reads_is_closed_as_slow(
    hub_factory: Callable[..., Any], port: str
) -> None:
    """Answers count against send_queue like fan-out: a client that floods queries and
    reads nothing is closed with 4008 instead of filling the hub's memory."""
    hub = hub_factory("--send-queue", "262144", "--rate-events", "0", "--rate-bytes", "0")
    url = hub.url if port == "websocket" else ws_url(hub)
    filler = RawClient(hub.url)
    await filler.open({"name": "filler"})
    for i in range(60):
        await filler.send({"op": "send", "ref": f"f{i}", "to": "*", "body": "x" * 4000})
    await filler.recv_until(lambda f: f.get("op") == "ok" and f["ref"] == "f59")
    metrics = f"http://127.0.0.1:{hub.http_port}/metrics"
    async with connect(url, subprotocols=["wsbus.v1.json"], max_queue=1) as conn:  # type: ignore[list-item]
        await conn.send(json.dumps({"op": "hello", "name": "sink", "channels": []}))
        for i in range(300):  # 300 answers of 240 kB would be 72 MB
            await conn.send(json.dumps({"op": "history", "ref": f"h{i}", "limit": 60}))

        def closed_as_slow() -> bool:
            return metric(http(metrics)[2], "wsbus_slow_consumer_disconnects_total") >= 1

        await async_wait_for(closed_as_slow, timeout=20, interval=0.1)  # before any read
        with pytest.raises(ConnectionClosed) as closed:
            for _ in range(1000):
                await asyncio.wait_for(conn.recv(), 10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4008
    status, _, _ = http(f"http://127.0.0.1:{hub.http_port}/healthz")
    assert status == 200
    await filler.close()


def test_peer_text_cannot_forge_a_text_log_line(hub_factory: Callable[..., Any]) -> None:
    hub = hub_factory("--log-level", "info")

    async def run() -> None:
        bridge, sender = RawClient(hub.url), RawClient(hub.url)
        await bridge.open({"names": ["pane"], "kind": "bridge", "host": "h1"})
        await sender.open({"name": "boss"})
        await sender.send({"op": "send", "ref": "b1", "to": "pane", "body": "go"})
        ev = await bridge.recv_until(lambda f: f.get("op") == "event")
        reason = "oops\n2026-01-01 00:00:00 WARNING wsbus.hub: FORGED\x1b[2J"
        await bridge.send({"op": "ack", "seq": ev["seq"], "status": "failed", "reason": reason})
        await sender.recv_until(lambda f: f.get("op") == "receipt")
        await bridge.close()
        await sender.close()

    asyncio.run(run())
    wait_for(lambda: "bridge delivery failed" in "".join(hub.output))
    lines = "".join(hub.output).splitlines()
    assert not any(line.startswith("2026-01-01") for line in lines)
    assert "\x1b" not in "".join(hub.output)
    assert any("oops\\x0a2026-01-01" in line for line in lines)


async def test_ws_disconnect_lines_name_the_code_the_hub_closed_with(
    hub_factory: Callable[..., Any],
) -> None:
    hub = hub_factory("--log-level", "info", "--log-format", "json")
    raw = RawClient(ws_url(hub))
    await raw.open({"name": "noisy"})
    for _ in range(20):
        await raw.send("{not json")
    with pytest.raises(Exception, match="1008"):
        for _ in range(100):
            await raw.recv(timeout=5)

    def logged() -> list[dict[str, Any]]:
        return [
            json.loads(line)
            for line in "".join(hub.output).splitlines()
            if line.startswith("{") and '"disconnect"' in line
        ]

    wait_for(logged)
    assert "code=1008" in logged()[0]["msg"]


def test_a_ws_client_that_stopped_reading_does_not_hold_up_the_shutdown(
    hub_factory: Callable[..., Any],
) -> None:
    """SIGTERM with a /ws client that reads nothing while under send_queue: the hub
    still exits within seconds (the close is bounded, then the connection dropped)."""
    hub = hub_factory("--send-queue", str(64 << 20), "--rate-events", "0", "--rate-bytes", "0")

    async def fill() -> Any:
        stalled = await connect(ws_url(hub), subprotocols=["wsbus.v1.json"], max_queue=1)  # type: ignore[list-item]
        await stalled.send(json.dumps({"op": "hello", "name": "stalled"}))
        sender = RawClient(hub.url)
        await sender.open({"name": "firehose"})
        for i in range(100):
            body = "y" * 60_000
            await sender.send({"op": "send", "ref": f"s{i}", "to": "*", "body": body})
        await sender.recv_until(lambda f: f.get("op") == "ok" and f["ref"] == "s99", 30)
        await sender.close()
        return stalled

    loop = asyncio.new_event_loop()
    try:
        stalled = loop.run_until_complete(fill())
        began = time.monotonic()
        code, output = hub.stop()
        took = time.monotonic() - began
        assert code == 0, output[-2000:]
        assert took < 12, took
        loop.run_until_complete(stalled.close())
    finally:
        loop.close()


def test_status_text_never_carries_escape_sequences() -> None:
    from wsbus.cli.status import render

    from wsbus.schema import HubStatusResult, Member, Waiting

    evil = "\x1b]0;pwned\x07\x1b[2J"
    waiting = Waiting(channel=f"c{evil}", name=f"n{evil}", count=1, oldest_seq=1, oldest_ts=0.0)
    answer = HubStatusResult(
        ref="r", version=f"1{evil}", hub=f"h{evil}", engine=f"e{evil}", uptime=1.0,
        healthy=False, problem=f"p{evil}", seq=1, pruned_seq=0, retention_days=1.0,
        retention_count=0, connections=1, queued=0,
        channels={f"c{evil}": [Member(name=f"n{evil}", connections=1, kind=f"k{evil}")]},
        pending=[waiting], pending_window=10, full=True, store=f"s{evil}", oldest_pending=waiting,
    )  # fmt: skip
    text = render(answer, 10.0)
    assert "\x1b" not in text and "\x07" not in text and "DEGRADED: p" in text
