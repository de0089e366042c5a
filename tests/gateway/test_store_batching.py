"""Batching in the store: the requests that arrive while one batch is in
flight go together in the next, one bad request fails only itself, and a
request given up before it is sent is never sent. The batcher is tested
against a stub ``send``; the batched context read against a real database."""

from __future__ import annotations

import asyncio
from datetime import date
from typing import Any

import asyncpg

from gateway.acquiring import store
from gateway.acquiring.operations import TxnKey


class StubSend:
    """Records each batch; holds it until released; fails batches holding a ``bad`` item."""

    def __init__(self) -> None:
        self.batches: list[list[Any]] = []
        self.release = asyncio.Event()

    async def __call__(self, items: list[Any]) -> list[Any]:
        self.batches.append(list(items))
        await self.release.wait()
        if "bad" in items:
            raise ValueError("cannot encode")
        return [f"done {item}" for item in items]


async def test_requests_arriving_while_a_batch_is_in_flight_go_together_in_the_next():
    send = StubSend()
    batcher = store._Batcher(send)
    first = asyncio.ensure_future(batcher.submit("a"))
    await asyncio.sleep(0)  # "a" leaves at once, alone
    rest = [asyncio.ensure_future(batcher.submit(item)) for item in ("b", "c", "d")]
    await asyncio.sleep(0)
    assert send.batches == [["a"]]
    send.release.set()
    assert await asyncio.gather(first, *rest) == ["done a", "done b", "done c", "done d"]
    assert send.batches == [["a"], ["b", "c", "d"]]


async def test_a_batch_is_never_larger_than_the_maximum():
    send = StubSend()
    send.release.set()
    batcher = store._Batcher(send)
    items = list(range(store.BATCH_MAX + 10))
    results = await asyncio.gather(*(batcher.submit(item) for item in items))
    assert results == [f"done {item}" for item in items]
    assert max(len(batch) for batch in send.batches) == store.BATCH_MAX


async def test_a_failing_batch_is_retried_one_by_one_so_only_the_bad_request_fails():
    send = StubSend()
    batcher = store._Batcher(send)
    blocker = asyncio.ensure_future(batcher.submit("x"))
    await asyncio.sleep(0)
    waiting = [asyncio.ensure_future(batcher.submit(item)) for item in ("b", "bad", "c")]
    await asyncio.sleep(0)
    send.release.set()
    assert await blocker == "done x"
    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert results[0] == "done b" and results[2] == "done c"
    assert isinstance(results[1], ValueError)
    assert send.batches == [["x"], ["b", "bad", "c"], ["b"], ["bad"], ["c"]]


async def test_a_request_given_up_before_it_is_sent_is_never_sent_and_one_sent_is_reported():
    send = StubSend()
    batcher = store._Batcher(send)
    sent: list[str] = []
    blocker = asyncio.ensure_future(batcher.submit("x", lambda: sent.append("x")))
    await asyncio.sleep(0)
    given_up = asyncio.ensure_future(batcher.submit("gone", lambda: sent.append("gone")))
    kept = asyncio.ensure_future(batcher.submit("kept", lambda: sent.append("kept")))
    await asyncio.sleep(0)
    given_up.cancel()
    send.release.set()
    assert await blocker == "done x" and await kept == "done kept"
    assert send.batches == [["x"], ["kept"]]
    assert sent == ["x", "kept"]


async def test_a_batch_of_contexts_comes_back_in_request_order(db_url: str, cli, world):
    pool = await asyncpg.create_pool(db_url, min_size=1, max_size=2)
    try:
        today = date.today()

        def request(tid: str, stan: str) -> store._ContextRequest:
            return store._ContextRequest.of(TxnKey(tid, 1, stan, "0200"), None, None, None, today, False)

        contexts = await store._load_contexts(
            pool, [request(world.tid, "000001"), request("NOSUCHID", "000002"), request(world.tid, "000003")])
        assert [c.terminal.tid if c else None for c in contexts] == [world.tid, None, world.tid]
        assert contexts[0].terminal.mid == world.mid and contexts[0].stored is None

        # Through the store's batcher, many at once: each caller gets its own terminal's context.
        transactions = store.Store(pool)
        loads = [transactions.load_context(TxnKey(tid, 1, f"{n:06d}", "0200"), None, None, None, today, False)
                 for n, tid in enumerate([world.tid, "NOSUCHID"] * 20)]
        results = await asyncio.gather(*loads)
        assert [c.terminal.tid if c else None for c in results] == [world.tid, None] * 20

        # A value the database refuses fails its own request only, not the batch it went in.
        def load(tid: str) -> Any:
            return transactions.load_context(TxnKey(tid, 1, "000001", "0200"), None, None, None, today, False)

        outcomes = await asyncio.gather(load(world.tid), load("BAD\x00TID"), load(world.tid),
                                        return_exceptions=True)
        assert isinstance(outcomes[1], Exception)
        assert outcomes[0].terminal.tid == outcomes[2].terminal.tid == world.tid
    finally:
        await pool.close()
