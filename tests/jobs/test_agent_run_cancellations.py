"""The run over completions and every kind of cancellation (migration 0052's views):
completions and completion advices shared as originals; refunds, completion voids,
reversals of each, and reversals of a refund (shared again), recorded through the
engine's own SQL (gw_finish) as gateway.acquiring's flows build them."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta
from typing import Any

import pytest

from gateway.acquiring.operations import Completion, CompletionVoid, Preauth, Refund, Reversal, Stamp, TxnKey
from gateway.acquiring.outcomes import Outcome
from gateway.domain.vocabulary import Kind
from gateway.jobs import agent_run
from gateway.reports.agent_earnings import earnings
from ledger.check import check
from ledger.postings import Transfer, basis_points_fen
from tests.jobs.agent_world import DAY, NO_CHARGES, TZ, Network, Recorded, at

NOW = at(DAY + timedelta(days=30))
DAY2, DAY3 = DAY + timedelta(days=1), DAY + timedelta(days=2)
_stans = itertools.count(500)


class Engine:
    """Pre-authorizations, completions, refunds and their cancellations, as the flows record them."""

    def __init__(self, net: Network) -> None:
        self.net, self.db = net, net.db

    def common(self, kind: Kind, tid: str, stan: str, mti_class: str, processing_code: str,
               amount_fen: int) -> dict[str, Any]:
        return {"kind": kind, "key": TxnKey(tid, 1, stan, mti_class), "processing_code": processing_code,
                "content": f"{kind}-{tid}-{stan}-{mti_class}", "amount_fen": amount_fen,
                "card_id": self.net.card["id"], "pin": None,
                "stamp": Stamp(f"{int(stan) + 700000:012d}", "120000", "1102")}

    async def record(self, operation: Any, when: datetime) -> int:
        result = await self.net.finish(operation, when)
        assert result["response"]["outcome"] == Outcome.APPROVED.value, result
        key = operation.key
        return await self.db.fetchval(
            "SELECT id FROM gw_transactions WHERE tid = $1 AND batch = 1 AND stan = $2 AND mti_class = $3",
            key.tid, key.stan, key.mti_class)

    async def merchant(self, tid: str) -> Any:
        return await self.db.fetchrow(
            """SELECT m.mid, m.account_id, m.mdr_bp FROM terminals t JOIN merchants m ON m.mid = t.mid
                WHERE t.tid = $1""", tid)

    async def completion(self, tid: str, amount_fen: int, when: datetime, *, advice: bool = False) -> Recorded:
        """A pre-authorization of the amount, then its completion (0200, or the advice 0220)."""
        merchant, card = await self.merchant(tid), self.net.card
        stan = f"{next(_stans):06d}"
        preauth_id = await self.record(Preauth(
            **self.common(Kind.PREAUTH, tid, stan, "0100", "030000", amount_fen),
            card_account_id=card["account_id"], merchant_account_id=merchant["account_id"], mid=merchant["mid"],
            expires_at=(when + timedelta(days=3650)).isoformat()), when)  # the ledger expires by now()
        auth_code = await self.db.fetchval("SELECT auth_code FROM gw_preauths WHERE txn_id = $1", preauth_id)
        fee_account = await self.db.fetchval("SELECT id FROM ledger_accounts WHERE code = 'system:fee_income'")
        fee = basis_points_fen(amount_fen, merchant["mdr_bp"])
        transfers = (Transfer(card["account_id"], merchant["account_id"], amount_fen - fee, "completion"),
                     Transfer(card["account_id"], fee_account, fee, "completion_fee"))
        stan = f"{next(_stans):06d}"
        mti_class, kind = ("0220", Kind.COMPLETION_ADVICE) if advice else ("0200", Kind.COMPLETION)
        completion_id = await self.record(Completion(
            **self.common(kind, tid, stan, mti_class, "000000", amount_fen), original_id=preauth_id,
            transfers=transfers, amount_max_fen=amount_fen, auth_code=auth_code), when)
        return Recorded(completion_id, tid, 1, stan, amount_fen)

    async def completion_void(self, completion: Recorded, when: datetime) -> Recorded:
        stan = f"{next(_stans):06d}"
        void_id = await self.record(CompletionVoid(
            **self.common(Kind.COMPLETION_VOID, completion.tid, stan, "0200", "200000", completion.amount_fen),
            original_id=completion.id), when)
        return Recorded(void_id, completion.tid, 1, stan, completion.amount_fen)

    async def refund(self, original: Recorded, amount_fen: int, when: datetime) -> Recorded:
        """A refund from the merchant's account (the discount not returned: ``refund_returns_fee`` off)."""
        merchant = await self.merchant(original.tid)
        stan = f"{next(_stans):06d}"
        refund_id = await self.record(Refund(
            **self.common(Kind.REFUND, original.tid, stan, "0220", "200000", amount_fen), original_id=original.id,
            transfers=(Transfer(merchant["account_id"], self.net.card["account_id"], amount_fen, "refund"),)), when)
        return Recorded(refund_id, original.tid, 1, stan, amount_fen)

    async def reverse(self, original: Recorded, processing_code: str, when: datetime, original_class: str = "0200"):
        await self.record(Reversal(**self.common(Kind.REVERSAL, original.tid, original.stan, "0400", processing_code,
                                                 original.amount_fen), original_class=original_class), when)


