import asyncio

from gateway.acquiring.rrn import BLOCK_SIZE, RrnAllocator


async def test_numbers_are_unique_and_waiters_share_one_reservation():
    reservations = []

    async def reserve() -> int:
        reservations.append(len(reservations))
        await asyncio.sleep(0.05)  # a slow database
        return len(reservations)

    allocator = RrnAllocator(reserve)
    numbers = await asyncio.gather(*(allocator.next() for _ in range(500)))
    assert len(set(numbers)) == 500 and all(len(n) == 12 and n.isdigit() for n in numbers)
    assert len(reservations) == 1  # 500 waiters, one reservation
    more = [await allocator.next() for _ in range(BLOCK_SIZE)]  # past the block: one refill, prefetched
    assert len(set(numbers) | set(more)) == 500 + BLOCK_SIZE
    assert len(reservations) <= 3


async def test_a_failed_reservation_is_retried_by_the_next_request():
    attempts = []

    async def reserve() -> int:
        attempts.append(1)
        if len(attempts) == 1:
            raise ConnectionError("database away")
        return 7

    allocator = RrnAllocator(reserve)
    try:
        await allocator.next()
        raise AssertionError("the first reservation should fail")
    except ConnectionError:
        pass
    assert await allocator.next() == f"{7 * BLOCK_SIZE:012d}"
