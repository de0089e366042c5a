"""Baseline (a) of ``make bench``: the ledger alone.

The purchase posting the gateway makes (card account debited, merchant
account credited, one ``purchase`` transfer) called directly from Python
through the ledger API (``ledger.postings.post``) as fast as possible: a pool
of coroutines over an asyncpg pool of the gateway's own kind and size, each
posting under a fresh idempotency key, for a fixed time. Against the database
of ``POSGW_DATA_DIR`` (the bench's), with the demo world's cards and merchant.

    python -m bench.ledger_baseline --seconds 10 --tasks 64 --json

Prints one JSON object: postings/s, results by kind, latency percentiles.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from typing import Any

from gateway.db.pool import create_pool
from gateway.settings import Settings
from ledger.postings import PostResult, Transfer, post
from sim.load.stats import latency_summary  # the simulator's percentiles (nearest rank), for like with like

DEMO_MERCHANT = "898100000000001"


async def run(seconds: float, tasks: int, pool_size: int) -> dict[str, Any]:
    settings = Settings(db_pool_min=pool_size, db_pool_max=pool_size)
    pool = await create_pool(settings)  # the gateway's pool: generic plans, no reset on release
    try:
        merchant = await pool.fetchval("SELECT account_id FROM merchants WHERE mid = $1", DEMO_MERCHANT)
        cards = [row["account_id"] for row in await pool.fetch("SELECT account_id FROM cards ORDER BY id")]
        if merchant is None or not cards:
            raise SystemExit("ledger baseline: no demo merchant or cards (run posgw demo first)")
        run_id = f"{os.getpid()}-{time.time_ns()}"
        results: dict[str, int] = {}
        latencies: list[float] = []
        # Warm-up: a posting per pool connection, so the pool is open and the plans are cached.
        await asyncio.gather(*(post(pool, f"bench:ledger:{run_id}:warm:{i}",
                                    [Transfer(cards[i % len(cards)], merchant, 1, "purchase")])
                               for i in range(pool_size)))
        started = time.perf_counter()
        ends = started + seconds

        async def worker(index: int) -> None:
            n = 0
            while time.perf_counter() < ends:
                card = cards[(index + n * tasks) % len(cards)]  # tasks never share a card at once
                amount = 1 + (n + index) % 10
                t0 = time.perf_counter()
                result = await post(pool, f"bench:ledger:{run_id}:{index}:{n}",
                                    [Transfer(card, merchant, amount, "purchase")])
                latencies.append(time.perf_counter() - t0)
                results[result.value] = results.get(result.value, 0) + 1
                n += 1

        await asyncio.gather(*(worker(i) for i in range(tasks)))
        elapsed = time.perf_counter() - started
    finally:
        await pool.close()
    ok = results.get(PostResult.OK.value, 0)
    return {"seconds": round(elapsed, 3), "tasks": tasks, "pool": pool_size, "postings": sum(results.values()),
            "ok": ok, "results": results, "postings_per_s": round(ok / elapsed, 1),
            "latency_ms": latency_summary(latencies)}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ledger_baseline", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--tasks", type=int, default=64, help="concurrent coroutines posting")
    parser.add_argument("--pool", type=int, default=16, help="asyncpg pool size (the gateway's db_pool_max)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    try:
        import uvloop
        runner = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency
        runner = asyncio.run
    report = runner(run(args.seconds, args.tasks, args.pool))
    print(json.dumps(report) if args.json else
          f"ledger: {report['postings_per_s']:.0f} postings/s over {report['seconds']} s, {report['results']}, "
          f"latency ms {report['latency_ms']}")


if __name__ == "__main__":
    main()
