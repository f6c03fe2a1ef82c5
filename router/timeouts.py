"""Timeouts of one length for many futures, kept by one loop timer.

The route path waits on two writer futures per signal, each bounded. A loop timer per wait
(`call_later`, then `cancel`) costs 1.55 µs here, twice a signal. When every wait has the
same length, the order in which they began is the order in which they expire, so a queue
and one timer armed for its head do the same work: a future answered meanwhile is dropped
from the queue, never timed.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any


class FixedTimeouts:
    """Fails each added future with TimeoutError `after_s` seconds after it was added,
    unless it is done by then."""

    __slots__ = ("_after_s", "_loop", "_timer", "_waiting")

    def __init__(self, loop: asyncio.AbstractEventLoop, after_s: float) -> None:
        self._loop = loop
        self._after_s = after_s
        self._waiting: collections.deque[tuple[float, asyncio.Future[Any]]] = collections.deque()
        self._timer: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        """Futures still held (answered ones leave lazily, from the front)."""
        return len(self._waiting)

    def add(self, future: asyncio.Future[Any]) -> None:
        """Time `future` out `after_s` from now."""
        waiting = self._waiting
        # Answers come back about in order: what is done at the front leaves now, so the
        # queue holds the futures since the oldest one still waiting, not every recent one.
        while waiting and waiting[0][1].done():
            waiting.popleft()
        waiting.append((self._loop.time() + self._after_s, future))
        if self._timer is None:
            self._timer = self._loop.call_at(waiting[0][0], self._expire)

    def _expire(self) -> None:
        self._timer = None
        now = self._loop.time()
        waiting = self._waiting
        while waiting and (waiting[0][1].done() or waiting[0][0] <= now):
            _, future = waiting.popleft()
            if not future.done():
                future.set_exception(TimeoutError())
        if waiting:
            self._timer = self._loop.call_at(waiting[0][0], self._expire)

    def close(self) -> None:
        """Stop the timer; futures still held are no longer timed."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._waiting.clear()
