"""Two machines, three commands each: ``wsbus serve --share``, ``wsbus token invite``,
``wsbus join`` — and what must be refused on the way.

A "machine" is a home of its own (HOME and the XDG directories, so its own config,
data and cursors) and, where a terminal is needed, a tmux server of its own. The hub
listens on loopback; everything else is as a user types it.
"""

from __future__ import annotations

import hashlib
import socket
import ssl
import stat
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from cryptography import x509

from wsbus.invite import Invite, InviteError, decode, encode
from wsbus.tls import SharePaths, default_names, ensure_ca, ensure_hub_cert, fingerprint

from .helpers import async_wait_for, wait_for
from .test_cli import Running, free_port, one_line_error, wsbus
from .tmuxkit import TMUX, TmuxServer

HEIGHT = 24


def home_env(env: dict[str, str], root: Path) -> dict[str, str]:
    """``env`` moved into a home of its own, with the config where a user has it."""
    root.mkdir(parents=True, exist_ok=True)
    e = {k: v for k, v in env.items() if k != "WSBUS_CONFIG"}
    e.update(
        HOME=str(root),
        XDG_CONFIG_HOME=str(root / ".config"),
        XDG_DATA_HOME=str(root / ".local" / "share"),
        XDG_STATE_HOME=str(root / ".local" / "state"),
        TERM="xterm-256color",
    )
    return e


def config_of(e: dict[str, str]) -> Path:
    return Path(e["XDG_CONFIG_HOME"]) / "wsbus" / "config.toml"


class SharedHub:
    """``wsbus serve --share`` on machine A (loopback ports)."""

    def __init__(self, env: dict[str, str], *extra: str) -> None:
        self.env = env
        self.port = free_port()
        self.proc = Running(
            env,
            "serve", "--share", "--host", "127.0.0.1", "--port", str(self.port),
            "--http-port", str(free_port()), *extra,
        )  # fmt: skip
        try:
            wait_for(
                lambda: (
                    any("invite a machine" in line for line in self.proc.out)
                    or self.proc.proc.poll() is not None
                ),
                20,
            )
        except AssertionError:
            raise AssertionError(f"hub not up: {self.proc.out} {self.proc.err}") from None
        assert self.proc.proc.poll() is None, self.proc.err

    def invite(self, *args: str) -> str:
        r = wsbus(self.env, "token", "invite", *args)
        assert r.returncode == 0, r.stderr
        line = r.stdout.strip()
        assert line.startswith("wsbus join wsbus1."), line
        return line.removeprefix("wsbus join ")


@pytest.fixture
def homes(env: dict[str, str], tmp_path: Path) -> tuple[dict[str, str], dict[str, str]]:
    return home_env(env, tmp_path / "a"), home_env(env, tmp_path / "b")


@pytest.fixture
def shared(homes: tuple[dict[str, str], dict[str, str]]) -> Iterator[SharedHub]:
    hub = SharedHub(homes[0])
    yield hub
    hub.proc.stop()


# ------------------------------------------------------------------ two machines


def _in_tmux(server: TmuxServer, session: str, e: dict[str, str], *args: str) -> None:
    command = ["env", "-i", *(f"{k}={v}" for k, v in e.items()), sys.executable, "-m", "wsbus"]
    server.tmux.new_session(session, [*command, *args], width=100, height=HEIGHT)


def _screen(server: TmuxServer, session: str) -> str:
    return "\n".join(server.tmux.capture_rows(session, 0, HEIGHT - 1))


async def _shows(server: TmuxServer, session: str, text: str, timeout: float = 15) -> None:
    try:
        await async_wait_for(lambda: text in _screen(server, session), timeout, 0.05)
    except AssertionError:
        raise AssertionError(f"{text!r} not on {session}:\n{_screen(server, session)}") from None


