"""The load generator against a real gateway and PostgreSQL: closed and open loop,
persistent and per-transaction connections, and a run full of faults that leaves
the ledger clean."""

from __future__ import annotations

import time

import pytest
from prometheus_client import REGISTRY

from sim.load import LoadOptions, World, run_load

pytestmark = pytest.mark.slow

MIX = {"purchase": 70, "balance": 10, "bill-pay": 20}


@pytest.fixture
async def demo_world(cli) -> World:
    result = await cli("demo", "--terminals", "4", "--cards", "4", "--json")
    assert result.code == 0, result.stderr
    return World.from_json(result.json)


def options(gateway, **overrides) -> LoadOptions:
    values = {"host": "127.0.0.1", "port": gateway.server.port, "duration_s": 2.0, "mix": dict(MIX),
              "timeout_s": 5.0, "seed": 7}
    values.update(overrides)
    return LoadOptions(**values)


def assert_clean(report: dict) -> None:
    assert report["approved"] > 0, report["by_code"]
    assert report["errors"]["mac_failures"] == 0
    assert report["errors_total"] == 0, report["errors"] | {"by_code": report["by_code"]}
    assert report["requests"] == report["answered"] == sum(report["by_code"].values())
    assert report["signon"]["signed_on"] == report["terminals"] == 4
    assert set(report["by_type"]) == set(MIX)
    assert report["latency_ms"]["p50"] is not None
    assert report["latency_ms"]["p50"] <= report["latency_ms"]["p99"] <= report["latency_ms"]["max"]


def sign_ons() -> float:
    return REGISTRY.get_sample_value("posgw_sign_ons_total", {"response_code": "00"}) or 0.0


async def assert_ledger_clean(cli) -> None:
    result = await cli("ledger", "check", "--json")
    assert result.code == 0, result.stdout + result.stderr
    assert result.json["ok"] is True


async def test_closed_loop_on_persistent_connections(gateway, cli, demo_world):
    report = (await run_load(demo_world, options(gateway))).to_dict()
    assert report["mode"] == "closed" and report["connect"] == "persistent"
    assert_clean(report)
    assert report["requests"] > 40  # 4 terminals for 2 s, one request at a time each
    assert 1.9 <= report["duration_s"] < 4
    await assert_ledger_clean(cli)


async def test_closed_loop_with_a_connection_per_transaction(gateway, cli, demo_world):
    report = (await run_load(demo_world, options(gateway, connect="per-txn"))).to_dict()
    assert report["connect"] == "per-txn"
    assert_clean(report)
    await assert_ledger_clean(cli)


async def test_open_loop_at_a_low_rate_keeps_the_schedule(gateway, cli, demo_world):
    report = (await run_load(demo_world, options(gateway, rate=40.0))).to_dict()
    assert report["mode"] == "open"
    assert_clean(report)
    open_loop = report["open_loop"]
    assert open_loop["scheduled"] == 80 and open_loop["sent"] == 80 and open_loop["dropped"] == 0
    assert report["requests"] == 80
    assert 30 <= report["throughput_rps"] <= 45
    await assert_ledger_clean(cli)


async def test_warmup_is_driven_first_and_reported_apart(gateway, cli, demo_world):
    sign_ons_before, started = sign_ons(), time.time()
    report = (await run_load(demo_world, options(gateway, rate=40.0, duration_s=1.5, warmup_s=1.0))).to_dict()
    assert_clean(report)
    # the measured run is its own: 60 slots in 1.5 s, none of the warm-up's 40
    assert report["open_loop"]["scheduled"] == report["requests"] == 60
    warmup = report["warmup"]
    assert warmup["open_loop"]["scheduled"] == warmup["requests"] == warmup["answered"] == 40
    assert warmup["approved"] > 0 and warmup["errors_total"] == 0 and warmup["errors"] == {}
    assert 0.9 <= warmup["duration_s"] < 2.5
    assert started + 0.9 <= warmup["ended_at"] <= time.time() - 1.4  # the run's 1.5 s came after
    assert sum(warmup["by_code"].values()) == 40
    assert warmup["latency_ms"]["p50"] <= warmup["latency_ms"]["max"]
    # one sign-on for both: the gateway saw each terminal sign on once
    assert sign_ons() - sign_ons_before == report["signon"]["signed_on"] == 4
    await assert_ledger_clean(cli)


async def test_faults_end_with_every_drop_reversed_and_the_ledger_clean(gateway, cli, demo_world):
    faults = {"drop": 10.0, "repeat": 10.0, "badmac": 10.0, "garbage": 10.0}
    report = (await run_load(demo_world, options(gateway, faults=faults))).to_dict()
    assert report["approved"] > 0
    assert report["errors_total"] == 0, report["errors"] | {"by_code": report["by_code"]}
    f = report["faults"]
    # dropped requests: every one that could move money got its reversal answered, 00
    assert f["drop"]["injected"] > 0 and f["drop"]["reversals_needed"] > 0
    reversals = report["reversals"]
    assert reversals["by_cause"] == {"drop": f["drop"]["reversals_needed"]}
    assert reversals["sent"] == reversals["answered"] == f["drop"]["reversals_needed"]
    assert reversals["unanswered"] == 0 and reversals["by_code"] == {"00": reversals["answered"]}
    # repeats: answered byte for byte as the first time
    assert f["repeat"]["injected"] > 0
    assert f["repeat"]["matched"] + f["repeat"]["skipped"] == f["repeat"]["injected"]
    assert f["repeat"]["matched"] > 0 and f["repeat"]["mismatched"] == 0
    # bad MACs: all A0
    assert f["badmac"]["injected"] > 0 and f["badmac"]["rejected_a0"] == f["badmac"]["injected"]
    # garbage: every connection closed unanswered
    assert f["garbage"]["injected"] > 0 and f["garbage"]["closed"] == f["garbage"]["injected"]
    assert f["drop"]["percent"] == 10.0
    await assert_ledger_clean(cli)
