"""Agent withdrawals (CLI.md, Rules: Withdrawals; issue 24) and their payouts (issue 25): the
arithmetic, the refusals, the next payout run, the bank's answer, earnings rows, and a
property test of where every fen of a withdrawal goes."""

from __future__ import annotations

import asyncio
from datetime import date

import asyncpg
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from gateway.domain import banking, registry
from gateway.domain import payouts as money_out
from gateway.domain.validate import InvalidInput
from gateway.jobs import agent_run, payouts
from gateway.keys import SoftHsm
from gateway.reports.agent_earnings import earnings
from gateway.services import withdrawals
from gateway.settings import Settings
from gateway.upstream import bank_files
from ledger.accounts import FEE_INCOME_ACCOUNT_CODE, account_id, balance_fen
from ledger.check import check
from ledger.postings import PostResult, Transfer, post
from sim import bank
from tests.conftest import TEST_LMK
from tests.jobs.payout_world import AGENT, Book

AGENT_ACCOUNT = "6217000012345678"  # shown as *5678
NEW_ACCOUNT = "6217000087654321"
ACTOR = "test"


async def fund_profit(db: asyncpg.Connection, code: str, amount_fen: int, key: str = "fund") -> int:
    """The agent's profit account (made as the agent run makes it), credited ``amount_fen`` from the house."""
    await agent_run.ensure_agent_accounts(db)
    profit = await db.fetchval("SELECT profit_account_id FROM agent_accounts WHERE agent_code = $1", code)
    fee = await account_id(db, FEE_INCOME_ACCOUNT_CODE)
    assert await post(db, f"test:{key}:{code}", [Transfer(fee, profit, amount_fen, "agent_share")]) is PostResult.OK
    return profit


async def set_agent_bank(book: Book, number: str = AGENT_ACCOUNT) -> None:
    await banking.set_bank_details(book.db, book.hsm, "agent", AGENT, bank_account_number=number,
                                   bank_name="Agricultural Bank", account_name="Agent One")


async def balances(db: asyncpg.Connection, profit: int) -> dict[str, int]:
    async def of(code: str) -> int:
        found = await account_id(db, code)
        return 0 if found is None else await balance_fen(db, found)
    return {"profit": await balance_fen(db, profit), "clearing": await of(money_out.CLEARING_ACCOUNT_CODE),
            "tax": await of(money_out.TAX_ACCOUNT_CODE), "fee": await of(FEE_INCOME_ACCOUNT_CODE),
            "bank": await of(money_out.BANK_ACCOUNT_CODE)}


# -- the arithmetic ----------------------------------------------------------------------------


def test_the_worked_example_of_a_withdrawal():
    """1,000.00 yuan gross at 800 bp and a 3.00 yuan fee: tax 80.00, fee 3.00, net 917.00."""
    parts = money_out.split_withdrawal(100_000, minimum_fen=10_000, tax_bp=800, fee_fen=300)
    assert (parts.gross_fen, parts.tax_fen, parts.fee_fen, parts.net_fen) == (100_000, 8_000, 300, 91_700)


@pytest.mark.parametrize(("gross_fen", "tax_fen"), [(10_006, 800), (10_007, 801), (10_018, 801), (10_019, 802)])
def test_the_tax_is_rounded_half_up(gross_fen, tax_fen):
    # 10,006 x 0.08 = 800.48 -> 800; 10,007 -> 800.56 -> 801; 10,018 -> 801.44 -> 801; 10,019 -> 801.52 -> 802
    assert money_out.split_withdrawal(gross_fen, minimum_fen=0, tax_bp=800, fee_fen=300).tax_fen == tax_fen


def test_below_the_minimum_or_nothing_left_is_refused():
    with pytest.raises(InvalidInput, match="at least 100.00 yuan"):
        money_out.split_withdrawal(9_999, minimum_fen=10_000, tax_bp=800, fee_fen=300)
    with pytest.raises(InvalidInput, match="nothing left"):
        money_out.split_withdrawal(300, minimum_fen=0, tax_bp=0, fee_fen=300)
    assert money_out.split_withdrawal(301, minimum_fen=0, tax_bp=0, fee_fen=300).net_fen == 1
    assert money_out.split_withdrawal(10_000, minimum_fen=10_000, tax_bp=0, fee_fen=0).net_fen == 10_000


