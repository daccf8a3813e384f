"""cli/bridge/filewatch.py: what counts as a change, and waiting returns early on one."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from wsbus.cli.bridge.filewatch import FileWatch


def test_changes_to_watched_files_are_seen_once(tmp_path: Path) -> None:
    registry, projects = tmp_path / "registry.json", tmp_path / "projects"
    watch = FileWatch([registry], [projects])
    assert not watch.changed()  # nothing there, nothing changed
    registry.write_text("{}")
    assert watch.changed() and not watch.changed()
    (projects / "team").mkdir(parents=True)
    assert not watch.changed()  # a directory alone is no roster
    (projects / "team" / "acme.json").write_text("{}")  # nested project names too
    assert watch.changed()
    (projects / "acme.json.lock").write_text("")  # lock files are not watched
    assert not watch.changed()
    tmp = projects / "x.tmp"
    tmp.write_text('{"members": {}}')
    os.replace(tmp, projects / "team" / "acme.json")  # an atomic rewrite: a new inode
    assert watch.changed()
    registry.unlink()
    assert watch.changed()


def test_wait_returns_early_on_a_change_else_after_the_timeout(tmp_path: Path) -> None:
    registry = tmp_path / "registry.json"
    watch = FileWatch([registry], poll=0.01)

    async def main() -> tuple[bool, float, bool, float]:
        start = time.monotonic()
        quiet = await watch.wait(0.1)
        waited = time.monotonic() - start
        loop = asyncio.get_running_loop()
        loop.call_later(0.05, registry.write_text, "{}")
        start = time.monotonic()
        early = await watch.wait(30)
        return quiet, waited, early, time.monotonic() - start

    quiet, waited, early, took = asyncio.run(main())
    assert not quiet and waited >= 0.1
    assert early and took < 5
