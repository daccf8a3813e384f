"""``wsbus.routing``: who receives what, and presence, with plain objects instead of sockets."""

from __future__ import annotations

from dataclasses import dataclass, field

from wsbus.routing import PresenceChange, Routable, Router, entitled
from wsbus.schema import BROADCAST


@dataclass(eq=False)
class Sess:
    """The minimum the router needs: names, channels, watch, how it takes presence."""

    names: tuple[str, ...]
    watch: bool = False
    channels: set[str] = field(default_factory=set)
    label: str = ""
    wants_presence: bool = True
    batch: bool = False

    def __repr__(self) -> str:
        return f"Sess({self.label or '/'.join(self.names)})"


def make(*names: str, watch: bool = False, label: str = "") -> Sess:
    return Sess(names=tuple(names), watch=watch, label=label)


def ids(sessions: list[Routable]) -> list[int]:
    """Identities, sorted; duplicates are kept so a double delivery shows up."""
    return sorted(id(s) for s in sessions)


def same(actual: list[Routable], *expected: Sess) -> bool:
    return ids(actual) == sorted(id(s) for s in expected)


def up(channel: str, name: str) -> PresenceChange:
    return PresenceChange(channel, name, True)


def down(channel: str, name: str) -> PresenceChange:
    return PresenceChange(channel, name, False)


# ------------------------------------------------------------------ direct events


def test_direct_reaches_only_the_addressees_sessions_on_that_channel() -> None:
    r = Router()
    bob1, bob2, bob_other = make("bob", label="b1"), make("bob", label="b2"), make("bob")
    alice, carol = make("alice"), make("carol")
    r.attach(bob1, ["default"])
    r.attach(bob2, ["default", "ops"])
    r.attach(bob_other, ["ops"])
    r.attach(alice, ["default"])
    r.attach(carol, ["default"])

    assert same(r.recipients("default", "alice", "bob"), bob1, bob2)
    assert same(r.recipients("ops", "alice", "bob"), bob2, bob_other)
    assert same(r.recipients("default", "bob", "carol"), carol)
    # nobody of that name on the channel, and an unknown channel
    assert r.recipients("ops", "bob", "alice") == []
    assert r.recipients("nowhere", "alice", "bob") == []


def test_direct_to_self_reaches_own_sessions() -> None:
    r = Router()
    a1, a2 = make("alice"), make("alice")
    r.attach(a1, ["default"])
    r.attach(a2, ["default"])
    assert same(r.recipients("default", "alice", "alice"), a1, a2)


# ------------------------------------------------------------------ broadcasts


def test_broadcast_reaches_everyone_but_the_senders_own_sessions() -> None:
    r = Router()
    a1, a2 = make("alice"), make("alice")
    bob, carol, elsewhere = make("bob"), make("carol"), make("dave")
    for s in (a1, a2, bob, carol):
        r.attach(s, ["default"])
    r.attach(elsewhere, ["ops"])

    assert same(r.recipients("default", "alice", BROADCAST), bob, carol)
    assert same(r.recipients("default", "bob", BROADCAST), a1, a2, carol)
    # a sender that is not connected at all: everyone on the channel
    assert same(r.recipients("default", "zed", BROADCAST), a1, a2, bob, carol)
    assert same(r.recipients("ops", "alice", BROADCAST), elsewhere)
    assert r.recipients("empty", "alice", BROADCAST) == []


def test_broadcast_reaches_a_bridge_for_its_other_names() -> None:
    # a bridge acting for alice and bot must deliver bot's broadcast to alice
    r = Router()
    bridge, bob, carol = make("alice", "bot"), make("bob"), make("carol")
    r.attach(bridge, ["default"])
    r.attach(bob, ["default"])
    r.attach(carol, ["default"])
    assert same(r.recipients("default", "bot", BROADCAST), bob, carol, bridge)
    assert same(r.recipients("default", "bob", BROADCAST), bridge, carol)
    assert entitled(("alice", "bot"), False, "bot", BROADCAST)
    assert not entitled(("bob",), False, "bob", BROADCAST)


