"""Upkeep: the hub's periodic work — retention, store checkpoints, token checks.

Each runs in its own task, off the send path, and a failure is logged and
retried at the next turn: none of them stops the hub.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any

from .store import Store

if TYPE_CHECKING:
    from .hubconfig import HubConfig

__all__ = ["Upkeep"]

log = logging.getLogger("wsbus.hub")


class Upkeep:
    """Retention (``pruned_seq``), checkpoints and token-file checks."""

    def __init__(
        self,
        store: Store,
        config: HubConfig,
        *,
        committed: Callable[[], int],
        check_tokens: Callable[[], int] | None = None,
        retain: Callable[[float, int], Awaitable[tuple[int, int]]] | None = None,
    ) -> None:
        self.store = store
        #: applies retention (the log's: a shared log trims its stream too)
        self._retain = retain or store.prune
        self.config = config
        #: the highest seq retention removed (0: none)
        self.pruned_seq = 0
        self._committed = committed
        self._check_tokens = check_tokens
        self._tasks: list[asyncio.Task[None]] = []

    async def prune(self) -> int:
        """Apply retention now; returns how many events were removed."""
        c = self.config
        cutoff = time.time() - c.retention_days * 86400 if c.retention_days > 0 else 0.0
        removed, self.pruned_seq = await self._retain(cutoff, c.retention_count)
        if removed:
            log.info("retention removed %d events (up to seq %d)", removed, self.pruned_seq)
        return removed

    def start(self) -> None:
        loops: list[tuple[Callable[[], Coroutine[Any, Any, None]], str]] = [
            (self._checkpoint_loop, "wsbus-ckpt")
        ]
        if self.config.prune_interval > 0:
            loops.append((self._prune_loop, "wsbus-pruner"))
        if self._check_tokens is not None and self.config.auth_reload > 0:
            loops.append((self._auth_loop, "wsbus-auth"))
        self._tasks = [asyncio.create_task(fn(), name=name) for fn, name in loops]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def _auth_loop(self) -> None:
        assert self._check_tokens is not None
        while True:
            await asyncio.sleep(self.config.auth_reload)
            try:
                self._check_tokens()
            except Exception:
                log.exception("checking the token file failed")

    async def _checkpoint_loop(self) -> None:
        last = -1
        while True:
            await asyncio.sleep(1.0)
            if self._committed() == last:
                continue
            last = self._committed()
            try:
                await self.store.checkpoint()
            except Exception as err:
                log.warning("checkpoint failed: %s", err)

    async def _prune_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.prune_interval)
            try:
                await self.prune()
            except Exception as err:
                log.error("retention failed: %s", err)
