"""Refunds (0220, 60.1 = 25; WIRE.md 9.2, 9.9) end to end over TCP with real
PostgreSQL: found by RRN, date and card at any terminal of the merchant and
in any batch, partial and repeated up to the original, merchant to card,
advice repeats, reversals, and the checks that refuse them."""

from __future__ import annotations

import pytest

from gateway.domain.demo import demo_pan
from protocol.crypto import encrypt_pin_block
from protocol.messages import SECURITY_CONTROL, Message
from sim.terminal import Terminal, build_request
from tests.e2e.helpers import CARD_PAN as PAN
from tests.e2e.helpers import CARD_PIN as PIN
from tests.e2e.helpers import card_balance

OTHER_PAN = demo_pan(8)


async def merchant_balance(cli, mid: str = "MERCHANT0000001") -> int:
    return (await cli("merchant", "show", mid, "--json")).json["balance_fen"]


async def assert_ledger_clean(cli) -> None:
    result = await cli("ledger", "check", "--json")
    assert result.code == 0, result.stdout + result.stderr


def refund_request(terminal: Terminal, amount_fen: int, original: Message, *, pan: str = PAN,
                   pin: str | None = None, stan: str | None = None, named: bool = False,
                   condition_code: str = "00", batch: int | None = None) -> Message:
    """A refund as WIRE.md 9.1 lists it: 0220, 3 = 200000, 25 = 00, 60.1 = 25, 37 the original's RRN,
    61 zeros and the original's date (``named``: its batch and STAN); a PIN only when ``pin``."""
    original_batch, original_stan = (int(original.txn_data[2:8]), original.stan) if named else (0, "000000")
    fields: dict[str, str | bytes] = {}
    if pin is not None:
        fields = {"pin_block": encrypt_pin_block(terminal.keys.pik, pin, pan), "security_control": SECURITY_CONTROL}
    return build_request(
        "0220", pan=pan, processing_code="200000", amount=f"{amount_fen:012d}", stan=stan or terminal.next_stan(),
        entry_mode="021", condition_code=condition_code, rrn=original.rrn, terminal_id=terminal.tid,
        merchant_id=terminal.mid, currency="156",
        txn_data=f"25{terminal.batch if batch is None else batch:06d}000",
        original_txn=f"{original_batch:06d}{original_stan}{original.local_date}", **fields)


async def purchased(terminal: Terminal, amount_fen: int = 3000) -> Message:
    response = await terminal.purchase(PAN, PIN, amount_fen)
    assert response.response_code == "00"
    return response.message


async def test_partial_refunds_go_up_to_the_original_and_one_fen_beyond_gets_64(terminal, cli):
    purchase = await purchased(terminal, 3000)  # mdr 0: the merchant has 3000
    first = await terminal.send(refund_request(terminal, 1000, purchase))
    assert first.response_code == "00"
    assert first.message.mti == "0230"
    assert len(first.message.rrn) == 12 and first.message.auth_id == first.message.rrn[-6:]
    assert first.message.rrn != purchase.rrn
    assert (await terminal.send(refund_request(terminal, 1500, purchase))).response_code == "00"
    assert (await terminal.send(refund_request(terminal, 501, purchase))).response_code == "64"
    assert (await card_balance(cli), await merchant_balance(cli)) == (10000 - 3000 + 2500, 500)
    assert (await terminal.send(refund_request(terminal, 500, purchase))).response_code == "00"
    assert (await terminal.send(refund_request(terminal, 1, purchase))).response_code == "64"
    assert (await card_balance(cli), await merchant_balance(cli)) == (10000, 0)
    await assert_ledger_clean(cli)


async def test_a_refund_repeated_as_an_advice_gets_the_stored_answer_and_moves_money_once(terminal, cli):
    purchase = await purchased(terminal)
    request = refund_request(terminal, 1200, purchase)
    first = await terminal.send(request)
    again = await terminal.send(refund_request(terminal, 1200, purchase, stan=request.stan))
    third = await terminal.send(refund_request(terminal, 1200, purchase, stan=request.stan))
    assert first.response_code == again.response_code == third.response_code == "00"
    assert first.message.rrn == again.message.rrn == third.message.rrn
    assert first.message.mac_input == again.message.mac_input
    assert await card_balance(cli) == 10000 - 3000 + 1200
    # The same key with other content: 94.
    assert (await terminal.send(refund_request(terminal, 1300, purchase, stan=request.stan))).response_code == "94"
    await assert_ledger_clean(cli)


