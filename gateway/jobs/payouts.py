"""Money out (T+1): the payout run, its bank files, the bank's answer, the list
and the clearing account's check (CLI.md "Money out" and "Rules of the version
2 commands", Payouts).

The money's way, in the ledger:

    owner's account ──payout──▶ payout clearing ──payout_paid──▶ bank (the outside world)
          ▲                           │                            │
          └───────payout_return───────┴────────payout_return───────┘  (returned; after paid, too)

- **The run** of a local day D (D over) makes one payout per merchant whose
  balance at the end of D, less what later payouts already took, is at least
  ``payout_min_fen``; frozen merchants, merchants without bank details and
  merchants whose last payout was returned to the details they still have
  are skipped and listed. Once per date: one transaction under an advisory
  lock, a unique (date, merchant) key, ledger postings keyed by payout id,
  and a row in ``payout_runs`` that makes a rerun print the first result.
- **Balance at the end of D** = today's balance − the movements since the end
  of D that are not payouts: what a payout or its return did counts whenever
  it happened (a payout takes what it pays, a return gives it back, to be
  paid again), so days run late, out of order or skipped are still paid
  exactly once. It reads only the transfers since the end of D (an index),
  and is capped at today's balance (a debit since then).
- **Agent withdrawals** (gateway.services.withdrawals) are payouts made at
  once, their net already in the clearing account, without a date: the run
  sends every one not yet sent (the agent's bank details copied), skipping
  and listing those of frozen agents; it moves no money for them.
- **The bank's answer** moves each payout on: pending → paid or returned,
  paid → returned; anything else changes nothing. An unknown payout id
  applies nothing at all. A returned withdrawal gives its gross back to the
  agent's profit balance: the net from where it is, the tax and the fee from
  the house's accounts.
- **The command** (``run``, ``confirm``): ``payout run --date D`` first runs
  D's agent run if no final one has (CLI.md, Payouts), then the payout run;
  each is audited by gateway.services.payouts, in the same transaction.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from datetime import time as clock_time
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import orjson

from gateway.domain.banking import mask_bank_account
from gateway.domain.payouts import (
    BANK_ACCOUNT_CODE,
    CLEARING_ACCOUNT_CODE,
    OWNER_PAYOUT_CODES,
    PAID,
    PAID_CODE,
    PAYOUT_CODE,
    PENDING,
    RETURN_CODE,
    RETURNED,
    STATUSES,
    TAX_ACCOUNT_CODE,
    WITHDRAWAL_FEE_RETURN_CODE,
    WITHDRAWAL_TAX_RETURN_CODE,
    system_account,
)
from gateway.domain.validate import InvalidInput
from gateway.jobs import agent_run
from gateway.keys import SoftHsm
from gateway.services import payouts as payout_audit
from gateway.settings import Settings
from gateway.upstream import bank_files
from gateway.upstream.bank_files import Payer, PayoutLine
from ledger.accounts import FEE_INCOME_ACCOUNT_CODE, account_id, balance_fen
from ledger.postings import PostResult, Transfer, post_many

FORMATS = ("csv", "pain001")
# ledger_post_many's time grows faster than its batch (every posting of a confirmation
# debits the guarded clearing account, which it then checks posting by posting).
# 5,000 payouts, measured: run 8.2 s and confirm 56 s in one call each; in calls
# of 100, 1.0 s and 2.8 s.
POSTINGS_PER_CALL = 100
_RUN_LOCK_KEY = 0x706F7570  # pg advisory lock: one payout run or confirmation at a time, across gateways

# Why a merchant with enough balance was not paid (the run's `skipped`).
SKIP_FROZEN = "frozen"
SKIP_NO_BANK_DETAILS = "no_bank_details"
SKIP_RETURNED = "returned_bank_details_unchanged"


class PayoutError(Exception):
    """The command ran and found a problem (the CLI exits 1): e.g. a pain.001 with no payouts."""


# -- time ----------------------------------------------------------------------------------------


def now_utc(settings: Settings) -> datetime:
    """This process's clock, shifted by ``clock_offset_s`` (CLI.md, Time)."""
    return settings.now()


def day_end(day: date, tz: ZoneInfo) -> datetime:
    """The first instant after local day ``day``."""
    return datetime.combine(day + timedelta(days=1), clock_time(0), tz)


