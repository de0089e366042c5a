"""Risk controls end to end over TCP with real PostgreSQL: one test per rule
(approved just below the limit, declined just above, balances untouched, the
event recorded), limits under concurrency and across two gateway instances."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import REGISTRY

from gateway.acquiring.risk import LIMIT_NAMES
from gateway.domain.demo import demo_pan
from protocol import crypto, tlv
from sim.terminal import Terminal, build_request
from tests.conftest import make_settings, running_gateway

PAN, PIN = demo_pan(31), "314159"
SHANGHAI, NEAR_SHANGHAI, SUZHOU, BEIJING = (31.2304, 121.4737), (31.2404, 121.4837), (31.2989, 120.5853), \
    (39.9042, 116.4074)


@pytest.fixture
async def risky(db_url, tmp_path, cli, world):
    """A gateway with the risk rules on; every limit off but those a test sets."""
    await cli("card", "issue", PAN, "--pin", PIN, "--expiry", "3012", "--balance", "10000")
    assert (await cli("terminal", "limits", world.tid, *[f"{name}=0" for name in LIMIT_NAMES])).code == 0
    async with running_gateway(make_settings(db_url, tmp_path, risk_enabled=True)) as gw:
        yield gw


async def signed_on(gateway, world, tid=None) -> Terminal:
    t = Terminal("127.0.0.1", gateway.server.port, tid or world.tid, world.mid, world.tmk)
    assert (await t.sign_on()).response_code == "00"
    return t


async def set_limits(cli, tid, **limits):
    result = await cli("terminal", "limits", tid, *[f"{k}={v}" for k, v in limits.items()], "--json")
    assert result.code == 0, result.stderr
    return result.json["limits"]


async def card_balance(cli) -> int:
    return (await cli("card", "show", PAN, "--json")).json["balance_fen"]


async def events(cli, tid=None):
    argv = ["risk", "events", "--json"] + (["--tid", tid] if tid else [])
    return (await cli(*argv)).json["events"]


def purchase_at(terminal: Terminal, amount: int, position: tuple[float, float] | None) -> object:
    fields = {}
    if position is not None:
        fields["bill_data"] = tlv.encode({"LC": f"{position[0]},{position[1]}"})
    return terminal.send(build_request(
        "0200", pan=PAN, processing_code="000000", amount=f"{amount:012d}", stan=terminal.next_stan(),
        entry_mode="021", condition_code="00", terminal_id=terminal.tid, merchant_id=terminal.mid,
        currency="156", pin_block=crypto.encrypt_pin_block(terminal.keys.pik, PIN, PAN),
        security_control="2600000000000000", txn_data=f"22{terminal.batch:06d}000", **fields))


async def test_limits_print_the_effective_values_with_the_terminals_override_winning(cli, world):
    merchant = (await cli("merchant", "limits", world.mid, "card_daily_count_max=7", "--json")).json
    assert merchant["mid"] == world.mid and merchant["limits"]["card_daily_count_max"] == 7
    assert merchant["limits"]["travel_speed_kmh_max"] == 300  # the default from config/risk.toml
    limits = await set_limits(cli, world.tid, card_daily_count_max=3)
    assert limits["card_daily_count_max"] == 3 and set(limits) == set(LIMIT_NAMES)
    assert (await cli("terminal", "limits", world.tid, "no_such_limit=1")).code == 2
    assert (await cli("terminal", "limits", world.tid, "card_daily_count_max=-1")).code == 2


@pytest.mark.parametrize("rule, limits, amounts, code", [
    ("txn_amount_max_fen", {"txn_amount_max_fen": 1000}, [1000, 1001], "61"),
    ("purchase_amount_max_fen", {"txn_amount_max_fen": 5000, "purchase_amount_max_fen": 2000}, [2000, 2001], "61"),
    ("terminal_daily_amount_max_fen", {"terminal_daily_amount_max_fen": 3000}, [1000, 2000, 1], "61"),
    ("card_daily_amount_max_fen", {"card_daily_amount_max_fen": 2500}, [2000, 500, 1], "61"),
    ("terminal_daily_count_max", {"terminal_daily_count_max": 3}, [1, 1, 1, 1], "65"),
    ("card_daily_count_max", {"card_daily_count_max": 2}, [1, 1, 1], "65"),
    ("card_burst_count_max", {"card_burst_count_max": 2, "card_burst_window_s": 60}, [1, 1, 1], "65"),
])
async def test_each_limit_approves_up_to_it_and_declines_past_it(risky, cli, world, rule, limits, amounts, code):
    await set_limits(cli, world.tid, **limits)
    terminal = await signed_on(risky, world)
    *fitting, too_much = amounts
    for amount in fitting:
        assert (await terminal.purchase(PAN, PIN, amount)).response_code == "00"
    spent = sum(fitting)
    declined = await terminal.purchase(PAN, PIN, too_much)
    assert declined.response_code == code
    assert await card_balance(cli) == 1_000_000 - spent
    (event,) = await events(cli, world.tid)
    assert (event["rule"], event["response_code"], event["tid"]) == (rule, code, world.tid)
    assert event["values"]["limit"] == limits[rule]
    await terminal.close()


async def test_location_far_from_the_registered_place_gets_59(risky, cli, world):
    await cli("terminal", "set", world.tid, "--location", "31.2304,121.4737", "--radius-km", "10")
    terminal = await signed_on(risky, world)
    assert (await purchase_at(terminal, 100, NEAR_SHANGHAI)).response_code == "00"
    assert (await purchase_at(terminal, 100, BEIJING)).response_code == "59"
    assert (await terminal.bill_inquiry("NOBILL", "X1", location="39.9042,116.4074")).response_code == "12"
    assert await card_balance(cli) == 1_000_000 - 100
    (event,) = await events(cli)
    assert event["rule"] == "location" and event["values"]["radius_km"] == 10
    assert event["values"]["distance_km"] > 1000


async def test_a_card_at_two_places_too_fast_gets_59_but_near_pairs_never_count(risky, cli, world):
    await set_limits(cli, world.tid, travel_speed_kmh_max=300, travel_distance_km_min=5)
    terminal = await signed_on(risky, world)
    assert (await purchase_at(terminal, 100, SHANGHAI)).response_code == "00"
    assert (await purchase_at(terminal, 100, NEAR_SHANGHAI)).response_code == "00"  # 1.4 km: never counts
    assert (await purchase_at(terminal, 100, BEIJING)).response_code == "59"  # 1,000 km in seconds
    assert await card_balance(cli) == 1_000_000 - 200
    (event,) = await events(cli)
    assert event["rule"] == "travel" and event["values"]["speed_kmh"] > 300


async def test_travel_slower_than_the_limit_is_approved(risky, cli, world, db):
    await set_limits(cli, world.tid, travel_speed_kmh_max=300, travel_distance_km_min=5)
    terminal = await signed_on(risky, world)
    assert (await purchase_at(terminal, 100, SHANGHAI)).response_code == "00"
    await db.execute("UPDATE gw_transactions SET created_at = created_at - interval '1 hour'")
    assert (await purchase_at(terminal, 100, SUZHOU)).response_code == "00"  # 85 km in an hour


async def test_a_terminal_far_above_its_own_30_day_average_gets_59(risky, cli, world, db):
    await set_limits(cli, world.tid, spike_factor=2, spike_floor_count=3)
    terminal = await signed_on(risky, world)
    for _ in range(3):
        assert (await terminal.purchase(PAN, PIN, 1)).response_code == "00"
    assert (await terminal.purchase(PAN, PIN, 1)).response_code == "59"
    (event,) = await events(cli)
    assert event["rule"] == "spike" and event["values"]["threshold"] == 3
    # A terminal that did 30 a day for the last 30 days may do 60 today.
    await db.execute("""INSERT INTO risk_counters (scope, owner, day, count, amount_fen)
                        SELECT 'terminal', $1, current_date - d, 30, 30 FROM generate_series(1, 30) d""", world.tid)
    assert (await terminal.purchase(PAN, PIN, 1)).response_code == "00"


async def test_on_a_cached_card_and_terminal_the_recording_decides_travel_and_spike(risky, cli, world, db):
    """After the first read the purchases are checked against the cache (no history):
    gw_risk_recheck finds the rule that would decline, the fresh read declines with its values."""
    await set_limits(cli, world.tid, travel_speed_kmh_max=300, travel_distance_km_min=5, spike_factor=2,
                     spike_floor_count=4)
    terminal = await signed_on(risky, world)
    hits = REGISTRY.get_sample_value("posgw_context_cache_total", {"result": "hit"}) or 0.0
    assert (await purchase_at(terminal, 100, SHANGHAI)).response_code == "00"  # read, then cached
    assert (await purchase_at(terminal, 100, NEAR_SHANGHAI)).response_code == "00"
    assert (await purchase_at(terminal, 100, BEIJING)).response_code == "59"  # cached: rechecked, then read
    assert (await purchase_at(terminal, 100, SHANGHAI)).response_code == "00"
    assert (await purchase_at(terminal, 100, SHANGHAI)).response_code == "00"
    assert (await purchase_at(terminal, 100, SHANGHAI)).response_code == "59"  # the fifth approval today
    assert (REGISTRY.get_sample_value("posgw_context_cache_total", {"result": "hit"}) or 0.0) - hits >= 4
    assert sorted(e["rule"] for e in await events(cli)) == ["spike", "travel"]
    assert await card_balance(cli) == 1_000_000 - 400
    assert await db.fetchval("SELECT count FROM risk_counters WHERE scope = 'terminal'") == 4


async def test_fifty_concurrent_purchases_against_a_limit_of_ten_approve_exactly_ten(risky, cli, world):
    await set_limits(cli, world.tid, card_daily_count_max=10)
    first = await signed_on(risky, world)
    lanes = []
    for _ in range(50):
        t = Terminal("127.0.0.1", risky.server.port, world.tid, world.mid, world.tmk)
        t.keys = first.keys
        lanes.append(t)
    responses = await asyncio.gather(*(t.purchase(PAN, PIN, 100, stan=f"{500 + i:06d}") for i, t in enumerate(lanes)))
    codes = [r.response_code for r in responses]
    assert codes.count("00") == 10 and codes.count("65") == 40
    assert await card_balance(cli) == 1_000_000 - 1000
    assert len(await events(cli)) == 40
    await asyncio.gather(*(t.close() for t in lanes + [first]))


async def test_two_gateway_instances_sharing_one_database_enforce_one_daily_limit(risky, db_url, tmp_path, cli, world):
    await set_limits(cli, world.tid, terminal_daily_count_max=5)
    async with running_gateway(make_settings(db_url, tmp_path, risk_enabled=True)) as second:
        a = await signed_on(risky, world)
        b = Terminal("127.0.0.1", second.server.port, world.tid, world.mid, world.tmk)
        b.keys = a.keys
        codes = []
        for i in range(8):
            terminal = a if i % 2 == 0 else b
            codes.append((await terminal.purchase(PAN, PIN, 100, stan=f"{700 + i:06d}")).response_code)
        assert codes.count("00") == 5 and codes[5:] == ["65", "65", "65"]
        await a.close()
        await b.close()


async def test_reversals_and_voids_are_never_blocked_and_give_back_what_they_used(risky, cli, world):
    await set_limits(cli, world.tid, card_daily_count_max=2, card_daily_amount_max_fen=300)
    terminal = await signed_on(risky, world)
    first = await terminal.purchase(PAN, PIN, 100)
    assert (await terminal.purchase(PAN, PIN, 200)).response_code == "00"
    assert (await terminal.purchase(PAN, PIN, 1)).response_code == "61"  # amounts are checked before counts
    assert (await terminal.reverse(terminal.last_request)).response_code == "00"  # a declined original
    m = first.message
    void = await terminal.void(PAN, PIN, 100, original_rrn=m.rrn, original_batch=1, original_stan=m.stan,
                               original_date=m.local_date)
    assert void.response_code == "00"
    assert (await terminal.purchase(PAN, PIN, 100)).response_code == "00"  # the void gave back count and amount
    assert await card_balance(cli) == 1_000_000 - 300


async def test_switching_risk_off_lets_everything_through(gateway, cli, world):
    await cli("card", "issue", PAN, "--pin", PIN, "--expiry", "3012", "--balance", "100")
    await set_limits(cli, world.tid, txn_amount_max_fen=1, card_daily_count_max=1)
    terminal = await signed_on(gateway, world)  # the gateway fixture runs with risk_enabled=False
    for _ in range(3):
        assert (await terminal.purchase(PAN, PIN, 500)).response_code == "00"
    assert await events(cli) == []


async def test_cash_bill_payments_pass_the_counted_limits_without_a_card(risky, cli, world):
    await set_limits(cli, world.tid, card_daily_count_max=1, card_daily_amount_max_fen=100,
                     terminal_daily_count_max=2)
    await cli("biller", "add", "P1", "--name", "Prepaid", "--prepaid")
    await cli("meter", "add", "P1", "M1", "--name", "x")
    await cli("agent", "topup", "AG01", "10")
    terminal = await signed_on(risky, world)
    assert (await terminal.bill_payment("P1", "M1", 500)).response_code == "00"
    assert (await terminal.bill_payment("P1", "M1", 500)).response_code == "00"
    assert (await terminal.bill_payment("P1", "M1", 1)).response_code == "65"  # the terminal's count


async def test_declines_by_rule_are_counted_on_metrics(risky, cli, world):
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    def declines() -> float:
        body = urllib.request.urlopen(f"http://127.0.0.1:{risky.metrics_port}/metrics", timeout=5).read().decode()
        for family in text_string_to_metric_families(body):
            for sample in family.samples:
                if sample.name == "posgw_risk_declines_total" and sample.labels == {
                        "rule": "txn_amount_max_fen", "response_code": "61"}:
                    return sample.value
        return 0.0

    await set_limits(cli, world.tid, txn_amount_max_fen=10)
    terminal = await signed_on(risky, world)
    before = await asyncio.to_thread(declines)
    assert (await terminal.purchase(PAN, PIN, 11)).response_code == "61"
    assert await asyncio.to_thread(declines) == before + 1
