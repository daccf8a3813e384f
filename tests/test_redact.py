"""Tokens never reach the hub's log: the redaction functions without sockets, then a
hub at DEBUG and at INFO fed the requests that used to put a token in its log."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from websockets.frames import Frame, Opcode

from wsbus.redact import MARK, RedactTokens, install, redact, redact_bytes

from .helpers import HubProcess, wait_for
from .test_auth import wsbus

ID = "3f9a1c2e"
SECRET = "Ht8xov-QiTfAFcOacaEKYmsFMsMVAPCHEKp3-MnLjgM"
TOKEN = f"wsbus_{ID}_{SECRET}"


def leaked(text: str, secret: str, window: int = 8) -> list[str]:
    """The pieces of ``secret`` (every ``window`` characters long run) found in ``text``."""
    runs = (secret[i : i + window] for i in range(len(secret) - window + 1))
    return [run for run in runs if run in text]


# --------------------------------------------------------------------------- functions


@pytest.mark.parametrize(
    ("line", "kept"),
    [
        # aiohttp quoting a request line, a NUL in the query, a bad header character
        (f"Bad status line:\n  b'GET /t/{TOKEN}/recv?to=a HTTP/9.9'", "/recv?to=a HTTP/9.9"),
        (f"b'GET /t/{TOKEN}/recv?to=a\\x00b HTTP/1.1'", "/recv?to=a"),
        (f"b'Authorization: Bearer {TOKEN}\\x01'", "b'Authorization: "),
        # websockets logging handshake headers, and its error on a bad request line
        (f"< Authorization: Bearer {TOKEN}", "< Authorization: "),
        (f"< authorization: Basic {SECRET}", "< authorization: "),
        (f"unsupported protocol: GET /t/{TOKEN} HTTP/9.9", "HTTP/9.9"),
        # a header value quoted without its name, headers as a Python mapping
        (f"invalid HTTP header value: 'Bearer {SECRET}'", "value: 'Bearer "),
        (f"{{'Host': 'x', 'Authorization': 'Bearer {SECRET}', 'X': 'y'}}", "'X': 'y'"),
        # hello.token as JSON or a Python repr, a token in a query, a bare token
        (f'{{"op": "hello", "token": "{SECRET}", "name": "a"}}', '"name": "a"'),
        (f"{{'op': 'hello', 'token': '{SECRET}'}}", "'op': 'hello'"),
        (f'{{"token":"{SECRET[:5]}\\"{SECRET[5:]}"}}', '{"token":"'),
        (f"GET /recv?to=a&token={SECRET}&x=1", "&x=1"),
        (f"Hello(name='a', token='{SECRET}', kind='agent')", "kind='agent'"),
        (f"WSBUS_TOKEN={TOKEN}", "WSBUS_TOKEN="),
        (f"the token {TOKEN} was refused", f"the token wsbus_{ID}_{MARK} was refused"),
        (f"cut short: wsbus_{ID}_{SECRET[:9]}", f"wsbus_{ID}_{MARK}"),
    ],
)
def test_redact_removes_every_form_of_a_token(line: str, kept: str) -> None:
    out = redact(line)
    assert leaked(out, SECRET) == [], out
    assert MARK in out and kept in out, out


@pytest.mark.parametrize(
    "line",
    [
        "connection open",
        "bad request from 127.0.0.1: BadStatusLine: 400, message: Bad status line",
        "token 3f9a1c2e revoked: closing session 7",
        '> WWW-Authenticate: Bearer realm="wsbus"',
        "retention removed 5 events (up to seq 99)",
        "GET /recv?to=alice&since=0 HTTP/1.1",
    ],
)
def test_redact_leaves_lines_without_a_token_alone(line: str) -> None:
    assert redact(line) == line


def test_redact_bytes_keeps_msgpack_readable() -> None:
    hello = msgspec.msgpack.encode({"op": "hello", "token": SECRET, "name": "alice"})
    out = redact_bytes(hello)
    assert SECRET.encode() not in out and leaked(out.decode("latin-1"), SECRET) == []
    assert msgspec.msgpack.decode(out)["name"] == "alice"  # same length: still a map
    long = msgspec.msgpack.encode({"op": "hello", "token": "x" * 40 + SECRET * 8})
    assert leaked(redact_bytes(long).decode("latin-1"), SECRET) == []
    # a token key with no string after it does not stop the search
    odd = msgspec.msgpack.encode([{"token": 5}, {"token": "x" + SECRET}])
    assert leaked(redact_bytes(odd).decode("latin-1"), SECRET) == []
    # JSON bytes, and a token-shaped value anywhere
    assert leaked(redact_bytes(json.dumps({"token": SECRET}).encode()).decode(), SECRET) == []
    assert redact_bytes(f"body {TOKEN} end".encode()) == f"body wsbus_{ID}_{MARK} end".encode()


def _record(msg: str, *args: object, exc: BaseException | None = None) -> logging.LogRecord:
    info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    return logging.LogRecord("t", logging.INFO, __file__, 1, msg, args or None, info)


def _formatted(record: logging.LogRecord) -> str:
    assert RedactTokens().filter(record)
    return logging.Formatter("%(message)s").format(record)


def test_the_filter_redacts_message_arguments_and_tracebacks() -> None:
    try:
        try:
            raise ValueError(f"invalid HTTP request line: GET /t/{TOKEN} HTTP/9.9")
        except ValueError as inner:
            raise RuntimeError("handshake failed") from inner
    except RuntimeError as err:
        record = _record("failed for %s (%r)", f"Bearer {TOKEN}", {"token": SECRET}, exc=err)
    out = _formatted(record)
    assert "Traceback" in out and "HTTP/9.9" in out and "handshake failed" in out
    assert leaked(out, SECRET) == [], out
    # a stack, and a message whose redacted text holds a % (no formatting error after)
    record = _record(f"100% sure: /t/{TOKEN}")
    record.stack_info = f"Stack (most recent call last):\n  token={SECRET}"
    out = _formatted(record)
    assert leaked(out, SECRET) == [] and "100% sure" in out, out


def test_the_filter_redacts_a_websocket_frame_before_it_is_elided() -> None:
    # websockets shows a long frame's start and end only: a token cut in two
    # would leave its tail with nothing around it to recognize it by
    hello = json.dumps({"op": "hello", "name": "alice", "channels": ["a"], "token": TOKEN})
    frame = Frame(Opcode.TEXT, hello.encode())
    assert leaked(str(frame), SECRET)  # what websockets alone logs
    out = _formatted(_record("< %s", frame))
    assert leaked(out, SECRET) == [] and out.startswith('< TEXT \'{"op": "hello"'), out
    packed = msgspec.msgpack.encode({"op": "hello", "token": "not-a-token-but-secret" + SECRET})
    out = _formatted(_record("> %s", Frame(Opcode.BINARY, packed)))
    assert leaked(out, SECRET) == [] and leaked(out, SECRET.encode().hex()) == [], out
    # a large frame: only its ends are scanned, and they are what is shown
    big = json.dumps({"op": "send", "body": "x" * 500_000 + TOKEN, "token": SECRET}).encode()
    out = _formatted(_record("< %s", Frame(Opcode.TEXT, big)))
    assert leaked(out, SECRET) == [] and f"[{len(big)} bytes]" in out, out


def test_a_filter_that_fails_withholds_the_message(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(text: str) -> str:
        raise RuntimeError("bug")

    monkeypatch.setattr("wsbus.redact.redact", broken)
    out = _formatted(_record(f"GET /t/{TOKEN}"))
    assert leaked(out, SECRET) == [] and "withheld" in out


def test_install_puts_one_filter_on_every_handler() -> None:
    logger = logging.getLogger("wsbus.test.redact")
    handlers = [logging.NullHandler(), logging.NullHandler()]
    for h in handlers:
        logger.addHandler(h)
    try:
        install(logger)
        install(logger)  # twice: still one filter each
        assert [sum(isinstance(f, RedactTokens) for f in h.filters) for h in handlers] == [1, 1]
    finally:
        for h in handlers:
            logger.removeHandler(h)


# --------------------------------------------------------------------------- a hub


def _raw(port: int, data: bytes) -> bytes:
    """Send ``data`` on a fresh TCP connection; what comes back before the close."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def _token(env: dict[str, str], auth: Path, *args: str) -> str:
    r = wsbus(env, "token", *args, "--auth", str(auth))
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