def check_day_over(day: date, settings: Settings, now: datetime | None = None) -> None:
    """A payout run pays a day once it is over (local day of ``timezone``)."""
    now = now if now is not None else now_utc(settings)
    if now < day_end(day, settings.tz):
        raise InvalidInput(f"{day.isoformat()} is not over yet (timezone {settings.timezone})")


# -- the run -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Candidate:
    mid: str
    account_id: int
    amount_fen: int
    skip: str | None
    row: asyncpg.Record


_CANDIDATES = """
WITH later AS (
    SELECT account_id, sum(net)::bigint AS net FROM (
        SELECT credit_account_id AS account_id, amount AS net, posting_id FROM ledger_transfers
         WHERE created_at >= $1 AND code <> ALL ($2::text[])
        UNION ALL
        SELECT debit_account_id, -amount, posting_id FROM ledger_transfers
         WHERE created_at >= $1 AND code <> ALL ($2::text[])) movements
     -- the agent runs of D and earlier post after D has ended, but their deposits and fees are D's
     WHERE NOT EXISTS (
         SELECT 1 FROM ledger_postings p
           JOIN agent_runs r ON r.id = CASE WHEN p.idempotency_key LIKE 'agent-events:%'
                                            THEN split_part(p.idempotency_key, ':', 2)::bigint END
          WHERE p.id = movements.posting_id AND r.day <= $4)
     GROUP BY account_id)
SELECT m.mid, m.status, m.account_id,
       least(a.credits_posted - a.debits_posted,
             a.credits_posted - a.debits_posted - coalesce(l.net, 0)) AS amount_fen,
       b.account_name, b.bank_name, b.bank_account_lmk, b.bank_account_last4, b.version,
       EXISTS (SELECT 1 FROM payouts r
                WHERE r.beneficiary_kind = 'merchant' AND r.beneficiary = m.mid
                  AND r.status = 'returned' AND r.bank_version = b.version) AS returned_unchanged
  FROM merchants m
  JOIN ledger_accounts a ON a.id = m.account_id
  LEFT JOIN later l ON l.account_id = m.account_id
  LEFT JOIN bank_details b ON b.beneficiary_kind = 'merchant' AND b.beneficiary = m.mid
 WHERE a.credits_posted - a.debits_posted >= greatest($3, 1)
 ORDER BY m.mid
"""


def _skip_reason(row: asyncpg.Record) -> str | None:
    if row["status"] != "active":
        return SKIP_FROZEN
    if row["bank_account_lmk"] is None:
        return SKIP_NO_BANK_DETAILS
    if row["returned_unchanged"]:
        return SKIP_RETURNED
    return None


async def _candidates(conn: asyncpg.Connection, day: date, day_end_at: datetime, minimum_fen: int) -> list[_Candidate]:
    """Each merchant's balance at the end of ``day``: its balance now less what moved after the
    day ended (payouts aside), the agent runs' deposits and fees of ``day`` and earlier counting
    as the day's although posted after it; never more than its balance now."""
    rows = await conn.fetch(_CANDIDATES, day_end_at, list(OWNER_PAYOUT_CODES), minimum_fen, day)
    return [_Candidate(row["mid"], row["account_id"], row["amount_fen"], _skip_reason(row), row)
            for row in rows if row["amount_fen"] >= max(minimum_fen, 1)]


_UNSENT_WITHDRAWALS = """
SELECT p.id, p.beneficiary, p.amount_fen, a.status, b.account_name, b.bank_name, b.bank_account_lmk,
       b.bank_account_last4, b.version
  FROM payouts p
  JOIN agents a ON a.code = p.beneficiary
  LEFT JOIN bank_details b ON b.beneficiary_kind = 'agent' AND b.beneficiary = p.beneficiary
 WHERE p.payout_date IS NULL AND p.beneficiary_kind = 'agent' AND p.status = 'pending'
 ORDER BY p.id
   FOR UPDATE OF p
"""


