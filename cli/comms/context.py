"""What every ``agent_comms`` command works with: files, tunables, identity and the hub.

:class:`Context` is built once per command from the environment. It loads the
registry lazily, finds out who the caller is (the identity rule below), and
opens hub connections with a short timeout: when the hub cannot be reached,
:meth:`Context.connect` returns None (and remembers it, so the next attempt is
instant) and the command falls back to local delivery and the spool.

Identity, first found wins: ``--from``, ``WSBUS_NAME``, ``AGENT_COMMS_SELF``, the
tmux session mapped through the local registry, then through the hub's rosters
(members registered with that session from this host; the local roster files
when the hub is down), ``AGENT_NAME``, the raw session name, else ``unknown``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from wsbus.client import Client
from wsbus.config import ConfigError, Settings, load_settings
from wsbus.errors import HubUnreachable
from wsbus.schema import NAME_RULE, RosterEntry, valid_name

from ..bridge.tmux import Tmux, TmuxError
from ..conventions import hostname
from ..exits import CliError, Exit
from ..local.audit import audit
from ..local.paths import CommsPaths, CommsTunables
from ..local.registry import Registry, RegistryError, all_rosters

__all__ = ["REACH_TIMEOUT", "Context", "LocalMember", "check_name"]

REACH_TIMEOUT = 3.0
"""At most this many seconds to find out whether the hub answers (then: fallback)."""

LocalMember = tuple[str, str, dict[str, Any]]
"""``(project, name, entry)`` from a local roster file."""


class Context:
    """Paths, tunables, registry, identity and hub connections for one command."""

    def __init__(self, args: argparse.Namespace, env: Mapping[str, str] | None = None) -> None:
        self.args = args
        self.env: Mapping[str, str] = os.environ if env is None else env
        self.quiet = bool(getattr(args, "quiet", False))
        try:
            self.paths = CommsPaths.from_env(self.env)
            self.tunables = CommsTunables.from_env(self.env)
        except ValueError as err:
            raise CliError(str(err), Exit.USAGE) from None
        self.host = hostname()
        self._registry: Registry | None = None
        self._settings: Settings | None = None
        self._tmux: Tmux | None = None
        self._session: tuple[str | None] | None = None
        self._clients: list[Client] = []
        self._members: list[RosterEntry] | None = None
        #: why the hub could not be reached (None: not tried yet, or reachable)
        self.unreachable: str | None = None

    # ------------------------------------------------------------------ local state

    @property
    def registry(self) -> Registry:
        if self._registry is None:
            try:
                self._registry = Registry.load(self.paths.registry)
            except RegistryError as err:
                raise CliError(str(err), Exit.USAGE) from None
        return self._registry

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            try:
                self._settings = load_settings({"url": getattr(self.args, "url", None)})
            except ConfigError as err:
                raise CliError(str(err), Exit.USAGE) from None
        return self._settings

    @property
    def tmux(self) -> Tmux:
        if self._tmux is None:
            try:
                self._tmux = Tmux()
            except TmuxError as err:
                raise CliError(str(err)) from None
        return self._tmux

    def my_session(self) -> str | None:
        """The tmux session this command runs in, if any."""
        if self._session is None:
            self._session = (self.tmux.current_session(),)
        return self._session[0]

    def say(self, line: str) -> None:
        """A line of normal output (silenced by ``-q``)."""
        if not self.quiet:
            print(line, flush=True)

    def note(self, line: str) -> None:
        """A remark on stderr (kept with ``-q``: it explains a fallback)."""
        print(line, file=sys.stderr, flush=True)

    def audit(self, sender: str, target: str, status: str, message: str) -> None:
        audit(self.paths.log, sender, target, status, message)

    def local_members(self) -> list[LocalMember]:
        """Every member of every local roster file (the offline copy of the rosters)."""
        out: list[LocalMember] = []
        for project, roster in all_rosters(self.paths.projects).items():
            for name, entry in roster["members"].items():
                if isinstance(entry, dict):
                    out.append((project, name, entry))
        return out

    def is_mine(self, host: object) -> bool:
        """Whether an entry recorded from ``host`` lives on this machine (no host: yes)."""
        return host in (None, "", self.host)

    # ------------------------------------------------------------------ the hub

    async def connect(self, name: str | None = None) -> Client | None:
        """A send- and query-only connection (as ``name``), or None when the hub is down."""
        if self.unreachable is not None:
            return None
        settings = self.settings
        client = Client(
            settings.url,
            name,
            channels=[],
            presence=False,
            reconnect=False,
            host=self.host,
            open_timeout=max(0.1, min(settings.timeout, REACH_TIMEOUT)),
            **settings.access(),
        )
        try:
            await client.connect()
        except HubUnreachable as err:
            self.unreachable = str(err)
            return None
        self._clients.append(client)
        return client

    @asynccontextmanager
    async def hub(self, name: str | None = None) -> AsyncIterator[Client | None]:
        """:meth:`connect` for a block; the connection is closed after it."""
        client = await self.connect(name)
        try:
            yield client
        finally:
            if client is not None:
                await self.release(client)

    async def release(self, client: Client) -> None:
        if client in self._clients:
            self._clients.remove(client)
        await client.close()

    async def aclose(self) -> None:
        clients, self._clients = self._clients, []
        for client in clients:
            await client.close()

    @property
    def timeout(self) -> float:
        """Seconds a query to a reachable hub may take."""
        return self.settings.timeout

    async def members(self, client: Client) -> list[RosterEntry]:
        """The registered members of every channel (asked once per command)."""
        if self._members is None:
            result = await client.roster(all=True, timeout=self.timeout)
            self._members = list(result.registered)
        return self._members

    # ------------------------------------------------------------------ identity

    def local_identity(self, frm: str | None) -> tuple[str | None, str | None]:
        """``(name, session)``: the name if flags, environment or registry give it."""
        for value in (frm, self.env.get("WSBUS_NAME"), self.env.get("AGENT_COMMS_SELF")):
            if value:
                return value, None
        session = self.my_session()
        if session:
            name = self.registry.by_session(session)
            if name:
                return name, session
        return None, session

    async def session_member(self, session: str, client: Client | None) -> str | None:
        """The roster member registered with ``session`` from this host."""
        if client is not None:
            for m in await self.members(client):
                if m.session == session and m.host == self.host:
                    return m.name
            return None
        for _, name, entry in self.local_members():
            if entry.get("session") == session and self.is_mine(entry.get("host")):
                return name
        return None

    def last_resort(self, session: str | None) -> str:
        return self.env.get("AGENT_NAME") or session or "unknown"

    async def identity(self, frm: str | None) -> str:
        """Who the caller is (the module docstring's rule); may ask the hub's rosters."""
        name, session = self.local_identity(frm)
        if name:
            return name
        if session:
            async with self.hub() as probe:
                name = await self.session_member(session, probe)
        return name or self.last_resort(session)

    async def sender(self, frm: str | None) -> tuple[str, Client | None]:
        """The caller's name and a connection acting for it (None: the hub is down)."""
        name = check_name(await self.identity(frm), "sender")
        return name, await self.connect(name)


def check_name(name: str, what: str) -> str:
    """``name`` if the hub accepts it as a name, else a usage error."""
    if not valid_name(name):
        raise CliError(f"invalid {what} name {name!r}: allowed {NAME_RULE}", Exit.USAGE)
    return name
