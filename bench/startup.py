"""CLI start-up: how long a whole ``wsbus`` process takes, beside what agents used before.

Agents call ``wsbus send`` in loops, so what counts is the wall time of one process,
from spawn to exit: ``wsbus --help`` against ``python -c pass`` (the interpreter
alone), and ``wsbus send`` (body on stdin, returns after the durable ok) against
agent-bus's own ``bus_send.py`` (``--agent-bus-send PATH``: it is not part of this
repository) and ``curl`` POSTing the same message to the same hub's HTTP shim, and
against the *import floor* (:data:`FLOOR`): a process that only imports what every
``wsbus`` command needs, so the rows separate wsbus's own cost from its libraries'. Every
command runs in turn, round after round (so a machine that slows down slows all of
them), after a warm-up round (which also writes the bytecode caches, as an installed
package has them: ``PYTHONDONTWRITEBYTECODE`` is dropped); each figure is the median.

``python -m bench.startup [--runs N] [--agent-bus-send PATH]`` runs this section alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .common import alone, step
from .report import Row, _get, _ratio, _section
from .servers import ServerProcess

__all__ = ["StartupParams", "section", "startup_rows"]

SECTION = (
    "**CLI start-up**: wall time of a whole process, spawn to exit (baseline as named, "
    "same run, same interpreter)"
)
NO_AGENT_BUS = "n/a (run with --agent-bus-send)"
FLOOR = "import argparse, msgspec, websockets.client"
"""What any ``wsbus`` command imports before doing anything: its argument parser and its
two wire libraries (base dependencies), in a process that then exits. ``wsbus send``
cannot start faster than this; the rows show how far the baselines are below it."""
MESSAGE = "T1 verify done: 4/4 hits are honeypots"


@dataclass
class StartupParams:
    runs: int = 20

    @classmethod
    def quick(cls) -> StartupParams:
        return cls(runs=3)


def wsbus_argv() -> list[str]:
    """The ``wsbus`` command as users run it: the installed script next to this
    interpreter, else ``python -m wsbus``."""
    script = Path(sys.executable).with_name("wsbus")
    return [str(script)] if script.exists() else [sys.executable, "-m", "wsbus"]


def commands(hub: ServerProcess, agent_bus_send: Path | None) -> dict[str, list[str]]:
    """label -> argv; each reads MESSAGE on stdin (``--help`` and curl ignore it)."""
    wsbus = wsbus_argv()
    out = {
        "python": [sys.executable, "-c", "pass"],
        "help": [*wsbus, "--help"],
        "send": [*wsbus, "send", "bob"],
        "floor": [sys.executable, "-c", FLOOR],
    }
    if agent_bus_send is not None:
        out["bus_send"] = [sys.executable, str(agent_bus_send), "bob"]
    curl = shutil.which("curl")
    if curl is not None:
        body = json.dumps({"from": "alice", "to": "bob", "msg": MESSAGE})
        out["curl"] = [curl, "-sS", "-f", "-H", "Content-Type: application/json",
                       "-d", body, f"{hub.http_url}/send"]  # fmt: skip
    return out


def _once(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """One run: wall and CPU (user + sys) seconds; raises if it failed."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    r = subprocess.run(argv, env=env, input=MESSAGE.encode(), capture_output=True, timeout=60)
    wall = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        raise RuntimeError(f"{argv[-2:]} exited {r.returncode}: {r.stderr.decode()[-300:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def measure(cmds: dict[str, list[str]], env: dict[str, str], runs: int) -> dict[str, Any]:
    """Every command in turn, ``runs`` rounds after a warm-up round: medians in ms."""
    walls: dict[str, list[float]] = {label: [] for label in cmds}
    cpus: dict[str, list[float]] = {label: [] for label in cmds}
    for round_ in range(runs + 1):
        for label, argv in cmds.items():
            wall, cpu = _once(argv, env)
            if round_:  # the first round warms the caches
                walls[label].append(wall)
                cpus[label].append(cpu)
    out: dict[str, Any] = {"samples": runs}
    for label in cmds:
        out[f"{label}_ms"] = round(statistics.median(walls[label]) * 1e3, 1)
        out[f"{label}_cpu_ms"] = round(statistics.median(cpus[label]) * 1e3, 1)
    return out


async def startup(
    hub: ServerProcess, env: dict[str, str], sp: StartupParams, agent_bus_send: Path | None
) -> dict[str, Any]:
    run_env = dict(
        env,
        WSBUS_URL=hub.url,
        WSBUS_NAME="alice",
        AGENT_BUS_URL=hub.http_url,
        AGENT_NAME="alice",
    )
    # as installed: bytecode cached (the warm-up round writes it for a source checkout)
    run_env.pop("PYTHONDONTWRITEBYTECODE", None)
    return await asyncio.to_thread(measure, commands(hub, agent_bus_send), run_env, sp.runs)


async def section(
    runs: dict[str, Any],
    errors: list[str],
    tmp: Path,
    env: dict[str, str],
    sp: StartupParams,
    agent_bus_send: Path | None = None,
) -> None:
    """The start-up rows, against a hub of its own (its shim serves bus_send and curl)."""
    hub = ServerProcess.hub("startup", tmp, env, "--rate-events", "0", "--rate-bytes", "0")
    hub.start()
    try:
        await step(runs, errors, "startup", "wsbus", startup(hub, env, sp, agent_bus_send))
    finally:
        hub.stop()


def startup_rows(results: dict[str, Any], agent_bus_send: bool) -> list[Row]:
    out = [_section(SECTION)]

    def pair(name: str, field: str, base: str, missing: str = "n/a") -> None:
        a, at = _get(results, "startup", "wsbus", f"{field}_ms")
        b, bt = _get(results, "startup", "wsbus", f"{base}_ms")
        out.append(Row(name, at, bt if b is not None else missing, _ratio(a, b)))

    pair("`wsbus --help` (ms; baseline `python -c pass`)", "help", "python")
    pair(
        "`wsbus send`, stdin to durable ok (ms; baseline agent-bus `bus_send.py` to the shim)",
        "send",
        "bus_send",
        NO_AGENT_BUS if not agent_bus_send else "error",
    )
    pair("`wsbus send` (ms; baseline `curl` POST to the shim's /send)", "send", "curl",
         "n/a (no curl)")  # fmt: skip
    pair("`wsbus send`: CPU user+sys (ms; baseline `bus_send.py`)", "send_cpu", "bus_send_cpu",
         NO_AGENT_BUS if not agent_bus_send else "error")  # fmt: skip
    pair("import floor: `python -c 'import argparse, msgspec, websockets.client'` (ms; "
         "baseline `bus_send.py`)", "floor", "bus_send",
         NO_AGENT_BUS if not agent_bus_send else "error")  # fmt: skip
    pair("`wsbus send` (ms; baseline the import floor above)", "send", "floor")
    return out


async def _alone(sp: StartupParams, agent_bus_send: Path | None) -> int:
    return await alone(
        "startup",
        lambda runs, errors, tmp, env: section(runs, errors, tmp, env, sp, agent_bus_send),
        lambda results: startup_rows(results, agent_bus_send is not None),
    )


def agent_bus_send_arg(ap: argparse.ArgumentParser) -> None:
    """The ``--agent-bus-send PATH`` option (``python -m bench`` takes it too)."""
    ap.add_argument(
        "--agent-bus-send",
        type=Path,
        metavar="PATH",
        help="the original agent-bus bus_send.py: the baseline of `wsbus send`'s start-up "
        "(it is not part of this repository)",
    )


def checked_path(ap: argparse.ArgumentParser, path: Path | None) -> Path | None:
    if path is not None and not path.is_file():
        ap.error(f"--agent-bus-send: no such file: {path}")
    return path.resolve() if path is not None else None


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.startup", description=__doc__)
    ap.add_argument("--runs", type=int, default=StartupParams.runs, help="rounds (default 20)")
    agent_bus_send_arg(ap)
    args = ap.parse_args()
    path = checked_path(ap, args.agent_bus_send)
    try:
        return asyncio.run(_alone(StartupParams(runs=max(1, args.runs)), path))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
