"""Fixtures of the agent network's tests: a hierarchy built through the CLI, and
transactions recorded through the engine's own SQL (gw_finish, with the transfers
gateway.acquiring.card_flows builds), dated to the local day a test chooses."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from gateway.acquiring.operations import Declined, Operation, Purchase, Reversal, Stamp, TxnKey, Void
from gateway.acquiring.outcomes import Outcome
from gateway.domain.demo import demo_pan
from gateway.domain.policies import set_policy
from gateway.domain.vocabulary import Kind
from gateway.settings import Settings
from ledger.accounts import FEE_INCOME_ACCOUNT_CODE
from ledger.postings import Transfer, basis_points_fen

TZ = ZoneInfo("Asia/Shanghai")
DAY = date(2026, 11, 2)  # a past local day: runs of it are final
TMK = "0123456789ABCDEFFEDCBA9876543210"
# The run's settings for tests of shares and clawbacks: no deposit, no service fee (tests/jobs/test_agent_events.py
# has those).
NO_CHARGES = Settings(deposit_fen=0, service_fee_fen=0)


def at(day: date, hour: int = 12, minute: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute), TZ)


@dataclass
class Recorded:
    id: int
    tid: str
    batch: int
    stan: str
    amount_fen: int


@dataclass
class Network:
    """Agents, merchants and terminals, and transactions recorded the way the engine records them."""

    cli: Any
    db: asyncpg.Connection
    card: asyncpg.Record | None = None
    stans: itertools.count = field(default_factory=lambda: itertools.count(1))

    async def ok(self, *argv: str) -> None:
        result = await self.cli(*argv)
        assert result.code == 0, (argv, result.stderr)

    async def agent(self, code: str, parent: str | None = None, policy_from: date | None = None,
                    **policy: int) -> None:
        await self.ok("agent", "add", code, "--name", f"Agent {code}", *(("--parent", parent) if parent else ()))
        if policy:
            await set_policy(self.db, code, policy, policy_from or DAY - timedelta(days=1), "test")

    async def merchant(self, mid: str, agent: str, mdr_bp: int, tid: str) -> None:
        await self.ok("merchant", "add", mid, "--name", f"Shop {mid}", "--agent", agent, "--mdr-bp", str(mdr_bp))
        await self.ok("terminal", "add", tid, "--merchant", mid, "--tmk", TMK)

    async def funded_card(self, balance_yuan: int = 10_000_000) -> None:
        await self.ok("card", "issue", demo_pan(1), "--pin", "1234", "--expiry", "3012",
                      "--balance", str(balance_yuan))
        self.card = await self.db.fetchrow("SELECT id, account_id FROM cards ORDER BY id DESC LIMIT 1")

    async def finish(self, operation: Operation, when: datetime) -> dict[str, Any]:
        """Record ``operation`` as the engine does (gw_finish, its typed payload), dated ``when``."""
        result = json.loads(await self.db.fetchval("SELECT gw_finish($1::jsonb)", json.dumps(operation.as_json())))
        assert result["status"] == "new", result
        key = operation.key
        await self.db.execute(
            """UPDATE gw_transactions SET created_at = $1
                WHERE tid = $2 AND batch = $3 AND stan = $4 AND mti_class = $5""",
            when, key.tid, key.batch, key.stan, key.mti_class)
        return result

    async def _id(self, tid: str, stan: str, mti_class: str) -> int:
        return await self.db.fetchval(
            "SELECT id FROM gw_transactions WHERE tid = $1 AND batch = 1 AND stan = $2 AND mti_class = $3",
            tid, stan, mti_class)

    async def purchase(self, tid: str, amount_fen: int, when: datetime) -> Recorded:
        """An approved purchase, its transfers as card_flows.finish_purchase builds them."""
        assert self.card is not None
        merchant = await self.db.fetchrow(
            "SELECT m.account_id, m.mdr_bp FROM terminals t JOIN merchants m ON m.mid = t.mid WHERE t.tid = $1", tid)
        fee_account = await self.db.fetchval("SELECT id FROM ledger_accounts WHERE code = $1",
                                             FEE_INCOME_ACCOUNT_CODE)
        fee = basis_points_fen(amount_fen, merchant["mdr_bp"])
        transfers = (Transfer(self.card["account_id"], merchant["account_id"], amount_fen - fee, "purchase"),
                     Transfer(self.card["account_id"], fee_account, fee, "purchase_fee"))
        stan = f"{next(self.stans):06d}"
        result = await self.finish(Purchase(**self._common(Kind.PURCHASE, tid, stan, "0200", "000000", amount_fen),
                                            transfers=tuple(t for t in transfers if t.amount_fen > 0)), when)
        assert result["response"]["outcome"] == Outcome.APPROVED.value, result
        return Recorded(await self._id(tid, stan, "0200"), tid, 1, stan, amount_fen)

    async def declined_purchase(self, tid: str, stan: str, amount_fen: int, when: datetime) -> None:
        """A purchase declined 51 (insufficient funds), recorded as the engine records declines."""
        result = await self.finish(Declined(**self._common(Kind.PURCHASE, tid, stan, "0200", "000000", amount_fen),
                                            outcome=Outcome.INSUFFICIENT_FUNDS), when)
        assert result["response"]["outcome"] == Outcome.INSUFFICIENT_FUNDS.value, result

    async def void(self, original: Recorded, when: datetime) -> Recorded:
        stan = f"{next(self.stans):06d}"
        result = await self.finish(Void(**self._common(Kind.VOID, original.tid, stan, "0200", "200000",
                                                       original.amount_fen), original_id=original.id), when)
        assert result["response"]["outcome"] == Outcome.APPROVED.value, result
        return Recorded(await self._id(original.tid, stan, "0200"), original.tid, 1, stan, original.amount_fen)

    async def reverse(self, original: Recorded, processing_code: str, when: datetime) -> None:
        """The reversal of a purchase (processing code 000000) or of a void (200000)."""
        result = await self.finish(Reversal(**self._common(Kind.REVERSAL, original.tid, original.stan, "0400",
                                                           processing_code, original.amount_fen)), when)
        assert result["response"]["outcome"] == Outcome.APPROVED.value, result

    def _common(self, kind: Kind, tid: str, stan: str, mti_class: str, processing_code: str,
                amount_fen: int) -> dict[str, Any]:
        return {"kind": kind, "key": TxnKey(tid, 1, stan, mti_class), "processing_code": processing_code,
                "content": f"{kind}-{tid}-{stan}", "amount_fen": amount_fen,
                "card_id": self.card["id"] if self.card else None, "pin": None,
                "stamp": Stamp(f"{int(stan) + 500000:012d}", "120000", "1102")}


@pytest.fixture
async def network(cli, db) -> Network:
    net = Network(cli, db)
    await net.funded_card()
    return net
