"""Card money flows end to end over TCP with real PostgreSQL: balance inquiry,
purchase, void, reversal, repeats; every response code they can produce, each
with the balances after it."""

from __future__ import annotations

import asyncio

import pytest

from gateway.domain.demo import demo_pan
from protocol import crypto
from protocol.framing import Header
from protocol.messages import Message
from sim.terminal import Terminal, balance_fen, build_request
from tests.e2e.helpers import CARD_PAN as PAN
from tests.e2e.helpers import CARD_PIN as PIN
from tests.e2e.helpers import card_balance, terminal_for

OTHER_PAN = demo_pan(8)


async def merchant_balance(cli, world) -> int:
    return (await cli("merchant", "show", world.mid, "--json")).json["balance_fen"]


async def assert_ledger_clean(cli):
    result = await cli("ledger", "check", "--json")
    assert result.code == 0, result.stdout + result.stderr
    assert result.json["ok"] is True


# -- balance and purchase ----------------------------------------------------------


async def test_balance_inquiry_answers_the_card_balance_in_field_54(terminal):
    response = await terminal.balance(PAN, PIN)
    assert response.response_code == "00"
    assert response.message.balance == "1002156C000000010000"
    assert balance_fen(response) == 10000
    assert response.message.mac is not None


async def test_purchase_debits_the_card_credits_the_merchant_and_answers_rrn_and_auth_id(terminal, cli, world):
    response = await terminal.purchase(PAN, PIN, 2550)
    m = response.message
    assert m.response_code == "00"
    assert len(m.rrn) == 12 and m.auth_id == m.rrn[-6:]
    assert m.amount == "000000002550" and m.processing_code == "000000"
    assert await card_balance(cli) == 10000 - 2550
    assert await merchant_balance(cli, world) == 2550
    await assert_ledger_clean(cli)


@pytest.mark.parametrize("amount, mdr_bp, fee", [(2345, 60, 14), (250, 20, 1), (249, 20, 0), (10000, 38, 38)])
async def test_merchant_discount_is_rounded_half_up_and_goes_to_fee_income(gateway, cli, world, db, card,
                                                                           amount, mdr_bp, fee):
    await cli("merchant", "add", "MERCHANT0000002", "--name", "Fee shop", "--agent", "AG01",
              "--mdr-bp", str(mdr_bp))
    await cli("terminal", "add", "TERM0002", "--merchant", "MERCHANT0000002", "--tmk", world.tmk.hex())
    t = Terminal("127.0.0.1", gateway.server.port, "TERM0002", "MERCHANT0000002", world.tmk)
    await t.sign_on()
    assert (await t.purchase(PAN, PIN, amount)).response_code == "00"
    assert (await cli("merchant", "show", "MERCHANT0000002", "--json")).json["balance_fen"] == amount - fee
    fee_income = await db.fetchval(
        "SELECT credits_posted - debits_posted FROM ledger_accounts WHERE code = 'system:fee_income'")
    assert fee_income == fee
    assert await card_balance(cli) == 10000 - amount
    await t.close()
    await assert_ledger_clean(cli)


async def test_purchase_over_the_card_balance_is_declined_51_and_moves_nothing(terminal, cli, world):
    response = await terminal.purchase(PAN, PIN, 10001)
    assert response.response_code == "51"
    assert response.message.auth_id is None
    assert await card_balance(cli) == 10000
    assert await merchant_balance(cli, world) == 0
    assert (await terminal.purchase(PAN, PIN, 10000)).response_code == "00"  # exactly the balance fits
    assert await card_balance(cli) == 0


async def test_unknown_card_gets_14(terminal, cli):
    assert (await terminal.purchase(OTHER_PAN, PIN, 100)).response_code == "14"
    assert await card_balance(cli) == 10000


async def test_frozen_card_gets_62_and_unfreezing_restores(terminal, cli):
    await cli("card", "freeze", PAN)
    assert (await terminal.purchase(PAN, PIN, 100)).response_code == "62"
    assert (await terminal.balance(PAN, PIN)).response_code == "62"
    await cli("card", "unfreeze", PAN)
    assert (await terminal.purchase(PAN, PIN, 100)).response_code == "00"
    assert await card_balance(cli) == 9900