async def test_a_refund_at_another_terminal_of_the_merchant_finds_the_purchase(gateway, terminal, cli, world):
    purchase = await purchased(terminal)
    await cli("terminal", "add", "TERM0002", "--merchant", world.mid, "--tmk", world.tmk.hex())
    other = Terminal("127.0.0.1", gateway.server.port, "TERM0002", world.mid, world.tmk)
    await other.sign_on()
    try:
        assert (await other.send(refund_request(other, 3000, purchase, named=True))).response_code == "00"
    finally:
        await other.close()
    assert await card_balance(cli) == 10000


async def test_a_refund_at_another_merchant_does_not_find_the_purchase(gateway, terminal, cli, world):
    purchase = await purchased(terminal)
    await cli("merchant", "add", "MERCHANT0000002", "--name", "Other", "--agent", "AG01")
    await cli("terminal", "add", "TERM0002", "--merchant", "MERCHANT0000002", "--tmk", world.tmk.hex())
    other = Terminal("127.0.0.1", gateway.server.port, "TERM0002", "MERCHANT0000002", world.tmk)
    await other.sign_on()
    try:
        assert (await other.send(refund_request(other, 100, purchase))).response_code == "25"
    finally:
        await other.close()


async def test_a_refund_in_a_later_batch_finds_the_purchase_of_a_settled_one(terminal, cli):
    purchase = await purchased(terminal)
    assert (await terminal.settle(3000, 1)).response_code == "00"
    assert terminal.batch == 2
    assert (await terminal.send(refund_request(terminal, 3000, purchase, named=True))).response_code == "00"
    assert await card_balance(cli) == 10000


async def test_a_refund_with_61_naming_another_batch_and_stan_gets_25(terminal, cli):
    purchase = await purchased(terminal)
    request = refund_request(terminal, 100, purchase)
    request.original_txn = f"000001000999{purchase.local_date}"
    assert (await terminal.send(request)).response_code == "25"


@pytest.mark.parametrize("change", ["rrn", "date", "card"])
async def test_a_refund_that_does_not_name_the_purchase_gets_25(terminal, cli, change):
    purchase = await purchased(terminal)
    await cli("card", "issue", OTHER_PAN, "--pin", PIN, "--expiry", "3012", "--balance", "1")
    request = refund_request(terminal, 100, purchase, pan=OTHER_PAN if change == "card" else PAN)
    if change == "rrn":
        request.rrn = "999999999999"
    elif change == "date":
        request.original_txn = "000000000000" + ("0101" if purchase.local_date != "0101" else "0102")
    assert (await terminal.send(request)).response_code == "25"
    assert await card_balance(cli) == 7000


async def test_a_voided_purchase_cannot_be_refunded_and_a_refunded_one_cannot_be_voided(terminal, cli):
    voided = await purchased(terminal)
    assert (await terminal.void(PAN, PIN, 3000, original_rrn=voided.rrn, original_batch=1,
                                original_stan=voided.stan, original_date=voided.local_date)).response_code == "00"
    assert (await terminal.send(refund_request(terminal, 100, voided))).response_code == "25"
    refunded = await purchased(terminal)
    assert (await terminal.send(refund_request(terminal, 100, refunded))).response_code == "00"
    assert (await terminal.void(PAN, PIN, 3000, original_rrn=refunded.rrn, original_batch=1,
                                original_stan=refunded.stan, original_date=refunded.local_date)).response_code == "25"
    assert await card_balance(cli) == 10000 - 3000 + 100


async def test_a_reversal_of_a_refunded_purchase_is_answered_00_moves_nothing_and_is_an_exception(
        terminal, cli, db):
    response = await terminal.purchase(PAN, PIN, 3000)
    purchase_request = terminal.last_request
    assert (await terminal.send(refund_request(terminal, 100, response.message))).response_code == "00"
    assert (await terminal.reverse(purchase_request)).response_code == "00"
    assert await card_balance(cli) == 10000 - 3000 + 100
    assert await db.fetchval("SELECT exception FROM gw_transactions WHERE mti_class = '0400'") == \
        "reversal_of_refunded_original"
    await assert_ledger_clean(cli)


async def test_a_refund_pin_is_optional_but_verified_when_present(terminal, cli):
    purchase = await purchased(terminal)
    assert (await terminal.send(refund_request(terminal, 100, purchase, pin="999999"))).response_code == "55"
    assert (await terminal.send(refund_request(terminal, 100, purchase, pin=PIN))).response_code == "00"
    assert (await terminal.send(refund_request(terminal, 100, purchase))).response_code == "00"
    assert await card_balance(cli) == 7200