@pytest.mark.skipif(TMUX is None, reason="tmux is not installed")
async def test_two_machines_join_and_talk_with_receipts_in_three_commands_each(
    homes: tuple[dict[str, str], dict[str, str]],
) -> None:
    env_a, env_b = homes
    tmux_a, tmux_b = TmuxServer(), TmuxServer()
    hub: SharedHub | None = None
    try:
        # machine A, command 1: the hub, shared (auth + TLS from its own CA)
        hub = SharedHub(env_a)
        # machine A, command 2: an invite for bob
        code = hub.invite("bob")
        # machine B, command 1: join
        joined = wsbus(env_b, "join", code)
        assert joined.returncode == 0, joined.stderr
        assert "as bob on #default" in joined.stdout
        config = config_of(env_b)
        assert stat.S_IMODE(config.stat().st_mode) == 0o600
        saved = tomllib.loads(config.read_text())
        assert saved["url"].startswith("wss://") and saved["name"] == "bob"
        assert Path(saved["ca_file"]).read_bytes().startswith(b"-----BEGIN CERTIFICATE")
        # machine A, command 3: the chat (this machine was joined by serve --share)
        _in_tmux(tmux_a, "chat", env_a, "chat", "--as", "alice")
        await _shows(tmux_a, "chat", "connected │ #default", timeout=20)
        # machine B, command 2: a listener (acknowledges what it prints as read)
        _in_tmux(tmux_b, "listen", env_b, "listen")
        await _shows(tmux_b, "listen", "listening as bob")
        # machine B, command 3: a message to alice, confirmed by her read receipt
        sent = wsbus(env_b, "send", "alice", "--confirm", "hi alice, bob here")
        assert sent.returncode == 0, sent.stderr
        assert "delivered: alice (read)" in sent.stdout
        await _shows(tmux_a, "chat", "hi alice, bob here")
        # ... and alice answers from her chat: bob's listener prints it, she sees his receipt
        tmux_a.tmux.send_literal("chat", "@bob hello bob, from alice")
        tmux_a.tmux.send_enter("chat")
        await _shows(tmux_b, "listen", "from alice:")
        await _shows(tmux_b, "listen", "hello bob, from alice")
        await _shows(tmux_a, "chat", "bob read")
    finally:
        tmux_a.kill()
        tmux_b.kill()
        if hub is not None:
            hub.proc.stop()


def test_the_joined_token_is_bound_to_its_name_and_tls_is_verified(
    shared: SharedHub, homes: tuple[dict[str, str], dict[str, str]], tmp_path: Path
) -> None:
    env_b = homes[1]
    assert wsbus(env_b, "join", shared.invite("bob")).returncode == 0
    r = wsbus(env_b, "send", "--as", "mallory", "alice", "pretending")
    assert r.returncode == 4, r.stderr
    assert "mallory" in one_line_error(r)
    # another CA than the hub's: the hub's certificate is not trusted
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    r = wsbus({**env_b, "WSBUS_CA_FILE": str(other)}, "send", "alice", "hi")
    assert r.returncode == 3
    assert "not trusted" in one_line_error(r)


def test_a_damaged_code_is_refused_in_one_line(
    shared: SharedHub, homes: tuple[dict[str, str], dict[str, str]]
) -> None:
    env_b = homes[1]
    code = shared.invite("bob")
    middle = len(code) // 2
    flipped = code[:middle] + ("A" if code[middle] != "A" else "B") + code[middle + 1 :]
    for bad in (flipped, code[:-6], "hello"):
        r = wsbus(env_b, "join", bad)
        assert r.returncode == 2, (bad, r.stderr)
        line = one_line_error(r)
        assert "invite code" in line
    assert not config_of(env_b).exists()


def test_a_wrong_fingerprint_is_refused_before_the_token_is_sent(
    shared: SharedHub, homes: tuple[dict[str, str], dict[str, str]]
) -> None:
    env_b = homes[1]
    real = decode(shared.invite("bob"))
    forged = encode(Invite(urls=real.urls, token=real.token, ca_sha256=b"\x01" * 32))
    r = wsbus(env_b, "join", forged)
    assert r.returncode == 4, r.stderr
    assert "does not match the invite code" in one_line_error(r)
    assert not config_of(env_b).exists()
    assert not (config_of(env_b).parent / "hub-ca.pem").exists()


def test_a_revoked_invite_is_refused(
    shared: SharedHub, homes: tuple[dict[str, str], dict[str, str]]
) -> None:
    code = shared.invite("carol")
    assert wsbus(shared.env, "token", "revoke", "carol").returncode == 0
    r = wsbus(homes[1], "join", code)
    assert r.returncode == 4
    assert "refused the invite's token" in one_line_error(r)
    assert not config_of(homes[1]).exists()


def test_join_keeps_what_else_the_config_holds(
    shared: SharedHub, homes: tuple[dict[str, str], dict[str, str]]
) -> None:
    env_b = homes[1]
    config = config_of(env_b)
    config.parent.mkdir(parents=True)
    config.write_text("# my settings\ntimeout = 7.5\nurl = 'ws://old:1'\n")
    config.chmod(0o644)
    assert wsbus(env_b, "join", shared.invite("bob"), "--channel", "dev").returncode == 0
    text = config.read_text()
    assert "# my settings" in text
    saved = tomllib.loads(text)
    assert saved["timeout"] == 7.5 and saved["channel"] == "dev"
    assert saved["url"].startswith("wss://")
    assert stat.S_IMODE(config.stat().st_mode) == 0o600


