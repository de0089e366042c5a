"""CLI commands that touch money: cards, top-ups, the ledger check."""

from __future__ import annotations

import asyncpg
import pytest

from gateway.domain.cards import issue_cards
from gateway.domain.demo import demo_pan
from gateway.keys import SoftHsm
from tests.conftest import TEST_LMK

PAN = demo_pan(3)


async def test_card_issue_stores_no_clear_pan_or_pin_and_opens_with_its_balance(cli, db):
    result = await cli("card", "issue", PAN, "--pin", "4321", "--expiry", "2912", "--balance", "12.34", "--json")
    assert result.code == 0, result.stderr
    assert result.json == {"pan_masked": PAN[:6] + "******" + PAN[-4:], "status": "active",
                           "pin_blocked": False, "expiry": "2912", "balance_fen": 1234}
    row = await db.fetchrow("SELECT * FROM cards")
    stored = b"".join(bytes(v) if isinstance(v, (bytes, memoryview)) else str(v).encode() for v in row.values())
    assert PAN.encode() not in stored and b"4321" not in stored
    assert bytes.fromhex(PAN[:16]) not in stored
    assert (await cli("ledger", "check", "--json")).json["totals"]["debits_fen"] == 1234


@pytest.mark.parametrize("argv, message", [
    (("card", "issue", "4111111111111112", "--pin", "1234", "--expiry", "2912"), "Luhn"),
    (("card", "issue", PAN, "--pin", "12", "--expiry", "2912"), "PIN must be"),
    (("card", "issue", PAN, "--pin", "1234", "--expiry", "2913"), "YYMM"),
    (("card", "issue", PAN, "--pin", "1234", "--expiry", "2912", "--balance", "1.234"), "amount"),
    (("card", "show", demo_pan(4)), "unknown card"),
    (("agent", "topup", "AG01", "0"), "more than zero"),
    (("agent", "topup", "AG01", "-5"), "amount"),
    (("agent", "topup", "NOBODY", "5"), "unknown agent"),
    (("agent", "topup", "AG01", "10000000000"), "at most"),
])
async def test_bad_money_input_exits_2_and_changes_nothing(cli, world, db, argv, message):
    await cli("card", "issue", demo_pan(5), "--pin", "1234", "--expiry", "2912")
    before = await db.fetchval("SELECT (SELECT count(*) FROM cards) + (SELECT count(*) FROM ledger_transfers)")
    result = await cli(*argv)
    assert result.code == 2
    assert message in result.stderr.strip().splitlines()[-1]
    assert await db.fetchval("SELECT (SELECT count(*) FROM cards) + (SELECT count(*) FROM ledger_transfers)") == before


async def test_a_duplicate_card_exits_2(cli):
    assert (await cli("card", "issue", PAN, "--pin", "1234", "--expiry", "2912")).code == 0
    result = await cli("card", "issue", PAN, "--pin", "9999", "--expiry", "2912")
    assert result.code == 2 and "already exists" in result.stderr


async def test_agent_topup_credits_the_float_from_cash(cli, world, db):
    assert (await cli("agent", "topup", "AG01", "500")).code == 0
    result = await cli("agent", "topup", "AG01", "0.5", "--json")
    assert result.json["float_fen"] == 50050
    cash = await db.fetchval("SELECT credits_posted - debits_posted FROM ledger_accounts WHERE code = 'system:cash'")
    assert cash == -50050


async def test_card_freeze_unfreeze_and_unblock_are_idempotent(cli):
    await cli("card", "issue", PAN, "--pin", "1234", "--expiry", "2912")
    for action, status in (("freeze", "frozen"), ("freeze", "frozen"), ("unfreeze", "active"), ("unfreeze", "active")):
        result = await cli("card", action, PAN, "--json")
        assert result.code == 0 and result.json["status"] == status
    for _ in range(2):
        assert (await cli("card", "unblock", PAN, "--json")).json["pin_blocked"] is False


async def test_ledger_check_exits_1_naming_a_corrupted_balance(cli, db):
    await cli("card", "issue", PAN, "--pin", "1234", "--expiry", "2912", "--balance", "10")
    assert (await cli("ledger", "check")).code == 0
    code = await db.fetchval("SELECT code FROM ledger_accounts WHERE kind = 'card'")
    await db.execute("UPDATE ledger_accounts SET credits_posted = credits_posted + 1 WHERE kind = 'card'")
    result = await cli("ledger", "check", "--json")
    assert result.code == 1
    assert result.json["ok"] is False
    assert any(code in problem for problem in result.json["problems"])
    assert "total debits" in " ".join(result.json["problems"])


async def test_demo_issues_each_card_once_with_its_opening_balance(cli, db):
    first = await cli("demo", "--terminals", "1", "--cards", "5", "--json")
    assert first.code == 0, first.stderr
    again = await cli("demo", "--terminals", "1", "--cards", "7", "--json")  # 5 there, 2 new
    assert [c["pan"] for c in again.json["cards"]] == [demo_pan(i) for i in range(1, 8)]
    assert again.json["cards"][:5] == first.json["cards"]
    rows = await db.fetch(
        """SELECT c.id, c.pan_masked, a.kind, a.debits_must_not_exceed_credits AS guarded,
                  a.credits_posted - a.debits_posted AS balance, p.idempotency_key, t.code, t.amount
             FROM cards c JOIN ledger_accounts a ON a.id = c.account_id
             JOIN ledger_transfers t ON t.credit_account_id = a.id JOIN ledger_postings p ON p.id = t.posting_id
            ORDER BY c.id""")
    assert [r["pan_masked"] for r in rows] == [demo_pan(i)[:6] + "******" + demo_pan(i)[-4:] for i in range(1, 8)]
    for r in rows:
        assert (r["kind"], r["guarded"], r["balance"]) == ("card", True, 1_000_000)
        assert (r["idempotency_key"], r["code"], r["amount"]) == (f"card-issue:{r['id']}", "card_issue", 1_000_000)
    shown = await cli("card", "show", demo_pan(7), "--json")
    assert shown.json["balance_fen"] == 1_000_000 and shown.json["expiry"] == "3012"
    assert (await cli("ledger", "check", "--json")).code == 0


async def test_issuing_a_set_with_a_card_that_exists_issues_none(cli, db):
    await cli("card", "issue", demo_pan(2), "--pin", "1234", "--expiry", "2912", "--balance", "1")
    hsm = SoftHsm(bytes.fromhex(TEST_LMK))
    before = await db.fetchval("SELECT (SELECT count(*) FROM cards) + (SELECT count(*) FROM ledger_accounts)")
    with pytest.raises(asyncpg.UniqueViolationError):
        async with db.transaction():
            await issue_cards(db, hsm, [(demo_pan(1), "1234", "2912"), (demo_pan(2), "1234", "2912")], 100)
    after = await db.fetchval("SELECT (SELECT count(*) FROM cards) + (SELECT count(*) FROM ledger_accounts)")
    assert after == before
