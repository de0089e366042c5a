"""Group commit of outcomes (``gw_finish_many``): a batch's plain purchases (two
or more) are recorded together (``gw_finish_purchases``), the rest one by one; the answers,
the money and the rows are those of ``gw_finish`` called for each request.
Against a real PostgreSQL, with the operations the gateway sends (``gateway.acquiring.operations``)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import asyncpg

from gateway.acquiring.operations import Operation, Purchase, Reversal, RiskRecheck, RowVersions, Stamp, TxnKey
from gateway.acquiring.outcomes import Outcome
from gateway.domain.demo import demo_pan
from gateway.domain.vocabulary import Kind
from ledger.postings import Transfer

BATCH = 1


async def issue(cli, db: asyncpg.Connection, index: int, balance: str) -> asyncpg.Record:
    pan = demo_pan(index)
    result = await cli("card", "issue", pan, "--pin", "1234", "--expiry", "3012", "--balance", balance)
    assert result.code == 0, result.stderr
    return await db.fetchrow("SELECT id, account_id FROM cards ORDER BY id DESC LIMIT 1")


def purchase(stan: int, card: asyncpg.Record, merchant_account: int, amount: int, *, pin: str | None = None,
             content: str | None = None) -> Purchase:
    return Purchase(kind=Kind.PURCHASE, key=TxnKey("TERM0001", BATCH, f"{stan:06d}", "0200"), processing_code="000000",
                    content=content or f"purchase-{stan}", amount_fen=amount, card_id=card["id"], pin=pin,
                    stamp=Stamp(f"{stan:012d}", "101010", "1124"),
                    transfers=(Transfer(card["account_id"], merchant_account, amount, "purchase"),))


def reversal(stan: int, amount: int) -> Reversal:
    return Reversal(kind=Kind.REVERSAL, key=TxnKey("TERM0001", BATCH, f"{stan:06d}", "0400"), processing_code="000000",
                    content=f"reversal-{stan}", amount_fen=amount, card_id=None, pin=None,
                    stamp=Stamp(f"{900000 + stan:012d}", "101010", "1124"))


def code(result: dict[str, Any]) -> str | None:
    """The response code of a result's answer (None: no answer), from its outcome as the gateway maps it."""
    return Outcome(result["response"]["outcome"]).response_code.value if "response" in result else None


async def finish_many(db: asyncpg.Connection, items: list[Operation]) -> list[dict[str, Any]]:
    results = await db.fetchval("SELECT gw_finish_many($1::jsonb[])", [json.dumps(i.as_json()) for i in items])
    return [json.loads(r) for r in results]


async def state(db: asyncpg.Connection) -> tuple:
    """What a batch leaves behind, without the ids and times sequences and clocks choose."""
    transactions = [tuple(r) for r in await db.fetch(
        """SELECT tid, batch, stan, mti_class, kind, content_hash, response, response_code, status, amount_fen,
                  card_id, rrn, posting_key FROM gw_transactions ORDER BY tid, batch, stan, mti_class""")]
    accounts = [tuple(r) for r in await db.fetch(
        "SELECT id, debits_posted, credits_posted FROM ledger_accounts ORDER BY id")]
    postings = [tuple(r) for r in await db.fetch(
        """SELECT p.idempotency_key, p.result, t.debit_account_id, t.credit_account_id, t.amount
             FROM ledger_postings p LEFT JOIN ledger_transfers t ON t.posting_id = p.id
            ORDER BY p.idempotency_key, t.amount""")]
    cards = [tuple(r) for r in await db.fetch("SELECT id, pin_tries FROM cards ORDER BY id")]
    return transactions, accounts, postings, cards


