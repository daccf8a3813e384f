"""Machine information, the markdown table and the JSON results file."""

from __future__ import annotations

import json
import math
import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import psutil
from websockets.version import version as websockets_version

import wsbus

__all__ = ["Row", "machine_info", "markdown", "rows", "tmux_rows", "write_json"]

RESULTS = Path(__file__).resolve().parent / "results"
MICRO = "\u00b5"


def machine_info() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": model,
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "websockets": websockets_version,
        "msgspec": msgspec.__version__,
        "wsbus": wsbus.__version__,
    }


def machine_text(info: dict[str, Any]) -> str:
    return (
        f"machine: {info['cpu_count']} CPUs ({info['cpu_affinity']} usable)"
        f" {info['cpu_model'] or '?'}, {info['memory_gib']} GiB, load {info['loadavg']}\n"
        f"python {info['python']} ({info['platform']}), websockets {info['websockets']},"
        f" msgspec {info['msgspec']}, wsbus {info['wsbus']}"
    )


@dataclass
class Row:
    scenario: str
    wsbus: str
    baseline: str
    ratio: str
    vs: str = ""
    """With ``--vs-python``: the other venv's hub's figure, and this one's / that one's."""
    vs_ratio: str = ""

    def as_dict(self, vs: bool = False) -> dict[str, str]:
        """The row for the JSON file (the vs cells only in a run with ``--vs-python``)."""
        out = vars(self).copy()
        if not vs:
            del out["vs"], out["vs_ratio"]
        return out


def _get(results: dict[str, Any], key: str, label: str, field: str) -> tuple[float | None, str]:
    """A value and its cell text: the number, ``error`` or ``-``; ``*`` marks incomplete runs."""
    entry = results.get(key, {}).get(label)
    if entry is None:
        return None, "-"
    if "error" in entry:
        return None, "error"
    value = entry.get(field)
    if not isinstance(value, int | float) or math.isnan(value):
        return None, "-"
    text = f"{value:,}" if isinstance(value, int) else _fmt(float(value))
    return float(value), text + ("" if entry.get("complete", True) else "*")


def _fmt(v: float) -> str:
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}" if abs(v) >= 0.1 else f"{v:.3f}"


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "-"
    r = a / b
    return f"{r:.2f}" if r >= 0.1 else f"{r:.2g}"


WS_SECTION = "**websocket** (baseline: bare websockets server, bench/bare_server.py)"
SECURE_SECTION = (
    "**secured hub**: --auth, TLS (wss), --block-secrets (baseline: the same hub without them)"
)
LEGACY_SECTION = "**legacy agent-bus HTTP** /send, /recv (baseline: the agent-bus reference server)"
TMUX_SECTION = (
    "**tmux delivery** into an agent's pane (baseline: direct injection, no bus: "
    "cli/bridge/inject.py Injector in the harness)"
)
NO_BASELINE = "n/a (run with --agent-bus-server)"
ARROW = "\u2192"


def _with_vs(row: Row, results: dict[str, Any], key: str, field: str, this: float | None) -> Row:
    """``row`` with the ``vs`` hub's figure of ``key``/``field`` and ``this`` / it."""
    v, vt = _get(results, key, "vs", field)
    row.vs, row.vs_ratio = vt, _ratio(this, v)
    return row


def _section(title: str) -> Row:
    return Row(title, "", "", "")


