"""Calls run on a worker thread, several per hop.

Handing one call to a thread and back costs the event loop about 100 µs of CPU
(futures, the thread's wake-up, the loop's own wake-up through its self-pipe); a
small SQLite query costs a few. A crowd reconnecting at once asks the store for
each session's waiting mail in the same few milliseconds, so :class:`Hops` sends
every call submitted before the loop next runs to the thread as one job, run one
after another there: one hop for them all. The thread runs them in the order they
were submitted, as a one-thread pool would; each caller gets its own result or
exception.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

__all__ = ["Hops"]

T = TypeVar("T")

_Job = tuple[Callable[[], Any], "asyncio.Future[Any]"]


def _run_all(jobs: list[_Job]) -> list[tuple[bool, Any]]:
    """(ok, result or exception) of each job, in order (on the worker thread)."""
    out: list[tuple[bool, Any]] = []
    for fn, _ in jobs:
        try:
            out.append((True, fn()))
        except Exception as err:  # the caller's to handle, as from run_in_executor
            out.append((False, err))
    return out


class Hops:
    """Runs calls on ``pool``'s thread, all those of one loop turn in one hop."""

    def __init__(self, pool: ThreadPoolExecutor) -> None:
        self.pool = pool
        self._jobs: list[_Job] = []
        #: hops made so far (for tests)
        self.hops = 0

    def run(self, fn: Callable[[], T]) -> asyncio.Future[T]:
        """``fn()`` on the thread; its result (or exception) in the returned future."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        self._jobs.append((fn, fut))
        if len(self._jobs) == 1:
            loop.call_soon(self._send, loop)
        return fut

    def _send(self, loop: asyncio.AbstractEventLoop) -> None:
        jobs, self._jobs = self._jobs, []
        self.hops += 1
        try:
            done = self.pool.submit(_run_all, jobs)
        except RuntimeError as err:  # the pool was shut down
            self._resolve(jobs, None, err)
            return

        def back(f: Future[list[tuple[bool, Any]]]) -> None:
            err = f.exception()
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting
                loop.call_soon_threadsafe(self._resolve, jobs, None if err else f.result(), err)

        done.add_done_callback(back)

    @staticmethod
    def _resolve(
        jobs: list[_Job], results: list[tuple[bool, Any]] | None, err: BaseException | None
    ) -> None:
        for i, (_, fut) in enumerate(jobs):
            if fut.done():  # cancelled meanwhile
                continue
            if results is None:
                fut.set_exception(err if err is not None else RuntimeError("no result"))
            elif results[i][0]:
                fut.set_result(results[i][1])
            else:
                fut.set_exception(results[i][1])
