"""The issue's "done when": three agents in tmux panes on two machines join a project,
see each other in the roster, post to threads and send direct messages with receipts.

Machine alpha runs claude and codex, machine beta runs grok; each machine has its own
tmux server, files and bridge; one hub. The agents self-register (empty registries),
exactly as the join instructions tell them to.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from .helpers import wait_for
from .tmuxkit import TMUX, Machine

pytestmark = pytest.mark.skipif(TMUX is None, reason="tmux is not installed")

MARKER = "«agent-msg»"


def ok(result: object) -> str:
    r = result
    assert getattr(r, "returncode", None) == 0, (getattr(r, "stdout", ""), getattr(r, "stderr", ""))
    return str(getattr(r, "stdout", ""))


def test_three_agents_on_two_machines_join_talk_and_get_receipts(
    machines: Callable[[str], Machine],
) -> None:
    alpha, beta = machines("alpha"), machines("beta")
    claude = alpha.agent("claude", registry=False)
    codex = alpha.agent("codex", registry=False)
    grok = beta.agent("grok", registry=False)
    alpha.start_bridge()
    beta.start_bridge()

    def register(m: Machine, name: str, model: str, role: str) -> str:
        return ok(
            m.run(
                "register", "--project", "acme", "--as", name, "--session", name,
                "--model", model, "--role", role, "--enter-delay", "0.05",
            )
        )  # fmt: skip

    out = register(alpha, "claude", "claude-opus-4-7", "orchestration + reasoning")
    assert "registered: claude in project 'acme' (session=claude)" in out
    register(alpha, "codex", "gpt-5-codex", "multi-file builds")
    register(beta, "grok", "grok-4", "web research")
    # members already there got a doorbell when someone joined (via their bridge)
    joined = f"{MARKER} grok (grok-4, web research) joined project 'acme'"
    wait_for(lambda: any(s.startswith(joined) for s in claude.submitted()), timeout=30)
    wait_for(lambda: any(s.startswith(joined) for s in codex.submitted()), timeout=30)

    # the roster shows all three, each on its host, up (their bridges see the panes)
    def roster() -> str:
        return ok(alpha.run("roster", "acme"))

    def all_up() -> bool:
        rows = [ln.split() for ln in roster().splitlines()[2:]]
        return len(rows) == 3 and all("up" in r for r in rows)

    wait_for(all_up, timeout=30)
    table = roster()
    assert table.startswith("project 'acme' — 3 member(s):")
    for name, host in (("claude", "alpha"), ("codex", "alpha"), ("grok", "beta")):
        assert any(ln.split()[:3] == [name, name, host] for ln in table.splitlines()), table

    # claude posts to the project: codex (same machine) and grok (other machine) get
    # the doorbell pointing at their own local mirror of the thread
    before = {n: len(t.submitted()) for n, t in (("codex", codex), ("grok", grok))}
    posted = ok(alpha.run("post", "acme", "parser is in — please review", "--from", "claude"))
    assert "doorbell" in posted
    for m, tui, name in ((alpha, codex, "codex"), (beta, grok, "grok")):
        mirror = m.threads / "acme" / "acme.md"
        bell = f"{MARKER} claude posted in acme — review it ({mirror})"
        wait_for(lambda t=tui, b=bell: b in t.submitted(), timeout=30)
        assert "parser is in — please review" in mirror.read_text()
        assert len(tui.submitted()) == before[name] + 1
    assert not any("posted in acme" in s for s in claude.submitted())  # not to the poster

    # grok answers claude directly, across machines, and waits for the receipt
    sent = ok(beta.run("send", "claude", "reviewed: two nits in the thread", "--from", "grok"))
    assert sent.startswith("delivered: grok -> claude"), sent
    assert any(s.endswith("| reviewed: two nits in the thread") for s in claude.submitted())

    # the thread reads the same on both machines, in the original layout
    day = time.strftime("%Y-%m-%d", time.gmtime())
    text_a = ok(alpha.run("read", "acme"))
    assert f"## [claude (claude-opus-4-7) {day}" in text_a
    assert "parser is in — please review" in text_a
    assert ok(beta.run("read", "acme")) == text_a
