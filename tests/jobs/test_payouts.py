"""The payout run, its files, the bank's answer (CLI.md "Money out", issue 25)."""

from __future__ import annotations

import asyncio
import signal
import sys
from datetime import timedelta

import asyncpg
import pytest

from gateway.domain import banking
from gateway.domain.validate import InvalidInput
from gateway.jobs import payouts
from gateway.jobs.payouts import BANK_ACCOUNT_CODE, CLEARING_ACCOUNT_CODE
from gateway.upstream import bank_files
from sim import bank
from tests.jobs.payout_world import Book, account_number, mid


async def transfer_count(book: Book) -> int:
    return await book.db.fetchval("SELECT count(*) FROM ledger_transfers")


async def statuses(book: Book) -> dict[str, str]:
    return dict(await book.db.fetch("SELECT beneficiary, status FROM payouts ORDER BY id"))


# -- the run -----------------------------------------------------------------------------------


async def test_a_days_run_pays_merchants_with_bank_details_and_lists_those_it_skips(book: Book):
    await book.merchant(1, 12_345)
    await book.merchant(2, 5_000, bank=False)  # no bank details: kept, listed
    await book.merchant(3, 99)  # below payout_min_fen (100): kept, not listed
    await book.merchant(4, 3_000)
    await book.db.execute("UPDATE merchants SET status = 'frozen' WHERE mid = $1", mid(4))
    await book.merchant(5, 100)  # exactly the minimum: paid
    await book.merchant(6)  # nothing

    result = await book.run()

    assert result == {"date": book.day.isoformat(), "count": 2, "total_fen": 12_445, "skipped": [
        {"beneficiary_kind": "merchant", "beneficiary": mid(2), "reason": "no_bank_details", "balance_fen": 5_000},
        {"beneficiary_kind": "merchant", "beneficiary": mid(4), "reason": "frozen", "balance_fen": 3_000},
    ]}
    assert [await book.balance(n) for n in range(1, 7)] == [0, 5_000, 99, 3_000, 0, 0]
    assert await book.system_balance(CLEARING_ACCOUNT_CODE) == 12_445
    listed = (await payouts.list_payouts(book.db, book.day))["payouts"]
    assert [(p["beneficiary"], p["amount_fen"], p["status"], p["bank_account_masked"]) for p in listed] == [
        (mid(1), 12_345, "pending", "*" + account_number(1)[-4:]),
        (mid(5), 100, "pending", "*" + account_number(5)[-4:])]
    assert listed[0]["date"] == book.day.isoformat() and listed[0]["beneficiary_kind"] == "merchant"
    await book.assert_books_exact()

    # The next day: what was kept is paid once it can be; a merchant paid yesterday gets its new money only.
    await banking.set_bank_details(book.db, book.hsm, "merchant", mid(2), bank_account_number=account_number(2),
                                   bank_name="Bank of Example", account_name="Shop 2 Ltd")
    await book.credit(3, 1)
    await book.credit(1, 700)
    next_day = book.day + timedelta(days=1)
    result = await book.run(next_day)
    assert (result["count"], result["total_fen"], result["skipped"][0]["beneficiary"]) == (3, 5_800, mid(4))
    paid = (await payouts.list_payouts(book.db, next_day))["payouts"]
    assert sorted((p["beneficiary"], p["amount_fen"]) for p in paid) == [(mid(1), 700), (mid(2), 5_000), (mid(3), 100)]
    await book.assert_books_exact()


async def test_a_rerun_changes_nothing_and_says_the_same(book: Book):
    await book.merchant(1, 2_500)
    await book.merchant(2, 4_000, bank=False)
    first = await book.run()
    transfers = await transfer_count(book)
    await book.credit(1, 999)  # money arriving after the run: for the next date, not this one again
    await book.set_bank(2)
    assert await book.run() == first
    assert await transfer_count(book) == transfers + 1  # the credit above, nothing else
    assert await book.db.fetchval("SELECT count(*) FROM payouts") == 1
    await book.assert_books_exact()


