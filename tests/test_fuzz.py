"""Fuzzing a live hub with hostile websocket frames and HTTP requests (hypothesis).

Every test starts a real ``wsbus serve`` process on loopback (SQLite on disk) and keeps
a well-behaved *witness* connected throughout: it sends events to itself before, during
and after the fuzzing. Whatever arrives, the hub must

- answer a bad frame with an ``error`` frame carrying a documented ``code`` (never
  ``internal``) and a one-line ``message``, or close with a documented code (1002,
  1007, 1008, 1009; 4002 before ``hello``), never 1011;
- answer HTTP with a status below 500 and a JSON ``{"error": ...}`` body for its own
  errors (aiohttp's parser answers a malformed request with a plain 400 itself);
- keep serving: the process is alive, ``/healthz`` answers on both ports, the witness
  is still connected and served, a fresh client can send and receive;
- lose nothing it acknowledged: every ``ok`` frame and every HTTP 200 from ``/send`` is
  in history with the same sender, ref and body (and ``meta`` where the test knows it);
- log no internal error;
- drop stalled partial requests (bounded in count and time) within its handshake
  timeout, while serving everyone else promptly.

Hand-picked edge cases (deep nesting, huge numbers, invalid UTF-8, size limits) run as
tables that report every failing case at once; hypothesis explores around them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import re
import string
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import quote_from_bytes

import aiohttp
import msgspec
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from wsbus.errors import ErrorCode

from .helpers import HubProcess

JSON_PROTO = "wsbus.v1.json"
MSGPACK_PROTO = "wsbus.v1.msgpack"
CLIENT_OPS = ("hello", "send", "ack", "subscribe", "unsubscribe", "history", "roster",
              "register", "status", "threads", "ping")  # fmt: skip
#: codes an error frame may carry in answer to bad input (``internal`` means a hub bug)
ERROR_CODES = frozenset(code.value for code in ErrorCode) - {ErrorCode.INTERNAL.value}
#: codes an error frame answering a bad first frame may carry (then close 4002)
HELLO_ERRORS = frozenset({"invalid_json", "invalid_msgpack", "invalid_frame", "unknown_op",
                          "hello_required", "too_many_channels", "wrong_frame_type"})  # fmt: skip
#: close codes for a connection that sent bad input after hello (never 1011 nor 1006)
BAD_INPUT_CLOSES = frozenset({1002, 1007, 1008, 1009})
MESSAGE_MAX = 500  # an error message is a sentence, not an echo of the input
ANSWER_TIMEOUT = 10.0  # seconds for any single answer from the hub
ROUND_TRIP = 5.0  # seconds a well-behaved client may wait for its own event, under attack
HELLO_TIMEOUT = 2.0  # the handshake timeout of the hub in the stall test
DROP_GRACE = 5.0  # how long after the handshake timeout a stalled socket may stay open
PRE_EVENTS = 10  # events the witness sends before the fuzzing starts

FUZZ = settings(deadline=None, suppress_health_check=list(HealthCheck), print_blob=True)


# --------------------------------------------------------------------------- JSON text


class Raw(str):
    """JSON text written as is: tokens ``json.dumps`` cannot write (``1e999``, ``-0``,
    400-digit numbers) and nesting deeper than a recursive writer can go."""

    __slots__ = ()


def dump(value: object) -> str:
    """``value`` as JSON text. Strings keep non-ASCII characters as UTF-8, unless they
    hold a lone surrogate, which only an escape (``"\\ud800"``) can carry."""
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, dict):
        return "{" + ",".join(f"{dump(k)}:{dump(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(dump(v) for v in value) + "]"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=any(0xD800 <= ord(c) <= 0xDFFF for c in value))
    return json.dumps(value)


def as_decoded(text: str) -> str:
    """A string as a JSON decoder reads it back (escaped surrogate pairs join)."""
    return str(json.loads(dump(text)))


def deep_array(depth: int) -> Raw:
    return Raw("[" * depth + "]" * depth)


def deep_object(depth: int) -> Raw:
    return Raw('{"a":' * depth + "1" + "}" * depth)


def nested(depth: int) -> dict[str, Any]:
    """``deep_object(depth)`` as a Python value."""
    value: Any = 1
    for _ in range(depth):
        value = {"a": value}
    return value  # type: ignore[no-any-return]


@contextlib.contextmanager
def recursion_room(limit: int = 5000) -> Iterator[None]:
    """Parse and compare values as deep as the hub accepts (about 1,000 levels)."""
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old, limit))
    try:
        yield
    finally:
        sys.setrecursionlimit(old)


def parse(data: str | bytes, binary: bool = False) -> dict[str, Any]:
    """A hub frame as a dict."""
    with recursion_room():
        value = msgspec.msgpack.decode(data) if binary else json.loads(data)
    assert isinstance(value, dict) and isinstance(value.get("op"), str), (
        f"the hub sent a frame that is not an object with an op: {short(value)}"
    )
    return value


def short(value: object, limit: int = 300) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


# --------------------------------------------------------------------------- MessagePack


def mp(value: object) -> bytes:
    return msgspec.msgpack.encode(value)


def mp_str(raw: bytes) -> bytes:
    """A MessagePack str holding ``raw`` as is, UTF-8 or not."""
    n = len(raw)
    if n < 32:
        return bytes([0xA0 | n]) + raw
    if n < 256:
        return b"\xd9" + bytes([n]) + raw
    return b"\xda" + n.to_bytes(2, "big") + raw


def mp_map(*pairs: tuple[bytes, bytes]) -> bytes:
    """A MessagePack map of already encoded keys and values."""
    return bytes([0x80 | len(pairs)]) + b"".join(k + v for k, v in pairs)


# --------------------------------------------------------------------------- the hub


class LiveHub:
    """A hub process whose output is read as it comes (a full pipe would block the hub
    the next time it logs), so its log can be checked for internal errors."""

    BUG = re.compile(r"^\S+ \S+ (ERROR|CRITICAL) (?!aiohttp\.server:)")
    STAMP = re.compile(r"^\d{4}-\d\d-\d\d ")

    def __init__(self, proc: HubProcess) -> None:
        self.proc = proc

    @property
    def lines(self) -> list[str]:
        return self.proc.output  # HubProcess reads the output as it comes

    @property
    def url(self) -> str:
        return self.proc.url

    @property
    def port(self) -> int:
        return self.proc.port

    @property
    def http_port(self) -> int:
        return self.proc.http_port

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def alive(self) -> bool:
        return self.proc.proc is not None and self.proc.proc.poll() is None

    def bugs(self) -> list[str]:
        """Internal errors the hub logged, each with the traceback that follows it."""
        lines = list(self.lines)
        found = []
        for i, line in enumerate(lines):
            if self.BUG.match(line):
                rest = itertools.takewhile(lambda s: not self.STAMP.match(s), lines[i + 1 : i + 40])
                found.append(line + "".join(rest))
        return found

    def tail(self, n: int = 40) -> str:
        return "".join(self.lines[-n:])

    def close(self) -> None:
        """Kill the hub and read the rest of its output."""
        self.proc.kill()


@pytest.fixture
def live(
    hub_factory: Callable[..., HubProcess], env: dict[str, str]
) -> Iterator[Callable[..., LiveHub]]:
    """Start a hub (flags as arguments, environment variables as keywords)."""
    hubs: list[LiveHub] = []

    def start(*args: str, **environ: str) -> LiveHub:
        env.update(environ)  # the dict hub_factory hands to the process
        hubs.append(LiveHub(hub_factory(*args)))
        return hubs[-1]

    yield start
    for hub in hubs:
        hub.close()


@pytest.fixture
def runner() -> Iterator[asyncio.Runner]:
    """One event loop for the whole test: the witness lives across hypothesis examples."""
    with asyncio.Runner() as r:
        yield r


# --------------------------------------------------------------------------- acknowledged


NO_META = object()


@dataclass(frozen=True)
class Acked:
    """What the hub acknowledged; ``body``/``ref``/``meta`` are checked when known."""

    sender: str
    body: str | None = None
    ref: str | None = None
    meta: Any = NO_META


class Ledger(dict[int, Acked]):
    """Every acknowledged event by seq."""

    def add(self, seq: int, acked: Acked) -> None:
        if seq not in self or self[seq].body is None:
            self[seq] = acked


# --------------------------------------------------------------------------- clients


class Witness:
    """A well-behaved client connected through the whole run: it sends events to itself
    (each acknowledged one is recorded) and reads everything the hub sends it."""

    def __init__(self, conn: ClientConnection, name: str, welcome: dict[str, Any]) -> None:
        self.conn = conn
        self.name = name
        self.limits: dict[str, int] = welcome["limits"]
        self.acked = Ledger()
        self._waiting: dict[tuple[str, str], asyncio.Future[dict[str, Any]]] = {}
        self._n = 0
        self._reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def connect(cls, url: str, name: str = "witness") -> Witness:
        conn = await connect(url, subprotocols=[JSON_PROTO], compression=None,  # type: ignore[list-item]
                             max_size=None, open_timeout=ANSWER_TIMEOUT)  # fmt: skip
        try:
            await conn.send(json.dumps({"op": "hello", "name": name, "presence": False}))
            welcome = parse(await asyncio.wait_for(conn.recv(), ANSWER_TIMEOUT))
            assert welcome["op"] == "welcome", welcome
        except BaseException:
            await conn.close()
            raise
        return cls(conn, name, welcome)

    async def _read(self) -> None:
        gone = None
        try:
            async for data in self.conn:
                frame = parse(data)
                if frame["op"] == "event" and frame.get("from") != self.name:
                    continue  # fuzzers' events addressed to it: not a round trip
                waiter = self._waiting.pop((frame["op"], frame.get("ref")), None)  # type: ignore[arg-type]
                if waiter is not None and not waiter.done():
                    waiter.set_result(frame)
        except ConnectionClosed:
            pass
        except AssertionError as err:  # the hub sent something that is not a frame
            gone = err
        gone = gone or AssertionError(f"{self.name} disconnected (close {self.conn.close_code})")
        for waiter in self._waiting.values():
            if not waiter.done():
                waiter.set_exception(gone)

    @property
    def connected(self) -> bool:
        return self.conn.close_code is None and not self._reader.done()

    async def round_trip(self, timeout: float = ROUND_TRIP) -> float:
        """Send an event to itself, wait for its ``ok`` and its delivery; seconds taken."""
        self._n += 1
        ref, body = f"{self.name}-{self._n}", f"{self.name} says {self._n}"
        loop = asyncio.get_running_loop()
        ok, error, event = (loop.create_future() for _ in range(3))
        keys = [("ok", ref), ("error", ref), ("event", ref)]
        self._waiting.update(zip(keys, (ok, error, event), strict=True))
        start = time.monotonic()
        try:
            async with asyncio.timeout(timeout):
                frame = {"op": "send", "ref": ref, "to": self.name, "body": body}
                await self.conn.send(json.dumps(frame))
                await asyncio.wait([ok, error], return_when=asyncio.FIRST_COMPLETED)
                assert ok.done(), f"{self.name}'s send was refused: {error.result()}"
                seq = ok.result()["seq"]
                self.acked.add(seq, Acked(self.name, body, ref))
                delivered = await event
        except TimeoutError:
            raise AssertionError(
                f"{self.name}: no round trip within {timeout}s (connected: {self.connected})"
            ) from None
        finally:
            for key in keys:
                self._waiting.pop(key, None)
        assert (delivered["seq"], delivered["body"]) == (seq, body), delivered
        return time.monotonic() - start

    async def close(self) -> None:
        await self.conn.close()
        with contextlib.suppress(Exception):
            await self._reader


@dataclass
class Answer:
    """What the hub sent after one frame, up to the sentinel's pong or the close."""

    frames: list[dict[str, Any]]
    close: int | None = None  # the close code when the hub closed the connection

    def errors(self) -> list[dict[str, Any]]:
        return [f for f in self.frames if f["op"] == "error"]

    def find(self, op: str, ref: str | None = None) -> dict[str, Any] | None:
        found = (f for f in self.frames if f["op"] == op and ref in (None, f.get("ref")))
        return next(found, None)

    def summary(self) -> str:
        frames = [f"{f['op']}:{f.get('code', '')}" if f["op"] == "error" else f["op"]
                  for f in self.frames]  # fmt: skip
        return f"frames {frames}" + (f", closed {self.close}" if self.close is not None else "")