async def test_expired_card_gets_54(terminal, cli):
    await cli("card", "issue", OTHER_PAN, "--pin", PIN, "--expiry", "2001", "--balance", "10")
    assert (await terminal.purchase(OTHER_PAN, PIN, 100)).response_code == "54"
    assert await card_balance(cli, OTHER_PAN) == 1000


async def test_third_wrong_pin_in_a_row_gets_75_and_blocks_until_unblocked(terminal, cli):
    assert (await terminal.purchase(PAN, "000000", 100)).response_code == "55"
    assert (await terminal.balance(PAN, "111111")).response_code == "55"
    assert (await terminal.purchase(PAN, "222222", 100)).response_code == "75"
    assert (await cli("card", "show", PAN, "--json")).json["pin_blocked"] is True
    assert (await terminal.purchase(PAN, PIN, 100)).response_code == "75"  # even the right PIN
    await cli("card", "unblock", PAN)
    assert (await cli("card", "show", PAN, "--json")).json["pin_blocked"] is False
    assert (await terminal.purchase(PAN, PIN, 100)).response_code == "00"
    assert await card_balance(cli) == 9900


async def test_a_right_pin_restarts_the_count(terminal, cli):
    for pin in ("000000", "000000", PIN, "000000", "000000"):
        response = await terminal.balance(PAN, pin)
    assert response.response_code == "55"
    assert (await cli("card", "show", PAN, "--json")).json["pin_blocked"] is False


async def test_a_malformed_pin_block_gets_99_asks_for_sign_on_and_does_not_count(terminal, cli):
    bad_block = crypto.tdes_encrypt(terminal.keys.pik, bytes.fromhex("1234567890ABCDEF"))
    for _ in range(3):
        request = build_request("0200", pan=PAN, processing_code="000000", amount="000000000100",
                                stan=terminal.next_stan(), entry_mode="021", condition_code="00",
                                terminal_id=terminal.tid, merchant_id=terminal.mid, currency="156",
                                pin_block=bad_block, security_control="2600000000000000",
                                txn_data="22000001000")
        response = await terminal.send(request)
        assert response.response_code == "99"
        assert Header(response.header).processing_requirement == "3"
    assert (await cli("card", "show", PAN, "--json")).json["pin_blocked"] is False
    assert await card_balance(cli) == 10000


async def test_a_card_request_without_a_pin_gets_55_and_half_a_pin_gets_30(terminal):
    request = build_request("0200", pan=PAN, processing_code="000000", amount="000000000100",
                            stan=terminal.next_stan(), entry_mode="022", condition_code="00",
                            terminal_id=terminal.tid, merchant_id=terminal.mid, currency="156",
                            txn_data="22000001000")
    assert (await terminal.send(request)).response_code == "55"
    request.stan = terminal.next_stan()
    request.pin_block = bytes(8)  # 52 without 53
    assert (await terminal.send(request)).response_code == "30"


async def test_pan_in_field_2_and_track_2_that_differ_gets_30(terminal):
    request = build_request("0200", pan=PAN, track2=OTHER_PAN + "D3012101", processing_code="310000",
                            stan=terminal.next_stan(), entry_mode="021", condition_code="00",
                            terminal_id=terminal.tid, merchant_id=terminal.mid, currency="156",
                            pin_block=crypto.encrypt_pin_block(terminal.keys.pik, PIN, PAN),
                            security_control="2600000000000000", txn_data="01000001000")
    assert (await terminal.send(request)).response_code == "30"


async def test_track_2_alone_identifies_the_card(terminal):
    request = build_request("0200", track2=PAN + "D3012101", processing_code="310000",
                            stan=terminal.next_stan(), entry_mode="021", condition_code="00",
                            terminal_id=terminal.tid, merchant_id=terminal.mid, currency="156",
                            pin_block=crypto.encrypt_pin_block(terminal.keys.pik, PIN, PAN),
                            security_control="2600000000000000", txn_data="01000001000")
    assert balance_fen(await terminal.send(request)) == 10000