@pytest.fixture
async def engine(network) -> Engine:
    """CLI.md's worked example: a merchant at 60 bp under B (51 bp) under A (49 bp)."""
    await network.agent("A", cost_bp=49)
    await network.agent("B", "A", cost_bp=51)
    await network.merchant("MERCHANT0000001", "B", 60, "TERM0001")
    return Engine(network)


async def run(db, day):
    """The day's run, with no deposit or service fee: the merchant's balance is the sales' alone."""
    return await agent_run.run(db, day, TZ, now=NOW, settings=NO_CHARGES)


async def profits(db) -> tuple[int, int]:
    return tuple([(await earnings(db, code, DAY, DAY))["profit_fen"] for code in ("B", "A")])


async def assert_ledger_clean(db) -> None:
    report = await check(db)
    assert report.ok, report.problems


async def test_completions_and_completion_advices_are_shared_as_originals(db, engine):
    await engine.completion("TERM0001", 1_000_000, at(DAY))
    await engine.completion("TERM0001", 500_000, at(DAY), advice=True)
    totals = await run(db, DAY)
    assert (totals["discount_fen"], totals["shares_fen"]) == (6000 + 3000, 1100 + 550)
    assert totals["house_fen"] == 9000 - 1650
    assert await profits(db) == (900 + 450, 200 + 100)
    await assert_ledger_clean(db)


async def test_a_refund_the_day_after_claws_back_pro_rata_and_its_reversal_shares_again(db, engine):
    sale = await engine.net.purchase("TERM0001", 1_000_000, at(DAY))
    await run(db, DAY)
    first = await engine.refund(sale, 250_000, at(DAY2))        # a quarter: 225 and 50
    assert (await run(db, DAY2))["clawbacks_fen"] == 225 + 50
    assert await profits(db) == (675, 150)
    await engine.refund(sale, 333_333, at(DAY3))                # cumulative 583,333: floor(900 x .583333) = 524
    await engine.reverse(first, "200000", at(DAY3), original_class="0220")  # the first refund undone: 333,333 left
    day3 = await run(db, DAY3)
    assert day3["clawbacks_fen"] == (299 + 66) - (225 + 50)      # net: floor(900/200 x 333,333 / 1,000,000)
    assert await profits(db) == (900 - 299, 200 - 66)
    rows = (await earnings(db, "B", DAY, DAY3))["rows"]
    assert [(r["date"], r["source"], r["volume_fen"], r["amount_fen"]) for r in rows] == [
        (DAY.isoformat(), "share", 1_000_000, 900),
        (DAY2.isoformat(), "clawback", -250_000, -225),
        (DAY3.isoformat(), "clawback", -333_333, -299),      # floor(900 x 583,333 / 1,000,000) - 225
        (DAY3.isoformat(), "clawback", 250_000, 225)]        # the refund reversed: shared again
    await assert_ledger_clean(db)


async def test_a_completion_void_and_a_completion_reversal_claw_back_and_a_void_reversal_shares_again(db, engine):
    voided = await engine.completion("TERM0001", 1_000_000, at(DAY))
    reversed_one = await engine.completion("TERM0001", 200_000, at(DAY))
    await run(db, DAY)
    assert await profits(db) == (900 + 180, 200 + 40)
    void = await engine.completion_void(voided, at(DAY2))
    await engine.reverse(reversed_one, "000000", at(DAY2))
    assert (await run(db, DAY2))["clawbacks_fen"] == 1100 + 220
    assert await profits(db) == (0, 0)
    await engine.reverse(void, "200000", at(DAY3))              # the completion stands again
    assert (await run(db, DAY3))["clawbacks_fen"] == -1100
    assert await profits(db) == (900, 200)
    await assert_ledger_clean(db)


async def test_a_refund_of_a_completion_claws_back_its_shares(db, engine):
    completion = await engine.completion("TERM0001", 1_000_000, at(DAY))
    await run(db, DAY)
    await engine.refund(completion, 900_000, at(DAY2))          # (the merchant holds 994,000)
    assert (await run(db, DAY2))["clawbacks_fen"] == 810 + 180
    assert await profits(db) == (90, 20)
    await assert_ledger_clean(db)
