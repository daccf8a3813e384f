"""``python -m bench [--quick] [--agent-bus-server PATH] [--agent-bus-send PATH]
[--vs-python PATH]``: every scenario, side by side.

The websocket scenarios run against the hub and the bare websockets server; the
legacy agent-bus HTTP scenarios against the hub's HTTP shim and, when given, the
original agent-bus reference server (never part of this repository); the tmux
delivery scenarios (bench/tmux.py) through a hub and ``wsbus bridge`` and by direct
injection into the same pane; the MCP rows (bench/mcp.py) time ``wait``'s wake-up
beside ``wsbus listen`` and a tool call's round trip; the operations rows
(bench/ops.py) time ``/ws`` on the HTTP port beside the websocket port, a
``/metrics`` scrape and a ``hub_status``; the CLI start-up rows
(bench/startup.py) time whole ``wsbus`` processes beside ``python -c pass``,
agent-bus's ``bus_send.py`` (given its path) and ``curl``. With ``--vs-python``, the
hub-based rows (websocket, secured hub, legacy HTTP) also run against the hub of
another venv's wsbus (an older commit), in a column of their own.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

from .common import BenchError, raise_nofile, step, summary
from .hostile import HostileParams, hostile_rows
from .hostile import section as hostile_section
from .legacy import legacy_burst, legacy_latency, legacy_pending, legacy_sends
from .manyhubs import manyhubs_rows
from .manyhubs import section as manyhubs_section
from .mcp import McpParams, mcp_rows
from .mcp import section as mcp_section
from .ops import OpsParams, ops_rows
from .ops import section as ops_section
from .report import machine_info, machine_text, markdown, rows, write_json
from .scale import ScaleParams, scale_rows
from .scale import section as scale_section
from .scenarios import Params, durable_publish, fanout, latency
from .servers import ServerProcess, bench_env, probe_other
from .startup import StartupParams, agent_bus_send_arg, checked_path, startup_rows
from .startup import section as startup_section
from .tmux import TmuxParams
from .tmux import section as tmux_section
from .workers import Worker


def _notes(
    p: Params,
    agent_bus: bool,
    tp: TmuxParams,
    hp: HostileParams,
    tmux_skipped: str | None = None,
    sp: StartupParams | None = None,
) -> str:
    """What each row measures and against which baseline, wrapped for a terminal."""
    ref_runs = (
        "The reference runs the legacy scenarios in the first repetition only (its 0.5 s polls "
        "make them take minutes); wsbus in every repetition."
        if agent_bus
        else "No --agent-bus-server given: the baseline column of these rows is n/a."
    )
    paragraphs = [
        "notes: every server runs side by side on this machine (clients share its CPUs); each "
        f"value is the median of {p.repeat} run(s) alternating which server goes first (RSS: "
        "first run only).",
        "latency: publisher and subscriber are two connections of one process; send -> event "
        "parsed.",
        f"fan-out: subscribers in {p.workers} worker processes; paced publisher; server CPU = "
        "user+sys of the server process (all threads) from the first send to the last delivery.",
        f"durable publish: {p.durable_conns} connections x {p.durable_window} sends in flight + 1 "
        "counting subscriber; wsbus time = first send .. last ok (committed); bare = first "
        "send .. last delivery (it has no ok); server CPU and client CPU (the harness "
        "process, all of its connections) over the same span, per event: on 2 CPUs, "
        "events/s <= 2 s / (server + client CPU per event).",
        "RSS: server RSS after connecting (handshaken, warm-up delivered) minus before, per "
        "connection.",
        "every wsbus hub here runs with --rate-events 0 --rate-bytes 0 (the default "
        "per-connection limits, 1000 frames/s and 4 MiB/s, would measure the limit). secured "
        "hub: the same scenarios against a hub with --auth (an admin token in the handshake), "
        "TLS (wss://, a throwaway CA) and --block-secrets (every body scanned); baseline = the "
        "plain wsbus figures of the same run.",
        "legacy agent-bus HTTP rows: baseline = the agent-bus reference server (stdlib "
        "ThreadingHTTPServer, a thread per request, /recv sleep-polls every 0.5 s) for every "
        "row. wsbus = the HTTP shim of a hub of its own (so its RSS is not read after the "
        "websocket scenarios freed memory). Clients: aiohttp keep-alive sessions in the "
        f"harness process (for /send also a lean HTTP/1.1 client). {ref_runs}",
        "long-poll delivery: a receiver long-polls /recv (block=true, since = max(max(ts), "
        "now)); a sender POSTs one message, waits until it arrived, then waits a random "
        f"0..{p.legacy_latency_gap * 1e3:g} ms (reference: 0..500 ms, its poll interval) so "
        "sends land anywhere in the poll cycle; send start -> /recv answer parsed.",
        f"/send: {p.legacy_senders} connections each POSTing one after another (after a "
        "warm-up), with a lean HTTP/1.1 client (bench/legacy.py Http1: a third of aiohttp's "
        "CPU per request, which shares the CPUs with the server), then again with aiohttp "
        "sessions; wsbus answers after the commit (durable); rate = answers / (first send .. "
        "last answer); the reference answers HTTP/1.0, so each of its sends is a new "
        "connection.",
        f"pending polls: {p.legacy_polls} blocked /recv with distinct names, opened with at most "
        f"{p.legacy_open_window} not yet accepted; pending = the server holds them all, went "
        "quiet, none answered; RSS growth per poll; then woken by one send per name from "
        f'{p.legacy_senders} senders, or by one broadcast (to "*", wsbus only: the reference '
        "has none); first wake send -> last answer parsed.",
        f"burst: {p.legacy_burst} long-polls start at once; once the server holds them all "
        f"(at most {p.legacy_hold_timeout:g} s), {p.legacy_burst} POST /send start at once "
        "(new connections); send start -> its receiver's answer parsed. The reference listens "
        "with a backlog of 5: connects beyond its accept queue are dropped by the kernel and "
        "retried seconds later (listen_overflows in the JSON).",
        "tmux delivery: "
        + (
            f"skipped ({tmux_skipped})."
            if tmux_skipped
            else "one private tmux server (tmux -L wsbus-bench-..., -f /dev/null), one pane "
            "running a line reader that appends each line to a file (every message is checked "
            "to arrive exactly once). wsbus = a hub of its own + a `wsbus bridge` subprocess; "
            "a send-only client sends to the agent and waits for its `submitted` receipt. "
            "Baseline = direct injection, the original tmux-agent-comms way with its --confirm "
            "check: the harness calls cli/bridge/inject.py Injector.deliver (send-keys -l, "
            "enter_delay, Enter, verify_delay, cursor-line check) with the same line, pane and "
            "delays "
            f"(enter_delay {tp.enter_delay:g} s, verify_delay {tp.verify_delay:g} s, both "
            f"sides). Latency: {tp.latency_samples} messages one at a time (p99 of so few "
            f"samples is about the maximum). {tp.messages} messages: wsbus sends them all at "
            "once, until every receipt; the baseline delivers them one after another."
        ),
        "many hubs: a nats-server of its own (JetStream in the run's temp directory) and two "
        "hubs of one bus on it (--engine, --rate-events 0 --rate-bytes 0). Cross-hub latency: "
        "the publisher on hub A, the subscriber on hub B (one process), as the latency row "
        "above; baseline: core NATS publish -> subscribe with nats-py (two connections, no "
        "durability). Durable publish: as above against hub A (ok = in the stream and in A's "
        "index); baseline: nats-py JetStream publishes with as many in flight, each "
        "acknowledged. Fan-out: the workers' subscribers alternate between hub A and hub B, "
        "the publisher on A; CPU = both hubs' user+sys; baseline: the single SQLite hub's "
        "row of the same run (the nats-server's own CPU is not counted).",
        f"hostile load (once, hubs of their own): old cursors = {hp.rounds} rounds of "
        f"{hp.polls} concurrent GET /recv (half since=0, half inside the shim's window) for "
        f"names with no messages among {hp.events:,} stored events, from another process, "
        "while a websocket client pings one ping after another; baseline: the same rounds of "
        f"GET /healthz. Stored bodies: hub RSS growth over {hp.bodies} sends of 64,000-"
        "character bodies nobody polls; baseline: a hub with --no-http. Another writer: a "
        f"process holds the database's write lock (BEGIN IMMEDIATE) for {hp.lock_s:g} s "
        "while a send waits; worst ping meanwhile; baseline: the same with no lock.",
        f"CLI start-up: {(sp or StartupParams()).runs} rounds after a warm-up round, every "
        "command in turn; wall = spawn to exit of the whole process (subprocess.run), CPU = "
        "its user+sys; the message comes on stdin. wsbus = the installed `wsbus` script, "
        "`--help`, and `send bob` to a hub of its own (returns after the durable ok); "
        "baselines: `python -c pass` (the interpreter alone), agent-bus's `bus_send.py` "
        "(--agent-bus-send PATH, run by the same interpreter, POSTing to the same hub's "
        "shim) and `curl` POSTing the same JSON to the shim's /send. Target: `wsbus send` "
        "within 1.5x of `bus_send.py`, `wsbus --help` under 150 ms.",
        "targets (wsbus): delivery p50 <= 2 ms; >= 7,500 durable sends/s; burst worst < 100 "
        "ms. Issue figures for the reference on this machine: p50 243 / p99 492 ms, ~2,500 "
        "sends/s, burst worst 0.9-1.5 s.",
        "* = incomplete (deadline hit); see bench/results/latest.json for details.",
    ]
    return "\n".join(textwrap.fill(text, 96, subsequent_indent="  ") for text in paragraphs)


def _vs_note(vs: dict[str, str]) -> str:
    text = (
        f"vs: {vs['label']} = wsbus {vs['version']} ({vs['wsbus']}) run by {vs['python']}: "
        "the websocket, --fsync, secured-hub and legacy HTTP scenarios also run against "
        "hubs of its own (same flags), in turn with this checkout's (alternating which goes "
        "first); ratio (wsbus/vs) = this checkout's figure / that one's. The tmux, hostile "
        "and CLI start-up rows run this checkout only."
    )
    return textwrap.fill(text, 96, subsequent_indent="  ", break_on_hyphens=False)


def _present(*servers: ServerProcess | None) -> list[ServerProcess]:
    return [s for s in servers if s is not None]


def _turns(servers: list[ServerProcess], rep: int) -> list[ServerProcess]:
    """The servers of one repetition: in order on even ones, reversed on odd ones."""
    return list(servers) if rep % 2 == 0 else list(reversed(servers))


async def _replace_broken(workers: list[Worker], env: dict[str, str], tmp: Path) -> None:
    """A worker that missed an answer is out of step: stop it and start a fresh one."""
    for i, w in enumerate(workers):
        if w.broken:
            await w.stop()
            workers[i] = await Worker.start(w.index, env, tmp / f"worker{w.index}.log")


async def _legacy(runs: dict[str, Any], errors: list[str], s: ServerProcess, p: Params) -> None:
    """The legacy HTTP scenarios against one server (wsbus shim or the reference).

    The pending polls run before the send throughput, whose tens of thousands of
    events grow the hub (its recent-events cache) and leave freed memory that the
    pending polls' RSS reading would reuse.
    """
    await step(runs, errors, "legacy_latency", s.key, legacy_latency(s, p))
    await step(runs, errors, "legacy_pending", s.key, legacy_pending(s, p, "direct"))
    if s.mode == "wsbus":  # the reference has no broadcast
        await step(runs, errors, "legacy_broadcast", s.key, legacy_pending(s, p, "broadcast"))
    await step(runs, errors, "legacy_burst", s.key, legacy_burst(s, p))
    await step(runs, errors, "legacy_sends", s.key, legacy_sends(s, p))


async def run(
    p: Params,
    quick: bool,
    out: Path | None,
    agent_bus: Path | None = None,
    agent_bus_send: Path | None = None,
    vs_python: str | None = None,
) -> int:
    raise_nofile()
    # SIGTERM cancels the run like Ctrl-C does, so the finally below stops every child
    main_task = asyncio.current_task()
    assert main_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    info = machine_info()
    runs: dict[str, Any] = {}
    errors: list[str] = []
    tp = TmuxParams.quick() if quick else TmuxParams()
    hp = HostileParams.quick() if quick else HostileParams()
    sp = StartupParams.quick() if quick else StartupParams()
    mp = McpParams.quick() if quick else McpParams()
    op = OpsParams.quick() if quick else OpsParams()
    scp = ScaleParams.quick() if quick else ScaleParams()
    tmux_skipped: str | None = None
    vs: dict[str, str] | None = None
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="wsbus-bench-") as tmpname:
        tmp = Path(tmpname)
        env = bench_env(tmp)
        servers: list[ServerProcess] = []
        workers: list[Worker] = []
        if vs_python is not None:
            vs = probe_other(vs_python, tmp, env)

        def other(s: ServerProcess) -> ServerProcess | None:
            """The same server run by --vs-python's interpreter (started), or None."""
            if vs_python is None:
                return None
            twin = s.other(vs_python, tmp)
            servers.append(twin)
            twin.start()
            return twin

        try:
            # the hub's per-connection rate limits would measure the limit, not the hub
            unlimited = ("--rate-events", "0", "--rate-bytes", "0")
            hub = ServerProcess.hub("wsbus", tmp, env, *unlimited)
            servers.append(hub)
            hub.start()
            secure = ServerProcess.secured("wsbus-secure", tmp, env, *unlimited)
            servers.append(secure)
            secure.start()
            bare = ServerProcess.bare(tmp, env)
            servers.append(bare)
            bare.start()
            shim = ServerProcess.hub("wsbus-http", tmp, env, *unlimited)
            servers.append(shim)
            shim.start()
            vs_hub = other(ServerProcess.hub("vs-wsbus", tmp, env, *unlimited))
            vs_secure = other(ServerProcess.secured("vs-wsbus-secure", tmp, env, *unlimited))
            vs_shim = other(ServerProcess.hub("vs-wsbus-http", tmp, env, *unlimited))
            for s in (shim, vs_shim):
                if s is not None and not s.http_url:
                    raise BenchError(f"{s.label} printed no HTTP shim address: {s.output()[-500:]}")
            ref: ServerProcess | None = None
            if agent_bus is not None:
                ref = ServerProcess.agent_bus(agent_bus, tmp, env)
                servers.append(ref)
                ref.start()
            for i in range(p.workers):
                workers.append(await Worker.start(i, env, tmp / f"worker{i}.log"))
            for rep in range(p.repeat):
                # alternate which server goes first, so neither always runs on a warmer machine
                pair = _turns([hub, bare] if vs_hub is None else [hub, vs_hub, bare], rep)
                for s in pair:
                    await step(runs, errors, "latency", s.key, latency(s, p))
                for subs, events, rate in p.fanout:
                    for s in pair:
                        await _replace_broken(workers, env, tmp)
                        await step(
                            runs,
                            errors,
                            f"fanout_{subs}",
                            s.key,
                            fanout(s, workers, subs, events, rate, p),
                        )
                for s in pair:
                    await step(
                        runs,
                        errors,
                        "durable",
                        s.key,
                        durable_publish(s, p.durable_events, p),
                    )
                for s in _turns(_present(secure, vs_secure), rep):
                    await step(runs, errors, "secure_latency", s.key, latency(s, p))
                    await step(
                        runs,
                        errors,
                        "secure_durable",
                        s.key,
                        durable_publish(s, p.durable_events, p),
                    )
                # the reference takes minutes (0.5 s polls): it runs in the first repetition
                legacy_pair = _turns(_present(shim, vs_shim), rep)
                if ref is not None and rep == 0:
                    legacy_pair.append(ref)
                for s in legacy_pair:
                    await _legacy(runs, errors, s, p)
            fsync = ServerProcess.hub("wsbus-fsync", tmp, env, "--fsync")
            servers.append(fsync)
            fsync.start()
            vs_fsync = other(ServerProcess.hub("vs-wsbus-fsync", tmp, env, "--fsync"))
            for rep in range(p.repeat):
                for s in _turns(_present(fsync, vs_fsync), rep):
                    await step(
                        runs,
                        errors,
                        "durable_fsync",
                        s.key,
                        durable_publish(s, p.durable_fsync_events, p),
                    )
            await manyhubs_section(runs, errors, tmp, env, p, workers)
            tmux_skipped = await tmux_section(runs, errors, tmp, env, tp, p.repeat)
            await hostile_section(runs, errors, tmp, env, hp)
            await mcp_section(runs, errors, tmp, env, mp)
            await ops_section(runs, errors, tmp, env, op)
            # after every other section: 10,000 connections leave the machine's
            # memory and sockets (TIME_WAIT) busier for a while
            await scale_section(runs, errors, tmp, env, scp, p)
            await startup_section(runs, errors, tmp, env, sp, agent_bus_send)
            for s in servers:
                if s.proc is not None and s.proc.poll() is not None:
                    errors.append(f"{s.label} exited early: {s.output()[-500:]}")
        finally:
            await asyncio.gather(*(w.stop() for w in workers), return_exceptions=True)
            for s in reversed(servers):
                s.stop()
    results = {k: {label: summary(r) for label, r in v.items()} for k, v in runs.items()}
    table = rows(
        results,
        sorted(n for n, _, _ in p.fanout),
        agent_bus=agent_bus is not None,
        polls=p.legacy_polls,
        burst=p.legacy_burst,
        senders=p.legacy_senders,
        tmux_messages=tp.messages,
        tmux_skipped=tmux_skipped,
        vs=vs is not None,
    )
    table += manyhubs_rows(results, max(p.fanout)[0])
    table += hostile_rows(results, hp)
    table += mcp_rows(results)
    table += ops_rows(results)
    table += scale_rows(results)
    table += startup_rows(results, agent_bus_send is not None)
    notes = _notes(p, agent_bus is not None, tp, hp, tmux_skipped, sp)
    if vs is not None:
        notes += "\n" + _vs_note(vs)
    print(machine_text(info))
    print(f"mode: {'quick' if quick else 'full'}; took {time.monotonic() - started:.0f}s\n")
    print(markdown(table, vs["label"] if vs is not None else None))
    print()
    print(notes)
    if errors:
        print("\nerrors:\n" + "\n".join(f"- {e}" for e in errors))
    path = write_json(
        {
            "machine": info,
            "mode": "quick" if quick else "full",
            "params": vars(p),
            "tmux_params": vars(tp),
            "agent_bus_server": str(agent_bus) if agent_bus is not None else None,
            "agent_bus_send": str(agent_bus_send) if agent_bus_send is not None else None,
            "startup_params": vars(sp),
            "mcp_params": vars(mp),
            "ops_params": vars(op),
            "scale_params": vars(scp),
            **({"vs": vs} if vs is not None else {}),
            "seconds": round(time.monotonic() - started, 1),
            "table": [r.as_dict(vs is not None) for r in table],
            "results": results,
            "errors": errors,
        },
        out,
    )
    print(f"\nresults: {path}", file=sys.stderr)
    return 1 if errors else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="small counts: a smoke test (< 30 s)")
    ap.add_argument("--json", type=Path, help="results file (default bench/results/latest.json)")
    ap.add_argument(
        "--agent-bus-server",
        type=Path,
        metavar="PATH",
        help="the original agent-bus bus_server.py: run the legacy HTTP scenarios against it "
        "too, as the baseline of those rows (it is not part of this repository)",
    )
    agent_bus_send_arg(ap)
    ap.add_argument(
        "--vs-python",
        metavar="PATH",
        help="the python of another venv with another wsbus installed (e.g. an editable "
        "install of an older commit): the websocket, secured-hub and legacy HTTP rows also "
        "run against its hub, in a column of their own (ratio = this/that)",
    )
    args = ap.parse_args(argv)
    ref: Path | None = args.agent_bus_server
    if ref is not None and not ref.is_file():
        ap.error(f"--agent-bus-server: no such file: {ref}")
    send = checked_path(ap, args.agent_bus_send)
    vs_python: str | None = args.vs_python
    if vs_python is not None:
        if not Path(vs_python).is_file():
            ap.error(f"--vs-python: no such file: {vs_python}")
        vs_python = os.path.abspath(vs_python)  # not resolved: a venv's python is a symlink
    p = Params.quick() if args.quick else Params()
    try:
        return asyncio.run(
            run(p, args.quick, args.json, ref.resolve() if ref else None, send, vs_python)
        )
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("bench: interrupted; every child process was stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