@pytest.mark.parametrize("level", ["DEBUG", "INFO"])
async def test_no_token_reaches_the_hub_log(
    hub_factory: Callable[..., HubProcess], env: dict[str, str], tmp_path: Path, level: str
) -> None:
    auth = tmp_path / "tokens.json"
    alice = _token(env, auth, "create", "alice")
    ci = _token(env, auth, "create", "ci", "-c", "ci")
    old = _token(env, auth, "create", "old")
    _token(env, auth, "revoke", "old")
    unknown = f"wsbus_{ID}_{SECRET}"  # well formed, in no file
    garbage = "hunter2-" + SECRET[::-1]  # not even token-shaped
    hub = hub_factory("--auth", str(auth), "--log-level", level, "--memory")

    # the HTTP shim: request lines aiohttp refuses and quotes
    for line in (
        f"GET /t/{alice}/recv?to=alice HTTP/9.9",
        f"GET /t/{alice}/recv?to=al\x00ice HTTP/1.1",
        f"GET /t/{ci}/recv?to=ci&since=0\x7f HTTP/1.1",
        f"GET /t/{ci}/recv?to=ci%zz&since=%s HTTP/9.9",  # a % in what is logged
    ):
        answer = await asyncio.to_thread(
            _raw, hub.http_port, f"{line}\r\nHost: 127.0.0.1\r\n\r\n".encode("latin-1")
        )
        assert answer.startswith(b"HTTP/1.") and b" 400 " in answer.split(b"\r\n")[0]
    header = f"GET /recv?to=alice HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {alice}\x01"
    await asyncio.to_thread(_raw, hub.http_port, f"{header}\r\n\r\n".encode("latin-1"))
    # the websocket port: a bad request line, bad and good Bearer tokens
    await asyncio.to_thread(_raw, hub.port, f"GET /t/{alice} HTTP/9.9\r\n\r\n".encode())
    for bad in (alice + "x", old, unknown, garbage):
        with pytest.raises(InvalidStatus):
            async with connect(hub.url, additional_headers={"Authorization": f"Bearer {bad}"}):
                pass
    async with connect(hub.url, additional_headers={"Authorization": f"Bearer {alice}"}) as c:
        await c.send(json.dumps({"op": "hello", "name": "alice", "channels": ["default"]}))
        assert json.loads(await c.recv())["op"] == "welcome"
    # hello.token: revoked, unknown, not token-shaped, valid (JSON and msgpack)
    for token in (old, unknown, garbage, alice):
        async with connect(hub.url, subprotocols=["wsbus.v1.json"]) as c:  # type: ignore[list-item]
            await c.send(json.dumps({"op": "hello", "channels": ["default"], "token": token}))
            await c.recv()
    async with connect(hub.url, subprotocols=["wsbus.v1.msgpack"]) as c:  # type: ignore[list-item]
        await c.send(msgspec.msgpack.encode({"op": "hello", "token": old, "name": "x" * 40}))
        await c.recv()

    # the hub saw it all: 5 bad requests on the shim, 11 websocket connections
    wait_for(lambda: "".join(hub.output).count("bad request from") == 5)
    wait_for(lambda: "".join(hub.output).count("connection closed") == 11)
    _, out = await asyncio.to_thread(hub.stop)
    found = {
        name: leaked(out, secret.split("_", 2)[-1])
        for name, secret in [("alice", alice), ("ci", ci), ("old", old), ("unknown", unknown),
                             ("garbage", garbage)]
    }  # fmt: skip
    assert found == {n: [] for n in found}, out
    assert "Logging error" not in out, out
    if level == "DEBUG":  # the lines are still there, without the secrets
        assert f"< Authorization: {MARK}" in out and f"/t/{MARK}" in out, out
