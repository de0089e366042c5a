"""The transaction store: what a financial request needs to know, read in one
query, and its outcome recorded (money moved, response stored) in one call."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any

import asyncpg

from gateway import metrics
from gateway.billers import BILLER_FIELDS, Biller
from gateway.cards import CARD_FIELDS, CardRecord
from gateway.registry import TERMINAL_COLUMNS, TerminalRecord, terminal_from_row
from gateway.risk import RiskHistory


@dataclass(frozen=True, slots=True)
class TxnKey:
    """A request's idempotency key (WIRE.md section 8, repeats)."""

    tid: str
    batch: int
    stan: str
    mti_class: str


@dataclass(frozen=True, slots=True)
class StoredAnswer:
    content_hash: str
    response: dict[str, Any]


@dataclass(frozen=True, slots=True)
class OriginalPurchase:
    id: int
    status: str
    amount_fen: int | None
    card_id: int | None
    batch: int


@dataclass(frozen=True, slots=True)
class VoidReference:
    rrn: str
    batch: int
    stan: str
    local_date: str


@dataclass(frozen=True, slots=True)
class RequestContext:
    terminal: TerminalRecord
    stored: StoredAnswer | None
    card: CardRecord | None
    original: OriginalPurchase | None
    biller: Biller | None
    batch_settled: bool
    merchant_limits: dict[str, int] | None
    terminal_limits: dict[str, int] | None
    history: RiskHistory | None  # None when the risk rules are off


def _prefixed(alias: str, columns: str, prefix: str) -> str:
    return ", ".join(f"{alias}.{c.strip()} AS {prefix}{c.strip()}" for c in columns.split(","))


_CONTEXT_QUERY = f"""
SELECT {TERMINAL_COLUMNS},
       tx.content_hash AS stored_content_hash, tx.response AS stored_response,
       EXISTS (SELECT 1 FROM gw_batches sb WHERE sb.tid = t.tid AND sb.batch = $2) AS batch_settled,
       {_prefixed("c", CARD_FIELDS, "card_")},
       o.id AS original_id, o.status AS original_status, o.amount_fen AS original_amount_fen,
       o.card_id AS original_card_id, o.batch AS original_batch,
       {_prefixed("b", ", ".join(BILLER_FIELDS), "biller_")},
       CASE WHEN $12 THEN (SELECT jsonb_object_agg(name, value) FROM risk_limits
                            WHERE scope = 'merchant' AND owner = t.mid) END AS merchant_limits,
       CASE WHEN $12 THEN (SELECT jsonb_object_agg(name, value) FROM risk_limits
                            WHERE scope = 'terminal' AND owner = t.tid) END AS terminal_limits,
       CASE WHEN $12 THEN (SELECT count FROM risk_counters
                            WHERE scope = 'terminal' AND owner = t.tid AND day = $11) END AS count_today,
       CASE WHEN $12 THEN (SELECT coalesce(sum(count), 0) FROM risk_counters
                            WHERE scope = 'terminal' AND owner = t.tid
                              AND day >= $11 - 30 AND day < $11) END AS count_30_days,
       lp.latitude AS last_latitude, lp.longitude AS last_longitude,
       extract(epoch FROM now() - lp.created_at)::float8 AS last_seen_s_ago
  FROM terminals t
  JOIN merchants m ON m.mid = t.mid
  JOIN agents a ON a.code = m.agent_code
  LEFT JOIN gw_transactions tx
         ON tx.tid = t.tid AND tx.batch = $2 AND tx.stan = $3 AND tx.mti_class = $4
  LEFT JOIN cards c ON c.pan_hash = $5
  LEFT JOIN gw_transactions o
         ON o.tid = t.tid AND o.rrn = $6 AND o.batch = $7 AND o.stan = $8 AND o.local_date = $9
        AND o.mti_class = '0200' AND o.kind = 'purchase'
  LEFT JOIN billers b ON b.code = $10
  LEFT JOIN LATERAL (SELECT g.latitude, g.longitude, g.created_at FROM gw_transactions g
                      WHERE $12 AND g.card_id = c.id AND g.status = 'approved' AND g.latitude IS NOT NULL
                      ORDER BY g.created_at DESC LIMIT 1) lp ON true
 WHERE t.tid = $1
"""


