"""FixedTimeouts: each future times out on its own schedule, through one loop timer."""

from __future__ import annotations

import asyncio

import pytest

from router.timeouts import FixedTimeouts

pytestmark = pytest.mark.asyncio


async def test_a_future_left_unanswered_fails_with_timeout_after_its_length() -> None:
    loop = asyncio.get_running_loop()
    waits = FixedTimeouts(loop, 0.05)
    future: asyncio.Future[int] = loop.create_future()
    started = loop.time()
    waits.add(future)
    with pytest.raises(TimeoutError):
        await future
    assert 0.05 <= loop.time() - started < 0.5


async def test_each_future_expires_at_its_own_time_not_at_the_first_ones() -> None:
    loop = asyncio.get_running_loop()
    waits = FixedTimeouts(loop, 0.5)
    first: asyncio.Future[int] = loop.create_future()
    waits.add(first)
    await asyncio.sleep(0.25)
    second: asyncio.Future[int] = loop.create_future()
    waits.add(second)
    await asyncio.sleep(0.35)  # 0.6 s after the first, 0.35 after the second
    assert first.done() and isinstance(first.exception(), TimeoutError)
    assert not second.done()
    await asyncio.sleep(0.3)
    assert second.done() and isinstance(second.exception(), TimeoutError)


async def test_an_answered_future_keeps_its_answer_and_leaves_the_queue() -> None:
    loop = asyncio.get_running_loop()
    waits = FixedTimeouts(loop, 0.05)
    answered: asyncio.Future[int] = loop.create_future()
    cancelled: asyncio.Future[int] = loop.create_future()
    waits.add(answered)
    waits.add(cancelled)
    answered.set_result(7)
    cancelled.cancel()
    late: asyncio.Future[int] = loop.create_future()
    waits.add(late)  # the answered ones at the front leave as it joins
    assert len(waits) == 1
    await asyncio.sleep(0.1)
    assert answered.result() == 7 and cancelled.cancelled()
    assert isinstance(late.exception(), TimeoutError)
    assert len(waits) == 0


async def test_one_waiting_future_at_the_front_does_not_time_out_the_ones_behind_early() -> None:
    loop = asyncio.get_running_loop()
    waits = FixedTimeouts(loop, 0.5)
    slow: asyncio.Future[int] = loop.create_future()
    waits.add(slow)
    await asyncio.sleep(0.25)
    behind = [loop.create_future() for _ in range(3)]
    for future in behind:
        waits.add(future)
    await asyncio.sleep(0.35)  # the first expired; the others have ~0.15 s left
    assert isinstance(slow.exception(), TimeoutError)
    assert not any(future.done() for future in behind)
    behind[0].set_result(1)
    await asyncio.sleep(0.3)
    assert behind[0].result() == 1
    assert all(isinstance(f.exception(), TimeoutError) for f in behind[1:])


async def test_close_stops_timing() -> None:
    loop = asyncio.get_running_loop()
    waits = FixedTimeouts(loop, 0.03)
    future: asyncio.Future[int] = loop.create_future()
    waits.add(future)
    waits.close()
    await asyncio.sleep(0.06)
    assert not future.done()