async def test_a_batch_answers_and_moves_money_as_gw_finish_does_one_request_at_a_time(db, cli, world):
    merchant_account = await db.fetchval("SELECT account_id FROM merchants WHERE mid = $1", world.mid)
    card1 = await issue(cli, db, 1, "10.00")
    card2 = await issue(cli, db, 2, "5.00")
    card3 = await issue(cli, db, 3, "5.00")
    await db.execute("UPDATE cards SET pin_tries = 2 WHERE id = $1", card2["id"])
    # Recorded before the batch: a purchase that the batch repeats, once as it was and once changed,
    # and a reversal whose purchase comes only in the batch.
    earlier = await finish_many(db, [purchase(7, card3, merchant_account, 100), reversal(5, 200)])
    assert [code(r) for r in earlier] == ["00", "00"]

    batch = [
        purchase(1, card1, merchant_account, 600),
        purchase(2, card1, merchant_account, 600),                 # card1 has 400 left: 51
        purchase(3, card2, merchant_account, 100, pin="ok"),       # a right PIN restarts the count
        reversal(4, 300),                                          # ahead of its purchase...
        purchase(4, card3, merchant_account, 300),                 # ...which is then 25
        purchase(7, card3, merchant_account, 100),                 # a repeat: the stored answer
        purchase(7, card3, merchant_account, 100, content="changed"),  # same key, other content: conflict
        purchase(8, card3, merchant_account, 450),                 # card3 has 400 left: 51
        purchase(9, card3, merchant_account, 400),                 # exactly what is left: 00
        purchase(5, card1, merchant_account, 200),                 # its reversal came in an earlier batch: 25
    ]

    one_by_one = db.transaction()
    await one_by_one.start()
    expected = [json.loads(await db.fetchval("SELECT gw_finish($1::jsonb)", json.dumps(item.as_json())))
                for item in batch]
    expected_state = await state(db)
    await one_by_one.rollback()

    results = await finish_many(db, batch)

    assert results == expected
    assert await state(db) == expected_state
    assert [r["status"] for r in results] == ["new"] * 5 + ["repeat", "conflict", "new", "new", "new"]
    assert [code(r) for r in results] == [
        "00", "51", "00", "00", "25", "00", None, "51", "00", "25"]
    assert results[0]["response"]["auth_id"] == "000001"
    assert await db.fetchval("SELECT pin_tries FROM cards WHERE id = $1", card2["id"]) == 0
    balances = {r["id"]: r["balance"] for r in await db.fetch(
        "SELECT c.id, a.credits_posted - a.debits_posted AS balance FROM cards c JOIN ledger_accounts a "
        "ON a.id = c.account_id")}
    assert balances == {card1["id"]: 400, card2["id"]: 400, card3["id"]: 0}
    assert await db.fetchval("SELECT credits_posted FROM ledger_accounts WHERE id = $1",
                             merchant_account) == 600 + 100 + 100 + 400


async def test_purchases_in_a_settled_batch_are_left_to_gw_finish_and_answered_12(db, cli, world):
    merchant_account = await db.fetchval("SELECT account_id FROM merchants WHERE mid = $1", world.mid)
    card = await issue(cli, db, 1, "10.00")
    await db.execute("""INSERT INTO gw_batches (tid, batch, debit_fen, debit_count, credit_fen, credit_count,
                                                terminal_totals, balanced)
                        VALUES ('TERM0001', $1, 0, 0, 0, 0, repeat('0', 30), true)""", BATCH)

    results = await finish_many(db, [purchase(1, card, merchant_account, 100),
                                     purchase(2, card, merchant_account, 100)])

    assert [code(r) for r in results] == ["12", "12"]
    assert await db.fetchval("SELECT count(*) FROM ledger_postings WHERE idempotency_key LIKE 'TERM0001:%'") == 0


async def row_versions(db: asyncpg.Connection, card: asyncpg.Record) -> dict[str, str]:
    """The terminal's (terminal, merchant, agent, then its risk limit overrides) and the card's row
    versions, as the gateway caches them."""
    row = await db.fetchrow(
        """SELECT t.xmin::text || ':' || m.xmin::text || ':' || a.xmin::text || '/' || gw_limits_version(t.mid, t.tid)
                  AS terminal, c.xmin::text AS card
             FROM terminals t, merchants m, agents a, cards c
            WHERE t.tid = 'TERM0001' AND m.mid = t.mid AND a.code = m.agent_code AND c.id = $1""", card["id"])
    return dict(row)


