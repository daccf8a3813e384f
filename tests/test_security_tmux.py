"""The issue's "done when": agents on several machines share one hub started with
``--auth`` and TLS; every client (bridge, agent_comms, wsbus) carries its token from
the environment, and a machine cannot act for another machine's agents."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import trustme
from wsbus.cli.conventions import wait_receipt

from wsbus.auth import TokenStore
from wsbus.client import Client

from .helpers import HubProcess, wait_for
from .tmuxkit import TMUX, Machine

pytestmark = pytest.mark.skipif(TMUX is None, reason="tmux is not installed")


async def test_two_machines_share_a_tls_hub_with_a_token_each(
    hub_factory: Callable[..., HubProcess], env: dict[str, str], tmp_path: Path
) -> None:
    authority = trustme.CA()
    cert = authority.issue_cert("127.0.0.1")
    ca, chain, key = tmp_path / "ca.pem", tmp_path / "hub.pem", tmp_path / "hub-key.pem"
    authority.cert_pem.write_to_path(str(ca))
    cert.private_key_pem.write_to_path(str(key))
    for i, blob in enumerate(cert.cert_chain_pems):
        blob.write_to_path(str(chain), append=i > 0)
    store = TokenStore(tmp_path / "tokens.json").load()
    alpha_token = store.create("alpha", role="bridge", names=["claude"])
    beta_token = store.create("beta", role="bridge", names=["grok"])
    admin = store.create("root", role="admin")
    hub = hub_factory(
        "--auth", str(store.path), "--tls-cert", str(chain), "--tls-key", str(key)
    )  # fmt: skip
    assert hub.url.startswith("wss://")

    a = Machine(tmp_path, "alpha", env, hub.url)
    b = Machine(tmp_path, "beta", env, hub.url)
    a.env.update(WSBUS_TOKEN=alpha_token, WSBUS_CA_FILE=str(ca))
    b.env.update(WSBUS_TOKEN=beta_token, WSBUS_CA_FILE=str(ca))
    try:
        claude = a.agent("claude", enter_delay=0.05)
        grok = b.agent("grok", enter_delay=0.05)
        a.agent("grok", registry=True)  # alpha's registry also lists grok: not its to serve
        a.start_bridge()
        b.start_bridge()
        wait_for(lambda: "may not act for 'grok'" in a.bridge_output(), timeout=20)

        # agent_comms send from claude's pane on alpha, over wss with alpha's token
        r = a.run("send", "grok", "hello from alpha over TLS", session="claude")
        assert r.returncode == 0 and "delivered" in r.stdout, r.stdout + r.stderr
        wait_for(lambda: any("hello from alpha over TLS" in ln for ln in grok.submitted()), 20)
        assert not any("hello from alpha" in ln for ln in a.tuis["grok"].submitted())

        # the other way, with the library and beta's token
        async with Client(hub.url, "grok", channels=[], token=beta_token, ca_file=str(ca)) as g:
            sent = await g.send("claude", "hello from beta")
            receipts = await wait_receipt(g, sent.seq, {"claude"}, 20)
            assert receipts["claude"].status == "submitted"
        assert [ln.split("| ", 1)[1] for ln in claude.submitted()] == ["hello from beta"]

        # alpha cannot speak as grok: refused, nothing stored or typed
        r = a.run("send", "claude", "i am grok, honest", session="grok")
        assert r.returncode != 0
        assert "may not act as" in r.stderr or "not a name" in r.stderr, r.stderr
        async with Client(hub.url, channels=[], token=admin, ca_file=str(ca)) as root:
            bodies = [e.body for e in (await root.history(limit=100)).events]
        assert not any("honest" in body for body in bodies)
        assert not any("honest" in ln for ln in claude.submitted())
    finally:
        a.close()
        b.close()