async def test_a_day_not_over_is_refused(book: Book):
    await book.merchant(1, 2_500)
    with pytest.raises(InvalidInput, match="not over"):
        await payouts.run_payouts(book.db, book.settings, book.day, now=book.after(hours=-2))
    with pytest.raises(InvalidInput, match="not over"):
        await payouts.run_payouts(book.db, book.settings, book.day)  # the real clock: today is today
    assert await book.db.fetchval("SELECT count(*) FROM payouts") == 0


async def test_the_balance_at_the_end_of_the_day_leaves_out_what_came_later(book: Book):
    """Yesterday's run pays yesterday's money; today's, once today is over, the rest."""
    yesterday = book.day - timedelta(days=1)
    await book.merchant(1)
    await book.credit(1, 1_000)
    await book.db.execute("UPDATE ledger_transfers SET created_at = $1", payouts.day_end(yesterday, book.settings.tz)
                          - timedelta(minutes=1))
    await book.credit(1, 500)  # today
    await book.credit(1, 30, code="refund_test")
    assert (await book.run(yesterday))["total_fen"] == 1_000
    assert await book.balance(1) == 530
    assert (await book.run(book.day))["total_fen"] == 530
    await book.assert_books_exact()


async def test_a_debit_after_the_day_caps_the_payout_at_the_balance(book: Book):
    yesterday = book.day - timedelta(days=1)
    await book.merchant(1, 1_000)
    await book.db.execute("UPDATE ledger_transfers SET created_at = created_at - interval '2 days'")
    merchant = await book.db.fetchval("SELECT account_id FROM merchants WHERE mid = $1", mid(1))
    cash = await book.db.fetchval("SELECT id FROM ledger_accounts WHERE code = 'system:cash'")
    await book.db.execute("SELECT ledger_post('test:debit', $1::jsonb)",
                          f'[{{"debit": {merchant}, "credit": {cash}, "amount": 400, "code": "void"}}]')
    assert (await book.run(yesterday))["total_fen"] == 600
    assert await book.balance(1) == 0
    await book.assert_books_exact()


async def test_two_runs_at_once_pay_once(book: Book, db_url: str):
    for n in range(1, 6):
        await book.merchant(n, 1_000 * n)
    others = [await asyncpg.connect(db_url) for _ in range(3)]
    try:
        results = await asyncio.gather(*(payouts.run_payouts(conn, book.settings, book.day, now=book.after())
                                         for conn in others))
    finally:
        for conn in others:
            await conn.close()
    assert all(result == results[0] for result in results)
    assert (results[0]["count"], results[0]["total_fen"]) == (5, 15_000)
    assert await book.db.fetchval("SELECT count(*) FROM payouts") == 5
    await book.assert_books_exact()


async def test_more_payouts_than_one_ledger_call_takes_are_run_and_confirmed_whole(book: Book):
    count = 2 * payouts.POSTINGS_PER_CALL + 7
    for n in range(1, count + 1):
        await book.merchant(n, 100 + n)
    result = await book.run()
    assert (result["count"], result["total_fen"]) == (count, sum(100 + n for n in range(1, count + 1)))
    pain001 = await payouts.payout_file(book.db, book.hsm, book.settings, book.day, "pain001")
    rejected = range(1, count + 1, 3)  # merchants 1, 4, 7, ...
    answer = bank.answer(pain001, {account_number(n) for n in rejected})
    confirmed = await payouts.confirm_payouts(book.db, answer)
    assert (confirmed["paid"], confirmed["returned"]) == (count - len(rejected), len(rejected))
    assert [await book.balance(n) for n in (1, 2, 3, 4, count)] == [101, 0, 0, 104, 0]
    await book.assert_books_exact()


# -- a crash half-way --------------------------------------------------------------------------


