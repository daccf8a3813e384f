"""Smoke test of the benchmark harness: ``python -m bench --quick`` runs and prints its table."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

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
]


@pytest.mark.timeout(200)
def test_bench_quick(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "| scenario | wsbus | bare websockets | ratio (wsbus/bare) |" in proc.stdout
    table = [line for line in proc.stdout.splitlines() if line.startswith("| ")]
    for name in SCENARIOS:
        row = next((line for line in table if line.startswith(f"| {name}")), None)
        assert row is not None, f"no row for {name!r} in:\n{proc.stdout}"
        assert "error" not in row, row
    data = json.loads(out.read_text())
    assert data["mode"] == "quick" and not data["errors"]
    assert data["results"]["latency"]["wsbus"]["samples"] > 0