# ------------------------------------------------------------------ watchers


def test_watchers_see_everything_on_their_channel_once() -> None:
    r = Router()
    watcher = make("ops", watch=True)
    other_watcher = make("mon", watch=True)
    alice, bob = make("alice"), make("bob")
    r.attach(watcher, ["default"])
    r.attach(other_watcher, ["elsewhere"])
    r.attach(alice, ["default"])
    r.attach(bob, ["default"])

    # direct events between others
    assert same(r.recipients("default", "alice", "bob"), bob, watcher)
    # direct event to a name that is not online: only the watcher
    assert same(r.recipients("default", "alice", "nobody"), watcher)
    # broadcasts, including the watcher's own
    assert same(r.recipients("default", "alice", BROADCAST), bob, watcher)
    assert same(r.recipients("default", "ops", BROADCAST), alice, bob, watcher)
    # a watcher on another channel sees nothing of this one
    assert same(r.recipients("elsewhere", "alice", "bob"), other_watcher)


def test_watcher_that_is_also_the_addressee_gets_one_copy() -> None:
    r = Router()
    watcher = make("ops", watch=True)
    ops2 = make("ops")
    alice = make("alice")
    for s in (watcher, ops2, alice):
        r.attach(s, ["default"])
    got = r.recipients("default", "alice", "ops")
    assert len(got) == 2
    assert same(got, watcher, ops2)


def test_detached_watcher_stops_seeing_events() -> None:
    r = Router()
    watcher, bob = make("ops", watch=True), make("bob")
    r.attach(watcher, ["default"])
    r.attach(bob, ["default"])
    r.detach(watcher)
    assert same(r.recipients("default", "alice", "bob"), bob)
    assert r.recipients("default", "alice", "nobody") == []


# ------------------------------------------------------------------ presence


def test_presence_up_on_first_session_down_on_last() -> None:
    r = Router()
    b1, b2 = make("bob"), make("bob")
    assert r.attach(b1, ["default"]) == [up("default", "bob")]
    assert r.attach(b2, ["default"]) == []
    assert set(r.online("default")) == {"bob"}
    assert r.detach(b1) == []
    assert set(r.online("default")) == {"bob"}
    assert same(r.sessions_of("default", "bob"), b2)
    assert r.detach(b2) == [down("default", "bob")]
    assert r.online("default") == {}
    assert r.sessions_of("default", "bob") == []
    assert r.channel_sessions("default") == []


def test_presence_is_per_channel() -> None:
    r = Router()
    b1, b2 = make("bob"), make("bob")
    assert r.attach(b1, ["a", "b"]) == [up("a", "bob"), up("b", "bob")]
    assert r.attach(b2, ["b", "c"]) == [up("c", "bob")]
    assert r.detach(b1) == [down("a", "bob")]
    changes = sorted(r.detach(b2), key=lambda c: c.channel)
    assert changes == [down("b", "bob"), down("c", "bob")]


def test_attach_twice_is_idempotent() -> None:
    r = Router()
    b = make("bob")
    assert r.attach(b, ["default"]) == [up("default", "bob")]
    assert r.attach(b, ["default"]) == []
    assert same(r.channel_sessions("default"), b)
    assert same(r.recipients("default", "alice", "bob"), b)
    assert r.detach(b) == [down("default", "bob")]
    assert r.detach(b) == []


# ------------------------------------------------------------------ detach of some channels