# -- the withdrawal ----------------------------------------------------------------------------


async def test_a_withdrawal_takes_the_gross_from_the_profit_balance_at_once(book: Book):
    profit = await fund_profit(book.db, AGENT, 150_000)
    await set_agent_bank(book)
    before = await balances(book.db, profit)
    result = await withdrawals.withdraw(book.db, ACTOR, book.settings, AGENT, 100_000)
    assert result == {"code": AGENT, "gross_fen": 100_000, "tax_fen": 8_000, "fee_fen": 300, "net_fen": 91_700,
                      "payout_id": result["payout_id"], "profit_fen": 50_000}
    after = await balances(book.db, profit)
    assert after == before | {"profit": 50_000, "clearing": 91_700, "tax": 8_000, "fee": before["fee"] + 300}
    [payout] = (await payouts.list_payouts(book.db))["payouts"]
    assert payout == {"id": result["payout_id"], "date": None, "beneficiary_kind": "agent", "beneficiary": AGENT,
                      "amount_fen": 91_700, "status": "pending", "bank_account_masked": None, "reason": None}
    [record] = await book.db.fetch("SELECT * FROM audit_events WHERE action = 'agent.withdraw'")
    assert (record["actor"], record["entity"]) == (ACTOR, f"agent:{AGENT}")
    assert AGENT_ACCOUNT not in record["after"] and "5678" not in record["after"]
    await book.assert_books_exact()


@pytest.mark.parametrize("problem", ["no bank details", "frozen", "below the minimum", "above the balance",
                                     "no profit account", "unknown agent"])
async def test_a_refused_withdrawal_moves_nothing_and_records_nothing(book: Book, problem: str):
    if problem != "no profit account":
        await fund_profit(book.db, AGENT, 50_000)
    if problem != "no bank details":
        await set_agent_bank(book)
    if problem == "frozen":
        await registry.set_agent_status(book.db, AGENT, registry.FROZEN)
    gross_fen = {"below the minimum": 9_999, "above the balance": 50_001}.get(problem, 10_000)
    code = "NOBODY" if problem == "unknown agent" else AGENT
    transfers = await book.db.fetchval("SELECT count(*) FROM ledger_transfers")
    message = {"no bank details": "no bank details", "frozen": "frozen", "below the minimum": "at least",
               "above the balance": "profit balance is 500.00", "no profit account": "profit balance is 0.00",
               "unknown agent": "unknown agent"}[problem]
    with pytest.raises(InvalidInput, match=message):
        await withdrawals.withdraw(book.db, ACTOR, book.settings, code, gross_fen)
    assert await book.db.fetchval("SELECT count(*) FROM ledger_transfers") == transfers
    assert await book.db.fetchval("SELECT count(*) FROM payouts") == 0
    assert await book.db.fetchval("SELECT count(*) FROM audit_events WHERE action = 'agent.withdraw'") == 0


async def test_two_withdrawals_at_once_that_the_balance_covers_only_once_make_one(book: Book, db_url: str):
    await fund_profit(book.db, AGENT, 30_000)
    await set_agent_bank(book)
    connections = [await asyncpg.connect(db_url) for _ in range(2)]
    try:
        results = await asyncio.gather(*(withdrawals.withdraw(conn, f"agent:{n}", book.settings, AGENT, 20_000)
                                         for n, conn in enumerate(connections)), return_exceptions=True)
    finally:
        for conn in connections:
            await conn.close()
    made = [r for r in results if isinstance(r, dict)]
    refused = [r for r in results if isinstance(r, InvalidInput)]
    assert (len(made), len(refused)) == (1, 1), results
    assert made[0]["profit_fen"] == 10_000
    assert await book.db.fetchval("SELECT count(*) FROM payouts") == 1
    await book.assert_books_exact()


async def test_the_whole_balance_may_be_withdrawn_and_then_nothing_more(book: Book):
    profit = await fund_profit(book.db, AGENT, 20_000)
    await set_agent_bank(book)
    await withdrawals.withdraw(book.db, ACTOR, book.settings, AGENT, 20_000)
    assert await balance_fen(book.db, profit) == 0
    with pytest.raises(InvalidInput, match="profit balance is 0.00"):
        await withdrawals.withdraw(book.db, ACTOR, book.settings, AGENT, 10_000)
    await book.assert_books_exact()