def one_line(message: str) -> str | None:
    """What keeps ``message`` from being one readable sentence (None: nothing)."""
    if "\n" in message or len(message) > MESSAGE_MAX:
        return f"is not one short sentence: {short(message)}"
    return None


def error_problems(answer: Answer) -> list[str]:
    """What is wrong with the error frames of an answer."""
    problems = []
    for err in answer.errors():
        code, message = err.get("code"), err.get("message")
        if code not in ERROR_CODES:
            problems.append(f"error code {code!r} (message {short(message)})")
        if not isinstance(message, str) or not message.strip():
            problems.append(f"error {code!r} without a message")
        elif (why := one_line(message)) is not None:
            problems.append(f"error {code!r} message {why}")
    return problems


class Probe:
    """One fuzzing connection: every frame is followed by a ``ping`` sentinel, and what the
    hub sends until its ``pong`` (or until it closes the connection) is the answer."""

    def __init__(self, conn: ClientConnection, binary: bool, name: str | None) -> None:
        self.conn = conn
        self.binary = binary
        self.name = name
        self.welcome: dict[str, Any] = {}
        self.oks: list[dict[str, Any]] = []
        #: ref -> bodies of the sends carrying it, to tell which body an ok stands for
        self.sent: dict[str, set[str]] = {}
        self._n = 0

    @classmethod
    async def open(
        cls, url: str, name: str | None = None, *, binary: bool = False, hello: bool = True
    ) -> Probe:
        protocol = MSGPACK_PROTO if binary else JSON_PROTO
        conn = await connect(url, subprotocols=[protocol], compression=None,  # type: ignore[list-item]
                             max_size=None, open_timeout=ANSWER_TIMEOUT)  # fmt: skip
        probe = cls(conn, binary, name)
        if hello:
            who: dict[str, Any] = {"name": name} if name else {"channels": []}
            answer = await probe.answer(probe.encode({"op": "hello", "presence": False, **who}))
            welcome = answer.find("welcome")
            if welcome is None:
                await probe.close()
                raise AssertionError(f"hello refused: {answer.frames}")
            probe.welcome = welcome
        return probe

    def encode(self, frame: dict[str, Any]) -> str | bytes:
        return mp(frame) if self.binary else json.dumps(frame)

    def note(self, value: object) -> None:
        """Remember the body of a send frame about to go out."""
        if not (isinstance(value, dict) and value.get("op") == "send"):
            return
        ref, body = value.get("ref"), value.get("body")
        if type(ref) is str and type(body) is str:
            if not self.binary:
                ref, body = as_decoded(ref), as_decoded(body)
            self.sent.setdefault(ref, set()).add(body)

    async def answer(
        self,
        data: str | bytes | list[str],
        *,
        text: bool | None = None,
        wait_ref: str | None = None,
        timeout: float = ANSWER_TIMEOUT,
    ) -> Answer:
        """Send ``data``, then a ping sentinel; the frames up to its pong (and, with
        ``wait_ref``, up to the ``ok`` or ``error`` carrying that ref)."""
        self._n += 1
        sentinel = f"~sentinel~{self._n}"
        answer = Answer([])
        try:
            async with asyncio.timeout(timeout):
                await self.conn.send(data, text=text)  # type: ignore[arg-type]
                await self.conn.send(self.encode({"op": "ping", "ref": sentinel}))
                pong, settled = False, wait_ref is None
                while not (pong and settled):
                    frame = parse(await self.conn.recv(), self.binary)
                    if frame["op"] == "pong" and frame.get("ref") == sentinel:
                        pong = True
                        continue
                    answer.frames.append(frame)
                    if frame["op"] == "ok":
                        self.oks.append(frame)
                    if frame["op"] in ("ok", "error") and frame.get("ref") == wait_ref:
                        settled = True
        except ConnectionClosed:
            answer.close = self.conn.close_code
        except TimeoutError:
            raise AssertionError(
                f"no answer within {timeout}s to {short(data)}; got {answer.summary()}"
            ) from None
        return answer

    async def flush(self, ledger: Ledger) -> None:
        """Send one good event and wait for its ``ok`` (oks come in commit order, so every
        earlier one is in), then record every acknowledged send of this connection."""
        if self.conn.close_code is None and self.name is not None:
            ref = f"~flush~{os.urandom(6).hex()}"  # never a duplicate, which would not wait
            frame = {"op": "send", "ref": ref, "to": self.name, "body": "flush"}
            self.note(frame)
            answer = await self.answer(self.encode(frame), wait_ref=ref)
            if answer.close is None:
                assert answer.find("ok", ref) is not None, f"flush refused: {answer.frames}"
        for ok in self.oks:
            bodies = self.sent.get(ok["ref"], set())
            body = next(iter(bodies)) if len(bodies) == 1 and not ok.get("duplicate") else None
            ledger.add(ok["seq"], Acked(self.name or "?", body, ok["ref"]))

    async def close(self) -> None:
        await self.conn.close()


# --------------------------------------------------------------------------- the checks


async def stored_events(url: str, page: int = 200) -> dict[int, dict[str, Any]]:
    """Every stored event, read with ``history`` pages."""
    probe = await Probe.open(url)
    events: dict[int, dict[str, Any]] = {}
    try:
        cursor = 0
        for n in range(probe.welcome["seq"] // page + 3):
            frame = {"op": "history", "ref": f"audit-{n}", "after": cursor, "limit": page}
            answer = await probe.answer(probe.encode(frame))
            result = answer.find("history_result")
            assert result is not None, f"history after seq {cursor} failed: {answer.frames}"
            for event in result["events"]:
                events[event["seq"]] = event
            if len(result["events"]) < page:
                break
            cursor = result["events"][-1]["seq"]
    finally:
        await probe.close()
    return events


async def assert_stored(url: str, ledger: Ledger) -> None:
    """Every acknowledged event is in history, unchanged."""
    events = await stored_events(url)
    missing, changed = [], []
    for seq, want in sorted(ledger.items()):
        got = events.get(seq)
        if got is None:
            missing.append(seq)
            continue
        with recursion_room():
            same = (
                got["from"] == want.sender
                and (want.ref is None or got.get("ref") == want.ref)
                and (want.body is None or got["body"] == want.body)
                and (want.meta is NO_META or got.get("meta") == want.meta)
            )
        if not same:
            changed.append(f"seq {seq}: acknowledged {short(want)}, stored {short(got)}")
    assert not missing, f"{len(missing)} acknowledged events are not stored: {missing[:20]}"
    assert not changed, "acknowledged events changed in the store:\n" + "\n".join(changed[:10])


async def http_send(session: aiohttp.ClientSession, hub: LiveHub, sender: str, to: str,
                    msg: str) -> int:  # fmt: skip
    body = {"from": sender, "to": to, "msg": msg}
    async with session.post(f"{hub.http_url}/send", json=body) as resp:
        data = await resp.json(content_type=None)
        assert resp.status == 200, (resp.status, data)
        return int(data["seq"])


async def assert_still_serving(hub: LiveHub, witness: Witness, ledger: Ledger) -> None:
    """After the fuzzing: alive, serving the witness and new clients, nothing lost."""
    assert hub.alive(), "the hub process exited:\n" + hub.tail()
    assert witness.connected, f"the witness was disconnected (close {witness.conn.close_code})"
    await witness.round_trip()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=ANSWER_TIMEOUT)) as http:
        for url in (f"{hub.http_url}/healthz", f"http://127.0.0.1:{hub.port}/healthz"):
            async with http.get(url) as resp:
                assert resp.status == 200, (url, resp.status)
                assert (await resp.json(content_type=None))["ok"] is True
        seq = await http_send(http, hub, "auditor", "witness", "after the fuzz")
        ledger.add(seq, Acked("auditor", "after the fuzz"))
    fresh = await Witness.connect(hub.url, "fresh")
    try:
        await fresh.round_trip()
    finally:
        await fresh.close()
    for acked in (witness.acked, fresh.acked):
        for seq, entry in acked.items():
            ledger.add(seq, entry)
    await assert_stored(hub.url, ledger)
    bugs = hub.bugs()
    kinds = {bug.strip().splitlines()[-1]: bug for bug in bugs}  # one of each exception
    first = "\n".join(list(kinds.values())[:6])
    assert not bugs, f"the hub logged {len(bugs)} internal errors, {len(kinds)} kinds:\n{first}"