async def test_a_transaction_not_permitted_on_the_terminal_gets_58(terminal, cli, world):
    await cli("terminal", "set", world.tid, "--permit", "balance")
    assert (await terminal.purchase(PAN, PIN, 100)).response_code == "58"
    assert (await terminal.balance(PAN, PIN)).response_code == "00"
    assert await card_balance(cli) == 10000


async def test_a_frozen_terminal_gets_58_for_purchases(terminal, cli, world):
    await cli("terminal", "freeze", world.tid)
    assert (await terminal.purchase(PAN, PIN, 100)).response_code == "58"
    assert await card_balance(cli) == 10000


async def test_a_currency_other_than_156_gets_12_and_zero_amount_gets_13(terminal, cli):
    request = build_request("0200", pan=PAN, processing_code="000000", amount="000000000100",
                            stan=terminal.next_stan(), entry_mode="021", condition_code="00",
                            terminal_id=terminal.tid, merchant_id=terminal.mid, currency="840",
                            pin_block=crypto.encrypt_pin_block(terminal.keys.pik, PIN, PAN),
                            security_control="2600000000000000", txn_data="22000001000")
    assert (await terminal.send(request)).response_code == "12"
    assert (await terminal.purchase(PAN, PIN, 0)).response_code == "13"
    assert await card_balance(cli) == 10000


async def test_an_unknown_processing_code_gets_12(terminal):
    request = build_request("0200", pan=PAN, processing_code="990000", stan=terminal.next_stan(),
                            terminal_id=terminal.tid, merchant_id=terminal.mid, currency="156",
                            txn_data="22000001000")
    assert (await terminal.send(request)).response_code == "12"


# -- void ------------------------------------------------------------------------


async def purchase_for_void(terminal, amount=3000):
    response = await terminal.purchase(PAN, PIN, amount)
    assert response.response_code == "00"
    m = response.message
    return dict(original_rrn=m.rrn, original_batch=1, original_stan=m.stan, original_date=m.local_date)


async def test_void_returns_the_money_and_a_second_void_gets_25(terminal, cli, world):
    ref = await purchase_for_void(terminal)
    assert await card_balance(cli) == 7000
    response = await terminal.void(PAN, PIN, 3000, **ref)
    assert response.response_code == "00"
    assert await card_balance(cli) == 10000
    assert await merchant_balance(cli, world) == 0
    assert (await terminal.void(PAN, PIN, 3000, **ref)).response_code == "25"
    assert await card_balance(cli) == 10000
    await assert_ledger_clean(cli)


async def test_void_with_another_amount_gets_64_and_is_not_stored(terminal, cli):
    ref = await purchase_for_void(terminal)
    stan = terminal.next_stan()
    assert (await terminal.void(PAN, PIN, 2999, stan=stan, **ref)).response_code == "64"
    assert (await terminal.void(PAN, PIN, 3000, stan=stan, **ref)).response_code == "00"  # same STAN again
    assert await card_balance(cli) == 10000


@pytest.mark.parametrize("change", ["rrn", "stan", "date", "batch", "card"])
async def test_void_that_does_not_match_the_purchase_gets_25(terminal, cli, change):
    await cli("card", "issue", OTHER_PAN, "--pin", PIN, "--expiry", "3012", "--balance", "10")
    ref = await purchase_for_void(terminal)
    pan = PAN
    if change == "rrn":
        ref["original_rrn"] = "999999999999"
    elif change == "stan":
        ref["original_stan"] = "999998"
    elif change == "date":
        ref["original_date"] = "0229" if ref["original_date"] != "0229" else "0228"
    elif change == "batch":
        ref["original_batch"] = 2
    else:
        pan = OTHER_PAN
    assert (await terminal.void(pan, PIN, 3000, **ref)).response_code == "25"
    assert await card_balance(cli) == 7000


async def test_void_needs_the_right_pin(terminal, cli):
    ref = await purchase_for_void(terminal)
    assert (await terminal.void(PAN, "999999", 3000, **ref)).response_code == "55"
    assert await card_balance(cli) == 7000