def test_detach_selected_channels_only() -> None:
    r = Router()
    bob, alice = make("bob"), make("alice")
    r.attach(bob, ["a", "b", "c"])
    r.attach(alice, ["a", "b", "c"])

    changes = r.detach(bob, ["b", "c"])
    assert sorted(changes, key=lambda c: c.channel) == [down("b", "bob"), down("c", "bob")]
    assert bob.channels == {"a"}
    assert same(r.recipients("a", "alice", "bob"), bob)
    assert r.recipients("b", "alice", "bob") == []
    assert same(r.recipients("b", "bob", BROADCAST), alice)
    assert r.recipients("c", "alice", BROADCAST) == []
    # detaching a channel the session is not on changes nothing
    assert r.detach(bob, ["zzz", "b"]) == []
    assert bob.channels == {"a"}
    # then the rest
    assert r.detach(bob) == [down("a", "bob")]
    assert bob.channels == set()
    assert r.recipients("a", "alice", "bob") == []


def test_attach_records_channels_on_the_session() -> None:
    r = Router()
    s = make("bob")
    r.attach(s, ["x", "y"])
    assert s.channels == {"x", "y"}
    assert same(r.channel_sessions("x"), s)


# ------------------------------------------------------------------ bridges (several names)


def test_bridge_session_acts_for_all_its_names() -> None:
    r = Router()
    bridge = make("alice", "bot")
    alice2 = make("alice")
    carol = make("carol")
    assert r.attach(bridge, ["default"]) == [up("default", "alice"), up("default", "bot")]
    assert r.attach(alice2, ["default"]) == []
    r.attach(carol, ["default"])

    assert same(r.recipients("default", "carol", "bot"), bridge)
    assert same(r.recipients("default", "carol", "alice"), bridge, alice2)
    # one copy even though the bridge matches the channel under two names
    assert len(r.recipients("default", "carol", BROADCAST)) == 2
    assert set(r.online("default")) == {"alice", "bot", "carol"}

    # the bridge leaves: bot goes down, alice stays up through alice2
    assert r.detach(bridge) == [down("default", "bot")]
    assert set(r.online("default")) == {"alice", "carol"}
    assert r.recipients("default", "carol", "bot") == []


# ------------------------------------------------------------------ entitled()


def test_entitled() -> None:
    # direct events: only the addressee
    assert entitled(["bob"], False, "alice", "bob")
    assert not entitled(["bob"], False, "alice", "carol")
    assert entitled(("alice", "bot"), False, "carol", "bot")
    # broadcasts: everyone but a session acting for the sender alone
    assert entitled(["bob"], False, "alice", BROADCAST)
    assert not entitled(["alice"], False, "alice", BROADCAST)
    assert entitled(("alice", "bot"), False, "bot", BROADCAST)
    # watchers: everything, their own broadcasts included
    assert entitled(["ops"], True, "alice", "bob")
    assert entitled(["ops"], True, "ops", BROADCAST)
    assert entitled([], True, "x", "y")
    assert not entitled([], False, "x", "y")


def test_entitled_agrees_with_recipients() -> None:
    """For every (sender, to), the router delivers exactly to the entitled sessions."""
    r = Router()
    sessions = [
        make("alice"),
        make("alice"),
        make("bob"),
        make("alice", "bot"),
        make("ops", watch=True),
        make("carol", "ops", watch=True),
    ]
    for s in sessions:
        r.attach(s, ["default"])
    names = ["alice", "bob", "bot", "ops", "carol", "nobody"]
    for sender in names:
        for to in [*names, BROADCAST]:
            expected = [s for s in sessions if entitled(s.names, s.watch, sender, to)]
            got = r.recipients("default", sender, to)
            assert same(got, *expected), (sender, to)


def test_names_with_a_trailing_newline_are_refused() -> None:
    # `$` in a Python pattern also matches before a final newline: the rules use \Z
    import msgspec
    import pytest

    from wsbus.schema import Hello, Send, valid_name, valid_thread

    assert not valid_name("alice\n") and not valid_thread("a/b\n")
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(b'{"op":"hello","name":"alice\\n"}', type=Hello)
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(b'{"op":"send","ref":"r","to":"bob\\n","body":"x"}', type=Send)