# -- paid by the payout run ----------------------------------------------------------------------


async def test_the_next_payout_run_pays_a_withdrawal_in_a_valid_pain001(book: Book):
    await fund_profit(book.db, AGENT, 150_000)
    await set_agent_bank(book)
    await book.merchant(1, 4_200)
    withdrawn = await withdrawals.withdraw(book.db, ACTOR, book.settings, AGENT, 100_000)
    assert await book.system_balance(money_out.CLEARING_ACCOUNT_CODE) == 91_700  # before the run sent it

    result = await book.run()
    assert (result["count"], result["total_fen"], result["skipped"]) == (2, 4_200 + 91_700, [])
    pain001 = await payouts.payout_file(book.db, book.hsm, book.settings, book.day, "pain001")
    bank_files.validate(pain001, bank_files.PAIN001_SCHEMA)
    assert b'<InstdAmt Ccy="CNY">917.00</InstdAmt>' in pain001
    assert f"<EndToEndId>{withdrawn['payout_id']}</EndToEndId>".encode() in pain001
    assert AGENT_ACCOUNT.encode() in pain001
    csv = (await payouts.payout_file(book.db, book.hsm, book.settings, book.day, "csv")).decode().splitlines()
    assert f"{withdrawn['payout_id']},agent,{AGENT},Agent One,Agricultural Bank,{AGENT_ACCOUNT},91700," \
           f"posgw payout {book.day.isoformat()} #{withdrawn['payout_id']}" in csv
    [agent_payout] = [p for p in (await payouts.list_payouts(book.db, book.day))["payouts"]
                      if p["beneficiary_kind"] == "agent"]
    assert (agent_payout["date"], agent_payout["bank_account_masked"]) == (book.day.isoformat(), "*5678")
    await book.assert_books_exact()

    # A later run has nothing of it left to send; the bank pays both.
    assert (await payouts.run_payouts(book.db, book.settings, date.fromordinal(book.day.toordinal() + 1),
                                      now=book.after(date.fromordinal(book.day.toordinal() + 1))))["count"] == 0
    answer = bank.answer(pain001, set())
    assert await payouts.confirm_payouts(book.db, answer) == {"paid": 2, "returned": 0, "unchanged": 0,
                                                               "conflicts": []}
    assert await book.system_balance(money_out.CLEARING_ACCOUNT_CODE) == 0
    assert await book.system_balance(money_out.BANK_ACCOUNT_CODE) == 4_200 + 91_700
    await book.assert_books_exact()


async def test_a_run_that_fails_half_way_leaves_the_withdrawal_unsent_and_the_rerun_sends_it_once(
        book: Book, monkeypatch):
    await fund_profit(book.db, AGENT, 20_000)
    await set_agent_bank(book)
    await book.merchant(1, 1_000)
    withdrawn = await withdrawals.withdraw(book.db, ACTOR, book.settings, AGENT, 20_000)
    real_post_many = payouts.post_many

    async def post_then_fail(conn, postings):
        await real_post_many(conn, postings)
        raise RuntimeError("injected: crash before the run is recorded")

    monkeypatch.setattr(payouts, "post_many", post_then_fail)
    with pytest.raises(RuntimeError, match="injected"):
        await book.run()
    assert await book.db.fetch("SELECT id, payout_date FROM payouts") == [(withdrawn["payout_id"], None)]
    assert await book.system_balance(money_out.CLEARING_ACCOUNT_CODE) == withdrawn["net_fen"]

    monkeypatch.undo()
    result = await book.run()
    assert (result["count"], result["total_fen"]) == (2, 1_000 + withdrawn["net_fen"])
    assert await book.run() == result
    assert await book.db.fetchval("SELECT count(*) FROM payouts WHERE payout_date = $1", book.day) == 2
    await book.assert_books_exact()