async def test_void_goes_through_for_a_frozen_card(terminal, cli):
    ref = await purchase_for_void(terminal)
    await cli("card", "freeze", PAN)
    assert (await terminal.void(PAN, PIN, 3000, **ref)).response_code == "00"
    assert await card_balance(cli) == 10000


# -- reversal --------------------------------------------------------------------


async def test_reversal_of_a_purchase_returns_the_money_once_and_repeats_get_the_same_bytes(terminal, cli, world):
    assert (await terminal.purchase(PAN, PIN, 4000)).response_code == "00"
    original = terminal.last_request
    first = await terminal.reverse(original)
    assert (first.message.mti, first.response_code) == ("0410", "00")
    assert await card_balance(cli) == 10000
    again = await terminal.reverse(original)
    assert again.message.raw == first.message.raw
    assert await card_balance(cli) == 10000
    assert await merchant_balance(cli, world) == 0
    await assert_ledger_clean(cli)


async def test_reversal_with_another_amount_gets_64_moves_nothing_and_may_be_resent(terminal, cli):
    assert (await terminal.purchase(PAN, PIN, 4000)).response_code == "00"
    original = terminal.last_request
    wrong = Message(original.mti, dict(original.fields))
    wrong.amount = "000000003999"
    assert (await terminal.reverse(wrong)).response_code == "64"
    assert await card_balance(cli) == 6000
    assert (await terminal.reverse(original)).response_code == "00"
    assert await card_balance(cli) == 10000


async def test_reversal_of_a_declined_or_unknown_purchase_gets_00_and_moves_nothing(terminal, cli):
    assert (await terminal.purchase(PAN, PIN, 20000)).response_code == "51"
    assert (await terminal.reverse(terminal.last_request)).response_code == "00"
    never_sent = build_request("0200", pan=PAN, processing_code="000000", amount="000000000500",
                               stan="123456", terminal_id=terminal.tid, merchant_id=terminal.mid,
                               currency="156", txn_data="22000001000")
    assert (await terminal.reverse(never_sent)).response_code == "00"
    assert await card_balance(cli) == 10000
    await assert_ledger_clean(cli)


async def test_a_reversal_that_overtakes_its_purchase_makes_the_late_purchase_25(terminal, cli):
    stan = terminal.next_stan()
    late = build_request("0200", pan=PAN, processing_code="000000", amount="000000000500", stan=stan,
                         terminal_id=terminal.tid, merchant_id=terminal.mid, currency="156",
                         txn_data="22000001000")
    assert (await terminal.reverse(late)).response_code == "00"
    assert (await terminal.purchase(PAN, PIN, 500, stan=stan)).response_code == "25"
    assert await card_balance(cli) == 10000


async def test_reversal_goes_through_for_a_frozen_terminal_and_card(terminal, cli, world):
    assert (await terminal.purchase(PAN, PIN, 4000)).response_code == "00"
    original = terminal.last_request
    await cli("terminal", "freeze", world.tid)
    await cli("card", "freeze", PAN)
    assert (await terminal.reverse(original)).response_code == "00"
    assert await card_balance(cli) == 10000


async def test_reversal_of_a_void_makes_the_purchase_stand_again(terminal, cli, world):
    ref = await purchase_for_void(terminal)
    assert (await terminal.void(PAN, PIN, 3000, **ref)).response_code == "00"
    void_request = terminal.last_request
    assert await card_balance(cli) == 10000
    assert (await terminal.reverse(void_request)).response_code == "00"
    assert await card_balance(cli) == 7000
    assert await merchant_balance(cli, world) == 3000
    # The purchase stands: it can be voided again.
    assert (await terminal.void(PAN, PIN, 3000, **ref)).response_code == "00"
    assert await card_balance(cli) == 10000
    await assert_ledger_clean(cli)


