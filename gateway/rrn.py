"""Retrieval reference numbers: 12 digits, unique across every gateway process.

Each process reserves blocks of ``BLOCK_SIZE`` numbers from a database
sequence and hands them out in memory; it reserves the next block while half
of the current one is still left, so a response rarely waits on the database.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

BLOCK_SIZE = 1000
RRN_DIGITS = 12


class RrnAllocator:
    def __init__(self, reserve_block: Callable[[], Awaitable[int]]) -> None:
        self._reserve_block = reserve_block
        self._next = 0
        self._end = 0
        self._spare: asyncio.Task[int] | None = None

    async def next(self) -> str:
        if self._next >= self._end:
            spare, self._spare = self._spare, None
            block = await (spare if spare is not None else self._reserve_block())
            self._next, self._end = block * BLOCK_SIZE, (block + 1) * BLOCK_SIZE
        value = self._next
        self._next += 1
        if self._spare is None and self._end - self._next < BLOCK_SIZE // 2:
            self._spare = asyncio.ensure_future(self._reserve_block())
        return f"{value % 10**RRN_DIGITS:0{RRN_DIGITS}d}"