async def test_a_frozen_agents_withdrawal_waits_and_is_listed(book: Book):
    await fund_profit(book.db, AGENT, 20_000)
    await set_agent_bank(book)
    withdrawn = await withdrawals.withdraw(book.db, ACTOR, book.settings, AGENT, 20_000)
    await registry.set_agent_status(book.db, AGENT, registry.FROZEN)
    result = await book.run()
    assert (result["count"], result["skipped"]) == (0, [
        {"beneficiary_kind": "agent", "beneficiary": AGENT, "reason": "frozen", "balance_fen": withdrawn["net_fen"]}])
    await registry.set_agent_status(book.db, AGENT, registry.ACTIVE)
    next_day = date.fromordinal(book.day.toordinal() + 1)
    result = await payouts.run_payouts(book.db, book.settings, next_day, now=book.after(next_day))
    assert (result["count"], result["total_fen"]) == (1, withdrawn["net_fen"])
    await book.assert_books_exact()


async def test_a_returned_withdrawal_gives_the_gross_back_and_is_paid_again_after_new_bank_details(book: Book):
    profit = await fund_profit(book.db, AGENT, 150_000)
    await set_agent_bank(book)
    start = await balances(book.db, profit)
    withdrawn = await withdrawals.withdraw(book.db, ACTOR, book.settings, AGENT, 100_000)
    await book.run()
    pain001 = await payouts.payout_file(book.db, book.hsm, book.settings, book.day, "pain001")
    answer = bank.answer(pain001, {AGENT_ACCOUNT})
    assert (await payouts.confirm_payouts(book.db, answer))["returned"] == 1
    assert await balances(book.db, profit) == start  # the gross, tax and fee with it, is the agent's again
    assert await payouts.confirm_payouts(book.db, answer) == {"paid": 0, "returned": 0, "unchanged": 1,
                                                               "conflicts": []}
    assert await balances(book.db, profit) == start
    await book.assert_books_exact()

    # Not again to the account that returned it; after `agent set`, yes.
    with pytest.raises(InvalidInput, match="returned"):
        await withdrawals.withdraw(book.db, ACTOR, book.settings, AGENT, 100_000)
    await set_agent_bank(book, NEW_ACCOUNT)
    again = await withdrawals.withdraw(book.db, ACTOR, book.settings, AGENT, 100_000)
    next_day = date.fromordinal(book.day.toordinal() + 1)
    result = await payouts.run_payouts(book.db, book.settings, next_day, now=book.after(next_day))
    assert (result["count"], result["total_fen"]) == (1, 91_700)
    second = await payouts.payout_file(book.db, book.hsm, book.settings, next_day, "pain001")
    bank_files.validate(second, bank_files.PAIN001_SCHEMA)
    assert NEW_ACCOUNT.encode() in second and AGENT_ACCOUNT.encode() not in second
    assert (await payouts.confirm_payouts(book.db, bank.answer(second, set())))["paid"] == 1
    assert await balances(book.db, profit) == start | {"profit": 50_000, "tax": start["tax"] + 8_000,
                                                       "fee": start["fee"] + 300, "bank": 91_700}
    statuses = dict(await book.db.fetch("SELECT id, status FROM payouts"))
    assert statuses == {withdrawn["payout_id"]: "returned", again["payout_id"]: "paid"}
    await book.assert_books_exact()


async def test_a_withdrawal_paid_then_returned_gives_the_gross_back_from_the_bank_side(book: Book):
    profit = await fund_profit(book.db, AGENT, 20_000)
    await set_agent_bank(book)
    start = await balances(book.db, profit)
    withdrawn = await withdrawals.withdraw(book.db, ACTOR, book.settings, AGENT, 20_000)
    await book.run()
    paid = f"payout_id,status,reason\n{withdrawn['payout_id']},paid,\n".encode()
    returned = f"payout_id,status,reason\n{withdrawn['payout_id']},returned,account closed\n".encode()
    assert (await payouts.confirm_payouts(book.db, paid))["paid"] == 1
    assert (await payouts.confirm_payouts(book.db, returned))["returned"] == 1
    assert await balances(book.db, profit) == start
    await book.assert_books_exact()