async def test_an_exception_half_way_leaves_nothing_and_the_rerun_pays_each_merchant_once(book: Book, monkeypatch):
    for n in range(1, 4):
        await book.merchant(n, 1_000 + n)
    before = await transfer_count(book)
    real_post_many = payouts.post_many

    async def post_then_fail(conn, postings):
        await real_post_many(conn, postings)  # the money moved, the payouts written...
        raise RuntimeError("injected: crash before the run is recorded")

    monkeypatch.setattr(payouts, "post_many", post_then_fail)
    with pytest.raises(RuntimeError, match="injected"):
        await book.run()
    assert await transfer_count(book) == before
    assert await book.db.fetchval("SELECT count(*) FROM payouts") == 0
    assert await book.system_balance(CLEARING_ACCOUNT_CODE) == 0

    monkeypatch.undo()
    assert (await book.run())["total_fen"] == 3_006
    assert await book.run() == await book.run()
    assert await book.db.fetchval("SELECT count(DISTINCT beneficiary) = count(*) FROM payouts")
    assert await book.system_balance(CLEARING_ACCOUNT_CODE) == 3_006
    await book.assert_books_exact()


async def test_a_connection_killed_half_way_leaves_nothing_and_the_rerun_pays_each_merchant_once(
        book: Book, db_url: str, monkeypatch):
    for n in range(1, 4):
        await book.merchant(n, 2_000 + n)
    victim = await asyncpg.connect(db_url)
    real_post_many = payouts.post_many

    async def post_then_die(conn, postings):
        results = await real_post_many(conn, postings)
        await book.db.execute("SELECT pg_terminate_backend($1)", conn.get_server_pid())
        return results

    monkeypatch.setattr(payouts, "post_many", post_then_die)
    with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, ConnectionError, OSError)):
        await payouts.run_payouts(victim, book.settings, book.day, now=book.after())
    monkeypatch.undo()
    assert await book.db.fetchval("SELECT count(*) FROM payouts") == 0
    assert await book.system_balance(CLEARING_ACCOUNT_CODE) == 0

    result = await book.run()
    assert (result["count"], result["total_fen"]) == (3, 6_006)
    assert [await book.balance(n) for n in range(1, 4)] == [0, 0, 0]
    await book.assert_books_exact()


# A payout run in another process that stops, its money posted and its payouts written, before it commits.
STALLING_RUN = """
import asyncio, sys
from datetime import date, datetime
import asyncpg
from gateway.jobs import payouts
from gateway.settings import Settings

async def main(url, day, now):
    conn = await asyncpg.connect(url)
    real_post_many = payouts.post_many

    async def post_then_stall(c, postings):
        results = await real_post_many(c, postings)
        print("posted", len(postings), flush=True)
        await asyncio.sleep(60)
        return results

    payouts.post_many = post_then_stall
    await payouts.run_payouts(conn, Settings(), date.fromisoformat(day), now=datetime.fromisoformat(now))

asyncio.run(main(*sys.argv[1:]))
"""


async def test_a_run_killed_half_way_leaves_nothing_and_the_rerun_pays_each_merchant_once(book: Book, db_url: str):
    for n in range(1, 5):
        await book.merchant(n, 3_000 + n)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", STALLING_RUN, db_url, book.day.isoformat(), book.after().isoformat(),
        stdout=asyncio.subprocess.PIPE)
    try:
        async with asyncio.timeout(30):
            assert await proc.stdout.readline() == b"posted 4\n"
    finally:
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    assert proc.returncode == -signal.SIGKILL

    async with asyncio.timeout(30):  # the killed run's transaction ends with its connection; nothing of it stays
        result = await book.run()
    assert (result["count"], result["total_fen"]) == (4, 12_010)
    assert await book.db.fetchval("SELECT count(*) FROM ledger_transfers WHERE code = 'payout'") == 4
    assert [await book.balance(n) for n in range(1, 5)] == [0, 0, 0, 0]
    assert await book.system_balance(CLEARING_ACCOUNT_CODE) == 12_010
    await book.assert_books_exact()


