"""``wsbus bridge``: deliver the bus into the tmux panes of this machine's agents.

One process per machine, one hub connection acting for every local agent (see
:func:`.decisions.local_agents`). Each event becomes one line typed into the
right pane by a per-pane worker (one injection at a time per pane, in seq
order), then a receipt goes back to the sender: ``submitted``, ``unsubmitted``,
``failed``, or ``session_down`` while the pane is gone — the message then waits
and is typed when the session is back (after the registry's ``revive_cmd``, if
any). Thread entries are mirrored to markdown files first, so the doorbell
points at a file that exists here (:mod:`.files`). Every few seconds the
bridge re-reads the registry and the hub's rosters, reports which panes are alive
(the roster's up/down) and forwards the spool of senders that could not reach the
hub — and at once when the registry or a project roster file changes
(:mod:`.filewatch`): a member who just registered is served and shown up at once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import time

from wsbus import redact
from wsbus.client import Client
from wsbus.config import Access
from wsbus.errors import ClientError, CloseCode, ConnectionLost, HubUnreachable
from wsbus.schema import Event, RosterEntry

from ..common import Subcommands, add_client_args, settings_from, warn
from ..conventions import AUDIT_WORDS, hostname, run_revive
from ..exits import CliError, Exit
from ..local.audit import audit
from ..local.paths import CommsPaths, CommsTunables, private_dir
from ..local.registry import Registry, RegistryError
from ..local.spool import Spool
from ..relay import forward
from .decisions import LocalAgent, Progress, already_delivered, local_agents, pane_text, targets
from .files import write_long_copy, write_mirror_of
from .filewatch import FileWatch
from .inject import Injector
from .tmux import Tmux

__all__ = ["Bridge", "register", "run"]

log = logging.getLogger("wsbus.bridge")

EXAMPLES = """\
examples:
  wsbus bridge                          # serve this machine's agents on the local hub
  wsbus bridge --url ws://hub.lan:8765  # a hub on another machine
  wsbus up                              # hub + bridge in the background
