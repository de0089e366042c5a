"""Purchases and balance inquiries checked against cached terminal and card
records (gateway.acquiring.context_cache), over TCP with a real PostgreSQL: a record
changed after it was cached (by the CLI, by another gateway, by anything that
writes the row) is never decided on; the request is checked again on a fresh
read, and its money moves once."""

from __future__ import annotations

from prometheus_client import REGISTRY

from tests.conftest import make_settings, running_gateway
from tests.e2e.helpers import CARD_PAN as PAN
from tests.e2e.helpers import CARD_PIN as PIN
from tests.e2e.helpers import card_balance, terminal_for


def cache_counts() -> dict[str, float]:
    return {result: REGISTRY.get_sample_value("posgw_context_cache_total", {"result": result}) or 0.0
            for result in ("hit", "stale", "declined")}


class Counts:
    """What the cache did since it was made."""

    def __init__(self) -> None:
        self.start = cache_counts()

    def since(self) -> dict[str, float]:
        return {name: value - self.start[name] for name, value in cache_counts().items()}


async def test_a_purchase_and_a_balance_inquiry_after_the_first_read_are_checked_against_the_cache(
        terminal, cli, db):
    counts = Counts()
    assert (await terminal.purchase(PAN, PIN, 100)).response_code == "00"  # read: cached from now on
    assert counts.since() == {"hit": 0, "stale": 0, "declined": 0}
    assert (await terminal.purchase(PAN, PIN, 250)).response_code == "00"
    balance = await terminal.balance(PAN, PIN)
    assert balance.response_code == "00" and balance.message.balance == "1002156C000000009650"
    assert counts.since() == {"hit": 2, "stale": 0, "declined": 0}
    assert await card_balance(cli) == 10000 - 350
    assert await db.fetchval("SELECT count(*) FROM gw_transactions WHERE status = 'approved'") == 3


async def test_a_card_frozen_after_it_was_cached_is_declined_and_charged_nothing(terminal, cli):
    assert (await terminal.purchase(PAN, PIN, 100)).response_code == "00"
    assert (await cli("card", "freeze", PAN)).code == 0
    counts = Counts()
    assert (await terminal.purchase(PAN, PIN, 100)).response_code == "62"
    # The cached card was active and passed the checks; its recording found the row changed.
    assert counts.since() == {"hit": 1, "stale": 1, "declined": 0}
    assert await card_balance(cli) == 10000 - 100
    assert (await cli("card", "unfreeze", PAN)).code == 0
    counts = Counts()
    assert (await terminal.purchase(PAN, PIN, 100)).response_code == "00"
    # The card cached by the fresh read was the frozen one: its 62 was not given.
    assert counts.since() == {"hit": 1, "stale": 0, "declined": 1}
    assert await card_balance(cli) == 10000 - 200


async def test_a_merchant_frozen_after_its_terminal_was_cached_gets_58(terminal, cli, world):
    assert (await terminal.purchase(PAN, PIN, 100)).response_code == "00"
    assert (await cli("merchant", "freeze", world.mid)).code == 0
    assert (await terminal.purchase(PAN, PIN, 100)).response_code == "58"
    assert await card_balance(cli) == 10000 - 100


async def test_a_row_changed_after_it_was_cached_sends_the_purchase_back_for_a_fresh_read_and_it_moves_money_once(
        terminal, cli, db, world):
    assert (await terminal.purchase(PAN, PIN, 100)).response_code == "00"
    for changed in ("UPDATE cards SET expiry = expiry", "UPDATE agents SET name = name"):
        await db.execute(changed)  # a new row version, nothing a check looks at
        counts = Counts()
        response = await terminal.purchase(PAN, PIN, 100)
        assert response.response_code == "00", changed
        assert counts.since() == {"hit": 1, "stale": 1, "declined": 0}, changed
        assert await db.fetchval("SELECT count(*) FROM gw_transactions WHERE stan = $1",
                                 response.message.stan) == 1
    assert await card_balance(cli) == 10000 - 300
    assert (await cli("ledger", "check", "--json")).json["ok"] is True


