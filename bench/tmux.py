"""tmux delivery: a message typed into an agent's pane through the hub and ``wsbus bridge``,
against direct injection into the same pane by the harness (the original tmux-agent-comms
way: no bus, no receipt).

Both sides type the same line (``«agent-msg» from=bench-sender HH:MMZ | <body>``) into
the same pane of a private tmux server (``tmux -L wsbus-bench-<pid>-<rand> -f
/dev/null``) with the same delays: ``send-keys -l``, ``enter_delay``, ``send-keys Enter``,
``verify_delay``, then the cursor-line check of :class:`wsbus.cli.bridge.inject.Injector`. The
pane runs a line reader that appends every line it reads to a file, so the scenario can
check that each message arrived exactly once.

``python -m bench.tmux [--quick]`` runs this section alone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from uuid import uuid4

from wsbus.cli.bridge.inject import Injector, message_line
from wsbus.cli.bridge.tmux import Tmux
from wsbus.cli.conventions import wait_receipt
from wsbus.cli.local.paths import CommsTunables

from wsbus.client import Client
from wsbus.schema import Receipt

from .common import BenchError, body, child_argv, step, summary
from .scenarios import percentile, run_tag
from .servers import ROOT, ServerProcess

__all__ = [
    "AGENT",
    "SENDER",
    "TmuxParams",
    "TmuxRig",
    "section",
    "tmux_burst",
    "tmux_latency",
    "tmux_missing",
]

AGENT = "bench-agent"
"""The registry name and the tmux session of the agent."""
SENDER = "bench-sender"
Side = Literal["wsbus", "direct"]
SETTLED = {"read", "submitted", "unsubmitted", "failed", "session_down"}

# The pane's "TUI": reads lines in canonical mode (the tty echoes the typed text), appends
# each to a file, then prints a prompt. The prompt matters: with none (plain ``cat``) the
# cursor would sit on an empty row right under the echoed text, which the submission
# check reads as "still in the composer" and presses Enter again.
_READER = """\
import sys
out = open(sys.argv[1], "a", encoding="utf-8")
sys.stdout.write("> "); sys.stdout.flush()
for line in sys.stdin:
    out.write(line); out.flush()
    sys.stdout.write("> "); sys.stdout.flush()
