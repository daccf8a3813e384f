"""File leases: the path rules and the book (no sockets), then live hubs."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

from wsbus import Client
from wsbus.errors import SendRefused
from wsbus.leasepaths import conflict, covers, normalize
from wsbus.leases import BOOK, KIND, MAX_HELD, MAX_PATHS, LeaseBook, ReleaseOp, ReserveOp
from wsbus.schema import Event

from .helpers import HubProcess
from .test_security import Tokens

# ---------------------------------------------------------------------------- paths


@pytest.mark.parametrize(
    ("given", "stored"),
    [("src/a.py", "src/a.py"), ("./src//parser/", "src/parser"), ("src/**", "src/**")],
)
def test_paths_are_normalized(given: str, stored: str) -> None:
    assert normalize(given) == stored


@pytest.mark.parametrize(
    ("path", "says"),
    [
        ("/etc/passwd", "is absolute"),
        ("src/../../x", "climbs out"),
        ("src/\x1b[2Ja", "control characters"),
        ("src\\a.py", "backslash"),
        ("./", "names nothing"),
    ],
)
def test_bad_paths_are_refused_with_the_reason(path: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        normalize(path)


@pytest.mark.parametrize(
    ("pattern", "path", "covered"),
    [
        ("src/parser/**", "src/parser/lexer.py", True),
        ("src/parser/**", "src/parser", True),
        ("src/parser/**", "src/parsers/x.py", False),
        ("src/*.py", "src/a.py", True),
        ("src/*.py", "src/x/a.py", False),
        ("src/**/*.py", "src/a.py", True),
        ("src/**/*.py", "src/x/y/a.py", True),
        ("src/parser", "src/parser/lexer.py", True),  # a directory
        ("src/parser", "src/parser2.py", False),
        ("src/[ab].py", "src/b.py", True),
        ("src/[!ab].py", "src/b.py", False),
        ("docs/?.md", "docs/a.md", True),
    ],
)
def test_covers(pattern: str, path: str, covered: bool) -> None:
    assert covers(pattern, path) is covered


@pytest.mark.parametrize(
    ("a", "b", "overlap"),
    [
        ("src/parser/**", "src/parser/lexer.py", True),
        ("src/**", "src/*.py", True),
        ("src/**/*.py", "docs/x.md", False),
        ("src/*.py", "src/x/**", False),
        ("src/a.py", "src/a.py", True),
        ("src/a.py", "src/b.py", False),
        ("src", "src/a.py", True),
        ("*.md", "README.md", True),
        ("*.md", "src/a.py", False),
    ],
)
def test_the_overlap_rule_is_symmetric(a: str, b: str, overlap: bool) -> None:
    assert conflict(a, b) is overlap
    assert conflict(b, a) is overlap


# ---------------------------------------------------------------------------- the book

_seqs = itertools.count(1)


def lease_event(holder: str, op: ReserveOp | ReleaseOp, ts: float, channel: str = "dev") -> Event:
    return Event(
        seq=next(_seqs),
        ts=ts,
        channel=channel,
        from_=holder,
        to=BOOK,
        body="",
        kind=KIND,
        meta={"lease": msgspec.to_builtins(op)},
        ref=f"r{time.monotonic_ns()}",
    )


def test_exclusive_conflicts_and_shared_readers_share() -> None:
    book = LeaseBook()
    a = book.apply(lease_event("claude", ReserveOp(["src/**"], 60, reason="refactor"), 100.0))
    assert a is not None and a.lease is not None and a.lease.until == 160.0
    b = book.apply(lease_event("codex", ReserveOp(["src/a.py"], 60), 101.0))
    assert b is not None and b.lease is None and [c.holder for c in b.conflicts] == ["claude"]
    c = book.apply(lease_event("codex", ReserveOp(["docs/**"], 60, exclusive=False), 102.0))
    d = book.apply(lease_event("gemini", ReserveOp(["docs/x.md"], 60, exclusive=False), 103.0))
    assert c is not None and c.lease is not None and d is not None and d.lease is not None
    e = book.apply(lease_event("aider", ReserveOp(["docs/x.md"], 60), 104.0))
    assert e is not None and {x.holder for x in e.conflicts} == {"codex", "gemini"}
    # the holder's own leases never conflict
    f = book.apply(lease_event("claude", ReserveOp(["src/a.py"], 60), 105.0))
    assert f is not None and f.lease is not None


def test_two_reservations_that_raced_are_judged_in_log_order() -> None:
    first, second = (
        lease_event("claude", ReserveOp(["src/x.py"], 60), 100.0),
        lease_event("codex", ReserveOp(["src/**"], 60), 100.0),
    )
    for book in (LeaseBook(), LeaseBook()):  # two hubs: the same verdicts
        won = book.apply(first)
        lost = book.apply(second)
        assert won is not None and won.lease is not None
        assert lost is not None and lost.lease is None
        assert book.apply(first) is None  # applied once


def test_leases_expire_by_the_events_time_and_renew_in_place() -> None:
    book = LeaseBook()
    book.apply(lease_event("claude", ReserveOp(["src/**"], 10), 100.0))
    late = book.apply(lease_event("codex", ReserveOp(["src/a.py"], 10), 110.5))
    assert late is not None and late.lease is not None  # claude's ended at 110
    again = book.apply(lease_event("codex", ReserveOp(["src/a.py"], 30), 112.0))
    assert again is not None and again.renewed and again.lease is not None
    assert [x.id for x in book.in_force("dev", 113.0)] == [again.lease.id]


def test_release_by_id_by_paths_and_all_ends_only_the_senders_leases() -> None:
    book = LeaseBook()
    ids = []
    for paths in (["a"], ["b"], ["c"]):
        v = book.apply(lease_event("claude", ReserveOp(paths, 60), 100.0))
        assert v is not None and v.lease is not None
        ids.append(v.lease.id)
    book.apply(lease_event("codex", ReserveOp(["z"], 60), 100.0))
    stolen = book.apply(lease_event("codex", ReleaseOp(ids=[ids[0]]), 101.0))
    assert stolen is not None and stolen.released == []
    one = book.apply(lease_event("claude", ReleaseOp(ids=[ids[0]]), 101.0))
    assert one is not None and [x.id for x in one.released] == [ids[0]]
    by_path = book.apply(lease_event("claude", ReleaseOp(paths=["b"]), 101.0))
    assert by_path is not None and [x.paths for x in by_path.released] == [["b"]]
    rest = book.apply(lease_event("claude", ReleaseOp(), 101.0))
    assert rest is not None and [x.id for x in rest.released] == [ids[2]]
    assert [x.holder for x in book.in_force("dev", 102.0)] == ["codex"]


def test_events_that_are_not_lease_operations_change_nothing() -> None:
    book = LeaseBook()
    odd = lease_event("claude", ReserveOp(["a"], 60), 100.0)
    odd.meta = {"lease": {"op": "steal"}}
    skipped = book.apply(odd)
    assert skipped is not None and skipped.lease is None and skipped.limit
    plain = Event(seq=next(_seqs), ts=101.0, channel="dev", from_="x", to="*", body="hi")
    assert book.apply(plain) is None
    assert book.in_force("dev", 102.0) == []


# ---------------------------------------------------------------------------- live hubs


async def refused(call: Any) -> SendRefused:
    with pytest.raises(SendRefused) as err:
        await call
    return err.value


async def test_a_conflicting_reservation_is_refused_naming_holder_reason_and_end(
    hub: HubProcess,
) -> None:
    async with Client(hub.url, "claude") as claude, Client(hub.url, "codex") as codex:
        got = await claude.reserve(["src/parser/**"], 600, reason="refactoring the lexer")
        lease = got.lease
        assert (lease.holder, lease.paths, lease.exclusive) == ("claude", ["src/parser/**"], True)
        assert lease.until == pytest.approx(lease.since + 600)
        err = await refused(codex.reserve(["src/parser/lexer.py"], 60))
        assert err.code == "lease_conflict"
        assert "src/parser/** (exclusive, by claude; refactoring the lexer) until 20" in err.message
        shared = await codex.reserve(["docs/**"], 60, exclusive=False)
        listed = await codex.leases()
        assert [x.id for x in listed.leases] == [lease.id, shared.lease.id]
        assert [x.id for x in (await codex.leases(prefix="docs")).leases] == [shared.lease.id]
        # a resend of the same ref is the same lease, not a second one
        again = await claude.reserve(["x/**"], 60, ref="once")
        same = await claude.reserve(["x/**"], 60, ref="once")
        assert same.lease.id == again.lease.id
        assert len((await codex.leases()).leases) == 3


async def test_lease_events_are_not_delivered_as_messages(hub: HubProcess) -> None:
    async with Client(hub.url, "bob") as bob, Client(hub.url, "claude") as claude:
        await claude.reserve(["src/**"], 60)
        ok = await claude.send("bob", "after the lease")
        ev = await asyncio.wait_for(anext(bob.events()), 10)
        assert (ev.seq, ev.body) == (ok.seq, "after the lease")
        # the audit trail: history shows the lease event to those who may read it
        page = await claude.history(from_="claude")
        assert [(e.kind, e.to) for e in page.events] == [("lease", BOOK), ("agent", "bob")]


async def test_bad_paths_are_refused(hub: HubProcess) -> None:
    async with Client(hub.url, "claude") as claude:
        err = await refused(claude.reserve(["/etc/passwd"], 60))
        assert err.code == "bad_path" and "relative to the repository root" in err.message
        err = await refused(claude.reserve(["a"], 0.5))
        assert err.code == "invalid_frame"


async def test_leases_expire_and_are_released(hub: HubProcess) -> None:
    async with Client(hub.url, "claude") as claude, Client(hub.url, "codex") as codex:
        await claude.reserve(["a.py"], 1)
        await refused(codex.reserve(["a.py"], 60))

        async def takes() -> bool:
            try:
                await codex.reserve(["a.py"], 60)
            except SendRefused:
                return False
            return True

        deadline = time.monotonic() + 10
        while not await takes():
            assert time.monotonic() < deadline
            await asyncio.sleep(0.2)
        gone = await codex.release(paths=["a.py"])
        assert [x.paths for x in gone.leases] == [["a.py"]]
        assert (await claude.reserve(["a.py"], 60)).lease.holder == "claude"


async def test_leaving_the_roster_releases_a_names_leases(hub: HubProcess) -> None:
    async with Client(hub.url, "claude") as claude:
        await claude.register("default", "claude")
        await claude.reserve(["src/**"], 600)
        await claude.register("default", "claude", leave=True)

        async def released() -> bool:
            return not (await claude.leases()).leases

        deadline = time.monotonic() + 10
        while not await released():
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)


async def test_leases_survive_a_hub_restart(hub: HubProcess) -> None:
    async with Client(hub.url, "claude") as claude:
        lease = (await claude.reserve(["src/**"], 600, reason="big change")).lease
    hub.restart()  # SIGKILL
    async with Client(hub.url, "codex") as codex:
        assert [x.id for x in (await codex.leases()).leases] == [lease.id]
        err = await refused(codex.reserve(["src/main.py"], 60))
        assert "big change" in err.message


@pytest.fixture
def tokens(tmp_path: Path) -> Tokens:
    return Tokens(tmp_path / "tokens.json")


async def test_a_revoked_token_loses_its_leases(
    hub_factory: Callable[..., HubProcess], tokens: Tokens, env: dict[str, str]
) -> None:
    hub = hub_factory("--auth", str(tokens.path))
    async with Client(hub.url, token=tokens.alice) as alice:
        await alice.reserve(["src/**"], 600)
    async with Client(hub.url, token=tokens.bob) as bob:
        await refused(bob.reserve(["src/a.py"], 60))
        tokens.revoke(env, "alice")

        async def free() -> bool:
            return not (await bob.leases()).leases

        deadline = time.monotonic() + 15
        while not await free():
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        assert (await bob.reserve(["src/a.py"], 60)).lease.holder == "bob"


# ---------------------------------------------------------------------------- review 16


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("src/**/*.py", "src/parser/**"),
        ("src/*.py", "src/a.*"),
        ("src/*/tests/**", "src/parser/**"),
        ("**/*.py", "src/**"),
        ("*/config.yml", "app/**"),
        ("packages/*/src", "packages/web/src/index.ts"),
    ],
)
def test_patterns_that_share_a_file_always_conflict(a: str, b: str) -> None:
    assert conflict(a, b) and conflict(b, a)


def test_brackets_in_real_paths_are_leased_as_written() -> None:
    route = "app/[slug]/page.tsx"
    assert normalize(route) == route
    assert covers(route, route) and covers("app/[slug]", route)
    assert conflict(route, "app/**") and not conflict(route, "lib/**")


@pytest.mark.parametrize("pattern", ["x/[z-a]", "x/[!]", "x/[^]", "x/[", "[]]", "a[b"])
def test_odd_classes_never_raise(pattern: str) -> None:
    normalize(pattern)
    covers(pattern, "x/y")
    conflict(pattern, "x/**")
    conflict(pattern, "*")


def test_hostile_patterns_are_bounded_and_cheap() -> None:
    with pytest.raises(ValueError, match="more than 16 wildcards"):
        normalize("**" * 14 + "Q")
    with pytest.raises(ValueError, match="more than 32 parts"):
        normalize("/".join("a" * 40))
    assert normalize("a/**/**/**/b") == "a/**/b"
    worst = "/".join(["**", "*a*a*a*a*a*a*Q"] * 2)
    path = "/".join(["aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"] * 31)
    began = time.perf_counter()
    for _ in range(100):
        covers(worst, path)
        conflict(worst, path)
    assert time.perf_counter() - began < 1.0  # linear: a regex would take minutes


def test_reading_the_book_never_changes_a_verdict() -> None:
    """A hub that was asked for the leases at a later time still judges an event by
    its own ts, like every other hub."""
    read, unread = LeaseBook(), LeaseBook()
    held = lease_event("claude", ReserveOp(["src/**"], 10), 100.0)
    for book in (read, unread):
        book.apply(held)
    assert read.in_force("dev", 200.0) == []  # read after it ended
    late = lease_event("codex", ReserveOp(["src/a.py"], 10), 105.0)  # stamped before
    verdicts = [book.apply(late) for book in (read, unread)]
    assert all(v is not None and v.lease is None and v.conflicts for v in verdicts)


def test_the_book_is_bounded_per_holder_and_per_channel() -> None:
    book = LeaseBook()
    for i in range(MAX_HELD):
        v = book.apply(lease_event("claude", ReserveOp([f"f{i}"], 60), 100.0))
        assert v is not None and v.lease is not None
    over = book.apply(lease_event("claude", ReserveOp(["one-more"], 60), 100.0))
    assert over is not None and over.lease is None and "64 leases" in (over.limit or "")
    renew = book.apply(lease_event("claude", ReserveOp(["f0"], 60), 100.0))
    assert renew is not None and renew.renewed  # a renewal always fits
    paths = [f"g{i}/x" for i in range(32)]
    holders = (MAX_PATHS - MAX_HELD) // 32
    for h in range(holders):
        v = book.apply(lease_event(f"agent{h}", ReserveOp(paths, 60, exclusive=False), 100.0))
        assert v is not None and v.lease is not None, v
    full = book.apply(lease_event("late", ReserveOp(paths, 60, exclusive=False), 100.0))
    assert full is not None and full.lease is None and "256" in (full.limit or "")


def test_a_release_naming_an_id_twice_is_applied_once() -> None:
    book = LeaseBook()
    v = book.apply(lease_event("claude", ReserveOp(["a"], 60), 100.0))
    assert v is not None and v.lease is not None
    done = book.apply(lease_event("claude", ReleaseOp(ids=[v.lease.id, v.lease.id]), 101.0))
    assert done is not None and [x.id for x in done.released] == [v.lease.id]


async def test_hostile_leases_leave_the_hub_serving_and_restartable(hub: HubProcess) -> None:
    async with Client(hub.url, "mallory") as mallory, Client(hub.url, "claude") as claude:
        for pattern in ("x/[z-a]", "x/[!]", "*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*Q"):
            await mallory.reserve([pattern], 600)
        lease = (await mallory.reserve(["y"], 600)).lease
        await mallory.release(ids=[lease.id, lease.id])
        err = await refused(mallory.reserve(["**" * 14 + "Q"], 60))
        assert err.code == "bad_path"
        began = time.monotonic()
        await claude.reserve(["src/**", "x/q"], 60)
        await claude.ping()
        assert time.monotonic() - began < 2
        err = await refused(mallory.reserve(["r"], 60, reason="\x1b]0;owned\x07"))
        assert err.code == "invalid_frame" and "control characters" in err.message
    hub.restart()
    async with Client(hub.url, "claude") as claude:
        holders = sorted({x.holder for x in (await claude.leases()).leases})
        assert holders == ["claude", "mallory"]


async def test_lease_refs_and_message_refs_do_not_collide(hub: HubProcess) -> None:
    async with Client(hub.url, "claude") as claude:
        await claude.reserve(["a"], 60, ref="same")
        ok = await claude.send("bob", "stored all the same", ref="same")
        assert not ok.duplicate
        again = await claude.reserve(["a"], 60, ref="same")  # a resend: the same lease
        assert again.lease.paths == ["a"]


async def test_the_prefix_lists_the_leases_that_overlap_it(hub: HubProcess) -> None:
    async with Client(hub.url, "claude") as claude:
        wide = (await claude.reserve(["src/**"], 60)).lease
        await claude.reserve(["docs/a.md"], 60)
        assert [x.id for x in (await claude.leases(prefix="./src/parser")).leases] == [wide.id]


async def test_retention_keeps_the_lease_events_of_leases_in_force(
    hub_factory: Callable[..., HubProcess],
) -> None:
    hub = hub_factory("--retention-count", "2")
    async with Client(hub.url, "claude") as claude:
        lease = (await claude.reserve(["src/**"], 600)).lease
        for i in range(5):
            await claude.send("bob", f"m{i}")
    hub.restart()  # retention runs as the hub starts
    async with Client(hub.url, "codex") as codex:
        assert [x.id for x in (await codex.leases()).leases] == [lease.id]
        assert (await refused(codex.reserve(["src/a.py"], 60))).code == "lease_conflict"


async def test_the_legacy_shim_does_not_count_lease_events(hub: HubProcess) -> None:
    import aiohttp

    async with Client(hub.url, "claude") as claude:
        await claude.reserve(["src/**"], 60)
        await claude.send("bob", "hi")
    async with aiohttp.ClientSession() as http, http.get(hub.http_url + "/inbox") as r:
        inbox = await r.json()
    assert inbox["recipients"] == {"default": {"bob": 1}}
