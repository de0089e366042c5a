"""Fixtures of the biller link's tests: the biller simulator on a real socket, an
HTTP biller registered against it, pools for forwarders, and a forwarder's settings
fast enough for tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from gateway.upstream.billers import Connectors
from gateway.upstream.outbox import Forwarder, ForwarderSettings
from sim.biller import BillerSimulator

BILLER = "SIM01"
FAST = ForwarderSettings(poll_interval_s=0.05, batch_max=16, backoff_base_s=0.05, backoff_max_s=0.2,
                         age_alert_s=3600.0, lease_s=3.0)


@pytest.fixture
async def biller_sim() -> AsyncIterator[BillerSimulator]:
    sim = BillerSimulator(prepaid=True)
    await sim.start()
    yield sim
    await sim.stop()


@pytest.fixture
async def http_biller(cli, biller_sim) -> str:
    """SIM01: a prepaid biller reached over HTTP at the simulator, commission 1%."""
    result = await cli("biller", "add", BILLER, "--name", "Simulated Power", "--prepaid", "--connector", "http",
                       "--url", biller_sim.url, "--commission-bp", "100")
    assert result.code == 0, result.stderr
    return BILLER


@pytest.fixture
async def pool(db_url) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(db_url, min_size=1, max_size=4)
    yield pool
    await pool.close()


class ForwarderHarness:
    """Forwarders each with a pool and connectors of their own, as separate gateways have."""

    def __init__(self, db_url: str) -> None:
        self.db_url = db_url
        self._made: list[tuple[Forwarder, asyncpg.Pool, Connectors]] = []

    async def make(self, settings: ForwarderSettings = FAST, timeout_s: float = 1.0) -> Forwarder:
        pool = await asyncpg.create_pool(self.db_url, min_size=1, max_size=4)
        connectors = Connectors(pool, timeout_s)
        forwarder = Forwarder(pool, connectors, settings)
        self._made.append((forwarder, pool, connectors))
        return forwarder

    async def close(self) -> None:
        for forwarder, pool, connectors in self._made:
            await forwarder.stop()
            await connectors.close()
            await pool.close()


@pytest.fixture
async def forwarders(db_url) -> AsyncIterator[ForwarderHarness]:
    harness = ForwarderHarness(db_url)
    yield harness
    await harness.close()