def run_fuzz(runner: asyncio.Runner, hub: LiveHub, fuzz: Callable[[Witness, Ledger], None]) -> None:
    """The frame of every fuzz test: witness up and sending, fuzz, then the checks."""
    witness = runner.run(Witness.connect(hub.url))
    ledger = Ledger()
    try:
        for _ in range(PRE_EVENTS):
            runner.run(witness.round_trip())
        fuzz(witness, ledger)
        runner.run(assert_still_serving(hub, witness, ledger))
    finally:
        runner.run(witness.close())


# --------------------------------------------------------------------------- strategies

FIELDS = ("ref", "to", "body", "channel", "from", "thread", "kind", "meta", "seq", "status",
          "reason", "name", "names", "channels", "after", "before", "limit", "pending", "all",
          "session", "host", "model", "role", "enter_delay", "leave", "alive", "resume",
          "token", "watch", "presence", "client", "tmux")  # fmt: skip
WORDS = ("sink", "witness", "*", "default", "read", "failed", "session_down", "bridge",
         "agent", "notice", "a/b", "hermes/pmxt", "r-1", "a" * 64, "a" * 65, "-x", "x/../y",
         "../etc", "", " ")  # fmt: skip
NASTY_STRINGS = ("\x00", "a\x00b", "\ud800", "\udfff", "\udbff\udfff", "\ud83d\ude00",
                 "\u2028\u2029", "\ufeff", "\uffff", "\U0010ffff", "\u00e9", "\\", '"',
                 "\x7f", "\x1b[31m", "%s%n", "1e999", "null", "x" * 300)  # fmt: skip
SPECIAL_NUMBERS: tuple[object, ...] = (
    Raw("1e999"), Raw("-1e999"), Raw("1e-999"), Raw("-0"), Raw("-0.0"), Raw("1E400"),
    Raw("1" + "0" * 400), Raw("-" + "9" * 400), Raw("0.1e1"), Raw("1.5e308"), Raw("4.9e-324"),
    2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1, -1, 0, 10**30,
)  # fmt: skip
#: text frames that are not JSON objects (each one must get an ``error`` frame)
NOT_JSON = ("", " ", "{", "}", "[", '{"op":', '{"op":"ping"', "{'op':'ping'}", '{"op":"ping",}',
            '{"op":NaN}', '{"op":"ping","x":NaN}', '{"op":"ping","x":Infinity}',
            '{"op":"ping","x":-Infinity}', '{"op":"ping","x":01}', '{"op":"ping","x":1.}',
            '{"op":"ping","x":.5}', '{"op":"ping","x":+1}', '{"op":"ping","x":0x10}',
            '{"op":"ping","x":"\\x41"}', '{"op":"ping","x":"\\ud800"}', '{"op":"ping"}{}',
            '{"op":"ping"} x', '{"op":"ping","x":"\x01"}', "tru", "nul", '"\\u00"',
            '{"op":"ping","x":"\\udc00\\ud800"}')  # fmt: skip

any_text = st.text(st.characters(exclude_categories=()), max_size=30)  # surrogates too
leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(SPECIAL_NUMBERS),
    any_text,
    st.sampled_from(WORDS + NASTY_STRINGS),
    st.integers(1, 64).map(deep_array),
    st.integers(1, 64).map(deep_object),
)
keys = st.sampled_from(FIELDS) | any_text
json_values = st.recursive(
    leaves,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(keys, kids, max_size=4),
    max_leaves=10,
)
ops = st.one_of(
    st.sampled_from(CLIENT_OPS),
    st.sampled_from(("", "SEND", "Ping", "event", "welcome", "ok", "send ", "ping\x00")),
    any_text,
    json_values,
)
frame_dicts = st.builds(
    lambda op, rest: {"op": op, **rest},
    ops,
    st.dictionaries(keys, st.sampled_from(WORDS) | json_values, max_size=6),
)
plain_text = st.text(max_size=40)  # no surrogates: sendable as a text frame
good_sends = st.fixed_dictionaries(
    {"op": st.just("send"), "ref": st.text(min_size=1, max_size=20),
     "to": st.sampled_from(("sink", "witness", "*")), "body": plain_text | any_text},
    optional={"channel": st.sampled_from(("default", "fuzz")),
              "kind": st.sampled_from(("agent", "notice")),
              "thread": st.sampled_from(("a", "a/b")),
              "meta": st.dictionaries(keys, json_values, max_size=3),
              "x": json_values},
)  # fmt: skip


@dataclass(frozen=True)
class Fuzzed:
    """One generated frame: what goes on the wire, the value it came from (None when it
    is not JSON), and whether the hub must answer it with an ``error`` frame."""

    data: str | bytes
    value: object = None
    bad: bool = True

    def __repr__(self) -> str:
        return f"Fuzzed({short(self.data, 2000)}, bad={self.bad})"


def must_fail(value: object) -> bool:
    """A frame the hub cannot accept after hello: not an object with a known ``op``."""
    if not isinstance(value, dict):
        return True
    op = value.get("op")
    return type(op) is not str or op not in CLIENT_OPS or op == "hello"


def fuzzed_json(value: object) -> Fuzzed:
    return Fuzzed(dump(value), value, must_fail(value))


def fuzzed_text(text: str) -> Fuzzed:
    try:
        value = json.loads(text)
    except ValueError:
        return Fuzzed(text)
    return Fuzzed(text, None, must_fail(value))


def truncations(frame: Fuzzed) -> st.SearchStrategy[Fuzzed]:
    text = str(frame.data)
    return st.integers(0, max(0, len(text) - 1)).map(lambda i: Fuzzed(text[:i]))


json_frames = st.one_of(
    frame_dicts.map(fuzzed_json),
    good_sends.map(fuzzed_json),
    json_values.map(fuzzed_json),
    st.sampled_from(NOT_JSON).map(Fuzzed),
    plain_text.map(fuzzed_text),
    frame_dicts.map(fuzzed_json).flatmap(truncations),
)

mp_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(),
    plain_text,
    st.sampled_from(WORDS),
    st.binary(max_size=20),
)
mp_values = st.recursive(
    mp_leaves,
    lambda kids: (
        st.lists(kids, max_size=4)
        | st.dictionaries(st.sampled_from(FIELDS) | plain_text, kids, max_size=4)
    ),
    max_leaves=10,
)
mp_dicts = st.builds(
    lambda op, rest: {"op": op, **rest},
    st.sampled_from(CLIENT_OPS) | plain_text | mp_values,
    st.dictionaries(st.sampled_from(FIELDS), st.sampled_from(WORDS) | mp_values, max_size=6),
)
mp_good_sends = st.fixed_dictionaries(
    {"op": st.just("send"), "ref": st.text(min_size=1, max_size=20),
     "to": st.sampled_from(("sink", "witness", "*")), "body": plain_text},
    optional={"meta": st.dictionaries(plain_text, mp_values, max_size=3)},
)  # fmt: skip


def fuzzed_mp(value: object) -> Fuzzed:
    return Fuzzed(mp(value), value, must_fail(value))


def fuzzed_bytes(data: bytes) -> Fuzzed:
    try:
        value = msgspec.msgpack.decode(data)
    except Exception:
        return Fuzzed(data)
    return Fuzzed(data, None, must_fail(value))


mp_frames = st.one_of(
    mp_dicts.map(fuzzed_mp),
    mp_good_sends.map(fuzzed_mp),
    mp_values.map(fuzzed_mp),
    st.binary(max_size=200).map(fuzzed_bytes),
    mp_dicts.map(mp)
    .flatmap(lambda b: st.integers(0, len(b) - 1).map(lambda i: b[:i]))
    .map(fuzzed_bytes),
)


# --------------------------------------------------------------------------- websocket fuzz


async def fuzz_connection(
    url: str, name: str, frames: list[Fuzzed], ledger: Ledger, *, binary: bool = False
) -> None:
    """Send each frame after hello, each followed by a sentinel; check every answer."""
    probe = await Probe.open(url, name, binary=binary)
    try:
        for frame in frames:
            probe.note(frame.value)
            answer = await probe.answer(frame.data)
            problems = error_problems(answer)
            if answer.close is not None:
                if answer.close not in BAD_INPUT_CLOSES:
                    problems.append(f"closed with {answer.close}")
            elif frame.bad and not answer.errors():
                problems.append("no error frame")
            assert not problems, f"after {frame!r}: {problems}; {answer.summary()}"
            if answer.close is not None:
                break
        await probe.flush(ledger)
    finally:
        await probe.close()


def test_fuzzed_frames_after_hello(live: Callable[..., LiveHub], runner: asyncio.Runner) -> None:
    """Random JSON of any shape, known ops with random field values, huge and special
    numbers, lone surrogates, NULs, truncated and invalid JSON, after a valid hello."""
    hub = live()
    names = itertools.count()

    def fuzz(witness: Witness, ledger: Ledger) -> None:
        @settings(FUZZ, max_examples=120)
        @given(frames=st.lists(json_frames, min_size=1, max_size=6))
        def one(frames: list[Fuzzed]) -> None:
            runner.run(fuzz_connection(hub.url, f"fuzz-{next(names)}", frames, ledger))
            runner.run(witness.round_trip())

        one()

    run_fuzz(runner, hub, fuzz)


def test_fuzzed_msgpack_frames(live: Callable[..., LiveHub], runner: asyncio.Runner) -> None:
    """Random bytes, truncated frames and random MessagePack values (NaN, infinity, bin,
    64-bit edges) on the msgpack subprotocol."""
    hub = live()
    names = itertools.count()

    def fuzz(witness: Witness, ledger: Ledger) -> None:
        @settings(FUZZ, max_examples=100)
        @given(frames=st.lists(mp_frames, min_size=1, max_size=6))
        def one(frames: list[Fuzzed]) -> None:
            name = f"mp-{next(names)}"
            runner.run(fuzz_connection(hub.url, name, frames, ledger, binary=True))
            runner.run(witness.round_trip())

        one()

    run_fuzz(runner, hub, fuzz)


hello_fields = st.dictionaries(
    st.sampled_from(("name", "names", "channels", "resume", "token", "kind", "model", "role",
                     "tmux", "host", "client", "watch", "presence", "pending")),
    st.sampled_from(WORDS) | st.lists(st.sampled_from(WORDS), max_size=3) | json_values,
    max_size=5,
)  # fmt: skip
first_frames = st.one_of(
    hello_fields.map(lambda d: fuzzed_json({"op": "hello", **d})),
    json_frames,
    st.binary(max_size=100).map(Fuzzed),  # binary on the JSON subprotocol
)


