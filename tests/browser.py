"""Real-browser helpers for the dashboard's tests: Debian's Chromium driven by Playwright's
sync API, and wsbus clients for plain (non-async) tests.

- ``browser``: one headless Chromium per test *module* (``/usr/bin/chromium``; never
  Playwright's own download). Missing, the tests fail and say so: CI installs it.
  Not per session: between its calls the sync API leaves its event loop marked as
  running in the main thread (playwright/_impl/_greenlets.py, ``wait_for_future``),
  so every pytest-asyncio test that ran after it in the session failed with "Runner.run()
  cannot be called from a running event loop". The driver must stop before other
  modules' async tests run; a module that uses it holds sync tests only.
- ``dashboards``: a new browser context per test; each page records console errors,
  uncaught exceptions, failed same-origin responses and Content-Security-Policy
  violations (a listener installed before the page's own scripts), and leaves a
  screenshot behind (the test's tmp dir, and ``$WSBUS_TEST_ARTIFACTS`` when set).
- ``bus``: ``wsbus.Client`` instances on an asyncio loop of their own thread, so that a
  sync test drives agents while Playwright drives the page (the sync Playwright API
  refuses to run inside a running asyncio loop, and pytest-asyncio runs in auto mode).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import threading
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode

import pytest
from playwright.sync_api import (
    Browser,
    ConsoleMessage,
    Locator,
    Page,
    Response,
    expect,
    sync_playwright,
)

from wsbus import Client
from wsbus.client import Incoming, SendResult
from wsbus.schema import Welcome

from .helpers import HubProcess, wait_for

T = TypeVar("T")

CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
#: how long an ``expect`` waits for the page (ms): generous for NATS-backed hubs on a
#: loaded CI machine, still well under a test's budget
TIMEOUT_MS = 10_000

# Installed before any script of the page runs: CSP violations land in a list the test
# reads back (the console also reports them, but this names the directive).
CSP_RECORDER = """
window.__csp = [];
document.addEventListener('securitypolicyviolation', (e) => {
  window.__csp.push(`${e.violatedDirective} blocked ${e.blockedURI || 'inline'}`
    + ` at ${e.sourceFile}:${e.lineNumber}`);
});
"""


# ------------------------------------------------------------------------ the browser


# Fixtures are defined under other names (``name=``): test modules import them, and a
# parameter named like an import would shadow it.


@pytest.fixture(scope="module", name="browser")
def browser_fixture() -> Iterator[Browser]:
    """One headless Chromium for the module (see the module docstring: not the session)."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: the dashboard's browser tests need Debian's chromium "
            "(apt-get install chromium; .ci/run installs it). Never `playwright install`.",
            pytrace=False,
        )
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=LAUNCH_ARGS)
        yield b
        b.close()


class Dashboard:
    """One dashboard page and what went wrong on it."""

    def __init__(self, page: Page, hub: HubProcess) -> None:
        self.page = page
        self.hub = hub
        self.problems: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda err: self.problems.append(f"uncaught: {err}"))
        page.on("response", self._response)

    def _console(self, msg: ConsoleMessage) -> None:
        if msg.type == "error":
            self.problems.append(f"console: {msg.text}")

    def _response(self, response: Response) -> None:
        if response.url.startswith(self.hub.http_url) and response.status >= 400:
            self.problems.append(f"HTTP {response.status} for {response.url}")

    @property
    def url(self) -> str:
        return f"{self.hub.http_url}/ui/"

    def open(self, **params: str) -> Dashboard:
        """Load the page (query parameters: ``channels``, ``name``, ``watch``)."""
        self.page.goto(self.url + (f"?{urlencode(params)}" if params else ""))
        return self

    def by(self, testid: str) -> Locator:
        return self.page.get_by_test_id(testid)

    def expect_state(self, state: str, timeout: float = TIMEOUT_MS) -> None:
        expect(self.by("conn-state")).to_have_attribute("data-state", state, timeout=timeout)

    def connected(self) -> Dashboard:
        self.expect_state("connected")
        return self

    def connect(
        self,
        *,
        name: str | None = None,
        channels: str | None = None,
        token: str | None = None,
        watch: bool | None = None,
    ) -> None:
        """Fill the connect bar (what is given) and press Connect."""
        if name is not None:
            self.by("conn-name").fill(name)
        if channels is not None:
            self.by("conn-channels").fill(channels)
        if token is not None:
            self.by("conn-token").fill(token)
        if watch is not None:
            self.by("conn-watch").set_checked(watch)
        self.by("conn-submit").click()

    # the page's parts

    def member(self, name: str, channel: str = "default") -> Locator:
        roster = self.page.locator(f'[data-testid="roster"][data-channel="{channel}"]')
        return roster.locator(f'[data-testid="member"][data-name="{name}"]')

    def event(self, seq: int) -> Locator:
        return self.by("stream").locator(f'[data-testid="event"][data-seq="{seq}"]')

    def events(self, body: str | None = None) -> Locator:
        """Rows in the stream (with this exact body)."""
        rows = self.by("stream").get_by_test_id("event")
        if body is None:
            return rows
        return rows.filter(has=self.page.get_by_test_id("event-body").get_by_text(body, exact=True))

    def visible_events(self) -> Locator:
        return self.by("stream").locator('[data-testid="event"]:visible')

    def compose(
        self, to: str, body: str, *, channel: str | None = None, thread: str | None = None
    ) -> int:
        """Send from the compose box with Enter; the seq the hub stored it as."""
        self.by("compose-to").fill(to)
        if channel is not None:
            self.by("compose-channel").select_option(channel)
        if thread is not None:
            self.by("compose-thread").fill(thread)
        status = self.by("compose-status")
        before = status.text_content() or ""
        box = self.by("compose-body")
        box.fill(body)
        box.press("Enter")
        expect(status).to_have_attribute("data-state", "ok")
        expect(status).not_to_have_text(before)
        m = re.search(r"stored as seq (\d+)", status.text_content() or "")
        assert m, status.text_content()
        return int(m.group(1))

    def csp_violations(self) -> list[str]:
        return list(self.page.evaluate("window.__csp || []"))

    def assert_clean(self, allow: tuple[str, ...] = ()) -> None:
        """No console error, uncaught exception, failed request or CSP violation,
        except those containing one of ``allow``."""
        found = [p for p in self.problems if not any(a in p for a in allow)]
        found += [f"CSP: {v}" for v in self.csp_violations()]
        assert not found, "the page reported problems:\n" + "\n".join(found)


