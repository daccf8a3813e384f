"""The token store (wsbus.auth), without sockets, and ``wsbus token`` run as a command."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wsbus.auth import (
    AuthError,
    TokenFileError,
    TokenRecord,
    TokenStore,
    default_auth_path,
    may_act_as,
    may_scrape,
    may_use_channel,
    party_of,
    reads_all,
)

from .test_cli import one_line_error

posix_only = pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")


@pytest.fixture
def store(tmp_path: Path) -> TokenStore:
    return TokenStore(tmp_path / "auth" / "tokens.json").load()


def secret_of(token: str) -> str:
    return token.split("_", 2)[2]


# ------------------------------------------------------------------ create / verify


def test_create_then_verify(store: TokenStore) -> None:
    token = store.create("alice")
    assert token.startswith("wsbus_")
    rec = store.verify(token)
    assert rec is not None
    assert (rec.name, rec.role, rec.channels, rec.names, rec.revoked) == (
        "alice",
        "agent",
        [],
        ["alice"],
        None,
    )
    assert token.split("_", 2)[1] == rec.id and len(rec.id) == 8
    # a fresh store reading the same file verifies it too
    again = TokenStore(store.path).load()
    assert again.verify(token) == rec
    assert again.list() == [rec]


def test_tokens_are_distinct(store: TokenStore) -> None:
    tokens = {store.create("alice") for _ in range(20)}
    assert len(tokens) == 20
    assert len({r.id for r in store.list()}) == 20
    assert all(store.verify(t) is not None for t in tokens)


def test_wrong_secret_unknown_id_and_revoked_are_refused(store: TokenStore) -> None:
    token = store.create("alice")
    prefix, token_id, secret = token.split("_", 2)
    flipped = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    assert store.verify(f"{prefix}_{token_id}_{flipped}") is None
    other = "0" * 8 if token_id != "0" * 8 else "1" * 8
    assert store.verify(f"{prefix}_{other}_{secret}") is None
    # a secret that is valid for another token does not open this one
    token2 = store.create("bob")
    assert store.verify(f"{prefix}_{token_id}_{secret_of(token2)}") is None
    assert store.revoke(token_id)
    assert store.verify(token) is None
    assert TokenStore(store.path).load().verify(token) is None
    assert store.verify(token2) is not None


MALFORMED = [
    "",
    "wsbus_",
    "wsbus__",
    "wsbus___",
    "wsbus_abc_def",
    "bearer wsbus_00000000_xxxxxxxxxxxxxxxxxxxx",
    "wsbus_0000000g_xxxxxxxxxxxxxxxxxxxx",
    "wsbus_00000000_short",
    "wsbus_00000000_" + "x" * 10_000,
    "WSBUS_00000000_xxxxxxxxxxxxxxxxxxxx",
    "wsbus_00000000_xxxxxxxxxxxxxxxxxxxx\n",
    "wsbus_00000000_xxxxxxxxxxxxxxx\x00xxxx",
    "wsbus_00000000_xxxxxxxxxxxxxxxxxxxé",
    "\udcff" * 50,
    "x" * 1_000_000,
]


@pytest.mark.parametrize("token", MALFORMED)
def test_malformed_strings_are_none(store: TokenStore, token: str) -> None:
    store.create("alice")
    assert store.verify(token) is None


def test_a_real_token_with_garbage_around_it_is_refused(store: TokenStore) -> None:
    token = store.create("alice")
    for bad in (
        f" {token}",
        f"{token} ",
        f"{token}\n",
        f"Bearer {token}",
        token + "x",
        token[:-1],
        token.upper(),
    ):
        assert store.verify(bad) is None, bad


@pytest.mark.parametrize(
    "value", [None, 0, 1.5, b"wsbus_00000000_xxxxxxxxxxxxxxxxxxxx", ["wsbus_"], {}, object()]
)
def test_non_strings_are_none(store: TokenStore, value: object) -> None:
    store.create("alice")
    assert store.verify(value) is None


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    value=st.one_of(
        st.text(),
        st.binary(),
        st.from_regex(r"wsbus_[0-9a-f]{8}_[A-Za-z0-9_-]{16,64}", fullmatch=True),
        st.builds(lambda s: "wsbus_" + s, st.text()),
        st.sampled_from([int, float, bool, bytes, list, dict, tuple, complex, type(None)]).flatmap(
            st.from_type
        ),
    )
)
def test_verify_never_raises(store: TokenStore, value: Any) -> None:
    if not store.list():
        store.create("alice")
    assert store.verify(value) is None


@settings(max_examples=100, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(min_size=1, max_size=43))
def test_verify_with_a_known_id_and_any_secret(store: TokenStore, secret: str) -> None:
    if not store.list():
        store.create("alice")
    token_id = store.list()[0].id
    assert store.verify(f"wsbus_{token_id}_{secret}") is None


# ------------------------------------------------------------------ the file


def test_only_the_hash_is_on_disk(store: TokenStore) -> None:
    token = store.create("alice")
    store.create("bob")
    text = store.path.read_text()
    assert secret_of(token) not in text
    assert token not in text
    data = json.loads(text)
    assert data["version"] == 1
    assert len(data["tokens"]) == 2
    assert all(len(t["hash"]) == 64 for t in data["tokens"])


@posix_only
def test_file_is_0600_and_a_new_directory_0700(store: TokenStore) -> None:
    store.create("alice")
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.path.parent.stat().st_mode) == 0o700
    assert [p.name for p in store.path.parent.iterdir()] == ["tokens.json"]  # no temp left


@posix_only
def test_loose_mode_is_fixed_on_save(tmp_path: Path) -> None:
    s = TokenStore(tmp_path / "tokens.json").load()
    s.create("alice")
    s.path.chmod(0o644)
    s2 = TokenStore(s.path).load()
    s2.create("bob")
    assert stat.S_IMODE(s.path.stat().st_mode) == 0o600


def test_missing_file_is_empty(tmp_path: Path) -> None:
    s = TokenStore(tmp_path / "nope" / "tokens.json").load()
    assert s.list() == []
    assert not (tmp_path / "nope").exists()  # loading writes nothing


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b"[]",
        b'{"version": 1, "tokens": [{"id": "x"}]}',
        b'{"version": 1, "tokens": [{"id": "00000000", "name": "bad name", "role": "agent",'
        b' "channels": [], "names": [], "hash": "", "created": 0}]}',
        b'{"version": 1, "tokens": [{"id": "00000000", "name": "a", "role": "root",'
        b' "channels": [], "names": [], "hash": "", "created": 0}]}',
        b'{"version": 2, "tokens": []}',
        b"\xff\xfe",
    ],
)
def test_bad_file_is_one_sentence(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "tokens.json"
    path.write_bytes(content)
    with pytest.raises(TokenFileError) as info:
        TokenStore(path).load()
    message = str(info.value)
    assert str(path) in message and "\n" not in message


def test_duplicate_ids_are_refused(tmp_path: Path) -> None:
    rec = TokenRecord(
        id="00000000",
        name="a",
        role="agent",
        channels=[],
        names=["a"],
        hash="0" * 64,
        created=0.0,
    )
    path = tmp_path / "tokens.json"
    path.write_bytes(msgspec.json.encode({"version": 1, "tokens": [rec, rec]}))
    with pytest.raises(TokenFileError, match="twice"):
        TokenStore(path).load()


def test_default_path_is_in_the_config_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    monkeypatch.setenv("HOME", str(tmp_path))
    path = default_auth_path()
    assert path.name == "tokens.json" and path.parent.name == "wsbus"


# ------------------------------------------------------------------ create's rules


@pytest.mark.parametrize(
    "kwargs",
    [
        {"name": "bad name"},
        {"name": "alice\n"},
        {"name": "-alice"},
        {"name": ""},
        {"name": "alice", "role": "root"},
        {"name": "alice", "channels": ["no/slash"]},
        {"name": "alice", "names": ["bob"]},
        {"name": "host1", "role": "bridge"},
        {"name": "host1", "role": "bridge", "names": ["ok", "not ok"]},
    ],
)
def test_create_refuses(store: TokenStore, kwargs: dict[str, Any]) -> None:
    with pytest.raises(AuthError) as info:
        store.create(**kwargs)
    assert not isinstance(info.value, TokenFileError)
    assert store.list() == []
    assert not store.path.exists()


def test_create_keeps_channels_and_names(store: TokenStore) -> None:
    store.create("alice", channels=["ops", "dev", "ops"], names=["alice"])
    store.create("host1", role="bridge", channels=["ops"], names=["alice", "bob"])
    store.create("root", role="admin")
    agent, bridge, admin = store.list()
    assert (agent.channels, agent.names) == (["ops", "dev"], ["alice"])
    assert (bridge.role, bridge.channels, bridge.names) == ("bridge", ["ops"], ["alice", "bob"])
    assert (admin.role, admin.names) == ("admin", ["root"])


# ------------------------------------------------------------------ revoke


def test_revoke_by_id(store: TokenStore) -> None:
    t1 = store.create("alice")
    t2 = store.create("alice")
    rec1 = store.verify(t1)
    assert rec1 is not None
    done = store.revoke(rec1.id)
    assert [r.id for r in done] == [rec1.id] and done[0].revoked is not None
    assert store.verify(t1) is None and store.verify(t2) is not None
    assert store.revoke(rec1.id) == []  # already revoked: nothing live matched


def test_revoke_by_name_takes_every_live_token_of_it(store: TokenStore) -> None:
    t1 = store.create("alice")
    t2 = store.create("alice")
    t3 = store.create("bob")
    done = store.revoke("alice")
    assert sorted(r.id for r in done) == sorted(r.id for r in store.list() if r.name == "alice")
    assert store.verify(t1) is None and store.verify(t2) is None
    assert store.verify(t3) is not None
    assert store.revoke("alice") == []
    assert store.revoke("nobody") == []
    # revoked tokens stay listed, marked
    assert [r.revoked is not None for r in TokenStore(store.path).load().list()] == [
        True,
        True,
        False,
    ]


# ------------------------------------------------------------------ policy


def record(role: str, name: str = "x", channels: list[str] | None = None, **kw: Any) -> TokenRecord:
    return msgspec.convert(
        {
            "id": "00000000",
            "name": name,
            "role": role,
            "channels": channels or [],
            "names": kw.pop("names", [name]),
            "hash": "0" * 64,
            "created": 0.0,
            **kw,
        },
        TokenRecord,
    )


def test_may_act_as() -> None:
    agent = record("agent", "alice")
    assert may_act_as(agent, "alice")
    assert not may_act_as(agent, "bob")
    # even a hand-edited names list does not let an agent speak for others
    assert not may_act_as(record("agent", "alice", names=["alice", "bob"]), "bob")
    bridge = record("bridge", "host1", names=["alice", "bob"])
    assert may_act_as(bridge, "alice") and may_act_as(bridge, "bob")
    assert not may_act_as(bridge, "carol")
    assert not may_act_as(bridge, "host1")
    admin = record("admin", "root")
    assert may_act_as(admin, "anyone")
    assert not may_act_as(record("admin", "root", revoked=1.0), "root")
    assert not may_act_as(record("agent", "alice", revoked=1.0), "alice")


def test_may_use_channel() -> None:
    assert may_use_channel(record("agent"), "anything")
    limited = record("agent", channels=["ops", "dev"])
    assert may_use_channel(limited, "ops") and may_use_channel(limited, "dev")
    assert not may_use_channel(limited, "default")
    assert not may_use_channel(record("bridge", channels=["ops"]), "dev")
    assert may_use_channel(record("admin", channels=["ops"]), "dev")
    assert not may_use_channel(record("agent", revoked=1.0), "ops")


# ------------------------------------------------------------------ the command


def wsbus(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wsbus", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=30,
    )


def test_token_create_list_revoke(env: dict[str, str], tmp_path: Path) -> None:
    auth = tmp_path / "tokens.json"
    r = wsbus(env, "token", "create", "alice", "--channel", "ops", "--auth", str(auth))
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("\n") == 1
    token = r.stdout.strip()
    assert str(auth) in r.stderr and "store it now" in r.stderr
    rec = TokenStore(auth).load().verify(token)
    assert rec is not None and (rec.name, rec.channels) == ("alice", ["ops"])

    # options before the name, a bridge with names
    r = wsbus(
        env, "token", "create", "--role", "bridge", "--name", "alice", "--name", "bob", "host1",
        "--auth", str(auth),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    bridge = TokenStore(auth).load().verify(r.stdout.strip())
    assert bridge is not None and bridge.names == ["alice", "bob"]

    r = wsbus(env, "token", "list", "--auth", str(auth))
    assert r.returncode == 0, r.stderr
    assert rec.id in r.stdout and "alice" in r.stdout and "host1" in r.stdout
    assert secret_of(token) not in r.stdout and rec.hash not in r.stdout

    r = wsbus(env, "token", "list", "--json", "--auth", str(auth))
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [(o["id"], o["name"], o["role"]) for o in rows] == [
        (rec.id, "alice", "agent"),
        (bridge.id, "host1", "bridge"),
    ]
    assert set(rows[0]) == {"id", "name", "role", "channels", "names", "created", "revoked"}
    assert rows[0]["revoked"] is None

    r = wsbus(env, "token", "revoke", rec.id, "--auth", str(auth))
    assert r.returncode == 0, r.stderr
    assert rec.id in r.stdout
    assert TokenStore(auth).load().verify(token) is None
    r = wsbus(env, "token", "list", "--json", "--auth", str(auth))
    assert json.loads(r.stdout.splitlines()[0])["revoked"] is not None

    r = wsbus(env, "token", "revoke", "host1", "--auth", str(auth))
    assert r.returncode == 0, r.stderr
    r = wsbus(env, "token", "revoke", "host1", "--auth", str(auth))
    assert r.returncode == 1
    assert "host1" in one_line_error(r)


def test_token_default_file_is_in_the_config_dir(env: dict[str, str]) -> None:
    r = wsbus(env, "token", "create", "alice")
    assert r.returncode == 0, r.stderr
    path = Path(env["HOME"]) / ".config" / "wsbus" / "tokens.json"
    if sys.platform.startswith("linux"):
        assert path.exists() and str(path) in r.stderr
        assert TokenStore(path).load().verify(r.stdout.strip()) is not None


@pytest.mark.parametrize(
    ("args", "status"),
    [
        (["create", "alice", "--role", "root"], 2),
        (["create", "bad name"], 2),
        (["create", "alice", "--channel", "a/b"], 2),
        (["create", "alice", "--name", "bob"], 2),
        (["create", "host1", "--role", "bridge"], 2),
        (["revoke", "nobody"], 1),
        (["revoke", "0000beef"], 1),
        ([], 2),
    ],
)
def test_token_errors_are_one_line(
    env: dict[str, str], tmp_path: Path, args: list[str], status: int
) -> None:
    auth = tmp_path / "tokens.json"
    r = wsbus(env, "token", *args, "--auth", str(auth)) if args else wsbus(env, "token")
    assert r.returncode == status, r.stderr
    one_line_error(r)
    assert not auth.exists()


def test_token_bad_file_is_one_line(env: dict[str, str], tmp_path: Path) -> None:
    auth = tmp_path / "tokens.json"
    auth.write_text("{oops", encoding="utf-8")
    for args in (["list"], ["create", "alice"], ["revoke", "alice"]):
        r = wsbus(env, "token", *args, "--auth", str(auth))
        assert r.returncode == 1, r.stderr
        assert str(auth) in one_line_error(r)
    assert auth.read_text(encoding="utf-8") == "{oops"


def test_token_help_has_examples(env: dict[str, str]) -> None:
    for args in (["token", "--help"], ["token", "create", "--help"]):
        r = wsbus(env, *args)
        assert r.returncode == 0, r.stderr
        assert "examples:" in r.stdout and "wsbus token create" in r.stdout


def test_a_metrics_token_reads_metrics_and_nothing_else(store: TokenStore) -> None:
    token = store.create("prometheus", role="metrics")
    rec = store.verify(token)
    assert rec is not None and rec.role == "metrics"
    assert may_scrape(rec) and not reads_all(rec)
    assert not may_act_as(rec, "prometheus") and not may_use_channel(rec, "default")
    assert party_of(rec) == []
    with pytest.raises(AuthError, match="no channels or names"):
        store.create("prom2", role="metrics", channels=["ops"])
    assert not may_scrape(store.verify(store.create("alice")))  # type: ignore[arg-type]