async def fuzz_first_frame(url: str, frame: Fuzzed) -> None:
    probe = await Probe.open(url, hello=False)
    try:
        answer = await probe.answer(frame.data)
    finally:
        await probe.close()
    problems = error_problems(answer)
    if answer.find("welcome") is None:
        errors = answer.errors()
        if answer.close != 4002:
            problems.append(f"closed with {answer.close}, not 4002")
        if not errors:
            problems.append("no error frame before the close")
        elif errors[0].get("code") not in HELLO_ERRORS:
            problems.append(f"error code {errors[0].get('code')!r} for a bad hello")
    elif answer.close is not None:
        problems.append(f"welcomed, then closed with {answer.close}")
    assert not problems, f"first frame {frame!r}: {problems}; {answer.summary()}"


def test_fuzzed_first_frames(live: Callable[..., LiveHub], runner: asyncio.Runner) -> None:
    """A random first frame: a welcome, or an error frame then close 4002, never 1011."""
    hub = live()

    def fuzz(witness: Witness, ledger: Ledger) -> None:
        @settings(FUZZ, max_examples=80)
        @given(frame=first_frames)
        def one(frame: Fuzzed) -> None:
            runner.run(fuzz_first_frame(hub.url, frame))

        one()
        runner.run(witness.round_trip())

    run_fuzz(runner, hub, fuzz)


# --------------------------------------------------------------------------- edge tables


@dataclass(frozen=True)
class Case:
    """A hand-picked frame and the answers accepted for it.

    ``expect`` alternatives: ``ok`` (acknowledged, then checked in history, with
    ``body``/``meta`` when given), ``error`` or ``error:CODE`` (the connection stays open;
    before hello it is closed with 4002), ``pong:REF``, ``answer`` (anything but a
    failure), ``close:CODE``, ``welcome``."""

    name: str
    data: str | bytes | list[str]
    expect: tuple[str, ...]
    binary: bool = False  # on the msgpack subprotocol
    text: bool | None = None  # force the frame type (bytes sent as text)
    first: bool = False  # sent instead of hello
    ref: str | None = None
    body: str | None = None
    meta: Any = NO_META


def judge(case: Case, answer: Answer) -> str | None:
    """What is wrong with the hub's answer to a case (None: as expected)."""
    problems = error_problems(answer)
    if answer.close in (1011, 1006):
        problems.append(f"closed with {answer.close}")
    if problems:
        return f"{problems}; {answer.summary()}"
    for expect in case.expect:
        kind, _, arg = expect.partition(":")
        if kind == "ok":
            ok = answer.find("ok", case.ref)
            if ok is not None and not ok.get("duplicate"):
                return None
        elif met(kind, arg, answer, case.first):
            return None
    return f"expected {' or '.join(case.expect)}; got {answer.summary()}"


def met(kind: str, arg: str, answer: Answer, first: bool) -> bool:
    """Whether an answer is what a case's ``kind:arg`` expectation describes."""
    stays_open = answer.close is None
    match kind:
        case "error":
            codes = {e.get("code") for e in answer.errors()}
            closed_right = answer.close == 4002 if first else stays_open
            return (arg in codes if arg else bool(codes)) and closed_right
        case "pong":
            return stays_open and answer.find("pong", arg) is not None
        case "answer":
            return stays_open or answer.close in BAD_INPUT_CLOSES
        case "close":
            return answer.close == int(arg)
        case "welcome":
            return answer.find("welcome") is not None
    raise ValueError(f"unknown expectation {kind!r}")


def send_json(ref: str, body: object = "x", **fields: object) -> str:
    return dump({"op": "send", "ref": ref, "to": "sink", "body": body, **fields})


