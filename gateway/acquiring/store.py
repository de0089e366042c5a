"""The transaction store: what a financial request needs to know, read in one
query, and its outcome recorded (money moved, response stored) in one call."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, fields
from datetime import date, datetime
from typing import Any, NamedTuple, Protocol

import asyncpg
import orjson

from gateway import metrics
from gateway.acquiring.operations import Operation, Purchase, Stamp, TxnKey
from gateway.acquiring.outcomes import Outcome
from gateway.acquiring.risk import RiskHistory
from gateway.domain.cards import CARD_FIELDS, CardRecord
from gateway.domain.ic import (
    LIST_VERSION_COLUMNS,
    LIST_VERSION_JOIN,
    TERMINAL_STATE_COLUMNS,
    TERMINAL_STATE_JOIN,
    ListState,
    list_state_from_row,
)
from gateway.domain.registry import TERMINAL_COLUMNS, TERMINAL_JOINS, TerminalRecord, load_terminal, terminal_from_row
from gateway.domain.vocabulary import Kind, Status
from gateway.upstream.billers import BILLER_FIELDS, Biller
from ledger.accounts import AccountKind, create_account
from ledger.postings import Transfer


@dataclass(frozen=True, slots=True)
class StoredAnswer:
    content_hash: str
    response: dict[str, Any]


@dataclass(frozen=True, slots=True)
class OriginalPurchase:
    id: int
    status: Status
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
class OriginalReference:
    """How a refund names its original (WIRE.md 9.2, 9.9): the merchant it was
    made at, 37, 61's date, and 61's batch and STAN unless they are zeros (None)."""

    mid: str
    rrn: str
    local_date: str
    batch: int | None
    stan: str | None


@dataclass(frozen=True, slots=True)
class RefundableOriginal:
    """A refund's original as found: its status, amount, card, what was already
    refunded from it, and when it was approved."""

    id: int
    kind: Kind
    status: Status
    amount_fen: int
    card_id: int | None
    refunded_fen: int
    created_at: datetime


# A refund's original: approved (whatever became of it since) at a terminal of
# the merchant, by RRN and date, and by batch and STAN when given. What was
# refunded from it: its approved refunds.
_REFUND_ORIGINAL_QUERY = """
SELECT o.id, o.kind, o.status, o.amount_fen, o.card_id, o.created_at,
       (SELECT coalesce(sum(r.amount_fen), 0) FROM gw_transactions r
         WHERE r.original_id = o.id AND r.kind = 'refund' AND r.status = 'approved') AS refunded_fen
  FROM gw_transactions o JOIN terminals t ON t.tid = o.tid
 WHERE o.rrn = $2 AND t.mid = $1 AND o.local_date = $3 AND o.status <> 'declined'
   AND ($4::integer IS NULL OR (o.batch = $4 AND o.stan = $5))
 ORDER BY o.id
 LIMIT 1
