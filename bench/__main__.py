"""``python -m bench [--quick]``: run every scenario against the hub and the bare server."""

from __future__ import annotations

import argparse
import asyncio
import signal
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

from .common import raise_nofile
from .report import machine_info, machine_text, markdown, rows, write_json
from .scenarios import Params, durable_publish, fanout, latency
from .servers import ServerProcess, bench_env
from .workers import Worker

NOTES = """\
notes: both servers side by side on this machine (clients share its CPUs); each value is the
median of {repeat} run(s) alternating which server goes first (RSS: first run only).
latency: publisher and subscriber are two connections of one process; send -> event parsed.
fan-out: subscribers in {workers} worker processes; paced publisher; server CPU = user+sys of
the server process (all threads) from the first send to the last delivery.
durable publish: {conns} connections x {window} sends in flight + 1 counting subscriber; wsbus
time = first send .. last ok (committed); bare = first send .. last delivery (it has no ok).
RSS: server RSS after connecting (handshaken, warm-up delivered) minus before, per connection.
* = incomplete (deadline hit); see bench/results/latest.json for details."""


FIRST_RUN_ONLY = ("rss_per_conn_kib", "rss_before_mib", "rss_after_mib")
"""Only the first run measures RSS on a server that has not freed connections before."""


async def _step(
    runs: dict[str, Any],
    errors: list[str],
    key: str,
    label: str,
    scenario: Awaitable[dict[str, Any]],
) -> None:
    began = time.monotonic()
    try:
        res = await scenario
    except Exception as err:
        tb = traceback.format_exc(limit=3)
        errors.append(f"{key}/{label}: {err!r}")
        print(f"bench: {key}/{label} failed: {err!r}\n{tb}", file=sys.stderr, flush=True)
        res = {"error": repr(err)}
    res["seconds"] = round(time.monotonic() - began, 2)
    runs.setdefault(key, {}).setdefault(label, []).append(res)
    print(f"bench: {key} on {label}: {res['seconds']}s", file=sys.stderr, flush=True)


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median of every number over the successful runs (RSS: the first run)."""
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return {"error": runs[-1].get("error", "no run"), "runs": runs}
    out: dict[str, Any] = {"runs_ok": len(ok), "complete": all(r.get("complete", True) for r in ok)}
    for field, value in ok[0].items():
        if field == "complete":
            continue
        if field in FIRST_RUN_ONLY or isinstance(value, bool) or not isinstance(value, int | float):
            out[field] = value
        else:
            out[field] = statistics.median(r[field] for r in ok if r.get(field) is not None)
    if "error" in runs[0]:
        out["first_run_error"] = runs[0]["error"]
    out["runs"] = runs
    return out


async def _replace_broken(workers: list[Worker], env: dict[str, str], tmp: Path) -> None:
    """A worker that missed an answer is out of step: stop it and start a fresh one."""
    for i, w in enumerate(workers):
        if w.broken:
            await w.stop()
            workers[i] = await Worker.start(w.index, env, tmp / f"worker{w.index}.log")


async def run(p: Params, quick: bool, out: Path | None) -> int:
    raise_nofile()
    # SIGTERM cancels the run like Ctrl-C does, so the finally below stops every child
    main_task = asyncio.current_task()
    assert main_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    info = machine_info()
    runs: dict[str, Any] = {}
    errors: list[str] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="wsbus-bench-") as tmpname:
        tmp = Path(tmpname)
        env = bench_env(tmp)
        servers: list[ServerProcess] = []
        workers: list[Worker] = []
        try:
            hub = ServerProcess.hub("wsbus", tmp, env)
            servers.append(hub)
            hub.start()
            bare = ServerProcess.bare(tmp, env)
            servers.append(bare)
            bare.start()
            for i in range(p.workers):
                workers.append(await Worker.start(i, env, tmp / f"worker{i}.log"))
            for rep in range(p.repeat):
                # alternate which server goes first, so neither always runs on a warmer machine
                pair = (hub, bare) if rep % 2 == 0 else (bare, hub)
                for s in pair:
                    await _step(runs, errors, "latency", s.mode, latency(s, p))
                for subs, events, rate in p.fanout:
                    for s in pair:
                        await _replace_broken(workers, env, tmp)
                        await _step(
                            runs,
                            errors,
                            f"fanout_{subs}",
                            s.mode,
                            fanout(s, workers, subs, events, rate, p),
                        )
                for s in pair:
                    await _step(
                        runs,
                        errors,
                        "durable",
                        s.mode,
                        durable_publish(s, p.durable_events, p),
                    )
            fsync = ServerProcess.hub("wsbus-fsync", tmp, env, "--fsync")
            servers.append(fsync)
            fsync.start()
            for _ in range(p.repeat):
                await _step(
                    runs,
                    errors,
                    "durable_fsync",
                    "wsbus",
                    durable_publish(fsync, p.durable_fsync_events, p),
                )
            for s in servers:
                if s.proc is not None and s.proc.poll() is not None:
                    errors.append(f"{s.label} exited early: {s.output()[-500:]}")
        finally:
            await asyncio.gather(*(w.stop() for w in workers), return_exceptions=True)
            for s in reversed(servers):
                s.stop()
    results = {k: {label: _summary(r) for label, r in v.items()} for k, v in runs.items()}
    table = rows(results, sorted(n for n, _, _ in p.fanout))
    notes = NOTES.format(
        workers=p.workers, conns=p.durable_conns, window=p.durable_window, repeat=p.repeat
    )
    print(machine_text(info))
    print(f"mode: {'quick' if quick else 'full'}; took {time.monotonic() - started:.0f}s\n")
    print(markdown(table))
    print()
    print(notes)
    if errors:
        print("\nerrors:\n" + "\n".join(f"- {e}" for e in errors))
    path = write_json(
        {
            "machine": info,
            "mode": "quick" if quick else "full",
            "params": vars(p),
            "seconds": round(time.monotonic() - started, 1),
            "table": [vars(r) for r in table],
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
    args = ap.parse_args(argv)
    p = Params.quick() if args.quick else Params()
    try:
        return asyncio.run(run(p, args.quick, args.json))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("bench: interrupted; every child process was stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
