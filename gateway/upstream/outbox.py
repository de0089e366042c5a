"""The biller outbox (store-and-forward): nothing lost between us and the biller.

A message to a biller whose effect must follow our commit (the ``cancel`` of a
payment the biller accepted that did not stand, the ``notice`` of one that
stands) is a row of ``biller_outbox`` written by ``enqueue`` in the same
database transaction that decides it: it commits with the money, or not at
all. The ``Forwarder`` of every gateway sends the due ones until the biller
acknowledges (HTTP 200); calls are idempotent at the biller by our receipt
(``gateway.upstream.billers.HttpConnector``), so a resend is harmless.

- **Once at a time.** A forwarder claims due messages with ``FOR UPDATE SKIP
  LOCKED`` and moves their ``next_attempt_at`` past the end of the send (the
  lease: the call's time limit and a margin), so gateways sharing one database
  never send one message at once; a forwarder killed mid-send leaves it due
  again after the lease.
- **Backoff.** After a failed attempt n the message waits
  ``min(saf_backoff_base_s * 2**(n-1), saf_backoff_max_s)``.
- **Order.** A message waits for any older pending message of the same
  receipt (a notice, then a later cancel).
- **Restarts.** The state is the table, nothing else.
- **Intent before the call.** ``arm_cancel`` queues, before the biller is
  asked to pay, a cancel due only after the payment could have finished; the
  transaction that moves the money calls ``disarm_cancel`` (which deletes it);
  if the payment fails, or its outcome is unknown, the cancel stays and is
  sent. A gateway killed between the biller's accept and our commit thus
  leaves a cancel that the forwarder sends.

Operators: ``list_messages`` and ``retry`` (``posgw saf list``, ``saf retry``),
the gauges ``posgw_saf_pending_messages`` and
``posgw_saf_oldest_pending_age_seconds``, and a ``security_alert`` log line
(``saf_message_overdue``) for each failed attempt of a message older than
``saf_age_alert_s``.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import structlog

from gateway import metrics
from gateway.domain.bills import load_biller
from gateway.upstream.billers import BillerUnavailable, BillNotFound, Connectors

log = structlog.get_logger("posgw.saf")

KINDS = ("cancel", "notice")
STATUSES = ("pending", "done")
LEASE_MARGIN_S = 5.0  # added to the call's time limit: how long a claimed message is left to its sender
ERROR_CHARS_MAX = 500


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    id: int
    biller: str
    kind: str
    receipt: str
    payload: dict[str, Any]
    status: str
    attempts: int
    last_error: str | None
    created_at: datetime
    next_attempt_at: datetime

    def as_json(self) -> dict[str, Any]:
        """``saf list --json``'s message (CLI.md): times in ISO 8601."""
        return {"id": self.id, "biller": self.biller, "kind": self.kind, "receipt": self.receipt,
                "status": self.status, "attempts": self.attempts, "last_error": self.last_error,
                "created_at": self.created_at.isoformat(), "next_attempt_at": self.next_attempt_at.isoformat()}


_COLUMNS = ("id, biller_code AS biller, kind, receipt, payload, status, attempts, last_error, created_at, "
            "next_attempt_at")


def _message(row: asyncpg.Record) -> OutboxMessage:
    values = dict(row)
    payload = values["payload"]
    values["payload"] = json.loads(payload) if isinstance(payload, str) else payload
    return OutboxMessage(**values)


# -- what the engine calls, inside its own transaction ------------------------------------------


async def enqueue(conn: asyncpg.Connection, biller_code: str, kind: str, receipt: str,
                  payload: dict[str, Any] | None = None, *, delay_s: float = 0.0) -> int:
    """Queue a message in the caller's transaction; return its id.

    Idempotent per (biller, kind, receipt): queuing it again adds nothing, and
    makes a pending one due now (or after ``delay_s``, whichever is sooner); a
    done one stays done. Call it inside the transaction that moves (or gives
    back) the money, so that the message commits with it or not at all."""
    if kind not in KINDS:
        raise ValueError(f"an outbox message is one of {KINDS}, not {kind!r}")
    return await conn.fetchval("SELECT biller_outbox_enqueue($1, $2, $3, $4::jsonb, $5)",
                               biller_code, kind, receipt, json.dumps(payload or {}), float(delay_s))


async def arm_cancel(conn: asyncpg.Connection, biller_code: str, receipt: str, after_s: float) -> int:
    """Intent before the call: a cancel of ``receipt`` due in ``after_s`` seconds.
    Commit it before asking the biller to pay, with ``after_s`` longer than the
    payment can take (the request's time limit): if nothing disarms it by then,
    the biller's accept, if any, is cancelled."""
    return await enqueue(conn, biller_code, "cancel", receipt, {"reason": "payment_in_flight"}, delay_s=after_s)