# -- files -------------------------------------------------------------------------------------


async def test_the_files_are_valid_and_the_same_bytes_when_made_again(book: Book):
    await book.merchant(1, 123_456)
    await book.merchant(2, 100)
    await book.run()
    ids = [p["id"] for p in (await payouts.list_payouts(book.db))["payouts"]]
    first_csv = await payouts.payout_file(book.db, book.hsm, book.settings, book.day, "csv")
    first_xml = await payouts.payout_file(book.db, book.hsm, book.settings, book.day, "pain001")
    bank_files.validate(first_xml, bank_files.PAIN001_SCHEMA)
    assert first_csv.decode().splitlines() == [
        ",".join(bank_files.CSV_COLUMNS),
        f"{ids[0]},merchant,{mid(1)},Shop 1 Ltd,Bank of Example,{account_number(1)},123456,"
        f"posgw payout {book.day.isoformat()} #{ids[0]}",
        f"{ids[1]},merchant,{mid(2)},Shop 2 Ltd,Bank of Example,{account_number(2)},100,"
        f"posgw payout {book.day.isoformat()} #{ids[1]}",
    ]
    assert b"<InstdAmt Ccy=\"CNY\">1234.56</InstdAmt>" in first_xml
    assert f"<EndToEndId>{ids[0]}</EndToEndId>".encode() in first_xml
    assert f"<MsgId>POSGW-PAYOUTS-{book.day:%Y%m%d}</MsgId>".encode() in first_xml

    # The bank answers, a merchant changes its bank details: the day's files stay the same bytes.
    await payouts.confirm_payouts(book.db, f"payout_id,status,reason\n{ids[0]},paid,\n".encode())
    await book.set_bank(2, version=2)
    assert await payouts.payout_file(book.db, book.hsm, book.settings, book.day, "csv") == first_csv
    assert await payouts.payout_file(book.db, book.hsm, book.settings, book.day, "pain001") == first_xml


async def test_a_day_without_payouts_has_a_header_only_csv_and_no_pain001(book: Book):
    await book.merchant(1, 50)
    await book.run()
    assert await payouts.payout_file(book.db, book.hsm, book.settings, book.day, "csv") == \
        (",".join(bank_files.CSV_COLUMNS) + "\n").encode()
    with pytest.raises(payouts.PayoutError, match="no payouts"):
        await payouts.payout_file(book.db, book.hsm, book.settings, book.day, "pain001")
    with pytest.raises(InvalidInput, match="--format"):
        await payouts.payout_file(book.db, book.hsm, book.settings, book.day, "mt101")


# -- the bank's answer -------------------------------------------------------------------------


async def test_a_pain002_with_paid_returned_and_unknown_ids_gives_exactly_those_effects(book: Book):
    for n in range(1, 4):
        await book.merchant(n, 10_000 * n)
    await book.run()
    pain001 = await payouts.payout_file(book.db, book.hsm, book.settings, book.day, "pain001")
    answer = bank.answer(pain001, {account_number(2)})
    bank_files.validate(answer, bank_files.PAIN002_SCHEMA)

    # An id the gateway never sent, in an otherwise good answer: nothing at all is applied.
    unknown = answer.replace(b"</CstmrPmtStsRpt>", b"<OrgnlPmtInfAndSts><OrgnlPmtInfId>X</OrgnlPmtInfId><TxInfAndSts>"
                             b"<OrgnlEndToEndId>999999</OrgnlEndToEndId><TxSts>ACSC</TxSts></TxInfAndSts>"
                             b"</OrgnlPmtInfAndSts></CstmrPmtStsRpt>")
    transfers = await transfer_count(book)
    with pytest.raises(InvalidInput, match="unknown payout id.*999999"):
        await payouts.confirm_payouts(book.db, unknown)
    assert await transfer_count(book) == transfers
    assert set((await statuses(book)).values()) == {"pending"}

    assert await payouts.confirm_payouts(book.db, answer) == {"paid": 2, "returned": 1, "unchanged": 0,
                                                              "conflicts": []}
    assert await statuses(book) == {mid(1): "paid", mid(2): "returned", mid(3): "paid"}
    assert [await book.balance(n) for n in range(1, 4)] == [0, 20_000, 0]
    assert await book.system_balance(CLEARING_ACCOUNT_CODE) == 0
    assert await book.system_balance(BANK_ACCOUNT_CODE) == 40_000
    returned = (await payouts.list_payouts(book.db, status="returned"))["payouts"]
    assert [(p["beneficiary"], p["reason"]) for p in returned] == [(mid(2), "AC04")]
    await book.assert_books_exact()

    # The same answer again changes nothing.
    transfers = await transfer_count(book)
    assert await payouts.confirm_payouts(book.db, answer) == {"paid": 0, "returned": 0, "unchanged": 3,
                                                              "conflicts": []}
    assert await transfer_count(book) == transfers
    summary = await payouts.payout_summary(book.db, book.day)
    assert summary["by_status"] == {"pending": {"count": 0, "amount_fen": 0},
                                    "paid": {"count": 2, "amount_fen": 40_000},
                                    "returned": {"count": 1, "amount_fen": 20_000}}


