"""Access: who a connection is, what its token allows, and the refusals' wording.

The hub's part that owns authentication (the token file behind
:class:`wsbus.auth.Gate`, the open sessions of each token, revocation) and the
channel and name checks. The sentences a refusal carries are built here, once:
the websocket hub and the HTTP shim (``compat/http.py``) say the same thing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence

from .auth import Gate, TokenRecord, may_act_as, may_use_channel, reads_all
from .errors import ErrorCode, FrameError
from .schema import Hello
from .session import Session

__all__ = ["Access", "channels_refused", "names_refused"]

log = logging.getLogger("wsbus.hub")


def _listed(values: list[str], quoted: bool) -> str:
    return ", ".join(map(repr, values) if quoted else values)


def channels_refused(
    grant: TokenRecord, channels: Iterable[str | None], quoted: bool = False
) -> str | None:
    """Why ``grant`` may not use some of ``channels``, or None when it may use all
    (``quoted``: each channel as a Python string literal, for one asked by name)."""
    denied = [c for c in channels if c is not None and not may_use_channel(grant, c)]
    if not denied:
        return None
    return f"token {grant.id} ({grant.name}) may not use channel {_listed(denied, quoted)}"


def names_refused(grant: TokenRecord, names: Iterable[str], quoted: bool = False) -> str | None:
    """Why ``grant`` may not act as some of ``names``, or None when it may."""
    denied = [n for n in names if not may_act_as(grant, n)]
    if not denied:
        return None
    return f"token {grant.id} ({grant.name}) may not act as {_listed(denied, quoted)}"


class Access:
    """Authentication and authorization for one hub (``gate`` None: no tokens)."""

    def __init__(self, gate: Gate | None, max_identity_connections: int = 64) -> None:
        #: the token file (None: no authentication, the hub is loopback-only)
        self.gate = gate
        self.max_identity_connections = max_identity_connections
        #: token id -> the open sessions it authenticated
        self._by_grant: dict[str, set[Session]] = {}
        #: called after the token file changed (e.g. to re-check pending long-polls)
        self.listeners: list[Callable[[], None]] = []

    def authenticate(
        self, session: Session, hello: Hello, names: list[str], channels: list[str]
    ) -> tuple[list[str], list[str]]:
        """Check the session's token against what ``hello`` asks; sets
        ``session.grant`` and returns the names granted and those refused (a bridge
        keeps serving the names it may). Without a gate everything is granted."""
        if self.gate is None:
            return names, []
        grant = self.gate.verify(session.token if session.token is not None else hello.token)
        if grant is None:
            raise FrameError(
                ErrorCode.UNAUTHORIZED,
                "this hub needs a valid token (Authorization: Bearer, or WSBUS_TOKEN for "
                "the wsbus tools): none given, or it is unknown or revoked",
            )
        if grant.role == "metrics":
            raise FrameError(
                ErrorCode.FORBIDDEN,
                f"token {grant.id} ({grant.name}) is a metrics token: it reads /metrics on "
                "the HTTP port only",
            )
        if not names and grant.role != "admin":
            names = [grant.name] if grant.role == "agent" else list(grant.names)
        forbidden = [n for n in names if not may_act_as(grant, n)]
        why = names_refused(grant, forbidden)
        if why is not None and hello.kind != "bridge":
            raise FrameError(ErrorCode.FORBIDDEN, why)
        refused = channels_refused(grant, channels)
        if refused is not None:
            raise FrameError(ErrorCode.FORBIDDEN, refused)
        if hello.watch and not reads_all(grant):
            raise FrameError(ErrorCode.FORBIDDEN, "watching a channel needs an admin token")
        open_now = len(self._by_grant.get(grant.id, ()))
        if open_now >= self.max_identity_connections:
            raise FrameError(
                ErrorCode.TOO_MANY_CONNECTIONS,
                f"token {grant.id} ({grant.name}) already has {open_now} connections "
                f"(max_identity_connections)",
            )
        session.grant = grant
        return [n for n in names if n not in forbidden], forbidden

    def opened(self, session: Session) -> None:
        """Count a welcomed session against its token."""
        if session.grant is not None:
            self._by_grant.setdefault(session.grant.id, set()).add(session)

    def closed(self, session: Session) -> None:
        """Stop counting a session that went away."""
        if session.grant is None:
            return
        mine = self._by_grant.get(session.grant.id)
        if mine is not None:
            mine.discard(session)
            if not mine:
                del self._by_grant[session.grant.id]

    def check_channels(
        self, session: Session, channels: Sequence[str | None], ref: str | None = None
    ) -> None:
        """Refuse (``forbidden``) a channel the session's token does not allow."""
        grant = getattr(session, "grant", None)  # the core tests pass no session
        if grant is None:
            return
        refused = channels_refused(grant, channels)
        if refused is not None:
            raise FrameError(ErrorCode.FORBIDDEN, refused, ref)

    def check_name(self, session: Session, name: str, ref: str | None = None) -> None:
        """Refuse (``forbidden``) a name the session's token may not act for."""
        grant = getattr(session, "grant", None)
        if grant is None:
            return
        refused = names_refused(grant, [name], quoted=True)
        if refused is not None:
            raise FrameError(ErrorCode.FORBIDDEN, refused, ref)

    def revoked(self, sessions: Iterable[Session]) -> list[Session]:
        """Re-read the token file if it changed; the sessions whose token is gone or
        revoked (the caller closes them with 4001). Tells the listeners."""
        if self.gate is None or not self.gate.refresh():
            return []
        gone = [s for s in sessions if s.grant is not None and not self.gate.valid(s.grant)]
        for session in gone:
            assert session.grant is not None
            log.info("token %s revoked: closing session %s", session.grant.id, session.id)
        for listener in self.listeners:
            try:
                listener()
            except Exception:
                log.exception("token listener failed")
        return gone