async def disarm_cancel(conn: asyncpg.Connection, biller_code: str, receipt: str) -> bool:
    """The payment stands: delete its armed cancel, in the transaction that moves the money.

    False when the cancel can no longer be taken back (a forwarder has claimed
    or sent it, or it was never armed): the money must then not move (roll the
    transaction back and answer as for an unavailable biller). The row lock
    taken here orders this against a forwarder's claim either way."""
    deleted = await conn.fetchval(
        """DELETE FROM biller_outbox
            WHERE biller_code = $1 AND kind = 'cancel' AND receipt = $2 AND status = 'pending' AND attempts = 0
           RETURNING id""", biller_code, receipt)
    return deleted is not None


# -- operators -----------------------------------------------------------------------------------


async def list_messages(conn: asyncpg.Connection | asyncpg.Pool, biller_code: str | None = None, *,
                        include_done: bool = False) -> list[OutboxMessage]:
    """Pending messages (every one with ``include_done``), oldest first, of one biller or all."""
    rows = await conn.fetch(
        f"""SELECT {_COLUMNS} FROM biller_outbox
             WHERE ($1::text IS NULL OR biller_code = $1) AND ($2 OR status = 'pending')
             ORDER BY created_at, id""", biller_code, include_done)
    return [_message(row) for row in rows]


async def get_message(conn: asyncpg.Connection | asyncpg.Pool, message_id: int) -> OutboxMessage | None:
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM biller_outbox WHERE id = $1", message_id)
    return None if row is None else _message(row)


class NotRetriable(Exception):
    """``saf retry`` of an unknown or done message."""


async def retry(conn: asyncpg.Connection, message_id: int) -> OutboxMessage:
    """Make a pending message due now (its attempts and backoff otherwise unchanged)."""
    row = await conn.fetchrow(
        f"""UPDATE biller_outbox SET next_attempt_at = clock_timestamp()
             WHERE id = $1 AND status = 'pending' RETURNING {_COLUMNS}""", message_id)
    if row is not None:
        return _message(row)
    message = await get_message(conn, message_id)
    if message is None:
        raise NotRetriable(f"no outbox message {message_id}")
    raise NotRetriable(f"outbox message {message_id} is {message.status}: the biller has acknowledged it")


@dataclass(frozen=True, slots=True)
class QueueDepth:
    pending: int
    oldest_age_s: float  # 0 when nothing is pending


async def queue_depth(conn: asyncpg.Connection | asyncpg.Pool) -> QueueDepth:
    row = await conn.fetchrow(
        """SELECT count(*) AS pending,
                  coalesce(extract(epoch FROM clock_timestamp() - min(created_at)), 0)::float8 AS oldest_age_s
             FROM biller_outbox WHERE status = 'pending'""")
    return QueueDepth(row["pending"], row["oldest_age_s"])


async def refresh_gauges(conn: asyncpg.Connection | asyncpg.Pool) -> QueueDepth:
    """Set the queue's gauges from the table (the forwarder each round; /metrics may too)."""
    depth = await queue_depth(conn)
    metrics.SAF_PENDING.set(depth.pending)
    metrics.SAF_OLDEST_AGE_SECONDS.set(depth.oldest_age_s)
    return depth


# -- the forwarder ---------------------------------------------------------------------------


def backoff_s(attempts: int, base_s: float, max_s: float) -> float:
    """The wait after failed attempt number ``attempts`` (1, 2, ...): doubling from ``base_s``, capped."""
    exponent = min(max(attempts - 1, 0), 62)  # 2**62 s is past any cap: no overflow, no float inf
    return min(base_s * 2.0**exponent, max_s)


_CLAIM = f"""
WITH due AS (
    SELECT id FROM biller_outbox o
     WHERE status = 'pending' AND next_attempt_at <= clock_timestamp()
       AND NOT EXISTS (SELECT 1 FROM biller_outbox older
                        WHERE older.biller_code = o.biller_code AND older.receipt = o.receipt
                          AND older.status = 'pending' AND older.id < o.id)
     ORDER BY next_attempt_at, id
     LIMIT $1
       FOR UPDATE SKIP LOCKED
)
UPDATE biller_outbox o
   SET attempts = o.attempts + 1, next_attempt_at = clock_timestamp() + make_interval(secs => $2)
  FROM due
 WHERE o.id = due.id
RETURNING {', '.join('o.' + c.strip() for c in _COLUMNS.split(','))}
"""

_ACKNOWLEDGED = """
UPDATE biller_outbox SET status = 'done', done_at = clock_timestamp(), last_error = $3
 WHERE id = $1 AND attempts = $2 AND status = 'pending'
"""

_FAILED = """
UPDATE biller_outbox SET last_error = $3, next_attempt_at = clock_timestamp() + make_interval(secs => $4)
 WHERE id = $1 AND attempts = $2 AND status = 'pending'
RETURNING extract(epoch FROM clock_timestamp() - created_at)::float8 AS age_s
"""