"""


@dataclass
class TmuxParams:
    latency_samples: int = 30
    latency_warmup: int = 2
    messages: int = 20
    enter_delay: float = 0.05
    verify_delay: float = 0.05
    timeout: float = 10.0
    """Seconds to wait for one delivery (send -> receipt, or one direct injection)."""
    burst_deadline: float = 60.0
    start_timeout: float = 30.0

    @classmethod
    def quick(cls) -> TmuxParams:
        return cls(latency_samples=5, latency_warmup=1, messages=5, burst_deadline=30.0)


def tmux_missing() -> str | None:
    """Why the section cannot run (tmux is not installed), else None."""
    return None if shutil.which("tmux") else "tmux is not installed"


class TmuxRig:
    """A private tmux server with the reader's session, a hub, a bridge serving the
    session and a send-only client; stopped (and the tmux socket removed) by :meth:`close`."""

    def __init__(self, tmp: Path, env: dict[str, str], tp: TmuxParams) -> None:
        tmux = shutil.which("tmux")
        if tmux is None:
            raise BenchError("tmux is not installed")
        self.tp = tp
        self.root = tmp / "tmux"
        self.root.mkdir(parents=True, exist_ok=True)
        self.sock = f"wsbus-bench-{os.getpid()}-{uuid4().hex[:8]}"
        self.argv = [tmux, "-L", self.sock, "-f", "/dev/null"]
        self.tmux = Tmux(self.argv)
        self.out = self.root / "pane.txt"
        self.injector = Injector(self.tmux, verify_delay=tp.verify_delay)
        self.marker = CommsTunables().marker
        self.hub = ServerProcess.hub("wsbus-tmux", tmp, env)
        self.bridge_log = self.root / "bridge.log"
        self.bridge: subprocess.Popen[bytes] | None = None
        self.client: Client | None = None
        self.server_started = False
        cfg = self.root / "agent-comms"
        self.registry = cfg / "registry.json"
        self.env = {
            **env,
            "AGENT_COMMS_TMUX": " ".join(self.argv),
            "AGENT_COMMS_REGISTRY": str(self.registry),
            "AGENT_COMMS_PROJECTS": str(cfg / "projects"),
            "AGENT_COMMS_THREADS": str(cfg / "threads"),
            "AGENT_COMMS_LOG": str(cfg / "comms.log"),
            "AGENT_COMMS_JOIN_DOC": str(cfg / "coms_join.md"),
            "AGENT_COMMS_VERIFY_DELAY": str(tp.verify_delay),
            # the same line on both sides: no loop-guard warning appended after 4 messages
            "AGENT_COMMS_LOOP_WARN_COUNT": "1000000",
            "WSBUS_SPOOL": str(self.root / "spool"),
            "WSBUS_HOSTNAME": "bench-host",
            "XDG_STATE_HOME": str(self.root / "state"),
        }
        for key in ("TMUX", "TMUX_PANE"):
            self.env.pop(key, None)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> TmuxRig:
        tp = self.tp
        self.out.write_text("")
        self.server_started = True
        await asyncio.to_thread(
            self.tmux.new_session,
            AGENT,
            [sys.executable, "-c", _READER, str(self.out)],
            width=200,
            height=50,
        )
        await self._until(lambda: self._cursor_x() == 2, tp.start_timeout, "the pane's prompt")
        await asyncio.to_thread(self.hub.start, tp.start_timeout)
        self.registry.parent.mkdir(parents=True, exist_ok=True)
        entry = {"session": AGENT, "enabled": True, "enter_delay": tp.enter_delay}
        self.registry.write_text(json.dumps({"agents": {AGENT: entry}}))
        with self.bridge_log.open("wb") as log:
            self.bridge = subprocess.Popen(
                child_argv("-m", "wsbus", "bridge"),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**self.env, "WSBUS_URL": self.hub.url},
                cwd=str(ROOT),
            )
        await self._until(
            lambda: f"bridge: serving {AGENT}" in self.bridge_output(),
            tp.start_timeout,
            "the bridge",
        )
        self.client = Client(
            self.hub.url, SENDER, channels=[], presence=False, open_timeout=tp.start_timeout
        )
        await self.client.connect()
        return self

    async def close(self) -> None:
        if self.client is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.client.close(), 10)
        proc = self.bridge
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            try:
                await asyncio.to_thread(proc.wait, 10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                await asyncio.to_thread(proc.wait, 10)
        self.hub.stop()
        if self.server_started:  # only this private server, and its socket file
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                subprocess.run([*self.argv, "kill-server"], capture_output=True, timeout=10)
            tmpdir = Path(os.environ.get("TMUX_TMPDIR") or "/tmp") / f"tmux-{os.getuid()}"
            (tmpdir / self.sock).unlink(missing_ok=True)

    def check(self) -> None:
        """Raise if the hub or the bridge is gone."""
        self.hub.check()
        if self.bridge is None or self.bridge.poll() is not None:
            raise BenchError(f"the bridge is not running: {self.bridge_output()[-1500:]}")

    def bridge_output(self) -> str:
        try:
            return self.bridge_log.read_text(errors="replace")
        except OSError:
            return ""

    def _cursor_x(self) -> int:
        try:
            return int(self.tmux.cursor(AGENT)[0])
        except Exception:
            return -1

    async def _until(self, ready: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not await asyncio.to_thread(ready):
            if self.bridge is not None and self.bridge.poll() is not None:
                raise BenchError(f"the bridge exited: {self.bridge_output()[-1500:]}")
            if time.monotonic() > deadline:
                raise BenchError(f"{what} not ready within {timeout:g}s")
            await asyncio.sleep(0.05)

    # ------------------------------------------------------------------ one delivery

    async def via_wsbus(self, text: str) -> tuple[float, str]:
        """Send ``text`` to the agent through the hub; seconds until its receipt, status."""
        assert self.client is not None
        began = time.perf_counter()
        res = await self.client.send(AGENT, text, timeout=self.tp.timeout)
        got = await wait_receipt(self.client, res.seq, {AGENT}, self.tp.timeout)
        took = time.perf_counter() - began
        receipt = got.get(AGENT)
        return took, receipt.status if receipt is not None else "no receipt"

    async def direct(self, text: str) -> tuple[float, str]:
        """Type the line the bridge would type, with the same Injector and delays."""
        line = message_line(self.marker, SENDER, time.time(), text)
        began = time.perf_counter()
        outcome = await asyncio.wait_for(
            self.injector.deliver_async(AGENT, line, self.tp.enter_delay), self.tp.timeout
        )
        return time.perf_counter() - began, outcome.status

    def deliver(self, side: Side, text: str) -> Awaitable[tuple[float, str]]:
        return self.via_wsbus(text) if side == "wsbus" else self.direct(text)

    # ------------------------------------------------------------------ what the pane got

    async def verify(self, ids: list[str], tag: str) -> dict[str, int]:
        """Check that every message id reached the pane's reader exactly once (waiting up
        to ``timeout`` for stragglers); raise :class:`BenchError` if not."""
        pattern = re.compile(rf"\| ({re.escape(tag)}-\d+) ")

        def count() -> tuple[Counter[str], int]:
            seen: Counter[str] = Counter()
            empty = 0
            for line in self.out.read_text(encoding="utf-8", errors="replace").splitlines():
                m = pattern.search(line)
                if m:
                    seen[m.group(1)] += 1
                elif not line.strip():
                    empty += 1
            return seen, empty

        deadline = time.monotonic() + self.tp.timeout
        while True:
            seen, empty = count()
            if all(seen[i] >= 1 for i in ids) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)  # a late duplicate would show by now
        seen, empty = count()
        missing = [i for i in ids if seen[i] == 0]
        twice = [i for i in ids if seen[i] > 1]
        if missing or twice:
            raise BenchError(
                f"delivered {sum(1 for i in ids if seen[i] == 1)}/{len(ids)} exactly once; "
                f"missing {missing[:5]}, more than once {twice[:5]}"
            )
        return {"delivered_once": len(ids), "empty_lines": empty}


def _empty_lines(rig: TmuxRig) -> int:
    text = rig.out.read_text(encoding="utf-8", errors="replace")
    return sum(1 for line in text.splitlines() if not line.strip())


# ----------------------------------------------------------------------- scenarios


async def tmux_latency(rig: TmuxRig, side: Side, tp: TmuxParams) -> dict[str, Any]:
    """One message at a time: send -> ``submitted`` receipt (wsbus), or one direct
    injection (typed, Enter, checked)."""
    rig.check()
    tag = run_tag() + "-lat"
    for i in range(tp.latency_warmup):
        _, status = await rig.deliver(side, body(f"{tag}w-{i}"))
        if status != "submitted":
            raise BenchError(f"warm-up message: {status}")
    empty_before = _empty_lines(rig)
    times: list[float] = []
    ids = [f"{tag}-{i}" for i in range(tp.latency_samples)]
    for msg_id in ids:
        took, status = await rig.deliver(side, body(msg_id))
        if status != "submitted":
            raise BenchError(f"{msg_id}: {status} (after {took:.2f}s)")
        times.append(took * 1e3)
    check = await rig.verify(ids, tag)
    times.sort()
    return {
        "samples": len(times),
        "p50_ms": percentile(times, 50),
        "p99_ms": percentile(times, 99),
        "max_ms": times[-1],
        "min_ms": times[0],
        "delivered_once": check["delivered_once"],
        "extra_enters": check["empty_lines"] - empty_before,
        "complete": True,
    }


async def tmux_burst(rig: TmuxRig, side: Side, tp: TmuxParams) -> dict[str, Any]:
    """``messages`` for one pane: wsbus sends them all at once and waits for every
    receipt; direct injects them one after another."""
    rig.check()
    tag = run_tag() + "-burst"
    ids = [f"{tag}-{i}" for i in range(tp.messages)]
    empty_before = _empty_lines(rig)
    statuses: dict[str, str] = {}
    deadline = time.monotonic() + tp.burst_deadline
    began = time.perf_counter()
    if side == "wsbus":
        client = rig.client
        assert client is not None
        results = await asyncio.wait_for(
            asyncio.gather(*(client.send(AGENT, body(i), timeout=tp.timeout) for i in ids)),
            tp.burst_deadline,
        )
        by_seq = {r.seq: i for r, i in zip(results, ids, strict=True)}

        async def collect() -> None:
            async for item in client:
                if (
                    isinstance(item, Receipt)
                    and item.seq in by_seq
                    and item.by == AGENT
                    and item.status in SETTLED
                ):
                    statuses[by_seq[item.seq]] = item.status
                    if len(statuses) == len(ids):
                        return

        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(collect(), max(0.0, deadline - time.monotonic()))
    else:
        for msg_id in ids:
            if time.monotonic() > deadline:
                break
            _, statuses[msg_id] = await rig.direct(body(msg_id))
    elapsed = time.perf_counter() - began
    done = sum(1 for s in statuses.values() if s == "submitted")
    if done != len(ids):
        others = Counter(statuses.get(i, "no receipt") for i in ids)
        raise BenchError(f"{done}/{len(ids)} submitted within {tp.burst_deadline:g}s: {others}")
    check = await rig.verify(ids, tag)
    return {
        "messages": len(ids),
        "elapsed_s": elapsed,
        "messages_per_s": len(ids) / elapsed,
        "delivered_once": check["delivered_once"],
        "extra_enters": check["empty_lines"] - empty_before,
        "complete": True,
    }


async def section(
    runs: dict[str, Any],
    errors: list[str],
    tmp: Path,
    env: dict[str, str],
    tp: TmuxParams,
    repeat: int,
) -> str | None:
    """Run the tmux scenarios ``repeat`` times, alternating which side goes first;
    returns why the section was skipped (tmux missing), else None."""
    missing = tmux_missing()
    if missing is not None:
        print(f"bench: tmux section skipped: {missing}", file=sys.stderr, flush=True)
        return missing
    rig = TmuxRig(tmp, env, tp)
    try:
        try:
            await rig.start()
        except Exception as err:
            errors.append(f"tmux: could not start: {err!r}")
            print(f"bench: tmux rig failed to start: {err!r}", file=sys.stderr, flush=True)
            return None
        for rep in range(repeat):
            sides: tuple[Side, Side] = ("wsbus", "direct") if rep % 2 == 0 else ("direct", "wsbus")
            for side in sides:
                await step(runs, errors, "tmux_latency", side, tmux_latency(rig, side, tp))
            for side in sides:
                await step(runs, errors, "tmux_burst", side, tmux_burst(rig, side, tp))
        if rig.bridge is not None and rig.bridge.poll() is not None:
            errors.append(f"the tmux bridge exited early: {rig.bridge_output()[-500:]}")
    finally:
        await rig.close()
    return None


# ----------------------------------------------------------------------- alone


async def _alone(tp: TmuxParams, repeat: int) -> int:
    from .report import markdown, tmux_rows
    from .servers import bench_env

    runs: dict[str, Any] = {}
    errors: list[str] = []

    with tempfile.TemporaryDirectory(prefix="wsbus-bench-tmux-") as tmpname:
        tmp = Path(tmpname)
        skipped = await section(runs, errors, tmp, bench_env(tmp), tp, repeat)
    results = {k: {label: summary(r) for label, r in v.items()} for k, v in runs.items()}
    print(markdown(tmux_rows(results, tp.messages, skipped)))
    print(json.dumps(results, indent=2, default=str))
    if errors:
        print("\nerrors:\n" + "\n".join(f"- {e}" for e in errors))
    return 1 if errors else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.tmux", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="small counts")
    ap.add_argument("--repeat", type=int, default=None, help="repetitions (default 1 / 3)")
    args = ap.parse_args(argv)
    tp = TmuxParams.quick() if args.quick else TmuxParams()
    repeat = args.repeat or (1 if args.quick else 3)
    return asyncio.run(_alone(tp, repeat))


if __name__ == "__main__":
    sys.exit(main())
