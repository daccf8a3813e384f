"""wsbus/store/hops.py: the store's reads go to their thread several per hop."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from wsbus.store.hops import Hops


async def test_calls_of_one_turn_take_one_hop_in_order_each_its_own_result() -> None:
    pool = ThreadPoolExecutor(1)
    hops = Hops(pool)
    ran: list[int] = []
    main = threading.get_ident()

    def job(i: int) -> tuple[int, bool]:
        ran.append(i)
        return i * i, threading.get_ident() != main

    try:
        results = await asyncio.gather(*(hops.run(lambda i=i: job(i)) for i in range(100)))
        assert results == [(i * i, True) for i in range(100)]  # on the thread, in order
        assert ran == list(range(100))
        assert hops.hops == 1
        # a later turn: another hop
        assert await hops.run(lambda: job(7)) == (49, True)
        assert hops.hops == 2
    finally:
        pool.shutdown()


async def test_an_exception_reaches_its_caller_only_and_a_cancelled_caller_harms_none() -> None:
    pool = ThreadPoolExecutor(1)
    hops = Hops(pool)
    gate = threading.Event()

    def boom() -> int:
        raise ValueError("this one failed")

    try:
        first = hops.run(lambda: gate.wait(10))  # holds the thread while the rest queue up
        await asyncio.sleep(0.05)
        ok = hops.run(lambda: 1)
        bad = hops.run(boom)
        gone = hops.run(lambda: 2)
        after = hops.run(lambda: 3)
        gone.cancel()
        gate.set()
        assert await first is True
        assert await ok == 1
        with pytest.raises(ValueError, match="this one failed"):
            await bad
        assert await after == 3
        assert gone.cancelled()
    finally:
        pool.shutdown()


async def test_a_pool_shut_down_fails_the_callers_instead_of_leaving_them_waiting() -> None:
    pool = ThreadPoolExecutor(1)
    pool.shutdown()
    hops = Hops(pool)
    with pytest.raises(RuntimeError):
        await asyncio.wait_for(hops.run(lambda: 1), 5)