async def test_reversal_of_a_void_the_card_cannot_cover_is_00_and_the_purchase_stays_voided(terminal, cli, db):
    ref = await purchase_for_void(terminal, 9000)
    assert (await terminal.void(PAN, PIN, 9000, **ref)).response_code == "00"
    void_request = terminal.last_request
    assert (await terminal.purchase(PAN, PIN, 5000)).response_code == "00"  # now 5000 left
    assert (await terminal.reverse(void_request)).response_code == "00"
    assert await card_balance(cli) == 5000
    assert await db.fetchval("SELECT exception FROM gw_transactions WHERE mti_class = '0400'") \
        == "void_reversal_not_covered"
    assert await db.fetchval("SELECT status FROM gw_transactions WHERE kind = 'purchase' AND amount_fen = 9000") \
        == "voided"
    await assert_ledger_clean(cli)


# -- repeats -----------------------------------------------------------------------


async def test_a_repeated_purchase_gets_the_stored_bytes_and_moves_money_once(terminal, cli):
    first = await terminal.purchase(PAN, PIN, 1234)
    again = await terminal.send(terminal.last_request)
    assert again.message.raw == first.message.raw
    assert await card_balance(cli) == 10000 - 1234


async def test_a_repeated_decline_gets_the_stored_decline_even_after_things_change(terminal, cli):
    stan = terminal.next_stan()
    first = await terminal.purchase(PAN, PIN, 20000, stan=stan)
    assert first.response_code == "51"
    request = terminal.last_request
    await cli("agent", "topup", "AG01", "1")  # unrelated change; the card is still short
    again = await terminal.send(request)
    assert again.message.raw == first.message.raw


async def test_same_key_with_different_content_gets_94(terminal, cli):
    stan = terminal.next_stan()
    assert (await terminal.purchase(PAN, PIN, 100, stan=stan)).response_code == "00"
    response = await terminal.purchase(PAN, PIN, 200, stan=stan)
    assert response.response_code == "94"
    assert await card_balance(cli) == 9900


async def test_a_repeat_after_a_new_sign_on_gets_the_stored_fields_maced_under_the_new_mak(terminal, cli):
    first = await terminal.purchase(PAN, PIN, 700)
    request = terminal.last_request
    await terminal.sign_on()
    again = await terminal.send(request)  # MAC'd under the new MAK, verified by the sim
    assert {k: v for k, v in again.message.fields.items() if k != 64} == \
        {k: v for k, v in first.message.fields.items() if k != 64}
    assert again.message.mac != first.message.mac
    assert await card_balance(cli) == 9300


async def test_repeats_sent_while_the_original_is_in_flight_wait_for_it(terminal, gateway, world, cli):
    request = build_request("0200", pan=PAN, processing_code="000000", amount="000000000100",
                            stan=terminal.next_stan(), entry_mode="021", condition_code="00",
                            terminal_id=terminal.tid, merchant_id=terminal.mid, currency="156",
                            pin_block=crypto.encrypt_pin_block(terminal.keys.pik, PIN, PAN),
                            security_control="2600000000000000", txn_data="22000001000")
    copies = [terminal_for(gateway, world) for _ in range(10)]
    for copy in copies:
        copy.keys = terminal.keys
    responses = await asyncio.gather(*(c.send(Message(request.mti, dict(request.fields))) for c in copies))
    assert len({r.message.raw for r in responses}) == 1
    assert responses[0].response_code == "00"
    assert await card_balance(cli) == 10000 - 100
    await asyncio.gather(*(c.close() for c in copies))


async def test_reversals_racing_their_purchases_always_end_with_the_money_back(terminal, gateway, world, cli):
    other = terminal_for(gateway, world)
    other.keys = terminal.keys
    outcomes = set()
    for _ in range(20):
        stan = terminal.next_stan()
        purchase = build_request("0200", pan=PAN, processing_code="000000", amount="000000000100",
                                 stan=stan, entry_mode="021", condition_code="00", terminal_id=terminal.tid,
                                 merchant_id=terminal.mid, currency="156",
                                 pin_block=crypto.encrypt_pin_block(terminal.keys.pik, PIN, PAN),
                                 security_control="2600000000000000", txn_data="22000001000")
        p, r = await asyncio.gather(terminal.send(purchase), other.reverse(purchase))
        assert r.response_code == "00"
        outcomes.add(p.response_code)
        assert p.response_code in ("00", "25")
    assert await card_balance(cli) == 10000
    await assert_ledger_clean(cli)
    await other.close()