async def _send_withdrawals(conn: asyncpg.Connection, day: date) -> list[dict[str, Any]]:
    """Give every agent withdrawal not yet sent the date ``day`` and its agent's bank details
    (their net is in the clearing account already); return those skipped (a frozen agent's)."""
    rows = await conn.fetch(_UNSENT_WITHDRAWALS)
    reasons = {row["id"]: (SKIP_FROZEN if row["status"] != "active" else
                           SKIP_NO_BANK_DETAILS if row["bank_account_lmk"] is None else None) for row in rows}
    sending = [row for row in rows if reasons[row["id"]] is None]
    if sending:
        await conn.execute(
            """UPDATE payouts p
                  SET payout_date = $1, sent_at = now(), account_name = b.account_name, bank_name = b.bank_name,
                      bank_account_lmk = b.bank_account_lmk, bank_account_last4 = b.bank_account_last4,
                      bank_version = b.version
                 FROM bank_details b
                WHERE p.id = ANY ($2::bigint[]) AND b.beneficiary_kind = 'agent' AND b.beneficiary = p.beneficiary""",
            day, [row["id"] for row in sending])
    return [{"beneficiary_kind": "agent", "beneficiary": row["beneficiary"], "reason": reasons[row["id"]],
             "balance_fen": row["amount_fen"]} for row in rows if reasons[row["id"]] is not None]


async def _post_all(conn: asyncpg.Connection, postings: list[tuple[str, list[Transfer]]], what: str) -> None:
    """Post every posting (in calls of ``POSTINGS_PER_CALL``), or raise: the caller's
    transaction then rolls back, and nothing of it stays."""
    for start in range(0, len(postings), POSTINGS_PER_CALL):
        results = await post_many(conn, postings[start:start + POSTINGS_PER_CALL])
        failed = [result for result in results if result not in (PostResult.OK, PostResult.EXISTS)]
        if failed:
            raise RuntimeError(f"{what}: {len(failed)} posting(s) failed ({', '.join(sorted(set(failed)))})")


async def _run_result(conn: asyncpg.Connection, day: date) -> dict[str, Any] | None:
    row = await conn.fetchrow("SELECT * FROM payout_runs WHERE payout_date = $1", day)
    if row is None:
        return None
    return {"date": day.isoformat(), "count": row["payouts"], "total_fen": row["total_fen"],
            "skipped": orjson.loads(row["skipped"])}


async def run_payouts(conn: asyncpg.Connection, settings: Settings, day: date, *,
                      now: datetime | None = None) -> dict[str, Any]:
    """``posgw payout run --date D``: ``date``, ``count``, ``total_fen``, ``skipped``
    (``beneficiary_kind``, ``beneficiary``, ``reason``, ``balance_fen``). D not
    over: ``InvalidInput`` (exit 2). A rerun returns the first run's result and
    changes nothing; a run that fails half-way leaves nothing behind."""
    check_day_over(day, settings, now)
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _RUN_LOCK_KEY)
        done = await _run_result(conn, day)
        if done is not None:
            return done
        clearing = await system_account(conn, CLEARING_ACCOUNT_CODE)
        candidates = await _candidates(conn, day, day_end(day, settings.tz), settings.payout_min_fen)
        paying = [c for c in candidates if c.skip is None]
        skipped = [{"beneficiary_kind": "merchant", "beneficiary": c.mid, "reason": c.skip,
                    "balance_fen": c.amount_fen} for c in candidates if c.skip is not None]
        created = await conn.fetch(
            """INSERT INTO payouts (payout_date, beneficiary_kind, beneficiary, account_id, amount_fen,
                                    account_name, bank_name, bank_account_lmk, bank_account_last4,
                                    bank_version, sent_at)
               SELECT $1, 'merchant', p.mid, p.account_id, p.amount_fen, p.account_name, p.bank_name,
                      p.bank_account_lmk, p.bank_account_last4, p.version, now()
                 FROM unnest($2::text[], $3::bigint[], $4::bigint[], $5::text[], $6::text[], $7::bytea[],
                             $8::text[], $9::int[])
                      AS p (mid, account_id, amount_fen, account_name, bank_name, bank_account_lmk,
                            bank_account_last4, version)
                ORDER BY p.mid
               ON CONFLICT (payout_date, beneficiary) WHERE beneficiary_kind = 'merchant' DO NOTHING
               RETURNING id, account_id, amount_fen""",
            day, [c.mid for c in paying], [c.account_id for c in paying], [c.amount_fen for c in paying],
            [c.row["account_name"] for c in paying], [c.row["bank_name"] for c in paying],
            [c.row["bank_account_lmk"] for c in paying], [c.row["bank_account_last4"] for c in paying],
            [c.row["version"] for c in paying])
        if created:
            await _post_all(conn, [
                (f"payout:{row['id']}", [Transfer(row["account_id"], clearing, row["amount_fen"], PAYOUT_CODE)])
                for row in created], f"payout run {day.isoformat()}")
        skipped += await _send_withdrawals(conn, day)
        totals = await conn.fetchrow(
            """SELECT count(*) AS count, coalesce(sum(amount_fen), 0)::bigint AS total_fen
                 FROM payouts WHERE payout_date = $1""", day)
        await conn.execute(
            "INSERT INTO payout_runs (payout_date, payouts, total_fen, skipped) VALUES ($1, $2, $3, $4::jsonb)",
            day, totals["count"], totals["total_fen"], orjson.dumps(skipped).decode())
        return await _run_result(conn, day)  # type: ignore[return-value]