async def test_a_purchase_checked_against_changed_rows_is_answered_stale_and_nothing_of_it_is_done(db, cli, world):
    merchant_account = await db.fetchval("SELECT account_id FROM merchants WHERE mid = $1", world.mid)
    card1 = await issue(cli, db, 1, "10.00")
    card2 = await issue(cli, db, 2, "10.00")
    current1, old2 = await row_versions(db, card1), await row_versions(db, card2)
    await db.execute("UPDATE cards SET pin_tries = 0 WHERE id = $1", card2["id"])  # a new version of card2
    current2 = await row_versions(db, card2)
    assert current2["card"] != old2["card"] and current2["terminal"] == old2["terminal"]

    def cached(item: Purchase, versions: dict[str, str]) -> Purchase:
        return dataclasses.replace(item, versions=RowVersions(**versions))

    results = await finish_many(db, [
        cached(purchase(1, card1, merchant_account, 100), current1),
        cached(purchase(2, card2, merchant_account, 100), old2),       # its card changed: stale
        cached(purchase(3, card2, merchant_account, 100), current2),
        purchase(4, card2, merchant_account, 100),                      # not from the cache: no check
    ])
    assert [r["status"] for r in results] == ["new", "stale", "new", "new"]
    assert results[1] == {"status": "stale", "stored": False}
    assert [code(r) for r in results] == ["00", None, "00", "00"]
    assert await db.fetchval("SELECT array_agg(stan ORDER BY stan) FROM gw_transactions") == [
        "000001", "000003", "000004"]
    assert await db.fetchval("SELECT count(*) FROM ledger_postings WHERE idempotency_key LIKE 'TERM0001:1:000002:%'") \
        == 0

    # A change to the merchant's row: every cached terminal version of it is stale, alone (gw_finish's path) too.
    await db.execute("UPDATE merchants SET name = name WHERE mid = $1", world.mid)
    [result] = await finish_many(db, [cached(purchase(5, card1, merchant_account, 100), current1)])
    assert result["status"] == "stale"
    [result] = await finish_many(db, [cached(purchase(5, card1, merchant_account, 100),
                                             await row_versions(db, card1))])
    assert result["status"] == "new" and code(result) == "00"
    balances = await db.fetch("SELECT a.credits_posted - a.debits_posted AS balance FROM cards c "
                              "JOIN ledger_accounts a ON a.id = c.account_id ORDER BY c.id")
    assert [r["balance"] for r in balances] == [800, 800]


async def test_a_risk_limit_set_after_the_terminal_was_cached_makes_its_version_stale(db, cli, world):
    merchant_account = await db.fetchval("SELECT account_id FROM merchants WHERE mid = $1", world.mid)
    card = await issue(cli, db, 1, "10.00")
    before = await row_versions(db, card)
    assert (await cli("terminal", "limits", "TERM0001", "txn_amount_max_fen=500")).code == 0
    after = await row_versions(db, card)
    assert after["terminal"] != before["terminal"]
    assert (await cli("merchant", "limits", world.mid, "card_daily_count_max=7")).code == 0
    assert (await row_versions(db, card))["terminal"] != after["terminal"]
    [result] = await finish_many(db, [dataclasses.replace(purchase(1, card, merchant_account, 100),
                                                          versions=RowVersions(**after))])
    assert result == {"status": "stale", "stored": False}


async def test_a_cached_purchase_the_spike_or_travel_rule_would_decline_is_stale_and_nothing_of_it_is_done(
        db, cli, world):
    merchant_account = await db.fetchval("SELECT account_id FROM merchants WHERE mid = $1", world.mid)
    card = await issue(cli, db, 1, "10.00")
    versions = RowVersions(**await row_versions(db, card))
    today = await db.fetchval("SELECT current_date")
    spike = {"tid": "TERM0001", "day": today.isoformat(), "factor": 2, "floor": 3}

    def cached(stan: int, recheck: RiskRecheck) -> Purchase:
        return dataclasses.replace(purchase(stan, card, merchant_account, 100), versions=versions, recheck=recheck)

    # 2 approvals today and 45 over the 30 days before: the threshold is max(3, 2 x 1.5) = 3, so one more passes
    await db.execute("""INSERT INTO risk_counters (scope, owner, day, count)
                        VALUES ('terminal', 'TERM0001', $1, 2), ('terminal', 'TERM0001', $1::date - 30, 45),
                               ('terminal', 'TERM0001', $1::date - 31, 1000)""", today)
    [result] = await finish_many(db, [cached(1, RiskRecheck(None, spike))])
    assert result["status"] == "new" and code(result) == "00"
    await db.execute("UPDATE risk_counters SET count = 3 WHERE owner = 'TERM0001' AND day = $1", today)
    [result] = await finish_many(db, [cached(2, RiskRecheck(None, spike))])
    assert result == {"status": "stale", "stored": False}

    # travel: the card was last approved in Shanghai a minute ago
    await db.execute("""UPDATE gw_transactions SET latitude = 31.2304, longitude = 121.4737,
                               created_at = now() - interval '60 seconds' WHERE stan = '000001'""")
    travel = {"lat": 39.9042, "lon": 116.4074, "speed_kmh_max": 300, "distance_km_min": 5}  # Beijing
    [result] = await finish_many(db, [cached(3, RiskRecheck(travel, None))])
    assert result == {"status": "stale", "stored": False}
    near = {"lat": 31.2404, "lon": 121.4837, "speed_kmh_max": 300, "distance_km_min": 5}  # 1.4 km away
    [result] = await finish_many(db, [cached(4, RiskRecheck(near, None))])
    assert result["status"] == "new" and code(result) == "00"
    assert await db.fetchval("SELECT array_agg(stan ORDER BY stan) FROM gw_transactions") == ["000001", "000004"]