async def test_a_wrong_pin_on_a_cached_card_is_counted_once(terminal, cli, db):
    assert (await terminal.purchase(PAN, PIN, 100)).response_code == "00"
    counts = Counts()
    assert (await terminal.purchase(PAN, "000000", 100)).response_code == "55"
    assert counts.since()["declined"] == 1
    assert await db.fetchval("SELECT pin_tries FROM cards") == 1
    assert (await terminal.purchase(PAN, PIN, 100)).response_code == "00"  # a right PIN restarts the count
    assert await db.fetchval("SELECT pin_tries FROM cards") == 0
    assert await card_balance(cli) == 10000 - 200


async def test_working_keys_from_a_sign_on_through_another_gateway_are_used_at_once(terminal, world, db_url,
                                                                                      tmp_path, db, cli):
    assert (await terminal.purchase(PAN, PIN, 100)).response_code == "00"  # the first gateway caches the keys
    async with running_gateway(make_settings(db_url, tmp_path)) as second:
        elsewhere = terminal_for(second, world)
        assert (await elsewhere.sign_on()).response_code == "00"
        await elsewhere.close()
    terminal.keys = elsewhere.keys  # the new keys, to the first gateway
    counts = Counts()
    assert (await terminal.purchase(PAN, PIN, 100)).response_code == "00"
    assert counts.since() == {"hit": 1, "stale": 1, "declined": 0}  # the MAC failed under the cached key only
    assert await db.fetchval("SELECT mac_failures FROM terminals") == 0
    assert await card_balance(cli) == 10000 - 200


async def test_every_request_reads_its_context_with_no_cache_entries(db_url, tmp_path, world, card, cli):
    async with running_gateway(make_settings(db_url, tmp_path, context_cache_entries=0)) as uncached:
        terminal = terminal_for(uncached, world)
        assert (await terminal.sign_on()).response_code == "00"
        counts = Counts()
        for _ in range(3):
            assert (await terminal.purchase(PAN, PIN, 100)).response_code == "00"
        await terminal.close()
    assert counts.since() == {"hit": 0, "stale": 0, "declined": 0}
    assert await card_balance(cli) == 10000 - 300


async def test_with_the_risk_rules_on_purchases_and_inquiries_after_the_first_read_are_checked_against_the_cache(
        db_url, tmp_path, world, card, cli, db):
    async with running_gateway(make_settings(db_url, tmp_path, risk_enabled=True)) as risky:
        terminal = terminal_for(risky, world)
        assert (await terminal.sign_on()).response_code == "00"
        counts = Counts()
        for _ in range(3):
            assert (await terminal.purchase(PAN, PIN, 100)).response_code == "00"
        assert (await terminal.balance(PAN, PIN)).response_code == "00"
        assert counts.since() == {"hit": 3, "stale": 0, "declined": 0}
        # a limit set after the terminal was cached: the next purchase is checked on a fresh read
        assert (await cli("terminal", "limits", world.tid, "txn_amount_max_fen=150")).code == 0
        assert (await terminal.purchase(PAN, PIN, 200)).response_code == "61"
        assert counts.since() == {"hit": 4, "stale": 1, "declined": 0}
        await terminal.close()
    assert await card_balance(cli) == 10000 - 300
    assert await db.fetchval("SELECT sum(count) FROM risk_counters WHERE scope = 'terminal'") == 3


async def test_on_a_cached_terminal_and_card_the_same_key_with_other_content_gets_94_and_a_repeat_the_stored_answer(
        terminal, cli):
    first = await terminal.purchase(PAN, PIN, 100, stan="000100")
    assert first.response_code == "00"
    assert (await terminal.purchase(PAN, PIN, 100, stan="000101")).response_code == "00"  # cached from here
    counts = Counts()
    assert (await terminal.purchase(PAN, PIN, 300, stan="000100")).response_code == "94"
    repeat = await terminal.purchase(PAN, PIN, 100, stan="000100")
    assert repeat.response_code == "00" and repeat.message.rrn == first.message.rrn
    assert counts.since() == {"hit": 2, "stale": 0, "declined": 1}  # the 94 came from a fresh read
    assert await card_balance(cli) == 10000 - 200