# -- files ---------------------------------------------------------------------------------------


def message_id(day: date) -> str:
    """The pain.001 ``MsgId`` (and ``PmtInfId``) of a date's payouts."""
    return f"POSGW-PAYOUTS-{day:%Y%m%d}"


def reference(day: date, payout_id: int) -> str:
    """What the beneficiary's statement shows (pain.001 ``RmtInf/Ustrd``)."""
    return f"posgw payout {day.isoformat()} #{payout_id}"


async def payout_lines(conn: asyncpg.Connection, hsm: SoftHsm, day: date) -> list[PayoutLine]:
    """Every payout the run of ``day`` sent, whatever became of it since, in id order: a
    file made again is the same. The account numbers are decrypted here, for the file only."""
    rows = await conn.fetch(
        """SELECT id, beneficiary_kind, beneficiary, account_name, bank_name, bank_account_lmk, amount_fen
             FROM payouts WHERE payout_date = $1 ORDER BY id""", day)
    return [PayoutLine(row["id"], row["beneficiary_kind"], row["beneficiary"], row["account_name"],
                       row["bank_name"], hsm.decrypt_pan(row["bank_account_lmk"]), row["amount_fen"],
                       reference(day, row["id"])) for row in rows]


async def payout_file(conn: asyncpg.Connection, hsm: SoftHsm, settings: Settings, day: date, file_format: str) -> bytes:
    """``posgw payout file --date D --format csv|pain001``: the bank instructions as bytes.
    No payouts: a CSV of its header alone; for pain001, ``PayoutError`` (exit 1)."""
    if file_format not in FORMATS:
        raise InvalidInput(f"--format must be one of {', '.join(FORMATS)}: {file_format!r}")
    lines = await payout_lines(conn, hsm, day)
    if file_format == "csv":
        return bank_files.payouts_csv(lines)
    finished_at = await conn.fetchval("SELECT finished_at FROM payout_runs WHERE payout_date = $1", day)
    if not lines or finished_at is None:
        raise PayoutError(f"no payouts for {day.isoformat()}: no pain.001 file made")
    payer = Payer(settings.payer_name, settings.payer_account, settings.payer_bank_code)
    return bank_files.pain001(lines, payer, message_id=message_id(day),
                              created_at=finished_at.astimezone(settings.tz), execution_date=day + timedelta(days=1))


# -- the bank's answer ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Move:
    payout_id: int
    status: str
    reason: str
    key: str
    transfers: list[Transfer]


@dataclass(frozen=True, slots=True)
class _HouseAccounts:
    clearing: int
    bank: int
    tax: int
    fee: int


def _return_transfers(row: asyncpg.Record, source: int, house: _HouseAccounts) -> list[Transfer]:
    """A returned payout back to its owner; a withdrawal's tax and fee too (its gross is the agent's again)."""
    transfers = [Transfer(source, row["account_id"], row["amount_fen"], RETURN_CODE)]
    if row["tax_fen"]:
        transfers.append(Transfer(house.tax, row["account_id"], row["tax_fen"], WITHDRAWAL_TAX_RETURN_CODE))
    if row["fee_fen"]:
        transfers.append(Transfer(house.fee, row["account_id"], row["fee_fen"], WITHDRAWAL_FEE_RETURN_CODE))
    return transfers