async def test_after_paid_only_returned_is_allowed(book: Book):
    for n in range(1, 3):
        await book.merchant(n, 1_000 * n)
    await book.run()
    first, second = [p["id"] for p in (await payouts.list_payouts(book.db))["payouts"]]
    assert await payouts.confirm_payouts(book.db, f"payout_id,status,reason\n{first},paid,\n{second},returned,AC01\n"
                                         .encode()) == {"paid": 1, "returned": 1, "unchanged": 0, "conflicts": []}
    # Paid, then returned (the account closed after crediting): the bank gives the money back to its owner.
    later = f"payout_id,status,reason\n{first},returned,AC04 closed\n{second},paid,\n".encode()
    assert await payouts.confirm_payouts(book.db, later) == {"paid": 0, "returned": 1, "unchanged": 1,
                                                             "conflicts": [second]}
    assert await statuses(book) == {mid(1): "returned", mid(2): "returned"}
    assert [await book.balance(n) for n in range(1, 3)] == [1_000, 2_000]
    assert await book.system_balance(BANK_ACCOUNT_CODE) == 0
    await book.assert_books_exact()


async def test_a_payout_paid_and_returned_in_one_file_moves_both_ways(book: Book):
    await book.merchant(1, 1_000)
    await book.run()
    [payout] = (await payouts.list_payouts(book.db))["payouts"]
    assert await payouts.confirm_payouts(
        book.db, f"payout_id,status,reason\n{payout['id']},paid,\n{payout['id']},returned,R\n".encode()) == {
        "paid": 1, "returned": 1, "unchanged": 0, "conflicts": []}
    row = await book.db.fetchrow("SELECT status, paid_at, returned_at, reason FROM payouts")
    assert row["status"] == "returned" and row["paid_at"] is not None and row["returned_at"] is not None
    assert await book.balance(1) == 1_000
    await book.assert_books_exact()


async def test_a_returned_payout_is_paid_again_once_the_bank_details_change(book: Book):
    await book.merchant(1, 8_000)
    await book.run()
    [payout] = (await payouts.list_payouts(book.db))["payouts"]
    await payouts.confirm_payouts(book.db, f"payout_id,status,reason\n{payout['id']},returned,AC01\n".encode())
    await book.credit(1, 500)

    day2, day3 = book.day + timedelta(days=1), book.day + timedelta(days=2)
    result = await book.run(day2)  # not corrected yet: kept, listed
    assert (result["count"], result["skipped"]) == (0, [{"beneficiary_kind": "merchant", "beneficiary": mid(1),
                                                         "reason": "returned_bank_details_unchanged",
                                                         "balance_fen": 8_500}])
    assert (await book.set_bank(1, version=1)).changed is False  # the same details again: not a correction
    assert (await book.set_bank(1, version=2)).changed is True
    result = await book.run(day3)
    assert (result["count"], result["total_fen"], result["skipped"]) == (1, 8_500, [])
    again = (await payouts.list_payouts(book.db, day3))["payouts"][0]
    assert again["id"] != payout["id"] and again["bank_account_masked"] == "*" + account_number(1, 2)[-4:]
    csv = await payouts.payout_file(book.db, book.hsm, book.settings, day3, "csv")
    assert account_number(1, 2).encode() in csv and account_number(1).encode() not in csv
    await book.assert_books_exact()


