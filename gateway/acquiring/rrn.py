"""Retrieval reference numbers: 12 digits, unique across every gateway process.

Each process reserves blocks of ``BLOCK_SIZE`` numbers from a database
sequence and hands them out in memory. It reserves the next block while half
of the current one is still left, and only one reservation is ever under way:
every response that finds the block used up waits for that one, so a slow
database delays them once, not once each.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

BLOCK_SIZE = 10_000
RRN_DIGITS = 12


class RrnAllocator:
    def __init__(self, reserve_block: Callable[[], Awaitable[int]]) -> None:
        self._reserve_block = reserve_block
        self._next = 0
        self._end = 0
        self._refill: asyncio.Future[int] | None = None  # the one reservation under way

    def _start_refill(self) -> asyncio.Future[int]:
        if self._refill is None:
            self._refill = asyncio.ensure_future(self._reserve_block())
        return self._refill

    async def next(self) -> str:
        while self._next >= self._end:
            refill = self._start_refill()
            try:
                block = await asyncio.shield(refill)
            finally:
                if self._refill is refill and refill.done():
                    self._refill = None  # failed or used: the next caller starts afresh
            if self._next >= self._end:  # the first waiter back installs the block
                self._next, self._end = block * BLOCK_SIZE, (block + 1) * BLOCK_SIZE
        value = self._next
        self._next += 1
        if self._end - self._next < BLOCK_SIZE // 2:
            self._start_refill()
        return f"{value % 10**RRN_DIGITS:0{RRN_DIGITS}d}"
