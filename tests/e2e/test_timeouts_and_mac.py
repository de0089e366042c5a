"""A request that outlives the terminal's timeout moves money only in a way the
terminal's reversal undoes; MAC failures in a row freeze the terminal."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from gateway.domain.demo import demo_pan
from tests.conftest import make_settings, running_gateway
from tests.e2e.helpers import balance_request, terminal_for

PAN, PIN = demo_pan(41), "777777"


async def card_balance(cli) -> int:
    return (await cli("card", "show", PAN, "--json")).json["balance_fen"]


@pytest.fixture
async def slow_gateway(db_url, tmp_path, cli, world):
    await cli("card", "issue", PAN, "--pin", PIN, "--expiry", "3012", "--balance", "100")
    async with running_gateway(make_settings(db_url, tmp_path, request_timeout_s=0.5)) as gw:
        yield gw


async def test_a_request_timing_out_while_recorded_gets_no_answer_and_its_reversal_undoes_it(
        slow_gateway, db_url, cli, world):
    terminal = terminal_for(slow_gateway, world, timeout_s=3)
    await terminal.sign_on()
    blocker = await asyncpg.connect(db_url)
    async with blocker.transaction():  # hold the merchant's account: the purchase waits inside gw_finish
        await blocker.execute("SELECT 1 FROM ledger_accounts WHERE code = $1 FOR UPDATE",
                              f"merchant:{world.mid}")
        with pytest.raises((ConnectionError, TimeoutError)):
            await terminal.purchase(PAN, PIN, 1000)  # no answer: the gateway closes the connection
    await blocker.close()
    await asyncio.sleep(0.3)  # the purchase commits now that the lock is gone
    assert await card_balance(cli) == 9000  # completed ...
    reversal = await terminal.reverse(terminal.last_request)
    assert reversal.response_code == "00"  # ... and reversible by the terminal's reversal
    assert await card_balance(cli) == 10000
    assert (await cli("ledger", "check", "--json")).json["ok"]
    await terminal.close()


async def test_a_request_timing_out_before_it_is_recorded_gets_96_and_never_moves_money(
        slow_gateway, db_url, cli, world):
    first = terminal_for(slow_gateway, world, timeout_s=3)
    await first.sign_on()
    second = terminal_for(slow_gateway, world, timeout_s=3)
    second.keys = first.keys
    blocker = await asyncpg.connect(db_url)
    async with blocker.transaction():
        await blocker.execute("SELECT 1 FROM ledger_accounts WHERE code = $1 FOR UPDATE",
                              f"merchant:{world.mid}")
        in_flight = asyncio.create_task(first.purchase(PAN, PIN, 1000))  # its batch blocks on the lock
        await asyncio.sleep(0.1)
        queued = await second.purchase(PAN, PIN, 2000, stan="000900")  # waits behind it, in the queue
        assert queued.response_code == "96"
    await blocker.close()
    with pytest.raises((ConnectionError, TimeoutError)):
        await in_flight
    await asyncio.sleep(0.3)
    assert await card_balance(cli) == 9000  # the first completed; the second never moved anything
    again = await second.purchase(PAN, PIN, 2000, stan="000900")  # 96 is not stored: the STAN may be sent again
    assert again.response_code == "00"
    assert await card_balance(cli) == 7000
    await first.close()
    await second.close()


async def test_mac_failures_in_a_row_freeze_the_terminal_and_a_good_mac_resets_the_count(
        db_url, tmp_path, cli, world):
    async with running_gateway(make_settings(db_url, tmp_path, mac_failures_freeze_after=3)) as gw:
        terminal = terminal_for(gw, world)
        await terminal.sign_on()

        async def bad_mac():
            request = balance_request(terminal)
            request.encode_with_mac(lambda data: b"BADMAC!!")
            return await terminal.exchange(request, mac=False)

        for _ in range(2):
            assert (await bad_mac()).response_code == "A0"
        assert (await terminal.send(balance_request(terminal))).response_code != "A0"  # resets the count
        for _ in range(2):
            assert (await bad_mac()).response_code == "A0"
        assert (await cli("terminal", "show", world.tid, "--json")).json["status"] == "active"
        assert (await bad_mac()).response_code == "A0"  # the third in a row
        assert (await cli("terminal", "show", world.tid, "--json")).json["status"] == "frozen"
        assert (await terminal.send(balance_request(terminal))).response_code == "58"
        assert (await cli("terminal", "unfreeze", world.tid)).code == 0
        assert (await terminal.send(balance_request(terminal))).response_code != "58"
        await terminal.close()