async def confirm_payouts(conn: asyncpg.Connection, data: bytes, *, today: date | None = None) -> dict[str, Any]:
    """``posgw payout confirm --file F``: apply the bank's answer (CSV or pain.002).
    ``paid``, ``returned``, ``unchanged`` count the file's lines; ``conflicts`` lists
    the ids the file calls paid that are returned already (left so: only paid →
    returned is allowed afterwards). An unknown or unsent payout id: ``InvalidInput``
    (exit 2) and nothing applied. Applying a file again changes nothing. ``today``: the
    local day a payout is returned on (an agent's earnings row; default the database's)."""
    lines = bank_files.read_status_file(data)
    ids = sorted({line.payout_id for line in lines})
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _RUN_LOCK_KEY)
        rows = {row["id"]: row for row in await conn.fetch(
            """SELECT id, status, sent_at, account_id, amount_fen, tax_fen, fee_fen FROM payouts
                WHERE id = ANY ($1) ORDER BY id FOR UPDATE""", ids)}
        unknown = [payout_id for payout_id in ids if payout_id not in rows]
        if unknown:
            raise InvalidInput(f"unknown payout id(s): {', '.join(map(str, unknown))}; nothing applied")
        unsent = [payout_id for payout_id in ids if rows[payout_id]["sent_at"] is None]
        if unsent:
            raise InvalidInput(f"payout(s) not sent to the bank yet: {', '.join(map(str, unsent))}; nothing applied")
        house = _HouseAccounts(await system_account(conn, CLEARING_ACCOUNT_CODE),
                               await system_account(conn, BANK_ACCOUNT_CODE),
                               await system_account(conn, TAX_ACCOUNT_CODE),
                               await account_id(conn, FEE_INCOME_ACCOUNT_CODE))  # type: ignore[arg-type]

        status = {payout_id: row["status"] for payout_id, row in rows.items()}
        counts: Counter[str] = Counter()
        conflicts: list[int] = []
        moves: list[_Move] = []
        for line in lines:
            row, before = rows[line.payout_id], status[line.payout_id]
            if line.status == PAID and before == PENDING:
                move = _Move(row["id"], PAID, line.reason, f"payout:{row['id']}:paid",
                             [Transfer(house.clearing, house.bank, row["amount_fen"], PAID_CODE)])
            elif line.status == RETURNED and before in (PENDING, PAID):
                source = house.clearing if before == PENDING else house.bank
                move = _Move(row["id"], RETURNED, line.reason, f"payout:{row['id']}:returned",
                             _return_transfers(row, source, house))
            else:
                counts["unchanged"] += 1
                if line.status == PAID and before == RETURNED:
                    conflicts.append(line.payout_id)
                continue
            moves.append(move)
            status[line.payout_id] = move.status
            counts[move.status] += 1
        if moves:
            await _post_all(conn, [(move.key, move.transfers) for move in moves], "payout confirm")
            final = {move.payout_id: move for move in moves}  # the last move of each payout
            paid = {move.payout_id for move in moves if move.status == PAID}
            await conn.execute(
                """UPDATE payouts p
                      SET status = m.status, reason = nullif(m.reason, ''),
                          paid_at = CASE WHEN m.paid THEN now() ELSE p.paid_at END,
                          returned_at = CASE WHEN m.status = 'returned' THEN now() ELSE p.returned_at END,
                          returned_day = CASE WHEN m.status = 'returned' THEN coalesce($5, current_date)
                                              ELSE p.returned_day END
                     FROM unnest($1::bigint[], $2::text[], $3::text[], $4::boolean[]) AS m (id, status, reason, paid)
                    WHERE p.id = m.id""",
                list(final), [move.status for move in final.values()], [move.reason for move in final.values()],
                [payout_id in paid for payout_id in final], today)
    return {"paid": counts[PAID], "returned": counts[RETURNED], "unchanged": counts["unchanged"],
            "conflicts": sorted(set(conflicts))}


# -- lists and checks ----------------------------------------------------------------------------


def _payout_view(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": row["id"],
        "date": row["payout_date"].isoformat() if row["payout_date"] else None,
        "beneficiary_kind": row["beneficiary_kind"],
        "beneficiary": row["beneficiary"],
        "amount_fen": row["amount_fen"],
        "status": row["status"],
        "bank_account_masked": mask_bank_account(row["bank_account_last4"]) if row["bank_account_last4"] else None,
        "reason": row["reason"],
    }