async def test_earnings_list_a_withdrawal_negative_and_its_return_positive(book: Book):
    await fund_profit(book.db, AGENT, 20_000)
    await set_agent_bank(book)
    withdrawn = await withdrawals.withdraw(book.db, ACTOR, book.settings, AGENT, 20_000)
    today = book.settings.today()
    rows = (await earnings(book.db, AGENT, today, today))["rows"]
    assert rows == [{"date": today.isoformat(), "source": "withdrawal", "tid": None, "mid": None, "volume_fen": 0,
                     "amount_fen": -20_000}]
    await book.run()
    returned = f"payout_id,status,reason\n{withdrawn['payout_id']},returned,\n".encode()
    await payouts.confirm_payouts(book.db, returned, today=today)
    report = await earnings(book.db, AGENT, today, today)
    assert [row["amount_fen"] for row in report["rows"]] == [-20_000, 20_000]
    assert report["totals"]["withdrawal"] == 0


# -- every fen accounted for (hypothesis) ------------------------------------------------------


async def _withdrawals_example(db_url: str, base: Settings, funded_fen: int, grosses: list[int], answers: list[str],
                               tax_bp: int, fee_fen: int) -> None:
    db = await asyncpg.connect(db_url)
    tx = db.transaction()
    await tx.start()
    try:
        settings = base.model_copy(update={"withdrawal_min_fen": 100, "withdrawal_tax_bp": tax_bp,
                                           "withdrawal_fee_fen": fee_fen})
        await registry.add_agent(db, "HYP", "Hypothesis Agent", None)
        book = Book(db, SoftHsm(bytes.fromhex(TEST_LMK)), settings, date(2026, 1, 1))
        await banking.set_bank_details(db, book.hsm, "agent", "HYP", bank_account_number=AGENT_ACCOUNT,
                                       bank_name="Bank", account_name="Agent")
        profit = await fund_profit(db, "HYP", funded_fen, "hypothesis")
        start = await balances(db, profit)
        made: list[tuple[int, int, int, int]] = []  # payout id, net, tax, fee
        for gross in grosses:
            try:
                result = await withdrawals.withdraw(db, ACTOR, settings, "HYP", gross)
            except InvalidInput:
                assert gross < settings.withdrawal_min_fen or gross > await balance_fen(db, profit) \
                    or gross - money_out.withdrawal_tax_fen(gross, tax_bp) - fee_fen <= 0
                continue
            assert result["tax_fen"] + result["fee_fen"] + result["net_fen"] == gross
            made.append((result["payout_id"], result["net_fen"], result["tax_fen"], result["fee_fen"]))
        now = book.after(book.day)
        await payouts.run_payouts(db, settings, book.day, now=now)
        lines = "".join(f"{pid},{answer},\n" for (pid, *_), answer in zip(made, answers, strict=False))
        if lines:
            await payouts.confirm_payouts(db, f"payout_id,status,reason\n{lines}".encode())
        status = dict(await db.fetch("SELECT id, status FROM payouts"))
        kept = [m for m in made if status[m[0]] != "returned"]
        after = await balances(db, profit)
        # Profit + clearing + bank + tax + fee income moved by exactly the withdrawals kept, and add up.
        assert after["profit"] == start["profit"] - sum(net + tax + fee for _, net, tax, fee in kept)
        assert after["clearing"] == sum(net for pid, net, *_ in kept if status[pid] == "pending")
        assert after["bank"] == sum(net for pid, net, *_ in kept if status[pid] == "paid")
        assert after["tax"] - start["tax"] == sum(tax for *_, tax, _ in kept)
        assert after["fee"] - start["fee"] == sum(fee for *_, fee in kept)
        assert sum(after.values()) == sum(start.values())
        report = await check(db)
        assert report.ok, report.problems
        assert await payouts.check_payouts(db) == []
    finally:
        await tx.rollback()
        await db.close()


@hypothesis_settings(max_examples=40, deadline=None, derandomize=True, database=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(funded_fen=st.integers(100, 5_000_000), grosses=st.lists(st.integers(1, 3_000_000), max_size=5),
       answers=st.lists(st.sampled_from(["paid", "returned"]), max_size=5),
       tax_bp=st.integers(0, 2_000), fee_fen=st.integers(0, 1_000))
def test_every_fen_of_a_withdrawal_is_somewhere(db_url, settings, funded_fen, grosses, answers, tax_bp, fee_fen):
    asyncio.run(_withdrawals_example(db_url, settings, funded_fen, grosses, answers, tax_bp, fee_fen))