"""


class _Job:
    __slots__ = ("agent", "event", "text")

    def __init__(self, agent: LocalAgent, event: Event, text: str) -> None:
        self.agent = agent
        self.event = event
        self.text = text


class Bridge:
    """The bridge's state and tasks (see the module docstring)."""

    def __init__(
        self,
        url: str,
        *,
        paths: CommsPaths,
        tunables: CommsTunables,
        tmux: Tmux | None = None,
        host: str | None = None,
        scan_interval: float = 2.0,
        timeout: float = 10.0,
        verbose: bool = False,
        access: Access | None = None,
    ) -> None:
        self.url = url
        self.access = access or Access(token=None, ca_file=None)
        self.paths = paths
        self.tun = tunables
        self.tmux = tmux or Tmux()
        self.injector = Injector(self.tmux, verify_delay=tunables.verify_delay)
        self.host = host or hostname()
        self.scan_interval = scan_interval
        self.timeout = timeout
        self.verbose = verbose
        state = paths.state / "bridge"
        private_dir(state)
        self.progress = Progress(state / f"{self.host}.json")
        self.spool = Spool(paths.spool)
        self.files = FileWatch([paths.registry], [paths.projects])
        self.agents: dict[str, LocalAgent] = {}
        self.client: Client | None = None
        self._queues: dict[str, asyncio.Queue[_Job]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._alive: dict[str, bool] = {}
        self._alive_sent = 0.0
        self._mirror_lock = asyncio.Lock()
        self._refused: set[str] = set()
        self._last_roster: list[RosterEntry] = []
        self._warned: set[str] = set()
        self._resumed_from = 0

    # ------------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        """Serve until cancelled: connect, deliver, rescan, reconnect when names change."""
        self.agents = local_agents(self._registry(), [], self.host, self._warn_once)
        while True:
            client = self._connect_client()
            self.client = client
            try:
                welcome = await client.connect(wait=True)
            except ClientError as err:
                warn(f"bridge: {err}")
                await asyncio.sleep(self.scan_interval)
                continue
            if self.progress.hub not in (None, welcome.hub):
                # another hub (a new database): its seqs mean nothing to our cursor.
                # Drop this connection unread and start over with pending events only.
                warn(f"bridge: {self.url} is a different hub now; starting afresh")
                self.progress.reset(welcome.hub)
                self.progress.save()
                await client.close()
                continue
            self.progress.hub = welcome.hub
            self._note_refused(welcome.refused)
            self._alive = {}  # a new connection: report every pane again
            self._say(
                f"bridge: serving {', '.join(sorted(self.agents)) or '(no agents yet)'} "
                f"for host {self.host} on {self.url}"
            )
            reader = asyncio.create_task(self._read(client))
            try:
                await self._watch(client, reader)  # returns when the served names change
            finally:
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)  # _watch saw how it ended
                await client.close()

    def _connect_client(self) -> Client:
        channels = sorted({c for a in self.agents.values() for c in a.channels} | {"default"})
        self._resumed_from = self.progress.cursor or 0
        return Client(
            self.url,
            names=sorted(self.agents),
            channels=channels,
            kind="bridge",
            host=self.host,
            presence=False,
            pending=True,
            resume=self.progress.cursor,
            open_timeout=self.timeout,
            on_state=self._on_state,
            **self.access,
        )

    def _on_state(self, state: str, details: dict[str, object]) -> None:
        if state == "connected" and self.client is not None and self.client.welcome:
            self._note_refused(self.client.welcome.refused)
            self._alive = {}  # the hub forgot our last report with the old connection
            # what the hub replays up to here as pending, we may have finished already
            self._resumed_from = max(self._resumed_from, self.progress.received)
        elif state == "reconnecting":
            warn(f"bridge: hub connection lost ({details.get('error', '')}); reconnecting")
        elif state == "truncated":
            warn("bridge: the hub's history was truncated; some messages may be gone")

    def _note_refused(self, refused: list[str]) -> None:
        for name in refused:
            if name not in self._refused:
                warn(
                    f"bridge: the hub refused {name!r} (served by another bridge, or not "
                    "allowed by this bridge's token); not delivering to it here"
                )
        self._refused = set(refused)

    def _warn_once(self, message: str) -> None:
        if message not in self._warned:
            self._warned.add(message)
            warn(f"bridge: {message}")

    def _registry(self) -> Registry:
        try:
            return Registry.load(self.paths.registry)
        except RegistryError as err:
            warn(f"bridge: {err}; using no registry agents")
            return Registry(self.paths.registry, {"agents": {}})

    # ------------------------------------------------------------------ periodic work

    async def _watch(self, client: Client, reader: asyncio.Task[None]) -> None:
        while True:
            if reader.done():  # the connection ended for good, or a bug: start over
                err = None if reader.cancelled() else reader.exception()
                if isinstance(err, ConnectionLost) and err.code == CloseCode.REPLACED:
                    raise CliError(
                        f"another bridge for host {self.host} took over; this one stops "
                        "(one bridge per host: see `wsbus up`)"
                    )
                if err is not None:
                    warn(f"bridge: connection ended: {err}; reconnecting")
                return
            roster = await self._roster(client)
            agents = local_agents(self._registry(), roster, self.host, self._warn_once)
            if set(agents) != set(self.agents) or any(
                agents[n].channels != self.agents[n].channels for n in agents
            ):
                self.agents = agents
                self._say("bridge: the local agents changed; reconnecting to serve them")
                return
            self.agents = agents  # sessions, delays and revive commands may change
            await self._report_alive(client)
            await self._forward_spool()
            await self.files.wait(self.scan_interval)  # early when a registry/roster file changes

    async def _roster(self, client: Client) -> list[RosterEntry]:
        try:
            result = await client.roster(all=True, timeout=self.timeout)
        except (ClientError, TimeoutError):
            return self._last_roster  # keep serving what we knew
        self._last_roster = list(result.registered)
        return self._last_roster

    async def _report_alive(self, client: Client) -> None:
        sessions = {a.name: a.session for a in self.agents.values()}
        alive_sessions = set(await asyncio.to_thread(self.tmux.list_sessions))
        alive = {n: s in alive_sessions for n, s in sessions.items() if n not in self._refused}
        now = time.monotonic()
        if alive != self._alive or now - self._alive_sent > 30:
            self._alive = alive
            self._alive_sent = now
            with contextlib.suppress(ClientError):
                await client.status(alive)

    async def _forward_spool(self) -> None:
        if not len(self.spool):
            return
        try:
            result = await forward(self.spool, self.url, timeout=self.timeout, access=self.access)
        except (HubUnreachable, ClientError, TimeoutError) as err:
            log.info("spool forward failed: %s", err)
            return
        if result.forwarded or result.rejected:
            self._say(
                f"bridge: forwarded {result.forwarded} spooled message(s)"
                + (f", {result.rejected} refused" if result.rejected else "")
            )

    # ------------------------------------------------------------------ events

    async def _read(self, client: Client) -> None:
        async for item in client:
            if isinstance(item, Event):
                try:
                    await self._dispatch(item)
                except Exception:  # one bad event must not stop delivery of the others
                    log.debug("handling event %d failed", item.seq, exc_info=True)
                    warn(f"bridge: could not handle event #{item.seq} (a bug; run with -v)")

    async def _dispatch(self, ev: Event) -> None:
        chosen = [a for a in targets(ev, self.agents) if a.name not in self._refused]
        if ev.seq <= self._resumed_from:
            # replayed as still pending although we finished it: our receipt was lost
            for name, done in self.progress.finished(ev.seq, [a.name for a in chosen]).items():
                await self._ack(ev, name, done, "delivered before (receipt sent again)")
        todo = self.progress.receive(ev.seq, [a.name for a in chosen])
        if not todo:
            self._save()
            return
        mirror = (
            await write_mirror_of(self.client, self.paths, self.tun, ev, self._mirror_lock)
            if ev.thread
            else None
        )
        copy = None
        for agent in chosen:
            if agent.name not in todo:
                continue
            local = already_delivered(ev, agent.name, self.host)
            if local is not None:
                await self._ack(ev, agent.name, local, "delivered without the hub")
                self.progress.finish(ev.seq, agent.name, local)
                continue
            if copy is None and not ev.thread:
                copy = await write_long_copy(self.paths, ev, self.tun.one_line_max)
            text = pane_text(ev, agent.name, self.tun, mirror=mirror, copy=copy)
            self._queue(agent.session).put_nowait(_Job(agent, ev, text))
        self._save()

    # ------------------------------------------------------------------ panes

    def _queue(self, session: str) -> asyncio.Queue[_Job]:
        q = self._queues.get(session)
        if q is None:
            q = self._queues[session] = asyncio.Queue()
            self._workers[session] = asyncio.create_task(self._worker(session, q))
        return q

    async def _worker(self, session: str, q: asyncio.Queue[_Job]) -> None:
        while True:
            job = await q.get()
            try:
                await self._deliver(job)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.debug("delivery of event %d failed", job.event.seq, exc_info=True)
                warn(f"bridge: delivery of event #{job.event.seq} failed (a bug; run with -v)")
                await self._ack(job.event, job.agent.name, "failed", "bridge error (logged)")
                self.progress.finish(job.event.seq, job.agent.name, "failed")
                self._save()

    async def _deliver(self, job: _Job) -> None:
        agent, ev = job.agent, job.event
        current = self.agents.get(agent.name, agent)
        delay = current.enter_delay if current.enter_delay is not None else self.tun.enter_delay
        down_reported = False
        revived = False
        while True:
            outcome = await self.injector.deliver_async(
                current.session, job.text, delay, paste=current.paste
            )
            if outcome.status != "session_down":
                break
            if current.revive_cmd and not revived:
                revived = True
                await self._revive(current)
                continue
            if not down_reported:
                down_reported = True
                await self._ack(ev, agent.name, "session_down", f"tmux session {current.session!r}")
                self._audit(ev, agent.name, "session_down")
            if not await self._wait_for_session(current):
                # no longer served here: leave it pending in the hub for whoever serves it
                self.progress.finish(ev.seq, agent.name, None)
                self._save()
                return
            current = self.agents.get(agent.name, current)
        await self._ack(ev, agent.name, outcome.status, outcome.reason)
        self._audit(ev, agent.name, outcome.status)
        if self.verbose:
            self._say(f"bridge: #{ev.seq} {ev.from_} -> {agent.name}: {outcome.status}")
        self.progress.finish(ev.seq, agent.name, outcome.status)
        self._save()

    def _save(self) -> None:
        try:
            self.progress.save()
        except OSError as err:
            warn(f"bridge: cannot save progress to {self.progress.path}: {err}")

    async def _wait_for_session(self, agent: LocalAgent) -> bool:
        """Wait until the agent's session exists; False if the agent is no longer served."""
        while not await asyncio.to_thread(self.tmux.has_session, agent.session):
            await asyncio.sleep(min(self.scan_interval, 1.0))
            if agent.name not in self.agents:
                return False
            agent = self.agents[agent.name]
        return True

    async def _revive(self, agent: LocalAgent) -> None:
        """Run the registry's revive command (local config only, never from a message)."""
        assert agent.revive_cmd is not None
        self._say(f"bridge: session {agent.session!r} is down; running its revive_cmd")

        failed = await asyncio.to_thread(run_revive, agent.revive_cmd, self.tun.revive_timeout)
        if failed:
            warn(f"bridge: revive {agent.name!r} failed: {failed}")
        deadline = time.monotonic() + self.tun.revive_grace
        while time.monotonic() < deadline:
            if await asyncio.to_thread(self.tmux.has_session, agent.session):
                return
            await asyncio.sleep(0.2)

    async def _ack(self, ev: Event, name: str, status: str, reason: str | None) -> None:
        client = self.client
        if client is None:
            return
        with contextlib.suppress(ClientError):
            await client.ack(ev.seq, status, reason=reason, name=name)

    def _audit(self, ev: Event, name: str, status: str) -> None:
        word = AUDIT_WORDS.get(status, status.upper())
        if ev.thread:
            word = ("DOORBELL" if status == "submitted" else f"DOORBELL_{word}") + f":{ev.thread}"
        audit(self.paths.log, ev.from_, name, word, ev.body)

    def _say(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    async def close(self) -> None:
        for task in self._workers.values():
            task.cancel()
        for task in self._workers.values():
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._save()
        if self.client is not None:
            await self.client.close()


def register(sub: Subcommands) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "bridge",
        help="type bus messages into this machine's tmux agents",
        description=(
            "Deliver events into the tmux panes of this machine's agents (the enabled "
            "agents of the tmux-agent-comms registry and the roster members registered "
            "from this host), one injection at a time per pane, and send receipts back."
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--host", help="this machine's name in rosters (env WSBUS_HOSTNAME; default hostname)"
    )
    p.add_argument(
        "--scan-interval",
        type=float,
        default=2.0,
        help="seconds between registry/roster rescans and pane checks (default 2; a change "
        "to the registry or a project roster file rescans at once)",
    )
    p.add_argument(
        "-v", "--verbose", action="store_true", help="print every delivery (and bugs' details)"
    )
    add_client_args(p, channel=False)
    p.set_defaults(func=run)
    return p


async def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    if args.verbose:  # bugs' tracebacks too
        logging.basicConfig(format="%(name)s: %(message)s")
        redact.install()  # no token in any line, as for the hub
        log.setLevel(logging.DEBUG)
    try:
        tunables = CommsTunables.from_env()
    except ValueError as err:
        raise CliError(str(err), Exit.USAGE) from None
    bridge = Bridge(
        settings.url,
        paths=CommsPaths.from_env(),
        tunables=tunables,
        host=args.host,
        scan_interval=args.scan_interval,
        timeout=settings.timeout,
        verbose=args.verbose,
        access=settings.access(),
    )
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    if task is not None:
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        await bridge.run()
    except asyncio.CancelledError:
        pass
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
        await bridge.close()
    return Exit.OK