@dataclass(frozen=True, slots=True)
class ForwarderSettings:
    poll_interval_s: float = 1.0
    batch_max: int = 32
    backoff_base_s: float = 1.0
    backoff_max_s: float = 300.0
    age_alert_s: float = 3600.0
    lease_s: float = 10.0  # the call's time limit plus LEASE_MARGIN_S

    @classmethod
    def from_settings(cls, settings: Any) -> ForwarderSettings:
        """From ``gateway.settings.Settings`` (the ``saf_*`` settings and ``biller_timeout_s``)."""
        return cls(settings.saf_poll_interval_s, settings.saf_batch_max, settings.saf_backoff_base_s,
                   settings.saf_backoff_max_s, settings.saf_age_alert_s, settings.biller_timeout_s + LEASE_MARGIN_S)


class Forwarder:
    """Sends the outbox's due messages until each is acknowledged. One per
    gateway process (``start`` in ``posgw serve``, ``stop`` on shutdown); any
    number may share a database."""

    def __init__(self, pool: asyncpg.Pool, connectors: Connectors, settings: ForwarderSettings) -> None:
        self.pool = pool
        self.connectors = connectors
        self.settings = settings
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()

    # -- running ------------------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._stopping.clear()
            self._task = asyncio.create_task(self._run(), name="saf-forwarder")

    async def stop(self) -> None:
        """Stop after the sends under way (each bounded by the call's time limit)."""
        self._stopping.set()
        self._wake.set()
        if self._task is not None:
            task, self._task = self._task, None
            await task

    def wake(self) -> None:
        """Look for due messages now rather than at the next poll (``saf retry`` in this process, tests)."""
        self._wake.set()

    async def _run(self) -> None:
        while not self._stopping.is_set():
            sent = 0
            try:
                sent = await self.run_once()
                await refresh_gauges(self.pool)
            except Exception as exc:  # the database away: try again at the next poll
                log.warning("saf_round_failed", error=f"{type(exc).__name__}: {exc}")
            if sent and not self._stopping.is_set():
                continue  # a full or partial batch went: look again at once
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), self.settings.poll_interval_s)
            except TimeoutError:
                pass

    async def run_once(self) -> int:
        """Claim the due messages (at most ``batch_max``), send them concurrently, record each
        result; return how many were attempted."""
        rows = await self.pool.fetch(_CLAIM, self.settings.batch_max, self.settings.lease_s)
        messages = [_message(row) for row in rows]
        if messages:
            await asyncio.gather(*(self._attempt(message) for message in messages))
        return len(messages)

    # -- one attempt ------------------------------------------------------------------------------
    async def _attempt(self, message: OutboxMessage) -> None:
        started = time.monotonic()
        try:
            note = await self._send(message)
        except Exception as exc:
            await self._failed(message, f"{type(exc).__name__}: {exc}"[:ERROR_CHARS_MAX])
            return
        await self.pool.execute(_ACKNOWLEDGED, message.id, message.attempts, note)
        metrics.labelled(metrics.SAF_ATTEMPTS, kind=message.kind, result="acknowledged").inc()
        log.info("saf_acknowledged", id=message.id, biller=message.biller, kind=message.kind,
                 receipt=message.receipt, attempts=message.attempts,
                 elapsed_ms=round((time.monotonic() - started) * 1000))

    async def _send(self, message: OutboxMessage) -> str | None:
        """Send one message; return a note for ``last_error`` when acknowledged in a way worth
        keeping; raise when not acknowledged."""
        biller = await load_biller(self.pool, message.biller)
        if biller is None:
            raise BillerUnavailable(f"biller {message.biller} is no longer registered")
        connector = self.connectors[biller]
        if message.kind == "cancel":
            try:
                await self.connectors.call(connector.cancel(biller, message.receipt))
            except BillNotFound:
                return "the biller holds no such payment: nothing to cancel"
            return None
        await self.connectors.call(connector.notify(biller, message.receipt, message.payload))
        return None

    async def _failed(self, message: OutboxMessage, error: str) -> None:
        wait_s = backoff_s(message.attempts, self.settings.backoff_base_s, self.settings.backoff_max_s)
        age_s = await self.pool.fetchval(_FAILED, message.id, message.attempts, error, wait_s)
        metrics.labelled(metrics.SAF_ATTEMPTS, kind=message.kind, result="failed").inc()
        log.warning("saf_attempt_failed", id=message.id, biller=message.biller, kind=message.kind,
                    receipt=message.receipt, attempts=message.attempts, retry_in_s=wait_s, error=error)
        if age_s is not None and age_s > self.settings.age_alert_s:
            log.warning("security_alert", alert="saf_message_overdue", id=message.id, biller=message.biller,
                        kind=message.kind, receipt=message.receipt, attempts=message.attempts,
                        age_s=round(age_s), age_alert_s=self.settings.age_alert_s)
