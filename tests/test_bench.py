"""Smoke test of the benchmark harness: ``python -m bench --quick`` runs and prints its table."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# starts its own hubs and nats-server whatever the engine: once, in `make test`
pytestmark = pytest.mark.own_nats

SCENARIOS = [
    "latency p50 (ms)",
    "latency p99 (ms)",
    "fan-out 100 subs: deliveries/s",
    "fan-out 100 subs: server CPU",
    "fan-out 1000 subs: deliveries/s",
    "fan-out 1000 subs: server CPU",
    "durable publish (64 in flight): events/s",
    "durable publish --fsync: events/s",
    "RSS per idle connection",
    "connect + handshake 1000 subs: server CPU",
    "long-poll delivery p50 (ms)",
    "long-poll delivery p99 (ms)",
    "POST /send, 8 senders: sends/s",
    "1000 pending polls: server RSS before",
    "1000 pending polls: RSS per pending poll (KiB)",
    "1000 pending polls: server threads",
    "1000 pending polls: all answered after 1000 sends",
    "1000 pending polls: all answered after 1 broadcast send",
    "burst 100 receivers: worst send",
    "burst 100 receivers: median send",
    "burst 100 receivers: answered",
    "2 x 200 old-cursor /recv (vs /healthz): worst ping",
    "300 bodies of 64 KB stored: hub RSS growth",
    "write lock held 1 s by another process: worst ping",
    "latency to a `/ws` subscriber p50",
    "`/metrics` scrape p50",
    "`hub_status` round trip",
    "`wsbus --help` (ms; baseline `python -c pass`)",
    "1,000 idle connections: RSS per connection (KiB)",
    "1,000 idle connections: connect all, presence on (s)",
    "broadcast to 1,000: send -> last delivery",
    "restart with 200 subscribers: SIGTERM -> the last one live again (s; all resumed: yes)",
    "latency p99 beside 200 idle connections (ms)",
    "fan-out 1000 subs, 1 SQLite hub: server CPU µs/delivery (baseline core NATS",
    "`wsbus send`, stdin to durable ok (ms; baseline agent-bus `bus_send.py`",
]
LEGACY_KEYS = [
    "legacy_latency",
    "legacy_sends",
    "legacy_pending",
    "legacy_broadcast",
    "legacy_burst",
]


@pytest.mark.timeout(300)
def test_bench_quick(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "| scenario | wsbus | baseline | ratio (wsbus/baseline) |" in proc.stdout
    table = [line for line in proc.stdout.splitlines() if line.startswith("| ")]
    for name in SCENARIOS:
        row = next((line for line in table if line.startswith(f"| {name}")), None)
        assert row is not None, f"no row for {name!r} in:\n{proc.stdout}"
        assert "error" not in row, row
    data = json.loads(out.read_text())
    assert data["mode"] == "quick" and not data["errors"]
    # no --vs-python: no vs column anywhere
    assert "vs" not in data and all("vs" not in r for r in data["table"])
    assert "| vs: " not in proc.stdout
    assert data["results"]["latency"]["wsbus"]["samples"] > 0
    # the legacy HTTP rows: measured on the hub's shim, no reference server in CI
    results = data["results"]
    for key in LEGACY_KEYS:
        assert results[key]["wsbus"]["complete"] is True, (key, results[key]["wsbus"])
    assert results["legacy_latency"]["wsbus"]["samples"] > 0
    assert results["legacy_sends"]["wsbus"]["sends"] == results["legacy_sends"]["wsbus"]["requests"]
    pending = results["legacy_pending"]["wsbus"]
    assert pending["held"] == pending["polls"] and pending["answered_early"] == 0
    assert pending["answered_with_message"] == pending["polls"]
    assert (
        results["legacy_burst"]["wsbus"]["answered"]
        == results["legacy_burst"]["wsbus"]["receivers"]
    )
    for key in ("hostile_polls", "hostile_bodies", "hostile_writer"):
        assert "wsbus" in results[key] and len(results[key]) == 2, key  # and its baseline
        assert all("error" not in r for r in results[key].values()), results[key]
    assert results["hostile_polls"]["wsbus"]["complete"] is True
    row = next(line for line in table if line.startswith("| long-poll delivery p50"))
    assert "n/a (run with --agent-bus-server)" in row, row
    # CLI start-up: whole processes, the interpreter alone as --help's baseline; without
    # --agent-bus-send, bus_send.py's column says how to get it
    startup = results["startup"]["wsbus"]
    assert "error" not in startup, startup
    assert all(startup[f"{k}_ms"] > 0 for k in ("python", "help", "send"))
    assert "bus_send_ms" not in startup
    row = next(line for line in table if line.startswith("| `wsbus send`, stdin to durable ok"))
    assert "n/a (run with --agent-bus-send)" in row, row
    assert data["agent_bus_send"] is None
    # MCP: wait's wake-up beside wsbus listen, a tool call's round trip
    mcp = results["mcp"]["wsbus"]
    assert "error" not in mcp, mcp
    assert all(mcp[f"{k}_p50_ms"] > 0 for k in ("wait", "listen", "roster_mcp", "whoami"))
    row = next(
        line for line in table if line.startswith("| `wait` wake-up, send → tool result p50")
    )
    assert "error" not in row and " - |" not in row, row
    # many hubs: two hubs of one bus on a nats-server, bare NATS beside them
    assert results["cross_latency"]["wsbus"]["samples"] > 0
    assert results["nats_latency"]["bare-nats"]["samples"] > 0
    assert results["js_publish"]["bare-js"]["complete"] is True
    assert results["cross_durable"]["wsbus"]["complete"] is True
    assert next(iter(k for k in results if k.startswith("cross_fanout_")))
    fan = next(v["wsbus"] for k, v in results.items() if k.startswith("cross_fanout_"))
    assert fan["complete"] is True, fan
    row = next(line for line in table if line.startswith("| publish on hub A → deliver on hub B"))
    assert "error" not in row and " - |" not in row, row
    assert results["nats_fanout_1000"]["bare-nats"]["complete"] is True
    # scale: an idle crowd, a restart under a crowd, latency beside one; against both
    for key in ("scale_idle", "scale_restart", "scale_latency"):
        for label in ("wsbus", "bare"):
            assert results[key][label]["complete"] is True, (key, label, results[key][label])
    assert results["scale_restart"]["wsbus"]["resumed"] is True


@pytest.mark.timeout(300)
def test_bench_quick_vs_python(tmp_path: Path) -> None:
    """``--vs-python``: the hub-based rows also run against the hub of another venv's
    interpreter; here this very interpreter (its own baseline), spawned outside the
    checkout, so the column is there and every ratio is finite."""
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--json", str(out), "--vs-python",
         sys.executable],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(out.read_text())
    assert not data["errors"], data["errors"]
    vs = data["vs"]
    assert vs["python"] == sys.executable
    assert Path(vs["wsbus"]).resolve().parent == ROOT / "wsbus"  # the same install, by its finder
    label = vs["label"]
    head = (
        f"| scenario | wsbus | baseline | ratio (wsbus/baseline) | vs: {label} | ratio (wsbus/vs) |"
    )
    assert head in proc.stdout, proc.stdout
    table = [line for line in proc.stdout.splitlines() if line.startswith("| ")]
    results = data["results"]
    for key in ("latency", "fanout_100", "durable", "durable_fsync", "secure_latency",
                "secure_durable", *LEGACY_KEYS):  # fmt: skip
        assert "error" not in results[key]["vs"], (key, results[key]["vs"])
    for name in ("latency p50 (ms)", "fan-out 100 subs: deliveries/s", "durable publish (64",
                 "long-poll delivery p50 (ms)", "POST /send, 8 senders: sends/s"):  # fmt: skip
        row = next(line for line in table if line.startswith(f"| {name}"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert len(cells) == 6, row
        assert float(cells[4].replace(",", "")) > 0, row
        assert 0 < float(cells[5]) < 100, row  # this / that: the same code, so near 1
    row = next(line for line in table if line.startswith("| tmux delivery: send"))
    assert row.endswith("|  |  |"), row  # this checkout only
    table_json = data["table"][1]
    assert table_json["vs"] and table_json["vs_ratio"], table_json