"""


@dataclass(frozen=True, slots=True)
class PreauthReference:
    """How a cancel or completion names its pre-authorization, or a completion void
    its completion (WIRE.md 9.3, 9.9): where (the merchant; the terminal for a
    completion void), the card, 38, 61's date, 61's batch and STAN (None: zeros),
    and for a completion void its 37."""

    mid: str
    tid: str
    card_id: int | None
    auth_code: str
    local_date: str
    batch: int | None
    stan: str | None
    rrn: str | None = None


@dataclass(frozen=True, slots=True)
class FoundOriginal:
    """A pre-authorization or completion as found: its status, amount, card, batch,
    auth code and (a pre-authorization's) hold expiry."""

    id: int
    kind: Kind
    status: Status
    amount_fen: int
    card_id: int | None
    batch: int
    auth_code: str
    expires_at: datetime | None


_PREAUTH_QUERY = """
SELECT o.id, o.kind, o.status, p.amount_fen, p.card_id, o.batch, p.auth_code, p.expires_at
  FROM gw_preauths p JOIN gw_transactions o ON o.id = p.txn_id
 WHERE p.card_id = $1 AND p.auth_code = $2 AND p.local_date = $3 AND p.mid = $4
   AND ($5::integer IS NULL OR (o.batch = $5 AND o.stan = $6))
 ORDER BY o.id DESC
 LIMIT 1
"""

_COMPLETION_QUERY = """
SELECT c.id, c.kind, c.status, c.amount_fen, c.card_id, c.batch, c.response->>'auth_id' AS auth_code,
       NULL::timestamptz AS expires_at
  FROM gw_transactions c
 WHERE c.rrn = $1 AND c.tid = $2 AND c.batch = $3 AND c.stan = $4 AND c.local_date = $5
   AND c.kind IN ('completion', 'completion_advice') AND c.status <> 'declined' AND c.response->>'auth_id' = $6
 LIMIT 1
"""


def _found(row: asyncpg.Record | None) -> FoundOriginal | None:
    if row is None:
        return None
    return FoundOriginal(row["id"], Kind(row["kind"]), Status(row["status"]), row["amount_fen"], row["card_id"],
                         row["batch"], row["auth_code"], row["expires_at"])


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
    # The row versions (xmin) of the terminal's rows (terminal, merchant, agent)
    # and of the card's, as read (gateway.acquiring.context_cache).
    terminal_version: str = ""
    card_version: str | None = None
    cached: bool = False  # from this process's cache, not read for this request
    lists: ListState | None = None  # the header digit's inputs, read with the terminal (not cached)


def _prefixed(alias: str, columns: str, prefix: str) -> str:
    return ", ".join(f"{alias}.{c.strip()} AS {prefix}{c.strip()}" for c in columns.split(","))


# The context of each request of a batch (``r``, one row per request, in
# order): one statement for many requests, where PostgreSQL's fixed cost per
# statement would otherwise dominate (measured: 160 us of backend time for
# one request alone, 23 us each in a batch of 32). A request whose terminal
# is unknown gets a row of nulls. The header digit's inputs (gateway.domain.ic:
# the terminal's list state inside, the list versions once outside) cost
# about 2 us a request of backend time in a batch of 32 (9.1-9.8 us without,
# 10.8-11.9 with, on a shared machine), and no round trip.
_CONTEXT_QUERY = f"""
SELECT r.ord, ctx.*, {LIST_VERSION_COLUMNS}
  FROM unnest($1::text[], $2::integer[], $3::text[], $4::text[], $5::bytea[], $6::text[], $7::integer[],
              $8::text[], $9::text[], $10::text[], $11::date[], $12::boolean[]) WITH ORDINALITY
       AS r (tid, batch, stan, mti_class, pan_hash, void_rrn, void_batch, void_stan, void_date, biller_code, day,
             with_risk, ord)
  LEFT JOIN LATERAL (
SELECT {TERMINAL_COLUMNS},
       tx.content_hash AS stored_content_hash, tx.response AS stored_response,
       EXISTS (SELECT 1 FROM gw_batches sb WHERE sb.tid = t.tid AND sb.batch = r.batch) AS batch_settled,
       {_prefixed("c", CARD_FIELDS, "card_")},
       o.id AS original_id, o.status AS original_status, o.amount_fen AS original_amount_fen,
       o.card_id AS original_card_id, o.batch AS original_batch,
       {_prefixed("b", ", ".join(BILLER_FIELDS), "biller_")},
       CASE WHEN r.with_risk THEN (SELECT jsonb_object_agg(name, value) FROM risk_limits
                                    WHERE scope = 'merchant' AND owner = t.mid) END AS merchant_limits,
       CASE WHEN r.with_risk THEN (SELECT jsonb_object_agg(name, value) FROM risk_limits
                                    WHERE scope = 'terminal' AND owner = t.tid) END AS terminal_limits,
       CASE WHEN r.with_risk THEN (SELECT count FROM risk_counters
                                    WHERE scope = 'terminal' AND owner = t.tid AND day = r.day) END AS count_today,
       CASE WHEN r.with_risk THEN (SELECT coalesce(sum(count), 0) FROM risk_counters
                                    WHERE scope = 'terminal' AND owner = t.tid
                                      AND day >= r.day - 30 AND day < r.day) END AS count_30_days,
       lp.latitude AS last_latitude, lp.longitude AS last_longitude,
       extract(epoch FROM now() - lp.created_at)::float8 AS last_seen_s_ago,
       concat_ws(':', t.xmin, m.xmin, a.xmin) || '/' || gw_limits_version(t.mid, t.tid) AS terminal_version, c.xmin::text AS card_version,
       {TERMINAL_STATE_COLUMNS}
  {TERMINAL_JOINS}
  LEFT JOIN gw_transactions tx
         ON tx.tid = t.tid AND tx.batch = r.batch AND tx.stan = r.stan AND tx.mti_class = r.mti_class
  LEFT JOIN cards c ON c.pan_hash = r.pan_hash
  LEFT JOIN gw_transactions o
         ON o.tid = t.tid AND o.rrn = r.void_rrn AND o.batch = r.void_batch AND o.stan = r.void_stan
        AND o.local_date = r.void_date AND o.mti_class = '0200' AND o.kind = 'purchase'
  LEFT JOIN billers b ON b.code = r.biller_code
  {TERMINAL_STATE_JOIN}
  LEFT JOIN LATERAL (SELECT g.latitude, g.longitude, g.created_at FROM gw_transactions g
                      WHERE r.with_risk AND g.card_id = c.id AND g.status = 'approved' AND g.latitude IS NOT NULL
                      ORDER BY g.created_at DESC LIMIT 1) lp ON true
 WHERE t.tid = r.tid
  ) ctx ON true
  {LIST_VERSION_JOIN}
 ORDER BY r.ord
"""


class _ContextRequest(NamedTuple):
    """One request's parameters of the context query, in the order of its arrays."""

    tid: str
    batch: int
    stan: str
    mti_class: str
    pan_hash: bytes | None
    void_rrn: str
    void_batch: int
    void_stan: str
    void_date: str
    biller_code: str | None
    day: date
    with_risk: bool

    @classmethod
    def of(cls, key: TxnKey, pan_hash: bytes | None, void_ref: VoidReference | None, biller_code: str | None,
           day: date, with_risk: bool) -> _ContextRequest:
        ref = void_ref or VoidReference("", -1, "", "")
        return cls(key.tid, key.batch, key.stan, key.mti_class, pan_hash, ref.rrn, ref.batch, ref.stan,
                   ref.local_date, biller_code, day, with_risk)


async def _load_contexts(pool: asyncpg.Pool | asyncpg.Connection,
                         requests: list[_ContextRequest]) -> list[RequestContext | None]:
    """The contexts of a batch of requests, in one statement (its arrays: the requests' columns)."""
    rows = await pool.fetch(_CONTEXT_QUERY, *map(list, zip(*requests)))
    return [_context_from_row(row, request.with_risk) for row, request in zip(rows, requests)]


# The context row's columns of each record's fields, in the records' own order.
_CARD_COLUMNS = tuple("card_" + f.name for f in fields(CardRecord))
_BILLER_COLUMNS = tuple("biller_" + f.name for f in fields(Biller))


def _context_from_row(row: asyncpg.Record, with_risk: bool) -> RequestContext | None:
    if row["tid"] is None:
        return None
    stored = None
    if row["stored_content_hash"] is not None:
        stored = StoredAnswer(row["stored_content_hash"], orjson.loads(row["stored_response"]))
    card = None
    if row["card_id"] is not None:
        card = CardRecord(*(row[column] for column in _CARD_COLUMNS))
    original = None
    if row["original_id"] is not None:
        original = OriginalPurchase(row["original_id"], Status(row["original_status"]), row["original_amount_fen"],
                                    row["original_card_id"], row["original_batch"])
    biller = None
    if row["biller_code"] is not None:
        biller = Biller(*(row[column] for column in _BILLER_COLUMNS))
    history = None
    if with_risk:
        last = None if row["last_latitude"] is None else (row["last_latitude"], row["last_longitude"])
        history = RiskHistory(last, row["last_seen_s_ago"], row["count_today"] or 0, row["count_30_days"] or 0)

    def limits(column: str) -> dict[str, int] | None:
        return orjson.loads(row[column]) if row[column] is not None else None

    return RequestContext(terminal_from_row(row), stored, card, original, biller, row["batch_settled"],
                          limits("merchant_limits"), limits("terminal_limits"), history,
                          row["terminal_version"], row["card_version"], lists=list_state_from_row(row))


@dataclass(frozen=True, slots=True)
class FinishResult:
    # new, repeat (the stored answer of an earlier identical request), conflict
    # (94), stale (checked against cached records that have changed: nothing recorded)
    status: str
    stored: bool
    response: dict[str, Any]
    reversed: dict[str, Any] | None = None  # what a reversal undid, for the biller's connector
    risk_rule: str | None = None  # a counted limit that declined it


BATCH_MAX = 64  # requests read or recorded in one round trip at most


class _Entry:
    __slots__ = ("item", "future", "on_sent")

    def __init__(self, item: Any, future: asyncio.Future[Any], on_sent: Callable[[], None] | None) -> None:
        self.item, self.future, self.on_sent = item, future, on_sent


class _Batcher:
    """Sends the requests that arrive while a batch is in flight as the next
    batch, in one round trip (``send``: items in, results in the same order
    out). A lone request goes out at once, so batching costs no latency when
    it is quiet. A batch that fails as a whole (a deadlock with another
    gateway's batch, a lost connection, one value the driver cannot encode)
    is retried request by request, so one bad request can only fail itself. A
    request whose caller gives up while it waits is taken out of the queue: it
    is never sent. Once sent, it takes effect or not whatever the caller does;
    ``on_sent`` tells the caller which case it is."""

    def __init__(self, send: Callable[[list[Any]], Awaitable[list[Any]]]) -> None:
        self.send = send
        self.queue: list[_Entry] = []
        self.running = False

    async def submit(self, item: Any, on_sent: Callable[[], None] | None = None) -> Any:
        loop = asyncio.get_running_loop()
        entry = _Entry(item, loop.create_future(), on_sent)
        self.queue.append(entry)
        if not self.running:
            self.running = True
            loop.create_task(self._run())
        try:
            return await entry.future
        except asyncio.CancelledError:
            if entry in self.queue:  # not sent: it never will be
                self.queue.remove(entry)
            raise

    async def _run(self) -> None:
        try:
            while self.queue:
                batch = self.queue[:BATCH_MAX]
                del self.queue[:BATCH_MAX]
                for entry in batch:
                    if entry.on_sent is not None:
                        entry.on_sent()
                try:
                    results = await self.send([entry.item for entry in batch])
                except Exception as exc:
                    if len(batch) == 1:
                        _settle(batch[0].future, exception=exc)
                    else:
                        await self._one_by_one(batch)
                    continue
                for entry, result in zip(batch, results):
                    _settle(entry.future, result=result)
        finally:
            self.running = False

    async def _one_by_one(self, batch: list[_Entry]) -> None:
        for entry in batch:
            try:
                _settle(entry.future, result=(await self.send([entry.item]))[0])
            except Exception as exc:
                _settle(entry.future, exception=exc)


def _settle(future: asyncio.Future[Any], *, result: Any = None, exception: BaseException | None = None) -> None:
    if future.done():  # its caller gave up (cancelled): the outcome stands in the database all the same
        return
    if exception is not None:
        future.set_exception(exception)
    else:
        future.set_result(result)


# A COMMIT is never cancelled by us: cancelled while it waits for the synchronous
# standby, it stays committed on the primary without being replicated, and a
# failover then loses it (docs/reliability.md). The pool's command timeout does
# not apply to the statements that commit money; this bound only frees a
# connection whose server went away without a word.
COMMIT_WAIT_S = 3600.0


async def _finish_many(pool: asyncpg.Pool | asyncpg.Connection, payloads: list[str]) -> list[dict[str, Any]]:
    """Group commit: record a batch of outcomes (``gw_finish_many``) in one
    transaction. A hot account (a busy merchant) is then locked once per
    batch, not once per request, and the batch shares one commit."""
    results = await pool.fetchval("SELECT gw_finish_many($1::jsonb[])", payloads, timeout=COMMIT_WAIT_S)
    return [orjson.loads(result) for result in results]


async def _warm_up(conn: asyncpg.Connection, tag: str) -> None:
    """The context read and the three purchases of ``Store.warm_up``."""
    await _load_contexts(conn, [_ContextRequest.of(
        TxnKey(tag, 0, "000000", "0200"), bytes(32), VoidReference("000000000000", 0, "000000", "0101"),
        tag, date.today(), True)])
    debit, credit = [await create_account(conn, AccountKind.CASH, f"{tag}:{side}",
                                          debits_must_not_exceed_credits=False) for side in ("from", "to")]

    def purchase(stan: int) -> str:
        return orjson.dumps(Purchase(
            kind=Kind.PURCHASE, key=TxnKey(tag, 0, f"{stan:06d}", "0200"), processing_code="000000", content=tag,
            amount_fen=1, card_id=None, pin=None, stamp=Stamp("000000000000", "000000", "0101"),
            transfers=(Transfer(debit, credit, 1, "warm-up"),)).as_json()).decode()

    for results in (await _finish_many(conn, [purchase(1), purchase(2)]), await _finish_many(conn, [purchase(3)])):
        if any(result["response"]["outcome"] != Outcome.APPROVED.value for result in results):
            raise RuntimeError(f"warm-up purchases not approved: {results}")


class TransactionStore(Protocol):
    """The port the engine reads and records through (``Services.store``): the
    PostgreSQL ``Store`` in the gateway, any object with these methods in a test."""

    async def load_terminal(self, tid: str) -> TerminalRecord | None: ...

    async def load_context(self, key: TxnKey, pan_hash: bytes | None, void_ref: VoidReference | None,
                           biller_code: str | None, day: date, with_risk: bool) -> RequestContext | None: ...

    async def finish(self, operation: Operation, on_sent: Callable[[], None] | None = None) -> FinishResult: ...

    async def confirm_replicated(self) -> None: ...

    async def find_refund_original(self, reference: OriginalReference) -> RefundableOriginal | None: ...

    async def find_preauth(self, reference: PreauthReference) -> FoundOriginal | None: ...

    async def find_completion(self, reference: PreauthReference) -> FoundOriginal | None: ...


class Store:
    """The transaction store over one pool, with its two batchers: the context
    reads, and the outcomes (group commit), each sent in one round trip per
    batch. ``warm_up`` readies each new connection of the pool (its ``init``,
    run before the store is built: a static method)."""

    __slots__ = ("pool", "_loads", "_finishes")

    @staticmethod
    async def warm_up(conn: asyncpg.Connection) -> None:
        """Ready a new pool connection before it serves a request: its backend
        plans the context read and compiles the group commit's functions. (A
        fresh backend's first batches took tens of milliseconds, and the queue
        they built showed in the latency of every fresh gateway's first second.)
        One transaction reads a context and records two purchases together and
        one alone, between two accounts of its own, then rolls back: nothing of
        it stays. Its keys name the backend, so that connections warming at the
        same time never wait for each other."""
        tag = f"warm-up:{conn.get_server_pid()}"
        transaction = conn.transaction()
        await transaction.start()
        try:
            await _warm_up(conn, tag)
        except asyncpg.exceptions.SyntaxOrAccessError:  # not migrated (yet): check_migrated says what is missing
            pass
        finally:
            await transaction.rollback()

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self._loads = _Batcher(lambda requests: _load_contexts(pool, requests))
        self._finishes = _Batcher(lambda payloads: _finish_many(pool, payloads))

    async def load_terminal(self, tid: str) -> TerminalRecord | None:
        """A network request's terminal (None: not registered)."""
        return await load_terminal(self.pool, tid)

    async def load_context(self, key: TxnKey, pan_hash: bytes | None, void_ref: VoidReference | None,
                           biller_code: str | None, day: date, with_risk: bool) -> RequestContext | None:
        """What the checks of a request need (None: its terminal is unknown), read
        together with the other requests' that arrive while a read is in flight."""
        request = _ContextRequest.of(key, pan_hash, void_ref, biller_code, day, with_risk)
        return await self._loads.submit(request)

    async def find_refund_original(self, reference: OriginalReference) -> RefundableOriginal | None:
        """A refund's original (WIRE.md 9.2), or None: one read, for refunds only
        (the purchase path reads nothing more). The recording checks it again
        under its lock."""
        row = await self.pool.fetchrow(_REFUND_ORIGINAL_QUERY, reference.mid, reference.rrn, reference.local_date,
                                       reference.batch, reference.stan)
        if row is None:
            return None
        return RefundableOriginal(row["id"], Kind(row["kind"]), Status(row["status"]), row["amount_fen"],
                                  row["card_id"], row["refunded_fen"], row["created_at"])

    async def find_preauth(self, reference: PreauthReference) -> FoundOriginal | None:
        """The pre-authorization a cancel or completion names (WIRE.md 9.9), or None:
        a read for those only; the recording checks it again under its lock."""
        if reference.card_id is None:
            return None
        return _found(await self.pool.fetchrow(_PREAUTH_QUERY, reference.card_id, reference.auth_code,
                                               reference.local_date, reference.mid, reference.batch, reference.stan))

    async def find_completion(self, reference: PreauthReference) -> FoundOriginal | None:
        """The completion a completion void names: by terminal, 37, the whole 61 and 38 (WIRE.md 9.9)."""
        if reference.batch is None:
            return None
        return _found(await self.pool.fetchrow(_COMPLETION_QUERY, reference.rrn, reference.tid, reference.batch,
                                               reference.stan, reference.local_date, reference.auth_code))

    async def finish(self, operation: Operation, on_sent: Callable[[], None] | None = None) -> FinishResult:
        """Record the outcome (``gw_finish``): one database transaction, shared
        with the other requests of its group commit. ``on_sent`` is called when
        it leaves for the database (from then on it may be recorded even if the
        caller is cancelled)."""
        started = time.perf_counter()
        try:
            result = await self._finishes.submit(orjson.dumps(operation.as_json()).decode(), on_sent)
        finally:  # timed whether it succeeds or fails (batch wait included)
            metrics.labelled(metrics.LEDGER_LATENCY, op=metrics.op_label(operation.op)).observe(
                time.perf_counter() - started)
        return FinishResult(result["status"], result["stored"], result.get("response") or {},
                            result.get("reversed"), result.get("risk_rule"))

    async def confirm_replicated(self) -> None:
        """Return once everything committed so far is on the synchronous standby.
        A stored answer read from the primary may belong to a COMMIT that is not
        (one cancelled while it waited for the standby, by another client or an
        older gateway): answering from it before then could hand the terminal an
        approval that a failover loses. A transactional WAL record's COMMIT waits
        for the standby like any other (reading alone writes no WAL, and waits
        for nothing)."""
        await self.pool.execute("SELECT pg_logical_emit_message(true, 'posgw', 'repeat')", timeout=COMMIT_WAIT_S)