def _artifact(path: Path) -> Path:
    """Copy a file to $WSBUS_TEST_ARTIFACTS when set; the path to show."""
    where = os.environ.get("WSBUS_TEST_ARTIFACTS")
    if not where:
        return path
    target = Path(where)
    target.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy2(path, target / path.name))


@pytest.fixture(name="dashboards")
def dashboards_fixture(
    browser: Browser,
    bus: Bus,  # set up first, torn down last: the screenshots show the agents still up
    tmp_path: Path,
    request: pytest.FixtureRequest,
    record_property: Callable[[str, object], None],
) -> Iterator[Callable[[HubProcess], Dashboard]]:
    """Open dashboards on hubs, each in a new context; screenshots at the end."""
    contexts = []
    made: list[Dashboard] = []
    expect.set_options(timeout=TIMEOUT_MS)  # Playwright's default is 5 s

    def make(hub: HubProcess) -> Dashboard:
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        context.add_init_script(CSP_RECORDER)
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        dash = Dashboard(page, hub)
        made.append(dash)
        return dash

    yield make
    for i, dash in enumerate(made):
        if dash.page.is_closed():
            continue
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name)
        shot = tmp_path / f"dashboard-{stem}{f'-{i}' if i else ''}.png"
        try:
            dash.page.screenshot(path=str(shot))
        except Exception as err:  # a screenshot must not hide the test's own result
            print(f"dashboard screenshot failed: {err}")
            continue
        shown = _artifact(shot)
        record_property(f"screenshot{i or ''}", str(shown))
        print(f"dashboard screenshot: {shown}")
    for context in contexts:
        context.close()


# ------------------------------------------------------------------------ bus clients


class Bus:
    """An asyncio loop in a thread of its own, for wsbus clients in sync tests."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="bus", daemon=True)
        self.thread.start()
        self.agents: list[Agent] = []

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 15.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def spawn(self, coro: Coroutine[Any, Any, object]) -> Future[object]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def agent(self, url: str, name: str, **kw: Any) -> Agent:
        """A connected client acting as ``name`` that keeps what it receives."""
        agent = Agent(self, Client(url, name, **kw))
        agent.welcome = self.run(agent.client.connect())
        agent.reader = self.spawn(agent.read())
        self.agents.append(agent)
        return agent

    def close(self) -> None:
        for agent in self.agents:
            agent.close()

        async def cancel_rest() -> None:
            rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in rest:
                t.cancel()
            await asyncio.gather(*rest, return_exceptions=True)

        self.run(cancel_rest())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


class Agent:
    """A ``wsbus.Client`` on the bus's loop; ``items``: what it received, in order."""

    def __init__(self, bus: Bus, client: Client) -> None:
        self.bus = bus
        self.client = client
        self.items: list[Incoming] = []
        self.welcome: Welcome | None = None
        self.reader: Future[object] | None = None
        self.closed = False

    async def read(self) -> None:
        async for item in self.client:
            self.items.append(item)

    def send(self, to: str, body: str, **kw: Any) -> SendResult:
        return self.bus.run(self.client.send(to, body, **kw))

    def ack(self, seq: int, status: str = "read") -> None:
        self.bus.run(self.client.ack(seq, status))

    def wait(self, kind: type[T], cond: Callable[[T], bool], timeout: float = 10.0) -> T:
        """The first item of this type that meets ``cond``, waiting for it."""

        def found() -> T | None:
            return next((i for i in list(self.items) if isinstance(i, kind) and cond(i)), None)

        return wait_for(found, timeout)  # type: ignore[return-value]

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.bus.run(self.client.close())


@pytest.fixture(name="bus")
def bus_fixture() -> Iterator[Bus]:
    b = Bus()
    yield b
    b.close()