async def list_payouts(conn: asyncpg.Connection | asyncpg.Pool, day: date | None = None,
                       status: str | None = None) -> dict[str, Any]:
    """``posgw payout list [--date D] [--status S]``: ``payouts`` in id order (= time)."""
    if status is not None and status not in STATUSES:
        raise InvalidInput(f"--status must be one of {', '.join(STATUSES)}: {status!r}")
    rows = await conn.fetch(
        """SELECT * FROM payouts WHERE ($1::date IS NULL OR payout_date = $1) AND ($2::text IS NULL OR status = $2)
            ORDER BY id""", day, status)
    return {"payouts": [_payout_view(row) for row in rows]}


async def payout_summary(conn: asyncpg.Connection | asyncpg.Pool, day: date) -> dict[str, Any]:
    """The day's payouts by status: ``date``, ``by_status`` (status → ``count``, ``amount_fen``)."""
    rows = await conn.fetch(
        """SELECT status, count(*) AS count, sum(amount_fen)::bigint AS amount_fen FROM payouts
            WHERE payout_date = $1 GROUP BY status""", day)
    found = {row["status"]: {"count": row["count"], "amount_fen": int(row["amount_fen"])} for row in rows}
    return {"date": day.isoformat(),
            "by_status": {s: found.get(s, {"count": 0, "amount_fen": 0}) for s in STATUSES}}


async def check_payouts(conn: asyncpg.Connection) -> list[str]:
    """The payouts rule of ``posgw ledger check``: the clearing account holds exactly
    the payouts made and not yet confirmed (sent, and withdrawals waiting for the next
    run), and the bank account exactly the paid ones. Returns the problems (none: ok)."""
    problems = []
    sums = await conn.fetchrow(
        """SELECT coalesce(sum(amount_fen) FILTER (WHERE status = 'pending'), 0) AS sent_fen,
                  coalesce(sum(amount_fen) FILTER (WHERE status = 'paid'), 0) AS paid_fen
             FROM payouts""")
    for code, expected_fen, what in ((CLEARING_ACCOUNT_CODE, sums["sent_fen"], "payouts made and not confirmed"),
                                     (BANK_ACCOUNT_CODE, sums["paid_fen"], "payouts paid")):
        account = await account_id(conn, code)
        held_fen = await balance_fen(conn, account) if account is not None else 0
        if held_fen != expected_fen:
            problems.append(f"account {code} holds {held_fen} fen, {what} come to {expected_fen} fen")
    return problems


# -- the commands: the job, audited --------------------------------------------------------------


async def agent_run_is_final(conn: asyncpg.Connection, day: date) -> bool:
    return await conn.fetchval("SELECT EXISTS (SELECT 1 FROM agent_runs WHERE day = $1 AND final)", day)


async def run(conn: asyncpg.Connection, actor: str, settings: Settings, day: date, *,
              now: datetime | None = None) -> dict[str, Any]:
    """``posgw payout run --date D``: D's agent run first when no final one has run and D
    has no payout run yet (CLI.md, Payouts), then ``run_payouts``, audited once as
    ``payout.run`` (gateway.services.payouts). D not over: ``InvalidInput`` and nothing run."""
    now = now if now is not None else settings.now()
    check_day_over(day, settings, now)
    if await _run_result(conn, day) is None and not await agent_run_is_final(conn, day):
        await agent_run.run(conn, day, settings.tz, now=now, actor=actor, settings=settings)
    async with conn.transaction():
        await payout_audit.lock_run(conn)
        before = await payout_audit.run_state(conn, day)
        result = await run_payouts(conn, settings, day, now=now)
        await payout_audit.record_run(conn, actor, day, before)
    return result


async def confirm(conn: asyncpg.Connection, actor: str, settings: Settings, data: bytes,
                  file_name: str) -> dict[str, Any]:
    """``posgw payout confirm --file F``: ``confirm_payouts`` on the local day of now, audited
    as ``payout.confirm`` when it moved any payout. Nothing applied: nothing recorded."""
    async with conn.transaction():
        result = await confirm_payouts(conn, data, today=settings.today())
        await payout_audit.record_confirm(conn, actor, data, file_name, result)
    return result