def rows(
    results: dict[str, Any],
    fanout_sizes: list[int],
    agent_bus: bool = False,
    polls: int = 1000,
    burst: int = 100,
    senders: int = 8,
    tmux_messages: int = 20,
    tmux_skipped: str | None = None,
    vs: bool = False,
) -> list[Row]:
    """The table: the websocket rows, then the legacy HTTP rows (``agent_bus``: with
    the reference server's figures in the baseline column), then the tmux rows.
    ``vs``: the hub-based rows also get the ``--vs-python`` hub's figures."""
    out: list[Row] = [_section(WS_SECTION)]

    def add(row: Row, key: str, field: str, this: float | None) -> None:
        out.append(_with_vs(row, results, key, field, this) if vs else row)

    def pair(name: str, key: str, field: str, base: str = "bare") -> None:
        a, at = _get(results, key, "wsbus", field)
        b, bt = _get(results, key, base, field)
        add(Row(name, at, bt, _ratio(a, b)), key, field, a)

    pair("latency p50 (ms), 1 subscriber", "latency", "p50_ms")
    pair("latency p99 (ms), 1 subscriber", "latency", "p99_ms")
    for n in fanout_sizes:
        pair(f"fan-out {n} subs: deliveries/s", f"fanout_{n}", "deliveries_per_s")
        pair(
            f"fan-out {n} subs: server CPU {MICRO}s/delivery",
            f"fanout_{n}",
            "cpu_us_per_delivery",
        )
    pair("durable publish (64 in flight): events/s", "durable", "events_per_s")
    pair(f"durable publish: server CPU {MICRO}s/event", "durable", "cpu_us_per_event")
    pair(
        f"durable publish: client CPU {MICRO}s/event (the harness: 4 publishers + 1 subscriber)",
        "durable",
        "client_cpu_us_per_event",
    )
    a, at = _get(results, "durable_fsync", "wsbus", "events_per_s")
    d, _ = _get(results, "durable", "wsbus", "events_per_s")
    add(
        Row("durable publish --fsync: events/s (ratio vs default wsbus)", at, "n/a", _ratio(a, d)),
        "durable_fsync",
        "events_per_s",
        a,
    )
    if fanout_sizes:
        n = max(fanout_sizes)
        pair(f"RSS per idle connection at {n} conns (KiB)", f"fanout_{n}", "rss_per_conn_kib")
        pair(f"connect + handshake {n} subs (s)", f"fanout_{n}", "connect_s")
        pair(f"connect + handshake {n} subs: server CPU (s)", f"fanout_{n}", "connect_cpu_s")

    out.append(_section(SECURE_SECTION))

    def secured(name: str, key: str, field: str) -> None:
        a, at = _get(results, f"secure_{key}", "wsbus", field)
        b, bt = _get(results, key, "wsbus", field)
        add(Row(name, at, bt, _ratio(a, b)), f"secure_{key}", field, a)

    secured("latency p50 (ms), 1 subscriber", "latency", "p50_ms")
    secured("latency p99 (ms), 1 subscriber", "latency", "p99_ms")
    secured("durable publish (64 in flight): events/s", "durable", "events_per_s")

    out.append(_section(LEGACY_SECTION))

    def legacy(name: str, key: str, field: str, na: str | None = None) -> None:
        """``na``: the reference cannot run this one; say why instead of a number."""
        a, at = _get(results, key, "wsbus", field)
        if na is not None or not agent_bus:
            add(Row(name, at, na or NO_BASELINE, "-"), key, field, a)
            return
        b, bt = _get(results, key, "agent-bus", field)
        add(Row(name, at, bt, _ratio(a, b)), key, field, a)

    def counted(name: str, key: str, field: str, of: str) -> None:
        cells = []
        for label in ("wsbus", "agent-bus", "vs"):
            got, text = _get(results, key, label, field)
            total, _ = _get(results, key, label, of)
            if got is None or total is None:
                cells.append(text)
            else:
                star = "*" if text.endswith("*") else ""
                cells.append(f"{got:.0f}/{total:.0f}{star}")
        row = Row(name, cells[0], cells[1] if agent_bus else NO_BASELINE, "-")
        if vs:
            row.vs, row.vs_ratio = cells[2], "-"
        out.append(row)

    legacy("long-poll delivery p50 (ms)", "legacy_latency", "p50_ms")
    legacy("long-poll delivery p99 (ms)", "legacy_latency", "p99_ms")
    legacy(
        f"POST /send, {senders} senders: sends/s (wsbus: durable)", "legacy_sends", "sends_per_s"
    )
    legacy(f"POST /send: server CPU {MICRO}s/send", "legacy_sends", "cpu_us_per_send")
    legacy(
        f"POST /send, {senders} senders, aiohttp clients: sends/s",
        "legacy_sends",
        "aiohttp_sends_per_s",
    )
    before_after = []
    for label in ("wsbus", "agent-bus", "vs"):
        _, bt = _get(results, "legacy_pending", label, "rss_before_mib")
        _, at = _get(results, "legacy_pending", label, "rss_after_mib")
        before_after.append(at if "-" in (bt, at) else f"{bt} {ARROW} {at}")
    a, _ = _get(results, "legacy_pending", "wsbus", "rss_after_mib")
    b, _ = _get(results, "legacy_pending", "agent-bus", "rss_after_mib")
    row = Row(
        f"{polls} pending polls: server RSS before {ARROW} while pending (MiB)",
        before_after[0],
        before_after[1] if agent_bus else NO_BASELINE,
        _ratio(a, b) if agent_bus else "-",
    )
    add(row, "legacy_pending", "rss_after_mib", a)
    if vs:
        row.vs = before_after[2]
    legacy(
        f"{polls} pending polls: RSS per pending poll (KiB)", "legacy_pending", "rss_per_poll_kib"
    )
    legacy(f"{polls} pending polls: server threads", "legacy_pending", "threads_pending")
    legacy(
        f"{polls} pending polls: all answered after {polls} sends from {senders} senders (ms)",
        "legacy_pending",
        "wake_all_ms",
    )
    legacy(
        f"{polls} pending polls: all answered after 1 broadcast send (ms)",
        "legacy_broadcast",
        "wake_all_ms",
        na="n/a (no broadcast)",
    )
    legacy(f"burst {burst} receivers: worst send {ARROW} receive (ms)", "legacy_burst", "worst_ms")
    legacy(
        f"burst {burst} receivers: median send {ARROW} receive (ms)", "legacy_burst", "median_ms"
    )
    counted(f"burst {burst} receivers: answered", "legacy_burst", "answered", "receivers")
    out += tmux_rows(results, tmux_messages, tmux_skipped)
    return out