async def test_a_refund_goes_through_for_a_frozen_card(terminal, cli):
    purchase = await purchased(terminal)
    await cli("card", "freeze", PAN)
    assert (await terminal.send(refund_request(terminal, 3000, purchase))).response_code == "00"


async def test_a_refund_the_merchant_account_cannot_cover_gets_51(terminal, cli, db, world):
    purchase = await purchased(terminal)
    # The merchant's balance paid out elsewhere: 3000 to the cash account.
    await db.execute("""SELECT ledger_post('test:payout', jsonb_build_array(jsonb_build_object(
                            'debit', (SELECT id FROM ledger_accounts WHERE code = 'merchant:' || $1::text),
                            'credit', (SELECT id FROM ledger_accounts WHERE code = 'system:cash'),
                            'amount', 2900, 'code', 'payout')))""", world.mid)
    assert (await terminal.send(refund_request(terminal, 101, purchase))).response_code == "51"
    assert (await terminal.send(refund_request(terminal, 100, purchase))).response_code == "00"
    await assert_ledger_clean(cli)


async def test_a_refund_with_condition_code_08_is_accepted_and_01_gets_12(terminal, cli):
    purchase = await purchased(terminal)
    assert (await terminal.send(refund_request(terminal, 100, purchase, condition_code="01"))).response_code == "12"
    assert (await terminal.send(refund_request(terminal, 100, purchase, condition_code="08"))).response_code == "00"


async def test_a_terminal_permitted_only_purchases_gets_58_for_a_refund(terminal, cli, world):
    purchase = await purchased(terminal)
    assert (await cli("terminal", "set", world.tid, "--permit", "purchase")).code == 0
    assert (await terminal.send(refund_request(terminal, 100, purchase))).response_code == "58"


async def test_a_refund_of_zero_gets_13(terminal):
    purchase = await purchased(terminal)
    assert (await terminal.send(refund_request(terminal, 0, purchase))).response_code == "13"


async def test_a_reversal_of_a_refund_takes_the_money_back_and_the_purchase_is_refundable_again(
        terminal, cli, db):
    purchase = await purchased(terminal)
    request = refund_request(terminal, 3000, purchase)
    assert (await terminal.send(request)).response_code == "00"
    assert await card_balance(cli) == 10000

    first = await terminal.reverse(request)
    again = await terminal.reverse(request)

    assert first.response_code == again.response_code == "00"
    assert await card_balance(cli) == 7000
    assert await db.fetchval("SELECT status FROM gw_transactions WHERE kind = 'purchase'") == "approved"
    assert await db.fetchval("SELECT status FROM gw_transactions WHERE kind = 'refund'") == "reversed"
    assert (await terminal.send(refund_request(terminal, 3000, purchase))).response_code == "00"
    assert await card_balance(cli) == 10000
    await assert_ledger_clean(cli)


async def test_a_reversal_of_a_refund_the_card_can_no_longer_cover_is_00_and_the_refund_stands(terminal, cli, db):
    purchase = await purchased(terminal, 3000)
    request = refund_request(terminal, 3000, purchase)
    assert (await terminal.send(request)).response_code == "00"
    assert (await terminal.purchase(PAN, PIN, 9000)).response_code == "00"  # the card: 1000 left

    assert (await terminal.reverse(request)).response_code == "00"

    assert await card_balance(cli) == 1000
    assert await db.fetchval("SELECT status FROM gw_transactions WHERE kind = 'refund'") == "approved"
    assert await db.fetchval("SELECT exception FROM gw_transactions WHERE mti_class = '0400'") == \
        "refund_reversal_not_covered"
    daily = await cli("report", "daily", "--json")
    assert [e["exception"] for e in daily.json["exceptions"]] == ["refund_reversal_not_covered"]
    await assert_ledger_clean(cli)


async def test_a_refund_whose_reversal_came_first_gets_25_and_moves_nothing(terminal, cli):
    purchase = await purchased(terminal)
    request = refund_request(terminal, 1000, purchase)
    request.encode()
    assert (await terminal.reverse(request)).response_code == "00"
    assert (await terminal.send(refund_request(terminal, 1000, purchase, stan=request.stan))).response_code == "25"
    assert await card_balance(cli) == 7000