def test_the_hubs_machine_is_joined_once_and_keeps_its_ca(
    homes: tuple[dict[str, str], dict[str, str]],
) -> None:
    env_a = homes[0]
    hub = SharedHub(env_a)
    try:
        first = tomllib.loads(config_of(env_a).read_text())
        r = wsbus(env_a, "send", "--as", "alice", "bob", "from the hub's machine")
        assert r.returncode == 0, r.stderr
        ca = fingerprint(Path(first["ca_file"]).read_bytes())
    finally:
        hub.proc.stop()
    hub = SharedHub(env_a)  # a restart: same CA, same token, no second admin token
    try:
        again = tomllib.loads(config_of(env_a).read_text())
        assert again["token"] == first["token"]
        assert fingerprint(Path(again["ca_file"]).read_bytes()) == ca
        tokens = wsbus(env_a, "token", "list", "--json").stdout.splitlines()
        assert len(tokens) == 1
        assert any("local clients use the token" in line for line in hub.proc.out)
    finally:
        hub.proc.stop()


def test_share_refuses_a_certificate_of_its_own_and_invite_needs_a_shared_hub(
    env: dict[str, str], tmp_path: Path
) -> None:
    e = home_env(env, tmp_path / "c")
    r = wsbus(e, "serve", "--share", "--tls-cert", "x.pem", "--tls-key", "k.pem")
    assert r.returncode == 2
    assert "--share makes its own certificate" in one_line_error(r)
    r = wsbus(e, "token", "invite", "bob")
    assert r.returncode == 1
    assert "wsbus serve --share" in one_line_error(r)


def test_ca_pem_is_served_on_both_ports_without_a_token(shared: SharedHub) -> None:
    ca = (Path(shared.env["XDG_DATA_HOME"]) / "wsbus" / "share" / "ca.pem").read_bytes()
    blind = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    blind.check_hostname = False
    blind.verify_mode = ssl.CERT_NONE
    import urllib.request

    http_port = next(
        line.split("https://127.0.0.1:")[1].split()[0]
        for line in shared.proc.out
        if "agent-bus HTTP shim" in line
    )
    for port in (shared.port, int(http_port)):
        with urllib.request.urlopen(
            f"https://127.0.0.1:{port}/ca.pem", context=blind, timeout=10
        ) as response:
            assert response.read() == ca


# ------------------------------------------------------------------ units


def test_invite_codes_round_trip_and_catch_damage() -> None:
    inv = Invite(
        urls=["wss://hub.lan:8765", "wss://127.0.0.1:8765"], token="t", ca_sha256=b"x" * 32
    )
    code = encode(inv)
    assert decode(code) == inv
    assert decode(f"  wsbus join {code}\n") == inv  # the whole line pasted
    with pytest.raises(InviteError, match="checksum"):
        middle = len(code) // 2  # the last character may only carry padding bits
        decode(code[:middle] + ("A" if code[middle] != "A" else "B") + code[middle + 1 :])
    with pytest.raises(InviteError, match="not a wsbus invite"):
        decode("https://example.com")
    plain = encode(Invite(urls=["ws://hub:1"], token="t", ca_sha256=b"x" * 32))
    with pytest.raises(InviteError, match="not a wss:// URL"):
        decode(plain)


def test_the_ca_is_made_once_private_and_signs_the_hub_certificate(tmp_path: Path) -> None:
    paths = SharePaths(tmp_path / "share")
    ca_pem = ensure_ca(paths)
    assert ensure_ca(paths) == ca_pem
    assert stat.S_IMODE(paths.folder.stat().st_mode) == 0o700
    for f in (paths.ca_key, paths.ca_cert):
        assert stat.S_IMODE(f.stat().st_mode) == 0o600
    der = ssl.PEM_cert_to_DER_cert(ca_pem.decode())
    assert fingerprint(ca_pem) == hashlib.sha256(der).hexdigest()

    cert, key = ensure_hub_cert(paths, ["hub.lan", "127.0.0.1"])
    first = cert.read_bytes()
    assert ensure_hub_cert(paths, ["hub.lan", "127.0.0.1"])[0].read_bytes() == first
    leaf = x509.load_pem_x509_certificate(first)
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["hub.lan"]
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    # a server context loads the chain, a client trusting only the CA verifies it
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert, key)
    client = ssl.create_default_context(cafile=str(paths.ca_cert))
    assert client.cert_store_stats()["x509_ca"] == 1
    # other names: a new certificate from the same CA
    ensure_hub_cert(paths, ["other.lan"])
    assert cert.read_bytes() != first
    assert paths.ca_cert.read_bytes() == ca_pem


def test_a_lone_half_of_the_ca_is_an_error_not_a_new_ca(tmp_path: Path) -> None:
    paths = SharePaths(tmp_path / "share")
    ensure_ca(paths)
    paths.ca_key.unlink()
    with pytest.raises(Exception, match="is missing but its pair is there"):
        ensure_ca(paths)


def test_default_names_cover_loopback_and_this_host() -> None:
    names = default_names()
    assert {"localhost", "127.0.0.1"} <= set(names)
    assert len(names) == len(set(names))
    assert not any(n.startswith("fe80") for n in names)
    assert names[0] == socket.gethostname()