def tmux_rows(results: dict[str, Any], messages: int, skipped: str | None = None) -> list[Row]:
    """The tmux delivery rows (bench/tmux.py): wsbus = hub + bridge, baseline = direct."""
    if skipped is not None:
        return [_section(f"{TMUX_SECTION}: skipped, {skipped}")]
    out = [_section(TMUX_SECTION)]

    def pair(name: str, key: str, field: str) -> None:
        a, at = _get(results, key, "wsbus", field)
        b, bt = _get(results, key, "direct", field)
        out.append(Row(name, at, bt, _ratio(a, b)))

    pair(f"tmux delivery: send {ARROW} submitted receipt p50 (ms)", "tmux_latency", "p50_ms")
    pair(f"tmux delivery: send {ARROW} submitted receipt p99 (ms)", "tmux_latency", "p99_ms")
    pair(
        f"tmux delivery: {messages} messages to one pane, messages/s",
        "tmux_burst",
        "messages_per_s",
    )
    return out


def markdown(table: list[Row], vs: str | None = None) -> str:
    """The table; ``vs`` (the ``--vs-python`` hub's label): two more columns, its figure
    and the ratio of this checkout's to it."""
    head = ["scenario", "wsbus", "baseline", "ratio (wsbus/baseline)"]
    if vs is None:
        lines = [
            "| " + " | ".join(head) + " |",
            "|---|---:|---:|---:|",
        ]
        lines += [f"| {r.scenario} | {r.wsbus} | {r.baseline} | {r.ratio} |" for r in table]
        return "\n".join(lines)
    head += [f"vs: {vs}", "ratio (wsbus/vs)"]
    lines = [
        "| " + " | ".join(head) + " |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r.scenario} | {r.wsbus} | {r.baseline} | {r.ratio} | {r.vs} | {r.vs_ratio} |"
        for r in table
    ]
    return "\n".join(lines)


def _clean(v: Any) -> Any:
    """NaN and infinities are not JSON: write null."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_clean(x) for x in v]
    return v


def write_json(data: dict[str, Any], path: Path | None = None) -> Path:
    path = path or RESULTS / "latest.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_clean(data), indent=2, default=str) + "\n")
    return path
