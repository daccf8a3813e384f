"""The operator's dashboard (``/ui/`` on the hub's HTTP port) in a real Chromium.

Each test starts real hubs (``hub_factory``: SQLite, or NATS with
WSBUS_TEST_ENGINE=nats), real clients (``wsbus.Client`` on a thread's loop, ``wsbus
listen`` and ``wsbus send`` processes) and one page per browser context; waits are
Playwright's ``expect`` with timeouts, never sleeps. Every test ends with
``assert_clean()``: no console error, uncaught exception, failed request or
Content-Security-Policy violation. Screenshots: the test's tmp dir (and
$WSBUS_TEST_ARTIFACTS), printed and recorded as the test's ``screenshot`` property.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import expect

from wsbus.auth import TokenStore
from wsbus.schema import Event, Receipt

from .browser import (  # noqa: F401 (fixtures)
    Bus,
    Dashboard,
    browser_fixture,
    bus_fixture,
    dashboards_fixture,
)
from .helpers import HubProcess, wait_for

Dashboards = Callable[[HubProcess], Dashboard]

# Chromium logs a refused websocket upgrade as a console error: expected while a hub is down.
HUB_DOWN = ("WebSocket connection to",)


def wsbus_cmd(env: dict[str, str], *args: str, timeout: float = 20) -> str:
    """Run ``wsbus ARGS`` to completion; its stdout."""
    done = subprocess.run(
        [sys.executable, "-m", "wsbus", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def hub_id(hub: HubProcess) -> str:
    """The id a hub printed when it started (its store's, or its bus's on NATS)."""
    m = re.search(r"wsbus hub (\S+) listening", "".join(hub.output))
    assert m, hub.output
    return m.group(1)


class Listener:
    """A ``wsbus listen NAME --json`` process; ``lines``: its output so far."""

    def __init__(self, env: dict[str, str], url: str, name: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "wsbus", "listen", name, "--url", url, "--json", "--no-cursor"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def events(self) -> list[dict[str, object]]:
        found = []
        for line in list(self.lines):
            if line.startswith("{"):
                found.append(json.loads(line))
        return found

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.reader.join(10)


@pytest.fixture
def listeners(env: dict[str, str]) -> Iterator[Callable[[str, str], Listener]]:
    made: list[Listener] = []

    def make(url: str, name: str) -> Listener:
        made.append(Listener(env, url, name))
        return made[-1]

    yield make
    for listener in made:
        listener.stop()


# --------------------------------------------------------------------------- the page


def test_the_page_loads_under_its_policy(hub: HubProcess, dashboards: Dashboards) -> None:
    # the headers the page is written for (no inline code, its own origin only)
    with urllib.request.urlopen(f"{hub.http_url}/ui/") as resp:
        csp = resp.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "style-src 'self'" in csp
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
    dash = dashboards(hub).open().connected()
    expect(dash.by("conn-state")).to_contain_text("connected as operator")
    expect(dash.by("hub-info")).to_contain_text(f"hub {hub_id(hub)}")
    expect(dash.member("operator")).to_have_attribute("data-state", "online")
    # styles applied (not blocked): the sidebar is laid out as a grid column
    layout = dash.page.locator("main").evaluate("e => getComputedStyle(e).display")
    assert layout == "grid"
    # a wrong field is said at once and the connection goes on
    dash.connect(channels="default, not a channel!")
    expect(dash.by("conn-error")).to_contain_text('"not a channel!" is not a channel name')
    expect(dash.by("conn-state")).to_have_attribute("data-session", "1")
    dash.expect_state("connected")
    dash.assert_clean()


def test_an_agent_comes_online_and_goes_down(
    hub: HubProcess, dashboards: Dashboards, bus: Bus
) -> None:
    bob = bus.agent(hub.url, "bob")
    bus.run(bob.client.reserve(["src/parser/**"], 600, reason="refactoring the lexer"))
    dash = dashboards(hub).open().connected()
    alice = bus.agent(hub.url, "alice", model="claude-opus-4", role="reviewer", host="devbox")
    member = dash.member("alice")
    expect(member).to_have_attribute("data-state", "online")
    expect(member).to_contain_text("claude-opus-4 · reviewer · devbox")
    alice.close()
    expect(member).to_have_attribute("data-state", "offline")
    expect(member).to_contain_text("down since")
    expect(dash.member("bob")).to_have_attribute("data-state", "online")
    # the leases in force on the channel, under its members
    lease = dash.page.locator('[data-testid="roster"][data-channel="default"]').get_by_test_id(
        "lease"
    )
    expect(lease).to_have_attribute("data-holder", "bob")
    expect(lease).to_contain_text("src/parser/**")
    expect(lease).to_contain_text("bob · exclusive")
    expect(lease).to_contain_text("refactoring the lexer")
    dash.assert_clean()


def test_direct_messages_and_their_receipts(
    hub: HubProcess, dashboards: Dashboards, bus: Bus
) -> None:
    dash = dashboards(hub).open().connected()
    alice = bus.agent(hub.url, "alice")
    expect(dash.member("alice")).to_have_attribute("data-state", "online")

    # alice -> the page: shown with its newline, and the page's `read` reaches alice
    ok = alice.send("operator", "build is green\nsee ci/42", thread="ci")
    row = dash.event(ok.seq)
    expect(row.get_by_test_id("event-body")).to_have_text("build is green\nsee ci/42")
    expect(row).to_have_attribute("data-from", "alice")
    receipt = alice.wait(Receipt, lambda r: r.seq == ok.seq)
    assert (receipt.by, receipt.status) == ("operator", "read")

    # the page -> alice (Enter sends): alice acks, the page shows the receipt on that row
    seq = dash.compose("alice", "please rerun the tests")
    event = alice.wait(Event, lambda e: e.seq == seq)
    assert (event.from_, event.body, event.kind) == ("operator", "please rerun the tests", "human")
    alice.ack(seq, "read")
    chip = dash.event(seq).get_by_test_id("receipt")
    expect(chip).to_have_attribute("data-status", "read")
    expect(chip).to_have_attribute("data-by", "alice")
    # each shown once
    expect(dash.events("please rerun the tests")).to_have_count(1)
    expect(dash.events("build is green\nsee ci/42")).to_have_count(1)
    dash.assert_clean()


def test_a_watching_page_shows_others_receipts_live_and_from_history(
    hub: HubProcess, dashboards: Dashboards, bus: Bus
) -> None:
    """Receipts on each message: a page that watches (no --auth: anyone may) sees the
    receipt of a message between two agents as it comes, and, opened later, the stored
    receipts of the history it loads."""
    alice = bus.agent(hub.url, "alice")
    bob = bus.agent(hub.url, "bob")
    before = alice.send("bob", "sent before the page opened")
    bob.ack(before.seq, "submitted")
    alice.wait(Receipt, lambda r: r.seq == before.seq)
    dash = dashboards(hub).open(watch="1").connected()
    old = dash.event(before.seq).get_by_test_id("receipt")
    expect(old).to_have_attribute("data-status", "submitted")
    expect(old).to_have_attribute("data-by", "bob")
    live = alice.send("bob", "sent while the page watches")
    expect(dash.event(live.seq)).to_be_visible()
    bob.ack(live.seq, "read")
    chip = dash.event(live.seq).get_by_test_id("receipt")
    expect(chip).to_have_attribute("data-status", "read")
    expect(dash.event(before.seq).get_by_test_id("receipt")).to_have_count(1)
    dash.assert_clean()


def test_the_compose_box_reaches_wsbus_listen(
    hub: HubProcess, dashboards: Dashboards, listeners: Callable[[str, str], Listener]
) -> None:
    dash = dashboards(hub).open().connected()
    carol = listeners(hub.url, "carol")
    expect(dash.member("carol")).to_have_attribute("data-state", "online")
    # Shift+Enter is a new line, Enter sends
    dash.by("compose-to").fill("carol")
    box = dash.by("compose-body")
    box.fill("first line")
    box.press("Shift+Enter")
    box.type("second line")
    box.press("Enter")
    expect(dash.by("compose-status")).to_contain_text("stored as seq")
    expect(box).to_have_value("")
    got = wait_for(lambda: carol.events(), timeout=10)
    assert isinstance(got, list)
    assert got[0]["from"] == "operator"
    assert got[0]["body"] == "first line\nsecond line"
    # an error from the hub is shown as its sentence (a name breaking the name rule)
    dash.by("compose-to").fill("not a name!")
    box.fill("x")
    box.press("Enter")
    expect(dash.by("compose-status")).to_have_attribute("data-state", "bad")
    expect(dash.by("compose-status")).to_contain_text("invalid_frame")
    dash.assert_clean()


def test_filters_and_the_thread_view(
    hub: HubProcess, dashboards: Dashboards, bus: Bus, env: dict[str, str]
) -> None:
    alice = bus.agent(hub.url, "alice", channels=["a", "b"])
    bob = bus.agent(hub.url, "bob", channels=["a"])
    # before the page opens: it shows them from history
    alice.send("*", "a-ci-1", channel="a", thread="ci")
    bob.send("*", "a-deploy", channel="a", thread="deploy")
    dash = dashboards(hub).open(channels="a,b", name="op2").connected()
    expect(dash.by("conn-state")).to_contain_text("connected as op2")
    # after: live
    alice.send("*", "b-ci", channel="b", thread="ci")
    wsbus_cmd(env, "send", "--url", hub.url, "--as", "alice", "-c", "a", "-t", "ci", "*", "a-ci-2")
    expect(dash.events()).to_have_count(4)

    dash.by("filter-thread").fill("ci")
    expect(dash.visible_events()).to_have_count(3)
    dash.by("filter-channel").select_option("a")
    expect(dash.visible_events()).to_have_count(2)
    expect(dash.by("stream-count")).to_have_text("2 of 4 events")
    dash.by("filter-clear").click()
    dash.by("filter-agent").fill("bob")
    expect(dash.visible_events()).to_have_count(1)
    expect(dash.visible_events().get_by_test_id("event-body")).to_have_text("a-deploy")
    dash.by("filter-clear").click()
    expect(dash.visible_events()).to_have_count(4)

    # a thread: its messages on its channel only, from history
    dash.events("a-ci-1").get_by_test_id("thread-link").click()
    view = dash.by("thread-view")
    expect(view).to_be_visible()
    expect(dash.by("stream-view")).to_be_hidden()
    expect(dash.by("thread-title")).to_have_text("Thread ci · #a")
    bodies = dash.by("thread-events").get_by_test_id("event-body")
    expect(bodies).to_have_text(["a-ci-1", "a-ci-2"])
    # a reply goes to the open thread, and shows in it
    expect(dash.by("compose-thread")).to_have_value("ci")
    dash.compose("*", "a-ci-3 from the page")
    expect(bodies).to_have_text(["a-ci-1", "a-ci-2", "a-ci-3 from the page"])
    dash.by("thread-back").click()
    expect(view).to_be_hidden()
    expect(dash.events()).to_have_count(5)
    dash.assert_clean()


@pytest.mark.parametrize("how", ["kill", "stop"])
def test_reconnects_after_a_hub_restart_without_loss_or_duplicates(
    hub_factory: Callable[..., HubProcess],
    dashboards: Dashboards,
    bus: Bus,
    env: dict[str, str],
    how: str,
) -> None:
    hub = hub_factory()
    dash = dashboards(hub).open().connected()
    alice = bus.agent(hub.url, "alice")
    alice.send("*", "before the restart")
    dash.compose("alice", "to alice before")
    expect(dash.events()).to_have_count(2)

    if how == "kill":
        hub.kill()  # no goodbye: the page learns from the dropped connection
    else:
        hub.stop()  # SIGTERM: the hub closes with 1001 (going away) and exits
    dash.expect_state("reconnecting")
    expect(dash.by("conn-state")).to_contain_text("reconnecting in")
    # why it went away stays on show while the retries fail
    why = "hub shutting down" if how == "stop" else "connection lost"
    expect(dash.by("conn-state")).to_contain_text(why)
    hub.start(hub.port)  # the same ports and data
    # sent while the page may still be waiting to retry: replayed from its resume point
    wsbus_cmd(env, "send", "--url", hub.url, "--as", "bob", "*", "right after the restart")
    dash.connected()
    expect(dash.by("conn-error")).to_have_text("")  # resumed: nothing is missing
    alice.send("*", "after the restart")  # its client reconnected on its own
    for body in ("before the restart", "right after the restart", "after the restart"):
        expect(dash.events(body)).to_have_count(1)
    expect(dash.events()).to_have_count(4)
    seqs = [int(s) for s in dash.events().evaluate_all("rows => rows.map(r => r.dataset.seq)")]
    assert seqs == sorted(set(seqs))
    dash.assert_clean(allow=HUB_DOWN)


def test_tokens_refusals_and_watching(
    hub_factory: Callable[..., HubProcess], dashboards: Dashboards, bus: Bus, tmp_path: Path
) -> None:
    tokens = TokenStore(tmp_path / "tokens.json").load()
    admin = tokens.create("ops", role="admin")
    alice_token = tokens.create("alice")
    bob_token = tokens.create("bob")
    carol_token = tokens.create("carol")
    hub = hub_factory("--auth", str(tokens.path))
    bob = bus.agent(hub.url, "bob", token=bob_token)
    carol = bus.agent(hub.url, "carol", token=carol_token)
    bob.send("carol", "private, before")
    dash = dashboards(hub).open()
    error = dash.by("conn-error")

    def attempt(session: int, state: str) -> None:
        expect(dash.by("conn-state")).to_have_attribute("data-session", str(session))
        dash.expect_state(state)

    # no token, then a wrong one: refused, with the hub's sentence
    attempt(1, "refused")
    expect(error).to_contain_text("this hub needs a valid token")
    dash.connect(token="wsbus_00000000_" + "x" * 43)
    attempt(2, "refused")
    expect(error).to_contain_text("this hub needs a valid token")
    # an agent token may act only as its name, and may not watch
    dash.connect(token=alice_token)
    attempt(3, "refused")
    expect(error).to_contain_text("may not act as operator")
    dash.connect(name="alice", watch=True)
    attempt(4, "refused")
    expect(error).to_contain_text("watching a channel needs an admin token")
    dash.connect(watch=False)
    attempt(5, "connected")
    expect(dash.by("conn-state")).to_contain_text("connected as alice")
    expect(error).to_have_text("")
    bob.send("alice", "for alice")
    bob.send("carol", "private, after")
    expect(dash.events("for alice")).to_have_count(1)
    # others' direct messages are not the agent token's to read
    expect(dash.events("private, before")).to_have_count(0)
    expect(dash.events("private, after")).to_have_count(0)

    # an admin token watches everything, history included
    dash.connect(name="ops", token=admin, watch=True)
    attempt(6, "connected")
    expect(dash.by("conn-state")).to_contain_text("watching")
    bob.send("carol", "private, watched")
    for body in ("private, before", "private, after", "private, watched"):
        expect(dash.events(body)).to_have_count(1)
    carol.wait(Event, lambda e: e.body == "private, watched")

    # the token lives in this tab's session storage only
    storage = dash.page.evaluate(
        "({s: sessionStorage.getItem('wsbus.dashboard.v1'), l: localStorage.length, "
        "c: document.cookie})"
    )
    assert json.loads(storage["s"])["token"] == admin
    assert (storage["l"], storage["c"]) == (0, "")
    dash.page.reload()
    expect(dash.by("conn-token")).to_have_value(admin)
    dash.connected()
    dash.assert_clean()


def test_bodies_are_text_never_markup(hub: HubProcess, dashboards: Dashboards, bus: Bus) -> None:
    dash = dashboards(hub).open().connected()
    alice = bus.agent(hub.url, "alice")
    hostile = (
        '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>'
        '\n<style>body{display:none}</style><a href="javascript:alert(1)">x</a>'
    )
    ok = alice.send("operator", hostile, thread="x/y")
    body = dash.event(ok.seq).get_by_test_id("event-body")
    expect(body).to_have_text(hostile)
    assert body.locator("*").count() == 0
    assert dash.page.evaluate("window.__pwned") is None
    expect(dash.page.locator("body")).to_be_visible()
    dash.assert_clean()


def test_the_stream_keeps_the_newest_2000_events(
    hub: HubProcess, dashboards: Dashboards, bus: Bus
) -> None:
    dash = dashboards(hub).open().connected()
    alice = bus.agent(hub.url, "alice")

    async def burst() -> None:
        await asyncio.gather(*(alice.client.send("*", f"n{i}") for i in range(2050)))

    bus.run(burst(), timeout=30)
    expect(dash.events("n2049")).to_have_count(1)
    expect(dash.events()).to_have_count(2000)
    expect(dash.events().first.get_by_test_id("event-body")).to_have_text("n50")
    expect(dash.by("stream-count")).to_have_text("2000 events")
    # the stream followed the burst: the newest is in view
    expect(dash.events("n2049")).to_be_in_viewport()
    dash.assert_clean()