async def test_a_bad_answer_or_an_unsent_id_applies_nothing(book: Book):
    await book.merchant(1, 1_000)
    await book.run()
    [payout] = (await payouts.list_payouts(book.db))["payouts"]
    with pytest.raises(bank_files.BankFileError):
        await payouts.confirm_payouts(book.db, f"payout_id,status\n{payout['id']},paid\n".encode())
    unsent = await book.db.fetchval(
        """INSERT INTO payouts (beneficiary_kind, beneficiary, account_id, amount_fen, gross_fen, tax_fen, fee_fen,
                                requested_day)
           SELECT 'agent', 'AG01', float_account_id, 500, 500, 0, 0, current_date FROM agents RETURNING id""")
    with pytest.raises(InvalidInput, match="not sent"):
        await payouts.confirm_payouts(book.db, f"payout_id,status,reason\n{payout['id']},paid,\n{unsent},paid,\n"
                                      .encode())
    assert await statuses(book) == {mid(1): "pending", "AG01": "pending"}


# -- bank details ------------------------------------------------------------------------------


async def test_bank_details_are_stored_encrypted_and_shown_masked(book: Book):
    await book.merchant(1, bank=False)
    assert await banking.show_bank_details(book.db, "merchant", mid(1)) is None
    change = await book.set_bank(1)
    assert change.before is None and change.after == {
        "bank_name": "Bank of Example", "account_name": "Shop 1 Ltd",
        "bank_account_masked": "*" + account_number(1)[-4:]}
    assert await banking.show_bank_details(book.db, "merchant", mid(1)) == change.after
    row = await book.db.fetchrow("SELECT * FROM bank_details")
    stored = b"".join(bytes(v) if isinstance(v, (bytes, memoryview)) else str(v).encode() for v in row.values())
    assert account_number(1).encode() not in stored and bytes.fromhex("0" + account_number(1)) not in stored
    assert book.hsm.decrypt_pan(row["bank_account_lmk"]) == account_number(1)

    # Another number ending in the same 4 digits is a change (and a new version) although its view is the same.
    same_end = await banking.set_bank_details(book.db, book.hsm, "merchant", mid(1),
                                              bank_account_number="9" + account_number(1)[1:],
                                              bank_name="Bank of Example", account_name="Shop 1 Ltd")
    assert same_end.changed and same_end.before == same_end.after
    assert await book.db.fetchval("SELECT version FROM bank_details") == 2


@pytest.mark.parametrize("kind, who, number, message", [
    ("merchant", mid(9), "6222020200112233", "unknown merchant"),
    ("agent", "NOBODY", "6222020200112233", "unknown agent"),
    ("merchant", mid(1), "62220202-0011", "8 to 30 digits"),
    ("merchant", mid(1), "1234567", "8 to 30 digits"),
    ("merchant", mid(1), "1" * 31, "8 to 30 digits"),
])
async def test_bad_bank_details_are_refused_without_echoing_the_number(book: Book, kind, who, number, message):
    await book.merchant(1, bank=False)
    with pytest.raises(InvalidInput, match=message) as raised:
        await banking.set_bank_details(book.db, book.hsm, kind, who, bank_account_number=number,
                                       bank_name="B", account_name="A")
    assert number not in str(raised.value)
    assert await book.db.fetchval("SELECT count(*) FROM bank_details") == 0
