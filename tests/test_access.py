"""The hub's access part without sockets: tokens, the checks and their wording."""

from __future__ import annotations

from pathlib import Path

import pytest

from wsbus.access import Access, channels_refused, names_refused
from wsbus.auth import Gate, TokenStore
from wsbus.errors import ErrorCode, FrameError
from wsbus.schema import Hello

from .test_hub import FakeSession


def _access(tmp_path: Path, limit: int = 64) -> tuple[Access, TokenStore, dict[str, str]]:
    store = TokenStore(tmp_path / "tokens.json")
    tokens = {
        "alice": store.create("alice"),
        "ops": store.create("ops", channels=["ops"]),
        "bridge": store.create("box", role="bridge", names=["claude"]),
    }
    return Access(Gate(store.path), limit), store, tokens


def _session(token: str | None) -> FakeSession:
    s = FakeSession()
    s.token = token
    return s


def test_without_a_gate_everything_is_granted() -> None:
    access = Access(None)
    s = _session(None)
    assert access.authenticate(s, Hello(name="x"), ["x"], ["any"]) == (["x"], [])
    access.check_channels(s, ["any"])
    access.check_name(s, "anyone")
    assert access.revoked([s]) == []


def test_a_token_names_its_sender_and_bounds_channels(tmp_path: Path) -> None:
    access, _, tokens = _access(tmp_path)
    s = _session(tokens["alice"])
    assert access.authenticate(s, Hello(), [], ["default"]) == (["alice"], [])
    with pytest.raises(FrameError) as err:
        access.authenticate(_session(tokens["alice"]), Hello(name="bob"), ["bob"], [])
    assert err.value.code == ErrorCode.FORBIDDEN and "may not act as bob" in err.value.message
    with pytest.raises(FrameError) as err:
        access.authenticate(_session(tokens["ops"]), Hello(), [], ["ops", "dev"])
    assert "may not use channel dev" in err.value.message
    with pytest.raises(FrameError) as err:
        access.authenticate(_session("wsbus_00000000_nope"), Hello(), [], [])
    assert err.value.code == ErrorCode.UNAUTHORIZED
    with pytest.raises(FrameError) as err:
        access.authenticate(_session(tokens["alice"]), Hello(watch=True), [], [])
    assert "admin" in err.value.message


def test_a_bridge_keeps_the_names_it_may_serve(tmp_path: Path) -> None:
    access, _, tokens = _access(tmp_path)
    s = _session(tokens["bridge"])
    granted = access.authenticate(s, Hello(kind="bridge"), ["claude", "codex"], [])
    assert granted == (["claude"], ["codex"])


def test_one_wording_for_the_hub_and_the_shim(tmp_path: Path) -> None:
    access, _, tokens = _access(tmp_path)
    s = _session(tokens["ops"])
    access.authenticate(s, Hello(), [], ["ops"])
    assert s.grant is not None
    with pytest.raises(FrameError) as err:
        access.check_name(s, "bob", "r1")
    assert err.value.message == names_refused(s.grant, ["bob"], quoted=True)
    assert err.value.message.endswith("may not act as 'bob'") and err.value.ref == "r1"
    with pytest.raises(FrameError) as err:
        access.check_channels(s, ["dev"])
    assert err.value.message == channels_refused(s.grant, ["dev"])
    assert channels_refused(s.grant, ["ops", None]) is None


def test_connections_per_token_are_bounded_and_released(tmp_path: Path) -> None:
    access, _, tokens = _access(tmp_path, limit=2)
    sessions = [_session(tokens["alice"]) for _ in range(3)]
    for s in sessions[:2]:
        access.authenticate(s, Hello(), [], [])
        access.opened(s)
    with pytest.raises(FrameError) as err:
        access.authenticate(sessions[2], Hello(), [], [])
    assert err.value.code == ErrorCode.TOO_MANY_CONNECTIONS
    access.closed(sessions[0])
    access.authenticate(sessions[2], Hello(), [], [])


def test_revocation_names_the_sessions_to_close_and_tells_listeners(tmp_path: Path) -> None:
    access, store, tokens = _access(tmp_path)
    alice, ops = _session(tokens["alice"]), _session(tokens["ops"])
    for s in (alice, ops):
        access.authenticate(s, Hello(), [], [])
    told: list[bool] = []
    access.listeners.append(lambda: told.append(True))
    assert access.revoked([alice, ops]) == []  # the file did not change
    store.revoke("alice")
    assert access.revoked([alice, ops]) == [alice]
    assert told == [True]