def ws_cases(limits: dict[str, int]) -> list[Case]:
    """Deep nesting, huge numbers, odd strings, size limits, invalid UTF-8."""
    deep = 10_000
    max_body, max_frame = limits["max_body"], limits["max_frame"]
    head = '{"op":"ping","ref":"edge-frame","pad":"'
    exact = head + "a" * (max_frame - len(head) - 2) + '"}'
    big_op = dump({"op": "x" * (max_frame - 100)})
    emoji = "\U0001f600"
    mp_send = (mp("op"), mp("send")), (mp("to"), mp("sink"))
    return [
        # nesting
        Case("array nested 10,000 deep", str(deep_array(deep)), ("error",)),
        Case("object nested 10,000 deep", str(deep_object(deep)), ("error",)),
        Case("ping with an unknown field nested 10,000 deep",
             dump({"op": "ping", "ref": "e1", "x": deep_array(deep)}), ("pong:e1", "error")),
        Case("send with meta nested 10,000 deep",
             send_json("e2", meta=deep_object(deep)), ("error",)),
        Case("send with meta nested 200 deep", send_json("e3", meta=deep_object(200)),
             ("ok", "error:invalid_frame"),
             ref="e3", body="x", meta=nested(200)),
        Case("hello with a field nested 10,000 deep",
             dump({"op": "hello", "name": "e", "x": deep_array(deep)}),
             ("welcome", "error"), first=True),
        # numbers
        Case("ack of seq 2**63", dump({"op": "ack", "seq": 2**63, "status": "read"}),
             ("error:invalid_frame",)),
        Case("ack of seq 10**400", dump({"op": "ack", "seq": Raw("1" + "0" * 400),
                                         "status": "read"}), ("error:invalid_frame",)),
        Case("ack of seq 1e999", dump({"op": "ack", "seq": Raw("1e999"), "status": "read"}),
             ("error:invalid_frame",)),
        Case("ack of seq -1", dump({"op": "ack", "seq": -1, "status": "read"}),
             ("error:invalid_frame",)),
        Case("ack of seq 2**63-1", dump({"op": "ack", "seq": 2**63 - 1, "status": "read"}),
             ("error:unknown_event",)),
        Case("history after 2**63-1", dump({"op": "history", "ref": "e4", "after": 2**63 - 1}),
             ("answer",)),
        Case("history before 0 and limit 1",
             dump({"op": "history", "ref": "e5", "before": 0, "limit": 1}), ("answer",)),
        Case("history limit 10**400",
             dump({"op": "history", "ref": "e6", "limit": Raw("1" + "0" * 400)}),
             ("error:invalid_frame", "error:limit_too_large")),
        Case("register enter_delay 1e999", dump({"op": "register", "ref": "e7", "channel": "c",
             "name": "n", "enter_delay": Raw("1e999")}), ("error:invalid_frame",)),
        Case("meta with 1e999", send_json("e8", meta={"n": Raw("1e999")}),
             ("error:invalid_frame",)),
        Case("meta with 2**64", send_json("e9", meta={"n": 2**64}), ("error:invalid_frame",)),
        Case("meta with 10**400", send_json("e10", meta={"n": Raw("1" + "0" * 400)}),
             ("error:invalid_frame",)),
        Case("meta with 2**64-1 and -(2**63)",
             send_json("e11", meta={"a": 2**64 - 1, "b": -(2**63)}),
             ("ok",), ref="e11", body="x", meta={"a": 2**64 - 1, "b": -(2**63)}),
        Case("meta with -0 and 4.9e-324",
             send_json("e12", meta={"a": Raw("-0"), "b": Raw("4.9e-324")}),
             ("ok",), ref="e12", body="x", meta={"a": 0, "b": 5e-324}),
        # strings
        Case("body with a lone surrogate escape", send_json("e13", "\ud800"),
             ("error:invalid_json",)),
        Case("body with a reversed surrogate pair", send_json("e14", "\udc00\ud800"),
             ("error:invalid_json",)),
        Case("body with a surrogate pair escape", send_json("e15", "\ud83d\ude00"), ("ok",),
             ref="e15", body=emoji),
        Case("meta key with a lone surrogate escape", send_json("e16", meta={"\udfff": 1}),
             ("error:invalid_json",)),
        Case("body with NUL bytes", send_json("e17", "a\x00b\x00"), ("ok",), ref="e17",
             body="a\x00b\x00"),
        Case("ref of a NUL byte", send_json("\x00"), ("ok",), ref="\x00", body="x"),
        Case("meta key and value of NUL bytes", send_json("e18", meta={"\x00": "\x00"}), ("ok",),
             ref="e18", body="x", meta={"\x00": "\x00"}),
        Case("op of almost max_frame characters", big_op, ("error:unknown_op",)),
        Case("op with a newline and an escape sequence", dump({"op": "x\n\x1b[2J"}),
             ("error:unknown_op",)),
        Case("status of 100,000 characters",
             dump({"op": "ack", "seq": 1, "status": "s" * 100_000}), ("error:invalid_frame",)),
        Case("to of 100,000 characters", dump({"op": "send", "ref": "e19", "to": "t" * 100_000,
             "body": "x"}), ("error:invalid_frame",)),
        Case("unknown field name of 100,000 characters",
             dump({"op": "ping", "ref": "e20", "k" * 100_000: 1}), ("pong:e20",)),
        # sizes
        Case("body of max_body bytes", send_json("e21", "x" * max_body), ("ok",), ref="e21",
             body="x" * max_body),
        Case("body one byte over max_body", send_json("e22", "x" * (max_body + 1)),
             ("error:body_too_large",)),
        Case("body over max_body in bytes, under it in characters",
             send_json("e23", "\u00e9" * (max_body // 2 + 1)), ("error:body_too_large",)),
        Case("body of max_body bytes in 4-byte characters",
             send_json("e24", emoji * (max_body // 4)), ("ok",), ref="e24",
             body=emoji * (max_body // 4)),
        Case("body of max_body NULs, escaped six times larger",
             json.dumps({"op": "send", "ref": "e25", "to": "sink", "body": "\x00" * max_body}),
             ("ok",), ref="e25", body="\x00" * max_body),
        Case("frame of exactly max_frame bytes", exact, ("pong:edge-frame",)),
        Case("frame one byte over max_frame", exact[:-2] + 'a"}', ("close:1009",)),
        Case("fragmented message one byte over max_frame",
             [exact[: len(exact) // 2], exact[len(exact) // 2 : -2] + 'a"}'], ("close:1009",)),
        # invalid UTF-8 in text frames
        Case("text frame of invalid UTF-8", b"\xff\xfe", ("close:1007",), text=True),
        Case("text frame with an encoded surrogate", b'{"op":"ping","ref":"\xed\xa0\x80"}',
             ("close:1007",), text=True),
        Case("text frame with an overlong encoding", b'{"op":"ping","ref":"\xc0\xaf"}',
             ("close:1007",), text=True),
        Case("text frame cut inside a UTF-8 sequence", b'{"op":"ping","ref":"\xe2\x82',
             ("close:1007",), text=True),
        Case("first frame: text of invalid UTF-8", b"\xff", ("close:1007",), text=True,
             first=True),
        # bad first frames
        Case("first frame: hello with resume 10**400",
             dump({"op": "hello", "resume": Raw("1" + "0" * 400)}), ("error:invalid_frame",),
             first=True),
        Case("first frame: hello with resume 2**63-1", dump({"op": "hello", "resume": 2**63 - 1}),
             ("welcome",), first=True),
        Case("first frame: hello with 65 channels",
             dump({"op": "hello", "channels": [f"c{i}" for i in range(65)]}),
             ("error:too_many_channels",), first=True),
        Case("first frame: empty text", "", ("error:invalid_json",), first=True),
        Case("first frame: binary", b"\x00\xff", ("error:wrong_frame_type",), first=True),
        # MessagePack
        Case("msgpack: ref of invalid UTF-8", mp_map(*mp_send, (mp("ref"), mp_str(b"\xff\xfe")),
             (mp("body"), mp("x"))), ("error:invalid_msgpack",), binary=True),
        Case("msgpack: body of invalid UTF-8", mp_map(*mp_send, (mp("ref"), mp("m1")),
             (mp("body"), mp_str(b"\xff\xfe"))), ("error:invalid_msgpack",), binary=True),
        Case("msgpack: body with an encoded surrogate", mp_map(*mp_send, (mp("ref"), mp("m2")),
             (mp("body"), mp_str(b"\xed\xa0\x80"))), ("error:invalid_msgpack",), binary=True),
        Case("msgpack: op of invalid UTF-8", mp_map((mp("op"), mp_str(b"p\xffng"))),
             ("error:invalid_msgpack", "error:unknown_op"), binary=True),
        Case("msgpack: unknown field nested 10,000 deep",
             mp_map((mp("op"), mp("ping")), (mp("ref"), mp("m3")),
                    (mp("x"), b"\x91" * deep + b"\x90")), ("pong:m3", "error"), binary=True),
        Case("msgpack: meta nested 10,000 deep",
             mp_map(*mp_send, (mp("ref"), mp("m4")), (mp("body"), mp("x")),
                    (mp("meta"), b"\x81\xa1a" * deep + b"\x01")), ("error",), binary=True),
        Case("msgpack: meta with NaN and infinity (JSON has neither)",
             mp({"op": "send", "ref": "m5", "to": "sink", "body": "x",
                 "meta": {"nan": float("nan"), "inf": float("inf")}}),
             ("error:invalid_frame",), binary=True, ref="m5"),
        Case("msgpack: meta with 2**64-1 and -(2**63)",
             mp({"op": "send", "ref": "m6", "to": "sink", "body": "x",
                 "meta": {"a": 2**64 - 1, "b": -(2**63)}}),
             ("ok",), binary=True, ref="m6", body="x", meta={"a": 2**64 - 1, "b": -(2**63)}),
        Case("msgpack: meta with an extension type",
             mp({"op": "send", "ref": "m7", "to": "sink", "body": "x",
                 "meta": {"e": msgspec.msgpack.Ext(5, b"xx")}}),
             ("error:invalid_frame",), binary=True),
        Case("msgpack: meta with an array as a map key",
             mp_map(*mp_send, (mp("ref"), mp("m8")), (mp("body"), mp("x")),
                    (mp("meta"), mp_map((mp("k"), mp_map((b"\x91\x01", b"\x02")))))),
             ("error:invalid_frame",), binary=True),
        Case("msgpack: meta with nil as a map key",
             mp_map(*mp_send, (mp("ref"), mp("m9")), (mp("body"), mp("x")),
                    (mp("meta"), mp_map((mp("k"), mp_map((b"\xc0", b"\x02")))))),
             ("error:invalid_frame",), binary=True),
        Case("msgpack: text frame", '{"op":"ping"}', ("error:wrong_frame_type",), binary=True),
        Case("msgpack: frame one byte over max_frame",
             mp({"op": "ping", "pad": b"\x00" * max_frame}), ("close:1009",), binary=True),
        Case("msgpack: first frame of invalid UTF-8 name",
             mp_map((mp("op"), mp("hello")), (mp("name"), mp_str(b"\xff"))),
             ("error:invalid_msgpack",), binary=True, first=True),
    ]  # fmt: skip


def sent_value(case: Case) -> object:
    """The value a case's frame encodes (None when it does not decode here)."""
    try:
        with recursion_room():
            return msgspec.msgpack.decode(case.data) if case.binary else json.loads(case.data)
    except (ValueError, TypeError, RecursionError, msgspec.DecodeError):
        return None


async def run_cases(hub: LiveHub, cases: list[Case], ledger: Ledger) -> list[str]:
    """Each case on a new connection; every send the hub acknowledges, expected or not,
    goes to the ledger."""
    failures = []
    for case in cases:
        name = None if case.first else "edge"  # a first frame is the case's own hello
        probe = await Probe.open(hub.url, name, binary=case.binary, hello=not case.first)
        try:
            answer = await probe.answer(case.data, text=case.text, wait_ref=case.ref)
            probe.note(sent_value(case))
            await probe.flush(ledger)
        except AssertionError as err:  # no answer in time: the next case may still run
            failures.append(f"{case.name}: {err}")
            continue
        finally:
            await probe.close()
        ok = answer.find("ok", case.ref)
        if ok is not None:
            ledger[ok["seq"]] = Acked("edge", case.body, case.ref, case.meta)
        problem = judge(case, answer)
        if problem is not None:
            failures.append(f"{case.name}: {problem}")
    return failures


async def deepest_meta_is_readable(hub: LiveHub, ledger: Ledger) -> list[str]:
    """Up to the deepest ``meta`` the hub accepts: whatever it acknowledges, ``history``
    must give back (an event whose page cannot be encoded hides the whole page)."""
    failures = []
    probe = await Probe.open(hub.url, "edge")
    try:
        for depth in range(900, 1101, 2):
            ref = f"depth-{depth}"
            answer = await probe.answer(send_json(ref, meta=deep_object(depth)), wait_ref=ref)
            ok = answer.find("ok", ref)
            if ok is None:  # refused: deeper ones are too
                if answer.close is not None:
                    failures.append(f"meta nested {depth} deep: {answer.summary()}")
                break
            ledger.add(ok["seq"], Acked("edge", "x", ref))
            page = {"op": "history", "ref": ref, "after": ok["seq"] - 1, "limit": 1}
            result = (await probe.answer(json.dumps(page))).find("history_result", ref)
            if result is None or [e["seq"] for e in result["events"]] != [ok["seq"]]:
                failures.append(f"meta nested {depth} deep: acknowledged as seq {ok['seq']}, "
                                "but history cannot return it")  # fmt: skip
    finally:
        await probe.close()
    return failures


def test_edge_frames(live: Callable[..., LiveHub], runner: asyncio.Runner) -> None:
    """Hand-picked websocket frames: every one is answered as documented."""
    hub = live()
    failures: list[str] = []

    def fuzz(witness: Witness, ledger: Ledger) -> None:
        failures.extend(runner.run(run_cases(hub, ws_cases(witness.limits), ledger)))
        failures.extend(runner.run(deepest_meta_is_readable(hub, ledger)))
        runner.run(witness.round_trip())

    try:
        run_fuzz(runner, hub, fuzz)
    except AssertionError as err:
        failures.append(f"after the cases: {err}")
    assert not failures, f"{len(failures)} edge cases failed:\n" + "\n".join(failures)


# --------------------------------------------------------------------------- frame level

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10


@dataclass(frozen=True)
class RawFrame:
    """One websocket frame as written on the wire, however wrong."""

    opcode: int
    payload: bytes = b""
    fin: bool = True
    rsv: int = 0
    masked: bool = True
    length: int | None = None  # a length field that lies (the payload is sent as is)

    def encode(self) -> bytes:
        n = len(self.payload) if self.length is None else self.length
        first = (0x80 if self.fin else 0) | (self.rsv << 4) | self.opcode
        mask = 0x80 if self.masked else 0
        if n < 126:
            head = bytes([first, mask | n])
        elif n < 1 << 16:
            head = bytes([first, mask | 126]) + n.to_bytes(2, "big")
        else:
            head = bytes([first, mask | 127]) + n.to_bytes(8, "big")
        if not self.masked:
            return head + self.payload
        key = os.urandom(4)
        size = len(self.payload)
        stream = (key * (size // 4 + 1))[:size]
        masked = int.from_bytes(self.payload, "big") ^ int.from_bytes(stream, "big")
        return head + key + masked.to_bytes(size, "big")


def text_frame(data: dict[str, Any]) -> RawFrame:
    return RawFrame(OP_TEXT, json.dumps(data).encode())


@dataclass
class RawOutcome:
    frames: list[dict[str, Any]]
    close: int | None = None  # the close code the hub sent (None: none, or an empty close)
    closed: bool = False  # a close frame came
    eof: bool = False  # the TCP connection ended without a close frame


class RawWs:
    """A websocket connection spoken by hand over a plain socket: a manual upgrade, then
    frames written byte by byte by :class:`RawFrame`."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @staticmethod
    def upgrade_request(port: int, protocol: str = JSON_PROTO) -> bytes:
        key = base64.b64encode(os.urandom(16)).decode()
        return (
            f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: {protocol}\r\n\r\n"
        ).encode()

    @classmethod
    async def open(cls, port: int, *, hello: bool = True) -> RawWs:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        ws = cls(reader, writer)
        try:
            writer.write(cls.upgrade_request(port))
            async with asyncio.timeout(ANSWER_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 101 "), head
                if hello:
                    await ws.send(text_frame({"op": "hello", "name": "raw", "presence": False}))
                    outcome = await ws.until_pong("hello")
                    assert any(f["op"] == "welcome" for f in outcome.frames), outcome
        except BaseException:
            ws.close()
            raise
        return ws

    async def send(self, *frames: RawFrame) -> None:
        with contextlib.suppress(ConnectionError):
            for frame in frames:
                self.writer.write(frame.encode())
            await self.writer.drain()

    async def read_frame(self) -> tuple[int, bytes] | None:
        """The next frame from the hub (None at the end of the connection)."""
        try:
            head = await self.reader.readexactly(2)
            n = head[1] & 0x7F
            if n == 126:
                n = int.from_bytes(await self.reader.readexactly(2), "big")
            elif n == 127:
                n = int.from_bytes(await self.reader.readexactly(8), "big")
            payload = await self.reader.readexactly(n)
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        assert head[0] & 0x70 == 0 and not head[1] & 0x80, f"malformed frame from the hub: {head!r}"
        return head[0] & 0x0F, payload

    async def until_pong(self, ref: str, timeout: float = ANSWER_TIMEOUT) -> RawOutcome:
        """Send a ping frame with ``ref``; read until its pong, a close frame or the end."""
        await self.send(text_frame({"op": "ping", "ref": ref}))
        outcome = RawOutcome([])
        try:
            async with asyncio.timeout(timeout):
                while True:
                    frame = await self.read_frame()
                    if frame is None:
                        outcome.eof = True
                        return outcome
                    opcode, payload = frame
                    if opcode == OP_CLOSE:
                        outcome.closed = True
                        outcome.close = int.from_bytes(payload[:2], "big") if payload else None
                        return outcome
                    if opcode == OP_TEXT:
                        data = parse(payload)
                        if data["op"] == "pong" and data.get("ref") == ref:
                            return outcome
                        outcome.frames.append(data)
        except TimeoutError:
            raise AssertionError(f"no pong, close or EOF within {timeout}s: {outcome}") from None

    def close(self) -> None:
        self.writer.close()


raw_payloads = st.one_of(
    st.binary(max_size=200),
    json_frames.map(lambda f: str(f.data).encode()),
    st.sampled_from((b"\xff", b"\xed\xa0\x80", b"\xc0\xaf", b"\xe2\x82", b"\xf4\x90\x80\x80",
                     b'{"op":"ping","ref":"\xe2\x82', b"\xac\"}", b"\x00")),
    st.builds(lambda code, reason: code.to_bytes(2, "big") + reason,
              st.sampled_from((1000, 1001, 1002, 1005, 1006, 1011, 1015, 2999, 3000, 4002, 4999))
              | st.integers(0, 65535), st.binary(max_size=20)),
)  # fmt: skip
raw_frames = st.builds(
    RawFrame,
    opcode=st.sampled_from(
        (OP_TEXT,) * 4 + (OP_BINARY, OP_CONT, OP_CLOSE, OP_PING, OP_PONG, 3, 7, 11, 15)
    ),
    payload=raw_payloads,
    fin=st.sampled_from((True, True, True, False)),
    rsv=st.sampled_from((0, 0, 0, 0, 0, 0, 1, 2, 4, 7)),
    masked=st.sampled_from((True,) * 8 + (False,)),
)
#: frame-level cases and the close code each one gets from websockets' protocol layer
#: ("open": the connection carries on; "any": any close a bad input may get)
RAW_CASES: dict[str, tuple[list[RawFrame], int | str]] = {
    "text of invalid UTF-8": ([RawFrame(OP_TEXT, b"\xff\xfe")], 1007),
    "text with an encoded surrogate": ([RawFrame(OP_TEXT, b'"\xed\xa0\x80"')], 1007),
    "UTF-8 split across fragments": (
        [RawFrame(OP_TEXT, b'{"op":"ping","ref":"\xe2\x82', fin=False),
         RawFrame(OP_CONT, b'\xac"}')],
        "open",
    ),
    "fragments ending inside a UTF-8 sequence": (
        [RawFrame(OP_TEXT, b'"\xe2', fin=False), RawFrame(OP_CONT, b"\x82")], 1007),
    "unmasked text": ([RawFrame(OP_TEXT, b'{"op":"ping"}', masked=False)], 1002),
    "reserved bits": ([RawFrame(OP_TEXT, b"{}", rsv=4)], 1002),
    "reserved opcode": ([RawFrame(3, b"")], 1002),
    "continuation with nothing to continue": ([RawFrame(OP_CONT, b"x")], 1002),
    "control frame of 126 bytes": ([RawFrame(OP_PING, b"x" * 126)], 1002),
    "fragmented control frame": ([RawFrame(OP_PING, b"x", fin=False)], 1002),
    "close frame of one byte": ([RawFrame(OP_CLOSE, b"\x03")], 1002),
    "close reason of invalid UTF-8": ([RawFrame(OP_CLOSE, b"\x03\xe8\xff")], 1007),
    "length field of 2**63-1": ([RawFrame(OP_TEXT, b"", length=2**63 - 1)], 1009),
    "length field with the top bit set": ([RawFrame(OP_BINARY, b"", length=2**64 - 1)], "any"),
}  # fmt: skip


async def fuzz_raw(port: int, frames: list[RawFrame], n: int) -> RawOutcome:
    ws = await RawWs.open(port)
    try:
        await ws.send(*frames)
        outcome = await ws.until_pong(f"raw-{n}")
    finally:
        ws.close()
    sent_closes = {f for f in frames if f.opcode == OP_CLOSE}
    echoes = {int.from_bytes(f.payload[:2], "big") if len(f.payload) >= 2 else None
              for f in sent_closes}  # fmt: skip
    problems = error_problems(Answer(outcome.frames))
    if outcome.eof and not sent_closes:
        problems.append("the hub dropped the connection without a close frame")
    if outcome.closed and outcome.close not in BAD_INPUT_CLOSES | echoes:
        problems.append(f"closed with {outcome.close}")
    assert not problems, f"after {frames}: {problems}; {outcome}"
    return outcome


def test_frame_level_fuzz(live: Callable[..., LiveHub], runner: asyncio.Runner) -> None:
    """Frames written by hand after a manual upgrade: invalid UTF-8 at the frame level,
    bad opcodes, reserved bits, unmasked frames, lying lengths, odd close frames."""
    hub = live()
    count = itertools.count()

    def fuzz(witness: Witness, ledger: Ledger) -> None:
        failures = []
        for name, (frames, code) in RAW_CASES.items():
            outcome = runner.run(fuzz_raw(hub.port, frames, next(count)))
            if code == "open":
                wrong = outcome.closed or outcome.eof
            else:
                wrong = code != "any" and outcome.close != code
            if wrong:
                failures.append(f"{name}: expected {code}, got {outcome}")
        assert not failures, "\n".join(failures)

        @settings(FUZZ, max_examples=100)
        @given(frames=st.lists(raw_frames, min_size=1, max_size=4))
        @example(frames=[RawFrame(OP_TEXT, b"\xff")])
        def one(frames: list[RawFrame]) -> None:
            runner.run(fuzz_raw(hub.port, frames, next(count)))

        one()
        runner.run(witness.round_trip())

    run_fuzz(runner, hub, fuzz)


# --------------------------------------------------------------------------- HTTP


@dataclass
class HttpAnswer:
    status: int
    headers: dict[str, str]
    body: bytes

    def __repr__(self) -> str:
        return f"HTTP {self.status} {self.headers.get('content-type', '')} {short(self.body)}"


def parse_http(data: bytes) -> HttpAnswer | None:
    """The final answer in what the shim sent (interim 1xx answers skipped); None when
    its head is not complete yet."""
    while True:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if not sep:
            return None
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        if not 100 <= status < 200:
            break
        data = rest
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return HttpAnswer(status, headers, rest)


def complete(answer: HttpAnswer | None) -> bool:
    length = answer.headers.get("content-length") if answer is not None else None
    return answer is not None and length is not None and len(answer.body) >= int(length)


async def http_raw(
    port: int, request: bytes, *, eof: bool = False, timeout: float = ANSWER_TIMEOUT
) -> HttpAnswer | None:
    """Send raw bytes to the shim and read its answer (up to its Content-Length, else up
    to the end of the connection: requests ask ``Connection: close``); None when it
    closed without answering. ``eof``: half-close after sending, as a client that gives
    up mid-request does."""
    data = b""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        with contextlib.suppress(ConnectionError):
            writer.write(request)
            await writer.drain()
            if eof:
                writer.write_eof()
        async with asyncio.timeout(timeout):
            with contextlib.suppress(ConnectionError):
                while not complete(parse_http(data)) and (chunk := await reader.read(65536)):
                    data += chunk
    except TimeoutError:
        raise AssertionError(
            f"no complete answer within {timeout}s to {short(request)}; got {short(data)}"
        ) from None
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    answer = parse_http(data)
    assert answer is not None or not data, f"truncated HTTP answer: {short(data)}"
    return answer


def http_problem(answer: HttpAnswer | None, *, wellformed: bool, head: bool = False) -> str | None:
    """What is wrong with an answer of the shim (None: nothing)."""
    if answer is None:
        return "closed without an answer"
    if answer.status >= 500:
        return f"answered {answer!r}"
    if not answer.headers.get("content-type", "").startswith("application/json"):
        if wellformed or answer.status != 400:  # aiohttp's parser answers a plain 400
            return f"not a JSON answer: {answer!r}"
        return None
    if head:
        return None
    try:
        data = json.loads(answer.body)
    except ValueError:
        return f"invalid JSON: {answer!r}"
    if answer.status >= 400:
        message = data.get("error") if isinstance(data, dict) else None
        if not (isinstance(message, str) and message) or one_line(message) is not None:
            return f"not an {{'error': one sentence}} body: {answer!r}"
    elif not isinstance(data, dict):
        return f"not a JSON object: {answer!r}"
    return None


def post_send(body: bytes, *, chunk: int | None = None, extra: str = "") -> bytes:
    """A ``POST /send`` with ``body``, by Content-Length or in chunks of ``chunk`` bytes."""
    head = f"POST /send HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{extra}"
    if chunk is None:
        return f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body
    pieces = [body[i : i + chunk] for i in range(0, len(body), chunk)]
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces)
    return f"{head}Transfer-Encoding: chunked\r\n\r\n".encode() + chunks + b"0\r\n\r\n"


def record_send(
    answer: HttpAnswer | None, body: bytes, ledger: Ledger, sent: tuple[str, str] | None = None
) -> None:
    """A 200 from ``/send`` is an acknowledged event: remember it."""
    if answer is None or answer.status != 200:
        return
    if sent is None:
        with recursion_room():
            request = json.loads(body)
        sent = (request["from"], request["msg"])
    data = json.loads(answer.body)
    assert data["ok"] is True and isinstance(data["seq"], int), data
    ledger.add(data["seq"], Acked(sent[0], sent[1]))


send_bodies = st.one_of(
    st.fixed_dictionaries(
        {"from": st.sampled_from(("h1", "witness")) | any_text | json_values,
         "to": st.sampled_from(("sink", "witness", "*")) | any_text | json_values,
         "msg": plain_text | any_text | json_values},
        optional={"channel": st.sampled_from(("default", "fuzz")) | json_values, "x": json_values},
    ).map(lambda d: dump(d).encode()),
    json_values.map(lambda v: dump(v).encode()),
    st.sampled_from(NOT_JSON).map(str.encode),
    st.binary(max_size=300),
    st.tuples(plain_text, st.binary(min_size=1, max_size=4)).map(
        lambda t: b'{"from":"h1","to":"sink","msg":"' + t[0].encode() + t[1] + b'"}'
    ),
)  # fmt: skip


def test_fuzzed_http_send_bodies(live: Callable[..., LiveHub], runner: asyncio.Runner) -> None:
    """POST /send with random bodies (random JSON, huge numbers, lone surrogates, invalid
    UTF-8), by Content-Length or chunked: 200 (then stored) or a JSON 4xx, never 500."""
    hub = live("--poll-timeout", "0.2")

    def fuzz(witness: Witness, ledger: Ledger) -> None:
        @settings(FUZZ, max_examples=100)
        @given(body=send_bodies, chunk=st.none() | st.integers(1, 64))
        def one(body: bytes, chunk: int | None) -> None:
            answer = runner.run(http_raw(hub.http_port, post_send(body, chunk=chunk)))
            problem = http_problem(answer, wellformed=True)
            assert problem is None, f"POST /send {short(body)}: {problem}"
            record_send(answer, body, ledger)

        one()
        runner.run(witness.round_trip())

    run_fuzz(runner, hub, fuzz)


METHODS = ("GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH")
PATHS = ("/send", "/recv", "/inbox", "/healthz", "/", "/send/", "//send", "/SEND", "/recv/../send",
         "/healthz/x", "/%73end", "/send%00", "/%ff%fe", "/%ed%a0%80", "/" + "a" * 2000, "*",
         "http://127.0.0.1/healthz")  # fmt: skip
QUERY_KEYS = ("to", "since", "block", "channel", "max", "from", "x")
QUERY_VALUES = ("witness", "sink", "*", "default", "0", "-1", "1e999", "-1e999", "nan", "inf",
                "1e308", "-1e308", "1_0", "0x10", "9" * 400, "", "true", "1", "yes", "no",
                " 1 ", "0.5")  # fmt: skip
safe_token = st.text(string.ascii_letters + string.digits + "-_.~", max_size=12)
query_parts = st.tuples(
    st.sampled_from(QUERY_KEYS).map(str.encode) | st.binary(max_size=6),
    st.sampled_from(QUERY_VALUES).map(str.encode) | st.binary(max_size=12),
).map(lambda kv: f"{quote_from_bytes(kv[0])}={quote_from_bytes(kv[1])}")
header_names = st.sampled_from(
    ("Accept", "X-A", "Content-Type", "Expect", "Upgrade", "Origin", "Authorization", "Range")
) | safe_token.filter(bool)
header_values = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)
odd_header_values = st.binary(max_size=20).filter(lambda b: b"\r" not in b and b"\n" not in b)


@dataclass(frozen=True)
class FuzzedRequest:
    data: bytes
    wellformed: bool
    head: bool

    def __repr__(self) -> str:
        return f"FuzzedRequest({short(self.data, 3000)}, wellformed={self.wellformed})"


@st.composite
def http_requests(draw: st.DrawFn) -> FuzzedRequest:
    """A request line, headers and maybe a body, mostly well-formed, sometimes not."""
    wellformed = True
    odd_methods = ("BREW", "get", "G ET", "", "CONNECT", "TRACE")
    method = draw(st.sampled_from(METHODS) | st.sampled_from(odd_methods))
    if method not in METHODS:
        wellformed = False
    path = draw(st.sampled_from(PATHS) | safe_token.map(lambda t: "/" + t))
    query = "&".join(draw(st.lists(query_parts, max_size=5)))
    target = path + ("?" + query if query or draw(st.booleans()) else "")
    if path == "*" and (method != "OPTIONS" or target != "*"):
        wellformed = False  # the asterisk form is OPTIONS * alone
    version = draw(st.sampled_from(("HTTP/1.1",) * 6 + ("HTTP/1.0", "HTTP/2.0", "HTTP/9.9", "")))
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        wellformed = False
    lines = [f"{method} {target} {version}".rstrip().encode()]
    if draw(st.integers(0, 9)):
        lines.append(b"Host: 127.0.0.1")
    else:
        wellformed = False
    seen = {"host", "connection", "content-length", "transfer-encoding"}
    for name, value in draw(st.lists(st.tuples(header_names, header_values), max_size=3)):
        if name.lower() in seen:
            wellformed = False  # aiohttp refuses a repeated singleton header
        seen.add(name.lower())
        lines.append(f"{name}: {value}".encode())
    if draw(st.integers(0, 5)) == 0:
        lines.append(b"X-Odd: " + draw(odd_header_values))
        wellformed = False
    lines.append(b"Connection: close")
    body = draw(st.binary(max_size=200)) if draw(st.booleans()) else b""
    framing = draw(st.sampled_from(("length", "length", "chunked", "none", "short", "bad-chunk")))
    if framing == "length":
        lines.append(f"Content-Length: {len(body)}".encode())
    elif framing == "chunked":
        lines.append(b"Transfer-Encoding: chunked")
        body = (b"%x\r\n%s\r\n" % (len(body), body) if body else b"") + b"0\r\n\r\n"
    elif framing == "short" and body:
        lines.append(f"Content-Length: {len(body) // 2}".encode())  # the rest: garbage
        wellformed = False
    elif framing == "bad-chunk":
        lines.append(b"Transfer-Encoding: chunked")
        body = b"zz\r\n" + body + b"\r\n0\r\n\r\n"
        wellformed = False
    else:
        body = b""
    return FuzzedRequest(b"\r\n".join(lines) + b"\r\n\r\n" + body, wellformed, method == "HEAD")


def test_fuzzed_http_requests(live: Callable[..., LiveHub], runner: asyncio.Runner) -> None:
    """Random methods, paths, query strings (invalid UTF-8 escapes, huge and non-finite
    numbers), versions, headers and framings: JSON answers below 500, or aiohttp's own
    plain 400 for what does not parse."""
    hub = live("--poll-timeout", "0.2")

    def fuzz(witness: Witness, ledger: Ledger) -> None:
        @settings(FUZZ, max_examples=150)
        @given(request=http_requests())
        @example(request=FuzzedRequest(b"GET /healthz HTTP/1.0\r\n\r\n", True, False))
        def one(request: FuzzedRequest) -> None:
            answer = runner.run(http_raw(hub.http_port, request.data))
            problem = http_problem(answer, wellformed=request.wellformed, head=request.head)
            assert problem is None, f"{request!r}: {problem}"

        one()
        runner.run(witness.round_trip())

    run_fuzz(runner, hub, fuzz)


@dataclass(frozen=True)
class HttpCase:
    """A hand-picked request and the statuses accepted for it.

    ``mode``: ``normal``; ``early`` (only the headers are sent: the answer must come
    without the body); ``eof`` (the client half-closes after sending: no answer is fine).
    ``sent``: (from, msg) stored when the answer is 200."""

    name: str
    request: bytes
    statuses: frozenset[int]
    mode: str = "normal"
    wellformed: bool = True
    sent: tuple[str, str] | None = None
    may_reset: bool = False  # the shim may close before the client reads its answer


def http_cases(max_body: int) -> list[HttpCase]:
    deep = 10_000
    s400, s200 = frozenset({400}), frozenset({200})

    def send(body: bytes | str) -> bytes:
        return post_send(body.encode() if isinstance(body, str) else body)

    def get(target: bytes) -> bytes:
        return b"GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n" % target

    def headers_only(length: str, extra: str = "") -> bytes:
        return (f"POST /send HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{extra}"
                f"Content-Length: {length}\r\n\r\n").encode()  # fmt: skip

    prefix = b'{"from":"h1","to":"sink","msg":"'
    fill = b"x" * (max_body - len(prefix) - 2)
    valid = b'{"from":"h1","to":"sink","msg":"short"}'
    return [
        HttpCase("array nested 10,000 deep", send("[" * deep + "]" * deep), s400),
        HttpCase("object nested 10,000 deep", send(str(deep_object(deep))), s400),
        HttpCase("msg nested 10,000 deep",
                 send('{"from":"h1","to":"sink","msg":' + deep_array(deep) + "}"), s400),
        HttpCase("unknown field nested 10,000 deep",
                 send('{"from":"h1","to":"sink","msg":"deep","x":' + deep_array(deep) + "}"),
                 frozenset({200, 400}), sent=("h1", "deep")),
        HttpCase("body of exactly max_body bytes", send(prefix + fill + b'"}'), s200,
                 sent=("h1", fill.decode())),
        HttpCase("body one byte over max_body", send(prefix + fill + b'x"}'), frozenset({413}),
                 may_reset=True),
        HttpCase("over max_body: refused from Content-Length", headers_only(str(max_body + 1)),
                 frozenset({413}), mode="early"),
        HttpCase("over max_body with Expect: 100-continue",
                 headers_only(str(max_body + 1), "Expect: 100-continue\r\n"), frozenset({413}),
                 mode="early"),
        HttpCase("over max_body, chunked", post_send(prefix + fill + b'x"}', chunk=4096),
                 frozenset({413}), may_reset=True),
        HttpCase("Content-Length 2**62", headers_only(str(2**62)), frozenset({413}), mode="early"),
        HttpCase("Content-Length over 64 bits", headers_only("9" * 30), s400, mode="early",
                 wellformed=False),
        HttpCase("Content-Length -1", headers_only("-1"), s400, mode="early", wellformed=False),
        HttpCase("two Content-Lengths", post_send(valid, extra="Content-Length: 3\r\n"), s400,
                 wellformed=False),
        HttpCase("Content-Length and chunked",
                 post_send(valid, chunk=8, extra=f"Content-Length: {len(valid)}\r\n"),
                 s400, wellformed=False),
        HttpCase("Content-Length shorter than the body",  # the rest is a bad next request
                 headers_only("10") + valid, s400, wellformed=False),
        HttpCase("body cut short by the client's EOF", headers_only("100") + valid[:20],
                 frozenset({400, 408}), mode="eof"),
        HttpCase("chunked body cut short by the client's EOF",
                 post_send(valid, chunk=8)[:-20], frozenset({400, 408}), mode="eof"),
        HttpCase("headers cut short by the client's EOF",
                 b"POST /send HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Le", s400, mode="eof",
                 wellformed=False),
        HttpCase("msg of invalid UTF-8", send(prefix + b'\xff\xfe"}'), s400),
        HttpCase("msg with an encoded surrogate", send(prefix + b'\xed\xa0\x80"}'), s400),
        HttpCase("msg with a lone surrogate escape", send(prefix + b'\\ud800"}'), s400),
        HttpCase("msg with a surrogate pair escape", send(prefix + b'\\ud83d\\ude00"}'), s200,
                 sent=("h1", "\U0001f600")),
        HttpCase("msg with NUL bytes", send(prefix + b'a\\u0000b"}'), s200, sent=("h1", "a\x00b")),
        HttpCase("msg 10**400",
                 send(b'{"from":"h1","to":"sink","msg":1' + b"0" * 400 + b"}"), s400),
        HttpCase("msg 1e999", send(b'{"from":"h1","to":"sink","msg":1e999}'), s400),
        HttpCase("msg NaN", send(b'{"from":"h1","to":"sink","msg":NaN}'), s400),
        HttpCase("from 2**64", send(b'{"from":18446744073709551616,"to":"sink","msg":"x"}'), s400),
        HttpCase("channel 1e999",
                 send(b'{"from":"h1","to":"sink","msg":"x","channel":1e999}'), s400),
        HttpCase("empty body", send(b""), s400),
        HttpCase("body null", send(b"null"), s400),
        HttpCase("BOM before the body", send(b"\xef\xbb\xbf" + valid), frozenset({200, 400}),
                 sent=("h1", "short")),
        HttpCase("/recv since 1e999",
                 get(b"/recv?to=sink&since=1e999"), s400),
        HttpCase("/recv max of 400 digits",
                 get(b"/recv?to=sink&max=" + b"9" * 400), s400),
        HttpCase("/recv to of invalid UTF-8 escapes",
                 get(b"/recv?to=%ff%fe"), s400),
        HttpCase("/recv channel of a lone surrogate",
                 get(b"/recv?to=sink&channel=%ed%a0%80"), s400),
        HttpCase("unknown path of invalid UTF-8 escapes",
                 get(b"/%ff%fe"), frozenset({404})),
        HttpCase("query over 8 KiB",
                 get(b"/recv?" + b"a=1&" * 3000),
                 frozenset({400, 414}), wellformed=False),
        HttpCase("TLS hello on the HTTP port", b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",
                 s400, wellformed=False),
    ]  # fmt: skip


async def run_http_cases(hub: LiveHub, cases: list[HttpCase], ledger: Ledger) -> list[str]:
    failures = []
    for case in cases:
        try:
            answer = await http_raw(hub.http_port, case.request, eof=case.mode == "eof")
        except AssertionError as err:
            failures.append(f"{case.name}: {err}")
            continue
        if answer is None and (case.mode == "eof" or case.may_reset):
            continue
        problem = http_problem(answer, wellformed=case.wellformed)
        if problem is None and answer is not None and answer.status not in case.statuses:
            problem = f"expected {sorted(case.statuses)}, got {answer!r}"
        if problem is not None:
            failures.append(f"{case.name}: {problem}")
            continue
        body = case.request.partition(b"\r\n\r\n")[2]
        record_send(answer, body, ledger, case.sent)
    return failures


def test_edge_http_requests(live: Callable[..., LiveHub], runner: asyncio.Runner) -> None:
    """Hand-picked requests to the shim: deep nesting, bodies at and over max_body with
    and without Content-Length, lying lengths, cut-short requests, odd strings."""
    hub = live("--poll-timeout", "0.2")
    failures: list[str] = []

    def fuzz(witness: Witness, ledger: Ledger) -> None:
        cases = http_cases(witness.limits["max_body"])
        failures.extend(runner.run(run_http_cases(hub, cases, ledger)))
        runner.run(witness.round_trip())

    try:
        run_fuzz(runner, hub, fuzz)
    except AssertionError as err:
        failures.append(f"after the cases: {err}")
    assert not failures, f"{len(failures)} HTTP edge cases failed:\n" + "\n".join(failures)


# --------------------------------------------------------------------------- stalls

TRICKLE = 0.5  # seconds between the bytes of a trickling client


@dataclass
class Stall:
    """A connection that starts a request and never finishes it."""

    kind: str
    port: int
    sent: bytes = b""  # sent at once
    trickled: bytes = b""  # then a byte every TRICKLE seconds
    upgrade: bool = False  # a websocket upgrade first (the hub's close frame counts)
    dropped: float | None = None  # seconds after the start when the hub let go
    how: str = ""
    _writer: asyncio.StreamWriter | None = field(default=None, repr=False)

    async def run(self, start: float, deadline: float) -> None:
        """Open, send the partial request, trickle, and wait (until ``deadline``) for the
        hub to close the connection, or (websocket) to send its close frame."""
        reader, self._writer = await asyncio.open_connection("127.0.0.1", self.port)
        trickle: asyncio.Task[None] | None = None
        try:
            if self.upgrade:
                self._writer.write(RawWs.upgrade_request(self.port))
                async with asyncio.timeout(ANSWER_TIMEOUT):
                    head = await reader.readuntil(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 101 "), head
            self._writer.write(self.sent)
            trickle = asyncio.create_task(self._trickle(deadline))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                    self.how = await self._until_let_go(reader)
                    self.dropped = time.monotonic() - start
        finally:
            if trickle is not None:
                trickle.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await trickle
            self._writer.close()

    async def _trickle(self, deadline: float) -> None:
        assert self._writer is not None
        with contextlib.suppress(ConnectionError):
            for byte in self.trickled:
                if time.monotonic() > deadline:
                    return
                self._writer.write(bytes([byte]))
                await self._writer.drain()
                await asyncio.sleep(TRICKLE)  # pacing, not waiting for a condition

    async def _until_let_go(self, reader: asyncio.StreamReader) -> str:
        data = b""
        try:
            while chunk := await reader.read(65536):
                data += chunk
                if self.upgrade and len(data) >= 4 and data[0] & 0x0F == OP_CLOSE:
                    return f"close frame {int.from_bytes(data[2:4], 'big')}"
        except ConnectionError as err:
            return f"reset ({type(err).__name__})"
        return f"EOF after {short(data, 80)}" if data else "EOF"


def stalls(ws_port: int, http_port: int, each: int = 3) -> list[Stall]:
    post = b"POST /send HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 60\r\n\r\n"
    kinds = [
        Stall("http: nothing sent", http_port),
        Stall("http: half a request line", http_port, b"POST /se"),
        Stall("http: headers cut short", http_port, post[:40]),
        Stall("http: headers, part of the body", http_port, post + b'{"from":"h1",'),
        Stall("http: headers trickled", http_port, post[:20], post[20:] + b"X-Slow: " + b"a" * 60),
        Stall("http: body trickled", http_port, post,
              b'{"from":"h1","to":"sink","msg":"' + b"a" * 40),
        Stall("ws: nothing sent", ws_port),
        Stall("ws: half an upgrade request", ws_port, RawWs.upgrade_request(ws_port)[:60]),
        Stall("ws: upgrade request trickled", ws_port, b"GET / HTTP/1.1\r\n",
              RawWs.upgrade_request(ws_port)[16:]),
        Stall("ws: upgraded, no hello", ws_port, upgrade=True),
        Stall("ws: upgraded, half a hello frame", ws_port,
              text_frame({"op": "hello", "name": "stall"}).encode()[:12], upgrade=True),
        Stall("ws: upgraded, hello fragments trickled", ws_port,
              RawFrame(OP_TEXT, b'{"op":"hello",', fin=False).encode(),
              b"".join(RawFrame(OP_CONT, b" ", fin=False).encode() for _ in range(4)),
              upgrade=True),
    ]  # fmt: skip
    return [replace(s) for s in kinds for _ in range(each)]


async def stall_scenario(hub: LiveHub) -> None:
    witness = await Witness.connect(hub.url)
    ledger = Ledger()
    try:
        for _ in range(PRE_EVENTS):
            await witness.round_trip()
        start = time.monotonic()
        deadline = start + HELLO_TIMEOUT + DROP_GRACE
        stalled = stalls(hub.port, hub.http_port)
        tasks = [asyncio.create_task(s.run(start, deadline)) for s in stalled]
        try:
            # while they stall, everyone else is served promptly
            for _ in range(3):
                took = await witness.round_trip(ROUND_TRIP)
                assert took < ROUND_TRIP, took
            timeout = aiohttp.ClientTimeout(total=ROUND_TRIP)
            async with aiohttp.ClientSession(timeout=timeout) as http:
                seq = await http_send(http, hub, "h1", "witness", "during the stall")
                ledger.add(seq, Acked("h1", "during the stall"))
                async with http.get(f"{hub.http_url}/healthz") as resp:
                    assert resp.status == 200
            fresh = await Witness.connect(hub.url, "fresh-stall")
            try:
                await fresh.round_trip(ROUND_TRIP)
            finally:
                await fresh.close()
            ledger.update(fresh.acked)
        finally:
            await asyncio.gather(*tasks, return_exceptions=True)
        errors = [f"{s.kind}: {t.exception()!r}" for s, t in zip(stalled, tasks, strict=True)
                  if t.exception() is not None]  # fmt: skip
        assert not errors, "stalling clients failed:\n" + "\n".join(errors)
        await assert_still_serving(hub, witness, ledger)
    finally:
        await witness.close()
    late = HELLO_TIMEOUT + DROP_GRACE
    report = [f"{s.kind}: " + (f"dropped after {s.dropped:.1f}s ({s.how})" if s.dropped is not None
              else f"still open after {late:g}s") for s in stalled]  # fmt: skip
    assert all(s.dropped is not None for s in stalled), (
        f"stalled connections not dropped within the handshake timeout ({HELLO_TIMEOUT:g}s) "
        f"+ {DROP_GRACE:g}s:\n" + "\n".join(sorted(set(report)))
    )


def test_stalled_partial_requests_are_dropped(
    live: Callable[..., LiveHub], runner: asyncio.Runner
) -> None:
    """18 HTTP and 18 websocket connections start a request and stall (or trickle it a
    byte at a time); meanwhile others are served promptly, and the hub drops every one
    of them within its handshake timeout."""
    hub = live(WSBUS_HELLO_TIMEOUT=f"{HELLO_TIMEOUT:g}")
    runner.run(stall_scenario(hub))
