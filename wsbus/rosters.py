"""Rosters and bridge claims: who is registered on a channel, and which bridge
delivers to which name.

The hub's part that owns the registered members (durable, in the index; kept in
memory for the roster queries), the live claims of bridges on names per channel,
and each bridge's last report of which names have a live tmux session.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar, cast

import msgspec

from .access import Access
from .auth import may_act_as, may_use_channel
from .errors import CloseCode, ErrorCode, FrameError
from .presence import Announcer, Info
from .routing import Routable, Router
from .schema import (
    DEFAULT_CHANNEL,
    Error,
    Member,
    Register,
    Registered,
    Roster,
    RosterEntry,
    RosterResult,
    Status,
)
from .session import Session
from .store import MemberRecord, MemberStore

__all__ = ["Rosters"]

T = TypeVar("T")

log = logging.getLogger("wsbus.hub")


class SharedClaims(Protocol):
    """Bridge claims shared by the hubs of a bus (:mod:`wsbus.jetstream.presence`)."""

    on_claim_lost: Callable[[str, str], None] | None
    #: (channel, name) -> (revision, holder) of every claim of the bus
    claims: dict[tuple[str, str], tuple[int, dict[str, Any]]]

    def claim_holder(self, channel: str, name: str) -> dict[str, Any] | None: ...

    def claim(
        self, channel: str, name: str, holder: dict[str, Any], lost: Callable[[], None]
    ) -> None: ...

    def unclaim(self, channel: str, name: str) -> None: ...


def _grant_id(session: Session) -> str | None:
    return session.grant.id if session.grant is not None else None


def _same_grant(a: Session, b: Session) -> bool:
    """Whether two sessions authenticated with the same token (or neither did)."""
    if a.grant is None or b.grant is None:
        return a.grant is None and b.grant is None
    return a.grant.id == b.grant.id


def member_of(name: str, sessions: Sequence[Routable] | int, info: Info | None = None) -> Member:
    """A connected name as rosters and ``hub_status`` show it: its sessions (the first
    one's labels), or a count of connections with the labels ``info`` gives."""
    if isinstance(sessions, int):
        count, labels = sessions, info or {}
    else:
        count, labels = len(sessions), cast(Session, sessions[0]).info if sessions else {}
    return Member(
        name=name,
        connections=count,
        kind=labels.get("kind"),
        model=labels.get("model"),
        role=labels.get("role"),
        host=labels.get("host"),
        tmux=labels.get("tmux"),
    )


class Rosters:
    """Registered members and bridge claims (see the module docstring)."""

    def __init__(
        self, store: MemberStore, router: Router, access: Access, presence: Announcer
    ) -> None:
        #: where registered members are kept (the index; the bus's bucket on NATS)
        self.store = store
        self.router = router
        self.access = access
        #: who is connected, to this hub or (several hubs) another
        self.presence = presence
        #: (channel, name) -> registered roster member
        self.members: dict[tuple[str, str], MemberRecord] = {}
        #: (channel, name) -> the bridge session serving it
        self._claims: dict[tuple[str, str], Session] = {}
        #: bridge session -> {name: its tmux session alive at the last report}
        self._alive: dict[Session, dict[str, bool]] = {}
        #: the claims of the bridges on the other hubs of the bus (None: one hub)
        self.shared: SharedClaims | None = None

    def share_claims(self, shared: SharedClaims) -> None:
        """Claim names in the bus's bucket too, and refuse those held on other hubs."""
        self.shared = shared
        shared.on_claim_lost = self._taken_elsewhere

    async def load(self, shared: MemberStore | None = None) -> None:
        """Read the registered members (at start): from the index, or from ``shared``
        (the bus's bucket), whose changes by other hubs are followed from then on."""
        if shared is not None:
            self.store = shared
            shared.on_change = self._changed  # type: ignore[attr-defined]
        self.members = {(m.channel, m.name): m for m in await self.store.members()}

    def _changed(self, channel: str, name: str, member: MemberRecord | None) -> None:
        """A registration on any hub of the bus (None: the member left)."""
        if member is None:
            self.members.pop((channel, name), None)
        else:
            self.members[(channel, name)] = member

    # ------------------------------------------------------------------ claims

    def claim(
        self, session: Session, names: list[str], channels: list[str], host: str | None
    ) -> tuple[list[str], list[str], list[Session]]:
        """Claim ``names`` in ``channels`` for a bridge; returns the names granted,
        those refused, and the sessions it takes over (the caller closes them, 4009).

        A bridge from the same host takes over: the older connection is a stale
        one of the same bridge (its reconnect outran the hub noticing the drop),
        or a second bridge started by mistake.
        """
        granted: list[str] = []
        refused: list[str] = []
        replaced: dict[Session, None] = {}
        for n in names:
            held = [
                self._claims[(c, n)]
                for c in channels
                if (c, n) in self._claims and not self._claims[(c, n)].closed
            ]
            stale = [
                s
                for s in held
                if host is not None
                and s.info.get("host") == host
                and _same_grant(s, session)  # with --auth, only the same token takes over
            ]
            for old in stale:
                if old not in replaced:
                    log.info("bridge %s on %s takes over from %s", session.id, host, old.id)
                replaced[old] = None
            if len(stale) < len(held) or not self._free_elsewhere(session, n, channels, host):
                refused.append(n)
                continue
            granted.append(n)
            for c in channels:
                self._claims[(c, n)] = session
                self._share_claim(session, c, n, host)
        return granted, refused, list(replaced)

    def _free_elsewhere(
        self, session: Session, name: str, channels: list[str], host: str | None
    ) -> bool:
        """Whether no bridge on another hub holds ``name`` in ``channels`` — or the one
        that does is this bridge's earlier connection (same host, same token)."""
        if self.shared is None:
            return True
        for c in channels:
            holder = self.shared.claim_holder(c, name)
            if holder is not None and not (
                host is not None
                and holder.get("host") == host
                and holder.get("grant") == _grant_id(session)
            ):
                return False
        return True

    def _share_claim(self, session: Session, channel: str, name: str, host: str | None) -> None:
        if self.shared is None:
            return
        holder = {"host": host, "grant": _grant_id(session)}

        def lost() -> None:  # another hub's bridge won the race for the name
            if self._claims.get((channel, name)) is session and not session.closed:
                session.close(
                    CloseCode.GOING_AWAY,
                    f"{name!r} on {channel!r} is served by a bridge on another hub; reconnect",
                )

        self.shared.claim(channel, name, holder, lost)

    def _taken_elsewhere(self, channel: str, name: str) -> None:
        """A bridge of the same host and token took this hub's claim over on another hub."""
        session = self._claims.get((channel, name))
        if session is not None and not session.closed:
            session.close(
                CloseCode.REPLACED,
                "a newer bridge connection from this host took over on another hub",
            )

    def claim_channels(self, session: Session, channels: list[str]) -> None:
        """A bridge subscribing to more channels claims its names there too;
        ``name_claimed`` when another bridge holds one."""
        host = session.info.get("host")
        for c in channels:
            for n in session.names:
                holder = self._claims.get((c, n))
                if (
                    holder is not None and holder is not session and not holder.closed
                ) or not self._free_elsewhere(session, n, [c], host):
                    raise FrameError(
                        ErrorCode.NAME_CLAIMED,
                        f"{n!r} is served by another bridge on {c!r}; not subscribed",
                    )
        for c in channels:
            for n in session.names:
                self._claims[(c, n)] = session
                self._share_claim(session, c, n, host)

    def release(self, session: Session) -> None:
        """Forget a bridge session's claims and reports."""
        for key in [k for k, s in self._claims.items() if s is session]:
            del self._claims[key]
            if self.shared is not None:
                self.shared.unclaim(*key)
        self._alive.pop(session, None)

    def refusal(self, name: str, session: Session | None = None) -> Error:
        """The error frame telling a bridge it may not serve ``name``."""
        grant = session.grant if session is not None else None
        if grant is not None and not may_act_as(grant, name):
            return Error(
                code=ErrorCode.FORBIDDEN,
                message=f"token {grant.id} ({grant.name}) may not act for {name!r}; "
                "this bridge will not deliver to it",
            )
        holder = next((s for (c, n), s in self._claims.items() if n == name), None)
        host = holder.info.get("host") if holder is not None else None
        if holder is None and self.shared is not None:  # held on another hub
            shared = self.shared
            elsewhere = (shared.claim_holder(c, n) for (c, n) in self.shared_keys(name))
            remote = next((h for h in elsewhere if h is not None), None)
            host = remote.get("host") if remote is not None else None
        where = f" on host {host}" if host else ""
        return Error(
            code=ErrorCode.NAME_CLAIMED,
            message=f"{name!r} is already served by another bridge{where}; "
            "this bridge will not deliver to it",
        )

    def shared_keys(self, name: str) -> list[tuple[str, str]]:
        """The (channel, name) claims on ``name`` the bus's bucket holds."""
        if self.shared is None:
            return []
        return [key for key in self.shared.claims if key[1] == name]

    def status(self, session: Session, st: Status) -> None:
        """A bridge's report of which of its names have a live tmux session."""
        if session.info.get("kind") != "bridge":
            raise FrameError(ErrorCode.INVALID_FRAME, "only a bridge (hello.kind) reports status")
        mine = self._alive.setdefault(session, {})
        for name, alive in st.alive.items():
            if name in session.names:
                mine[name] = alive

    # ------------------------------------------------------------------ rosters

    def in_channel(self, channel: str, name: str) -> bool:
        """Whether ``name`` is a registered member of, or connected on, ``channel``."""
        return (channel, name) in self.members or self.presence.connected(channel, name)

    def roster(self, session: Session, r: Roster) -> RosterResult:
        grant = session.grant
        if r.all:
            entries = [
                self._entry(m)
                for (c, _), m in sorted(self.members.items())
                if grant is None or may_use_channel(grant, c)
            ]
            return RosterResult(ref=r.ref, channel="*", members=[], registered=entries)
        channel = r.channel or (min(session.channels) if session.channels else DEFAULT_CHANNEL)
        self.access.check_channels(session, [channel], r.ref)
        members = []
        members = [
            member_of(name, sessions)
            for name, sessions in sorted(self.router.online(channel).items())
        ]
        for name, (hubs, info) in self.presence.remote_online(channel).items():
            members.append(member_of(name, hubs, info))  # connected to other hubs of the bus
        members.sort(key=lambda m: m.name)
        return RosterResult(
            ref=r.ref, channel=channel, members=members, registered=self._registered(channel)
        )

    def _registered(self, channel: str) -> list[RosterEntry]:
        return [self._entry(m) for (c, _), m in sorted(self.members.items()) if c == channel]

    def _entry(self, m: MemberRecord) -> RosterEntry:
        holder = self._claims.get((m.channel, m.name))
        state: Any = None
        if holder is not None and not holder.closed:
            alive = self._alive.get(holder, {}).get(m.name)
            if alive is not None:
                state = "up" if alive else "down"
        # the entry is the stored record's struct with what the hub sees now
        return RosterEntry(
            **msgspec.structs.asdict(m),
            state=state,
            connected=self.presence.connected(m.channel, m.name),
        )

    async def register(self, session: Session, r: Register) -> Registered:
        """Add, update or remove a roster member (durably, before answering)."""
        self.access.check_channels(session, [r.channel], r.ref)
        self.access.check_name(session, r.name, r.ref)
        if r.leave:
            if (r.channel, r.name) not in self.members:
                raise FrameError(
                    ErrorCode.UNKNOWN_MEMBER, f"{r.name!r} is not in {r.channel!r}'s roster", r.ref
                )
            await self._kept(self.store.remove_member(r.channel, r.name), r.ref)
            self.members.pop((r.channel, r.name), None)  # (the watcher may be first)
            return Registered(
                ref=r.ref,
                channel=r.channel,
                name=r.name,
                existed=True,
                left=True,
                members=self._registered(r.channel),
            )
        for _ in range(3):  # another hub may register the same name at the same moment
            registered = await self._add_or_update(r)
            if registered is not None:
                return registered
        raise FrameError(ErrorCode.STORE_FAILED, "the roster kept changing meanwhile; retry", r.ref)

    async def _add_or_update(self, r: Register) -> Registered | None:
        """One try at a registration: None when another hub took the name first."""
        name = self._member_name(r)
        prior = self.members.get((r.channel, name))
        now = time.time()
        member = MemberRecord(
            channel=r.channel,
            name=name,
            joined=prior.joined if prior else now,
            last_active=now,
            session=r.session if r.session is not None else (prior.session if prior else None),
            host=r.host if r.host is not None else (prior.host if prior else None),
            model=r.model or (prior.model if prior else None),
            role=r.role or (prior.role if prior else None),
            enter_delay=r.enter_delay
            if r.enter_delay is not None
            else (prior.enter_delay if prior else None),
        )
        if prior is None:
            added = await self._kept(self.store.add_member(member), r.ref)
            if not added:
                return None
        else:
            await self._kept(self.store.put_member(member), r.ref)
        self.members[(r.channel, name)] = member
        return Registered(
            ref=r.ref,
            channel=r.channel,
            name=name,
            existed=prior is not None,
            members=self._registered(r.channel),
        )

    async def _kept(self, write: Awaitable[T], ref: str | None) -> T:
        """A roster write, or ``store_failed`` (retryable) when it could not be made."""
        try:
            return await write
        except Exception as err:
            log.warning("roster not stored: %s", err)
            raise FrameError(
                ErrorCode.STORE_FAILED, f"the roster was not changed ({err}); retry", ref
            ) from None

    def _member_name(self, r: Register) -> str:
        """The name a registration gets: the same session keeps its name, else a free one."""
        taken = {n: m for (c, n), m in self.members.items() if c == r.channel}
        if r.session is not None:
            for n, m in taken.items():
                if m.session == r.session and m.host == r.host:
                    return n
        prior = taken.get(r.name)
        if prior is None or prior.session is None or r.session is None:
            return r.name
        i = 2
        while True:  # shorten the base, not the suffix: a 64-character name stays distinct
            suffix = f"-{i}"
            candidate = r.name[: 64 - len(suffix)] + suffix
            if candidate not in taken:
                return candidate
            i += 1