async def load_context(pool: asyncpg.Pool, key: TxnKey, pan_hash: bytes | None,
                       void_ref: VoidReference | None, biller_code: str | None, day: date,
                       with_risk: bool) -> RequestContext | None:
    ref = void_ref or VoidReference("", -1, "", "")
    row = await pool.fetchrow(_CONTEXT_QUERY, key.tid, key.batch, key.stan, key.mti_class, pan_hash,
                              ref.rrn, ref.batch, ref.stan, ref.local_date, biller_code, day, with_risk)
    if row is None:
        return None
    stored = None
    if row["stored_content_hash"] is not None:
        stored = StoredAnswer(row["stored_content_hash"], json.loads(row["stored_response"]))
    card = None
    if row["card_id"] is not None:
        card = CardRecord(**{name.strip(): row["card_" + name.strip()] for name in CARD_FIELDS.split(",")})
    original = None
    if row["original_id"] is not None:
        original = OriginalPurchase(row["original_id"], row["original_status"], row["original_amount_fen"],
                                    row["original_card_id"], row["original_batch"])
    biller = None
    if row["biller_code"] is not None:
        biller = Biller(**{name: row["biller_" + name] for name in BILLER_FIELDS})
    history = None
    if with_risk:
        last = None if row["last_latitude"] is None else (row["last_latitude"], row["last_longitude"])
        history = RiskHistory(last, row["last_seen_s_ago"], row["count_today"] or 0, row["count_30_days"] or 0)

    def limits(column: str) -> dict[str, int] | None:
        return json.loads(row[column]) if row[column] is not None else None

    return RequestContext(terminal_from_row(row), stored, card, original, biller, row["batch_settled"],
                          limits("merchant_limits"), limits("terminal_limits"), history)


@dataclass(frozen=True, slots=True)
class FinishResult:
    status: str  # new, repeat (the stored answer of an earlier identical request), conflict (94)
    stored: bool
    response: dict[str, Any]
    reversed: dict[str, Any] | None = None  # what a reversal undid, for the biller's connector
    risk_rule: str | None = None  # a counted limit that declined it


GROUP_COMMIT_MAX = 64  # requests recorded in one round trip at most


class _Entry:
    __slots__ = ("payload", "future", "on_sent")

    def __init__(self, payload: str, future: asyncio.Future[dict[str, Any]],
                 on_sent: Callable[[], None] | None) -> None:
        self.payload, self.future, self.on_sent = payload, future, on_sent


class _GroupCommit:
    """Records the requests that arrive while a batch is in flight as the next
    batch: one round trip and one commit each (``gw_finish_many``). A lone
    request goes out at once, so batching costs no latency when it is quiet.
    A batch that fails as a whole (a deadlock with another gateway's batch, a
    lost connection) is retried request by request, so one bad request can
    only fail itself. A request whose caller gives up while it waits is taken
    out of the queue: it is never recorded. Once sent, it is recorded or not
    whatever the caller does; ``on_sent`` tells the caller which case it is."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.queue: list[_Entry] = []
        self.running = False

    async def submit(self, payload: str, on_sent: Callable[[], None] | None) -> dict[str, Any]:
        entry = _Entry(payload, asyncio.get_running_loop().create_future(), on_sent)
        self.queue.append(entry)
        if not self.running:
            self.running = True
            asyncio.get_running_loop().create_task(self._run())
        try:
            return await entry.future
        except asyncio.CancelledError:
            if entry in self.queue:  # not sent: it never will be
                self.queue.remove(entry)
            raise

    async def _run(self) -> None:
        try:
            while self.queue:
                batch = self.queue[:GROUP_COMMIT_MAX]
                del self.queue[:GROUP_COMMIT_MAX]
                for entry in batch:
                    if entry.on_sent is not None:
                        entry.on_sent()
                try:
                    results = await self.pool.fetchval("SELECT gw_finish_many($1::jsonb[])",
                                                       [entry.payload for entry in batch])
                except Exception as exc:
                    if len(batch) == 1:
                        _settle(batch[0].future, exception=exc)
                    else:
                        await self._one_by_one(batch)
                    continue
                for entry, result in zip(batch, results):
                    _settle(entry.future, result=json.loads(result))
        finally:
            self.running = False

    async def _one_by_one(self, batch: list[_Entry]) -> None:
        for entry in batch:
            try:
                result = await self.pool.fetchval("SELECT gw_finish($1::jsonb)", entry.payload)
                _settle(entry.future, result=json.loads(result))
            except Exception as exc:
                _settle(entry.future, exception=exc)


def _settle(future: asyncio.Future[dict[str, Any]], *, result: Any = None, exception: BaseException | None = None
            ) -> None:
    if future.done():  # its caller gave up (cancelled): the outcome stands in the database all the same
        return
    if exception is not None:
        future.set_exception(exception)
    else:
        future.set_result(result)


_group_commits: dict[asyncpg.Pool, _GroupCommit] = {}


def forget_pool(pool: asyncpg.Pool) -> None:
    """Drop a closed pool's group commit."""
    _group_commits.pop(pool, None)


async def finish(pool: asyncpg.Pool, params: dict[str, Any],
                 on_sent: Callable[[], None] | None = None) -> FinishResult:
    """Record the outcome (``gw_finish``): one database transaction, shared
    with the other requests of its group commit. ``on_sent`` is called when
    it leaves for the database (from then on it may be recorded even if the
    caller is cancelled)."""
    started = time.perf_counter()
    group = _group_commits.get(pool)
    if group is None:
        group = _group_commits[pool] = _GroupCommit(pool)
    try:
        result = await group.submit(json.dumps(params), on_sent)
    finally:  # timed whether it succeeds or fails (batch wait included)
        metrics.LEDGER_LATENCY.labels(op=metrics.op_label(params.get("op"))).observe(time.perf_counter() - started)
    return FinishResult(result["status"], result["stored"], result.get("response") or {}, result.get("reversed"),
                        result.get("risk_rule"))
